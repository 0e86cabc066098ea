"""Training loop, validation, F-scores and the train / validate CLI."""

import csv
import json
import logging

import numpy as np
import pytest
import torch

from diluvian import training
from diluvian.cli import main
from diluvian.config import load_config
from diluvian.errors import ConfigError, DataError, EarlyAbortError, TrainingError
from diluvian.metrics import binary_f_score, confusion_counts, diluvian_f_beta, diluvian_f_score, f_beta
from diluvian.network import build_network, load_model, save_model
from diluvian.training import (
    prepare_training_volumes,
    run_validation,
    train_network,
    validate_model,
    validation_subvolumes,
)
from diluvian.training.objective import _FillFactorWeights, learning_rate_factor


@pytest.fixture
def tiny_cfg_path(write_tiny_train_config):
    return write_tiny_train_config()


@pytest.fixture
def tiny_cfg(tiny_cfg_path):
    return load_config([tiny_cfg_path])


@pytest.fixture
def volumes(tiny_volume):
    return {"tiny": tiny_volume}


# --------------------------------------------------------------------------- F-scores


def test_f_scores_on_a_hand_made_confusion_matrix():
    tp, fp, fn = 8, 2, 4
    # textbook F0.5 = 1.25 tp / (1.25 tp + 0.25 fn + fp)
    assert f_beta(tp, fp, fn, 0.5) == pytest.approx(10 / 13)
    # the original's variant: 1.5 tp / (1.5 tp + 0.25 fn + fp)
    assert diluvian_f_beta(tp, fp, fn, 0.5) == pytest.approx(12 / 15)
    # both are F1 for beta = 1
    assert f_beta(tp, fp, fn, 1.0) == diluvian_f_beta(tp, fp, fn, 1.0) == pytest.approx(16 / 22)
    # precision 1, recall 0.5: F0.5 = 1.25 * 0.5 / (0.25 + 0.5)
    assert f_beta(4, 0, 4, 0.5) == pytest.approx(0.625 / 0.75)
    assert f_beta(0, 3, 3) == 0.0 and f_beta(0, 0, 0) == 0.0


def test_f_scores_on_arrays():
    target = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1], dtype=bool)
    pred = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 1], dtype=bool)
    assert confusion_counts(target, pred) == (4, 1, 2, 3)
    assert binary_f_score(target, pred, 1.0) == pytest.approx(8 / 11)
    assert diluvian_f_score(target, pred, 0.5) == pytest.approx(6 / (6 + 0.5 + 1))
    # soft counts for probabilities
    assert binary_f_score(target.astype(np.float32), pred.astype(np.float32), 1.0) == pytest.approx(8 / 11)


def test_fill_factor_weights_average_one():
    w = _FillFactorWeights([0.25, 0.5])
    fractions = [0.1, 0.1, 0.1, 0.3, 0.9, 0.9]
    assert [w(f) for f in fractions] == [1.0] * 6
    w.freeze()
    weights = [w(f) for f in fractions]
    assert weights[0] == pytest.approx(6 / (3 * 3)) and weights[3] == pytest.approx(6 / 3)
    assert np.mean(weights) == pytest.approx(1.0)


def test_cosine_learning_rate_falls_from_lr_to_its_final_fraction(tiny_cfg):
    import dataclasses

    constant = tiny_cfg
    assert [learning_rate_factor(constant, p) for p in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]
    cosine = dataclasses.replace(tiny_cfg, optimizer=dataclasses.replace(tiny_cfg.optimizer, lr_schedule="cosine",
                                                                         lr_final=0.1))
    factors = [learning_rate_factor(cosine, p) for p in np.linspace(0, 1, 11)]
    assert factors[0] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert factors[5] == pytest.approx(0.55) and all(a > b for a, b in zip(factors, factors[1:]))
    assert learning_rate_factor(cosine, 1.5) == pytest.approx(0.1)  # past the end (a time budget): stays


