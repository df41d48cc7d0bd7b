"""The gather path (grad_input as a channels-last product and a compiled gather of the taps): against
torch and the reference loops, as a convolution's input gradient and as the transposed convolution's
forward, in both layouts, with NaN/Inf, under the workspace limit, and where the planner chooses it.

The registry-wide tests (tests/test_algorithms.py, tests/test_nonfinite.py) force it on every
configuration they hold too; these add the transposed convolutions, strides, dilations and groups in
combination, both product layouts, and random configurations.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convscope
from convscope import algorithms
from convscope.algorithms import gather
from convscope.spec import check_shapes, make_spec
from oracle import (require_torch, assert_close, assert_same_nonfinite, check_against_torch, check_transpose_against_torch,
                    peak_bytes, torch_conv_transpose_nd, torch_grad_function, torch_native_conv_transpose_nd)
from test_transpose import FEATURES, _arrays

require_torch()

LAYOUTS = ("folded", "per-sample")

# (input (C, H, W), weight (C_out, C/groups, kH, kW), parameters): convolutions whose input gradient it computes
CONVS = [
    ((6, 9, 8), (4, 6, 3, 3), dict(stride=2, padding=1)),
    ((6, 11, 9), (4, 3, 3, 2), dict(stride=(2, 3), padding=(1, 2), dilation=(2, 1), groups=2)),
    ((4, 12, 13), (6, 4, 4, 4), dict(stride=2, padding=1)),                         # 4×4/2: two taps per row
    ((4, 8, 10), (6, 4, 2, 2), dict(stride=2)),                                     # k = s: one tap per pixel
    ((4, 10, 10), (6, 4, 3, 3), dict(stride=3, padding=2)),                         # rows no tap reaches
    ((3, 9, 9), (6, 1, 3, 3), dict(stride=2, padding=1, groups=3)),
    ((5, 7, 9), (5, 5, 3, 5), dict(stride=(1, 2), padding=2, padding_mode="reflect")),
    ((4, 9, 8), (4, 4, 3, 3), dict(stride=2, padding=(2, 1), padding_mode="circular")),
    ((4, 9, 8), (4, 2, 3, 3), dict(stride=2, padding=1, groups=2, padding_mode="replicate")),
    ((4, 1, 13), (6, 4, 1, 3), dict(stride=(1, 2), padding=(0, 1))),                # a 1-d one, lifted
]


@pytest.fixture(params=LAYOUTS)
def layout(request, monkeypatch):
    """Both product layouts, whatever the image size."""
    monkeypatch.setattr(gather, "batch_folded", lambda spec, shape: request.param == "folded")
    return request.param


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CONVS, ids=[f"conv{i}" for i in range(len(CONVS))])
def test_input_gradient_matches_torch_and_the_reference(case, dtype, layout):
    chw, w_shape, params = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2,) + chw).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    out = check_against_torch(x, w, b, algorithm="gather", **params)
    g = rng.standard_normal(out.shape).astype(dtype)
    got = _input_grad(g, x, w, "gather", **params)
    assert_close(got, _input_grad(g, x, w, "reference", **params), "vs reference")
    if params.get("padding_mode", "zeros") == "zeros":
        assert_close(got, torch_grad_function("conv2d_input", x.shape, w, g, **params), "vs torch.nn.grad")


def _input_grad(g, x, w, algorithm, **params):
    return convscope.conv2d_backward(g, x, w, algorithm=algorithm, output_mask=(True, False, False),
                                     **params).input


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_long_rows_are_gathered_in_blocks_of_columns(dtype, layout):
    """Rows whose W·C/groups exceeds the kernel's accumulator (kernels.gather.ACC_ELEMENTS) are cut into
    blocks of columns: a 1-d transposed convolution of 64 → 2·64 channels and 400 outputs."""
    from convscope.algorithms.kernels.gather import ACC_ELEMENTS

    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 32, 200)).astype(dtype)
    w = rng.standard_normal((32, 64, 4)).astype(dtype)
    assert 400 * 64 > 2 * ACC_ELEMENTS
    check_transpose_against_torch(x, w, None, algorithm="gather", stride=2, padding=1, groups=1)
    x2 = rng.standard_normal((2, 64, 200)).astype(dtype)
    w2 = rng.standard_normal((64, 64, 3)).astype(dtype)
    check_transpose_against_torch(x2, w2, None, algorithm="gather", stride=2, padding=2, groups=2,
                                  output_padding=1, dilation=2)


@pytest.mark.parametrize("nd", (1, 2))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transposed_convolutions_match_torch(nd, dtype, layout):
    """Every feature of the transposed tests (stride, padding, output_padding, dilation, groups,
    depthwise, no bias, 1×1, U-Net 2×2/2, FCN 4×4/2), forward and the three gradients."""
    for name, chw, w_shape, params in FEATURES[nd]:
        x, w, b, params = _arrays(chw, w_shape, params, "batched", dtype)
        check_transpose_against_torch(x, w, b, algorithm="gather", **params)


@pytest.mark.parametrize("case", [FEATURES[2][2], FEATURES[1][3], FEATURES[2][6]], ids=lambda c: c[0])
@pytest.mark.parametrize("layout_", ("unbatched", "zero_batch"))
def test_unbatched_and_empty_batch(case, layout_):
    name, chw, w_shape, params = case
    x, w, b, params = _arrays(chw, w_shape, params, layout_, np.float32)
    check_transpose_against_torch(x, w, b, algorithm="gather", **params)


def test_float16_computes_in_float32():
    name, chw, w_shape, params = FEATURES[2][11]                      # FCN 4×4/2
    x, w, b, params = _arrays(chw, w_shape, params, "batched", np.float16)
    out = check_transpose_against_torch(x, w, b, algorithm="gather", **params)
    assert out.dtype == np.float16


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_transposed_convolutions_equal_the_reference(data):
    """Random 2-d transposed convolutions (1-d as H = 1), float64: forward and the three gradients of the
    gather path against the reference loops."""
    groups = data.draw(st.integers(1, 3), label="groups")
    c_in = groups * data.draw(st.integers(1, 3), label="C_in/groups")
    c_out_g = data.draw(st.integers(1, 3), label="C_out/groups")
    k = data.draw(st.tuples(st.integers(1, 4), st.integers(1, 4)), label="kernel")
    s = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="stride")
    d = data.draw(st.tuples(st.integers(1, 2), st.integers(1, 2)), label="dilation")
    p = data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2)), label="padding")
    a = data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2)), label="output_padding")
    hw = data.draw(st.tuples(st.integers(1, 5), st.integers(1, 5)), label="input size")
    n = data.draw(st.integers(0, 2), label="N")
    assume(all(ai < max(si, di) for ai, si, di in zip(a, s, d)))
    assume(min((hi - 1) * si - 2 * pi + di * (ki - 1) + ai + 1
               for hi, si, pi, di, ki, ai in zip(hw, s, p, d, k, a)) >= 1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    x = rng.standard_normal((n, c_in) + hw)
    w = rng.standard_normal((c_in, c_out_g) + k)
    b = rng.standard_normal(c_out_g * groups)
    params = dict(stride=s, padding=p, output_padding=a, groups=groups, dilation=d)
    want = convscope.conv_transpose2d(x, w, b, algorithm="reference", **params)
    assert_close(convscope.conv_transpose2d(x, w, b, algorithm="gather", **params), want, "forward")
    g = rng.standard_normal(want.shape)
    got = convscope.conv_transpose2d_backward(g, x, w, algorithm="gather", **params)
    ref = convscope.conv_transpose2d_backward(g, x, w, algorithm="reference", **params)
    for field in got._fields:
        assert_close(getattr(got, field), getattr(ref, field), f"grad {field}")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["input", "weight", "grad_output"])
def test_nonfinite_values_land_where_torch_puts_them(where, value, layout):
    """One NaN or ±Inf in a transposed convolution's input (a border pixel), weight (a corner tap) or
    grad_output: the output and the three gradients have the NaN/±Inf masks and finite values of torch's
    native kernels (oracle.torch_native_conv_transpose_nd says why)."""
    rng = np.random.default_rng(4)
    params = dict(stride=2, padding=1, output_padding=1)
    x = rng.standard_normal((2, 6, 5, 4)).astype(np.float32)
    w = rng.uniform(-1, 1, (6, 3, 4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    y_shape = torch_conv_transpose_nd(x, w, b, None, **params)[0].shape
    g = rng.standard_normal(y_shape).astype(np.float32)
    {"input": x, "weight": w, "grad_output": g}[where][(1, 2, 0, 3) if where != "weight" else (2, 1, 0, 0)] = value
    want_out, want = torch_native_conv_transpose_nd(x, w, b, g, **params)
    assert_same_nonfinite(convscope.conv_transpose2d(x, w, b, algorithm="gather", **params), want_out, "forward")
    got = convscope.conv_transpose2d_backward(g, x, w, algorithm="gather", **params)
    for field, expected in zip(got._fields, want):
        assert_same_nonfinite(getattr(got, field), expected, f"grad {field}")


# --------------------------------------------------------------------------- the workspace limit


def _spec_shape(x_shape, w_shape, params):
    spec = make_spec(w_shape[2:], params.get("stride", 1), params.get("padding", 0), params.get("dilation", 1),
                     params.get("groups", 1), params.get("padding_mode", "zeros"))
    return spec, check_shapes(spec, x_shape, w_shape)


WORKSPACE = [
    ((4, 16, 24, 20), (24, 16, 4, 4), dict(stride=2, padding=1)),
    ((3, 8, 25, 23), (8, 4, 3, 3), dict(stride=2, padding=2, groups=2, padding_mode="reflect")),
]


@pytest.mark.parametrize("case", WORKSPACE, ids=["zeros", "reflect-groups"])
@pytest.mark.parametrize("limit", [16 << 10, 320 << 10])       # rows of one sample; slices of the batch
def test_chunked_equals_unchunked_and_stays_under_the_limit(case, limit):
    x_shape, w_shape, params = case
    rng = np.random.default_rng(1)
    w = rng.standard_normal(w_shape)
    spec, shape = _spec_shape(x_shape, w_shape, params)
    g = rng.standard_normal((shape.N, shape.out_channels, shape.H_out, shape.W_out))
    assert gather.workspace("grad_input", spec, shape, 8) > limit                  # really chunked
    x = np.zeros(x_shape)
    want = _input_grad(g, x, w, "reference", **params)
    with convscope.workspace_limit(limit):
        got, peak = peak_bytes(lambda: _input_grad(g, x, w, "gather", **params))
    assert_close(got, want)
    if limit > 16 << 10:
        assert peak <= x.nbytes + g.nbytes + want.nbytes + limit, f"peak {peak / 2**20:.2f} MiB"


def test_one_sample_is_cut_into_rows():
    """One sample above the limit: its input gradient is gathered on blocks of output rows."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 16, 3, 3))
    x_shape, params = (1, 16, 40, 30), dict(stride=2, padding=1, padding_mode="replicate")
    spec, shape = _spec_shape(x_shape, w.shape, params)
    g = rng.standard_normal((1, 8, shape.H_out, shape.W_out))
    calls = []
    original = gather.grad_input

    def spy(grad_out, *args):
        calls.append(grad_out.shape)
        return original(grad_out, *args)

    x = np.zeros(x_shape)
    want = _input_grad(g, x, w, "reference", **params)
    with convscope.workspace_limit(64 << 10), pytest.MonkeyPatch.context() as mp:
        mp.setattr(gather, "grad_input", spy)
        got = _input_grad(g, x, w, "gather", **params)
    assert len(calls) > 1 and all(c[2] < shape.H_out for c in calls)
    assert_close(got, want)


