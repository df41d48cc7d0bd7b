"""Conv1d and Conv3d: the functional API, the nn.grad functions, the layers, the errors and the
planner, against torch (through :mod:`oracle`), the reference loops and central differences.

The default run covers every feature in both dimensions, rotating padding mode, dtype, layout
(batched / unbatched / zero batch) and implementation so that each meets the others; the full
product is the ``slow`` sweep.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import convscope
from convscope import algorithms, padding as padding_module, planner, reference
from convscope.geometry import spec_tap_sources
from convscope.spec import ConvShapeNd, bind, make_spec
from oracle import LAYOUTS, PADDING_MODES, case_arrays, check_grads_by_central_differences, mode_fits, require_torch, torch_module

pytestmark = [
    pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning"),
]

DTYPES = (np.float64, np.float32, np.float16)

# (name, input (C, *spatial), weight shape, parameters); bias=False in the parameters drops the bias
FEATURES = {
    1: [
        ("kernel_int", (3, 9), (4, 3, 3), dict(padding=1)),
        ("kernel_tuple", (3, 9), (4, 3, 4), dict(padding=(2,))),
        ("stride", (2, 11), (3, 2, 3), dict(stride=2, padding=1)),
        ("dilation", (2, 12), (3, 2, 3), dict(dilation=3, padding=2)),
        ("same_odd", (2, 8), (2, 2, 3), dict(padding="same", dilation=2)),
        ("same_even", (2, 8), (2, 2, 4), dict(padding="same")),
        ("valid", (2, 8), (2, 2, 3), dict(padding="valid")),
        ("groups", (4, 9), (6, 2, 3), dict(groups=2, padding=1, stride=2)),
        ("depthwise", (4, 9), (4, 1, 5), dict(groups=4, padding=2)),
        ("no_bias", (3, 7), (2, 3, 3), dict(padding=1, bias=False)),
        ("kernel_is_input", (2, 5), (3, 2, 5), dict()),
        ("pointwise", (3, 6), (5, 3, 1), dict(stride=2)),
    ],
    3: [
        ("kernel_int", (2, 4, 5, 5), (3, 2, 3, 3, 3), dict(padding=1)),
        ("kernel_tuple", (2, 4, 5, 6), (3, 2, 2, 3, 1), dict(padding=(1, 0, 2))),
        ("stride", (2, 5, 6, 5), (2, 2, 3, 3, 2), dict(stride=(2, 1, 2), padding=1)),
        ("dilation", (1, 5, 6, 6), (2, 1, 2, 2, 3), dict(dilation=(2, 1, 2), padding=(1, 1, 2))),
        ("same_odd", (2, 4, 4, 5), (2, 2, 3, 1, 3), dict(padding="same")),
        ("same_even", (2, 4, 5, 4), (2, 2, 2, 3, 4), dict(padding="same", dilation=(1, 2, 1))),
        ("valid", (2, 4, 4, 4), (2, 2, 2, 2, 2), dict(padding="valid")),
        ("groups", (4, 4, 5, 4), (6, 2, 3, 2, 3), dict(groups=2, padding=1)),
        ("depthwise", (3, 4, 4, 5), (3, 1, 3, 3, 3), dict(groups=3, padding=1, stride=2)),
        ("no_bias", (2, 3, 4, 4), (2, 2, 3, 3, 3), dict(padding=1, bias=False)),
        ("kernel_is_input", (2, 2, 3, 3), (2, 2, 2, 3, 3), dict()),
        ("pointwise", (3, 3, 4, 4), (4, 3, 1, 1, 1), dict(stride=(1, 2, 2))),
    ],
}
ALGORITHMS = {1: (None, "reference", "gemm", "ndgemm"), 3: (None, "reference", "ndgemm")}


def _arrays(chw, w_shape, params, layout, dtype, seed=0):
    return case_arrays((chw, w_shape, params), layout, dtype, seed)


def _default_cases():
    """Every feature of each dimension with a rotation of (mode, dtype, layout, algorithm)."""
    cases = []
    for nd, features in FEATURES.items():
        for k, (name, chw, w_shape, params) in enumerate(features):
            mode = PADDING_MODES[k % 4]
            mode = mode if mode_fits(mode, chw, w_shape, params) else "zeros"
            cases.append(pytest.param(nd, chw, w_shape, params, mode, DTYPES[k % 3], LAYOUTS[(k // 3) % 3],
                                      ALGORITHMS[nd][k % len(ALGORITHMS[nd])],
                                      id=f"{nd}d-{name}-{mode}"))
    return cases


def _run(nd, chw, w_shape, params, mode, dtype, layout, algorithm):
    from oracle import check_nd_against_torch

    x, w, b, params = _arrays(chw, w_shape, params, layout, dtype)
    check_nd_against_torch(x, w, b, algorithm=algorithm, padding_mode=mode, **params)


@pytest.mark.parametrize("nd, chw, w_shape, params, mode, dtype, layout, algorithm", _default_cases())
def test_feature_against_torch(nd, chw, w_shape, params, mode, dtype, layout, algorithm):
    require_torch()
    _run(nd, chw, w_shape, params, mode, dtype, layout, algorithm)


@pytest.mark.parametrize("nd", (1, 3))
@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_padding_mode_and_layout(nd, mode, layout):
    require_torch()
    name, chw, w_shape, params = FEATURES[nd][2]           # stride and padding: every mode fits
    _run(nd, chw, w_shape, params, mode, np.float64, layout, None)


@pytest.mark.slow
@pytest.mark.parametrize("nd", (1, 3))
def test_full_sweep(nd):
    require_torch()
    for (name, chw, w_shape, params), mode, dtype, layout, algorithm in itertools.product(
            FEATURES[nd], PADDING_MODES, DTYPES, LAYOUTS, ALGORITHMS[nd]):
        if mode_fits(mode, chw, w_shape, params):
            _run(nd, chw, w_shape, params, mode, dtype, layout, algorithm)


# --------------------------------------------------------------------------- nn.grad and output sizes


@pytest.mark.parametrize("nd", (1, 3))
@pytest.mark.parametrize("batched", (True, False))
def test_input_and_weight_gradients_match_torch_nn_grad(nd, batched):
    require_torch()
    from oracle import assert_close, torch_grad_function

    name, chw, w_shape, params = FEATURES[nd][7]          # groups, padding (and stride for 1-d)
    x, w, _, params = _arrays(chw, w_shape, params, "batched", np.float64)
    y = getattr(convscope, f"conv{nd}d")(x, w, **params)
    g = np.random.default_rng(1).standard_normal(y.shape)
    want_dx = torch_grad_function(f"conv{nd}d_input", x.shape, w, g, **params)
    want_dw = torch_grad_function(f"conv{nd}d_weight", x, w.shape, g, **params)
    if not batched:
        x, g, want_dx = x[0], g[0], want_dx[0]
    assert_close(getattr(convscope, f"conv{nd}d_input")(x.shape, w, g, **params), want_dx, "input")
    dw = getattr(convscope, f"conv{nd}d_weight")(x, w.shape, g, **params)
    assert_close(dw, want_dw if batched else torch_grad_function(f"conv{nd}d_weight", x[None], w.shape,
                                                                  g[None], **params), "weight")


def test_output_size_functions_match_torch_shapes():
    require_torch()
    from oracle import torch_conv_nd

    for nd, size, k, kw in [(1, 17, 4, dict(stride=3, padding=2, dilation=2)),
                            (3, (5, 9, 8), (2, 3, 1), dict(stride=(1, 2, 3), padding=(0, 1, 2))),
                            (3, (5, 9, 8), 3, dict(padding="same"))]:
        sizes = (size,) if nd == 1 else size
        ks = (k,) * nd if isinstance(k, int) else k
        out, _ = torch_conv_nd(np.zeros((1, 1) + sizes), np.zeros((1, 1) + ks), None, None, **kw)
        assert getattr(convscope, f"conv{nd}d_output_size")(size, k, **kw) == out.shape[2:]


def test_output_size_of_an_empty_output_names_the_formula():
    with pytest.raises(ValueError, match=r"L_out = ⌊\(2 \+ 0 − 1·\(3−1\) − 1\)/1⌋ \+ 1 = 0"):
        convscope.conv1d_output_size(2, 3)
    with pytest.raises(ValueError, match=r"output would be empty: D_out"):
        convscope.conv3d_output_size((1, 5, 5), 2)


# --------------------------------------------------------------------------- layers


@pytest.mark.parametrize("nd", (1, 3))
def test_layer_forward_backward_state_and_torch_round_trip(nd):
    require_torch()
    from oracle import check_layer_round_trip

    kw = dict(stride=2, padding=1, dilation=1, groups=2, padding_mode="circular")
    layer = getattr(convscope, f"Conv{nd}d")(4, 6, 3, dtype=np.float64, seed=0, **kw)
    check_layer_round_trip(layer, np.random.default_rng(0).standard_normal((2, 4) + (7,) * nd), f"Conv{nd}d")
    with pytest.raises(TypeError, match=rf"torch\.nn\.Conv{nd}d"):
        getattr(convscope, f"Conv{nd}d").from_torch(torch_module("Conv2d", 1, 1, 1))


@pytest.mark.parametrize("nd", (1, 3))
def test_reset_parameters_draws_from_torchs_bound(nd):
    layer = getattr(convscope, f"Conv{nd}d")(6, 4, 3, groups=2, seed=0)
    bound = 1 / np.sqrt(3 * 3**nd)                               # fan_in = in_channels/groups · Πk
    before = layer.weight.copy()
    layer.reset_parameters(seed=1)
    for a in (layer.weight, layer.bias):
        assert np.abs(a).max() <= bound and np.abs(a).max() > 0.7 * bound
    assert layer.weight.shape == (4, 3) + (3,) * nd and not np.array_equal(before, layer.weight)


def test_layer_reprs_match_torch():
    require_torch()
    for nd, kw in [(1, dict(padding="same", dilation=2, bias=False)),
                   (3, dict(stride=(1, 2, 2), padding=(0, 1, 1), groups=2, padding_mode="reflect"))]:
        ours = getattr(convscope, f"Conv{nd}d")(4, 6, 3, **kw)
        theirs = torch_module(f"Conv{nd}d", 4, 6, 3, **kw)
        assert repr(ours) == repr(theirs)


# --------------------------------------------------------------------------- errors, compared with torch

# (dimension, input shape, weight shape, bias shape, parameters, convscope's exception, its message)
BAD = [
    (1, (1, 2, 5), (2, 2, 3), None, dict(stride=0), ValueError, r"stride must be positive, got \(0,\)"),
    (1, (1, 2, 5), (2, 2, 3), None, dict(padding=-1), ValueError, r"padding must be non-negative"),
    (1, (1, 2, 5), (2, 2, 3), None, dict(stride=(1, 1)), ValueError,
     r"stride must be an int or a tuple of one int, got 2 values"),
    (1, (1, 2, 5), (2, 2, 3), None, dict(padding="same", stride=2), ValueError,
     r"padding='same' is not supported for strided convolutions"),
    (1, (1, 2, 5), (2, 2, 3), None, dict(padding="full"), ValueError, r"padding must be .*'valid' or 'same', got 'full'"),
    (1, (1, 2, 2), (2, 2, 3), None, dict(), ValueError, r"output would be empty: L_out"),
    (1, (1, 3, 5), (2, 2, 3), None, dict(), ValueError, r"input has 3 channels but weight expects 2"),
    (1, (1, 4, 5), (3, 2, 3), None, dict(groups=2), ValueError, r"out_channels .* must be divisible by groups"),
    (1, (1, 2, 5), (2, 2, 3), (3,), dict(), ValueError, r"bias must be 1-D with out_channels=2"),
    (1, (1, 1, 2, 5), (2, 2, 3), None, dict(), ValueError, r"input must be 2-D \(C, L\) or 3-D \(N, C, L\)"),
    (3, (1, 2, 5), (2, 2, 3, 3, 3), None, dict(), ValueError,
     r"input must be 4-D \(C, D, H, W\) or 5-D \(N, C, D, H, W\)"),
    (3, (1, 2, 4, 4, 4), (2, 2, 3, 3), None, dict(), ValueError, r"weight must be 5-D \(out_channels, in_channels/groups, kD, kH, kW\)"),
    (3, (1, 2, 4, 4, 4), (2, 2, 3, 3, 3), None, dict(dilation=(1, 1, 0)), ValueError, r"dilation must be positive"),
    (3, (1, 2, 4, 4, 4), (2, 2, 3, 3, 3), None, dict(stride=(1, 1.5, 1)), TypeError,
     r"stride must be an int or a tuple of 3 ints"),
    (3, (1, 2, 2, 4, 4), (2, 2, 3, 3, 3), None, dict(), ValueError, r"output would be empty: D_out"),
    (3, (1, 2, 4, 4, 4), (2, 2, 3, 3, 3), None, dict(padding=(1, 1)), ValueError,
     r"padding must be an int or a tuple of 3 ints, got 2 values"),
]

# (dimension, input shape, weight shape, padding_mode and padding, convscope's message)
BAD_MODES = [
    (1, (1, 2, 3), (2, 2, 3), dict(padding_mode="reflect", padding=3), r"reflect padding \(3\) must be smaller than the input length \(3\)"),
    (1, (1, 2, 3), (2, 2, 3), dict(padding_mode="circular", padding=4), r"circular padding \(4\) must not exceed the input length \(3\)"),
    (3, (1, 2, 2, 5, 5), (2, 2, 3, 3, 3), dict(padding_mode="reflect", padding=2), r"reflect padding \(2\) must be smaller than the input depth \(2\)"),
    (3, (1, 2, 5, 5, 3), (2, 2, 3, 3, 3), dict(padding_mode="circular", padding=4), r"circular padding \(4\) must not exceed the input width \(3\)"),
]


@pytest.mark.parametrize("nd, x_shape, w_shape, b_shape, params, exc, pattern", BAD)
def test_errors_are_torchs(nd, x_shape, w_shape, b_shape, params, exc, pattern):
    require_torch()
    from oracle import torch_error

    x, w = np.zeros(x_shape), np.zeros(w_shape)
    b = None if b_shape is None else np.zeros(b_shape)
    with pytest.raises(exc, match=pattern):
        getattr(convscope, f"conv{nd}d")(x, w, b, **params)
    assert torch_error(nd, x_shape, w_shape, b_shape, **params) is not None, "torch accepts it"


@pytest.mark.parametrize("nd, x_shape, w_shape, params, pattern", BAD_MODES)
def test_padding_mode_limits_are_torchs(nd, x_shape, w_shape, params, pattern):
    require_torch()
    from oracle import torch_error

    with pytest.raises(ValueError, match=pattern):
        getattr(convscope, f"Conv{nd}d")(w_shape[1], w_shape[0], 3, **params)(np.zeros(x_shape, np.float32))
    assert torch_error(nd, x_shape, w_shape, dtype=np.float32, layer=True, **params) is not None
    smaller = dict(params, padding=params["padding"] - 1)          # one less: both accept it
    getattr(convscope, f"Conv{nd}d")(w_shape[1], w_shape[0], 3, **smaller)(np.zeros(x_shape, np.float32))
    assert torch_error(nd, x_shape, w_shape, dtype=np.float32, layer=True, **smaller) is None


def test_layer_groups_message_is_the_rule_and_the_values():
    with pytest.raises(ValueError, match=r"in_channels \(5\) must be divisible by groups \(2\)"):
        convscope.Conv3d(5, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"out_channels \(3\) must be divisible by groups \(2\)"):
        convscope.Conv1d(4, 3, 3, groups=2)


def test_mixed_dtypes_and_bad_sizes_are_refused():
    with pytest.raises(TypeError, match=r"input, weight must have the same dtype, but input is float32, weight is float64"):
        convscope.conv3d(np.zeros((1, 1, 3, 3, 3), np.float32), np.zeros((1, 1, 1, 1, 1)))
    with pytest.raises(ValueError, match=r"input_size must be a sequence of ints \(N, C, L\) or \(C, L\)"):
        convscope.conv1d_input((1, 1, 1, 5), np.zeros((1, 1, 3)), np.zeros((1, 1, 3)))
    with pytest.raises(ValueError, match=r"weight_size must be a sequence of ints \(C_out, C/groups, kD, kH, kW\)"):
        convscope.conv3d_weight(np.zeros((1, 1, 3, 3, 3)), (1, 1, 3, 3), np.zeros((1, 1, 1, 1, 1)))
    with pytest.raises(ValueError, match=r"grad_output must have the output's shape \(1, 1, 3\), got \(1, 1, 4\)"):
        convscope.conv1d_backward(np.zeros((1, 1, 4)), np.zeros((1, 1, 5)), np.zeros((1, 1, 3)))


# --------------------------------------------------------------------------- without torch


@pytest.mark.parametrize("nd, mode", [(1, "reflect"), (1, "zeros"), (3, "circular"), (3, "replicate")])
def test_gradients_againstcentral_differences(nd, mode):
    name, chw, w_shape, params = FEATURES[nd][2]
    x, w, b, params = _arrays(chw, w_shape, params, "batched", np.float64, seed=3)
    conv = getattr(convscope, f"conv{nd}d")
    kw = dict(params, padding_mode=mode)
    g = np.random.default_rng(4).standard_normal(conv(x, w, b, **kw).shape)
    grads = getattr(convscope, f"conv{nd}d_backward")(g, x, w, **kw)
    check_grads_by_central_differences(conv, x, w, b, g, grads, seed=5, **kw)


@pytest.mark.parametrize("nd", (1, 3))
def test_fast_paths_equal_the_reference_loops(nd):
    for name, chw, w_shape, params in FEATURES[nd]:
        x, w, b, params = _arrays(chw, w_shape, params, "batched", np.float64, seed=7)
        conv = getattr(convscope, f"conv{nd}d")
        ref = conv(x, w, b, algorithm="reference", **params)
        np.testing.assert_allclose(conv(x, w, b, **params), ref, rtol=1e-12, atol=1e-12, err_msg=name)
        g = np.random.default_rng(8).standard_normal(ref.shape)
        fast = getattr(convscope, f"conv{nd}d_backward")(g, x, w, **params)
        slow = getattr(convscope, f"conv{nd}d_backward")(g, x, w, algorithm="reference", **params)
        for a, r in zip(fast, slow):
            np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12, err_msg=name)


def test_the_2d_reference_loops_are_the_nd_ones_with_two_axes():
    """The 2-d taps are the N-d taps unpacked (the 2-d paths' oracle did not change)."""
    call = bind(2, input=np.zeros((1, 2, 5, 6)), weight=np.zeros((4, 1, 3, 2)), bias=None,
                stride=(2, 1), padding=1, dilation=(1, 2), groups=2, padding_mode="reflect")
    flat = [(o, c, i, j, u, v, h, w) for o, c, (i, j), (u, v), (h, w) in reference.taps_nd(call.spec, call.shape)]
    assert list(reference.taps(call.spec, call.shape)) == flat and flat


@pytest.mark.parametrize("mode, np_mode", [("zeros", "constant"), ("reflect", "reflect"),
                                           ("replicate", "edge"), ("circular", "wrap")])
def test_pad_and_fold_in_3d(mode, np_mode):
    spec = make_spec(3, padding=(1, 2, 0), padding_mode=mode, ndim=3)
    x = np.random.default_rng(0).standard_normal((2, 1, 3, 4, 5))
    xp = padding_module.pad(x, spec)
    assert np.array_equal(xp, np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2), (0, 0)), mode=np_mode))
    g = np.random.default_rng(1).standard_normal(xp.shape)      # fold is pad's adjoint: <pad x, g> = <x, fold g>
    assert np.isclose((xp * g).sum(), (x * padding_module.fold(g, spec, (3, 4, 5))).sum())


