"""The general fast path: im2col + matrix products in BLAS.

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

Two layouts
-----------
*Per sample*: cols is ``(N, G, K, L)`` (``K = Cg·kH·kW``, ``L = H_out·W_out``) and
every product is a batch of N matrix products of width L.  For a 1×1 stride-1
kernel cols is the input itself, with no copy.

*Batch folded*: cols is ``(G, K, N·L)``, so forward, grad-input and grad-weight
are each one product per group of width N·L, and the sum over samples of
grad-weight happens inside the product.  It costs a transpose of the
activations (input or grad_output, and the result), which pays off when L is
small: products of width 49 or 196 run far below BLAS's peak, and per-sample
grad-weight materialises N partial ``(C_out/G, K)`` products.  The rule is
:func:`batch_folded`.

Stride phases
-------------
With stride 2 a tap reads every other pixel, and NumPy copies such strided
slices slowly.  When many taps share a stride phase (the 7×7/2 stem: 49 taps,
4 phases) the padded input is first split into its ``sH·sW`` phases, each
contiguous, and every tap reads a unit-stride window of one phase; col2im
accumulates into the phases and interleaves them once at the end.  The rule is
:func:`stride_phases`.

The only Python loops run over the ``kH·kW`` kernel taps.
"""
from __future__ import annotations

import numpy as np

from .. import blas
from ..padding import fold, pad
from .kernels import channel_bias

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)
FORWARD_INTO = True  # forward(..., out=view) writes its result into a C-contiguous view of the output

# layouts, measured on ResNet-50's layers (batch 8, 2 cores; bench/README.md)
FOLD_BELOW = 1024                 # fold the batch below this many output pixels (kernels above 1×1)
FOLD_BELOW_1X1_BACKWARD = 100     # the same for 1×1 kernels, backward
FOLD_BELOW_1X1_FORWARD = 100      # and forward
MIN_TAPS_PER_PHASE = 4            # split into stride phases from this many taps per phase
SLICE_BYTES = 24 << 20            # batch slices' scratch at most this, for im2col still in cache
SLICE_BYTES_PER_SAMPLE = 8 << 20  # the same in the per-sample layout (the stem: one sample a slice)
SLICE_FROM_PIXELS = 196           # from this many output pixels (kernels above 1×1)
COMPILED_FROM_PIXELS = 196        # compiled im2col / col2im from this many output pixels (7²: NumPy's faster)
COMPILED_FOLDED_FROM_PIXELS = 784  # the same in the batch-folded layout (below 28²: NumPy's im2col, no thread launch, faster)
COMPILED_UNFOLD_FROM = 1 << 18    # the folded output's transpose compiled (parallel) from this many values

# the cost model of the three passes, milliseconds (fitted by bench/fit_cost_model.py)
COST_MS = dict(call=0.29, mac=2.9e-8, copy=2.13e-6)


def needs(spec, shape):
    """None: im2col + GEMM computes every convolution."""
    return None


def batch_folded(spec, shape, backward: bool) -> bool:
    """Whether the gemm / pointwise paths use the batch-folded layout."""
    L = shape.H_out * shape.W_out
    if spec.kernel_size != (1, 1):
        return L < FOLD_BELOW
    return L < (FOLD_BELOW_1X1_BACKWARD if backward else FOLD_BELOW_1X1_FORWARD)


def stride_phases(spec) -> bool:
    """Whether the padded input is split into stride phases first."""
    (sH, sW), (dH, dW) = spec.stride, spec.dilation
    kH, kW = spec.kernel_size
    return ((sH > 1 or sW > 1) and dH == dW == 1 and (kH > sH or kW > sW)
            and kH * kW >= MIN_TAPS_PER_PHASE * sH * sW)


def slice_bytes(spec, shape):
    """The scratch bytes a slice of the batch should stay under (None: no slicing)."""
    if spec.kernel_size == (1, 1) or shape.H_out * shape.W_out < SLICE_FROM_PIXELS:
        return None
    return SLICE_BYTES if batch_folded(spec, shape, backward=False) else SLICE_BYTES_PER_SAMPLE