# --------------------------------------------------------------------------- the planner


@pytest.mark.parametrize("x_shape, w_shape, params, expected", [
    ((16, 512, 4, 4), (512, 256, 4, 4), dict(stride=2, padding=1), "gather"),      # DCGAN generator
    ((8, 21, 16, 16), (21, 21, 4, 4), dict(stride=2), "gather"),                   # FCN 4×4/2
    ((16, 64, 32, 32), (64, 3, 4, 4), dict(stride=2, padding=1), "gemm"),          # 3 output channels
    ((4, 32, 9, 9), (32, 32, 3, 3), dict(padding=1), "gemm"),                      # stride 1
    ((4, 64, 1, 99), (64, 64, 1, 3), dict(stride=(1, 2)), "gemm"),                 # 1-d (as height 1)
])
def test_planner_sends_strided_transposed_convolutions_to_it(x_shape, w_shape, params, expected):
    y = convscope.conv_transpose2d_output_size(x_shape[2:], w_shape[2:], **params)
    p = convscope.plan((x_shape[0], w_shape[1]) + tuple(y), w_shape, **params)     # the convolution it is the adjoint of
    assert p.grad_input.algorithm == expected
    assert (p.forward.algorithm, p.grad_weight.algorithm) == ("gemm", "gemm")
    if expected == "gather":
        assert "row 'strided-dx'" in p.grad_input.reason and "compiled gather" in p.grad_input.reason


