"""Every kind of output gets the mode any program would give it under the umask (0666 & ~umask)."""

import os
import stat

import pytest

from diluvian.cli import main

from conftest import TINY_TRAIN_TOML

TRAIN_TOML = TINY_TRAIN_TOML.format(training_size=8, validation_size=2, total_epochs=1)


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_every_output_kind_gets_the_umask_mode(tmp_path, umask):
    d = tmp_path
    (d / "train.toml").write_text(TRAIN_TOML)
    old = os.umask(umask)
    try:
        steps = [
            ["synthesize", str(d / "tiny.h5"), "--shape", "24", "48", "48", "--resolution", "20", "20", "20"],
            ["train", "-c", str(d / "train.toml"), "-v", str(d / "tiny.toml"), "-mo", str(d / "model"),
             "-mc", str(d / "ckpt_{epoch}.pt")],
            ["fill", "-m", str(d / "model.pt"), "-v", str(d / "tiny.toml"), str(d / "seg_{volume}"),
             "--max-bodies", "1"],
            ["evaluate", "-v", str(d / "tiny.toml"), "-v", str(d / "seg_tiny.toml"), "tiny", "tiny segmentation",
             "--json", str(d / "scores.json")],
            ["validate", "-c", str(d / "train.toml"), "-m", str(d / "model.pt"), "-v", str(d / "tiny.toml"),
             "--json", str(d / "val.json")],
            ["gen-subv-bounds", "-c", str(d / "train.toml"), "-v", str(d / "tiny.toml"), str(d / "b_{volume}.csv"),
             "2", "--bounds-num-moves", "1", "1", "1"],
            ["sparse-fill", "-m", str(d / "model.pt"), "-v", str(d / "tiny.toml"), "--num-regions", "1",
             "--bounds-num-moves", "1", "1", "1", "--no-interactive", "-o", str(d / "sparse.h5")],
            ["view", "-v", str(d / "tiny.toml"), "-v", str(d / "seg_tiny.toml"), "tiny", "--segmentation",
             "tiny segmentation", "--snapshot", str(d / "snap.png")],
        ]
        for argv in steps:
            if argv[0] == "train":
                (d / "tiny.toml").write_text('[[dataset]]\nname = "tiny"\nhdf5_file = "tiny.h5"\n'
                                             'image_dataset = "volumes/raw"\n'
                                             'label_dataset = "volumes/labels/neuron_ids"\n')
            assert main(argv) == 0, argv
    finally:
        os.umask(old)
    written = ["tiny.h5", "model.pt", "model.toml", "model.csv", "model.png", "ckpt_1.pt", "seg_tiny.hdf5",
               "seg_tiny.toml", "scores.json", "val.json", "b_tiny.csv", "sparse.h5", "sparse.csv", "snap.png"]
    modes = {name: stat.S_IMODE(os.stat(d / name).st_mode) for name in written}
    assert modes == dict.fromkeys(written, 0o666 & ~umask)
    leftovers = [p.name for p in d.iterdir() if p.name.startswith(".")]
    assert leftovers == []
