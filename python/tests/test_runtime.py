"""The original runtime scenarios (tileflow tests/test_runtime.py and the
mini_runtime issue's list), written anew against numpy references. Each
runs in every mode (sequential, threaded, threaded with two compute
threads): see conftest.MODES."""

import json

import numpy as np
import pytest

import mini_runtime as mr

from conftest import T, abc_engine, make_engine, matmul_ops, rand, single_tile_ops
from conftest import assert_close, assert_same_bits
from conftest import MLP_NAMES, MLP_SHAPES, mlp_builder_ops, mlp_engine, mlp_inputs, mlp_python_ops, mlp_reference


# ------------------------------------------------------------------ tensors
def test_tensor_ids_follow_registration_order(mode):
    e = make_engine(mode, 64 * 1024)
    assert e.register_tensor("A", 32, 32) == 0
    assert e.register_tensor("B", 32, 32) == 1
    assert e.register_tensor("wide", 1, 1000) == 2


@pytest.mark.parametrize("shape", [(32, 32), (48, 48), (1, 1), (33, 65), (100, 7)])
def test_tensor_round_trip_is_exact_full_and_padded(mode, shape):
    e = make_engine(mode, 64 * 1024)
    e.register_tensor("A", *shape)
    np.testing.assert_array_equal(e.get_tensor("A", *shape), np.zeros(shape, np.float32))
    data = rand(np.random.default_rng(1), *shape)
    data[0, 0] = -0.0
    data[-1, -1] = np.nan
    e.set_tensor("A", data)
    assert_same_bits(e.get_tensor("A", *shape), data, "round trip")


def test_set_tensor_converts_like_the_original(mode):
    """float64, integer, Fortran-ordered, strided and nested-list inputs are
    converted to C-contiguous float32 (pybind11's forcecast)."""
    e = make_engine(mode, 64 * 1024)
    e.register_tensor("A", 4, 6)
    base = np.arange(24, dtype=np.float64).reshape(4, 6) / 8
    for data in (base, base.astype(np.int32), np.asfortranarray(base), base.tolist()):
        e.set_tensor("A", data)
        np.testing.assert_array_equal(e.get_tensor("A", 4, 6), np.asarray(data, dtype=np.float32))
    big = np.arange(48, dtype=np.float32).reshape(8, 6)
    e.set_tensor("A", big[::2])  # strided view
    np.testing.assert_array_equal(e.get_tensor("A", 4, 6), big[::2])


# --------------------------------------------------------- single tile
def test_single_tile_identity_matmul_gives_a_exactly(mode):
    a = rand(np.random.default_rng(2), 32, 32)
    e = abc_engine(mode, a, np.eye(32, dtype=np.float32))
    e.execute(single_tile_ops())
    assert_same_bits(e.get_tensor("C", 32, 32), a, "A . I")


def test_single_tile_random_matmul_matches_numpy(mode):
    rng = np.random.default_rng(3)
    a, b = rand(rng, 32, 32), rand(rng, 32, 32)
    e = abc_engine(mode, a, b)
    e.execute(single_tile_ops())
    assert_close(e.get_tensor("C", 32, 32), a @ b)


def test_zero_k_starts_a_fresh_accumulator(mode):
    """An EXEC with k == 0 zeroes its accumulator first, even one that holds a
    previous product (in the same execute and across executes)."""
    rng = np.random.default_rng(4)
    a, b = rand(rng, 32, 32), rand(rng, 32, 32)
    e = abc_engine(mode, a, b)
    ops = single_tile_ops()
    twice = ops[:2] + [ops[2], ops[3], mr.SchedExecute(0, 0, 0, 0, T, 2 * T), ops[3]]
    for schedule in (ops, twice, ops):
        e.execute(schedule)
        assert_close(e.get_tensor("C", 32, 32), a @ b)
    # SRAM reads as zero before it is written: k = 1 on a fresh accumulator
    # also starts from zero.
    e.execute(ops[:2] + [mr.SchedExecute(0, 0, 1, 0, T, 3 * T), mr.SchedStore(2, 0, 0, 3 * T, T)])
    assert_close(e.get_tensor("C", 32, 32), a @ b)


