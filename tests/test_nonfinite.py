"""NaN, +Inf and −Inf land where torch puts them, on every path; and the precision switch.

Every registered algorithm, forced, on every layer of LAYERS it can compute, and the automatic planner
on layers it sends to Winograd and FFT: one NaN, +Inf, −Inf or 3e38 pixel in the input, a NaN or ±Inf
weight, a NaN or ±Inf in grad_output; the output and the three gradients must have torch's NaN, +Inf
and −Inf masks (oracle.torch_native_conv2d says which of torch's kernels, where they differ) and its
finite values.
"""
from __future__ import annotations

import numpy as np
import pytest

import convscope
from convscope import algorithms, planner
from convscope.spec import check_shapes, make_spec
from oracle import assert_same_nonfinite, rel_l2, torch_conv2d, torch_native_conv2d

# (name, (C, H, W), weight shape, params): batch 2
LAYERS = [
    ("3x3", (3, 9, 9), (4, 3, 3, 3), dict(padding=1)),
    ("5x5-stride2", (3, 11, 11), (4, 3, 5, 5), dict(padding=2, stride=2)),
    ("3x3-dilated", (3, 9, 9), (4, 3, 3, 3), dict(padding=2, dilation=2)),
    ("3x3-reflect", (3, 9, 9), (4, 3, 3, 3), dict(padding=1, padding_mode="reflect")),
    ("3x3-circular-groups", (4, 9, 9), (4, 2, 3, 3), dict(padding=1, groups=2, padding_mode="circular")),
    ("1x1", (3, 9, 9), (4, 3, 1, 1), dict()),
    ("1x1-padded-stride2", (3, 9, 9), (4, 3, 1, 1), dict(padding=1, stride=2)),
    ("depthwise", (4, 9, 9), (8, 1, 3, 3), dict(padding=1, groups=4)),
    ("depthwise-large", (2, 34, 34), (2, 1, 3, 3), dict(padding=1, groups=2)),       # ≥ 1024 outputs
    ("depthwise-7x7", (2, 12, 12), (2, 1, 7, 7), dict(padding=3, groups=2)),
    ("2x2-stride2", (3, 9, 8), (4, 3, 2, 2), dict(stride=2)),                         # patches, a row unread
    ("4x4-stride2", (3, 10, 9), (4, 3, 4, 4), dict(stride=2, padding=1)),             # sub-pixel phases
]
REFERENCE_MAX_TAPS = 20_000          # the loops are slow: layers with more tap evaluations skip them

# layers the automatic planner sends to Winograd and FFT (asserted below)
PLANNED = [
    ("winograd", (64, 12, 12), (64, 64, 3, 3), dict(padding=1)),
    ("fft", (8, 32, 32), (8, 8, 11, 11), dict(padding=5)),
    ("fft", (8, 28, 28), (8, 1, 19, 19), dict(padding=9, groups=8)),
]

# (array, index, value): one non-finite (or overflowing) value per case
HUGE = 3e38
PERTURBATIONS = [("input", v) for v in (np.nan, np.inf, -np.inf, HUGE)] + \
                [("weight", v) for v in (np.nan, np.inf, -np.inf)] + \
                [("grad_output", v) for v in (np.nan, np.inf, -np.inf)]


def _spec_shape(chw, w_shape, params, N=2):
    spec = make_spec(w_shape[2:], params.get("stride", 1), params.get("padding", 0), params.get("dilation", 1),
                     params.get("groups", 1), params.get("padding_mode", "zeros"))
    return spec, check_shapes(spec, (N,) + chw, w_shape)


def _serves(name, layer):
    _, chw, w_shape, params = layer
    spec, shape = _spec_shape(chw, w_shape, params)
    try:
        planner.choose(spec, shape, name)
    except ValueError:
        return False
    taps = shape.N * shape.out_channels * shape.H_out * shape.W_out * spec.kernel_size[0] * spec.kernel_size[1]
    return name != "reference" or taps <= REFERENCE_MAX_TAPS


