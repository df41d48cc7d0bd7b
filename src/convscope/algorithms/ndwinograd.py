"""Winograd F(4×4, 3×3) in 3-d: the depth taps stacked into channels (:mod:`convscope.algorithms.ndstack`),
each depth plane transformed once, then the 2-d Winograd products (:mod:`convscope.algorithms.winograd`).

It serves kernels ``(k_D, 3, 3)`` with stride and dilation 1 across height and width and groups 1;
depth's kernel, stride, dilation and padding are any.  On a 2-d convolution it is the 2-d Winograd pass.

The stacked transform
---------------------
With ``ndstack``'s stacking ``X[(n, i), (c, τ)] = x̃_D[n, c, i·s_D + τ·d_D]`` the 3-d convolution is the
2-d one of ``X`` with ``W2[o, (c, τ)] = w[o, c, τ]``.  The input transform is linear and acts on each
depth plane alone, so the transformed tiles of ``X`` are those of the planes it copies::

    V_X[t, (c, τ), (n, i, tile)] = (Bᵀ d B)[t] of the tile of plane i·s_D + τ·d_D − p_D of x
    M[t] = V_X[t]ᵀ @ U[t]         U = G W2 Gᵀ, (36, C·k_D, C_out); M (36, P, C_out), channels last
    y[n, :, i] = Aᵀ M A           over the tiles of (n, i)

:func:`convscope.algorithms.kernels.ndwinograd.stacked_input_tiles` transforms every plane once and
writes it where each tap reads it (no stacked copy, no plane transformed ``k_D`` times, zeros where a
tap reads the depth padding); the products run in BLAS, V_X read transposed, and the output transform
(:mod:`convscope.algorithms.kernels.winograd`, channels last as the 2-d path's) writes each output
plane in place.  A block of output planes at a time, as many as ``BLOCK_BYTES`` and the workspace
limit hold.

Backward
--------
* ``∂L/∂w``: the adjoint of the tile formula on the same transformed tiles,
  ``∂L/∂W2 = (G⊗G)ᵀ · Σ_tiles Z[t] V_X[t]ᵀ`` with ``Z`` the transform of grad_output's tiles
  (:func:`convscope.algorithms.winograd.grad_weight`'s formula).
* ``∂L/∂x`` (depth stride 1, ``C_out ≤ C``): the full correlation of grad_output with the kernel flipped along its
  three axes and its channel axes swapped, ``∂L/∂x̃[n, c, p] = Σ_{o, τ} g[n, o, p − (k_D−1)·d_D + τ·d_D]
  · w[o, c, k_D−1−τ]`` (height and width as in :mod:`convscope.algorithms.winograd`'s grad_input): the
  same stacked transform of grad_output, with zero padding the interior of x̃ directly, other modes the
  whole of x̃ then :func:`convscope.padding.fold`.  It writes grad_output's transform ``k_D`` times
  (``C_out·k_D`` stacked channels).  With more output channels than input channels, or a depth stride
  above 1, the adjoint of the stacking runs instead: the 2-d Winograd input gradient of the stacked
  input, ``M = Uᵀ V_g`` with grad_output's planes transformed once (``C_out`` channels), whose ``C·k_D``
  channels' tiles are summed onto the planes they were stacked from and only then transformed back
  (:func:`~convscope.algorithms.kernels.ndwinograd.unstacked_output_tiles`).

A call with a non-finite value, or whose result is not finite, is computed on ``ndstack``'s local
path, as :func:`convscope.algorithms.run_forward` does for a 2-d Winograd pass.  The transforms count
the non-finite values in the planes they read and the rows they write, so only the weight, the weight
gradient and a folded or unstacked input gradient are summed apart.
"""
from __future__ import annotations

import numpy as np

from .. import blas
from ..padding import fold, pad
from ..workspace import get_workspace_limit
from . import ndstack, winograd

ERROR = "global"    # Winograd's: rounding error relative to a tile's largest values (see convscope.precision)
DIMS = (2, 3)       # the numbers of spatial dimensions it computes
PLANNED_DIMS = (3,)  # where it is chosen automatically; on a 2-d convolution it is the 2-d pass itself
INNER = "winograd"
BLOCK_BYTES = 64 << 20  # transformed tiles and products of one block of output planes (bench/README.md)


def needs(spec, shape):
    """None where the stacked 2-d convolution suits Winograd (3×3 across height and width, stride 1,
    dilation 1, groups 1), else what is wrong."""
    problem = winograd.needs(*ndstack.stacked(spec, shape))
    if problem is None or spec.ndim == 2:
        return problem
    return problem.replace(", got", " across height and width, got", 1)


# --------------------------------------------------------------------------- the passes


