"""explain / explain_grad: every number, every term, checked against conv2d, the definition and torch.

The forward grid runs each feature (rectangular kernels, stride, padding as int, pair, 'same' and
'valid', dilation, groups, 1×1 kernels) in every padding mode and both float dtypes, rotating the
layout (batched / unbatched), at several elements (first, last, corners, middle, negative
indices).  Each term is recomputed independently: the input is padded with ``np.pad`` and the
tap's cell is read from the definition

    x̃[n, g·Cg + c, i·sH + u·dH, j·sW + v·dW]

and for reflect / replicate / circular the real pixel a padding cell copies is derived from the
padding rule written out below (and cross-checked against ``np.pad``).  The gradient grid does the
same for ∂input (whose terms are compared with a brute-force enumeration of every output and tap),
∂weight and ∂bias.  The full products are the ``slow`` sweeps.
"""
from __future__ import annotations

import html
import itertools
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from oracle import require_torch  # noqa: E402

require_torch()

import convscope  # noqa: E402
from convscope import conv2d, conv2d_backward, explain, explain_grad  # noqa: E402
from convscope.geometry import source_map  # noqa: E402
from oracle import (parameter_grad, random_case, to_tensor, tolerance, torch_conv2d,  # noqa: E402
                    torch_conv_layer, torch_forward, torch_module, torch_module_backward)

pytestmark = [
    pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning"),
]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
DTYPES = (np.float64, np.float32)
LAYOUTS = ("batched", "unbatched")
NP_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
# |sum_of_products + bias − value| ≤ RTOL × (Σ|product| + |bias|): the rounding of a sum of that size
SUM_RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


# --------------------------------------------------------------------------- independent helpers


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def resolve_padding(padding, kernel, dilation):
    """((top, bottom), (left, right)) by torch's rule: 'same' pads d·(k−1) in total, the odd one
    at the bottom / right; 'valid' is no padding."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        out = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            out.append((total // 2, total - total // 2))
        return tuple(out)
    ph, pw = pair(padding)
    return ((ph, ph), (pw, pw))


def source_pixel(r, n, mode):
    """The real coordinate (0 ≤ · < n) a padded cell at real coordinate r copies; None for zeros.

    reflect mirrors about the edge without repeating it (−1 → 1, n → n−2); replicate clamps to
    the edge; circular wraps around (−1 → n−1, n → 0).
    """
    if 0 <= r < n:
        return r
    if mode == "zeros":
        return None
    if mode == "reflect":
        return -r if r < 0 else 2 * (n - 1) - r
    if mode == "replicate":
        return min(max(r, 0), n - 1)
    if mode == "circular":
        return r % n
    raise AssertionError(mode)


def np_padded(x4, pads, mode):
    (pt, pb), (pl, pr) = pads
    return np.pad(x4, ((0, 0), (0, 0), (pt, pb), (pl, pr)), mode=NP_PAD_MODE[mode])


class Geometry:
    """Every size of one call, derived in the test from the arguments (not from the library)."""

    def __init__(self, x, w, params):
        self.unbatched = x.ndim == 3
        self.x4 = x[None] if self.unbatched else x
        self.N, self.C, self.H, self.W = self.x4.shape
        self.O, self.Cg, self.kH, self.kW = w.shape
        self.groups = params.get("groups", 1)
        self.Og = self.O // self.groups
        self.sH, self.sW = pair(params.get("stride", 1))
        self.dH, self.dW = pair(params.get("dilation", 1))
        self.mode = params.get("padding_mode", "zeros")
        self.pads = resolve_padding(params.get("padding", 0), (self.kH, self.kW), (self.dH, self.dW))
        (pt, pb), (pl, pr) = self.pads
        self.Ho = (self.H + pt + pb - self.dH * (self.kH - 1) - 1) // self.sH + 1
        self.Wo = (self.W + pl + pr - self.dW * (self.kW - 1) - 1) // self.sW + 1
        self.padded = np_padded(self.x4, self.pads, self.mode)

    def cell(self, i, j, u, v):
        return i * self.sH + u * self.dH, j * self.sW + v * self.dW

    def is_padding(self, p):
        (pt, _), (pl, _) = self.pads
        return not (0 <= p[0] - pt < self.H and 0 <= p[1] - pl < self.W)

    def source(self, p):
        """(h, w) of the real pixel that padded cell p reads, or None for zero padding."""
        (pt, _), (pl, _) = self.pads
        h, w = source_pixel(p[0] - pt, self.H, self.mode), source_pixel(p[1] - pl, self.W, self.mode)
        return None if h is None or w is None else (h, w)


def sum_tolerance(dtype, products, extra=0.0):
    scale = float(np.sum(np.abs(products))) + abs(extra)
    return SUM_RTOL[np.dtype(dtype)] * max(scale, 1e-300)


def normalized(at, shape):
    return tuple(int(a) % s for a, s in zip(at, shape))


def sample_indices(shape):
    """First, last (as −1), two opposite corners, the middle, and a mix of negative indices."""
    return [
        tuple(0 for _ in shape),
        tuple(-1 for _ in shape),
        tuple(s - 1 if k % 2 else 0 for k, s in enumerate(shape)),
        tuple(0 if k % 2 else s - 1 for k, s in enumerate(shape)),
        tuple(s // 2 for s in shape),
        tuple(-s if k % 2 else -1 for k, s in enumerate(shape)),
    ]


def all_indices(shape):
    return list(itertools.product(*(range(s) for s in shape)))


# --------------------------------------------------------------------------- cases


class Case:
    def __init__(self, name, chw, weight_shape, bias=True, **params):
        self.name, self.chw, self.weight_shape, self.bias, self.params = name, chw, weight_shape, bias, params

    def arrays(self, layout, dtype, seed=0):
        rng = np.random.default_rng(seed)
        x_shape = (2,) + self.chw if layout == "batched" else self.chw
        return random_case(rng, x_shape, self.weight_shape, dtype, bias=self.bias)


CASES = [
    Case("square_padding_int", (2, 5, 6), (3, 2, 3, 3), padding=1),
    Case("rectangular_padding_pair", (2, 6, 7), (2, 2, 2, 4), padding=(1, 2)),
    Case("stride_int", (2, 7, 8), (3, 2, 3, 3), stride=2, padding=1),
    Case("stride_pair_rectangular", (1, 7, 8), (2, 1, 3, 2), stride=(2, 3), padding=(2, 1)),
    Case("same_odd", (2, 5, 6), (2, 2, 3, 5), padding="same"),
    Case("same_even_dilated", (2, 7, 6), (2, 2, 2, 3), padding="same", dilation=(3, 2)),
    Case("valid", (2, 6, 5), (3, 2, 3, 2), padding="valid"),
    Case("dilation_2", (2, 8, 7), (2, 2, 3, 3), dilation=2, padding=2),
    Case("groups_2", (4, 6, 5), (4, 2, 3, 3), groups=2, padding=1),
    Case("groups_stride_dilation", (4, 7, 8), (6, 2, 2, 3), bias=False, groups=2, stride=(2, 1),
         padding=(1, 2), dilation=(1, 2)),
    Case("kernel_1x1_padding_no_bias", (3, 4, 5), (2, 3, 1, 1), bias=False, padding=1),
    Case("padding_3_of_4", (1, 4, 5), (1, 1, 3, 3), padding=3),
]
CASE_IDS = [c.name for c in CASES]


def _rotated_grid():
    params = []
    for (ci, case), (mi, mode), (di, dtype) in itertools.product(enumerate(CASES), enumerate(PADDING_MODES),
                                                                 enumerate(DTYPES)):
        layout = LAYOUTS[(ci + mi + di) % 2]
        params.append(pytest.param(case, layout, mode, dtype,
                                   id=f"{case.name}-{layout}-{mode}-{np.dtype(dtype).name}"))
    return params


# --------------------------------------------------------------------------- forward checks


def check_forward(x, w, b, params, ats):
    geo = Geometry(x, w, params)
    out = conv2d(x, w, b, **params)
    torch_out, _ = torch_conv2d(x, w, b, None, **params)
    tol_torch = tolerance(torch_out)
    assert out.shape == ((geo.O, geo.Ho, geo.Wo) if geo.unbatched else (geo.N, geo.O, geo.Ho, geo.Wo))
    for at in ats:
        e = explain(w, x, at, bias=b, **params)
        where = f"at={at}"
        full = normalized(at, out.shape)
        assert e.kind == "output"
        assert e.at == full, where
        assert e.value == float(out[at]), where
        assert abs(e.value - float(torch_out[at])) <= tol_torch, where
        assert e.torch_value is None, where
        n, o, i, j = (0,) + full if geo.unbatched else full
        g = o // geo.Og
        assert e.bias == (float(b[o]) if b is not None else 0.0), where
        products = [t.product for t in e.terms]
        assert abs(e.sum_of_products + e.bias - e.value) <= sum_tolerance(x.dtype, products, e.bias), where
        assert len(e.terms) == geo.Cg * geo.kH * geo.kW, where
        assert e.window.shape == (geo.Cg, geo.kH, geo.kW), where
        assert e.window_padding.shape == (geo.Cg, geo.kH, geo.kW), where
        np.testing.assert_array_equal(e.kernel, w[o].astype(np.float64))
        assert list(e.channels) == list(range(g * geo.Cg, (g + 1) * geo.Cg)), where
        (pt, _), (pl, _) = geo.pads
        for k, (c, u, v) in enumerate(itertools.product(range(geo.Cg), range(geo.kH), range(geo.kW))):
            t = e.terms[k]
            here = f"{where} tap (c, u, v)={(c, u, v)}"
            ch = g * geo.Cg + c
            p = geo.cell(i, j, u, v)
            assert t.weight_index == (c, u, v), here
            assert t.tap == (u, v), here
            assert t.padded_index == p, here
            assert t.weight_value == float(w[o, c, u, v]), here
            assert t.product == t.input_value * t.weight_value, here
            # the definition: the padded input at the tap's cell
            assert t.input_value == float(geo.padded[n, ch, p[0], p[1]]), here
            assert t.is_padding == geo.is_padding(p), here
            assert e.window[c, u, v] == t.input_value, here
            assert e.window_padding[c, u, v] == t.is_padding, here
            src = geo.source(p)
            if src is None:
                assert t.input_index is None and t.input_value == 0.0, here
                assert geo.mode == "zeros" and t.is_padding, here
            else:
                assert t.input_index == ((ch,) + src if geo.unbatched else (n, ch) + src), here
                assert t.input_value == float(x[t.input_index]), here  # x as the caller passed it
                if not t.is_padding:
                    assert src == (p[0] - pt, p[1] - pl), here
    return out


@pytest.mark.parametrize("case, layout, mode, dtype", _rotated_grid())
def test_explain_grid(case, layout, mode, dtype):
    x, w, b = case.arrays(layout, dtype)
    params = dict(case.params, padding_mode=mode)
    out_shape = conv2d(x, w, b, **params).shape
    check_forward(x, w, b, params, sample_indices(out_shape))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_explain_grid_every_element(case, layout, mode, dtype):
    x, w, b = case.arrays(layout, dtype, seed=1)
    params = dict(case.params, padding_mode=mode)
    out_shape = conv2d(x, w, b, **params).shape
    check_forward(x, w, b, params, all_indices(out_shape))


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_explain_accepts_numpy_integer_indices_and_lists(mode):
    x, w, b = CASES[0].arrays("batched", np.float64)
    out = conv2d(x, w, b, padding=1, padding_mode=mode)
    e1 = explain(w, x, (np.int64(1), np.int32(2), 0, -1), bias=b, padding=1, padding_mode=mode)
    e2 = explain(w, x, [1, 2, 0, out.shape[-1] - 1], bias=b, padding=1, padding_mode=mode)
    assert e1.at == e2.at == (1, 2, 0, out.shape[-1] - 1)
    assert e1.value == e2.value == float(out[1, 2, 0, -1])


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_input_index_indexes_the_input_as_passed(layout, mode):
    """x[t.input_index] is the value the term read, for every term of every explanation: (n, c, h, w)
    in a batch, (c, h, w) unbatched, and for a padding copy the real pixel it copies."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3, 2, 4, 5) if layout == "batched" else (2, 4, 5))  # every value distinct
    w = rng.standard_normal((2, 2, 3, 2))
    params = dict(padding=(1, 2), stride=(1, 2), padding_mode=mode)
    out = conv2d(x, w, **params)
    explanations = [explain(w, x, at, **params) for at in all_indices(out.shape)]
    explanations += [explain_grad(w, x, None, "input", at, **params) for at in all_indices(x.shape)]
    explanations += [explain_grad(w, x, None, "weight", at, **params) for at in all_indices(w.shape)]
    copies = 0
    for e in explanations:
        for t in e.terms:
            where = f"{e.kind} at={e.at} tap={t.tap}"
            if t.input_index is None:
                assert mode == "zeros" and t.is_padding and t.input_value == 0.0, where
                continue
            assert len(t.input_index) == x.ndim, where
            assert x[t.input_index] == t.input_value, where
            if layout == "batched":  # the sample is the one the output (or the pixel) belongs to
                n = e.at[0] if e.kind in ("output", "input") else t.output_index[0]
                assert t.input_index[0] == n, where
            copies += t.is_padding
    assert (copies > 0) == (mode != "zeros")


