"""`diluvian evaluate` from dataset TOMLs: names, partitions, JSON, errors."""

import json

import h5py
import numpy as np

from diluvian.cli import main
from diluvian.evaluate import evaluate_volumes
from diluvian.synthetic import write_synthetic_hdf5


def setup_volume(tmp_path):
    write_synthetic_hdf5(tmp_path / "t.h5", shape=(16, 64, 64), seed=3, resolution=(10, 10, 10))
    (tmp_path / "t.toml").write_text('[[dataset]]\nname = "t"\nhdf5_file = "t.h5"\nimage_dataset = "volumes/raw"\n'
                                     'label_dataset = "volumes/labels/neuron_ids"\n')
    return tmp_path / "t.toml"


def test_evaluate_same_volume_scores_zero(tmp_path, capsys):
    toml = setup_volume(tmp_path)
    assert main(["evaluate", "-v", str(toml), "t", "t", "--json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["cremi_score"] == 0 and scores["voi_split"] == 0
    assert "CREMI score" in capsys.readouterr().out


def test_evaluate_partitioned_prediction_of_partition_shape(tmp_path, capsys):
    toml = setup_volume(tmp_path)
    with h5py.File(tmp_path / "t.h5") as f:
        labels = f["volumes/labels/neuron_ids"][:]
    with h5py.File(tmp_path / "p.h5", "w") as f:
        d = f.create_dataset("seg", data=np.ones_like(labels[8:]))  # validation half, all merged
        d.attrs["resolution"] = [10, 10, 10]
    assert main(["evaluate", "-v", str(toml), "t", f"{tmp_path / 'p.h5'}:seg", "--partition-volumes",
                 "--border-threshold", "0", "--json", str(tmp_path / "s.json")]) == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["n_gt_objects"] > 1 and scores["n_voxels_evaluated"] == 8 * 64 * 64
    assert scores["voi_split"] == 0 and scores["voi_merge"] > 0


def test_evaluate_errors_are_one_line(tmp_path, capsys):
    toml = setup_volume(tmp_path)
    assert main(["evaluate", "-v", str(toml), "t", "nope"]) == 2
    assert "no volume named 'nope'; volumes: ['t']" in capsys.readouterr().err
    assert main(["evaluate", "-v", str(toml), "t", "t", "--border-threshold", "-1"]) == 2
    assert "--border-threshold" in capsys.readouterr().err
    with h5py.File(tmp_path / "q.h5", "w") as f:
        f.create_dataset("seg", data=np.ones((16, 64, 64), np.uint64)).attrs["resolution"] = [15, 15, 15]
    assert main(["evaluate", "-v", str(toml), "t", f"{tmp_path / 'q.h5'}:seg"]) == 2
    err = capsys.readouterr().err
    assert "resolution" in err and len(err.strip().splitlines()) == 1


def label_pair_file(tmp_path, resolution=(40.0, 4.0, 4.0)):
    """An HDF5 file with a blocky GT and a noisy prediction (both 6 x 20 x 20) and their scores' inputs."""
    rng = np.random.default_rng(11)
    gt = rng.integers(0, 6, size=(2, 5, 5)).repeat(4, 0).repeat(4, 1).repeat(4, 2)[:6].astype(np.uint64)
    pred = ((gt * 3 + (rng.random(gt.shape) < 0.2) * rng.integers(0, 7, size=gt.shape)) % 7).astype(np.uint64)
    h5 = tmp_path / "pair.h5"
    with h5py.File(h5, "w") as f:
        for name, data in (("gt", gt), ("pred", pred), ("gt_nores", gt), ("pred_6nm", pred)):
            f[name] = data
        f["gt"].attrs["resolution"] = f["pred"].attrs["resolution"] = resolution
        f["pred_6nm"].attrs["resolution"] = (40.0, 6.0, 6.0)
    return h5, gt, pred


def test_evaluate_array_specs_with_every_option(tmp_path, capsys):
    """The one `evaluate` command line takes FILE.h5:dataset specs and the options of the removed
    `python -m diluvian.evaluate` (--resolution, --chunk-shape, --no-progress)."""
    h5, gt, pred = label_pair_file(tmp_path)
    out = tmp_path / "scores.json"
    assert main(["evaluate", f"{h5}:gt", f"{h5}:pred", "--border-threshold", "8", "--json", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    expected = evaluate_volumes(gt, pred, border_threshold_nm=8, resolution=(40, 4, 4), progress=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(expected.to_dict()))
    assert "CREMI score" in printed and f"{expected.cremi_score:.4f}" in printed
    # chunking never changes a score
    assert main(["evaluate", f"{h5}:gt", f"{h5}:pred", "--border-threshold", "8", "--chunk-shape", "2", "3", "7",
                 "--json", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text()) == json.loads(json.dumps(expected.to_dict()))
    # --resolution stands in for a missing resolution attribute (and overrides one)
    assert main(["evaluate", f"{h5}:gt_nores", f"{h5}:pred", "--border-threshold", "8", "--resolution", "40", "8",
                 "8", "--json", str(out), "--no-progress"]) == 0
    at_8nm = evaluate_volumes(gt, pred, border_threshold_nm=8, resolution=(40, 8, 8), progress=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(at_8nm.to_dict()))
    assert at_8nm.n_voxels_evaluated > expected.n_voxels_evaluated  # 8 nm is 1 px at 8 nm, 2 px at 4 nm


def test_evaluate_array_spec_errors_are_one_line(tmp_path, capsys):
    h5, _, _ = label_pair_file(tmp_path)
    for argv, message in [
        ([f"{h5}:gt", f"{h5}:missing"], "no dataset 'missing'"),
        ([f"{h5}:gt", f"{h5}:pred_6nm"], "expected the same resolution or an integer multiple"),
        ([f"{h5}:gt_nores", f"{h5}:gt_nores"], "needs the resolution"),
        ([f"{h5}:gt", f"{h5}:pred", "--chunk-shape", "0", "4", "4"], "chunk_shape: expected 3 positive ints"),
    ]:
        assert main(["evaluate", *argv, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, (argv, err)


def test_python_m_diluvian_evaluate_is_gone():
    """One command line for evaluation: `diluvian evaluate`."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "diluvian.evaluate", "-h"], capture_output=True, text=True)
    assert run.returncode != 0 and "diluvian.evaluate" in run.stderr
