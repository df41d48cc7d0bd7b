"""The tap-products path (``algorithm='taps'``): kernels one row high, every 1-d convolution.

Against torch (float64 tight, float32 scaled) and the reference loops on strides (stride phases),
dilations, every padding mode, 'same' and groups; 2-d kernels of height 1 over several rows; NaN
and ±Inf where torch's native kernels put them; the planner's row; the workspace estimate and limit.
"""
from __future__ import annotations

import numpy as np
import pytest

import convscope
from convscope import algorithms
from convscope.spec import bind, lift
from oracle import (assert_close, assert_same_nonfinite, check_nd_against_torch, peak_bytes, random_case, require_torch,
                    torch_native_conv_nd)

require_torch()

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

# (C, L), weight (C_out, C/groups, k), params: batch 2
CASES_1D = [
    ((3, 17), (4, 3, 3), dict(padding=1)),
    ((4, 23), (6, 2, 3), dict(stride=2, padding=2, dilation=2, groups=2, padding_mode="circular")),
    ((4, 20), (4, 4, 2), dict(stride=3, dilation=1)),                                  # a phase no tap reads
    ((6, 29), (6, 3, 4), dict(stride=2, padding=3, dilation=3, groups=2, padding_mode="reflect")),
    ((3, 31), (5, 3, 2), dict(stride=5, padding=1, padding_mode="replicate")),         # stride above the reach
    ((6, 19), (6, 2, 3), dict(padding="same", dilation=4, groups=3)),
    ((5, 16), (3, 5, 4), dict(padding="same")),                                        # even kernel: 'same' split
    ((3, 12), (4, 3, 1), dict(stride=2, padding=1)),                                   # one tap
    ((2, 9), (3, 2, 9), dict()),                                                       # one output
    ((3, 2101), (6, 3, 3), dict(stride=2, padding=1)),                                 # two blocks of columns
]
# 2-d kernels one row high over several rows: (C, H, W), weight (C_out, C/groups, 1, k), params
CASES_2D = [
    ((3, 5, 11), (4, 3, 1, 3), dict(stride=(2, 1), padding=(1, 1))),
    ((4, 4, 13), (4, 2, 1, 2), dict(stride=(1, 3), padding=(0, 2), dilation=(2, 2), groups=2,
                                    padding_mode="circular")),
    ((3, 6, 9), (2, 3, 1, 1), dict(stride=2, padding=1, padding_mode="reflect")),
]


@pytest.fixture(params=["direct sums", "products"])
def forward_variant(request, monkeypatch):
    """The taps forward both ways: compiled direct sums (few taps × channels, as these small cases
    have) and BLAS's products (as wider layers run)."""
    if request.param == "products":
        monkeypatch.setattr(algorithms.taps, "DIRECT_MAX_ROWS", 0)
    return request.param


