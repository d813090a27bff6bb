"""Every item of the original module's surface exists and behaves like the
pybind11 original: constants, EngineConfig, EngineStats, the three op
classes, Engine's members, KernelImpl and the kernel functions. Also: the
op packing matches the C ABI's MrOp, and the package carries libcllm."""

import copy
import ctypes
import os
import pickle

import numpy as np
import pytest

import mini_runtime as mr
from mini_runtime import _native

from conftest import T, single_tile_ops, make_engine, MODES

# The original module's surface, by kind (literal: the package must match it).
ORIGINAL_CONSTANTS = ("TILE_DIM", "TILE_BYTES", "ALIGNMENT")
ORIGINAL_CLASSES = ("EngineConfig", "EngineStats", "SchedLoad", "SchedExecute", "SchedStore", "Engine", "KernelImpl")
ORIGINAL_FUNCTIONS = ("is_avx2_available", "get_active_kernel_name", "matmul_tile_bench", "relu_tile_bench")
ORIGINAL_SURFACE = ORIGINAL_CONSTANTS + ORIGINAL_CLASSES + ORIGINAL_FUNCTIONS


def test_original_surface_is_exported():
    for name in ORIGINAL_SURFACE:
        assert hasattr(mr, name), name
    assert sorted(mr.__all__) == sorted(ORIGINAL_SURFACE)
    assert all(isinstance(getattr(mr, name), type) for name in ORIGINAL_CLASSES)
    assert all(callable(getattr(mr, name)) for name in ORIGINAL_FUNCTIONS)
    for name in ("register_tensor", "set_tensor", "get_tensor", "execute", "stats", "reset_stats", "write_trace"):
        assert callable(getattr(mr.Engine, name)), name
    assert isinstance(mr.Engine.sram_bytes, property)


def test_constants():
    assert (mr.TILE_DIM, mr.TILE_BYTES, mr.ALIGNMENT) == (32, 4096, 64)
    assert mr.TILE_BYTES == mr.TILE_DIM * mr.TILE_DIM * 4
    assert all(type(v) is int for v in (mr.TILE_DIM, mr.TILE_BYTES, mr.ALIGNMENT))


def test_version_matches_the_library():
    assert mr.__version__ == _native.lib.cllm_version().decode()


def test_package_bundles_libcllm():
    """The library is the one next to the package (unless overridden)."""
    if os.environ.get("MINI_RUNTIME_LIBCLLM"):
        pytest.skip("MINI_RUNTIME_LIBCLLM overrides the bundled library")
    pkg_dir = os.path.dirname(os.path.abspath(mr.__file__))
    assert os.path.dirname(_native.library_path) == pkg_dir
    assert os.path.basename(_native.library_path) == _native.LIBRARY_NAME


# ------------------------------------------------------------- EngineConfig
def test_engine_config_defaults_and_mutation():
    cfg = mr.EngineConfig()
    assert (cfg.sram_bytes, cfg.trace, cfg.threaded, cfg.compute_threads) == (256 * 1024, False, False, 1)
    cfg.sram_bytes = 64 * 1024
    cfg.trace = True
    cfg.threaded = True
    cfg.compute_threads = 2
    assert (cfg.sram_bytes, cfg.trace, cfg.threaded, cfg.compute_threads) == (64 * 1024, True, True, 2)
    assert repr(cfg) == "EngineConfig(sram_bytes=65536, trace=True, threaded=True, compute_threads=2)"
    kw = mr.EngineConfig(sram_bytes=8192, threaded=True)
    assert (kw.sram_bytes, kw.threaded, kw.trace, kw.compute_threads) == (8192, True, False, 1)


def test_engine_config_accepts_what_pybind11_converted():
    cfg = mr.EngineConfig()
    cfg.sram_bytes = np.int64(4096)
    assert cfg.sram_bytes == 4096 and type(cfg.sram_bytes) is int
    cfg.threaded = 1
    assert cfg.threaded is True
    cfg.threaded = np.bool_(False)
    assert cfg.threaded is False
    cfg.trace = None
    assert cfg.trace is False


@pytest.mark.parametrize(
    "field, value",
    [
        ("sram_bytes", "big"),
        ("sram_bytes", 1.5),
        ("sram_bytes", -1),
        ("sram_bytes", 2**64),
        ("sram_bytes", None),
        ("compute_threads", -1),
        ("compute_threads", 2**32),
        ("compute_threads", 2.0),
        ("threaded", "yes"),
        ("trace", [True]),
    ],
)
def test_engine_config_rejects_wrong_types(field, value):
    cfg = mr.EngineConfig()
    with pytest.raises(TypeError):
        setattr(cfg, field, value)


