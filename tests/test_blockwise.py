"""Blockwise fill on Dask: tiling, reconciliation, serial = LocalCluster = single fill, kill -9 + resume, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diluvian.config import Config, ModelConfig, PostprocessingConfig
from diluvian.fill.blockwise import (
    ID_STRIDE,
    Block,
    VolumeSource,
    blockwise_fill,
    dask_client,
    final_ids,
    match_overlap,
    plan_blocks,
    seed_box,
)

HERE = Path(__file__).resolve().parent
DASK = Path(sys.executable).with_name("dask")

# --------------------------------------------------------------------------- helpers


def oracle_cfg() -> Config:
    """9³ FOVs, move step 4 (margin 4 + 2 moves = 12 voxels); no merging by overlap, no claiming."""
    model = ModelConfig(input_fov_shape=(9, 9, 9), output_fov_shape=(9, 9, 9), output_fov_move_fraction=2)
    post = PostprocessingConfig(min_body_size=10, merge_overlap_fraction=0.0)
    if "claim" in PostprocessingConfig.__dataclass_fields__:
        import dataclasses

        post = dataclasses.replace(post, claim=False)
    return Config(model=model, postprocessing=post)


def make_oracle(model_cfg: ModelConfig, delay: float = 0.0):
    """``predict(images, masks)``: 0.95 on voxels of the seed's intensity, else 0.05 (a closure: Dask pickles it
    by value). ``delay`` seconds per call slow a fill down for the kill test."""
    out = np.asarray(model_cfg.output_fov_shape)
    lo = (np.asarray(model_cfg.input_fov_shape) - out) // 2

    def predict(images, masks):
        if delay:
            time.sleep(delay)
        n = len(images)
        ref = images.reshape(n, -1)[np.arange(n), masks.reshape(n, -1).argmax(1)]
        crop = images[:, lo[0]:lo[0] + out[0], lo[1]:lo[1] + out[1], lo[2]:lo[2] + out[2]]
        return np.where(np.abs(crop - ref[:, None, None, None]) < 1e-4, 0.95, 0.05).astype(np.float32)

    return predict


def make_picky_oracle(model_cfg: ModelConfig, skip_above: float = 0.7):
    """:func:`make_oracle` that never fills the objects brighter than ``skip_above`` (they stay unclaimed)."""
    oracle = make_oracle(model_cfg)

    def predict(images, masks):
        n = len(images)
        ref = images.reshape(n, -1)[np.arange(n), masks.reshape(n, -1).argmax(1)]
        out = oracle(images, masks)
        out[ref > skip_above] = 0.05
        return out

    return predict


def claim_cfg() -> Config:
    """:func:`oracle_cfg` with claiming on (the default of ``[postprocessing] claim``)."""
    import dataclasses

    cfg = oracle_cfg()
    return dataclasses.replace(cfg, postprocessing=dataclasses.replace(cfg.postprocessing, claim=True))


def write_dataset(directory: Path, shape=(24, 64, 64), seed=0) -> tuple[Path, np.ndarray]:
    """An HDF5 volume whose objects each have their own intensity (for the oracle), and its dataset TOML."""
    import h5py

    from diluvian.synthetic import labelled_intensity_volume

    image, lab = labelled_intensity_volume(shape, seed=seed, resolution_nm=20.0)
    with h5py.File(directory / "v.h5", "w") as f:
        f["raw"] = image
        f["lab"] = lab
    toml = directory / "v.toml"
    toml.write_text('[[dataset]]\nname = "v"\nhdf5_file = "v.h5"\nimage_dataset = "raw"\nlabel_dataset = "lab"\n'
                    'resolution = [20, 20, 20]\n')
    return toml, lab


def read_output(base: Path) -> np.ndarray:
    import zarr

    return zarr.open_array(store=str(base) + ".zarr/0", mode="r")[...]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("blockwise")
    toml, lab = write_dataset(d)
    return d, toml, lab


def serial_fill(toml: Path, cfg: Config, predictor, base: Path, **kwargs):
    """A serial blockwise fill of the test dataset in blocks of 32³ (``base``: output name)."""
    return blockwise_fill(VolumeSource((str(toml),), "v"), predictor, cfg, base, block_shape=(32, 32, 32),
                          progress=False, **kwargs)


@pytest.fixture(scope="module")
def serial_output(dataset):
    """The serial blockwise fill of the dataset: 4 blocks of 24 × 32 × 32."""
    d, toml, _ = dataset
    cfg = oracle_cfg()
    return serial_fill(toml, cfg, make_oracle(cfg.model), d / "serial"), read_output(d / "serial")


@pytest.fixture(scope="module")
def kept_fills(dataset):
    """Serial blockwise fills of the dataset with their block files kept, by seed rule: seeds from the
    write box only (0) and from the whole read box (the rule before); ``(result, output base)``."""
    d, toml, _ = dataset
    cfg = oracle_cfg()
    out = {}
    for rule in (0, "read box"):
        base = d / f"kept_{rule}"
        out[rule] = (serial_fill(toml, cfg, make_oracle(cfg.model), base, keep_blocks=True, seed_margin=rule), base)
    return out


def dataset_blocks(lab_shape):
    """The blocks of the kept fills (blocks of 32³, margin 12)."""
    from diluvian.fill.blockwise import block_margin, min_block_shape

    cfg = oracle_cfg()
    margin = block_margin(cfg, cfg.blockwise.margin_moves)
    return plan_blocks(lab_shape, (32, 32, 32), margin, min_block_shape(cfg, margin))


def write_slices(b, relative=True):
    origin = b.read_start if relative else (0, 0, 0)
    return tuple(slice(w - o, e - o) for w, e, o in zip(b.write_start, b.write_stop, origin))


# --------------------------------------------------------------------------- geometry and reconciliation


def test_seed_box_is_the_write_box_grown_and_clipped_to_the_read_box():
    b = Block(1, (0, 0, 1), (0, 0, 32), (24, 32, 64), (0, 0, 20), (24, 44, 64))
    assert [v.tolist() for v in seed_box(b, None)] == [[0, 0, 0], [24, 44, 44]]
    assert [v.tolist() for v in seed_box(b, (0, 0, 0))] == [[0, 0, 12], [24, 32, 44]]  # the write box
    assert [v.tolist() for v in seed_box(b, (4, 4, 4))] == [[0, 0, 8], [24, 36, 44]]


def test_blocks_tile_the_volume_and_a_small_remainder_joins_its_neighbour():
    blocks = plan_blocks((50, 70, 64), (32, 32, 32), (5, 6, 7), smallest=(12, 12, 12))
    cover = np.zeros((50, 70, 64), np.int32)
    for b in blocks:
        cover[tuple(slice(a, c) for a, c in zip(b.write_start, b.write_stop))] += 1
        assert b.read_start == tuple(max(0, w - m) for w, m in zip(b.write_start, (5, 6, 7)))
        assert b.read_stop == tuple(min(s, w + m) for s, w, m in zip((50, 70, 64), b.write_stop, (5, 6, 7)))
    assert (cover == 1).all()
    # Z: 0-32, 32-50 (18 >= 12 stays); Y: 0-32, 32-70 (the 6-voxel remainder joined); X: 0-32, 32-64
    assert sorted({(b.write_start[0], b.write_stop[0]) for b in blocks}) == [(0, 32), (32, 50)]
    assert sorted({(b.write_start[1], b.write_stop[1]) for b in blocks}) == [(0, 32), (32, 70)]
    assert len(blocks) == 8 and [b.index for b in blocks] == list(range(8))


def test_agreement_joins_an_object_cut_by_a_face_not_a_thin_touch():
    # one overlap box seen by two blocks: block a has objects 1 and 2, block b has 7 and 8
    a = np.zeros((10, 10, 10), np.uint64)
    b = np.zeros_like(a)
    a[:, :, :5] = 1  # object 1 = b's 7, a little shorter on a's side
    b[:, :, :6] = 7
    a[:, :, 6:] = 2
    b[:, :, 6:] = 8
    a[:, :2, 5:7] = 1  # a's object 1 leaks thinly into b's object 8
    matches = {tuple(m) for m in match_overlap(a, b, 0.5).tolist()}
    assert matches == {(1, 7), (2, 8)}
    b[:, :, 6:] = 0  # b did not see object 8: nothing to join 2 with
    assert {tuple(m) for m in match_overlap(a, b, 0.5).tolist()} == {(1, 7)}
    # a fraction of 1.0 needs perfect agreement
    assert match_overlap(a, b, 1.0).tolist() == []


def test_final_ids_are_consecutive_in_order_of_the_smallest_raw_id():
    s = ID_STRIDE
    core = [np.array([s + 1, s + 2], np.uint64), np.array([2 * s + 1, 2 * s + 5], np.uint64)]
    raw, final = final_ids(core, [np.array([[s + 2, 2 * s + 5]], np.uint64)])
    assert raw.tolist() == [s + 1, s + 2, 2 * s + 1, 2 * s + 5]
    assert final.tolist() == [1, 2, 3, 2]


def test_claim_ids_join_matched_segments_and_number_them_after_the_fill_objects():
    from diluvian.fill.blockwise import claim_ids

    s = ID_STRIDE
    new = [np.array([s + 1, s + 2], np.uint64), np.array([2 * s + 1, 2 * s + 3], np.uint64)]
    keys, values = claim_ids(7, new, [np.array([[s + 2, 2 * s + 3]], np.uint64)])
    assert keys.tolist() == [s + 1, s + 2, 2 * s + 1, 2 * s + 3]
    assert values.tolist() == [8, 9, 10, 9]


def test_matching_of_the_larger_share_does_not_join_two_pieces_through_one():
    a = np.zeros((4, 4, 8), np.uint64)
    b = np.zeros_like(a)
    a[..., :] = 1  # one side kept a piece whole
    b[..., :3], b[..., 3:] = 5, 6  # the other split it in 3 + 5
    assert {tuple(m) for m in match_overlap(a, b, 0.5).tolist()} == {(1, 5), (1, 6)}  # 5 and 6 would join
    assert match_overlap(a, b, 0.5, of="larger").tolist() == [[1, 6]]
    assert match_overlap(a, b, 0.5, of="mutual").tolist() == [[1, 6]]  # 6 is 1's largest share


def test_mutual_matching_joins_a_piece_the_other_side_claimed_larger():
    # claiming in one block's read box made one segment where the other's made a smaller
    # one (the rest of the overlap unclaimed there): of the larger one's voxels they miss,
    # as each other's largest share they match
    a = np.ones((4, 4, 8), np.uint64)
    b = np.zeros_like(a)
    b[..., :3] = 5
    assert match_overlap(a, b, 0.5, of="larger").tolist() == []
    assert match_overlap(a, b, 0.5, of="mutual").tolist() == [[1, 5]]


# --------------------------------------------------------------------------- fills


@pytest.fixture(scope="module")
def claimed_output(dataset):
    """A serial blockwise fill with claiming, of objects a third of which the oracle leaves unclaimed."""
    d, toml, _ = dataset
    cfg = claim_cfg()
    return serial_fill(toml, cfg, make_picky_oracle(cfg.model), d / "claimed"), read_output(d / "claimed")


def test_blockwise_claims_the_unclaimed_voxels_as_the_single_fill_does(dataset, claimed_output):
    from diluvian.claim import claim_result
    from diluvian.evaluate.chunked import evaluate_volumes
    from diluvian.fill import fill_volume_with_model
    from diluvian.volumes import load_volumes

    _, toml, lab = dataset
    result, seg = claimed_output
    cfg = claim_cfg()
    volume = load_volumes([toml])["v"]
    raw = fill_volume_with_model(volume, make_picky_oracle(cfg.model), cfg, progress=False)
    single = np.asarray(claim_result(volume, raw, cfg).labels)
    assert (np.asarray(raw.labels) == 0).mean() > 0.2  # the oracle left a fifth or more unclaimed
    assert result.claim["unclaimed_before"] > 0.2 * seg.size and result.claim["unclaimed_after"] == 0
    assert (seg == 0).sum() == 0 and result.claim["segments"] > 5
    assert np.unique(seg).tolist() == list(range(1, result.objects + 1))
    ours = evaluate_volumes(lab, seg, border_threshold_nm=None, progress=False)
    theirs = evaluate_volumes(lab, single, border_threshold_nm=None, progress=False)
    assert abs(ours.voi_split - theirs.voi_split) <= 0.05 and abs(ours.voi_merge - theirs.voi_merge) <= 0.05
    # an object no body filled that crosses a block face (y or x = 32) is not cut there: its largest
    # segment is as large as the single fill's
    crossing = set(np.unique(lab[:, 31:33, :])) | set(np.unique(lab[:, :, 31:33]))
    skipped = [o for o in crossing if o and (np.asarray(raw.labels)[lab == o] == 0).all()]
    assert len(skipped) >= 5
    for o in skipped:
        largest = [np.unique(s[lab == o], return_counts=True)[1].max() for s in (seg, single)]
        assert largest[0] >= 0.9 * largest[1], (o, largest)


def test_a_claim_phase_stopped_midway_resumes_to_the_same_output(dataset, claimed_output, tmp_path, monkeypatch):
    from diluvian.fill import blockwise

    _, toml, _ = dataset
    cfg = claim_cfg()
    real, written = blockwise._claim_write_task, []

    def dies_after_two(*args):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(real(*args))

    monkeypatch.setattr(blockwise, "_claim_write_task", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        serial_fill(toml, cfg, make_picky_oracle(cfg.model), tmp_path / "seg")
    monkeypatch.setattr(blockwise, "_claim_write_task", real)
    result = serial_fill(toml, cfg, make_picky_oracle(cfg.model), tmp_path / "seg")
    assert result.filled == 0 and result.objects == claimed_output[0].objects
    np.testing.assert_array_equal(read_output(tmp_path / "seg"), claimed_output[1])


def test_serial_blockwise_equals_the_single_fill_and_joins_objects_cut_by_faces(dataset, serial_output):
    from diluvian.fill import fill_volume_with_model
    from diluvian.volumes import load_volumes

    d, toml, lab = dataset
    result, seg = serial_output
    cfg = oracle_cfg()
    single = np.asarray(fill_volume_with_model(load_volumes([toml])["v"], make_oracle(cfg.model), cfg,
                                               progress=False).labels)
    assert result.blocks == 4 and result.filled == 4 and result.joined > 0
    # nearly the same voxels claimed (a piece that only the whole volume connects to a seed can stay
    # unclaimed), and a one-to-one map between the two labelings where both claim
    assert ((seg > 0) != (single > 0)).mean() < 0.01
    both = (seg > 0) & (single > 0)
    pairs = np.unique(np.stack([seg[both], single[both]], axis=1), axis=0)
    assert len(pairs) == len(np.unique(pairs[:, 0])) == len(np.unique(pairs[:, 1]))
    assert np.unique(seg[seg > 0]).tolist() == list(range(1, result.objects + 1))
    # no ground-truth object that crosses a block face (y or x = 32) is in more pieces than the single fill's
    crossing = set(np.unique(lab[:, 31:33, :])) | set(np.unique(lab[:, :, 31:33]))
    crossing.discard(0)
    assert len(crossing) >= 5
    whole = 0
    for obj in crossing:
        pieces = len(np.unique(seg[(lab == obj) & (seg > 0)]))
        assert pieces <= len(np.unique(single[(lab == obj) & (single > 0)]))
        whole += pieces == 1
    assert whole >= 5
    # the output is a zarr v3 + OME-Zarr 0.5 store and a [[zarr]] dataset that loads as a volume
    meta = json.loads((d / "serial.zarr" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["attributes"]["ome"]["version"] == "0.5"
    assert meta["attributes"]["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] \
        == [20.0, 20.0, 20.0]
    vol = load_volumes([result.toml], in_memory=False)["v segmentation"]
    assert vol.resolution.tolist() == [20.0, 20.0, 20.0]
    np.testing.assert_array_equal(vol.get_labels((0, 0, 0), vol.shape), seg)
    assert not (d / "serial.blockwise").exists()


def test_local_cluster_with_two_workers_equals_serial(dataset, serial_output, caplog):
    d, toml, _ = dataset
    cfg = oracle_cfg()
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")  # before a nanny could set it here too
    with caplog.at_level("INFO", logger="diluvian"):
        with dask_client(workers=2) as client:
            assert len(client.scheduler_info()["workers"]) == 2
            assert set(client.run(_profiling).values()) == {False}  # the workers' profiler is off
            # nor does glibc return each freed temporary to the OS (Dask's nanny default, 1.2-1.35x the CPU)
            assert set(client.run(_malloc_trim).values()) == {trim}
            result = blockwise_fill(VolumeSource((str(toml),), "v"), make_oracle(cfg.model), cfg, d / "cluster",
                                    block_shape=(32, 32, 32), client=client, progress=False)
    assert "dashboard: http://" in caplog.text
    assert len({s["pid"] for s in result.block_stats} - {os.getpid()}) >= 1  # filled in worker processes
    np.testing.assert_array_equal(read_output(d / "cluster"), serial_output[1])


def _profiling():
    import dask

    return dask.config.get("distributed.worker.profile.enabled")


def _malloc_trim():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _visible_devices():
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_one_worker_per_gpu_each_with_its_own_cuda_visible_devices():
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    with dask_client(gpus=2) as client:
        assert sorted(client.run(_visible_devices).values()) == ["0", "1"]
        assert set(client.run(_malloc_trim).values()) == {trim}


KILLED_RUN = """
import sys
sys.path.insert(0, {here!r})
from test_blockwise import VolumeSource, blockwise_fill, dask_client, make_oracle, oracle_cfg
if __name__ == "__main__":
    cfg = oracle_cfg()
    with dask_client(workers={workers}) as client:
        blockwise_fill(VolumeSource(({toml!r},), "v"), make_oracle(cfg.model, delay=0.01), cfg, {out!r},
                       block_shape=(32, 32, 32), client=client, progress=False)
