"""Transposed convolutions: conv_transpose1d/2d/3d, their backward and output sizes, the layers and the
errors, against torch (through :mod:`oracle`), the reference loops, the convolution they are the adjoint
of, and central differences.

The default run covers every feature in every dimension, rotating dtype, layout (batched / unbatched /
zero batch) and implementation so that each meets the others; the full product is the ``slow`` sweep.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

import convscope
from convscope.geometry import output_length, transposed_output_length
from oracle import LAYOUTS, case_arrays, check_grads_by_central_differences, require_torch, to_numpy, torch_module

DTYPES = (np.float64, np.float32, np.float16)

# (name, input (C_in, *spatial), weight (C_in, C_out/groups, *k), parameters); bias=False drops the bias
FEATURES = {
    1: [
        ("plain", (3, 7), (3, 4, 3), dict()),
        ("stride", (2, 6), (2, 3, 3), dict(stride=2)),
        ("padding", (2, 6), (2, 3, 3), dict(stride=2, padding=1)),
        ("output_padding", (2, 5), (2, 2, 3), dict(stride=3, padding=1, output_padding=2)),
        ("dilation", (2, 6), (2, 2, 3), dict(dilation=2, padding=1)),
        ("output_padding_below_dilation", (2, 6), (2, 2, 3), dict(dilation=3, output_padding=2)),
        ("output_padding_over_stride", (2, 5), (2, 2, 3), dict(stride=2, dilation=3, output_padding=2, padding=1)),
        ("groups", (4, 6), (4, 3, 3), dict(groups=2, stride=2)),
        ("depthwise", (4, 7), (4, 1, 3), dict(groups=4, padding=1)),
        ("no_bias", (3, 5), (3, 2, 4), dict(stride=2, padding=1, bias=False)),
        ("pointwise", (3, 5), (3, 2, 1), dict(stride=2)),
        ("upsample_k4_s2", (2, 8), (2, 3, 4), dict(stride=2, padding=1)),
        ("patches", (2, 6), (2, 3, 2), dict(stride=2, output_padding=1)),
    ],
    2: [
        ("plain", (3, 5, 4), (3, 2, 3, 3), dict()),
        ("stride", (2, 4, 5), (2, 3, 3, 2), dict(stride=(2, 3))),
        ("padding", (2, 5, 5), (2, 2, 3, 3), dict(stride=2, padding=(1, 2))),
        ("output_padding", (2, 3, 3), (2, 2, 3, 3), dict(stride=2, padding=1, output_padding=(1, 0))),
        ("dilation", (2, 4, 5), (2, 2, 3, 2), dict(dilation=(2, 3), padding=1)),
        ("output_padding_over_stride", (1, 4, 4), (1, 2, 3, 3), dict(stride=(1, 2), dilation=(2, 3),
                                                                     output_padding=(1, 2))),
        ("groups", (4, 4, 4), (4, 3, 3, 3), dict(groups=2, stride=2, padding=1)),
        ("depthwise", (3, 5, 5), (3, 1, 3, 3), dict(groups=3, padding=1)),
        ("no_bias", (2, 4, 4), (2, 2, 4, 4), dict(stride=2, padding=1, bias=False)),
        ("pointwise", (3, 4, 4), (3, 2, 1, 1), dict()),
        ("unet_2x2_s2", (4, 4, 5), (4, 2, 2, 2), dict(stride=2)),
        ("fcn_4x4_s2", (2, 5, 5), (2, 3, 4, 4), dict(stride=2, padding=1)),
        ("patches_output_padding", (3, 3, 4), (3, 2, 2, 3), dict(stride=(2, 3), output_padding=(1, 2))),
    ],
    3: [
        ("plain", (2, 3, 3, 4), (2, 2, 2, 3, 2), dict()),
        ("stride_padding", (2, 3, 4, 3), (2, 2, 3, 3, 3), dict(stride=(1, 2, 2), padding=(0, 1, 1))),
        ("output_padding", (2, 2, 3, 3), (2, 2, 3, 3, 3), dict(stride=2, padding=1, output_padding=(1, 0, 1))),
        ("dilation", (1, 3, 3, 3), (1, 2, 2, 2, 3), dict(dilation=(2, 1, 2), output_padding=(1, 0, 1))),
        ("groups", (4, 2, 3, 3), (4, 1, 3, 2, 3), dict(groups=2, stride=(2, 1, 2))),
        ("no_bias", (2, 2, 2, 3), (2, 2, 2, 2, 2), dict(stride=2, bias=False)),
        ("pointwise", (3, 2, 3, 3), (3, 2, 1, 1, 1), dict(stride=(1, 2, 1))),
    ],
}
ALGORITHMS = {1: (None, "reference", "gemm", "ndgemm"), 2: (None, "reference", "gemm"),
              3: (None, "reference", "ndgemm")}


def _arrays(chw, w_shape, params, layout, dtype, seed=0):
    """(x, w, b, params): ``case_arrays`` with the bias the transposed weight implies (C_out/groups ×
    groups entries)."""
    params = dict(params)
    bias = params.pop("bias", True)
    x, w, _, params = case_arrays((chw, w_shape, dict(params, bias=False)), layout, dtype, seed)
    c_out = w_shape[1] * params.get("groups", 1)
    b = np.random.default_rng(seed + 100).standard_normal(c_out).astype(dtype) if bias else None
    return x, w, b, params


def _default_cases():
    cases = []
    for nd, features in FEATURES.items():
        for k, (name, chw, w_shape, params) in enumerate(features):
            cases.append(pytest.param(nd, chw, w_shape, params, DTYPES[k % 3], LAYOUTS[(k // 3) % 3],
                                      ALGORITHMS[nd][k % len(ALGORITHMS[nd])], id=f"{nd}d-{name}"))
    return cases


def _run(nd, chw, w_shape, params, dtype, layout, algorithm):
    from oracle import check_transpose_against_torch

    x, w, b, params = _arrays(chw, w_shape, params, layout, dtype)
    check_transpose_against_torch(x, w, b, algorithm=algorithm, **params)


@pytest.mark.parametrize("nd, chw, w_shape, params, dtype, layout, algorithm", _default_cases())
def test_feature_against_torch(nd, chw, w_shape, params, dtype, layout, algorithm):
    require_torch()
    _run(nd, chw, w_shape, params, dtype, layout, algorithm)


@pytest.mark.parametrize("nd", (1, 2, 3))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", (np.float64, np.float32))
def test_every_layout_and_dtype(nd, layout, dtype):
    require_torch()
    name, chw, w_shape, params = FEATURES[nd][2]          # stride, padding (and output_padding in 3-d)
    _run(nd, chw, w_shape, params, dtype, layout, None)


@pytest.mark.parametrize("case", [
    ("depthwise", FEATURES[2][7]), ("pointwise", FEATURES[2][9]), ("winograd", FEATURES[2][0]),
    ("fft", FEATURES[2][0]), ("ndgemm", FEATURES[2][3]), ("depthwise", FEATURES[1][8]),
    ("subpixel", FEATURES[2][8]), ("subpixel", FEATURES[2][11]), ("subpixel", FEATURES[2][3]),
    ("subpixel", FEATURES[1][11]),
], ids=lambda c: f"{c[0]}-{c[1][0]}")
def test_the_planners_other_paths_serve_it(case):
    require_torch()
    algorithm, (name, chw, w_shape, params) = case
    x, w, b, params = _arrays(chw, w_shape, params, "batched", np.float64)
    from oracle import check_transpose_against_torch

    check_transpose_against_torch(x, w, b, algorithm=algorithm, **params)


@pytest.mark.slow
@pytest.mark.parametrize("nd", (1, 2, 3))
def test_full_sweep(nd):
    require_torch()
    for (name, chw, w_shape, params), dtype, layout, algorithm in itertools.product(
            FEATURES[nd], DTYPES, LAYOUTS, ALGORITHMS[nd]):
        _run(nd, chw, w_shape, params, dtype, layout, algorithm)


# --------------------------------------------------------------------------- without torch


@pytest.mark.parametrize("nd", (1, 2, 3))
def test_is_the_adjoint_of_the_convolution(nd):
    """⟨conv(z, w), x⟩ = ⟨z, conv_transpose(x, w)⟩ without the bias, and the forward is conv*_input."""
    conv = getattr(convscope, f"conv{nd}d")
    transposed = getattr(convscope, f"conv_transpose{nd}d")
    conv_input = getattr(convscope, f"conv{nd}d_input")
    for name, chw, w_shape, params in FEATURES[nd]:
        x, w, _, params = _arrays(chw, w_shape, params, "batched", np.float64, seed=2)
        y = transposed(x, w, **params)
        z = np.random.default_rng(3).standard_normal(y.shape)
        cz = conv(z, w, **{k: v for k, v in params.items() if k != "output_padding"})
        cz = cz[(Ellipsis,) + tuple(slice(0, n) for n in x.shape[2:])]       # without rows past the input
        assert np.isclose((cz * x).sum(), (z * y).sum(), rtol=1e-10), name
        if cz.shape == x.shape and not params.get("output_padding"):
            kw = {k: v for k, v in params.items() if k != "output_padding"}
            assert np.allclose(conv_input(y.shape, w, x, **kw), y, rtol=1e-12, atol=1e-12), name


@pytest.mark.parametrize("nd", (1, 2, 3))
def test_fast_paths_equal_the_reference_loops(nd):
    transposed = getattr(convscope, f"conv_transpose{nd}d")
    backward = getattr(convscope, f"conv_transpose{nd}d_backward")
    for name, chw, w_shape, params in FEATURES[nd]:
        x, w, b, params = _arrays(chw, w_shape, params, "batched", np.float64, seed=4)
        want = transposed(x, w, b, algorithm="reference", **params)
        got = transposed(x, w, b, **params)
        assert np.allclose(got, want, rtol=1e-12, atol=1e-12), name
        g = np.random.default_rng(5).standard_normal(want.shape)
        for fast, slow, field in zip(backward(g, x, w, **params), backward(g, x, w, algorithm="reference", **params),
                                     ("input", "weight", "bias")):
            assert np.allclose(fast, slow, rtol=1e-12, atol=1e-12), f"{name}: grad {field}"


def test_a_worked_scatter_by_hand():
    """Each input element stamps its weighted kernel at i·s − p: a 1-d example computed by hand."""
    x = np.array([[[1.0, 10.0]]])
    w = np.array([[[1.0, 2.0, 3.0]]])
    # out[r] = Σ x[i]·w[u] over i·2 + u − 1 = r; length (2−1)·2 − 2 + 2 + 1 = 3 (4 with output_padding 1)
    assert convscope.conv_transpose1d(x, w, stride=2, padding=1).tolist() == [[[2.0, 3.0 + 10.0, 20.0]]]
    assert convscope.conv_transpose1d(x, w, np.array([0.5]), stride=2, padding=1, output_padding=1).tolist() == \
        [[[2.5, 13.5, 20.5, 30.5]]]


@pytest.mark.parametrize("nd, k", [(1, 6), (2, 3), (2, 5), (3, 3)])
def test_gradients_againstcentral_differences(nd, k):
    name, chw, w_shape, params = FEATURES[nd][k]
    x, w, b, params = _arrays(chw, w_shape, params, "batched", np.float64, seed=6)
    f = getattr(convscope, f"conv_transpose{nd}d")
    g = np.random.default_rng(7).standard_normal(f(x, w, b, **params).shape)
    grads = getattr(convscope, f"conv_transpose{nd}d_backward")(g, x, w, **params)
    check_grads_by_central_differences(f, x, w, b, g, grads, seed=8, label=f"{name}: ", **params)


def test_output_mask_computes_only_what_is_asked():
    x, w, b, params = _arrays(*FEATURES[2][3][1:], "batched", np.float64)
    g = np.ones(convscope.conv_transpose2d(x, w, **params).shape)
    full = convscope.conv_transpose2d_backward(g, x, w, **params)
    for mask in itertools.product((False, True), repeat=3):
        part = convscope.conv_transpose2d_backward(g, x, w, output_mask=mask, **params)
        for want, got, whole in zip(mask, part, full):
            assert (got is None) != want
            if want:
                assert np.array_equal(got, whole)


@pytest.mark.parametrize("limit_samples", [1, 3, None])
def test_shared_backward_in_slices_of_the_batch(monkeypatch, limit_samples):
    """The backward's two gradients from one im2col (gather.forward_and_grad_weight) run on slices of the
    batch when the whole batch exceeds the workspace limit, and the whole batch at once otherwise; the
    gradients match torch's either way."""
    from oracle import torch_conv_transpose_nd
    from convscope.algorithms import gather
    from convscope.spec import bind_transpose

    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 6, 9, 8))
    w = rng.standard_normal((6, 4, 4, 4))
    params = dict(stride=2, padding=1)
    g = rng.standard_normal(convscope.conv_transpose2d(x, w, **params).shape)
    calls = []
    real = gather.forward_and_grad_weight
    monkeypatch.setattr(gather, "forward_and_grad_weight",
                        lambda *a, **k: (calls.append(a[0].shape[0]), real(*a, **k))[1])
    call = bind_transpose(2, grad_output=g, input=x, weight=w, output_padding=0, groups=1, dilation=1,
                          order=("grad_output", "input", "weight"), **params)
    spec, shape = call.conv.spec, call.conv.shape
    per_sample = gather.shared_workspace(spec, shape._replace(N=1), 8)
    limit = 1 << 40 if limit_samples is None else limit_samples * per_sample
    with convscope.workspace_limit(limit):
        dx, dw, db = convscope.conv_transpose2d_backward(g, x, w, **params)
    assert calls == ([7] if limit_samples is None else [limit_samples] * (7 // limit_samples)
                     + ([7 % limit_samples] if 7 % limit_samples else []))
    _, (tdx, tdw, tdb) = torch_conv_transpose_nd(x, w, None, g, **params)
    np.testing.assert_allclose(dx, tdx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, tdw, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, tdb, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- output sizes


def test_the_convolution_arithmetic_case():
    """i = 3, k = 3, s = 2, p = 1 gives 5, or 6 with output_padding 1: both convolve back to 3."""
    assert convscope.conv_transpose2d_output_size(3, 3, stride=2, padding=1) == (5, 5)
    assert convscope.conv_transpose2d_output_size(3, 3, stride=2, padding=1, output_padding=1) == (6, 6)
    for o in (5, 6):
        assert output_length(o, 3, 2, 2, 1) == 3
    assert output_length(7, 3, 2, 2, 1) == 4                     # the next size is another input's
    y = convscope.conv_transpose2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3)), stride=2, padding=1)
    assert y.shape == (1, 1, 5, 5)


