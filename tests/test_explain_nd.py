"""explain / explain_grad / Explainer in 1, 2 and 3 dimensions, checked against conv{n}d, the definition and torch.

Each term is recomputed here without convscope's geometry: the input is padded with ``np.pad`` (zeros,
reflect, edge, wrap), the tap's cell is read from the definition ``x̃[n, g·Cg + c, i·s + u·d, …]``, and
the real pixel a padding cell copies is read off ``np.pad`` of the index ``arange(size)``.  Gradient
terms of ∂input are compared with a brute-force enumeration of every output and tap.  The Explainer
is shown to compute the convolution once however many elements it explains (animate, the explore
data and the notebook widget included), and explain's and explain_shape's "never read" lines are
shown to agree, both with each other and with a brute-force count.
"""
from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from oracle import require_torch  # noqa: E402
require_torch()

import convscope  # noqa: E402
from convscope import Explainer, explain, explain_grad, explain_shape  # noqa: E402
from convscope.geometry import output_length, unread_cause  # noqa: E402
from oracle import to_tensor, tolerance, torch_conv_layer, torch_conv_nd  # noqa: E402

core = importlib.import_module("convscope.explain.core")  # convscope.explain is also the function

pytestmark = [pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
NP_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
SUM_RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


# --------------------------------------------------------------------------- independent helpers


def per_axis(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def resolve_padding(padding, kernel, dilation):
    """((before, after), …) by torch's rule: 'same' pads d·(k−1) in total, the odd one after; 'valid' none."""
    if padding == "valid":
        return tuple((0, 0) for _ in kernel)
    if padding == "same":
        return tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation))
    return tuple((p, p) for p in per_axis(padding, len(kernel)))


class Geometry:
    """A call's index arithmetic, derived from np.pad and the definition (not from convscope.geometry)."""

    def __init__(self, x, w, params):
        self.nd = w.ndim - 2
        self.batched = x.ndim == self.nd + 2
        self.xb = (x if self.batched else x[None]).astype(np.float64)
        self.spatial = self.xb.shape[2:]
        self.kernel = w.shape[2:]
        self.stride = per_axis(params.get("stride", 1), self.nd)
        self.dilation = per_axis(params.get("dilation", 1), self.nd)
        self.pads = resolve_padding(params.get("padding", 0), self.kernel, self.dilation)
        self.mode = params.get("padding_mode", "zeros")
        self.groups = params.get("groups", 1)
        np_mode = NP_PAD_MODE[self.mode]
        extra = {"constant_values": -1} if np_mode == "constant" else {}
        # for each axis, the real index each padded coordinate copies (−1: zero padding)
        self.sources = [np.pad(np.arange(n), p, mode=np_mode, **extra) for n, p in zip(self.spatial, self.pads)]
        self.padded = np.pad(self.xb, ((0, 0), (0, 0)) + self.pads, mode=np_mode)
        self.out_spatial = tuple((n + p0 + p1 - d * (k - 1) - 1) // s + 1 for n, (p0, p1), k, s, d in
                                 zip(self.spatial, self.pads, self.kernel, self.stride, self.dilation))

    def cell(self, pos, tap):
        return tuple(i * s + u * d for i, u, s, d in zip(pos, tap, self.stride, self.dilation))

    def source(self, p):
        """The real pixel padded cell ``p`` copies, or None for zero padding."""
        src = tuple(int(m[q]) for m, q in zip(self.sources, p))
        return None if min(src) < 0 else src

    def is_padding(self, p):
        return any(not 0 <= q - b < n for q, (b, _), n in zip(p, self.pads, self.spatial))

    def passed(self, n, rest):
        return (n,) + tuple(rest) if self.batched else tuple(rest)


def conv_fn(nd):
    return getattr(convscope, f"conv{nd}d")


def backward_fn(nd):
    return getattr(convscope, f"conv{nd}d_backward")


def sum_tolerance(dtype, products, extra=0.0):
    return SUM_RTOL[np.dtype(dtype)] * (float(np.sum(np.abs(products))) + abs(extra)) + 1e-300