def test_k_accumulation_over_several_tiles(mode):
    """C (32x32) = A (32x128) . B (128x32): four EXECs on one accumulator, k = 0..3."""
    rng = np.random.default_rng(5)
    a, b = rand(rng, 32, 128), rand(rng, 128, 32)
    e = abc_engine(mode, a, b)
    e.execute(matmul_ops(0, 1, 2, 32, 128, 32, double_buffer=False))
    assert_close(e.get_tensor("C", 32, 32), a @ b)
    # k = 0 then k = 1 on the same operands: C = 2 (A . B) for one tile.
    sq = abc_engine(mode, a[:, :32].copy(), b[:32].copy())
    sq.execute(single_tile_ops()[:3] + [mr.SchedExecute(0, 0, 1, 0, T, 2 * T), mr.SchedStore(2, 0, 0, 2 * T, T)])
    assert_close(sq.get_tensor("C", 32, 32), 2 * (a[:, :32] @ b[:32]))


def test_multi_tile_64x64_manual_schedule(mode):
    """The original 2x2x2 schedule: A at 0x0000, B at 0x1000, four accumulators from 0x2000."""
    rng = np.random.default_rng(6)
    a, b = rand(rng, 64, 64), rand(rng, 64, 64)
    e = abc_engine(mode, a, b)
    ops = []
    for m in range(2):
        for n in range(2):
            acc = 0x2000 + (m * 2 + n) * T
            for k in range(2):
                ops.append(mr.SchedLoad(0, m, k, 0x0000, T))
                ops.append(mr.SchedLoad(1, k, n, 0x1000, T))
                ops.append(mr.SchedExecute(m, n, k, 0x0000, 0x1000, acc))
            ops.append(mr.SchedStore(2, m, n, acc, T))
    e.execute(ops)
    assert_close(e.get_tensor("C", 64, 64), a @ b)
    s = e.stats()
    assert (s.loads, s.executes, s.stores) == (16, 8, 4)


@pytest.mark.parametrize("m, k, n", [(96, 64, 128), (48, 80, 40), (1, 33, 70)])
def test_multi_tile_outputs_with_padded_edges(mode, m, k, n):
    rng = np.random.default_rng(7)
    a, b = rand(rng, m, k), rand(rng, k, n)
    e = abc_engine(mode, a, b)
    e.execute(matmul_ops(0, 1, 2, m, k, n))
    assert_close(e.get_tensor("C", m, n), a @ b)


# ----------------------------------------------------------------- ReLU
def test_relu_on_store_zeros_negatives(mode):
    e = abc_engine(mode, np.ones((32, 32), np.float32), np.full((32, 32), -1.0, np.float32))
    e.execute(single_tile_ops(relu=True))
    assert_same_bits(e.get_tensor("C", 32, 32), np.zeros((32, 32), np.float32), "relu(-32)")


def test_relu_on_store_keeps_positives(mode):
    a = np.eye(32, dtype=np.float32) * 5.0
    e = abc_engine(mode, a, np.eye(32, dtype=np.float32))
    e.execute(single_tile_ops(relu=True))
    assert_same_bits(e.get_tensor("C", 32, 32), a, "relu(5 I)")


def test_relu_on_store_mixed_signs(mode):
    rng = np.random.default_rng(8)
    a, b = rand(rng, 64, 64), rand(rng, 64, 64)
    e = abc_engine(mode, a, b)
    e.execute(matmul_ops(0, 1, 2, 64, 64, 64, relu=True))
    got = e.get_tensor("C", 64, 64)
    assert_close(got, np.maximum(a @ b, 0))
    assert np.all(got >= 0) and np.count_nonzero(got == 0) > 0