def test_bad_learning_rate_schedule_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[optimizer]\nlr_schedule = "linear"\n')
    with pytest.raises(ConfigError, match="lr_schedule"):
        load_config([bad])
    bad.write_text("[optimizer]\nlr_final = 2.0\n")
    with pytest.raises(ConfigError, match="lr_final"):
        load_config([bad])


def test_training_with_a_cosine_schedule_ends_at_the_final_rate(tiny_cfg, volumes, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(tiny_cfg, optimizer=dataclasses.replace(tiny_cfg.optimizer, lr_schedule="cosine",
                                                                      lr_final=0.2))
    ckpt = str(tmp_path / "ckpt_{epoch:02d}.pt")
    train_network(cfg, volumes, tmp_path / "model", checkpoint_pattern=ckpt, rng=np.random.default_rng(0))
    steps = cfg.training.training_size // cfg.training.batch_size
    total = steps * cfg.training.total_epochs
    for epoch in range(1, cfg.training.total_epochs + 1):
        state = load_model(ckpt.format(epoch=epoch))[2]["optimizer_state"]
        lr = state["param_groups"][0]["lr"]  # the rate of the epoch's last step
        expected = cfg.optimizer.lr * learning_rate_factor(cfg, (epoch * steps - 1) / total)
        assert lr == pytest.approx(expected)
    assert lr < cfg.optimizer.lr * 0.3


# --------------------------------------------------------------------------- volumes and validation set


def test_prepare_volumes_errors(tiny_cfg, tiny_volume):
    from diluvian.volumes import NdarrayVolume

    unlabelled = NdarrayVolume("raw_only", np.zeros((24, 48, 48), np.uint8))
    with pytest.raises(DataError, match="without labels: 'raw_only'"):
        prepare_training_volumes(tiny_cfg, {"tiny": tiny_volume, "raw_only": unlabelled})
    import dataclasses

    nomatch = dataclasses.replace(tiny_cfg, training=dataclasses.replace(tiny_cfg.training,
                                                                           partitions={"^cremi": (2, 1, 1)}))
    with pytest.raises(ConfigError) as e:
        prepare_training_volumes(nomatch, {"tiny": tiny_volume})
    assert "'^cremi'" in str(e.value) and "'tiny'" in str(e.value)
    big = dataclasses.replace(tiny_cfg, model=dataclasses.replace(tiny_cfg.model, input_fov_shape=(25, 25, 25),
                                                                    output_fov_shape=(25, 25, 25)))
    with pytest.raises(DataError, match="larger than its training part"):
        prepare_training_volumes(big, {"tiny": tiny_volume})


def test_validation_set_is_fixed(tiny_cfg, volumes):
    _, val = prepare_training_volumes(tiny_cfg, volumes)
    a = validation_subvolumes(tiny_cfg, val)
    b = validation_subvolumes(tiny_cfg, val)
    assert len(a) == 3
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.target, y.target)
        assert x.image.shape == tiny_cfg.model.validation_subv_shape
        assert x.target[tuple(x.seed)]


def test_run_validation_scores_every_subvolume(tiny_cfg, volumes):
    _, val = prepare_training_volumes(tiny_cfg, volumes)
    subs = validation_subvolumes(tiny_cfg, val)
    net = build_network(tiny_cfg.model, tiny_cfg.network)
    result, kept = run_validation(net, subs, tiny_cfg, batch_size=2, keep_regions=2)
    assert len(result.per_subvolume) == 3 and all(0.0 <= v <= 1.0 for v in result.per_subvolume)
    assert np.isfinite(result.loss) and result.loss > 0
    assert len(kept) == 2 and all(m >= 1 for m in result.moves)
    # batched inference across regions gives the same scores as one region at a time
    single, _ = run_validation(net, subs, tiny_cfg, batch_size=1)
    np.testing.assert_allclose(single.per_subvolume, result.per_subvolume, atol=1e-6)


# --------------------------------------------------------------------------- training


