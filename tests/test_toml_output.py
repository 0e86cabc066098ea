"""TOML is written by tomli-w (``config.toml_dumps``): config dumps and segmentation TOMLs read back exactly."""

import tomllib

import numpy as np
import pytest

from diluvian.cli import main
from diluvian.config import config_from_dict, config_to_toml, format_config_value, load_config, packaged_config_path, toml_dumps
from diluvian.fill.output import write_segmentation
from diluvian.volumes import load_volumes

ODD = 'quote " backslash \\ tab \t newline \n unicode µm [x, y]'


def test_toml_dumps_keeps_arrays_on_one_line_and_strings_intact():
    table = {"s": ODD, "a": [[1, 2], [3]], "t": [{"k": ODD}], "e": [], "f": [0.1, 1e-09, 2.0], "sub": {".*": [1, 0]}}
    text = toml_dumps(table)
    assert tomllib.loads(text) == table
    assert "a = [[1, 2], [3]]\n" in text and "e = []\n" in text and "f = [0.1, 1e-09, 2.0]\n" in text
    assert '[sub]\n".*" = [1, 0]\n' in text


@pytest.mark.parametrize("name", ["default", "cpu_small", "cpu_real", "gpu"])
def test_check_config_output_is_the_config_one_key_per_line(name, tmp_path, capsys):
    path = packaged_config_path(name)
    if not path.exists():
        pytest.skip(f"{name}.toml not shipped")
    cfg = load_config([path])
    assert main(["check-config", "-c", str(path)]) == 0
    text = capsys.readouterr().out
    assert text == config_to_toml(cfg)
    assert config_from_dict(tomllib.loads(text)) == cfg
    for line in text.splitlines():  # a header, a comment, a blank or one whole `key = value`
        if line and not line.startswith(("[", "#")):
            tomllib.loads(line)


def test_single_values_print_as_toml():
    cfg = load_config([])
    assert format_config_value(cfg.training.augment_noise, "augment_noise") == "[{ axis = 0, mul = 0.05, add = 0.05 }]"
    contrast = format_config_value(cfg.training.augment_contrast, "augment_contrast")
    assert tomllib.loads(contrast)["augment_contrast"][0]["scaling_mean"] == cfg.training.augment_contrast[0].scaling_mean
    assert tomllib.loads(format_config_value(cfg.training.validation_metric))["beta"] == cfg.training.validation_metric.beta
    assert format_config_value(ODD) == toml_dumps({"v": ODD})[len("v = "):-1]


def test_segmentation_toml_loads_back_with_an_odd_volume_name(tmp_path):
    labels = np.arange(2 * 3 * 4, dtype=np.uint64).reshape(2, 3, 4)
    h5, toml = write_segmentation(tmp_path / "seg", labels, None, [40, 4, 4], ODD, comments=["model: m.pt", "t_final 0.6"])
    text = toml.read_text()
    assert text.startswith("# model: m.pt\n# t_final 0.6\n\n[[dataset]]\n")
    entry = tomllib.loads(text)["dataset"][0]
    assert entry == {"name": f"{ODD} segmentation", "hdf5_file": "seg.hdf5",
                     "label_dataset": "volumes/labels/neuron_ids", "resolution": [40.0, 4.0, 4.0]}
    (volume,) = load_volumes([toml]).values()
    assert volume.name == f"{ODD} segmentation" and np.array_equal(volume.get_labels((0, 0, 0), labels.shape), labels)
