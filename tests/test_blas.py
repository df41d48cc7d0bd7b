"""convscope.blas: products that add into their output, on every layout, with and without NumPy's OpenBLAS.

Each case is checked against NumPy's own ``a @ b`` (plus the output's previous value), computed on
copies, in float64 and float32.  The same cases run with the library found and with it hidden (the
NumPy fallback), and stacks run both as one call per product and as one NumPy product.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import convscope
from convscope import blas

LAYOUTS = ("C", "F", "strided rows", "reversed", "column step 2")


def _view(rng, rows, cols, layout, dtype):
    """A (rows, cols) view of random numbers in the named memory layout."""
    if layout == "C":
        return rng.standard_normal((rows, cols)).astype(dtype)
    if layout == "F":
        return np.asfortranarray(rng.standard_normal((rows, cols)).astype(dtype))
    if layout == "strided rows":                                   # a window of a wider array
        return rng.standard_normal((rows + 2, cols + 5)).astype(dtype)[1:rows + 1, 2:cols + 2]
    if layout == "reversed":                                       # a negative stride: not BLAS's
        return rng.standard_normal((rows, cols)).astype(dtype)[::-1]
    return rng.standard_normal((rows, 2 * cols)).astype(dtype)[:, ::2]   # no unit stride


@pytest.fixture(params=["found", "hidden"])
def library(request, monkeypatch):
    if request.param == "hidden":
        monkeypatch.setitem(blas._found, "functions", {})
    elif not blas._functions():
        pytest.skip("NumPy's BLAS here is not an OpenBLAS with 64-bit cblas symbols")
    return request.param


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("accumulate", [False, True])
def test_gemm_matches_numpy_on_every_layout(library, dtype, accumulate):
    rng = np.random.default_rng(7)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for (M, K, N), la, lb, lo in itertools.product([(1, 1, 1), (3, 5, 4), (6, 1, 7), (9, 8, 1)],
                                                   LAYOUTS, LAYOUTS, ("C", "F", "strided rows")):
        a, b = _view(rng, M, K, la, dtype), _view(rng, K, N, lb, dtype)
        out = _view(rng, M, N, lo, dtype)
        a0, b0 = a.copy(), b.copy()
        expected = (out + a0 @ b0) if accumulate else a0 @ b0
        result = blas.gemm(a, b, out, accumulate=accumulate)
        assert result is out
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * K,
                                   err_msg=f"{(M, K, N)} a {la}, b {lb}, out {lo}")
        np.testing.assert_array_equal(a, a0)                        # the operands are not touched
        np.testing.assert_array_equal(b, b0)


def test_gemm_overwrites_without_accumulate_even_nan(library):
    """β = 0 ignores what was in ``out`` (NaN too, as np.empty may hold), β = 1 keeps it."""
    a = np.ones((2, 3))
    b = np.ones((3, 2))
    out = np.full((2, 2), np.nan)
    blas.gemm(a, b, out)
    np.testing.assert_array_equal(out, np.full((2, 2), 3.0))
    out[0, 0] = np.nan
    blas.gemm(a, b, out, accumulate=True)
    assert np.isnan(out[0, 0]) and (out.ravel()[1:] == 6.0).all()


def test_nonfinite_operands_land_where_numpy_puts_them(library):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 6))
    a[1, 2], b[3, 4], b[0, 1] = np.inf, np.nan, -np.inf
    start = rng.standard_normal((4, 6))
    start[2, 2] = np.inf
    out = start.copy()
    with np.errstate(invalid="ignore"):
        blas.gemm(a, b, out, accumulate=True)
        expected = start + a @ b
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(out[finite], expected[finite], rtol=1e-12)


def test_gemm_with_an_empty_dimension(library):
    out = np.full((3, 4), 2.0)
    blas.gemm(np.ones((3, 0)), np.ones((0, 4)), out, accumulate=True)
    np.testing.assert_array_equal(out, np.full((3, 4), 2.0))
    blas.gemm(np.ones((3, 0)), np.ones((0, 4)), out)
    np.testing.assert_array_equal(out, np.zeros((3, 4)))


def test_mixed_dtypes_and_overlap_fall_back_to_numpy(library):
    a = np.arange(6.0).reshape(2, 3)
    out = np.zeros((2, 2), np.float32)
    blas.gemm(a, np.ones((3, 2)), out)
    np.testing.assert_array_equal(out, (a @ np.ones((3, 2))).astype(np.float32))
    buf = np.arange(16.0).reshape(4, 4)
    expected = buf[:2, :2] + buf[:2, :2] @ buf[2:, 2:]
    blas.gemm(buf[:2, :2].copy(), buf[2:, 2:], buf[:2, :2], accumulate=True)   # out overlaps b's array
    np.testing.assert_allclose(buf[:2, :2], expected)


def test_gemm_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes"):
        blas.gemm(np.ones((2, 3)), np.ones((4, 2)), np.empty((2, 2)))


@pytest.mark.parametrize("loop_above", [0, 1 << 40])      # one call per product; one NumPy product
@pytest.mark.parametrize("shared_a", [True, False])
def test_small_stacks_add_per_product_or_with_numpy(library, monkeypatch, loop_above, shared_a):
    """Stacks below BATCHED_ABOVE: with ``accumulate``, each product added in place, or NumPy's."""
    monkeypatch.setattr(blas, "LOOP_ABOVE", loop_above)
    rng = np.random.default_rng(11)
    a = rng.standard_normal((4, 5)) if shared_a else rng.standard_normal((3, 4, 5))
    b = rng.standard_normal((3, 7, 5)).transpose(0, 2, 1)           # a stack of transposed views
    for accumulate in (False, True):
        out = rng.standard_normal((3, 4, 9))[:, :, 1:8]
        expected = (out + a @ b) if accumulate else a @ b
        assert blas.stacked(a, b, out, accumulate=accumulate) is out
        np.testing.assert_allclose(out, expected, rtol=1e-12)
    one = np.zeros((1, 4, 7))
    blas.stacked(a if shared_a else a[:1], b[:1], one, accumulate=True)
    np.testing.assert_allclose(one, (a if shared_a else a[:1]) @ b[:1], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("accumulate", [False, True])
def test_stacked_matches_numpy(library, dtype, accumulate):
    """One batched call over the stack, shared or stacked operands, transposed views, given or new out."""
    rng = np.random.default_rng(5)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    B, M, K, N = 8, 100, 160, 140                      # above BATCHED_ABOVE multiply-adds a product
    assert M * K * N > blas.BATCHED_ABOVE
    stack_a = rng.standard_normal((B, M, K)).astype(dtype)
    stack_bt = rng.standard_normal((B, N, K)).astype(dtype).transpose(0, 2, 1)   # each item column-major
    shared_a = rng.standard_normal((M, K)).astype(dtype)
    shared_b = rng.standard_normal((K, N)).astype(dtype)
    for a, b in [(stack_a, stack_bt), (shared_a, stack_bt), (stack_a, shared_b), (stack_a[::2], stack_bt[::2]),
                 (stack_a[:, :, ::2].repeat(2, axis=2), stack_bt)]:
        out = rng.standard_normal((a.shape[0] if a.ndim == 3 else b.shape[0], M + 2, N))[:, 1:M + 1].astype(dtype)
        expected = (out + a @ b) if accumulate else a @ b
        result = blas.stacked(a, b, out=out, accumulate=accumulate)
        assert result is out
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * K)
    fresh = blas.stacked(stack_a, stack_bt)
    np.testing.assert_allclose(fresh, stack_a @ stack_bt, rtol=tol, atol=tol * K)
    assert fresh.dtype == dtype