# --------------------------------------------------------------------------- planner and workspace


def test_3d_plans_the_nd_path_and_2d_only_paths_are_refused():
    p = convscope.plan((2, 4, 8, 8, 8), (8, 4, 3, 3, 3), padding=1)
    assert {c.algorithm for c in p} == {"ndgemm"} and "3-d" in p.forward.reason
    assert convscope.plan((2, 4, 50), (8, 4, 1)).forward.algorithm == "pointwise"   # 1-d runs as 2-d
    assert convscope.plan((2, 4, 50), (4, 1, 3), groups=4).forward.algorithm == "depthwise"
    for name in planner.NAMES:
        if 3 in algorithms.dims(name):
            continue
        with pytest.raises(ValueError, match=rf"algorithm='{name}' cannot compute this convolution: "
                                             r"it computes 2-d convolutions only, got a 3-d one"):
            convscope.conv3d(np.zeros((1, 1, 3, 3, 3)), np.zeros((1, 1, 3, 3, 3)), algorithm=name)


def test_3d_batch_slices_under_the_workspace_limit_give_the_same_numbers():
    x, w, b, params = _arrays((3, 5, 6, 6), (4, 3, 3, 3, 3), dict(padding=1), "batched", np.float64)
    x = np.concatenate([x] * 3)                                   # 6 samples
    call = bind(3, input=x, weight=w, bias=b, padding=1)
    one = algorithms.ndgemm.workspace("forward", call.spec, call.shape._replace(N=1), 8)
    g = np.random.default_rng(2).standard_normal(convscope.conv3d(x, w, b, **params).shape)
    whole = convscope.conv3d(x, w, b, **params), convscope.conv3d_backward(g, x, w, **params)
    with convscope.workspace_limit(2 * one):
        assert algorithms._batch_step(algorithms.ndgemm, "forward", call.spec, call.shape, 8) == 2
        sliced = convscope.conv3d(x, w, b, **params), convscope.conv3d_backward(g, x, w, **params)
    np.testing.assert_allclose(sliced[0], whole[0], rtol=1e-13, atol=1e-13)
    for a, r in zip(sliced[1], whole[1]):
        np.testing.assert_allclose(a, r, rtol=1e-13, atol=1e-13)
    assert isinstance(call.shape, ConvShapeNd) and call.padded_spatial == (7, 8, 8)


