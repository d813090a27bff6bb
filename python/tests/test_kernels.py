"""The tile kernels through matmul_tile_bench / relu_tile_bench (the
original tests/test_kernels_avx2.py scenarios, written anew): every
implementation against numpy, accumulation into C, SIMD against Reference,
ReLU exactly."""

import numpy as np
import pytest

import mini_runtime as mr

TD = mr.TILE_DIM
IMPLS = [mr.KernelImpl.Reference, mr.KernelImpl.AVX2, mr.KernelImpl.AVX512, None]
IMPL_IDS = ["Reference", "AVX2", "AVX512", "auto"]


@pytest.fixture
def rng():
    return np.random.default_rng(42)


def rand_tile(rng, scale=1.0):
    return (rng.standard_normal((TD, TD)) * scale).astype(np.float32)


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_identity_left_and_right(rng, impl):
    eye = np.eye(TD, dtype=np.float32)
    b = rand_tile(rng)
    c = np.zeros((TD, TD), np.float32)
    mr.matmul_tile_bench(c, eye, b, impl)
    np.testing.assert_array_equal(c, b)
    c = np.zeros((TD, TD), np.float32)
    mr.matmul_tile_bench(c, b, eye, impl)
    np.testing.assert_array_equal(c, b)


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_matches_numpy_and_accumulates(rng, impl):
    a, b, c0 = rand_tile(rng, 0.1), rand_tile(rng, 0.1), rand_tile(rng, 0.01)
    c = c0.copy()
    mr.matmul_tile_bench(c, a, b, impl)
    np.testing.assert_allclose(c, c0 + a @ b, rtol=1e-4, atol=1e-5)
    ones = np.ones((TD, TD), np.float32)
    mr.matmul_tile_bench(ones, np.eye(TD, dtype=np.float32), np.eye(TD, dtype=np.float32), impl)
    np.testing.assert_array_equal(ones, 1 + np.eye(TD, dtype=np.float32))


@pytest.mark.parametrize("scale, atol", [(100.0, 1e-2), (1e-4, 1e-10)])
def test_simd_matches_reference(rng, scale, atol):
    a, b = rand_tile(rng, scale), rand_tile(rng, scale)
    ref = np.zeros((TD, TD), np.float32)
    mr.matmul_tile_bench(ref, a, b, mr.KernelImpl.Reference)
    for impl in (mr.KernelImpl.AVX2, mr.KernelImpl.AVX512):
        c = np.zeros((TD, TD), np.float32)
        mr.matmul_tile_bench(c, a, b, impl)  # falls back when the CPU lacks it
        np.testing.assert_allclose(c, ref, rtol=1e-4, atol=atol)


def test_avx2_and_avx512_give_identical_bits(rng):
    if not mr.is_avx2_available():
        pytest.skip("no AVX2 on this CPU")
    a, b = rand_tile(rng), rand_tile(rng)
    c2, c5 = np.zeros((TD, TD), np.float32), np.zeros((TD, TD), np.float32)
    mr.matmul_tile_bench(c2, a, b, mr.KernelImpl.AVX2)
    mr.matmul_tile_bench(c5, a, b, mr.KernelImpl.AVX512)
    np.testing.assert_array_equal(c2.view(np.uint32), c5.view(np.uint32))


def test_inputs_are_converted(rng):
    """A and B may be float64, strided or lists (converted); C is updated in place."""
    a, b = rand_tile(rng), rand_tile(rng)
    c = np.zeros((TD, TD), np.float32)
    mr.matmul_tile_bench(c, a.astype(np.float64), np.asfortranarray(b), mr.KernelImpl.Reference)
    want = np.zeros((TD, TD), np.float32)
    mr.matmul_tile_bench(want, a, b, mr.KernelImpl.Reference)
    np.testing.assert_array_equal(c, want)
    c2 = np.zeros((TD, TD), np.float32)
    mr.matmul_tile_bench(c2, a.tolist(), b.tolist(), mr.KernelImpl.Reference)
    np.testing.assert_array_equal(c2, want)


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_relu_exact(rng, impl):
    pos = np.arange(1, TD * TD + 1, dtype=np.float32).reshape(TD, TD)
    c = pos.copy()
    mr.relu_tile_bench(c, impl)
    np.testing.assert_array_equal(c, pos)
    c = -pos
    mr.relu_tile_bench(c, impl)
    assert np.all(c == 0)
    mixed = rand_tile(rng)
    c = mixed.copy()
    mr.relu_tile_bench(c, impl)
    np.testing.assert_array_equal(c, np.maximum(mixed, 0))


def test_relu_simd_matches_reference_bits(rng):
    data = rand_tile(rng)
    data[0, :4] = [np.nan, -0.0, 0.0, -np.inf]
    ref = data.copy()
    mr.relu_tile_bench(ref, mr.KernelImpl.Reference)
    for impl in (mr.KernelImpl.AVX2, mr.KernelImpl.AVX512):
        c = data.copy()
        mr.relu_tile_bench(c, impl)
        np.testing.assert_array_equal(c.view(np.uint32), ref.view(np.uint32))


def test_impl_accepts_plain_ints():
    c = np.zeros((TD, TD), np.float32)
    mr.matmul_tile_bench(c, np.eye(TD, dtype=np.float32), np.eye(TD, dtype=np.float32), 0)
    np.testing.assert_array_equal(c, np.eye(TD, dtype=np.float32))
