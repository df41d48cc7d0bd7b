"""Depthwise kernels: forward, grad-input and grad-weight of a convolution with one input channel per group.

Output channel ``o`` reads input channel ``c = o // m`` (``m`` the channel multiplier).  With the
padding ``(pt, pl)`` fused (a tap that falls in the zero border is skipped, there is no padded copy)::

    out[n, o, i, j]  = b[o] + Σ_u Σ_v w[o, u, v] · x[n, c, i·sH + u·dH − pt, j·sW + v·dW − pl]
    dx[n, c, r, s]   = Σ_k Σ_u Σ_v w[c·m + k, u, v] · g[n, c·m + k, i, j]    over (i, j, u, v) reading (r, s)
    dw[o, u, v]      = Σ_n Σ_i Σ_j g[n, o, i, j] · x[n, c, i·sH + u·dH − pt, j·sW + v·dW − pl]

For a tap ``v`` the output columns whose input column is real form one range ``j0 ≤ j < j1``
(:func:`._numba.columns`), so the innermost loop runs over ``j`` with no test: contiguous for stride 1, which
LLVM vectorises.  Each output reads only its own window, so a NaN or Inf reaches exactly the outputs
(and gradients) whose windows hold it.  ``fastmath`` allows reassociation and fused multiply-adds only
(no ``nnan``/``ninf``), so non-finite values propagate as in IEEE arithmetic.

Arrays are C-contiguous, float32 or float64 (one compiled signature each); the weight comes as
``(C·m, kH, kW)``, the bias as ``(C·m,)`` (zeros when there is none).
"""
from __future__ import annotations

import numpy as np

from ..depthwise import BLOCK
from ._numba import columns as _columns, njit, prange

_FLAGS = dict(cache=True, parallel=True, fastmath={"reassoc", "contract"})


# The loops below index from 0 with a non-negative step, so that numba drops its negative-index
# wrap-around and LLVM vectorises them (contiguous for stride 1).

@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _axpy(y, a, x, sx):
    """y[j] += a · x[j·sx] for j < len(y)."""
    if sx == 1:
        for j in range(y.shape[0]):
            y[j] += a * x[j]
    else:
        for j in range(y.shape[0]):
            y[j] += a * x[j * sx]


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _scatter_axpy(y, sy, a, x):
    """y[j·sy] += a · x[j] for j < len(x)."""
    if sy == 1:
        for j in range(x.shape[0]):
            y[j] += a * x[j]
    else:
        for j in range(x.shape[0]):
            y[j * sy] += a * x[j]


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _dot(g, x, sx, zero):
    """Σ_j g[j] · x[j·sx] for j < len(g), in the arrays' dtype."""
    s = zero
    if sx == 1:
        for j in range(g.shape[0]):
            s += g[j] * x[j]
    else:
        for j in range(g.shape[0]):
            s += g[j] * x[j * sx]
    return s


@njit(**_FLAGS)
def forward(x, w, b, out, sH, sW, dH, dW, pt, pl, m):
    """out (N, C·m, Ho, Wo) from x (N, C, H, W), w (C·m, kH, kW), b (C·m,)."""
    N, C, H, W = x.shape
    Co, kH, kW = w.shape
    Ho, Wo = out.shape[2], out.shape[3]
    for t in prange(N * Co):
        n, o = t // Co, t % Co
        c = o // m
        for i in range(Ho):
            row = out[n, o, i]
            for j in range(Wo):
                row[j] = b[o]
            for u in range(kH):
                r = i * sH + u * dH - pt
                if r < 0 or r >= H:
                    continue
                src = x[n, c, r]
                if kW == 3 and sW == 1:
                    _three_taps(row, src, w[o, u, 0], w[o, u, 1], w[o, u, 2], dW, pl, W)
                    continue
                for v in range(kW):
                    wt = w[o, u, v]
                    off = v * dW - pl
                    j0, j1 = _columns(off, sW, W, Wo)
                    _axpy(row[j0:j1], wt, src[j0 * sW + off:], sW)


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _three_taps(row, src, w0, w1, w2, dW, pl, W):
    """row[j] += w0·src[j − pl] + w1·src[j + dW − pl] + w2·src[j + 2dW − pl] (stride 1): one pass where
    all three read real columns, one tap at a time at the two ends."""
    Wo = row.shape[0]
    a0, a1 = _columns(-pl, 1, W, Wo)
    b0, b1 = _columns(dW - pl, 1, W, Wo)
    c0, c1 = _columns(2 * dW - pl, 1, W, Wo)
    j0, j1 = max(a0, b0, c0), min(a1, b1, c1)
    if j1 <= j0:
        j0 = j1 = a0
    for wt, off, lo, hi in ((w0, -pl, a0, a1), (w1, dW - pl, b0, b1), (w2, 2 * dW - pl, c0, c1)):
        left, right = min(hi, j0), max(lo, j1)
        if left > lo:
            _axpy(row[lo:left], wt, src[lo + off:], 1)
        if hi > right:
            _axpy(row[right:hi], wt, src[right + off:], 1)
    n = j1 - j0
    y, x0, x1, x2 = row[j0:j1], src[j0 - pl:], src[j0 + dW - pl:], src[j0 + 2 * dW - pl:]
    for j in range(n):
        y[j] += w0 * x0[j] + w1 * x1[j] + w2 * x2[j]