def cost_terms(spec, shape) -> dict:
    """The terms of the cost model: ``call: 1, mac: N·K·taps_out, copy: N·C·taps_out``, with
    ``K = C·C_out/groups`` and ``taps_out = kH·kW·H_out·W_out`` (the multiply-adds, and im2col's copies)."""
    K = shape.C * shape.out_channels / shape.groups
    taps_out = spec.kernel_size[0] * spec.kernel_size[1] * shape.H_out * shape.W_out
    return dict(call=1.0, mac=shape.N * K * taps_out, copy=shape.N * shape.C * taps_out)


def cost_ms(spec, shape) -> float:
    """Estimated milliseconds of the three passes: Σ COST_MS[term] · :func:`cost_terms`[term]."""
    return sum(COST_MS[k] * v for k, v in cost_terms(spec, shape).items())


def describe(spec, shape, pass_) -> str:
    """The layouts a pass runs in, for :func:`convscope.plan`."""
    return layout_text(spec, shape, pass_, with_phases=True)


def compiled(spec, shape, folded=False) -> bool:
    """Whether col2im runs as a compiled kernel (padding fused) in the per-sample or the batch-folded
    layout, and im2col too except in the per-sample layout with stride phases (NumPy's copies of the
    phases won there)."""
    start = COMPILED_FOLDED_FROM_PIXELS if folded else COMPILED_FROM_PIXELS
    return spec.kernel_size != (1, 1) and shape.H_out * shape.W_out >= start


def layout_text(spec, shape, pass_, with_phases: bool) -> str:
    L = shape.H_out * shape.W_out
    folded_ = batch_folded(spec, shape, pass_ != "forward")
    parts = [f"batch folded (H_out·W_out = {L})" if folded_ else f"per sample (H_out·W_out = {L})"]
    if with_phases and stride_phases(spec):
        parts.append(f"{spec.stride[0] * spec.stride[1]} stride phases")
    if with_phases and compiled(spec, shape, folded_):
        parts.append("compiled col2im" if stride_phases(spec) and not folded_ else "compiled im2col/col2im")
    if with_phases and slice_bytes(spec, shape):
        parts.append(f"batch slices of ≤ {slice_bytes(spec, shape) >> 20} MiB scratch")
    return ", ".join(parts)

def _tap_slices(spec, shape, u, v):
    """The (rows, cols) slices of the padded input that tap (u, v) reads for every output."""
    (sH, sW), (dH, dW) = spec.stride, spec.dilation
    r0, c0 = u * dH, v * dW
    return (slice(r0, r0 + sH * (shape.H_out - 1) + 1, sH),
            slice(c0, c0 + sW * (shape.W_out - 1) + 1, sW))


def _is_pointwise(spec) -> bool:
    return (spec.kernel_size == (1, 1) and spec.stride == (1, 1)
            and spec.padding == ((0, 0), (0, 0)))


# --------------------------------------------------------------------------- stride phases


def _phase_keys(spec):
    (sH, sW), (kH, kW) = spec.stride, spec.kernel_size
    return [(a, b) for a in range(min(sH, kH)) for b in range(min(sW, kW))]


def _split_phases(xp, spec):
    """{(a, b): xp[..., a::sH, b::sW] as a contiguous copy} for the phases the taps read."""
    sH, sW = spec.stride
    return {(a, b): np.ascontiguousarray(xp[..., a::sH, b::sW]) for a, b in _phase_keys(spec)}


def _phase_window(phases, spec, shape, u, v):
    """The (…, H_out, W_out) window tap (u, v) reads: a unit-stride view of its phase."""
    sH, sW = spec.stride
    p = phases[(u % sH, v % sW)]
    r, c = u // sH, v // sW
    return p[..., r:r + shape.H_out, c:c + shape.W_out]


