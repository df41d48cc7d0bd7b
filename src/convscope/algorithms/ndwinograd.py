"""Winograd F(4×4, 3×3) in 3-d: the depth taps stacked into channels (:mod:`convscope.algorithms.ndstack`),
then one 2-d Winograd convolution (:mod:`convscope.algorithms.winograd`).

It serves kernels ``(k_D, 3, 3)`` with stride and dilation 1 across height and width and groups 1;
depth's kernel, stride, dilation and padding are any (the stacking takes them).  The 2-d passes run
through :func:`convscope.algorithms.run_forward` / :func:`~convscope.algorithms.run_backward`, which
compute a non-finite call on the exact local path.

Forward and grad_weight: the input transform of every depth plane once
---------------------------------------------------------------------
Stacking the input before the 2-d Winograd transforms every depth plane ``k_D`` times (once per tap
that reads it).  The transform is linear and acts on each plane alone, so the forward transforms the
padded planes once, ``V[t, c, (n, p, tile)] = (Bᵀ d B)[t]`` of plane ``p``, and stacks the
transformed tiles instead::

    V_X[t, (c, τ), (n, i, tile)] = V[t, c, (n, i·s_D + τ·d_D, tile)]
    M[t] = U[t] @ V_X[t]          U = G w2 Gᵀ, (36, C_out, C·k_D)

then the output transform of M gives the planes of the output (:mod:`convscope.algorithms.winograd`'s
kernels).  The weight gradient is the adjoint on the same tiles, ``∂L/∂U[t] = Σ Z[t] V_X[t]ᵀ`` with ``Z``
the transform of grad_output's tiles, summed over the blocks of planes.  A call with a non-finite value, or whose result is not finite, is computed on
:mod:`convscope.algorithms.ndstack`'s local path, as :func:`convscope.algorithms.run_forward` does for a
2-d Winograd pass.  Where the transformed planes would take more than half the workspace limit, or
where the products outweigh the transforms (``PLANES_BELOW``), both stack first, as grad_input does.
"""
from __future__ import annotations

import numpy as np

from ..padding import pad
from ..workspace import get_workspace_limit
from . import ndstack, winograd

ERROR = "global"    # Winograd's: rounding error relative to a tile's largest values (see convscope.precision)
DIMS = (2, 3)       # the numbers of spatial dimensions it computes
PLANNED_DIMS = (3,)  # where it is chosen automatically; on a 2-d convolution it is the 2-d pass itself
INNER = "winograd"
PLANES_BELOW = 0.5  # transform the planes once where C_out < this × C·k_D (the transforms outweigh the
                    # products: unet3d.enc1's forward 20 %, grad_weight 15 % faster; c3d.conv2's forward,
                    # 128 against 192, 10 % slower; c3d.conv3's grad_weight, 256 against 384, 50 % slower)


def needs(spec, shape):
    """None where the stacked 2-d convolution suits Winograd (3×3 across height and width, stride 1,
    dilation 1, groups 1), else what is wrong."""
    problem = winograd.needs(*ndstack.stacked(spec, shape))
    if problem is None or spec.ndim == 2:
        return problem
    return problem.replace(", got", " across height and width, got", 1)


def forward(x, w, b, spec, shape):
    from . import all_finite

    if not _planes_first(spec, shape, x.dtype.itemsize):
        return ndstack.forward(x, w, b, spec, shape, INNER)
    if not all_finite(x, w, b):
        return ndstack.forward(x, w, b, spec, shape, ndstack.inner_path(spec, shape))
    out = _planes_forward(x, w, b, spec, shape)
    if not all_finite(out):
        return ndstack.forward(x, w, b, spec, shape, ndstack.inner_path(spec, shape))
    return out


def grad_input(grad_out, w, spec, shape):
    return ndstack.grad_input(grad_out, w, spec, shape, INNER)


def grad_weight(grad_out, x, spec, shape):
    from . import all_finite

    if not _planes_first(spec, shape, x.dtype.itemsize):
        return ndstack.grad_weight(grad_out, x, spec, shape, INNER)
    if not all_finite(grad_out, x):
        return ndstack.grad_weight(grad_out, x, spec, shape, ndstack.inner_path(spec, shape))
    dw = _planes_grad_weight(grad_out, x, spec, shape)
    if not all_finite(dw):
        return ndstack.grad_weight(grad_out, x, spec, shape, ndstack.inner_path(spec, shape))
    return dw