def test_transposed_output_length_inverts_the_convolutions_length():
    for i, k, s, p, d in itertools.product((1, 2, 5), (1, 2, 3, 4), (1, 2, 3), (0, 1, 2), (1, 2)):
        for a in range(s):
            o = transposed_output_length(i, k, s, p, d, a)
            if o >= 1:
                assert output_length(o, k, s, 2 * p, d) == i, (i, k, s, p, d, a)


def test_output_size_functions_match_torch_shapes():
    require_torch()
    from oracle import torch_conv_transpose_nd

    for nd, size, k, kw in [(1, 17, 4, dict(stride=3, padding=2, output_padding=1, dilation=2)),
                            (2, (5, 7), (3, 2), dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0))),
                            (3, (3, 4, 2), (2, 3, 1), dict(stride=(1, 2, 3), padding=(0, 1, 0), dilation=(2, 1, 1),
                                                           output_padding=(1, 1, 2)))]:
        sizes = (size,) if nd == 1 else size
        ks = (k,) * nd if isinstance(k, int) else k
        out, _ = torch_conv_transpose_nd(np.zeros((1, 1) + sizes), np.zeros((1, 1) + ks), None, None, **kw)
        assert getattr(convscope, f"conv_transpose{nd}d_output_size")(size, k, **kw) == out.shape[2:]


