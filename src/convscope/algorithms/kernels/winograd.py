"""Winograd F(4×4, 3×3) tile transforms (numba), the parts of :mod:`convscope.algorithms.winograd`
(and of :mod:`convscope.algorithms.ndwinograd`'s output side) that are passes over memory; the 36
products between them stay with BLAS, except in :func:`fused_tiles`, which runs all three passes on
blocks of tiles held in cache.

Tiles.  The correlation's output, Ho × Wo, is cut into th × tw tiles of 4 × 4 (the last ones
partial); tile (i, j) of sample n is column ``p = (n·th + i)·tw + j`` of the transform arrays, and
it reads the 6 × 6 window of the input whose top-left corner is input row ``4i − top``, column
``4j − left``.  Window cells outside the input are zeros: the padding is applied while reading, so
no padded copy of the input exists.  The transform position ``t = 6k + l`` is row k, column l of
the transformed 6 × 6 tile (the order of the Kronecker matrices in the algorithm module).  Each 2-D
transform runs as two 1-D passes; the arithmetic constants are in the array's dtype (an integer
literal would turn float32 arithmetic into float64).

The arrays hold the channels last, (36, P, channels).  Every pass is a vector operation along the
channels, unit stride and whole vectors however small the image; the parallel loop runs over rows of
tiles.  They read and write the NCHW arrays themselves: the input and the output gradient gathered
across channels, the output through a channels-last buffer of one row of tiles.

* :func:`input_tiles_last`    V[t, p, c] = (Bᵀ d B)[t] for the window d of channel c  (input transform)
* :func:`output_tiles_last`   y = Aᵀ M A + bias, written into the output, partial tiles cropped
* :func:`gradient_tiles_last` Z[t, p, o] = (A g Aᵀ)[t] for the 4 × 4 tile g of the output gradient,
  zero beyond Ho, Wo (the adjoint of the output transform, for the weight gradient)
* :func:`weight_tiles_last`   U[t, c, o] = (G g Gᵀ)[t] for the kernel g = w[o, c]
* :func:`fused_tiles`         the input transform, the 36 products and the output transform of blocks of
  8 tiles, one block per task: the block's V (36, 8, C) and M (36, 8, O) never leave the task's
  scratch, and its products keep 8 tiles × one vector of output channels of partial sums in registers
  (:func:`~convscope.algorithms.kernels._numba.register_block`) across the input channels

Each returns how many rows of tiles hold a NaN or ±Inf among the values it computes or writes (the
input transform: or among the input rows it owns), counted as it goes, so that a caller that keeps
only finite results needs no pass of its own over those arrays.
"""
from __future__ import annotations

import numpy as np

from ._numba import add_eight, njit, prange, register_block, register_lanes


@njit(cache=True, fastmath={"reassoc"})
def nonfinite_sum(a, n):
    """0 if ``a[:n]`` (1-d) is finite, else NaN: the sum of ``v − v`` (NaN for ±Inf and NaN), vectorised."""
    z = a.dtype.type(0)
    for q in range(n):
        v = a[q]
        z += v - v
    return z


@njit(cache=True, inline="always")
def _store_six(A, t, p, c, v0, v1, v2, v3, v4, v5):
    """A[t + m, p, c] ← v_m for the six positions of one transformed row; returns the sum of v − v
    (NaN if one of them is not finite)."""
    A[t, p, c] = v0
    A[t + 1, p, c] = v1
    A[t + 2, p, c] = v2
    A[t + 3, p, c] = v3
    A[t + 4, p, c] = v4
    A[t + 5, p, c] = v5
    return (v0 - v0) + (v1 - v1) + (v2 - v2) + (v3 - v3) + (v4 - v4) + (v5 - v5)


@njit(cache=True, inline="always")
def bt_row(d0, d1, d2, d3, d4, d5, two, four, five):
    """Bᵀ d for one column d of a 6 × 6 window: the input transform's 1-D pass (two, four and five in the
    arrays' dtype)."""
    return (four * d0 - five * d2 + d4, -four * (d1 + d2) + d3 + d4, four * (d1 - d2) - d3 + d4,
            two * (d3 - d1) - d2 + d4, two * (d1 - d3) - d2 + d4, four * d1 - five * d3 + d5)


