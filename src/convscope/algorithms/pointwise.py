"""1×1 convolutions: a matrix product over channels, no im2col.

A 1×1 kernel reads one pixel per output, so with ``x_s`` the padded input
subsampled at the stride (``x_s[n, c, i, j] = x̃[n, c, i·sH, j·sW]``, a view of
``x`` itself when stride is 1 and there is no padding)::

    out[n, g, :, (i, j)] = W[g] @ x_s[n, g, :, (i, j)]            W[g]: (C_out/G, C/G)
    ∂L/∂x_s[n, g]        = W[g]ᵀ @ grad_out[n, g]
    ∂L/∂W[g]             = Σ_n grad_out[n, g] @ x_s[n, g]ᵀ

and ∂L/∂x is ∂L/∂x_s scattered back to the pixels the subsampling read (the
adjoint of the subsampling), then :func:`convscope.padding.fold` for the
padding.

Two layouts
-----------
*Per sample*: the products run on ``(N, G, C/G, L)`` matrices (``L = H_out·W_out``),
N products per call, with no copy of a stride-1 unpadded input.  Every product
packs the weight anew, which costs little when L is large.

*Batch folded*: ``x_s`` is copied as ``(G, C/G, N·L)`` (sample after sample along the
columns), so forward, grad-input and grad-weight are each one product per group
of width N·L, packing the weight once; grad-weight's sum over samples happens
inside the product.  The copies into and out of this layout fuse what must be
done anyway: the subsampling (and zero padding) into the input's transpose, the
bias into the output's, the scatter back to the input's pixels into
grad_input's (compiled parallel kernels, :mod:`.kernels.pointwise`, above a
size).  It pays when the products are narrow and the weight is large next to a
sample's pixels: :func:`folded`.
"""
from __future__ import annotations

import numpy as np

from ..padding import fold, pad
from ..threads import get_num_threads

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)

# layouts (bench/README.md, "Pointwise layers"): a pass runs batch folded when its products are narrow,
# H_out·W_out below FOLD_BELOW_PIXELS (on ResNet-50's and MobileNetV2's layers: 7² forward, 14² backward),
# and the per-sample products' weight repacks, (N − 1)·C_out·C/G values, exceed FOLD_RATIO × the values
# folding copies (:func:`_copied`)
FOLD_BELOW_PIXELS = dict(forward=100, grad_input=256, grad_weight=256)
FOLD_RATIO = dict(forward=1.0, grad_input=0.25, grad_weight=0.2)
COMPILED_FROM = 1 << 17           # the copies that fuse a bias or a scatter compiled from this many values
COMPILED_GATHER_FROM = 1 << 22    # the strided input's gather from this many input values (below: NumPy's slices)
COMPILED_TRANSPOSE_FROM = 1 << 18  # a plain transpose into or out of the folded layout from this many values,
                                   # on two threads or more (gemm's COMPILED_UNFOLD_FROM; one thread: NumPy's faster)


def needs(spec, shape):
    """None if the kernel is 1×1, else what the path needs."""
    if spec.kernel_size != (1, 1):
        return f"a 1×1 kernel, got kernel_size={spec.kernel_size}"
    return None


def _copied(pass_, shape, grad_folded=False):
    """The values the batch-folded layout copies for a pass beyond what the per-sample one does:
    forward x_s (the output's transpose adds the bias, which the per-sample layout adds in a pass
    of its own); grad_input grad_output (unless ``grad_folded`` already for grad_weight) and ∂x_s;
    grad_weight grad_output and x_s."""
    N, L, C, Co = shape.N, shape.H_out * shape.W_out, shape.C, shape.out_channels
    if pass_ == "forward":
        return N * L * C
    if pass_ == "grad_input":
        return N * L * (C if grad_folded else C + Co)
    return N * L * (C + Co)


def folded(spec, shape, pass_, grad_folded=False) -> bool:
    """Whether ``pass_`` runs in the batch-folded layout (one sample: both layouts are the same);
    ``grad_folded``: grad_input's, when the grad_weight pass of the same call folds grad_output."""
    repacks = (shape.N - 1) * shape.out_channels * shape.in_per_group
    return (shape.N > 1 and shape.H_out * shape.W_out < FOLD_BELOW_PIXELS[pass_]
            and repacks > FOLD_RATIO[pass_] * _copied(pass_, shape, grad_folded))


def _backward_layouts(spec, shape, mask):
    """(grad_input folded, grad_weight folded) for the passes ``mask`` asks."""
    fold_dw = bool(mask[1]) and folded(spec, shape, "grad_weight")
    return bool(mask[0]) and folded(spec, shape, "grad_input", fold_dw), fold_dw


def _may_fold(spec, shape, pass_) -> bool:
    """Whether ``pass_`` folds alone or, grad_input, beside a grad_weight pass that folds grad_output."""
    return folded(spec, shape, pass_) or (pass_ == "grad_input" and folded(spec, shape, pass_, True)
                                          and folded(spec, shape, "grad_weight"))


