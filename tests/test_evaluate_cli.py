"""`diluvian evaluate` from dataset TOMLs: names, partitions, JSON, errors."""

import json

import h5py
import numpy as np

from diluvian.cli import main
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