@njit(cache=True, inline="always")
def at_row(m0, m1, m2, m3, m4, m5, two, four, eight):
    """Aᵀ m for one column m of a transformed 6 × 6 tile: the output transform's 1-D pass, 4 values."""
    return (m0 + m1 + m2 + m3 + m4, m1 - m2 + two * (m3 - m4), m1 + m2 + four * (m3 + m4),
            m1 - m2 + eight * (m3 - m4) + m5)


# Rows outside the input read a clamped row times 0 (a value there that is not finite is in the input,
# so the count makes the call fall back anyway); columns outside it are skipped.


@njit(cache=True, parallel=True)
def input_tiles_last(x, top, left, th, tw, V):
    """V (36, N·th·tw, C) ← Bᵀ d B of every 6 × 6 window d of x (N, C, H, W), zeros outside x;
    returns how many rows of tiles hold a transformed value that is not finite (an overflow, or a value
    of x that is not finite) or own a row of x that holds one: row i of tiles owns the input rows from
    its window's first on (the first row of tiles, the rows above too) up to the next one's, the last
    all the rows below, so that every value of x is checked, read by a window or not."""
    N, C, H, W = x.shape
    two, four, five = x.dtype.type(2), x.dtype.type(4), x.dtype.type(5)
    zero, one = x.dtype.type(0), x.dtype.type(1)
    bad = np.zeros(N * th, dtype=np.int64)
    for job in prange(N * th):
        n = job // th
        i = job - n * th
        s = np.empty((6, 6, C), dtype=x.dtype)          # Bᵀ applied down the columns of one window
        rows = np.empty(6, dtype=np.int64)
        keep = np.empty(6, dtype=x.dtype)
        for r in range(6):
            h = 4 * i + r - top
            rows[r] = min(max(h, 0), H - 1)
            keep[r] = one if 0 <= h < H else zero
        h0, h1, h2, h3, h4, h5 = rows[0], rows[1], rows[2], rows[3], rows[4], rows[5]
        k0, k1, k2, k3, k4, k5 = keep[0], keep[1], keep[2], keep[3], keep[4], keep[5]
        p0 = (n * th + i) * tw
        seen = zero
        for j in range(tw):
            for e in range(6):
                q = 4 * j + e - left
                if 0 <= q < W:
                    for c in range(C):
                        d0 = x[n, c, h0, q] * k0
                        d1 = x[n, c, h1, q] * k1
                        d2 = x[n, c, h2, q] * k2
                        d3 = x[n, c, h3, q] * k3
                        d4 = x[n, c, h4, q] * k4
                        d5 = x[n, c, h5, q] * k5
                        v0, v1, v2, v3, v4, v5 = bt_row(d0, d1, d2, d3, d4, d5, two, four, five)
                        s[0, e, c], s[1, e, c], s[2, e, c] = v0, v1, v2
                        s[3, e, c], s[4, e, c], s[5, e, c] = v3, v4, v5
                else:
                    for k in range(6):
                        for c in range(C):
                            s[k, e, c] = zero
            p = p0 + j
            for k in range(6):
                t = 6 * k
                for c in range(C):
                    v0, v1, v2, v3, v4, v5 = bt_row(s[k, 0, c], s[k, 1, c], s[k, 2, c], s[k, 3, c], s[k, 4, c],
                                                    s[k, 5, c], two, four, five)
                    seen += _store_six(V, t, p, c, v0, v1, v2, v3, v4, v5)
        lo = 0 if i == 0 else min(max(4 * i - top, 0), H)
        hi = H if i == th - 1 else min(max(4 * i + 4 - top, 0), H)
        for c in range(C):
            for h in range(lo, hi):
                seen += nonfinite_sum(x[n, c, h], W)
        bad[job] = seen != 0
    return bad.sum()