# --------------------------------------------------------------------------- gradient checks


def expected_input_reads(geo, n, c, h, w):
    """Brute force: every (output index, tap) whose tap reads input pixel (n, c, h, w), padding
    copies included, from geometry.source_map's padded-index → source-pixel tables."""
    (pt, pb), (pl, pr) = geo.pads
    rows = source_map(geo.H, pt, pb, geo.mode)
    cols = source_map(geo.W, pl, pr, geo.mode)
    g = c // geo.Cg
    found = []
    for o in range(g * geo.Og, (g + 1) * geo.Og):
        for i, j, u, v in itertools.product(range(geo.Ho), range(geo.Wo), range(geo.kH), range(geo.kW)):
            p = geo.cell(i, j, u, v)
            if rows[p[0]] == h and cols[p[1]] == w:
                found.append(((o, i, j) if geo.unbatched else (n, o, i, j), (u, v)))
    return found


def check_grad(x, w, params, wrt, ats, seed=0):
    geo = Geometry(x, w, params)
    out = conv2d(x, w, None, **params)
    go = np.random.default_rng(seed).standard_normal(out.shape).astype(x.dtype)
    grads = conv2d_backward(go, x, w, **params)
    _, torch_grads = torch_conv2d(x, w, None, go, **params)
    component = {"input": 0, "weight": 1, "bias": 2}[wrt]
    mine, ref = grads[component], torch_grads[component]
    g4 = go[None] if geo.unbatched else go
    for at in ats:
        where = f"wrt={wrt} at={at}"
        e = explain_grad(w, x, go, wrt, at, **params)
        full = normalized(at, mine.shape)
        assert e.kind == wrt and e.at == full, where
        assert e.value == float(mine[at]), where
        assert abs(e.value - float(ref[at])) <= tolerance(ref), where
        assert e.torch_value is None
        products = [t.product for t in e.terms]
        assert abs(e.sum_of_products - e.value) <= sum_tolerance(x.dtype, products), where
        assert abs(float(np.sum(products)) - e.value) <= sum_tolerance(x.dtype, products), where
        for t in e.terms:
            gi = t.output_index if not geo.unbatched else (0,) + t.output_index
            assert t.grad_output_value == float(g4[gi]), where
        if wrt == "input":
            n, c, h, w_ = (0,) + full if geo.unbatched else full
            got = sorted((t.output_index, t.tap) for t in e.terms)
            assert got == sorted(expected_input_reads(geo, n, c, h, w_)), where
            for t in e.terms:
                o, cc, u, v = t.weight_index
                assert cc == c - (c // geo.Cg) * geo.Cg and t.tap == (u, v), where
                assert t.weight_value == float(w[t.weight_index]), where
                assert t.product == t.grad_output_value * t.weight_value, where
                assert t.input_index == full and t.input_value == float(x[t.input_index]), where
                assert t.padded_index == geo.cell(*t.output_index[-2:], u, v), where
                assert t.is_padding == geo.is_padding(t.padded_index), where
            if not e.terms:
                assert e.value == 0.0 and e.reason, where
        elif wrt == "weight":
            o, c, u, v = full
            ch = (o // geo.Og) * geo.Cg + c
            assert len(e.terms) == geo.N * geo.Ho * geo.Wo, where
            expected_outputs = [(nn, o, i, j) for nn in range(geo.N) for i in range(geo.Ho) for j in range(geo.Wo)]
            if geo.unbatched:
                expected_outputs = [oi[1:] for oi in expected_outputs]
            assert sorted(t.output_index for t in e.terms) == expected_outputs, where
            for t in e.terms:
                nn = 0 if geo.unbatched else t.output_index[0]
                i, j = t.output_index[-2:]
                p = geo.cell(i, j, u, v)
                assert t.tap == (u, v) and t.padded_index == p, where
                assert t.input_value == float(geo.padded[nn, ch, p[0], p[1]]), where
                assert t.product == t.grad_output_value * t.input_value, where
                src = geo.source(p)
                expected = None if src is None else (ch,) + src if geo.unbatched else (nn, ch) + src
                assert t.input_index == expected, where
                if src is not None:
                    assert t.input_value == float(x[t.input_index]), where
        else:
            (o,) = full
            assert len(e.terms) == geo.N * geo.Ho * geo.Wo, where
            for t in e.terms:
                assert t.output_index[-3] == o and t.product == t.grad_output_value, where


def _grad_grid():
    params = []
    for (ci, case), (mi, mode), (wi, wrt) in itertools.product(enumerate(CASES), enumerate(PADDING_MODES),
                                                               enumerate(("input", "weight", "bias"))):
        layout = LAYOUTS[(ci + mi) % 2]
        dtype = DTYPES[(ci + mi + wi) % 2]
        params.append(pytest.param(case, layout, mode, dtype, wrt,
                                   id=f"{case.name}-{layout}-{mode}-{np.dtype(dtype).name}-{wrt}"))
    return params


def _grad_ats(wrt, x, w, every=False):
    shape = {"input": x.shape, "weight": w.shape, "bias": (w.shape[0],)}[wrt]
    return all_indices(shape) if every else sample_indices(shape)


@pytest.mark.parametrize("case, layout, mode, dtype, wrt", _grad_grid())
def test_explain_grad_grid(case, layout, mode, dtype, wrt):
    x, w, _ = case.arrays(layout, dtype)
    check_grad(x, w, dict(case.params, padding_mode=mode), wrt, _grad_ats(wrt, x, w))


@pytest.mark.slow
@pytest.mark.parametrize("wrt", ("input", "weight", "bias"))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_explain_grad_grid_every_element(case, layout, mode, dtype, wrt):
    x, w, _ = case.arrays(layout, dtype, seed=2)
    check_grad(x, w, dict(case.params, padding_mode=mode), wrt, _grad_ats(wrt, x, w, every=True), seed=3)


@pytest.mark.parametrize("wrt, at", [("input", (0, 1, 2, 3)), ("weight", (1, 0, 2, 1)), ("bias", (1,))])
def test_explain_grad_default_grad_output_is_ones(wrt, at):
    x, w, _ = CASES[0].arrays("batched", np.float64)
    ones = np.ones(conv2d(x, w, padding=1).shape)
    e_none = explain_grad(w, x, None, wrt, at, padding=1)
    e_ones = explain_grad(w, x, ones, wrt, at, padding=1)
    assert e_none.value == e_ones.value == float(conv2d_backward(ones, x, w, padding=1)[
        {"input": 0, "weight": 1, "bias": 2}[wrt]][at])
    assert [t.product for t in e_none.terms] == [t.product for t in e_ones.terms]


def test_explain_grad_bias_accepts_a_plain_int():
    x, w, _ = CASES[0].arrays("batched", np.float64)
    assert explain_grad(w, x, None, "bias", -1, padding=1).at == (w.shape[0] - 1,)


# --------------------------------------------------------------------------- pixels no window reads


def rows_read(size, k, s, d, pad=0):
    """Brute force over every window i and tap u: the set of real rows read (no padding modes)."""
    out_len = (size + 2 * pad - d * (k - 1) - 1) // s + 1
    return {i * s + u * d - pad for i in range(out_len) for u in range(k)}


UNREAD = [
    # name, (H, W), kernel, stride, dilation, pixel (h, w), the word the reason must use
    pytest.param((5, 5), 2, 2, 1, (4, 4), "floor", id="floor_5x5_k2_s2_pixel_4_4"),
    pytest.param((6, 6), 2, 3, 1, (2, 0), "stride", id="stride_6x6_k2_s3_row_2"),
    pytest.param((6, 6), 2, 2, 3, (1, 0), "dilation", id="dilation_6x6_k2_s2_d3_row_1"),
    # row 4 lies between the taps (rows 2 and 5) of the last window, 1; p // s = 2 is past it
    pytest.param((6, 6), 2, 2, 3, (4, 0), "dilation", id="dilation_6x6_k2_s2_d3_row_4_last_window"),
    pytest.param((7, 4), (3, 1), 3, 2, (1, 2), "dilation", id="dilation_7x4_k3x1_s3_d2_row_1"),
]


@pytest.mark.parametrize("hw, kernel, stride, dilation, pixel, word", UNREAD)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_explain_grad_pixel_no_window_reads(hw, kernel, stride, dilation, pixel, word, layout):
    kH, kW = pair(kernel)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1) + hw)
    w = rng.standard_normal((2, 1, kH, kW))
    if layout == "unbatched":
        x = x[0]
    h, w_ = pixel
    # brute force: nothing reads the row or nothing reads the column
    assert h not in rows_read(hw[0], kH, stride, dilation) or w_ not in rows_read(hw[1], kW, stride, dilation)
    at = (0, h, w_) if layout == "unbatched" else (0, 0, h, w_)
    go = rng.standard_normal(conv2d(x, w, stride=stride, dilation=dilation).shape)
    e = explain_grad(w, x, go, "input", at, stride=stride, dilation=dilation)
    grads = conv2d_backward(go, x, w, stride=stride, dilation=dilation)
    _, (dx, _, _) = torch_conv2d(x, w, None, go, stride=stride, dilation=dilation)
    assert e.terms == []
    assert e.value == 0.0 == float(grads.input[at]) == float(dx[at])
    assert e.sum_of_products == 0.0
    assert isinstance(e.reason, str) and e.reason
    assert word in e.reason
    assert e.reason in str(e)