def forward(x, w, b, spec, shape):
    from . import all_finite

    if spec.ndim == 2:
        return ndstack.forward(x, w, b, spec, shape, INNER)
    if all_finite(w, b):                                 # x and out: checked by the transforms
        src, front, top, left = _source(x, spec)
        out = _correlate(src, ndstack._weight2(w, shape), spec.stride[0], spec.dilation[0], (front, top, left),
                         shape.out_spatial, b, blocks("forward", spec, shape, x.dtype.itemsize), finite_only=True)
        if out is not None:
            return out
    return ndstack.forward(x, w, b, spec, shape, ndstack.inner_path(spec, shape))


def grad_input(grad_out, w, spec, shape):
    from . import all_finite

    if spec.ndim == 2:
        return ndstack.grad_input(grad_out, w, spec, shape, INNER)
    if all_finite(w):                                    # grad_out and ∂L/∂x: checked by the passes
        pass_ = _flipped_input_gradient if _flipped(spec, shape) else _unstacked_input_gradient
        dx = pass_(grad_out, w, spec, shape, finite_only=True)
        if dx is not None:
            return dx
    return ndstack.grad_input(grad_out, w, spec, shape, ndstack.inner_path(spec, shape))


def grad_weight(grad_out, x, spec, shape):
    if spec.ndim == 2:
        return ndstack.grad_weight(grad_out, x, spec, shape, INNER)
    dw = _stacked_grad_weight(grad_out, x, spec, shape, finite_only=True)   # checks x, grad_out and ∂L/∂w
    if dw is not None:
        return dw
    return ndstack.grad_weight(grad_out, x, spec, shape, ndstack.inner_path(spec, shape))


def _flipped(spec, shape) -> bool:
    """Whether grad_input is the stacked transform of grad_output (module docstring): a depth stride of 1
    and no more output channels than input channels (their k_D-fold stacking is what it writes)."""
    return spec.ndim == 3 and spec.stride[0] == 1 and shape.out_channels <= shape.C


# --------------------------------------------------------------------------- blocks under the limit


def _budget(pass_, spec, shape, itemsize):
    """(fixed bytes, bytes per plane, planes) of a 3-d pass: the padded input (other modes; grad_input:
    the padded gradient and fold's copy) and the weight's transforms (U, ∂U); per plane of the blocks
    it loops over, the stacked transformed tiles and their products (module docstring)."""
    N, C, O, kD = shape.N, shape.C, shape.out_channels, spec.kernel_size[0]
    zeros = spec.padding_mode == "zeros"
    padded = N * C * int(np.prod(spec.padded_size(shape.spatial)))
    stacked, products, planes, grid = C, O, shape.out_spatial[0], shape.out_spatial[1:]
    own = 0 if zeros else padded
    if pass_ == "grad_input":
        own *= 2
        grid = shape.spatial[1:] if zeros else spec.padded_size(shape.spatial)[1:]
        if _flipped(spec, shape):                          # a correlation of grad_output with C outputs
            stacked, products = O, C
            planes = shape.spatial[0] if zeros else spec.padded_size(shape.spatial)[0]
    th, tw = winograd._tiles(*grid)
    per_plane = 36 * N * th * tw * (stacked * kD + products)
    return (own + 2 * 36 * O * C * kD) * itemsize, per_plane * itemsize, planes


