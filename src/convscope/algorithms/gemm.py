"""The general fast path: im2col + one batched matrix product into BLAS.

Forward
-------
``im2col`` copies, for every kernel tap ``(u, v)``, the strided slice of the
padded input that tap reads into a column matrix::

    cols[n, g, (c, u, v), (i, j)] = x̃[n, g·Cg + c, i·sH + u·dH, j·sW + v·dW]

so the convolution becomes, per sample ``n`` and group ``g``, one product
``out[n, g] = W[g] @ cols[n, g]`` with ``W[g]`` of shape ``(C_out/groups, Cg·kH·kW)``.

Backward (the adjoints of the two linear maps above)
----------------------------------------------------
* ``∂L/∂W[g] = Σ_n grad_out[n, g] @ cols[n, g]ᵀ``
* ``∂L/∂cols[n, g] = W[g]ᵀ @ grad_out[n, g]``, and ``col2im`` (the adjoint of
  ``im2col``) adds every tap's column block back onto the strided slice it was
  copied from; :func:`convscope.padding.fold` (the adjoint of padding) then
  sends the border's gradient to the pixels the border copied.

The only Python loops run over the ``kH·kW`` kernel taps.
"""
from __future__ import annotations

import numpy as np

from ..padding import fold, pad


def _tap_slices(spec, shape, u, v):
    """The (rows, cols) slices of the padded input that tap (u, v) reads for every output."""
    (sH, sW), (dH, dW) = spec.stride, spec.dilation
    r0, c0 = u * dH, v * dW
    return (slice(r0, r0 + sH * (shape.H_out - 1) + 1, sH),
            slice(c0, c0 + sW * (shape.W_out - 1) + 1, sW))


def _is_pointwise(spec) -> bool:
    return (spec.kernel_size == (1, 1) and spec.stride == (1, 1)
            and spec.padding == ((0, 0), (0, 0)))


def im2col(x, spec, shape):
    """cols (N, G, Cg·kH·kW, H_out·W_out) from x (N, C, H, W)."""
    N, G, Cg = shape.N, shape.groups, shape.in_per_group
    kH, kW = spec.kernel_size
    L = shape.H_out * shape.W_out
    if _is_pointwise(spec):
        return x.reshape(N, G, Cg, L)                               # a view: no copy
    xp = pad(x, spec)                                               # (N, C, Hp, Wp)
    cols = np.empty((N, G, Cg, kH, kW, shape.H_out, shape.W_out), dtype=x.dtype)
    for u in range(kH):
        for v in range(kW):
            rs, cs = _tap_slices(spec, shape, u, v)
            # (N, C, H_out, W_out) → (N, G, Cg, H_out, W_out)
            cols[:, :, :, u, v] = xp[:, :, rs, cs].reshape(N, G, Cg, shape.H_out, shape.W_out)
    return cols.reshape(N, G, Cg * kH * kW, L)


def col2im(dcols, spec, shape):
    """Adjoint of :func:`im2col`: (N, G, Cg·kH·kW, H_out·W_out) → (N, C, H, W)."""
    N, C = shape.N, shape.C
    kH, kW = spec.kernel_size
    if _is_pointwise(spec):
        return dcols.reshape(N, C, shape.H, shape.W)
    (pt, pb), (pl, pr) = spec.padding
    # (N, G, Cg, kH, kW, H_out, W_out)
    d = dcols.reshape(N, shape.groups, shape.in_per_group, kH, kW, shape.H_out, shape.W_out)
    dxp = np.zeros((N, C, shape.H + pt + pb, shape.W + pl + pr), dtype=dcols.dtype)
    for u in range(kH):
        for v in range(kW):
            rs, cs = _tap_slices(spec, shape, u, v)
            dxp[:, :, rs, cs] += d[:, :, :, u, v].reshape(N, C, shape.H_out, shape.W_out)
    return fold(dxp, spec, (shape.H, shape.W))


def _weight_matrix(w, shape):
    """(C_out, Cg, kH, kW) → (G, C_out/G, Cg·kH·kW)."""
    return w.reshape(shape.groups, shape.out_per_group, w[0].size)


def _grad_matrix(grad_out, shape):
    """(N, C_out, H_out, W_out) → (N, G, C_out/G, H_out·W_out)."""
    return grad_out.reshape(shape.N, shape.groups, shape.out_per_group, shape.H_out * shape.W_out)


def forward(x, w, b, spec, shape):
    cols = im2col(x, spec, shape)                                   # (N, G, K, L)
    out = np.matmul(_weight_matrix(w, shape), cols)                 # (N, G, C_out/G, L)
    out = out.reshape(shape.N, shape.out_channels, shape.H_out, shape.W_out)
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def grad_input(grad_out, w, spec, shape):
    wt = _weight_matrix(w, shape).transpose(0, 2, 1)                # (G, K, C_out/G)
    dcols = np.matmul(wt, _grad_matrix(grad_out, shape))            # (N, G, K, L)
    return col2im(dcols, spec, shape)


def grad_weight(grad_out, x, spec, shape):
    cols = im2col(x, spec, shape)                                   # (N, G, K, L)
    per_sample = np.matmul(_grad_matrix(grad_out, shape), cols.transpose(0, 1, 3, 2))  # (N, G, C_out/G, K)
    dw = per_sample.sum(axis=0)                                     # (G, C_out/G, K)
    return dw.reshape(shape.out_channels, shape.in_per_group, *spec.kernel_size)