def _tap_sources(xp, spec, shape):
    """A function (u, v) → the (…, H_out, W_out) view of ``xp`` that tap (u, v) reads."""
    if stride_phases(spec):
        phases = _split_phases(xp, spec)
        return lambda u, v: _phase_window(phases, spec, shape, u, v)

    def source(u, v):
        rs, cs = _tap_slices(spec, shape, u, v)
        return xp[..., rs, cs]
    return source


def _scatter_taps(d, lead, spec, shape, dtype):
    """Adjoint of reading the taps: Σ over taps of ``d(u, v)`` (…, H_out, W_out) added onto
    the window it was read from, in a zeroed (lead…, Hp, Wp) array."""
    (pt, pb), (pl, pr) = spec.padding
    Hp, Wp = shape.H + pt + pb, shape.W + pl + pr
    kH, kW = spec.kernel_size
    if stride_phases(spec):
        sH, sW = spec.stride
        phases = {(a, b): np.zeros(lead + (len(range(a, Hp, sH)), len(range(b, Wp, sW))), dtype)
                  for a, b in _phase_keys(spec)}
        for u in range(kH):
            for v in range(kW):
                _phase_window(phases, spec, shape, u, v)[...] += d(u, v)
        dxp = np.zeros(lead + (Hp, Wp), dtype)
        for (a, b), p in phases.items():
            dxp[..., a::sH, b::sW] = p
        return dxp
    dxp = np.zeros(lead + (Hp, Wp), dtype)
    for u in range(kH):
        for v in range(kW):
            rs, cs = _tap_slices(spec, shape, u, v)
            dxp[..., rs, cs] += d(u, v)
    return dxp


# --------------------------------------------------------------------------- per-sample layout


def im2col(x, spec, shape, ones_row=False):
    """cols (N, G, Cg·kH·kW, H_out·W_out) from x (N, C, H, W).

    With ``ones_row`` cols gets one more row of ones, (N, G, Cg·kH·kW + 1, L), so that a
    weight matrix with the bias as its last column adds the bias inside the product.
    """
    N, G, Cg = shape.N, shape.groups, shape.in_per_group
    kH, kW = spec.kernel_size
    K, L = Cg * kH * kW, shape.H_out * shape.W_out
    if _is_pointwise(spec) and not ones_row:
        return x.reshape(N, G, Cg, L)                               # a view: no copy
    full = np.empty((N, G, K + ones_row, L), dtype=x.dtype)
    if compiled(spec, shape) and not stride_phases(spec) and N:
        # (N, G, K + ones, L) → (N, G, K + ones, H_out, W_out) view
        _compiled_im2col(x, full.reshape(N, G, K + ones_row, shape.H_out, shape.W_out), spec, folded=False)
        if ones_row:
            full[:, :, K] = 1
        return full
    source = _tap_sources(pad(x, spec), spec, shape)                # reads (N, C, Hp, Wp)
    cols = full[:, :, :K]                                           # (N, G, K, L) view
    cols.shape = (N, G, Cg, kH, kW, shape.H_out, shape.W_out)       # a view (raises if it cannot be)
    for u in range(kH):
        for v in range(kW):
            # (N, C, H_out, W_out) → (N, G, Cg, H_out, W_out)
            cols[:, :, :, u, v] = source(u, v).reshape(N, G, Cg, shape.H_out, shape.W_out)
    if ones_row:
        full[:, :, K] = 1
    return full


def col2im(dcols, spec, shape):
    """Adjoint of :func:`im2col`: (N, G, Cg·kH·kW, H_out·W_out) → (N, C, H, W)."""
    N, C = shape.N, shape.C
    kH, kW = spec.kernel_size
    if _is_pointwise(spec):
        return dcols.reshape(N, C, shape.H, shape.W)
    if compiled(spec, shape) and N:
        # (N, G, K, L) → (N, G, K, H_out, W_out)
        d5 = np.ascontiguousarray(dcols).reshape(N, shape.groups, -1, shape.H_out, shape.W_out)
        return _compiled_col2im(d5, spec, shape, folded=False)
    # (N, G, Cg, kH, kW, H_out, W_out)
    d = dcols.reshape(N, shape.groups, shape.in_per_group, kH, kW, shape.H_out, shape.W_out)
    dxp = _scatter_taps(lambda u, v: d[:, :, :, u, v].reshape(N, C, shape.H_out, shape.W_out),
                        (N, C), spec, shape, dcols.dtype)
    return fold(dxp, spec, (shape.H, shape.W))


