"""The direct path (``algorithm='direct'``): the forward of 2-d convolutions with few input channels as
sums over the input's stride phases, its gradients gemm's.

Against torch (float64 tight, float32 scaled) and the reference loops on cases whose flat runs span
several blocks, with output channels and taps that leave remainders of the groups of four, strides
above the kernel (phases no tap reads), dilation, groups, 'same' and every padding mode; NaN and ±Inf
where torch's native kernels put them, at block boundaries too; the planner's row; the workspace
estimate and the limit.
"""
from __future__ import annotations

import numpy as np
import pytest

import convscope
from convscope import algorithms
from convscope.spec import bind
from oracle import assert_close, assert_same_nonfinite, check_against_torch, peak_bytes, random_case, require_torch, \
    torch_native_conv2d

require_torch()

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")


def _lanes(dtype):
    """Flat outputs per block of the kernel (its module docstring)."""
    from convscope.algorithms.kernels._numba import REGISTER_BYTES

    return REGISTER_BYTES // np.dtype(dtype).itemsize


# (C, H, W), weight (C_out, C/groups, kH, kW), params: batch 2
CASES = [
    ((3, 70, 66), (10, 3, 7, 7), dict(stride=2, padding=3)),                        # the stem's shape, 2 blocks
    ((4, 41, 50), (6, 2, 3, 5), dict(stride=(1, 2), padding=(1, 2), dilation=(2, 1), groups=2,
                                     padding_mode="reflect")),
    ((1, 40, 40), (7, 1, 5, 5), dict(padding=2)),                                   # a grey image, 7 channels
    ((3, 37, 31), (5, 3, 2, 2), dict(stride=3, padding=1, padding_mode="replicate")),  # phases no tap reads
    ((2, 33, 36), (4, 2, 4, 4), dict(padding="same", padding_mode="circular")),     # even kernel: 'same' split
    ((3, 9, 11), (3, 3, 3, 3), dict(stride=2, dilation=2, padding=2)),              # 3 channels
    ((2, 23, 29), (16, 1, 5, 5), dict(padding=1, groups=2)),                         # 8 channels a group
    ((1, 3, 3), (9, 1, 3, 3), dict()),                   # 1 output a sample, 3 flat: less than a block; 8 + 1
]


def _arrays(chw, w_shape, dtype, seed=0):
    return random_case(np.random.default_rng(seed), (2,) + chw, w_shape, dtype)


def _flat_outputs(chw, w_shape, params):
    """H_out × Wq, the length of one sample's flat run (the kernel module's docstring)."""
    call = bind(2, input_size=(2,) + chw, weight_size=w_shape, **params)
    return algorithms.direct._planes(call.spec, call.shape)[1] * call.shape.H_out


