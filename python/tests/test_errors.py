"""Errors map like the original module, carry libcllm's message, never crash
or hang (in every mode), change no tensor, and leave the engine usable:

    address / tensor id / tile out of range  -> IndexError
    other bad schedules, names, shapes       -> ValueError
    anything else (trace, files)             -> RuntimeError
    wrong argument types                     -> TypeError
"""

import numpy as np
import pytest

import mini_runtime as mr

from conftest import MODES, T, make_engine, rand

SRAM = 64 * 1024
SENTINEL = np.full((32, 32), 7.5, np.float32)


def engine_with_abc(mode):
    """A (32x64: 1x2 tiles), B (64x32: 2x1 tiles), C (32x32) in a 64 KiB SRAM; C holds SENTINEL."""
    e = make_engine(mode, SRAM)
    rng = np.random.default_rng(30)
    for name, shape in (("A", (32, 64)), ("B", (64, 32)), ("C", (32, 32))):
        e.register_tensor(name, *shape)
    e.set_tensor("A", rand(rng, 32, 64))
    e.set_tensor("B", rand(rng, 64, 32))
    e.set_tensor("C", SENTINEL)
    return e


def good_ops():
    """C = A . B (two k steps), stored to C."""
    return [
        mr.SchedLoad(0, 0, 0, 0, T),
        mr.SchedLoad(1, 0, 0, T, T),
        mr.SchedExecute(0, 0, 0, 0, T, 2 * T),
        mr.SchedLoad(0, 0, 1, 0, T),
        mr.SchedLoad(1, 1, 0, T, T),
        mr.SchedExecute(0, 0, 1, 0, T, 2 * T),
        mr.SchedStore(2, 0, 0, 2 * T, T),
    ]


# (id, bad op(s) appended after good_ops(), exception, text in the message
#  [, index of the rejected op within the bad ops])
BAD_SCHEDULES = [
    ("bad tensor id (LOAD)", [mr.SchedLoad(7, 0, 0, 0, T)], IndexError, "tensor id 7"),
    ("bad tensor id (STORE)", [mr.SchedStore(3, 0, 0, 2 * T, T)], IndexError, "tensor id 3"),
    ("tile row out of range", [mr.SchedLoad(0, 1, 0, 0, T)], IndexError, "tile (1, 0)"),
    ("tile col out of range", [mr.SchedLoad(0, 0, 2, 0, T)], IndexError, "tile (0, 2)"),
    ("store tile out of range", [mr.SchedStore(2, 0, 1, 2 * T, T)], IndexError, "tile (0, 1)"),
    ("LOAD outside SRAM", [mr.SchedLoad(0, 0, 0, SRAM, T)], IndexError, "outside SRAM"),
    ("LOAD running past SRAM", [mr.SchedLoad(0, 0, 0, SRAM - 64, T)], IndexError, "outside SRAM"),
    ("EXEC operand outside SRAM", [mr.SchedExecute(0, 0, 0, 2**32 - 64, T, 3 * T)], IndexError, "outside SRAM"),
    ("EXEC accumulator outside SRAM", [mr.SchedExecute(0, 0, 0, 0, T, SRAM)], IndexError, "outside SRAM"),
    ("misaligned LOAD", [mr.SchedLoad(0, 0, 0, 32, T)], ValueError, "multiple of 64"),
    ("misaligned EXEC", [mr.SchedExecute(0, 0, 0, 0, T + 4, 3 * T)], ValueError, "multiple of 64"),
    ("misaligned STORE", [mr.SchedStore(2, 0, 0, 2 * T + 1, T)], ValueError, "multiple of 64"),
    ("LOAD bytes not a tile", [mr.SchedLoad(0, 0, 0, 0, 2048)], ValueError, "bytes"),
    ("STORE bytes not a tile", [mr.SchedStore(2, 0, 0, 2 * T, 0)], ValueError, "bytes"),
    ("STORE of a never-computed accumulator", [mr.SchedStore(2, 0, 0, 5 * T, T)], ValueError, "no accumulator"),
    (
        "LOAD over an open accumulator",
        [mr.SchedExecute(0, 0, 0, 0, T, 4 * T), mr.SchedLoad(0, 0, 0, 4 * T, T), mr.SchedStore(2, 0, 0, 4 * T, T)],
        ValueError,
        "accumulator",
        1,
    ),
    (
        "EXEC reading an open accumulator",
        [mr.SchedExecute(0, 0, 0, 0, T, 4 * T), mr.SchedExecute(0, 0, 0, 4 * T, T, 5 * T)],
        ValueError,
        "accumulator",
        1,
    ),
    ("EXEC operand overlapping its accumulator", [mr.SchedExecute(0, 0, 0, 0, T, 0)], ValueError, "accumulator"),
]