# ------------------------------------------------- schedule shapes
def test_loads_ahead_of_exec(mode):
    """Every LOAD first (each tile at its own address), then every EXEC, then the STOREs."""
    rng = np.random.default_rng(9)
    a, b = rand(rng, 64, 96), rand(rng, 96, 64)
    e = abc_engine(mode, a, b)
    addr = {}
    loads = []
    for name, tid, rows, cols in (("A", 0, 2, 3), ("B", 1, 3, 2)):
        for r in range(rows):
            for c in range(cols):
                addr[name, r, c] = len(loads) * T
                loads.append(mr.SchedLoad(tid, r, c, addr[name, r, c], T))
    acc0 = len(loads) * T
    execs, stores = [], []
    for m in range(2):
        for n in range(2):
            acc = acc0 + (m * 2 + n) * T
            for k in range(3):
                execs.append(mr.SchedExecute(m, n, k, addr["A", m, k], addr["B", k, n], acc))
            stores.append(mr.SchedStore(2, m, n, acc, T))
    e.execute(loads + execs + stores)
    assert_close(e.get_tensor("C", 64, 64), a @ b)


def test_ping_pong_buffer_tags_match_untagged(mode):
    """Operands alternating between two slots (buffer = k % 2) give the same
    bits as one reused slot with no tags."""
    rng = np.random.default_rng(10)
    a, b = rand(rng, 64, 128), rand(rng, 128, 96)
    results = []
    for double_buffer in (True, False):
        e = abc_engine(mode, a, b)
        ops = matmul_ops(0, 1, 2, 64, 128, 96, double_buffer=double_buffer)
        assert {op.buffer for op in ops if not isinstance(op, mr.SchedStore)} == ({0, 1} if double_buffer else {-1})
        e.execute(ops)
        results.append(e.get_tensor("C", 64, 96))
    assert_close(results[0], a @ b)
    assert_same_bits(results[0], results[1], "ping/pong vs one slot")


def test_sram_address_reuse(mode):
    """One address for every A tile, one for every B tile, one accumulator
    reused for every output tile after its STORE, in a small SRAM."""
    rng = np.random.default_rng(11)
    a, b = rand(rng, 96, 64), rand(rng, 64, 96)
    e = abc_engine(mode, a, b, sram_bytes=3 * T)
    ops = []
    for m in range(3):
        for n in range(3):
            for k in range(2):
                ops += [mr.SchedLoad(0, m, k, 0, T), mr.SchedLoad(1, k, n, T, T), mr.SchedExecute(m, n, k, 0, T, 2 * T)]
            ops.append(mr.SchedStore(2, m, n, 2 * T, T))
    e.execute(ops)
    assert_close(e.get_tensor("C", 96, 96), a @ b)


def test_addresses_aligned_to_64_but_not_to_a_tile(mode):
    a = rand(np.random.default_rng(12), 32, 32)
    e = abc_engine(mode, a, np.eye(32, dtype=np.float32))
    e.execute(
        [
            mr.SchedLoad(0, 0, 0, 64, T),
            mr.SchedLoad(1, 0, 0, 2 * T + 128, T),
            mr.SchedExecute(0, 0, 0, 0, 2 * T + 128, 4 * T + 192),
            mr.SchedStore(2, 0, 0, 4 * T + 192, T),
        ]
    )
    # A landed 16 floats after address 0: the EXEC read 16 zeros, then A.
    shifted = np.concatenate([np.zeros(16, np.float32), a.ravel()[:-16]]).reshape(32, 32)
    assert_same_bits(e.get_tensor("C", 32, 32), shifted, "shifted A . I")


def test_exec_before_its_load_reads_zeros(mode):
    """An EXEC whose operand is loaded only after it reads SRAM that nothing
    wrote in this execute: zeros (libcllm's defined behaviour, not an
    error), so the product is zero; no crash, no hang."""
    rng = np.random.default_rng(13)
    e = abc_engine(mode, rand(rng, 32, 32), rand(rng, 32, 32))
    e.set_tensor("C", np.full((32, 32), 7.0, np.float32))
    e.execute(
        [
            mr.SchedExecute(0, 0, 0, 0, T, 2 * T),
            mr.SchedLoad(0, 0, 0, 0, T),
            mr.SchedLoad(1, 0, 0, T, T),
            mr.SchedStore(2, 0, 0, 2 * T, T),
        ]
    )
    assert_same_bits(e.get_tensor("C", 32, 32), np.zeros((32, 32), np.float32), "EXEC before its LOADs")


