r"""Winograd F(4×4, 3×3) for 3×3, stride-1, dilation-1, ungrouped convolutions.

The minimal-filtering algorithm (Lavin & Gray, 2016) computes a 4×4 tile of
outputs from a 6×6 tile ``d`` of the padded input and the 3×3 kernel ``g``
with 36 multiplies instead of 144 (4× fewer; points 0, ±1, ±2)::

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

Summed over input channels, the elementwise product becomes, for each of the
T = 36 transform positions ``t``, one matrix product over channels::

    U[t] = (G g Gᵀ)[t]          (C_in, C_out)       kernel transform (compiled, G⊗G)
    V[t] = (Bᵀ d B)[t]          (P, C_in)           input transform, P = N · tiles
    M[t] = V[t] @ U[t]          (P, C_out)          one batched GEMM (T, P, C_in) @ (T, C_in, C_out)
    Y    = Aᵀ M A               (C_out, P, 4, 4)    output transform

The arrays hold the channels last, so that the transforms, compiled kernels
(:mod:`convscope.algorithms.kernels.winograd`, ``*_last``), run as vector
operations along the channels: the input transform gathers each window
across the channels from the unpadded NCHW input and supplies the zero
padding itself (no padded copy, no transposed copy), the output transform
adds the bias and writes each row of tiles into the NCHW output through a
channels-last buffer, cropping the partial tiles at the bottom and right.
The products run in BLAS.  From :data:`FUSED_FROM_PIXELS` outputs per plane, with few
enough channels that the kernel transform stays in cache (:func:`fused`), the three
passes run instead on blocks of 8 tiles, one block per task, with compiled products
(:func:`~convscope.algorithms.kernels.winograd.fused_tiles`): V and M then never exist
whole, and the passes do not hand each other arrays larger than the caches.  Other
padding modes pad first (:func:`convscope.padding.pad`).

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

from .. import blas
from ..padding import fold, pad

ERROR = "global"    # rounding error relative to the call's largest values, and NaN/Inf spread;
                    # a non-finite call is recomputed on a local path (see convscope.algorithms)
FINITE_ONLY = True  # each pass(..., finite_only=True) is None when what it reads or writes is not finite
FUSED_FROM_PIXELS = 196    # the fused passes from this many outputs per plane (14², bench/README.md)
FUSED_MAX_TRANSFORM_BYTES = 5 << 19    # while the kernel transform stays in cache (128 × 128 float32 channels)


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


def transform_weight_last(w):
    """U = G g Gᵀ for every (input, output) channel pair, output channels last: (O, C, 3, 3) → (36, C, O),
    the right-hand side of the 2-d path's products."""
    from .kernels import _numba
    from .kernels import winograd as kernels

    O, C = w.shape[:2]
    U = np.empty((_T, C, O), dtype=w.dtype)
    _numba.launch(kernels.weight_tiles_last, np.ascontiguousarray(w.transpose(1, 2, 3, 0)), U)   # (C, 3, 3, O)
    return U


def transform_weight(w):
    """U = G g Gᵀ for every (output, input) channel pair: (O, C, 3, 3) → (36, O, C)."""
    O, C = w.shape[:2]
    GG = matrices(w.dtype)[1]
    return (GG @ w.reshape(O * C, 9).T).reshape(_T, O, C)   # (36, 9) @ (9, O·C) → (36, O, C)


