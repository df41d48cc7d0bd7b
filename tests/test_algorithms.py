"""Every path in the registry, forced on, against the reference loops and torch over every
configuration it serves.

The parametrisation comes from :data:`convscope.algorithms.ALGORITHMS`: each path gets every case
of :data:`CASES` its own ``needs`` accepts, so a new path is tested without a list written for it.
The cases cover each feature (stride, dilation, padding, groups, channel multiplier, kernel sizes),
every padding mode, float64 and float32, batched, unbatched and with an empty batch.  Winograd's
float32 results are also checked with a norm-relative tolerance on a larger layer, the depthwise
kernels in both layouts and with NaN/Inf, and hypothesis draws random configurations for every path.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convscope
from convscope.algorithms import ALGORITHMS, winograd
from convscope.spec import check_shapes, make_spec
from oracle import (LAYOUTS, PADDING_MODES, assert_close, assert_close_global, assert_same_nonfinite, case_arrays,
                    case_spec_shape, check_against_torch, float32_against_exact, rel_l2, require_torch,
                    torch_conv2d, torch_grad_function)

require_torch()

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

MODES = PADDING_MODES
DTYPES = (np.float64, np.float32)
PATHS = [name for name in ALGORITHMS if name != "reference"]

# (input (C, H, W), weight shape, keyword arguments): each path runs the ones it serves
CASES = [
    ((5, 6, 7), (4, 5, 1, 1), {}),
    ((4, 7, 6), (6, 4, 1, 1), dict(stride=2)),
    ((4, 7, 8), (6, 2, 1, 1), dict(stride=(2, 3), padding=1, groups=2)),
    ((3, 5, 6), (4, 3, 1, 1), dict(padding=(2, 1), dilation=3)),
    ((4, 7, 8), (4, 1, 3, 3), dict(padding=1, groups=4)),
    ((4, 9, 8), (4, 1, 3, 3), dict(stride=2, padding=1, groups=4)),
    ((3, 8, 9), (6, 1, 3, 3), dict(padding="same", groups=3)),                 # multiplier 2
    ((3, 9, 10), (3, 1, 5, 3), dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=3)),
    ((2, 6, 7), (6, 1, 2, 2), dict(groups=2, bias=False)),
    ((17, 6, 5), (17, 1, 3, 3), dict(stride=(1, 2), padding=(1, 2), groups=17)),   # a partial channel block
    ((5, 9, 11), (4, 5, 3, 3), dict(padding=1)),
    ((3, 8, 8), (6, 3, 3, 3), {}),
    ((4, 5, 7), (3, 4, 3, 3), dict(padding=(2, 0))),
    ((2, 3, 3), (2, 2, 3, 3), dict(padding="same", bias=False)),
    ((3, 13, 6), (5, 3, 3, 3), dict(padding="same")),
    ((4, 9, 10), (6, 2, 3, 5), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)),
    ((3, 11, 9), (4, 3, 5, 5), dict(stride=2, padding=2)),
    ((3, 9, 8), (4, 3, 2, 2), dict(stride=2)),                                     # patches, a row unread
    ((4, 6, 9), (6, 2, 2, 3), dict(stride=(2, 3), groups=2, padding_mode="reflect")),
    ((3, 8, 8), (5, 3, 4, 4), dict(stride=4, bias=False)),
    ((3, 10, 9), (4, 3, 4, 4), dict(stride=2, padding=1)),                         # sub-pixel phases, odd width
    ((3, 11, 10), (5, 3, 3, 3), dict(stride=2, padding=1)),
    ((2, 12, 13), (3, 2, 8, 8), dict(stride=4, padding=2, bias=False)),
]


def served(name):
    """The cases of CASES that path ``name`` can compute (by its own ``needs``)."""
    return [case for case in CASES if ALGORITHMS[name].needs(*case_spec_shape(*case)) is None]


SERVED = {name: served(name) for name in PATHS}


def _grid():
    params = []
    for name in PATHS:
        for (ci, case), (di, dtype) in itertools.product(enumerate(SERVED[name]), enumerate(DTYPES)):
            for mi in (ci + di) % 2, (ci + di) % 2 + 2:                     # two of the four modes each
                layout = LAYOUTS[(ci + mi + di) % len(LAYOUTS)]
                params.append(pytest.param(name, case, MODES[mi], dtype, layout,
                                           id=f"{name}-{ci}-{MODES[mi]}-{np.dtype(dtype).name}-{layout}"))
    return params


def test_every_path_has_cases():
    assert all(len(SERVED[name]) >= 4 for name in PATHS), {n: len(c) for n, c in SERVED.items()}


@pytest.mark.parametrize("name, case, mode, dtype, layout", _grid())
def test_path_matches_torch_and_reference(name, case, mode, dtype, layout):
    x, w, b, params = case_arrays(case, layout, dtype)
    params["padding_mode"] = mode
    if mode in ("reflect", "circular") and params.get("padding") == (2, 0) and x.shape[-2] <= 2:
        pytest.skip("padding larger than the input")
    out = check_against_torch(x, w, b, algorithm=name, **params)
    assert_close(out, convscope.conv2d(x, w, b, algorithm="reference", **params), "forward vs reference")
    g = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    got = convscope.conv2d_backward(g, x, w, algorithm=name, **params)
    want = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    for field in ("input", "weight", "bias"):
        assert_close(getattr(got, field), getattr(want, field), f"grad {field} vs reference")


@pytest.mark.parametrize("name", PATHS)
def test_grad_functions_match_torch(name):
    """conv2d_input / conv2d_weight through each path, against torch's nn.grad."""
    chw, w_shape, params = SERVED[name][1]
    params = {k: v for k, v in params.items() if k != "bias"}
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2,) + chw)
    w = rng.standard_normal(w_shape)
    y = convscope.conv2d(x, w, **params)
    g = rng.standard_normal(y.shape)
    dx = convscope.conv2d_input(x.shape, w, g, algorithm=name, **params)
    dw = convscope.conv2d_weight(x, w.shape, g, algorithm=name, **params)
    assert_close(dx, torch_grad_function("conv2d_input", x.shape, w, g, **params))
    assert_close(dw, torch_grad_function("conv2d_weight", x, w.shape, g, **params))


