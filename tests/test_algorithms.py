"""The special-purpose paths (pointwise, depthwise, winograd), each forced on, against the
reference loops and torch over every configuration they serve.

The automatic planner sends only some shapes to each path (see convscope.planner); here every
path is forced on small shapes covering each feature it accepts, in every padding mode, both
dtypes, batched, unbatched and with an empty batch.  Winograd's float32 results are also checked
with a norm-relative tolerance on a larger layer, and hypothesis draws random configurations.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import convscope  # noqa: E402
from oracle import assert_close, case_arrays, check_against_torch, float32_against_exact, rel_l2  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

MODES = ("zeros", "reflect", "replicate", "circular")
DTYPES = (np.float64, np.float32)
LAYOUTS = ("batched", "unbatched", "zero_batch")

# (input (C, H, W), weight shape, keyword arguments) per path
SERVED = {
    "pointwise": [
        ((5, 6, 7), (4, 5, 1, 1), {}),
        ((4, 7, 6), (6, 4, 1, 1), dict(stride=2)),
        ((4, 7, 8), (6, 2, 1, 1), dict(stride=(2, 3), padding=1, groups=2)),
        ((3, 5, 6), (4, 3, 1, 1), dict(padding=(2, 1), dilation=3)),
    ],
    "depthwise": [
        ((4, 7, 8), (4, 1, 3, 3), dict(padding=1, groups=4)),
        ((4, 9, 8), (4, 1, 3, 3), dict(stride=2, padding=1, groups=4)),
        ((3, 8, 9), (6, 1, 3, 3), dict(padding="same", groups=3)),                 # multiplier 2
        ((3, 9, 10), (3, 1, 5, 3), dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=3)),
        ((2, 6, 7), (6, 1, 2, 2), dict(groups=2, bias=False)),
    ],
    "winograd": [
        ((5, 9, 11), (4, 5, 3, 3), dict(padding=1)),
        ((3, 8, 8), (6, 3, 3, 3), {}),
        ((4, 5, 7), (3, 4, 3, 3), dict(padding=(2, 0))),
        ((2, 3, 3), (2, 2, 3, 3), dict(padding="same", bias=False)),
        ((3, 13, 6), (5, 3, 3, 3), dict(padding="same")),
    ],
}


def _grid():
    params = []
    for name, cases in SERVED.items():
        for (ci, case), (mi, mode), (di, dtype) in itertools.product(enumerate(cases), enumerate(MODES),
                                                                     enumerate(DTYPES)):
            layout = LAYOUTS[(ci + mi + di) % len(LAYOUTS)]
            params.append(pytest.param(name, case, mode, dtype, layout,
                                       id=f"{name}-{ci}-{mode}-{np.dtype(dtype).name}-{layout}"))
    return params


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


@pytest.mark.parametrize("name", list(SERVED))
def test_grad_functions_match_torch(name):
    """conv2d_input / conv2d_weight through each path, against torch.nn.grad."""
    import torch.nn.grad as tgrad

    chw, w_shape, params = SERVED[name][1]
    params = {k: v for k, v in params.items() if k != "bias"}
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2,) + chw)
    w = rng.standard_normal(w_shape)
    y = convscope.conv2d(x, w, **params)
    g = rng.standard_normal(y.shape)
    dx = convscope.conv2d_input(x.shape, w, g, algorithm=name, **params)
    dw = convscope.conv2d_weight(x, w.shape, g, algorithm=name, **params)
    tparams = {k: v for k, v in params.items()}
    assert_close(dx, tgrad.conv2d_input(x.shape, torch.from_numpy(w), torch.from_numpy(g), **tparams).numpy())
    assert_close(dw, tgrad.conv2d_weight(torch.from_numpy(x), w.shape, torch.from_numpy(g), **tparams).numpy())


@pytest.mark.parametrize("last", [False, True], ids=["flat-windows", "channels-last"])
@pytest.mark.parametrize("case", SERVED["depthwise"], ids=[f"dw{i}" for i in range(len(SERVED["depthwise"]))])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_depthwise_layouts(case, last, mode, monkeypatch):
    """Both depthwise layouts (flat windows on phases, channels last), forced, against the reference."""
    from convscope.algorithms import depthwise

    monkeypatch.setattr(depthwise, "channels_last", lambda spec, shape: last)
    x, w, b, params = case_arrays(case, "batched", np.float64)
    params["padding_mode"] = mode
    want = convscope.conv2d(x, w, b, algorithm="reference", **params)
    assert_close(convscope.conv2d(x, w, b, algorithm="depthwise", **params), want)
    g = np.random.default_rng(2).standard_normal(want.shape)
    got = convscope.conv2d_backward(g, x, w, algorithm="depthwise", **params)
    ref = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    for field in ("input", "weight", "bias"):
        assert_close(getattr(got, field), getattr(ref, field), field)


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
    """Random configurations each path serves, float64, forward and the three gradients."""
    name = data.draw(st.sampled_from(list(SERVED)), label="path")
    N = data.draw(st.integers(0, 2), label="N")
    mode = data.draw(st.sampled_from(MODES), label="padding_mode")
    if name == "winograd":
        C, O, k, stride, dilation, groups = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)), 3, 1, 1, 1
    elif name == "pointwise":
        groups = data.draw(st.integers(1, 2))
        C, O = groups * data.draw(st.integers(1, 3)), groups * data.draw(st.integers(1, 3))
        k, stride, dilation = 1, data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2))
    else:
        C = groups = data.draw(st.integers(1, 4))
        O = C * data.draw(st.integers(1, 2))
        k, stride, dilation = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    H = data.draw(st.integers(1, 9))
    W = data.draw(st.integers(1, 9))
    pad = data.draw(st.integers(0, min(2, H - 1 if mode == "reflect" else H, W - 1 if mode == "reflect" else W)))
    if (H + 2 * pad - dilation * (k - 1) - 1) < 0 or (W + 2 * pad - dilation * (k - 1) - 1) < 0:
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C // groups, k, k))
    b = rng.standard_normal(O)
    params = dict(stride=stride, padding=pad, dilation=dilation, groups=groups, padding_mode=mode)
    want = convscope.conv2d(x, w, b, algorithm="reference", **params)
    assert_close(convscope.conv2d(x, w, b, algorithm=name, **params), want, "forward")
    g = rng.standard_normal(want.shape)
    got = convscope.conv2d_backward(g, x, w, algorithm=name, **params)
    ref = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    for field in ("input", "weight", "bias"):
        assert_close(getattr(got, field), getattr(ref, field), field)
