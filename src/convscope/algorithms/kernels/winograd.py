"""Winograd F(4×4, 3×3) tile transforms (numba), the parts of :mod:`convscope.algorithms.winograd`
that are passes over memory; the 36 products between them stay with BLAS.

Tiles.  The correlation's output, Ho × Wo, is cut into th × tw tiles of 4 × 4 (the last ones
partial); tile (i, j) of sample n is column ``p = (n·th + i)·tw + j`` of the transform arrays, and
it reads the 6 × 6 window of the input whose top-left corner is input row ``4i − top``, column
``4j − left``.  Window cells outside the input are zeros: the padding is applied while reading, so
no padded copy of the input exists.  The transform position ``t = 6k + l`` is row k, column l of
the transformed 6 × 6 tile (the order of the Kronecker matrices in the algorithm module).

Each 2-D transform runs as two 1-D passes over a *strip* (one row of tiles of one channel,
contiguous along the strip's width): down the columns of the strip, then across each tile of it.
The arithmetic constants are in the array's dtype (an integer literal would turn float32
arithmetic into float64).  Each transform comes twice:

* over every tile, the parallel loop running over (sample, channel) pairs:
  :func:`input_tiles` V[t, c, p] = (Bᵀ d B)[t] for the window d of channel c (input transform),
  :func:`output_tiles` y = Aᵀ M A + bias scattered into the output, partial tiles cropped,
  :func:`gradient_tiles` Z[t, o, p] = (A g Aᵀ)[t] for the 4 × 4 tile g of the output gradient,
  zero beyond Ho, Wo (the adjoint of the output transform, for the weight gradient);
* over a *block* of tile rows ``r0 ≤ n·th + i < r1``, one thread, the GIL released, the block's
  tiles being columns ``p0 + p − r0·tw`` of the transform array (p0 = 0: a block's own small
  array): :func:`input_block`, :func:`output_block`, :func:`gradient_block` (several Python
  threads run blocks at once, see the algorithm module).
"""
from __future__ import annotations

import numpy as np

from ._numba import njit, prange


@njit(cache=True, inline="always")
def _input_strip(x, n, c, h0, left, q0, q1, tw, win, s, V, cv, p0):
    """V[:, cv, p0 : p0 + tw] ← Bᵀ d B of the strip's windows, d read from input row h0, column −left
    of x[n, c] (win, s: (6, 4·tw + 2) scratch, win zero outside columns q0:q1)."""
    H = x.shape[2]
    two, four, five = x.dtype.type(2), x.dtype.type(4), x.dtype.type(5)
    width = 4 * tw + 2
    for r in range(6):
        h = h0 + r
        if 0 <= h < H:
            for q in range(q0, q1):
                win[r, q] = x[n, c, h, q - left]
        else:
            for q in range(q0, q1):
                win[r, q] = 0
    for q in range(width):
        d0, d1, d2, d3, d4, d5 = win[0, q], win[1, q], win[2, q], win[3, q], win[4, q], win[5, q]
        s[0, q] = four * d0 - five * d2 + d4
        s[1, q] = -four * (d1 + d2) + d3 + d4
        s[2, q] = four * (d1 - d2) - d3 + d4
        s[3, q] = two * (d3 - d1) - d2 + d4
        s[4, q] = two * (d1 - d3) - d2 + d4
        s[5, q] = four * d1 - five * d3 + d5
    for k in range(6):
        t = 6 * k
        for j in range(tw):
            q = 4 * j
            e0, e1, e2, e3, e4, e5 = s[k, q], s[k, q + 1], s[k, q + 2], s[k, q + 3], s[k, q + 4], s[k, q + 5]
            V[t, cv, p0 + j] = four * e0 - five * e2 + e4
            V[t + 1, cv, p0 + j] = -four * (e1 + e2) + e3 + e4
            V[t + 2, cv, p0 + j] = four * (e1 - e2) - e3 + e4
            V[t + 3, cv, p0 + j] = two * (e3 - e1) - e2 + e4
            V[t + 4, cv, p0 + j] = two * (e1 - e3) - e2 + e4
            V[t + 5, cv, p0 + j] = four * e1 - five * e3 + e5


