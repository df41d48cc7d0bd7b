"""im2col + GEMM over any number of spatial axes (vol2col for 3-d).

Forward
-------
``vol2col`` copies, for every kernel tap ``t = (t_1, …, t_d)``, the strided block of
the padded input that tap reads into a column matrix::

    cols[n, c, *t, *i] = x̃[n, c, i_1·s_1 + t_1·d_1, …, i_d·s_d + t_d·d_d]

Reshaped to ``(N, G, K, L)`` (``K = Cg·Πk``, ``L = Π out``), the convolution is one
batched product per group ``out[n, g] = W[g] @ cols[n, g]`` with ``W[g]`` of shape
``(C_out/G, K)``.  The columns are built for a block of output planes (positions along the first
spatial axis) at a time, as many as fit ``BLOCK_BYTES``, so that a block's columns are still in
cache when its product reads them; every pass loops over the same blocks.

Backward (the adjoints of the two linear maps above)
----------------------------------------------------
* ``∂L/∂W[g] = Σ_n grad_out[n, g] @ cols[n, g]ᵀ``: one product per group of width N·L
  (samples and positions folded together);
* ``∂L/∂cols[n, g] = W[g]ᵀ @ grad_out[n, g]``, and ``col2vol`` (the adjoint of
  ``vol2col``) adds every tap's block back onto the strided block it was copied from;
  :func:`convscope.padding.fold` (the adjoint of padding) then sends the border's
  gradient to the pixels the border copied.

The padded input holds real zeros, so a non-finite weight tap reading zero padding gives
NaN (0·Inf), as the definition and torch's native kernels do.  The only Python loops
run over the ``Πk`` kernel taps.
"""
from __future__ import annotations

import itertools

import numpy as np

from .. import blas
from ..padding import fold, pad
from .kernels import channel_bias

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)
DIMS = (1, 2, 3)    # the numbers of spatial dimensions it computes
PLANNED_DIMS = (3,)  # where it is chosen automatically (and tuned); in 1-d and 2-d only when forced: gemm is faster


BLOCK_BYTES = 8 << 20   # the columns of one block of output planes stay under this (cache-sized)


