"""The input transform of Winograd F(4×4, 3×3) over depth planes, written straight into the depth
taps' stacked channels (numba), for :mod:`convscope.algorithms.ndwinograd`.

A block of ``nb`` output planes ``i = a0, …, a0 + nb − 1`` reads, through depth tap ``τ``, the source
plane ``p = i·s + τ·d − front`` (zeros outside ``0 ≤ p < D``).  :func:`stacked_input_tiles` transforms
every source plane the block reads once (the 6 × 6 windows of :mod:`.winograd`'s tiles, zeros outside
the plane, as its ``input_tiles_last``) and writes the transformed tiles to every (output plane, tap) that
reads the plane, one row of the result after the other::

    VX[t, c·k_D + τ, ((n·nb + i − a0)·th + ti)·tw + tj] = (Bᵀ d B)[t]   of tile (ti, tj) of plane p

which is the transform of the depth-stacked input (:mod:`convscope.algorithms.ndstack`) without the
stacked copy and without transforming a plane ``k_D`` times.  The parallel loop runs over (sample,
channel) pairs.
"""
from __future__ import annotations

import numpy as np

from ._numba import njit, prange
from .winograd import at_row, bt_row, nonfinite_sum


@njit(cache=True, parallel=True)
def stacked_input_tiles(x, front, top, left, s, d, kD, a0, nb, th, tw, VX):
    """VX (36, C·k_D, N·nb·th·tw) ← the transformed tiles of x (N, C, D, H, W) that output planes
    ``a0 … a0 + nb − 1`` read through each depth tap (module docstring); returns how many
    (sample, channel) pairs had a value that is not finite on the planes read.

    Per (sample, channel): the planes the block reads, ``p0 = a0·s − front`` on, are transformed
    into ``buf`` (zeros for planes outside x), then each row of VX is written in order of its columns.
    """
    N, C, D, H, W = x.shape
    two, four, five = x.dtype.type(2), x.dtype.type(4), x.dtype.type(5)
    T = th * tw
    width = 4 * tw + 2
    q0 = min(max(left, 0), width)                       # window columns that lie on the plane
    q1 = max(min(left + W, width), q0)
    p0 = a0 * s - front
    span = (nb - 1) * s + (kD - 1) * d + 1              # planes p0 … p0 + span − 1
    nonfinite = np.zeros(N * C, dtype=np.int64)
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        win = np.zeros((6, width), dtype=x.dtype)       # the window rows; columns outside stay 0
        s6 = np.empty((6, width), dtype=x.dtype)        # Bᵀ applied down the columns
        buf = np.empty((36, span, T), dtype=x.dtype)    # the transformed tiles of the planes read
        seen = x.dtype.type(0)
        for k in range(span):
            p = p0 + k
            if p < 0 or p >= D:
                buf[:, k, :] = 0
                continue
            seen += nonfinite_sum(x[n, c, p].ravel(), H * W)
            for i in range(th):
                for r in range(6):
                    h = 4 * i + r - top
                    if 0 <= h < H:
                        for q in range(q0, q1):
                            win[r, q] = x[n, c, p, h, q - left]
                    else:
                        for q in range(q0, q1):
                            win[r, q] = 0
                for q in range(width):
                    v0, v1, v2, v3, v4, v5 = bt_row(win[0, q], win[1, q], win[2, q], win[3, q], win[4, q], win[5, q],
                                                    two, four, five)
                    s6[0, q], s6[1, q], s6[2, q], s6[3, q], s6[4, q], s6[5, q] = v0, v1, v2, v3, v4, v5
                for r in range(6):
                    t = 6 * r
                    for j in range(tw):
                        q = 4 * j
                        v0, v1, v2, v3, v4, v5 = bt_row(s6[r, q], s6[r, q + 1], s6[r, q + 2], s6[r, q + 3],
                                                        s6[r, q + 4], s6[r, q + 5], two, four, five)
                        m = i * tw + j
                        buf[t, k, m], buf[t + 1, k, m], buf[t + 2, k, m] = v0, v1, v2
                        buf[t + 3, k, m], buf[t + 4, k, m], buf[t + 5, k, m] = v3, v4, v5
        for t in range(36):
            for tau in range(kD):
                row = c * kD + tau
                for i in range(nb):
                    col = (n * nb + i) * T
                    VX[t, row, col:col + T] = buf[t, i * s + tau * d]
        nonfinite[nc] = seen != 0
    return nonfinite.sum()


@njit(cache=True, parallel=True)
def unstacked_output_tiles(M, front, s, d, kD, a0, nb, th, tw, out):
    """out (N, C, D, H, W) += Aᵀ (Σ_τ M[:, c·k_D + τ, tiles of (n, i)]) A over the (output plane i,
    tap τ) pairs that read plane ``p = i·s + τ·d − front``, for the output planes ``a0 … a0 + nb − 1``
    of M (36, C·k_D, N·nb·th·tw): the adjoint of :func:`stacked_input_tiles` followed by the output
    transform (linear, so the taps' tiles are summed first), cropped to H, W."""
    N, C, D, H, W = out.shape
    two, four, eight = out.dtype.type(2), out.dtype.type(4), out.dtype.type(8)
    T = th * tw
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        acc = np.empty((36, T), dtype=out.dtype)        # the summed transformed tiles of plane p
        z = np.empty((4, 6, tw), dtype=out.dtype)       # Aᵀ applied down the columns
        row = np.empty(4 * tw, dtype=out.dtype)
        for p in range(D):
            count = 0
            for tau in range(kD):
                num = p + front - tau * d
                if num >= 0 and num % s == 0 and a0 <= num // s < a0 + nb:
                    col = (n * nb + num // s - a0) * T
                    if count == 0:
                        for t in range(36):
                            acc[t] = M[t, c * kD + tau, col:col + T]
                    else:
                        for t in range(36):
                            acc[t] += M[t, c * kD + tau, col:col + T]
                    count += 1
            if count == 0:
                continue
            for i in range(th):
                for l in range(6):
                    for j in range(tw):
                        m = i * tw + j
                        z[0, l, j], z[1, l, j], z[2, l, j], z[3, l, j] = at_row(
                            acc[l, m], acc[6 + l, m], acc[12 + l, m], acc[18 + l, m], acc[24 + l, m], acc[30 + l, m],
                            two, four, eight)
                for k in range(min(4, H - 4 * i)):
                    h = 4 * i + k
                    for j in range(tw):
                        row[4 * j], row[4 * j + 1], row[4 * j + 2], row[4 * j + 3] = at_row(
                            z[k, 0, j], z[k, 1, j], z[k, 2, j], z[k, 3, j], z[k, 4, j], z[k, 5, j], two, four, eight)
                    for q in range(W):
                        out[n, c, p, h, q] += row[q]
