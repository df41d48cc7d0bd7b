"""The input gradient as a gather: one product into per-tap columns, channels last, then a compiled sum.

The input gradient of a convolution (and so the forward of a transposed convolution) is, per
group ``g`` (``Cg = C/G`` input and ``Cog = C_out/G`` output channels per group)::

    ∂L/∂x̃[n, g·Cg + c, r, s] = Σ_{o, u, v, i, j : i·sH + u·dH = r, j·sW + v·dW = s}
                                w[g·Cog + o, c, u, v] · grad_out[n, g·Cog + o, i, j]

over the padded input's coordinates ``(r, s)``.  The sum over ``o`` is one matrix product per
group, with the grad_output pixels as rows and the taps and input channels as columns::

    d[g][(n, i, j), (u, v, c)] = Σ_o grad_out[n, g·Cog + o, i, j] · w[g·Cog + o, c, u, v]

    (N·Ho·Wo, Cog) @ (Cog, kH·kW·Cg)    (batch folded: one product per group)
    N × (Ho·Wo, Cog) @ (Cog, kH·kW·Cg)  (per sample: grad_out read in place, transposed)

and the sum over the taps is a gather (:mod:`convscope.algorithms.kernels.gather`): every pixel
``(r, s)`` adds the rows ``(n, i, j)`` of the taps that reach it, ``Cg`` channels at a time
(contiguous in ``d``), and is written once.  gemm's col2im instead adds every tap's block onto
the image (:mod:`convscope.algorithms.gemm`); here no pixel is read back, the taps that land on
zero padding are skipped, and a row of output pixels that no tap reaches is written as zeros.
For the other padding modes the gradient of the padded input is gathered and then folded
(:func:`convscope.padding.fold`).

Every pass but the input gradient is gemm's: the forward and the weight gradient run
:func:`convscope.algorithms.gemm.forward` and :func:`~convscope.algorithms.gemm.backward`.  A
transposed convolution's backward is such a forward and weight gradient of one input (its
grad_output): :func:`forward_and_grad_weight` computes the two from one im2col.
"""
from __future__ import annotations

import numpy as np

from .. import blas
from ..padding import fold
from . import gemm

ERROR = "local"     # each gradient is rounded from the products it sums (see convscope.precision)

GEMM_PASSES = ("gemm", "gather", "patch")   # the implementations whose forward and weight gradient are gemm's
                                            # (patch's: gemm's 1×1 products on the patches, gemm's im2col there)
SHARED = "from one im2col of grad_output with the other gradient (gather.forward_and_grad_weight)"
FOLD_BELOW = 400    # fold the batch into one product below this many grad_output pixels per sample (bench/README.md)


def needs(spec, shape):
    """None: every 2-d convolution's input gradient (the other passes are gemm's)."""
    return None


def batch_folded(spec, shape) -> bool:
    """Whether the product runs batch folded (small images) rather than per sample."""
    return shape.H_out * shape.W_out < FOLD_BELOW


def describe(spec, shape, pass_) -> str:
    """The layout of a pass, for :func:`convscope.plan`."""
    if pass_ != "grad_input":
        return f"gemm's {pass_.replace('_', '-')} ({gemm.describe(spec, shape, pass_)})"
    L = shape.H_out * shape.W_out
    layout = "batch folded" if batch_folded(spec, shape) else "per sample"
    return f"channels-last product {layout} (H_out·W_out = {L}), compiled gather of the taps"


def _tap_weights(w, shape):
    """(C_out, Cg, kH, kW) → (G, Cog, kH·kW·Cg), taps before channels: a copy."""
    G, Cog, Cg = shape.groups, shape.out_per_group, shape.in_per_group
    taps = w.shape[2] * w.shape[3]
    wt = np.empty((G, Cog, taps, Cg), dtype=w.dtype)
    np.copyto(wt, w.reshape(G, Cog, Cg, taps).transpose(0, 1, 3, 2))   # (G, Cog, Cg, taps) → (G, Cog, taps, Cg)
    return wt.reshape(G, Cog, taps * Cg)


