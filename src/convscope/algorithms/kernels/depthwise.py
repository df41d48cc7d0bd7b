"""Depthwise kernels: forward, grad-input and grad-weight of a convolution with one input channel per group.

Output channel ``o`` reads input channel ``c = o // m`` (``m`` the channel multiplier).  With the
padding ``(pt, pl)`` fused (there is no padded copy of the input: the row and channel-block kernels
skip a tap that falls in the zero border, the plane kernels hold the border in a per-thread scratch)::

    out[n, o, i, j]  = b[o] + Σ_u Σ_v w[o, u, v] · x[n, c, i·sH + u·dH − pt, j·sW + v·dW − pl]
    dx[n, c, r, s]   = Σ_k Σ_u Σ_v w[c·m + k, u, v] · g[n, c·m + k, i, j]    over (i, j, u, v) reading (r, s)
    dw[o, u, v]      = Σ_n Σ_i Σ_j g[n, o, i, j] · x[n, c, i·sH + u·dH − pt, j·sW + v·dW − pl]

In the row kernels, for a tap ``v`` the output columns whose input column is real form one range ``j0 ≤ j < j1``
(:func:`._numba.columns`), so the innermost loop runs over ``j`` with no test: contiguous for stride 1, which
LLVM vectorises.  Each output reads only its own window, so a NaN or Inf reaches exactly the outputs
(and gradients) whose windows hold it.  ``fastmath`` allows reassociation and fused multiply-adds only
(no ``nnan``/``ninf``), so non-finite values propagate as in IEEE arithmetic.

Arrays are C-contiguous, float32 or float64 (one compiled signature each); the weight comes as
``(C·m, kH, kW)``, the bias as ``(C·m,)`` (zeros when there is none).  Four layouts
(:func:`convscope.algorithms.depthwise.layout`): rows, channel blocks, planes and flat, each in its section below.
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


# --------------------------------------------------------------------------- planes
#
# One (sample, channel) plane at a time, in NCHW, for images small enough that a plane's scratch
# stays in the cache; the planes (grad_weight: the channels) in one chunk per thread.  The padded plane is held split by stride phase, each phase flattened with one
# row pitch ``Wq``: ``P[(p mod sH)·sW + q mod sW, (p div sH)·Wq + q div sW] = x̃[p, q]``.  Output
# ``(i, j)`` at flat index ``i·Wq + j`` then reads, for tap ``(u, v)``, phase ``ph(u, v)`` at
# ``i·Wq + j + off(u, v)`` with ``off(u, v) = (u·dH div sH)·Wq + v·dW div sW``: every tap is one
# contiguous run of the whole plane's outputs, whatever the stride, the dilation or the width, and
# the zero border is part of the scratch (written once per thread, only the interior is copied in).
# The flat index also covers ``Wq − W_out`` columns past each row's end; they are computed and never
# kept.  Runs are rounded up to whole vectors (``_VEC``), the scratch has that much slack.  Narrow
# planes (phases up to ``INDEXED_UP_TO_PITCH`` wide) are copied in and out through index maps, one
# loop over the plane instead of one per row and phase.
#
# ``geo = (Hn, Wn, Hq, Wq, Sr, Sc)`` (:func:`convscope.algorithms.depthwise.plane_geometry`): the padded
# rows and columns the outputs read, a phase's rows and row pitch, the largest tap offset in phase rows
# and columns.  Backward reads grad_output in the same flat layout, its unused columns zero:
#   ∂x̃ (gather):   ∂P[ph, k] = Σ_{taps t of phase ph} w_t · G̃[k + Sr·Wg + Sc − off_t], G̃ the flat
#                  grad_output shifted by the largest tap offset (Sr rows, Sc columns) on pitch Wg;
#   ∂w:            ∂w_t = Σ_k G[k] · P[ph_t, k + off_t].
# The unused columns' zeros meet real values here, so a non-finite weight (∂x) or input plane (∂w)
# takes the exact per-row loops instead (0·Inf would be NaN where torch has a number).

_VEC = 16                 # the runs' lengths are multiples of this (one AVX-512 vector of float32)
INDEXED_UP_TO_PITCH = 16  # phases up to 16 wide copy in and out through index maps (one loop per plane)


@njit(cache=True, inline="always")
def _round_up(n):
    return (n + _VEC - 1) // _VEC * _VEC


@njit(cache=True)
def _taps(kH, kW, sH, sW, dH, dW, pitch):
    """(phase, flat offset) of each tap t = u·kW + v on a scratch of row pitch ``pitch``."""
    ph = np.empty(kH * kW, dtype=np.int64)
    off = np.empty(kH * kW, dtype=np.int64)
    for u in range(kH):
        for v in range(kW):
            ph[u * kW + v] = (u * dH) % sH * sW + (v * dW) % sW
            off[u * kW + v] = (u * dH) // sH * pitch + (v * dW) // sW
    return ph, off


@njit(cache=True, fastmath={"reassoc", "contract"})
def _load_plane(src, P, Hn, Wn, Wq, sH, sW, pt, pl):
    """P[phase of (p, q), flat (p div sH, q div sW)] = src[p − pt, q − pl] for the rows p < Hn and
    columns q < Wn the outputs read; the rest of P is left as it is (zero)."""
    H, W = src.shape
    r1, s1 = min(H, Hn - pt), min(W, Wn - pl)
    for r in range(r1):
        p = r + pt
        row = src[r]
        if sW == 1:
            dst = P[(p % sH) * sW, (p // sH) * Wq + pl:]
            for s in range(s1):
                dst[s] = row[s]
        else:
            for b in range(sW):
                q0 = pl + (b - pl) % sW                       # the first column q ≥ pl of phase b
                s0 = q0 - pl
                if s0 >= s1:
                    continue
                dst = P[(p % sH) * sW + b, (p // sH) * Wq + q0 // sW:]
                part = row[s0:s1]
                if sW == 2:                                   # a constant step: vector shuffles
                    for t in range((s1 - s0 + 1) // 2):
                        dst[t] = part[2 * t]
                else:
                    for t in range((s1 - s0 + sW - 1) // sW):
                        dst[t] = part[t * sW]


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _run3(y, L, S, ph, off, wt, t, first):
    """y[k] (= if first, else +=) Σ_{t ≤ τ < t + 3} wt[τ] · S[ph[τ], k + off[τ]] for k < L: a row of
    three taps in one pass over y."""
    s0, s1, s2 = S[ph[t], off[t]:], S[ph[t + 1], off[t + 1]:], S[ph[t + 2], off[t + 2]:]
    w0, w1, w2 = wt[t], wt[t + 1], wt[t + 2]
    if first:
        for k in range(L):
            y[k] = w0 * s0[k] + w1 * s1[k] + w2 * s2[k]
    else:
        for k in range(L):
            y[k] += w0 * s0[k] + w1 * s1[k] + w2 * s2[k]


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _run1(y, L, S, ph, off, wt, t, first):
    """y[k] (= if first, else +=) wt[t] · S[ph[t], k + off[t]] for k < L."""
    src, a = S[ph[t], off[t]:], wt[t]
    if first:
        for k in range(L):
            y[k] = a * src[k]
    else:
        for k in range(L):
            y[k] += a * src[k]


@njit(cache=True)
def _tap_rows(y, L, S, ph, off, wt, kH, kW):
    """y[k] = Σ_t wt[t] · S[ph[t], k + off[t]] for k < L over the kH·kW taps: one pass over y per row
    of three taps, else one per tap."""
    if kW == 3:
        for u in range(kH):
            _run3(y, L, S, ph, off, wt, 3 * u, u == 0)
    else:
        for t in range(kH * kW):
            _run1(y, L, S, ph, off, wt, t, t == 0)


@njit(cache=True, inline="always")
def _chunk(t, chunks, total):
    """The items [lo, hi) of chunk t of ``chunks`` near-equal chunks of ``total``."""
    return t * total // chunks, (t + 1) * total // chunks


@njit(cache=True)
def _plane_index(H, W, Hn, Wn, Wq, sH, sW, pt, pl, plen, dump):
    """idx[r·W + s]: where padded pixel (r + pt, s + pl) sits in the phases flattened one after the
    other (``plen`` values each), or ``dump`` where the outputs read no such row or column."""
    idx = np.empty(H * W, dtype=np.int32)
    for r in range(H):
        p = r + pt
        for s in range(W):
            q = s + pl
            inside = p < Hn and q < Wn
            idx[r * W + s] = ((p % sH) * sW + q % sW) * plen + (p // sH) * Wq + q // sW if inside else dump
    return idx


@njit(cache=True)
def _grid_index(Ho, Wo, pitch, r0, c0):
    """idx[i·Wo + j] = (r0 + i)·pitch + c0 + j: output (i, j) on a flat scratch of row pitch ``pitch``."""
    idx = np.empty(Ho * Wo, dtype=np.int32)
    for i in range(Ho):
        for j in range(Wo):
            idx[i * Wo + j] = (r0 + i) * pitch + c0 + j
    return idx


@njit(cache=True)
def _input_planes(H, W, Ho, Wo, kH, kW, sH, sW, dH, dW, pt, pl, geo):
    """(L, ph, off, plen, indexed, xin, yin), what the kernels that read the input's planes share: the
    length of a run over the outputs, each tap's phase and offset, the length of a phase's scratch,
    whether the planes are copied through index maps, the map of the input pixels and that of the
    outputs on row pitch Wq."""
    Hn, Wn, Hq, Wq, _, _ = geo
    ph, off = _taps(kH, kW, sH, sW, dH, dW, Wq)
    plen = Hq * Wq + 2 * _VEC
    xin = _plane_index(H, W, Hn, Wn, Wq, sH, sW, pt, pl, plen, sH * sW * plen)
    return (_round_up((Ho - 1) * Wq + Wo), ph, off, plen, Wq <= INDEXED_UP_TO_PITCH, xin,
            _grid_index(Ho, Wo, Wq, 0, 0))


@njit(**_FLAGS)
def forward_planes(x, w, b, out, sH, sW, dH, dW, pt, pl, m, geo, chunks):
    """out (N, C·m, Ho, Wo) from x (N, C, H, W), w (C·m, kH, kW), b (C·m,), the (n, c) planes in
    ``chunks`` parallel chunks."""
    N, C, H, W = x.shape
    Co, kH, kW = w.shape
    Ho, Wo = out.shape[2], out.shape[3]
    Hn, Wn, Hq, Wq, _, _ = geo
    L, ph, off, plen, indexed, xin, yout = _input_planes(H, W, Ho, Wo, kH, kW, sH, sW, dH, dW, pt, pl, geo)
    for t in prange(chunks):
        P = np.zeros((sH * sW + 1, plen), dtype=x.dtype)
        Pf = P.ravel()
        y = np.empty(L, dtype=x.dtype)
        lo, hi = _chunk(t, chunks, N * C)
        for q in range(lo, hi):
            n, c = q // C, q % C
            if indexed:
                xp = x[n, c].ravel()
                for e in range(H * W):
                    Pf[xin[e]] = xp[e]
            else:
                _load_plane(x[n, c], P, Hn, Wn, Wq, sH, sW, pt, pl)
            for k in range(m):
                o = c * m + k
                wt = w[o].ravel()
                _tap_rows(y, L, P, ph, off, wt, kH, kW)
                bias = b[o]
                if indexed:
                    op = out[n, o].ravel()
                    for e in range(Ho * Wo):
                        op[e] = y[yout[e]] + bias
                else:
                    for i in range(Ho):
                        row, src = out[n, o, i], y[i * Wq:]
                        for j in range(Wo):
                            row[j] = src[j] + bias


@njit(cache=True)
def _store_plane(dP, dst, Hn, Wn, Wg, sH, sW, pt, pl):
    """dst[r, s] = dP[phase of (p, q), flat (p div sH, q div sW)] with p = r + pt, q = s + pl, on row
    pitch Wg; 0 where the outputs read no such row or column (p ≥ Hn or q ≥ Wn)."""
    H, W = dst.shape
    r1, s1 = min(H, Hn - pt), min(W, Wn - pl)
    for r in range(H):
        row = dst[r]
        if r >= r1:
            for s in range(W):
                row[s] = 0
            continue
        p = r + pt
        if sW == 1:
            src = dP[(p % sH) * sW, (p // sH) * Wg + pl:]
            for s in range(s1):
                row[s] = src[s]
        else:
            for b in range(sW):
                q0 = pl + (b - pl) % sW
                s0 = q0 - pl
                if s0 >= s1:
                    continue
                src = dP[(p % sH) * sW + b, (p // sH) * Wg + q0 // sW:]
                part = row[s0:s1]
                if sW == 2:
                    for t in range((s1 - s0 + 1) // 2):
                        part[2 * t] = src[t]
                else:
                    for t in range((s1 - s0 + sW - 1) // sW):
                        part[t * sW] = src[t]
        for s in range(max(s1, 0), W):
            row[s] = 0


@njit(cache=True)
def _phase_taps(kH, kW, sH, sW, dH, dW, Wg, Sr, Sc):
    """(start, order, offset): the taps of each phase, ``order[start[ph]:start[ph + 1]]`` (tap numbers
    t = u·kW + v, rows of three consecutive where a phase has them), and each one's offset into the
    shifted grad_output ``(Sr − u·dH div sH)·Wg + Sc − v·dW div sW``."""
    nph = sH * sW
    start = np.zeros(nph + 1, dtype=np.int64)
    order = np.empty(kH * kW, dtype=np.int64)
    offset = np.empty(kH * kW, dtype=np.int64)
    i = 0
    for a in range(sH):
        for b in range(sW):
            for u in range(kH):
                if (u * dH) % sH != a:
                    continue
                for v in range(kW):
                    if (v * dW) % sW != b:
                        continue
                    order[i] = u * kW + v
                    offset[i] = (Sr - (u * dH) // sH) * Wg + Sc - (v * dW) // sW
                    i += 1
            start[a * sW + b + 1] = i
    return start, order, offset


@njit(**_FLAGS)
def grad_input_planes(g, w, dx, sH, sW, dH, dW, pt, pl, m, geo, chunks):
    """dx (N, C, H, W), overwritten, from g (N, C·m, Ho, Wo) and w (C·m, kH, kW), finite; the (n, c)
    planes in ``chunks`` parallel chunks."""
    N, C = dx.shape[0], dx.shape[1]
    Co, kH, kW = w.shape
    Ho, Wo = g.shape[2], g.shape[3]
    Hn, Wn, Hq, Wq, Sr, Sc = geo
    Wg = Wq + Sc
    L = _round_up((Hq - 1) * Wg + Wq)
    start, order, offset = _phase_taps(kH, kW, sH, sW, dH, dW, Wg, Sr, Sc)
    zeros = np.zeros(kH * kW, dtype=np.int64)
    three = kW == 3 and sW == 1
    H, W = dx.shape[2], dx.shape[3]
    indexed = Wq <= INDEXED_UP_TO_PITCH
    plen = L + _VEC
    gin = _grid_index(Ho, Wo, Wg, Sr, Sc)
    dxout = _plane_index(H, W, Hn, Wn, Wg, sH, sW, pt, pl, plen, sH * sW * plen)
    for t in prange(chunks):
        G = np.zeros((1, (Hq + Sr) * Wg + 2 * _VEC), dtype=g.dtype)
        Gf = G.ravel()
        dP = np.zeros((sH * sW + 1, plen), dtype=g.dtype)      # the last row: zeros for unread pixels
        dPf = dP.ravel()
        wt = np.empty(kH * kW, dtype=g.dtype)
        lo, hi = _chunk(t, chunks, N * C)
        for q in range(lo, hi):
            n, c = q // C, q % C
            for k in range(m):
                o = c * m + k
                if indexed:
                    gp = g[n, o].ravel()
                    for e in range(Ho * Wo):
                        Gf[gin[e]] = gp[e]
                else:
                    for i in range(Ho):
                        row, dst = g[n, o, i], G[0, (Sr + i) * Wg + Sc:]
                        for j in range(Wo):
                            dst[j] = row[j]
                wo = w[o].ravel()
                for e in range(kH * kW):
                    wt[e] = wo[order[e]]
                for ph in range(sH * sW):
                    y = dP[ph]
                    e0, e1 = start[ph], start[ph + 1]
                    if e1 == e0 and k == 0:
                        for j in range(L):
                            y[j] = 0
                    elif three:
                        for e in range(e0, e1, 3):
                            _run3(y, L, G, zeros, offset, wt, e, k == 0 and e == e0)
                    else:
                        for e in range(e0, e1):
                            _run1(y, L, G, zeros, offset, wt, e, k == 0 and e == e0)
            if indexed:
                xp = dx[n, c].ravel()
                for e in range(H * W):
                    xp[e] = dPf[dxout[e]]
            else:
                _store_plane(dP, dx[n, c], Hn, Wn, Wg, sH, sW, pt, pl)


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dots(G, P, ph, off, t, n, rows, length, pitch, acc, zero):
    """acc[t + τ] += Σ_r Σ_{k < length} G[r·pitch + k] · P[ph[t + τ], r·pitch + k + off[t + τ]] for
    τ < n (1 or 3 taps sharing G's loads), summed in the arrays' dtype per run of at most 512 values
    and those sums in float64."""
    for r in range(rows):
        for k0 in range(0, length, 512):
            k1 = min(length, k0 + 512)
            g = G[r * pitch + k0:r * pitch + k1]
            base = r * pitch + k0
            if n == 3:
                s0 = P[ph[t], base + off[t]:]
                s1 = P[ph[t + 1], base + off[t + 1]:]
                s2 = P[ph[t + 2], base + off[t + 2]:]
                a0 = a1 = a2 = zero
                for k in range(k1 - k0):
                    a0 += g[k] * s0[k]
                    a1 += g[k] * s1[k]
                    a2 += g[k] * s2[k]
                acc[t] += a0
                acc[t + 1] += a1
                acc[t + 2] += a2
            else:
                s0 = P[ph[t], base + off[t]:]
                a0 = zero
                for k in range(k1 - k0):
                    a0 += g[k] * s0[k]
                acc[t] += a0


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _dots9(G, P, ph, off, rows, length, pitch, acc, zero):
    """:func:`_dots` for the nine taps of a 3×3 kernel in one pass over G."""
    for r in range(rows):
        for k0 in range(0, length, 512):
            k1 = min(length, k0 + 512)
            base = r * pitch + k0
            g = G[base:r * pitch + k1]
            s0, s1, s2 = P[ph[0], base + off[0]:], P[ph[1], base + off[1]:], P[ph[2], base + off[2]:]
            s3, s4, s5 = P[ph[3], base + off[3]:], P[ph[4], base + off[4]:], P[ph[5], base + off[5]:]
            s6, s7, s8 = P[ph[6], base + off[6]:], P[ph[7], base + off[7]:], P[ph[8], base + off[8]:]
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = zero
            for k in range(k1 - k0):
                gk = g[k]
                a0 += gk * s0[k]
                a1 += gk * s1[k]
                a2 += gk * s2[k]
                a3 += gk * s3[k]
                a4 += gk * s4[k]
                a5 += gk * s5[k]
                a6 += gk * s6[k]
                a7 += gk * s7[k]
                a8 += gk * s8[k]
            acc[0] += a0
            acc[1] += a1
            acc[2] += a2
            acc[3] += a3
            acc[4] += a4
            acc[5] += a5
            acc[6] += a6
            acc[7] += a7
            acc[8] += a8


@njit(**_FLAGS)
def grad_weight_planes(g, x, dw, sH, sW, dH, dW, pt, pl, m, geo, chunks):
    """dw (C·m, kH, kW), overwritten, from g (N, C·m, Ho, Wo) and x (N, C, H, W); the channels in
    ``chunks`` parallel chunks.  Each plane's sums run flat, over the unused columns' zeros too; a plane
    whose sums are not finite is summed again over its real output columns only (the flat run multiplies
    a NaN or ±Inf of x by those zeros, which the real sums may not)."""
    N, C, H, W = x.shape
    Co, kH, kW = dw.shape
    Ho, Wo = g.shape[2], g.shape[3]
    Hn, Wn, Hq, Wq, _, _ = geo
    L, ph, off, plen, indexed, xin, gin = _input_planes(H, W, Ho, Wo, kH, kW, sH, sW, dH, dW, pt, pl, geo)
    T = kH * kW
    zero = np.zeros(1, dtype=x.dtype)[0]
    for t in prange(chunks):
        P = np.zeros((sH * sW + 1, plen), dtype=x.dtype)
        Pf = P.ravel()
        G = np.zeros(L + _VEC, dtype=x.dtype)
        acc = np.empty(T, dtype=np.float64)
        part = np.empty(T, dtype=np.float64)
        lo, hi = _chunk(t, chunks, C)
        for c in range(lo, hi):
            for k in range(m):
                o = c * m + k
                acc[:] = 0
                for n in range(N):
                    if indexed:
                        xp, gp = x[n, c].ravel(), g[n, o].ravel()
                        for e in range(H * W):
                            Pf[xin[e]] = xp[e]
                        for e in range(Ho * Wo):
                            G[gin[e]] = gp[e]
                    else:
                        _load_plane(x[n, c], P, Hn, Wn, Wq, sH, sW, pt, pl)
                        for i in range(Ho):
                            row, dst = g[n, o, i], G[i * Wq:]
                            for j in range(Wo):
                                dst[j] = row[j]
                    rows, length, exact = 1, L, False
                    while True:
                        part[:] = 0
                        if kH == 3 and kW == 3:
                            _dots9(G, P, ph, off, rows, length, Wq, part, zero)
                        elif kW == 3:
                            for e in range(0, T, 3):
                                _dots(G, P, ph, off, e, 3, rows, length, Wq, part, zero)
                        else:
                            for e in range(T):
                                _dots(G, P, ph, off, e, 1, rows, length, Wq, part, zero)
                        check = 0.0
                        for e in range(T):
                            check += part[e] * 0.0
                        if check == 0 or exact:
                            break
                        rows, length, exact = Ho, Wo, True      # not finite: the real columns only
                    for e in range(T):
                        acc[e] += part[e]
                wo = dw[o].ravel()
                for e in range(T):
                    wo[e] = acc[e]


# --------------------------------------------------------------------------- flat
#
# Stride 1, a 3×3 kernel and outputs the input's size (``pt + pb = 2·dH``, ``pl + pr = 2·dW``), zero
# padding: output ``e = i·W + j`` of a plane reads, for tap ``(u, v)``, the flat input ``e + off(u, v)``
# with ``off(u, v) = (u·dH − pt)·W + v·dW − pl``, straight from the caller's array (no copy, no
# scratch).  Where that pixel is not the tap's (its row or column falls outside the plane, so the flat
# index has wrapped onto another row or plane), the product is multiplied by a mask of 0: exactly 0
# while the values are finite.  A plane whose result is not finite (a NaN or Inf met a mask, or is
# really there) is computed again exactly, tap by tap (:func:`_exact_plane`, :func:`_exact_dots`), so
# NaN and Inf land where torch puts them.  The first and last planes of the array (whose wrapped
# reads would leave it) are always computed that way.


@njit(cache=True)
def _flat_masks(H, W, Ho, Wo, s, dH, dW, pt, pl, dtype_zero):
    """(rows, cols): rows[u, k] = 1 where grid point k = i·W + j is an output (j < Wo) whose tap row u
    lies in the plane, else 0; cols[v, k] likewise for tap column v."""
    K = (Ho - 1) * W + Wo
    rows = np.zeros((3, K), dtype=dtype_zero.dtype)
    cols = np.zeros((3, K), dtype=dtype_zero.dtype)
    for k in range(K):
        i, j = k // W, k % W
        for t in range(3):
            r, c = i * s + t * dH - pt, j * s + t * dW - pl
            rows[t, k] = 1 if j < Wo and 0 <= r < H else 0
            cols[t, k] = 1 if j < Wo and 0 <= c < W else 0
    return rows, cols


@njit(cache=True, fastmath={"reassoc", "contract"})
def _exact_plane(xf, base, H, W, s, w, bias, dH, dW, pt, pl, pad_products, dst):
    """dst (Ho, Wo) = bias + Σ_{u,v} w[u, v] · x[i·s + u·dH − pt, j·s + v·dW − pl] over the taps inside
    the plane at ``xf[base:]``; with ``pad_products`` the taps in the zero border add w · 0 (forward: a
    non-finite weight gives NaN there, as torch's), else they are skipped (grad_input)."""
    zero = np.zeros(1, dtype=xf.dtype)[0]
    for i in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            acc = bias
            for u in range(3):
                r = i * s + u * dH - pt
                for v in range(3):
                    c = j * s + v * dW - pl
                    if 0 <= r < H and 0 <= c < W:
                        acc += w[u, v] * xf[base + r * W + c]
                    elif pad_products:
                        acc += w[u, v] * zero
            dst[i, j] = acc


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _flat_run(dst, K, step, wo, xf, b0, b1, b2, dW, rows, cols, bias, zero):
    """dst[k] = bias + Σ_{u,v} rows[u, k] · cols[v, k] · wo[u, v] · xf[b_u + step·k + v·dW] for k < K;
    returns Σ dst · 0 (0 when every value is finite, else NaN)."""
    mr0, mr1, mr2 = rows[0], rows[1], rows[2]
    mc0, mc1, mc2 = cols[0], cols[1], cols[2]
    w00, w01, w02 = wo[0, 0], wo[0, 1], wo[0, 2]
    w10, w11, w12 = wo[1, 0], wo[1, 1], wo[1, 2]
    w20, w21, w22 = wo[2, 0], wo[2, 1], wo[2, 2]
    x00, x01, x02 = xf[b0:], xf[b0 + dW:], xf[b0 + 2 * dW:]
    x10, x11, x12 = xf[b1:], xf[b1 + dW:], xf[b1 + 2 * dW:]
    x20, x21, x22 = xf[b2:], xf[b2 + dW:], xf[b2 + 2 * dW:]
    check = zero
    for e in range(K):
        f = step * e
        r0 = mc0[e] * (w00 * x00[f]) + mc1[e] * (w01 * x01[f]) + mc2[e] * (w02 * x02[f])
        r1 = mc0[e] * (w10 * x10[f]) + mc1[e] * (w11 * x11[f]) + mc2[e] * (w12 * x12[f])
        r2 = mc0[e] * (w20 * x20[f]) + mc1[e] * (w21 * x21[f]) + mc2[e] * (w22 * x22[f])
        v = bias + (mr0[e] * r0 + mr1[e] * r1 + mr2[e] * r2)
        dst[e] = v
        check += v * zero
    return check


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _flat_run_stride2(dst, K, wo, xf, b0, b1, b2, rows, cols, bias, zero):
    """:func:`_flat_run` with step 2 and dilation 1: each tap row read as one view, its three taps at
    ``2k``, ``2k + 1`` and ``2k + 2``, so that the loads form pairs the loop vectorises
    (``bench/README.md``, "Depthwise, small layers")."""
    mr0, mr1, mr2 = rows[0], rows[1], rows[2]
    mc0, mc1, mc2 = cols[0], cols[1], cols[2]
    w00, w01, w02 = wo[0, 0], wo[0, 1], wo[0, 2]
    w10, w11, w12 = wo[1, 0], wo[1, 1], wo[1, 2]
    w20, w21, w22 = wo[2, 0], wo[2, 1], wo[2, 2]
    x0, x1, x2 = xf[b0:], xf[b1:], xf[b2:]
    check = zero
    for e in range(K):
        f = 2 * e
        r0 = mc0[e] * (w00 * x0[f]) + mc1[e] * (w01 * x0[f + 1]) + mc2[e] * (w02 * x0[f + 2])
        r1 = mc0[e] * (w10 * x1[f]) + mc1[e] * (w11 * x1[f + 1]) + mc2[e] * (w12 * x1[f + 2])
        r2 = mc0[e] * (w20 * x2[f]) + mc1[e] * (w21 * x2[f + 1]) + mc2[e] * (w22 * x2[f + 2])
        v = bias + (mr0[e] * r0 + mr1[e] * r1 + mr2[e] * r2)
        dst[e] = v
        check += v * zero
    return check


@njit(**_FLAGS)
def forward_flat(xf, w, b, out, H, W, s, dH, dW, pt, pl, m, pad_products, chunks):
    """out (N, C·m, Ho, Wo) from the flat x (N·C·H·W,), w (C·m, 3, 3), b (C·m,); stride s = 1 with
    outputs the input's size, or s = 2; the (n, c) planes in ``chunks`` parallel chunks.  grad_input
    is this kernel on grad_output with the weights rotated by 180° and the padding mirrored (s = 1,
    m = 1, no pad products).  Output (i, j) is grid point k = i·W + j; stride 2 computes the grid's
    points past each row's W_out too (their masks are 0) in a scratch row and keeps the outputs."""
    N, Co, Ho, Wo = out.shape
    C = Co // m
    HW = H * W
    K = (Ho - 1) * W + Wo
    rows, cols = _flat_masks(H, W, Ho, Wo, s, dH, dW, pt, pl, w[0, 0, :1])
    o0, o1, o2 = -pt * W - pl, (dH - pt) * W - pl, (2 * dH - pt) * W - pl      # tap (u, 0)'s offset
    lo, hi = o0, s * (K - 1) + o2 + 2 * dW
    total = xf.shape[0]
    zero = np.zeros(1, dtype=xf.dtype)[0]
    for t in prange(chunks):
        y = np.empty(K, dtype=xf.dtype)
        q0, q1 = _chunk(t, chunks, N * C)
        for q in range(q0, q1):
            n, c = q // C, q % C
            base = q * HW
            safe = base + lo >= 0 and base + hi < total
            for k in range(m):
                o = c * m + k
                wo = w[o]
                bias = b[o]
                if not safe:
                    _exact_plane(xf, base, H, W, s, wo, bias, dH, dW, pt, pl, pad_products, out[n, o])
                    continue
                dst = out[n, o].ravel() if s == 1 else y
                if s == 1:          # (a literal step in each call, so that the loop vectorises)
                    check = _flat_run(dst, K, 1, wo, xf, base + o0, base + o1, base + o2, dW, rows, cols, bias, zero)
                else:
                    if dW == 1:     # the three taps of a row as one run's consecutive values
                        check = _flat_run_stride2(dst, K, wo, xf, base + o0, base + o1, base + o2, rows, cols, bias,
                                                  zero)
                    else:
                        check = _flat_run(dst, K, 2, wo, xf, base + o0, base + o1, base + o2, dW, rows, cols, bias,
                                          zero)
                if check != 0:
                    _exact_plane(xf, base, H, W, s, wo, bias, dH, dW, pt, pl, pad_products, out[n, o])
                elif s != 1:
                    for i in range(Ho):
                        row, src = out[n, o, i], y[i * W:]
                        for j in range(Wo):
                            row[j] = src[j]


@njit(cache=True, inline="always", fastmath={"reassoc", "contract"})
def _channel_run(dst, E, xf, b0, b1, b2, dW, wm, bv, e0, zero):
    """dst[e] = bv[e0 + e] + Σ_t wm[t, e0 + e] · xf[b_u + e + v·dW] for e < E (tap t = 3u + v, its mask
    and the plane's weight in wm); returns Σ dst · 0 (0 when every value is finite, else NaN)."""
    x00, x01, x02 = xf[b0:], xf[b0 + dW:], xf[b0 + 2 * dW:]
    x10, x11, x12 = xf[b1:], xf[b1 + dW:], xf[b1 + 2 * dW:]
    x20, x21, x22 = xf[b2:], xf[b2 + dW:], xf[b2 + 2 * dW:]
    m0, m1, m2, m3, m4 = wm[0, e0:], wm[1, e0:], wm[2, e0:], wm[3, e0:], wm[4, e0:]
    m5, m6, m7, m8, bb = wm[5, e0:], wm[6, e0:], wm[7, e0:], wm[8, e0:], bv[e0:]
    check = zero
    for e in range(E):
        v = bb[e] + (m0[e] * x00[e] + m1[e] * x01[e] + m2[e] * x02[e]
                     + m3[e] * x10[e] + m4[e] * x11[e] + m5[e] * x12[e]
                     + m6[e] * x20[e] + m7[e] * x21[e] + m8[e] * x22[e])
        dst[e] = v
        check += v * zero
    return check


@njit(**_FLAGS)
def forward_flat_channels(xf, w, b, out, H, W, dH, dW, pt, pl, pad_products, per_block):
    """out (N, C, H, W) from the flat x (N·C·H·W,), w (C, 3, 3), b (C,): the flat kernel's sum (stride 1,
    multiplier 1, outputs the input's size) run over ``per_block`` consecutive channels' planes at once,
    so that small planes still give long loops.  A block's weights, each multiplied by its tap's mask
    (with ``pad_products``: w · 0 in the border, NaN for a non-finite weight, as torch's; else 0), and its
    biases are laid out along the block's outputs once, in wm (9, per_block·H·W) and bv, and serve every
    sample; the blocks are the parallel items.  Planes whose reads would leave the array, and a block's
    planes whose result is not finite, are computed again exactly (:func:`_exact_plane`)."""
    N, C = out.shape[0], out.shape[1]
    HW = H * W
    rows, cols = _flat_masks(H, W, H, W, 1, dH, dW, pt, pl, w[0, 0, :1])
    o0, o1, o2 = -pt * W - pl, (dH - pt) * W - pl, (2 * dH - pt) * W - pl      # tap (u, 0)'s offset
    lo, hi = o0, HW - 1 + o2 + 2 * dW
    total = xf.shape[0]
    outf = out.reshape(-1)
    zero = np.zeros(1, dtype=xf.dtype)[0]
    nb = -(-C // per_block)
    for t in prange(nb):
        c0 = t * per_block
        c1 = min(C, c0 + per_block)
        wm = np.empty((9, (c1 - c0) * HW), dtype=xf.dtype)
        bv = np.empty((c1 - c0) * HW, dtype=xf.dtype)
        for c in range(c0, c1):
            e0 = (c - c0) * HW
            for u in range(3):
                for v in range(3):
                    wt, row, ru, cv = w[c, u, v], wm[u * 3 + v, e0:e0 + HW], rows[u], cols[v]
                    for k in range(HW):
                        inside = ru[k] * cv[k]
                        row[k] = inside * wt if pad_products else (wt if inside != 0 else zero)
            for k in range(HW):
                bv[e0 + k] = b[c]
        for n in range(N):
            p0, p1 = c0, c1                        # the block's planes whose reads stay in the array
            while p0 < p1 and (n * C + p0) * HW + lo < 0:
                p0 += 1
            while p1 > p0 and (n * C + p1 - 1) * HW + hi >= total:
                p1 -= 1
            done0 = done1 = c0                     # the planes the run computed, all finite
            if p1 > p0:
                base, e0 = (n * C + p0) * HW, (p0 - c0) * HW
                check = _channel_run(outf[base:], (p1 - p0) * HW, xf, base + o0, base + o1, base + o2, dW,
                                     wm, bv, e0, zero)
                if check == 0:
                    done0, done1 = p0, p1
            for c in range(c0, c1):
                if not done0 <= c < done1:
                    _exact_plane(xf, (n * C + c) * HW, H, W, 1, w[c], b[c], dH, dW, pt, pl, pad_products,
                                 out[n, c])


@njit(cache=True, fastmath={"reassoc", "contract"})
def _exact_dots(gf, gbase, xf, xbase, H, W, dH, dW, pt, pl, acc):
    """acc[u·3 + v] += Σ_e g[e] · x̃[tap (u, v) of e], the border's zeros included (g · 0: an
    infinite grad_output there gives NaN, as torch's)."""
    zero = np.zeros(1, dtype=xf.dtype)[0]
    for u in range(3):
        for v in range(3):
            s = zero
            for i in range(H):
                r = i + u * dH - pt
                for j in range(W):
                    c = j + v * dW - pl
                    x = xf[xbase + r * W + c] if 0 <= r < H and 0 <= c < W else zero
                    s += gf[gbase + i * W + j] * x
            acc[u * 3 + v] += s


@njit(**_FLAGS)
def grad_weight_flat(gf, xf, dw, N, C, H, W, dH, dW, pt, pl, m, chunks):
    """dw (C·m, 3, 3), overwritten, from the flat g (N·C·m·H·W,) and x (N·C·H·W,); stride 1, outputs
    the input's size; the channels in ``chunks`` parallel chunks.  Per plane and tap the products add
    up in the arrays' dtype, runs of at most 512, those sums in float64."""
    Co = C * m
    HW = H * W
    rows, cols = _flat_masks(H, W, H, W, 1, dH, dW, pt, pl, dw[0, 0, :1])
    mr0, mr1, mr2 = rows[0], rows[1], rows[2]
    mc0, mc1, mc2 = cols[0], cols[1], cols[2]
    o0, o1, o2 = -pt * W - pl, (dH - pt) * W - pl, (2 * dH - pt) * W - pl
    lo, hi = o0, o2 + 2 * dW
    total = xf.shape[0]
    zero = np.zeros(1, dtype=xf.dtype)[0]
    for t in prange(chunks):
        acc = np.empty(9, dtype=np.float64)
        part = np.empty(9, dtype=np.float64)
        c0, c1 = _chunk(t, chunks, C)
        for c in range(c0, c1):
            for k in range(m):
                o = c * m + k
                acc[:] = 0
                for n in range(N):
                    base, gbase = (n * C + c) * HW, (n * Co + o) * HW
                    if not (base + lo >= 0 and base + HW - 1 + hi < total):
                        _exact_dots(gf, gbase, xf, base, H, W, dH, dW, pt, pl, acc)
                        continue
                    part[:] = 0
                    for e0 in range(0, HW, 512):
                        e1 = min(HW, e0 + 512)
                        g = gf[gbase + e0:gbase + e1]
                        b0, b1, b2 = base + o0 + e0, base + o1 + e0, base + o2 + e0
                        x00, x01, x02 = xf[b0:], xf[b0 + dW:], xf[b0 + 2 * dW:]
                        x10, x11, x12 = xf[b1:], xf[b1 + dW:], xf[b1 + 2 * dW:]
                        x20, x21, x22 = xf[b2:], xf[b2 + dW:], xf[b2 + 2 * dW:]
                        m0, m1, m2 = mc0[e0:], mc1[e0:], mc2[e0:]
                        n0, n1, n2 = mr0[e0:], mr1[e0:], mr2[e0:]
                        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = zero
                        for e in range(e1 - e0):
                            g0, g1, g2 = g[e] * n0[e], g[e] * n1[e], g[e] * n2[e]
                            a0 += (g0 * m0[e]) * x00[e]
                            a1 += (g0 * m1[e]) * x01[e]
                            a2 += (g0 * m2[e]) * x02[e]
                            a3 += (g1 * m0[e]) * x10[e]
                            a4 += (g1 * m1[e]) * x11[e]
                            a5 += (g1 * m2[e]) * x12[e]
                            a6 += (g2 * m0[e]) * x20[e]
                            a7 += (g2 * m1[e]) * x21[e]
                            a8 += (g2 * m2[e]) * x22[e]
                        part[0] += a0
                        part[1] += a1
                        part[2] += a2
                        part[3] += a3
                        part[4] += a4
                        part[5] += a5
                        part[6] += a6
                        part[7] += a7
                        part[8] += a8
                    finite = True
                    for e in range(9):
                        finite = finite and part[e] * 0 == 0
                    if finite:
                        for e in range(9):
                            acc[e] += part[e]
                    else:
                        _exact_dots(gf, gbase, xf, base, H, W, dH, dW, pt, pl, acc)
                wo = dw[o].ravel()
                for e in range(9):
                    wo[e] = acc[e]
