"""convscope.plan and the planner's table; forced algorithms; conv2d_backward's output_mask."""
from __future__ import annotations

import re

import numpy as np
import pytest

import convscope
from convscope import algorithms, planner
from oracle import assert_close


@pytest.mark.parametrize("x_shape, w_shape, params, expected", [
    ((8, 64, 56, 56), (256, 64, 1, 1), {}, ("pointwise",) * 3),
    ((8, 256, 56, 56), (512, 256, 1, 1), dict(stride=2), ("pointwise",) * 3),
    ((8, 32, 112, 112), (32, 1, 3, 3), dict(padding=1, groups=32), ("depthwise",) * 3),
    ((8, 96, 56, 56), (96, 1, 3, 3), dict(stride=2, padding=1, groups=96), ("depthwise",) * 3),
    ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), ("winograd", "winograd", "gemm")),
    ((8, 256, 14, 14), (256, 256, 3, 3), dict(padding=1, padding_mode="reflect"), ("winograd",) * 3),
    ((8, 512, 7, 7), (512, 512, 3, 3), dict(padding=1), ("gemm",) * 3),             # too few pixels
    ((8, 16, 56, 56), (16, 16, 3, 3), dict(padding=1), ("gemm",) * 3),           # too few channels
    ((8, 128, 56, 56), (128, 128, 3, 3), dict(stride=2, padding=1), ("gemm",) * 3),
    ((8, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3), ("gemm",) * 3),
    ((8, 64, 56, 56), (64, 32, 3, 3), dict(padding=1, groups=2), ("gemm",) * 3),
    ((8, 16, 64, 64), (16, 16, 15, 15), dict(padding=7), ("fft",) * 3),
    ((8, 128, 56, 56), (128, 1, 31, 31), dict(padding=15, groups=128), ("fft",) * 3),
])
def test_table(x_shape, w_shape, params, expected):
    p = convscope.plan(x_shape, w_shape, **params)
    assert (p.forward.algorithm, p.grad_input.algorithm, p.grad_weight.algorithm) == expected
    assert all(choice.reason.startswith("row ") for choice in p)
    assert "forward" in str(p) and expected[0] in str(p)