def check_forward(x, w, b, params, ats):
    geo = Geometry(x, w, params)
    nd = geo.nd
    out = conv_fn(nd)(x, w, b, **params)
    torch_out, _ = torch_conv_nd(x, w, b, None, **params)
    Cg = w.shape[1]
    Og = w.shape[0] // geo.groups
    for at in ats:
        e = explain(w, x, at, bias=b, **params)
        where = f"{nd}-d {params} at {at}"
        full = tuple(int(v) % s for v, s in zip(at, out.shape))
        assert e.at == full, where
        assert e.value == float(out[at]), where
        assert abs(e.value - float(torch_out[at])) <= tolerance(torch_out), where
        n, o = (full[0], full[1]) if geo.batched else (0, full[0])
        pos = full[-nd:]
        g = o // Og
        taps = list(itertools.product(*(range(k) for k in geo.kernel)))
        assert len(e.terms) == Cg * len(taps), where
        assert e.terms_shape == (Cg,) + tuple(geo.kernel)
        for t, (c, tap) in zip(e.terms, itertools.product(range(Cg), taps)):
            ch = g * Cg + c
            p = geo.cell(pos, tap)
            assert (t.weight_index, t.tap, t.padded_index) == ((c,) + tap, tap, p), where
            assert e.term(c, *tap) is t and t in e.channel_terms(c)
            assert t.weight_value == float(w[(o, c) + tap]), where
            assert t.input_value == float(geo.padded[(n, ch) + p]), where
            assert t.is_padding == geo.is_padding(p), where
            src = geo.source(p)
            if src is None:
                assert t.input_index is None and t.input_value == 0.0, where
            else:
                assert t.input_index == geo.passed(n, (ch,) + src), where
                assert len(t.input_index) == x.ndim
                assert float(x[t.input_index]) == t.input_value, where
            assert t.product == t.input_value * t.weight_value
            assert e.window[(c,) + tap] == t.input_value and e.window_padding[(c,) + tap] == t.is_padding
        products = [t.product for t in e.terms]
        assert e.sum_of_products == float(np.sum(products))
        bias = 0.0 if b is None else float(b[o])
        assert e.bias == bias and e.has_bias == (b is not None)
        assert abs(e.sum_of_products + bias - e.value) <= sum_tolerance(x.dtype, products, bias), where
        assert e.channels == range(g * Cg, (g + 1) * Cg)
        np.testing.assert_array_equal(e.kernel, w[o].astype(np.float64))


