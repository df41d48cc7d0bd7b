r"""Winograd F(4×4, 3×3) for 3×3, stride-1, dilation-1, ungrouped convolutions.

The minimal-filtering algorithm (Lavin & Gray, 2016) computes a 4×4 tile of
outputs from a 6×6 tile ``d`` of the padded input and the 3×3 kernel ``g``
with 36 multiplies instead of 144 (4× fewer; points 0, ±1, ±2)::

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

Summed over input channels, the elementwise product becomes, for each of the
T = 36 transform positions ``t``, one matrix product over channels::

    U[t] = (G g Gᵀ)[t]          (C_out, C_in)       kernel transform (NumPy, G⊗G)
    V[t] = (Bᵀ d B)[t]          (C_in, P)           input transform, P = N · tiles
    M[t] = U[t] @ V[t]          (C_out, P)          one batched GEMM (T, C_out, C_in) @ (T, C_in, P)
    Y    = Aᵀ M A               (C_out, P, 4, 4)    output transform

The input and output transforms are compiled kernels
(:mod:`convscope.algorithms.kernels.winograd`): the input transform reads the
unpadded input and supplies the zero padding itself (no padded copy), the
output transform adds the bias and writes each tile into the output, cropping
the partial tiles at the bottom and right.  The products run in BLAS.  Other
padding modes pad first (:func:`convscope.padding.pad`).

Blocking (Lavin & Gray; NNPACK and oneDNN do the same).  V and M are never
made for the whole call: the tiles go a block of tile rows at a time (about as
many tiles as channels, at least :data:`BLOCK_MIN_TILES`), and one thread takes
a block through input transform, 36 products and output transform while its
V and M are in its cache.  Blocks are handed to :func:`convscope.get_num_threads`
Python threads, each taking the next block when done (the kernels and the
products release the GIL), with the BLAS on one thread meanwhile
(:func:`convscope.threads.single_blas`): one busy thread per core, no thread
pool waiting for another's.  Where the tiles are too few for two such blocks a
thread (deep layers on small images), the *wide* layout transforms all tiles in
blocks on all threads, then shares the 36 products among the threads by
transform position, then transforms the outputs likewise.

Grad-weight.  The output is linear in the kernel, so its adjoint gives
∂L/∂w = (G⊗G)ᵀ · Σ_tiles [(A⊗A) dy-tile] ⊙ V, the sum over tiles and samples
inside one batched product (:func:`grad_weight`).

Grad-input.  For stride 1 the gradient of the padded input is the *full*
correlation of grad_out with the kernel rotated by 180° and its channel axes
swapped::

    ∂L/∂x̃[n, c, p, q] = Σ_o Σ_uv grad_out[n, o, p − u, q − v] · w[o, c, u, v]
                      = corr(pad₂(grad_out), w[:, :, ::-1, ::-1]ᵀ)[n, c, p, q]

which is again a 3×3 stride-1 correlation (input grad_out zero-padded by 2 on
every side, weight (C_in, C_out, 3, 3)), computed by the same routine.  With
zero padding only the interior of x̃ is needed, so the correlation is computed
on that window directly (offset 2 − p, output H × W); other modes compute all
of x̃ and :func:`convscope.padding.fold` it.

Accuracy.  The transforms' coefficients (up to 8 in Aᵀ, 5 in Bᵀ, 1/24 in G)
amplify rounding: in float32 the output's relative L2 error
‖y − y_exact‖/‖y_exact‖ is about 1e-6 to 3e-6 on random data (direct im2col:
about 3e-7), and an error is relative to the largest values of the tiles it
mixes (:data:`ERROR`).  float64 results agree with direct convolution to
about 1e-15.
"""
from __future__ import annotations

import numpy as np

from ..padding import fold, pad

ERROR = "global"    # rounding error relative to the call's largest values, and NaN/Inf spread;
                    # a non-finite call is recomputed on a local path (see convscope.algorithms)


def needs(spec, shape):
    """None for a 3×3 kernel, stride 1, dilation 1 and groups 1, else what is wrong."""
    wrong = []
    if spec.kernel_size != (3, 3):
        wrong.append(f"kernel_size={spec.kernel_size}")
    if spec.stride != (1, 1):
        wrong.append(f"stride={spec.stride}")
    if spec.dilation != (1, 1):
        wrong.append(f"dilation={spec.dilation}")
    if spec.groups != 1:
        wrong.append(f"groups={spec.groups}")
    if wrong:
        return "a 3×3 kernel, stride 1, dilation 1 and groups 1, got " + ", ".join(wrong)
    return None


