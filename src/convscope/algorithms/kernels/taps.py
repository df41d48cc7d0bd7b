"""The taps path's forward as direct sums (numba), for kernels one row high with few taps × channels.

With the padded rows split into stride phases (:mod:`convscope.algorithms.taps`), input channel ``c``
and tap ``t`` of a group are one *row* ``r = c·k + t`` read at a fixed offset: phase row
``rows[r] = r_t·Cg + c`` from column ``offs[r] = q_t`` on.  Each output is its bias plus one sum over
the rows::

    out[n, g·Og + o, i, j] = bias[g·Og + o] + Σ_r w[g, o, r] · src[n, g, rows[r], i, offs[r] + j]

A task is four output channels × a block of :data:`BLOCK` columns of one output row: the block's
four outputs are accumulated in place, four rows at a time, so that each value read from the input
serves four outputs and each output is read and written once per four rows.  With few rows
(``Cg·k`` up to :data:`convscope.algorithms.taps.DIRECT_MAX_ROWS`) this ran faster than BLAS's
products of the same sums (``bench/README.md``).  Every term is summed (padding cells are the padded input's real zeros), so NaN and ±Inf land where
the definition puts them.
"""
from __future__ import annotations

from ._numba import njit, prange

BLOCK = 1024    # output columns per task


@njit(cache=True, inline="always", fastmath={"contract"})
def four_taps(a0, a1, a2, a3, x0, x1, x2, x3, wg, o0, r, width):
    """a_k[j] += Σ_t wg[o0 + k, r + t] · x_t[j] for the four outputs k and the four taps t: each value
    read serves four outputs, each partial sum is read and written once (also the direct path's)."""
    w00, w01, w02, w03 = wg[o0, r], wg[o0, r + 1], wg[o0, r + 2], wg[o0, r + 3]
    w10, w11, w12, w13 = wg[o0 + 1, r], wg[o0 + 1, r + 1], wg[o0 + 1, r + 2], wg[o0 + 1, r + 3]
    w20, w21, w22, w23 = wg[o0 + 2, r], wg[o0 + 2, r + 1], wg[o0 + 2, r + 2], wg[o0 + 2, r + 3]
    w30, w31, w32, w33 = wg[o0 + 3, r], wg[o0 + 3, r + 1], wg[o0 + 3, r + 2], wg[o0 + 3, r + 3]
    for j in range(width):
        v0, v1, v2, v3 = x0[j], x1[j], x2[j], x3[j]
        a0[j] += w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3
        a1[j] += w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3
        a2[j] += w20 * v0 + w21 * v1 + w22 * v2 + w23 * v3
        a3[j] += w30 * v0 + w31 * v1 + w32 * v2 + w33 * v3


@njit(cache=True, inline="always", fastmath={"contract"})
def one_tap(a0, a1, a2, a3, x0, wg, o0, r, width):
    """a_k[j] += wg[o0 + k, r] · x0[j] for the four outputs k: a tap left over from the fours."""
    w00, w10, w20, w30 = wg[o0, r], wg[o0 + 1, r], wg[o0 + 2, r], wg[o0 + 3, r]
    for j in range(width):
        v0 = x0[j]
        a0[j] += w00 * v0
        a1[j] += w10 * v0
        a2[j] += w20 * v0
        a3[j] += w30 * v0


@njit(cache=True, parallel=True, fastmath={"contract"})
def row_sums(src, rows, offs, w, bias, out):
    """out (N, C_out, H_out, W_out) ← bias + Σ_r w[g, o, r] · src[n, g, rows[r], i, offs[r] + j] (module
    docstring), from src (N, G, ·, H_out, ·) C-contiguous, w (G, Og, R) and bias (C_out,) or empty."""
    N, C_out, H, Wo = out.shape
    G, Og, R = w.shape
    quads = (Og + 3) // 4
    blocks = (Wo + BLOCK - 1) // BLOCK
    has_bias = bias.size > 0
    zero = out.dtype.type(0)
    for task in prange(N * G * H * blocks * quads):
        quad = task % quads
        rest = task // quads
        j0 = (rest % blocks) * BLOCK
        rest //= blocks
        i = rest % H
        rest //= H
        g = rest % G
        n = rest // G
        width = min(BLOCK, Wo - j0)
        plane, wg, o0 = src[n, g], w[g], quad * 4
        base = g * Og + o0
        if o0 + 4 > Og:                                     # the last 1 to 3 output channels, one at a time
            for o in range(o0, Og):
                acc = out[n, g * Og + o, i, j0:j0 + width]
                start = bias[g * Og + o] if has_bias else zero
                for j in range(width):
                    acc[j] = start
                for r in range(R):
                    wv = wg[o, r]
                    x0 = plane[rows[r], i, j0 + offs[r]:j0 + offs[r] + width]
                    for j in range(width):
                        acc[j] += wv * x0[j]
            continue
        a0 = out[n, base, i, j0:j0 + width]
        a1 = out[n, base + 1, i, j0:j0 + width]
        a2 = out[n, base + 2, i, j0:j0 + width]
        a3 = out[n, base + 3, i, j0:j0 + width]
        b0 = bias[base] if has_bias else zero
        b1 = bias[base + 1] if has_bias else zero
        b2 = bias[base + 2] if has_bias else zero
        b3 = bias[base + 3] if has_bias else zero
        for j in range(width):
            a0[j] = b0
            a1[j] = b1
            a2[j] = b2
            a3[j] = b3
        r = 0
        while r + 4 <= R:
            x0 = plane[rows[r], i, j0 + offs[r]:j0 + offs[r] + width]
            x1 = plane[rows[r + 1], i, j0 + offs[r + 1]:j0 + offs[r + 1] + width]
            x2 = plane[rows[r + 2], i, j0 + offs[r + 2]:j0 + offs[r + 2] + width]
            x3 = plane[rows[r + 3], i, j0 + offs[r + 3]:j0 + offs[r + 3] + width]
            four_taps(a0, a1, a2, a3, x0, x1, x2, x3, wg, o0, r, width)
            r += 4
        while r < R:
            x0 = plane[rows[r], i, j0 + offs[r]:j0 + offs[r] + width]
            one_tap(a0, a1, a2, a3, x0, wg, o0, r, width)
            r += 1
