"""Edge cases of the compiled IMP backend's Python glue (`segfusion.models.imp_cpu`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segfusion.models import imp_cpu
from segfusion.models.imp import instance_mask_projection
from tests.models.threads import in_fresh_thread  # noqa: E402

numba = pytest.importorskip("numba")




# --- _jit -----------------------------------------------------------------------------------------


def plain_function(x):
    return x + 1


def test_jit_compiles_lazily_with_disk_cache_and_without_the_gil():
    compiled = imp_cpu._jit(plain_function)
    assert isinstance(compiled, numba.core.registry.CPUDispatcher)
    assert compiled.py_func is plain_function
    assert compiled.signatures == []  # lazy: nothing compiled before the first call
    assert compiled.targetoptions["nopython"] is True
    assert compiled.targetoptions["nogil"] is True
    assert isinstance(compiled._cache, numba.core.caching.FunctionCache)  # cache=True (on disk)


def test_jit_without_numba_returns_the_function(monkeypatch):
    monkeypatch.setattr(imp_cpu, "numba", None)
    assert imp_cpu._jit(plain_function) is plain_function


def test_kernels_are_compiled():
    # The module's kernels went through _jit at import: numba dispatchers of the Python loops.
    for kernel in (imp_cpu._paint, imp_cpu._covering_cells):
        assert isinstance(kernel, numba.core.registry.CPUDispatcher)
        assert kernel.targetoptions["nogil"] is True


# --- _owner_scratch ---------------------------------------------------------------------------------


def test_owner_ids_are_int32_exactly_below_the_limit():
    # Entry ids go up to num_entries - 1; int32 is used while num_entries < 2**31 (the buffer
    # size is numel, so large num_entries cost nothing here).
    assert imp_cpu._INT32_ENTRIES == 2**31

    def dtypes():
        return [imp_cpu._owner_scratch(4, m).dtype for m in (1, 2**31 - 1, 2**31, 2**40)]

    assert in_fresh_thread(dtypes) == [np.int32, np.int32, np.int64, np.int64]


def test_owner_scratch_is_reused_per_thread():
    def calls():
        a = imp_cpu._owner_scratch(10, 5)
        b = imp_cpu._owner_scratch(10, 5)  # same size: the same buffer
        c = imp_cpu._owner_scratch(6, 5)  # smaller: a view of it
        d = imp_cpu._owner_scratch(12, 5)  # larger: a new buffer...
        e = imp_cpu._owner_scratch(3, 5)  # ...which is then kept
        f = imp_cpu._owner_scratch(3, 2**31)  # other dtype: a new buffer even though 3 entries fit
        return a, b, c, d, e, f

    a, b, c, d, e, f = in_fresh_thread(calls)
    assert [x.shape for x in (a, b, c, d, e, f)] == [(10,), (10,), (6,), (12,), (3,), (3,)]
    assert np.shares_memory(a, b) and np.shares_memory(a, c)
    assert not np.shares_memory(a, d) and np.shares_memory(d, e)
    assert f.dtype == np.int64 and not np.shares_memory(f, d)
    # Another thread never sees this thread's buffer.
    other = in_fresh_thread(lambda: imp_cpu._owner_scratch(3, 5))
    assert not np.shares_memory(other, e)


# --- _CompiledProjection: the painted rectangle of boxes cut by the canvas border -----------------


def paint_2x2(box, backend="compiled"):
    """Mask [[1, 2], [3, 4]] / 10 on ``box`` (image pixels), stride 1, canvas 8 x 8, one class."""
    masks = torch.tensor([[[0.1, 0.2], [0.3, 0.4]]])
    return instance_mask_projection(
        torch.tensor([0]), torch.tensor([1.0]), masks, torch.tensor([box]), 1, (8, 8), 1.0, backend=backend
    )[0]


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_box_whose_first_cells_are_left_of_and_above_the_canvas(backend):
    # Box (-8, -8, 8, 8): cell 0 of each axis covers [-8, 0) (clipped to nothing), cell 1 covers
    # [0, 8) = the whole canvas; so the canvas is cell (1, 1) = 0.4 everywhere.
    assert torch.equal(paint_2x2([-8.0, -8.0, 8.0, 8.0], backend), torch.full((8, 8), 0.4))


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_box_whose_last_cells_are_right_of_and_below_the_canvas(backend):
    # Box (0, 0, 16, 16): cell 0 of each axis covers [0, 8) = the whole canvas, cell 1 covers
    # [8, 16) (clipped to nothing); so the canvas is cell (0, 0) = 0.1 everywhere.
    assert torch.equal(paint_2x2([0.0, 0.0, 16.0, 16.0], backend), torch.full((8, 8), 0.1))


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_box_cut_on_one_side_only(backend):
    # Box (-4, 2, 4, 6): columns: cell 0 [-4, 0) clipped away, cell 1 [0, 4); rows: cell 0 [2, 4),
    # cell 1 [4, 6). So rows 2-3, columns 0-3 hold 0.2 and rows 4-5, columns 0-3 hold 0.4.
    expected = torch.zeros(8, 8)
    expected[2:4, 0:4] = 0.2
    expected[4:6, 0:4] = 0.4
    assert torch.equal(paint_2x2([-4.0, 2.0, 4.0, 6.0], backend), expected)
    # Transposed: box (2, -4, 6, 4) -> rows 0-3: columns 2-3 hold 0.3, columns 4-5 hold 0.4.
    expected = torch.zeros(8, 8)
    expected[0:4, 2:4] = 0.3
    expected[0:4, 4:6] = 0.4
    assert torch.equal(paint_2x2([2.0, -4.0, 6.0, 4.0], backend), expected)