def blocks(pass_, spec, shape, itemsize) -> list[tuple[int, int]]:
    """[(a, b)]: the blocks of planes a 3-d pass loops over, each holding at most ``BLOCK_BYTES`` of
    transformed tiles and products and fitting what the workspace limit leaves; one plane at least."""
    fixed, per_plane, planes = _budget(pass_, spec, shape, itemsize)
    room = min(BLOCK_BYTES, get_workspace_limit() - fixed)
    step = int(max(1, min(planes, room // max(per_plane, 1))))
    return [(a, min(planes, a + step)) for a in range(0, planes, step)]


def workspace(pass_, spec, shape, itemsize) -> int:
    """Scratch bytes of a pass: :func:`_budget`'s fixed bytes and its first block's."""
    if spec.ndim == 2:
        return ndstack.workspace(pass_, spec, shape, itemsize, INNER)
    fixed, per_plane, _ = _budget(pass_, spec, shape, itemsize)
    a, b = (blocks(pass_, spec, shape, itemsize) or [(0, 0)])[0]
    return fixed + (b - a) * per_plane


# --------------------------------------------------------------------------- the stacked transform


def _source(x, spec):
    """(the C-contiguous array the transform reads, the depth, top and left zero padding it fuses):
    zero padding is fused, the other modes pad first."""
    if spec.padding_mode == "zeros":
        return np.ascontiguousarray(x), spec.padding[0][0], spec.padding[1][0], spec.padding[2][0]
    return pad(x, spec), 0, 0, 0


class _Scratch:
    """One buffer that a pass's blocks of planes reuse (the first block is the largest): touched once
    per call rather than once per block."""

    def __init__(self, dtype):
        self.dtype, self.flat = dtype, None

    def take(self, shape):
        """A C-contiguous array of ``shape`` on the buffer (grown if it is too small), contents undefined."""
        size = int(np.prod(shape))
        if self.flat is None or self.flat.size < size:
            self.flat = np.empty(size, dtype=self.dtype)
        return self.flat[:size].reshape(shape)


def _correlate(src, w2, s, d, offsets, out_spatial, bias, plane_blocks, finite_only=False):
    """out (N, O, D', H', W'): Σ_{c, τ, u, v} src[n, c, i·s + τ·d − front, h − top + u, q − left + v]
    · w2[o, c·k_D + τ, u, v] (+ bias[o]), zeros outside src (N, C, D, H, W); ``offsets`` is
    (front, top, left), ``plane_blocks`` the blocks of output planes i.  With ``finite_only``, None
    as soon as a plane read or written holds a value that is not finite."""
    from .kernels import _numba, ndwinograd as nd_kernels, winograd as kernels

    N, C = src.shape[:2]
    O, kD = w2.shape[0], w2.shape[1] // C
    planes, Ho, Wo = out_spatial
    th, tw = winograd._tiles(Ho, Wo)
    T = th * tw
    U = winograd.transform_weight_last(w2)                                 # (36, C·k_D, O)
    b = np.zeros(O, dtype=src.dtype) if bias is None else np.ascontiguousarray(bias, dtype=src.dtype)
    out = np.empty((N, O, planes, Ho, Wo), dtype=src.dtype)
    VX_all, M_all = _Scratch(src.dtype), _Scratch(src.dtype)
    for a, c in plane_blocks:
        nb = c - a
        VX = VX_all.take((36, C * kD, N * nb * T))
        nonfinite = _numba.launch(nd_kernels.stacked_input_tiles, src, *offsets, s, d, kD, a, nb, th, tw, VX)
        if finite_only and nonfinite:
            return None
        # (36, P, C·k_D) @ (36, C·k_D, O) → (36, P, O): the products channels last, for the output transform
        M = blas.stacked(VX.transpose(0, 2, 1), U, out=M_all.take((36, N * nb * T, O)))
        nonfinite = _numba.launch(kernels.output_tiles_last, M, b, th, tw, out, a, nb)   # out[:, :, a:c]
        if finite_only and nonfinite:
            return None
    return out


def _flipped_input_gradient(grad_out, w, spec, shape, finite_only=False):
    """∂L/∂x (N, C, D, H, W) of a depth-stride-1 convolution as the correlation of grad_output with
    the flipped kernel (module docstring); with ``finite_only``, None if grad_output or ∂L/∂x holds a
    value that is not finite."""
    from . import all_finite

    C, O, kD, dD = shape.C, shape.out_channels, spec.kernel_size[0], spec.dilation[0]
    w2 = np.ascontiguousarray(w[:, :, ::-1, ::-1, ::-1].transpose(1, 0, 2, 3, 4)).reshape((C, O * kD, 3, 3))
    # (O, C, k_D, 3, 3) flipped along its three axes, channel axes swapped → (C, O, k_D, 3, 3) → (C, O·k_D, 3, 3)
    g = np.ascontiguousarray(grad_out)
    full = (kD - 1) * dD
    plane_blocks = blocks("grad_input", spec, shape, g.dtype.itemsize)
    if spec.padding_mode == "zeros":                       # the interior of x̃ only
        (p0, _), (pt, _), (pl, _) = spec.padding
        return _correlate(g, w2, 1, dD, (full - p0, 2 - pt, 2 - pl), tuple(shape.spatial), None, plane_blocks,
                          finite_only=finite_only)
    dxp = _correlate(g, w2, 1, dD, (full, 2, 2), spec.padded_size(shape.spatial), None, plane_blocks,
                     finite_only=finite_only)
    if dxp is None:
        return None
    dx = fold(dxp, spec, tuple(shape.spatial))
    return None if finite_only and not all_finite(dx) else dx      # fold's sums can overflow


def _unstacked_input_gradient(grad_out, w, spec, shape, finite_only=False):
    """∂L/∂x (N, C, D, H, W): the 2-d Winograd input gradient of the stacked input, each plane of
    grad_output transformed once, the taps' transformed tiles summed onto the planes they were
    stacked from, then transformed back (module docstring); with ``finite_only``, None if
    grad_output (checked by its transform) or ∂L/∂x holds a value that is not finite."""
    from . import all_finite
    from .kernels import _numba, ndwinograd as nd_kernels

    N, O, C, kD = shape.N, shape.out_channels, shape.C, spec.kernel_size[0]
    w2 = ndstack._weight2(w, shape)                                        # (O, C·k_D, 3, 3)
    U = winograd.transform_weight(np.ascontiguousarray(w2[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)))
    # (O, C·k_D, 3, 3) flipped across, channel axes swapped → (C·k_D, O, 3, 3) → U (36, C·k_D, O)
    g = np.ascontiguousarray(grad_out)
    zeros = spec.padding_mode == "zeros"
    if zeros:                                            # the interior of x̃ only
        (front, _), (pt, _), (pl, _) = spec.padding
        top, left, out = 2 - pt, 2 - pl, np.zeros((N, C) + tuple(shape.spatial), dtype=g.dtype)
    else:
        front, top, left = 0, 2, 2
        out = np.zeros((N, C) + spec.padded_size(shape.spatial), dtype=g.dtype)
    th, tw = winograd._tiles(*out.shape[3:])
    T = th * tw
    V_all, M_all = _Scratch(g.dtype), _Scratch(g.dtype)
    for a, c in blocks("grad_input", spec, shape, g.dtype.itemsize):
        nb = c - a
        V = V_all.take((36, O, N * nb * T))
        nonfinite = _numba.launch(nd_kernels.stacked_input_tiles, g, 0, top, left, 1, 1, 1, a, nb, th, tw, V)
        if finite_only and nonfinite:
            return None
        M = blas.stacked(U, V, out=M_all.take((36, C * kD, N * nb * T)))   # (36, C·k_D, O) @ (36, O, P) → (36, C·k_D, P)
        _numba.launch(nd_kernels.unstacked_output_tiles, M, front, spec.stride[0], spec.dilation[0], kD, a, nb,
                      th, tw, out)
    dx = out if zeros else fold(out, spec, tuple(shape.spatial))
    return None if finite_only and not all_finite(dx) else dx      # the taps' sums are checked here


def _stacked_grad_weight(grad_out, x, spec, shape, finite_only=False):
    """∂L/∂w (C_out, C, k_D, 3, 3) = (G⊗G)ᵀ · Σ_blocks Z V_Xᵀ (module docstring); with ``finite_only``,
    None if a plane of x or grad_output the transforms read, or ∂L/∂w, holds a value that is not finite."""
    from . import all_finite
    from .kernels import _numba, ndwinograd as nd_kernels, winograd as kernels

    N, O, C, kD = shape.N, shape.out_channels, shape.C, spec.kernel_size[0]
    th, tw = winograd._tiles(*shape.out_spatial[1:])
    T = th * tw
    src, front, top, left = _source(x, spec)
    g = np.ascontiguousarray(grad_out)
    dU = np.zeros((36, O, C * kD), dtype=grad_out.dtype)
    VX_all, Z_all = _Scratch(x.dtype), _Scratch(grad_out.dtype)
    for a, c in blocks("grad_weight", spec, shape, x.dtype.itemsize):
        nb = c - a
        VX = VX_all.take((36, C * kD, N * nb * T))
        nonfinite = _numba.launch(nd_kernels.stacked_input_tiles, src, front, top, left, spec.stride[0],
                                  spec.dilation[0], kD, a, nb, th, tw, VX)
        Z = Z_all.take((36, N * nb * T, O))                               # channels last
        nonfinite += _numba.launch(kernels.gradient_tiles_last, g, a, nb, th, tw, Z)   # g[:, :, a:c]
        if finite_only and nonfinite:
            return None
        # (36, O, P) @ (36, P, C·k_D), Σ over blocks
        blas.stacked(Z.transpose(0, 2, 1), VX.transpose(0, 2, 1), out=dU, accumulate=True)
    GG = winograd.matrices(grad_out.dtype)[1]
    dw9 = GG.T @ dU.reshape(36, O * C * kD)                                  # (9, 36) @ (36, O·C·k_D) → (9, …)
    dw = np.ascontiguousarray(dw9.T).reshape((O, C) + tuple(spec.kernel_size))  # (O·C·k_D, 9) → (O, C, k_D, 3, 3)
    return None if finite_only and not all_finite(dw) else dw      # the products' sums can overflow


def describe(spec, shape, pass_) -> str:
    text = ndstack.describe(spec, shape, pass_, INNER)
    if spec.ndim == 2:
        return text
    if pass_ == "grad_input" and not _flipped(spec, shape):
        return text + ", each plane of grad_output transformed once, the taps summed before the transform back"
    return text + ", each depth plane transformed once"
