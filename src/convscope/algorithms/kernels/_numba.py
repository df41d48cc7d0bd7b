"""numba, prepared for convscope's kernels: cache directory, threading layer, thread count.

* Cache: numba caches compiled kernels beside their source (``__pycache__``).  Where that folder is not
  writable (a read-only site-packages) the cache goes to ``$NUMBA_CACHE_DIR`` if set, else to
  ``$XDG_CACHE_HOME/convscope/numba`` (``~/.cache/convscope/numba``).
* Threading layer: numba's own ``workqueue`` layer, unless ``$NUMBA_THREADING_LAYER`` names another.
  Its OpenMP layer shares ``libgomp`` with torch and spins between launches against the BLAS threads
  that run between a kernel's launches (Winograd: a compiled transform, the BLAS products, a compiled
  transform), which made such calls up to 15 times slower and erratic (``bench/README.md``).  The
  workqueue layer does not allow launches from several Python threads at once (a web server, a data
  loader, Dask's threaded scheduler), so launches are serialised by a lock unless a thread-safe layer
  (``omp``, ``tbb``, ``threadsafe``) was asked for.
* Threads: :func:`launch` runs a kernel with ``convscope.get_num_threads()`` threads (numba's count is
  per calling thread, so it is set at every launch).
"""
from __future__ import annotations

import contextlib
import os
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))


def _user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "convscope", "numba")


def _writable(path: str) -> bool:
    cache = os.path.join(path, "__pycache__")
    target = cache if os.path.isdir(cache) else path
    return os.access(target, os.W_OK)


if "NUMBA_CACHE_DIR" not in os.environ and not _writable(_HERE):
    os.environ["NUMBA_CACHE_DIR"] = _user_cache_dir()

import numba  # noqa: E402  (after the cache directory is settled)

if "NUMBA_CACHE_DIR" in os.environ and not numba.config.CACHE_DIR:
    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]   # numba was imported before, by the user


_ASKED = os.environ.get("NUMBA_THREADING_LAYER", "")
THREADSAFE = _ASKED in ("omp", "tbb", "threadsafe")
if not _ASKED:
    numba.config.THREADING_LAYER = "workqueue"

_launch_lock = threading.Lock()

njit = numba.njit
prange = numba.prange


@njit(cache=True, inline="always")
def columns(off, step, size, n_out):
    """(j0, j1): the outputs j < n_out whose input column ``j·step + off`` lies in [0, size).

    Along a row of a convolution the real columns a tap reads form this one range, so the kernels'
    inner loops run over it with no test (zero padding fused: the columns outside it read zeros).
    """
    j0 = max(0, (step - 1 - off) // step)
    j1 = min(n_out, (size - 1 - off) // step + 1)
    return j0, max(j0, j1)


def _threads() -> int:
    from ...threads import get_num_threads

    return max(1, min(get_num_threads(), numba.config.NUMBA_NUM_THREADS))


@contextlib.contextmanager
def parallel_region():
    """Set this thread's numba thread count; serialise launches where the layer is not thread-safe."""
    numba.set_num_threads(_threads())
    if THREADSAFE:
        yield
    else:
        with _launch_lock:
            yield


def launch(kernel, *args):
    """``kernel(*args)`` on :func:`convscope.get_num_threads` threads."""
    with parallel_region():
        return kernel(*args)
