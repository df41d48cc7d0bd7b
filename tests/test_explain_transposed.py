"""explain / explain_grad of transposed convolutions: the scatter terms (1, 2 and 3 dimensions), the
gather view (an ordinary explanation of the zero-inserted input with the flipped kernel), the three
gradients, the layers (convscope's and torch's, with output_size), the text, the CLI and the errors,
all against conv_transpose{n}d(_backward) and torch."""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import convscope
from convscope.explain.transposed import TransposedExplanation, gather_arrays
from convscope.geometry import transposed_output_length, transposed_reach, transposed_taps
from oracle import require_torch, to_tensor, RTOL, assert_close, torch_transpose_at, torch_transpose_error

# (ndim, input shape, weight shape (C_in, C_out/groups, k…), parameters): every parameter in each dimension
CASES = [
    (1, (1, 2, 3), (2, 1, 3), dict(stride=2, padding=1)),                                   # the arithmetic case
    (1, (2, 3, 5), (3, 2, 3), dict(stride=3, padding=2, output_padding=2, dilation=2)),
    (1, (4, 6), (4, 1, 2), dict(stride=2, groups=2, output_padding=1)),                     # unbatched, groups
    (1, (1, 1, 4), (1, 1, 3), dict(stride=1, padding=0, dilation=3, output_padding=2)),     # op ≥ stride (< dilation)
    (2, (1, 1, 3, 3), (1, 1, 3, 3), dict(stride=2, padding=1)),
    (2, (2, 2, 3, 4), (2, 3, 3, 2), dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2))),
    (2, (4, 3, 3), (4, 2, 2, 3), dict(stride=2, groups=2, dilation=(1, 2))),                 # unbatched, groups
    (2, (1, 2, 3, 4), (2, 1, 4, 4), dict(stride=2, padding=3)),                              # padding crops
    (2, (1, 2, 3, 4), (2, 2, 2, 2), dict(stride=3, padding=(2, 1), output_padding=(2, 0))),  # gather crops
    (3, (1, 2, 2, 3, 2), (2, 2, 3, 2, 2), dict(stride=(2, 1, 2), padding=(1, 0, 0), output_padding=(1, 0, 1))),
    (3, (2, 2, 2, 2), (2, 1, 2, 2, 2), dict(stride=2, groups=2, dilation=(1, 2, 1))),        # unbatched, groups
]
IDS = [f"{nd}d-{'x'.join(map(str, xs))}-{'-'.join(f'{k}{v}' for k, v in p.items())}" for nd, xs, _, p in CASES]


def _arrays(case, dtype=np.float64, bias=True, seed=0, integers=False):
    nd, x_shape, w_shape, params = case
    rng = np.random.default_rng(seed)
    draw = (lambda shape: rng.integers(-4, 5, size=shape).astype(dtype)) if integers else \
        (lambda shape: rng.standard_normal(shape).astype(dtype))
    x, w = draw(x_shape), draw(w_shape)
    b = draw((w_shape[1] * params.get("groups", 1),)) if bias else None
    return x, w, b


def _conv_transpose(nd, x, w, b, **params):
    return getattr(convscope, f"conv_transpose{nd}d")(x, w, b, **params)


def _batched(x, nd):
    return x if x.ndim == nd + 2 else x[None]