def test_forced_passes_other_than_grad_input_are_gemms():
    p = convscope.plan((2, 4, 9, 9), (6, 4, 3, 3), stride=2, algorithm="gather")
    assert all(c.algorithm == "gather" for c in p)
    assert "gemm's forward" in p.forward.reason and "gemm's grad-weight" in p.grad_weight.reason
    assert algorithms.ALGORITHMS["gather"].ERROR == "local"


# --------------------------------------------------------------------------- the transposed backward's shared im2col


@pytest.fixture(params=LAYOUTS)
def gemm_layout(request, monkeypatch):
    """Both of gemm's layouts for the shared backward, whatever the image size."""
    from convscope.algorithms import gemm

    monkeypatch.setattr(gemm, "batch_folded", lambda spec, shape, backward: request.param == "folded")
    return request.param


def _count_im2col(monkeypatch) -> list:
    """A list that gets one entry per im2col gemm makes (either layout)."""
    from convscope.algorithms import gemm

    calls = []
    for name in ("im2col", "im2col_folded"):
        original = getattr(gemm, name)
        monkeypatch.setattr(gemm, name, lambda *a, _f=original, **k: calls.append(1) or _f(*a, **k))
    return calls


@pytest.mark.parametrize("algorithm", [None, "gather"])                 # the table's gemm (patch), and forced
@pytest.mark.parametrize("nd, case", [(2, FEATURES[2][11]), (2, FEATURES[2][6]), (1, FEATURES[1][4]),
                                      (2, FEATURES[2][10]), (2, FEATURES[2][12])],
                         ids=["fcn", "groups", "1d-dilation", "unet-patches", "patches-output-padding"])
