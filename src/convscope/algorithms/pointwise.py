"""1×1 convolutions: a matrix product over channels, no im2col.

A 1×1 kernel reads one pixel per output, so with ``x_s`` the padded input
subsampled at the stride (``x_s[n, c, i, j] = x̃[n, c, i·sH, j·sW]``, a view of
``x`` itself when stride is 1 and there is no padding)::

    out[n, g, :, (i, j)] = W[g] @ x_s[n, g, :, (i, j)]            W[g]: (C_out/G, C/G)
    ∂L/∂x_s[n, g]        = W[g]ᵀ @ grad_out[n, g]
    ∂L/∂W[g]             = Σ_n grad_out[n, g] @ x_s[n, g]ᵀ

and ∂L/∂x is ∂L/∂x_s scattered back to the pixels the subsampling read (the
adjoint of the subsampling), then :func:`convscope.padding.fold` for the
padding.  The products are gemm's pointwise layouts (per sample, or batch
folded when images are small; :func:`convscope.algorithms.gemm.batch_folded`), run on
``x_s`` as a stride-1 unpadded convolution.
"""
from __future__ import annotations

import functools

import numpy as np

from ..padding import fold, pad
from . import gemm

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)


def needs(spec, shape):
    """None if the kernel is 1×1, else what the path needs."""
    if spec.kernel_size != (1, 1):
        return f"a 1×1 kernel, got kernel_size={spec.kernel_size}"
    return None


def describe(spec, shape, pass_) -> str:
    return gemm.layout_text(spec, shape, pass_, with_phases=False)


def _trivial(spec) -> bool:
    return spec.stride == (1, 1) and spec.padding == ((0, 0), (0, 0))


@functools.lru_cache(maxsize=256)
def _inner(spec, shape):
    """The stride-1, unpadded 1×1 convolution on the subsampled input, and its shape."""
    flat = spec.pointwise()
    return flat, shape._replace(H=shape.H_out, W=shape.W_out)


def _subsample(x, spec, shape):
    """x_s (N, C, H_out, W_out): the pixels the 1×1 taps read."""
    if _trivial(spec):
        return x
    (sH, sW), Ho, Wo = spec.stride, shape.H_out, shape.W_out
    xp = pad(x, spec)                                              # (N, C, Hp, Wp)
    return np.ascontiguousarray(xp[..., :(Ho - 1) * sH + 1:sH, :(Wo - 1) * sW + 1:sW])


def _scatter(dxs, spec, shape):
    """Adjoint of :func:`_subsample`: (N, C, H_out, W_out) → (N, C, H, W)."""
    if _trivial(spec):
        return dxs
    (sH, sW), Ho, Wo = spec.stride, shape.H_out, shape.W_out
    (pt, pb), (pl, pr) = spec.padding
    dxp = np.zeros((shape.N, shape.C, shape.H + pt + pb, shape.W + pl + pr), dtype=dxs.dtype)
    dxp[..., :(Ho - 1) * sH + 1:sH, :(Wo - 1) * sW + 1:sW] = dxs
    if spec.padding == ((0, 0), (0, 0)):
        return dxp
    return fold(dxp, spec, (shape.H, shape.W))


def forward(x, w, b, spec, shape):
    flat, inner = _inner(spec, shape)
    return gemm.forward(_subsample(x, spec, shape), w, b, flat, inner)


def backward(grad_out, x, w, spec, shape, mask):
    """(∂L/∂x or None, ∂L/∂w or None) as ``mask = (input, weight)`` asks, sharing gemm's folded grad matrix."""
    flat, inner = _inner(spec, shape)
    xs = _subsample(x, spec, shape) if mask[1] else None
    dxs, dw = gemm.backward(grad_out, xs, w, flat, inner, mask)
    return (None if dxs is None else _scatter(dxs, spec, shape)), dw


def workspace(pass_, spec, shape, itemsize):
    """Scratch bytes: the subsampled input, gemm's layouts on it, the scattered gradient."""
    flat, inner = _inner(spec, shape)
    (pt, pb), (pl, pr) = spec.padding
    padded = shape.N * shape.C * (shape.H + pt + pb) * (shape.W + pl + pr)
    xs = 0 if _trivial(spec) else shape.N * shape.C * shape.H_out * shape.W_out
    extra = (padded + xs) if not _trivial(spec) else 0
    return gemm.workspace(pass_, flat, inner, itemsize) + extra * itemsize
