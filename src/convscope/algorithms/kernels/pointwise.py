"""The pointwise (1×1) path's copies, in parallel: the subsampled input in either layout, and its adjoint.

A 1×1 tap at stride ``(sH, sW)`` with top/left zero padding ``(pt, pl)`` reads, for output ``(i, j)``::

    x_s[n, c, i, j] = x[n, c, i·sH − pt, j·sW − pl]      (0 where that lies in the border)

:func:`gather` writes ``x_s`` per sample, (N, C, H_out, W_out), or batch folded, (C, N, H_out, W_out),
which is the (G, Cg, N·H_out·W_out) matrix of the folded products; :func:`scatter` is its adjoint (the
pixels no output reads get 0), in one pass over the input's pixels.  With stride 1 and no padding the
folded layout is a plain transpose of whole planes (gather's, either way).  The work is split over (sample, channel) planes;
gather's folded planes are taken in their own order, so each thread writes one contiguous stretch.
"""
from __future__ import annotations

from ._numba import njit, prange
from .im2col import _add_tap, _read_tap


@njit(cache=True, parallel=True)
def gather(x, dst, folded, sH, sW, pt, pl):
    """dst (C, N, Ho, Wo) if ``folded`` else (N, C, Ho, Wo) = x (N, C, H, W) at the pixels the taps read."""
    N, C, H, W = x.shape
    Ho, Wo = dst.shape[2], dst.shape[3]
    xf = x.reshape(N, C, H * W)
    df = dst.reshape(dst.shape[0], dst.shape[1], Ho * Wo)
    if folded and sH == 1 and sW == 1 and pt == 0 and pl == 0 and Ho == H and Wo == W:
        for t in prange(C * N):                 # a plain transpose, plane by plane
            c, n = t // N, t % N
            for k in range(H * W):
                df[c, n, k] = xf[n, c, k]
        return
    for t in prange(N * C):
        if folded:
            c, n = t // N, t % N
            _read_tap(xf[n, c], H, W, W, df[c, n], Ho, Wo, -pt, -pl, sH, sW)
        else:
            n, c = t // C, t % C
            _read_tap(xf[n, c], H, W, W, df[n, c], Ho, Wo, -pt, -pl, sH, sW)


@njit(cache=True, parallel=True)
def scatter(src, dx, folded, sH, sW, pt, pl):
    """The adjoint of :func:`gather`: dx (N, C, H, W) from src (C, N, Ho, Wo) if ``folded`` else (N, C, Ho, Wo)."""
    N, C, H, W = dx.shape
    Ho, Wo = src.shape[2], src.shape[3]
    sf = src.reshape(src.shape[0], src.shape[1], Ho * Wo)
    dxf = dx.reshape(N, C, H * W)
    for t in prange(N * C):
        n, c = t // C, t % C
        d = dxf[n, c]
        for k in range(H * W):
            d[k] = 0
        _add_tap(sf[c, n] if folded else sf[n, c], Ho, Wo, d, H, W, -pt, -pl, sH, sW)