def test_tiny_training_run_writes_its_outputs(tiny_cfg, volumes, tmp_path):
    base = tmp_path / "out" / "model"
    base.parent.mkdir()
    result = train_network(tiny_cfg, volumes, base, checkpoint_pattern=str(tmp_path / "ckpt_{epoch:02d}.pt"),
                           tensorboard=True, rng=np.random.default_rng(0))
    for ext in (".pt", ".toml", ".csv", ".png"):
        assert (tmp_path / "out" / f"model{ext}").is_file(), ext
    assert (tmp_path / "ckpt_01.pt").is_file() and (tmp_path / "ckpt_02.pt").is_file()
    assert list((tmp_path / "out" / "model_logs").iterdir())
    rows = list(csv.DictReader(open(base.with_suffix(".csv"))))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == ["epoch", "loss", "val_loss", "val_subv_metric", "time"]
    for r in rows:
        assert all(np.isfinite(float(r[k])) for k in ("loss", "val_loss", "val_subv_metric", "time"))
    assert len(result.history) == 2 and result.best_epoch in (1, 2)
    model, cfg, ckpt = load_model(base.with_suffix(".pt"))
    assert cfg == tiny_cfg and ckpt["epoch"] == result.best_epoch and ckpt["optimizer_state"] is not None
    assert load_config([base.with_suffix(".toml")]) == tiny_cfg


def test_continued_training_counts_on(tiny_cfg, volumes, tmp_path):
    import dataclasses

    first = tmp_path / "first"
    net = build_network(tiny_cfg.model, tiny_cfg.network)
    opt = torch.optim.Adam(net.parameters())
    save_model(first.with_suffix(".pt"), net, tiny_cfg, optimizer_state=opt.state_dict(), epoch=5)
    cfg = dataclasses.replace(tiny_cfg, training=dataclasses.replace(tiny_cfg.training, total_epochs=1,
                                                                       validation_size=1))
    result = train_network(cfg, volumes, tmp_path / "second", model_file=first.with_suffix(".pt"))
    assert [h["epoch"] for h in result.history] == [6]
    assert load_model(tmp_path / "second.pt")[2]["epoch"] == 6


def test_time_limit_stops_training_and_keeps_the_partial_epoch(tiny_cfg, volumes, tmp_path, monkeypatch):
    import dataclasses
    import itertools

    cfg = dataclasses.replace(tiny_cfg, training=dataclasses.replace(tiny_cfg.training, total_epochs=50))
    clock = itertools.count(0.0, 5.0)  # every clock read is 5 s later
    monkeypatch.setattr(training.loop.time, "perf_counter", lambda: next(clock))
    result = train_network(cfg, volumes, tmp_path / "m", max_minutes=1.0)
    assert result.stop_reason == "time_limit"
    assert 1 <= len(result.history) < 50
    assert (tmp_path / "m.pt").is_file()
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert len(rows) == len(result.history)
    with pytest.raises(ValueError, match="max_minutes"):
        train_network(cfg, volumes, tmp_path / "m2", max_minutes=0)


def test_validation_interval_validates_every_nth_and_the_last_epoch(tiny_cfg, volumes, tmp_path, monkeypatch):
    import dataclasses

    calls = []
    real = training.loop.run_validation
    monkeypatch.setattr(training.loop, "run_validation", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = dataclasses.replace(tiny_cfg, training=dataclasses.replace(
        tiny_cfg.training, total_epochs=5, validation_interval=3, patience=100, training_size=4, validation_size=1))
    result = train_network(cfg, volumes, tmp_path / "m", rng=np.random.default_rng(0))
    validated = [h["epoch"] for h in result.history if np.isfinite(h["val_loss"])]
    assert validated == [3, 5] and len(calls) == 2  # every 3rd epoch and the last
    assert all(np.isnan(h["val_subv_metric"]) for h in result.history if h["epoch"] not in (3, 5))
    assert result.best_epoch in (3, 5) and load_model(tmp_path / "m.pt")[2]["epoch"] == result.best_epoch
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert [r["val_loss"] == "nan" for r in rows] == [True, True, False, True, False]
    assert (tmp_path / "m.png").is_file()
    # patience counts epochs; the epoch it would stop after is validated
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, total_epochs=20, validation_interval=4,
                                                                patience=2))
    result = train_network(cfg, volumes, tmp_path / "p", rng=np.random.default_rng(0))
    assert result.stop_reason == "early_stopping" and np.isfinite(result.history[-1]["val_loss"])
    assert len(result.history) < 20