_BT = [[4, 0, -5, 0, 1, 0],
       [0, -4, -4, 1, 1, 0],
       [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0],
       [0, 2, -1, -2, 1, 0],
       [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0],
      [-1 / 6, -1 / 6, -1 / 6],
      [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6],
      [1 / 24, -1 / 12, 1 / 6],
      [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0],
       [0, 1, -1, 2, -2, 0],
       [0, 1, 1, 4, 4, 0],
       [0, 1, -1, 8, -8, 1]]

_T = 36         # transform positions of a 6×6 tile

_cache: dict = {}


def matrices(dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kronecker transform matrices (Bᵀ⊗Bᵀ (36, 36), G⊗G (36, 9), Aᵀ⊗Aᵀ (16, 36)) in ``dtype``.

    The compiled kernels apply Bᵀ⊗Bᵀ and Aᵀ⊗Aᵀ as written-out sums; these matrices state them.
    """
    key = np.dtype(dtype)
    if key not in _cache:
        BT, G, AT = (np.array(a, dtype=np.float64) for a in (_BT, _G, _AT))
        _cache[key] = tuple(np.ascontiguousarray(np.kron(a, a), dtype=dtype) for a in (BT, G, AT))
    return _cache[key]


def transform_weight(w):
    """U = G g Gᵀ for every (output, input) channel pair: (O, C, 3, 3) → (36, O, C)."""
    O, C = w.shape[:2]
    GG = matrices(w.dtype)[1]
    return (GG @ w.reshape(O * C, 9).T).reshape(_T, O, C)   # (36, 9) @ (9, O·C) → (36, O, C)


def _tiles(Ho, Wo):
    return -(-Ho // 4), -(-Wo // 4)                        # 4×4 tiles down and across


def _input_transform(x, top, left, Ho, Wo):
    """V (36, C, N·th·tw): the transformed 6×6 windows of x read from row −top, column −left, zeros
    outside x, for an Ho × Wo correlation output; also (th, tw)."""
    from .kernels import _numba
    from .kernels import winograd as kernels

    N, C = x.shape[:2]
    th, tw = _tiles(Ho, Wo)
    V = np.empty((_T, C, N * th * tw), dtype=x.dtype)
    _numba.launch(kernels.input_tiles, np.ascontiguousarray(x), int(top), int(left), th, tw, V)
    return V, (th, tw)


BLOCK_MIN_TILES = 64      # tiles a block: 64, or as many as the channels (C_in + C_out)/2 where more:
                          # products on fewer tiles run far below BLAS's peak (bench/README.md)
WEIGHT_BLOCK_TILES = 256  # grad_weight's blocks: each adds its products (36, C_out, C_in) to a sum
T_CHUNK = 6               # the wide layout's products, 6 transform positions a task
_BOOKKEEPING = 1 << 16    # bytes of Python objects the threads hold (tasks, futures, frames)


def _layout(C, O, tw, rows, tiles=None):
    """(tile rows a block, wide).  Blocks of ``tiles`` tiles (default: BLOCK_MIN_TILES or the
    channels), two blocks a thread at least where there are several threads.  *Wide* where that
    leaves blocks of under half the tiles wanted: then the transforms run in blocks over the whole
    layer's transformed tiles, and the threads share the 36 products by transform position."""
    from ..threads import get_num_threads

    n = get_num_threads()
    if tiles is None:
        tiles = max(BLOCK_MIN_TILES, (C + O) // 2)
    want = -(-tiles // tw)
    if n == 1:
        return max(1, min(want, rows)), False
    per = max(1, min(want, -(-rows // (2 * n))))
    return per, 2 * per * tw < tiles


def _in_threads_count(tasks):
    """The threads ``tasks`` tasks run on."""
    from ..threads import get_num_threads

    return max(1, min(get_num_threads(), tasks))


def _in_threads(tasks, work, scratch=tuple):
    """``work(*task, buffers)`` for each task, on up to :func:`convscope.get_num_threads` Python
    threads, each taking the next task when done with one, each with its own ``scratch()`` buffers
    (the BLAS on one thread meanwhile); the threads' buffers."""
    from ..threads import parallel_map, single_blas

    tasks = list(tasks)
    queue = iter(tasks)

    def worker(_):
        buffers = scratch()
        with np.errstate(invalid="ignore", over="ignore"):   # NaN/Inf land as convscope.algorithms says
            for task in queue:                   # a shared iterator: each task goes to one thread
                work(*task, buffers)
        return buffers

    n = _in_threads_count(len(tasks))
    if n == 1:
        return [worker(0)]
    with single_blas():
        return parallel_map(worker, range(n))


def _row_blocks(rows, per):
    return [(r, min(r + per, rows)) for r in range(0, rows, per)]


_T_CHUNKS = [(t, t + T_CHUNK) for t in range(0, _T, T_CHUNK)]


def _view(buffer, *shape):
    """The first prod(shape) values of ``buffer``, contiguous, as ``shape``."""
    return buffer.reshape(-1)[:int(np.prod(shape))].reshape(shape)


def correlate3x3(x, w, top, left, Ho, Wo, bias=None, U=None):
    """3×3 stride-1 correlation of x (N, C, H, W) with w (O, C, 3, 3), zeros outside x:

        out[n, o, h, q] = Σ_c Σ_uv x[n, c, h − top + u, q − left + v] · w[o, c, u, v] (+ bias[o])

    for h < Ho, q < Wo: (N, O, Ho, Wo).  ``U`` is :func:`transform_weight` of ``w``, when already
    computed.  The tiles go a block of tile rows at a time: input transform, the 36 products and the
    output transform of one block run on one thread, while its transformed tiles are in cache
    (:func:`_layout`; in the wide layout each step runs on all threads in turn).
    """
    from .kernels import winograd as kernels

    N, C = x.shape[:2]
    O = w.shape[0]
    th, tw = _tiles(Ho, Wo)
    x = np.ascontiguousarray(x)
    if U is None:
        U = transform_weight(w)                                    # (36, O, C)
    b = np.zeros(O, dtype=x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype)
    out = np.empty((N, O, Ho, Wo), dtype=x.dtype)
    rows = N * th
    per, wide = _layout(C, O, tw, rows)
    if wide:
        V = np.empty((_T, C, rows * tw), dtype=x.dtype)
        M = np.empty((_T, O, rows * tw), dtype=x.dtype)
        _in_threads(_row_blocks(rows, per), lambda r0, r1, _: kernels.input_block(
            x, top, left, th, tw, r0, r1, V, r0 * tw))
        _in_threads(_T_CHUNKS, lambda t0, t1, _: np.matmul(U[t0:t1], V[t0:t1], out=M[t0:t1]))
        _in_threads(_row_blocks(rows, per), lambda r0, r1, _: kernels.output_block(
            M, b, th, tw, r0, r1, out, r0 * tw))
        return out

    def scratch():
        return np.empty(_T * C * per * tw, dtype=x.dtype), np.empty(_T * O * per * tw, dtype=x.dtype)

    def work(r0, r1, buffers):
        P = (r1 - r0) * tw
        V, M = _view(buffers[0], _T, C, P), _view(buffers[1], _T, O, P)
        kernels.input_block(x, top, left, th, tw, r0, r1, V, 0)   # (36, C, P)
        np.matmul(U, V, out=M)                                     # (36, O, C) @ (36, C, P) → (36, O, P)
        kernels.output_block(M, b, th, tw, r0, r1, out, 0)

    _in_threads(_row_blocks(rows, per), work, scratch)
    return out


def forward(x, w, b, spec, shape, U=None):
    if spec.padding_mode == "zeros":
        (pt, _), (pl, _) = spec.padding
        return correlate3x3(x, w, pt, pl, shape.H_out, shape.W_out, bias=b, U=U)
    return correlate3x3(pad(x, spec), w, 0, 0, shape.H_out, shape.W_out, bias=b, U=U)


def prepared_forward(w):
    """``forward`` with the kernel transform computed once, for running on many slices."""
    U = transform_weight(w)
    return lambda x, b, spec, shape: forward(x, w, b, spec, shape, U=U)


def grad_input(grad_out, w, spec, shape):
    wr = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))   # (C_out, C, 3, 3) → (C, C_out, 3, 3)
    (pt, pb), (pl, pr) = spec.padding
    if spec.padding_mode == "zeros":
        return correlate3x3(grad_out, wr, 2 - pt, 2 - pl, shape.H, shape.W)   # the interior of x̃ only
    dxp = correlate3x3(grad_out, wr, 2, 2, shape.H + pt + pb, shape.W + pl + pr)   # (N, C, Hp, Wp)
    return fold(dxp, spec, (shape.H, shape.W))


def grad_weight(grad_out, x, spec, shape):
    """∂L/∂w by the adjoint of the tile formula: with Z = (A⊗A) dy-tiles, (36, C_out, P),

        ∂L/∂w = (G⊗G)ᵀ · Σ_tiles Z[t] Vᵀ[t]

    the sum over tiles (and samples) running a block of tile rows at a time, each thread summing
    its blocks' products (36, C_out, P) @ (36, P, C_in).  Outputs beyond H_out, W_out in partial
    tiles get zero gradient, so they contribute nothing.
    """
    from .kernels import winograd as kernels

    Ho, Wo = shape.H_out, shape.W_out
    if spec.padding_mode == "zeros":
        (top, _), (left, _) = spec.padding
        x = np.ascontiguousarray(x)
    else:
        x, top, left = pad(x, spec), 0, 0
    g = np.ascontiguousarray(grad_out)
    N, O = g.shape[:2]
    C = x.shape[1]
    th, tw = _tiles(Ho, Wo)
    rows = N * th
    per, wide = _layout(C, O, tw, rows, WEIGHT_BLOCK_TILES)
    if wide:
        V = np.empty((_T, C, rows * tw), dtype=x.dtype)
        Z = np.empty((_T, O, rows * tw), dtype=x.dtype)
        dU = np.empty((_T, O, C), dtype=x.dtype)

        def transforms(r0, r1, _):
            kernels.input_block(x, top, left, th, tw, r0, r1, V, r0 * tw)
            kernels.gradient_block(g, th, tw, r0, r1, Z, r0 * tw)

        _in_threads(_row_blocks(rows, per), transforms)
        _in_threads(_T_CHUNKS, lambda t0, t1, _: np.matmul(           # (t, O, P) @ (t, P, C) → (t, O, C)
            Z[t0:t1], V[t0:t1].transpose(0, 2, 1), out=dU[t0:t1]))
    else:
        def scratch():                           # tiles, gradient tiles, this thread's sum, a product, its blocks
            return [np.empty(_T * C * per * tw, dtype=x.dtype), np.empty(_T * O * per * tw, dtype=x.dtype),
                    np.empty((_T, O, C), dtype=x.dtype), None, 0]

        def work(r0, r1, buffers):
            P = (r1 - r0) * tw
            V, Z = _view(buffers[0], _T, C, P), _view(buffers[1], _T, O, P)
            kernels.input_block(x, top, left, th, tw, r0, r1, V, 0)    # (36, C, P)
            kernels.gradient_block(g, th, tw, r0, r1, Z, 0)            # (36, O, P)
            if buffers[4]:                                             # (36, O, P) @ (36, P, C) → (36, O, C)
                if buffers[3] is None:
                    buffers[3] = np.empty((_T, O, C), dtype=x.dtype)
                np.add(buffers[2], np.matmul(Z, V.transpose(0, 2, 1), out=buffers[3]), out=buffers[2])
            else:
                np.matmul(Z, V.transpose(0, 2, 1), out=buffers[2])
            buffers[4] += 1

        sums = [buffers[2] for buffers in _in_threads(_row_blocks(rows, per), work, scratch) if buffers[4]]
        if not sums:
            sums = [np.zeros((_T, O, C), dtype=x.dtype)]
        dU = sums[0]
        with np.errstate(invalid="ignore", over="ignore"):
            for other in sums[1:]:                                     # NaN/Inf sum as BLAS leaves them
                dU += other
    GG = matrices(g.dtype)[1]
    dw9 = GG.T @ dU.reshape(_T, O * C)                              # (9, 36) @ (36, O·C) → (9, O·C)
    return np.ascontiguousarray(dw9.T).reshape(O, C, 3, 3)         # (O·C, 9) → (O, C, 3, 3)


def _scratch(C, O, Ho, Wo, N, tiles=None):
    """(values of the transformed tiles, all threads; threads with a kernel-gradient sum)."""
    th, tw = _tiles(Ho, Wo)
    rows = N * th
    per, wide = _layout(C, O, tw, rows, tiles)
    if wide:
        return _T * (C + O) * rows * tw, 0
    n = _in_threads_count(len(_row_blocks(rows, per)))
    return n * _T * (C + O) * per * tw, n


def workspace(pass_, spec, shape, itemsize):
    """Scratch bytes: the padded copy (other modes), the kernel transform, each thread's block of
    transformed tiles and products, and for grad_input the flipped kernel and the full padded
    gradient (other modes), for grad_weight each thread's kernel-gradient sum; and the blocks'
    bookkeeping."""
    (pt, pb), (pl, pr) = spec.padding
    Hp, Wp = shape.H + pt + pb, shape.W + pl + pr
    zeros = spec.padding_mode == "zeros"
    N, cin, cout = shape.N, shape.C, shape.out_channels
    padded = 0 if zeros else N * cin * Hp * Wp
    if pass_ == "grad_input":
        grid = (shape.H, shape.W) if zeros else (Hp, Wp)
        total = padded + _scratch(cout, cin, *grid, N)[0] + (_T + 9) * cin * cout + cin
    elif pass_ == "grad_weight":
        values, sums = _scratch(cin, cout, shape.H_out, shape.W_out, N, WEIGHT_BLOCK_TILES)
        total = padded + values + (_T * max(1, 2 * sums) + 9) * cout * cin
    else:
        total = padded + _scratch(cin, cout, shape.H_out, shape.W_out, N)[0] + _T * cout * cin + cout
    return total * itemsize + _BOOKKEEPING