"""


def _spawned(pid: int) -> list:
    """The multiprocessing-spawned descendants of process ``pid`` (Dask's worker processes)."""
    import psutil

    out = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _gone(procs, timeout: float = 20.0) -> bool:
    """Whether all of ``procs`` (psutil processes) have ended (zombies count as ended) within ``timeout`` s."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return not alive
        time.sleep(0.1)


@pytest.mark.parametrize("workers", [0, 2], ids=["serial", "local_cluster_2_workers"])
def test_kill_9_then_rerun_skips_finished_blocks_and_gives_the_same_output(dataset, serial_output, tmp_path,
                                                                           workers):
    """kill -9 of the client's whole process group (with ``workers=2``, the client and its LocalCluster's
    worker processes) once a block is done, then a serial rerun: it fills only the missing blocks."""
    d, toml, _ = dataset
    out = tmp_path / "killed"
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN.format(here=str(HERE), workers=workers, toml=str(toml), out=str(out)))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    blocks_dir = Path(str(out) + ".blockwise") / "blocks"
    deadline = time.monotonic() + 90
    group = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if blocks_dir.is_dir() and len(list(blocks_dir.glob("[0-9]*.npz"))) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        group = _spawned(proc.pid)
        # the blocks are being filled by the cluster's worker processes, which the kill takes down too
        assert len(group) == workers, [p.cmdline() for p in group]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended by itself: the assertion above says how
            pass
        proc.wait()
    assert _gone(group), "a worker process outlived kill -9 of its process group"
    done = len(list(blocks_dir.glob("[0-9]*.npz")))
    assert 1 <= done < 4
    cfg = oracle_cfg()
    result = blockwise_fill(VolumeSource((str(toml),), "v"), make_oracle(cfg.model), cfg, out,
                            block_shape=(32, 32, 32), progress=False)
    assert result.filled == 4 - done
    np.testing.assert_array_equal(read_output(out), serial_output[1])
    # a rerun of a finished fill does nothing and keeps the output
    again = blockwise_fill(VolumeSource((str(toml),), "v"), make_oracle(cfg.model), cfg, out,
                           block_shape=(32, 32, 32), progress=False)
    assert again.filled == 0 and again.objects == result.objects


def _start_scheduler_and_worker(tmp_path: Path, nworkers: int = 1) -> tuple[list, str]:
    """A ``dask scheduler`` and a ``dask worker`` (nanny-managed, one thread per worker) on 127.0.0.1, as the
    CLI would use them: ``(their Popen objects, the scheduler's address)``, once the workers are up."""
    from distributed import Client

    sched_file = tmp_path / "scheduler.json"
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                               ":0", "--scheduler-file", str(sched_file)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        procs.append(subprocess.Popen([str(DASK), "worker", "--scheduler-file", str(sched_file), "--nworkers",
                                       str(nworkers), "--nthreads", "1", "--no-dashboard"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = json.loads(sched_file.read_text())["address"]
        with Client(address, timeout=30) as c:
            c.wait_for_workers(nworkers, timeout=60)
    except BaseException:
        _stop(procs)
        raise
    return procs, address


def _stop(procs) -> None:
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.mark.skipif(not DASK.exists(), reason="no dask executable next to the interpreter")
def test_kill_9_of_a_worker_mid_fill_the_nanny_restarts_it_and_the_output_is_the_same(dataset, serial_output,
                                                                                       tmp_path):
    """A fill on a ``dask scheduler`` + ``dask worker`` (one nanny-managed worker process): once a block file is
    done and the others are not, the worker process (the nanny's child) gets SIGKILL. The nanny starts a new
    one, Dask reruns the lost task there, and the fill ends with the serial fill's output, each block once."""
    import concurrent.futures

    import psutil
    import zarr
    from distributed import Client

    d, toml, _ = dataset
    cfg = oracle_cfg()
    out = tmp_path / "worker_killed"
    blocks_dir = Path(str(out) + ".blockwise") / "blocks"
    procs, address = _start_scheduler_and_worker(tmp_path)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        with Client(address, timeout=30) as client:
            (victim,) = client.run(os.getpid).values()
            nanny = psutil.Process(procs[1].pid)
            assert victim in [p.pid for p in nanny.children()]  # the worker process, not the nanny
            fill = pool.submit(blockwise_fill, VolumeSource((str(toml),), "v"),
                               make_oracle(cfg.model, delay=0.001), cfg, out, block_shape=(32, 32, 32),
                               client=client, progress=False, keep_blocks=True)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not fill.done():
                if blocks_dir.is_dir() and len(list(blocks_dir.glob("[0-9]*.npz"))) >= 1:
                    break
                time.sleep(0.02)
            assert not fill.done(), fill.exception() or "the fill ended before the kill"
            os.kill(victim, signal.SIGKILL)
            assert _gone([psutil.Process(victim)])
            # the blocks the victim finished (their files' inodes: a rewrite renames a new file onto the name)
            done = {int(p.stem): p.stat().st_ino for p in blocks_dir.glob("[0-9]*.npz")}
            assert 1 <= len(done) < 4  # killed in flight
            result = fill.result(timeout=120)
            (after,) = client.run(os.getpid).values()
        assert after != victim and after in [p.pid for p in nanny.children()]  # the nanny's new worker
    finally:
        pool.shutdown(wait=False)
        _stop(procs)
    assert result.blocks == 4 and result.filled == 4
    # the new worker filled the blocks the kill lost (the one in flight and those not started) and no other:
    # a finished block whose task Dask reruns (the dead worker held its result) is not filled again
    by_pid: dict[int, list[int]] = {}
    for s in result.block_stats:
        by_pid.setdefault(s["pid"], []).append(s["index"])
    assert set(by_pid) <= {victim, after}
    assert sorted(by_pid.get(after, [])) == sorted(set(range(4)) - set(done))
    assert set(by_pid.get(victim, [])) <= set(done)
    assert {int(p.stem): p.stat().st_ino for p in blocks_dir.glob("[0-9]*.npz") if int(p.stem) in done} == done
    np.testing.assert_array_equal(read_output(out), serial_output[1])
    # the manifest says complete and the work directory has one block file and one relabel marker per block
    state = zarr.open_group(store=str(out) + ".zarr", mode="r").attrs["diluvian_blockwise"]
    assert state["complete"] and state["manifest"]["blocks"] == 4 and state["objects"] == serial_output[0].objects
    names = [f"{i:07d}" for i in range(4)]
    assert sorted(p.name for p in blocks_dir.glob("[0-9]*.npz")) == [n + ".npz" for n in names]
    assert sorted(p.name for p in (blocks_dir.parent / "relabelled").glob("[0-9]*")) == names


def test_seeds_from_the_write_box_only_fill_no_object_that_lies_wholly_in_a_margin(dataset, kept_fills):
    from diluvian.fill.blockwise import _load_block

    _, _, lab = dataset
    blocks = dataset_blocks(lab.shape)

    def margin_only(base):
        """Objects of the block files that have no voxel in their block's write box."""
        n = 0
        for b in blocks:
            labels = _load_block(str(base) + ".blockwise", b.index)
            n += len(np.setdiff1d(np.unique(labels[labels > 0]), np.unique(labels[write_slices(b)])))
        return n

    assert margin_only(kept_fills[0][1]) == 0
    assert margin_only(kept_fills["read box"][1]) > 0  # the whole read box's seeds fill them (twice: the neighbour too)
    fovs = {rule: sum(s["fovs"] for s in r.block_stats) for rule, (r, _) in kept_fills.items()}
    assert fovs[0] < fovs["read box"]
    # where the task's time went
    assert set(kept_fills[0][0].block_stats[0]["times"]) == {"setup", "open", "model", "read", "seeds", "fill", "save"}


def test_write_box_voxels_a_block_left_unclaimed_take_a_face_neighbours_id(dataset, kept_fills):
    from diluvian.fill.blockwise import _face_neighbours, _load_block

    _, _, lab = dataset
    blocks = dataset_blocks(lab.shape)
    faces = _face_neighbours(blocks)
    assert faces[0] == [1, 2] and faces[3] == [1, 2]  # 1 x 2 x 2 blocks: no diagonal neighbour is a face one
    result, base = kept_fills[0]
    work = str(base) + ".blockwise"
    seg = read_output(base)
    raw = np.zeros(seg.shape, np.uint64)  # each voxel's block-range ID (its block's, or the neighbour's)
    patched = 0
    for t in blocks:
        mine = _load_block(work, t.index)[write_slices(t)]
        out = seg[write_slices(t, relative=False)]
        assert ((out != 0) >= (mine != 0)).all()
        here = raw[write_slices(t, relative=False)]
        here[...] = mine
        for s in (blocks[j] for j in faces[t.index]):
            lo, hi = np.maximum(t.write_start, s.read_start), np.minimum(t.write_stop, s.read_stop)
            theirs = _load_block(work, s.index)[tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, s.read_start))]
            view = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, t.write_start))
            assert not ((out[view] == 0) & (theirs != 0)).any()  # no voxel left that the neighbour claimed
            hole = (here[view] == 0) & (theirs != 0)
            here[view][hole] = theirs[hole]
        patched += int(((mine == 0) & (out != 0)).sum())
    assert patched > 0  # without the patches those voxels were unclaimed
    # every block-range ID has one final ID, wherever it lies (its block's write box or a neighbour's holes)
    pairs = np.unique(np.stack([raw[seg > 0], seg[seg > 0]], axis=1), axis=0)
    assert len(pairs) == len(np.unique(pairs[:, 0])) and (raw[seg == 0] == 0).all()
    assert np.unique(seg[seg > 0]).tolist() == list(range(1, result.objects + 1))