@pytest.mark.parametrize("case", BAD_SCHEDULES, ids=[c[0] for c in BAD_SCHEDULES])
def test_bad_schedule_raises_changes_nothing_and_engine_stays_usable(mode, case):
    name, bad, exc, text = case[:4]
    bad_index = len(good_ops()) + (case[4] if len(case) > 4 else 0)
    e = engine_with_abc(mode)
    ops = good_ops() + bad
    with pytest.raises(exc) as info:
        e.execute(ops)
    msg = str(info.value)
    assert text in msg, msg
    assert "op %d (" % bad_index in msg, msg  # names the bad op
    if exc is IndexError:
        assert not isinstance(info.value, ValueError)
    # Validation runs before anything moves: C still holds its sentinel.
    np.testing.assert_array_equal(e.get_tensor("C", 32, 32), SENTINEL)
    assert e.stats().executes == 0
    # The same bad schedule again (its plan is not cached), then a good one.
    with pytest.raises(exc):
        e.execute(ops)
    e.execute(good_ops())
    a, b = e.get_tensor("A", 32, 64), e.get_tensor("B", 64, 32)
    np.testing.assert_allclose(e.get_tensor("C", 32, 32), a @ b, rtol=1e-4, atol=1e-5)


def test_alternating_bad_and_good_schedules(mode):
    e = engine_with_abc(mode)
    a, b = e.get_tensor("A", 32, 64), e.get_tensor("B", 64, 32)
    good = good_ops()
    single = [c[1][0] for c in BAD_SCHEDULES if len(c[1]) == 1]
    for i in range(200):
        bad = good + [single[i % len(single)]]
        with pytest.raises((IndexError, ValueError)):
            e.execute(bad)
        e.execute(good)
    np.testing.assert_allclose(e.get_tensor("C", 32, 32), a @ b, rtol=1e-4, atol=1e-5)
    assert e.stats().executes == 200 * 2


# ------------------------------------------------------- tensor calls
def assert_value_errors(call, cases):
    """call(*args) raises ValueError for each (args, match) of cases, with a
    message that matches `match` (any message when it is None)."""
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            call(*args)


def test_set_tensor_errors(mode):
    e = engine_with_abc(mode)
    assert_value_errors(
        e.set_tensor,
        [
            (("C", np.zeros((32, 31), np.float32)), "32x32"),
            (("D", np.zeros((32, 32), np.float32)), "not registered"),
            (("C", np.zeros(1024, np.float32)), "2D"),
            (("C", np.zeros((32, 32, 1), np.float32)), "2D"),
            (("C\0x", SENTINEL), None),
        ],
    )
    np.testing.assert_array_equal(e.get_tensor("C", 32, 32), SENTINEL)


def test_get_tensor_errors(mode):
    e = engine_with_abc(mode)
    assert_value_errors(
        e.get_tensor,
        [
            (("C", 32, 16), "is 32x32"),
            (("C", 0, 0), "is 32x32"),
            (("D", 32, 32), "not registered"),
            # A huge wrong shape is refused before anything is allocated.
            (("C", 2**40, 2**40), "is 32x32"),
            (("D", 2**40, 2**40), "not registered"),
        ],
    )


