"""``fill --viewer`` and ``train --viewer``: the viewers shown at the end of a fill or a training run,
and their library functions (:func:`diluvian.view.show_fill_results`, and
:func:`diluvian.sample_fill.fill_validation_sample` shown by :func:`diluvian.view.show_training_sample`).

Serving never blocks here: ``diluvian.view.server.wait_for_interrupt`` is replaced by a function that
checks the printed URL answers over HTTP and returns at once.
"""

from __future__ import annotations

import socket
import sys
import urllib.request

import numpy as np
import pytest

pytest.importorskip("neuroglancer")
h5py = pytest.importorskip("h5py")

import diluvian.view.server as view_server  # noqa: E402
from diluvian.cli import main  # noqa: E402
from diluvian.config import load_config  # noqa: E402
from diluvian.errors import DataError, DatasetNotFoundError  # noqa: E402
from diluvian.sample_fill import fill_validation_sample  # noqa: E402
from diluvian.view import show_fill_results, show_training_sample, stop_server  # noqa: E402


@pytest.fixture(autouse=True)
def _stop_neuroglancer_server():
    yield
    stop_server()


@pytest.fixture
def served(monkeypatch, capsys):
    """Replace the wait for Ctrl-C: record the URL printed so far (stdout) and the viewer's HTTP status,
    and keep every viewer made, in ``served["viewers"]``."""
    record = {"urls": [], "status": [], "viewers": []}
    make_viewer = view_server.make_viewer

    def keep(*args, **kwargs):
        viewer = make_viewer(*args, **kwargs)
        record["viewers"].append(viewer)
        return viewer

    def instead_of_waiting():
        out, err = capsys.readouterr()
        print(out, end="")  # give them back to the test
        print(err, end="", file=sys.stderr)
        url = out.strip().splitlines()[-1]
        record["urls"].append(url)
        with urllib.request.urlopen(url, timeout=10) as reply:
            record["status"].append(reply.status)

    monkeypatch.setattr(view_server, "make_viewer", keep)
    monkeypatch.setattr(view_server, "wait_for_interrupt", instead_of_waiting)
    return record


def layer_names(viewer) -> list[str]:
    return [layer.name for layer in viewer.state.layers]


def layer_data(viewer, name) -> np.ndarray:
    """The whole ZYX array served by layer ``name``."""
    url = viewer.state.layers[name].source[0].url
    local = viewer.volume_manager.volumes[url.rsplit(".", 1)[1]]
    return np.asarray(local.data[...]).T


def layer_offset(viewer, name) -> list[int]:
    url = viewer.state.layers[name].source[0].url
    return list(viewer.volume_manager.volumes[url.rsplit(".", 1)[1]].voxel_offset)[::-1]


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def server_running() -> bool:
    from neuroglancer import server

    return server.global_server is not None


# --------------------------------------------------------------------------- fill --viewer


@pytest.fixture
def fill_data(tmp_path, tiny_dataset_toml):
    """A dataset TOML with volume ``a`` (image and labels) and ``b`` (image only), and a tiny model that fills
    everything."""
    import torch

    from diluvian.config import Config, ModelConfig, NetworkConfig
    from diluvian.network import build_network, save_model

    h5 = tiny_dataset_toml.parent / "tiny.h5"
    toml = tmp_path / "ab.toml"
    toml.write_text(f'[[dataset]]\nname = "a"\nhdf5_file = "{h5}"\nimage_dataset = "volumes/raw"\n'
                    'label_dataset = "volumes/labels/neuron_ids"\nresolution = [10, 10, 10]\n\n'
                    f'[[dataset]]\nname = "b"\nhdf5_file = "{h5}"\nimage_dataset = "volumes/raw"\n'
                    'resolution = [10, 10, 10]\n')
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(input_fov_shape=(9, 9, 9), output_fov_shape=(9, 9, 9), output_fov_move_fraction=2,
                                   t_move=0.8),
                 network=NetworkConfig(num_modules=1, convolution_filters=4))
    net = build_network(cfg.model, cfg.network)
    with torch.no_grad():  # a confident object everywhere: every body grows (until --max-moves), none is dropped
        net.core.head.weight.zero_()
        net.core.head.bias.fill_(6.0)
    model = tmp_path / "tiny.pt"
    save_model(model, net, cfg)
    return {"toml": toml, "model": model, "h5": h5, "dir": tmp_path}


FILL_ARGS = ("--max-bodies", 2, "--max-moves", 10, "--move-batch-size", 8, "-rs", 1)