# --------------------------------------------------------------------------- command line


def save_tiny_model(path: Path) -> None:
    import torch

    from diluvian.config import NetworkConfig
    from diluvian.network import build_network, save_model

    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(input_fov_shape=(9, 9, 9), output_fov_shape=(9, 9, 9),
                                   output_fov_move_fraction=2, t_final=0.5),
                 network=NetworkConfig(num_modules=1, convolution_filters=4))
    save_model(path, build_network(cfg.model, cfg.network), cfg)


@pytest.fixture(scope="module")
def cli_dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("blockwise_cli")
    toml, _ = write_dataset(d, shape=(24, 48, 48))
    save_tiny_model(d / "tiny.pt")
    return d, toml


def run_cli(capsys, *argv):
    from diluvian.cli import main

    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_on_dask_scheduler_and_worker_processes(cli_dataset, tmp_path, capsys):
    d, toml = cli_dataset
    procs, address = _start_scheduler_and_worker(tmp_path)
    try:
        out = tmp_path / "seg"
        rc, stdout, err = run_cli(capsys, "fill", "--blockwise", "--scheduler", address, "-v", toml, "-m",
                                  d / "tiny.pt", "--block-shape", 24, 24, 24, out)
        assert rc == 0, err
        assert "v: 4 blocks (4 filled now)" in stdout
        cluster = read_output(out)
    finally:
        _stop(procs)
    # the same in this process, and evaluate and view read the zarr output like any volume
    rc, _, err = run_cli(capsys, "fill", "--blockwise", "--workers", 0, "-v", toml, "-m", d / "tiny.pt",
                         "--block-shape", 24, 24, 24, tmp_path / "serial")
    assert rc == 0, err
    np.testing.assert_array_equal(read_output(tmp_path / "serial"), cluster)
    rc, stdout, err = run_cli(capsys, "evaluate", "-v", toml, "-v", str(out) + ".toml", "v", "v segmentation")
    assert rc == 0, err
    assert "CREMI" in stdout or "cremi" in stdout.lower()
    rc, _, err = run_cli(capsys, "view", "-v", toml, "-v", str(out) + ".toml", "v", "--segmentation",
                         "v segmentation", "--snapshot", tmp_path / "seg.png")
    assert rc == 0 and (tmp_path / "seg.png").stat().st_size > 0, err