def test_nan_loss_is_a_training_error(tiny_cfg, volumes, tmp_path, monkeypatch):
    def nan_loss(logits, targets):
        return (logits * float("nan")).mean(dim=(1, 2, 3, 4))

    monkeypatch.setattr(training.loop, "_sample_losses", nan_loss)
    with pytest.raises(TrainingError, match="epoch 1"):
        train_network(tiny_cfg, volumes, tmp_path / "m")


def test_early_abort_and_restart(tiny_cfg, volumes, tmp_path, monkeypatch, caplog):
    import dataclasses

    cfg = dataclasses.replace(tiny_cfg, training=dataclasses.replace(tiny_cfg.training, early_abort_epoch=1,
                                                                       early_abort_loss=0.0, total_epochs=1,
                                                                       training_size=4, validation_size=1))
    with pytest.raises(EarlyAbortError, match="early_abort_loss"):
        train_network(cfg, volumes, tmp_path / "m")
    monkeypatch.setattr(training.loop, "MAX_EARLY_RESTARTS", 1)
    with caplog.at_level(logging.WARNING, logger="diluvian.training"):
        with pytest.raises(EarlyAbortError):
            train_network(cfg, volumes, tmp_path / "m", early_restart=True, rng=np.random.default_rng(0))
    assert "restarting (1/1) with random seed" in caplog.text


def test_validate_model(tiny_cfg, volumes, tmp_path):
    net = build_network(tiny_cfg.model, tiny_cfg.network)
    save_model(tmp_path / "m.pt", net, tiny_cfg)
    result = validate_model(tiny_cfg, volumes, tmp_path / "m.pt")
    assert len(result.per_subvolume) == 3 and np.isfinite(result.metric)
    assert result.metric == pytest.approx(np.mean(result.per_subvolume))