DEPTHWISE = SERVED["depthwise"]


@pytest.mark.parametrize("lay", ["rows", "blocks", "planes"])
@pytest.mark.parametrize("case", DEPTHWISE, ids=[f"dw{i}" for i in range(len(DEPTHWISE))])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_depthwise_layouts(case, lay, mode, monkeypatch):
    """Every depthwise layout (rows; planes; channel blocks where the multiplier is 1), forced, against
    the reference in float64 and torch in float32."""
    from convscope.algorithms import depthwise

    if lay == "blocks" and case[1][0] != case[0][0]:
        pytest.skip("channel blocks serve multiplier 1 only")
    monkeypatch.setattr(depthwise, "layout", lambda spec, shape, pass_="forward": lay)
    x, w, b, params = case_arrays(case, "batched", np.float64)
    params["padding_mode"] = mode
    want = convscope.conv2d(x, w, b, algorithm="reference", **params)
    assert_close(convscope.conv2d(x, w, b, algorithm="depthwise", **params), want)
    g = np.random.default_rng(2).standard_normal(want.shape)
    got = convscope.conv2d_backward(g, x, w, algorithm="depthwise", **params)
    ref = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    for field in ("input", "weight", "bias"):
        assert_close(getattr(got, field), getattr(ref, field), field)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    check_against_torch(x32, w32, None if b is None else b.astype(np.float32), algorithm="depthwise", **params)