def _blockwise_cli(cli_dataset, out, *extra):
    d, toml = cli_dataset
    return ("fill", "--blockwise", "--workers", 0, "-v", toml, "-m", d / "tiny.pt", *extra, out)


def test_cli_bad_input_is_one_line_exit_2(cli_dataset, tmp_path, capsys):
    import zarr

    d, toml = cli_dataset
    out = tmp_path / "seg"

    def fails(argv, words):
        t0 = time.monotonic()
        rc, _, err = run_cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and words in lines[0], err
        return time.monotonic() - t0

    # unreachable scheduler: an error within seconds
    unreachable = list(_blockwise_cli(cli_dataset, out))
    unreachable[2:4] = ["--scheduler", "tcp://127.0.0.1:9"]
    assert fails(unreachable, "cannot reach a Dask scheduler") < 20
    fails(_blockwise_cli(cli_dataset, out, "--block-shape", 8, 24, 24), "smaller than the FOV")
    fails(("fill", "--blockwise", "-v", tmp_path / "none.toml", "-m", d / "tiny.pt", out), "none.toml")
    fails(_blockwise_cli(cli_dataset, out, "--viewer"), "not with --blockwise")
    fails(("fill", "--workers", 2, "-v", toml, "-m", d / "tiny.pt", out), "only with --blockwise")
    # an existing store of another shape is refused unless --overwrite
    zarr.create_group(store=str(out) + ".zarr", zarr_format=3).create_array("0", shape=(4, 4, 4), dtype="uint64")
    fails(_blockwise_cli(cli_dataset, out, "--block-shape", 24, 24, 24), "exists with shape [4, 4, 4]")
    rc, _, err = run_cli(capsys, *_blockwise_cli(cli_dataset, out, "--block-shape", 24, 24, 24, "--overwrite"))
    assert rc == 0, err
    # a rerun with another block shape (another manifest) is refused
    fails(_blockwise_cli(cli_dataset, out, "--block-shape", 24, 48, 24), "another volume or config")
    assert not Path(str(out) + ".blockwise").exists()


