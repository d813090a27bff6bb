"""mini_runtime: the tiled matmul engine ("virtual accelerator") of libcllm.

A drop-in replacement for the original pybind11 extension module of the
same name: the same classes, functions and constants, driven through the
libcllm C ABI (include/mini_runtime.h) with ctypes. The shared library is
bundled in this package when pip builds it.

Errors raised by libcllm carry its message (cllm_last_error()) and map as in
the original module:

    MR_ERR_OUT_OF_RANGE (addresses, tensor ids, tile coordinates) -> IndexError
    MR_ERR_INVALID_ARGUMENT (other bad schedules, names, shapes)  -> ValueError
    anything else (no trace, files, threads)                      -> RuntimeError

Arguments of the wrong type raise TypeError, as do integers outside the
range of their C type (as pybind11 did). A schedule element that is not a
SchedLoad / SchedExecute / SchedStore raises TypeError; that exception is
also a ValueError, which is what the original raised for it.

Additions to the original surface: EngineConfig.compute_threads,
EngineConfig keyword arguments, the stall counts and timings in
EngineStats, Engine.write_trace, KernelImpl.AVX512, a default config for
Engine(), tuples for Engine.execute, an optional `impl` of relu_tile_bench,
and __version__. get_active_kernel_name() may also return "AVX-512".
"""

import enum
import operator
import os
import struct

import numpy as np

from . import _native

__version__ = "0.1.0"

__all__ = [
    "TILE_DIM",
    "TILE_BYTES",
    "ALIGNMENT",
    "EngineConfig",
    "EngineStats",
    "SchedLoad",
    "SchedExecute",
    "SchedStore",
    "Engine",
    "KernelImpl",
    "is_avx2_available",
    "get_active_kernel_name",
    "matmul_tile_bench",
    "relu_tile_bench",
]

#: Edge of a tile: tiles are TILE_DIM x TILE_DIM fp32 values.
TILE_DIM = 32
#: Bytes of one tile; the `bytes` field of every LOAD and STORE must be this.
TILE_BYTES = 4096
#: SRAM addresses must be multiples of this.
ALIGNMENT = 64

_lib = _native.lib

# Status codes and selectors of mini_runtime.h.
_MR_ERR_INVALID_ARGUMENT = -1
_MR_ERR_OUT_OF_RANGE = -2
_MR_ERR_SYSTEM = -4
_MR_KERNEL_AUTO = -1
_MR_MAX_COMPUTE_THREADS = 8
_MR_OP_LOAD, _MR_OP_EXEC, _MR_OP_STORE = 0, 1, 2

_U32_MAX = 0xFFFFFFFF
_I32_MIN, _I32_MAX = -0x80000000, 0x7FFFFFFF
_SIZE_MAX = 2 ** (8 * _native.ctypes.sizeof(_native.c_size_t)) - 1

# One MrOp is 32 bytes: `kind` then the payload union (28 bytes), native
# byte order, 4-byte fields, no padding but at the end of the smaller
# members. Every op packs itself once, when it is made; execute() only joins
# the packed bytes.
_OP_SIZE = 32


# --------------------------------------------------------------------- errors
def _last_error(call, status):
    msg = _lib.cllm_last_error()
    if msg:
        return msg.decode("utf-8", "replace")
    return "%s failed with status %d" % (call, status)


def _error(status, call):
    """The exception for a negative MR_ERR_* status, with libcllm's message."""
    text = _last_error(call, status)
    if status == _MR_ERR_OUT_OF_RANGE:
        return IndexError(text)
    if status == _MR_ERR_INVALID_ARGUMENT:
        return ValueError(text)
    return RuntimeError(text)


class _InvalidOpTypeError(TypeError, ValueError):
    """A schedule element that is not an op (TypeError; the original raised ValueError)."""


# ---------------------------------------------------------------- conversions
def _int_in(value, lo, hi, what):
    """An integer (anything with __index__, as pybind11 accepted) in [lo, hi]."""
    if type(value) is not int:
        if isinstance(value, float):
            raise TypeError("%s must be an integer, got float %r" % (what, value))
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError("%s must be an integer, got %s" % (what, type(value).__name__)) from None
    if not lo <= value <= hi:
        raise TypeError("%s must be an integer in [%d, %d], got %d" % (what, lo, hi, value))
    return value