def _why_unread(size, k, s, d, pad, r):
    """Ground truth for an unread real row r: 'floor' past the last window's end, 'dilation' inside
    the span of an existing window (between its taps), else 'stride' (between two windows)."""
    out_len = (size + 2 * pad - d * (k - 1) - 1) // s + 1
    p = r + pad
    if p > (out_len - 1) * s + (k - 1) * d:
        return "floor"
    if any(i * s <= p <= i * s + (k - 1) * d for i in range(out_len)):
        return "dilation"
    return "stride"


def test_unread_reason_names_the_right_cause_and_only_existing_windows():
    checked = 0
    for size, k, s, d, pad in itertools.product(range(1, 9), (1, 2, 3), (1, 2, 3, 4), (1, 2, 3), (0, 1, 2)):
        out_len = (size + 2 * pad - d * (k - 1) - 1) // s + 1
        if out_len < 1:
            continue
        read = rows_read(size, k, s, d, pad)
        x, w = np.zeros((1, 1, size, 1)), np.ones((1, 1, k, 1))
        for r in sorted(set(range(size)) - read):
            e = explain_grad(w, x, None, "input", (0, 0, r, 0), stride=(s, 1), dilation=(d, 1), padding=(pad, 0))
            where = f"size {size} k {k} s {s} d {d} padding {pad} row {r}: {e.reason!r}"
            assert e.terms == [] and e.value == 0.0, where
            assert _why_unread(size, k, s, d, pad, r) in e.reason, where
            assert all(int(i) < out_len for i in re.findall(r"window (\d+)", e.reason)), where
            checked += 1
    assert checked > 100


