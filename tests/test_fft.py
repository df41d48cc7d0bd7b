"""The FFT path (convscope.algorithms.fft), forced on, against the reference loops and torch's results.

Its domain is every convolution, so the grid below covers every feature: each padding mode,
int / pair / 'same' / 'valid' padding, stride, dilation, groups (depthwise too), rectangular
kernels, batched, unbatched and empty batches, float64, float32 and float16.  Then: float32's
error in norm on a large kernel, the numpy.fft fallback, scipy's workers, output_mask, the
workspace limit, the planner's choices and a hypothesis property test.  The exhaustive sweep
(every case in every mode and dtype) is marked slow.
"""
from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convscope
from convscope import planner
from convscope.algorithms import fft
from oracle import (LAYOUTS, PADDING_MODES, assert_close, assert_close_global, case_arrays, check_against_torch,
                    float32_against_exact, peak_bytes, rel_l2, require_torch, torch_grad_function)

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

MODES = PADDING_MODES
DTYPES = (np.float64, np.float32, np.float16)

# (input (C, H, W), weight shape, keyword arguments)
CASES = [
    ((3, 11, 12), (4, 3, 5, 5), dict(padding=2)),                                  # int padding
    ((4, 12, 10), (6, 2, 7, 3), dict(padding=(3, 1), groups=2)),                   # pair, rectangular, groups
    ((3, 10, 13), (5, 3, 4, 6), dict(padding="same")),                             # even kernel: uneven split
    ((2, 13, 12), (3, 2, 6, 5), dict(padding="valid", bias=False)),
    ((4, 15, 14), (4, 4, 5, 3), dict(stride=(2, 3), padding=(2, 1))),              # strided: subsampled
    ((3, 14, 13), (6, 3, 3, 4), dict(dilation=(2, 3), padding=(2, 4))),            # dilated taps
    ((4, 12, 11), (4, 1, 7, 7), dict(padding=3, groups=4)),                        # depthwise
    ((3, 12, 12), (6, 1, 5, 5), dict(padding="same", groups=3)),                   # depthwise, multiplier 2
    ((6, 13, 14), (4, 3, 5, 5), dict(stride=2, dilation=2, padding=4, groups=2)),
    ((3, 9, 9), (2, 3, 1, 1), dict(padding=1)),                                    # 1×1
]


def _grid():
    params = []
    for (ci, case), (mi, mode) in itertools.product(enumerate(CASES), enumerate(MODES)):
        dtype = DTYPES[(ci + mi) % len(DTYPES)]
        layout = LAYOUTS[(ci + 2 * mi) % len(LAYOUTS)]
        params.append(pytest.param(case, mode, dtype, layout, id=f"c{ci}-{mode}-{np.dtype(dtype).name}-{layout}"))
    return params


def _check(case, mode, dtype, layout):
    x, w, b, params = case_arrays(case, layout, dtype)
    params["padding_mode"] = mode
    out = check_against_torch(x, w, b, algorithm="fft", **params)
    assert_close(out, convscope.conv2d(x, w, b, algorithm="reference", **params), "forward vs reference")
    g = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    got = convscope.conv2d_backward(g, x, w, algorithm="fft", **params)
    want = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    for field in ("input", "weight", "bias"):
        assert_close(getattr(got, field), getattr(want, field), f"grad {field} vs reference")


@pytest.mark.parametrize("case, mode, dtype, layout", _grid())
def test_fft_matches_torch_and_reference(case, mode, dtype, layout):
    _check(case, mode, dtype, layout)


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=[np.dtype(d).name for d in DTYPES])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_fft_sweep(case, mode, dtype, layout):
    _check(case, mode, dtype, layout)