@njit(cache=True, inline="always")
def _output_strip(M, o, p0, b, n, h0, tw, z, row, out):
    """out[n, o, h0 : h0 + 4] ← Aᵀ M A + b for the strip's tiles, columns p0 : p0 + tw of M[:, o],
    cropped to out's height and width (z: (4, 6, tw), row: (4·tw,) scratch)."""
    Ho, Wo = out.shape[2], out.shape[3]
    two, four, eight = out.dtype.type(2), out.dtype.type(4), out.dtype.type(8)
    for l in range(6):
        for j in range(tw):
            m0, m1, m2 = M[l, o, p0 + j], M[6 + l, o, p0 + j], M[12 + l, o, p0 + j]
            m3, m4, m5 = M[18 + l, o, p0 + j], M[24 + l, o, p0 + j], M[30 + l, o, p0 + j]
            z[0, l, j] = m0 + m1 + m2 + m3 + m4
            z[1, l, j] = m1 - m2 + two * (m3 - m4)
            z[2, l, j] = m1 + m2 + four * (m3 + m4)
            z[3, l, j] = m1 - m2 + eight * (m3 - m4) + m5
    for k in range(min(4, Ho - h0)):
        for j in range(tw):
            e0, e1, e2, e3, e4, e5 = z[k, 0, j], z[k, 1, j], z[k, 2, j], z[k, 3, j], z[k, 4, j], z[k, 5, j]
            row[4 * j] = e0 + e1 + e2 + e3 + e4 + b
            row[4 * j + 1] = e1 - e2 + two * (e3 - e4) + b
            row[4 * j + 2] = e1 + e2 + four * (e3 + e4) + b
            row[4 * j + 3] = e1 - e2 + eight * (e3 - e4) + e5 + b
        for q in range(Wo):
            out[n, o, h0 + k, q] = row[q]


@njit(cache=True, inline="always")
def _gradient_strip(g, n, o, h0, tw, win, u, Z, p0):
    """Z[:, o, p0 : p0 + tw] ← A t Aᵀ of the strip's 4 × 4 tiles t of g[n, o] from row h0, zeros
    beyond g's height and width (win: (4, 4·tw), zero beyond g's width; u: (6, 4·tw) scratch)."""
    Ho, Wo = g.shape[2], g.shape[3]
    two, four, eight = g.dtype.type(2), g.dtype.type(4), g.dtype.type(8)
    width = 4 * tw
    for k in range(4):
        h = h0 + k
        if h < Ho:
            for q in range(Wo):
                win[k, q] = g[n, o, h, q]
        else:
            for q in range(Wo):
                win[k, q] = 0
    for q in range(width):
        g0, g1, g2, g3 = win[0, q], win[1, q], win[2, q], win[3, q]
        u[0, q] = g0
        u[1, q] = g0 + g1 + g2 + g3
        u[2, q] = g0 - g1 + g2 - g3
        u[3, q] = g0 + two * g1 + four * g2 + eight * g3
        u[4, q] = g0 - two * g1 + four * g2 - eight * g3
        u[5, q] = g3
    for r in range(6):
        t = 6 * r
        for j in range(tw):
            q = 4 * j
            e0, e1, e2, e3 = u[r, q], u[r, q + 1], u[r, q + 2], u[r, q + 3]
            Z[t, o, p0 + j] = e0
            Z[t + 1, o, p0 + j] = e0 + e1 + e2 + e3
            Z[t + 2, o, p0 + j] = e0 - e1 + e2 - e3
            Z[t + 3, o, p0 + j] = e0 + two * e1 + four * e2 + eight * e3
            Z[t + 4, o, p0 + j] = e0 - two * e1 + four * e2 - eight * e3
            Z[t + 5, o, p0 + j] = e3


@njit(cache=True, inline="always")
def _window_columns(left, W, tw):
    """(q0, q1): the columns of a strip's window (4·tw + 2 wide, from input column −left) on the input."""
    width = 4 * tw + 2
    q0 = min(max(left, 0), width)
    return q0, max(min(left + W, width), q0)


