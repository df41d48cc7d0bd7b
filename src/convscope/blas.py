"""Matrix products in NumPy's own OpenBLAS, called directly: products that add into their output, and
stacks of products shared among BLAS's threads.

* :func:`gemm`: ``out = a @ b`` or ``out += a @ b`` in one call.  NumPy's ``matmul`` always overwrites
  its ``out``, so a sum of products (the taps of a 1-d kernel, the blocks of a weight gradient) costs a
  temporary and a pass of additions per term; BLAS's ``gemm`` computes ``C = α·A·B + β·C``, and with
  β = 1 each term is added while it is computed.
* :func:`stacked`: ``a @ b`` over stacks (NumPy's broadcasting), each stack one
  ``cblas_?gemm_batch_strided`` call that gives each BLAS thread whole products (Winograd's 36, a
  batch's samples), where ``matmul`` runs the products one after the other, each split over the threads.
* :func:`few_rows`: ``a @ b`` for a product with few rows over a long inner axis (a weight gradient's
  output channels × taps, summed over the pixels), which OpenBLAS computes faster written column-major.

The library is the OpenBLAS that NumPy's wheels ship, found once from the libraries the process has
loaded, and the calls run on the arrays' own memory, strided views included, with no copy.  Where
that library is not there (NumPy built against another BLAS) or an operand's layout is not one BLAS
reads, the same thing is computed with NumPy (a product, then an addition).  Either way each output
is its row of ``a`` times its column of ``b``, summed, added to ``out``'s value (with β = 1), so NaN
and ±Inf land where the products put them.
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from .threads import get_num_threads

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_SYMBOLS = {np.dtype(np.float32): "scipy_cblas_sgemm64_", np.dtype(np.float64): "scipy_cblas_dgemm64_"}
_BATCHED = {np.dtype(np.float32): "cblas_sgemm_batch_strided", np.dtype(np.float64): "cblas_dgemm_batch_strided"}
_found: dict = {}
_lock = threading.Lock()


def openblas_paths() -> list:
    """The files of the OpenBLAS libraries this process has loaded (NumPy's first), from ``/proc/self/maps``."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        return []
    return sorted(paths, key=lambda p: "numpy" not in p)


def openblas_libraries(numpy_only: bool = True):
    """The OpenBLAS libraries this process has loaded, opened (ctypes): those NumPy's wheels ship, or
    with ``numpy_only=False`` every one (NumPy's first)."""
    for path in openblas_paths():
        if numpy_only and "numpy" not in path:
            continue
        try:
            yield ctypes.CDLL(path)
        except OSError:
            continue


def _functions() -> dict:
    """dtype → the ctypes function of NumPy's OpenBLAS ``cblas_?gemm`` (64-bit integers), and
    ("batched", dtype) → its ``cblas_?gemm_batch_strided``; {} without that library."""
    functions = _found.get("functions")
    if functions is not None:
        return functions
    with _lock:
        if "functions" in _found:
            return _found["functions"]
        functions = {}
        for lib in openblas_libraries():
            i64, ptr, enum = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
            for dtype, symbol in _SYMBOLS.items():
                fn = getattr(lib, symbol, None)
                if fn is None:
                    continue
                real = ctypes.c_float if dtype == np.float32 else ctypes.c_double
                fn.argtypes = [enum, enum, enum, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr, i64]
                fn.restype = None
                functions[dtype] = fn
                batched = getattr(lib, _BATCHED[dtype], None)     # the same build: 64-bit integers
                if batched is not None:
                    batched.argtypes = [enum, enum, enum, i64, i64, i64, real, ptr, i64, i64,
                                        ptr, i64, i64, real, ptr, i64, i64, i64]
                    batched.restype = None
                    functions["batched", dtype] = batched
            if functions:
                break
        _found["functions"] = functions
        return functions


IDLE_WAIT = 16      # OpenBLAS's threads wait 2¹⁶ cycles for more work before they sleep (its default: 2²⁸)
_TIMEOUT_VARIABLES = ("OPENBLAS_THREAD_TIMEOUT", "GOTO_THREAD_TIMEOUT")


def shorten_idle_wait(exponent: int = IDLE_WAIT) -> bool:
    """Make NumPy's OpenBLAS threads sleep after 2**exponent cycles without work; True if done.

    After a product OpenBLAS's threads keep polling for the next one for about 2²⁸ cycles (a tenth of a
    second), and so take a core from the compiled kernels that follow them (Winograd's output transform,
    im2col after a product; measured in ``bench/README.md``).  The wait is OpenBLAS's
    ``OPENBLAS_THREAD_TIMEOUT`` setting, read when it loads; here it is read again (the environment is
    restored after) and the threads are stopped, to start with the shorter wait at the next product.  Nothing is changed when either variable naming the
    wait is set (the user's choice stands), where the library lacks the functions, or while other Python
    threads run (a server, Jupyter, Dask): stopping BLAS's threads under a product another thread runs
    is not safe, so there ``OPENBLAS_THREAD_TIMEOUT=16`` in the environment before Python starts does it.
    """
    if any(name in os.environ for name in _TIMEOUT_VARIABLES) or threading.active_count() > 1:
        return False
    for lib in openblas_libraries():
        read, stop = getattr(lib, "openblas_read_env", None), getattr(lib, "blas_thread_shutdown_", None)
        if read is None or stop is None:
            return False
        with _lock:
            os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(int(exponent))
            try:
                read()
            finally:
                del os.environ["OPENBLAS_THREAD_TIMEOUT"]
            stop()
        return True
    return False


def _operand(m, itemsize):
    """(trans, ld) for BLAS to read the 2-d view ``m`` in place, or None if it cannot."""
    rows, cols = m.shape
    s0, s1 = m.strides
    if s0 % itemsize or s1 % itemsize:
        return None
    if cols == 1 or s1 == itemsize:
        ld = s0 // itemsize if rows > 1 else max(cols, 1)
        if ld >= max(cols, 1):
            return _NO_TRANS, ld
    if rows == 1 or s0 == itemsize:
        ld = s1 // itemsize if cols > 1 else max(rows, 1)
        if ld >= max(rows, 1):
            return _TRANS, ld
    return None


def gemm(a, b, out, accumulate=False):
    """``out = a @ b``, or ``out += a @ b`` with ``accumulate``; 2-d arrays of one float dtype.

    ``out`` is written in place (a view is fine) and must not overlap ``a`` or ``b``.
    """
    M, K = a.shape
    N = b.shape[1]
    if b.shape[0] != K or out.shape != (M, N):
        raise ValueError(f"gemm: shapes {a.shape} @ {b.shape} do not make out's {out.shape}")
    fn = _functions().get(out.dtype) if a.dtype == b.dtype == out.dtype else None
    result = out
    if fn is not None and M and N and K and out.flags.writeable \
            and not np.may_share_memory(out, a) and not np.may_share_memory(out, b):
        item = out.itemsize
        if out.strides[1] != item and out.strides[0] == item and N > 1:
            a, b, out, M, N = b.T, a.T, out.T, N, M                     # outᵀ = bᵀ @ aᵀ, row-major
        c = _operand(out, item)
        ta, tb = _operand(a, item), _operand(b, item)
        if c is not None and c[0] == _NO_TRANS and ta is not None and tb is not None:
            fn(_ROW_MAJOR, ta[0], tb[0], M, N, K, 1.0, a.ctypes.data, ta[1], b.ctypes.data, tb[1],
               1.0 if accumulate else 0.0, out.ctypes.data, c[1])
            return result
    if accumulate:
        out += a @ b
    else:
        np.matmul(a, b, out=out)
    return result


FEW_ROWS = 128          # products with at most this many rows (fewer than columns) ...
FEW_ROWS_INNER = 1024   # ... over an inner axis at least this long ...
FEW_ROWS_FROM = 1 << 21  # ... and at least this many multiply-adds run column-major (bench/README.md)


def few_rows(a, b):
    """``a @ b`` for 2-d matrices or stacks of them, as :func:`stacked` computes it, except for products
    with few rows over a long inner axis.

    When each product has at most :data:`FEW_ROWS` rows, fewer than its columns, an inner axis of at least
    :data:`FEW_ROWS_INNER` and :data:`FEW_ROWS_FROM` multiply-adds, it is computed column-major, as
    ``(bᵀ @ aᵀ)ᵀ``, and the result is that transposed view.  Each output is the same row times column,
    so NaN and ±Inf land as they do in ``matmul``.
    """
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    if not (M <= FEW_ROWS and M < N and K >= FEW_ROWS_INNER and M * N * K >= FEW_ROWS_FROM):
        return stacked(a, b)
    return np.swapaxes(stacked(np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2)), -1, -2)


