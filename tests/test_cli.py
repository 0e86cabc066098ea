"""CLI surface: help, check-config round trip, one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from diluvian.cli import main, make_parser

COMMON_FLAGS = ["-c", "--config-file", "-cd", "-m", "--model-file", "-v", "--volume-file",
                "--no-in-memory", "-rs", "--random-seed", "-l", "--log"]


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def subcommands():
    parser = make_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["-h"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in subcommands():
        assert name in out


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_subcommand_has_the_common_flags(name, capsys):
    with pytest.raises(SystemExit):
        main([name, "-h"])
    out = capsys.readouterr().out
    for flag in COMMON_FLAGS:
        assert flag in out, f"{name} -h lacks {flag}"


def test_check_config_output_loads_back_to_same_text(tmp_path, capsys):
    rc, first, _ = run(capsys, "check-config")
    assert rc == 0
    a = tmp_path / "a.toml"
    a.write_text(first)
    rc, second, _ = run(capsys, "check-config", "-c", str(a))
    assert rc == 0 and second == first


def test_check_config_single_value_and_seed(capsys):
    assert run(capsys, "check-config", "training.batch_size")[1].strip() == "32"
    # 0 is a valid seed (the original ignored it)
    assert run(capsys, "check-config", "random_seed", "-rs", "0")[1].strip() == "0"


def test_partial_config_file(tmp_path, capsys):
    a = tmp_path / "a.toml"
    a.write_text("[training]\ngpu_batch_size = 4\n")
    rc, out, _ = run(capsys, "check-config", "-c", str(a), "training.batch_size")
    assert (rc, out.strip()) == (0, "4")


def test_cd_resets_to_defaults(tmp_path, capsys):
    a = tmp_path / "a.toml"
    a.write_text("[training]\ngpu_batch_size = 4\n")
    rc, out, _ = run(capsys, "check-config", "-c", str(a), "-cd", "training.batch_size")
    assert out.strip() == "32"


@pytest.mark.parametrize(
    "text, match",
    [
        ("[model]\ninput_fov_shap = [1, 1, 1]\n", "unknown key 'input_fov_shap'"),
        ('[training]\ngpu_batch_size = "x"\n', "gpu_batch_size: expected an int"),
        ("[model\n", "TOML syntax error"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path, capsys, text, match):
    a = tmp_path / "a.toml"
    a.write_text(text)
    rc, out, err = run(capsys, "check-config", "-c", str(a))
    assert rc == 2
    assert match in err and str(a) in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_missing_config_file_exit_2(tmp_path, capsys):
    rc, _, err = run(capsys, "check-config", "-c", str(tmp_path / "none.toml"))
    assert rc == 2 and "none.toml: no such file" in err


def test_traceback_only_with_debug(tmp_path):
    a = tmp_path / "a.toml"
    a.write_text("[modle]\n")
    cmd = [sys.executable, "-m", "diluvian", "check-config", "-c", str(a)]
    quiet = subprocess.run(cmd, capture_output=True, text=True)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    debug = subprocess.run(cmd + ["-l", "DEBUG"], capture_output=True, text=True)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