# --------------------------------------------------------------------------- padding at the corners

H4, W5 = 4, 5


def _corner_case(mode):
    x = np.arange(1, 1 + H4 * W5, dtype=np.float64).reshape(1, 1, H4, W5) * 1.5 - 7.0
    w = np.random.default_rng(4).standard_normal((1, 1, 3, 3))
    return x, w


@pytest.mark.parametrize("corner", ["top_left", "bottom_right"])
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_padding_terms_at_corners(mode, corner):
    x, w = _corner_case(mode)
    # 3×3 kernel, padding 1: the output is 4×5; output (i, j) tap (u, v) reads real (i+u−1, j+v−1)
    i, j = (0, 0) if corner == "top_left" else (H4 - 1, W5 - 1)
    e = explain(w, x, (0, 0, i, j), padding=1, padding_mode=mode)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode=NP_PAD_MODE[mode])
    pad_terms = [t for t in e.terms if t.is_padding]
    assert len(pad_terms) == 5  # the row u=0 (or 2) and the column v=0 (or 2): 3 + 3 − 1
    for t in e.terms:
        u, v = t.tap
        r, c = i + u - 1, j + v - 1
        outside = not (0 <= r < H4 and 0 <= c < W5)
        assert t.is_padding == outside
        assert t.input_value == padded[0, 0, i + u, j + v]
        if not outside:
            assert t.input_index == (0, 0, r, c)
        elif mode == "zeros":
            assert t.input_index is None and t.input_value == 0.0
        else:
            src = (source_pixel(r, H4, mode), source_pixel(c, W5, mode))
            assert t.input_index == (0, 0) + src
            assert x[t.input_index] == t.input_value
    # the corner tap, by hand from the rule:
    corner_tap = e.terms[0] if corner == "top_left" else e.terms[-1]
    expected = {
        "top_left": {"zeros": None, "reflect": (0, 0, 1, 1), "replicate": (0, 0, 0, 0),
                     "circular": (0, 0, H4 - 1, W5 - 1)},
        # real (4, 5): reflect 2(n−1) − r → (2, 3); replicate → (3, 4); circular mod → (0, 0)
        "bottom_right": {"zeros": None, "reflect": (0, 0, 2, 3), "replicate": (0, 0, H4 - 1, W5 - 1),
                         "circular": (0, 0, 0, 0)},
    }[corner][mode]
    r, c = (-1, -1) if corner == "top_left" else (H4, W5)
    if mode != "zeros":
        assert expected == (0, 0, source_pixel(r, H4, mode), source_pixel(c, W5, mode))
    assert corner_tap.is_padding
    assert corner_tap.input_index == expected
    assert corner_tap.input_value == (0.0 if expected is None else x[expected])
    out = conv2d(x, w, padding=1, padding_mode=mode)
    assert e.value == float(out[0, 0, i, j])


# --------------------------------------------------------------------------- torch and convscope layers

TORCH_LAYERS = [
    pytest.param(dict(in_channels=2, out_channels=3, kernel_size=3, padding=1), "float32", "batched", id="plain"),
    pytest.param(dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="reflect"),
                 "float32", "batched", id="reflect"),
    pytest.param(dict(in_channels=2, out_channels=2, kernel_size=(2, 3), padding="same"), "float64", "unbatched",
                 id="same_even"),
    pytest.param(dict(in_channels=2, out_channels=2, kernel_size=(3, 2), padding="same", padding_mode="circular",
                      dilation=(1, 2)), "float32", "batched", id="same_circular_dilated"),
    pytest.param(dict(in_channels=4, out_channels=2, kernel_size=(2, 3), stride=(2, 1), padding=(1, 2),
                      groups=2, bias=False, padding_mode="replicate"), "float64", "batched", id="groups_no_bias"),
]


def _torch_layer(kwargs, dtype, seed=0):
    return torch_module("Conv2d", seed=seed, dtype=dtype, **kwargs)


def _torch_randn(shape, dtype, seed=0):
    return to_tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def _torch_input(layer, dtype, layout, seed=0):
    shape = (layer.in_channels, 6, 7) if layout == "unbatched" else (2, layer.in_channels, 6, 7)
    return _torch_randn(shape, dtype, seed)


@pytest.mark.parametrize("kwargs, dtype, layout", TORCH_LAYERS)
def test_explain_torch_layer(kwargs, dtype, layout):
    layer = _torch_layer(kwargs, dtype)
    x = _torch_input(layer, dtype, layout)
    torch_out = torch_forward(layer, x)
    wn = layer.weight.detach().numpy()
    bn = None if layer.bias is None else layer.bias.detach().numpy()
    padding = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
    out = conv2d(x.numpy(), wn, bn, stride=tuple(layer.stride), padding=padding, dilation=tuple(layer.dilation),
                 groups=layer.groups, padding_mode=layer.padding_mode)
    for at in sample_indices(torch_out.shape):
        e = explain(layer, x, at)
        assert e.value == float(out[at])
        assert e.torch_value is not None
        assert abs(e.torch_value - float(torch_out[at])) <= tolerance(torch_out)
        assert abs(e.torch_value - e.value) <= tolerance(torch_out)
        assert e.has_bias == (layer.bias is not None)
        assert e.bias == (0.0 if bn is None else float(bn[e.at[-3]]))
    # a NumPy input with the torch layer: still torch's number
    e = explain(layer, x.numpy(), sample_indices(torch_out.shape)[1])
    assert e.torch_value is not None and abs(e.torch_value - e.value) <= tolerance(torch_out)
    assert "torch computes" in str(e)


