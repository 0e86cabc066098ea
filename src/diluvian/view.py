"""Seeing volumes and results: neuroglancer viewers and static orthogonal-slice pictures.

Everything else in diluvian is ZYX; neuroglancer wants XYZ. This module is the
only place where that flip happens: callers hand over ZYX arrays, ZYX
resolutions (nm) and ZYX voxel offsets, and :class:`Layer` is turned into a
neuroglancer ``LocalVolume`` whose coordinate space is named ``x, y, z`` with
the scales and offset reversed. The arrays are wrapped, not copied, so an
HDF5-backed volume is read chunk by chunk as the browser asks for it.

Interactive viewers
-------------------
* :func:`make_viewer` serves a list of :class:`Layer` in one viewer. Layers at
  different resolutions are placed by their physical (nm) coordinates.
* :func:`volume_layers` / :func:`view_volumes` show the image, labels and mask
  of dataset volumes (``diluvian view``).
* :func:`show_fill_result` and :func:`show_training_sample` show a fill and a
  training sample from arrays; :func:`show_fill_results` (the fill results of
  several volumes) and :func:`show_trained_sample` (a saved model filling one
  validation subvolume) are the viewers of ``fill --viewer`` and ``train --viewer``.
* :func:`start_server` binds the web server early (so that a busy port fails
  before a long fill or training); :func:`wait_for_interrupt` blocks until
  Ctrl-C; :func:`stop_server` frees the port.

Neuroglancer runs one web server per process; every viewer is served by it.

Static pictures
---------------
:func:`snapshot` renders three orthogonal slices (XY, ZY, XZ) through a point
with the segmentation overlaid, to a PNG (matplotlib, Agg, no display needed).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError, DataError, DatasetNotFoundError
from .util import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "Layer",
    "make_viewer",
    "volume_layers",
    "select_volumes",
    "view_volumes",
    "show_fill_result",
    "show_fill_results",
    "show_training_sample",
    "show_trained_sample",
    "start_server",
    "wait_for_interrupt",
    "open_in_browser",
    "stop_server",
    "label_colors",
    "snapshot",
    "snapshot_volumes",
    "validation_parts",
]

LAYER_KINDS = ("image", "segmentation")

# One neuroglancer server per process; this lock serialises (re)starting it.
_SERVER_LOCK = threading.Lock()


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class Layer:
    """One array to show in a viewer.

    Attributes
    ----------
    name : str
        Layer name (unique within a viewer).
    array : array-like, shape (Z, Y, X)
        NumPy array, h5py dataset, zarr array, ... Only the chunks the browser
        asks for are read.
    kind : {"image", "segmentation"}
        Images are drawn in grey (or in ``color``); segmentations with one
        colour per id (0 is background).
    resolution : tuple of 3 floats
        Voxel size in nm, ZYX.
    offset : tuple of 3 ints
        Position of the array's first voxel, in voxels of this layer, ZYX.
    color : str or None
        Images only: draw the values as a translucent overlay of this colour
        (``"#rrggbb"``), with opacity growing with the value; for masks and
        probability maps. ``None``: grey.
    value_range : tuple of 2 floats or None
        Images only: the values mapped to black and white (or to transparent
        and opaque). ``None``: ``(0, 1)`` for floats and booleans, the full
        range of the dtype for integers.
    """

    name: str
    array: Any
    kind: str = "image"
    resolution: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[int, int, int] = (0, 0, 0)
    color: str | None = None
    value_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise DataError(f"layer {self.name!r}: kind: expected one of {', '.join(LAYER_KINDS)}, got {self.kind!r}")
        shape = tuple(getattr(self.array, "shape", ()))
        if len(shape) != 3:
            raise DataError(f"layer {self.name!r}: expected a 3D (Z, Y, X) array, got shape {list(shape)}")
        res = tuple(float(r) for r in np.ravel(self.resolution))
        if len(res) != 3 or not all(np.isfinite(r) and r > 0 for r in res):
            raise DataError(f"layer {self.name!r}: resolution: expected 3 positive numbers (nm, ZYX), "
                            f"got {list(np.ravel(self.resolution))}")
        off = np.ravel(self.offset)
        if off.shape != (3,) or not np.all(np.equal(np.round(off), off)):
            raise DataError(f"layer {self.name!r}: offset: expected 3 integers (voxels, ZYX), got {list(off)}")
        dtype = np.dtype(self.array.dtype)
        if self.kind == "segmentation" and not (dtype.kind in "iu" or dtype == np.bool_):
            raise DataError(f"layer {self.name!r}: a segmentation needs integer ids, got dtype {dtype}")
        if self.color is not None:
            if self.kind == "segmentation":
                raise DataError(f"layer {self.name!r}: color applies to image layers only")
            if not re.fullmatch(r"#[0-9a-fA-F]{6}", str(self.color)):
                raise DataError(f"layer {self.name!r}: color: expected '#rrggbb', got {self.color!r}")
        if self.value_range is not None and (len(self.value_range) != 2
                                             or not float(self.value_range[0]) < float(self.value_range[1])):
            raise DataError(f"layer {self.name!r}: value_range: expected (low, high) with low < high, "
                            f"got {self.value_range!r}")
        object.__setattr__(self, "resolution", res)
        object.__setattr__(self, "offset", tuple(int(o) for o in off))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the array, ZYX."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]


def _served_dtype(dtype: np.dtype, kind: str) -> np.dtype:
    """The dtype neuroglancer gets for data of ``dtype``."""
    dtype = np.dtype(dtype)
    if kind == "segmentation":
        return dtype if dtype in (np.uint8, np.uint16, np.uint32, np.uint64) else np.dtype(np.uint64)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind == "f" or dtype in (np.int64, np.uint64):
        return np.dtype(np.float32)
    return dtype


class _XYZArray:
    """A lazy XYZ (transposed) view of a ZYX array-like, in a dtype neuroglancer can serve.

    ``LocalVolume`` reads its data with ``data[x0:x1, y0:y1, z0:z1]``; this
    reads the matching ZYX block from the wrapped array and transposes it.
    """

    def __init__(self, zyx: Any, dtype: np.dtype):
        self._zyx = zyx
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in reversed(zyx.shape))

    def __getitem__(self, index_xyz: Any) -> np.ndarray:
        if not isinstance(index_xyz, tuple):
            index_xyz = (index_xyz,)
        index_xyz = index_xyz + (slice(None),) * (3 - len(index_xyz))
        block = np.asarray(self._zyx[tuple(reversed(index_xyz))])
        return block.astype(self.dtype, copy=False).T

    def transpose(self) -> np.ndarray:
        # Used by neuroglancer's mesh generator, which wants the C-order (ZYX) array.
        return np.ascontiguousarray(np.asarray(self._zyx[...]).astype(self.dtype, copy=False))


def _default_range(array: Any) -> tuple[float, float]:
    """Display range of an image: (0, 1) for floats and booleans, the dtype's range for 8 and 16
    bit integers, the data range for wider integers held in memory."""
    dtype = np.dtype(array.dtype)
    if dtype == np.bool_ or dtype.kind == "f":
        return (0.0, 1.0)
    if dtype.itemsize > 2 and isinstance(array, np.ndarray) and array.size:
        lo, hi = float(array.min()), float(array.max())
        return (lo, hi) if hi > lo else (lo, lo + 1.0)
    info = np.iinfo(dtype)
    return (float(max(info.min, 0)), float(info.max))


def _image_shader(layer: Layer) -> str:
    lo, hi = layer.value_range if layer.value_range is not None else _default_range(layer.array)
    control = f"#uicontrol invlerp normalized(range=[{lo:g}, {hi:g}])\n"
    if layer.color is None:
        return control + "void main() {\n  emitGrayscale(normalized());\n}\n"
    return (control
            + f'#uicontrol vec3 color color(default="{layer.color}")\n'
            + "#uicontrol float opacity slider(min=0, max=1, default=0.6)\n"
            + "void main() {\n"
            + "  float v = clamp(normalized(), 0.0, 1.0);\n"
            + "  emitRGBA(vec4(color, v * opacity));\n"
            + "}\n")


def _local_volume(layer: Layer):
    import neuroglancer

    dims = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm",
                                        scales=list(reversed(layer.resolution)))
    data = _XYZArray(layer.array, _served_dtype(layer.array.dtype, layer.kind))
    return neuroglancer.LocalVolume(data, dimensions=dims, voxel_offset=list(reversed(layer.offset)),
                                    volume_type=layer.kind)


def _ng_layer(layer: Layer):
    import neuroglancer

    source = _local_volume(layer)
    if layer.kind == "segmentation":
        # a little more see-through than neuroglancer's default (0.5), so the EM shows under it
        return neuroglancer.SegmentationLayer(source=source, selected_alpha=0.35)
    return neuroglancer.ImageLayer(source=source, shader=_image_shader(layer))


# --------------------------------------------------------------------------- server and viewers


def _ensure_server(bind_address: str, port: int) -> None:
    """Start neuroglancer's server on ``bind_address:port`` (restart it if it serves elsewhere).

    Raises
    ------
    DataError
        The address cannot be bound (port in use, unknown host, ...).
    """
    import neuroglancer
    from neuroglancer import server as ng_server

    if not 0 <= int(port) <= 65535:
        raise DataError(f"port: expected 0 (any free port) to 65535, got {port}")
    with _SERVER_LOCK:
        running = ng_server.global_server
        if running is not None:
            same_address = getattr(running, "_bind_address", None) == bind_address
            if same_address and (port == 0 or running.port == port):
                return
            log.warning("restarting the neuroglancer server on %s:%s; earlier viewer URLs stop working",
                        bind_address, port)
            neuroglancer.stop()
        neuroglancer.set_server_bind_address(bind_address, bind_port=int(port))
        try:
            ng_server.start()
        except OSError as e:
            reason = e.strerror or str(e)
            hint = " (choose another --port, or 0 for any free port)" if port else ""
            raise DataError(f"cannot serve the viewer on {bind_address}:{port}: {reason}{hint}") from None


def start_server(bind_address: str = "127.0.0.1", port: int = 0) -> None:
    """Start neuroglancer's web server now rather than with the first viewer.

    Commands that show a viewer at the end of a long run (``fill --viewer``,
    ``train --viewer``) call this first, so that an address that cannot be
    bound is reported before the run, not after it. Viewers made later with
    the same ``bind_address`` (and ``port``, or ``port=0``) use this server.

    Raises
    ------
    DataError
        The address cannot be bound (port in use, unknown host, ...).
    """
    _ensure_server(bind_address, port)


def stop_server() -> None:
    """Stop neuroglancer's server: every viewer URL stops working and the port is freed."""
    import neuroglancer

    with _SERVER_LOCK:
        neuroglancer.stop()


