"""Hypothesis property tests over random convolution configurations.

* random valid configurations (shapes, kernel, stride, padding including
  'valid'/'same', dilation, groups, padding mode, batched or not, empty batch,
  float64/float32/float16) agree with torch through the oracle, and the fast path agrees with the
  reference loops;
* random configurations, valid or not, are rejected by convscope exactly when
  torch rejects them;
* conv2d is linear in the input and in the weight, the bias adds, and the
  gradients are the adjoints: ⟨conv2d(x, w), g⟩ = ⟨x, ∂x⟩ = ⟨w, ∂w⟩ and
  ⟨b, ∂b⟩ = ⟨conv2d(x, w, b) − conv2d(x, w), g⟩, in float64.

Validity is decided here from the formulas, independently of convscope:
``H_out = ⌊(H + pad_top + pad_bottom − d·(k−1) − 1)/s⌋ + 1 ≥ 1``, reflect
padding smaller than the input, circular padding at most the input size.

The default examples keep this file within a few seconds; the ``slow``
variants draw many more.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import convscope
from oracle import PADDING_MODES, assert_close, check_against_torch, random_case, require_torch, torch_conv2d

require_torch()

pytestmark = [
    pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning"),
]

ALL_DTYPES = (np.float64, np.float32, np.float16)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pair(draw, elements):
    if draw(st.booleans()):
        v = draw(elements)
        return v, (v, v)
    pair = (draw(elements), draw(elements))
    return pair, pair


def side_padding(padding, kernel, dilation):
    """((top, bottom), (left, right)) as torch pads, 'same' with the odd extra at the bottom/right."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return ((ph, ph), (pw, pw))


def is_valid(config) -> bool:
    """Whether torch accepts ``config``, from the output-size formula and the padding-mode limits."""
    p = config["params"]
    hw = config["x_shape"][-2:]
    if p["padding"] == "same" and p["stride_pair"] != (1, 1):
        return False
    sides = side_padding(p["padding"], config["kernel"], p["dilation_pair"])
    for n, (before, after), k, s, d in zip(hw, sides, config["kernel"], p["stride_pair"], p["dilation_pair"]):
        if (n + before + after - d * (k - 1) - 1) // s + 1 < 1:
            return False
        if p["padding_mode"] == "reflect" and max(before, after) >= n:
            return False
        if p["padding_mode"] == "circular" and max(before, after) > n:
            return False
    return True


@st.composite
def configs(draw, *, allow_strided_same=False, max_hw=7, dtypes=(np.float64, np.float32)):
    """A random conv2d configuration (not necessarily valid: see :func:`is_valid`)."""
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    H, W = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    _, kernel = _pair(draw, st.integers(1, 4))
    padding = draw(st.one_of(
        st.integers(0, 3),
        st.tuples(st.integers(0, 3), st.integers(0, 3)),
        st.sampled_from(["valid", "same"]),
    ))
    if padding == "same" and not allow_strided_same:
        stride_arg, stride = draw(st.sampled_from([1, (1, 1)])), (1, 1)
    else:
        stride_arg, stride = _pair(draw, st.integers(1, 3))
    dilation_arg, dilation = _pair(draw, st.integers(1, 3))
    batch = draw(st.sampled_from([None, 0, 1, 2]))
    x_shape = (c_in, H, W) if batch is None else (batch, c_in, H, W)
    return {
        "x_shape": x_shape,
        "w_shape": (c_out, c_in // groups) + kernel,
        "kernel": kernel,
        "bias": draw(st.booleans()),
        "dtype": draw(st.sampled_from(dtypes)),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "params": {
            "stride": stride_arg, "stride_pair": stride,
            "padding": padding,
            "dilation": dilation_arg, "dilation_pair": dilation,
            "groups": groups,
            "padding_mode": draw(st.sampled_from(PADDING_MODES)),
        },
    }


def conv_params(config):
    p = config["params"]
    return {k: p[k] for k in ("stride", "padding", "dilation", "groups", "padding_mode")}


def arrays(config):
    rng = np.random.default_rng(config["seed"])
    return random_case(rng, config["x_shape"], config["w_shape"], config["dtype"], bias=config["bias"])


# --------------------------------------------------------------------------- against torch


def _check_torch(config, algorithm):
    assume(is_valid(config))
    x, w, b = arrays(config)
    out = check_against_torch(x, w, b, algorithm=algorithm, seed=config["seed"], **conv_params(config))
    assert out.ndim == x.ndim


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(dtypes=ALL_DTYPES), st.sampled_from([None, "reference"]))
def test_matches_torch(config, algorithm):
    _check_torch(config, algorithm)


@pytest.mark.slow
@MANY
@given(configs(max_hw=9, dtypes=ALL_DTYPES), st.sampled_from([None, "gemm", "reference"]))
def test_matches_torch_many(config, algorithm):
    _check_torch(config, algorithm)


# --------------------------------------------------------------------------- fast path vs reference


def _check_reference(config):
    assume(is_valid(config))
    x, w, b = arrays(config)
    params = conv_params(config)
    ref = convscope.conv2d(x, w, b, algorithm="reference", **params)
    assert_close(convscope.conv2d(x, w, b, **params), ref, "forward")
    g = np.random.default_rng(config["seed"] + 1).standard_normal(ref.shape).astype(ref.dtype)
    fast = convscope.conv2d_backward(g, x, w, **params)
    slow = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    for got, exp, name in zip(fast, slow, fast._fields):
        assert_close(got, exp, f"grad {name}")


