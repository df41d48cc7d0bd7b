"""The workspace limit: the peak extra memory of a call (tracemalloc, which sees NumPy's buffers)
stays under input + output + limit, and chunked calls give the unchunked results.  Also
set_num_threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import convscope
from convscope import algorithms
from oracle import assert_close, peak_bytes

MiB = 1 << 20


def test_limit_api():
    assert convscope.get_workspace_limit() == 256 * MiB
    previous = convscope.set_workspace_limit(10 * MiB)
    try:
        assert previous == 256 * MiB and convscope.get_workspace_limit() == 10 * MiB
        with convscope.workspace_limit(1 * MiB) as limit:
            assert limit == MiB and convscope.get_workspace_limit() == MiB
            seen = []
            t = threading.Thread(target=lambda: seen.append(convscope.get_workspace_limit()))
            t.start()
            t.join()
            assert seen == [10 * MiB]                     # the block's limit is this thread's only
        assert convscope.get_workspace_limit() == 10 * MiB
    finally:
        convscope.set_workspace_limit(previous)


@pytest.mark.parametrize("value, exc, pattern", [
    (-1, ValueError, r"workspace limit must be non-negative, got -1"),
    (1.5, TypeError, r"workspace limit must be an int number of bytes, got 1.5"),
    (True, TypeError, r"workspace limit must be an int number of bytes, got True"),
])
def test_limit_validation(value, exc, pattern):
    with pytest.raises(exc, match=pattern):
        convscope.set_workspace_limit(value)
    with pytest.raises(exc, match=pattern):
        with convscope.workspace_limit(value):
            pass


@pytest.mark.parametrize("algorithm", [None, "gemm", "winograd"])
@pytest.mark.parametrize("limit", [256 * MiB, 32 * MiB])
def test_resnet_layer_forward_stays_under_the_limit(algorithm, limit):
    """8×256×56×56 float32, 3×3 256→256: peak extra memory ≤ input + output + limit."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 256, 56, 56), dtype=np.float32)
    w = rng.standard_normal((256, 256, 3, 3), dtype=np.float32) / np.float32(48)
    with convscope.workspace_limit(limit):
        y, peak = peak_bytes(lambda: convscope.conv2d(x, w, padding=1, algorithm=algorithm))
    assert peak <= x.nbytes + y.nbytes + limit, f"peak {peak / MiB:.1f} MiB"
    # spot-check the values on one sample through the other path
    other = "gemm" if algorithm != "gemm" else "winograd"
    assert_close(y[:1], convscope.conv2d(x[:1], w, padding=1, algorithm=other), "sample 0")


CASES = [
    ("gemm", (4, 16, 24, 20), (24, 16, 3, 3), dict(padding=1, padding_mode="reflect")),
    ("gemm", (3, 6, 25, 23), (8, 3, 5, 5), dict(stride=2, padding=2, groups=2)),          # phases, folded
    ("winograd", (4, 16, 24, 20), (24, 16, 3, 3), dict(padding=1, padding_mode="circular")),
    ("pointwise", (4, 16, 24, 20), (24, 16, 1, 1), dict(stride=2)),
    ("depthwise", (4, 16, 24, 20), (32, 1, 3, 3), dict(padding=1, groups=16, stride=2, padding_mode="reflect")),
    ("depthwise", (4, 16, 24, 20), (16, 1, 3, 3), dict(padding=1, groups=16, padding_mode="circular")),  # blocks
]


@pytest.mark.parametrize("algorithm, x_shape, w_shape, params", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("limit", [16 << 10, 320 << 10])       # rows of one sample; slices of the batch
def test_chunked_equals_unchunked(algorithm, x_shape, w_shape, params, limit):
    """Equal results whatever the limit; the memory bound where the limit is above the smallest
    unit of work (one output row of one sample, plus Winograd's transformed kernel)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    want = convscope.conv2d(x, w, b, algorithm=algorithm, **params)
    g = rng.standard_normal(want.shape)
    want_g = convscope.conv2d_backward(g, x, w, algorithm=algorithm, **params)
    impl = algorithms.ALGORITHMS[algorithm]
    assert impl.workspace("forward", *_spec_shape(x_shape, w_shape, params), 8) > limit   # really chunked
    with convscope.workspace_limit(limit):
        got, peak = peak_bytes(lambda: convscope.conv2d(x, w, b, algorithm=algorithm, **params))
        got_g = convscope.conv2d_backward(g, x, w, algorithm=algorithm, **params)
    assert_close(got, want, "forward")
    for field in ("input", "weight", "bias"):
        assert_close(getattr(got_g, field), getattr(want_g, field), field)
    if limit > 16 << 10:
        assert peak <= x.nbytes + want.nbytes + limit


def test_single_sample_is_cut_into_rows():
    """One sample (unbatched) above the limit: blocks of output rows, same result."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 30, 22))
    w = rng.standard_normal((24, 16, 3, 3))
    want = convscope.conv2d(x, w, padding=1, padding_mode="replicate", algorithm="gemm")
    calls = []
    original = algorithms.gemm.forward

    def spy(xs, *args):
        calls.append(xs.shape)
        return original(xs, *args)

    with convscope.workspace_limit(64 << 10):
        import unittest.mock
        with unittest.mock.patch.object(algorithms.gemm, "forward", spy):
            got = convscope.conv2d(x, w, padding=1, padding_mode="replicate", algorithm="gemm")
    assert len(calls) > 1 and all(c[0] == 1 for c in calls)
    assert_close(got, want)


def _spec_shape(x_shape, w_shape, params):
    spec = convscope.spec.make_spec(w_shape[2:], params.get("stride", 1), params.get("padding", 0),
                                    params.get("dilation", 1), params.get("groups", 1),
                                    params.get("padding_mode", "zeros"))
    return spec, convscope.spec.check_shapes(spec, x_shape, w_shape)


# --------------------------------------------------------------------------- threads


def test_num_threads_roundtrip_and_same_results():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    many = convscope.conv2d(x, w, padding=1, groups=8)
    previous = convscope.set_num_threads(1)
    try:
        assert convscope.get_num_threads() == 1
        one = convscope.conv2d(x, w, padding=1, groups=8)
    finally:
        convscope.set_num_threads(previous)
    assert convscope.get_num_threads() == previous
    np.testing.assert_array_equal(one, many)


@pytest.mark.parametrize("value, exc, pattern", [
    (0, ValueError, r"num_threads must be a positive integer, got 0"),
    (2.0, TypeError, r"num_threads must be an int, got 2.0"),
])
def test_num_threads_validation(value, exc, pattern):
    with pytest.raises(exc, match=pattern):
        convscope.set_num_threads(value)
