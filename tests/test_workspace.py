"""The workspace limit: the peak extra memory of a call (tracemalloc, which sees NumPy's buffers)
stays under input + output + limit, and chunked calls give the unchunked results.  Also
set_num_threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import convscope
from convscope import algorithms
from oracle import assert_close, peak_bytes, torch_conv2d

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
    unit of work (one output row of one sample, plus Winograd's transformed kernel).  The measured call
    is the second under its limit: the first adds the limit's entries to the plan caches, and a cache
    that has grown through a whole test session can resize its table then (tens of KiB that tracemalloc
    counts, whichever convolution is running)."""
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
        convscope.conv2d(x, w, b, algorithm=algorithm, **params)    # the plan caches learn this limit first
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


# --------------------------------------------------------------------------- one sample's backward in rows

ROW_LIMIT = 1 * MiB
ROW_CASES = [("gemm", (8, 96, 96), (8, 8, 5, 5), dict(padding=2, padding_mode=mode, stride=s, dilation=d))
             for mode in ("zeros", "reflect", "replicate", "circular") for s in (1, 2) for d in (1, 2)]
ROW_OTHERS = [
    ("winograd", (16, 64, 64), (16, 16, 3, 3), dict(padding=1, padding_mode="reflect")),
    ("fft", (8, 64, 64), (8, 8, 7, 7), dict(padding=3, padding_mode="circular")),
]   # the depthwise kernels' scratch is the padded sample only (zero padding: none)


def _one_sample_backward(algorithm, chw, w_shape, params, limit):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1,) + chw).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    y = convscope.conv2d(x, w, algorithm=algorithm, **params)
    g = rng.standard_normal(y.shape).astype(np.float32)
    with convscope.workspace_limit(limit):
        convscope.conv2d_backward(g, x, w, algorithm=algorithm, **params)   # loads the compiled kernels once
        grads, peak = peak_bytes(lambda: convscope.conv2d_backward(g, x, w, algorithm=algorithm, **params))
    _, (dx, dw, db) = torch_conv2d(x, w, None, g, **params)
    for field, want in zip(grads._fields, (dx, dw, db)):
        assert_close(getattr(grads, field), want, f"grad {field}")
    return x, grads, peak


@pytest.mark.parametrize("algorithm, chw, w_shape, params", ROW_CASES,
                         ids=[f"{c[3]['padding_mode']}-s{c[3]['stride']}-d{c[3]['dilation']}" for c in ROW_CASES])
def test_single_sample_backward_stays_under_the_limit(algorithm, chw, w_shape, params):
    """One sample whose im2col matrix is several times the limit: blocks of output rows, torch's
    gradients, and peak extra memory ≤ input + gradients + limit."""
    spec, shape = _spec_shape((1,) + chw, w_shape, params)
    assert algorithms.ALGORITHMS[algorithm].workspace("grad_input", spec, shape, 4) > 2 * ROW_LIMIT
    x, grads, peak = _one_sample_backward(algorithm, chw, w_shape, params, ROW_LIMIT)
    assert peak <= x.nbytes + sum(a.nbytes for a in grads) + ROW_LIMIT, f"peak {peak / MiB:.2f} MiB"


@pytest.mark.parametrize("algorithm, chw, w_shape, params", ROW_OTHERS, ids=[c[0] for c in ROW_OTHERS])
def test_single_sample_backward_in_rows_on_every_path(algorithm, chw, w_shape, params):
    """The other paths with scratch beyond the padded sample cut it into rows too: torch's gradients,
    and less memory than uncut (pointwise needs no more than its results)."""
    _, _, cut = _one_sample_backward(algorithm, chw, w_shape, params, ROW_LIMIT)
    _, _, whole = _one_sample_backward(algorithm, chw, w_shape, params, 256 * MiB)
    assert cut < whole


# --------------------------------------------------------------------------- oversized calls


def test_oversized_output_is_refused_before_allocating():
    one = np.ones((1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"output of shape \(1, 1, 200001, 200001\) \(float64\) needs "
                                         r"320003200008 bytes \(298 GiB.*, more than the \d+ bytes"):
        convscope.conv2d(one, one, padding=100000)


def test_oversized_gradients_are_refused_before_allocating():
    one = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"grad_input of shape \(1, 1, 200000, 200000\) \(float32\) needs "
                                         r"160000000000 bytes"):
        convscope.conv2d_input((1, 1, 200000, 200000), one, one, stride=200000)
    with pytest.raises(ValueError, match=r"grad_weight of shape \(1, 1, 200001, 200001\) \(float32\) needs "
                                         r"160001600004 bytes"):
        convscope.conv2d_weight(one, (1, 1, 200001, 200001), one, padding=100000)


def test_memory_check_names_the_bound(monkeypatch):
    from convscope import spec

    monkeypatch.setattr(spec, "available_memory", lambda: (100 << 20, "left under RLIMIT_AS"))
    x = np.ones((1, 1, 4096, 4096), np.float32)
    with pytest.raises(ValueError, match=r"grad_input of shape \(1, 1, 4096, 4096\) \(float32\) "
                                         r"needs 67108864 bytes \(0.0625 GiB; \d+ bytes with the other results and "
                                         r"the scratch\), more than the 104857600 bytes \(0.0977 GiB\) left under RLIMIT_AS"):
        convscope.conv2d_backward(x, x, np.ones((1, 1, 1, 1), np.float32))
    convscope.conv2d(np.ones((1, 1, 8, 8), np.float32), np.ones((1, 1, 3, 3), np.float32))   # small: no check


def test_output_beyond_rlimit_as_raises_and_the_process_lives():
    """Under RLIMIT_AS, a call whose output would be 4 GB raises ValueError (numpy's MemoryError or
    OpenBLAS's abort before the fix); the process goes on."""
    import subprocess
    import sys

    code = """
import resource
import numpy as np
import convscope
with open('/proc/self/status') as f:
    used = next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmSize:'))
resource.setrlimit(resource.RLIMIT_AS, (used + (1 << 30), resource.RLIM_INFINITY))
one = np.ones((1, 1, 1, 1), np.float32)
try:
    convscope.conv2d(one, one, padding=16000)
except ValueError as exc:
    print('ValueError:', exc)
print('alive', float(convscope.conv2d(np.ones((1, 1, 4, 4), np.float32), one).sum()))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ValueError: output of shape (1, 1, 32001, 32001) (float32) needs 4096256004 bytes" in done.stdout
    assert "left under RLIMIT_AS" in done.stdout and "alive 16.0" in done.stdout