def tap_products(grad_out, w, spec, shape):
    """``(d, batch_major)``: each grad_output pixel times every tap's weights, C-contiguous, as
    d (N·G, H_out·W_out, kH·kW·Cg) with the first axis (n, g) when ``batch_major`` (per sample),
    else (g, n) (batch folded)."""
    N, G, Cog = shape.N, shape.groups, shape.out_per_group
    L = shape.H_out * shape.W_out
    wt = _tap_weights(w, shape)                                     # (G, Cog, K)
    g = grad_out.reshape(N, G, Cog, L)
    if not batch_folded(spec, shape):
        d = blas.stacked(g.transpose(0, 1, 3, 2), wt)               # (N, G, L, Cog) @ (G, Cog, K) → (N, G, L, K)
        return d.reshape(N * G, L, -1), True
    gt = np.empty((G, N, L, Cog), dtype=grad_out.dtype)
    np.copyto(gt, g.transpose(1, 0, 3, 2))                          # (N, G, Cog, L) → (G, N, L, Cog)
    d = np.matmul(gt.reshape(G, N * L, Cog), wt)                    # (G, N·L, K)
    return d.reshape(G * N, L, -1), False


def grad_input(grad_out, w, spec, shape):
    """∂L/∂x (N, C, H, W)."""
    from .kernels import _numba, gather as kernels

    N, C, H, W = shape.N, shape.C, shape.H, shape.W
    (pt, pb), (pl, pr) = spec.padding
    zeros = spec.padding_mode == "zeros"
    dx = np.empty((N, C, H, W) if zeros else (N, C, H + pt + pb, W + pl + pr), dtype=grad_out.dtype)
    if N == 0:
        return np.zeros((N, C, H, W), dtype=grad_out.dtype)
    d, batch_major = tap_products(grad_out, w, spec, shape)
    _numba.launch(kernels.gather, np.ascontiguousarray(d), batch_major, dx, shape.W_out, *spec.kernel_size,
                  *spec.stride, *spec.dilation, *((pt, pl) if zeros else (0, 0)))
    return dx if zeros else fold(dx, spec, (H, W))


def forward(x, w, b, spec, shape):
    """gemm's forward."""
    return gemm.forward(x, w, b, spec, shape)


def grad_weight(grad_out, x, spec, shape):
    """gemm's weight gradient."""
    return gemm.backward(grad_out, x, None, spec, shape, (False, True))[1]


def forward_and_grad_weight(x, w, grad_out, spec, shape):
    """(out, ∂L/∂w): gemm's forward of ``x`` (no bias) and its weight gradient for ``grad_out``, from one
    im2col of ``x``.

    A transposed convolution's backward is exactly this pair (:mod:`convscope.functional`): its input
    gradient is the forward of grad_output, its weight gradient the weight gradient with grad_output as
    the input, so both products read the same columns::

        out[n, g] = W[g] @ cols[n, g]                ∂L/∂W[g] = Σ_n grad_out[n, g] @ cols[n, g]ᵀ

    in gemm's layouts (batch folded: ``cols`` (G, K, N·L), both products one per group).
    """
    N, G, Cog = shape.N, shape.groups, shape.out_per_group
    L = shape.H_out * shape.W_out
    wm = w.reshape(G, Cog, -1)                                          # (G, C_out/G, K)
    if gemm.batch_folded(spec, shape, backward=True):
        cols = gemm.im2col_folded(x, spec, shape)                       # (G, K, N·L)
        out = np.empty((N, G, Cog, L), dtype=x.dtype)
        out_t = np.matmul(wm, cols).reshape(G, Cog, N, L)               # (G, Cog, N·L) → (G, Cog, N, L)
        if out.size >= gemm.COMPILED_UNFOLD_FROM:                       # transposed in parallel, as gemm's forward
            from .kernels import _numba, im2col as kernels

            _numba.launch(kernels.unfold, out_t, np.empty(0, out.dtype), out)
        else:
            np.copyto(out, out_t.transpose(2, 0, 1, 3))                 # (G, Cog, N, L) → (N, G, Cog, L)
        gf = np.empty((G, Cog, N, L), dtype=x.dtype)
        np.copyto(gf, grad_out.reshape(N, G, Cog, L).transpose(1, 2, 0, 3))             # (N, G, Cog, L) → (G, Cog, N, L)
        dw = blas.few_rows(gf.reshape(G, Cog, N * L), cols.transpose(0, 2, 1))         # (G, Cog, K): Σ_n inside
    else:
        cols = gemm.im2col(x, spec, shape)                              # (N, G, K, L)
        out = blas.stacked(wm, cols)                                    # (N, G, C_out/G, L)
        g = grad_out.reshape(N, G, Cog, L)
        dw = blas.few_rows(g, cols.transpose(0, 1, 3, 2)).sum(axis=0)   # (N, G, Cog, K) → (G, Cog, K)
    return (out.reshape(N, shape.out_channels, shape.H_out, shape.W_out),
            dw.reshape(shape.out_channels, shape.in_per_group, *spec.kernel_size))


