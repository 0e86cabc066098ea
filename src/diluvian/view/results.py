"""Viewers of results handed over as arrays: dense fills (``fill --viewer``) and training samples
(``train --viewer``; :func:`diluvian.sample_fill.fill_validation_sample` makes the arrays)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DataError, DatasetNotFoundError
from . import server
from .datasets import _offset, _resolution, volume_layers
from .layers import Layer

__all__ = ["show_fill_result", "show_fill_results", "show_training_sample"]


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
    return server.make_viewer(layers + list(extra_layers), bind_address=bind_address, port=port)


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
    return server.make_viewer(layers, bind_address=bind_address, port=port)


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
    return server.make_viewer(layers + list(extra_layers), bind_address=bind_address, port=port)