@njit(cache=True, parallel=True)
def output_tiles_last(M, bias, th, tw, out, a, nb):
    """out[:, :, a:a + nb] (of out (N, O, D, Ho, Wo)) ← Aᵀ M A + bias[o] for every tile of
    M (36, N·nb·th·tw, O), cropped to Ho, Wo (tile ((n·nb + d)·th + i)·tw + j is tile (i, j) of
    plane a + d of sample n; a 2-d output is out[:, :, None] with a = 0, nb = 1); returns how many rows
    of tiles of out hold a value that is not finite."""
    N, O, _, Ho, Wo = out.shape
    two, four, eight = out.dtype.type(2), out.dtype.type(4), out.dtype.type(8)
    zero = out.dtype.type(0)
    bad = np.zeros(N * nb * th, dtype=np.int64)
    for job in prange(N * nb * th):
        i = job % th
        d = (job // th) % nb
        n = job // (th * nb)
        z = np.empty((4, 6, O), dtype=out.dtype)        # Aᵀ applied down the columns of one tile
        rows = np.empty((4, 4 * tw, O), dtype=out.dtype)   # the row of tiles, channels last
        p0 = job * tw
        for j in range(tw):
            p = p0 + j
            for l in range(6):
                for o in range(O):
                    z[0, l, o], z[1, l, o], z[2, l, o], z[3, l, o] = at_row(
                        M[l, p, o], M[6 + l, p, o], M[12 + l, p, o], M[18 + l, p, o], M[24 + l, p, o],
                        M[30 + l, p, o], two, four, eight)
            for k in range(4):
                for o in range(O):
                    b = bias[o]
                    y0, y1, y2, y3 = at_row(z[k, 0, o], z[k, 1, o], z[k, 2, o], z[k, 3, o], z[k, 4, o], z[k, 5, o],
                                            two, four, eight)
                    rows[k, 4 * j, o] = y0 + b
                    rows[k, 4 * j + 1, o] = y1 + b
                    rows[k, 4 * j + 2, o] = y2 + b
                    rows[k, 4 * j + 3, o] = y3 + b
        seen = zero
        for o in range(O):
            for k in range(min(4, Ho - 4 * i)):
                h = 4 * i + k
                for q in range(Wo):
                    v = rows[k, q, o]
                    out[n, o, a + d, h, q] = v
                    seen += v - v
        bad[job] = seen != 0
    return bad.sum()


@njit(cache=True, parallel=True)
def gradient_tiles_last(g, a, nb, th, tw, Z):
    """Z (36, N·nb·th·tw, O) ← A t Aᵀ of every 4 × 4 tile t of the planes a to a + nb of g (N, O, D, Ho, Wo),
    zeros beyond Ho, Wo, in :func:`output_tiles_last`'s order of tiles (a 2-d g is g[:, :, None] with
    a = 0, nb = 1); returns how many rows of tiles hold a transformed value that is not finite."""
    N, O, _, Ho, Wo = g.shape
    two, four, eight = g.dtype.type(2), g.dtype.type(4), g.dtype.type(8)
    zero, one = g.dtype.type(0), g.dtype.type(1)
    bad = np.zeros(N * nb * th, dtype=np.int64)
    for job in prange(N * nb * th):
        i = job % th
        dd = a + (job // th) % nb
        n = job // (th * nb)
        u = np.empty((6, 4, O), dtype=g.dtype)          # A applied down the columns of one tile
        rows = np.empty(4, dtype=np.int64)
        keep = np.empty(4, dtype=g.dtype)
        for k in range(4):
            h = 4 * i + k
            rows[k] = min(h, Ho - 1)
            keep[k] = one if h < Ho else zero
        h0, h1, h2, h3 = rows[0], rows[1], rows[2], rows[3]
        k0, k1, k2, k3 = keep[0], keep[1], keep[2], keep[3]
        p0 = job * tw
        seen = zero
        for j in range(tw):
            for e in range(4):
                q = 4 * j + e
                if q < Wo:
                    for o in range(O):
                        g0 = g[n, o, dd, h0, q] * k0
                        g1 = g[n, o, dd, h1, q] * k1
                        g2 = g[n, o, dd, h2, q] * k2
                        g3 = g[n, o, dd, h3, q] * k3
                        u[0, e, o] = g0
                        u[1, e, o] = g0 + g1 + g2 + g3
                        u[2, e, o] = g0 - g1 + g2 - g3
                        u[3, e, o] = g0 + two * g1 + four * g2 + eight * g3
                        u[4, e, o] = g0 - two * g1 + four * g2 - eight * g3
                        u[5, e, o] = g3
                else:
                    for r in range(6):
                        for o in range(O):
                            u[r, e, o] = zero
            p = p0 + j
            for r in range(6):
                t = 6 * r
                for o in range(O):
                    e0, e1, e2, e3 = u[r, 0, o], u[r, 1, o], u[r, 2, o], u[r, 3, o]
                    v1 = e0 + e1 + e2 + e3
                    v2 = e0 - e1 + e2 - e3
                    v3 = e0 + two * e1 + four * e2 + eight * e3
                    v4 = e0 - two * e1 + four * e2 - eight * e3
                    seen += _store_six(Z, t, p, o, e0, v1, v2, v3, v4, e3)
        bad[job] = seen != 0
    return bad.sum()


@njit(cache=True, parallel=True)
def weight_tiles_last(wt, U):
    """U (36, C, O) ← G g Gᵀ of every 3 × 3 kernel g = wt[c, :, :, o] of the weight held as
    wt (C, 3, 3, O), vectorised along the output channels (G's rows: 1/4·e₀; −1/6·(1, 1, 1); −1/6·(1, −1, 1); (1/24, 1/12, 1/6);
    (1/24, −1/12, 1/6); e₂)."""
    C, O = wt.shape[0], wt.shape[3]
    dt = wt.dtype.type
    q, s6, s12, s24 = dt(0.25), dt(1.0 / 6.0), dt(1.0 / 12.0), dt(1.0 / 24.0)
    for c in prange(C):
        a = np.empty((6, 3, O), dtype=wt.dtype)         # G applied down the kernel's columns
        for j in range(3):
            for o in range(O):
                g0, g1, g2 = wt[c, 0, j, o], wt[c, 1, j, o], wt[c, 2, j, o]
                a[0, j, o] = q * g0
                a[1, j, o] = -s6 * (g0 + g1 + g2)
                a[2, j, o] = -s6 * (g0 - g1 + g2)
                a[3, j, o] = s24 * g0 + s12 * g1 + s6 * g2
                a[4, j, o] = s24 * g0 - s12 * g1 + s6 * g2
                a[5, j, o] = g2
        for k in range(6):
            t = 6 * k
            for o in range(O):
                e0, e1, e2 = a[k, 0, o], a[k, 1, o], a[k, 2, o]
                U[t, c, o] = q * e0
                U[t + 1, c, o] = -s6 * (e0 + e1 + e2)
                U[t + 2, c, o] = -s6 * (e0 - e1 + e2)
                U[t + 3, c, o] = s24 * e0 + s12 * e1 + s6 * e2
                U[t + 4, c, o] = s24 * e0 - s12 * e1 + s6 * e2
                U[t + 5, c, o] = e2


@njit(cache=True, inline="always")
def _tile(p, th, tw):
    """(n, i, j): sample, row and column of tile p = (n·th + i)·tw + j."""
    return p // (th * tw), (p // tw) % th, p % tw


@njit(cache=True, fastmath={"contract"})
def _block_products(Vb, U, Mb, t, o0):
    """Mb[t, :8, o0:o0 + lanes] ← Vb[t, :8] @ U[t, :, o0:o0 + lanes]: eight tiles' partial sums for one
    vector of output channels, held in registers across the input channels."""
    lanes = register_lanes(Mb.dtype)     # a constant here, so the loops over it unroll
    Ut, Vt, Mt = U[t], Vb[t], Mb[t]
    v0, v1, v2, v3, v4, v5, v6, v7 = Vt[0], Vt[1], Vt[2], Vt[3], Vt[4], Vt[5], Vt[6], Vt[7]
    a0, a1 = register_block(Mb.dtype), register_block(Mb.dtype)
    a2, a3 = register_block(Mb.dtype), register_block(Mb.dtype)
    a4, a5 = register_block(Mb.dtype), register_block(Mb.dtype)
    a6, a7 = register_block(Mb.dtype), register_block(Mb.dtype)
    start = np.uint64(o0)
    for k in range(Vt.shape[1]):
        add_eight(a0, a1, a2, a3, a4, a5, a6, a7, v0[k], v1[k], v2[k], v3[k], v4[k], v5[k], v6[k], v7[k], Ut[k], start)
    m0, m1, m2, m3 = Mt[0, o0:], Mt[1, o0:], Mt[2, o0:], Mt[3, o0:]
    m4, m5, m6, m7 = Mt[4, o0:], Mt[5, o0:], Mt[6, o0:], Mt[7, o0:]
    for j in range(lanes):
        m0[j] = a0[j]
        m1[j] = a1[j]
        m2[j] = a2[j]
        m3[j] = a3[j]
        m4[j] = a4[j]
        m5[j] = a5[j]
        m6[j] = a6[j]
        m7[j] = a7[j]


@njit(cache=True, parallel=True)
def fused_tiles(x, U, bias, top, left, th, tw, out):
    """out (N, O, Ho, Wo) ← Aᵀ [U ⊙ Bᵀ d B] A + bias[o] for every tile, cropped to Ho, Wo: the
    correlation of x (N, C, H, W), zeros outside it, read from row −top, column −left, with the kernel
    transform U (36, C, O') (:func:`weight_tiles_last`'s, zero past O in the columns up to O', a multiple
    of :func:`~convscope.algorithms.kernels._numba.register_lanes`).  Tiles are numbered as in
    :func:`input_tiles_last`, p = (n·th + i)·tw + j, and each task runs tiles 8b to 8b + 7 (a last block's
    missing tiles are zeros, computed and not written).  Returns how many blocks read or wrote a value
    that is not finite."""
    N, C, H, W = x.shape
    O, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
    Op = U.shape[2]
    two, four, five, eight = x.dtype.type(2), x.dtype.type(4), x.dtype.type(5), x.dtype.type(8)
    zero = x.dtype.type(0)
    P = N * th * tw
    blocks = (P + 7) // 8
    bad = np.zeros(blocks, dtype=np.int64)
    for blk in prange(blocks):
        lanes = register_lanes(x.dtype)
        Vb = np.zeros((36, 8, C), dtype=x.dtype)
        Mb = np.empty((36, 8, Op), dtype=x.dtype)
        s = np.empty((6, 6, C), dtype=x.dtype)          # one window, then Bᵀ applied down its columns
        z = np.empty((4, 6, O), dtype=x.dtype)          # Aᵀ applied down the columns of one tile
        seen = zero
        count = min(8, P - 8 * blk)
        for b in range(count):
            n, i, j = _tile(8 * blk + b, th, tw)
            for e in range(6):
                q = 4 * j + e - left
                for r in range(6):
                    h = 4 * i + r - top
                    if 0 <= q < W and 0 <= h < H:
                        for c in range(C):
                            v = x[n, c, h, q]
                            s[r, e, c] = v
                            seen += v - v
                    else:
                        for c in range(C):
                            s[r, e, c] = zero
                for c in range(C):
                    v0, v1, v2, v3, v4, v5 = bt_row(s[0, e, c], s[1, e, c], s[2, e, c], s[3, e, c], s[4, e, c],
                                                    s[5, e, c], two, four, five)
                    s[0, e, c], s[1, e, c], s[2, e, c] = v0, v1, v2
                    s[3, e, c], s[4, e, c], s[5, e, c] = v3, v4, v5
            for k in range(6):
                t = 6 * k
                for c in range(C):
                    v0, v1, v2, v3, v4, v5 = bt_row(s[k, 0, c], s[k, 1, c], s[k, 2, c], s[k, 3, c], s[k, 4, c],
                                                    s[k, 5, c], two, four, five)
                    Vb[t, b, c], Vb[t + 1, b, c], Vb[t + 2, b, c] = v0, v1, v2
                    Vb[t + 3, b, c], Vb[t + 4, b, c], Vb[t + 5, b, c] = v3, v4, v5
        for t in range(36):
            for o0 in range(0, Op, lanes):
                _block_products(Vb, U, Mb, t, o0)
        for b in range(count):
            n, i, j = _tile(8 * blk + b, th, tw)
            for l in range(6):
                for o in range(O):
                    z[0, l, o], z[1, l, o], z[2, l, o], z[3, l, o] = at_row(
                        Mb[l, b, o], Mb[6 + l, b, o], Mb[12 + l, b, o], Mb[18 + l, b, o], Mb[24 + l, b, o],
                        Mb[30 + l, b, o], two, four, eight)
            q0 = 4 * j
            cols = min(4, Wo - q0)
            for k in range(min(4, Ho - 4 * i)):
                h = 4 * i + k
                for o in range(O):
                    bo = bias[o]
                    y0, y1, y2, y3 = at_row(z[k, 0, o], z[k, 1, o], z[k, 2, o], z[k, 3, o], z[k, 4, o], z[k, 5, o],
                                            two, four, eight)
                    y0, y1, y2, y3 = y0 + bo, y1 + bo, y2 + bo, y3 + bo
                    row = out[n, o, h]
                    row[q0] = y0
                    seen += y0 - y0
                    if cols > 1:
                        row[q0 + 1] = y1
                        seen += y1 - y1
                    if cols > 2:
                        row[q0 + 2] = y2
                        seen += y2 - y2
                    if cols > 3:
                        row[q0 + 3] = y3
                        seen += y3 - y3
        bad[blk] = seen != 0
    return bad.sum()