def test_cli_fill_viewer_shows_every_volume_and_serves(fill_data, served, capsys):
    out_pattern = fill_data["dir"] / "seg_{volume}"
    rc, out, err = run(capsys, "fill", "-v", fill_data["toml"], "-m", fill_data["model"], *FILL_ARGS, "--viewer",
                       out_pattern)
    assert rc == 0, err
    lines = out.strip().splitlines()
    # one summary line per volume, then the URL (one line), printed once the outputs are written
    assert lines[0].startswith("a: ") and lines[1].startswith("b: ") and len(lines) == 3
    assert lines[2].startswith("http://127.0.0.1:") and "/v/" in lines[2]
    assert served["urls"] == [lines[2]] and served["status"] == [200]
    assert "serving; press Ctrl-C to stop" in err
    assert not server_running()  # stopped after the (interrupted) wait

    (viewer,) = served["viewers"]
    assert layer_names(viewer) == ["a image", "a labels", "a segmentation", "a conflict count",
                                   "b image", "b segmentation", "b conflict count"]
    state = viewer.state.layers
    assert state["a labels"].type == "segmentation" and state["a segmentation"].type == "segmentation"
    assert state["a image"].type == "image" and state["a conflict count"].type == "image"
    # the segmentation served is the one written to disk; the ground truth is the volume's
    for name in ("a", "b"):
        with h5py.File(fill_data["dir"] / f"seg_{name}.hdf5") as f:
            written = f["volumes/labels/neuron_ids"][...]
        assert written.max() > 0
        np.testing.assert_array_equal(layer_data(viewer, f"{name} segmentation"), written)
    with h5py.File(fill_data["h5"]) as f:
        np.testing.assert_array_equal(layer_data(viewer, "a labels"), f["volumes/labels/neuron_ids"][...])


def test_cli_fill_viewer_partitioned_volume_at_its_offset(fill_data, served, capsys, tmp_path):
    part = tmp_path / "part.toml"
    part.write_text('[training]\npartitions = { ".*" = [1, 1, 2] }\nvalidation_partition = { ".*" = [0, 0, 1] }\n')
    rc, out, err = run(capsys, "fill", "-v", fill_data["toml"], "-m", fill_data["model"], "-c", part, *FILL_ARGS,
                       "--partition-volumes", "--viewer", "--no-in-memory", tmp_path / "p_{volume}")
    assert rc == 0, err
    (viewer,) = served["viewers"]
    # the validation partition is the right half in X of the (24, 48, 48) volume
    for name in ("a image", "a labels", "a segmentation", "b segmentation"):
        assert layer_offset(viewer, name) == [0, 0, 24], name
    assert layer_data(viewer, "a segmentation").shape == (24, 48, 24)


