"""The original threaded-runtime scenarios (tileflow
tests/test_threaded_runtime.py), written anew: threaded output is
bit-identical to sequential output, 1000 repeated runs, no hangs, stats
and overlap, one engine shared by several Python threads, and the GIL
released while the engine runs."""

import threading
import time

import numpy as np
import pytest

from mini_runtime import _native

from conftest import MODES, T, abc_engine, make_engine, matmul_ops, rand, single_tile_ops
from conftest import assert_close, assert_same_bits
from conftest import mlp_builder_ops, mlp_engine, mlp_inputs, mlp_python_ops, mlp_reference

SEQUENTIAL, THREADED, THREADED2 = MODES
THREADED_MODES = [THREADED, THREADED2]


def in_every_mode(run):
    """run(mode) -> list of arrays; the lists must hold the same bits in every mode."""
    results = [run(mode) for mode in MODES]
    for mode, got in zip(MODES[1:], results[1:]):
        assert len(got) == len(results[0])
        for i, (x, y) in enumerate(zip(results[0], got)):
            assert_same_bits(x, y, "output %d, %s vs sequential" % (i, mode[0]))
    return results[0]


#: The MLP tensors the schedule writes, (name, shape) each.
MLP_OUTPUTS = (("h1", (128, 64)), ("h2", (128, 32)), ("out", (128, 32)))


def mlp_outputs(e):
    return [e.get_tensor(n, *s) for n, s in MLP_OUTPUTS]


# --------------------------------------------------- threaded == sequential
def test_single_tile_threaded_matches_sequential():
    rng = np.random.default_rng(20)
    a, b = rand(rng, 32, 32), rand(rng, 32, 32)

    def run(mode):
        e = abc_engine(mode, a, b)
        e.execute(single_tile_ops())
        return [e.get_tensor("C", 32, 32)]

    (c,) = in_every_mode(run)
    assert_close(c, a @ b)


@pytest.mark.parametrize("source", ["builder", "python"])
def test_mlp_threaded_matches_sequential(source):
    inp = mlp_inputs(42)
    ops = mlp_builder_ops()[0] if source == "builder" else mlp_python_ops()

    def run(mode):
        e = mlp_engine(mode, inp)
        e.execute(ops)
        return mlp_outputs(e)

    outs = in_every_mode(run)
    assert_close(outs[2], mlp_reference(inp))


def test_random_matmul_chains_threaded_match_sequential():
    """Random shapes, with and without ping/pong, relu or not, several layers in one schedule."""
    rng = np.random.default_rng(21)
    for case in range(6):
        dims = [int(d) for d in rng.integers(1, 100, size=4)]
        relu = [bool(r) for r in rng.integers(0, 2, size=2)]
        double_buffer = bool(case % 2)
        x, w1, w2 = rand(rng, dims[0], dims[1]), rand(rng, dims[1], dims[2]), rand(rng, dims[2], dims[3])

        def run(mode):
            e = make_engine(mode)
            for name, shape in (
                ("x", x.shape),
                ("w1", w1.shape),
                ("h", (dims[0], dims[2])),
                ("w2", w2.shape),
                ("y", (dims[0], dims[3])),
            ):
                e.register_tensor(name, *shape)
            e.set_tensor("x", x)
            e.set_tensor("w1", w1)
            e.set_tensor("w2", w2)
            ops = matmul_ops(0, 1, 2, dims[0], dims[1], dims[2], relu[0], double_buffer=double_buffer)
            ops += matmul_ops(2, 3, 4, dims[0], dims[2], dims[3], relu[1], base=8 * T, double_buffer=double_buffer)
            e.execute(ops)
            return [e.get_tensor("h", dims[0], dims[2]), e.get_tensor("y", dims[0], dims[3])]

        h, y = in_every_mode(run)
        want_h = x @ w1
        if relu[0]:
            want_h = np.maximum(want_h, 0)
        want_y = want_h @ w2
        if relu[1]:
            want_y = np.maximum(want_y, 0)
        np.testing.assert_allclose(y, want_y, rtol=1e-4, atol=1e-4, err_msg="case %d dims %s" % (case, dims))


# ------------------------------------------------ threaded basics
@pytest.mark.parametrize("mode", THREADED_MODES, ids=lambda m: m[0])
def test_threaded_identity_and_relu(mode):
    a = rand(np.random.default_rng(22), 32, 32)
    e = abc_engine(mode, a, np.eye(32, dtype=np.float32))
    e.execute(single_tile_ops())
    assert_same_bits(e.get_tensor("C", 32, 32), a, "A . I")
    e.set_tensor("A", np.ones((32, 32), np.float32))
    e.set_tensor("B", np.full((32, 32), -1.0, np.float32))
    e.execute(single_tile_ops(relu=True))
    assert_same_bits(e.get_tensor("C", 32, 32), np.zeros((32, 32), np.float32), "relu")