def test_transposed_backward_reads_one_im2col_of_grad_output(nd, case, algorithm, gemm_layout, monkeypatch):
    """∂x (the convolution of grad_output) and ∂w (the weight gradient with grad_output as the input) of a
    transposed convolution come from one im2col of grad_output, and equal torch's."""
    from convscope.algorithms import gemm

    name, chw, w_shape, params = case
    calls = _count_im2col(monkeypatch)
    for dtype, unfold_from in ((np.float64, 0), (np.float32, 1 << 60)):    # the folded output's transpose
        monkeypatch.setattr(gemm, "COMPILED_UNFOLD_FROM", unfold_from)    # compiled, then NumPy's
        x, w, b, params_ = _arrays(chw, w_shape, params, "batched", dtype)
        y_shape = torch_conv_transpose_nd(x, w, b, None, **params_)[0].shape
        g = np.random.default_rng(3).standard_normal(y_shape).astype(dtype)
        calls.clear()
        got = getattr(convscope, f"conv_transpose{nd}d_backward")(g, x, w, algorithm=algorithm, **params_)
        assert len(calls) == 1
        _, want = torch_conv_transpose_nd(x, w, b, g, **params_)
        for field, expected in zip(got._fields, want):
            assert_close(getattr(got, field), expected, f"grad {field}")


@pytest.mark.parametrize("limit", [40 << 10, 4 << 10])         # slices of the batch; one sample too large
def test_transposed_backward_under_the_limit(limit, monkeypatch):
    """Under a limit the shared backward runs on slices of the batch of at most limit / (one sample's
    estimate) samples (∂w summed over them); where one sample does not fit, the two passes run apart."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((6, 8, 5, 5)), rng.standard_normal((8, 4, 4, 4))
    g = rng.standard_normal((6, 4, 10, 10))
    want = convscope.conv_transpose2d_backward(g, x, w, stride=2, padding=1, algorithm="reference")
    spec = make_spec((4, 4), 2, 1)
    shape = check_shapes(spec, g.shape, w.shape)
    per_sample = gather.shared_workspace(spec, shape._replace(N=1), 8)
    assert gather.shared_workspace(spec, shape, 8) > limit
    calls = _count_im2col(monkeypatch)
    with convscope.workspace_limit(limit):
        got, peak = peak_bytes(lambda: convscope.conv_transpose2d_backward(g, x, w, stride=2, padding=1))
    if per_sample <= limit:
        assert len(calls) == -(-6 // (limit // per_sample)) > 1                 # one im2col per slice
        assert peak <= x.nbytes + g.nbytes + w.nbytes + limit, f"peak {peak / 2**20:.2f} MiB"
    else:
        assert len(calls) >= 2                                                  # each pass its own
    for field in got._fields:
        assert_close(getattr(got, field), getattr(want, field), f"grad {field}")