def test_output_size_of_an_empty_output_names_the_formula():
    with pytest.raises(ValueError, match=r"output would be empty: L_out = \(1−1\)·1 − 2·2 \+ 1·\(3−1\) \+ 0 \+ 1 = −1"):
        convscope.conv_transpose1d_output_size(1, 3, padding=2)
    with pytest.raises(ValueError, match=r"output would be empty: H_out"):
        convscope.conv_transpose3d_output_size((2, 1, 3), 1, padding=(0, 1, 0))
    with pytest.raises(ValueError, match=r"output_padding must be smaller than stride or dilation"):
        convscope.conv_transpose2d_output_size(3, 3, output_padding=1)


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("nd", (1, 2, 3))
def test_layer_forward_backward_state_and_torch_round_trip(nd):
    require_torch()
    from oracle import check_layer_round_trip

    kw = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1)
    layer = getattr(convscope, f"ConvTranspose{nd}d")(4, 6, 3, dtype=np.float64, seed=0, **kw)
    assert layer.weight.shape == (4, 3) + (3,) * nd and layer.bias.shape == (6,)
    x = np.random.default_rng(0).standard_normal((2, 4) + (4,) * nd)
    back = check_layer_round_trip(layer, x, f"ConvTranspose{nd}d")
    assert back.output_padding == layer.output_padding
    with pytest.raises(TypeError, match=rf"torch\.nn\.ConvTranspose{nd}d"):
        getattr(convscope, f"ConvTranspose{nd}d").from_torch(torch_module(f"Conv{nd}d", 1, 1, 1))


