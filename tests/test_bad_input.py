"""The bad-input sweep: every subcommand with the inputs a tired user gives.

Each case runs the real command line and asserts exit code 2, one line on
stderr naming the file or key, no traceback and no output left behind (the
output directory holds what it held before, no temporary files). Add a case
for every bug found.
"""

import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from diluvian.cli import main

from conftest import TINY_TRAIN_TOML

TRAIN_TOML = TINY_TRAIN_TOML.format(training_size=8, validation_size=2, total_epochs=1)


def _dataset_toml(path: Path, name: str, h5: str, image="volumes/raw", labels="volumes/labels/neuron_ids") -> Path:
    text = f'[[dataset]]\nname = "{name}"\nhdf5_file = "{h5}"\n'
    if image:
        text += f'image_dataset = "{image}"\n'
    if labels:
        text += f'label_dataset = "{labels}"\n'
    path.write_text(text)
    return path


def _h5(path: Path, image, labels, resolution=(20.0, 20.0, 20.0)) -> None:
    with h5py.File(path, "w") as f:
        f["volumes/raw"] = image
        f["volumes/labels/neuron_ids"] = labels
        f["volumes/raw"].attrs["resolution"] = resolution


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs: a tiny volume, a trained model, a segmentation, and a shelf of bad files."""
    from diluvian.synthetic import synthesize_volume, write_synthetic_hdf5

    d = tmp_path_factory.mktemp("world")
    write_synthetic_hdf5(d / "tiny.h5", shape=(24, 48, 48), seed=0, resolution=(20.0, 20.0, 20.0))
    _dataset_toml(d / "tiny.toml", "tiny", "tiny.h5")
    image, labels = synthesize_volume((24, 48, 56), seed=1, resolution=(20.0, 20.0, 20.0))
    _h5(d / "wide.h5", image, labels)
    _dataset_toml(d / "wide.toml", "tiny", "wide.h5")  # same name, another shape: a resume file does not fit
    _h5(d / "small.h5", image[:4, :8, :8], labels[:4, :8, :8])
    _dataset_toml(d / "small.toml", "small", "small.h5")
    _h5(d / "rank2.h5", image[0], labels[0])
    _dataset_toml(d / "rank2.toml", "rank2", "rank2.h5")
    _h5(d / "floatlabels.h5", image, labels.astype(np.float32))
    _dataset_toml(d / "floatlabels.toml", "floatlabels", "floatlabels.h5")
    _dataset_toml(d / "textimage.toml", "textimage", "textimage.h5")
    with h5py.File(d / "textimage.h5", "w") as f:
        f["volumes/raw"] = np.array([[["a"] * 4] * 4] * 4, dtype="S1")
        f["volumes/labels/neuron_ids"] = labels[:4, :4, :4]
    (d / "empty.h5").write_bytes(b"")
    _dataset_toml(d / "emptyh5.toml", "e", "empty.h5")
    _dataset_toml(d / "dirh5.toml", "e", "adir")
    _dataset_toml(d / "labelsonly.toml", "labelsonly", "tiny.h5", image=None)
    _dataset_toml(d / "imageonly.toml", "imageonly", "tiny.h5", labels=None)
    (d / "empty").write_bytes(b"")
    (d / "adir").mkdir()
    (d / "train.toml").write_text(TRAIN_TOML)
    (d / "othernet.toml").write_text("[network]\nnum_modules = 3\n")
    (d / "zero_training.toml").write_text("[training]\ntraining_size = 0\n")
    (d / "negative_seed.toml").write_text("random_seed = -1\n")
    (d / "bounds_tiny.csv").write_text("start,stop\n0 0 0,9 9 9\n")
    assert main(["train", "-c", str(d / "train.toml"), "-v", str(d / "tiny.toml"), "-mo", str(d / "model")]) == 0
    assert main(["fill", "-m", str(d / "model.pt"), "-v", str(d / "tiny.toml"), str(d / "seg_{volume}"),
                 "--max-bodies", "1", "--ordered-seeds"]) == 0
    return d


# (id, argv with {d} for the input directory and {o} for the output directory, text the error line must
#  contain, entries to create in {o} before the run: name -> "dir" | "file")
CASES = [
    # an output path that is a directory, a missing or unwritable output directory, an input overwritten
    ("fill-output-is-directory", "fill -m {d}/model.pt -v {d}/tiny.toml {o}/seg_{{volume}}",
     "seg_tiny.hdf5: output path is a directory", {"seg_tiny.hdf5": "dir"}),
    ("fill-checkpoint-is-directory", "fill -m {d}/model.pt -v {d}/tiny.toml {o}/seg",
     "seg_checkpoint.toml: output path is a directory", {"seg_checkpoint.toml": "dir"}),
    ("train-output-is-directory", "train -c {d}/train.toml -v {d}/tiny.toml -mo {o}/m",
     "m.png: output path is a directory", {"m.png": "dir"}),
    ("train-checkpoint-is-directory", "train -c {d}/train.toml -v {d}/tiny.toml -mo {o}/m -mc {o}/ck_{{epoch}}.pt",
     "ck_1.pt: output path is a directory", {"ck_1.pt": "dir"}),
    ("train-tensorboard-logs-is-file", "train -c {d}/train.toml -v {d}/tiny.toml -mo {o}/m --tensorboard",
     "m_logs: expected a directory", {"m_logs": "file"}),
    ("synthesize-output-is-directory", "synthesize {o}/x.h5", "x.h5: output path is a directory", {"x.h5": "dir"}),
    ("synthesize-parent-missing", "synthesize {o}/nowhere/x.h5", "output directory", {}),
    ("synthesize-parent-is-file", "synthesize {o}/f/x.h5", "output directory {o}/f is not a directory",
     {"f": "file"}),
    ("validate-json-is-directory", "validate -c {d}/train.toml -m {d}/model.pt -v {d}/tiny.toml --json {o}/v.json",
     "v.json: output path is a directory", {"v.json": "dir"}),
    ("evaluate-json-is-directory", "evaluate -v {d}/tiny.toml -v {d}/seg_tiny.toml tiny 'tiny segmentation' "
     "--json {o}/s.json", "s.json: output path is a directory", {"s.json": "dir"}),
    ("evaluate-json-overwrites-input", "evaluate -v {d}/tiny.toml -v {d}/seg_tiny.toml tiny 'tiny segmentation' "
     "--json {d}/tiny.toml", "tiny.toml: output would overwrite the input", {}),
    ("train-overwrites-dataset-toml", "train -c {d}/train.toml -v {d}/tiny.toml -mo {d}/tiny",
     "tiny.toml: output would overwrite the input", {}),
    ("train-overwrites-model", "train -c {d}/train.toml -m {d}/model.pt -v {d}/tiny.toml -mo {d}/model",
     "model.pt: output would overwrite the input", {}),
    ("fill-overwrites-resume-file", "fill -m {d}/model.pt -v {d}/tiny.toml {d}/seg_{{volume}} "
     "--resume-file {d}/seg_{{volume}}.toml", "output would overwrite the input", {}),
    ("sparse-fill-csv-overwrites-bounds", "sparse-fill -m {d}/model.pt -v {d}/tiny.toml -bi {d}/bounds_{{volume}}.csv "
     "-o {d}/bounds_tiny.h5", "bounds_tiny.csv: output would overwrite the input", {}),
    ("sparse-fill-two-outputs-one-name", "sparse-fill -m {d}/model.pt -v {d}/tiny.toml -o {o}/s.csv",
     "s.csv: written twice", {}),
    ("gen-subv-bounds-output-is-directory", "gen-subv-bounds -c {d}/train.toml -v {d}/tiny.toml {o}/b_{{volume}}.csv 3",
     "b_tiny.csv: output path is a directory", {"b_tiny.csv": "dir"}),
    ("view-snapshot-is-directory", "view -v {d}/tiny.toml --snapshot {o}/x.png", "x.png: output path is a directory",
     {"x.png": "dir"}),
    ("view-snapshot-overwrites-input", "view -v {d}/tiny.toml --snapshot {d}/tiny.toml",
     "tiny.toml: output would overwrite the input", {}),
    ("view-bad-regex", "view -v {d}/tiny.toml 'ti(' --snapshot {o}/x.png", "ti(", {}),
    # a path that is a directory, an empty file, a file of another format
    ("volume-file-is-directory", "view -v {d}/adir --snapshot {o}/x.png", "adir: is a directory", {}),
    ("volume-file-is-empty", "view -v {d}/empty --snapshot {o}/x.png", "empty: no volumes", {}),
    ("volume-file-is-hdf5", "view -v {d}/tiny.h5 --snapshot {o}/x.png", "tiny.h5: invalid TOML", {}),
    ("config-file-is-directory", "check-config -c {d}/adir", "adir", {}),
    ("config-file-is-hdf5", "check-config -c {d}/tiny.h5", "tiny.h5", {}),
    ("model-is-directory", "fill -m {d}/adir -v {d}/tiny.toml {o}/seg", "adir: is a directory", {}),
    ("model-is-empty", "fill -m {d}/empty -v {d}/tiny.toml {o}/seg", "empty: not a diluvian model file", {}),
    ("model-is-hdf5", "fill -m {d}/tiny.h5 -v {d}/tiny.toml {o}/seg", "tiny.h5: not a diluvian model file", {}),
    ("hdf5-is-empty", "view -v {d}/emptyh5.toml --snapshot {o}/x.png", "empty.h5: cannot open as HDF5", {}),
    ("hdf5-is-directory", "view -v {d}/dirh5.toml --snapshot {o}/x.png", "adir", {}),
    # datasets of the wrong rank or dtype, a volume smaller than the FOV
    ("dataset-wrong-rank", "view -v {d}/rank2.toml --snapshot {o}/x.png",
     "rank2.h5: dataset 'volumes/raw': expected a 3D (Z, Y, X) array", {}),
    ("labels-wrong-dtype", "view -v {d}/floatlabels.toml --snapshot {o}/x.png",
     "labels: expected integer object ids, got dtype float32", {}),
    ("image-wrong-dtype", "view -v {d}/textimage.toml --snapshot {o}/x.png", "image: expected numbers", {}),
    ("fill-volume-smaller-than-fov", "fill -m {d}/model.pt -v {d}/small.toml {o}/seg",
     "is larger than the volume", {}),
    ("train-volume-smaller-than-fov", "train -c {d}/train.toml -v {d}/small.toml -mo {o}/m", "small", {}),
    ("gen-subv-bounds-volume-smaller-than-fov", "gen-subv-bounds -c {d}/train.toml -v {d}/small.toml "
     "{o}/b_{{volume}}.csv 3", "small", {}),
    # a model from another network, a resume file of another volume, a bounds CSV with missing columns
    ("model-from-another-network", "fill -c {d}/othernet.toml -m {d}/model.pt -v {d}/tiny.toml {o}/seg",
     "network.num_modules", {}),
    ("validate-model-from-another-network", "validate -c {d}/othernet.toml -m {d}/model.pt -v {d}/tiny.toml",
     "network.num_modules", {}),
    ("resume-file-of-another-volume", "fill -m {d}/model.pt -v {d}/wide.toml {o}/seg --resume-file {d}/seg_tiny.toml",
     "resume file {d}/seg_tiny.toml: segmentation of shape", {}),
    ("bounds-csv-missing-columns", "sparse-fill -m {d}/model.pt -v {d}/tiny.toml -bi {d}/bounds_{{volume}}.csv "
     "-o {o}/s.h5", "bounds_tiny.csv: line 1: expected the header", {}),
    ("resume-file-is-directory", "fill -m {d}/model.pt -v {d}/tiny.toml {o}/seg --resume-file {d}/adir",
     "adir: resume segmentation is a directory", {}),
    ("resume-file-is-empty", "fill -m {d}/model.pt -v {d}/tiny.toml {o}/seg --resume-file {d}/empty",
     "empty: not an HDF5 file", {}),
    # volumes without what the command needs
    ("train-labels-only", "train -c {d}/train.toml -v {d}/labelsonly.toml -mo {o}/m",
     "training needs volumes with an image; labels only: 'labelsonly'", {}),
    ("train-image-only", "train -c {d}/train.toml -v {d}/imageonly.toml -mo {o}/m",
     "without labels: 'imageonly'", {}),
    ("fill-labels-only", "fill -m {d}/model.pt -v {d}/labelsonly.toml {o}/seg", "'labelsonly' has no image", {}),
    # counts that are zero or negative
    ("gen-subv-bounds-zero", "gen-subv-bounds -v {d}/tiny.toml {o}/b_{{volume}}.csv 0", "num_bounds", {}),
    ("gen-subv-bounds-negative", "gen-subv-bounds -v {d}/tiny.toml {o}/b_{{volume}}.csv -3", "num_bounds", {}),
    ("sparse-fill-zero-regions", "sparse-fill -m {d}/model.pt -v {d}/tiny.toml --num-regions 0 -o {o}/s.h5",
     "--num-regions", {}),
    ("fill-zero-bodies", "fill -m {d}/model.pt -v {d}/tiny.toml {o}/seg --max-bodies 0", "--max-bodies", {}),
    ("fill-negative-checkpoint-interval", "fill -m {d}/model.pt -v {d}/tiny.toml {o}/seg --checkpoint-interval -1",
     "--checkpoint-interval", {}),
    ("fill-zero-move-batch", "fill -m {d}/model.pt -v {d}/tiny.toml {o}/seg --move-batch-size 0",
     "--move-batch-size", {}),
    ("fill-huge-move-batch", "fill -m {d}/model.pt -v {d}/tiny.toml {o}/seg --move-batch-size 100000000000000000000",
     "--move-batch-size: expected an int <= 65536", {}),
    ("fill-negative-random-seed", "fill -m {d}/model.pt -v {d}/tiny.toml {o}/seg -rs -1",
     "random_seed: expected an int >= 0", {}),
    ("config-negative-random-seed", "check-config -c {d}/negative_seed.toml", "random_seed: expected an int >= 0", {}),
    ("train-bad-checkpoint-pattern", "train -c {d}/train.toml -v {d}/tiny.toml -mo {o}/m -mc {o}/c_{{foo}}.pt",
     "-mc/--model-checkpoint-file", {}),
    ("train-zero-minutes", "train -c {d}/train.toml -v {d}/tiny.toml -mo {o}/m --max-minutes 0", "--max-minutes", {}),
    ("train-zero-training-size", "train -c {d}/train.toml -c {d}/zero_training.toml -v {d}/tiny.toml -mo {o}/m",
     "training_size", {}),
    ("synthesize-huge-shape", "synthesize {o}/x.h5 --shape 100000 100000 100000", "out of memory: Unable to allocate",
     {}),
    ("synthesize-zero-shape", "synthesize {o}/x.h5 --shape 0 8 8", "shape", {}),
    ("evaluate-negative-n-worst", "evaluate -v {d}/tiny.toml -v {d}/seg_tiny.toml tiny 'tiny segmentation' "
     "--n-worst -1", "--n-worst", {}),
    ("view-port-negative", "view -v {d}/tiny.toml --port -5", "--port", {}),
    # a subcommand or argument typo
    ("unknown-subcommand", "fil -m {d}/model.pt", "invalid choice: 'fil'", {}),
]


def _argv(template: str, d: Path, o: Path) -> list[str]:
    import shlex

    return shlex.split(template.format(d=d, o=o))


def _listing(o: Path) -> set[str]:
    return {str(p.relative_to(o)) for p in o.rglob("*")}


def _check(rc: int, err: str, expected: str, before: set[str], o: Path) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert _listing(o) == before, f"left behind: {sorted(_listing(o) - before)}"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, world, tmp_path, capsys):
    _, template, expected, existing = case
    o = tmp_path / "out"
    o.mkdir()
    for name, kind in existing.items():
        (o / name).mkdir() if kind == "dir" else (o / name).write_text("x")
    before = _listing(o)
    capsys.readouterr()
    try:
        rc = main(_argv(template, world, o))
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    _check(rc, err, expected.format(d=world, o=o), before, o)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_output_directory_not_writable(world, tmp_path, capsys):
    o = tmp_path / "ro"
    o.mkdir()
    o.chmod(0o500)
    try:
        rc = main(["synthesize", str(o / "x.h5")])
        err = capsys.readouterr().err
        _check(rc, err, "is not writable", set(), o)
    finally:
        o.chmod(0o700)


def _run(argv: list[str], fsize: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    def limit():  # a "disk" that fills up: writes beyond fsize bytes fail with EFBIG (SIGXFSZ ignored)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "diluvian", *argv, "-l", "ERROR"], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit if fsize is not None else None)


# (id, argv template, size limit in bytes, text of the error line)
DISK_FULL = [
    ("synthesize-hdf5", "synthesize {o}/x.h5 --shape 24 48 48", 20_000, "x.h5: cannot write: File too large"),
    ("fill-hdf5", "fill -m {d}/model.pt -v {d}/tiny.toml {o}/seg --max-bodies 1", 4_000,
     "seg.hdf5: cannot write: File too large"),
    ("train-toml", "train -c {d}/train.toml -v {d}/tiny.toml -mo {o}/m", 500, "m.toml: cannot write: File too large"),
    ("evaluate-json", "evaluate -v {d}/tiny.toml -v {d}/seg_tiny.toml tiny 'tiny segmentation' --json {o}/s.json",
     200, "s.json: cannot write: File too large"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", DISK_FULL, ids=[c[0] for c in DISK_FULL])
def test_disk_fills_up_during_a_write(case, world, tmp_path):
    _, template, fsize, expected = case
    o = tmp_path / "out"
    o.mkdir()
    done = _run(_argv(template, world, o), fsize=fsize)
    _check(done.returncode, done.stderr, expected, set(), o)


def test_port_in_use(world, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        o = tmp_path / "out"
        o.mkdir()
        for argv in (["view", "-v", str(world / "tiny.toml"), "--port", str(port)],
                     ["fill", "-m", str(world / "model.pt"), "-v", str(world / "tiny.toml"), str(o / "seg"),
                      "--viewer", "--port", str(port)]):
            done = _run(argv, timeout=120)
            _check(done.returncode, done.stderr, f"127.0.0.1:{port}: Address already in use", set(), o)
