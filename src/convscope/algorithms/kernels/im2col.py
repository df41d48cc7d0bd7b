"""im2col and col2im for the gemm path, in parallel, with zero padding fused.

For input channel ``c`` (group ``g = c // Cg``, ``c' = c mod Cg``) and tap ``(u, v)``::

    cols[n, g, (c'·kH + u)·kW + v, i, j] = x[n, c, i·sH + u·dH − pt, j·sW + v·dW − pl]   (0 in the border)
    dx[n, c, r, s] = Σ over (u, v, i, j) reading (r, s) of dcols[n, g, (c'·kH + u)·kW + v, i, j]

(col2im is im2col's adjoint).  The batch-folded layout holds the same numbers as
``cols_f[g, (c'·kH + u)·kW + v, n, i, j]``.  Along a row the real columns of a tap form one range (as in
the depthwise kernels), so the copies and sums run without tests, contiguous for stride 1.  The work is
split over (sample, channel): im2col's rows and col2im's input planes are written by one thread each.
Planes are addressed flat (row ``i`` of a tap at ``i·Wo``), so a small image costs no array views per
row.  ``cols`` may have more rows per group than ``Cg·kH·kW`` (a row of ones for the bias); they are
left alone.
"""
from __future__ import annotations

from ._numba import columns as _columns, njit, prange


@njit(cache=True, inline="always")
def _read_tap(src, H, W, dst, Ho, Wo, r0, off, sH, sW):
    """dst (Ho·Wo,) = the pixels of plane src (H·W,) at rows ``i·sH + r0``, columns ``j·sW + off`` (0 outside)."""
    j0, j1 = _columns(off, sW, W, Wo)
    for i in range(Ho):
        r, base = i * sH + r0, i * Wo
        if r < 0 or r >= H:
            for j in range(Wo):
                dst[base + j] = 0
            continue
        for j in range(j0):
            dst[base + j] = 0
        for j in range(j1, Wo):
            dst[base + j] = 0
        s0 = r * W + off
        if sW == 1:
            for j in range(j0, j1):
                dst[base + j] = src[s0 + j]
        else:
            for j in range(j0, j1):
                dst[base + j] = src[s0 + j * sW]


@njit(cache=True, inline="always")
def _add_tap(src, Ho, Wo, plane, H, W, r0, off, sH, sW):
    """The adjoint of :func:`_read_tap`: plane (H·W,) += src (Ho·Wo,) at the pixels it was read from."""
    j0, j1 = _columns(off, sW, W, Wo)
    for i in range(Ho):
        r, base = i * sH + r0, i * Wo
        if r < 0 or r >= H:
            continue
        d0 = r * W + off
        if sW == 1:
            for j in range(j0, j1):
                plane[d0 + j] += src[base + j]
        else:
            for j in range(j0, j1):
                plane[d0 + j * sW] += src[base + j]


@njit(cache=True, parallel=True)
def im2col(x, cols, folded, kH, kW, sH, sW, dH, dW, pt, pl):
    """cols (N, G, ≥ Cg·kH·kW, Ho, Wo) from x (N, C, H, W); with ``folded``, cols (G, Cg·kH·kW, N, Ho, Wo)."""
    N, C, H, W = x.shape
    Ho, Wo = cols.shape[3], cols.shape[4]
    G = cols.shape[0] if folded else cols.shape[1]
    Cg = C // G
    xf = x.reshape(N, C, H * W)
    cf = cols.reshape(cols.shape[0], cols.shape[1], cols.shape[2], Ho * Wo)
    for t in prange(N * C):
        n, c = t // C, t % C
        g, cl = c // Cg, c % Cg
        for u in range(kH):
            for v in range(kW):
                row = (cl * kH + u) * kW + v
                _read_tap(xf[n, c], H, W, cf[g, row, n] if folded else cf[n, g, row], Ho, Wo,
                          u * dH - pt, v * dW - pl, sH, sW)


@njit(cache=True, inline="always")
def _zero(a):
    for k in range(a.shape[0]):
        a[k] = 0


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def col2im(dcols, dx, folded, kH, kW, sH, sW, dH, dW, pt, pl):
    """dx (N, C, H, W), overwritten, from dcols (N, G, Cg·kH·kW, Ho, Wo); with ``folded``, dcols
    (G, Cg·kH·kW, N, Ho, Wo)."""
    N, C, H, W = dx.shape
    Ho, Wo = dcols.shape[3], dcols.shape[4]
    G = dcols.shape[0] if folded else dcols.shape[1]
    Cg = C // G
    df = dcols.reshape(dcols.shape[0], dcols.shape[1], dcols.shape[2], Ho * Wo)
    xf = dx.reshape(N, C, H * W)
    for t in prange(N * C):
        n, c = t // C, t % C
        g, cl = c // Cg, c % Cg
        plane = xf[n, c]
        _zero(plane)
        for u in range(kH):
            for v in range(kW):
                row = (cl * kH + u) * kW + v
                _add_tap(df[g, row, n] if folded else df[n, g, row], Ho, Wo, plane, H, W,
                         u * dH - pt, v * dW - pl, sH, sW)


@njit(cache=True, parallel=True)
def unfold(src, bias, out):
    """out (N, G, Cog, L) = src (G, Cog, N, L) transposed, plus ``bias[g·Cog + o]`` (none if bias is empty)."""
    G, Cog, N, L = src.shape
    with_bias = bias.shape[0] > 0
    for t in prange(N * G * Cog):
        n, r = t // (G * Cog), t % (G * Cog)
        g, o = r // Cog, r % Cog
        s, d = src[g, o, n], out[n, g, o]
        if with_bias:
            bo = bias[r]
            for k in range(L):
                d[k] = s[k] + bo
        else:
            for k in range(L):
                d[k] = s[k]