def describe(spec, shape, pass_) -> str:
    L = shape.H_out * shape.W_out
    if folded(spec, shape, pass_):
        return f"batch folded (H_out·W_out = {L})"
    if _may_fold(spec, shape, pass_):
        return f"per sample, batch folded beside grad_weight (H_out·W_out = {L})"
    return f"per sample (H_out·W_out = {L})"


def _trivial(spec) -> bool:
    return spec.stride == (1, 1) and spec.padding == ((0, 0), (0, 0))


# --------------------------------------------------------------------------- the layouts' copies


def _compiled_transpose(size) -> bool:
    return size >= COMPILED_TRANSPOSE_FROM and get_num_threads() > 1


def _to_folded(a):
    """(N, K, h, w) → (K, N, h, w), a copy (N = 1: a view); also the way back, (C, N, …) → (N, C, …)."""
    N, K, h, w = a.shape
    if N == 1:
        return a.reshape(K, N, h, w)
    dst = np.empty((K, N, h, w), dtype=a.dtype)
    if _compiled_transpose(dst.size):
        from .kernels import _numba, pointwise as kernels

        _numba.launch(kernels.gather, np.ascontiguousarray(a), dst, True, 1, 1, 0, 0)
    else:
        np.copyto(dst, a.transpose(1, 0, 2, 3))
    return dst


def _gather(x, spec, shape, folded_):
    """x_s from x (N, C, H, W): (C, N, H_out, W_out) if ``folded_`` else (N, C, H_out, W_out)."""
    N, C, Ho, Wo = shape.N, shape.C, shape.H_out, shape.W_out
    if _trivial(spec):
        return _to_folded(x) if folded_ else x          # per sample: x itself
    dst = np.empty((C, N, Ho, Wo) if folded_ else (N, C, Ho, Wo), dtype=x.dtype)
    if x.size >= COMPILED_GATHER_FROM:
        from .kernels import _numba, fused_padding, pointwise as kernels

        xs, pt, pl = fused_padding(x, spec)
        _numba.launch(kernels.gather, np.ascontiguousarray(xs), dst, folded_, *spec.stride, pt, pl)
        return dst
    (sH, sW) = spec.stride
    view = pad(x, spec)[..., :(Ho - 1) * sH + 1:sH, :(Wo - 1) * sW + 1:sW]     # (N, C, H_out, W_out)
    np.copyto(dst, view.transpose(1, 0, 2, 3) if folded_ else view)
    return dst


def _scatter(dxs, spec, shape, folded_):
    """The adjoint of :func:`_gather`: (N, C, H, W) from (C, N, H_out, W_out) if ``folded_`` else
    (N, C, H_out, W_out)."""
    N, C, Ho, Wo = shape.N, shape.C, shape.H_out, shape.W_out
    if _trivial(spec):
        return _to_folded(dxs) if folded_ else dxs      # (C, N, H, W) → (N, C, H, W): the same transpose
    (pt, pb), (pl, pr) = spec.padding
    zeros = spec.padding_mode == "zeros"
    padded = (N, C, shape.H + pt + pb, shape.W + pl + pr)
    dx = np.empty((N, C, shape.H, shape.W) if zeros else padded, dtype=dxs.dtype)
    if dx.size >= COMPILED_FROM:
        from .kernels import _numba, pointwise as kernels

        _numba.launch(kernels.scatter, dxs, dx, folded_, *spec.stride, *((pt, pl) if zeros else (0, 0)))
        return dx if zeros else fold(dx, spec, (shape.H, shape.W))
    src = dxs.transpose(1, 0, 2, 3) if folded_ else dxs                      # (N, C, H_out, W_out)
    (sH, sW) = spec.stride
    dxp = np.zeros(padded, dtype=dxs.dtype)
    dxp[..., :(Ho - 1) * sH + 1:sH, :(Wo - 1) * sW + 1:sW] = src
    return fold(dxp, spec, (shape.H, shape.W))


def _unfold(out_t, b, shape):
    """(G, C_out/G, N·L) → (N, C_out, H_out, W_out), plus the bias."""
    N, G, Cog, L = shape.N, shape.groups, shape.out_per_group, shape.H_out * shape.W_out
    out = np.empty((N, G, Cog, L), dtype=out_t.dtype)
    src = out_t.reshape(G, Cog, N, L)                                        # (G, C_out/G, N, L) view
    if out.size >= COMPILED_FROM:
        from .kernels import _numba, im2col as kernels

        bias = np.empty(0, out.dtype) if b is None else b
        _numba.launch(kernels.unfold, src, bias, out)
    elif b is None:
        np.copyto(out, src.transpose(2, 0, 1, 3))
    else:
        np.add(src.transpose(2, 0, 1, 3), b.reshape(1, G, Cog, 1), out=out)    # the bias added in the transpose
    return out.reshape(N, shape.out_channels, shape.H_out, shape.W_out)


