"""libcllm's schedule builder (mr_schedule_build) from Python.

Not part of the original module's surface: the tests and the benchmark use
it to get the exact reference-MLP schedule that `cllm bench engine` runs
(99 ops: 39 LOAD, 44 EXEC, 16 STORE).
"""

import ctypes
import struct

from . import _OP_SIZE, _OP_TYPES, _error, _native

_lib = _native.lib

#: (rows, cols) of x, w1, h1, w2, h2, w3, out: src/runtime/builder.rs REFERENCE_MLP_SHAPES.
REFERENCE_MLP_SHAPES = ((128, 128), (128, 64), (128, 64), (64, 32), (128, 32), (32, 32), (128, 32))
#: Their names, in the same order.
REFERENCE_MLP_NAMES = ("x", "w1", "h1", "w2", "h2", "w3", "out")

_KIND = struct.Struct("=I")
_OP_BY_KIND = {cls._KIND: cls for cls in _OP_TYPES}


def reference_mlp_layers(ids):
    """The reference 3-layer MLP (x -> W1 -> ReLU -> W2 -> ReLU -> W3) over the
    seven tensor ids (x, w1, h1, w2, h2, w3, out), as builder layers."""
    t = [(ids[i],) + REFERENCE_MLP_SHAPES[i] for i in range(7)]
    x, w1, h1, w2, h2, w3, out = t
    return [(x, w1, h1, True), (h1, w2, h2, True), (h2, w3, out, False)]


def _decode(raw):
    """The ops of a C array of MrOp, made with their constructors."""
    ops = []
    for off in range(0, len(raw), _OP_SIZE):
        (kind,) = _KIND.unpack_from(raw, off)
        cls = _OP_BY_KIND[kind]
        ops.append(cls(*cls._STRUCT.unpack_from(raw, off)[1:]))
    return ops


def build_matmul_schedule(layers, sram_bytes=256 * 1024):
    """Builds the schedule of a chain of matmul[+ReLU] layers with libcllm's builder.

    `layers` holds (a, b, out, relu) with a, b, out each (tensor_id, rows,
    cols). Returns (list of ops, dict of the schedule's facts: ops, loads,
    executes, stores, peak_sram_bytes, loads_eliminated, evictions).
    Raises ValueError when the shapes do not chain or SRAM is too small.
    """
    n = len(layers)
    arr = (_native.MrMatmulLayer * max(n, 1))()
    for i, (a, b, out, relu) in enumerate(layers):
        arr[i].a = _native.MrTensorRef(*a)
        arr[i].b = _native.MrTensorRef(*b)
        arr[i].out = _native.MrTensorRef(*out)
        arr[i].relu = 1 if relu else 0
    h = _lib.mr_schedule_build(arr, n, sram_bytes)
    if not h:
        raise _error(-1, "mr_schedule_build")
    try:
        count = _lib.mr_schedule_len(h)
        raw = ctypes.string_at(_lib.mr_schedule_ops(h), count * _OP_SIZE) if count else b""
        info = _native.MrScheduleInfo()
        rc = _lib.mr_schedule_info(h, ctypes.byref(info))
        if rc:
            raise _error(rc, "mr_schedule_info")
    finally:
        _lib.mr_schedule_free(h)
    return _decode(raw), {name: getattr(info, name) for name, _ in _native.MrScheduleInfo._fields_}
