"""The direct path's forward (numba): 2-d convolutions with few input channels per group, summed tap by
tap over the input's stride phases, with no im2col.

:func:`split_phases` copies the input, zero-padded, into its ``sH·sW`` stride phases, each a plane of
``Hq × Wq`` values::

    ph[n, c, a·sW + b, R, Q] = x̃[n, c, R·sH + a, Q·sW + b]            (0 in the padding and beyond)

Tap ``(u, v)`` of output ``(i, j)`` reads ``x̃[i·sH + u·dH, j·sW + v·dW]``, which is phase
``((u·dH) mod sH, (v·dW) mod sW)`` at ``(i + (u·dH) // sH, j + (v·dW) // sW)``.  With ``Wq`` at least
``W_out`` plus the largest column offset, output ``p = i·Wq + j`` of a flat run over ``H_out × Wq`` reads
the phase plane at ``start + p`` for one ``start`` per tap: every tap is one contiguous run, and the
columns ``j ≥ W_out`` of a row are computed and dropped.  So for tap ``r = (c·kH + u)·kW + v``::

    out[n, g·Og + o, i, j] = bias[g·Og + o] + Σ_r w[g, o, r] · ph[n, g·Cg + chan[r], plane[r]][start[r] + i·Wq + j]

`forward` computes eight output channels × one block of flat outputs per task (a block:
:data:`~convscope.algorithms.kernels._numba.REGISTER_BYTES` of each channel's partial sums, 32 float32
or 16 float64), the partial sums held in vector registers across all the taps: each tap loads the
block's run of its phase once and adds it, times one weight each, to the eight channels.  The weights
come as ``(G, ⌈Og/8⌉, R, 8)``, zero past the last channel.  The phase planes are one flat array, each
sample ``per_sample`` values from the last and the whole padded by one block: a sample's last block
runs past its flat outputs, and what those dropped columns read (the next sample's planes, or the
pad) is inside the array.
Every term is summed (padding cells are real zeros), so NaN and ±Inf land where the definition puts
them.
"""
from __future__ import annotations

import numpy as np

from ._numba import columns as _columns, njit, prange
from ._numba import add_eight, register_block, register_lanes


@njit(cache=True, parallel=True)
def split_phases(x, ph, sH, sW, pt, pl):
    """ph (N, C, sH, sW, Hq, Wq) ← x (N, C, H, W) padded by ``pt`` rows and ``pl`` columns of zeros (and
    zeros beyond), split into its stride phases (module docstring)."""
    N, C, H, W = x.shape
    Hq, Wq = ph.shape[4], ph.shape[5]
    zero = ph.dtype.type(0)
    for t in prange(N * C * sH):
        a = t % sH
        c = (t // sH) % C
        n = t // (sH * C)
        for R in range(Hq):
            r = R * sH + a - pt
            for b in range(sW):
                dst = ph[n, c, a, b, R]
                if r < 0 or r >= H:
                    for q in range(Wq):
                        dst[q] = zero
                    continue
                src = x[n, c, r]
                q0, q1 = _columns(b - pl, sW, W, Wq)         # columns q·sW + b − pl inside [0, W)
                q0, q1 = min(q0, Wq), min(q1, Wq)
                for q in range(q0):
                    dst[q] = zero
                for q in range(q0, q1):
                    dst[q] = src[q * sW + b - pl]
                for q in range(q1, Wq):
                    dst[q] = zero


@njit(cache=True, inline="always")
def _put(dst, acc, b, p0, Wq):
    """The real outputs of one channel's block of flat outputs from ``p0`` (columns ``j < W_out`` of
    the rows it spans, rows below ``H_out``), with the bias ``b``, into dst (H_out, W_out)."""
    Ho, Wo = dst.shape
    i = p0 // Wq
    j = p0 - i * Wq
    if i < Ho and j + acc.size <= Wo:           # the block inside one row's outputs: a store of constant length
        row = dst[i]
        for t in range(acc.size):
            row[j + t] = acc[t] + b
        return
    t = 0
    while t < acc.size and i < Ho:
        run = min(acc.size - t, Wq - j)          # the block's flat outputs on row i
        row = dst[i]
        for c in range(min(run, Wo - j)):
            row[j + c] = acc[t + c] + b
        t += run
        i += 1
        j = 0


@njit(cache=True, parallel=True, fastmath={"contract"})
def forward(phf, per_sample, per_group, w8, bias, out, off, Wq):
    """out (N, C_out, H_out, W_out) ← bias + the taps' sums (module docstring), from the flat phase
    planes phf (N·per_sample + one block), a group's planes ``per_group`` values from the last's,
    w8 (G, ⌈Og/8⌉, R, 8), bias (C_out,) or empty, and off (R,): tap r's offset in its group's planes."""
    N, C_out, Ho, Wo = out.shape
    G, octs, R, _ = w8.shape
    Og = C_out // G
    has_bias = bias.size > 0
    zero = out.dtype.type(0)
    total = Ho * Wq
    blocks = (total + register_lanes(out.dtype) - 1) // register_lanes(out.dtype)
    for task in prange(N * G * octs * blocks):
        blk = task % blocks
        rest = task // blocks
        q = rest % octs
        rest //= octs
        g = rest % G
        n = rest // G
        lanes = register_lanes(out.dtype)     # in the loop's body: a constant there, so the loop over it unrolls
        p0 = blk * lanes
        a0 = register_block(out.dtype)
        a1 = register_block(out.dtype)
        a2 = register_block(out.dtype)
        a3 = register_block(out.dtype)
        a4 = register_block(out.dtype)
        a5 = register_block(out.dtype)
        a6 = register_block(out.dtype)
        a7 = register_block(out.dtype)
        wq = w8[g, q]
        first = n * per_sample + g * per_group + p0
        for r in range(R):
            s = np.uint64(first + off[r])         # unsigned: no test for negative indices in the loop
            wr = wq[r]
            add_eight(a0, a1, a2, a3, a4, a5, a6, a7, wr[0], wr[1], wr[2], wr[3], wr[4], wr[5], wr[6], wr[7], phf, s)
        o0 = g * Og + q * 8
        count = min(8, Og - q * 8)
        dst = out[n]
        _put(dst[o0], a0, bias[o0] if has_bias else zero, p0, Wq)
        if count > 1:
            _put(dst[o0 + 1], a1, bias[o0 + 1] if has_bias else zero, p0, Wq)
        if count > 2:
            _put(dst[o0 + 2], a2, bias[o0 + 2] if has_bias else zero, p0, Wq)
        if count > 3:
            _put(dst[o0 + 3], a3, bias[o0 + 3] if has_bias else zero, p0, Wq)
        if count > 4:
            _put(dst[o0 + 4], a4, bias[o0 + 4] if has_bias else zero, p0, Wq)
        if count > 5:
            _put(dst[o0 + 5], a5, bias[o0 + 5] if has_bias else zero, p0, Wq)
        if count > 6:
            _put(dst[o0 + 6], a6, bias[o0 + 6] if has_bias else zero, p0, Wq)
        if count > 7:
            _put(dst[o0 + 7], a7, bias[o0 + 7] if has_bias else zero, p0, Wq)