# --------------------------------------------------------------------------- explain_shape and the CLI


@pytest.mark.parametrize("nd, input_shape, kernel, params", [
    (1, (2, 3, 100), 5, dict(stride=3, dilation=2)),
    (1, (3, 17), (4,), dict(padding="same")),
    (3, (2, 3, 9, 11, 10), (3, 2, 3), dict(stride=(2, 3, 1), padding=(0, 1, 2))),
    (3, (1, 5, 6, 7), 3, dict(dilation=(1, 2, 1), padding=1)),
])
def test_explain_shape_in_1d_and_3d_agrees_with_the_convolution(nd, input_shape, kernel, params):
    e = convscope.explain_shape(input_shape, kernel, out_channels=4, ndim=nd, **params)
    x = np.zeros(input_shape)
    w = np.zeros((4, input_shape[-nd - 1]) + ((kernel,) * nd if isinstance(kernel, int) else kernel))
    assert e.output_shape == getattr(convscope, f"conv{nd}d")(x, w, **params).shape
    assert len(e.dims) == nd and e.output_size == e.output_shape[-nd:]
    spec = make_spec(w.shape[2:], ndim=nd, **params)
    for table, unread, n in zip(spec_tap_sources(spec, input_shape[-nd:]), e.unread, input_shape[-nd:]):
        assert set(unread) == set(range(n)) - set(table[table >= 0].tolist())
    assert f"conv{nd}d" not in str(e) and "output shape" in e.conclusion()