# --------------------------------------------------------------------------- CLI


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_train_and_validate(tiny_cfg_path, tiny_dataset_toml, tmp_path, capsys):
    base = tmp_path / "m"
    rc, out, err = run(capsys, "train", "-c", tiny_cfg_path, "-v", tiny_dataset_toml, "-mo", base)
    assert rc == 0, err
    assert "best val_subv_metric" in out
    # the model's own network is used: no -c needed
    rc, out, err = run(capsys, "validate", "-v", tiny_dataset_toml, "-m", base.with_suffix(".pt"), "-c",
                       tiny_cfg_path, "--json", tmp_path / "v.json")
    assert rc == 0, err
    assert out.startswith("Metric: ") and "All: [" in out
    data = json.loads((tmp_path / "v.json").read_text())
    assert len(data["per_subvolume"]) == 3


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_cli_train_error_paths(tiny_cfg_path, tiny_dataset_toml, tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    raw = tmp_path / "raw.h5"
    with h5py.File(raw, "w") as f:
        f["raw"] = np.ones((24, 48, 48), np.uint8)
    raw_toml = write(tmp_path, "raw.toml", f'[[dataset]]\nname = "rawonly"\nhdf5_file = "{raw}"\n'
                                          'image_dataset = "raw"\nresolution = [10, 10, 10]\n')
    nomatch = write(tmp_path, "nomatch.toml", '[training]\npartitions = { "^cremi" = [2, 1, 1] }\n')
    big = write(tmp_path, "big.toml", "[model]\ninput_fov_shape = [25, 25, 25]\noutput_fov_shape = [25, 25, 25]\n")
    junk = write(tmp_path, "junk.pt", "not a model")
    other_net = write(tmp_path, "other.toml", "[network]\nconvolution_filters = 6\n")
    model = tmp_path / "tiny.pt"
    cfg = load_config([tiny_cfg_path])
    save_model(model, build_network(cfg.model, cfg.network), cfg)
    out = tmp_path / "o"
    cases = [
        ((["-c", tiny_cfg_path, "-v", raw_toml]), "without labels: 'rawonly'"),
        ((["-c", tiny_cfg_path, "-c", nomatch, "-v", tiny_dataset_toml]), "no volume matches"),
        ((["-c", tiny_cfg_path, "-c", big, "-v", tiny_dataset_toml]), "is larger than its training part"),
        ((["-c", tiny_cfg_path, "-v", tiny_dataset_toml, "-m", junk]), "junk.pt: not a diluvian model"),
        ((["-c", tiny_cfg_path, "-c", other_net, "-v", tiny_dataset_toml, "-m", model]),
         "network.convolution_filters = 6 (model: 4)"),
        ((["-c", tiny_cfg_path]), "no volumes"),
    ]
    for argv, message in cases:
        rc, _, err = run(capsys, "train", *argv, "-mo", out)
        assert rc == 2, (argv, err)
        assert message in err, (message, err)
        assert err.count("\n") == 1 and err.startswith("diluvian train: error: ")
    rc, _, err = run(capsys, "validate", "-v", tiny_dataset_toml)
    assert rc == 2 and "needs a trained model" in err
    rc, _, err = run(capsys, "validate", "-v", tiny_dataset_toml, "-m", junk)
    assert rc == 2 and "not a diluvian model" in err


# --------------------------------------------------------------------------- device (diluvian.device)


def test_select_device_and_cpu_device_setup(tiny_cfg):
    from diluvian.device import DeviceSetup, HostCopy, select_device
    from diluvian.network import select_device as network_select_device

    assert network_select_device is select_device  # one selector
    assert select_device("cpu") == torch.device("cpu") and select_device(torch.device("cpu")).type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match='device = "cuda", but no CUDA device'):
            select_device("cuda")
    setup = DeviceSetup.from_config(tiny_cfg, "cpu")
    assert (setup.device.type, setup.autocast, setup.channels_last) == ("cpu", False, False)
    arr = np.random.default_rng(0).random((2, 3, 4, 5), dtype=np.float32)
    t = setup.tensor(arr)
    assert t.shape == (2, 1, 3, 4, 5) and t.device.type == "cpu"
    np.testing.assert_array_equal(t[:, 0].numpy(), arr)
    np.testing.assert_array_equal(HostCopy(t * 2).numpy()[:, 0], arr * 2)
    net = build_network(tiny_cfg.model, tiny_cfg.network)
    assert setup.prepare_model(net) is net
    with setup.autocast_context():
        assert not torch.is_autocast_enabled()
    inference = DeviceSetup.for_model(net)
    assert inference.device.type == "cpu" and not inference.autocast and not inference.channels_last
    assert DeviceSetup.for_model(net, autocast=True).autocast  # bf16 autocast can be asked for on the CPU too


def test_fill_uses_the_one_device_selector(tiny_cfg, tmp_path):
    """An explicit device=cuda without CUDA is one ConfigError (was a torch error from the model load)."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    from diluvian.fill.run import load_fill_model

    net = build_network(tiny_cfg.model, tiny_cfg.network)
    save_model(tmp_path / "m.pt", net, tiny_cfg)
    with pytest.raises(ConfigError, match="no CUDA device"):
        load_fill_model(tmp_path / "m.pt", tiny_cfg, device="cuda")
    model, _ = load_fill_model(tmp_path / "m.pt", tiny_cfg, device="cpu")
    assert next(model.parameters()).device.type == "cpu"


def test_training_package_keeps_the_public_names():
    import diluvian

    for name in ("PreparedSubvolume", "TrainingResult", "ValidationResult", "prepare_training_volumes",
                 "prepare_subvolume", "subvolume_stream", "validation_subvolumes", "run_validation", "make_optimizer",
                 "train_network", "validate_model", "CSV_FIELDS", "write_history_csv", "write_metric_plot"):
        assert name in training.__all__ and getattr(training, name) is not None, name
    assert diluvian.train_network is train_network and diluvian.validate_model is validate_model