def test_small_stacks_stay_on_numpy(library, monkeypatch):
    """Products at or below BATCHED_ABOVE multiply-adds never reach OpenBLAS's batched call."""
    calls = []
    functions = dict(blas._functions())
    for key in [k for k in functions if isinstance(k, tuple)]:
        functions[key] = lambda *args: calls.append(args)
    monkeypatch.setitem(blas._found, "functions", functions)
    a, b = np.ones((4, 8, 8)), np.ones((4, 8, 8))
    np.testing.assert_array_equal(blas.stacked(a, b), a @ b)
    assert calls == []


def test_stacked_nonfinite_and_empty(library):
    a = np.ones((3, 130, 130))
    b = np.ones((3, 130, 130))
    a[1, 0, 2] = np.nan
    b[2, 3, 4] = np.inf
    with np.errstate(invalid="ignore"):
        out = blas.stacked(a, b)
        expected = a @ b
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
    assert blas.stacked(np.ones((0, 2, 3)), np.ones((0, 3, 4))).shape == (0, 2, 4)
    np.testing.assert_array_equal(blas.stacked(np.ones((2, 2, 0)), np.ones((2, 0, 4))), np.zeros((2, 2, 4)))
    assert blas.stacked(np.ones((0, 200, 200)), np.ones((0, 200, 200))).shape == (0, 200, 200)