def test_engine_config_has_no_other_attributes_and_no_positional_args():
    cfg = mr.EngineConfig()
    with pytest.raises(AttributeError):
        cfg.sram_size = 1
    with pytest.raises(TypeError):
        mr.EngineConfig(1024)


# -------------------------------------------------------------- EngineStats
def test_engine_stats_fields_are_read_only_and_repr_is_readable():
    e = make_engine(MODES[0], 64 * 1024)
    for name in "ABC":
        e.register_tensor(name, 32, 32)
    e.execute(single_tile_ops())
    s = e.stats()
    assert isinstance(s, mr.EngineStats)
    assert (s.loads, s.executes, s.stores) == (2, 1, 1)
    for f in ("dma_busy_ns", "compute_busy_ns", "overlap_ns", "total_ns", "dma_stalls", "compute_stalls"):
        assert isinstance(getattr(s, f), int) and getattr(s, f) >= 0
    assert s.total_ns > 0
    for f in ("loads", "executes", "stores", "total_ns", "overlap_ns"):
        with pytest.raises(AttributeError):
            setattr(s, f, 0)
    r = repr(s)
    assert r.startswith("EngineStats(loads=2, executes=1, stores=1, dma_busy_ns=")
    assert "overlap_ns=" in r and "total_ns=" in r and r.endswith(")")
    again = pickle.loads(pickle.dumps(s))
    assert repr(again) == r


# ---------------------------------------------------------------------- ops
def test_sched_load_positional_keyword_default_and_read_only():
    op = mr.SchedLoad(1, 2, 3, 64, T)
    assert (op.tensor_id, op.tile_row, op.tile_col, op.dst_addr, op.bytes, op.buffer) == (1, 2, 3, 64, T, -1)
    op = mr.SchedLoad(tensor_id=1, tile_row=2, tile_col=3, dst_addr=64, bytes=T, buffer=1)
    assert op.buffer == 1
    assert repr(op) == "SchedLoad(tensor_id=1, tile_row=2, tile_col=3, dst_addr=64, bytes=4096, buffer=1)"
    for f in ("tensor_id", "tile_row", "tile_col", "dst_addr", "bytes", "buffer"):
        with pytest.raises(AttributeError):
            setattr(op, f, 0)
    with pytest.raises(AttributeError):
        op.other = 1


def test_sched_execute_positional_keyword_default_and_read_only():
    op = mr.SchedExecute(1, 2, 3, 0, T, 2 * T)
    assert (op.m, op.n, op.k, op.a_addr, op.b_addr, op.acc_addr, op.buffer) == (1, 2, 3, 0, T, 2 * T, -1)
    op = mr.SchedExecute(m=0, n=0, k=1, a_addr=64, b_addr=128, acc_addr=192, buffer=0)
    assert (op.k, op.a_addr, op.b_addr, op.acc_addr, op.buffer) == (1, 64, 128, 192, 0)
    assert repr(op) == "SchedExecute(m=0, n=0, k=1, a_addr=64, b_addr=128, acc_addr=192, buffer=0)"
    for f in ("m", "n", "k", "a_addr", "b_addr", "acc_addr", "buffer"):
        with pytest.raises(AttributeError):
            setattr(op, f, 0)


def test_sched_store_positional_keyword_default_and_read_only():
    op = mr.SchedStore(2, 0, 1, 2 * T, T)
    assert (op.tensor_id, op.tile_row, op.tile_col, op.src_addr, op.bytes, op.apply_relu) == (2, 0, 1, 2 * T, T, False)
    op = mr.SchedStore(tensor_id=2, tile_row=0, tile_col=1, src_addr=0, bytes=T, apply_relu=True)
    assert op.apply_relu is True
    assert mr.SchedStore(0, 0, 0, 0, T, 1).apply_relu is True
    assert mr.SchedStore(0, 0, 0, 0, T, np.bool_(True)).apply_relu is True
    assert repr(op) == "SchedStore(tensor_id=2, tile_row=0, tile_col=1, src_addr=0, bytes=4096, apply_relu=True)"
    for f in ("tensor_id", "tile_row", "tile_col", "src_addr", "bytes", "apply_relu"):
        with pytest.raises(AttributeError):
            setattr(op, f, 0)


def test_ops_accept_integer_likes_and_keep_python_ints():
    op = mr.SchedLoad(np.uint32(1), np.int64(2), True, np.int16(64), np.uint64(T), np.int8(-1))
    assert (op.tensor_id, op.tile_row, op.tile_col, op.dst_addr, op.bytes, op.buffer) == (1, 2, 1, 64, T, -1)
    assert all(type(v) is int for v in (op.tensor_id, op.tile_row, op.dst_addr, op.buffer))
    edge = mr.SchedExecute(2**32 - 1, 0, 0, 0, 0, 0, -(2**31))
    assert (edge.m, edge.buffer) == (2**32 - 1, -(2**31))