def test_plan_reports_the_fft_estimate():
    """Where FFT could serve, plan says what the cost models estimated, whichever won."""
    fft = convscope.plan((8, 64, 56, 56), (64, 64, 7, 7), padding=3)
    assert fft.forward.algorithm == "fft"
    assert re.search(r"row 'fft': .*; scipy\.fft, \d workers?, 64×64 grid; estimated [\d.]+ ms against "
                     r"gemm's [\d.]+ ms for the three passes$", fft.forward.reason)
    stem = convscope.plan((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    assert re.search(r"; FFT estimated ([\d.]+) ms against gemm's ([\d.]+) ms", stem.forward.reason)
    fft_ms, gemm_ms = planner.cost_ms(*_spec_shape((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3))
    assert fft_ms > 5 * gemm_ms


def _spec_shape(x_shape, w_shape, **params):
    from convscope.spec import check_shapes, make_spec

    spec = make_spec(w_shape[2:], params.get("stride", 1), params.get("padding", 0), 1, 1, "zeros")
    return spec, check_shapes(spec, x_shape, w_shape)


def test_plan_reports_gemm_layouts():
    stem = convscope.plan((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    assert "4 stride phases" in stem.forward.reason and "per sample" in stem.forward.reason
    small = convscope.plan((8, 512, 14, 14), (512, 512, 3, 3), stride=2, padding=1)
    assert "batch folded (H_out·W_out = 49)" in small.forward.reason


def test_every_table_name_is_registered():
    assert set(planner.NAMES) == set(algorithms.ALGORITHMS)
    for row in planner.TABLE:
        assert set(row.choice) <= set(planner.NAMES)


def test_every_algorithm_declares_itself():
    """Each registered module says what it serves and how errors spread; no algorithm imports the planner."""
    import inspect

    for name, impl in algorithms.ALGORITHMS.items():
        assert impl.ERROR in ("local", "global"), name
        assert hasattr(impl.module, "forward") and (hasattr(impl.module, "backward") or (
            hasattr(impl.module, "grad_input") and hasattr(impl.module, "grad_weight"))), name
        assert "planner" not in inspect.getsource(impl.module).split('"""', 2)[-1], name
    assert {n for n, impl in algorithms.ALGORITHMS.items() if impl.ERROR == "global"} == {"winograd", "fft"}


def test_grad_passes_derived_from_backward(monkeypatch):
    """grad_input and grad_weight of a path with ``backward`` go through it, with the one mask."""
    impl = algorithms.ALGORITHMS["gemm"]
    calls = []
    original = impl.module.backward
    monkeypatch.setattr(impl.module, "backward", lambda *a: calls.append(a[-1]) or original(*a))
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    g = np.ones((1, 3, 3, 3))
    convscope.conv2d_input(x.shape, w, g, algorithm="gemm")
    convscope.conv2d_weight(x, w.shape, g, algorithm="gemm")
    assert calls == [(True, False), (False, True)]


def test_forced_algorithm():
    p = convscope.plan((2, 4, 8, 8), (4, 4, 3, 3), padding=1, algorithm="winograd")
    assert {c.algorithm for c in p} == {"winograd"} and all("forced" in c.reason for c in p)
    assert {c.source for c in p} == {"forced"}
    p = convscope.plan((2, 4, 8, 8), (4, 4, 3, 3), padding=1, algorithm="reference")
    assert {c.algorithm for c in p} == {"reference"}


X = np.zeros((1, 4, 6, 6))
W5 = np.zeros((2, 4, 5, 5))
W3 = np.zeros((2, 4, 3, 3))
G3 = np.zeros((1, 2, 4, 4))


@pytest.mark.parametrize("call, pattern", [
    (lambda: convscope.conv2d(X, W5, algorithm="winograd"),
     r"algorithm='winograd'.*3×3 kernel, stride 1, dilation 1 and groups 1, got kernel_size=\(5, 5\)"),
    (lambda: convscope.conv2d(X, W3, stride=2, dilation=2, algorithm="winograd"),
     r"algorithm='winograd'.*got stride=\(2, 2\), dilation=\(2, 2\)"),
    (lambda: convscope.conv2d(X, np.zeros((4, 2, 3, 3)), groups=2, algorithm="winograd"),
     r"algorithm='winograd'.*got groups=2"),
    (lambda: convscope.conv2d(X, W3, algorithm="pointwise"),
     r"algorithm='pointwise'.*1×1 kernel, got kernel_size=\(3, 3\)"),
    (lambda: convscope.conv2d(X, W3, algorithm="depthwise"),
     r"algorithm='depthwise'.*one input channel per group.*in_channels=4 and groups=1"),
    (lambda: convscope.conv2d_backward(G3, X, W3, algorithm="pointwise"), r"algorithm='pointwise'"),
    (lambda: convscope.conv2d_input(X.shape, W3, G3, algorithm="depthwise"), r"algorithm='depthwise'"),
    (lambda: convscope.conv2d_weight(X, W3.shape, G3, algorithm="pointwise"), r"algorithm='pointwise'"),
    (lambda: convscope.Conv2d(4, 2, 5)(X.astype(np.float32), algorithm="winograd"), r"algorithm='winograd'"),
    (lambda: convscope.plan(X.shape, W5.shape, algorithm="winograd"), r"algorithm='winograd'"),
    (lambda: convscope.plan(X.shape, W5.shape, algorithm="fast"), r"algorithm must be one of.*'fast'"),
])
def test_forced_algorithm_that_cannot_serve(call, pattern, monkeypatch):
    def nothing_may_run(*args):
        raise AssertionError("an implementation ran")

    monkeypatch.setattr(algorithms, "run_forward", nothing_may_run)
    monkeypatch.setattr(algorithms, "run_backward", nothing_may_run)
    with pytest.raises(ValueError, match=pattern):
        call()


def test_plan_validates_like_conv2d():
    with pytest.raises(ValueError, match=re.escape("input has 4 channels but weight expects 6")):
        convscope.plan((1, 4, 6, 6), (3, 2, 3, 3), groups=3)
    with pytest.raises(ValueError, match="output would be empty"):
        convscope.plan((1, 4, 2, 2), (3, 4, 3, 3))


# --------------------------------------------------------------------------- output_mask

MASKS = [(a, b, c) for a in (False, True) for b in (False, True) for c in (False, True)]


@pytest.mark.parametrize("mask", MASKS, ids=[str(m) for m in MASKS])
@pytest.mark.parametrize("x_shape, w_shape, params", [
    ((2, 4, 7, 6), (6, 4, 3, 3), dict(padding=1, padding_mode="reflect")),
    ((2, 4, 3, 3), (6, 2, 3, 3), dict(groups=2)),                                   # batch folded
    ((2, 4, 7, 6), (6, 4, 1, 1), dict(stride=2)),
    ((2, 4, 7, 6), (8, 1, 3, 3), dict(groups=4, padding=1)),
    ((2, 8, 32, 32), (8, 8, 15, 15), dict(padding=7)),
], ids=["gemm", "gemm-folded", "pointwise", "depthwise", "fft"])
def test_output_mask(mask, x_shape, w_shape, params, monkeypatch):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    g = rng.standard_normal(convscope.conv2d(x, w, **params).shape)
    full = convscope.conv2d_backward(g, x, w, **params)
    plan = convscope.plan(x_shape, w_shape, **params)
    impl = algorithms.ALGORITHMS[plan.grad_input.algorithm]
    calls = []
    original = impl.backward

    def spy(gy, xx, ww, spec, shape, want):
        calls.append(want)
        if not want[0]:
            assert ww is None
        if not want[1]:
            assert xx is None
        return original(gy, xx, ww, spec, shape, want)

    monkeypatch.setattr(impl, "backward", spy)
    got = convscope.conv2d_backward(g, x, w, output_mask=mask, **params)
    for asked, field in zip(mask, ("input", "weight", "bias")):
        if asked:
            assert_close(getattr(got, field), getattr(full, field), field)
        else:
            assert getattr(got, field) is None
    assert calls == ([(True, True)] if mask[:2] == (True, True) else [m for m in ((True, False), (False, True))
                                                                      if (m[0] and mask[0]) or (m[1] and mask[1])])


@pytest.mark.parametrize("mask, exc, pattern", [
    ((True, True), ValueError, r"output_mask must have 3 entries.*got 2"),
    (True, TypeError, r"output_mask must be a sequence of 3 bools.*True"),
    ((1, 0, 1), TypeError, r"output_mask must hold bools.*\(1, 0, 1\)"),
])
def test_output_mask_validation(mask, exc, pattern):
    with pytest.raises(exc, match=pattern):
        convscope.conv2d_backward(G3, X, W3, output_mask=mask)


@pytest.mark.parametrize("name", ["convscope.planner", "convscope.workspace", "convscope.threads",
                                  "convscope.tuning"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
