"""How many threads convscope uses.

Three kinds of work run in parallel:

* matrix products, in NumPy's BLAS, whose thread pool is set through
  ``threadpoolctl`` when it is installed (the ``threads`` extra), else through
  OpenBLAS's own ``openblas_set_num_threads`` when NumPy's BLAS is OpenBLAS;
* convscope's own large copies (Winograd's output scatter), split into
  independent blocks run on a pool of Python threads (NumPy releases the GIL
  inside its copies and ufuncs);
* the compiled kernels (:mod:`convscope.algorithms.kernels`), whose numba
  thread count is set to this number at every launch.

All default to the number of cores the process may use.

:func:`set_num_threads` may be called from any thread while others compute: a
running ``parallel_map`` finishes on the pool it started with (pools are never
shut down under a caller; an unused one is dropped and its idle threads exit),
and the next one uses a pool of the new size.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import threading

from .spec import check_num_threads


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_state = {"n": _usable_cores(), "pool": None}     # pool: (size, ThreadPoolExecutor) or None
_lock = threading.Lock()
_local = threading.local()


def get_num_threads() -> int:
    """The number of threads convscope's own loops and kernels use in the calling thread.

    That is the innermost :func:`num_threads` block's count, else :func:`set_num_threads`'s (which
    the BLAS was also set to).
    """
    return getattr(_local, "n", _state["n"])


def _set_blas_threads(n: int) -> bool:
    try:
        import threadpoolctl
    except ImportError:
        threadpoolctl = None
    if threadpoolctl is not None:
        threadpoolctl.threadpool_limits(n, user_api="blas")
        return True
    from .blas import openblas_libraries
    done = False
    for lib in openblas_libraries(numpy_only=False):
        for symbol in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                       "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(lib, symbol, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                done = True
                break
    return done


def set_num_threads(n: int) -> int:
    """Use ``n`` threads for BLAS and for convscope's own loops; returns the previous number.

    >>> import convscope
    >>> previous = convscope.set_num_threads(1)
    >>> convscope.get_num_threads()
    1
    >>> _ = convscope.set_num_threads(previous)
    """
    n = check_num_threads(n)
    with _lock:
        previous = _state["n"]
        _set_blas_threads(n)
        _state["n"] = n
    return previous


@contextlib.contextmanager
def num_threads(n: int):
    """``with num_threads(n):`` — the calls this thread makes inside the block run convscope's own
    loops and compiled kernels on ``n`` threads.  The BLAS's thread pool is process-wide and keeps
    :func:`set_num_threads`'s count.  Other threads are not affected.

    >>> import convscope
    >>> with convscope.num_threads(1):
    ...     convscope.get_num_threads()
    1
    """
    n = check_num_threads(n)
    had = hasattr(_local, "n")
    old = getattr(_local, "n", None)
    _local.n = n
    try:
        yield n
    finally:
        if had:
            _local.n = old
        else:
            del _local.n


def _pool(n: int) -> concurrent.futures.ThreadPoolExecutor:
    """The pool of ``n`` threads; a pool of another size is dropped, not shut down (a caller may
    still be mapping on it: its threads exit once it is unreferenced and idle)."""
    with _lock:
        pool = _state["pool"]
        if pool is None or pool[0] != n:
            pool = (n, concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="convscope"))
            _state["pool"] = pool
        return pool[1]


def parallel_map(fn, items) -> list:
    """``[fn(item) for item in items]``, on up to :func:`get_num_threads` threads."""
    items = list(items)
    n = get_num_threads()
    if n <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    return list(_pool(n).map(fn, items))