def test_cli_fill_viewer_port_in_use_fails_before_filling(fill_data, served, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc, out, err = run(capsys, "fill", "-v", fill_data["toml"], "-m", fill_data["model"], *FILL_ARGS,
                           "--viewer", "--port", port, fill_data["dir"] / "busy_{volume}")
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and f"cannot serve the viewer on 127.0.0.1:{port}" in err
    assert not list(fill_data["dir"].glob("busy_*"))  # no fill was run
    assert served["viewers"] == []


def test_cli_fill_server_stopped_when_the_fill_fails(fill_data, served, capsys, monkeypatch):
    # a missing resume file fails inside fill_volumes_to_files, after the server was started
    started = []
    start_server = view_server.start_server
    monkeypatch.setattr(view_server, "start_server", lambda *a: (started.append(a), start_server(*a)))
    bad = fill_data["dir"] / "missing.toml"
    rc, _, err = run(capsys, "fill", "-v", fill_data["toml"], "-m", fill_data["model"], *FILL_ARGS, "--viewer",
                     "--resume-file", bad, fill_data["dir"] / "x_{volume}")
    assert rc == 2 and "missing.toml" in err
    assert started == [("127.0.0.1", 0)]
    assert not server_running() and served["viewers"] == []


@pytest.mark.parametrize("flag", [("--open",), ("--port", "8123"), ("--bind-address", "0.0.0.0")])
@pytest.mark.parametrize("command", ["fill", "train"])
def test_server_flags_need_viewer(command, flag, fill_data, capsys):
    extra = ("-m", fill_data["model"], fill_data["dir"] / "o") if command == "fill" else ()
    rc, out, err = run(capsys, command, "-v", fill_data["toml"], *flag, *extra)
    assert rc == 2
    assert err.strip() == f"diluvian {command}: error: --bind-address, --port and --open apply to --viewer only"


def test_viewer_flags_in_help(capsys):
    for command in ("fill", "train"):
        with pytest.raises(SystemExit):
            main([command, "-h"])
        text = capsys.readouterr().out
        for flag in ("--viewer", "--bind-address", "--port", "--open"):
            assert flag in text, (command, flag)


# --------------------------------------------------------------------------- show_fill_results


def test_show_fill_results_arrays_and_errors(tiny_volume):
    labels = np.zeros(tiny_volume.shape, np.uint64)
    labels[:, :10] = 5
    viewer = show_fill_results({"tiny": tiny_volume}, {"tiny": labels})
    assert layer_names(viewer) == ["tiny image", "tiny labels", "tiny segmentation"]
    np.testing.assert_array_equal(layer_data(viewer, "tiny segmentation"), labels)
    with pytest.raises(DataError, match="no fill results"):
        show_fill_results({"tiny": tiny_volume}, {})
    with pytest.raises(DatasetNotFoundError, match="'other'"):
        show_fill_results({"tiny": tiny_volume}, {"other": labels})
    with pytest.raises(DataError, match=r"segmentation of shape \[24, 48, 47\] differs"):
        show_fill_results({"tiny": tiny_volume}, {"tiny": labels[..., 1:]})


def test_show_fill_results_conflicts_optional(tiny_volume):
    from types import SimpleNamespace

    labels = np.ones(tiny_volume.shape, np.uint64)
    result = SimpleNamespace(labels=labels, conflict_count=np.zeros(tiny_volume.shape, np.uint32))
    assert "tiny conflict count" in layer_names(show_fill_results({"tiny": tiny_volume}, {"tiny": result}))
    assert "tiny conflict count" not in layer_names(
        show_fill_results({"tiny": tiny_volume}, {"tiny": result}, conflicts=False))


# --------------------------------------------------------------------------- train --viewer


@pytest.fixture
def train_cfg_path(write_tiny_train_config):
    return write_tiny_train_config(training_size=4, validation_size=2, total_epochs=1)


def test_fill_validation_sample_fills_the_first_validation_subvolume(train_cfg_path, tiny_volume, tmp_path):
    import torch

    from diluvian.network import build_network, save_model
    from diluvian.training import prepare_training_volumes, validation_subvolumes

    cfg = load_config([train_cfg_path])
    torch.manual_seed(0)
    save_model(tmp_path / "m.pt", build_network(cfg.model, cfg.network), cfg)
    volumes = {"tiny": tiny_volume}
    _, val_vols = prepare_training_volumes(cfg, volumes, need_training=False)
    expected = validation_subvolumes(cfg, val_vols)

    for index in (0, 1):
        sample = fill_validation_sample(tmp_path / "m.pt", volumes, index=index)
        viewer = show_training_sample(sample.image, sample.mask_input, sample.target, sample.prediction,
                                      sample.resolution)
        info = sample.info
        sub = expected[index]
        assert layer_names(viewer) == ["image", "mask input", "target", "prediction"]
        np.testing.assert_allclose(layer_data(viewer, "image"), sub.image)
        np.testing.assert_array_equal(layer_data(viewer, "target"), sub.target.astype(np.float32))
        mask_input = layer_data(viewer, "mask input")
        assert mask_input[tuple(sub.seed)] == pytest.approx(cfg.model.v_true)
        assert np.count_nonzero(mask_input != np.float32(cfg.model.v_false)) == 1
        prediction = layer_data(viewer, "prediction")
        assert prediction.shape == sub.image.shape and np.all((prediction >= 0) & (prediction <= 1))
        assert prediction[tuple(sub.seed)] > 0
        assert info["volume"] == "tiny" and info["seed"] == sub.seed.tolist() and info["moves"] >= 1
        assert 0 <= info["metric"] <= 1
    with pytest.raises(DataError, match="index"):
        fill_validation_sample(tmp_path / "m.pt", volumes, index=-1)


def test_cli_train_viewer_shows_a_training_sample(train_cfg_path, tiny_dataset_toml, tmp_path, served, capsys):
    base = tmp_path / "m"
    rc, out, err = run(capsys, "train", "-c", train_cfg_path, "-v", tiny_dataset_toml, "-mo", base, "--viewer")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert "best val_subv_metric" in lines[0] and len(lines) == 2
    assert lines[1].startswith("http://127.0.0.1:") and "/v/" in lines[1]
    assert served["urls"] == [lines[1]] and served["status"] == [200]
    assert not server_running()
    (viewer,) = served["viewers"]
    assert layer_names(viewer) == ["image", "mask input", "target", "prediction"]
    shape = tuple(load_config([train_cfg_path]).model.validation_subv_shape)
    for name in ("image", "target", "prediction"):
        assert layer_data(viewer, name).shape == shape
    assert layer_data(viewer, "target").max() == 1.0