def test_stats_match_across_modes():
    ops, _ = mlp_builder_ops()
    counts = []
    for mode in MODES:
        e = mlp_engine(mode, mlp_inputs())
        for _ in range(3):
            e.execute(ops)
        s = e.stats()
        counts.append((s.loads, s.executes, s.stores))
        assert s.total_ns > 0
        if not mode[1]:
            assert s.overlap_ns == 0
    assert counts == [(3 * 39, 3 * 44, 3 * 16)] * len(MODES)


# ------------------------------------------------ stress
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m[0])
def test_1000_repeated_runs_give_the_sequential_bits(mode):
    """1000 runs of the reference MLP; the outputs are poisoned before each
    run and must come back with the sequential run's bits every time."""
    ops, _ = mlp_builder_ops()
    inp = mlp_inputs(5)
    ref_engine = mlp_engine(SEQUENTIAL, inp)
    ref_engine.execute(ops)
    want = mlp_outputs(ref_engine)
    assert_close(want[2], mlp_reference(inp))

    e = mlp_engine(mode, inp)
    poison = {n: np.full(s, np.nan, np.float32) for n, s in MLP_OUTPUTS}
    differing = []
    for run in range(1000):
        for n, p in poison.items():
            e.set_tensor(n, p)
        e.execute(ops)
        got = mlp_outputs(e)
        if any(np.count_nonzero(x.view(np.uint32) != y.view(np.uint32)) for x, y in zip(got, want)):
            differing.append(run)
    assert not differing, "%d of 1000 runs differ from sequential (first: run %d)" % (len(differing), differing[0])
    s = e.stats()
    assert (s.loads, s.executes, s.stores) == (1000 * 39, 1000 * 44, 1000 * 16)
    assert s.overlap_ns <= min(s.dma_busy_ns, s.compute_busy_ns)
    if mode[1] and _native.lib.cllm_usable_cpus() >= 1 + mode[2]:
        # With a CPU for every lane, the DMA and compute lanes ran at once
        # at some point of 1000 runs (with fewer CPUs they may take turns).
        assert s.overlap_ns > 0


@pytest.mark.parametrize("mode", THREADED_MODES, ids=lambda m: m[0])
def test_no_hang_1000_single_tile_executes(mode):
    e = abc_engine(mode, np.ones((32, 32), np.float32), np.ones((32, 32), np.float32))
    ops = single_tile_ops()
    # A hang would stop here; the test runner's time limit turns it into a failure.
    for _ in range(1000):
        e.execute(ops)
    np.testing.assert_array_equal(e.get_tensor("C", 32, 32), np.full((32, 32), 32.0, np.float32))


# --------------------------------------------- Python threads
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m[0])
def test_one_engine_shared_by_four_python_threads(mode):
    ops, _ = mlp_builder_ops()
    inp = mlp_inputs(9)
    e = mlp_engine(mode, inp)
    e.execute(ops)
    want = e.get_tensor("out", 128, 32)
    e.reset_stats()
    errors = []

    def worker():
        try:
            for _ in range(50):
                e.execute(ops)
                if not np.array_equal(e.get_tensor("out", 128, 32).view(np.uint32), want.view(np.uint32)):
                    errors.append("different bits")
        except Exception as ex:  # noqa: BLE001 - reported below
            errors.append(repr(ex))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert e.stats().executes == 4 * 50 * 44


# Sequential only: the pipelined lanes would share the 2 CPUs of a small
# machine with both Python threads and blur what the loop measures.
@pytest.mark.parametrize("mode", [SEQUENTIAL], ids=lambda m: m[0])
def test_execute_releases_the_gil(mode):
    """While one thread is inside a long execute, another Python thread keeps
    running: the longest pause of its loop is far shorter than the call."""
    from mini_runtime import _builder

    e = make_engine(mode)
    for name in "ABC":
        e.register_tensor(name, 512, 512)
    ops, _ = _builder.build_matmul_schedule([((0, 512, 512), (1, 512, 512), (2, 512, 512), False)])
    long_ops = ops * 30
    e.execute(long_ops)  # packs and caches the op array: the next calls are all C
    t0 = time.perf_counter()
    e.execute(long_ops)
    one_call = time.perf_counter() - t0

    done = threading.Event()

    def run():
        e.execute(long_ops)
        done.set()

    # This thread is already looping when the other one enters the call: a
    # held GIL would stop the loop for the whole call (checked by hand with
    # a ctypes.PyDLL, which keeps the GIL: one pause as long as the call).
    t = threading.Thread(target=run)
    stamps = [time.perf_counter()]
    t.start()
    while not done.is_set():
        stamps.append(time.perf_counter())
    t.join()
    longest = float(np.max(np.diff(stamps))) if len(stamps) > 1 else one_call
    # With the GIL held for the call, this loop would stop for all of it.
    assert one_call > 0.02, "the call is too short to tell (%.1f ms)" % (one_call * 1e3)
    assert longest < one_call / 2, "the loop stopped for %.1f ms of a %.1f ms call" % (longest * 1e3, one_call * 1e3)