def check_grad(x, w, params, wrt, ats, seed=0):
    geo = Geometry(x, w, params)
    nd = geo.nd
    out_shape = conv_fn(nd)(x, w, **params).shape
    gy = np.random.default_rng(seed).standard_normal(out_shape).astype(x.dtype)
    grads = backward_fn(nd)(gy, x, w, **params)
    _, torch_grads = torch_conv_nd(x, w, None, gy, **params)
    k = ("input", "weight", "bias").index(wrt)
    gb = (gy if geo.batched else gy[None]).astype(np.float64)
    Cg, Og = w.shape[1], w.shape[0] // geo.groups
    N = geo.xb.shape[0]
    for at in ats:
        e = explain_grad(w, x, gy, wrt, at, **params)
        where = f"{nd}-d {params} d/d{wrt} at {at}"
        assert e.value == float(grads[k][at]), where
        assert abs(e.value - float(torch_grads[k][at])) <= tolerance(torch_grads[k]), where
        products = [t.product for t in e.terms]
        assert abs(e.sum_of_products - e.value) <= sum_tolerance(x.dtype, products), where
        positions = list(itertools.product(*(range(m) for m in geo.out_spatial)))
        if wrt == "input":
            full = tuple(int(v) % s for v, s in zip(at, x.shape))
            n, c = (full[0], full[1]) if geo.batched else (0, full[0])
            pixel = full[-nd:]
            g = c // Cg
            expected = set()
            for o in range(g * Og, (g + 1) * Og):
                for pos in positions:
                    for tap in itertools.product(*(range(kk) for kk in geo.kernel)):
                        if geo.source(geo.cell(pos, tap)) == pixel:
                            expected.add((geo.passed(n, (o,) + pos), (o, c - g * Cg) + tap))
            assert {(t.output_index, t.weight_index) for t in e.terms} == expected, where
            for t in e.terms:
                assert t.grad_output_value == float(gb[(n,) + t.output_index[-nd - 1:]])
                assert t.weight_value == float(w[t.weight_index])
                assert t.input_index == full and len(t.padded_index) == len(t.tap) == nd
                assert t.is_padding == geo.is_padding(t.padded_index)
            if not e.terms:
                assert e.value == 0.0 and isinstance(e.reason, str) and e.reason, where
        elif wrt == "weight":
            o, c, tap = at[0] % w.shape[0], at[1] % Cg, tuple(v % s for v, s in zip(at[2:], geo.kernel))
            ch = (o // Og) * Cg + c
            assert len(e.terms) == N * len(positions), where
            for t, (n, pos) in zip(e.terms, itertools.product(range(N), positions)):
                p = geo.cell(pos, tap)
                assert t.output_index == geo.passed(n, (o,) + pos) and t.padded_index == p and t.tap == tap
                assert t.input_value == float(geo.padded[(n, ch) + p]), where
                assert t.grad_output_value == float(gb[(n, o) + pos])
                src = geo.source(p)
                assert t.input_index == (None if src is None else geo.passed(n, (ch,) + src))
        else:
            o = at[0] % w.shape[0]
            assert [t.output_index for t in e.terms] == [geo.passed(n, (o,) + pos) for n in range(N)
                                                         for pos in positions]
            assert [t.product for t in e.terms] == [float(gb[(n, o) + pos]) for n in range(N) for pos in positions]


# --------------------------------------------------------------------------- cases

# (spatial size, C_in, C_out, kernel, params), per number of spatial dimensions
CASES = {
    1: [((7,), 2, 3, (3,), dict(stride=2, padding=2)),
        ((9,), 4, 2, (2,), dict(padding=1, dilation=3, groups=2)),
        ((6,), 1, 2, (3,), dict(padding="same", dilation=2)),
        ((5,), 2, 1, (5,), dict(padding="valid"))],
    2: [((4, 5), 2, 2, (3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))),
        ((5, 4), 4, 4, (2, 2), dict(padding=1, groups=4))],
    3: [((3, 4, 5), 2, 2, (2, 3, 2), dict(stride=(1, 2, 1), padding=(1, 1, 2), dilation=(1, 1, 2))),
        ((4, 3, 3), 4, 2, (3, 1, 2), dict(padding=1, stride=(2, 1, 1), groups=2)),
        ((3, 3, 4), 1, 1, (2, 2, 3), dict(padding="same"))],
}
GRID = [pytest.param(nd, i, mode, layout, id=f"{nd}d-{i}-{mode}-{layout}")
        for nd, cases in CASES.items() for i in range(len(cases)) for mode in PADDING_MODES
        for layout in ("batched", "unbatched")
        if mode == "zeros" or cases[i][4].get("padding", 0) not in (0, "valid")]