def _compiled_im2col(x, cols, spec, folded):
    """Fill ``cols`` (N, G, K, H_out, W_out), or (G, K, N, H_out, W_out) if ``folded``, from x."""
    from .kernels import _numba, fused_padding, im2col as kernels

    xs, pt, pl = fused_padding(x, spec)
    _numba.launch(kernels.im2col, np.ascontiguousarray(xs), cols, folded, *spec.kernel_size, *spec.stride,
                  *spec.dilation, pt, pl)


def _compiled_col2im(dcols, spec, shape, folded):
    """(N, C, H, W) from ``dcols`` (N, G, K, H_out, W_out), or (G, K, N, H_out, W_out) if ``folded``."""
    from .kernels import _numba, im2col as kernels

    N, C = shape.N, shape.C
    (pt, pb), (pl, pr) = spec.padding
    zeros = spec.padding_mode == "zeros"
    dx = np.empty((N, C, shape.H, shape.W) if zeros else (N, C, shape.H + pt + pb, shape.W + pl + pr),
                  dtype=dcols.dtype)
    _numba.launch(kernels.col2im, dcols, dx, folded, *spec.kernel_size, *spec.stride, *spec.dilation,
                  *((pt, pl) if zeros else (0, 0)))
    return dx if zeros else fold(dx, spec, (shape.H, shape.W))


# --------------------------------------------------------------------------- batch-folded layout


def _to_folded(a, N, G, Cg, L):
    """(N, G·Cg, …) with L trailing elements per channel → (G, Cg, N·L), a copy."""
    out = np.empty((G, Cg, N, L), dtype=a.dtype)
    np.copyto(out, a.reshape(N, G, Cg, L).transpose(1, 2, 0, 3))
    return out.reshape(G, Cg, N * L)


def im2col_folded(x, spec, shape):
    """cols (G, Cg·kH·kW, N·H_out·W_out) from x (N, C, H, W)."""
    N, G, Cg = shape.N, shape.groups, shape.in_per_group
    kH, kW = spec.kernel_size
    Ho, Wo = shape.H_out, shape.W_out
    if _is_pointwise(spec):
        return _to_folded(x, N, G, Cg, Ho * Wo)
    if compiled(spec, shape, folded=True) and N:
        cols = np.empty((G, Cg * kH * kW, N, Ho, Wo), dtype=x.dtype)
        _compiled_im2col(x, cols, spec, folded=True)
        return cols.reshape(G, Cg * kH * kW, N * Ho * Wo)
    xp = pad(x, spec)
    Hp, Wp = xp.shape[-2:]
    xpt = xp.reshape(N, G, Cg, Hp, Wp).transpose(1, 2, 0, 3, 4)      # (G, Cg, N, Hp, Wp) view
    source = _tap_sources(xpt, spec, shape)
    cols = np.empty((G, Cg, kH, kW, N, Ho, Wo), dtype=x.dtype)
    for u in range(kH):
        for v in range(kW):
            cols[:, :, u, v] = source(u, v)
    return cols.reshape(G, Cg * kH * kW, N * Ho * Wo)


