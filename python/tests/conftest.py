"""Shared helpers of the mini_runtime tests.

Every engine scenario runs in each MODE: sequential, threaded (one DMA and
one compute thread) and threaded with two compute threads. A watchdog
(faulthandler) ends the whole run with a traceback when one test hangs, so
a hang is a failure, never a stuck CI job.
"""

import faulthandler

import numpy as np
import pytest

import mini_runtime as mr

T = mr.TILE_BYTES

#: (id, threaded, compute_threads)
MODES = [("sequential", False, 1), ("threaded", True, 1), ("threaded-2", True, 2)]
MODE_IDS = [m[0] for m in MODES]

HANG_SECONDS = 120


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(params=MODES, ids=MODE_IDS)
def mode(request):
    return request.param


def make_engine(mode, sram_bytes=256 * 1024, trace=False):
    """An engine in `mode` (a MODES entry), configured as the original callers did."""
    cfg = mr.EngineConfig()
    cfg.sram_bytes = sram_bytes
    cfg.threaded = mode[1]
    cfg.compute_threads = mode[2]
    cfg.trace = trace
    return mr.Engine(cfg)


def rand(rng, rows, cols, scale=1.0):
    return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)


def bits(a):
    """The raw bits of a float32 array (NaN and -0.0 compare exactly)."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_same_bits(x, y, what=""):
    assert x.shape == y.shape, what
    diff = np.count_nonzero(bits(x) != bits(y))
    assert diff == 0, "%s: %d of %d values differ in their bits" % (what, diff, x.size)


def assert_close(got, want, what=""):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=what)


def abc_engine(mode, a, b, c_shape=None, sram_bytes=256 * 1024):
    """An engine with tensors A (id 0), B (id 1) set from a and b, and C (id 2)."""
    e = make_engine(mode, sram_bytes)
    assert e.register_tensor("A", *a.shape) == 0
    assert e.register_tensor("B", *b.shape) == 1
    assert e.register_tensor("C", *(c_shape or (a.shape[0], b.shape[1]))) == 2
    e.set_tensor("A", a)
    e.set_tensor("B", b)
    return e


def single_tile_ops(relu=False, a=0, b=1, c=2):
    """C = A . B on one tile: A at 0, B at T, the accumulator at 2T."""
    return [
        mr.SchedLoad(a, 0, 0, 0, T),
        mr.SchedLoad(b, 0, 0, T, T),
        mr.SchedExecute(0, 0, 0, 0, T, 2 * T),
        mr.SchedStore(c, 0, 0, 2 * T, T, relu),
    ]


def tiles(n):
    return (n + mr.TILE_DIM - 1) // mr.TILE_DIM


def matmul_ops(a_id, b_id, out_id, m_rows, k_cols, n_cols, relu=False, base=0, double_buffer=True):
    """A Python-side schedule of out = a . b (shapes m_rows x k_cols, k_cols x
    n_cols), the way the original compiler's scheduler lowered it: per
    output tile, for each k a LOAD of A(m, k) and B(k, n) and an EXEC, then
    one STORE. With double_buffer the operands alternate between two slots
    per operand ("ping/pong", buffer = k % 2); without, every k reuses one
    slot per operand and the ops are untagged."""
    ops = []
    mt, kt, nt = tiles(m_rows), tiles(k_cols), tiles(n_cols)
    acc = base + 4 * T
    for m in range(mt):
        for n in range(nt):
            for k in range(kt):
                slot = k % 2 if double_buffer else 0
                tag = k % 2 if double_buffer else -1
                a_addr = base + slot * T
                b_addr = base + (2 + slot) * T
                ops.append(mr.SchedLoad(a_id, m, k, a_addr, T, tag))
                ops.append(mr.SchedLoad(b_id, k, n, b_addr, T, tag))
                ops.append(mr.SchedExecute(m, n, k, a_addr, b_addr, acc, tag))
            ops.append(mr.SchedStore(out_id, m, n, acc, T, relu))
    return ops


# The reference MLP: x 128x128 -> W1 128x64 -> ReLU -> W2 64x32 -> ReLU -> W3 32x32.
MLP_NAMES = ("x", "w1", "h1", "w2", "h2", "w3", "out")
MLP_SHAPES = ((128, 128), (128, 64), (128, 64), (64, 32), (128, 32), (32, 32), (128, 32))


def mlp_inputs(seed=42):
    rng = np.random.default_rng(seed)
    return {n: rand(rng, *MLP_SHAPES[MLP_NAMES.index(n)], scale=0.1) for n in ("x", "w1", "w2", "w3")}


def mlp_reference(inp):
    h1 = np.maximum(0, inp["x"] @ inp["w1"])
    h2 = np.maximum(0, h1 @ inp["w2"])
    return h2 @ inp["w3"]


def mlp_engine(mode, inp, sram_bytes=256 * 1024):
    """An engine with the seven MLP tensors registered (ids 0..6) and the inputs set."""
    e = make_engine(mode, sram_bytes)
    for i, (name, shape) in enumerate(zip(MLP_NAMES, MLP_SHAPES)):
        assert e.register_tensor(name, *shape) == i
    for name, data in inp.items():
        e.set_tensor(name, data)
    return e


def mlp_python_ops():
    """The MLP lowered by matmul_ops (no tile reuse: 3 ops per tile product)."""
    x, w1, h1, w2, h2, w3, out = range(7)
    return (
        matmul_ops(x, w1, h1, 128, 128, 64, relu=True)
        + matmul_ops(h1, w2, h2, 128, 64, 32, relu=True)
        + matmul_ops(h2, w3, out, 128, 32, 32, relu=False)
    )


def mlp_builder_ops():
    """The MLP as libcllm's schedule builder lowers it (99 ops)."""
    from mini_runtime import _builder

    ops, info = _builder.build_matmul_schedule(_builder.reference_mlp_layers(list(range(7))))
    return ops, info