def _bounds_nm(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    res = np.asarray(layer.resolution)
    lo = np.asarray(layer.offset) * res
    return lo, lo + np.asarray(layer.shape) * res


def make_viewer(layers: Sequence[Layer], *, bind_address: str = "127.0.0.1", port: int = 0):
    """Serve ``layers`` in one neuroglancer viewer.

    The viewer's coordinates are nm; each layer keeps its own voxel size, so
    volumes at different resolutions overlay by physical position. The view
    starts at the centre of all layers, zoomed to fit.

    Parameters
    ----------
    layers : sequence of Layer
        In drawing order (later layers on top).
    bind_address : str
        Address of the web server (``0.0.0.0`` for every interface).
    port : int
        Port of the web server; 0 picks a free one. The server is shared by
        every viewer of the process.

    Returns
    -------
    neuroglancer.Viewer
        ``viewer.get_viewer_url()`` is the address to open.

    Raises
    ------
    DataError
        Invalid layers (no layer, duplicate names) or the address cannot be bound.
    """
    import neuroglancer

    layers = list(layers)
    if not layers:
        raise DataError("nothing to show: no layers")
    names = [layer.name for layer in layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"duplicate layer names: {', '.join(duplicates)}")

    _ensure_server(bind_address, port)
    viewer = neuroglancer.Viewer()

    finest = np.min([layer.resolution for layer in layers], axis=0)  # nm, ZYX
    lows, highs = zip(*(_bounds_nm(layer) for layer in layers))
    lo, hi = np.min(lows, axis=0), np.max(highs, axis=0)
    centre = (lo + hi) / 2 / finest  # global voxels, ZYX
    extent = (hi - lo) / finest
    with viewer.txn() as s:
        s.dimensions = neuroglancer.CoordinateSpace(names=["x", "y", "z"], units="nm",
                                                    scales=[float(r) for r in reversed(finest)])
        for layer in layers:
            s.layers[layer.name] = _ng_layer(layer)
        s.position = [float(c) for c in reversed(centre)]
        # Fit the larger in-plane (XY) extent into a ~400 px panel.
        s.cross_section_scale = float(max(extent[1], extent[2]) / 400.0)
    return viewer


def open_in_browser(url: str) -> bool:
    """Open ``url`` in a web browser if the system has one; False when none is found."""
    try:
        webbrowser.get()
    except webbrowser.Error:
        log.warning("no web browser found: open %s yourself", url)
        return False
    return bool(webbrowser.open(url))


def wait_for_interrupt(poll_s: float = 0.5) -> None:
    """Block until Ctrl-C (``KeyboardInterrupt``), which is swallowed: the normal way to stop serving."""
    try:
        while True:
            time.sleep(poll_s)
    except KeyboardInterrupt:
        log.info("stopped serving")


def _serve(viewer, *, open_browser: bool, wait: bool, on_url: Callable[[str], Any] | None) -> None:
    url = viewer.get_viewer_url()
    log.debug("viewer at %s", url)
    if on_url is not None:
        on_url(url)
    if open_browser:
        open_in_browser(url)
    if wait:
        wait_for_interrupt()
        stop_server()


# --------------------------------------------------------------------------- dataset volumes


def validation_parts(volumes: Mapping[str, Any], config=None) -> dict[str, Any]:
    """The validation partition of each volume under ``config.training`` (the defaults when None).

    Volumes without a validation partition are left out (with a warning).
    """
    from .volumes import partition_volumes

    if config is None:
        from .config import load_config

        config = load_config()
    parts = partition_volumes(volumes, config.training.partitions, config.training.validation_partition,
                              partitions_key="[training] partitions",
                              index_key="[training] validation_partition")
    for name in volumes:
        if name not in parts:
            log.warning("volume %r has no validation partition: left out", name)
    return parts


def _offset(volume) -> tuple[int, int, int]:
    """Position of a volume (a view: partition, ...) in its root volume, in its own voxels, ZYX."""
    if hasattr(volume, "world_offset"):
        scale = np.asarray(getattr(volume, "world_scale", 1))
        return tuple(int(o) for o in np.asarray(volume.world_offset) // scale)  # type: ignore[return-value]
    return tuple(int(o) for o in np.ravel(getattr(volume, "offset", (0, 0, 0))))  # type: ignore[return-value]


def _resolution(volume) -> tuple[float, float, float]:
    return tuple(float(r) for r in np.ravel(volume.resolution))  # type: ignore[return-value]


def volume_layers(volume, partition: tuple[Sequence[int], Sequence[int]] | None = None,
                  *, prefix: str | None = None) -> list[Layer]:
    """Image, labels and mask layers (those present) of a dataset volume.

    Parameters
    ----------
    volume : diluvian.volumes.Volume
        Its ``image``, ``labels`` and ``mask`` (any may be None) are shown at its
        own resolution. A view (e.g. a partition) is placed at its offset in
        the volume it was made from.
    partition : (partitioning, index) or None
        Show only this partition of the volume (``Volume.partition``), at its
        offset in the full volume and without downsampling.
    prefix : str or None
        Layer names are ``"<prefix> image"`` etc.; the volume name by default.

    Returns
    -------
    list of Layer
    """
    prefix = volume.name if prefix is None else prefix
    if partition is not None:
        volume = volume.partition(tuple(partition[0]), tuple(partition[1]))
    offset = _offset(volume)
    res = _resolution(volume)
    layers = []
    if getattr(volume, "image", None) is not None:
        layers.append(Layer(f"{prefix} image", volume.image, "image", res, offset))
    if getattr(volume, "labels", None) is not None:
        layers.append(Layer(f"{prefix} labels", volume.labels, "segmentation", res, offset))
    if getattr(volume, "mask", None) is not None:
        layers.append(Layer(f"{prefix} mask", volume.mask, "image", res, offset, color="#ffd700",
                            value_range=(0.0, 1.0)))
    return layers


def select_volumes(volumes: Mapping[str, Any], regex: str = ".") -> dict[str, Any]:
    """The volumes whose name ``re.match``-es ``regex``, in their order.

    Raises
    ------
    ConfigError
        ``regex`` is not a valid regular expression.
    DatasetNotFoundError
        No volume matches; the message lists the names that exist.
    """
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise ConfigError(f"volume name regex {regex!r}: {e}") from None
    selected = {name: v for name, v in volumes.items() if pattern.match(name)}
    if not selected:
        known = ", ".join(repr(n) for n in volumes) or "none (give dataset TOMLs with -v)"
        raise DatasetNotFoundError(f"no volume name matches {regex!r}; volumes: {known}")
    return selected


def _segmentation_volume(volumes: Mapping[str, Any], name: str):
    if name not in volumes:
        known = ", ".join(repr(n) for n in volumes) or "none"
        raise DatasetNotFoundError(f"segmentation volume {name!r} not found; volumes: {known}")
    seg = volumes[name]
    if getattr(seg, "labels", None) is None:
        raise DataError(f"segmentation volume {name!r} has no labels")
    return seg


def _reference_name(segmentation: str, names: Sequence[str]) -> str:
    """The volume a segmentation belongs to: the longest name it starts with (fill writes
    ``"<vol> segmentation"``), else the first one."""
    prefixes = [n for n in names if segmentation.startswith(n)]
    return max(prefixes, key=len) if prefixes else names[0]


def _aligned_labels(seg, seg_name: str, full, shown, ref_name: str) -> tuple[Any, tuple[int, int, int]]:
    """The labels of ``seg`` over ``shown`` (``full`` or a partition of it) and their offset in ``full``.

    A segmentation of the whole volume is partitioned like ``shown``; one of the
    partition's shape (``fill --partition-volumes``) is taken as it is. A segmentation
    of neither shape whose resolution is an integer multiple of the volume's (a fill at
    20 nm of 10 nm data) is upsampled, nearest neighbour, to the volume's voxels.
    """
    from .volumes.base import ArrayWindow, UpsampledLabels

    full_shape = np.asarray(full.shape, dtype=np.int64)
    shown_shape = np.asarray(shown.shape, dtype=np.int64)
    seg_shape = np.asarray(seg.shape, dtype=np.int64)
    offset = (0, 0, 0) if shown is full else _offset(shown)
    if (seg_shape == full_shape).all():
        return (seg.labels if shown is full else seg.partition(shown.partitioning, shown.index).labels), offset
    if shown is not full and (seg_shape == shown_shape).all():
        return seg.labels, offset
    factors = np.asarray(_resolution(seg)) / np.asarray(_resolution(full))
    f = np.round(factors).astype(np.int64)
    if np.allclose(factors, f, atol=1e-6) and (f >= 1).all() and (f > 1).any():
        fine = seg_shape * f

        def fits(shape: NDArray) -> bool:  # equal up to the voxels the coarser grid cannot cover
            return bool(((fine >= shape) & (fine - shape < f)).all())

        if fits(full_shape):
            up = UpsampledLabels(seg.labels, f, full_shape)
            return (up if shown is full else ArrayWindow(up, offset, shown_shape)), offset
        if shown is not full and fits(shown_shape):
            return UpsampledLabels(seg.labels, f, shown_shape), offset
    what = f"volume {ref_name!r} {full_shape.tolist()} at {list(_resolution(full))} nm"
    if shown is not full:
        what = f"neither {what} nor its validation partition {shown_shape.tolist()}"
    raise DataError(f"segmentation {seg_name!r} has shape {seg_shape.tolist()} at {list(_resolution(seg))} nm: "
                    f"fits {what}")


def _select_with_segmentation(volumes: Mapping[str, Any], regex: str, segmentation: str | None):
    selected = select_volumes(volumes, regex)
    seg = None
    if segmentation is not None:
        seg = _segmentation_volume(volumes, segmentation)
        if len(selected) > 1:
            selected.pop(segmentation, None)
    return selected, seg


def view_volumes(
    volumes: Mapping[str, Any],
    regex: str = ".",
    *,
    segmentation: str | None = None,
    partition_volumes: bool = False,
    config=None,
    bind_address: str = "127.0.0.1",
    port: int = 0,
    open_browser: bool = False,
    wait: bool = True,
    on_url: Callable[[str], Any] | None = None,
):
    """Show the image, labels and mask of the volumes matching ``regex`` in one viewer.

    Parameters
    ----------
    volumes : mapping of name -> Volume
        As returned by ``diluvian.volumes.load_volumes``.
    regex : str
        Volume names are matched with ``re.match``.
    segmentation : str or None
        Name of a label volume (e.g. fill's ``"<vol> segmentation"``) to show as
        a segmentation layer over the volume it belongs to (the longest selected
        name it starts with, else the first).
    partition_volumes : bool
        Show only each volume's validation partition (``config.training``
        partitions), at its offset in the full volume.
    config : diluvian.config.Config or None
        Used for the partitions; the defaults when None.
    bind_address, port : str, int
        Web server address (see :func:`make_viewer`).
    open_browser : bool
        Open the URL in a web browser, when the system has one.
    wait : bool
        Serve until Ctrl-C, then stop the server. False: return at once, serving
        in the background.
    on_url : callable or None
        Called with the viewer URL before waiting (the CLI prints it).

    Returns
    -------
    neuroglancer.Viewer

    Raises
    ------
    DatasetNotFoundError
        No volume matches ``regex``, or no volume is called ``segmentation``
        (the names that exist are listed).
    DataError
        The address cannot be bound, the segmentation does not fit its volume,
        or no selected volume has anything to show.
    """
    selected, seg = _select_with_segmentation(volumes, regex, segmentation)
    shown = validation_parts(selected, config) if partition_volumes else dict(selected)
    layers: list[Layer] = []
    for volume in shown.values():
        layers.extend(volume_layers(volume))
    if seg is not None and shown and segmentation not in shown:
        ref_name = _reference_name(segmentation, list(shown))
        labels, offset = _aligned_labels(seg, segmentation, selected[ref_name], shown[ref_name], ref_name)
        layers.append(Layer(f"{segmentation} labels", labels, "segmentation", _resolution(selected[ref_name]),
                            offset))
    if not layers:
        raise DataError(f"nothing to show for the volumes {', '.join(map(repr, selected))}")
    viewer = make_viewer(layers, bind_address=bind_address, port=port)
    _serve(viewer, open_browser=open_browser, wait=wait, on_url=on_url)
    return viewer


# --------------------------------------------------------------------------- fill and training results


def _as_zyx(array: Any, what: str) -> np.ndarray:
    """A ZYX numpy array from an array or tensor with leading singleton axes (batch, channel)."""
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().float().cpu().numpy() if array.is_floating_point() else array.detach().cpu().numpy()
    array = np.asarray(array)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise DataError(f"{what}: expected a (Z, Y, X) array (leading axes of size 1 allowed), "
                        f"got shape {list(array.shape)}")
    return array


def show_fill_result(
    image: Any,
    labels: Any,
    conflicts: Any = None,
    resolution: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    offset: Sequence[int] = (0, 0, 0),
    extra_layers: Sequence[Layer] = (),
    bind_address: str = "127.0.0.1",
    port: int = 0,
):
    """A viewer of a dense fill: image, segmentation and conflict count (``fill --viewer``).

    Parameters
    ----------
    image : array-like, shape (Z, Y, X), or None
        The filled image.
    labels : array-like of ints, shape (Z, Y, X)
        The segmentation (0 = unfilled).
    conflicts : array-like of ints, shape (Z, Y, X), or None
        How many bodies claimed each voxel beyond the one that kept it; drawn
        in red, saturating at the largest count.
    resolution : 3 floats
        nm, ZYX.
    offset : 3 ints
        Voxel offset of all three arrays (e.g. a partition's origin), ZYX.
    extra_layers : sequence of Layer
        More layers, e.g. the ground truth.
    bind_address, port : see :func:`make_viewer`.

    Returns
    -------
    neuroglancer.Viewer
        Serving in the background; ``viewer.get_viewer_url()`` is its address.
    """
    res = tuple(float(r) for r in resolution)
    off = tuple(int(o) for o in offset)
    layers = []
    if image is not None:
        layers.append(Layer("image", image, "image", res, off))
    layers.extend(_segmentation_layers(labels, conflicts, res, off))
    return make_viewer(layers + list(extra_layers), bind_address=bind_address, port=port)


def _segmentation_layers(labels: Any, conflicts: Any, resolution: tuple[float, float, float],
                         offset: tuple[int, int, int], prefix: str = "") -> list[Layer]:
    """The ``segmentation`` layer of a fill and, when given, its ``conflict count`` (red)."""
    layers = [Layer(f"{prefix}segmentation", labels, "segmentation", resolution, offset)]
    if conflicts is not None:
        top = float(np.max(conflicts)) if np.size(conflicts) else 0.0
        layers.append(Layer(f"{prefix}conflict count", conflicts, "image", resolution, offset, color="#ff2020",
                            value_range=(0.0, max(top, 1.0))))
    return layers


def show_fill_results(
    volumes: Mapping[str, Any],
    results: Mapping[str, Any],
    *,
    conflicts: bool = True,
    bind_address: str = "127.0.0.1",
    port: int = 0,
):
    """One viewer of the dense fills of several volumes (``fill --viewer``).

    For each filled volume, in the order of ``results``: its image, its
    ground-truth labels and mask (those present, as :func:`volume_layers`),
    the new segmentation and the conflict count. Layer names are prefixed
    with the volume name (``"<name> image"``, ``"<name> labels"``,
    ``"<name> segmentation"``, ``"<name> conflict count"``).

    Parameters
    ----------
    volumes : mapping of name -> Volume
        The volumes as they were filled (partitioned / downsampled views are
        placed at their offset in the full volume).
    results : mapping of name -> FillResult or array
        For each filled volume, a :class:`~diluvian.fill.FillResult` (its
        ``labels`` and ``conflict_count`` are shown) or a labels array of
        the volume's shape.
    conflicts : bool
        Show the conflict count layers.
    bind_address, port : str, int
        Web server address (see :func:`make_viewer`).

    Returns
    -------
    neuroglancer.Viewer
        Serving in the background; ``viewer.get_viewer_url()`` is its address.

    Raises
    ------
    DatasetNotFoundError
        A result names a volume that is not in ``volumes``.
    DataError
        No result, a segmentation whose shape differs from its volume's, or
        the address cannot be bound.
    """
    if not results:
        raise DataError("nothing to show: no fill results")
    layers: list[Layer] = []
    for name, result in results.items():
        if name not in volumes:
            known = ", ".join(repr(n) for n in volumes) or "none"
            raise DatasetNotFoundError(f"fill result of volume {name!r}, which is not among the volumes {known}")
        volume = volumes[name]
        labels = getattr(result, "labels", result)
        counts = getattr(result, "conflict_count", None) if conflicts else None
        shape = tuple(int(s) for s in np.asarray(volume.shape)[-3:])
        if tuple(labels.shape) != shape:
            raise DataError(f"volume {name!r}: segmentation of shape {list(labels.shape)} differs from the "
                            f"volume's {list(shape)}")
        layers.extend(volume_layers(volume, prefix=name))
        layers.extend(_segmentation_layers(labels, counts, _resolution(volume), _offset(volume), prefix=f"{name} "))
    return make_viewer(layers, bind_address=bind_address, port=port)


def show_training_sample(
    image: Any,
    mask_input: Any,
    target: Any,
    prediction: Any,
    resolution: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    logits: bool = False,
    extra_layers: Sequence[Layer] = (),
    bind_address: str = "127.0.0.1",
    port: int = 0,
):
    """A viewer of one training sample: image, mask input, target and prediction (``train --viewer``).

    Each argument is one sample's ZYX array (NumPy or torch; leading batch and
    channel axes of size 1 are dropped). The target and prediction may cover
    a smaller, centred field of view than the image; they are placed at the
    centre.

    Parameters
    ----------
    image : array, shape (Z, Y, X)
        Input image in [0, 1].
    mask_input : array, shape (Z, Y, X)
        The mask channel the network saw, probabilities in [0, 1] (green).
    target : array, shape (Z', Y', X')
        Ground-truth object mask, 0/1 (blue).
    prediction : array, shape (Z', Y', X')
        Network output: probabilities in [0, 1] (magenta), or logits with ``logits=True``.
    resolution : 3 floats
        nm, ZYX.
    logits : bool
        ``prediction`` holds logits; a sigmoid is applied.
    extra_layers, bind_address, port : see :func:`show_fill_result`.

    Returns
    -------
    neuroglancer.Viewer
    """
    res = tuple(float(r) for r in resolution)
    image = _as_zyx(image, "image")
    arrays = {"mask input": _as_zyx(mask_input, "mask_input"), "target": _as_zyx(target, "target"),
              "prediction": _as_zyx(prediction, "prediction")}
    if logits:
        arrays["prediction"] = 1.0 / (1.0 + np.exp(-arrays["prediction"].astype(np.float32)))
    colors = {"mask input": "#20ff20", "target": "#3070ff", "prediction": "#ff20ff"}
    layers = [Layer("image", image.astype(np.float32, copy=False), "image", res)]
    for name, array in arrays.items():
        margin = np.subtract(image.shape, array.shape)
        if np.any(margin < 0) or np.any(margin % 2):
            raise DataError(f"{name}: shape {list(array.shape)} is not a centred crop of the image's "
                            f"{list(image.shape)}")
        layers.append(Layer(name, array.astype(np.float32, copy=False), "image", res, tuple(margin // 2),
                            color=colors[name], value_range=(0.0, 1.0)))
    return make_viewer(layers + list(extra_layers), bind_address=bind_address, port=port)


def show_trained_sample(
    model_file: str | Path,
    volumes: Mapping[str, Any],
    *,
    config=None,
    index: int = 0,
    device: Any = None,
    bind_address: str = "127.0.0.1",
    port: int = 0,
):
    """A viewer of a trained model filling one validation subvolume (``train --viewer``).

    Loads the model, draws the fixed validation set exactly as training does
    (:func:`diluvian.training.validation_subvolumes`, same seed, so the
    subvolume is one that training validated on), fills subvolume ``index``
    to completion from its seed (:func:`diluvian.training.run_validation`)
    and shows it with :func:`show_training_sample`: the image, the mask input
    the first move saw (the seed voxel at ``v_true``, ``v_false`` elsewhere),
    the target object and the filled mask (voxels never reached are 0).

    Parameters
    ----------
    model_file : path-like
        A model written by training (``BASE.pt``).
    volumes : mapping of name -> Volume
        The labelled volumes training used (not partitioned; the config's
        validation partitions are applied).
    config : diluvian.config.Config or None
        Partitions, validation subvolume shape, seed ...; by default the
        config stored in the model file, which is the one it was trained with
        (including the random seed of an ``--early-restart``). The model's
        own ``[network]`` and FOVs are used either way.
    index : int
        Which subvolume of the validation set (0 is the first).
    device : str or torch.device or None
        Where to run the model; ``[training] device`` by default.
    bind_address, port : str, int
        Web server address (see :func:`make_viewer`).

    Returns
    -------
    viewer : neuroglancer.Viewer
        Serving in the background, with the layers ``image``, ``mask input``,
        ``target`` and ``prediction``.
    info : dict
        ``volume`` (name), ``label_id``, ``seed`` (ZYX voxel in the
        subvolume), ``moves`` and ``metric`` (``validation_metric`` of the
        filled mask against the target).

    Raises
    ------
    ModelError
        ``model_file`` is not a diluvian model.
    DataError, ConfigError
        Unusable volumes or partitions, or the address cannot be bound.
    """
    import dataclasses

    from .network import check_model_config, load_model, select_device
    from .training import prepare_training_volumes, run_validation, validation_subvolumes

    if int(index) < 0:
        raise DataError(f"index: expected an int >= 0, got {index}")
    model, file_cfg, _ = load_model(model_file, "cpu")
    cfg = file_cfg if config is None else check_model_config(file_cfg, config, explicitly_set=False,
                                                             model_file=model_file)
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, validation_size=int(index) + 1))
    model = model.to(select_device(device if device is not None else cfg.training.device))
    _, val_vols = prepare_training_volumes(cfg, volumes, need_training=False)
    subvolume = validation_subvolumes(cfg, val_vols)[int(index):][:1]
    result, regions = run_validation(model, subvolume, cfg, keep_regions=1)
    region = regions[0]
    mc = cfg.model
    image = np.asarray(region.image, dtype=np.float32)
    mask_input = np.full(image.shape, mc.v_false, dtype=np.float32)
    mask_input[tuple(int(s) for s in region.seed)] = mc.v_true
    prediction = np.nan_to_num(np.asarray(region.mask, dtype=np.float32), nan=0.0)
    target = np.asarray(region.target, dtype=np.float32)
    res = tuple(float(r) for r in np.ravel(val_vols[subvolume[0].volume].resolution))
    viewer = show_training_sample(image, mask_input, target, prediction, res, bind_address=bind_address,
                                  port=port)
    info = {"volume": subvolume[0].volume, "label_id": subvolume[0].label_id,
            "seed": [int(s) for s in region.seed], "moves": int(region.moves), "metric": result.metric}
    log.info("training sample: volume %r, object %s, seed %s: %d moves, %s %.4f", info["volume"],
             info["label_id"], info["seed"], info["moves"], cfg.training.validation_metric.metric, info["metric"])
    return viewer, info


# --------------------------------------------------------------------------- static pictures


def _splitmix64(ids: np.ndarray) -> np.ndarray:
    x = ids.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def label_colors(ids: Any) -> np.ndarray:
    """A fixed, random-looking, saturated RGB colour per segment id.

    Parameters
    ----------
    ids : array-like of ints

    Returns
    -------
    ndarray of float, shape ids.shape + (3,)
        RGB in [0, 1]; the same id always gets the same colour.
    """
    from matplotlib.colors import hsv_to_rgb

    h = _splitmix64(np.asarray(ids))
    hue = (h & np.uint64(0xFFFF)).astype(np.float64) / 65536.0
    sat = 0.65 + 0.35 * ((h >> np.uint64(16)) & np.uint64(0xFF)).astype(np.float64) / 255.0
    val = 0.85 + 0.15 * ((h >> np.uint64(24)) & np.uint64(0xFF)).astype(np.float64) / 255.0
    return hsv_to_rgb(np.stack([hue, sat, val], axis=-1))


def _overlay_rgba(labels: np.ndarray, background: int, fill_alpha: float, edge_alpha: float) -> np.ndarray:
    """RGBA overlay of a 2D label slice: translucent fill, opaque 1-pixel boundaries."""
    ids, inverse = np.unique(labels, return_inverse=True)
    rgba = np.zeros(labels.shape + (4,), dtype=np.float32)
    rgba[..., :3] = label_colors(ids)[inverse.reshape(labels.shape)]
    edge = np.zeros(labels.shape, dtype=bool)
    diff_rows = labels[1:, :] != labels[:-1, :]
    diff_cols = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= diff_rows
    edge[:-1, :] |= diff_rows
    edge[:, 1:] |= diff_cols
    edge[:, :-1] |= diff_cols
    rgba[..., 3] = np.where(edge, edge_alpha, fill_alpha)
    rgba[labels == background, 3] = 0.0
    return rgba


def _unpack_snapshot_input(volume_or_arrays: Any, labels: Any, resolution: Any):
    """(name, image, labels, resolution or None) from the accepted input forms."""
    name = None
    if isinstance(volume_or_arrays, Mapping):
        image = volume_or_arrays.get("image")
        vol_labels = volume_or_arrays.get("labels")
    elif isinstance(volume_or_arrays, (tuple, list)):
        if len(volume_or_arrays) != 2:
            raise DataError(f"snapshot: expected (image, labels), got a sequence of {len(volume_or_arrays)}")
        image, vol_labels = volume_or_arrays
    elif hasattr(volume_or_arrays, "shape") and hasattr(volume_or_arrays, "dtype"):
        image, vol_labels = volume_or_arrays, None
    else:  # a Volume
        name = getattr(volume_or_arrays, "name", None)
        image = getattr(volume_or_arrays, "image", None)
        vol_labels = getattr(volume_or_arrays, "labels", None)
        if resolution is None:
            resolution = _resolution(volume_or_arrays)
    if labels is not None and not (hasattr(labels, "shape") and hasattr(labels, "dtype")):
        labels = getattr(labels, "labels", None)  # a segmentation Volume
        if labels is None:
            raise DataError("snapshot: the segmentation given has no labels")
    return name, image, (labels if labels is not None else vol_labels), resolution


def _draw_legend(ax, ids: np.ndarray, counts: np.ndarray, dpi: float) -> None:
    """Colour swatches of the segments covering the most pixels, as many as fit in ``ax``."""
    height_px = ax.get_position().height * ax.figure.get_figheight() * dpi
    rows = int(min(10, (height_px - 20) // 19))
    if rows < 2 or ids.size == 0:
        return
    order = np.argsort(-counts, kind="stable")[: rows - 1]
    total = counts.sum()
    ax.text(0.04, 0.98, "largest segments in view", transform=ax.transAxes, va="top", fontsize=9,
            fontweight="bold")
    step = min(0.9 / rows, 19.0 / height_px)
    width_px = ax.get_position().width * ax.figure.get_figwidth() * dpi
    swatch_w = 18.0 / width_px
    for row, i in enumerate(order, start=1):
        top = 0.98 - row * step
        ax.add_patch(_swatch(ax, 0.04, top - 0.8 * step, swatch_w, 0.75 * step, label_colors(ids[i])))
        ax.text(0.04 + swatch_w + 8.0 / width_px, top - 0.4 * step,
                f"id {int(ids[i])}  ({100.0 * counts[i] / total:.1f} %)",
                transform=ax.transAxes, va="center", fontsize=8.5, family="monospace")


def _swatch(ax, x: float, y: float, w: float, h: float, color: np.ndarray):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, transform=ax.transAxes, facecolor=color, edgecolor="black", lw=0.5)


def _contrast_limits(slices: Sequence[np.ndarray]) -> tuple[float, float]:
    values = np.concatenate([s.ravel() for s in slices]).astype(np.float64)
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    return float(lo), float(hi if hi > lo else lo + 1.0)


def snapshot(
    volume_or_arrays: Any,
    out_png: str | Path,
    *,
    point: Sequence[int] | None = None,
    labels: Any = None,
    resolution: Sequence[float] | None = None,
    title: str | None = None,
    background_label: int = 0,
    size_px: tuple[int, int] | None = None,
    dpi: int = 100,
) -> Path:
    """Write a PNG of three orthogonal slices through a point, segmentation overlaid.

    Layout: XY top left, ZY to its right (sharing y), XZ below it (sharing x),
    each with axes in nm at the true aspect ratio and dashed lines where the
    other two slices cut; a one-line summary under the title and, bottom
    right, the colours of the largest segments in view. The image is grey (contrast
    stretched to its 0.5-99.5 percentiles on the slices); each segment gets a
    fixed colour per id (:func:`label_colors`), translucent with opaque
    boundaries. Only the three slices are read, so large HDF5 volumes are fine.

    Parameters
    ----------
    volume_or_arrays : Volume, array, (image, labels) or {"image":, "labels":}
        A dataset volume (image and labels from it, ``resolution`` from it), or
        ZYX arrays. The image may be None when labels are given.
    out_png : path
        Output file, written atomically.
    point : 3 ints or None
        ZYX voxel the slices go through; the centre when None.
    labels : array-like (Z, Y, X), Volume, or None
        Segmentation to overlay instead of the volume's own labels (a Volume
        such as fill's ``"<vol> segmentation"`` entry: its labels are used).
    resolution : 3 floats or None
        nm, ZYX; taken from a Volume when None. Arrays without a resolution are
        drawn in voxel units.
    title : str or None
        Figure title; the volume name when None.
    background_label : int
        This id is not coloured.
    size_px : (width, height) or None
        Size of the PNG in pixels; None: 1200 wide, height to fit the panels.
    dpi : int

    Returns
    -------
    Path
        ``out_png``.

    Raises
    ------
    DataError
        Nothing to draw, shapes that differ, a point outside the volume, or an
        unwritable output directory.
    """
    from matplotlib import patheffects
    from matplotlib.figure import Figure

    name, image, seg, resolution = _unpack_snapshot_input(volume_or_arrays, labels, resolution)
    if image is None and seg is None:
        raise DataError("snapshot: nothing to draw (no image and no labels)")
    ref = image if image is not None else seg
    shape = tuple(int(s) for s in ref.shape)
    if len(shape) != 3:
        raise DataError(f"snapshot: expected a (Z, Y, X) volume, got shape {list(shape)}")
    if image is not None and seg is not None and tuple(seg.shape) != shape:
        raise DataError(f"snapshot: labels shape {list(seg.shape)} differs from the image's {list(shape)}")
    unit = "nm" if resolution is not None else "voxels"
    res = np.asarray(resolution if resolution is not None else (1.0, 1.0, 1.0), dtype=np.float64).ravel()
    if res.shape != (3,) or np.any(res <= 0):
        raise DataError(f"snapshot: resolution: expected 3 positive numbers (nm, ZYX), got {list(res)}")
    if point is None:
        point = tuple(s // 2 for s in shape)
    point = tuple(int(p) for p in point)
    if len(point) != 3 or any(not 0 <= p < s for p, s in zip(point, shape)):
        raise DataError(f"snapshot: point {list(point)} (ZYX) is outside the volume of shape {list(shape)}")
    z, y, x = point

    def planes(arr: Any) -> dict[str, np.ndarray]:
        # XY: rows y, cols x; ZY: rows y, cols z; XZ: rows z, cols x.
        return {"xy": np.asarray(arr[z, :, :]), "zy": np.asarray(arr[:, :, x]).T, "xz": np.asarray(arr[:, y, :])}

    img_planes = planes(image) if image is not None else None
    seg_planes = planes(seg) if seg is not None else None
    if img_planes is not None:
        vmin, vmax = _contrast_limits(list(img_planes.values()))

    ext = np.asarray(shape) * res  # ZYX extent in nm (or voxels)
    ez, ey, ex = ext
    # Keep thin panels readable: a panel is at least 12 % of its row / column.
    wz = max(ez, 0.12 * ex)
    hz = max(ez, 0.12 * ey)
    margins_in = {"left": 0.85, "right": 0.25, "bottom": 0.6, "top": 1.15, "gap": 0.35}
    if size_px is None:
        width_in = 12.0
        panels_w = width_in - margins_in["left"] - margins_in["right"] - margins_in["gap"]
        panels_h = panels_w * (ey + hz) / (ex + wz)
        height_in = float(np.clip(panels_h + margins_in["top"] + margins_in["bottom"] + 2 * margins_in["gap"],
                                  4.0, 24.0))
    else:
        width_in, height_in = size_px[0] / dpi, size_px[1] / dpi

    fig = Figure(figsize=(width_in, height_in), dpi=dpi, facecolor="white")
    gs = fig.add_gridspec(2, 2, width_ratios=[ex, wz], height_ratios=[ey, hz],
                          left=margins_in["left"] / width_in, right=1 - margins_in["right"] / width_in,
                          bottom=margins_in["bottom"] / height_in, top=1 - margins_in["top"] / height_in,
                          wspace=0.05, hspace=2 * margins_in["gap"] / height_in)
    ax_xy = fig.add_subplot(gs[0, 0])
    ax_zy = fig.add_subplot(gs[0, 1], sharey=ax_xy)
    ax_xz = fig.add_subplot(gs[1, 0], sharex=ax_xy)
    ax_legend = fig.add_subplot(gs[1, 1])
    ax_legend.axis("off")

    # extents (left, right, bottom, top) in nm, rows growing downwards like the array
    extents = {"xy": (0, ex, ey, 0), "zy": (0, ez, ey, 0), "xz": (0, ex, ez, 0)}
    cuts = {"xy": ((x + 0.5) * res[2], (y + 0.5) * res[1]),
            "zy": ((z + 0.5) * res[0], (y + 0.5) * res[1]),
            "xz": ((x + 0.5) * res[2], (z + 0.5) * res[0])}
    titles = {"xy": f"XY at z = {z}", "zy": f"ZY at x = {x}", "xz": f"XZ at y = {y}"}
    axis_names = {"xy": ("x", "y"), "zy": ("z", "y"), "xz": ("x", "z")}
    fig_px = (width_in * dpi, height_in * dpi)
    for key, ax in (("xy", ax_xy), ("zy", ax_zy), ("xz", ax_xz)):
        ax.set_facecolor("black")
        if img_planes is not None:
            ax.imshow(img_planes[key], cmap="gray", vmin=vmin, vmax=vmax, extent=extents[key],
                      interpolation="nearest", aspect="equal")
        if seg_planes is not None:
            # Upsample to about the drawn size so that boundaries are ~1 screen pixel wide.
            left, right, bottom, top = extents[key]
            box = ax.get_position()
            px_per_unit = min(box.width * fig_px[0] / (right - left), box.height * fig_px[1] / (bottom - top))
            plane = seg_planes[key]
            rows_res, cols_res = (bottom - top) / plane.shape[0], (right - left) / plane.shape[1]
            plane = np.repeat(plane, int(np.clip(px_per_unit * rows_res, 1, 16)), axis=0)
            plane = np.repeat(plane, int(np.clip(px_per_unit * cols_res, 1, 16)), axis=1)
            alpha = (0.32, 0.95) if img_planes is not None else (0.8, 1.0)
            ax.imshow(_overlay_rgba(plane, background_label, *alpha), extent=extents[key],
                      interpolation="nearest", aspect="equal")
        cx, cy = cuts[key]
        for draw, where in ((ax.axvline, cx), (ax.axhline, cy)):
            draw(where, color="#ffee55", lw=0.8, ls=(0, (4, 4)), alpha=0.7)
        ax.set_xlim(extents[key][0], extents[key][1])
        ax.set_ylim(extents[key][2], extents[key][3])
        coord = {"xy": (z, res[0]), "zy": (x, res[2]), "xz": (y, res[1])}[key]
        ax.set_title(f"{titles[key]}  ({coord[0] * coord[1]:g} {unit})" if unit == "nm" else titles[key],
                     fontsize=10)
        ax.tick_params(labelsize=8)
        xname, yname = axis_names[key]
        ax.set_xlabel(f"{xname} ({unit})", fontsize=9)
        ax.set_ylabel(f"{yname} ({unit})", fontsize=9)
        ax.text(0.015, 0.985, key.upper(), transform=ax.transAxes, color="white", fontsize=9, va="top",
                fontweight="bold", path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
    ax_zy.tick_params(labelleft=False)
    ax_zy.set_ylabel("")
    ax_xy.tick_params(labelbottom=False)
    ax_xy.set_xlabel("")

    facts = [f"{shape[0]} × {shape[1]} × {shape[2]} voxels (z, y, x)",
             f"{res[0]:g} × {res[1]:g} × {res[2]:g} nm" if unit == "nm" else "voxel size unknown",
             f"point (z, y, x) = ({z}, {y}, {x})"]
    if seg_planes is not None:
        ids, counts = np.unique(np.concatenate([p.ravel() for p in seg_planes.values()]), return_counts=True)
        keep = ids != background_label
        ids, counts = ids[keep], counts[keep]
        facts.append(f"{ids.size} segments in these slices")
        _draw_legend(ax_legend, ids, counts, fig.dpi)
    if img_planes is not None:
        facts.append(f"grey {vmin:g} to {vmax:g}")
    fig.suptitle(title if title is not None else (name or "volume"), fontsize=14, fontweight="bold",
                 y=1 - 0.25 / height_in, va="top")
    fig.text(0.5, 1 - 0.62 / height_in, "   ·   ".join(facts), ha="center", va="top", fontsize=9.5, color="#333333")

    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    log.debug("wrote %s", out_png)
    return Path(out_png)


def snapshot_volumes(
    volumes: Mapping[str, Any],
    out_png: str | Path,
    regex: str = ".",
    *,
    point: Sequence[int] | None = None,
    segmentation: str | None = None,
    partition_volumes: bool = False,
    config=None,
) -> list[Path]:
    """:func:`snapshot` of the dataset volumes matching ``regex`` (``diluvian view --snapshot``).

    Parameters
    ----------
    volumes : mapping of name -> Volume
    out_png : path
        Output PNG; must contain ``{volume}`` (replaced by the volume name, with
        characters other than letters, digits, ``.`` and ``-`` turned into ``_``)
        when more than one volume is drawn.
    regex : str
        Volume names are matched with ``re.match``.
    point : 3 ints or None
        ZYX voxel (of the volume, or of its partition) the slices go through;
        the centre when None.
    segmentation : str or None
        Name of a label volume to overlay instead of each volume's own labels
        (see :func:`view_volumes`); it must have the volume's (or the
        partition's) shape.
    partition_volumes : bool
        Draw each volume's validation partition only.
    config : diluvian.config.Config or None
        Used for the partitions; the defaults when None.

    Returns
    -------
    list of Path
        The PNGs written.
    """
    selected, seg = _select_with_segmentation(volumes, regex, segmentation)
    if len(selected) > 1 and "{volume}" not in str(out_png):
        raise DataError(f"{out_png}: {regex!r} matches {len(selected)} volumes ({', '.join(map(repr, selected))}); "
                        "narrow the regex or put {volume} in the output name")
    written = []
    shown = validation_parts(selected, config) if partition_volumes else dict(selected)
    for name, part in shown.items():
        labels = None
        title = name
        if part is not selected[name]:
            title += f" (validation partition from z, y, x = {', '.join(map(str, _offset(part)))})"
        if seg is not None:
            labels, _ = _aligned_labels(seg, segmentation, selected[name], part, name)
            title += f" with {segmentation!r}"
        out = str(out_png).replace("{volume}", re.sub(r"[^\w.-]+", "_", name))
        written.append(snapshot(part, out, point=point, labels=labels, resolution=_resolution(part), title=title))
    if not written:
        raise DataError(f"nothing to draw for the volumes {', '.join(map(repr, selected))}")
    return written