@pytest.mark.parametrize("nd", (1, 2, 3))
def test_reset_parameters_draws_from_torchs_bound(nd):
    """torch's fan-in is the weight's second axis times the kernel: out_channels/groups · Πk here."""
    layer = getattr(convscope, f"ConvTranspose{nd}d")(2, 8, 3, groups=2, seed=0)
    bound = 1 / np.sqrt(4 * 3**nd)
    for a in (layer.weight, layer.bias):
        assert np.abs(a).max() <= bound and np.abs(a).max() > 0.7 * bound
    before = layer.weight.copy()
    layer.reset_parameters(seed=1)
    assert not np.array_equal(before, layer.weight)


def test_reset_parameters_bound_is_torchs():
    require_torch()
    module = torch_module("ConvTranspose2d", 2, 8, 3, groups=2, seed=0)
    ours = convscope.ConvTranspose2d(2, 8, 3, groups=2, seed=0)
    theirs = float(np.abs(to_numpy(module.weight)).max())
    bound = 1 / np.sqrt(4 * 9)
    assert theirs <= bound and theirs > 0.7 * bound
    assert np.abs(ours.weight).max() <= bound


def test_layer_reprs_match_torch():
    require_torch()
    for nd, kw in [(1, dict(stride=2, output_padding=1, dilation=2, bias=False)),
                   (2, dict(stride=(1, 2), padding=(0, 1), output_padding=(0, 1), groups=2)),
                   (3, dict())]:
        ours = getattr(convscope, f"ConvTranspose{nd}d")(4, 6, 3, **kw)
        theirs = torch_module(f"ConvTranspose{nd}d", 4, 6, 3, **kw)
        assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("mode", ("reflect", "replicate", "circular"))