def test_tensors_registered_between_executes(mode):
    rng = np.random.default_rng(14)
    a, b = rand(rng, 32, 32), rand(rng, 32, 32)
    e = abc_engine(mode, a, b)
    e.execute(single_tile_ops())
    assert e.register_tensor("D", 32, 32) == 3
    e.execute(single_tile_ops(c=3))
    assert_same_bits(e.get_tensor("D", 32, 32), e.get_tensor("C", 32, 32), "D == C")


def test_empty_schedule_is_a_no_op(mode):
    e = make_engine(mode)
    e.register_tensor("A", 32, 32)
    e.execute([])
    e.execute(())
    s = e.stats()
    assert (s.loads, s.executes, s.stores) == (0, 0, 0)


# ------------------------------------------------------------------- MLP
def test_reference_mlp_from_the_builder(mode):
    ops, info = mlp_builder_ops()
    assert (info["ops"], info["loads"], info["executes"], info["stores"]) == (99, 39, 44, 16)
    assert info["peak_sram_bytes"] == 52 * 1024
    assert len(ops) == 99
    inp = mlp_inputs()
    e = mlp_engine(mode, inp)
    e.execute(ops)
    assert_close(e.get_tensor("out", 128, 32), mlp_reference(inp))
    s = e.stats()
    assert (s.loads, s.executes, s.stores) == (39, 44, 16)


def test_reference_mlp_from_a_python_schedule(mode):
    inp = mlp_inputs(7)
    e = mlp_engine(mode, inp)
    e.execute(mlp_python_ops())
    want = mlp_reference(inp)
    assert_close(e.get_tensor("out", 128, 32), want)
    assert_close(e.get_tensor("h1", 128, 64), np.maximum(0, inp["x"] @ inp["w1"]))


def test_single_layer_matmul_relu(mode):
    rng = np.random.default_rng(15)
    x, w = rand(rng, 32, 32), rand(rng, 32, 32)
    e = abc_engine(mode, x, w)
    e.execute(matmul_ops(0, 1, 2, 32, 32, 32, relu=True))
    assert_close(e.get_tensor("C", 32, 32), np.maximum(0, x @ w))


# ------------------------------------------------------------------ stats
def test_stats_count_accumulate_and_reset(mode):
    e = abc_engine(mode, np.zeros((32, 32), np.float32), np.zeros((32, 32), np.float32))
    e.execute(single_tile_ops())
    s = e.stats()
    assert (s.loads, s.executes, s.stores) == (2, 1, 1)
    e.execute(single_tile_ops())
    s = e.stats()
    assert (s.loads, s.executes, s.stores) == (4, 2, 2)
    assert s.total_ns > 0
    e.reset_stats()
    s = e.stats()
    assert (s.loads, s.executes, s.stores, s.dma_busy_ns, s.compute_busy_ns, s.overlap_ns, s.total_ns) == (0,) * 7


def test_stats_timings_are_consistent(mode):
    ops, _ = mlp_builder_ops()
    e = mlp_engine(mode, mlp_inputs())
    for _ in range(50):
        e.execute(ops)
    s = e.stats()
    assert (s.loads, s.executes, s.stores) == (50 * 39, 50 * 44, 50 * 16)
    assert s.total_ns > 0 and s.dma_busy_ns > 0 and s.compute_busy_ns > 0
    assert s.overlap_ns <= min(s.dma_busy_ns, s.compute_busy_ns)
    if not mode[1]:
        assert s.overlap_ns == 0 and s.dma_stalls == 0 and s.compute_stalls == 0


# ------------------------------------------------------------------ trace
def test_trace_has_one_event_per_op(mode, tmp_path):
    ops, _ = mlp_builder_ops()
    e = make_engine(mode, trace=True)
    for name, shape in zip(MLP_NAMES, MLP_SHAPES):
        e.register_tensor(name, *shape)
    e.execute(ops)
    path = tmp_path / "t.json"
    e.write_trace(path)
    doc = json.loads(path.read_text())
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    per_op = [ev for ev in events if ev.get("ph") == "X" and ev.get("cat") in ("dma", "compute")]
    assert sorted(ev["args"]["op"] for ev in per_op) == list(range(len(ops)))
    assert sum(ev["cat"] == "compute" for ev in per_op) == 44