def _to_bool(value, what):
    """A flag: bool, numpy.bool_, None (False) or a real number, as pybind11 accepted."""
    if value is True or value is False:
        return value
    if value is None:
        return False
    if isinstance(value, (int, float, np.bool_, np.integer, np.floating)):
        return bool(value)
    raise TypeError("%s must be a bool, got %s" % (what, type(value).__name__))


def _c_name(name, what="name"):
    """A tensor name as NUL-terminated UTF-8 for the C ABI."""
    if isinstance(name, str):
        b = name.encode("utf-8")  # UnicodeEncodeError is a ValueError
    elif isinstance(name, bytes):
        b = name
    else:
        raise TypeError("%s must be a str, got %s" % (what, type(name).__name__))
    if b"\0" in b:
        raise ValueError("%s contains a NUL character" % what)
    return b


# ------------------------------------------------------------------ constants
class KernelImpl(enum.IntEnum):
    """A tile-kernel implementation (for matmul_tile_bench / relu_tile_bench)."""

    Reference = 0  #: plain loops, always available
    AVX2 = 1  #: AVX2 + FMA
    AVX512 = 2  #: AVX-512F

    # "KernelImpl.AVX2", as the pybind11 enum printed (IntEnum prints "1").
    __str__ = enum.Enum.__str__


def _kernel_code(impl):
    if impl is None:
        return _MR_KERNEL_AUTO
    if isinstance(impl, KernelImpl):
        return int(impl)
    if isinstance(impl, (bool, float)) or not hasattr(impl, "__index__"):
        raise TypeError("impl must be a KernelImpl, got %s" % type(impl).__name__)
    return int(KernelImpl(operator.index(impl)))  # ValueError for an unknown value


# ------------------------------------------------------------- config, stats
def _config_field(name, check, doc):
    """A read-write attribute of EngineConfig, kept in the slot _<name>;
    check(value, what) converts a new value or raises TypeError."""
    slot = "_" + name
    what = "EngineConfig." + name

    def get(self):
        return getattr(self, slot)

    def set_(self, value):
        setattr(self, slot, check(value, what))

    get.__name__ = set_.__name__ = name
    return property(get, set_, doc=doc)


def _int_check(lo, hi):
    return lambda value, what: _int_in(value, lo, hi, what)


class EngineConfig:
    """Engine configuration: mutable sram_bytes, trace, threaded, compute_threads.

    EngineConfig() gives the defaults (256 KiB SRAM, no trace, sequential,
    one compute thread); keyword arguments set fields directly.
    """

    __slots__ = ("_sram_bytes", "_trace", "_threaded", "_compute_threads")

    def __init__(self, *, sram_bytes=256 * 1024, trace=False, threaded=False, compute_threads=1):
        self.sram_bytes = sram_bytes
        self.trace = trace
        self.threaded = threaded
        self.compute_threads = compute_threads

    sram_bytes = _config_field(
        "sram_bytes",
        _int_check(0, _SIZE_MAX),
        "Size of the simulated SRAM in bytes (default 262144; the engine accepts 4096 ..= 2**32).",
    )
    trace = _config_field("trace", _to_bool, "Record per-op timings for Engine.write_trace (default False).")
    threaded = _config_field(
        "threaded", _to_bool, "Pipelined DMA / compute threads instead of the calling thread (default False)."
    )
    compute_threads = _config_field(
        "compute_threads",
        _int_check(0, _U32_MAX),
        "Compute threads in threaded mode (default 1; the engine accepts 1 ..= 8).",
    )

    def __repr__(self):
        return "EngineConfig(sram_bytes=%d, trace=%r, threaded=%r, compute_threads=%d)" % (
            self._sram_bytes,
            self._trace,
            self._threaded,
            self._compute_threads,
        )


def _field_property(index, name, doc):
    """A read-only attribute: field `index` of the object's field tuple."""

    def get(self):
        return self._f[index]

    get.__name__ = name
    return property(get, doc=doc)


class _Record:
    """Immutable fields, held in the tuple self._f and read through read-only
    properties (EngineStats and the ops).

    A subclass lists its fields in _SPEC, in order, as (name, ..., doc)
    each; the properties and _FIELDS (the names) are made from it.
    """

    __slots__ = ("_f",)
    _SPEC = ()
    _FIELDS = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._FIELDS = tuple(field[0] for field in cls._SPEC)
        for index, field in enumerate(cls._SPEC):
            prop = _field_property(index, field[0], field[-1])
            setattr(cls, field[0], prop)
            if hasattr(prop, "__set_name__"):  # Python >= 3.10: errors name the property
                prop.__set_name__(cls, field[0])

    def __repr__(self):
        return "%s(%s)" % (
            type(self).__name__,
            ", ".join("%s=%r" % (n, v) for n, v in zip(self._FIELDS, self._f)),
        )


