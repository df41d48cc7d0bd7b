"""Depth to space (numba) for :mod:`convscope.algorithms.patch`: the adjoint of rearranging an input
by its non-overlapping kH × kW patches."""
from __future__ import annotations

from ._numba import njit, prange


@njit(cache=True, parallel=True)
def depth_to_space(dxp, kH, kW, dx):
    """dx[n, c, i·kH + u, j·kW + v] ← dxp[n, (c·kH + u)·kW + v, i, j] for i < H_out, j < W_out
    (dxp (N, C·kH·kW, H_out, W_out)); the rest of dx is left as it is."""
    N, C = dx.shape[:2]
    Ho, Wo = dxp.shape[2], dxp.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        for i in range(Ho):
            for u in range(kH):
                row = dx[n, c, i * kH + u]
                for v in range(kW):
                    src = dxp[n, (c * kH + u) * kW + v, i]
                    for j in range(Wo):
                        row[j * kW + v] = src[j]
