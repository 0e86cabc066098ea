"""Tests of scripts/check_imports.py (the one-way import order check) on tiny fake packages."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_imports.py"


@pytest.fixture(scope="module")
def ci():
    spec = importlib.util.spec_from_file_location("check_imports", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_imports"] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules["check_imports"]


def make_package(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: source}`` under ``root/fakepkg`` (with an empty __init__.py) and return the package dir."""
    pkg = root / "fakepkg"
    for rel, text in {"__init__.py": "", **files}.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


LAYERS = [["errors"], ["config", "sub"], ["top", "__init__"]]


def run_check(ci, pkg, layers=LAYERS, quiet=False):
    out = io.StringIO()
    n = ci.check(pkg, layers, quiet=quiet, out=out)
    return n, out.getvalue()


def test_a_circle_through_an_import_inside_a_function_fails(ci, tmp_path):
    pkg = make_package(tmp_path, {
        "errors.py": "",
        "config.py": "from .errors import *\nfrom . import sub\n",
        # the circle is closed by an import inside a function, the case of volumes.base and sampling
        "sub/__init__.py": "",
        "sub/a.py": "def f():\n    from ..config import x\n    return x\n",
        "sub/b.py": "import fakepkg.sub.a\n",
        "top.py": "from .sub.b import y\n",
    })
    # config -> sub (the package); make sub import config back through sub/__init__
    (pkg / "sub" / "__init__.py").write_text("from .a import f\n")
    n, out = run_check(ci, pkg)
    assert n == 1
    assert "import circle among fakepkg.config, fakepkg.sub, fakepkg.sub.a:" in out
    assert "fakepkg.config -> fakepkg.sub -> fakepkg.sub.a -> fakepkg.config" in out
    assert "upward" not in out
    # and the command line exits 1 on it
    layers_file = tmp_path / "layers.py"
    layers_file.write_text(f"LAYERS = {LAYERS!r}\n")
    done = subprocess.run([sys.executable, str(SCRIPT), "--package", str(pkg), "--layers-from", str(layers_file), "-q"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "import circle" in done.stdout and "1 problem(s)" in done.stdout


def test_an_upward_import_fails_and_names_the_line(ci, tmp_path):
    pkg = make_package(tmp_path, {
        "errors.py": "",
        "config.py": "import os\n\n\ndef load():\n    from .top import main  # upward\n    return main\n",
        "top.py": "from .errors import E\n",
    })
    n, out = run_check(ci, pkg, quiet=True)
    assert n == 1
    assert "upward import: fakepkg.config (layer 1) imports fakepkg.top (layer 2)" in out
    assert "config.py:5" in out
    # the same import is fine once the layers say config sits above top
    n, out = run_check(ci, pkg, layers=[["errors"], ["top"], ["config", "__init__"]])
    assert n == 0, out
    # and an import both ways is a circle as well as an upward import
    (pkg / "top.py").write_text("from .errors import E\nfrom fakepkg import config\n")
    n, out = run_check(ci, pkg, quiet=True)
    assert n == 2 and "upward import" in out and "import circle among fakepkg.config, fakepkg.top" in out


def test_a_one_way_package_passes_and_lists_its_imports(ci, tmp_path):
    pkg = make_package(tmp_path, {
        "errors.py": "import numpy\n",
        "config.py": "from .errors import E\nif False:\n    from . import errors\n",
        "sub/__init__.py": "from .a import f\n",
        "sub/a.py": "from ..config import C\nfrom .. import errors\n",
        "top.py": "import fakepkg.sub.a as a\nfrom .sub import a as b, f\n",
    })
    n, out = run_check(ci, pkg)
    assert n == 0, out
    assert "fakepkg.sub.a [layer 1] -> fakepkg.config, fakepkg.errors\n" in out
    assert "fakepkg.top [layer 2] -> fakepkg.sub.a, fakepkg.sub\n" in out
    assert "fakepkg.errors [layer 0] -> (nothing)\n" in out  # numpy is not package-internal
    assert "check_imports: ok, 6 modules, 6 internal imports" in out


def test_a_module_in_no_layer_fails(ci, tmp_path):
    pkg = make_package(tmp_path, {"errors.py": "", "stray.py": "from .errors import E\n"})
    n, out = run_check(ci, pkg, quiet=True)
    assert n == 1 and "fakepkg.stray" in out and "in no layer" in out


def test_longest_prefix_decides_the_layer(ci):
    layers = [["volumes.base"], ["config"], ["volumes"]]
    assert ci.layer_of("diluvian.volumes.base", layers) == 0
    assert ci.layer_of("diluvian.volumes.views", layers) == 2
    assert ci.layer_of("diluvian.volumesx", layers) is None
    assert ci.layer_of("diluvian", [["__init__"]]) == 0


def test_layers_option_prints_the_order_top_first(tmp_path):
    layers_file = tmp_path / "layers.py"
    layers_file.write_text('LAYERS = [["errors"], ["config", "sub"], ["top"]]\n')
    done = subprocess.run([sys.executable, str(SCRIPT), "--layers-from", str(layers_file), "--layers"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["2: top", "1: config, sub", "0: errors"]
