"""The gemm path's internal variants, each forced on, against the reference loops.

The planner picks gemm's layout (per sample or batch-folded) by output size, and reads strided taps either
directly or through stride phases.  The suite's small shapes mostly take one branch, so here
every combination is forced over configurations that cover every feature.
"""
import itertools

import numpy as np
import pytest

import convscope
from convscope.algorithms import gemm, pointwise
from oracle import require_torch, assert_close

CONFIGS = [
    dict(x=(2, 4, 9, 8), w=(6, 4, 3, 3), stride=1, padding=1),
    dict(x=(2, 3, 11, 10), w=(4, 3, 5, 5), stride=2, padding=2),                  # phases: 25 ≥ 4·4 taps
    dict(x=(2, 3, 13, 12), w=(4, 3, 7, 7), stride=2, padding=3, padding_mode="reflect"),  # the stem's shape
    dict(x=(1, 4, 12, 11), w=(4, 2, 5, 4), stride=(2, 1), padding=(1, 2), groups=2, padding_mode="circular"),
    dict(x=(2, 4, 8, 9), w=(8, 1, 3, 3), stride=1, padding="same", groups=4, padding_mode="replicate"),
    dict(x=(2, 4, 10, 9), w=(4, 4, 3, 2), stride=1, padding="same", dilation=(2, 3)),
    dict(x=(2, 6, 7, 8), w=(4, 6, 1, 1)),                                          # pointwise
    dict(x=(2, 6, 9, 8), w=(4, 3, 1, 1), stride=2, groups=2),                        # strided 1×1
    dict(x=(0, 3, 9, 8), w=(4, 3, 5, 5), stride=2, padding=1),                       # empty batch
    dict(x=(3, 9, 8), w=(4, 3, 5, 5), stride=2, padding=2, padding_mode="reflect"),  # unbatched
]

# (FOLD_BELOW, FOLD_BELOW_1X1_BACKWARD, FOLD_BELOW_1X1_FORWARD, MIN_TAPS_PER_PHASE, COMPILED_FROM_PIXELS)
NEVER, ALWAYS = 0, 10**9
VARIANTS = {
    f"{'folded' if fold else 'per_sample'}-{'phases' if phases else 'strided'}-{'compiled' if kernels else 'numpy'}":
        (fold, fold, fold, 0 if phases else ALWAYS, 0 if kernels else ALWAYS)
    for fold, phases, kernels in itertools.product((NEVER, ALWAYS), (True, False), (True, False))
    if not (kernels and fold == ALWAYS)          # the compiled im2col/col2im serve the per-sample layout only
}


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def variant(request, monkeypatch):
    for name, value in zip(("FOLD_BELOW", "FOLD_BELOW_1X1_BACKWARD", "FOLD_BELOW_1X1_FORWARD",
                            "MIN_TAPS_PER_PHASE", "COMPILED_FROM_PIXELS"), VARIANTS[request.param]):
        monkeypatch.setattr(gemm, name, value)
    return request.param