@pytest.mark.parametrize(
    "make",
    [
        lambda: mr.SchedLoad("A", 0, 0, 0, T),
        lambda: mr.SchedLoad(0, 0, 0, 0.0, T),
        lambda: mr.SchedLoad(-1, 0, 0, 0, T),
        lambda: mr.SchedLoad(2**32, 0, 0, 0, T),
        lambda: mr.SchedLoad(0, 0, 0, 0, T, 2**31),
        lambda: mr.SchedLoad(0, 0, 0, 0, T, None),
        lambda: mr.SchedLoad(0, 0, 0, 0),
        lambda: mr.SchedLoad(0, 0, 0, 0, T, -1, 7),
        lambda: mr.SchedExecute(0, 0, 0, 0, 0),
        lambda: mr.SchedExecute(0, 0, -1, 0, T, 2 * T),
        lambda: mr.SchedExecute(0, 0, 0, [0], T, 2 * T),
        lambda: mr.SchedExecute(0, 0, 0, 0, T, 2 * T, 1.0),
        lambda: mr.SchedStore(0, 0, 0, 0, T, "relu"),
        lambda: mr.SchedStore(0, 0, 0, -64, T),
        lambda: mr.SchedStore(0, 0, 0, 0, None),
        lambda: mr.SchedStore(0, 0, 0, 0, T, apply=True),
    ],
)
def test_ops_reject_wrong_types_and_out_of_range_integers(make):
    with pytest.raises(TypeError):
        make()


def test_ops_compare_by_identity_and_pickle():
    a, b = mr.SchedLoad(0, 0, 0, 0, T), mr.SchedLoad(0, 0, 0, 0, T)
    assert a == a and a != b and len({a, b}) == 2
    for op in (
        mr.SchedLoad(1, 2, 3, 64, T, 1),
        mr.SchedExecute(1, 2, 3, 0, T, 2 * T, 0),
        mr.SchedStore(1, 2, 3, 0, T, True),
    ):
        for clone in (pickle.loads(pickle.dumps(op)), copy.copy(op), copy.deepcopy(op)):
            assert type(clone) is type(op) and repr(clone) == repr(op)


def test_op_packing_matches_the_c_abi():
    """Each op's packed bytes equal the MrOp that mr_op_load / _exec / _store build."""
    lib = _native.lib
    assert ctypes.sizeof(_native.MrOp) == 32
    cases = [
        (mr.SchedLoad(1, 2, 3, 64, T, -1), lib.mr_op_load(1, 2, 3, 64, T, -1)),
        (
            mr.SchedLoad(2**32 - 1, 7, 9, 2**32 - 64, 1, 2**31 - 1),
            lib.mr_op_load(2**32 - 1, 7, 9, 2**32 - 64, 1, 2**31 - 1),
        ),
        (mr.SchedExecute(1, 2, 3, 4, 5, 6, 1), lib.mr_op_exec(1, 2, 3, 4, 5, 6, 1)),
        (mr.SchedExecute(0, 0, 0, 0, 0, 2**32 - 1, -(2**31)), lib.mr_op_exec(0, 0, 0, 0, 0, 2**32 - 1, -(2**31))),
        (mr.SchedStore(7, 8, 9, 128, T, True), lib.mr_op_store(7, 8, 9, 128, T, True)),
        (mr.SchedStore(7, 8, 9, 128, T, False), lib.mr_op_store(7, 8, 9, 128, T, False)),
    ]
    for ours, theirs in cases:
        c = bytes(theirs)
        # Compare the meaningful bytes: kind and the payload member (the
        # padding after a smaller member is unspecified in C).
        used = {0: 28, 1: 32, 2: 25}[theirs.kind]
        assert ours._mr[:used] == c[:used], repr(ours)
        assert len(ours._mr) == 32


# ------------------------------------------------------------------- Engine
def test_engine_takes_a_config_and_reports_sram_bytes():
    e = mr.Engine(mr.EngineConfig(sram_bytes=64 * 1024))
    assert e.sram_bytes == 64 * 1024
    with pytest.raises(AttributeError):
        e.sram_bytes = 1
    assert mr.Engine().sram_bytes == 256 * 1024  # the default config
    cfg = mr.EngineConfig()
    cfg.sram_bytes = 8192
    e = mr.Engine(cfg)
    cfg.sram_bytes = 4096  # the engine copied the config
    assert e.sram_bytes == 8192


