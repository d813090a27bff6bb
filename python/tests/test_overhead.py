"""execute() converts the op list into one C array per call (each op packed
itself when it was made) and reuses that array when the same ops come
again; a changed list is packed anew. These tests check that behaviour,
not its speed: `benchmarks/bench_mini_runtime.py` measures the Python
overhead per op."""

import copy

import numpy as np

from conftest import MODES, mlp_builder_ops, mlp_engine, mlp_inputs


def test_the_same_ops_reuse_the_packed_array():
    ops, _ = mlp_builder_ops()
    e = mlp_engine(MODES[0], mlp_inputs())
    e.execute(ops)
    packed = e._cache[1]
    e.execute(ops)
    assert e._cache[1] is packed
    # An equal list of the same op objects is the same schedule.
    e.execute(list(ops))
    assert e._cache[1] is packed


def test_a_changed_list_is_packed_again_and_runs_the_new_ops():
    ops, _ = mlp_builder_ops()
    inp = mlp_inputs()
    e = mlp_engine(MODES[0], inp)
    e.execute(ops)
    want = e.get_tensor("out", 128, 32)
    packed = e._cache[1]
    # New op objects with the same fields: a new array, the same result.
    e.execute([copy.copy(op) for op in ops])
    assert e._cache[1] is not packed
    np.testing.assert_array_equal(e.get_tensor("out", 128, 32).view(np.uint32), want.view(np.uint32))
    # The list object mutated in place: its new contents run.
    shorter = list(ops)
    e.execute(shorter)
    del shorter[-1]
    before = e.stats().stores
    e.execute(shorter)
    assert e.stats().stores == before + sum(1 for op in ops if type(op).__name__ == "SchedStore") - 1