def test_grad_functions_match_torch():
    """conv2d_input / conv2d_weight through the FFT path, against torch's nn.grad."""
    require_torch()

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 13, 12))
    w = rng.standard_normal((6, 2, 5, 7))
    params = dict(stride=2, padding=(2, 3), dilation=(1, 2), groups=2)
    g = rng.standard_normal(convscope.conv2d(x, w, **params).shape)
    dx = convscope.conv2d_input(x.shape, w, g, algorithm="fft", **params)
    dw = convscope.conv2d_weight(x, w.shape, g, algorithm="fft", **params)
    assert_close(dx, torch_grad_function("conv2d_input", x.shape, w, g, **params))
    assert_close(dw, torch_grad_function("conv2d_weight", x, w.shape, g, **params))


def test_module_and_inputs_untouched():
    """Conv2d(...)(x, algorithm='fft') and its backward; the caller's arrays are not modified."""
    rng = np.random.default_rng(4)
    layer = convscope.Conv2d(3, 4, 9, padding=4, padding_mode="reflect", dtype="float64")
    x = rng.standard_normal((2, 3, 16, 15))
    keep = x.copy(), layer.weight.copy()
    y = layer(x, algorithm="fft")
    assert_close(y, layer(x, algorithm="reference"))
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g, algorithm="fft")
    layer(x, algorithm="reference")
    assert_close(dx, layer.backward(g, algorithm="reference"))
    assert np.array_equal(x, keep[0]) and np.array_equal(layer.weight, keep[1])


# --------------------------------------------------------------------------- accuracy




def test_float32_error_is_small_in_norm():
    """float32 FFT on a 15×15 kernel, 16→16 channels: relative L2 error ≤ 1e-6 and max error ≤ 2e-6
    of max |exact| (measured 2.1e-7 to 2.8e-7 for both), forward and both gradients; float64 ≤ 1e-12."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 40, 40))
    w = rng.standard_normal((16, 16, 15, 15)) / 60.0
    pairs, (y64, exact) = float32_against_exact("fft", x, w, rng, padding=7)
    for got, want in pairs:
        assert got.dtype == np.float32
        assert rel_l2(got, want) <= 1e-6
        assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max()
    assert rel_l2(y64, exact) <= 1e-12


def test_float32_is_computed_in_complex64(monkeypatch):
    seen = []
    original = fft._product

    def spy(a, b):
        seen.append((a.dtype, b.dtype))
        return original(a, b)

    monkeypatch.setattr(fft, "_product", spy)
    x = np.ones((1, 2, 9, 9), np.float32)
    w = np.ones((3, 2, 5, 5), np.float32)
    convscope.conv2d(x, w, algorithm="fft")
    convscope.conv2d(x.astype(np.float64), w.astype(np.float64), algorithm="fft")
    assert seen == [(np.complex64, np.complex64), (np.complex128, np.complex128)]


# --------------------------------------------------------------------------- backends


@pytest.fixture
def numpy_fft(monkeypatch):
    """The FFT path as it runs without SciPy."""
    monkeypatch.setitem(sys.modules, "scipy", None)           # import scipy / scipy.fft raise ImportError
    monkeypatch.setitem(sys.modules, "scipy.fft", None)
    monkeypatch.setattr(fft, "_backend", {})
    yield
    fft._backend.clear()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_fft_fallback(numpy_fft, dtype):
    assert fft.backend().name == "numpy.fft"
    assert "numpy.fft, 1 thread" in convscope.plan((1, 2, 9, 9), (3, 2, 5, 5), algorithm="fft").forward.reason
    case = ((4, 12, 10), (6, 2, 7, 3), dict(padding=(3, 1), groups=2, stride=(1, 2)))
    _check(case, "reflect", dtype, "batched")


def test_scipy_fft_with_workers(monkeypatch):
    sfft = pytest.importorskip("scipy.fft")
    monkeypatch.setattr(fft, "_backend", {})
    assert fft.backend().name == "scipy.fft"
    calls = []
    for name in ("rfft2", "irfft2"):
        original = getattr(sfft, name)
        def spy(*a, _f=original, _n=name, **k):
            calls.append((_n, k["workers"]))
            return _f(*a, **k)
        monkeypatch.setattr(sfft, name, spy)
    previous = convscope.set_num_threads(1)
    try:
        x, w = np.ones((1, 2, 9, 9)), np.ones((3, 2, 5, 5))
        convscope.conv2d(x, w, algorithm="fft")
        assert "scipy.fft, 1 worker" in convscope.plan(x.shape, w.shape, algorithm="fft").forward.reason
    finally:
        convscope.set_num_threads(previous)
    convscope.conv2d(x, w, algorithm="fft")
    assert calls == [("rfft2", 1), ("irfft2", 1), ("rfft2", previous), ("irfft2", previous)]
    fft._backend.clear()


@pytest.mark.parametrize("n, expected", [(1, 1), (7, 8), (11, 12), (31, 32), (62, 64), (97, 100), (230, 240),
                                         (241, 243), (1025, 1080)])
def test_fast_length(n, expected):
    assert fft.fast_length(n) == expected


# --------------------------------------------------------------------------- output_mask


@pytest.mark.parametrize("mask", [(True, True, True), (True, False, False), (False, True, False),
                                  (False, False, True), (False, False, False)])
def test_only_the_asked_gradients_are_computed(mask, monkeypatch):
    """The input's spectrum is made only for ∂/∂w, the kernel's only for ∂/∂x."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 4, 11, 12)), rng.standard_normal((6, 2, 5, 5))
    params = dict(padding=2, groups=2, padding_mode="circular")
    g = rng.standard_normal(convscope.conv2d(x, w, **params).shape)
    full = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    called = {"_extend": 0, "_kernel_spectrum": 0, "_at_taps": 0}
    for name in called:
        original = getattr(fft, name)

        def spy(*a, _f=original, _n=name):
            called[_n] += 1
            return _f(*a)
        monkeypatch.setattr(fft, name, spy)
    got = convscope.conv2d_backward(g, x, w, algorithm="fft", output_mask=mask, **params)
    for asked, field in zip(mask, ("input", "weight", "bias")):
        if asked:
            assert_close(getattr(got, field), getattr(full, field), field)
        else:
            assert getattr(got, field) is None
    assert called == {"_extend": int(mask[1]), "_kernel_spectrum": int(mask[0]), "_at_taps": int(mask[1])}


