"""Tests of diluvian.view: neuroglancer layers (ZYX in, XYZ out), volume selection, server errors,
static snapshots, and a real headless-Chromium load of a viewer (marker ``browser``)."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import diluvian.view as view
from diluvian.errors import ConfigError, DataError, DatasetNotFoundError
from diluvian.view import (
    Layer,
    label_colors,
    make_viewer,
    select_volumes,
    show_fill_result,
    show_training_sample,
    snapshot,
    snapshot_volumes,
    stop_server,
    view_volumes,
    volume_layers,
)

neuroglancer = pytest.importorskip("neuroglancer")
Image = pytest.importorskip("PIL.Image")


# --------------------------------------------------------------------------- helpers


def make_volume(name, image=None, labels=None, mask=None, resolution=(40.0, 4.0, 4.0)):
    from diluvian.volumes import Volume

    return Volume(name, image, labels, mask, resolution)


class CountingArray:
    """A ZYX array-like that records that it was read (to see the browser fetch chunks)."""

    def __init__(self, array):
        self._array = array
        self.shape, self.dtype = array.shape, array.dtype
        self.reads = 0
        self._lock = threading.Lock()

    def __getitem__(self, index):
        with self._lock:
            self.reads += 1
        return self._array[index]


def toy_arrays(shape=(8, 24, 32), seed=0):
    """uint8 image, uint64 labels of four quadrant-like blocks (ids 3, 7, 12, 40) and a bool mask."""
    rng = np.random.default_rng(seed)
    image = (rng.random(shape) * 200 + 30).astype(np.uint8)
    labels = np.zeros(shape, dtype=np.uint64)
    z, y, x = shape
    labels[:, : y // 2, : x // 2] = 3
    labels[:, : y // 2, x // 2 :] = 7
    labels[:, y // 2 :, : x // 3] = 12
    labels[:, y // 2 :, x // 3 :] = 40
    mask = np.zeros(shape, dtype=bool)
    mask[:, 2:-2, 2:-2] = True
    return image, labels, mask


def local_volume(viewer, layer_name):
    """The neuroglancer LocalVolume behind a layer of ``viewer``."""
    url = viewer.state.layers[layer_name].source[0].url
    return viewer.volume_manager.volumes[url.rsplit(".", 1)[1]]


@pytest.fixture(autouse=True)
def _stop_neuroglancer_server():
    yield
    stop_server()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- layers


def test_layer_scales_offsets_and_data_are_xyz():
    zyx = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    viewer = make_viewer([Layer("img", zyx, "image", resolution=(40, 4, 8), offset=(1, 2, 3))])
    lv = local_volume(viewer, "img")
    assert tuple(lv.dimensions.names) == ("x", "y", "z")
    np.testing.assert_allclose(np.asarray(lv.dimensions.scales) * 1e9, [8, 4, 40])  # stored in m
    assert tuple(lv.dimensions.units) == ("m", "m", "m")
    assert list(lv.voxel_offset) == [3, 2, 1]
    assert tuple(lv.shape) == (4, 3, 2)
    # data[x, y, z] == zyx[z, y, x], read block by block
    np.testing.assert_array_equal(lv.data[0:4, 1:3, 0:2], zyx[0:2, 1:3, 0:4].transpose(2, 1, 0))
    assert lv.data[3:4, 2:3, 1:2].item() == zyx[1, 2, 3]


def test_layer_kinds_and_dtypes():
    image, labels, mask = toy_arrays()
    viewer = make_viewer([
        Layer("image", image, "image"),
        Layer("labels", labels.astype(np.int32), "segmentation"),
        Layer("mask", mask, "image", color="#ffd700"),
    ])
    state = viewer.state
    assert isinstance(state.layers["image"].layer, neuroglancer.ImageLayer)
    assert isinstance(state.layers["labels"].layer, neuroglancer.SegmentationLayer)
    assert isinstance(state.layers["mask"].layer, neuroglancer.ImageLayer)
    assert local_volume(viewer, "labels").volume_type == "segmentation"
    assert local_volume(viewer, "labels").data_type == "uint64"  # signed ids are served as uint64
    assert local_volume(viewer, "mask").data_type == "uint8"  # bool is not a neuroglancer type
    assert local_volume(viewer, "image").volume_type == "image"
    assert "emitGrayscale" in state.layers["image"].shader
    assert "#ffd700" in state.layers["mask"].shader


def test_layers_at_different_resolutions_share_physical_space():
    image, labels, _ = toy_arrays(shape=(8, 24, 32))
    coarse = labels[::2, ::2, ::2]
    viewer = make_viewer([Layer("fine", image, "image", (40, 4, 4)),
                          Layer("coarse", coarse, "segmentation", (80, 8, 8))])
    fine_lv, coarse_lv = local_volume(viewer, "fine"), local_volume(viewer, "coarse")
    fine_nm = np.asarray(fine_lv.shape) * np.asarray(fine_lv.dimensions.scales)
    coarse_nm = np.asarray(coarse_lv.shape) * np.asarray(coarse_lv.dimensions.scales)
    np.testing.assert_allclose(fine_nm, coarse_nm)
    state = viewer.state
    np.testing.assert_allclose(np.asarray(state.dimensions.scales) * 1e9, [4, 4, 40])  # the finest
    np.testing.assert_allclose(state.position, [16, 12, 4])  # centre, XYZ, in finest voxels


@pytest.mark.parametrize("kwargs, match", [
    (dict(array=np.zeros((4, 4)), kind="image"), "3D"),
    (dict(array=np.zeros((2, 4, 4)), kind="volume"), "kind"),
    (dict(array=np.zeros((2, 4, 4), np.float32), kind="segmentation"), "integer ids"),
    (dict(array=np.zeros((2, 4, 4)), kind="image", resolution=(4, 4)), "resolution"),
    (dict(array=np.zeros((2, 4, 4)), kind="image", offset=(0, 0.5, 0)), "offset"),
    (dict(array=np.zeros((2, 4, 4)), kind="image", color="red"), "#rrggbb"),
    (dict(array=np.zeros((2, 4, 4), np.uint8), kind="segmentation", color="#ff0000"), "image layers only"),
    (dict(array=np.zeros((2, 4, 4)), kind="image", value_range=(1, 1)), "value_range"),
])
def test_layer_validation(kwargs, match):
    with pytest.raises(DataError, match=match):
        Layer("bad", **kwargs)


def test_duplicate_layer_names_are_an_error():
    a = np.zeros((2, 3, 4), np.uint8)
    with pytest.raises(DataError, match="duplicate layer names: a"):
        make_viewer([Layer("a", a), Layer("a", a)])


def test_volume_layers_and_partition_offset():
    image, labels, mask = toy_arrays(shape=(8, 24, 32))
    vol = make_volume("vol", image, labels, mask)
    layers = volume_layers(vol)
    assert [(l.name, l.kind) for l in layers] == [("vol image", "image"), ("vol labels", "segmentation"),
                                                 ("vol mask", "image")]
    assert all(l.resolution == (40.0, 4.0, 4.0) and l.offset == (0, 0, 0) for l in layers)
    part = volume_layers(vol, partition=((2, 1, 1), (1, 0, 0)))
    assert all(l.offset == (4, 0, 0) and l.shape == (4, 24, 32) for l in part)
    label_only = volume_layers(make_volume("seg", labels=labels))
    assert [(l.name, l.kind) for l in label_only] == [("seg labels", "segmentation")]


# --------------------------------------------------------------------------- volume selection, serving


def test_select_volumes_regex_and_errors():
    vols = {"cremi a": 1, "cremi b": 2, "fib25": 3}
    assert list(select_volumes(vols, "cremi")) == ["cremi a", "cremi b"]
    assert list(select_volumes(vols, ".")) == ["cremi a", "cremi b", "fib25"]
    assert list(select_volumes(vols, "cremi b|fib")) == ["cremi b", "fib25"]
    with pytest.raises(DatasetNotFoundError, match=r"no volume name matches 'b'.*'cremi a', 'cremi b', 'fib25'"):
        select_volumes(vols, "b")  # re.match anchors at the start
    with pytest.raises(ConfigError, match="regex"):
        select_volumes(vols, "(")


def test_view_volumes_serves_selected_volumes_and_partitions():
    image, labels, mask = toy_arrays(shape=(8, 24, 32))
    vols = {"a": make_volume("a", image, labels), "b": make_volume("b", image, mask=mask)}
    seen = []
    viewer = view_volumes(vols, "a", wait=False, on_url=seen.append)
    assert [l.name for l in viewer.state.layers] == ["a image", "a labels"]
    assert seen == [viewer.get_viewer_url()] and seen[0].startswith("http://127.0.0.1:")
    viewer = view_volumes(vols, partition_volumes=True, wait=False)  # default partitions: halves in z
    assert [l.name for l in viewer.state.layers] == ["a image", "a labels", "b image", "b mask"]
    assert list(local_volume(viewer, "b mask").voxel_offset) == [0, 0, 4]
    assert tuple(local_volume(viewer, "b mask").shape) == (32, 24, 4)


def test_view_volumes_with_segmentation_volume():
    image, labels, _ = toy_arrays(shape=(8, 24, 32))
    vols = {"a": make_volume("a", image), "a segmentation": make_volume("a segmentation", labels=labels)}
    viewer = view_volumes(vols, segmentation="a segmentation", wait=False)
    assert [l.name for l in viewer.state.layers] == ["a image", "a segmentation labels"]
    # a segmentation of the validation partition only (fill --partition-volumes) lands at its offset
    vols["a segmentation"] = make_volume("a segmentation", labels=labels[4:])
    viewer = view_volumes(vols, segmentation="a segmentation", partition_volumes=True, wait=False)
    assert list(local_volume(viewer, "a segmentation labels").voxel_offset) == [0, 0, 4]
    with pytest.raises(DatasetNotFoundError, match="segmentation volume 'nope' not found"):
        view_volumes(vols, segmentation="nope", wait=False)
    vols["a segmentation"] = make_volume("a segmentation", labels=labels[:3])
    with pytest.raises(DataError, match="has shape"):
        view_volumes(vols, segmentation="a segmentation", wait=False)


def test_view_volumes_no_match_lists_names():
    vols = {"fib25": make_volume("fib25", *toy_arrays())}
    with pytest.raises(DatasetNotFoundError, match="volumes: 'fib25'"):
        view_volumes(vols, "cremi", wait=False)


def test_port_in_use_is_a_one_line_data_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DataError, match=f"127.0.0.1:{port}") as err:
            make_viewer([Layer("a", np.zeros((2, 3, 4), np.uint8))], port=port)
    assert "\n" not in str(err.value)
    assert "in use" in str(err.value)
    # the server comes back on a free port afterwards
    viewer = make_viewer([Layer("a", np.zeros((2, 3, 4), np.uint8))])
    assert viewer.get_viewer_url().startswith("http://127.0.0.1:")


def test_fixed_port_and_served_data_over_http():
    port = free_port()
    zyx = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    viewer = make_viewer([Layer("a", zyx, "image", (40, 4, 4))], port=port)
    url = viewer.get_viewer_url()
    assert url.startswith(f"http://127.0.0.1:{port}/v/")
    with urllib.request.urlopen(url, timeout=10) as reply:  # the static client is served
        assert reply.status == 200 and b"<html" in reply.read().lower()


def test_show_fill_result_and_training_sample():
    image, labels, _ = toy_arrays(shape=(8, 24, 32))
    conflicts = np.zeros(labels.shape, np.uint8)
    conflicts[2, 3, 4] = 2
    viewer = show_fill_result(image, labels, conflicts, (40, 4, 4), offset=(4, 0, 0))
    assert [(l.name, l.type) for l in viewer.state.layers] == [
        ("image", "image"), ("segmentation", "segmentation"), ("conflict count", "image")]
    assert list(local_volume(viewer, "segmentation").voxel_offset) == [0, 0, 4]
    assert "range=[0, 2]" in viewer.state.layers["conflict count"].shader

    torch = pytest.importorskip("torch")
    fov = torch.rand(1, 1, 9, 17, 17)
    out = torch.rand(1, 1, 5, 9, 9)
    viewer = show_training_sample(fov, fov, out.round(), out, (40, 4, 4))
    assert [l.name for l in viewer.state.layers] == ["image", "mask input", "target", "prediction"]
    assert list(local_volume(viewer, "prediction").voxel_offset) == [4, 4, 2]  # XYZ, centred
    with pytest.raises(DataError, match="centred crop"):
        show_training_sample(fov, fov, torch.rand(1, 1, 4, 9, 9), out, (40, 4, 4))


# --------------------------------------------------------------------------- snapshots


def _png(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_label_colors_deterministic_and_distinct():
    ids = np.arange(1, 201, dtype=np.uint64)
    colors = label_colors(ids)
    assert colors.shape == (200, 3)
    np.testing.assert_array_equal(colors, label_colors(ids))
    np.testing.assert_array_equal(label_colors(np.array([7], np.int32)), label_colors(np.array([7], np.uint64)))
    assert len({tuple(np.round(c, 3)) for c in colors}) == 200
    assert np.all(colors.max(axis=1) >= 0.8)  # bright


def test_snapshot_writes_png_of_expected_size_with_segment_colours(tmp_path):
    image, labels, _ = toy_arrays(shape=(8, 24, 32))
    out = tmp_path / "snap.png"
    assert snapshot((image, labels), out, resolution=(40, 4, 4), size_px=(900, 700)) == out
    rgb = _png(out)
    assert rgb.shape == (700, 900, 3)
    assert rgb.std() > 10  # not blank
    # each segment's colour shows as a solid boundary colour somewhere
    for seg_id in (3, 7, 12, 40):
        target = np.round(label_colors(np.array([seg_id], np.uint64))[0] * 255)
        distance = np.abs(rgb.astype(float) - target).max(axis=2)
        assert (distance <= 12).sum() > 20, f"colour of segment {seg_id} not found"
    assert [p.name for p in tmp_path.iterdir()] == ["snap.png"]  # no temporary file left


def test_snapshot_default_size_point_and_errors(tmp_path):
    image, labels, _ = toy_arrays(shape=(8, 24, 32))
    vol = make_volume("toy", image, labels)
    out = snapshot(vol, tmp_path / "a.png", point=(1, 2, 3))
    assert _png(out).shape[1] == 1200
    seg_only = snapshot(make_volume("seg", labels=labels), tmp_path / "b.png")
    assert _png(seg_only).std() > 10
    with pytest.raises(DataError, match="outside the volume"):
        snapshot(vol, tmp_path / "c.png", point=(8, 0, 0))
    with pytest.raises(DataError, match="differs"):
        snapshot((image, labels[:4]), tmp_path / "c.png")
    with pytest.raises(DataError, match="does not exist"):
        snapshot(vol, tmp_path / "missing" / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_snapshot_volumes_names_and_segmentation(tmp_path):
    image, labels, _ = toy_arrays(shape=(8, 24, 32))
    vols = {"a": make_volume("a", image), "b": make_volume("b", image, labels),
            "a segmentation": make_volume("a segmentation", labels=labels)}
    with pytest.raises(DataError, match=r"\{volume\}"):
        snapshot_volumes(vols, tmp_path / "x.png")
    paths = snapshot_volumes(vols, tmp_path / "{volume}.png", "a|b", segmentation="a segmentation")
    assert [p.name for p in paths] == ["a.png", "b.png"]
    paths = snapshot_volumes(vols, tmp_path / "p.png", "a$", partition_volumes=True,
                             segmentation="a segmentation")
    assert _png(paths[0]).std() > 10


def test_a_coarser_segmentation_is_upsampled_onto_the_volume(tmp_path):
    """A fill at 2x the volume's resolution (cpu_real: 20 nm of 10 nm data) of the whole volume or
    of its validation partition is shown on the volume's voxels (regression: it was refused)."""
    image, labels, _ = toy_arrays(shape=(8, 24, 32))
    res = (10.0, 10.0, 10.0)
    coarse = labels[::2, ::2, ::2]
    vols = {"a": make_volume("a", image, resolution=res),
            "a segmentation": make_volume("a segmentation", labels=coarse, resolution=(20.0, 20.0, 20.0))}
    got, offset = view.datasets._aligned_labels(vols["a segmentation"], "a segmentation", vols["a"], vols["a"], "a")
    np.testing.assert_array_equal(np.asarray(got), labels)  # the quadrant edges fall on even voxels
    viewer = view_volumes(vols, segmentation="a segmentation", wait=False)
    assert tuple(local_volume(viewer, "a segmentation labels").shape) == (32, 24, 8)  # XYZ
    # a 20 nm fill of the validation partition only (the default partitions: Z half 1, sections 4..7)
    vols["a segmentation"] = make_volume("a segmentation", labels=labels[4::2, ::2, ::2], resolution=(20.0,) * 3)
    part = view.validation_parts({"a": vols["a"]}, None)["a"]
    got, offset = view.datasets._aligned_labels(vols["a segmentation"], "a segmentation", vols["a"], part, "a")
    assert offset == (4, 0, 0)
    np.testing.assert_array_equal(np.asarray(got), labels[4:])
    paths = snapshot_volumes(vols, tmp_path / "p.png", "a$", partition_volumes=True, segmentation="a segmentation")
    assert _png(paths[0]).std() > 10
    # a resolution that is not an integer multiple: one line naming both
    vols["a segmentation"] = make_volume("a segmentation", labels=coarse, resolution=(15.0, 15.0, 15.0))
    with pytest.raises(DataError, match=r"has shape \[4, 12, 16\] at \[15.0, 15.0, 15.0\] nm"):
        view_volumes(vols, segmentation="a segmentation", wait=False)