def _planes(spec, shape, itemsize) -> list[tuple[int, int]]:
    """Blocks ``(a, b)`` of output positions along the first spatial axis whose columns fit
    ``BLOCK_BYTES`` (at least one position each)."""
    out0 = shape.out_spatial[0]
    per_plane = (shape.N * shape.C * int(np.prod(spec.kernel_size)) * int(np.prod(shape.out_spatial[1:]))
                 * itemsize)
    step = max(1, int(BLOCK_BYTES // max(per_plane, 1)))
    return [(a, min(out0, a + step)) for a in range(0, out0, step)]


def _tap_blocks(spec, shape, a, b):
    """``[(tap, block)]``: for every kernel tap, the slices of the padded input it reads for the
    outputs ``a:b`` of the first spatial axis and every output of the others."""
    first = (b - a,) + tuple(shape.out_spatial[1:])
    starts = (a,) + (0,) * (spec.ndim - 1)
    out = []
    for tap in itertools.product(*(range(k) for k in spec.kernel_size)):
        block = tuple(slice(t * d + i0 * s, t * d + (i0 + o - 1) * s + 1, s)
                      for t, d, s, o, i0 in zip(tap, spec.dilation, spec.stride, first, starts))
        out.append((tap, block))
    return out


def _sizes(spec, shape, planes=None):
    """(G, K, L): groups, column height ``Cg·Πk`` and width (outputs of ``planes`` planes, default all)."""
    G = shape.groups
    K = shape.in_per_group * int(np.prod(spec.kernel_size))
    rest = int(np.prod(shape.out_spatial[1:]))
    return G, K, rest * (shape.out_spatial[0] if planes is None else planes)


def _vol2col(xp, spec, shape, a, b):
    """(N, G, K, L_block) columns of the padded input xp (N, C, *padded) for output planes ``a:b``."""
    N, C = shape.N, shape.C
    cols = np.empty((N, C) + tuple(spec.kernel_size) + (b - a,) + tuple(shape.out_spatial[1:]), dtype=xp.dtype)
    for tap, block in _tap_blocks(spec, shape, a, b):
        cols[(slice(None), slice(None)) + tap] = xp[(slice(None), slice(None)) + block]
    G, K, L = _sizes(spec, shape, b - a)
    return cols.reshape(N, G, K, L)          # (N, C, *k, b−a, *out[1:]) → (N, G, Cg·Πk, L): C = G·Cg leads


def _col2vol(dxp, dcols, spec, shape, a, b):
    """Add ∂L/∂cols (N, G, K, L_block) of output planes ``a:b`` into ∂L/∂x̃ (N, C, *padded) (col2vol)."""
    N, C = shape.N, shape.C
    dcols = dcols.reshape((N, C) + tuple(spec.kernel_size) + (b - a,) + tuple(shape.out_spatial[1:]))
    # (N, G, K, L) → (N, C, *k, b−a, *out[1:])
    for tap, block in _tap_blocks(spec, shape, a, b):
        dxp[(slice(None), slice(None)) + block] += dcols[(slice(None), slice(None)) + tap]


def _grouped_weight(w, shape):
    return w.reshape(shape.groups, shape.out_per_group, -1)    # (C_out, Cg, *k) → (G, C_out/G, Cg·Πk)


def _grouped_grad(grad_out, shape, a, b):
    """grad_out's output planes ``a:b`` as (N, G, C_out/G, L_block)."""
    block = grad_out[:, :, a:b]                                 # (N, C_out, b−a, *out[1:])
    L = (b - a) * int(np.prod(shape.out_spatial[1:]))
    return block.reshape(shape.N, shape.groups, shape.out_per_group, L)


def forward(x, w, b, spec, shape):
    """out (N, C_out, *out_spatial)."""
    N = shape.N
    xp = pad(x, spec)                                           # (N, C, *padded)
    wg = _grouped_weight(w, shape)[None]                        # (1, G, Og, K)
    out = np.empty((N, shape.out_channels) + tuple(shape.out_spatial), dtype=x.dtype)
    if b is not None:
        channel_bias(out, b)                                    # the products are added to the bias
    for a, c in _planes(spec, shape, x.dtype.itemsize):
        G, _, L = _sizes(spec, shape, c - a)
        block = out[:, :, a:c]                                  # (N, C_out, c−a, *out[1:]) view
        block.shape = (N, G, shape.out_per_group, L)            # (N, G, Og, L_block), still a view
        # (1, G, Og, K) @ (N, G, K, L) into the block, added to the bias there
        blas.stacked(wg, _vol2col(xp, spec, shape, a, c), block, accumulate=b is not None)
    return out


def grad_input(grad_out, w, spec, shape):
    """∂L/∂x (N, C, *spatial): ∂cols = Wᵀ @ grad_out per block of planes, col2vol, then the padding's adjoint."""
    wT = _grouped_weight(w, shape).transpose(0, 2, 1)[None]    # (G, Og, K) → (1, G, K, Og)
    dxp = np.zeros((shape.N, shape.C) + spec.padded_size(shape.spatial), dtype=grad_out.dtype)
    for a, b in _planes(spec, shape, grad_out.dtype.itemsize):
        dcols = np.matmul(wT, _grouped_grad(grad_out, shape, a, b))   # (1, G, K, Og) @ (N, G, Og, L) → (N, G, K, L)
        _col2vol(dxp, dcols, spec, shape, a, b)
    return fold(dxp, spec, tuple(shape.spatial))


def grad_weight(grad_out, x, spec, shape):
    """∂L/∂w (C_out, C/groups, *kernel): Σ over blocks of planes of grad_out @ colsᵀ."""
    G, K, _ = _sizes(spec, shape)
    N, Og = shape.N, shape.out_per_group
    xp = pad(x, spec)
    dw = np.zeros((G, Og, K), dtype=grad_out.dtype)
    for a, b in _planes(spec, shape, x.dtype.itemsize):
        cols = _vol2col(xp, spec, shape, a, b)                  # (N, G, K, L)
        L = cols.shape[-1]
        colsT = cols.transpose(1, 0, 3, 2).reshape(G, N * L, K)                        # → (G, N·L, K)
        gy = _grouped_grad(grad_out, shape, a, b).transpose(1, 2, 0, 3).reshape(G, Og, N * L)
        # (N, G, Og, L) → (G, Og, N, L) → (G, Og, N·L)
        dw += blas.few_rows(gy, colsT)                          # (G, Og, N·L) @ (G, N·L, K) → (G, Og, K)
    return dw.reshape((shape.out_channels, shape.in_per_group) + tuple(spec.kernel_size))


def workspace(pass_, spec, shape, itemsize) -> int:
    """Scratch bytes of a pass: the padded input and one block's columns (grad_weight: their
    transposed copy and grad_output's; grad_input: ∂cols and the padded gradient)."""
    a, b = _planes(spec, shape, itemsize)[0]
    G, K, L = _sizes(spec, shape, b - a)
    padded = shape.N * shape.C * int(np.prod(spec.padded_size(shape.spatial)))
    cols = shape.N * G * K * L
    if pass_ == "forward":
        return (padded + cols) * itemsize
    if pass_ == "grad_input":
        return (cols + 2 * padded) * itemsize
    return (padded + 2 * cols + shape.N * shape.out_channels * L) * itemsize
