"""The pointwise (1×1) path's layouts, each forced on, against torch and the reference loops.

The path runs a pass per sample or batch folded (:func:`convscope.algorithms.pointwise.folded`), and its
copies into and out of those layouts as compiled kernels or NumPy's (by size).  The suite's small
shapes mostly take one branch, so here every combination is forced.
"""
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import convscope
from convscope import algorithms
from convscope.algorithms import pointwise
from oracle import (assert_close, assert_same_nonfinite, check_against_torch, check_against_torch_and_reference,
                    peak_bytes, require_torch, torch_conv2d)

NEVER, ALWAYS = 10.0**12, 0.0
VARIANTS = {f"{'folded' if fold else 'per_sample'}-{'compiled' if kernels else 'numpy'}": (fold, kernels)
            for fold, kernels in itertools.product((True, False), (True, False))}

CONFIGS = [
    dict(x=(3, 6, 7, 8), w=(4, 6, 1, 1)),                                            # plain
    dict(x=(2, 4, 7, 8), w=(12, 4, 1, 1)),                                           # C_out ≥ 2·C
    dict(x=(3, 6, 9, 8), w=(4, 3, 1, 1), stride=2, groups=2),                        # strided, grouped
    dict(x=(2, 4, 9, 10), w=(5, 4, 1, 1), stride=(2, 3), padding=(1, 2)),            # zero padding
    dict(x=(2, 4, 6, 7), w=(6, 2, 1, 1), stride=(1, 2), padding=1, groups=2, padding_mode="reflect"),
    dict(x=(2, 3, 5, 6), w=(4, 3, 1, 1), padding=(2, 1), padding_mode="circular"),
    dict(x=(1, 5, 6, 6), w=(3, 5, 1, 1), stride=2),                                  # one sample
    dict(x=(5, 6, 6), w=(4, 5, 1, 1), padding=1, padding_mode="replicate"),          # unbatched
    dict(x=(0, 4, 6, 6), w=(3, 4, 1, 1), stride=2),                                  # empty batch
    dict(x=(2, 4, 6, 5), w=(3, 4, 1, 1), stride=2, bias=False),
]


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def variant(request, monkeypatch):
    fold, kernels = VARIANTS[request.param]
    monkeypatch.setattr(pointwise, "FOLD_RATIO", dict.fromkeys(pointwise.FOLD_RATIO, ALWAYS if fold else NEVER))
    monkeypatch.setattr(pointwise, "FOLD_BELOW_PIXELS", dict.fromkeys(pointwise.FOLD_RATIO, 1 << 62))
    monkeypatch.setattr(pointwise, "COMPILED_FROM", 0 if kernels else 1 << 62)
    monkeypatch.setattr(pointwise, "COMPILED_GATHER_FROM", 0 if kernels else 1 << 62)
    monkeypatch.setattr(pointwise, "COMPILED_TRANSPOSE_FROM", 0 if kernels else 1 << 62)
    monkeypatch.setattr(pointwise, "get_num_threads", lambda: 2)          # the compiled transposes' condition
    return request.param


def _arrays(config, dtype, seed=0):
    config = dict(config)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(config.pop("x")).astype(dtype)
    w = rng.standard_normal(config.pop("w")).astype(dtype)
    b = rng.standard_normal(w.shape[0]).astype(dtype) if config.pop("bias", True) else None
    return x, w, b, config