def test_register_tensor_errors(mode):
    e = engine_with_abc(mode)
    assert_value_errors(
        e.register_tensor,
        [
            (("A", 32, 32), "already registered"),
            (("", 32, 32), "empty"),
            (("Z", 0, 32), None),
            (("Z", 32, 0), None),
            (("Z", 2**40, 2**40), None),
            (("Z\0", 1, 1), None),
            (("\ud800", 1, 1), None),  # not encodable as UTF-8
        ],
    )
    # None of those used an id.
    assert e.register_tensor("Z", 1, 1) == 3


@pytest.mark.parametrize(
    "sram_bytes, compute_threads",
    [(0, 1), (4095, 1), (2**32 + 4096, 1), (2**64 - 1, 1), (SRAM, 0), (SRAM, 9), (SRAM, 2**32 - 1)],
)
@pytest.mark.parametrize("threaded", [False, True])
def test_bad_config_is_a_value_error(sram_bytes, compute_threads, threaded):
    cfg = mr.EngineConfig(sram_bytes=sram_bytes, compute_threads=compute_threads, threaded=threaded)
    with pytest.raises(ValueError):
        mr.Engine(cfg)


def test_config_edges_are_fine():
    e = mr.Engine(mr.EngineConfig(sram_bytes=4096, threaded=True, compute_threads=8))
    assert e.sram_bytes == 4096


def test_trace_errors_are_runtime_errors(mode, tmp_path):
    e = engine_with_abc(mode)
    e.execute(good_ops())
    with pytest.raises(RuntimeError, match="trace"):
        e.write_trace(tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()
    traced = make_engine(mode, SRAM, trace=True)
    for name in "ABC":
        traced.register_tensor(name, 32, 32)
    traced.execute([mr.SchedLoad(0, 0, 0, 0, T)])
    with pytest.raises(RuntimeError):
        traced.write_trace(tmp_path / "no" / "such" / "dir" / "t.json")
    with pytest.raises(ValueError):
        traced.write_trace("a\0b.json")


# ---------------------------------------------------------- type errors
@pytest.mark.parametrize(
    "schedule",
    [None, 42, "LOAD", mr.SchedLoad(0, 0, 0, 0, T), {mr.SchedLoad(0, 0, 0, 0, T)}, np.zeros(3)],
    ids=["None", "int", "str", "an op", "set", "ndarray"],
)
def test_execute_rejects_a_non_list(schedule):
    e = engine_with_abc(MODES[0])
    with pytest.raises(TypeError):
        e.execute(schedule)


@pytest.mark.parametrize(
    "element",
    [1, None, "op", (0, 0, 0, 0, T), [mr.SchedLoad(0, 0, 0, 0, T)], np.zeros((2, 2)), object()],
    ids=["int", "None", "str", "tuple", "nested list", "ndarray", "object"],
)
def test_execute_rejects_a_non_op_element(mode, element):
    """TypeError, and also ValueError as the original raised; nothing runs."""
    e = engine_with_abc(mode)
    ops = good_ops()
    e.execute(ops)  # the cached packing of ops must not mask the bad element
    e.set_tensor("C", SENTINEL)
    e.reset_stats()
    bad = ops + [element]
    with pytest.raises(TypeError, match="invalid operation type") as info:
        e.execute(bad)
    assert isinstance(info.value, ValueError)
    with pytest.raises(TypeError):
        e.execute([element] + ops)
    np.testing.assert_array_equal(e.get_tensor("C", 32, 32), SENTINEL)
    assert e.stats().loads == 0


def test_execute_cache_sees_list_changes(mode):
    """The same list object, changed in place, is packed again."""
    e = engine_with_abc(mode)
    ops = good_ops()
    e.execute(ops)
    ops[0] = mr.SchedLoad(9, 0, 0, 0, T)
    with pytest.raises(IndexError, match="tensor id 9"):
        e.execute(ops)
    ops[0] = mr.SchedLoad(0, 0, 0, 0, T)
    e.execute(ops)
    ops.append("junk")
    with pytest.raises(TypeError):
        e.execute(ops)
    ops.pop()
    ops.append(mr.SchedLoad(0, 0, 0, SRAM, T))
    with pytest.raises(IndexError):
        e.execute(ops)


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.register_tensor(1, 2, 3),
        lambda e: e.register_tensor("Z", -1, 3),
        lambda e: e.register_tensor("Z", 2.0, 3),
        lambda e: e.register_tensor("Z", 2, None),
        lambda e: e.register_tensor("Z", 2),
        lambda e: e.set_tensor("C", None),
        lambda e: e.set_tensor("C", "abc"),
        lambda e: e.set_tensor("C", [["a"] * 32] * 32),
        lambda e: e.set_tensor("C", np.zeros((32, 32), np.complex64)),
        lambda e: e.set_tensor(None, SENTINEL),
        lambda e: e.set_tensor(["C"], SENTINEL),
        lambda e: e.get_tensor("C", "32", 32),
        lambda e: e.get_tensor("C", 32, -32),
        lambda e: e.get_tensor(b"C".decode, 32, 32),
        lambda e: e.get_tensor("C", 32),
        lambda e: e.write_trace(123),
        lambda e: e.write_trace(None),
        lambda e: e.execute(),
        lambda e: e.stats(1),
    ],
)
def test_wrong_argument_types_are_type_errors(call):
    e = engine_with_abc(MODES[0])
    with pytest.raises(TypeError):
        call(e)
    np.testing.assert_array_equal(e.get_tensor("C", 32, 32), SENTINEL)