def _batch_stride(m, itemsize):
    """The stride between a 3-d stack's matrices in items (0: one matrix shared by all), or None."""
    step = m.strides[0]
    if step < 0 or step % itemsize:
        return None
    return step // itemsize


LOOP_ABOVE = 16384      # outputs per product from which a stack that cannot be batched adds each product in place

# OpenBLAS up to 0.3.31 (DYNAMIC_ARCH builds, as NumPy's wheels are) crashes in its batched products
# when each product has at most 100³ multiply-adds, which its small-matrix kernels would take
# (OpenMathLib/OpenBLAS#5980); such stacks stay on NumPy's matmul, with a margin.
BATCHED_ABOVE = 1 << 21


def stacked(a, b, out=None, accumulate=False):
    """``a @ b`` over stacks of matrices (NumPy's broadcasting of the leading axes; either side may be
    one 2-d matrix, shared), into ``out`` if given; with ``accumulate``, added to ``out``.

    With NumPy's OpenBLAS each stack along the first leading axis is one ``cblas_?gemm_batch_strided``
    call, which shares its products among BLAS's threads, each product on one thread (NumPy's
    ``matmul`` runs them one after the other, each on all threads).  Stacks too short to share evenly,
    layouts BLAS cannot read and other BLAS libraries run as NumPy's ``matmul``, except sums of large
    products, which add one product at a time (:func:`gemm`), so that a temporary never holds more
    than one product.
    """
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    if out is None:
        out = np.empty(lead + (M, N), dtype=np.result_type(a, b))
    if not lead:
        return gemm(a, b, out, accumulate)
    fn = _functions().get(("batched", out.dtype)) if a.dtype == b.dtype == out.dtype else None
    if fn is not None and out.shape == lead + (M, N) and b.shape[-2] == K \
            and M * N * K > BATCHED_ABOVE and _shares_evenly(lead[0]) and out.flags.writeable \
            and not np.may_share_memory(out, a) and not np.may_share_memory(out, b):
        ab, bb = np.broadcast_to(a, lead + (M, K)), np.broadcast_to(b, lead + (K, N))
        calls = [_batched_args(ab[(slice(None),) + i], bb[(slice(None),) + i], out[(slice(None),) + i], accumulate)
                 for i in np.ndindex(lead[1:])]
        if None not in calls:
            for args in calls:
                fn(*args)
            return out
    if accumulate and M * N >= LOOP_ABOVE:
        ab, bb = np.broadcast_to(a, lead + (M, K)), np.broadcast_to(b, lead + (K, N))
        for i in np.ndindex(lead):                  # one product added at a time: at most one product's temporary
            gemm(ab[i], bb[i], out[i], True)
        return out
    if accumulate:
        out += np.matmul(a, b)
        return out
    return np.matmul(a, b, out=out)


def _shares_evenly(count) -> bool:
    """Whether ``count`` products keep every BLAS thread busy, each thread taking whole products."""
    n = get_num_threads()
    return count >= n and (count % n == 0 or count >= 4 * n)


def _batched_args(a, b, out, accumulate):
    """The arguments of one batched call for 3-d stacks ``a (B, M, K)``, ``b (B, K, N)``, ``out (B, M, N)``
    (a stride of 0 shares a matrix), or None where BLAS cannot read their layouts."""
    item = out.itemsize
    Bn, M, N = out.shape
    K = a.shape[2]
    c, ta, tb = _operand(out[0], item), _operand(a[0], item), _operand(b[0], item)
    sa, sb, sc = _batch_stride(a, item), _batch_stride(b, item), _batch_stride(out, item)
    if c is None or c[0] != _NO_TRANS or ta is None or tb is None or None in (sa, sb, sc) \
            or (Bn > 1 and sc < (M - 1) * c[1] + N):
        return None
    return (_ROW_MAJOR, ta[0], tb[0], M, N, K, 1.0, a.ctypes.data, ta[1], sa, b.ctypes.data, tb[1], sb,
            1.0 if accumulate else 0.0, out.ctypes.data, c[1], sc, Bn)