def test_explain_shape_in_1d_and_3d_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"input_shape must have 1, 2 or 3 values \(L,\), \(C, L\) or \(N, C, L\)"):
        convscope.explain_shape((1, 2, 3, 4), 3, ndim=1)
    with pytest.raises(ValueError, match=r"kernel_size must be an int or a tuple of 3 ints, got 2 values"):
        convscope.explain_shape((3, 4, 5), (3, 3), ndim=3)
    assert "conv3d raises" in convscope.explain_shape((2, 4, 4), 3, ndim=3).conclusion()


def test_cli_shape_takes_1d_and_3d_shapes():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "convscope", "shape", "4x3x16x112x112", "-k", "3", "--dims", "3",
                          "-s", "1x2x2", "-p", "1", "--out-channels", "64"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    expected = convscope.explain_shape((4, 3, 16, 112, 112), 3, stride=(1, 2, 2), padding=1, out_channels=64, ndim=3)
    assert out.stdout.strip() == str(expected).strip()
    bad = subprocess.run([sys.executable, "-m", "convscope", "shape", "2x100", "-k", "3x3", "--dims", "1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--kernel must be one integer for a 1-d convolution" in bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- the N-d spec, non-finite values


def test_make_spec_in_1d_and_3d():
    s1 = make_spec(4, padding="same", dilation=3, ndim=1)
    assert (s1.ndim, s1.kernel_size, s1.padding, s1.padding_arg) == (1, (4,), ((4, 5),), "same")
    s3 = make_spec((3, 1, 2), stride=(2, 1, 1), padding=(1, 0, 2), ndim=3)
    assert s3.padding == ((1, 1), (0, 0), (2, 2)) and s3.pad_totals == (2, 0, 4)
    assert s3.padded_size((5, 6, 7)) == (7, 6, 11) and s3.output_size((5, 6, 7)) == (3, 6, 10)
    lifted = convscope.spec.lifted_spec(s1)
    assert (lifted.kernel_size, lifted.padding, lifted.dilation) == ((1, 4), ((0, 0), (4, 5)), (1, 3))
    with pytest.raises(ValueError, match=r"number of spatial dimensions must be 1, 2 or 3, got 4"):
        make_spec(3, ndim=4)
    with pytest.raises(TypeError, match=r"kernel_size must be an int or a tuple of one int, got True"):
        make_spec(True, ndim=1)
    with pytest.raises(ValueError, match=r"kernel_size must be an int or a pair of ints, got 3 values"):
        make_spec((3, 3, 3))                                     # the 2-d messages are unchanged


def test_bind_gives_one_frozen_call():
    x, w = np.zeros((3, 2, 5, 6, 7), np.float32), np.zeros((4, 1, 3, 3, 3), np.float32)
    call = bind(3, input=x, weight=w, bias=None, padding=1, groups=2)
    assert call.batched and call.dtype == np.float32 and call.input is x
    assert call.output_shape == (3, 4, 5, 6, 7) and call.weight_shape == w.shape
    assert call.shape == ConvShapeNd(3, 2, (5, 6, 7), 4, (5, 6, 7), 2)
    with pytest.raises(AttributeError):
        call.batched = False
    unbatched = bind(1, input=np.zeros((2, 9)), weight=np.zeros((2, 2, 3)), grad_output=np.zeros((2, 7)))
    assert not unbatched.batched and unbatched.caller_output_shape() == (2, 7)
    lifted = convscope.spec.lift(unbatched)
    assert lifted.input.shape == (2, 1, 9) and (lifted.shape.H, lifted.shape.W_out) == (1, 7)


@pytest.mark.parametrize("nd", (1, 3))
def test_nonfinite_values_land_where_torch_puts_them(nd):
    require_torch()
    from oracle import assert_same_nonfinite, torch_native_conv_nd

    name, chw, w_shape, params = FEATURES[nd][0]               # padding 1
    x, w, b, params = _arrays(chw, w_shape, params, "batched", np.float64, seed=9)
    x[(0, 1) + (2,) * nd] = np.inf
    w[(1, 0) + (0,) * nd] = np.nan                             # a corner tap: it reads zero padding
    want, _ = torch_native_conv_nd(x, w, b, None, **params)
    got = getattr(convscope, f"conv{nd}d")(x, w, b, **params)
    assert_same_nonfinite(got, want, "forward")


def test_explanations_of_1d_and_3d_layers_are_the_layers_numbers():
    """(tests/test_explain_nd.py explains every dimension in full.)"""
    x1, x3 = np.ones((1, 1, 5), np.float32), np.ones((1, 1, 3, 3, 3), np.float32)
    m1, m3 = convscope.Conv1d(1, 1, 3, seed=0), convscope.Conv3d(1, 1, 2, seed=0)
    assert convscope.explain(m1, x1, (0, 0, 0)).value == float(m1(x1)[0, 0, 0])
    grads = convscope.conv3d_backward(np.ones((1, 1, 2, 2, 2), np.float32), x3, m3.weight)
    assert convscope.explain_grad(m3, x3, at=(0, 0, 0, 0, 0)).value == float(grads.input[0, 0, 0, 0, 0])


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_ndgemm_serves_2d_convolutions_too(mode):
    """ndgemm declares 1, 2 and 3 dimensions: forced on a 2-d convolution it gives torch's numbers,
    also when one sample exceeds the workspace limit (the 2-d runner's blocks of output rows)."""
    require_torch()
    from oracle import check_against_torch

    x, w, b, params = case_arrays(((4, 9, 8), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 1), groups=2)),
                                  "batched", np.float64)
    check_against_torch(x, w, b, algorithm="ndgemm", padding_mode=mode, **params)
    with convscope.workspace_limit(4096):
        check_against_torch(x, w, b, algorithm="ndgemm", padding_mode=mode, **params)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ndgemm_writes_each_block_of_planes_into_the_output(dtype, monkeypatch):
    """ndgemm's forward adds each block of output planes' product to the bias in place, one plane a
    block as well as all at once, with NaN and ±Inf from the bias and the input where torch puts them."""
    require_torch()
    from oracle import assert_same_nonfinite, torch_conv_nd

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 5, 6, 7)).astype(dtype)
    w = rng.standard_normal((6, 2, 2, 3, 2)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    b[4] = -np.inf
    x[1, 3, 2, 2, 2] = np.nan
    params = dict(stride=(1, 2, 1), padding=(1, 0, 1), groups=2)
    expected, _ = torch_conv_nd(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), None, **params)
    whole = convscope.conv3d(x, w, b, algorithm="ndgemm", **params)
    monkeypatch.setattr(algorithms.ndgemm, "BLOCK_BYTES", 1)                        # one output plane a block
    call = bind(3, input=x, weight=w, bias=b, **params, order=("input", "weight", "bias"))
    assert len(algorithms.ndgemm._planes(call.spec, call.shape, x.itemsize)) == call.shape.out_spatial[0]
    blocks = convscope.conv3d(x, w, b, algorithm="ndgemm", **params)
    for got in (whole, blocks):
        assert got.dtype == dtype and got.flags.c_contiguous
        assert_same_nonfinite(got, expected.astype(dtype), "forward")
    np.testing.assert_array_equal(whole, blocks)
    no_bias, _ = torch_conv_nd(x.astype(np.float64), w.astype(np.float64), None, None, **params)
    assert_same_nonfinite(convscope.conv3d(x, w, None, algorithm="ndgemm", **params), no_bias.astype(dtype),
                          "forward without bias")
