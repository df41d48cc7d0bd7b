"""Winograd F(4×4, 3×3) tile transforms (numba), the parts of :mod:`convscope.algorithms.winograd`
that are passes over memory; the 36 products between them stay with BLAS.

Tiles.  The correlation's output, Ho × Wo, is cut into th × tw tiles of 4 × 4 (the last ones
partial); tile (i, j) of sample n is column ``p = (n·th + i)·tw + j`` of the transform arrays, and
it reads the 6 × 6 window of the input whose top-left corner is input row ``4i − top``, column
``4j − left``.  Window cells outside the input are zeros: the padding is applied while reading, so
no padded copy of the input exists.  The transform position ``t = 6k + l`` is row k, column l of
the transformed 6 × 6 tile (the order of the Kronecker matrices in the algorithm module).

Each 2-D transform runs as two 1-D passes: down the columns of a strip of tiles (one row of tiles
of one channel, contiguous along the strip's width), then across each tile of the strip.  The
parallel loop runs over (sample, channel) pairs; the arithmetic constants are in the array's dtype
(an integer literal would turn float32 arithmetic into float64).

* :func:`input_tiles`   V[t, c, p] = (Bᵀ d B)[t] for the window d of channel c   (input transform)
* :func:`output_tiles`  y = Aᵀ M A + bias, scattered into the output, partial tiles cropped
* :func:`gradient_tiles` Z[t, o, p] = (A g Aᵀ)[t] for the 4 × 4 tile g of the output gradient,
  zero beyond Ho, Wo (the adjoint of the output transform, for the weight gradient)

Each returns how many (sample, channel) planes of what it read (input_tiles, gradient_tiles) or wrote
(output_tiles) hold a NaN or ±Inf, counted as it goes (:func:`nonfinite_sum`), so that a caller that
keeps only finite results needs no pass of its own over those arrays.
"""
from __future__ import annotations

import numpy as np

from ._numba import njit, prange


@njit(cache=True, fastmath={"reassoc"})
def nonfinite_sum(a, n):
    """0 if ``a[:n]`` (1-d) is finite, else NaN: the sum of ``v − v`` (NaN for ±Inf and NaN), vectorised."""
    z = a.dtype.type(0)
    for q in range(n):
        v = a[q]
        z += v - v
    return z


@njit(cache=True, parallel=True)
def input_tiles(x, top, left, th, tw, V):
    """V (36, C, N·th·tw) ← Bᵀ d B of every 6 × 6 window d of x (N, C, H, W), zeros outside x; returns
    how many (sample, channel) planes of x hold a value that is not finite."""
    N, C, H, W = x.shape
    two, four, five = x.dtype.type(2), x.dtype.type(4), x.dtype.type(5)
    width = 4 * tw + 2
    q0 = min(max(left, 0), width)                       # window columns that lie on the input
    q1 = max(min(left + W, width), q0)
    nonfinite = np.zeros(N * C, dtype=np.int64)
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        win = np.zeros((6, width), dtype=x.dtype)       # the window rows; columns outside stay 0
        s = np.empty((6, width), dtype=x.dtype)         # Bᵀ applied down the columns
        for i in range(th):
            for r in range(6):
                h = 4 * i + r - top
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
            p0 = (n * th + i) * tw
            for k in range(6):
                t = 6 * k
                for j in range(tw):
                    q = 4 * j
                    e0, e1, e2, e3, e4, e5 = s[k, q], s[k, q + 1], s[k, q + 2], s[k, q + 3], s[k, q + 4], s[k, q + 5]
                    V[t, c, p0 + j] = four * e0 - five * e2 + e4
                    V[t + 1, c, p0 + j] = -four * (e1 + e2) + e3 + e4
                    V[t + 2, c, p0 + j] = four * (e1 - e2) - e3 + e4
                    V[t + 3, c, p0 + j] = two * (e3 - e1) - e2 + e4
                    V[t + 4, c, p0 + j] = two * (e1 - e3) - e2 + e4
                    V[t + 5, c, p0 + j] = four * e1 - five * e3 + e5
        nonfinite[nc] = nonfinite_sum(x[n, c].ravel(), H * W) != 0
    return nonfinite.sum()


@njit(cache=True, parallel=True)
def output_tiles(M, bias, th, tw, out):
    """out (N, O, Ho, Wo) ← Aᵀ M A + bias[o] for every tile of M (36, O, N·th·tw), cropped to Ho, Wo;
    returns how many (sample, channel) planes of out hold a value that is not finite."""
    N, O, Ho, Wo = out.shape
    two, four, eight = out.dtype.type(2), out.dtype.type(4), out.dtype.type(8)
    nonfinite = np.zeros(N * O, dtype=np.int64)
    for no in prange(N * O):
        n = no // O
        o = no - n * O
        b = bias[o]
        z = np.empty((4, 6, tw), dtype=out.dtype)       # Aᵀ applied down the columns
        row = np.empty(4 * tw, dtype=out.dtype)
        seen = out.dtype.type(0)
        for i in range(th):
            p0 = (n * th + i) * tw
            for l in range(6):
                for j in range(tw):
                    m0, m1, m2 = M[l, o, p0 + j], M[6 + l, o, p0 + j], M[12 + l, o, p0 + j]
                    m3, m4, m5 = M[18 + l, o, p0 + j], M[24 + l, o, p0 + j], M[30 + l, o, p0 + j]
                    z[0, l, j] = m0 + m1 + m2 + m3 + m4
                    z[1, l, j] = m1 - m2 + two * (m3 - m4)
                    z[2, l, j] = m1 + m2 + four * (m3 + m4)
                    z[3, l, j] = m1 - m2 + eight * (m3 - m4) + m5
            for k in range(min(4, Ho - 4 * i)):
                h = 4 * i + k
                for j in range(tw):
                    e0, e1, e2, e3, e4, e5 = z[k, 0, j], z[k, 1, j], z[k, 2, j], z[k, 3, j], z[k, 4, j], z[k, 5, j]
                    row[4 * j] = e0 + e1 + e2 + e3 + e4 + b
                    row[4 * j + 1] = e1 - e2 + two * (e3 - e4) + b
                    row[4 * j + 2] = e1 + e2 + four * (e3 + e4) + b
                    row[4 * j + 3] = e1 - e2 + eight * (e3 - e4) + e5 + b
                for q in range(Wo):
                    out[n, o, h, q] = row[q]
                seen += nonfinite_sum(row, Wo)
        nonfinite[no] = seen != 0
    return nonfinite.sum()


@njit(cache=True, parallel=True)
def gradient_tiles(g, th, tw, Z):
    """Z (36, O, N·th·tw) ← A t Aᵀ of every 4 × 4 tile t of g (N, O, Ho, Wo), zeros beyond Ho, Wo;
    returns how many (sample, channel) planes of g hold a value that is not finite."""
    N, O, Ho, Wo = g.shape
    two, four, eight = g.dtype.type(2), g.dtype.type(4), g.dtype.type(8)
    width = 4 * tw
    nonfinite = np.zeros(N * O, dtype=np.int64)
    for no in prange(N * O):
        n = no // O
        o = no - n * O
        nonfinite[no] = nonfinite_sum(g[n, o].ravel(), Ho * Wo) != 0
        win = np.zeros((4, width), dtype=g.dtype)       # the tile rows; columns beyond Wo stay 0
        u = np.empty((6, width), dtype=g.dtype)         # A applied down the columns
        for i in range(th):
            for k in range(4):
                h = 4 * i + k
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
            p0 = (n * th + i) * tw
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
    return nonfinite.sum()