@pytest.mark.parametrize("config", CONFIGS, ids=[f"c{i}" for i in range(len(CONFIGS))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_variant_matches_the_reference(config, dtype, variant):
    config = dict(config)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(config.pop("x")).astype(dtype)
    w = rng.standard_normal(config.pop("w")).astype(dtype)
    b = rng.standard_normal(w.shape[0]).astype(dtype)
    expected = convscope.conv2d(x, w, b, algorithm="reference", **config)
    assert_close(convscope.conv2d(x, w, b, **config), expected, "forward")
    g = rng.standard_normal(expected.shape).astype(dtype)
    want = convscope.conv2d_backward(g, x, w, algorithm="reference", **config)
    got = convscope.conv2d_backward(g, x, w, **config)
    for name in ("input", "weight", "bias"):
        assert_close(getattr(got, name), getattr(want, name), f"grad {name}")


def test_variants_are_really_taken(monkeypatch):
    """The thresholds above switch the branches this file means to test."""
    spec = convscope.spec.make_spec((7, 7), stride=2, padding=3)
    shape = convscope.spec.check_shapes(spec, (2, 3, 13, 12), (4, 3, 7, 7))
    monkeypatch.setattr(gemm, "FOLD_BELOW", ALWAYS)
    monkeypatch.setattr(gemm, "MIN_TAPS_PER_PHASE", 0)
    assert gemm.batch_folded(spec, shape, backward=False) and gemm.stride_phases(spec)
    monkeypatch.setattr(gemm, "FOLD_BELOW", NEVER)
    monkeypatch.setattr(gemm, "MIN_TAPS_PER_PHASE", ALWAYS)
    assert not gemm.batch_folded(spec, shape, backward=False) and not gemm.stride_phases(spec)
    monkeypatch.setattr(gemm, "COMPILED_FROM_PIXELS", 0)
    assert gemm.compiled(spec, shape)
    monkeypatch.setattr(gemm, "COMPILED_FROM_PIXELS", ALWAYS)
    assert not gemm.compiled(spec, shape)


def test_compiled_im2col_runs_and_matches_numpy(monkeypatch):
    """The compiled im2col and col2im (forced on) give NumPy's arrays exactly, every padding mode."""
    from convscope.spec import check_shapes, make_spec

    rng = np.random.default_rng(4)
    for mode in ("zeros", "reflect", "replicate", "circular"):
        spec = make_spec((3, 2), (1, 2), (2, 1), (2, 1), 2, mode)
        shape = check_shapes(spec, (2, 4, 9, 8), (6, 2, 3, 2))
        x = rng.standard_normal((2, 4, 9, 8))
        d = rng.standard_normal((2, 2, 2 * 3 * 2, shape.H_out * shape.W_out))
        monkeypatch.setattr(gemm, "COMPILED_FROM_PIXELS", ALWAYS)
        want_cols, want_dx = gemm.im2col(x, spec, shape, ones_row=True), gemm.col2im(d, spec, shape)
        monkeypatch.setattr(gemm, "COMPILED_FROM_PIXELS", 0)
        got_cols, got_dx = gemm.im2col(x, spec, shape, ones_row=True), gemm.col2im(d, spec, shape)
        assert np.array_equal(got_cols, want_cols), mode
        assert_close(got_dx, want_dx, mode)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch", [2, 0, None], ids=["batched", "zero_batch", "unbatched"])
def test_compiled_im2col_against_torch(mode, dtype, batch, monkeypatch):
    """The per-sample layout with the compiled im2col/col2im, forced, against torch (strided, dilated, grouped)."""
    require_torch()
    from oracle import check_against_torch

    monkeypatch.setattr(gemm, "COMPILED_FROM_PIXELS", 0)
    monkeypatch.setattr(gemm, "FOLD_BELOW", NEVER)
    rng = np.random.default_rng(7)
    shape = (4, 9, 10) if batch is None else (batch, 4, 9, 10)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 4)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    check_against_torch(x, w, b, algorithm="gemm", stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2,
                        padding_mode=mode)


@pytest.mark.parametrize("out_channels", [3, 16], ids=["narrow", "wide"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("compiled_bias", [True, False], ids=["compiled_bias", "numpy_bias"])
def test_pointwise_forward_starts_from_the_bias(out_channels, stride, dtype, compiled_bias, monkeypatch):
    """The per-sample 1×1 forward writes the bias first (compiled, or NumPy's broadcast) and adds the
    product to it (BLAS's β = 1), whole or in slices of the batch written in place; NaN and ±Inf in the
    bias or the input land as torch's."""
    require_torch()
    from oracle import assert_same_nonfinite, torch_conv2d
    from convscope.algorithms import kernels

    monkeypatch.setattr(gemm, "FOLD_BELOW_1X1_FORWARD", NEVER)
    monkeypatch.setattr(kernels, "BIAS_COMPILED_FROM", 1 if compiled_bias else 10**12)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 6, 11, 12)).astype(dtype)
    w = rng.standard_normal((out_channels, 6, 1, 1)).astype(dtype)
    b = rng.standard_normal(out_channels).astype(dtype)
    b[1], b[2] = np.inf, np.nan
    x[0, 2, 4, 6], x[2, 5, 10, 0] = -np.inf, np.nan
    x_before, b_before = x.copy(), b.copy()
    expected, _ = torch_conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), None,
                               stride=stride)
    whole = convscope.conv2d(x, w, b, stride=stride)
    calls, forward = [], gemm.forward
    monkeypatch.setattr(gemm, "forward", lambda *a, **k: calls.append(k.get("out")) or forward(*a, **k))
    spec = convscope.spec.make_spec((1, 1), stride=stride)
    shape = convscope.spec.check_shapes(spec, x[:1].shape, w.shape)
    per_sample = pointwise.workspace("forward", spec, shape, x.itemsize)
    with convscope.workspace_limit(per_sample):                      # slices of one sample
        sliced = convscope.conv2d(x, w, b, stride=stride)               # pointwise: each slice's result copied
        assert len(calls) == 3 and not any(out is not None for out in calls)
        into = convscope.conv2d(x, w, b, stride=stride, algorithm="gemm")  # gemm: each written in place
        assert len(calls) == 6 and all(out is not None for out in calls[3:])
    for got in (whole, sliced, into):
        assert got.dtype == dtype
        assert_same_nonfinite(got, expected.astype(dtype), "forward")
    np.testing.assert_array_equal(whole, sliced)
    np.testing.assert_array_equal(whole, into)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(b, b_before)