def col2im_folded(dcols, spec, shape):
    """Adjoint of :func:`im2col_folded`: (G, Cg·kH·kW, N·H_out·W_out) → (N, C, H, W)."""
    N, G, Cg = shape.N, shape.groups, shape.in_per_group
    kH, kW = spec.kernel_size
    Ho, Wo, H, W = shape.H_out, shape.W_out, shape.H, shape.W
    if compiled(spec, shape, folded=True) and N:
        # (G, K, N·L) → (G, K, N, H_out, W_out)
        return _compiled_col2im(np.ascontiguousarray(dcols).reshape(G, -1, N, Ho, Wo), spec, shape, folded=True)
    dx = np.empty((N, G, Cg, H, W), dtype=dcols.dtype)
    if _is_pointwise(spec):
        np.copyto(dx, dcols.reshape(G, Cg, N, H, W).transpose(2, 0, 1, 3, 4))
        return dx.reshape(N, shape.C, H, W)
    d = dcols.reshape(G, Cg, kH, kW, N, Ho, Wo)
    dxp = _scatter_taps(lambda u, v: d[:, :, u, v], (G, Cg, N), spec, shape, dcols.dtype)
    if spec.padding_mode == "zeros":
        (pt, _), (pl, _) = spec.padding
        interior = dxp[..., pt:pt + H, pl:pl + W]
    else:
        interior = fold(dxp, spec, (H, W))
    np.copyto(dx, interior.transpose(2, 0, 1, 3, 4))                  # unpad and transpose in one copy
    return dx.reshape(N, shape.C, H, W)


# --------------------------------------------------------------------------- the three entry points


def _weight_matrix(w, shape):
    """(C_out, Cg, kH, kW) → (G, C_out/G, Cg·kH·kW)."""
    return w.reshape(shape.groups, shape.out_per_group, w[0].size)


def _grad_matrix(grad_out, shape):
    """(N, C_out, H_out, W_out) → (N, G, C_out/G, H_out·W_out)."""
    return grad_out.reshape(shape.N, shape.groups, shape.out_per_group, shape.H_out * shape.W_out)


def _grad_matrix_folded(grad_out, shape):
    """(N, C_out, H_out, W_out) → (G, C_out/G, N·H_out·W_out), a copy."""
    return _to_folded(grad_out, shape.N, shape.groups, shape.out_per_group, shape.H_out * shape.W_out)


def _bias_in_product(spec) -> bool:
    """Whether the per-sample forward adds the bias through a row of ones in cols (else the output
    starts as the bias and the product is added to it).

    im2col copies anyway, so the extra row is free; a 1×1 kernel reads the input in place, and
    BLAS's ``C = A·B + C`` adds the product to the bias at no cost beyond ``C = A·B``'s.
    """
    return not _is_pointwise(spec)


def forward(x, w, b, spec, shape, out=None):
    """out (N, C_out, H_out, W_out), written into ``out`` when given (a C-contiguous array or view)."""
    N, G, Cog = shape.N, shape.groups, shape.out_per_group
    L = shape.H_out * shape.W_out
    into = None if out is None else out.reshape(N, G, Cog, L)      # a view: out is C-contiguous
    if not batch_folded(spec, shape, backward=False):
        wm = _weight_matrix(w, shape)                               # (G, C_out/G, K)
        if b is not None and _bias_in_product(spec):
            # [W | b] @ [cols; 1]: the bias is added inside the product, not in a pass over out
            wb = np.concatenate([wm, b.reshape(G, Cog, 1)], axis=2)  # (G, C_out/G, K + 1)
            out = blas.stacked(wb, im2col(x, spec, shape, ones_row=True), into)   # (N, G, C_out/G, L)
            return out.reshape(N, shape.out_channels, shape.H_out, shape.W_out)
        if b is None:
            out = blas.stacked(wm, im2col(x, spec, shape), into)    # (N, G, C_out/G, L)
        else:
            out = np.empty((N, G, Cog, L), dtype=x.dtype) if into is None else into
            channel_bias(out, b, channel_axes=2)                    # rows of L, each its channel's bias
            blas.stacked(wm, im2col(x, spec, shape), out, accumulate=True)   # out = b + W @ cols
        return out.reshape(N, shape.out_channels, shape.H_out, shape.W_out)
    cols = im2col_folded(x, spec, shape)                            # (G, K, N·L)
    out_t = np.matmul(_weight_matrix(w, shape), cols)               # (G, C_out/G, N·L)
    out = np.empty((N, G, Cog, L), dtype=out_t.dtype) if into is None else into
    if out.size >= COMPILED_UNFOLD_FROM:
        from .kernels import _numba, im2col as kernels

        bias = np.empty(0, out.dtype) if b is None else b
        # (G, C_out/G, N·L) → (G, C_out/G, N, L), transposed into (N, G, C_out/G, L) with the bias
        _numba.launch(kernels.unfold, out_t.reshape(G, Cog, N, L), bias, out)
        return out.reshape(N, shape.out_channels, shape.H_out, shape.W_out)
    src = out_t.reshape(G, Cog, N, L).transpose(2, 0, 1, 3)         # (N, G, C_out/G, L) view
    if b is None:
        np.copyto(out, src)
    else:
        np.add(src, b.reshape(1, G, Cog, 1), out=out)               # bias added in the transpose
    return out.reshape(N, shape.out_channels, shape.H_out, shape.W_out)