# --------------------------------------------------------------------------- the passes


def _weight_matrix(w, shape):
    """(C_out, C/G, 1, 1) → (G, C_out/G, C/G)."""
    return w.reshape(shape.groups, shape.out_per_group, shape.in_per_group)


def forward(x, w, b, spec, shape):
    N, G, Cg, Cog = shape.N, shape.groups, shape.in_per_group, shape.out_per_group
    L = shape.H_out * shape.W_out
    wm = _weight_matrix(w, shape)
    if folded(spec, shape, "forward"):
        xf = _gather(x, spec, shape, True).reshape(G, Cg, N * L)         # (C, N, H_out, W_out) → (G, C/G, N·L)
        return _unfold(np.matmul(wm, xf), b, shape)                      # (G, C_out/G, N·L) → NCHW
    xs = _gather(x, spec, shape, False).reshape(N, G, Cg, L)             # (N, G, C/G, L)
    if b is not None and shape.out_channels >= 2 * shape.C:
        # [W | b] @ [x_s; 1]: the copy of the input costs less than a pass over the output
        ones = np.empty((N, G, Cg + 1, L), dtype=x.dtype)
        ones[:, :, :Cg] = xs
        ones[:, :, Cg] = 1
        wb = np.concatenate([wm, b.reshape(G, Cog, 1)], axis=2)         # (G, C_out/G, C/G + 1)
        out = np.matmul(wb, ones)                                       # (N, G, C_out/G, L)
    else:
        out = np.matmul(wm, xs)                                         # (N, G, C_out/G, L)
        if b is not None:
            out += b.reshape(G, Cog, 1)                                 # (C_out,) → (G, C_out/G, 1): rows of L
    return out.reshape(N, shape.out_channels, shape.H_out, shape.W_out)


def backward(grad_out, x, w, spec, shape, mask):
    """(∂L/∂x or None, ∂L/∂w or None) as ``mask = (input, weight)`` asks; in the batch-folded layout
    the folded grad_output serves both products."""
    N, G, Cg, Cog = shape.N, shape.groups, shape.in_per_group, shape.out_per_group
    L = shape.H_out * shape.W_out
    fold_dx, fold_dw = _backward_layouts(spec, shape, mask)
    gf = _to_folded(grad_out).reshape(G, Cog, N * L) if fold_dx or fold_dw else None   # (G, C_out/G, N·L)
    g = grad_out.reshape(N, G, Cog, L)                                   # (N, G, C_out/G, L) view
    dx = dw = None
    if mask[0]:
        wt = _weight_matrix(w, shape).transpose(0, 2, 1)                  # (G, C/G, C_out/G)
        if fold_dx:
            dxf = np.matmul(wt, gf)                                       # (G, C/G, N·L)
            dx = _scatter(dxf.reshape(shape.C, N, shape.H_out, shape.W_out), spec, shape, True)
        else:
            dxs = np.matmul(wt, g)                                        # (N, G, C/G, L)
            dx = _scatter(dxs.reshape(N, shape.C, shape.H_out, shape.W_out), spec, shape, False)
    if mask[1]:
        if fold_dw:
            xf = _gather(x, spec, shape, True).reshape(G, Cg, N * L)     # (G, C/G, N·L)
            dw = np.matmul(gf, xf.transpose(0, 2, 1))                     # (G, C_out/G, C/G): Σ_n inside
        else:
            xs = _gather(x, spec, shape, False).reshape(N, G, Cg, L)     # (N, G, C/G, L)
            dw = np.matmul(g, xs.transpose(0, 1, 3, 2)).sum(axis=0)       # (N, G, C_out/G, C/G) → Σ_n
        dw = dw.reshape(shape.out_channels, Cg, 1, 1)
    return dx, dw


def workspace(pass_, spec, shape, itemsize):
    """An upper estimate of the scratch bytes of one pass (outputs included): the subsampled or folded
    input, the products, the layouts' transposes, the scattered gradient."""
    N, C, Co = shape.N, shape.C, shape.out_channels
    (pt, pb), (pl, pr) = spec.padding
    L = shape.H_out * shape.W_out
    padded = N * C * (shape.H + pt + pb) * (shape.W + pl + pr) if pt + pb + pl + pr else 0
    xs, out, x = N * C * L, N * Co * L, N * C * shape.H * shape.W
    fold_ = _may_fold(spec, shape, pass_)
    if pass_ == "forward":
        total = padded + (xs if fold_ or not _trivial(spec) else 0) + out * (2 if fold_ else 1)
        if not fold_ and Co >= 2 * C:
            total += xs + N * L                      # [x_s; 1]
    elif pass_ == "grad_input":
        total = xs + 2 * padded + x + (out if fold_ else 0)
    else:
        total = padded + xs + (out if fold_ else N * Co * C // shape.groups) + Co * C // shape.groups
    return total * itemsize
