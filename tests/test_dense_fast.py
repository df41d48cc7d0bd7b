"""The dense 2-D fast paths' compiled pieces, forced on, against NumPy's, torch and the reference.

gemm's batch-folded layout (small images) runs its im2col, its col2im and the transpose of its output
(bias added) as compiled kernels from :data:`convscope.algorithms.gemm.COMPILED_FOLDED_FROM_PIXELS` output
pixels and :data:`~convscope.algorithms.gemm.COMPILED_UNFOLD_FROM` output values; the suite's small
shapes stay below both, so here they are forced.
"""
import numpy as np
import pytest

import convscope
from convscope.algorithms import gemm
from convscope.spec import check_shapes, make_spec
from oracle import require_torch, assert_close, check_against_torch

NEVER, ALWAYS = 0, 10**9
MODES = ["zeros", "reflect", "replicate", "circular"]


@pytest.fixture
def folded_compiled(monkeypatch):
    """gemm in the batch-folded layout with every compiled kernel on."""
    for name in ("FOLD_BELOW", "FOLD_BELOW_1X1_BACKWARD", "FOLD_BELOW_1X1_FORWARD"):
        monkeypatch.setattr(gemm, name, ALWAYS)
    monkeypatch.setattr(gemm, "COMPILED_FOLDED_FROM_PIXELS", 0)
    monkeypatch.setattr(gemm, "COMPILED_UNFOLD_FROM", 0)


def test_the_forced_branches_are_taken(folded_compiled):
    spec = make_spec((3, 3), stride=2, padding=1)
    shape = check_shapes(spec, (2, 3, 9, 8), (4, 3, 3, 3))
    assert gemm.batch_folded(spec, shape, backward=False) and gemm.batch_folded(spec, shape, backward=True)
    assert gemm.compiled(spec, shape, folded=True)
    assert "compiled im2col/col2im" in gemm.describe(spec, shape, "forward")


@pytest.mark.parametrize("mode", MODES)
def test_compiled_folded_im2col_and_col2im_equal_numpys(mode, monkeypatch):
    """Forced on and off, the folded im2col gives the same array, and col2im the same sums."""
    rng = np.random.default_rng(3)
    spec = make_spec((3, 2), (1, 2), (2, 1), (2, 1), 2, mode)
    shape = check_shapes(spec, (3, 4, 9, 8), (6, 2, 3, 2))
    x = rng.standard_normal((3, 4, 9, 8))
    d = rng.standard_normal((2, 2 * 3 * 2, 3 * shape.H_out * shape.W_out))
    monkeypatch.setattr(gemm, "COMPILED_FOLDED_FROM_PIXELS", ALWAYS)
    want_cols, want_dx = gemm.im2col_folded(x, spec, shape), gemm.col2im_folded(d, spec, shape)
    monkeypatch.setattr(gemm, "COMPILED_FOLDED_FROM_PIXELS", 0)
    got_cols, got_dx = gemm.im2col_folded(x, spec, shape), gemm.col2im_folded(d, spec, shape)
    assert np.array_equal(got_cols, want_cols), mode
    assert_close(got_dx, want_dx, mode)


@pytest.mark.parametrize("bias", [True, False])
def test_compiled_unfold_equals_numpys(bias, monkeypatch):
    """The folded forward's output transpose (with and without bias): the same values, bit for bit."""
    rng = np.random.default_rng(5)
    spec = make_spec((1, 1))
    shape = check_shapes(spec, (3, 6, 5, 4), (8, 6, 1, 1))
    x, w = rng.standard_normal((3, 6, 5, 4)).astype(np.float32), rng.standard_normal((8, 6, 1, 1)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32) if bias else None
    monkeypatch.setattr(gemm, "FOLD_BELOW_1X1_FORWARD", ALWAYS)
    monkeypatch.setattr(gemm, "COMPILED_UNFOLD_FROM", ALWAYS)
    want = gemm.forward(x, w, b, spec, shape)
    monkeypatch.setattr(gemm, "COMPILED_UNFOLD_FROM", 0)
    got = gemm.forward(x, w, b, spec, shape)
    assert np.array_equal(got, want)


# (x shape, w shape, params): the layers the folded kernels serve, and their edges
CASES = [
    ((2, 4, 9, 8), (6, 4, 3, 3), dict(stride=2, padding=1)),                     # ResNet's 3×3/2
    ((2, 3, 13, 12), (4, 3, 7, 7), dict(stride=2, padding=3)),                   # the stem
    ((2, 4, 7, 7), (5, 4, 3, 3), dict(padding=1)),                               # 3×3 at 7×7
    ((2, 4, 10, 9), (4, 2, 3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
    ((2, 6, 7, 6), (9, 6, 1, 1), dict()),                                        # 1×1 (unfold only)
    ((2, 6, 9, 8), (4, 3, 1, 1), dict(stride=2, padding=1, groups=2)),           # strided 1×1
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_folded_compiled_against_torch(case, dtype, mode, folded_compiled):
    require_torch()
    x_shape, w_shape, params = case
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    check_against_torch(x, w, b, algorithm="gemm", padding_mode=mode, **params)
    check_against_torch(x, w, None, algorithm=None, padding_mode=mode, **params)


@pytest.mark.parametrize("batch", [0, None], ids=["zero_batch", "unbatched"])
def test_folded_compiled_empty_and_unbatched(batch, folded_compiled):
    require_torch()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 9, 8) if batch is None else (batch, 4, 9, 8))
    w, b = rng.standard_normal((6, 4, 3, 3)), rng.standard_normal(6)
    check_against_torch(x, w, b, algorithm="gemm", stride=2, padding=1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_folded_compiled_against_the_reference(case, dtype, folded_compiled):
    x_shape, w_shape, params = case
    rng = np.random.default_rng(13)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    want = convscope.conv2d(x, w, b, algorithm="reference", **params)
    assert_close(convscope.conv2d(x, w, b, algorithm="gemm", **params), want, "forward")
    g = rng.standard_normal(want.shape).astype(dtype)
    expected = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    got = convscope.conv2d_backward(g, x, w, algorithm="gemm", **params)
    for name in got._fields:
        assert_close(getattr(got, name), getattr(expected, name), f"grad {name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", ["3x3", "5x5-stride2", "3x3-dilated", "3x3-reflect", "1x1", "1x1-padded-stride2"])
def test_folded_compiled_puts_nonfinite_values_where_torch_does(layer, dtype, folded_compiled):
    require_torch()
    from test_nonfinite import LAYERS, _check

    _, chw, w_shape, params = next(entry for entry in LAYERS if entry[0] == layer)
    _check("gemm", chw, w_shape, params, dtype)
