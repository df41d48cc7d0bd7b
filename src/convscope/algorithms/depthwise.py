"""Depthwise convolutions (one input channel per group): multiply-adds per kernel tap.

With ``C/groups = 1`` every output channel ``o = c·m + k`` (``m = C_out/C``, the
channel multiplier) reads one input channel ``c``, so the convolution is, per
tap ``(u, v)``, an elementwise product of a shifted window of the padded input
with one weight per channel::

    out[n, c, k, i, j] = b[c·m + k] + Σ_u Σ_v  w[c, k, u, v] · x̃[n, c, i·sH + u·dH, j·sW + v·dW]

There is no matrix product to hand to BLAS (im2col would copy the input kH·kW
times to multiply it by 1×(kH·kW) matrices), so the work is NumPy multiply-adds
with Python loops only over kernel taps and blocks.  Two layouts keep NumPy's
loops long: *flat windows* (below) for stride-1 convolutions of large images,
*channels last* (at the end of the module) for small images and strided ones;
:func:`channels_last` chooses.

Flat windows
------------
NumPy's elementwise loops are fast on long contiguous rows and slow on short
ones, so each channel image is handled as one flat row.  The padded input is
split into its ``sH·sW`` stride phases ``q[a, b] = x̃[..., a::sH, b::sW]`` (for
stride 1, ``x̃`` itself), each ``Hq × Wq``.  Tap ``(u, v)`` reads phase
``(u·dH mod sH, v·dW mod sW)`` at row offset ``r = u·dH div sH`` and column offset
``t = v·dW div sW``; on the flattened phase the window is the contiguous range
``[r·Wq + t, r·Wq + t + H_out·Wq)``.  The result is computed on an extended grid
of ``H_out × Wq`` positions (columns ``j ≥ W_out`` read across row ends and are
dropped at the end).

Backward, the adjoints of the same sum, on the same flat windows:

* ``∂L/∂q[phase][window(u, v)] += Σ_k w[c, k, u, v] · g_ext[n, c, k]``, where
  ``g_ext`` is grad_out on the extended grid with zeros in the dropped columns;
  the phases are interleaved back and :func:`convscope.padding.fold` sends the
  border's gradient home;
* ``∂L/∂w[c, k, u, v] = Σ_n Σ_p g_ext[n, c, k, p] · q[phase][n, c, window(u, v)][p]``.

Blocks (one sample, a range of channels, about ``BLOCK_ELEMENTS`` output values)
keep the accumulator in cache (NumPy's multiply-adds run about 3× faster in cache
than from memory).
"""
from __future__ import annotations

import numpy as np

from ..padding import fold, pad

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)

BLOCK_ELEMENTS = 1 << 16     # extended-grid output values per block (256 KiB of float32)


