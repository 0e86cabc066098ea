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
  several volumes) and :func:`show_training_sample` of
  :func:`diluvian.sample_fill.fill_validation_sample` (a saved model filling one
  validation subvolume) are the viewers of ``fill --viewer`` and ``train --viewer``.
  This package loads no model and runs no fill: it only shows arrays and volumes.
* :func:`start_server` binds the web server early (so that a busy port fails
  before a long fill or training); :func:`wait_for_interrupt` blocks until
  Ctrl-C; :func:`stop_server` frees the port.

Neuroglancer runs one web server per process; every viewer is served by it.

Static pictures
---------------
:func:`snapshot` renders three orthogonal slices (XY, ZY, XZ) through a point
with the segmentation overlaid, to a PNG (matplotlib, Agg, no display needed).

Modules
-------
``layers``
    :class:`Layer` and its neuroglancer volume (the ZYX -> XYZ flip).
``server``
    The web server and :func:`make_viewer`; patch ``server.wait_for_interrupt``
    (not this package's name) to serve without blocking.
``datasets``
    Dataset volumes: :func:`volume_layers`, :func:`view_volumes`, partitions.
``results``
    Fill and training-sample viewers from arrays.
``snapshots``
    :func:`snapshot`, :func:`snapshot_volumes`, :func:`label_colors`.
"""


from __future__ import annotations

from .datasets import select_volumes, validation_parts, view_volumes, volume_layers
from .layers import LAYER_KINDS, Layer
from .results import show_fill_result, show_fill_results, show_training_sample
from .server import make_viewer, open_in_browser, start_server, stop_server, wait_for_interrupt
from .snapshots import label_colors, snapshot, snapshot_volumes

__all__ = [
    "Layer",
    "LAYER_KINDS",
    "make_viewer",
    "volume_layers",
    "select_volumes",
    "view_volumes",
    "show_fill_result",
    "show_fill_results",
    "show_training_sample",
    "start_server",
    "wait_for_interrupt",
    "open_in_browser",
    "stop_server",
    "label_colors",
    "snapshot",
    "snapshot_volumes",
    "validation_parts",
]