@FAST
@given(configs())
def test_fast_path_matches_reference(config):
    _check_reference(config)


@pytest.mark.slow
@MANY
@given(configs(max_hw=9))
def test_fast_path_matches_reference_many(config):
    _check_reference(config)


# --------------------------------------------------------------------------- rejection


def _check_rejection(config):
    x, w, b = arrays(config)
    params = conv_params(config)
    try:
        expected, _ = torch_conv2d(x, w, b, None, **params)
    except (RuntimeError, ValueError):
        expected = None
    if expected is None:
        with pytest.raises((ValueError, TypeError)):
            convscope.conv2d(x, w, b, **params)
    else:
        assert_close(convscope.conv2d(x, w, b, **params), expected)
    assert (expected is not None) == is_valid(config)


@settings(max_examples=60, deadline=None)
@given(configs(allow_strided_same=True, dtypes=(np.float64,)))
def test_rejects_exactly_what_torch_rejects(config):
    _check_rejection(config)


@pytest.mark.slow
@settings(max_examples=2000, deadline=None)
@given(configs(allow_strided_same=True, max_hw=9, dtypes=(np.float64,)))
def test_rejects_exactly_what_torch_rejects_many(config):
    _check_rejection(config)


# --------------------------------------------------------------------------- linearity and adjoint


def _close(actual, expected, scale, what):
    err = float(np.abs(np.asarray(actual) - np.asarray(expected)).max()) if np.size(expected) else 0.0
    assert err <= 1e-10 * max(scale, 1e-300), f"{what}: |error| {err:.3g} vs scale {scale:.3g}"


def _check_linearity(config, algorithm, a, c):
    assume(is_valid(config))
    rng = np.random.default_rng(config["seed"])
    x1, w1, b = arrays(config)
    x2 = rng.standard_normal(x1.shape)
    w2 = rng.standard_normal(w1.shape)
    params = dict(conv_params(config), algorithm=algorithm)
    conv = convscope.conv2d

    y1, y2 = conv(x1, w1, **params), conv(x2, w1, **params)
    scale = abs(a) * np.abs(y1).max(initial=0) + abs(c) * np.abs(y2).max(initial=0)
    _close(conv(a * x1 + c * x2, w1, **params), a * y1 + c * y2, scale, "linear in the input")

    z2 = conv(x1, w2, **params)
    scale = abs(a) * np.abs(y1).max(initial=0) + abs(c) * np.abs(z2).max(initial=0)
    _close(conv(x1, a * w1 + c * w2, **params), a * y1 + c * z2, scale, "linear in the weight")

    if b is not None:
        expected = y1 + b.reshape((-1, 1, 1))
        _close(conv(x1, w1, b, **params), expected, np.abs(expected).max(initial=0), "bias adds")


def _check_adjoint(config, algorithm):
    assume(is_valid(config))
    x, w, b = arrays(config)
    b = np.random.default_rng(config["seed"] + 2).standard_normal(w.shape[0])
    params = dict(conv_params(config), algorithm=algorithm)
    y = convscope.conv2d(x, w, **params)
    g = np.random.default_rng(config["seed"] + 1).standard_normal(y.shape)
    grads = convscope.conv2d_backward(g, x, w, **params)
    lhs = float(np.sum(y * g))
    scale = float(np.sum(np.abs(y * g)) + np.sum(np.abs(x * grads.input)) + np.sum(np.abs(w * grads.weight)))
    _close(float(np.sum(x * grads.input)), lhs, scale, "⟨conv2d(x, w), g⟩ = ⟨x, ∂x⟩")
    _close(float(np.sum(w * grads.weight)), lhs, scale, "⟨conv2d(x, w), g⟩ = ⟨w, ∂w⟩")
    shift = convscope.conv2d(x, w, b, **params) - y
    _close(float(np.sum(b * grads.bias)), float(np.sum(shift * g)),
           float(np.sum(np.abs(shift * g))), "⟨b, ∂b⟩")


COEFFICIENTS = st.floats(-3, 3, allow_nan=False, allow_infinity=False)


@FAST
@given(configs(dtypes=(np.float64,)), st.sampled_from([None, "reference"]), COEFFICIENTS, COEFFICIENTS)
def test_linearity(config, algorithm, a, c):
    _check_linearity(config, algorithm, a, c)


@FAST
@given(configs(dtypes=(np.float64,)), st.sampled_from([None, "reference"]))
def test_adjoint_identity(config, algorithm):
    _check_adjoint(config, algorithm)


@pytest.mark.slow
@MANY
@given(configs(max_hw=9, dtypes=(np.float64,)), st.sampled_from([None, "reference"]), COEFFICIENTS, COEFFICIENTS)
def test_linearity_many(config, algorithm, a, c):
    _check_linearity(config, algorithm, a, c)


@pytest.mark.slow
@MANY
@given(configs(max_hw=9, dtypes=(np.float64,)), st.sampled_from([None, "reference"]))
def test_adjoint_identity_many(config, algorithm):
    _check_adjoint(config, algorithm)