def test_stacked_runs_batched_calls_over_leading_axes(monkeypatch):
    """(N, G) stacks with a weight per group: one batched call per group, each over the N samples."""
    real = blas._functions().get(("batched", np.dtype(np.float64)))
    if real is None:
        pytest.skip("NumPy's BLAS here has no batched OpenBLAS products")
    calls = []
    functions = dict(blas._functions())
    functions["batched", np.dtype(np.float64)] = lambda *args: (calls.append(args[-1]), real(*args))
    monkeypatch.setitem(blas._found, "functions", functions)
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 120, 150))                            # (G, M, K)
    cols = rng.standard_normal((8, 3, 150, 130))                      # (N, G, K, L)
    out = blas.stacked(w, cols)
    np.testing.assert_allclose(out, np.matmul(w, cols), rtol=1e-12, atol=1e-10)
    assert calls == [8, 8, 8]
    calls.clear()
    short = blas.stacked(w, cols[:1])                                 # one sample: BLAS's threads share each product
    np.testing.assert_allclose(short, np.matmul(w, cols[:1]), rtol=1e-12, atol=1e-10)
    assert calls == [] or convscope.get_num_threads() == 1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("a_shape, b_shape", [
    ((8, 3000), (3000, 40)),             # few rows over a long inner axis: column-major
    ((1, 8, 3000), (1, 3000, 40)),       # a stack of one (a weight gradient, batch folded)
    ((4, 2, 8, 1500), (4, 2, 1500, 40)),  # per sample and group
    ((2, 8, 1500), (1500, 40)),           # broadcast: one matrix shared
    ((40, 3000), (3000, 8)),             # more rows than columns: NumPy's matmul
    ((8, 300), (300, 40)),               # a short inner axis: NumPy's matmul
])
def test_few_rows_matches_numpy(library, monkeypatch, dtype, a_shape, b_shape):
    """Few rows run column-major (with the size threshold lowered so that these small products take that
    path), the rest as ``stacked``; both match NumPy on copies, and the operands are not touched."""
    monkeypatch.setattr(blas, "FEW_ROWS_FROM", 1)
    rng = np.random.default_rng(11)
    a = rng.standard_normal(a_shape).astype(dtype)
    b = np.swapaxes(rng.standard_normal(b_shape[:-2] + b_shape[:-3:-1]).astype(dtype), -1, -2)   # a transposed view
    a[(0,) * (a.ndim - 1) + (5,)] = np.nan
    b[(0,) * (b.ndim - 2) + (7, 3)] = np.inf
    a0, b0 = a.copy(), b.copy()
    swapped = []
    real = blas.stacked
    monkeypatch.setattr(blas, "stacked",               # column-major: b's transpose is the first operand
                        lambda x, y, *args, **kw: (swapped.append(np.shares_memory(x, b)), real(x, y, *args, **kw))[1])
    with np.errstate(invalid="ignore"):
        out = blas.few_rows(a, b)
        expected = np.matmul(a0, b0)
    assert swapped == [a_shape[-2] < b_shape[-1] and a_shape[-1] >= blas.FEW_ROWS_INNER]
    assert out.shape == expected.shape
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * a_shape[-1])
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(expected))
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


