"""Configuration: defaults, layering, errors, TOML round trips."""

import dataclasses
import tomllib

import pytest

from diluvian.config import (
    Config,
    config_from_dict,
    config_to_toml,
    default_config_path,
    format_config_value,
    get_config_value,
    load_config,
    packaged_config_path,
)
from diluvian.errors import ConfigError, DatasetNotFoundError


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_default_toml_equals_dataclass_defaults():
    with open(default_config_path(), "rb") as f:
        table = tomllib.load(f)
    assert config_from_dict(table) == Config()
    # and every key of every section is written out
    assert set(table) == {f.name for f in dataclasses.fields(Config)}
    for f in dataclasses.fields(Config):
        value = getattr(Config(), f.name)
        if dataclasses.is_dataclass(value):
            assert set(table[f.name]) == {g.name for g in dataclasses.fields(value)}


def test_toml_dump_round_trips():
    cfg = load_config([])
    assert config_from_dict(tomllib.loads(config_to_toml(cfg))) == cfg


def test_partial_file_layers_on_defaults(tmp_path):
    a = write(tmp_path, "a.toml", "[training]\ngpu_batch_size = 4\n")
    b = write(tmp_path, "b.toml", "[training]\nnum_gpus = 2\n[model]\nt_move = 0.8\n")
    cfg = load_config([a, b])
    assert cfg.training.gpu_batch_size == 4
    assert cfg.training.num_gpus == 2
    assert cfg.training.batch_size == 8  # derived
    assert cfg.model.t_move == 0.8
    # untouched keys keep the defaults (the original fell back to other code defaults)
    assert cfg.model.input_fov_shape == Config().model.input_fov_shape
    assert cfg.network == Config().network


def test_later_files_override_earlier(tmp_path):
    a = write(tmp_path, "a.toml", "random_seed = 3\n[model]\nt_move = 0.8\n")
    b = write(tmp_path, "b.toml", "[model]\nt_move = 0.7\n")
    cfg = load_config([a, b])
    assert cfg.model.t_move == 0.7 and cfg.random_seed == 3


def test_default_sentinel_resets_chain(tmp_path):
    a = write(tmp_path, "a.toml", "[model]\nt_move = 0.8\n")
    assert load_config([a, "default"]).model.t_move == Config().model.t_move


def test_overrides_apply_last(tmp_path):
    a = write(tmp_path, "a.toml", "random_seed = 3\n")
    assert load_config([a], overrides={"random_seed": 0}).random_seed == 0


def test_derived_values_are_computed():
    cfg = load_config([])
    assert cfg.model.move_step == (8, 8, 8)
    assert cfg.model.training_subv_shape == (49, 49, 49)
    assert cfg.model.validation_subv_shape == (65, 65, 65)
    lines = config_to_toml(cfg).splitlines()
    assert not any(line.startswith(("batch_size", "move_step", "training_subv_shape")) for line in lines)
    assert "# batch_size = 32  (derived)" in lines


def test_original_factory_names_are_aliases(tmp_path):
    a = write(tmp_path, "a.toml", '[network]\nfactory = "diluvian.network.make_flood_fill_unet"\n')
    assert load_config([a]).network.factory == "unet"


@pytest.mark.parametrize(
    "text, match",
    [
        ("[modle]\n", r"a\.toml: unknown section or key 'modle' \(did you mean 'model'\?\)"),
        ("[model]\ninput_fov_shap = [1, 1, 1]\n", r"\[model\] unknown key 'input_fov_shap' \(did you mean 'input_fov_shape'"),
        ("[model]\ninput_fov_shape = [13, 33]\n", r"\[model\] input_fov_shape: expected a list of 3 ints, got \[13, 33\]"),
        ("[model]\ninput_fov_shape = [12, 33, 33]\n", r"input_fov_shape: expected 3 odd positive ints"),
        ('[training]\ngpu_batch_size = "8"\n', r"\[training\] gpu_batch_size: expected an int, got '8'"),
        ("[training]\ngpu_batch_size = true\n", r"gpu_batch_size: expected an int, got True"),
        ("[model]\nt_move = 1.5\n", r"\[model\] t_move: expected a probability"),
        ('[optimizer]\nklass = "RMSprop"\n', r"\[optimizer\] klass: expected one of"),
        ("[training.validation_metric]\nbeta2 = 1.0\n", r"unknown key 'beta2'"),
        ("[[training.augment_noise]]\naxis = 0\nmull = 0.1\n", r"unknown key 'mull'"),
        ("[model\n", r"a\.toml: TOML syntax error: .*line 1"),
        ("random_seed = 1.5\n", r"random_seed: expected an int"),
    ],
)
def test_bad_config_errors_name_file_and_key(tmp_path, text, match):
    a = write(tmp_path, "a.toml", text)
    with pytest.raises(ConfigError, match=match):
        load_config([a])


def test_missing_config_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nope.toml: no such file"):
        load_config([tmp_path / "nope.toml"])


def test_get_config_value_and_format():
    cfg = load_config([])
    assert get_config_value(cfg, "training.batch_size") == 32
    assert format_config_value(get_config_value(cfg, "training.batch_size")) == "32"
    assert format_config_value(get_config_value(cfg, "model.input_fov_shape")) == "[33, 33, 33]"
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        get_config_value(cfg, "training.batch_siz")


@pytest.mark.parametrize("name", ["default", "cpu_small", "cpu_real", "gpu"])
def test_packaged_configs_load(name):
    path = packaged_config_path(name)
    if not path.exists():
        pytest.skip(f"{name}.toml not shipped yet")
    load_config([path])


def test_packaged_config_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(["default"]) == Config()
    # an existing file of that name wins
    (tmp_path / "default").write_text("random_seed = 7\n")
    assert load_config(["default"]).random_seed == 7