class EngineStats(_Record):
    """Operation counts and timings (ns) since the engine was made or reset_stats() (read-only)."""

    __slots__ = ()
    # The fields of MrStats, in its order.
    _SPEC = (
        ("loads", "LOADs run."),
        ("executes", "EXECs run."),
        ("stores", "STOREs run."),
        ("dma_busy_ns", "Time in LOAD / STORE (ns)."),
        ("compute_busy_ns", "Time in EXEC, summed over compute threads (ns)."),
        ("overlap_ns", "Time DMA and compute work ran at once (ns; 0 in sequential mode)."),
        ("total_ns", "Wall time of the execute calls (ns)."),
        ("dma_stalls", "Times a DMA op waited for compute."),
        ("compute_stalls", "Times an EXEC waited for another lane."),
    )

    def __init__(self, **fields):
        unknown = set(fields) - set(self._FIELDS)
        if unknown:
            raise TypeError("EngineStats has no field %s" % ", ".join(sorted(unknown)))
        self._f = tuple(_int_in(fields.get(n, 0), 0, 2**64 - 1, "EngineStats." + n) for n in self._FIELDS)

    @classmethod
    def _from_c(cls, s):
        self = cls.__new__(cls)
        self._f = tuple(getattr(s, n) for n in cls._FIELDS)
        return self

    def __reduce__(self):
        return (_stats_from_fields, (self._f,))


assert EngineStats._FIELDS == tuple(name for name, _ in _native.MrStats._fields_)


def _stats_from_fields(fields):
    return EngineStats(**dict(zip(EngineStats._FIELDS, fields)))


# ------------------------------------------------------------------ schedule
# The C type of an op field: an integer range, or _FLAG (a bool, 1 byte).
_U32 = (0, _U32_MAX)
_I32 = (_I32_MIN, _I32_MAX)
_FLAG = "bool"
_STRUCT_CODES = {_U32: "I", _I32: "i", _FLAG: "?"}


def _op_packer(cls, kind, types):
    """The _pack method of an op class: sets the fields (the values in _SPEC
    order) and packs the MrOp; TypeError for a value outside its C type.
    (A closure over the class's struct: this runs for every op made.)"""
    # `kind`, the payload, then padding up to the size of MrOp.
    fmt = "=I" + "".join(_STRUCT_CODES[t] for t in types)
    op_struct = struct.Struct(fmt + "%dx" % (_OP_SIZE - struct.calcsize(fmt)))
    pack, unpack = op_struct.pack, op_struct.unpack
    where = ["%s: %s" % (cls.__name__, name) for name in cls._FIELDS]
    flags = tuple((i, where[i]) for i, t in enumerate(types) if t is _FLAG)
    ints = tuple((i, t[0], t[1], where[i]) for i, t in enumerate(types) if t is not _FLAG)

    def _pack(self, *values):
        if flags:
            values = list(values)
            for i, what in flags:
                values[i] = _to_bool(values[i], what)
        try:
            mr = pack(kind, *values)
        except (struct.error, TypeError, OverflowError):
            for i, lo, hi, what in ints:  # name the first value outside its C type
                _int_in(values[i], lo, hi, what)
            raise
        self._mr = mr
        self._f = unpack(mr)[1:]

    return op_struct, _pack


class _Op(_Record):
    """Common part of the three op classes: immutable, packed once.

    A subclass sets _KIND, its MrOp kind, and _SPEC, its payload fields in
    the order of the C struct as (name, _U32 / _I32 / _FLAG, doc); this
    makes its read-only properties, __match_args__, repr, packing struct
    (_STRUCT) and _pack. Its __init__ hands the arguments to _pack in that
    order.

    Ops compare and hash by identity, as the pybind11 classes did.
    """

    __slots__ = ("_mr",)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__match_args__ = cls._FIELDS
        cls._STRUCT, cls._pack = _op_packer(cls, cls._KIND, tuple(field[1] for field in cls._SPEC))

    def __eq__(self, other):
        # Identity, and never NotImplemented, so that comparing a cached
        # schedule (whose elements are ops) with a new one asks only the ops.
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = object.__hash__

    def __reduce__(self):
        return (type(self), self._f)


