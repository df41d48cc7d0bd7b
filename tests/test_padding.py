"""``pad`` against torch's ``F.pad`` and ``np.pad``; ``fold`` is the adjoint of ``pad``."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from convscope.padding import fold, pad, pad_into
from convscope.spec import ConvSpec, make_spec
from oracle import NP_PAD_MODE as NP_MODE
from oracle import PADDING_MODES as MODES
from oracle import TORCH_PAD_MODE as TORCH_MODE
from oracle import require_torch, torch_autograd, torch_functional

require_torch()




def spec_for(padding, mode):
    """A spec with explicit ``((top, bottom), (left, right))`` padding (pad/fold read nothing else)."""
    return ConvSpec(kernel_size=(1, 1), padding=padding, padding_mode=mode)


def limit(mode, size):
    """The largest padding torch allows on one side of ``size`` pixels."""
    return {"reflect": size - 1, "circular": size}.get(mode, size + 2)


def paddings(mode, H, W, count=60):
    """((top, bottom), (left, right)) paddings torch allows for an H×W input, up to the limit.

    All of them when there are at most ``count``; otherwise the extremes and a fixed random sample.
    """
    hs = range(0, limit(mode, H) + 1)
    ws = range(0, limit(mode, W) + 1)
    every = [((pt, pb), (pl, pr)) for pt, pb, pl, pr in itertools.product(hs, hs, ws, ws)]
    if len(every) <= count:
        return every
    extremes = [every[0], every[-1], ((hs[-1], 0), (0, ws[-1])), ((0, hs[-1]), (ws[-1], 0))]
    rng = np.random.default_rng(len(every))
    sample = [every[i] for i in rng.choice(len(every), count - len(extremes), replace=False)]
    return extremes + sample


def np_reference(x, padding, mode):
    (pt, pb), (pl, pr) = padding
    widths = [(0, 0)] * (x.ndim - 2) + [(pt, pb), (pl, pr)]
    return np.pad(x, widths, mode=NP_MODE[mode])


def torch_pad(x, padding, mode):
    (pt, pb), (pl, pr) = padding
    return torch_functional("pad", x, (pl, pr, pt, pb), mode=TORCH_MODE[mode])


# --------------------------------------------------------------------------- pad


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hw", [(1, 1), (1, 4), (3, 2), (4, 5)])
def test_pad_matches_torch_and_numpy(mode, hw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, *hw))
    for padding in paddings(mode, *hw):
        got = pad(x, spec_for(padding, mode))
        expected = torch_pad(x, padding, mode)
        assert got.shape == expected.shape
        assert got.dtype == x.dtype
        np.testing.assert_array_equal(got, expected, err_msg=str(padding))
        np.testing.assert_array_equal(got, np_reference(x, padding, mode), err_msg=str(padding))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_pad_keeps_dtype_and_leading_axes(mode, dtype):
    """Any number of leading axes (2-D to 5-D), each padded on its last two axes only."""
    rng = np.random.default_rng(1)
    padding = ((1, 2), (2, 0))
    for shape in [(3, 4), (2, 3, 4), (2, 1, 3, 4), (2, 2, 1, 3, 4)]:
        x = rng.standard_normal(shape).astype(dtype)
        got = pad(x, spec_for(padding, mode))
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, np_reference(x, padding, mode))


@pytest.mark.parametrize("mode", MODES)
def test_pad_unbatched_matches_torch(mode):
    x = np.random.default_rng(2).standard_normal((3, 4, 5)).astype(np.float32)
    padding = ((3, 1), (0, 4))
    np.testing.assert_array_equal(pad(x, spec_for(padding, mode)), torch_pad(x, padding, mode))


@pytest.mark.parametrize("mode", MODES)
def test_pad_does_not_modify_input(mode):
    x = np.random.default_rng(3).standard_normal((1, 2, 3, 3))
    before = x.copy()
    out = pad(x, spec_for(((1, 2), (2, 1)), mode))
    out[...] = 7.0
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("mode", MODES)
def test_pad_from_make_spec(mode):
    """pad reads the resolved padding of a real spec, including the asymmetric 'same' split."""
    x = np.random.default_rng(4).standard_normal((1, 2, 5, 6))
    for kernel, padding, dilation in [(3, 1, 1), ((2, 4), "same", 1), ((4, 3), "same", (1, 2)), (3, "valid", 1)]:
        spec = make_spec(kernel, padding=padding, dilation=dilation, padding_mode=mode)
        np.testing.assert_array_equal(pad(x, spec), torch_pad(x, spec.padding, mode))


# --------------------------------------------------------------------------- fold is pad's adjoint


def _adjoint_gap(x, y, spec):
    """|⟨pad(x), y⟩ − ⟨x, fold(y)⟩| relative to the size of the terms."""
    lhs = float(np.sum(pad(x, spec) * y))
    rhs = float(np.sum(x * fold(y, spec, x.shape[-2:])))
    scale = float(np.sum(np.abs(pad(x, spec) * y))) + 1e-300
    return abs(lhs - rhs) / scale


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hw", [(1, 1), (1, 3), (2, 2), (3, 5), (4, 4)])
def test_fold_is_adjoint_of_pad(mode, hw):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, *hw))
    for padding in paddings(mode, *hw):
        spec = spec_for(padding, mode)
        y = rng.standard_normal(pad(x, spec).shape)
        folded = fold(y, spec, hw)
        assert folded.shape == x.shape
        assert folded.dtype == np.float64
        assert _adjoint_gap(x, y, spec) < 1e-12, padding


@pytest.mark.parametrize(
    "mode, hw, padding",
    [
        ("circular", (3, 4), ((3, 3), (4, 4))),   # padding equal to the size
        ("circular", (3, 4), ((3, 0), (0, 4))),
        ("circular", (1, 1), ((1, 1), (1, 1))),
        ("reflect", (3, 4), ((2, 2), (3, 3))),    # size − 1
        ("reflect", (3, 4), ((0, 2), (3, 0))),
        ("reflect", (2, 5), ((1, 0), (4, 4))),
        ("replicate", (1, 2), ((5, 0), (0, 6))),  # far beyond the size
        ("zeros", (1, 2), ((4, 1), (0, 7))),
    ],
)
def test_fold_is_adjoint_at_the_limits(mode, hw, padding):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, *hw))
    spec = spec_for(padding, mode)
    y = rng.standard_normal(pad(x, spec).shape)
    assert _adjoint_gap(x, y, spec) < 1e-12


@pytest.mark.parametrize("mode", MODES)
def test_fold_is_adjoint_as_matrices(mode):
    """Build pad's matrix P column by column and fold's matrix column by column: fold's is Pᵀ, exactly."""
    H, W = 3, 4
    padding = ((2, 1), (0, 3))
    spec = spec_for(padding, mode)
    Hp, Wp = H + 3, W + 3
    P = np.stack([pad(np.eye(H * W)[k].reshape(H, W), spec).ravel() for k in range(H * W)], axis=1)
    Q = np.stack([fold(np.eye(Hp * Wp)[k].reshape(Hp, Wp), spec, (H, W)).ravel() for k in range(Hp * Wp)], axis=1)
    np.testing.assert_array_equal(Q, P.T)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hw", [(1, 2), (3, 3), (4, 2)])