# --------------------------------------------------------------------------- real browser


def _wait_for(fn, deadline, what):
    """Poll ``fn`` until it returns something true, or fail at ``deadline`` (time.monotonic)."""
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


_LAYER_REPORT_JS = """(() => {
  const state = viewer.state.toJSON();
  return JSON.stringify({
    dims: state.dimensions,
    layers: viewer.layerManager.managedLayers.map(l => ({
      name: l.name,
      type: (state.layers.find(j => j.name === l.name) || {}).type,
      ready: l.isReady(),
      shaderError: l.layer && l.layer.shaderError ? (l.layer.shaderError.value === undefined ? "pending" : l.layer.shaderError.value) : null,
    })),
  });
})()"""


def _layer_report(browser):
    """The layers the neuroglancer client knows of (``_LAYER_REPORT_JS``), or None before it has started."""
    from selenium.common.exceptions import JavascriptException

    try:
        return json.loads(browser.execute_script("return " + _LAYER_REPORT_JS) or "null")
    except JavascriptException:  # `viewer` is not defined yet
        return None


def _screenshot(browser) -> np.ndarray:
    with Image.open(io.BytesIO(browser.get_screenshot_as_png())) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.browser
def test_viewer_renders_in_headless_chromium(browser):
    deadline = time.monotonic() + 45  # the whole test stays under a minute, whatever hangs
    image, labels, mask = toy_arrays(shape=(16, 48, 64))
    arrays = {"image": CountingArray(image), "labels": CountingArray(labels), "mask": CountingArray(mask)}
    vol = make_volume("vol", arrays["image"], arrays["labels"], arrays["mask"], resolution=(40, 4, 4))
    viewer = view_volumes({"vol": vol}, wait=False)
    browser.get(viewer.get_viewer_url())

    # 1. the page ran neuroglancer's client, which got the viewer state from the Python server
    report = _wait_for(lambda: (r := _layer_report(browser)) and r["layers"] and r, deadline,
                       "the neuroglancer client to receive the layers")
    layers = {l["name"]: l for l in report["layers"]}
    assert [(n, l["type"]) for n, l in layers.items()] == [
        ("vol image", "image"), ("vol labels", "segmentation"), ("vol mask", "image")]
    # global space: x, y, z in nm (stored as m), finest voxel size, reversed from ZYX
    dims = {k: (round(v[0] * 1e9, 6), v[1]) for k, v in report["dims"].items()}
    assert dims == {"x": (4.0, "m"), "y": (4.0, "m"), "z": (40.0, "m")}
    # 2. every layer became ready, with shaders that compiled
    report = _wait_for(lambda: (r := _layer_report(browser))
                       and all(l["ready"] and l.get("shaderError") != "pending" for l in r["layers"]) and r,
                       deadline, "the layers to be ready")
    assert all(l["shaderError"] is None for l in report["layers"]), report
    # 3. the browser fetched chunks of every layer's array
    _wait_for(lambda: all(a.reads for a in arrays.values()), deadline, "chunk requests for every layer")
    # 4. and drew them: the segment colours fill a good part of the cross-section panels
    shots = []

    def coloured_fraction():
        shots[:] = [_screenshot(browser)]
        rgb = shots[0].astype(int)
        saturation = rgb.max(axis=2) - rgb.min(axis=2)
        return (saturation > 60).mean()

    try:
        _wait_for(lambda: coloured_fraction() > 0.15, deadline, "a screenshot showing the segments")
    finally:
        if os.environ.get("DILUVIAN_SCREENSHOT_DIR") and shots:  # to look at it
            Image.fromarray(shots[0]).save(Path(os.environ["DILUVIAN_SCREENSHOT_DIR"]) / "neuroglancer.png")