# Fields that more than one op has.
_TILE_FIELDS = (
    ("tensor_id", _U32, "Tensor id (from Engine.register_tensor)."),
    ("tile_row", _U32, "Tile row."),
    ("tile_col", _U32, "Tile column."),
)
_BYTES_FIELD = ("bytes", _U32, "Bytes to move (must be TILE_BYTES).")
_BUFFER_FIELD = ("buffer", _I32, "Double-buffer tag, -1 = none.")
_ACC_DOC = "SRAM address of the accumulator."


class SchedLoad(_Op):
    """LOAD: copy tile (tile_row, tile_col) of a tensor into SRAM at dst_addr.

    SchedLoad(tensor_id, tile_row, tile_col, dst_addr, bytes, buffer=-1)
    """

    __slots__ = ()
    _KIND = _MR_OP_LOAD
    _SPEC = _TILE_FIELDS + (
        ("dst_addr", _U32, "SRAM byte address (a multiple of ALIGNMENT)."),
        _BYTES_FIELD,
        _BUFFER_FIELD,
    )

    def __init__(self, tensor_id, tile_row, tile_col, dst_addr, bytes, buffer=-1):
        self._pack(tensor_id, tile_row, tile_col, dst_addr, bytes, buffer)


class SchedExecute(_Op):
    """EXEC: ACC[acc_addr] += A[a_addr] . B[b_addr]; k == 0 zeroes ACC first.

    SchedExecute(m, n, k, a_addr, b_addr, acc_addr, buffer=-1)
    """

    __slots__ = ()
    _KIND = _MR_OP_EXEC
    _SPEC = (
        ("m", _U32, "Output tile row."),
        ("n", _U32, "Output tile column."),
        ("k", _U32, "Reduction step."),
        ("a_addr", _U32, "SRAM address of A."),
        ("b_addr", _U32, "SRAM address of B."),
        ("acc_addr", _U32, _ACC_DOC),
        _BUFFER_FIELD,
    )

    def __init__(self, m, n, k, a_addr, b_addr, acc_addr, buffer=-1):
        self._pack(m, n, k, a_addr, b_addr, acc_addr, buffer)


class SchedStore(_Op):
    """STORE: copy the accumulator at src_addr to a tensor tile, ReLU first when apply_relu.

    SchedStore(tensor_id, tile_row, tile_col, src_addr, bytes, apply_relu=False)
    """

    __slots__ = ()
    _KIND = _MR_OP_STORE
    _SPEC = _TILE_FIELDS + (
        ("src_addr", _U32, _ACC_DOC),
        _BYTES_FIELD,
        ("apply_relu", _FLAG, "Apply ReLU to the accumulator before storing."),
    )

    def __init__(self, tensor_id, tile_row, tile_col, src_addr, bytes, apply_relu=False):
        self._pack(tensor_id, tile_row, tile_col, src_addr, bytes, apply_relu)


_OP_TYPES = (SchedLoad, SchedExecute, SchedStore)


def _pack_ops(schedule):
    """The schedule as a C array of MrOp (bytes), checking every element."""
    try:
        data = b"".join([op._mr for op in schedule])
    except (AttributeError, TypeError):
        data = None
    if data is None or len(data) != _OP_SIZE * len(schedule):
        for i, op in enumerate(schedule):
            if not isinstance(op, _OP_TYPES):
                raise _InvalidOpTypeError(
                    "Schedule contains invalid operation type: element %d is %s, not SchedLoad, "
                    "SchedExecute or SchedStore" % (i, type(op).__name__)
                )
        raise _InvalidOpTypeError("Schedule contains invalid operation type")
    return data


# -------------------------------------------------------------------- engine
_F32 = np.dtype(np.float32)
# get_tensor allocates the requested shape before libcllm checks it; past
# this many floats a shape that is not the registered one is refused here.
_GET_PROBE_LIMIT = 1 << 24