# --------------------------------------------------------------------------- workspace


@pytest.mark.parametrize("limit", [16 << 10, 1 << 20, 3 << 20])
def test_chunked_equals_unchunked(limit, monkeypatch):
    """Blocks of channels and slices of the batch (and rows of one sample) give the same results;
    where the limit is above the smallest unit of work the peak stays under input + output + limit."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 16, 24, 22))
    w = rng.standard_normal((32, 8, 9, 9))
    b = rng.standard_normal(32)
    params = dict(padding=4, groups=2, padding_mode="reflect")
    want = convscope.conv2d(x, w, b, algorithm="fft", **params)
    g = rng.standard_normal(want.shape)
    want_g = convscope.conv2d_backward(g, x, w, algorithm="fft", **params)
    blocks = []
    original = fft._blocks
    monkeypatch.setattr(fft, "_blocks", lambda *a: blocks.append(original(*a)) or blocks[-1])
    with convscope.workspace_limit(limit):
        got, peak = peak_bytes(lambda: convscope.conv2d(x, w, b, algorithm="fft", **params))
        got_g = convscope.conv2d_backward(g, x, w, algorithm="fft", **params)
    assert_close(got, want, "forward")
    for field in ("input", "weight", "bias"):
        assert_close(getattr(got_g, field), getattr(want_g, field), field)
    assert len(blocks) > 3                       # several calls: the batch was sliced
    if limit == 1 << 20:
        assert any(len(b) > 1 for b in blocks)   # and the channels cut into blocks
    if limit > 16 << 10:
        assert peak <= x.nbytes + want.nbytes + limit, f"peak {peak / 2**20:.2f} MiB"


def test_large_layer_stays_under_the_limit():
    """1×32×64×64 float32, 31×31 kernel, 32→32: the kernel spectrum alone (32·32·96·49 complex64,
    37 MiB) exceeds a 16 MiB limit, so output channels run in blocks; the peak stays under it."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 32, 64, 64), dtype=np.float32)
    w = rng.standard_normal((32, 32, 31, 31), dtype=np.float32) / np.float32(31 * 31 * 32) ** 0.5
    with convscope.workspace_limit(16 << 20):
        y, peak = peak_bytes(lambda: convscope.conv2d(x, w, padding=15, algorithm="fft"))
    assert peak <= x.nbytes + y.nbytes + (16 << 20), f"peak {peak / 2**20:.1f} MiB"
    assert_close(y, convscope.conv2d(x, w, padding=15, algorithm="fft"))