# --------------------------------------------------------------------------- command line


def test_cli_point_needs_snapshot(capsys):
    from diluvian.cli import main

    assert main(["view", "--point", "1", "2", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "diluvian view: error: --point applies to --snapshot only"


@pytest.fixture
def dataset_toml(tmp_path):
    """A dataset TOML with one small HDF5 volume ``toy`` (image and labels)."""
    pytest.importorskip("diluvian.volumes")
    h5py = pytest.importorskip("h5py")
    image, labels, _ = toy_arrays(shape=(8, 24, 32))
    path = tmp_path / "toy.h5"
    with h5py.File(path, "w") as f:
        f["volumes/raw"] = image
        f["volumes/labels/neuron_ids"] = labels
    toml = tmp_path / "toy.toml"
    toml.write_text(f'[[dataset]]\nname = "toy"\nhdf5_file = "{path}"\nimage_dataset = "volumes/raw"\n'
                    'label_dataset = "volumes/labels/neuron_ids"\nresolution = [40, 4, 4]\n')
    return toml


def test_cli_view_snapshot(dataset_toml, tmp_path, capsys):
    from diluvian.cli import main

    out = tmp_path / "toy.png"
    assert main(["view", "-v", str(dataset_toml), "--snapshot", str(out), "--point", "4", "10", "10"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert _png(out).std() > 10
    assert main(["view", "-v", str(dataset_toml), "cremi", "--snapshot", str(out)]) == 2
    assert capsys.readouterr().err.strip() == ("diluvian view: error: no volume name matches 'cremi'; "
                                               "volumes: 'toy'")


def test_cli_view_serves_until_interrupted(dataset_toml, monkeypatch, capsys):
    import diluvian.view
    from diluvian.cli import main

    served = []

    def fetch_instead_of_waiting():  # the URL is printed before serving starts
        url = capsys.readouterr().out.strip()
        with urllib.request.urlopen(url, timeout=10) as reply:
            served.append(reply.status)

    monkeypatch.setattr(diluvian.view.server, "wait_for_interrupt", fetch_instead_of_waiting)
    assert main(["view", "-v", str(dataset_toml), "--no-in-memory"]) == 0
    assert served == [200]


def test_cli_view_port_in_use(dataset_toml, capsys):
    from diluvian.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["view", "-v", str(dataset_toml), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot serve the viewer on 127.0.0.1:{port}" in err


def test_view_loads_no_model_and_runs_no_fill():
    """view only shows arrays and volumes: importing it (every submodule) pulls in no network, training,
    fill or torch (``train --viewer``'s model fill is diluvian.sample_fill's)."""
    import subprocess
    import sys

    code = ("import sys, diluvian.view, diluvian.view.datasets, diluvian.view.results, diluvian.view.snapshots; "
            "print([m for m in ('diluvian.training', 'diluvian.network', 'diluvian.fill', 'diluvian.sample_fill', "
            "'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert not hasattr(view, "show_trained_sample")