def backward(grad_out, x, w, spec, shape, mask):
    """(∂L/∂x or None, ∂L/∂w or None) as ``mask = (input, weight)`` asks.

    With both asked in the batch-folded layout, the folded grad_output matrix
    (a transposing copy of grad_out) is built once and serves both products.
    """
    want_dx, want_dw = mask
    dx = dw = None
    if not batch_folded(spec, shape, backward=True):
        gym = _grad_matrix(grad_out, shape)                           # (N, G, C_out/G, L) view
        if want_dx:
            wt = _weight_matrix(w, shape).transpose(0, 2, 1)          # (G, K, C_out/G)
            dx = col2im(blas.stacked(wt, gym), spec, shape)           # dcols (N, G, K, L)
        if want_dw:
            cols = im2col(x, spec, shape)                             # (N, G, K, L)
            per_sample = blas.few_rows(gym, cols.transpose(0, 1, 3, 2))  # (N, G, C_out/G, K)
            dw = per_sample.sum(axis=0)                               # (G, C_out/G, K)
    else:
        gyf = _grad_matrix_folded(grad_out, shape)                    # (G, C_out/G, N·L), shared
        if want_dx:
            wt = _weight_matrix(w, shape).transpose(0, 2, 1)          # (G, K, C_out/G)
            dx = col2im_folded(np.matmul(wt, gyf), spec, shape)       # dcols (G, K, N·L)
        if want_dw:
            cols = im2col_folded(x, spec, shape)                      # (G, K, N·L)
            dw = blas.few_rows(gyf, cols.transpose(0, 2, 1))           # (G, C_out/G, K): Σ_n inside
    if dw is not None:
        dw = dw.reshape(shape.out_channels, shape.in_per_group, *spec.kernel_size)
    return dx, dw


def preferred_bytes(pass_, spec, shape):
    """Scratch bytes a slice of the batch should stay under for speed, or None."""
    return slice_bytes(spec, shape)


def workspace(pass_, spec, shape, itemsize):
    """An upper estimate of the scratch bytes of one pass (outputs included)."""
    N, C, Co = shape.N, shape.C, shape.out_channels
    (pt, pb), (pl, pr) = spec.padding
    padded = N * C * (shape.H + pt + pb) * (shape.W + pl + pr)
    L = shape.H_out * shape.W_out
    cols = N * C * spec.kernel_size[0] * spec.kernel_size[1] * L
    out, x = N * Co * L, N * C * shape.H * shape.W
    fold_batch = batch_folded(spec, shape, pass_ != "forward")
    if pass_ == "forward":
        total = padded + cols + out * (3 if fold_batch else 1)
    elif pass_ == "grad_input":
        total = cols + 2 * padded + x + (out if fold_batch else 0)
    else:
        total = padded + cols + (out if fold_batch else 0) + N * Co * C * spec.kernel_size[0] * spec.kernel_size[1]
    if fold_batch:
        total += cols                                # the transposed copy of the padded input
    return total * itemsize