def _arrays(chw, w_shape, dtype, seed=0):
    return random_case(np.random.default_rng(seed), (2,) + chw, w_shape, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chw, w_shape, params", CASES_1D + CASES_2D, ids=lambda v: str(v).replace(" ", ""))
def test_matches_torch_and_reference(chw, w_shape, params, dtype, forward_variant):
    x, w, b = _arrays(chw, w_shape, dtype)
    out = check_nd_against_torch(x, w, b, algorithm="taps", **params)
    nd = len(w_shape) - 2
    conv, backward = getattr(convscope, f"conv{nd}d"), getattr(convscope, f"conv{nd}d_backward")
    assert_close(out, conv(x, w, b, algorithm="reference", **params), "forward against the reference")
    g = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    got, ref = (backward(g, x, w, algorithm=a, **params) for a in ("taps", "reference"))
    for field in got._fields:
        assert_close(getattr(got, field), getattr(ref, field), f"grad {field} against the reference")


def test_refuses_taller_kernels():
    x, w, b = _arrays((3, 8, 8), (4, 3, 3, 3), np.float64)
    with pytest.raises(ValueError, match=r"algorithm='taps' cannot compute this convolution: it needs a kernel "
                                         r"one row high \(1-d convolutions\), got kernel_size=\(3, 3\)"):
        convscope.conv2d(x, w, b, algorithm="taps")


# one NaN / ±Inf in input, weight (a border tap: it meets the zero padding) or grad_output
PERTURBATIONS = [(where, v) for where in ("input", "weight", "grad_output") for v in (np.nan, np.inf, -np.inf)]
NONFINITE_CASES = [((3, 14), (4, 3, 3), dict(padding=2, dilation=2)),
                   ((4, 15), (4, 2, 3), dict(stride=2, padding=1, groups=2)),
                   ((3, 14), (4, 3, 3), dict(padding=1, padding_mode="reflect"))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chw, w_shape, params", NONFINITE_CASES, ids=lambda v: str(v).replace(" ", ""))
def test_nonfinite_values_land_where_torch_puts_them(chw, w_shape, params, dtype, forward_variant):
    for where, value in PERTURBATIONS:
        x, w, b = _arrays(chw, w_shape, dtype, seed=7)
        g = np.random.default_rng(8).standard_normal(
            convscope.conv1d(x, w, b, **params).shape).astype(dtype)
        {"input": x, "weight": w, "grad_output": g}[where][(1, 0, 0) if where != "input" else (1, chw[0] - 1, 1)] = value
        out, (dx, dw, db) = torch_native_conv_nd(x, w, b, g, **params)
        what = f"{where}={value}"
        assert_same_nonfinite(convscope.conv1d(x, w, b, algorithm="taps", **params), out, f"{what}: forward")
        grads = convscope.conv1d_backward(g, x, w, algorithm="taps", **params)
        for field, want in zip(grads._fields, (dx, dw, db)):
            assert_same_nonfinite(getattr(grads, field), want, f"{what}: grad {field}")


def _plan(x_shape, w_shape, **params):
    return {c.algorithm for c in convscope.plan(x_shape, w_shape, **params)}


def _passes(x_shape, w_shape, **params):
    return tuple(c.algorithm for c in convscope.plan(x_shape, w_shape, **params))


def test_planner_sums_few_taps_directly():
    """1-d layers with few taps × channels per group run their forward as direct sums, wherever their
    gradients run; wider layers keep the products."""
    assert _passes((4, 1, 16000), (512, 1, 10), stride=5) == ("taps", "gemm", "gemm")    # wav2vec's front end
    assert _passes((8, 3, 8000), (64, 3, 7), stride=2, padding=3) == ("taps", "gemm", "gemm")
    assert _passes((4, 16, 8000), (16, 16, 2), padding=1) == ("taps", "taps", "taps")      # the taps row's
    for x_shape, w_shape in (((4, 1, 16000), (512, 1, 10)), ((4, 16, 8000), (16, 16, 2))):
        assert "compiled direct sums over" in convscope.plan(x_shape, w_shape).forward.reason
    assert "3 matrix products" in convscope.plan((4, 16, 4000), (16, 16, 3)).forward.reason   # 48 rows: products
    assert _passes((8, 3, 520), (16, 3, 5)) == ("gemm",) * 3                                 # few outputs
    assert "taps" not in _passes((4, 3, 8, 600), (8, 3, 1, 5))                               # 2-d, several rows


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_planned_front_end_matches_torch(dtype):
    """A wav2vec-style front end (one channel, kernel 10, stride 5) through the planned path; 21 output
    channels leave a remainder of the groups of four, 10 rows one of the groups of four rows."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 1, 16000)).astype(dtype)
    w = rng.standard_normal((21, 1, 10)).astype(dtype)
    b = rng.standard_normal(21).astype(dtype)
    assert convscope.plan(x.shape, w.shape, stride=5).forward.algorithm == "taps"
    out = check_nd_against_torch(x, w, b, stride=5)
    assert_close(out, convscope.conv1d(x, w, b, stride=5, algorithm="gemm"), "forward against gemm's")


def test_planner_sends_wide_stride_1_layers_here():
    assert _plan((4, 64, 4000), (64, 64, 2), dilation=64) == {"taps"}      # a TCN layer
    assert _plan((2, 16, 600), (8, 16, 3), padding=1) == {"taps"}
    assert "taps" not in _plan((4, 512, 799), (512, 512, 3), stride=2)     # strided: im2col's one product won
    assert "taps" not in _passes((4, 1, 16000), (512, 1, 10), stride=5)[1:]  # one input channel: gemm's gradients
    assert "taps" not in _plan((4, 64, 300), (64, 64, 3))                  # few outputs
    assert "taps" not in _plan((4, 64, 8, 600), (64, 64, 1, 3))            # 2-d, several rows


def test_planned_layer_puts_nonfinite_values_where_torch_does():
    x, w, b = _arrays((16, 600), (8, 16, 3), np.float32, seed=3)
    w[0, 0, 0] = np.inf                                     # meets the zero padding at the first output
    g = np.random.default_rng(4).standard_normal((2, 8, 600)).astype(np.float32)
    g[1, 2, 5] = np.nan
    out, (dx, dw, db) = torch_native_conv_nd(x, w, b, g, padding=1)
    assert_same_nonfinite(convscope.conv1d(x, w, b, padding=1), out, "forward")
    grads = convscope.conv1d_backward(g, x, w, padding=1)
    for field, want in zip(grads._fields, (dx, dw, db)):
        assert_same_nonfinite(getattr(grads, field), want, f"grad {field}")


WORKSPACE_CASES = [((8, 300), (8, 8, 3), dict(padding=2, dilation=2, padding_mode="reflect")),
                   ((8, 301), (8, 4, 3), dict(stride=2, padding=1, groups=2))]


@pytest.mark.parametrize("chw, w_shape, params", WORKSPACE_CASES, ids=["reflect", "strided"])
def test_workspace_estimate_bounds_the_peak_and_the_limit_holds(chw, w_shape, params, forward_variant):
    """Each pass's peak extra memory stays under inputs + results + its estimate, and under a limit
    that cuts the batch (N = 6) into slices, with the same results."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6,) + chw)
    w = rng.standard_normal(w_shape)
    call = lift(bind(1, input=x, weight=w, **params))
    impl = algorithms.ALGORITHMS["taps"]
    convscope.conv1d(x[:1], w, algorithm="taps", **params)          # compiled kernels loaded before measuring
    y, peak = peak_bytes(lambda: convscope.conv1d(x, w, algorithm="taps", **params))
    assert peak <= x.nbytes + y.nbytes + impl.workspace("forward", call.spec, call.shape, 8)
    g = rng.standard_normal(y.shape)
    for mask, pass_, size in (((True, False, False), "grad_input", x.nbytes), ((False, True, False), "grad_weight", w.nbytes)):
        _, peak = peak_bytes(lambda: convscope.conv1d_backward(g, x, w, algorithm="taps", output_mask=mask, **params))
        assert peak <= g.nbytes + size + impl.workspace(pass_, call.spec, call.shape, 8), pass_
    want = convscope.conv1d_backward(g, x, w, algorithm="taps", **params)
    limit = impl.workspace("forward", call.spec, call.shape._replace(N=2), 8)
    with convscope.workspace_limit(limit):
        got, peak = peak_bytes(lambda: convscope.conv1d(x, w, algorithm="taps", **params))
        got_g = convscope.conv1d_backward(g, x, w, algorithm="taps", **params)
    assert peak <= x.nbytes + y.nbytes + limit
    assert_close(got, y, "forward in slices")
    for field in want._fields:
        assert_close(getattr(got_g, field), getattr(want, field), f"grad {field} in slices")