@njit(**_FLAGS)
def grad_input(g, w, dx, sH, sW, dH, dW, pt, pl, m):
    """dx (N, C, H, W), overwritten, from g (N, C·m, Ho, Wo) and w (C·m, kH, kW)."""
    N, C, H, W = dx.shape
    Co, kH, kW = w.shape
    Ho, Wo = g.shape[2], g.shape[3]
    for t in prange(N * C):
        n, c = t // C, t % C
        plane = dx[n, c]
        for r in range(H):
            for s in range(W):
                plane[r, s] = 0
        for k in range(m):
            o = c * m + k
            for i in range(Ho):
                grow = g[n, o, i]
                for u in range(kH):
                    r = i * sH + u * dH - pt
                    if r < 0 or r >= H:
                        continue
                    dst = plane[r]
                    for v in range(kW):
                        wt = w[o, u, v]
                        off = v * dW - pl
                        j0, j1 = _columns(off, sW, W, Wo)
                        _scatter_axpy(dst[j0 * sW + off:], sW, wt, grow[j0:j1])


@njit(**_FLAGS)
def grad_weight(g, x, dw, sH, sW, dH, dW, pt, pl, m):
    """dw (C·m, kH, kW), overwritten, from g (N, C·m, Ho, Wo) and x (N, C, H, W).

    Each row's dot product runs in the arrays' dtype (vectorised); the rows' sums add up in float64.
    """
    N, C, H, W = x.shape
    Co, kH, kW = dw.shape
    Ho, Wo = g.shape[2], g.shape[3]
    zero = np.zeros(1, dtype=dw.dtype)[0]
    for o in prange(Co):
        c = o // m
        acc = np.zeros((kH, kW), dtype=np.float64)
        for n in range(N):
            for i in range(Ho):
                grow = g[n, o, i]
                for u in range(kH):
                    r = i * sH + u * dH - pt
                    if r < 0 or r >= H:
                        continue
                    src = x[n, c, r]
                    for v in range(kW):
                        off = v * dW - pl
                        j0, j1 = _columns(off, sW, W, Wo)
                        acc[u, v] += _dot(grow[j0:j1], src[j0 * sW + off:], sW, zero)
        for u in range(kH):
            for v in range(kW):
                dw[o, u, v] = acc[u, v]


# --------------------------------------------------------------------------- channel blocks
#
# For small images the rows above are short (W_out of 7 or 14 values) and the loops cost more than
# the arithmetic.  With one output channel per input channel (m = 1) the kernels below take BLOCK
# channels at a time (convscope.algorithms.depthwise.BLOCK).  A tile holds one sample's padded input for those channels, channels last and
# split by column phase: ``tile[p, a, t, cc] = x̃[n, c0 + cc, p, a + t·sW]``, so that the columns one
# tap ``v`` reads for an output row, ``j·sW + v·dW`` for j < W_out, are the contiguous run
# ``tile[p, (v·dW) mod sW, (v·dW) div sW + j, :]`` of W_out·BLOCK values.  Every multiply-add is
# then one long contiguous loop (the weights repeated along the row, ``(kH, kW, W_out·BLOCK)``),
# which LLVM vectorises.  The zero border is written once, the interior copied in, and results leave
# the tile's layout on the way out.  Tiles and accumulators are allocated once per block.