def test_explain_torch_tensor_with_weight_sets_torch_value():
    rng = np.random.default_rng(5)
    x, w, b = random_case(rng, (1, 2, 5, 6), (3, 2, 3, 3), np.float32)
    e = explain(to_tensor(w), to_tensor(x), (0, 2, 1, 1), bias=b, padding=1, padding_mode="reflect")
    ref, _ = torch_conv2d(x, w, b, None, padding=1, padding_mode="reflect")
    assert e.value == float(conv2d(x, w, b, padding=1, padding_mode="reflect")[0, 2, 1, 1])
    assert abs(e.torch_value - float(ref[0, 2, 1, 1])) <= tolerance(ref)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_explain_convscope_layer(mode):
    layer = convscope.Conv2d(2, 3, (3, 2), stride=2, padding=1, padding_mode=mode, dtype=np.float64, seed=0)
    x = np.random.default_rng(6).standard_normal((2, 2, 7, 6))
    y = layer(x)
    for at in sample_indices(y.shape):
        e = explain(layer, x, at)
        assert e.value == float(y[at])
        assert e.torch_value is None
        assert e.spec.stride == (2, 2) and e.spec.padding_mode == mode
        assert abs(e.sum_of_products + e.bias - e.value) <= sum_tolerance(np.float64, [t.product for t in e.terms],
                                                                           e.bias)
    go = np.random.default_rng(13).standard_normal(y.shape)
    grads = conv2d_backward(go, x, layer.weight, stride=2, padding=1, padding_mode=mode)
    for wrt, at in (("input", (1, 1, -1, 0)), ("weight", (2, 1, 0, 1)), ("bias", (0,))):
        e = explain_grad(layer, x, go, wrt, at)
        assert e.value == float(grads[{"input": 0, "weight": 1, "bias": 2}[wrt]][at])
        assert e.torch_value is None


def test_explain_of_a_torch_conv1d_needs_a_1d_input():
    with pytest.raises(ValueError, match=r"input must be 2-D \(C, L\) or 3-D \(N, C, L\), got shape \(1, 1, 5, 5\)"):
        explain(torch_conv_layer(1, np.ones((1, 1, 3), np.float32)), np.zeros((1, 1, 5, 5), np.float32), (0, 0, 0, 0))


@pytest.mark.parametrize("kind", ["torch", "convscope"])
@pytest.mark.parametrize("extra", [dict(bias=np.zeros(3, np.float32)), dict(stride=2), dict(padding=1),
                                   dict(padding_mode="reflect"), dict(groups=1, dilation=2)],
                         ids=["bias", "stride", "padding", "padding_mode", "dilation"])
def test_explain_layer_with_hyper_parameters_is_a_type_error(kind, extra):
    layer = (torch_module("Conv2d", 2, 3, 3, seed=0) if kind == "torch"
             else convscope.Conv2d(2, 3, 3, seed=0))
    x = np.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(TypeError):
        explain(layer, x, (0, 0, 0, 0), **extra)
    if "bias" not in extra:
        with pytest.raises(TypeError):
            explain_grad(layer, x, None, "input", (0, 0, 0, 0), **extra)


@pytest.mark.parametrize("wrt, at", [("input", (1, 0, 0, 0)), ("input", (0, 3, -1, -1)), ("weight", (2, 1, 1, 0)),
                                     ("weight", (-1, -1, -1, -1)), ("bias", (0,))])
def test_explain_grad_torch_layer(wrt, at):
    layer = _torch_layer(dict(in_channels=4, out_channels=4, kernel_size=(3, 2), stride=(1, 2), padding=1,
                              groups=2, padding_mode="reflect"), "float64")
    x = _torch_input(layer, "float64", "batched")
    go = _torch_randn(torch_forward(layer, x).shape, "float64", 1)
    e = explain_grad(layer, x, go, wrt, at)
    grads = conv2d_backward(go.numpy(), x.numpy(), layer.weight.detach().numpy(), stride=(1, 2), padding=1,
                            groups=2, padding_mode="reflect")
    mine = grads[{"input": 0, "weight": 1, "bias": 2}[wrt]]
    assert e.value == float(mine[at])
    _, dx = torch_module_backward(layer, x, go)
    ref = {"input": dx, "weight": parameter_grad(layer, "weight"), "bias": parameter_grad(layer, "bias")}[wrt]
    assert e.torch_value is not None
    assert abs(e.torch_value - float(ref[at])) <= tolerance(ref)
    assert abs(e.value - float(ref[at])) <= tolerance(ref)


# --------------------------------------------------------------------------- seeds

X001 = np.array([[0.7504, 0.1157, 1.4940, -0.2619, -0.4732],
                 [0.1497, 0.0805, 2.0829, -0.0925, -1.3367],
                 [1.7471, 0.5205, -0.8532, -0.7358, -1.3931],
                 [0.1159, -0.2376, 1.2683, -0.0959, -1.3171],
                 [-0.1620, -1.8539, 0.0893, -0.0568, -0.0758]])
W001 = np.array([[0.2405, 0.3018, 0.0011], [-0.1691, -0.0701, -0.0334], [-0.0429, 0.2668, -0.2152]])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_seed001_the_bias_explains_the_top_left_element(dtype):
    x = X001.astype(dtype)[None, None]
    w = W001.astype(dtype)[None, None]
    # the forum's printed 0.5142 minus its sum of w·x: the bias its layer must have had
    b = np.array([0.5142 - float(np.sum(W001.astype(dtype) * X001.astype(dtype)[:3, :3]))], dtype=dtype)
    e = explain(w, x, (0, 0, 0, 0), bias=b)
    assert round(e.sum_of_products, 4) == 0.3640
    assert round(e.value, 4) == 0.5142
    assert e.bias == float(b[0])
    text = str(e)
    assert "bias" in text and "+ bias[0]" in text
    assert "0.3640" in text and "0.5142" in text
    # the torch version of the forum's layer
    m = torch_conv_layer(2, w, b)
    et = explain(m, to_tensor(x), (0, 0, 0, 0))
    assert round(et.torch_value, 4) == 0.5142 and et.value == e.value


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_seed001_border_of_1x1_conv_with_padding_is_the_bias(dtype):
    x = X001.astype(dtype)[None, None]
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((1, 1, 1, 1)).astype(dtype), rng.standard_normal(1).astype(dtype)
    out = conv2d(x, w, b, padding=1)
    assert out.shape == (1, 1, 7, 7)
    border = [(i, j) for i in range(7) for j in range(7) if i in (0, 6) or j in (0, 6)]
    for i, j in border:
        e = explain(w, x, (0, 0, i, j), bias=b, padding=1)
        assert len(e.terms) == 1 and e.terms[0].is_padding and e.terms[0].input_index is None
        assert e.sum_of_products == 0.0
        assert e.value == float(b[0]) == float(out[0, 0, i, j])
        assert "bias alone" in str(e)
    e = explain(w, x, (0, 0, 1, 1), bias=b, padding=1)
    assert not e.terms[0].is_padding and e.terms[0].input_index == (0, 0, 0, 0)
    assert e.value == float(out[0, 0, 1, 1])
    assert "bias alone" not in str(e)


A004 = np.array([[5, 27, 9, -15, 12], [2, 4, -2, -7, 8], [-8, 16, 5, 23, -6],
                 [-17, 7, 9, -14, 3], [10, -5, 13, 6, -11]], dtype=np.float32)
B004 = np.array([[8, 4], [2, 6]], dtype=np.float32)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_seed004_weight_gradient(layout):
    A = A004[None] if layout == "unbatched" else A004[None, None]
    B = B004[None, None]
    ones = np.ones(conv2d(A, B, stride=2).shape, np.float32)
    grads = conv2d_backward(ones, A, B, stride=2)
    _, (_, dw_torch, _) = torch_conv2d(A, B, None, ones, stride=2)
    for u, v in itertools.product(range(2), range(2)):
        e = explain_grad(B, A, None, "weight", (0, 0, u, v), stride=2)
        assert e.value == float(grads.weight[0, 0, u, v]) == float(dw_torch[0, 0, u, v])
        # by hand: output (i, j) of the 2×2 output reads A[2i + u, 2j + v] through tap (u, v)
        by_hand = [float(A004[2 * i + u, 2 * j + v]) for i in range(2) for j in range(2)]
        assert [t.input_value for t in e.terms] == by_hand
        assert [t.product for t in e.terms] == by_hand  # grad_output is 1
        assert e.value == sum(by_hand)
        assert f"∂L/∂w[0, 0, {u}, {v}] = {int(e.value)}" in str(e)  # whole numbers print without decimals
    np.testing.assert_array_equal(dw_torch[0, 0], [[11, 51], [-8, -10]])
    e = explain_grad(B, A, None, "input", (0, 4, 4) if layout == "unbatched" else (0, 0, 4, 4), stride=2)
    assert e.value == 0.0 and e.terms == [] and "floor" in e.reason