@pytest.mark.parametrize("lay", ["rows", "blocks", "planes"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_depthwise_non_finite_values_land_where_torch_puts_them(value, lay, monkeypatch):
    """A NaN or Inf in the input or grad_output reaches exactly the outputs and gradients whose windows
    hold it: the same positions, and the same values elsewhere, as in torch's results."""
    from convscope.algorithms import depthwise

    monkeypatch.setattr(depthwise, "layout", lambda spec, shape, pass_="forward": lay)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 18, 9, 8)).astype(np.float32)
    w = rng.standard_normal((18, 1, 3, 3)).astype(np.float32)
    x[1, 3, 4, 2] = value
    x[0, 17, 0, 7] = value
    params = dict(stride=(1, 2), padding=1, dilation=(2, 1), groups=18)
    g = rng.standard_normal(torch_conv2d(x, w, None, None, **params)[0].shape).astype(np.float32)
    g[0, 5, 1, 1] = value
    want_out, (want_dx, want_dw, _) = torch_conv2d(x, w, None, g, **params)
    got_out = convscope.conv2d(x, w, algorithm="depthwise", **params)
    got = convscope.conv2d_backward(g, x, w, algorithm="depthwise", **params)
    for got_a, want_a, what in ((got_out, want_out, "forward"), (got.input, want_dx, "grad input"),
                                (got.weight, want_dw, "grad weight")):
        assert_same_nonfinite(got_a, want_a, what)


def test_depthwise_float16_computes_in_float32():
    x, w, b, params = case_arrays(CASES[5], "batched", np.float16)
    check_against_torch(x, w, b, algorithm="depthwise", **params)


def test_winograd_float32_error_is_small_in_norm():
    """float32 F(4×4, 3×3) on a 64-channel layer: relative L2 error ≤ 1e-5 (measured ~2e-6) and
    max error ≤ 1e-4 of max |exact|, forward, grad-input and grad-weight; float64 ≤ 1e-12."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 64, 20, 20))
    w = rng.standard_normal((64, 64, 3, 3)) / 24.0
    pairs, (y64, exact) = float32_against_exact("winograd", x, w, rng, padding=1)
    for got, want in pairs:
        assert rel_l2(got, want) <= 1e-5
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert rel_l2(y64, exact) <= 1e-12


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_paths_agree_with_reference_property(data):
    """Random configurations, each path forced where its ``needs`` accepts them: float64, forward
    and the three gradients, against the reference loops."""
    name = data.draw(st.sampled_from(PATHS), label="path")
    N = data.draw(st.integers(0, 2), label="N")
    mode = data.draw(st.sampled_from(MODES), label="padding_mode")
    groups = data.draw(st.integers(1, 3), label="groups")
    C = groups * data.draw(st.integers(1, 2), label="C/groups")
    O = groups * data.draw(st.integers(1, 2), label="C_out/groups")
    kH, kW = data.draw(st.integers(1, 4), label="kH"), data.draw(st.integers(1, 4), label="kW")
    stride = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)), label="stride")
    dilation = data.draw(st.tuples(st.integers(1, 2), st.integers(1, 2)), label="dilation")
    H, W = data.draw(st.integers(1, 9), label="H"), data.draw(st.integers(1, 9), label="W")
    pad = data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2)), label="padding")
    assume(mode != "reflect" or (pad[0] < H and pad[1] < W))
    assume(mode != "circular" or (pad[0] <= H and pad[1] <= W))
    assume(H + 2 * pad[0] - dilation[0] * (kH - 1) - 1 >= 0 and W + 2 * pad[1] - dilation[1] * (kW - 1) - 1 >= 0)
    spec = make_spec((kH, kW), stride, pad, dilation, groups, mode)
    assume(ALGORITHMS[name].needs(spec, check_shapes(spec, (N, C, H, W), (O, C // groups, kH, kW))) is None)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C // groups, kH, kW))
    b = rng.standard_normal(O)
    params = dict(stride=stride, padding=pad, dilation=dilation, groups=groups, padding_mode=mode)
    want = convscope.conv2d(x, w, b, algorithm="reference", **params)
    g = rng.standard_normal(want.shape)
    got = convscope.conv2d_backward(g, x, w, algorithm=name, **params)
    ref = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    pairs = [(convscope.conv2d(x, w, b, algorithm=name, **params), want, (x, w), "forward")]
    pairs += [(getattr(got, f), getattr(ref, f), factors, f) for f, factors in
              (("input", (g, w)), ("weight", (g, x)), ("bias", (g,)))]
    for actual, expected, factors, what in pairs:
        if ALGORITHMS[name].ERROR == "local":
            assert_close(actual, expected, what)
        else:       # error relative to the call's largest values: an exact 0 may carry the others' rounding
            assert_close_global(actual, expected, factors, what)
