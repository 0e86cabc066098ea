"""Choosing the model by a dense fill of validation data ([training] select_by = "dense_fill")."""

from __future__ import annotations

import dataclasses

import numpy as np

from diluvian import selection
from diluvian.cli import main
from diluvian.config import load_config
from diluvian.network import load_model
from diluvian.training import train_network
from diluvian.training.outputs import CandidateKeeper


def test_keeper_keeps_the_best_epochs_as_files(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "epoch_0099.pt").write_text("another run's")
    keeper = CandidateKeeper(tmp_path / "c", keep=2, mode="max")
    saved = []

    def save(epoch):
        def write(path):
            path.write_text(str(epoch))
            saved.append(epoch)
        return write

    for epoch, metric in [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.6), (5, float("nan")), (6, 0.9)]:
        keeper.offer(epoch, metric, save(epoch))
    assert [p.name for p in keeper.files] == ["epoch_0006.pt", "epoch_0002.pt"]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["epoch_0002.pt", "epoch_0006.pt"]
    assert saved == [1, 2, 3, 6]  # epoch 4 ties epoch 3 and loses (the earlier is kept); NaN is never kept
    low = CandidateKeeper(tmp_path / "d", keep=1, mode="min")
    for epoch, loss in [(1, 0.5), (2, 0.3), (3, 0.4)]:
        low.offer(epoch, loss, save(epoch))
    assert [p.name for p in low.files] == ["epoch_0002.pt"]


def test_centre_box_is_clipped_to_the_volume():
    start, stop = selection.centre_box((10, 100, 40), (32, 64, 64))
    assert start.tolist() == [0, 18, 0] and stop.tolist() == [10, 82, 40]


def test_training_keeps_candidates_and_selection_takes_the_lowest_cremi(write_tiny_train_config, tiny_volume,
                                                                        tmp_path, monkeypatch):
    cfg = load_config([write_tiny_train_config(total_epochs=3)])
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, select_by="dense_fill",
                                                                select_candidates=2, select_fill_shape=(12, 16, 16)),
                              fill=dataclasses.replace(cfg.fill, max_moves=8))
    volumes = {"tiny": tiny_volume}
    base = tmp_path / "m"
    result = train_network(cfg, volumes, base, rng=np.random.default_rng(0))
    assert len(result.candidates) == 2 and all(p.parent == tmp_path / "m.candidates" for p in result.candidates)
    epochs = [load_model(p)[2]["epoch"] for p in result.candidates]
    assert result.best_epoch == epochs[0]  # best validation metric first
    # a real dense fill of each candidate: finite scores
    real = selection.select_model(result.candidates, volumes, cfg)
    assert len(real.candidates) == 2 and all(np.isfinite(c.cremi) for c in real.candidates)
    assert real.chosen.cremi == min(c.cremi for c in real.candidates)
    # the second candidate fills better: it becomes BASE.pt
    scores = iter([0.9, 0.4])
    monkeypatch.setattr(selection, "score_by_dense_fill", lambda *a, **k: {
        "cremi": next(scores), "voi_split": 0.0, "voi_merge": 0.0, "adapted_rand_error": 0.0})
    chosen = selection.select_model(result.candidates, volumes, cfg, result.model_file)
    assert chosen.chosen.model_file == result.candidates[1] and chosen.chosen.epoch == epochs[1]
    assert result.model_file.read_bytes() == result.candidates[1].read_bytes()
    assert load_model(result.model_file)[2]["optimizer_state"] is not None  # training can continue from it


def test_cli_train_selects_by_dense_fill(write_tiny_train_config, tiny_dataset_toml, tmp_path, capsys):
    path = write_tiny_train_config(total_epochs=2)
    extra = tmp_path / "select.toml"
    extra.write_text('[training]\nselect_by = "dense_fill"\nselect_candidates = 2\nselect_fill_shape = [12, 16, 16]\n'
                     '[fill]\nmax_moves = 8\n')
    rc = main(["train", "-c", str(path), "-c", str(extra), "-v", str(tiny_dataset_toml), "-mo", str(tmp_path / "m")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "model selection by dense fill: epoch" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('[training]\nselect_by = "loss"\n')
    rc = main(["check-config", "-c", str(bad)])
    _, err = capsys.readouterr()
    assert rc == 2 and "select_by" in err and "\n" not in err.strip()