SOBEL = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float32)
X003 = np.array([[1, 1, 1, 2, 3], [1, 1, 1, 2, 3], [1, 1, 1, 2, 3],
                 [2, 2, 2, 2, 3], [3, 3, 3, 3, 3], [4, 4, 4, 4, 4]], dtype=np.float32)


def test_seed003_sobel_gradients():
    x, k = X003[None, None], SOBEL[None, None]
    ones = np.ones(conv2d(x, k).shape, np.float32)
    grads = conv2d_backward(ones, x, k)
    _, (dx, dw, _) = torch_conv2d(x, k, None, ones)
    for u, v in itertools.product(range(3), range(3)):
        e = explain_grad(k, x, None, "weight", (0, 0, u, v))
        assert e.value == float(grads.weight[0, 0, u, v]) == float(dw[0, 0, u, v])
        # by hand: the output is 4×3, so tap (u, v) reads the block X[u:u+4, v:v+3]
        assert e.value == float(X003[u:u + 4, v:v + 3].sum())
        assert len(e.terms) == 12
    for h, w_ in itertools.product(range(6), range(5)):
        e = explain_grad(k, x, None, "input", (0, 0, h, w_))
        assert e.value == float(grads.input[0, 0, h, w_]) == float(dx[0, 0, h, w_])
        # by hand: output (i, j) reads pixel (h, w) through tap (h − i, w − j) when both lie in range
        taps = sorted((h - i, w_ - j) for i in range(4) for j in range(3) if 0 <= h - i < 3 and 0 <= w_ - j < 3)
        assert sorted(t.tap for t in e.terms) == taps
        assert e.value == sum(float(SOBEL[t]) for t in taps)


# --------------------------------------------------------------------------- errors


def _small():
    rng = np.random.default_rng(7)
    return random_case(rng, (2, 2, 5, 5), (3, 2, 3, 3), np.float64)


@pytest.mark.parametrize("at, error, word", [
    ((0, 0, 0), ValueError, "at"),
    ((0, 0, 0, 0, 0), ValueError, "at"),
    ((2, 0, 0, 0), ValueError, "at"),
    ((0, 3, 0, 0), ValueError, "at"),
    ((0, 0, 3, 0), ValueError, "at"),
    ((0, 0, 0, -4), ValueError, "at"),
    ((0, 0, 1.0, 0), TypeError, "at"),
    ((0, "0", 0, 0), TypeError, "at"),
    ((0, 0, True, 0), TypeError, "at"),
    ("0000", TypeError, "at"),
    (None, TypeError, "at"),
])
def test_explain_bad_at(at, error, word):
    x, w, b = _small()
    with pytest.raises(error, match=word):
        explain(w, x, at, bias=b)


def test_explain_unbatched_at_must_have_three_indices():
    x, w, b = _small()
    with pytest.raises(ValueError, match="at"):
        explain(w, x[0], (0, 0, 0, 0), bias=b)
    with pytest.raises(ValueError, match="at"):
        explain_grad(w, x[0], None, "input", (0, 0, 0, 0))


@pytest.mark.parametrize("wrt, at, error", [
    ("input", (0, 0, 0), ValueError),
    ("input", (0, 2, 0, 0), ValueError),
    ("input", (0, 0, 5, 0), ValueError),
    ("input", (0, 0, 0.5, 0), TypeError),
    ("weight", (0, 0, 0), ValueError),
    ("weight", (3, 0, 0, 0), ValueError),
    ("weight", (0, 0, 0, -4), ValueError),
    ("bias", (0, 0), ValueError),
    ("bias", (3,), ValueError),
    ("bias", (1.0,), TypeError),
    ("input", None, TypeError),
])
def test_explain_grad_bad_at(wrt, at, error):
    x, w, _ = _small()
    with pytest.raises(error, match="at"):
        explain_grad(w, x, None, wrt, at)


@pytest.mark.parametrize("wrt", ["inputs", "Input", "x", "", None, 0])
def test_explain_grad_bad_wrt(wrt):
    x, w, _ = _small()
    with pytest.raises(ValueError, match="wrt"):
        explain_grad(w, x, None, wrt, (0, 0, 0, 0))


@pytest.mark.parametrize("shape", [(2, 3, 3, 2), (1, 3, 3, 3), (3, 3, 3), (2, 3, 4, 4)])
def test_explain_grad_grad_output_wrong_shape(shape):
    x, w, _ = _small()
    with pytest.raises(ValueError, match="grad_output"):
        explain_grad(w, x, np.ones(shape), "weight", (0, 0, 0, 0))


def test_input_weight_mismatch_is_the_librarys_error():
    x, w, b = _small()
    w_bad = w[:, :1]  # expects 1 input channel, x has 2
    with pytest.raises(ValueError) as from_conv:
        conv2d(x, w_bad, b)
    with pytest.raises(ValueError, match=re.escape(str(from_conv.value))):
        explain(w_bad, x, (0, 0, 0, 0), bias=b)
    with pytest.raises(ValueError, match=re.escape(str(from_conv.value))):
        explain_grad(w_bad, x, None, "input", (0, 0, 0, 0))
    with pytest.raises(ValueError) as from_conv:
        conv2d(x, w, b, groups=2)  # 3 output channels do not split into 2 groups
    with pytest.raises(ValueError, match=re.escape(str(from_conv.value))):
        explain(w, x, (0, 0, 0, 0), bias=b, groups=2)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_callers_arrays_are_not_modified(mode):
    x, w, b = _small()
    go = np.random.default_rng(8).standard_normal(conv2d(x, w, b, padding=1, padding_mode=mode).shape)
    before = [a.copy() for a in (x, w, b, go)]
    explain(w, x, (1, 2, 0, 0), bias=b, padding=1, padding_mode=mode)
    for wrt, at in (("input", (1, 1, 0, 0)), ("weight", (2, 1, 0, 2)), ("bias", (1,))):
        explain_grad(w, x, go, wrt, at, padding=1, padding_mode=mode)
    for a, a0, name in zip((x, w, b, go), before, ("x", "weight", "bias", "grad_output")):
        assert np.array_equal(a, a0), f"{name} was modified"
    xt, wt = to_tensor(x), to_tensor(w)
    explain(wt, xt, (0, 0, 0, 0), padding=1, padding_mode=mode)
    explain_grad(wt, xt, None, "weight", (0, 0, 0, 0), padding=1, padding_mode=mode)
    assert np.array_equal(xt.numpy(), x) and np.array_equal(wt.numpy(), w)


# --------------------------------------------------------------------------- text and HTML

TD_WIN = re.compile(r'<td class="[^"]*\bcs-win\b[^"]*"')
TD_WIN_PAD = re.compile(r'<td class="(?=[^"]*\bcs-win\b)(?=[^"]*\bcs-pad\b)[^"]*"')


