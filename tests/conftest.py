"""Shared pytest fixtures: tiny synthetic volumes, the real-data directory, ..."""

# --------------------------------------------------------------------------- volumes and data
import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_arrays():
    """A tiny synthetic EM volume: (image uint8, labels uint64), shape (24, 48, 48), seed 0.

    Synthesized at 20 nm so that it holds a couple of dozen objects (about 23).
    Read-only: copy before changing them.
    """
    from diluvian.synthetic import synthesize_volume

    image, labels = synthesize_volume((24, 48, 48), seed=0, resolution=(20.0, 20.0, 20.0))
    image.flags.writeable = False
    labels.flags.writeable = False
    return image, labels


@pytest.fixture
def tiny_volume(tiny_arrays):
    """``tiny_arrays`` as an :class:`~diluvian.volumes.NdarrayVolume` named ``"tiny"`` (20 nm isotropic)."""
    from diluvian.volumes import NdarrayVolume

    image, labels = tiny_arrays
    return NdarrayVolume("tiny", image, labels, resolution=(20.0, 20.0, 20.0))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real EM data directory (``$DILUVIAN_DATA_DIR``, default ``../shared/data`` from the repo root).

    Skips the test when it does not exist.
    """
    path = Path(os.environ.get("DILUVIAN_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real data directory {path} not found (set DILUVIAN_DATA_DIR)")
    return path


# --------------------------------------------------------------------------- headless browser (view tests)
import os as _os
import shutil as _shutil
import subprocess as _subprocess

import pytest as _pytest

_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Debian's chromium-driver installs /usr/bin/chromedriver (a link to /usr/lib/chromium/chromedriver)
_CHROMEDRIVER_PATHS = ("chromedriver", "/usr/lib/chromium/chromedriver", "/usr/lib/chromium-browser/chromedriver")


def _first_working(candidates, what: str, hint: str) -> str:
    """The first of ``candidates`` (names or paths) that runs ``--version``; skips the test when none does."""
    for name in filter(None, candidates):
        path = _shutil.which(name) or name
        try:
            done = _subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        except (OSError, _subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return path
    _pytest.skip(f"no {what} found ({hint})")


@_pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of a working Chromium/Chrome (``$DILUVIAN_CHROMIUM`` first); skips the test when there is none."""
    return _first_working([_os.environ.get("DILUVIAN_CHROMIUM"), *_CHROMIUM_NAMES], "Chromium",
                          "install it with `make test-deps`, or set DILUVIAN_CHROMIUM")


@_pytest.fixture(scope="session")
def chromedriver_path() -> str:
    """Path of a working ChromeDriver (``$DILUVIAN_CHROMEDRIVER`` first); skips the test when there is none."""
    return _first_working([_os.environ.get("DILUVIAN_CHROMEDRIVER"), *_CHROMEDRIVER_PATHS], "chromedriver",
                          "install Debian's chromium-driver with `make test-deps`, or set DILUVIAN_CHROMEDRIVER")


@_pytest.fixture
def browser(chromium_path, chromedriver_path, tmp_path):
    """A headless Chromium driven by selenium (1000 x 700 window), quit after the test.

    Selenium is given both the browser and the driver path, so it never runs Selenium Manager
    (which would try to download a driver). Skips when selenium, Chromium or chromedriver is missing.
    """
    webdriver = _pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--window-size=1000,700",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver_path))
    try:
        driver.set_page_load_timeout(20)
        driver.set_script_timeout(10)
        yield driver
    finally:
        driver.quit()


# --------------------------------------------------------------------------- training (tests/test_training.py)
@_pytest.fixture(scope="session")
def tiny_dataset_toml(tmp_path_factory):
    """A dataset TOML naming a tiny labelled synthetic HDF5 volume ``"tiny"`` (24, 48, 48) at 10 nm."""
    from diluvian.synthetic import write_synthetic_hdf5

    d = tmp_path_factory.mktemp("tiny_dataset")
    h5 = d / "tiny.h5"
    write_synthetic_hdf5(h5, shape=(24, 48, 48), seed=0, resolution=(10.0, 10.0, 10.0))
    toml = d / "tiny.toml"
    toml.write_text(f'[[dataset]]\nname = "tiny"\nhdf5_file = "{h5}"\nimage_dataset = "volumes/raw"\n'
                    'label_dataset = "volumes/labels/neuron_ids"\nresolution = [10, 10, 10]\n')
    return toml


# --------------------------------------------------------------------------- tiny training config

TINY_TRAIN_TOML = """
random_seed = 3
[model]
input_fov_shape = [9, 9, 9]
output_fov_shape = [9, 9, 9]
output_fov_move_fraction = 4
t_move = 0.6
[network]
factory = "convstack"
convstack_variant = "ffn"
num_modules = 2
convolution_filters = 4
[optimizer]
lr = 0.003
[training]
gpu_batch_size = 4
training_size = {training_size}
validation_size = {validation_size}
total_epochs = {total_epochs}
device = "cpu"
partitions = {{ ".*" = [1, 1, 2] }}
training_partition = {{ ".*" = [0, 0, 0] }}
validation_partition = {{ ".*" = [0, 0, 1] }}
"""


@pytest.fixture
def write_tiny_train_config(tmp_path):
    """``write(training_size=12, validation_size=3, total_epochs=2) -> Path`` of a tiny training config.

    A 2-module FFN conv stack with 9³ FOVs on the CPU (seconds per epoch), training on the X half 0
    and validating on X half 1 of each volume.
    """

    def write(training_size: int = 12, validation_size: int = 3, total_epochs: int = 2) -> Path:
        path = tmp_path / "tiny_train.toml"
        path.write_text(TINY_TRAIN_TOML.format(training_size=training_size, validation_size=validation_size,
                                               total_epochs=total_epochs))
        return path

    return write


# --------------------------------------------------------------------------- membranes


def cells_volume(shape, walls, seed=0):
    """Cells side by side along X, split by 2-voxel dark membranes at ``walls``; ground truth 0 on membranes."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, np.uint64)
    edges = [0, *walls, shape[2]]
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        gt[:, :, a + (2 if i else 0):b] = i + 1
    image = np.where(gt > 0, 0.7, 0.1).astype(np.float32) + rng.normal(0, 0.03, shape).astype(np.float32)
    return image, gt