@njit(cache=True, inline="always")
def _block_sizes(C, Ho, Wo, kH, kW, sH, sW, dH, dW):
    """(Hn, Wq, L, blocks): the tile's rows (those the outputs read) and columns per phase, the
    values of an output row of a block (W_out·BLOCK), and the number of channel blocks."""
    Hn = (Ho - 1) * sH + dH * (kH - 1) + 1
    Wn = (Wo - 1) * sW + dW * (kW - 1) + 1
    return Hn, (Wn + sW - 1) // sW, Wo * BLOCK, (C + BLOCK - 1) // BLOCK


@njit(cache=True, inline="always")
def _block(t, nb, C):
    """(n, block, first channel, channels) of work item t."""
    n, blk = t // nb, t % nb
    return n, blk, blk * BLOCK, min(BLOCK, C - blk * BLOCK)


@njit(cache=True, inline="always")
def _gather_row(g, n, c0, cn, i, row):
    """row[j·BLOCK + cc] = g[n, c0 + cc, i, j]: one output row of a block, channels last."""
    for cc in range(cn):
        for j in range(g.shape[3]):
            row[j * BLOCK + cc] = g[n, c0 + cc, i, j]


@njit(cache=True)
def _load_tile(x, n, c0, cn, tile, pt, pl):
    """tile[p, a, t, cc] = x[n, c0 + cc, p − pt, a + t·sW − pl] (0 outside x)."""
    H, W = x.shape[2], x.shape[3]
    Hn, sW, Wq = tile.shape[0], tile.shape[1], tile.shape[2]
    tile[:] = 0
    r1, s1 = min(H, Hn - pt), min(W, sW * Wq - pl)
    for r in range(max(0, -pt), r1):
        for s in range(max(0, -pl), s1):
            q = s + pl
            dst = tile[r + pt, q % sW, q // sW]
            for cc in range(cn):
                dst[cc] = x[n, c0 + cc, r, s]


@njit(cache=True)
def _store_tile(dtile, n, c0, cn, dx, pt, pl):
    """dx[n, c0 + cc, r, s] = dtile[r + pt, phase and column of s + pl, cc] (0 where the tile has no row)."""
    H, W = dx.shape[2], dx.shape[3]
    Hn, sW, Wq = dtile.shape[0], dtile.shape[1], dtile.shape[2]
    for cc in range(cn):
        for r in range(H):
            for s in range(W):
                dx[n, c0 + cc, r, s] = 0
    r1, s1 = min(H, Hn - pt), min(W, sW * Wq - pl)
    for r in range(max(0, -pt), r1):
        for s in range(max(0, -pl), s1):
            q = s + pl
            src = dtile[r + pt, q % sW, q // sW]
            for cc in range(cn):
                dx[n, c0 + cc, r, s] = src[cc]


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _triad(y, a, x):
    """y[k] += a[k] · x[k] for k < len(y)."""
    for k in range(y.shape[0]):
        y[k] += a[k] * x[k]


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _triad3(y, a0, x0, a1, x1, a2, x2):
    """y[k] += a0[k]·x0[k] + a1[k]·x1[k] + a2[k]·x2[k]: three taps of a row in one pass over y."""
    for k in range(y.shape[0]):
        y[k] += a0[k] * x0[k] + a1[k] * x1[k] + a2[k] * x2[k]


@njit(cache=True, inline="always")
def _segment(tile, r, q, sW, L):
    """The W_out·BLOCK values tap column offset ``q`` reads in tile row ``r``."""
    start = (q // sW) * BLOCK
    return tile[r, q % sW, start:start + L]


@njit(**_FLAGS)
def forward_blocks(x, wr, b, out, sH, sW, dH, dW, pt, pl):
    """out (N, C, Ho, Wo) from x (N, C, H, W), wr (blocks, kH, kW, W_out·BLOCK) the weights repeated
    along the row, b (C,); m = 1."""
    N, C = x.shape[0], x.shape[1]
    kH, kW = wr.shape[1], wr.shape[2]
    Ho, Wo = out.shape[2], out.shape[3]
    Hn, Wq, L, nb = _block_sizes(C, Ho, Wo, kH, kW, sH, sW, dH, dW)
    for t in prange(N * nb):
        n, blk, c0, cn = _block(t, nb, C)
        tile = np.empty((Hn, sW, Wq * BLOCK), dtype=x.dtype)
        _load_tile(x, n, c0, cn, tile.reshape((Hn, sW, Wq, BLOCK)), pt, pl)
        w = wr[blk]
        acc = np.empty(L, dtype=x.dtype)
        for i in range(Ho):
            for j in range(Wo):
                for cc in range(cn):
                    acc[j * BLOCK + cc] = b[c0 + cc]
            for u in range(kH):
                r = i * sH + u * dH
                if kW == 3:
                    _triad3(acc, w[u, 0], _segment(tile, r, 0, sW, L), w[u, 1], _segment(tile, r, dW, sW, L),
                            w[u, 2], _segment(tile, r, 2 * dW, sW, L))
                else:
                    for v in range(kW):
                        _triad(acc, w[u, v], _segment(tile, r, v * dW, sW, L))
            for cc in range(cn):
                for j in range(Wo):
                    out[n, c0 + cc, i, j] = acc[j * BLOCK + cc]


@njit(**_FLAGS)
def grad_input_blocks(g, wr, dx, sH, sW, dH, dW, pt, pl):
    """dx (N, C, H, W), overwritten, from g (N, C, Ho, Wo) and wr (blocks, kH, kW, W_out·BLOCK); m = 1."""
    N, C = dx.shape[0], dx.shape[1]
    kH, kW = wr.shape[1], wr.shape[2]
    Ho, Wo = g.shape[2], g.shape[3]
    Hn, Wq, L, nb = _block_sizes(C, Ho, Wo, kH, kW, sH, sW, dH, dW)
    for t in prange(N * nb):
        n, blk, c0, cn = _block(t, nb, C)
        dtile = np.zeros((Hn, sW, Wq * BLOCK), dtype=g.dtype)
        w = wr[blk]
        grow = np.zeros(L, dtype=g.dtype)
        for i in range(Ho):
            _gather_row(g, n, c0, cn, i, grow)
            for u in range(kH):
                for v in range(kW):
                    _triad(_segment(dtile, i * sH + u * dH, v * dW, sW, L), w[u, v], grow)
        _store_tile(dtile.reshape((Hn, sW, Wq, BLOCK)), n, c0, cn, dx, pt, pl)


@njit(**_FLAGS)
def grad_weight_blocks(g, x, parts, sH, sW, dH, dW, pt, pl):
    """parts (N, kH, kW, C), overwritten: sample n's share of dw, channels last; m = 1.

    Per (tap, column, channel) the products add up over the output rows in the arrays' dtype; those
    sums add up in float64.
    """
    N, C = x.shape[0], x.shape[1]
    kH, kW = parts.shape[1], parts.shape[2]
    Ho, Wo = g.shape[2], g.shape[3]
    Hn, Wq, L, nb = _block_sizes(C, Ho, Wo, kH, kW, sH, sW, dH, dW)
    for t in prange(N * nb):
        n, _, c0, cn = _block(t, nb, C)
        tile = np.empty((Hn, sW, Wq * BLOCK), dtype=x.dtype)
        _load_tile(x, n, c0, cn, tile.reshape((Hn, sW, Wq, BLOCK)), pt, pl)
        sums = np.zeros((kH, kW, L), dtype=x.dtype)
        grow = np.zeros(L, dtype=x.dtype)
        for i in range(Ho):
            _gather_row(g, n, c0, cn, i, grow)
            for u in range(kH):
                for v in range(kW):
                    _triad(sums[u, v], grow, _segment(tile, i * sH + u * dH, v * dW, sW, L))
        for u in range(kH):
            for v in range(kW):
                for cc in range(cn):
                    total = 0.0
                    for j in range(Wo):
                        total += sums[u, v, j * BLOCK + cc]
                    parts[n, u, v, c0 + cc] = total