# --------------------------------------------------------------------------- planner


@pytest.mark.parametrize("x_shape, w_shape, params, expected", [
    ((1, 32, 64, 64), (32, 32, 15, 15), dict(padding=7), "fft"),
    ((1, 32, 64, 64), (32, 32, 31, 31), dict(padding=15), "fft"),
    ((8, 16, 64, 64), (16, 16, 15, 15), dict(padding=7), "fft"),
    ((8, 64, 56, 56), (64, 64, 7, 7), dict(padding=3), "fft"),                    # measured 137 vs 255 ms
    ((8, 64, 32, 32), (64, 64, 9, 9), dict(padding="same", padding_mode="reflect"), "fft"),
    ((8, 64, 56, 56), (64, 16, 7, 7), dict(padding=3, groups=4), ("direct", "fft", "fft")),   # 16 vs 34 ms forward
    ((8, 16, 56, 56), (16, 16, 11, 11), dict(stride=2, padding=5), "fft"),        # measured 21 vs 34 ms
    ((8, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3), ("direct", "gemm", "gemm")),  # the stem: 870 vs 56 ms
    ((1, 64, 56, 56), (64, 64, 7, 7), dict(padding=3), "gemm"),                   # one sample: 71 vs 49 ms
    ((8, 256, 28, 28), (256, 256, 5, 5), dict(padding=2), "gemm"),                # many channels: 444 vs 298 ms
    ((8, 64, 56, 56), (64, 64, 7, 7), dict(padding=6, dilation=2), ("direct", "gemm", "gemm")),  # dilated: no FFT
    ((8, 16, 56, 56), (16, 16, 15, 15), dict(stride=3, padding=7), ("direct", "gather", "gemm")),  # stride above 2
    ((8, 64, 28, 28), (64, 64, 3, 3), dict(padding=1), "winograd"),
    ((8, 128, 56, 56), (128, 1, 31, 31), dict(padding=15, groups=128), "fft"),    # large depthwise
    ((8, 128, 28, 28), (128, 1, 9, 9), dict(padding=4, groups=128), "depthwise"), # compiled: 18.7 vs 25.2 ms
    ((8, 96, 56, 56), (96, 1, 7, 7), dict(padding=3, groups=96), "depthwise"),    # ConvNeXt's depthwise 7×7
    ((8, 64, 28, 28), (64, 1, 19, 19), dict(padding=9, groups=64), "fft"),        # 28.2 vs 37.4 ms
    ((8, 128, 112, 112), (128, 1, 5, 5), dict(padding=2, groups=128), "depthwise"),   # 579 vs 388 ms
    ((8, 128, 56, 56), (128, 1, 3, 3), dict(padding=1, groups=128), "depthwise"),
    ((8, 128, 56, 56), (128, 1, 7, 7), dict(stride=2, padding=3, groups=128), "depthwise"),
])
def test_planner_chooses_fft_for_large_kernels(x_shape, w_shape, params, expected):
    p = convscope.plan(x_shape, w_shape, **params)
    want = (expected,) * 3 if isinstance(expected, str) else expected
    assert (p.forward.algorithm, p.grad_input.algorithm, p.grad_weight.algorithm) == want
    if expected == "fft":
        assert all(c.reason.startswith("row 'fft") for c in p)
        assert fft.describe_backend() in p.forward.reason