class Engine:
    """Executes schedules of LOAD / EXEC / STORE against simulated DRAM tensors
    and a simulated SRAM scratchpad.

    Engine(config) with an EngineConfig (the default config when omitted).
    The engine may be used from several threads; its calls are serialised,
    and the GIL is released while libcllm runs.
    """

    __slots__ = ("_h", "_tensors", "_cache", "__weakref__")

    def __init__(self, config=None):
        self._h = None
        if config is None:
            config = EngineConfig()
        elif not isinstance(config, EngineConfig):
            raise TypeError("Engine(config): config must be an EngineConfig, got %s" % type(config).__name__)
        c = _lib.mr_engine_config_default()
        c.sram_bytes = config.sram_bytes
        c.trace = 1 if config.trace else 0
        c.threaded = 1 if config.threaded else 0
        c.compute_threads = config.compute_threads
        h = _lib.mr_engine_create(_native.ctypes.byref(c))
        if not h:
            # mr_engine_create reports only NULL: tell a bad config from a
            # refusal of the system by the documented ranges (as engine.hpp).
            bad = (
                not TILE_BYTES <= config.sram_bytes <= 1 << 32
                or not 1 <= config.compute_threads <= _MR_MAX_COMPUTE_THREADS
            )
            raise _error(_MR_ERR_INVALID_ARGUMENT if bad else _MR_ERR_SYSTEM, "mr_engine_create")
        self._h = h
        self._tensors = {}  # name (bytes) -> (id, rows, cols)
        self._cache = None  # (list of ops, packed bytes) of the last execute

    def __reduce_ex__(self, protocol):
        # The handle is owned by this object: a copy would free it twice.
        raise TypeError("Engine objects cannot be pickled or copied")

    def __del__(self, _free=_lib.mr_engine_free):
        h = getattr(self, "_h", None)
        if h:
            self._h = None
            _free(h)

    def register_tensor(self, name, rows, cols):
        """Registers a zero-filled rows x cols tensor; returns its id (0, 1, 2, ... in order)."""
        b = _c_name(name)
        rows = _int_in(rows, 0, _SIZE_MAX, "register_tensor: rows")
        cols = _int_in(cols, 0, _SIZE_MAX, "register_tensor: cols")
        r = _lib.mr_engine_register_tensor(self._h, b, rows, cols)
        if r < 0:
            raise _error(r, "mr_engine_register_tensor")
        self._tensors[b] = (r, rows, cols)
        return r

    def set_tensor(self, name, data):
        """Copies a 2-D array (converted to C-contiguous float32) into the tensor; its
        shape must be the registered one."""
        b = _c_name(name)
        if type(data) is np.ndarray and data.dtype == _F32 and data.flags.c_contiguous:
            arr = data
        else:
            if data is None or isinstance(data, (str, bytes)):
                raise TypeError("set_tensor: data must be a 2-D float32 array, got %s" % type(data).__name__)
            if np.iscomplexobj(data):
                raise TypeError("set_tensor: data must be real, got a complex array")
            try:
                arr = np.ascontiguousarray(data, dtype=_F32)
            except (TypeError, ValueError) as e:
                raise TypeError("set_tensor: data cannot be converted to a float32 array: %s" % e) from None
        if arr.ndim != 2:
            raise ValueError("set_tensor: expected a 2D array, got %dD (shape %s)" % (arr.ndim, arr.shape))
        rows, cols = arr.shape
        rc = _lib.mr_engine_set_tensor(self._h, b, arr.ctypes.data, rows, cols)
        if rc:
            raise _error(rc, "mr_engine_set_tensor")

    def get_tensor(self, name, rows, cols):
        """Returns a copy of the tensor as a new rows x cols float32 array (the registered shape)."""
        b = _c_name(name)
        rows = _int_in(rows, 0, _SIZE_MAX, "get_tensor: rows")
        cols = _int_in(cols, 0, _SIZE_MAX, "get_tensor: cols")
        reg = self._tensors.get(b)
        if (reg is None or reg[1] != rows or reg[2] != cols) and rows * cols > _GET_PROBE_LIMIT:
            # Do not allocate a huge array only for libcllm to refuse it.
            if reg is None:
                raise ValueError("invalid argument: tensor '%s' is not registered" % b.decode("utf-8", "replace"))
            raise ValueError(
                "invalid argument: tensor '%s' is %dx%d, but the call passes a %dx%d array"
                % (b.decode("utf-8", "replace"), reg[1], reg[2], rows, cols)
            )
        out = np.empty((rows, cols), dtype=_F32)
        rc = _lib.mr_engine_get_tensor(self._h, b, out.ctypes.data, rows, cols)
        if rc:
            raise _error(rc, "mr_engine_get_tensor")
        return out

    def execute(self, schedule):
        """Validates and runs a list of SchedLoad / SchedExecute / SchedStore.

        An invalid schedule raises (naming the op) and changes no tensor.
        Passing the same list of ops again reuses its packed C array.
        """
        cache = self._cache
        if type(schedule) is list and cache is not None and cache[0] == schedule:
            # The cached list holds only ops, which compare by identity:
            # equal means the very same op objects, in the same order.
            data = cache[1]
        else:
            if not isinstance(schedule, (list, tuple)):
                raise TypeError("execute: schedule must be a list of ops, got %s" % type(schedule).__name__)
            data = _pack_ops(schedule)
            if type(schedule) is list:
                self._cache = (list(schedule), data)
        rc = _lib.mr_engine_execute(self._h, data, len(data) // _OP_SIZE)
        if rc:
            raise _error(rc, "mr_engine_execute")

    def stats(self):
        """The EngineStats accumulated so far."""
        s = _native.MrStats()
        rc = _lib.mr_engine_stats(self._h, _native.ctypes.byref(s))
        if rc:
            raise _error(rc, "mr_engine_stats")
        return EngineStats._from_c(s)

    def reset_stats(self):
        """Zeroes the stats."""
        rc = _lib.mr_engine_reset_stats(self._h)
        if rc:
            raise _error(rc, "mr_engine_reset_stats")

    @property
    def sram_bytes(self):
        """SRAM size in bytes."""
        return _lib.mr_engine_sram_bytes(self._h)

    def write_trace(self, path):
        """Writes the last execute's trace as Chrome trace-event JSON (Perfetto,
        chrome://tracing). RuntimeError when the engine was made without
        `trace` or the file cannot be written."""
        try:
            p = os.fsencode(path)
        except TypeError:
            raise TypeError("write_trace: path must be a str or os.PathLike, got %s" % type(path).__name__) from None
        if b"\0" in p:
            raise ValueError("write_trace: path contains a NUL character")
        rc = _lib.mr_engine_write_trace(self._h, p)
        if rc:
            raise _error(rc, "mr_engine_write_trace")


# -------------------------------------------------------------------- kernels
def is_avx2_available():
    """Whether the AVX2 + FMA kernels can run on this CPU."""
    return bool(_lib.mr_kernel_available(int(KernelImpl.AVX2)))


def get_active_kernel_name():
    """Name of the kernel the engine and the tile functions use by default:
    "Reference", "AVX2+FMA" or "AVX-512"."""
    name = _lib.mr_kernel_name(_MR_KERNEL_AUTO)
    return name.decode("ascii") if name else "Reference"


def _tile_arrays(out, inputs):
    """Checks the 32x32 tile arguments: C in place (float32, C-contiguous,
    writable), the inputs converted to C-contiguous float32."""
    arrays = [out]
    for x in inputs:
        if not isinstance(x, np.ndarray):
            if x is None or isinstance(x, (str, bytes)):
                raise TypeError("tile arguments must be numpy arrays, got %s" % type(x).__name__)
            try:
                x = np.asarray(x, dtype=_F32)
            except (TypeError, ValueError) as e:
                raise TypeError("tile argument cannot be converted to a float32 array: %s" % e) from None
        arrays.append(x)
    if not isinstance(out, np.ndarray):
        raise TypeError("C must be a numpy float32 array (it is updated in place), got %s" % type(out).__name__)
    if any(a.ndim != 2 for a in arrays):
        raise ValueError("All arrays must be 2D")
    if any(a.shape != (TILE_DIM, TILE_DIM) for a in arrays):
        raise ValueError("All arrays must be 32x32")
    if out.dtype != _F32:
        raise TypeError("C must have dtype float32 (it is updated in place), got %s" % out.dtype)
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("C must be a writable C-contiguous array (it is updated in place)")
    for i in range(1, len(arrays)):
        a = arrays[i]
        if np.iscomplexobj(a):
            raise TypeError("tile arguments must be real")
        if a.dtype != _F32 or not a.flags.c_contiguous:
            arrays[i] = np.ascontiguousarray(a, dtype=_F32)
    return arrays


def matmul_tile_bench(C, A, B, impl=None):
    """C += A . B on 32x32 float32 tiles, in place in C, with the given KernelImpl
    (the best available kernel when omitted; an unavailable one falls back to
    the best one below it)."""
    k = _kernel_code(impl)
    c, a, b = _tile_arrays(C, (A, B))
    rc = _lib.mr_matmul_tile(c.ctypes.data, a.ctypes.data, b.ctypes.data, k)
    if rc:
        raise _error(rc, "mr_matmul_tile")


def relu_tile_bench(C, impl=None):
    """C = max(0, C) on a 32x32 float32 tile, in place, with the given KernelImpl."""
    k = _kernel_code(impl)
    (c,) = _tile_arrays(C, ())
    rc = _lib.mr_relu_tile(c.ctypes.data, k)
    if rc:
        raise _error(rc, "mr_relu_tile")