def test_fold_matches_torch_pad_backward(mode, hw):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 2, *hw))
    for padding in paddings(mode, *hw):
        (pt, pb), (pl, pr) = padding
        spec = spec_for(padding, mode)
        g = rng.standard_normal(x.shape[:2] + (hw[0] + pt + pb, hw[1] + pl + pr))
        _, (dx,) = torch_autograd(lambda F, x: F.pad(x, (pl, pr, pt, pb), mode=TORCH_MODE[mode]), x, grad_output=g)
        np.testing.assert_allclose(fold(g, spec, hw), dx, rtol=1e-12, atol=1e-12, err_msg=str(padding))


@pytest.mark.parametrize("mode", MODES)
def test_fold_keeps_dtype_and_does_not_modify_its_argument(mode):
    rng = np.random.default_rng(8)
    spec = spec_for(((1, 2), (2, 1)), mode)
    for dtype in (np.float32, np.float64):
        g = rng.standard_normal((2, 3, 3 + 3, 4 + 3)).astype(dtype)
        before = g.copy()
        out = fold(g, spec, (3, 4))
        assert out.dtype == dtype and out.shape == (2, 3, 3, 4)
        np.testing.assert_array_equal(g, before)
        out[...] = 0.0
        np.testing.assert_array_equal(g, before)


def test_fold_zeros_is_the_interior():
    g = np.arange(2 * 6 * 7, dtype=np.float64).reshape(2, 6, 7)
    np.testing.assert_array_equal(fold(g, spec_for(((1, 2), (3, 0)), "zeros"), (3, 4)), g[:, 1:4, 3:7])


# --------------------------------------------------------------------------- pad_into


@pytest.mark.parametrize("nd", (1, 2, 3))
def test_pad_into_zeroes_every_border_cell_and_copies_the_interior(nd):
    """Into a NaN-filled buffer: the result is np.pad's zero padding, every cell written once; the
    source may stop short of the buffer's end (the rest is border too)."""
    rng = np.random.default_rng(nd)
    for _ in range(20):
        src = rng.standard_normal((2,) + tuple(int(n) for n in rng.integers(0, 4, nd)))
        before = tuple(int(p) for p in rng.integers(0, 3, nd))
        after = tuple(int(p) for p in rng.integers(0, 3, nd))
        dst = np.full(src.shape[:1] + tuple(b + n + a for b, n, a in zip(before, src.shape[1:], after)), np.nan)
        assert pad_into(dst, src, before) is dst
        np.testing.assert_array_equal(dst, np.pad(src, [(0, 0)] + list(zip(before, after))))