FORCED = [(name, layer) for name in algorithms.ALGORITHMS for layer in LAYERS if _serves(name, layer)]


def _perturbed(chw, w_shape, params, dtype, where, value):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2,) + chw).astype(dtype)
    w = rng.uniform(-1, 1, w_shape).astype(dtype)          # |w| < 1: 3e38 · w does not overflow
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    spec, shape = _spec_shape(chw, w_shape, params)
    g = rng.standard_normal((2, shape.out_channels, shape.H_out, shape.W_out)).astype(dtype)
    if where == "input":       # a corner pixel of the second sample (padding copies it), 3e38 in the middle
        index = (1, chw[0] - 1, chw[1] // 2, chw[2] // 2) if value == HUGE else (1, chw[0] - 1, 0, 1)
        x[index] = value
    elif where == "weight":    # a corner tap: it reads the padding at the borders
        w[0, 0, 0, 0] = value
    else:
        g[1, 0, 0, 0] = value
    return x, w, b, g


def _check(algorithm, chw, w_shape, params, dtype):
    for where, value in PERTURBATIONS:
        x, w, b, g = _perturbed(chw, w_shape, params, dtype, where, value)
        out, (dx, dw, db) = torch_native_conv2d(x, w, b, g, **params)
        what = f"{where}={value}"
        # a path that mixes values is off by about 1e-7 (float32) of the call's largest value
        scale = HUGE if value == HUGE and _mixes(algorithm, chw, w_shape, params) else None
        assert_same_nonfinite(convscope.conv2d(x, w, b, algorithm=algorithm, **params), out, f"{what}: forward",
                              scale)
        grads = convscope.conv2d_backward(g, x, w, algorithm=algorithm, **params)
        for field, want in zip(grads._fields, (dx, dw, db)):
            assert_same_nonfinite(getattr(grads, field), want, f"{what}: grad {field}", scale)


def _mixes(algorithm, chw, w_shape, params):
    chosen = planner.choose(*_spec_shape(chw, w_shape, params), algorithm)
    return any(algorithms.ALGORITHMS[c.algorithm].ERROR == "global" for c in chosen)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm, layer", FORCED, ids=[f"{n}-{layer[0]}" for n, layer in FORCED])
def test_forced_algorithm_puts_nonfinite_values_where_torch_does(algorithm, layer, dtype):
    _, chw, w_shape, params = layer
    _check(algorithm, chw, w_shape, params, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path, chw, w_shape, params", PLANNED, ids=[f"{p[0]}-{i}" for i, p in enumerate(PLANNED)])
def test_planned_fast_paths_put_nonfinite_values_where_torch_does(path, chw, w_shape, params, dtype):
    chosen = planner.choose(*_spec_shape(chw, w_shape, params))
    assert {c.algorithm for c in chosen} == {path}
    _check(None, chw, w_shape, params, dtype)


def test_every_algorithm_declares_where_its_error_goes():
    assert set(algorithms.ALGORITHMS) == set(planner.NAMES)
    for name, impl in algorithms.ALGORITHMS.items():
        assert impl.ERROR in ("local", "global"), name
    assert {n for n, impl in algorithms.ALGORITHMS.items() if impl.ERROR == "global"} >= {"winograd", "fft"}


def test_every_algorithm_is_covered():
    assert {name for name, _ in FORCED} == set(algorithms.ALGORITHMS)


def test_torch_kernels_differ_only_where_a_nonfinite_weight_meets_zero_padding():
    """Why the tests ask torch's native kernels: its oneDNN float32 kernel (batch 2, dense 3×3 here)
    skips the padding cells, so an Inf weight gives Inf at the border where 0·Inf is NaN."""
    x, w, b, g = _perturbed((3, 9, 9), (4, 3, 3, 3), dict(padding=1), np.float32, "weight", np.inf)
    native, _ = torch_native_conv2d(x, w, b, g, padding=1)
    default, _ = torch_conv2d(x, w, b, g, padding=1)
    assert np.isnan(native).sum() > 0 and np.isnan(default).sum() == 0
    assert np.array_equal(np.isnan(native), np.isnan(convscope.conv2d(x, w, b, padding=1)))
    x, w, b, g = _perturbed((3, 9, 9), (4, 3, 3, 3), dict(padding=1, padding_mode="reflect"), np.float32,
                            "weight", np.inf)
    native, _ = torch_native_conv2d(x, w, b, g, padding=1, padding_mode="reflect")
    default, _ = torch_conv2d(x, w, b, g, padding=1, padding_mode="reflect")
    assert np.array_equal(np.isposinf(native), np.isposinf(default))


# --------------------------------------------------------------------------- the precision switch


def test_precision_api():
    assert convscope.get_conv_precision() == "high"
    previous = convscope.set_conv_precision("highest")
    try:
        assert previous == "high" and convscope.get_conv_precision() == "highest"
        with convscope.conv_precision("high") as mode:
            assert mode == "high" and convscope.get_conv_precision() == "high"
            import threading

            seen = []
            t = threading.Thread(target=lambda: seen.append(convscope.get_conv_precision()))
            t.start()
            t.join()
            assert seen == ["highest"]                     # the block's mode is this thread's only
        assert convscope.get_conv_precision() == "highest"
    finally:
        convscope.set_conv_precision(previous)


@pytest.mark.parametrize("value, exc, pattern", [
    ("medium", ValueError, r"conv precision must be one of 'highest', 'high', got 'medium'"),
    (None, ValueError, r"conv precision must be one of 'highest', 'high', got None"),
])
def test_precision_validation(value, exc, pattern):
    with pytest.raises(exc, match=pattern):
        convscope.set_conv_precision(value)
    with pytest.raises(exc, match=pattern):
        with convscope.conv_precision(value):
            pass


@pytest.mark.parametrize("path, chw, w_shape, params", PLANNED, ids=[f"{p[0]}-{i}" for i, p in enumerate(PLANNED)])
def test_highest_keeps_the_planner_on_local_paths(path, chw, w_shape, params):
    x_shape = (8,) + chw
    with convscope.conv_precision("highest"):
        p = convscope.plan(x_shape, w_shape, **params)
        forced = convscope.plan(x_shape, w_shape, algorithm=path, **params)
    exact = "depthwise" if params.get("groups", 1) > 1 else "gemm"
    for choice in p:
        assert choice.algorithm == exact
        assert "conv precision 'highest'" in choice.reason and f"would choose {path}" in choice.reason
    assert {c.algorithm for c in forced} == {path}                  # algorithm= still forces
    assert {c.algorithm for c in convscope.plan(x_shape, w_shape, **params)} >= {path}


def test_star_on_a_dark_sky():
    """One bright pixel: FFT (precision 'high') puts about 1e-7 of it into pixels that never read it;
    'highest' (gemm) keeps every pixel's error relative to what it read."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1e-3, (1, 4, 48, 48))
    x[0, 0, 5, 5] = 1e6
    w = rng.standard_normal((4, 4, 11, 11)) / 11
    exact = convscope.conv2d(x, w, padding=5, algorithm="gemm")                # float64, local error
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    assert convscope.plan(x.shape, w.shape, padding=5).forward.algorithm == "fft"
    high = convscope.conv2d(x32, w32, padding=5)
    with convscope.conv_precision("highest"):
        highest = convscope.conv2d(x32, w32, padding=5)
    far = (slice(None), slice(None), slice(20, None), slice(20, None))       # never read the star
    largest = np.abs(exact).max()
    high_err = np.abs(high[far] - exact[far]).max()
    assert 1e-9 * largest < high_err < 1e-7 * largest                     # the documented bound
    assert rel_l2(high[far], exact[far]) > 1e-3                            # ... far above the dark sky's
    assert rel_l2(highest[far], exact[far]) < 1e-6                         # local: relative to the dark sky