@pytest.mark.parametrize("config", CONFIGS, ids=[f"c{i}" for i in range(len(CONFIGS))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_layout_matches_torch_and_the_reference(config, dtype, variant):
    require_torch()
    x, w, b, params = _arrays(config, dtype)
    check_against_torch_and_reference(x, w, b, algorithm="pointwise", **params)


def test_layouts_are_really_taken(monkeypatch):
    """The forcing above switches the branches; one sample never folds (both layouts are the same)."""
    spec = convscope.spec.make_spec((1, 1), stride=2)
    shape = convscope.spec.check_shapes(spec, (3, 6, 9, 8), (4, 6, 1, 1))
    monkeypatch.setattr(pointwise, "FOLD_BELOW_PIXELS", dict.fromkeys(pointwise.FOLD_RATIO, 1 << 62))
    monkeypatch.setattr(pointwise, "FOLD_RATIO", dict.fromkeys(pointwise.FOLD_RATIO, ALWAYS))
    assert all(pointwise.folded(spec, shape, p) for p in pointwise.FOLD_RATIO)
    assert not pointwise.folded(spec, shape._replace(N=1), "forward")
    monkeypatch.setattr(pointwise, "FOLD_RATIO", dict.fromkeys(pointwise.FOLD_RATIO, NEVER))
    assert not any(pointwise.folded(spec, shape, p) for p in pointwise.FOLD_RATIO)


def test_the_rule_folds_small_images_with_large_weights():
    """MobileNetV2's 7² 960→320 folds every pass; ResNet-50's 56² 64→64 runs per sample; at 14² 384→64
    the backward folds, grad_input only beside grad_weight (which folds grad_output for both); 7² with
    few channels (the weight's repacks cost less than the copies) and one sample run per sample."""
    spec = convscope.spec.make_spec((1, 1))

    def layouts(x_shape, w_shape):
        shape = convscope.spec.check_shapes(spec, x_shape, w_shape)
        return (pointwise.folded(spec, shape, "forward"),) + pointwise._backward_layouts(spec, shape, (True, True))
    assert layouts((8, 960, 7, 7), (320, 960, 1, 1)) == (True, True, True)
    assert layouts((8, 64, 56, 56), (64, 64, 1, 1)) == (False, False, False)
    assert layouts((8, 384, 14, 14), (64, 384, 1, 1)) == (False, True, True)
    shape = convscope.spec.check_shapes(spec, (8, 384, 14, 14), (64, 384, 1, 1))
    assert pointwise._backward_layouts(spec, shape, (True, False)) == (False, False)
    assert layouts((8, 8, 7, 7), (8, 8, 1, 1)) == (False, False, False)
    assert layouts((1, 960, 7, 7), (320, 960, 1, 1)) == (False, False, False)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nonfinite_values_land_where_torch_puts_them(dtype, variant):
    """NaN and ±Inf in the input, weight and grad_output reach the outputs and gradients torch's do,
    with a zero-padded stride-2 layer (border outputs read padding, some pixels are never read)."""
    require_torch()
    x, w, b, params = _arrays(dict(x=(3, 4, 9, 8), w=(6, 4, 1, 1), stride=2, padding=1), dtype, seed=3)
    x[0, 1, 2, 3], x[2, 0, 4, 5], x[1, 3, 1, 1] = np.nan, np.inf, -np.inf    # (1, 1) is never read
    w[4, 2] = np.inf
    out = convscope.conv2d(x, w, b, algorithm="pointwise", **params)
    g = np.random.default_rng(2).standard_normal(out.shape).astype(dtype)
    g[1, 2, 3, 1] = np.nan
    expected, (dx, dw, db) = torch_conv2d(x, w, b, g, **params)
    assert_same_nonfinite(out, expected, "forward")
    grads = convscope.conv2d_backward(g, x, w, algorithm="pointwise", **params)
    for got, want, name in zip(grads, (dx, dw, db), ("input", "weight", "bias")):
        assert_same_nonfinite(got, want, f"grad {name}")


def test_folded_layout_keeps_to_the_workspace_limit(monkeypatch):
    """Forced to fold, a call over the limit is cut into batch slices whose folded copies fit: the same
    results, and the forward's peak stays under input + output + the limit."""
    monkeypatch.setattr(pointwise, "FOLD_RATIO", dict.fromkeys(pointwise.FOLD_RATIO, ALWAYS))
    monkeypatch.setattr(pointwise, "FOLD_BELOW_PIXELS", dict.fromkeys(pointwise.FOLD_RATIO, 1 << 62))
    x, w, b, params = _arrays(dict(x=(6, 16, 14, 12), w=(24, 16, 1, 1), stride=2, padding=1), np.float64, seed=5)
    want = convscope.conv2d(x, w, b, algorithm="pointwise", **params)
    g = np.random.default_rng(6).standard_normal(want.shape)
    want_g = convscope.conv2d_backward(g, x, w, algorithm="pointwise", **params)
    limit = 128 << 10
    spec = convscope.spec.make_spec((1, 1), stride=2, padding=1)
    shape = convscope.spec.check_shapes(spec, x.shape, w.shape)
    assert pointwise.workspace("forward", spec, shape, 8) > limit          # really cut
    with convscope.workspace_limit(limit):
        step = algorithms._batch_step(algorithms.ALGORITHMS["pointwise"], "forward", spec, shape, 8)
        assert 2 <= step < shape.N                                          # slices of several samples, folded
        got, peak = peak_bytes(lambda: convscope.conv2d(x, w, b, algorithm="pointwise", **params))
        got_g = convscope.conv2d_backward(g, x, w, algorithm="pointwise", **params)
    assert_close(got, want, "forward")
    for name in ("input", "weight", "bias"):
        assert_close(getattr(got_g, name), getattr(want_g, name), f"grad {name}")
    assert peak <= x.nbytes + want.nbytes + limit


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 3), groups=st.integers(1, 2), cg=st.integers(1, 3), og=st.integers(1, 3),
       hw=st.tuples(st.integers(1, 7), st.integers(1, 7)), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]), bias=st.booleans(), fold=st.booleans(),
       kernels=st.booleans())
def test_property_every_layout_matches_torch(n, groups, cg, og, hw, stride, padding, mode, bias, fold, kernels):
    """Random 1×1 convolutions (strided, padded in every mode, grouped, empty batches), each layout and
    copy forced, against torch in float64."""
    require_torch()
    assume(mode != "reflect" or all(p < s for p, s in zip(padding, hw)))
    assume(mode != "circular" or all(p <= s for p, s in zip(padding, hw)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pointwise, "FOLD_RATIO", dict.fromkeys(pointwise.FOLD_RATIO, ALWAYS if fold else NEVER))
        mp.setattr(pointwise, "FOLD_BELOW_PIXELS", dict.fromkeys(pointwise.FOLD_RATIO, 1 << 62))
        for name in ("COMPILED_FROM", "COMPILED_GATHER_FROM", "COMPILED_TRANSPOSE_FROM"):
            mp.setattr(pointwise, name, 0 if kernels else 1 << 62)
        mp.setattr(pointwise, "get_num_threads", lambda: 2)
        x, w, b, params = _arrays(dict(x=(n, groups * cg) + hw, w=(groups * og, cg, 1, 1), bias=bias), np.float64)
        check_against_torch(x, w, b, algorithm="pointwise", stride=stride, padding=padding, groups=groups,
                            padding_mode=mode)