def shares_im2col(forward_name, grad_weight_name) -> bool:
    """Whether a convolution's forward and weight gradient on these implementations are gemm's two passes,
    which :func:`forward_and_grad_weight` computes from one im2col."""
    return forward_name in GEMM_PASSES and grad_weight_name in GEMM_PASSES


def shared_workspace(spec, shape, itemsize):
    """An upper estimate of the scratch bytes of :func:`forward_and_grad_weight`: gemm's two passes'."""
    return gemm.workspace("forward", spec, shape, itemsize) + gemm.workspace("grad_weight", spec, shape, itemsize)


def run_forward_and_grad_weight(x, w, grad_out, spec, shape):
    """:func:`forward_and_grad_weight` on slices of the batch whose estimate stays under the workspace limit
    (and gemm's preferred slice size), the weight gradients summed; None when one sample does not fit."""
    from ..workspace import get_workspace_limit

    itemsize = x.dtype.itemsize
    limit = get_workspace_limit()
    per_sample = shared_workspace(spec, shape._replace(N=1), itemsize)
    if per_sample > limit or shape.N == 0:
        return None
    preferred = gemm.slice_bytes(spec, shape)
    budget = limit if preferred is None else min(limit, max(preferred, per_sample))
    step = shape.N if shared_workspace(spec, shape, itemsize) <= budget else max(1, budget // per_sample)
    if step >= shape.N:
        return forward_and_grad_weight(x, w, grad_out, spec, shape)
    out = np.empty((shape.N, shape.out_channels, shape.H_out, shape.W_out), dtype=x.dtype)
    dw = None
    for n0 in range(0, shape.N, step):
        sl = slice(n0, min(shape.N, n0 + step))
        out[sl], part = forward_and_grad_weight(x[sl], w, grad_out[sl], spec, shape._replace(N=sl.stop - n0))
        dw = part if dw is None else np.add(dw, part, out=dw)
    return out, dw


def preferred_bytes(pass_, spec, shape):
    """gemm's preference for its passes; none for the input gradient (slices of the batch ran slower)."""
    return None if pass_ == "grad_input" else gemm.preferred_bytes(pass_, spec, shape)


def workspace(pass_, spec, shape, itemsize):
    """An upper estimate of the scratch bytes of one pass (outputs included): the input gradient's
    rearranged weight, grad_output's transposed copy (batch folded), the tap products, the result and,
    for padding other than zeros, the padded gradient and fold's two copies."""
    if pass_ != "grad_input":
        return gemm.workspace(pass_, spec, shape, itemsize)
    N, C, Co = shape.N, shape.C, shape.out_channels
    kH, kW = spec.kernel_size
    L = shape.H_out * shape.W_out
    total = Co * shape.in_per_group * kH * kW + N * L * kH * kW * C + N * C * shape.H * shape.W
    if batch_folded(spec, shape):
        total += N * L * Co
    if spec.padding_mode != "zeros":
        (pt, pb), (pl, pr) = spec.padding
        total += 3 * N * C * (shape.H + pt + pb) * (shape.W + pl + pr)
    return total * itemsize
