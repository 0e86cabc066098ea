"""``[[tensorstore]]`` dataset entries: neuroglancer precomputed, N5 and zarr v3 read lazily through TensorStore."""

from __future__ import annotations

import numpy as np
import pytest

ts = pytest.importorskip("tensorstore")

from diluvian.cli import main  # noqa: E402
from diluvian.errors import ConfigError, DatasetNotFoundError  # noqa: E402
from diluvian.volumes import load_volumes  # noqa: E402


def write_precomputed(path, zyx: np.ndarray, resolution_zyx, kind: str) -> None:
    """A one-scale precomputed volume (``kind`` image or segmentation) of a ZYX array, 8³ chunks."""
    dtype = {"image": "uint8", "segmentation": "uint64"}[kind]
    store = ts.open({
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": str(path)},
        "multiscale_metadata": {"type": kind, "data_type": dtype, "num_channels": 1},
        "scale_metadata": {"size": list(reversed(zyx.shape)), "resolution": list(reversed(resolution_zyx)),
                           "encoding": "raw", "chunk_size": [8, 8, 8]},
    }, create=True).result()
    store[ts.d["channel"][0]].T.write(zyx.astype(dtype)).result()


def test_precomputed_volume_round_trip_through_a_dataset_toml(tmp_path, tiny_arrays):
    image, labels = tiny_arrays
    write_precomputed(tmp_path / "raw", image, (20, 10, 5), "image")
    write_precomputed(tmp_path / "seg", labels, (20, 10, 5), "segmentation")
    toml = tmp_path / "pc.toml"
    toml.write_text('[[tensorstore]]\nname = "pc"\ndriver = "neuroglancer_precomputed"\n'
                    'image = "raw"\nlabels = "file://' + str(tmp_path / "seg") + '"\n')
    vol = load_volumes([toml], in_memory=False)["pc"]
    assert vol.shape == image.shape
    assert vol.resolution.tolist() == [20.0, 10.0, 5.0]  # from the precomputed info, reordered to ZYX
    a, b = np.array([3, 5, 7]), np.array([11, 30, 41])
    np.testing.assert_array_equal(vol.get_labels(a, b), labels[3:11, 5:30, 7:41])
    np.testing.assert_allclose(vol.get_image(a, b), image[3:11, 5:30, 7:41] / 256.0)
    # lazily: a box reads only its chunks, and to_memory reads everything
    np.testing.assert_array_equal(vol.to_memory().labels, labels)


@pytest.mark.parametrize("driver", ["n5", "zarr3"])
def test_n5_and_zarr3_with_given_resolution(tmp_path, tiny_arrays, driver):
    _, labels = tiny_arrays
    store = ts.open({"driver": driver, "kvstore": {"driver": "file", "path": str(tmp_path / "lab")}},
                    create=True, dtype=ts.uint64, shape=labels.shape).result()
    store.write(labels).result()
    toml = tmp_path / "v.toml"
    toml.write_text(f'[[tensorstore]]\nname = "v"\ndriver = "{driver}"\nlabels = "lab"\nresolution = [8, 4, 4]\n')
    vol = load_volumes([toml], in_memory=False)["v"]
    assert vol.resolution.tolist() == [8.0, 4.0, 4.0]
    np.testing.assert_array_equal(vol.get_labels((0, 0, 0), labels.shape), labels)


def test_xyz_axes_are_reversed(tmp_path):
    zyx = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    store = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tmp_path / "a")}},
                    create=True, dtype=ts.uint16, shape=(4, 3, 2)).result()
    store.write(zyx.T).result()
    toml = tmp_path / "v.toml"
    toml.write_text('[[tensorstore]]\nname = "v"\ndriver = "zarr3"\nimage = "a"\naxes = "xyz"\n'
                    'resolution = [1, 1, 1]\n')
    vol = load_volumes([toml], in_memory=False)["v"]
    assert vol.shape == (2, 3, 4)
    np.testing.assert_allclose(vol.get_image((0, 0, 0), (2, 3, 4)), zyx / 65536.0)


def test_bad_entries_name_the_file_and_key(tmp_path):
    toml = tmp_path / "bad.toml"
    toml.write_text('[[tensorstore]]\nname = "v"\ndriver = "hdf5"\nimage = "a"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: \[\[tensorstore\]\] 'v': driver: expected one of"):
        load_volumes([toml])
    toml.write_text('[[tensorstore]]\nname = "v"\ndriver = "n5"\nimage = "missing"\n')
    with pytest.raises(DatasetNotFoundError, match=r"bad.toml: \[\[tensorstore\]\] 'v': .*no n5 array at"):
        load_volumes([toml])
    toml.write_text('[[tensorstore]]\nname = "v"\ndriver = "n5"\nimgae = "a"\n')
    with pytest.raises(ConfigError, match="did you mean 'image'"):
        load_volumes([toml])


def test_cli_missing_store_is_one_line_exit_2(tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text('[[tensorstore]]\nname = "v"\ndriver = "neuroglancer_precomputed"\nimage = "nothing"\n')
    rc = main(["view", "-v", str(toml), "--snapshot", str(tmp_path / "s.png")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no neuroglancer_precomputed array" in err