@njit(cache=True, parallel=True)
def input_tiles(x, top, left, th, tw, V):
    """V (36, C, N·th·tw) ← Bᵀ d B of every 6 × 6 window d of x (N, C, H, W), zeros outside x."""
    N, C = x.shape[0], x.shape[1]
    q0, q1 = _window_columns(left, x.shape[3], tw)
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        win = np.zeros((6, 4 * tw + 2), dtype=x.dtype)  # the window rows; columns outside stay 0
        s = np.empty((6, 4 * tw + 2), dtype=x.dtype)    # Bᵀ applied down the columns
        for i in range(th):
            _input_strip(x, n, c, 4 * i - top, left, q0, q1, tw, win, s, V, c, (n * th + i) * tw)


@njit(cache=True, nogil=True)
def input_block(x, top, left, th, tw, r0, r1, V, p0):
    """V[:, :, p0 : p0 + (r1 − r0)·tw] ← the input transform of tile rows r0:r1 (row r = n·th + i),
    one thread."""
    C = x.shape[1]
    q0, q1 = _window_columns(left, x.shape[3], tw)
    win = np.zeros((6, 4 * tw + 2), dtype=x.dtype)
    s = np.empty((6, 4 * tw + 2), dtype=x.dtype)
    for c in range(C):
        for r in range(r0, r1):
            n = r // th
            _input_strip(x, n, c, 4 * (r - n * th) - top, left, q0, q1, tw, win, s, V, c, p0 + (r - r0) * tw)


@njit(cache=True, parallel=True)
def output_tiles(M, bias, th, tw, out):
    """out (N, O, Ho, Wo) ← Aᵀ M A + bias[o] for every tile of M (36, O, N·th·tw), cropped to Ho, Wo."""
    N, O = out.shape[0], out.shape[1]
    for no in prange(N * O):
        n = no // O
        o = no - n * O
        z = np.empty((4, 6, tw), dtype=out.dtype)       # Aᵀ applied down the columns
        row = np.empty(4 * tw, dtype=out.dtype)
        for i in range(th):
            _output_strip(M, o, (n * th + i) * tw, bias[o], n, 4 * i, tw, z, row, out)


@njit(cache=True, nogil=True)
def output_block(M, bias, th, tw, r0, r1, out, p0):
    """out ← the output transform of tile rows r0:r1, columns p0 : p0 + (r1 − r0)·tw of M (36, O, ·),
    + bias, one thread."""
    O = out.shape[1]
    z = np.empty((4, 6, tw), dtype=out.dtype)
    row = np.empty(4 * tw, dtype=out.dtype)
    for o in range(O):
        for r in range(r0, r1):
            n = r // th
            _output_strip(M, o, p0 + (r - r0) * tw, bias[o], n, 4 * (r - n * th), tw, z, row, out)


@njit(cache=True, parallel=True)
def gradient_tiles(g, th, tw, Z):
    """Z (36, O, N·th·tw) ← A t Aᵀ of every 4 × 4 tile t of g (N, O, Ho, Wo), zeros beyond Ho, Wo."""
    N, O = g.shape[0], g.shape[1]
    for no in prange(N * O):
        n = no // O
        o = no - n * O
        win = np.zeros((4, 4 * tw), dtype=g.dtype)      # the tile rows; columns beyond Wo stay 0
        u = np.empty((6, 4 * tw), dtype=g.dtype)        # A applied down the columns
        for i in range(th):
            _gradient_strip(g, n, o, 4 * i, tw, win, u, Z, (n * th + i) * tw)


@njit(cache=True, nogil=True)
def gradient_block(g, th, tw, r0, r1, Z, p0):
    """Z[:, :, p0 : p0 + (r1 − r0)·tw] ← the gradient transform of g's tile rows r0:r1, one thread."""
    O = g.shape[1]
    win = np.zeros((4, 4 * tw), dtype=g.dtype)
    u = np.empty((6, 4 * tw), dtype=g.dtype)
    for o in range(O):
        for r in range(r0, r1):
            n = r // th
            _gradient_strip(g, n, o, 4 * (r - n * th), tw, win, u, Z, p0 + (r - r0) * tw)