def test_forcing_fft_serves_what_the_planner_would_not_send_it():
    """The FFT path has no configuration it cannot compute: forced on the stem (stride 2), on a
    dilated and on a 1×1 kernel it runs and agrees with the reference; only the arguments'
    own errors remain, raised before any work."""
    rng = np.random.default_rng(8)
    for x_shape, w_shape, params in [((1, 3, 20, 20), (4, 3, 7, 7), dict(stride=2, padding=3)),
                                     ((1, 3, 12, 12), (4, 3, 3, 3), dict(dilation=3, padding=3)),
                                     ((1, 3, 6, 6), (4, 3, 1, 1), {})]:
        x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
        p = convscope.plan(x_shape, w_shape, algorithm="fft", **params)
        assert all(c.algorithm == "fft" and "forced by algorithm='fft'" in c.reason for c in p)
        assert_close(convscope.conv2d(x, w, algorithm="fft", **params),
                     convscope.conv2d(x, w, algorithm="reference", **params))
    with pytest.raises(ValueError, match=r"reflect padding \(3\) must be smaller than the input height \(3\)"):
        convscope.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), padding=3, padding_mode="reflect",
                         algorithm="fft")
    with pytest.raises(ValueError, match=r"algorithm must be one of None, .*'fft'.*got 'FFT'"):
        convscope.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), algorithm="FFT")


# --------------------------------------------------------------------------- property


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_fft_agrees_with_reference_property(data):
    """Random configurations of the whole domain, float64, forward and the three gradients."""
    N = data.draw(st.integers(0, 2), label="N")
    groups = data.draw(st.integers(1, 3), label="groups")
    C = groups * data.draw(st.integers(1, 2), label="C/groups")
    O = groups * data.draw(st.integers(1, 2), label="C_out/groups")
    kH, kW = data.draw(st.integers(1, 6), label="kH"), data.draw(st.integers(1, 6), label="kW")
    stride = (data.draw(st.integers(1, 3), label="sH"), data.draw(st.integers(1, 3), label="sW"))
    dilation = (data.draw(st.integers(1, 2), label="dH"), data.draw(st.integers(1, 2), label="dW"))
    mode = data.draw(st.sampled_from(MODES), label="padding_mode")
    H, W = data.draw(st.integers(1, 14), label="H"), data.draw(st.integers(1, 14), label="W")
    limit_h = H - 1 if mode == "reflect" else H
    limit_w = W - 1 if mode == "reflect" else W
    pad = (data.draw(st.integers(0, max(0, min(4, limit_h))), label="pH"),
           data.draw(st.integers(0, max(0, min(4, limit_w))), label="pW"))
    sizes = ((H, pad[0], dilation[0], kH), (W, pad[1], dilation[1], kW))
    assume(all(n + 2 * p - d * (k - 1) - 1 >= 0 for n, p, d, k in sizes))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C // groups, kH, kW))
    b = rng.standard_normal(O)
    params = dict(stride=stride, padding=pad, dilation=dilation, groups=groups, padding_mode=mode)
    want = convscope.conv2d(x, w, b, algorithm="reference", **params)
    # FFT's error is relative to the call's largest values: an output the reference makes exactly 0
    # (every tap on zero padding) gets FFT's rounding of the others
    assert_close_global(convscope.conv2d(x, w, b, algorithm="fft", **params), want, (x, w), "forward")
    g = rng.standard_normal(want.shape)
    got = convscope.conv2d_backward(g, x, w, algorithm="fft", **params)
    ref = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    for field, factors in (("input", (g, w)), ("weight", (g, x)), ("bias", (g,))):
        assert_close_global(getattr(got, field), getattr(ref, field), factors, field)


def test_fft_row_is_in_the_table():
    assert "fft" in planner.NAMES
    assert any(row.name.startswith("fft") and set(row.choice) == {"fft"} for row in planner.TABLE)
