"""im2col and col2im for the gemm path's per-sample layout, in parallel, with zero padding fused.

For input channel ``c`` (group ``g = c // Cg``, ``c' = c mod Cg``) and tap ``(u, v)``::

    cols[n, g, (c'·kH + u)·kW + v, i, j] = x[n, c, i·sH + u·dH − pt, j·sW + v·dW − pl]   (0 in the border)
    dx[n, c, r, s] = Σ over (u, v, i, j) reading (r, s) of dcols[n, g, (c'·kH + u)·kW + v, i, j]

(col2im is im2col's adjoint).  Along a row the real columns of a tap form one range (as in the
depthwise kernels), so the copies and sums run without tests, contiguous for stride 1.  The work is
split over (sample, channel): im2col's rows and col2im's input planes are written by one thread each.
``cols`` may have more rows per group than ``Cg·kH·kW`` (a row of ones for the bias); they are left
alone.
"""
from __future__ import annotations

from ._numba import columns as _columns, njit, prange


@njit(cache=True, parallel=True)
def im2col(x, cols, kH, kW, sH, sW, dH, dW, pt, pl):
    """cols (N, G, ≥ Cg·kH·kW, Ho, Wo) from x (N, C, H, W)."""
    N, C, H, W = x.shape
    G, Ho, Wo = cols.shape[1], cols.shape[3], cols.shape[4]
    Cg = C // G
    for t in prange(N * C):
        n, c = t // C, t % C
        g, cl = c // Cg, c % Cg
        for u in range(kH):
            for v in range(kW):
                dst = cols[n, g, (cl * kH + u) * kW + v]
                off = v * dW - pl
                j0, j1 = _columns(off, sW, W, Wo)
                for i in range(Ho):
                    r = i * sH + u * dH - pt
                    row = dst[i]
                    if r < 0 or r >= H:
                        for j in range(Wo):
                            row[j] = 0
                        continue
                    for j in range(j0):
                        row[j] = 0
                    for j in range(j1, Wo):
                        row[j] = 0
                    seg, d = x[n, c, r, j0 * sW + off:], row[j0:j1]
                    if sW == 1:
                        for j in range(d.shape[0]):
                            d[j] = seg[j]
                    else:
                        for j in range(d.shape[0]):
                            d[j] = seg[j * sW]


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def col2im(dcols, dx, kH, kW, sH, sW, dH, dW, pt, pl):
    """dx (N, C, H, W), overwritten, from dcols (N, G, Cg·kH·kW, Ho, Wo)."""
    N, C, H, W = dx.shape
    G, Ho, Wo = dcols.shape[1], dcols.shape[3], dcols.shape[4]
    Cg = C // G
    for t in prange(N * C):
        n, c = t // C, t % C
        g, cl = c // Cg, c % Cg
        plane = dx[n, c]
        for r in range(H):
            for s in range(W):
                plane[r, s] = 0
        for u in range(kH):
            for v in range(kW):
                src = dcols[n, g, (cl * kH + u) * kW + v]
                off = v * dW - pl
                j0, j1 = _columns(off, sW, W, Wo)
                for i in range(Ho):
                    r = i * sH + u * dH - pt
                    if r < 0 or r >= H:
                        continue
                    d, seg = plane[r, j0 * sW + off:], src[i, j0:j1]
                    if sW == 1:
                        for j in range(seg.shape[0]):
                            d[j] += seg[j]
                    else:
                        for j in range(seg.shape[0]):
                            d[j * sW] += seg[j]