def test_padding_mode_is_zeros_only_as_in_torch(mode):
    require_torch()
    from oracle import torch_transpose_layer

    with pytest.raises(ValueError, match=f'Only "zeros" padding mode is supported for ConvTranspose2d'):
        convscope.ConvTranspose2d(1, 1, 3, padding_mode=mode)
    theirs = torch_transpose_layer(2, 1, 1, 3, padding_mode=mode)
    assert isinstance(theirs, ValueError) and 'Only "zeros" padding mode is supported' in str(theirs)


def test_layer_constructor_errors():
    with pytest.raises(ValueError, match=r"in_channels \(5\) must be divisible by groups \(2\)"):
        convscope.ConvTranspose2d(5, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"out_channels \(3\) must be divisible by groups \(2\)"):
        convscope.ConvTranspose1d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match=r"output_padding must be smaller than stride or dilation"):
        convscope.ConvTranspose3d(1, 1, 3, stride=2, output_padding=(0, 2, 0))
    with pytest.raises(TypeError, match=r"padding of a transposed convolution must be an int"):
        convscope.ConvTranspose2d(1, 1, 3, padding="same")


@pytest.mark.parametrize("nd, x_shape, output_size", [
    (1, (1, 2, 4), (8,)), (1, (2, 4), (2, 8)), (1, (1, 2, 4), (1, 2, 7)),
    (2, (1, 2, 3, 3), (6, 5)), (2, (1, 2, 3, 3), [1, 2, 5, 6]), (3, (2, 2, 2, 3), (3, 4, 6)),
])
def test_output_size_picks_torchs_output_padding(nd, x_shape, output_size):
    require_torch()
    from oracle import assert_close, torch_layer_output

    layer = getattr(convscope, f"ConvTranspose{nd}d")(2, 2, 3, stride=2, padding=1, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal(x_shape)
    want = torch_layer_output(layer.to_torch(), x, list(output_size))
    assert isinstance(want, np.ndarray), want
    y = layer(x, output_size=output_size)
    assert_close(y, want, "forward")
    g = np.ones_like(y)
    dx = layer.backward(g)                                       # with the output padding of this call
    assert dx.shape == x.shape
    assert layer(x).shape[-nd:] == tuple(2 * n - 1 for n in x_shape[-nd:])   # the layer's own again


@pytest.mark.parametrize("nd, x_shape, output_size, exc, pattern", [
    (2, (1, 2, 3, 3), (7, 5), ValueError, r"output_size \(7, 5\) cannot be reached: valid sizes range from \(5, 5\) to \(6, 6\)"),
    (2, (1, 2, 3, 3), (4, 5), ValueError, r"valid sizes range from \(5, 5\) to \(6, 6\)"),
    (2, (1, 2, 3, 3), (5, 5, 5), ValueError, r"output_size must have 2 or 4 elements for a 4-D input, got 3"),
    (1, (2, 4), (1, 2, 8), ValueError, r"output_size must have 1 or 2 elements for a 2-D input, got 3"),
    (3, (1, 2, 2, 2, 2), (3, 3.0, 3), TypeError, r"output_size must be a sequence of ints \(D, H, W\)"),
])
def test_output_size_errors_are_torchs(nd, x_shape, output_size, exc, pattern):
    require_torch()
    from oracle import torch_layer_output

    layer = getattr(convscope, f"ConvTranspose{nd}d")(2, 2, 3, stride=2, padding=1, dtype=np.float64, seed=0)
    x = np.zeros(x_shape)
    with pytest.raises(exc, match=pattern):
        layer(x, output_size=output_size)
    assert isinstance(torch_layer_output(layer.to_torch(), x, list(output_size)), Exception), "torch accepts it"


# --------------------------------------------------------------------------- errors, compared with torch

# (dimension, input shape, weight shape, bias shape, parameters, convscope's exception, its message)
BAD = [
    (2, (1, 2, 4, 4), (2, 2, 3, 3), None, dict(output_padding=1), ValueError,
     r"output_padding must be smaller than stride or dilation, got output_padding=\(1, 1\) with stride=\(1, 1\) "
     r"and dilation=\(1, 1\) \(height: 1 ≥ max\(1, 1\)\)"),
    (1, (1, 2, 4), (2, 2, 3), None, dict(stride=2, dilation=3, output_padding=3), ValueError,
     r"output_padding must be smaller than stride or dilation.*3 ≥ max\(2, 3\)"),
    (3, (1, 2, 3, 3, 3), (2, 2, 3, 3, 3), None, dict(stride=2, output_padding=(0, 0, 2)), ValueError,
     r"\(width: 2 ≥ max\(2, 1\)\)"),
    (2, (1, 2, 4, 4), (2, 2, 3, 3), None, dict(output_padding=-1), ValueError, r"output_padding must be non-negative"),
    (2, (1, 3, 4, 4), (2, 2, 3, 3), None, dict(), ValueError,
     r"input has 3 channels but weight expects 2 \(weight.shape\[0\]: a transposed convolution's weight is "
     r"\(in_channels, out_channels/groups, kH, kW\)\)"),
    (2, (1, 3, 4, 4), (3, 2, 3, 3), None, dict(groups=2), ValueError,
     r"in_channels \(weight.shape\[0\]=3\) must be divisible by groups \(2\)"),
    (1, (1, 4, 5), (4, 3, 3), (3,), dict(groups=2), ValueError,
     r"bias must be 1-D with out_channels=6 elements \(weight.shape\[1\]=3 × groups=2\), got shape \(3,\)"),
    (2, (1, 2, 1, 1), (2, 2, 1, 1), None, dict(padding=1), ValueError,
     r"output would be empty: H_out = \(1−1\)·1 − 2·1 \+ 1·\(1−1\) \+ 0 \+ 1 = −1"),
    (3, (1, 2, 2, 2, 2), (2, 2, 2, 2, 2), None, dict(padding=(0, 0, 2)), ValueError, r"output would be empty: W_out"),
    (2, (1, 2, 0, 4), (2, 2, 3, 3), None, dict(), ValueError, r"input height and width must be positive, got 0×4"),
    (1, (1, 1, 2, 5), (1, 2, 3), None, dict(), ValueError, r"input must be 2-D \(C, L\) or 3-D \(N, C, L\)"),
    (2, (1, 2, 4, 4), (2, 2, 3), None, dict(), ValueError,
     r"weight of a transposed convolution must be 4-D \(in_channels, out_channels/groups, kH, kW\)"),
    (2, (1, 2, 4, 4), (2, 2, 3, 3), None, dict(stride=0), ValueError, r"stride must be positive, got \(0, 0\)"),
    (2, (1, 2, 4, 4), (2, 2, 3, 3), None, dict(dilation=(1, 0)), ValueError, r"dilation must be positive"),
    (2, (1, 2, 4, 4), (2, 2, 3, 3), None, dict(padding=-1), ValueError, r"padding must be non-negative"),
    (2, (1, 2, 4, 4), (2, 2, 3, 3), None, dict(groups=0), ValueError, r"groups must be a positive integer, got 0"),
    (3, (1, 2, 4, 4, 4), (2, 2, 3, 3, 3), None, dict(stride=(1, 1)), ValueError,
     r"stride must be an int or a tuple of 3 ints, got 2 values"),
    (2, (1, 2, 4, 4), (2, 2, 3, 3), None, dict(padding="same"), TypeError,
     r"padding of a transposed convolution must be an int or a pair of ints \('valid' and 'same' are for "
     r"convolutions\), got 'same'"),
    (2, (1, 2, 4, 4), (2, 2, 3, 3), None, dict(stride=1.5), TypeError, r"stride must be an int or a pair of ints"),
    (2, (1, 2, 4, 4), (2, 2, 3, 3), None, dict(stride=2, output_padding=True), TypeError,
     r"output_padding must be an int or a pair of ints, got True \(bool\)"),
    (2, (1, 2, 4, 4), (2, 0, 3, 3), None, dict(), ValueError,
     r"weight \(in_channels, out_channels/groups, kH, kW\) must have positive sizes, got shape \(2, 0, 3, 3\)"),
    (2, (1, 2, 4, 4), (2, 3, 3, 3), None, dict(padding=(1, 1, 1)), ValueError,
     r"padding must be an int or a pair of ints, got 3 values"),
]


@pytest.mark.parametrize("nd, x_shape, w_shape, b_shape, params, exc, pattern", BAD)
def test_errors_are_torchs(nd, x_shape, w_shape, b_shape, params, exc, pattern):
    require_torch()
    from oracle import torch_transpose_error

    x, w = np.zeros(x_shape), np.zeros(w_shape)
    b = None if b_shape is None else np.zeros(b_shape)
    with pytest.raises(exc, match=pattern):
        getattr(convscope, f"conv_transpose{nd}d")(x, w, b, **params)
    assert torch_transpose_error(nd, x_shape, w_shape, b_shape, **params) is not None, "torch accepts it"


def test_the_largest_output_padding_is_accepted_by_both():
    require_torch()
    from oracle import torch_transpose_error

    for params in (dict(stride=2, output_padding=1), dict(dilation=3, output_padding=2),
                   dict(stride=2, dilation=3, output_padding=(2, 1))):
        convscope.conv_transpose2d(np.zeros((1, 2, 4, 4)), np.zeros((2, 2, 3, 3)), **params)
        assert torch_transpose_error(2, (1, 2, 4, 4), (2, 2, 3, 3), **params) is None


def test_dtypes_are_refused_as_torch_refuses_them():
    require_torch()
    from oracle import torch_transpose_error

    with pytest.raises(TypeError, match=r"input, weight must have the same dtype, but input is float32, weight is float64"):
        convscope.conv_transpose2d(np.zeros((1, 1, 3, 3), np.float32), np.zeros((1, 1, 1, 1)))
    assert torch_transpose_error(2, (1, 1, 3, 3), (1, 1, 1, 1), dtype=np.float32, w_dtype=np.float64) is not None
    # torch's CPU kernel computes int64 transposed convolutions; convscope takes floats only, as for conv
    with pytest.raises(TypeError, match=r"input has dtype int64; convscope supports float16, float32 and float64"):
        convscope.conv_transpose1d(np.zeros((1, 1, 3), np.int64), np.zeros((1, 1, 1), np.int64))


def test_grad_output_shape_and_output_mask_are_checked():
    x, w = np.zeros((1, 1, 3)), np.zeros((1, 1, 3))
    with pytest.raises(ValueError, match=r"grad_output must have the output's shape \(1, 1, 8\), got \(1, 1, 5\)"):
        convscope.conv_transpose1d_backward(np.zeros((1, 1, 5)), x, w, stride=2, output_padding=1)
    with pytest.raises(ValueError, match=r"output_mask must have 3 entries"):
        convscope.conv_transpose1d_backward(np.zeros((1, 1, 5)), x, w, output_mask=(True,))


# --------------------------------------------------------------------------- plan(transposed=True)

PLANNED = [
    (1, (4, 8, 10), (8, 3, 4), dict(stride=2, padding=1, output_padding=1)),
    (2, (16, 512, 4, 4), (512, 256, 4, 4), dict(stride=2, padding=1)),             # DCGAN: gather, gemm, gemm
    (2, (2, 6, 5, 5), (6, 2, 3, 3), dict(stride=2, groups=3, dilation=2, output_padding=1)),
    (2, (8, 128, 32, 32), (128, 64, 2, 2), dict(stride=2)),                        # U-Net 2×2/2
    (3, (2, 4, 3, 4, 4), (4, 2, 2, 2, 2), dict(stride=2)),
]


@pytest.mark.parametrize("nd, x_shape, w_shape, params", PLANNED)
def test_plan_transposed_names_the_passes_of_the_adjoint_convolution(nd, x_shape, w_shape, params):
    """forward ← the adjoint convolution's grad_input, grad_input ← its forward, grad_weight ← its grad_weight."""
    sizes = {k: v for k, v in params.items() if k != "groups"}
    out = getattr(convscope, f"conv_transpose{nd}d_output_size")(x_shape[2:], w_shape[2:], **sizes)
    conv_params = {k: v for k, v in params.items() if k != "output_padding"}
    adjoint = convscope.plan((x_shape[0], w_shape[1] * params.get("groups", 1)) + tuple(out), w_shape, **conv_params)
    planned = convscope.plan(x_shape, w_shape, transposed=True, **params)
    for mine, theirs in (("forward", "grad_input"), ("grad_input", "forward"), ("grad_weight", "grad_weight")):
        assert getattr(planned, mine).algorithm == getattr(adjoint, theirs).algorithm
        assert getattr(adjoint, theirs).reason in getattr(planned, mine).reason
        assert f"adjoint convolution's {theirs.replace('_', '-')} pass" in getattr(planned, mine).reason
    gemms = nd < 3 and {adjoint.forward.algorithm, adjoint.grad_weight.algorithm} <= {"gemm", "gather", "patch"}
    for choice in (planned.grad_input, planned.grad_weight):      # the two gradients share one im2col
        assert ("from one im2col of grad_output" in choice.reason) == gemms
    forced = convscope.plan(x_shape, w_shape, transposed=True, algorithm="reference", **params)
    assert all(c.algorithm == "reference" and c.source == "forced" for c in forced)


@pytest.mark.parametrize("nd, x_shape, w_shape, b_shape, params, exc, pattern",
                         [case for case in BAD if case[3] is None and len(case[1]) == len(case[2]) == case[0] + 2])
def test_plan_transposed_refuses_what_the_call_refuses(nd, x_shape, w_shape, b_shape, params, exc, pattern):
    with pytest.raises(exc, match=pattern):
        convscope.plan(x_shape, w_shape, transposed=True, **params)


def test_plan_transposed_zeros_padding_only_and_shapes_not_arrays():
    with pytest.raises(ValueError, match=r'Only "zeros" padding mode is supported for transposed convolutions, '
                                         r"got padding_mode='reflect'"):
        convscope.plan((1, 2, 4, 4), (2, 2, 3, 3), transposed=True, padding_mode="reflect")
    x, w = np.zeros((1, 2, 4, 4)), np.zeros((2, 2, 3, 3))
    for transposed in (False, True):
        with pytest.raises(TypeError, match=r"input must be a sequence of ints .*, got a numpy\.ndarray; "
                                            r"pass input\.shape$"):
            convscope.plan(x, w.shape, transposed=transposed)
        with pytest.raises(TypeError, match=r"weight must be a sequence of ints \(C_\w+, C_?\w*/groups, kH, kW\), "
                                            r"got a numpy\.ndarray; pass weight\.shape$"):
            convscope.plan(x.shape, w, transposed=transposed)
    with pytest.raises(TypeError, match=r"input_size must be a sequence of ints .*, got a numpy\.ndarray; "
                                        r"pass input_size\.shape$"):
        convscope.conv2d_input(x, w, np.zeros((1, 2, 2, 2)))


# --------------------------------------------------------------------------- explain_shape and the CLI


@pytest.mark.parametrize("nd, input_shape, kernel, params", [
    (1, (3,), 3, dict(stride=2, padding=1)),
    (1, (1, 2, 4), 3, dict(dilation=3, output_padding=2)),
    (2, (1, 2, 4, 4), 4, dict(stride=2, padding=1, output_padding=1)),
    (2, (2, 5, 3), (3, 2), dict(stride=(3, 1), padding=(1, 0), output_padding=(2, 0))),
    (3, (1, 1, 2, 3, 3), 2, dict(stride=2)),
])
def test_explain_shape_transposed_agrees_with_the_transposed_convolution(nd, input_shape, kernel, params):
    e = convscope.explain_shape(input_shape, kernel, ndim=nd, transposed=True, out_channels=1, **params)
    c = input_shape[-nd - 1] if len(input_shape) > nd else 1
    x = np.ones((1, c) + tuple(input_shape[-nd:]))
    ks = (kernel,) * nd if isinstance(kernel, int) else kernel
    y = getattr(convscope, f"conv_transpose{nd}d")(x, np.ones((c, 1) + ks), **params)[0, 0]
    assert e.output_size == y.shape
    # ones through ones: each output counts the taps reaching it, the product of the axes' counts, per channel
    counts = functools.reduce(np.multiply.outer, [np.array(t) for t in e.taps])
    assert np.array_equal(y, c * counts)
    assert "output_padding may be 0 …" in str(e)
    want = None if len(input_shape) == nd else tuple(input_shape[:-nd - 1]) + (1,) + y.shape
    assert e.output_shape == want


def test_explain_shape_transposed_names_the_checkerboard_and_the_allowed_values():
    text = str(convscope.explain_shape((1, 1, 3, 3), 3, stride=2, padding=1, transposed=True))
    assert "H_out = (3−1)·2 − 2·1 + 1·(3−1) + 0 + 1 = 5" in text
    assert "output_padding 0 … 1 give H_out = 5 … 6" in text
    assert "uneven overlap (the checkerboard): rows 1 and 3 receive 2 taps; rows 0, 2 and 4 receive 1 tap" in text
    even = str(convscope.explain_shape((4, 4), 2, stride=2, transposed=True))
    assert "every output row receives 1 kernel tap: the overlap is even" in even
    dilated = str(convscope.explain_shape((4,), 3, dilation=3, output_padding=2, ndim=1, transposed=True))
    assert "positions 10 and 11 receive 0 taps" in dilated and "no kernel tap reaches" in dilated
    empty = convscope.explain_shape((1, 1), 1, padding=1, transposed=True)
    assert empty.empty and "conv_transpose2d raises an error" in str(empty)


def test_explain_shape_transposed_refuses_what_the_transposed_convolution_refuses():
    with pytest.raises(TypeError, match=r"padding of a transposed convolution must be an int"):
        convscope.explain_shape((4, 4), 3, padding="same", transposed=True)
    with pytest.raises(ValueError, match=r"output_padding must be smaller than stride or dilation"):
        convscope.explain_shape((4, 4), 3, output_padding=1, transposed=True)
    with pytest.raises(ValueError, match=r"output_padding is for transposed convolutions"):
        convscope.explain_shape((4, 4), 3, output_padding=1)


def test_cli_shape_transposed():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "convscope", "shape", "1x8x16x16", "-k", "4", "-s", "2", "-p", "1",
                          "--transposed", "--output-padding", "1", "--out-channels", "4"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    want = convscope.explain_shape((1, 8, 16, 16), 4, stride=2, padding=1, output_padding=1, out_channels=4,
                                   transposed=True)
    assert out.stdout.strip() == str(want).strip() and "output shape (1, 4, 33, 33)" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "convscope", "shape", "4x4", "-k", "3", "--transposed",
                          "--output-padding", "1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "output_padding must be smaller than stride or dilation" in bad.stderr