def test_cases_span_blocks():
    flat = [_flat_outputs(*case) for case in CASES]
    assert sum(n > 4 * _lanes(np.float32) for n in flat) >= 4 and min(flat) < _lanes(np.float64)
    per_group = {w[0] // p.get("groups", 1) for _, w, p in CASES}     # output channels: blocks of 8 and remainders
    assert {8, 9, 10} <= per_group and min(per_group) < 8


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chw, w_shape, params", CASES, ids=lambda v: str(v).replace(" ", ""))
def test_matches_torch_and_reference(chw, w_shape, params, dtype):
    x, w, b = _arrays(chw, w_shape, dtype)
    out = check_against_torch(x, w, b, algorithm="direct", **params)
    reference = convscope.conv2d(x, w, None, algorithm="reference", **params)     # the loops once: slow
    assert_close(out, reference + b[:, None, None], "forward against the reference")
    assert_close(convscope.conv2d(x, w, None, algorithm="direct", **params), reference, "forward without bias")


def test_unbatched_and_empty_batch():
    x, w, b = _arrays((3, 20, 19), (5, 3, 3, 3), np.float64)
    assert_close(convscope.conv2d(x[0], w, b, padding=1, algorithm="direct"),
                 convscope.conv2d(x[0], w, b, padding=1, algorithm="reference"), "unbatched")
    empty = convscope.conv2d(x[:0], w, b, padding=1, algorithm="direct")
    assert empty.shape == (0, 5, 20, 19)


# one NaN / ±Inf in the input (at a block's first flat output, and at the last sample's corner, which the
# padding meets and the first sample's last block reads past its outputs) or the weight (a corner tap: it
# reads the zero padding at the borders; in the first and the last block of eight channels)
PERTURBATIONS = [(where, v) for where in ("input", "corner", "weight", "last weight") for v in (np.nan, np.inf, -np.inf)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chw, w_shape, params", [CASES[0], CASES[2]], ids=["stem", "grey"])
def test_nonfinite_values_land_where_torch_puts_them(chw, w_shape, params, dtype):
    call = bind(2, input_size=(2,) + chw, weight_size=w_shape, **params)
    Wq = algorithms.direct._planes(call.spec, call.shape)[1]
    i, j = divmod(_lanes(dtype), Wq)                         # output (i, j) opens the second block
    sH, sW = call.spec.stride
    for where, value in PERTURBATIONS:
        x, w, b = _arrays(chw, w_shape, dtype, seed=7)
        if where == "input":
            x[1, chw[0] - 1, i * sH, j * sW] = value
        elif where == "corner":
            x[1, 0, 0, 0] = value
        elif where == "weight":
            w[1, 0, 0, 0] = value
        else:
            w[-1, -1, -1, -1] = value
        out, _ = torch_native_conv2d(x, w, b, None, **params)
        assert_same_nonfinite(convscope.conv2d(x, w, b, algorithm="direct", **params), out, f"{where}={value}")


def _passes(x_shape, w_shape, **params):
    return tuple(c.algorithm for c in convscope.plan(x_shape, w_shape, **params))


def test_planner_sends_few_channel_layers_here():
    """Kernels from 5×5 on few channels (ResNet's stem, a grey image's filters), and 3×3 on 3–16
    channels, run their forward here and their gradients on the row below's path; more
    channels, large kernels where FFT serves, 1×1 and one-row kernels keep their rows."""
    assert _passes((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3) == ("direct", "gemm", "gemm")
    assert _passes((64, 1, 28, 28), (32, 1, 5, 5), padding=2) == ("direct", "gemm", "gemm")
    assert "direct" not in _passes((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert "direct" not in _passes((8, 3, 224, 224), (16, 3, 1, 1))
    assert "direct" not in _passes((4, 3, 1, 8000), (64, 3, 1, 7), stride=(1, 2), padding=(0, 3))
    assert "direct" not in _passes((4, 3, 1, 8000), (64, 3, 1, 25), padding=(0, 12))
    assert _passes((8, 3, 224, 224), (32, 3, 3, 3), stride=2, padding=1)[0] == "direct"    # 3×3 on RGB
    assert _passes((8, 16, 112, 112), (32, 16, 3, 3), padding=1)[0] == "direct"            # before Winograd's
    assert "direct" not in _passes((8, 32, 56, 56), (32, 32, 3, 3), padding=1)             # 3×3 at 32: Winograd's
    assert "direct" not in _passes((64, 1, 28, 28), (32, 1, 3, 3), padding=1)              # 3×3 on grey: gemm's
    assert "direct" not in _passes((8, 8, 56, 56), (8, 8, 2, 2))                           # 2×2: gemm's
    assert "direct" not in _passes((8, 8, 56, 56), (8, 8, 4, 4))                           # 4×4 at 8: gemm's
    assert "direct" not in _passes((8, 128, 28, 28), (128, 128, 5, 5), padding=2)          # 128 channels
    assert _passes((4, 3, 128, 128), (16, 3, 9, 9), padding=4) == ("direct", "fft", "fft")  # FFT's gradients
    assert "direct" not in _passes((4, 16, 56, 56), (16, 16, 11, 11), padding=5)           # FFT's forward too
    assert _passes((8, 3, 224, 224), (64, 3, 11, 11), stride=4, padding=2)[0] == "direct"  # no FFT at stride 4
    reason = convscope.plan((8, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3).forward.reason
    assert "4 stride phases" in reason and "147 taps" in reason


def test_planned_stem_matches_torch():
    """The stem through the planner: the forward here, the gradients on gemm, all against torch."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    w = rng.standard_normal((64, 3, 7, 7)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    assert convscope.plan(x.shape, w.shape, stride=2, padding=3).forward.algorithm == "direct"
    check_against_torch(x, w, b, stride=2, padding=3)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_workspace_estimate_bounds_the_peak_and_the_limit_holds(mode):
    """The forward's peak extra memory stays under input + output + its estimate, and under a limit
    that cuts the batch (N = 6) into slices, with the same result."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 3, 40, 38))
    w = rng.standard_normal((8, 3, 5, 5))
    params = dict(stride=2, padding=2, padding_mode=mode)
    call = bind(2, input=x, weight=w, **params)
    impl = algorithms.ALGORITHMS["direct"]
    convscope.conv2d(x[:1], w, algorithm="direct", **params)          # compiled kernels loaded before measuring
    y, peak = peak_bytes(lambda: convscope.conv2d(x, w, algorithm="direct", **params))
    assert peak <= x.nbytes + y.nbytes + impl.workspace("forward", call.spec, call.shape, 8)
    limit = impl.workspace("forward", call.spec, call.shape._replace(N=2), 8)
    with convscope.workspace_limit(limit):
        convscope.conv2d(x, w, algorithm="direct", **params)          # the plan caches learn this limit first
        got, peak = peak_bytes(lambda: convscope.conv2d(x, w, algorithm="direct", **params))
    assert peak <= x.nbytes + y.nbytes + limit
    assert_close(got, y, "forward in slices")