def _brute_force_terms(nd, x, w, at, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Every (input index, weight index) with i·s + u·d − p = r on every axis, by looping over all of them."""
    s, p, d = (np.broadcast_to(v, (nd,)).tolist() for v in (stride, padding, dilation))
    xb = _batched(x, nd)
    unbatched = x.ndim == nd + 1
    n, o_full, r = (0, at[0], at[1:]) if unbatched else (at[0], at[1], at[2:])
    Og = w.shape[1]
    Cg = w.shape[0] // groups
    g, o = divmod(o_full, Og)
    found = []
    for c in range(g * Cg, (g + 1) * Cg):
        for i in itertools.product(*(range(m) for m in xb.shape[2:])):
            for u in itertools.product(*(range(k) for k in w.shape[2:])):
                if all(i[a] * s[a] + u[a] * d[a] - p[a] == r[a] for a in range(nd)):
                    found.append((((c,) if unbatched else (n, c)) + i, (c, o) + u))
    return sorted(found)


def _outputs(y, limit=40, seed=0):
    """Up to ``limit`` output indices of ``y``: its corners and a seeded sample."""
    every = list(itertools.product(*(range(m) for m in y.shape)))
    if len(every) <= limit:
        return every
    rng = np.random.default_rng(seed)
    picked = {every[0], every[-1]} | {every[k] for k in rng.choice(len(every), limit - 2, replace=False)}
    return sorted(picked)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("size,kernel,stride,padding,dilation,op", [
    (3, 3, 2, 1, 1, 0), (3, 3, 2, 1, 1, 1), (5, 4, 3, 2, 2, 2), (2, 1, 1, 0, 1, 0), (4, 3, 1, 0, 3, 2),
    (3, 5, 2, 4, 1, 1)])
def test_transposed_taps_and_reach_are_the_scatter_rule(size, kernel, stride, padding, dilation, op):
    out = transposed_output_length(size, kernel, stride, padding, dilation, op)
    every = {(i, u, i * stride + u * dilation - padding) for i in range(size) for u in range(kernel)}
    for r in range(out):
        assert transposed_taps(r, size, kernel, stride, padding, dilation) == sorted(
            (i, u) for i, u, rr in every if rr == r)
    for i in range(size):
        assert transposed_reach(i, out, kernel, stride, padding, dilation) == sorted(
            ((rr, u) for ii, u, rr in every if ii == i and 0 <= rr < out), key=lambda t: t[1])
    counts = [len(transposed_taps(r, size, kernel, stride, padding, dilation)) for r in range(out)]
    shape = convscope.explain_shape((size,), kernel, stride=stride, padding=padding, dilation=dilation, ndim=1,
                                    transposed=True, output_padding=op)
    assert tuple(counts) == shape.taps[0]


# --------------------------------------------------------------------------- scatter


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_scatter_terms_are_every_input_element_and_tap_landing_here(case):
    nd, _, _, params = case
    x, w, b = _arrays(case)
    y = _conv_transpose(nd, x, w, b, **params)
    for at in _outputs(y):
        e = convscope.explain(w, x, at, bias=b, transposed=True, **params)
        assert isinstance(e, TransposedExplanation) and e.kind == "output" and e.at == at
        assert e.value == float(y[at])
        assert [(t.input_index, t.weight_index) for t in e.terms] == _brute_force_terms(nd, x, w, at, **params)
        for t in e.terms:
            assert t.input_value == x[t.input_index] and t.weight_value == w[t.weight_index]
            assert t.product == t.input_value * t.weight_value and t.output_index == at
            assert t.tap == t.weight_index[2:]
        o = at[1] if x.ndim == nd + 2 else at[0]
        assert e.bias == b[o]
        assert e.sum_of_products == pytest.approx(e.value - e.bias, abs=1e-12 * max(1.0, abs(e.value)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_scatter_value_is_torchs_and_integer_sums_are_exact(case):
    require_torch()
    nd, _, _, params = case
    x, w, b = _arrays(case, integers=True, seed=1)
    y = _conv_transpose(nd, x, w, b, **params)
    for at in _outputs(y, limit=12, seed=1):
        e = convscope.explain(w, x, at, bias=b, transposed=True, **params)
        assert e.value == torch_transpose_at(x, w, b, at, **params)
        assert e.sum_of_products + e.bias == e.value


@pytest.mark.parametrize("case", CASES[1::3], ids=IDS[1::3])
def test_float32_values_are_torchs_within_the_outputs_scale(case):
    require_torch()
    nd, _, _, params = case
    x, w, b = _arrays(case, dtype=np.float32, seed=4)
    y = _conv_transpose(nd, x, w, b, **params)
    scale = RTOL[np.dtype(np.float32)] * float(np.abs(y).max())
    for at in _outputs(y, limit=6, seed=4):
        e = convscope.explain(w, x, at, bias=b, transposed=True, **params)
        assert abs(e.value - torch_transpose_at(x, w, b, at, **params)) <= scale
        assert abs(e.sum_of_products + e.bias - e.value) <= scale


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_scatter_in_lower_precision_sums_to_the_value_within_rounding(dtype):
    case = CASES[5]
    x, w, b = _arrays(case, dtype=dtype)
    e = convscope.explain(w, x, (1, 2, 3, 2), bias=b, transposed=True, **case[3])
    y = _conv_transpose(2, x, w, b, **case[3])
    assert e.value == float(y[1, 2, 3, 2])
    scale = sum(abs(t.product) for t in e.terms) + abs(e.bias)
    assert abs(e.sum_of_products + e.bias - e.value) <= 4 * RTOL[np.dtype(dtype)] * max(scale, 1.0)


def test_an_output_no_stamp_reaches_is_the_bias_alone():
    # dilation 3 > stride 1 lets output_padding 2 add rows no tap reaches
    x, w, b = np.ones((1, 1, 2)), np.ones((1, 1, 2)), np.array([0.25])
    e = convscope.explain(w, x, (0, 0, 5), bias=b, transposed=True, dilation=3, output_padding=2)
    assert e.terms == [] and e.value == 0.25 == e.bias
    assert "no input element's stamp lands here" in e.text()


def test_the_callers_arrays_are_untouched_and_views_work():
    x, w, b = _arrays(CASES[5])
    copies = [a.copy() for a in (x, w, b)]
    xs = np.asfortranarray(x)
    e = convscope.explain(w, xs, (0, 1, 2, 3), bias=b, transposed=True, **CASES[5][3])
    _ = e.gather, e.text(), e._repr_html_()
    for a, c in zip((x, w, b), copies):
        assert np.array_equal(a, c)


# --------------------------------------------------------------------------- gather


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gather_arrays_give_the_same_numbers_as_an_ordinary_convolution(case):
    """In every dimension: the convolution (stride 1) of the zero-inserted, padded input with the flipped kernel
    is the transposed convolution, element for element."""
    nd, _, _, params = case
    x, w, b = _arrays(case)
    y = _conv_transpose(nd, x, w, b, **params)
    e = convscope.explain(w, x, (0,) * y.ndim, bias=b, transposed=True, **params)
    xb = _batched(x, nd)
    per_axis = lambda v: tuple(np.broadcast_to(v, (nd,)).tolist())  # noqa: E731
    for n in range(xb.shape[0]):
        z, wf, offsets = gather_arrays(xb[n], w, per_axis(params.get("stride", 1)), per_axis(params.get("padding", 0)),
                                       per_axis(params.get("dilation", 1)), per_axis(params.get("output_padding", 0)),
                                       params.get("groups", 1))
        conv = getattr(convscope, f"conv{nd}d")(z, wf, b, dilation=params.get("dilation", 1),
                                                groups=params.get("groups", 1))
        assert_close(conv, _batched(y, nd)[n], "gather convolution")
        # input element i sits at offsets + i·stride (where not cropped); every other cell is 0
        stride = per_axis(params.get("stride", 1))
        expected = np.zeros_like(z)
        for i in itertools.product(*(range(m) for m in xb.shape[2:])):
            cell = tuple(o + a * st_ for o, a, st_ in zip(offsets, i, stride))
            if all(0 <= c < m for c, m in zip(cell, z.shape[1:])):
                expected[(slice(None),) + cell] = xb[(n, slice(None)) + i]
        assert np.array_equal(z, expected)
    assert e.gather_weight.shape == (w.shape[1] * params.get("groups", 1), w.shape[0] // params.get("groups", 1)) \
        + w.shape[2:]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gather_view_is_an_ordinary_explanation_with_the_same_value(case):
    nd, _, _, params = case
    x, w, b = _arrays(case)
    y = _conv_transpose(nd, x, w, b, **params)
    for at in _outputs(y, limit=10):
        e = convscope.explain(w, x, at, bias=b, transposed=True, **params)
        g = e.gather
        assert isinstance(g, convscope.Explanation) and g.kind == "output"
        assert g.value == pytest.approx(e.value, rel=1e-12, abs=1e-12)
        assert g.bias == e.bias
        # its taps read input elements (the scatter's terms), inserted zeros or padding (0)
        nonzero = sorted(t.product for t in g.terms if t.input_value != 0)
        assert nonzero == pytest.approx(sorted(t.product for t in e.terms if t.input_value != 0))
        assert np.array_equal(g.kernel, e.gather_weight[at[-nd - 1]])


def test_gather_window_of_the_arithmetic_case_by_hand():
    """i = 3, k = 3, s = 2, p = 1: z = [0, x0, 0, x1, 0, x2, 0]; y[1] = x0·w[2] + x1·w[0]."""
    x = np.array([[[1.0, 2.0, 3.0]]])
    w = np.array([[[10.0, 20.0, 30.0]]])
    e = convscope.explain(w, x, (0, 0, 1), stride=2, padding=1, transposed=True)
    assert e.gather_input.tolist() == [[[0, 1, 0, 2, 0, 3, 0]]]
    assert e.gather_weight.tolist() == [[[30, 20, 10]]]
    assert e.value == 1 * 30 + 2 * 10
    assert e.gather_at == (0, 0, 1)


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_layers_convscope_and_torch_with_output_size(nd):
    require_torch()
    layer = getattr(convscope, f"ConvTranspose{nd}d")(4, 6, 3, stride=2, padding=1, groups=2, dtype=np.float64,
                                                      seed=3)
    x = np.random.default_rng(3).standard_normal((2, 4) + (3,) * nd)
    module = layer.to_torch()
    for size in [None, (6,) * nd]:
        y = layer(x, output_size=size)
        at = (1, 5) + tuple(m - 2 for m in y.shape[2:])
        for lay in (layer, module):
            e = convscope.explain(lay, x, at, output_size=size)
            assert e.value == pytest.approx(float(y[at]), rel=1e-12)
            assert e.torch_value == pytest.approx(e.value, rel=1e-9)
            assert e.sum_of_products + e.bias == pytest.approx(e.value, rel=1e-12)
        assert e.call.output_padding == (0 if size is None else 1,) * nd
    e = convscope.explain(module, to_tensor(x), (0, 0) + (1,) * nd)
    assert e.torch_value == pytest.approx(e.value, rel=1e-9)
    for wrt, at in (("input", (1, 3) + (2,) * nd), ("weight", (3, 1) + (0,) * nd), ("bias", (4,))):
        g = convscope.explain_grad(module, x, None, wrt, at)
        assert g.torch_value == pytest.approx(g.value, rel=1e-9, abs=1e-12)


def test_layer_arguments_come_from_the_layer():
    layer = convscope.ConvTranspose2d(1, 1, 3, seed=0)
    x = np.ones((1, 1, 3, 3), np.float32)
    with pytest.raises(TypeError, match="takes the hyper-parameters from the layer; pass stride"):
        convscope.explain(layer, x, (0, 0, 0, 0), stride=2)
    with pytest.raises(TypeError, match="output_size="):
        convscope.explain(layer, x, (0, 0, 0, 0), output_padding=1)
    with pytest.raises(TypeError, match="transposed=True explains transposed layers"):
        convscope.explain(convscope.Conv2d(1, 1, 3), x, (0, 0, 0, 0), transposed=True)
    with pytest.raises(ValueError, match="output_size"):
        convscope.explain(layer, x, (0, 0, 0, 0), output_size=(9, 9))


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_terms_name_their_factors_and_sum_to_the_backward(case):
    nd, _, _, params = case
    x, w, _ = _arrays(case)
    y = _conv_transpose(nd, x, w, None, **params)
    gy = np.random.default_rng(5).standard_normal(y.shape)
    grads = getattr(convscope, f"conv_transpose{nd}d_backward")(gy, x, w, **params)
    for wrt, array in (("input", grads.input), ("weight", grads.weight), ("bias", grads.bias)):
        for at in _outputs(array, limit=8, seed=2):
            e = convscope.explain_grad(w, x, gy, wrt, at, transposed=True, **params)
            assert e.kind == wrt and e.value == float(array[at])
            assert e.sum_of_products == pytest.approx(e.value, rel=1e-12, abs=1e-12)
            for t in e.terms:
                assert t.grad_output_value == gy[t.output_index]
                if wrt == "input":
                    assert t.weight_value == w[t.weight_index] and t.input_index == at
                    assert t.product == t.grad_output_value * t.weight_value
                elif wrt == "weight":
                    assert t.input_value == x[t.input_index] and t.tap == at[2:]
                    assert t.product == t.input_value * t.grad_output_value
                else:
                    assert t.product == t.grad_output_value
            if wrt == "input" and not e.terms:
                assert e.value == 0 and "crops" in e.reason


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_equal_torchs(case):
    require_torch()
    nd, _, _, params = case
    x, w, _ = _arrays(case, integers=True, seed=7)
    y = _conv_transpose(nd, x, w, None, **params)
    gy = np.random.default_rng(8).integers(-3, 4, size=y.shape).astype(np.float64)
    for wrt, at in (("input", (0,) * x.ndim), ("input", tuple(m - 1 for m in x.shape)),
                    ("weight", tuple(m - 1 for m in w.shape)), ("bias", (0,))):
        e = convscope.explain_grad(w, x, gy, wrt, at, transposed=True, **params)
        assert e.value == torch_transpose_at(x, w, None, at, gy, wrt, **params) == e.sum_of_products


def test_input_gradient_is_the_ordinary_explanation_of_the_convolution_of_grad_output():
    nd, _, _, params = case = CASES[5]
    x, w, _ = _arrays(case)
    y = _conv_transpose(2, x, w, None, **params)
    gy = np.random.default_rng(9).standard_normal(y.shape)
    conv = {k: v for k, v in params.items() if k != "output_padding"}
    for at in [(0, 0, 0, 0), (1, 1, 2, 3), (0, 1, 1, 1)]:
        e = convscope.explain_grad(w, x, gy, "input", at, transposed=True, **params)
        ordinary = convscope.explain(w, gy, at, **conv)           # conv2d(grad_out, w): C_out → C_in channels
        assert ordinary.value == pytest.approx(e.value, rel=1e-12, abs=1e-12)
        # the ordinary terms that read grad_out (not its padding) are the gradient's, factor for factor
        real = sorted((t.input_index, (at[1],) + t.weight_index, t.product) for t in ordinary.terms
                      if not t.is_padding)
        assert real == sorted((t.output_index, t.weight_index, t.product) for t in e.terms)


def test_grad_output_defaults_to_ones_and_is_checked():
    x, w = np.ones((1, 1, 3)), np.ones((1, 1, 3))
    e = convscope.explain_grad(w, x, None, "bias", (0,), stride=2, padding=1, transposed=True)
    assert e.value == 5 and len(e.terms) == 5
    with pytest.raises(ValueError, match="grad_output"):
        convscope.explain_grad(w, x, np.ones((1, 1, 4)), "input", (0, 0, 0), stride=2, padding=1, transposed=True)
    with pytest.raises(TypeError, match="at is required"):
        convscope.explain_grad(w, x, None, "input", None, transposed=True)
    with pytest.raises(ValueError, match="wrt must be one of"):
        convscope.explain_grad(w, x, None, "output", (0,), transposed=True)


# --------------------------------------------------------------------------- text and HTML


def test_text_names_both_views_the_weight_layout_and_output_padding():
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    w = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    e = convscope.explain(w, x, (0, 0, 1, 2), stride=2, padding=1, output_padding=1, transposed=True)
    text = e.text()
    assert str(e) == text and text.startswith(f"y[0, 0, 1, 2] = {e.value:.0f}")
    assert "input x[0, 0, 0, 1] · w[0, 0, 2, 1] lands on y[0, 0, 1, 2]   2 × 8 = 16" in text
    assert "input x[0, 0, 1, 1] · w[0, 0, 0, 1] lands on y[0, 0, 1, 2]   5 × 2 = 10" in text
    assert "= a convolution of the zero-inserted input with the flipped kernel" in text
    assert "(in_channels, out_channels/groups, kH, kW)" in text and "adjoint" in text
    assert "output_padding (1, 1) only picks the output size" in text
    assert "H_out = (3−1)·2 − 2·1 + 1·(3−1) + 1 + 1 = 6" in text
    # the gather window of rows 1..3, columns 2..4 of z: inserted zeros marked ·, padding *
    assert "    [[0· 2  0·]      [[9  8  7]" in text and "     [0· 5  0·]]      [3  2  1]]" in text
    html = e._repr_html_()
    assert "cs-win" in html and "zero-inserted" in html and "lands on" in html
    assert e.text(decimals=2).startswith("y[0, 0, 1, 2] = 26.00")


def test_gradient_text():
    x, w = np.ones((1, 1, 3)), np.array([[[1.0, 10.0, 100.0]]])
    text = convscope.explain_grad(w, x, None, "input", (0, 0, 0), stride=2, padding=1, transposed=True).text()
    assert "grad_out[0, 0, 0] 1 × w[0, 0, 1] 10 = 10" in text and "= ∂L/∂x[0, 0, 0] = 110" in text
    assert "ordinary convolution of grad_out with the same weight" in text
    cropped = convscope.explain_grad(np.ones((1, 1, 1)), np.ones((1, 1, 3)), None, "input", (0, 0, 0), stride=2,
                                     padding=1, transposed=True)     # element 0 stamps on row −1 only
    assert cropped.value == 0 and "padding 1 crops them" in cropped.text()


# --------------------------------------------------------------------------- errors, compared with torch

BAD = [
    ((1, 2, 4, 4), (2, 2, 3, 3), dict(stride=2, output_padding=2), ValueError, "output_padding must be smaller"),
    ((1, 2, 4, 4), (2, 2, 3, 3), dict(output_padding=1), ValueError, "output_padding must be smaller"),
    ((1, 3, 4, 4), (3, 2, 3, 3), dict(groups=2), ValueError, "divisible by groups"),
    ((1, 2, 4, 4), (3, 2, 3, 3), dict(), ValueError, "channel"),
    ((1, 1, 1, 1), (1, 1, 1, 1), dict(padding=1), ValueError, "output would be empty"),
    ((1, 2, 4, 4), (2, 2, 3, 3), dict(padding="same"), TypeError, "padding of a transposed convolution"),
    ((1, 2, 4, 4), (2, 2, 3, 3), dict(stride=0), ValueError, "stride"),
]


@pytest.mark.parametrize("x_shape,w_shape,params,exc,pattern", BAD)
def test_errors_are_torchs(x_shape, w_shape, params, exc, pattern):
    require_torch()
    x, w = np.zeros(x_shape), np.zeros(w_shape)
    with pytest.raises(exc, match=pattern):
        convscope.explain(w, x, (0, 0, 0, 0), transposed=True, **params)
    with pytest.raises(exc, match=pattern):
        convscope.explain_grad(w, x, None, "weight", (0, 0, 0, 0), transposed=True, **params)
    assert torch_transpose_error(2, x_shape, w_shape, **params) is not None, "torch accepts it"


def test_errors_of_the_explanation_itself():
    x, w = np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3))
    with pytest.raises(ValueError, match=r"at\[h\] must be in 0..4"):
        convscope.explain(w, x, (0, 0, 5, 0), stride=2, padding=1, transposed=True)
    with pytest.raises(ValueError, match="at must have 4 indices"):
        convscope.explain(w, x, (0, 0), transposed=True)
    with pytest.raises(TypeError, match="transposed must be True or False"):
        convscope.explain(w, x, (0, 0, 0, 0), transposed="yes")
    with pytest.raises(ValueError, match=r"output_padding and output_size are for transposed convolutions"):
        convscope.explain(w, x, (0, 0, 0, 0), output_padding=1)
    with pytest.raises(TypeError, match="output_size is the argument of a transposed layer's forward"):
        convscope.explain(w, x, (0, 0, 0, 0), transposed=True, output_size=(3, 3))
    with pytest.raises(ValueError, match="padding_mode of a transposed convolution must be 'zeros'"):
        convscope.explain(w, x, (0, 0, 0, 0), transposed=True, padding_mode="reflect")
    with pytest.raises(ValueError, match="must be 4-D"):
        convscope.explain(np.zeros((1, 1, 3, 3, 3, 3)), x, (0, 0, 0, 0), transposed=True)
    big = np.zeros((600_000, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="an explanation builds at most"):
        convscope.explain(big, np.zeros((600_000, 1, 1), np.float32), (0, 0, 0), transposed=True)


# --------------------------------------------------------------------------- CLI


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "convscope", "explain", *args, "--color", "never"],
                          capture_output=True, text=True, timeout=120)


def test_cli_explains_a_transposed_output_and_gradient():
    result = _cli("--input", "3x3", "--integers", "-k", "3", "-s", "2", "-p", "1", "--transposed",
                  "--output-padding", "1", "--at", "1,2")
    assert result.returncode == 0, result.stderr
    assert "lands on y[0, 1, 2]" in result.stdout and "zero-inserted input with the flipped kernel" in result.stdout
    assert "H_out = (3−1)·2 − 2·1 + 1·(3−1) + 1 + 1 = 6" in result.stdout
    result = _cli("--input", "2x3x3", "--integers", "-k", "2", "-s", "2", "--transposed", "--out-channels", "3",
                  "--grad", "weight", "--at", "1,2,1,1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("∂L/∂w[1, 2, 1, 1]")


@pytest.mark.parametrize("args,message", [
    (("-s", "2", "--transposed", "--output-padding", "2"),
     "output_padding must be smaller than stride or dilation"),
    (("-s", "2", "--output-padding", "1"), "--output-padding 1 needs --transposed"),
    (("--transposed", "-p", "same"), "padding of a transposed convolution"),
    (("--transposed", "--padding-mode", "reflect"), "zeros only"),
    (("--transposed", "--out-channels", "3", "-g", "2", "--input", "2x3x3"), "must divide --out-channels"),
    (("--transposed", "-s", "4000", "--input", "3x3"), "too many to explain"),
])
def test_cli_bad_transposed_input_is_one_line_and_exit_2(args, message):
    result = _cli(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


# --------------------------------------------------------------------------- properties

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(nd=st.integers(1, 3), size=st.integers(1, 4), k=st.integers(1, 3), s=st.integers(1, 3), p=st.integers(0, 3),
       d=st.integers(1, 3), op=st.integers(0, 2), groups=st.sampled_from([1, 2]), batched=st.booleans(),
       data=st.data())
def test_property_scatter_and_gather_agree_with_the_convolution(nd, size, k, s, p, d, op, groups, batched, data):
    assume(op < max(s, d))
    out = transposed_output_length(size, k, s, p, d, op)
    assume(out >= 1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    c_in = groups * data.draw(st.integers(1, 2))
    x = rng.integers(-3, 4, size=((2,) if batched else ()) + (c_in,) + (size,) * nd).astype(np.float64)
    w = rng.integers(-3, 4, size=(x.shape[-nd - 1], 2) + (k,) * nd).astype(np.float64)
    b = rng.integers(-3, 4, size=2 * groups).astype(np.float64)
    params = dict(stride=s, padding=p, output_padding=op, dilation=d, groups=groups)
    y = _conv_transpose(nd, x, w, b, **params)
    at = tuple(data.draw(st.integers(0, m - 1)) for m in y.shape)
    e = convscope.explain(w, x, at, bias=b, transposed=True, **params)
    assert e.value == y[at] == e.sum_of_products + e.bias                 # whole numbers: exact
    assert [(t.input_index, t.weight_index) for t in e.terms] == _brute_force_terms(nd, x, w, at, **params)
    conv = getattr(convscope, f"conv{nd}d")(e.gather_input, e.gather_weight, b, dilation=d, groups=groups)
    assert conv[e.gather_at] == e.value


@pytest.mark.slow
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_sweep_every_output_against_torch(nd):
    require_torch()
    rng = np.random.default_rng(nd)
    for s, p, d, op, groups in itertools.product((1, 2, 3), (0, 1, 2), (1, 2), (0, 1), (1, 2)):
        if op >= max(s, d) or transposed_output_length(3, 2, s, p, d, op) < 1:
            continue
        x = rng.integers(-3, 4, size=(1, 2) + (3,) * nd).astype(np.float64)
        w = rng.integers(-3, 4, size=(2, 2) + (2,) * nd).astype(np.float64)
        b = rng.integers(-3, 4, size=2 * groups).astype(np.float64)
        params = dict(stride=s, padding=p, output_padding=op, dilation=d, groups=groups)
        y = _conv_transpose(nd, x, w, b, **params)
        for at in itertools.product(*(range(m) for m in y.shape)):
            e = convscope.explain(w, x, at, bias=b, transposed=True, **params)
            assert e.value == y[at] == e.sum_of_products + e.bias
        for at in itertools.product(*(range(m) for m in x.shape)):
            assert convscope.explain_grad(w, x, None, "input", at, transposed=True, **params).value == \
                torch_transpose_at(x, w, None, at, np.ones(y.shape), "input", **params)


def test_docstring_examples():
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module("convscope.explain.transposed"),
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_zero_output_padding_as_a_tuple_is_an_ordinary_convolution():
    x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    e = convscope.explain(w, x, (0, 0, 0, 0), output_padding=(0, 0))
    assert isinstance(e, convscope.Explanation) and e.value == 4
