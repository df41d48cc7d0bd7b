"""im2col + GEMM over any number of spatial axes (vol2col for 3-d).

Forward
-------
``vol2col`` copies, for every kernel tap ``t = (t_1, …, t_d)``, the strided block of
the padded input that tap reads into a column matrix::

    cols[n, c, *t, *i] = x̃[n, c, i_1·s_1 + t_1·d_1, …, i_d·s_d + t_d·d_d]

Reshaped to ``(N, G, K, L)`` (``K = Cg·Πk``, ``L = Π out``), the convolution is one
batched product per group ``out[n, g] = W[g] @ cols[n, g]`` with ``W[g]`` of shape
``(C_out/G, K)``.

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

from ..padding import fold, pad

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)
DIMS = (1, 2, 3)    # the numbers of spatial dimensions it computes


def _tap_blocks(spec, shape):
    """``[(tap, block)]``: for every kernel tap, the slices of the padded input it reads for every output."""
    out = []
    for tap in itertools.product(*(range(k) for k in spec.kernel_size)):
        block = tuple(slice(t * d, t * d + s * (o - 1) + 1, s)
                      for t, d, s, o in zip(tap, spec.dilation, spec.stride, shape.out_spatial))
        out.append((tap, block))
    return out


def _sizes(spec, shape):
    G = shape.groups
    K = shape.in_per_group * int(np.prod(spec.kernel_size))
    L = int(np.prod(shape.out_spatial))
    return G, K, L


def vol2col(x, spec, shape):
    """(N, G, K, L) columns of the padded input x̃ (N, C, *padded)."""
    xp = pad(x, spec)
    N, C = shape.N, shape.C
    cols = np.empty((N, C) + tuple(spec.kernel_size) + tuple(shape.out_spatial), dtype=x.dtype)
    for tap, block in _tap_blocks(spec, shape):
        cols[(slice(None), slice(None)) + tap] = xp[(slice(None), slice(None)) + block]
    G, K, L = _sizes(spec, shape)
    return cols.reshape(N, G, K, L)          # (N, C, *k, *out) → (N, G, Cg·Πk, Πout): C = G·Cg leads


def col2vol(dcols, spec, shape, dtype):
    """∂L/∂x (N, C, *spatial) from ∂L/∂cols (N, G, K, L): col2vol, then the adjoint of padding."""
    N, C = shape.N, shape.C
    dcols = dcols.reshape((N, C) + tuple(spec.kernel_size) + tuple(shape.out_spatial))   # (N, G, K, L) → (N, C, *k, *out)
    dxp = np.zeros((N, C) + spec.padded_size(shape.spatial), dtype=dtype)
    for tap, block in _tap_blocks(spec, shape):
        dxp[(slice(None), slice(None)) + block] += dcols[(slice(None), slice(None)) + tap]
    return fold(dxp, spec, tuple(shape.spatial))


def _grouped_weight(w, shape):
    G = shape.groups
    return w.reshape(G, shape.out_per_group, -1)    # (C_out, Cg, *k) → (G, C_out/G, Cg·Πk)


def forward(x, w, b, spec, shape):
    """out (N, C_out, *out_spatial)."""
    N = shape.N
    cols = vol2col(x, spec, shape)                              # (N, G, K, L)
    out = np.matmul(_grouped_weight(w, shape)[None], cols)      # (1, G, Og, K) @ (N, G, K, L) → (N, G, Og, L)
    out = out.reshape((N, shape.out_channels) + tuple(shape.out_spatial))   # (N, G, Og, L) → (N, C_out, *out)
    if b is not None:
        out += b.reshape((-1,) + (1,) * spec.ndim)
    return out


def grad_input(grad_out, w, spec, shape):
    """∂L/∂x (N, C, *spatial)."""
    G, K, L = _sizes(spec, shape)
    gy = grad_out.reshape(shape.N, G, shape.out_per_group, L)   # (N, C_out, *out) → (N, G, Og, L)
    wT = _grouped_weight(w, shape).transpose(0, 2, 1)           # (G, Og, K) → (G, K, Og)
    dcols = np.matmul(wT[None], gy)                             # (1, G, K, Og) @ (N, G, Og, L) → (N, G, K, L)
    return col2vol(dcols, spec, shape, grad_out.dtype)


def grad_weight(grad_out, x, spec, shape):
    """∂L/∂w (C_out, C/groups, *kernel)."""
    G, K, L = _sizes(spec, shape)
    N = shape.N
    cols = vol2col(x, spec, shape)                              # (N, G, K, L)
    colsT = cols.transpose(1, 0, 3, 2).reshape(G, N * L, K)     # (N, G, K, L) → (G, N·L, K)
    gy = grad_out.reshape(N, G, shape.out_per_group, L).transpose(1, 2, 0, 3).reshape(G, shape.out_per_group, N * L)
    # (N, C_out, *out) → (N, G, Og, L) → (G, Og, N, L) → (G, Og, N·L)
    dw = np.matmul(gy, colsT)                                   # (G, Og, N·L) @ (G, N·L, K) → (G, Og, K)
    return dw.reshape((shape.out_channels, shape.in_per_group) + tuple(spec.kernel_size))


def workspace(pass_, spec, shape, itemsize) -> int:
    """Scratch bytes of a pass: the padded input and the columns (grad_weight: their transposed copy
    and grad_output's; grad_input: ∂cols and the padded gradient)."""
    G, K, L = _sizes(spec, shape)
    padded = shape.N * shape.C * int(np.prod(spec.padded_size(shape.spatial)))
    cols = shape.N * G * K * L
    if pass_ == "forward":
        return (padded + cols) * itemsize
    if pass_ == "grad_input":
        return (cols + 2 * padded) * itemsize
    return (padded + 2 * cols + shape.N * shape.out_channels * L) * itemsize