def test_the_manifest_holds_only_what_changes_the_segmentation():
    import dataclasses

    from diluvian.fill.blockwise import _differences, _manifest

    cfg = oracle_cfg()
    source = type("Source", (), {"name": "v", "dataset_files": [], "partition": False})()

    def manifest(c, seed_margin=(0, 0, 0), **options):
        return _manifest(source, (24, 64, 64), (20, 20, 20), None, c, options, (32, 32, 32), (8, 8, 8), 0.5, 4,
                         seed_margin)

    base = manifest(cfg)
    timing = dataclasses.replace(cfg, fill=dataclasses.replace(cfg.fill, checkpoint_minutes=1.0, move_batch_size=64))
    assert _differences(base, manifest(timing)) == []
    assert _differences(base, manifest(cfg, move_batch_size=8)) == []
    moved = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, t_final=0.7))
    assert any("t_final" in d for d in _differences(base, manifest(moved)))
    assert any("max_moves" in d for d in _differences(base, manifest(cfg, max_moves=5)))
    # the seed rule changes the segmentation: a resume with another one (or the read box's, the rule of
    # format 1) is refused
    assert any("seed_margin" in d for d in _differences(base, manifest(cfg, seed_margin=(4, 4, 4))))
    assert any("seed_margin" in d for d in _differences(base, manifest(cfg, seed_margin=None)))
    old = dict(base, format=1)
    del old["seed_margin"]
    assert {d.split(" ")[0] for d in _differences(old, base)} == {"format", "seed_margin"}


def test_cli_moves_per_step_reaches_the_blocks_and_the_manifest(cli_dataset, tmp_path, capsys):
    out = tmp_path / "seg"
    rc, stdout, err = run_cli(capsys, *_blockwise_cli(cli_dataset, out, "--block-shape", 24, 24, 24,
                                                      "--moves-per-step", 2))
    assert rc == 0, err
    # a rerun with another moves_per_step would make another segmentation: refused by the manifest
    rc, _, err = run_cli(capsys, *_blockwise_cli(cli_dataset, out, "--block-shape", 24, 24, 24))
    assert rc == 2 and "moves_per_step" in err, err
