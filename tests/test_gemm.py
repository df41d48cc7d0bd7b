"""The gemm path's internal variants, each forced on, against the reference loops.

The planner picks gemm's layout (per sample or batch-folded) by output size, and reads strided taps either
directly or through stride phases.  The suite's small shapes mostly take one branch, so here
every combination is forced over configurations that cover every feature.
"""
import itertools

import numpy as np
import pytest

import convscope
from convscope.algorithms import gemm
from oracle import assert_close

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

# (FOLD_BELOW, FOLD_BELOW_1X1_BACKWARD, FOLD_BELOW_1X1_FORWARD, MIN_TAPS_PER_PHASE)
NEVER, ALWAYS = 0, 10**9
VARIANTS = {
    f"{'folded' if fold else 'per_sample'}-{'phases' if phases else 'strided'}":
        (fold, fold, fold, 0 if phases else ALWAYS)
    for fold, phases in itertools.product((NEVER, ALWAYS), (True, False))
}


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def variant(request, monkeypatch):
    for name, value in zip(("FOLD_BELOW", "FOLD_BELOW_1X1_BACKWARD", "FOLD_BELOW_1X1_FORWARD",
                            "MIN_TAPS_PER_PHASE"), VARIANTS[request.param]):
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
