"""Static pictures: three orthogonal slices with the segmentation overlaid, to PNG (matplotlib, Agg)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DataError
from ..util import atomic_path, fmt_list
from .datasets import _aligned_labels, _offset, _resolution, _select_with_segmentation, validation_parts

log = logging.getLogger(__name__)

__all__ = ["label_colors", "snapshot", "snapshot_volumes"]


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
        raise DataError(f"snapshot: resolution: expected 3 positive numbers (nm, ZYX), got {fmt_list(res)}")
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


def snapshot_path(out_png: str | Path, name: str) -> str:
    """The ``--snapshot`` file of volume ``name``: ``{volume}`` in ``out_png`` replaced by the name (made file-safe)."""
    return str(out_png).replace("{volume}", re.sub(r"[^\w.-]+", "_", name))


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
        out = snapshot_path(out_png, name)
        written.append(snapshot(part, out, point=point, labels=labels, resolution=_resolution(part), title=title))
    if not written:
        raise DataError(f"nothing to draw for the volumes {', '.join(map(repr, selected))}")
    return written