# Layers whose products are above BATCHED_ABOVE and TAPS' sums, so that each path's BLAS calls
# (batched products, products that add into their output) run; against torch, float64, all gradients.
LARGE_LAYERS = [
    ("winograd", (4, 128, 36, 36), (128, 128, 3, 3), dict(padding=1)),
    ("gemm", (4, 64, 40, 40), (128, 64, 3, 3), dict(padding=1, stride=1)),
    ("pointwise", (4, 256, 24, 24), (256, 256, 1, 1), {}),
    ("gather", (4, 128, 40, 40), (128, 128, 3, 3), dict(padding=1, stride=2)),
]


@pytest.mark.parametrize("algorithm, x_shape, w_shape, params", LARGE_LAYERS, ids=[c[0] for c in LARGE_LAYERS])
def test_large_layers_through_blas_match_torch(algorithm, x_shape, w_shape, params):
    from oracle import check_against_torch, random_case

    x, w, b = random_case(np.random.default_rng(4), x_shape, w_shape)
    check_against_torch(x, w, b, algorithm=None if algorithm == "gather" else algorithm, **params)


@pytest.mark.parametrize("dilation", [1, 37])
def test_long_1d_layer_on_taps_matches_torch(dilation):
    from oracle import check_nd_against_torch, random_case

    x, w, b = random_case(np.random.default_rng(6), (3, 48, 1200), (64, 48, 3))
    check_nd_against_torch(x, w, b, algorithm="taps", dilation=dilation, padding=dilation)


def test_large_3d_winograd_matches_torch():
    from oracle import check_nd_against_torch, random_case

    x, w, b = random_case(np.random.default_rng(8), (1, 48, 6, 20, 20), (64, 48, 3, 3, 3))
    check_nd_against_torch(x, w, b, algorithm="ndwinograd", padding=1)


def test_idle_wait_is_shortened_once_kernels_load_and_the_environment_is_left_alone():
    """Loading the compiled kernels shortens OpenBLAS's idle wait to 2**IDLE_WAIT cycles (its threads
    restart with it), leaves the environment as it was, and products stay right; a wait the user set in
    the environment is kept, and with another Python thread alive nothing is touched."""
    import os
    import subprocess
    import sys

    script = (
        "import ctypes, os, numpy as np\n"
        "from convscope import blas\n"
        "lib = ctypes.CDLL(blas.openblas_paths()[0])\n"
        "import convscope.algorithms.kernels._numba\n"
        "a = np.random.default_rng(0).standard_normal((300, 300))\n"
        "ok = np.allclose(a @ a, np.einsum('ij,jk->ik', a, a))\n"
        "print(lib.openblas_thread_timeout(), 'OPENBLAS_THREAD_TIMEOUT' in os.environ, ok)\n")
    if not any("numpy" in p for p in blas.openblas_paths()):
        pytest.skip("NumPy is not built on OpenBLAS here")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "GOTO_THREAD_TIMEOUT")}
    run = lambda env: subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,  # noqa: E731
                                     text=True, timeout=300)
    done = run(env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(blas.IDLE_WAIT), "False", "True"]
    done = run(dict(env, OPENBLAS_THREAD_TIMEOUT="20"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["20", "True", "True"]
    other_thread = ("import threading\nstop = threading.Event()\n"
                    "threading.Thread(target=stop.wait, daemon=True).start()\n")
    done = subprocess.run([sys.executable, "-c", other_thread + script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["0", "False", "True"]       # another thread alive: OpenBLAS left alone