def _text_case(mode="zeros", groups=1, C=2, bias=True, unbatched=False, padding=1, dtype=np.float64):
    rng = np.random.default_rng(9)
    x_shape = (C, 4, 5) if unbatched else (1, C, 4, 5)
    x, w, b = random_case(rng, x_shape, (2 * groups, C // groups, 3, 2), dtype, bias=bias)
    return x, w, b, dict(padding=padding, padding_mode=mode, groups=groups)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_text_names_value_bias_output_and_marks_padding(mode):
    x, w, b, params = _text_case(mode)
    e = explain(w, x, (0, 1, 0, 0), bias=b, **params)
    text = str(e)
    assert f"{e.value:.4f}" in text
    assert text.splitlines()[0] == f"out[0, 1, 0, 0] = {e.value:.4f}"
    assert "+ bias[1]" in text and "= out[0, 1, 0, 0]" in text
    assert f"{e.sum_of_products:.4f}" in text and f"{e.bias:.4f}" in text
    assert mode in text
    n_pad = int(e.window_padding.sum())
    assert n_pad > 0
    # each padding cell of each window shown is marked with a '*' right after its number
    assert len(re.findall(r"\d\*", text)) == n_pad
    for t in e.terms:
        assert f"{t.product:.4f}".lstrip("-") in text


def test_text_without_padding_has_no_marks_and_without_bias_says_so():
    x, w, _, params = _text_case(padding=0, bias=False)
    e = explain(w, x, (0, 0, 1, 1), **params)
    text = str(e)
    assert not re.findall(r"\d\*", text)
    assert "+ bias (none)" in text and "+ bias[" not in text


def test_text_multi_channel_and_groups():
    x, w, b, params = _text_case(mode="reflect", groups=2, C=4)
    e = explain(w, x, (0, 3, 2, 1), bias=b, **params)
    text = str(e)
    assert "groups 2" in text and "sees input channels" in text
    assert "sum for input channel 2" in text and "sum for input channel 3" in text
    assert "sum for input channel 0" not in text
    for c in range(2):
        block = [t.product for t in e.terms[c * 6:(c + 1) * 6]]
        assert f"sum for input channel {2 + c}: {sum(block):.4f}" in text
    x1, w1, b1, params1 = _text_case(C=2)
    assert "sum for input channel 1" in str(explain(w1, x1, (0, 0, 0, 0), bias=b1, **params1))


def test_text_unbatched_names_out_c_i_j():
    x, w, b, params = _text_case(unbatched=True)
    e = explain(w, x, (1, -1, -1), bias=b, **params)
    out = conv2d(x, w, b, **{k: v for k, v in params.items()})
    at = (1, out.shape[1] - 1, out.shape[2] - 1)
    assert e.at == at
    assert str(e).splitlines()[0] == f"out[{at[0]}, {at[1]}, {at[2]}] = {e.value:.4f}"
    assert f"= out[{at[0]}, {at[1]}, {at[2]}]" in str(e)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_text_and_html_of_a_batch_name_the_sample_read(mode):
    """Each product row names the pixel x[n, c, h, w] it read, n included, with that pixel's value."""
    rng = np.random.default_rng(22)
    x = rng.integers(-9, 10, size=(2, 1, 4, 4)).astype(np.float64)
    w = rng.integers(-3, 4, size=(1, 1, 3, 3)).astype(np.float64)
    pixel = re.compile(r"x\[(\d+), (\d+), (\d+), (\d+)\]\s+(-?\d+) ")
    e = explain(w, x, (1, 0, 0, 1), padding=1, padding_mode=mode)
    rows = pixel.findall(str(e))
    assert len(rows) == len([t for t in e.terms if t.input_index is not None]) > 0
    for *index, value in rows:
        assert int(index[0]) == 1 and x[tuple(int(v) for v in index)] == float(value)
    page = e._repr_html_()
    for index in re.findall(r'title="(?:padding \(\w+\) ← )?x\[([\d, ]+)\]"', page):
        assert index.startswith("1, 0, ")
    grad_row = re.compile(r"grad_out\[(\d+), 0, \d+, \d+\]\s+-?\d+ × (?:padding ← )?x\[(\d+), (\d+), (\d+), (\d+)\]"
                          r"\s+(-?\d+) =")
    e = explain_grad(w, x, None, "weight", (0, 0, 2, 2), padding=1, padding_mode=mode)
    assert e.terms[-1].output_index[0] == 1
    rows = grad_row.findall(e.text())
    shown = e.terms[:24]  # the text lists 24 of the 32 terms: 16 of sample 0, then 8 of sample 1
    assert len(rows) == len([t for t in shown if t.input_index is not None])
    assert {int(r[0]) for r in rows} == {0, 1}
    for n, *index, value in rows:
        assert int(index[0]) == int(n) and x[tuple(int(v) for v in index)] == float(value)
    html_rows = re.findall(r"<td>grad_out\[(\d+), [^<]*</td><td>[^<]*</td><td>(?:padding ← )?x\[(\d+), ",
                           e._repr_html_())
    assert len(html_rows) == len([t for t in e.terms if t.input_index is not None])
    assert all(n == m for n, m in html_rows)


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("groups, C", [(1, 1), (1, 2), (2, 4)])
def test_html_highlights_the_window(mode, groups, C):
    x, w, b, params = _text_case(mode, groups=groups, C=C)
    kH, kW = w.shape[2:]
    for at in [(0, 0, 0, 0), (0, 1, -1, -1), (0, 1, 2, 3)]:
        e = explain(w, x, at, bias=b, **params)
        page = e._repr_html_()
        assert "cs-win" in page
        shown = min(C // groups, 4)
        assert len(TD_WIN.findall(page)) == kH * kW * shown
        assert len(TD_WIN_PAD.findall(page)) == int(e.window_padding[:shown].sum())
        assert f"{e.value:.4f}" in page
        assert html.escape(f"= out[{', '.join(map(str, e.at))}]") in page
        # no raw '<' or '>' outside tags: every number and name is escaped
        assert "<" not in re.sub(r"<[^<>]*>", "", page).replace("&lt;", "")
        assert ">" not in re.sub(r"<[^<>]*>", "", page)


def _cells(page: str, caption_start: str) -> list[list[set[str]]]:
    """The class sets of each cell of the first table whose caption starts with ``caption_start``."""
    at = page.index(f"<caption>{html.escape(caption_start)}")
    table = page[at:page.index("</table>", at)]
    return [[set(c.split()) for c in re.findall(r'<td(?: class="([^"]*)")?', row)]
            for row in re.findall(r"<tr>(.*?)</tr>", table)]


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_html_links_each_tap_across_the_tables(mode):
    """Every tap's key sits on its padded-input cell, window cell, weight and product, and nowhere else;
    a padding cell's key also marks (``s-`` prefix) the real pixel it copies."""
    x, w, b, params = _text_case(mode, C=2)
    e = explain(w, x, (0, 1, 0, 4), bias=b, stride=1, dilation=(1, 2), **params)
    page = e._repr_html_()
    (pt, _), (pl, _) = e.spec.padding
    for c in range(2):
        ch = e.channels.start + c
        padded = _cells(page, f"padded input x̃, channel {ch}")
        window = _cells(page.split(f"<b>input channel {ch}</b>")[1], "window")
        kernel = _cells(page, f"kernel w[1, {c}]")
        products = _cells(page.split(f"<b>input channel {ch}</b>")[1], "products")
        block = [t for t in e.terms if t.weight_index[0] == c]
        for t in block:
            key = f"cs-t{c}-{t.tap[0]}-{t.tap[1]}"
            u, v = t.tap
            for grid in (window, kernel, products):
                assert key in grid[u][v]
                assert sum(key in cell for row in grid for cell in row) == 1
            r, q = t.padded_index
            assert key in padded[r][q] and "cs-win" in padded[r][q]
            assert sum(key in cell for row in padded for cell in row) == 1
            sources = [(i, j) for i, row in enumerate(padded) for j, cell in enumerate(row) if "s-" + key in cell]
            if t.is_padding and t.input_index is not None:
                assert sources == [(t.input_index[-2] + pt, t.input_index[-1] + pl)]
                assert "cs-src" in padded[sources[0][0]][sources[0][1]]
            else:
                assert sources == []
        copies = any(t.is_padding and t.input_index is not None for t in block)
        assert any("cs-src" in cell for row in padded for cell in row) == copies
    assert (mode != "zeros") == bool(re.search(r'<td class="[^"]*\bcs-src\b', page))


def test_many_input_channels_show_four_and_sum_the_rest():
    rng = np.random.default_rng(11)
    x, w, b = random_case(rng, (1, 6, 5, 5), (2, 6, 3, 3), np.float64)
    e = explain(w, x, (0, 1, 0, 0), bias=b, padding=1)
    text, page = str(e), e._repr_html_()
    sums = [sum(t.product for t in e.terms[c * 9:(c + 1) * 9]) for c in range(6)]
    for c in range(4):
        assert f"sum for input channel {c}: {sums[c]:.4f}" in text
    for c in (4, 5):
        assert f"sum for input channel {c}:" not in text
        assert f"{c}: {sums[c]:.4f}" in text
    assert len(TD_WIN.findall(page)) == 9 * 4
    assert abs(sum(sums) + e.bias - e.value) <= sum_tolerance(np.float64, [t.product for t in e.terms], e.bias)


def test_html_of_a_large_input_leaves_out_the_padded_picture():
    rng = np.random.default_rng(12)
    x, w, b = random_case(rng, (1, 1, 45, 45), (1, 1, 3, 3), np.float64)
    e = explain(w, x, (0, 0, 0, 0), bias=b, padding=1)
    page = e._repr_html_()
    assert not TD_WIN.findall(page)
    assert f"{e.value:.4f}" in page and "cs-pad" in page  # the window table still marks its padding


def test_html_and_text_of_gradients():
    x, w, _, params = _text_case("circular")
    go = np.random.default_rng(10).standard_normal(conv2d(x, w, **params).shape)
    for wrt, at in (("input", (0, 1, 0, 0)), ("weight", (1, 0, 2, 1)), ("bias", (0,))):
        e = explain_grad(w, x, go, wrt, at, **params)
        text, page = str(e), e._repr_html_()
        assert f"{e.value:.4f}" in text and f"{e.value:.4f}" in page
        assert "<" not in re.sub(r"<[^<>]*>", "", page)
    # 4×5 input, 3×2 kernel, stride 3: columns 0, 1 and 3, 4 are read, column 2 is skipped
    e = explain_grad(w, x, None, "input", (0, 0, 1, 2), stride=3, padding=0, groups=1)
    assert e.terms == [] and "stride" in e.reason
    assert html.escape(e.reason) in e._repr_html_()


# --------------------------------------------------------------------------- property


@st.composite
def configs(draw):
    groups = draw(st.sampled_from([1, 2]))
    Cg = draw(st.integers(1, 2))
    Og = draw(st.integers(1, 2))
    kH, kW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dH, dW = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    mode = draw(st.sampled_from(PADDING_MODES))
    if draw(st.booleans()):
        sH, sW = 1, 1
        padding = draw(st.sampled_from(["same", "valid"]))
    else:
        sH, sW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    (pt, pb), (pl, pr) = resolve_padding(padding, (kH, kW), (dH, dW))
    limit_ok = {"zeros": True, "replicate": True,
                "reflect": max(pt, pb) < H and max(pl, pr) < W,
                "circular": max(pt, pb) <= H and max(pl, pr) <= W}[mode]
    Ho = (H + pt + pb - dH * (kH - 1) - 1) // sH + 1
    Wo = (W + pl + pr - dW * (kW - 1) - 1) // sW + 1
    assume(limit_ok and Ho >= 1 and Wo >= 1)
    batched = draw(st.booleans())
    dtype = draw(st.sampled_from(DTYPES))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    N = draw(st.integers(1, 2)) if batched else None
    out_shape = ((N,) if batched else ()) + (Og * groups, Ho, Wo)
    at = tuple(draw(st.integers(-s, s - 1)) for s in out_shape)
    rng = np.random.default_rng(seed)
    x_shape = ((N,) if batched else ()) + (Cg * groups, H, W)
    x, w, b = random_case(rng, x_shape, (Og * groups, Cg, kH, kW), dtype, bias=bias)
    params = dict(stride=(sH, sW), padding=padding, dilation=(dH, dW), groups=groups, padding_mode=mode)
    return x, w, b, params, at


@settings(max_examples=40, deadline=None)
@given(configs())
def test_property_value_is_conv2d_and_terms_sum_to_it(config):
    x, w, b, params, at = config
    out = conv2d(x, w, b, **params)
    e = explain(w, x, at, bias=b, **params)
    assert e.value == float(out[at])
    products = [t.product for t in e.terms]
    assert len(products) == w.shape[1] * w.shape[2] * w.shape[3]
    assert abs(e.sum_of_products + e.bias - e.value) <= sum_tolerance(x.dtype, products, e.bias)
    assert all(t.product == t.input_value * t.weight_value for t in e.terms)


# --------------------------------------------------------------------------- size bound


def test_an_explanation_refuses_too_many_terms_before_computing(monkeypatch):
    """More than MAX_TERMS terms is a ValueError that says how to ask a smaller question, raised before
    the convolution (or its backward) runs; at the bound the explanation is built."""
    import importlib

    core = importlib.import_module("convscope.explain.core")  # convscope.explain is also the function
    x = np.ones((2, 2, 4, 4))
    w = np.ones((3, 2, 2, 2))
    cases = [(explain, (w, x, (0, 0, 0, 0)), 2 * 2 * 2),                      # (C/groups)·kH·kW
             (explain_grad, (w, x, None, "input", (0, 0, 1, 1)), 3 * 2 * 2),  # C_out · taps on row h · on column w
             (explain_grad, (w, x, None, "weight", (0, 0, 0, 0)), 2 * 3 * 3),  # N·H_out·W_out
             (explain_grad, (w, x, None, "bias", (0,)), 2 * 3 * 3)]
    for function, args, count in cases:
        assert len(function(*args).terms) == count
        monkeypatch.setattr(core, "MAX_TERMS", count)
        assert len(function(*args).terms) == count
        monkeypatch.setattr(core, "MAX_TERMS", count - 1)
        for name in ("_run_forward", "_run_backward"):     # the functional API's runners of a bound call
            monkeypatch.setattr(core, name, lambda *a, **k: pytest.fail("computed before the size check"))
        with pytest.raises(ValueError, match=f"= {count} terms; an explanation builds at most {count - 1}: "
                                             "ask a smaller question"):
            function(*args)
        monkeypatch.undo()


def test_a_weight_gradient_of_a_large_image_is_refused_quickly():
    x = np.zeros((1, 3000, 3000), dtype=np.float32)
    with pytest.raises(ValueError, match=r"H_out·W_out = 3000·3000 = 9000000 terms.*crop of the input"):
        explain_grad(np.ones((1, 1, 1, 1), dtype=np.float32), x, None, "weight", (0, 0, 0, 0))


@pytest.mark.parametrize("decimals, error", [(-1, ValueError), (11, ValueError), (10**8, ValueError),
                                             (2.0, TypeError), (True, TypeError)])
def test_text_decimals_between_0_and_10(decimals, error):
    e = explain(np.ones((1, 1, 2, 2)), np.ones((1, 3, 3)), (0, 0, 0))
    with pytest.raises(error, match="decimals"):
        e.text(decimals)
    assert e.text(10).startswith("out[0, 0, 0] = 4.0000000000")