@pytest.mark.parametrize("config", [42, "threaded", {"sram_bytes": 4096}, mr.EngineStats()])
def test_engine_rejects_a_non_config(config):
    with pytest.raises(TypeError):
        mr.Engine(config)


# ------------------------------------------------------------- kernels
def tile(value=0.0):
    return np.full((32, 32), value, np.float32)


def test_tile_bench_shape_errors_as_the_original():
    z16 = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match="32x32"):
        mr.matmul_tile_bench(z16, z16, z16)
    with pytest.raises(ValueError, match="2D"):
        mr.matmul_tile_bench(tile(), np.zeros((32, 32, 1), np.float32), tile())
    with pytest.raises(ValueError, match="32x32"):
        mr.relu_tile_bench(np.zeros((32, 16), np.float32), mr.KernelImpl.Reference)
    with pytest.raises(ValueError, match="2D"):
        mr.relu_tile_bench(np.zeros(1024, np.float32), mr.KernelImpl.Reference)


def test_tile_bench_in_place_output_must_be_float32_contiguous_writable():
    a, b = tile(1.0), tile(1.0)
    with pytest.raises(TypeError):
        mr.matmul_tile_bench(np.zeros((32, 32)), a, b)  # float64 C
    with pytest.raises(TypeError):
        mr.matmul_tile_bench(tile().tolist(), a, b)  # a list cannot be updated in place
    with pytest.raises(ValueError):
        mr.matmul_tile_bench(np.zeros((32, 64), np.float32)[:, ::2], a, b)  # strided C
    ro = tile()
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        mr.relu_tile_bench(ro)


def test_tile_bench_aliasing_and_bad_impl():
    c = tile(1.0)
    with pytest.raises(ValueError, match="overlap"):
        mr.matmul_tile_bench(c, c, tile(1.0))  # libcllm refuses C overlapping A
    with pytest.raises(ValueError):
        mr.matmul_tile_bench(tile(), tile(), tile(), 7)
    with pytest.raises(TypeError):
        mr.matmul_tile_bench(tile(), tile(), tile(), "AVX2")
    with pytest.raises(TypeError):
        mr.relu_tile_bench(tile(), 1.0)
    with pytest.raises(TypeError):
        mr.matmul_tile_bench(tile(), None, tile())
    with pytest.raises(TypeError):
        mr.matmul_tile_bench(tile(), tile())