def _tiles(Ho, Wo):
    return -(-Ho // 4), -(-Wo // 4)                        # 4×4 tiles down and across


def _input_transform(x, top, left, Ho, Wo):
    """V (36, N·th·tw, C): the transformed 6×6 windows of x read from row −top, column −left, zeros
    outside x, for an Ho × Wo correlation output, channels last; also (th, tw) and whether what the
    windows read is finite."""
    from .kernels import _numba
    from .kernels import winograd as kernels

    N, C = x.shape[:2]
    th, tw = _tiles(Ho, Wo)
    V = np.empty((_T, N * th * tw, C), dtype=x.dtype)
    nonfinite = _numba.launch(kernels.input_tiles_last, np.ascontiguousarray(x), int(top), int(left), th, tw, V)
    return V, (th, tw), nonfinite == 0


def correlate3x3(x, w, top, left, Ho, Wo, bias=None, U=None, finite_only=False):
    """3×3 stride-1 correlation of x (N, C, H, W) with w (O, C, 3, 3), zeros outside x:

        out[n, o, h, q] = Σ_c Σ_uv x[n, c, h − top + u, q − left + v] · w[o, c, u, v] (+ bias[o])

    for h < Ho, q < Wo: (N, O, Ho, Wo).  ``U`` is :func:`transform_weight_last` of ``w``, when already
    computed.  With ``finite_only``, None if x or the result holds a value that is not finite (the
    transforms check what they read and write, so no separate pass over either is needed).
    """
    from .kernels import _numba
    from .kernels import winograd as kernels

    N = x.shape[0]
    O = w.shape[0]
    if fused(Ho, Wo, x.shape[1], O, x.dtype.itemsize):
        return _fused(x, w, top, left, Ho, Wo, bias, U, finite_only)
    V, (th, tw), finite = _input_transform(x, top, left, Ho, Wo)   # (36, P, C)
    if finite_only and not finite:
        return None
    if U is None:
        U = transform_weight_last(w)                               # (36, C, O)
    M = blas.stacked(V, U)                                         # (36, P, C) @ (36, C, O) → (36, P, O)
    del V
    b = np.zeros(O, dtype=x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype)
    out = np.empty((N, O, Ho, Wo), dtype=x.dtype)
    nonfinite = _numba.launch(kernels.output_tiles_last, M, b, th, tw, out[:, :, None], 0, 1)
    return None if finite_only and nonfinite else out


def fused(Ho, Wo, C, O, itemsize) -> bool:
    """Whether the correlation runs on the fused passes: from :data:`FUSED_FROM_PIXELS` outputs per plane,
    while the kernel transform (36 × C × O values) is at most :data:`FUSED_MAX_TRANSFORM_BYTES` (each
    block of tiles reads all of it)."""
    return Ho * Wo >= FUSED_FROM_PIXELS and _T * C * O * itemsize <= FUSED_MAX_TRANSFORM_BYTES


def _fused(x, w, top, left, Ho, Wo, bias, U, finite_only):
    """:func:`correlate3x3` as :func:`~convscope.algorithms.kernels.winograd.fused_tiles`'s blocks of tiles."""
    from .kernels import _numba
    from .kernels import winograd as kernels

    N, C = x.shape[:2]
    O = w.shape[0]
    if U is None:
        U = transform_weight_last(w)                               # (36, C, O)
    lanes = _numba.REGISTER_BYTES // x.dtype.itemsize
    if O % lanes:                                                  # (36, C, O') with O' a multiple of the lanes
        Up = np.zeros((_T, C, -(-O // lanes) * lanes), dtype=x.dtype)
        Up[:, :, :O] = U
        U = Up
    th, tw = _tiles(Ho, Wo)
    b = np.zeros(O, dtype=x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype)
    out = np.empty((N, O, Ho, Wo), dtype=x.dtype)
    nonfinite = _numba.launch(kernels.fused_tiles, np.ascontiguousarray(x), np.ascontiguousarray(U), b, int(top),
                              int(left), th, tw, out)
    return None if finite_only and nonfinite else out


def forward(x, w, b, spec, shape, U=None, finite_only=False):
    if spec.padding_mode == "zeros":
        (pt, _), (pl, _) = spec.padding
        return correlate3x3(x, w, pt, pl, shape.H_out, shape.W_out, bias=b, U=U, finite_only=finite_only)
    return correlate3x3(pad(x, spec), w, 0, 0, shape.H_out, shape.W_out, bias=b, U=U, finite_only=finite_only)


def prepared_forward(w):
    """``forward`` with the kernel transform computed once, for running on many slices."""
    U = transform_weight_last(w)
    return lambda x, b, spec, shape, **options: forward(x, w, b, spec, shape, U=U, **options)


def flipped(w):
    """The kernel of the input gradient's correlation: w rotated by 180° with its channel axes swapped,
    (C_out, C, 3, 3) → (C, C_out, 3, 3)."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


def grad_input(grad_out, w, spec, shape, finite_only=False):
    """∂L/∂x; with ``finite_only``, None if grad_out or ∂L/∂x holds a value that is not finite."""
    from . import all_finite

    wr = flipped(w)
    (pt, pb), (pl, pr) = spec.padding
    if spec.padding_mode == "zeros":                                # the interior of x̃ only
        return correlate3x3(grad_out, wr, 2 - pt, 2 - pl, shape.H, shape.W, finite_only=finite_only)
    dxp = correlate3x3(grad_out, wr, 2, 2, shape.H + pt + pb, shape.W + pl + pr, finite_only=finite_only)
    if dxp is None:                                                 # (N, C, Hp, Wp)
        return None
    dx = fold(dxp, spec, (shape.H, shape.W))
    return None if finite_only and not all_finite(dx) else dx      # fold's sums can overflow


def grad_weight(grad_out, x, spec, shape, finite_only=False):
    """∂L/∂w by the adjoint of the tile formula (:func:`correlate3x3_weight`).  With ``finite_only``,
    None if x or grad_out holds a value that is not finite."""
    if spec.padding_mode == "zeros":
        (pt, _), (pl, _) = spec.padding
        return correlate3x3_weight(grad_out, x, pt, pl, finite_only=finite_only)
    return correlate3x3_weight(grad_out, pad(x, spec), 0, 0, finite_only=finite_only)


def correlate3x3_weight(grad_out, x, top, left, finite_only=False):
    """∂L/∂w (O, C, 3, 3) of ``correlate3x3(x, w, top, left, Ho, Wo)`` for its output gradient
    ``grad_out`` (N, O, Ho, Wo), by the adjoint of the tile formula: with Z = (A⊗A) dy-tiles,
    (36, O, P),

        ∂L/∂w = (G⊗G)ᵀ · Σ_tiles Z[t] Vᵀ[t]

    the sum over tiles (and samples) running inside one batched product (36, O, P) @ (36, P, C), Z and V
    held channels last, (36, P, ·).  Outputs beyond Ho, Wo in partial tiles get zero gradient, so they
    contribute nothing.  With ``finite_only``, None if x or grad_out holds a value that is not finite.
    """
    from .kernels import _numba
    from .kernels import winograd as kernels

    N, O, Ho, Wo = grad_out.shape
    V, (th, tw), finite = _input_transform(x, top, left, Ho, Wo)   # (36, P, C)
    if finite_only and not finite:
        return None
    Z = np.empty((_T, N * th * tw, O), dtype=grad_out.dtype)
    nonfinite = _numba.launch(kernels.gradient_tiles_last, np.ascontiguousarray(grad_out)[:, :, None], 0, 1, th,
                              tw, Z)
    if finite_only and nonfinite:
        return None
    dU = blas.stacked(Z.transpose(0, 2, 1), V)                     # (36, O, P) @ (36, P, C) → (36, O, C)
    del Z, V
    C = dU.shape[2]
    GG = matrices(grad_out.dtype)[1]
    dw9 = GG.T @ dU.reshape(_T, O * C)                              # (9, 36) @ (36, O·C) → (9, O·C)
    return np.ascontiguousarray(dw9.T).reshape(O, C, 3, 3)         # (O·C, 9) → (O, C, 3, 3)


def _fused_scratch(cin, cout, itemsize) -> int:
    """Values of scratch of the fused passes: the kernel transform, its copy with the output channels
    padded to whole vectors (at most 128 bytes), and each thread's block of tiles (V, M, a window and
    an output-transform buffer)."""
    from ..threads import get_num_threads

    wide = -(-cout * itemsize // 128) * 128 // itemsize
    return 2 * _T * cin * wide + get_num_threads() * (_T * 8 * (cin + wide) + _T * cin + 24 * wide)


def workspace(pass_, spec, shape, itemsize):
    """Scratch bytes: the padded copy (other modes), the input transform, the kernel transform, the
    products (or, where :func:`fused`, the fused passes' scratch), and for grad_input the flipped kernel
    and the full padded gradient (other modes)."""
    (pt, pb), (pl, pr) = spec.padding
    Hp, Wp = shape.H + pt + pb, shape.W + pl + pr
    zeros = spec.padding_mode == "zeros"
    cin, cout = shape.C, shape.out_channels
    if pass_ == "grad_input":
        Ho, Wo = (shape.H, shape.W) if zeros else (Hp, Wp)
        th, tw = _tiles(Ho, Wo)
        P = shape.N * th * tw
        padded = 0 if zeros else shape.N * cin * Hp * Wp
        if fused(Ho, Wo, cout, cin, itemsize):      # the correlation's input and output channels: C_out, C
            return (padded + 9 * cin * cout + _fused_scratch(cout, cin, itemsize)) * itemsize
        total = _T * cout * P + _T * cin * P + (_T + 9) * cin * cout + padded
        return total * itemsize
    th, tw = _tiles(shape.H_out, shape.W_out)
    P = shape.N * th * tw
    padded = 0 if zeros else shape.N * cin * Hp * Wp
    if pass_ == "forward" and fused(shape.H_out, shape.W_out, cin, cout, itemsize):
        return (padded + _fused_scratch(cin, cout, itemsize)) * itemsize
    if pass_ == "grad_weight":
        total = padded + _T * cin * P + _T * cout * P + _T * cout * cin + 9 * cout * cin * 2
    else:
        total = padded + _T * cin * P + _T * cout * cin + _T * cout * P
    return total * itemsize
