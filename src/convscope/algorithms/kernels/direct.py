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

`forward` takes the flat outputs in blocks of ``block``, four output channels at a time, the
taps four at a time (:func:`convscope.algorithms.kernels.taps.four_taps`): each value read from a phase
serves four outputs, and each partial sum is read and written once per four taps.  Every term is summed
(padding cells are real zeros), so NaN and ±Inf land where the definition puts them.
"""
from __future__ import annotations

import numpy as np

from ._numba import columns as _columns, njit, prange
from .taps import four_taps, one_tap


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


@njit(cache=True, parallel=True, fastmath={"contract"})
def forward(ph, w, bias, out, chan, plane, start, Wq, block):
    """out (N, C_out, H_out, W_out) ← bias + the taps' sums (module docstring), from the flat phase planes
    ph (N, C, sH·sW, Hq·Wq), w (G, Og, R) and bias (C_out,) or empty, ``block`` flat outputs per task."""
    N, C_out, Ho, Wo = out.shape
    G, Og, R = w.shape
    Cg = ph.shape[1] // G
    has_bias = bias.size > 0
    zero = out.dtype.type(0)
    total = Ho * Wq
    blocks = (total + block - 1) // block
    quads = (Og + 3) // 4
    for task in prange(N * G * quads * blocks):
        blk = task % blocks
        rest = task // blocks
        quad = rest % quads
        rest //= quads
        g = rest % G
        n = rest // G
        p0 = blk * block
        width = min(block, total - p0)
        o0 = quad * 4
        count = min(4, Og - o0)
        acc = np.zeros((4, block), dtype=out.dtype)
        wg, xg, c0 = w[g], ph[n], g * Cg
        if count == 4:
            a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
            r = 0
            while r + 4 <= R:
                s = start[r] + p0
                x0 = xg[c0 + chan[r], plane[r], s:s + width]
                s = start[r + 1] + p0
                x1 = xg[c0 + chan[r + 1], plane[r + 1], s:s + width]
                s = start[r + 2] + p0
                x2 = xg[c0 + chan[r + 2], plane[r + 2], s:s + width]
                s = start[r + 3] + p0
                x3 = xg[c0 + chan[r + 3], plane[r + 3], s:s + width]
                four_taps(a0, a1, a2, a3, x0, x1, x2, x3, wg, o0, r, width)
                r += 4
            while r < R:
                s = start[r] + p0
                x0 = xg[c0 + chan[r], plane[r], s:s + width]
                one_tap(a0, a1, a2, a3, x0, wg, o0, r, width)
                r += 1
        else:                                           # the last 1 to 3 output channels, one at a time
            for k in range(count):
                ak = acc[k]
                for r in range(R):
                    s = start[r] + p0
                    x0 = xg[c0 + chan[r], plane[r], s:s + width]
                    wv = wg[o0 + k, r]
                    for j in range(width):
                        ak[j] += wv * x0[j]
        # the block's real outputs (columns j < W_out of each row it spans), with the bias
        for k in range(count):
            o = g * Og + o0 + k
            b = bias[o] if has_bias else zero
            ak, dst = acc[k], out[n, o]
            p = p0
            while p < p0 + width:
                i = p // Wq
                j = p - i * Wq
                stop = min(p0 + width, (i + 1) * Wq)
                row = dst[i]
                for jj in range(j, min(Wo, j + stop - p)):
                    row[jj] = ak[p - p0 + jj - j] + b
                p = stop
