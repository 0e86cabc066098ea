"""The torch gather/apply give exactly the compiled kernels' values (on the CPU)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from diluvian.batchops import apply, apply_torch, gather, gather_torch  # noqa: E402


def _case(seed):
    rng = np.random.default_rng(seed)
    box = np.array([20, 30, 26])
    window = (14, 18, 20)
    fov, out = np.array([9, 9, 9]), np.array([5, 5, 5])
    image = rng.random(tuple(box), dtype=np.float32)
    pool = rng.random((6, *window), dtype=np.float32)
    pool[rng.random(pool.shape) < 0.4] = np.nan  # unknown voxels
    pool[-1] = 0  # the trash window (last)
    n = 12
    slots = rng.integers(0, 4, n)
    slots[3] = slots[1]  # one window twice in a batch: applied in order
    origins = np.stack([rng.integers(0, box[a] - window[a] + 1, 4) for a in range(3)], 1)[slots]
    # centres inside each window's box, some near the box border (reflection, writes outside the box)
    centers = np.stack([rng.integers(origins[:, a] + out[a] // 2, origins[:, a] + window[a] - out[a] // 2)
                        for a in range(3)], 1)
    centers[0] = [0, 0, 0] + origins[0] + 2
    slots[4], origins[4], centers[4] = 4, [0, 0, 0], [1, 1, 1]  # writes clipped at the box's corner
    return image, pool, slots.astype(np.int64), origins.astype(np.int64), centers.astype(np.int64), fov, out, box


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gather_torch_matches_the_compiled_kernel(seed):
    image, pool, slots, origins, centers, fov, _, _ = _case(seed)
    starts = centers - fov // 2
    starts[2] = [-3, -4, 22]  # reflected at both ends
    ni, nm = np.empty((len(slots), *fov), np.float32), np.empty((len(slots), *fov), np.float32)
    gather(image, pool, slots, origins, starts, np.float32(0.05), ni, nm)
    ti, tm = torch.empty(ni.shape), torch.empty(nm.shape)
    gather_torch(torch.from_numpy(image), torch.from_numpy(pool), slots, origins, starts, 0.05, ti, tm)
    assert np.array_equal(ti.numpy(), ni) and np.array_equal(tm.numpy(), nm)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_apply_torch_matches_the_compiled_kernel(seed, bias):
    image, pool, slots, origins, centers, _, out, box = _case(seed)
    rng = np.random.default_rng(seed + 10)
    outputs = rng.random((len(slots) + 2, *out), dtype=np.float32)
    rows = rng.permutation(len(slots) + 2)[:len(slots)].astype(np.int64)
    radius, step = out // 2, np.array([2, 2, 2])
    faces = np.empty((len(slots), 6), np.float32)
    written = np.empty((len(slots), 6), np.int64)
    expected = pool.copy()
    apply(expected, slots, origins, centers, outputs, rows, box, radius, step, 1, bias, faces, written)
    got = torch.from_numpy(pool.copy())
    t_faces, t_written = apply_torch(got, len(pool) - 1, slots, origins, centers, torch.from_numpy(outputs), rows,
                                     box, radius, step, 1, bias)
    assert np.array_equal(got.numpy()[:-1], expected[:-1], equal_nan=True)
    assert np.array_equal(t_faces, faces, equal_nan=True)
    assert np.array_equal(t_written, written)