def _planes_first(spec, shape, itemsize) -> bool:
    """Whether the forward and grad_weight transform the depth planes before stacking (module docstring)."""
    return (spec.ndim == 3 and shape.out_channels < PLANES_BELOW * shape.C * spec.kernel_size[0]
            and _transformed_bytes(spec, shape, itemsize) <= get_workspace_limit() // 2)


def _transformed_bytes(spec, shape, itemsize) -> int:
    """The padded planes, their contiguous copy and their transform (36 values per 4×4 output tile)."""
    th, tw = winograd._tiles(*shape.out_spatial[1:])
    planes = shape.N * spec.padded_size(shape.spatial)[0]
    H, W = spec.padded_size(shape.spatial)[1:]
    return (2 * planes * shape.C * H * W + 36 * shape.C * planes * th * tw) * itemsize


def _transformed_planes(x, spec, shape):
    """Vp (36, C, N, Dp, T): the input transform of every padded depth plane, T = th·tw tiles; and (th, tw)."""
    N, C = shape.N, shape.C
    Ho, Wo = shape.out_spatial[1:]
    if spec.padding_mode == "zeros":                  # the kernel supplies the zeros across height and width
        xp, (top, left) = pad(x, ndstack.depth_spec(spec)), (spec.padding[1][0], spec.padding[2][0])
    else:
        xp, (top, left) = pad(x, spec), (0, 0)
    Dp = xp.shape[2]
    planes = np.ascontiguousarray(xp.transpose(0, 2, 1, 3, 4)).reshape((N * Dp, C) + xp.shape[3:])
    del xp                                            # (N, C, Dp, H', W') → (N·Dp, C, H', W')
    V, (th, tw) = winograd._input_transform(planes, top, left, Ho, Wo)      # (36, C, N·Dp·T)
    return V.reshape(36, C, N, Dp, th * tw), (th, tw)


def _stacked_tiles(Vp, spec, a, c):
    """V_X (36, C·k_D, N·(c−a)·T): the transformed tiles of the planes output planes ``a:c`` read."""
    _, C, N, _, T = Vp.shape
    kD = spec.kernel_size[0]
    VX = np.empty((36, C, kD, N, c - a, T), dtype=Vp.dtype)
    for tau in range(kD):
        VX[:, :, tau] = Vp[:, :, :, ndstack._tap_planes(spec, tau, a, c)]   # (36, C, N, c−a, T)
    return VX.reshape(36, C * kD, N * (c - a) * T)


def _planes_forward(x, w, b, spec, shape):
    """out (N, C_out, *out_spatial) from the transforms of the padded depth planes (module docstring)."""
    from .kernels import _numba, winograd as kernels

    N, O = shape.N, shape.out_channels
    Ho, Wo = shape.out_spatial[1:]
    Vp, (th, tw) = _transformed_planes(x, spec, shape)
    U = winograd.transform_weight(ndstack._weight2(w, shape))             # (36, O, C·k_D)
    bias = np.zeros(O, dtype=x.dtype) if b is None else np.ascontiguousarray(b, dtype=x.dtype)
    out = np.empty((N, O) + tuple(shape.out_spatial), dtype=x.dtype)
    for a, c in ndstack._blocks("forward", spec, shape, x.dtype.itemsize)[0]:
        M = np.matmul(U, _stacked_tiles(Vp, spec, a, c))                   # (36, O, C·k_D) @ (36, C·k_D, P) → (36, O, P)
        y = np.empty((N * (c - a), O, Ho, Wo), dtype=x.dtype)
        _numba.launch(kernels.output_tiles, M, bias, th, tw, y)
        out[:, :, a:c] = y.reshape(N, c - a, O, Ho, Wo).transpose(0, 2, 1, 3, 4)
    return out


def _planes_grad_weight(grad_out, x, spec, shape):
    """∂L/∂w by the adjoint of the tile formula (:func:`convscope.algorithms.winograd.grad_weight`) on the
    stacked transformed tiles: ∂L/∂w2 = (G⊗G)ᵀ · Σ_blocks Z V_Xᵀ, Z = (A⊗A) of grad_output's tiles."""
    from .kernels import _numba, winograd as kernels

    N, O, C, kD = shape.N, shape.out_channels, shape.C, spec.kernel_size[0]
    Vp, (th, tw) = _transformed_planes(x, spec, shape)
    dU = np.zeros((36, O, C * kD), dtype=grad_out.dtype)
    for a, c in ndstack._blocks("grad_weight", spec, shape, grad_out.dtype.itemsize)[0]:
        Z = np.empty((36, O, N * (c - a) * th * tw), dtype=grad_out.dtype)
        _numba.launch(kernels.gradient_tiles, ndstack._moved(grad_out, slice(a, c)), th, tw, Z)
        dU += np.matmul(Z, _stacked_tiles(Vp, spec, a, c).transpose(0, 2, 1))   # (36, O, P) @ (36, P, C·k_D)
    GG = winograd.matrices(grad_out.dtype)[1]
    dw9 = GG.T @ dU.reshape(36, O * C * kD)                                  # (9, 36) @ (36, O·C·k_D) → (9, …)
    return np.ascontiguousarray(dw9.T).reshape((O, C) + tuple(spec.kernel_size))   # (O·C·k_D, 9) → (O, C, k_D, 3, 3)


def workspace(pass_, spec, shape, itemsize) -> int:
    stacked = ndstack.workspace(pass_, spec, shape, itemsize, INNER)
    if pass_ == "grad_input" or not _planes_first(spec, shape, itemsize):
        return stacked
    transformed = _transformed_bytes(spec, shape, itemsize)
    (a, c), = ndstack._blocks("forward", spec, shape, itemsize)[0][:1]
    P = shape.N * (c - a) * int(np.prod(winograd._tiles(*shape.out_spatial[1:])))
    block = 36 * P * (shape.C * spec.kernel_size[0] + shape.out_channels) + shape.N * (c - a) * shape.out_channels \
        * int(np.prod(shape.out_spatial[1:]))
    return max(stacked, transformed + block * itemsize + 36 * shape.out_channels * shape.C * spec.kernel_size[0]
               * itemsize)


def describe(spec, shape, pass_) -> str:
    return ndstack.describe(spec, shape, pass_, INNER)