def _blocks(N, C, per_channel):
    """(n, c0, c1) blocks of about BLOCK_ELEMENTS output values."""
    cb = max(1, min(C, BLOCK_ELEMENTS // max(per_channel, 1)))
    return [(n, c0, min(C, c0 + cb)) for n in range(N) for c0 in range(0, C, cb)]


def _run_blocks(fn, N, C, per_channel):
    """[fn(block) for every block], in this thread.

    The blocks are deliberately not spread over threads: each NumPy call on a cache-sized
    block lasts microseconds, and two threads handing the GIL to each other between such
    calls ran slower than one (measured on the 2-core machine: 12–30 ms against 11 ms for
    MobileNetV2's first depthwise layer).
    """
    return [fn(block) for block in _blocks(N, C, per_channel)]


class _Grid:
    """The phase grid of one call: phase size (Hq, Wq) and each tap's (phase, flat offset)."""

    def __init__(self, spec, shape):
        (sH, sW), (dH, dW), (kH, kW) = spec.stride, spec.dilation, spec.kernel_size
        (pt, pb), (pl, pr) = spec.padding
        self.Hp, self.Wp = shape.H + pt + pb, shape.W + pl + pr
        self.sH, self.sW = sH, sW
        # one spare row so that the last window of every tap stays inside the phase
        self.Hq, self.Wq = -(-self.Hp // sH) + 1, -(-self.Wp // sW)
        self.Ho, self.Wo = shape.H_out, shape.W_out
        self.L = self.Ho * self.Wq                                  # extended outputs per channel
        self.taps = [((u * dH % sH, v * dW % sW), (u * dH // sH) * self.Wq + v * dW // sW, u, v)
                     for u in range(kH) for v in range(kW)]
        self.phases = sorted({ph for ph, _, _, _ in self.taps})

    def split(self, x, spec):
        """{phase: (N, C, Hq·Wq) flat, zero-extended copy of x̃[..., a::sH, b::sW]} (stride 1: one phase).

        With zero padding the phases are cut from ``x`` directly (padded row ``a + i·sH``
        is real row ``a + i·sH − top``); otherwise from the padded input.
        """
        N, C = x.shape[:2]
        if spec.padding_mode == "zeros":
            (top, _), (left, _) = spec.padding
        else:
            x, top, left = pad(x, spec), 0, 0
        out = {}
        for a, b in self.phases:
            q = np.empty((N, C, self.Hq, self.Wq), dtype=x.dtype)
            i0, j0 = -(-(top - a) // self.sH), -(-(left - b) // self.sW)   # first phase row/col on a real pixel
            r0, c0 = a + i0 * self.sH - top, b + j0 * self.sW - left
            src = x[:, :, r0::self.sH, c0::self.sW]                 # (N, C, rows, cols) view
            i1, j1 = i0 + src.shape[2], j0 + src.shape[3]
            q[:, :, :i0] = 0                                        # zero only the border, not the whole phase
            q[:, :, i1:] = 0
            q[:, :, i0:i1, :j0] = 0
            q[:, :, i0:i1, j1:] = 0
            q[:, :, i0:i1, j0:j1] = src
            out[(a, b)] = q.reshape(N, C, self.Hq * self.Wq)       # (N, C, Hq, Wq) → (N, C, Hq·Wq)
        return out

    def merge(self, dq, N, C, dtype):
        """Adjoint of :meth:`split`: (N, C, Hp, Wp) from the phases' gradients."""
        dxp = np.zeros((N, C, self.Hp, self.Wp), dtype=dtype)
        for (a, b), d in dq.items():
            view = dxp[:, :, a::self.sH, b::self.sW]
            view += d.reshape(N, C, self.Hq, self.Wq)[:, :, :view.shape[2], :view.shape[3]]
        return dxp


def forward(x, w, b, spec, shape):
    if channels_last(spec, shape):
        return _nhwc_forward(x, w, b, spec, shape)
    N, C, m = shape.N, shape.C, shape.out_per_group                 # m: channel multiplier
    kH, kW = spec.kernel_size
    grid = _Grid(spec, shape)
    q = grid.split(x, spec)
    w3 = w.reshape(C, m, kH * kW)                                   # (C·m, 1, kH, kW) → (C, m, kH·kW)
    b2 = None if b is None else b.reshape(C, m, 1)                  # (C·m,) → (C, m, 1)
    ext = np.empty((N, C, m, grid.L), dtype=x.dtype)

    def block(job):
        n, c0, c1 = job
        acc = ext[n, c0:c1]                                         # (cb, m, L) view
        tmp = np.empty_like(acc)
        for i, (ph, off, u, v) in enumerate(grid.taps):
            src = q[ph][n, c0:c1, None, off:off + grid.L]           # (cb, 1, L) view
            wt = w3[c0:c1, :, i, None]                              # (cb, m, 1) view
            if i == 0:
                np.multiply(src, wt, out=acc)
            else:
                np.multiply(src, wt, out=tmp)
                acc += tmp
        if b2 is not None:
            acc += b2[c0:c1]

    _run_blocks(block, N, C, m * grid.L)
    out = np.empty((N, C * m, grid.Ho, grid.Wo), dtype=x.dtype)
    # (N, C, m, Ho·Wq) → (N, C·m, Ho, Wq), keep the first W_out columns
    np.copyto(out, ext.reshape(N, C * m, grid.Ho, grid.Wq)[..., :grid.Wo])
    return out


def grad_input(grad_out, w, spec, shape):
    return backward(grad_out, None, w, spec, shape, (True, False))[0]


def grad_weight(grad_out, x, spec, shape):
    return backward(grad_out, x, None, spec, shape, (False, True))[1]


def backward(grad_out, x, w, spec, shape, mask):
    """(∂L/∂x or None, ∂L/∂w or None) as ``mask = (input, weight)`` asks; one pass over the blocks.

    The flat windows multiply the dropped columns' zeros by the weight and the input, so a NaN or
    Inf there would put NaN where none belongs: such calls run channels last.
    """
    from . import all_finite

    if channels_last(spec, shape) or not all_finite(w, x):
        return _nhwc_backward(grad_out, x, w, spec, shape, mask)
    want_dx, want_dw = mask
    N, C, m = shape.N, shape.C, shape.out_per_group
    kH, kW = spec.kernel_size
    dtype = grad_out.dtype
    grid = _Grid(spec, shape)
    g_ext = np.zeros((N, C, m, grid.Ho, grid.Wq), dtype=dtype)
    g_ext[..., :grid.Wo] = grad_out.reshape(N, C, m, grid.Ho, grid.Wo)   # (N, C·m, Ho, Wo) → (N, C, m, Ho, Wo)
    g_ext = g_ext.reshape(N, C, m, grid.L)                          # (N, C, m, Ho, Wq) → (N, C, m, L)
    dq = {ph: np.zeros((N, C, grid.Hq * grid.Wq), dtype=dtype) for ph in grid.phases} if want_dx else None
    w3 = None if w is None else w.reshape(C, m, kH * kW)            # (C·m, 1, kH, kW) → (C, m, kH·kW)
    q = grid.split(x, spec) if want_dw else None

    def block(job):
        n, c0, c1 = job
        g = g_ext[n, c0:c1]                                         # (cb, m, L) view
        part = np.empty((c1 - c0, m, kH * kW), dtype=dtype) if want_dw else None
        tmp = np.empty((c1 - c0, grid.L), dtype=dtype) if want_dx else None
        for i, (ph, off, u, v) in enumerate(grid.taps):
            if want_dx:
                if m == 1:
                    np.multiply(g[:, 0], w3[c0:c1, 0, i, None], out=tmp)
                else:
                    np.einsum("ckp,ck->cp", g, w3[c0:c1, :, i], out=tmp)
                dq[ph][n, c0:c1, off:off + grid.L] += tmp
            if want_dw:
                src = q[ph][n, c0:c1, off:off + grid.L]             # (cb, L) view
                np.einsum("cp,ckp->ck", src, g, out=part[:, :, i])
        return c0, c1, part

    results = _run_blocks(block, N, C, m * grid.L)
    dx = dw = None
    if want_dx:
        dx = fold(grid.merge(dq, N, C, dtype), spec, (shape.H, shape.W))
    if want_dw:
        acc = np.zeros((C, m, kH * kW), dtype=dtype)
        for c0, c1, part in results:
            acc[c0:c1] += part
        dw = acc.reshape(shape.out_channels, 1, kH, kW)            # (C, m, kH·kW) → (C·m, 1, kH, kW)
    return dx, dw


def workspace(pass_, spec, shape, itemsize):
    """Scratch bytes: the padded input or its phases (or their gradients), the result, blocks."""
    (pt, pb), (pl, pr) = spec.padding
    padded = shape.N * shape.C * (shape.H + pt + pb) * (shape.W + pl + pr)
    out = shape.N * shape.out_channels * shape.H_out * shape.W_out
    x = shape.N * shape.C * shape.H * shape.W
    if channels_last(spec, shape):
        weights = spec.kernel_size[0] * spec.kernel_size[1] * shape.W_out * shape.out_channels
        per_pass = {"forward": padded + weights + 2 * out,
                    "grad_input": out + weights + padded + 2 * x,
                    "grad_weight": out + padded}[pass_]
        return (per_pass + 2 * (BLOCK_ELEMENTS + shape.W_out * shape.out_channels)) * itemsize
    grid = _Grid(spec, shape)
    phases = shape.N * shape.C * grid.Hq * grid.Wq * len(grid.phases)
    ext = shape.N * shape.out_channels * grid.L
    per_pass = {"forward": padded + phases + ext + out,
                "grad_input": ext + phases + 2 * padded + x,
                "grad_weight": ext + padded + phases}[pass_]
    return (per_pass + 2 * BLOCK_ELEMENTS) * itemsize


# --------------------------------------------------------------------------- channels last
#
# With small images the flat windows above are short (H_out·Wq values per channel) and
# NumPy spends its time starting loops.  Channels last, a tap's window of a block of rows,
# (rows, W_out, C) with C contiguous, multiplies by the tap's weights repeated along the row,
# (W_out, C): for stride 1 every operand is one contiguous run of rows·W_out·C values.  It
# costs two transposing copies (the input in, the output out), paid back when images are small.

CHANNELS_LAST_BELOW = 1024     # use channels last when H_out·W_out is below this, or when strided


def channels_last(spec, shape) -> bool:
    """Whether the depthwise path runs channels last (see above).

    Measured on MobileNetV2's depthwise layers (batch 8): channels last was faster at every
    size up to 28² (e.g. 960×7²: 1.6 against 3.3 ms forward, 4.5 against 10.3 ms forward +
    backward) and for strided layers (96×112²/2: 27 against 30 ms), slower for stride 1 at
    56² and 112² (32×112²: 17 against 10 ms).
    """
    return shape.H_out * shape.W_out < CHANNELS_LAST_BELOW or spec.stride != (1, 1)


def _nhwc_padded(x, spec):
    """(N, Hp, Wp, C): the padded input, channels last, in one transposing copy (zero padding)."""
    if spec.padding_mode != "zeros":
        xp = pad(x, spec)                                           # (N, C, Hp, Wp)
        out = np.empty((xp.shape[0], xp.shape[2], xp.shape[3], xp.shape[1]), dtype=x.dtype)
        np.copyto(out, xp.transpose(0, 2, 3, 1))                    # (N, C, Hp, Wp) → (N, Hp, Wp, C)
        return out
    (pt, pb), (pl, pr) = spec.padding
    N, C, H, W = x.shape
    out = np.empty((N, H + pt + pb, W + pl + pr, C), dtype=x.dtype)
    out[:, :pt] = 0
    out[:, pt + H:] = 0
    out[:, pt:pt + H, :pl] = 0
    out[:, pt:pt + H, pl + W:] = 0
    np.copyto(out[:, pt:pt + H, pl:pl + W], x.transpose(0, 2, 3, 1))   # (N, C, H, W) → (N, H, W, C)
    return out


def _nhwc_window(a, spec, Wo, u, v, r0, r1):
    """Tap (u, v)'s window for output rows r0…r1 of a (…, Hp, Wp, C) array: (…, r1 − r0, W_out, C) view."""
    (sH, sW), (dH, dW) = spec.stride, spec.dilation
    start, c0 = r0 * sH + u * dH, v * dW
    return a[..., start:start + sH * (r1 - r0 - 1) + 1:sH, c0:c0 + sW * (Wo - 1) + 1:sW, :]


def _row_blocks(N, Ho, per_row):
    rows = max(1, min(Ho, BLOCK_ELEMENTS // max(per_row, 1)))
    return [(n, r0, min(Ho, r0 + rows)) for n in range(N) for r0 in range(0, Ho, rows)]


def _nhwc_weights(w, C, m, Wo):
    """Per tap, the weights repeated along an output row: (kH·kW, W_out, C, m)."""
    T = w.shape[2] * w.shape[3]
    w3 = w.reshape(C, m, T)                                         # (C·m, 1, kH, kW) → (C, m, T)
    out = np.empty((T, Wo, C, m), dtype=w.dtype)
    np.copyto(out, w3.transpose(2, 0, 1)[:, None])                  # (C, m, T) → (T, 1, C, m), repeated W_out times
    return out


def _nhwc_forward(x, w, b, spec, shape):
    N, C, m, Ho, Wo = shape.N, shape.C, shape.out_per_group, shape.H_out, shape.W_out
    kH, kW = spec.kernel_size
    xt = _nhwc_padded(x, spec)                                      # (N, Hp, Wp, C)
    wr = _nhwc_weights(w, C, m, Wo)                                 # (T, Wo, C, m)
    out_t = np.empty((N, Ho, Wo, C, m), dtype=x.dtype)
    blocks = _row_blocks(N, Ho, Wo * C * m)
    tmp = np.empty(max(((r1 - r0) * Wo * C * m for _, r0, r1 in blocks), default=0), dtype=x.dtype)
    for n, r0, r1 in blocks:
        acc = out_t[n, r0:r1]                                       # (rows, Wo, C, m) view
        t = tmp[:acc.size].reshape(acc.shape)                       # (rows, Wo, C, m) scratch
        for i in range(kH * kW):
            u, v = divmod(i, kW)
            src = _nhwc_window(xt[n], spec, Wo, u, v, r0, r1)[..., None]   # (rows, Wo, C, 1) view
            if i == 0:
                np.multiply(src, wr[i], out=acc)
            else:
                np.multiply(src, wr[i], out=t)
                acc += t
        if b is not None:
            acc += b.reshape(C, m)                                  # (C·m,) → (C, m)
    out = np.empty((N, C * m, Ho, Wo), dtype=x.dtype)
    np.copyto(out, out_t.reshape(N, Ho, Wo, C * m).transpose(0, 3, 1, 2))   # (N, Ho, Wo, C·m) → (N, C·m, Ho, Wo)
    return out


def _nhwc_backward(grad_out, x, w, spec, shape, mask):
    want_dx, want_dw = mask
    N, C, m, Ho, Wo = shape.N, shape.C, shape.out_per_group, shape.H_out, shape.W_out
    kH, kW = spec.kernel_size
    T = kH * kW
    dtype = grad_out.dtype
    (pt, pb), (pl, pr) = spec.padding
    Hp, Wp = shape.H + pt + pb, shape.W + pl + pr
    gt = np.empty((N, Ho, Wo, C, m), dtype=dtype)
    np.copyto(gt, grad_out.reshape(N, C, m, Ho, Wo).transpose(0, 3, 4, 1, 2))   # → (N, Ho, Wo, C, m)
    wr = _nhwc_weights(w, C, m, Wo) if want_dx else None            # (T, Wo, C, m)
    dxt = np.zeros((N, Hp, Wp, C), dtype=dtype) if want_dx else None
    xt = _nhwc_padded(x, spec) if want_dw else None                 # (N, Hp, Wp, C)
    dw = np.zeros((T, C, m), dtype=dtype) if want_dw else None
    blocks = _row_blocks(N, Ho, Wo * C * m)
    tmp = np.empty(max(((r1 - r0) * Wo * C * m for _, r0, r1 in blocks), default=0), dtype=dtype)
    for n, r0, r1 in blocks:
        g = gt[n, r0:r1]                                            # (rows, Wo, C, m) view
        t = tmp[:g.size].reshape(g.shape)                           # (rows, Wo, C, m) scratch
        for i in range(T):
            u, v = divmod(i, kW)
            if want_dx:
                np.multiply(g, wr[i], out=t)
                _nhwc_window(dxt[n], spec, Wo, u, v, r0, r1)[...] += t.sum(axis=3) if m > 1 else t[..., 0]
            if want_dw:
                src = _nhwc_window(xt[n], spec, Wo, u, v, r0, r1)[..., None]   # (rows, Wo, C, 1) view
                np.multiply(src, g, out=t)
                dw[i] += t.reshape(-1, C, m).sum(axis=0)            # (rows, Wo, C, m) → (rows·Wo, C, m)
    dx = None
    if want_dx:
        dx = fold(dxt.transpose(0, 3, 1, 2), spec, (shape.H, shape.W))   # (N, Hp, Wp, C) → (N, C, Hp, Wp) view
        dx = np.ascontiguousarray(dx)
    if want_dw:
        dw = np.ascontiguousarray(dw.transpose(1, 2, 0)).reshape(shape.out_channels, 1, kH, kW)   # (T, C, m) → (C·m, 1, kH, kW)
    return dx, dw
