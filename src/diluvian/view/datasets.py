"""Viewers of dataset volumes (``diluvian view``): image, labels, mask, partitions, a segmentation beside them."""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, DataError, DatasetNotFoundError
from . import server
from .layers import Layer

log = logging.getLogger(__name__)

__all__ = ["validation_parts", "volume_layers", "select_volumes", "view_volumes"]


def validation_parts(volumes: Mapping[str, Any], config=None) -> dict[str, Any]:
    """The validation partition of each volume under ``config.training`` (the defaults when None).

    Volumes without a validation partition are left out (with a warning).
    """
    from ..volumes import partition_volumes

    if config is None:
        from ..config import load_config

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
        Show only this partition of the volume (:func:`~diluvian.volumes.partition_volume`), at its
        offset in the full volume and without downsampling.
    prefix : str or None
        Layer names are ``"<prefix> image"`` etc.; the volume name by default.

    Returns
    -------
    list of Layer
    """
    prefix = volume.name if prefix is None else prefix
    if partition is not None:
        from ..volumes import partition_volume

        volume = partition_volume(volume, tuple(partition[0]), tuple(partition[1]))
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
    from ..arrays import CroppedArray, UpsampledLabels
    from ..volumes import partition_volume

    full_shape = np.asarray(full.shape, dtype=np.int64)
    shown_shape = np.asarray(shown.shape, dtype=np.int64)
    seg_shape = np.asarray(seg.shape, dtype=np.int64)
    offset = (0, 0, 0) if shown is full else _offset(shown)
    if (seg_shape == full_shape).all():
        return (seg.labels if shown is full else partition_volume(seg, shown.partitioning, shown.index).labels), offset
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
            return (up if shown is full else CroppedArray(up, offset, shown_shape)), offset
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
    viewer = server.make_viewer(layers, bind_address=bind_address, port=port)
    server._serve(viewer, open_browser=open_browser, wait=wait, on_url=on_url)
    return viewer