def case_arrays(nd, i, layout, dtype=np.float64, seed=0):
    spatial, C, O, kernel, params = CASES[nd][i]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(((2,) if layout == "batched" else ()) + (C,) + spatial).astype(dtype)
    w = rng.standard_normal((O, C // params.get("groups", 1)) + kernel).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    return x, w, b, dict(params)


def sample_ats(shape):
    """The first and last element, a negative index and two random ones."""
    rng = np.random.default_rng(1)
    ats = [tuple(0 for _ in shape), tuple(s - 1 for s in shape), tuple(-1 for _ in shape)]
    ats += [tuple(int(rng.integers(s)) for s in shape) for _ in range(2)]
    return ats


@pytest.mark.parametrize("nd, i, mode, layout", GRID)
def test_explain_every_dimension_and_padding_mode(nd, i, mode, layout):
    x, w, b, params = case_arrays(nd, i, layout)
    params["padding_mode"] = mode
    out = conv_fn(nd)(x, w, b, **params)
    check_forward(x, w, b, params, sample_ats(out.shape))


@pytest.mark.parametrize("nd, i, mode, layout", GRID)
def test_explain_grad_every_dimension_and_padding_mode(nd, i, mode, layout):
    x, w, _, params = case_arrays(nd, i, layout)
    params["padding_mode"] = mode
    check_grad(x, w, params, "input", sample_ats(x.shape))
    check_grad(x, w, params, "weight", sample_ats(w.shape)[:3])
    check_grad(x, w, params, "bias", [(0,), (-1,)])


@pytest.mark.parametrize("nd", (1, 3))
def test_float32_and_no_bias(nd):
    x, w, _, params = case_arrays(nd, 0, "batched", np.float32)
    out = conv_fn(nd)(x, w, **params)
    check_forward(x, w, None, params, sample_ats(out.shape)[:2])
    check_grad(x, w, params, "weight", [(0, 0) + (0,) * nd])


@pytest.mark.slow
@pytest.mark.parametrize("nd, i, mode, layout", GRID)
def test_explain_every_element(nd, i, mode, layout):
    x, w, b, params = case_arrays(nd, i, layout)
    params["padding_mode"] = mode
    out = conv_fn(nd)(x, w, b, **params)
    check_forward(x, w, b, params, list(np.ndindex(*out.shape)))
    check_grad(x, w, params, "input", list(np.ndindex(*x.shape)))
    check_grad(x, w, params, "weight", list(np.ndindex(*w.shape)))


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_1d_padding_terms_name_the_real_pixel(mode):
    """Row [1, 2, 3, 4], padding 2: reflect reads [3, 2 | 1 2 3 4 | 3, 2], replicate [1, 1 | … | 4, 4],
    circular [3, 4 | … | 1, 2], zeros [0, 0 | … | 0, 0]."""
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    w = np.array([[[1.0, 10.0, 100.0]]])
    border = {"zeros": ([None, None], [None, None]), "reflect": ([2, 1], [2, 1]),
              "replicate": ([0, 0], [3, 3]), "circular": ([2, 3], [0, 1])}[mode]
    first = explain(w, x, (0, 0), padding=2, padding_mode=mode)
    last = explain(w, x, (0, -1), padding=2, padding_mode=mode)
    got_before = [None if t.input_index is None else t.input_index[1] for t in first.terms[:2]]
    got_after = [None if t.input_index is None else t.input_index[1] for t in last.terms[1:]]
    assert (got_before, got_after) == border
    assert [t.is_padding for t in first.terms] == [True, True, False]
    assert first.value == float(convscope.conv1d(x, w, padding=2, padding_mode=mode)[0, 0])


# --------------------------------------------------------------------------- layers and torch


@pytest.mark.parametrize("nd", (1, 2, 3))
@pytest.mark.parametrize("layout", ("batched", "unbatched"))
def test_convscope_and_torch_layers(nd, layout):
    kwargs = dict(stride=2, padding=1, dilation=1, groups=2, padding_mode="reflect")
    layer = getattr(convscope, f"Conv{nd}d")(4, 2, 3, seed=0, dtype=np.float64, **kwargs)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(((2,) if layout == "batched" else ()) + (4,) + (5,) * nd)
    at_out = ((1,) if layout == "batched" else ()) + (1,) + (1,) * nd
    at_in = ((1,) if layout == "batched" else ()) + (2,) + (0,) * nd
    out = layer(x)
    e = explain(layer, x, at_out)
    assert e.value == float(out[at_out]) and e.torch_value is None
    module = torch_conv_layer(nd, layer.weight, layer.bias, **kwargs)
    et = explain(module, to_tensor(x), at_out)
    assert et.value == e.value and et.torch_value is not None
    assert abs(et.torch_value - e.value) <= 1e-12 * max(1.0, abs(e.value))
    gy = np.random.default_rng(1).standard_normal(out.shape)
    grads = backward_fn(nd)(gy, x, layer.weight, **kwargs)
    for wrt, at in (("input", at_in), ("weight", (1, 0) + (2,) * nd), ("bias", (1,))):
        g = explain_grad(module, to_tensor(x), to_tensor(gy), wrt, at)
        want = float(grads[("input", "weight", "bias").index(wrt)][at])
        assert g.value == want and explain_grad(layer, x, gy, wrt, at).value == want
        assert abs(g.torch_value - want) <= 1e-12 * max(1.0, abs(want))
    with pytest.raises(TypeError, match="hyper-parameters from the layer"):
        explain(layer, x, at_out, stride=3)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("nd", (1, 3))
def test_bad_at_names_the_parameter(nd):
    x, w, _, params = case_arrays(nd, 0, "batched")
    out = conv_fn(nd)(x, w, **params)
    letters = {1: "i", 3: "t, i, j"}[nd]
    with pytest.raises(ValueError, match=rf"at must have {nd + 2} indices \(n, c_out, {letters}\)"):
        explain(w, x, (0,) * (nd + 1), **params)
    bad = [0] * (nd + 2)
    axis = -1 if nd == 1 else -2                                   # the i axis
    bad[axis] = out.shape[axis]
    with pytest.raises(ValueError, match=rf"at\[i\] must be in 0\.\.{out.shape[axis] - 1} .*got {out.shape[axis]}"):
        explain(w, x, tuple(bad), **params)
    with pytest.raises(TypeError, match=r"at\[n\] must be an int"):
        explain(w, x, (0.0,) + (0,) * (nd + 1), **params)
    taps = {1: "u", 3: "r, u, v"}[nd]
    with pytest.raises(ValueError, match=rf"at must have {nd + 2} indices \(o, c, {taps}\)"):
        explain_grad(w, x, None, "weight", (0, 0), **params)
    pixel = {1: "l", 3: "d, h, w"}[nd]
    with pytest.raises(ValueError, match=rf"at must have {nd + 1} indices \(c, {pixel}\) for unbatched"):
        explain_grad(w, x[0], None, "input", (0,) * (nd + 2), **params)


def test_wrong_ranks_name_the_parameter():
    with pytest.raises(ValueError, match=r"weight must be 3-D .* 4-D .* or 5-D .*got shape \(1, 1, 2, 2, 2, 2\)"):
        explain(np.ones((1, 1, 2, 2, 2, 2)), np.ones((1, 1, 4, 4, 4, 4)), (0,) * 6)
    with pytest.raises(ValueError, match="weight must be 3-D"):
        explain_grad(np.ones((1, 1)), np.ones((1, 4)), None, "input", (0, 0))
    with pytest.raises(ValueError, match=r"input must be 2-D \(C, L\) or 3-D \(N, C, L\), got shape \(1, 1, 5, 5\)"):
        explain(np.ones((1, 1, 3)), np.ones((1, 1, 5, 5)), (0, 0, 0, 0))
    with pytest.raises(ValueError, match=r"input must be 4-D \(C, D, H, W\) or 5-D"):
        explain_grad(np.ones((1, 1, 2, 2, 2)), np.ones((1, 4, 4)), None, "input", (0, 0, 0))
    with pytest.raises(ValueError, match="grad_output must have the output's shape"):
        explain_grad(np.ones((1, 1, 2)), np.ones((1, 4)), np.ones((1, 4)), "input", (0, 0))
    with pytest.raises(TypeError, match="input, weight must have the same dtype"):
        Explainer(np.ones((1, 1, 2)), np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match="wrt must be one of"):
        Explainer(np.ones((1, 1, 2)), np.ones((1, 4))).explain_grad("x", (0, 0))


# --------------------------------------------------------------------------- text and HTML


def test_1d_text_marks_the_window_under_the_padded_row_and_the_padding():
    x = np.array([[3.0, 1.0, 4.0, 1.0, 5.0]])
    e = explain(np.array([[[1.0, 0.0, -1.0]]]), x, (0, 1), bias=np.array([2.0]), padding=2, dilation=2)
    text = str(e)
    lines = text.splitlines()
    row = next(line for line in lines if line.lstrip().startswith("x̃    "))
    carets = lines[lines.index(row) + 1]
    assert row.split("[")[1].rstrip("]").split() == ["0*", "0*", "3", "1", "4", "1", "5", "0*", "0*"]
    # the window of output 1 reads padded cells 1, 3, 5 (dilation 2): carets under those cells
    cells = [k for k, ch in enumerate(row) if ch in "0123456789" and (k + 1 == len(row) or row[k + 1] in " *]")]
    start = row.index("[")                                        # after the labels
    assert [k for k, ch in enumerate(carets) if ch == "^" and k > start] == [cells[1], cells[3], cells[5]]
    assert "window     [ 0*  1   1]" in text and "kernel     [ 1   0  -1]" in text
    assert "products   [ 0*  0  -1]" in text
    assert "out[0, 1] = 1" in lines[0] and "conv1d:" in text and "+ bias[0]" in text
    assert "nn.Conv1d adds a bias" in text
    page = e._repr_html_()
    assert page.count("<table>") >= 4 and "cs-win" in page and "cs-pad" in page


def test_3d_text_shows_one_depth_slice_at_a_time():
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float64).reshape(2, 3, 4, 4)
    w = np.ones((1, 2, 3, 2, 2))
    e = explain(w, x, (0, 1, 0, 0), padding=(1, 0, 0), stride=(1, 2, 2))
    text = str(e)
    for r, depth in ((0, 1), (1, 2), (2, 3)):
        assert f"tap depth r = {r}: x̃ depth slice {depth}" in text
    assert text.count("tap depth r =") == 3 * 2  # three slices for each of the two input channels
    assert "Input channel 1: the window x̃[1, 1:4, 0:2, 0:2]" in text
    assert "products, tap (r, u, v)" in text and "(2, 1, 1)  x[1, 2, 1, 1]" in text
    assert e.value == float(convscope.conv3d(x, w, padding=(1, 0, 0), stride=(1, 2, 2))[0, 1, 0, 0])
    page = e._repr_html_()
    assert page.count("tap depth r = 2: x̃ depth slice 3") == 2 and "kernel w[0, 1, 2]" in page
    g = explain_grad(w, x, None, "weight", (0, 1, 0, 1, 1), padding=(1, 0, 0), stride=(1, 2, 2))
    assert "∂L/∂w[o, c, r, u, v] = Σ_t Σ_i Σ_j grad_out[o, t, i, j]" in str(g)
    assert "Tap (0, 1, 1) reads, for output (t, i, j), the cell (t + 0, i·2 + 1, j·2 + 1) of x̃." in str(g)


def test_unread_reason_in_3d_names_the_axis():
    x = np.ones((1, 5, 6, 6))
    w = np.ones((1, 1, 2, 1, 1))
    e = explain_grad(w, x, None, "input", (0, 2, 0, 0), stride=(3, 1, 1))
    assert e.terms == [] and e.value == 0.0
    assert e.reason.startswith("stride 3 skips depth slice 2")
    assert "stride 3 skips depth slice 2" in str(e)


# --------------------------------------------------------------------------- computed once


def count_passes(monkeypatch):
    """Count the forward and backward passes the explainers run."""
    calls = {"forward": 0, "backward": 0}
    forward, backward = core._run_forward, core._run_backward

    def counted_forward(*args, **kwargs):
        calls["forward"] += 1
        return forward(*args, **kwargs)

    def counted_backward(*args, **kwargs):
        calls["backward"] += 1
        return backward(*args, **kwargs)

    monkeypatch.setattr(core, "_run_forward", counted_forward)
    monkeypatch.setattr(core, "_run_backward", counted_backward)
    return calls


@pytest.mark.parametrize("nd", (1, 2, 3))
def test_an_explainer_computes_once_for_every_element(monkeypatch, nd):
    x, w, b, params = case_arrays(nd, 0, "batched")
    calls = count_passes(monkeypatch)
    ex = Explainer(w, x, b, **params)
    assert calls == {"forward": 0, "backward": 0}       # nothing is computed before it is asked for
    out = conv_fn(nd)(x, w, b, **params)
    values = [ex.explain(at).value for at in np.ndindex(*out.shape)]
    assert values == [float(v) for v in out.ravel()]
    grads = backward_fn(nd)(np.ones_like(out), x, w, **params)
    for wrt, shape in (("input", x.shape), ("weight", w.shape), ("bias", (w.shape[0],))):
        got = [ex.explain_grad(wrt, at).value for at in np.ndindex(*shape)]
        assert got == [float(v) for v in grads[("input", "weight", "bias").index(wrt)].ravel()]
    assert calls == {"forward": 1, "backward": 1}
    assert len(values) > 10


def test_animate_computes_the_convolution_once(monkeypatch):
    pytest.importorskip("matplotlib")
    from convscope.animate import animate

    x = np.arange(9.0).reshape(1, 3, 3)
    calls = count_passes(monkeypatch)
    a = animate(np.ones((1, 1, 2, 2)), x, padding=1)
    assert len(a) == 16 and calls == {"forward": 1, "backward": 0}
    assert [f.value for f in a.info] == [float(v) for v in convscope.conv2d(x, np.ones((1, 1, 2, 2)), padding=1).ravel()]
    g = animate(np.ones((1, 1, 2, 2)), x, padding=1, grad="input")
    assert len(g) == 9 and calls == {"forward": 1, "backward": 1}


@pytest.mark.parametrize("nd", (1, 3))
def test_animate_stays_2d(nd):
    pytest.importorskip("matplotlib")
    from convscope.animate import animate

    layer = getattr(convscope, f"Conv{nd}d")(1, 1, 2, seed=0)
    with pytest.raises(ValueError, match=f"animate draws 2-d convolutions \\(Conv2d\\) only, got a {nd}-d one"):
        animate(layer, np.ones((1,) + (4,) * nd, np.float32))


def test_the_widget_and_the_explore_data_compute_once(monkeypatch):
    from convscope.explore.data import element

    x = np.random.default_rng(0).standard_normal((2, 5, 5))
    calls = count_passes(monkeypatch)
    page = convscope.widget(np.ones((2, 2, 3, 3)), x, padding=1)
    assert calls == {"forward": 1, "backward": 1}
    for o, i, j in np.ndindex(2, 5, 5):
        assert element(page.data, "output", (o, i, j))["v"] == page.explainer.explain((o, i, j)).value
    for c, h, w_ in np.ndindex(2, 5, 5):
        element(page.data, "input", (c, h, w_))
    assert calls == {"forward": 1, "backward": 1}


def test_with_grad_output_keeps_the_output_and_checks_the_shape(monkeypatch):
    x, w, b, params = case_arrays(3, 0, "unbatched")
    calls = count_passes(monkeypatch)
    ex = Explainer(w, x, b, **params)
    out = ex.output
    gy = np.random.default_rng(2).standard_normal(out.shape)
    other = ex.with_grad_output(gy)
    assert other.output is out and calls["forward"] == 1
    at = (1, 0, 1, 2)
    assert other.explain_grad("input", at).value == explain_grad(w, x, gy, "input", at, **params).value
    with pytest.raises(ValueError, match="grad_output must have the output's shape"):
        ex.with_grad_output(gy[:1])


# --------------------------------------------------------------------------- unread lines: one formula


def _cause_by_brute_force(size, k, s, d, pad, r):
    """'floor' past the last window's end, 'dilation' inside an existing window's span, else 'stride'."""
    out_len = (size + 2 * pad - d * (k - 1) - 1) // s + 1
    p = r + pad
    if p > (out_len - 1) * s + (k - 1) * d:
        return "floor"
    return "dilation" if any(i * s <= p <= i * s + (k - 1) * d for i in range(out_len)) else "stride"


WORDS = {"floor": "no window reaches", "dilation": "dilation", "stride": "stride"}
SHAPE_WORDS = {"floor": "drops the remainder", "dilation": "no window has a tap", "stride": "skips"}


def test_explain_and_explain_shape_agree_on_unread_rows():
    from convscope.explain.shape import _unread_line

    checked = 0
    for size, k, s, d, pad in itertools.product(range(1, 9), (1, 2, 3), (1, 2, 3, 4), (1, 2, 3), (0, 1, 2)):
        if output_length(size, k, s, 2 * pad, d) < 1:
            continue
        read = {i * s + u * d - pad for i in range(output_length(size, k, s, 2 * pad, d)) for u in range(k)}
        unread = sorted(set(range(size)) - read)
        dim = explain_shape((size,), k, stride=s, padding=pad, dilation=d, ndim=1).dims[0]
        assert list(dim.unread) == unread
        line = _unread_line(dim)
        w = np.ones((1, 1, k))
        ex = Explainer(w, np.zeros((1, size)), stride=s, padding=pad, dilation=d)
        for r in range(size):
            e = ex.explain_grad("input", (0, r))
            cause = unread_cause(r, size, k, s, d, pad, pad)
            if r not in unread:
                assert cause is None and e.reason is None and e.terms
                continue
            truth = _cause_by_brute_force(size, k, s, d, pad, r)
            where = f"size {size} k {k} s {s} d {d} pad {pad} row {r}: {e.reason!r} / {line!r}"
            assert cause.cause == truth, where
            assert e.reason.startswith(WORDS[truth]) or e.reason.startswith(f"{truth} "), where
            assert SHAPE_WORDS[truth] in line, where
            checked += 1
    assert checked > 100


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("argv, head", [
    (["--dims", "1", "--input", "2x9", "-k", "3", "-d", "2", "--at", "4", "--integers"], "out[0, 4] = "),
    (["--dims", "3", "--input", "2x1x4x5x5", "-k", "3", "-p", "1", "--at", "1,0,2,2,2"], "out[1, 0, 2, 2, 2] = "),
    (["--dims", "3", "--input", "4x5x5", "-k", "2x3x3", "-s", "2", "--grad", "input", "--at", "0,1,4,4"],
     "∂L/∂x[0, 1, 4, 4] = "),
    (["--dims", "1", "--input", "9", "-p", "2", "--padding-mode", "circular", "--grad", "weight", "--at", "2"],
     "∂L/∂w[0, 0, 2] = "),
])
def test_cli_explains_1d_and_3d(capsys, argv, head):
    from convscope.cli import main

    assert main(["explain", *argv]) == 0
    out = capsys.readouterr().out
    assert out.startswith(head)


@pytest.mark.parametrize("argv, message", [
    (["--dims", "1", "--input", "2x3x4x5"], "--input must be L, CxL or NxCxL with positive sizes"),
    (["--dims", "3", "--input", "5x5"], "--input must be DxHxW, CxDxHxW or NxCxDxHxW"),
    (["--dims", "1", "-k", "3x3"], "--kernel must be one integer for a 1-d convolution"),
    (["--dims", "3", "-s", "1x2"], "--stride must be one integer or 3"),
    (["--dims", "1", "--input", "9", "--at", "0,0,0"], "--at takes at most 2 indices here, got 3"),
    (["--dims", "3", "--input", "3x3x3", "-k", "4"], "output would be empty"),
    (["--dims", "4"], "invalid choice: 4"),
])
def test_cli_bad_1d_and_3d_input_is_one_line_and_exit_2(capsys, argv, message):
    from convscope.cli import main

    assert main(["explain", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_weight_file_of_the_wrong_rank(tmp_path, capsys):
    from convscope.cli import main

    path = tmp_path / "w.npy"
    np.save(path, np.ones((1, 1, 3, 3)))
    assert main(["explain", "--dims", "1", "--input", "9", "--weight-file", str(path)]) == 2
    assert "with --dims 1 the weight must be 3-D (C_out, C/groups, kL)" in capsys.readouterr().err


# --------------------------------------------------------------------------- property


@st.composite
def configs(draw):
    nd = draw(st.sampled_from((1, 2, 3)))
    groups = draw(st.sampled_from((1, 2)))
    C = groups * draw(st.integers(1, 2))
    O = groups * draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(1, 6 if nd < 3 else 4)) for _ in range(nd))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    padding = draw(st.one_of(st.sampled_from(("same", "valid")),
                             st.tuples(*(st.integers(0, 2) for _ in range(nd)))))
    mode = draw(st.sampled_from(PADDING_MODES))
    batched = draw(st.booleans())
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode)
    pads = resolve_padding(padding, kernel, dilation)
    assume(not (padding == "same" and max(stride) > 1))
    assume(all(output_length(n, k, s, p0 + p1, d) >= 1
               for n, k, s, (p0, p1), d in zip(spatial, kernel, stride, pads, dilation)))
    assume(mode != "reflect" or all(max(p) < n for p, n in zip(pads, spatial)))
    assume(mode != "circular" or all(max(p) <= n for p, n in zip(pads, spatial)))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(((2,) if batched else ()) + (C,) + spatial)
    w = rng.standard_normal((O, C // groups) + kernel)
    b = rng.standard_normal(O) if draw(st.booleans()) else None
    return x, w, b, params, seed


@settings(max_examples=12, deadline=None)
@given(configs())
def test_property_explanations_match_the_convolution(config):
    x, w, b, params, seed = config
    nd = w.ndim - 2
    out = conv_fn(nd)(x, w, b, **params)
    rng = np.random.default_rng(seed + 1)
    check_forward(x, w, b, params, [tuple(int(rng.integers(s)) for s in out.shape)])
    check_grad(x, w, params, "input", [tuple(int(rng.integers(s)) for s in x.shape)], seed)
    check_grad(x, w, params, "weight", [tuple(int(rng.integers(s)) for s in w.shape)], seed)
