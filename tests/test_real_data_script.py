"""The real-data benchmark script's log parser reads the fill's summary line as the fill writes it."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_data.py"


def _script():
    spec = importlib.util.spec_from_file_location("real_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_logged_speeds_reads_the_fill_summary_with_batch_occupancy(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text(
        "epoch 1: loss 0.5, val_loss 0.4, val_subv_metric 0.7 (binary_f_score, beta 0.5); 120.5 FOV/s, 19.0 moves\n"
        "epoch 2: loss 0.4, val_loss 0.4, val_subv_metric 0.8 (binary_f_score, beta 0.5); 130.5 FOV/s, 19.0 moves\n"
        "fib25: 76 bodies, 309797 voxels labelled, 1165562 conflict voxels; seeds 10081/10081 (6793 already "
        "labelled, 107 revoked); 19123 FOVs (3919 wasted) in 5957 batches (mean 3.2 FOVs), 95.1 s, 201.0 FOV/s\n")
    speeds = _script().logged_speeds(log)
    assert speeds["train_fov_s_median"] == 125.5
    assert (speeds["fill_bodies"], speeds["fill_fovs"], speeds["fill_wasted_fovs"]) == (76, 19123, 3919)
    assert (speeds["fill_seconds"], speeds["fill_fov_s"]) == (95.1, 201.0)