def test_engine_cannot_be_copied_or_pickled():
    e = mr.Engine()
    for f in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError):
            f(e)
    cfg = pickle.loads(pickle.dumps(mr.EngineConfig(sram_bytes=8192, threaded=True)))
    assert (cfg.sram_bytes, cfg.threaded) == (8192, True)


def test_engine_members_round_trip(mode, tmp_path):
    e = make_engine(mode, 64 * 1024, trace=True)
    assert [e.register_tensor(n, 32, 32) for n in "ABC"] == [0, 1, 2]
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((32, 32)).astype(np.float32), rng.standard_normal((32, 32)).astype(np.float32)
    e.set_tensor("A", a)
    e.set_tensor("B", b)
    got = e.get_tensor("A", 32, 32)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (32, 32)
    assert got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_array_equal(got, a)
    e.execute(single_tile_ops())
    np.testing.assert_allclose(e.get_tensor("C", 32, 32), a @ b, rtol=1e-4, atol=1e-5)
    assert e.stats().executes == 1
    e.reset_stats()
    s = e.stats()
    assert (s.loads, s.executes, s.stores, s.total_ns) == (0, 0, 0, 0)
    path = tmp_path / "trace.json"
    e.write_trace(path)
    e.write_trace(str(path))
    assert path.read_text().lstrip().startswith(("{", "["))


# ------------------------------------------------------------------ kernels
def test_kernel_impl_enum():
    assert [m.name for m in mr.KernelImpl] == ["Reference", "AVX2", "AVX512"]
    assert (int(mr.KernelImpl.Reference), int(mr.KernelImpl.AVX2), int(mr.KernelImpl.AVX512)) == (0, 1, 2)
    assert str(mr.KernelImpl.AVX2) == "KernelImpl.AVX2"
    assert mr.KernelImpl.AVX2.value == 1 and mr.KernelImpl["AVX2"] is mr.KernelImpl.AVX2


def test_kernel_queries():
    assert isinstance(mr.is_avx2_available(), bool)
    name = mr.get_active_kernel_name()
    assert name in ("Reference", "AVX2+FMA", "AVX-512")
    if name != "Reference":
        assert mr.is_avx2_available()
    if not mr.is_avx2_available():
        assert name == "Reference"


def test_tile_bench_functions_exist_with_the_original_signatures():
    c = np.zeros((32, 32), np.float32)
    a = np.eye(32, dtype=np.float32)
    b = np.arange(1024, dtype=np.float32).reshape(32, 32) - 512
    assert mr.matmul_tile_bench(c, a, b, mr.KernelImpl.Reference) is None
    mr.matmul_tile_bench(C=c, A=a, B=b)  # auto-dispatch, keyword names of the original
    np.testing.assert_array_equal(c, 2 * b)
    assert mr.relu_tile_bench(c, mr.KernelImpl.Reference) is None
    np.testing.assert_array_equal(c, np.maximum(2 * b, 0))
    mr.relu_tile_bench(C=c, impl=mr.KernelImpl.AVX2)


def test_the_original_compiler_wrapper_flow():
    """The calls the original compiler's Runtime wrapper makes, in its order:
    a mutated EngineConfig, shapes passed as tuple elements, ops built
    positionally with an explicit buffer / apply_relu, stats() and the
    sram_bytes property."""
    config = mr.EngineConfig()
    config.sram_bytes = 64 * 1024
    config.threaded = True
    engine = mr.Engine(config)
    shapes = {"x": (32, 64), "w": (64, 32), "y": (32, 32)}
    ids = {name: engine.register_tensor(name, shape[0], shape[1]) for name, shape in shapes.items()}
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(shapes["x"]), rng.standard_normal(shapes["w"])  # float64: converted
    engine.set_tensor("x", np.ascontiguousarray(x, dtype=np.float32))
    engine.set_tensor("w", w)
    cpp_ops = []
    for k in range(2):
        cpp_ops.append(mr.SchedLoad(ids["x"], 0, k, (k % 2) * T, T, k % 2))
        cpp_ops.append(mr.SchedLoad(ids["w"], k, 0, (2 + k % 2) * T, T, k % 2))
        cpp_ops.append(mr.SchedExecute(0, 0, k, (k % 2) * T, (2 + k % 2) * T, 4 * T, k % 2))
    cpp_ops.append(mr.SchedStore(ids["y"], 0, 0, 4 * T, T, "relu" == "relu"))
    engine.execute(cpp_ops)
    y = engine.get_tensor("y", shapes["y"][0], shapes["y"][1])
    np.testing.assert_allclose(y, np.maximum(0, x.astype(np.float32) @ w.astype(np.float32)), rtol=1e-4, atol=1e-5)
    assert engine.stats().executes == 2 and engine.sram_bytes == 64 * 1024
