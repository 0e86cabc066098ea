"""Neuroglancer's web server (one per process) and the viewers it serves."""

from __future__ import annotations

import logging
import threading
import time
import webbrowser
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DataError
from .layers import Layer, _ng_layer

log = logging.getLogger(__name__)

__all__ = ["make_viewer", "start_server", "stop_server", "open_in_browser", "wait_for_interrupt"]

# One neuroglancer server per process; this lock serialises (re)starting it.
_SERVER_LOCK = threading.Lock()


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
