"""numba, prepared for convscope's kernels: cache directory, threading layer, thread count.

* Cache: numba caches compiled kernels beside their source (``__pycache__``).  Where that folder is not
  writable (a read-only site-packages) the cache goes to ``$NUMBA_CACHE_DIR`` if set, else to
  ``$XDG_CACHE_HOME/convscope/numba`` (``~/.cache/convscope/numba``).
* Threading layer: ``$NUMBA_THREADING_LAYER`` if set; else numba's ``tbb`` layer where Intel's TBB is
  installed (``pip install "convscope[tbb]"``), else its own ``workqueue`` layer.  A workqueue launch
  wakes its worker threads and puts the calling thread to sleep until they finish; where a core that
  went idle takes long to wake (a virtual machine's idle vCPU), that costs more than a small kernel's
  work.  TBB's calling thread works too and its workers wait a little before they sleep
  (``bench/README.md`` has the figures).  The
  OpenMP layer is not chosen: it shares ``libgomp`` with torch and spins between launches against the
  BLAS threads that run between a kernel's launches (Winograd: a compiled transform, the BLAS products,
  a compiled transform), which made such calls up to 15 times slower and erratic.  The workqueue layer
  does not allow launches from several Python threads at once (a web server, a data loader, Dask's
  threaded scheduler), so its launches are serialised by a lock; the thread-safe layers (``tbb``,
  ``omp``, ``threadsafe``) run them concurrently.
* BLAS's idle threads: NumPy's OpenBLAS is told to let its threads sleep soon after a product
  (:func:`convscope.blas.shorten_idle_wait`), so that they do not poll through the compiled kernels.
* Threads: :func:`launch` runs a kernel with ``convscope.get_num_threads()`` threads (numba's count is
  per calling thread, so it is set at every launch).
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

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
from numba.extending import intrinsic  # noqa: E402

if "NUMBA_CACHE_DIR" in os.environ and not numba.config.CACHE_DIR:
    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]   # numba was imported before, by the user


def tbb_usable() -> bool:
    """Whether numba's ``tbb`` threading layer can load here (the ``tbb`` package, a version numba takes)."""
    try:
        from numba.np.ufunc import parallel

        check = getattr(parallel, "_check_tbb_version_compatible", None)
        if check is not None:
            check()
        from numba.np.ufunc import tbbpool  # noqa: F401  (loads libtbb)
    except Exception:       # not installed, too old, or a numba without the layer: the default then
        return False
    return True


def default_layer() -> str:
    """The threading layer convscope asks numba for when ``$NUMBA_THREADING_LAYER`` is not set."""
    return "tbb" if tbb_usable() else "workqueue"


if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = default_layer()    # no effect if numba's threads already started

from ...blas import shorten_idle_wait  # noqa: E402

shorten_idle_wait()     # BLAS's idle threads no longer poll through the kernels that follow a product
THREADSAFE_LAYERS = ("tbb", "omp")
_concurrent = None      # whether the layer in use runs launches from several threads at once; known after a launch

_launch_lock = threading.Lock()

njit = numba.njit
prange = numba.prange

def _has_avx512() -> bool:
    """Whether numba compiles for a processor with AVX-512 (the host's, or ``$NUMBA_CPU_FEATURES``)."""
    features = numba.config.CPU_FEATURES
    if features:
        return "+avx512f" in features.split(",")
    from llvmlite import binding

    return bool(binding.get_host_cpu_features().get("avx512f"))


# one output channel's block of partial sums in :func:`register_block`: two of AVX-512's 32 vector
# registers, or one of AVX2's 16 (eight channels' blocks, the inputs and the weights must fit)
REGISTER_BYTES = 128 if _has_avx512() else 32


def _lanes_of(dtype) -> int:
    return REGISTER_BYTES * 8 // dtype.dtype.bitwidth


@intrinsic
def register_lanes(typingctx, dtype):
    """The number of ``dtype`` values in :data:`REGISTER_BYTES`, a constant to the compiler (a loop
    over it is unrolled)."""
    from numba.core import types

    count = _lanes_of(dtype)

    def codegen(context, builder, signature, args):
        return context.get_constant(types.intp, count)

    return types.intp(dtype), codegen


@intrinsic
def _register_block_pointer(typingctx, dtype):
    """A pointer to :data:`REGISTER_BYTES` of ``dtype`` values in the calling kernel's stack frame."""
    from numba.core import cgutils, types

    count = _lanes_of(dtype)

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(dtype.dtype), size=count)

    return types.CPointer(dtype.dtype)(dtype), codegen


@njit(cache=True, inline="always")
def register_block(dtype):
    """A zeroed array of :func:`register_lanes` values of ``dtype`` on the stack.

    A heap array's partial sums are loaded and stored at every term, since the compiler cannot tell
    that no input array aliases them; this one's, indexed by constants once the loop over it is
    unrolled, are kept in vector registers across a kernel's whole loop over its terms.  One frame
    slot serves every task of the loop that asks for it, so it is zeroed at each call.
    """
    block = numba.carray(_register_block_pointer(dtype), (register_lanes(dtype),))
    for j in range(register_lanes(dtype)):
        block[j] = 0
    return block


@njit(cache=True, inline="always")
def add_eight(a0, a1, a2, a3, a4, a5, a6, a7, w0, w1, w2, w3, w4, w5, w6, w7, src, start):
    """a_k[j] += w_k · src[start + j] for the eight :func:`register_block` blocks a_k, j < their lanes: one
    vector of ``src`` times eight scalars, the multiply-adds of a register-blocked loop.  ``start`` is
    unsigned, so the index has no test for negative values."""
    for j in range(register_lanes(src.dtype)):
        v = src[start + np.uint64(j)]
        a0[j] += w0 * v
        a1[j] += w1 * v
        a2[j] += w2 * v
        a3[j] += w3 * v
        a4[j] += w4 * v
        a5[j] += w5 * v
        a6[j] += w6 * v
        a7[j] += w7 * v


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


def layer_runs_concurrently():
    """Whether the threading layer numba started runs launches from several threads at once (None before
    the first launch: numba picks its layer then, and a layer started before convscope's is kept)."""
    global _concurrent
    if _concurrent is None:
        try:
            _concurrent = numba.threading_layer() in THREADSAFE_LAYERS
        except ValueError:          # no launch yet
            return None
    return _concurrent


@contextlib.contextmanager
def parallel_region():
    """Set this thread's numba thread count; serialise launches unless the layer in use is thread-safe
    (until the first launch has shown which layer that is)."""
    numba.set_num_threads(_threads())
    if layer_runs_concurrently():
        yield
    else:
        with _launch_lock:
            yield


def launch(kernel, *args):
    """``kernel(*args)`` on :func:`convscope.get_num_threads` threads."""
    with parallel_region():
        return kernel(*args)
