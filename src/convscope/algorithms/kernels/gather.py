"""The gather path's kernel: each input pixel's gradient summed from the taps that reach it.

With ``d`` the per-tap products in channels-last order (:mod:`convscope.algorithms.gather`)::

    d[n, g, i·Wo + j, (u·kW + v)·Cg + c] = Σ_o w[g·Cog + o, c, u, v] · grad_out[n, g·Cog + o, i, j]
    dx[n, g·Cg + c, r, s] = Σ over (u, v, i, j) with i·sH + u·dH − pt = r and j·sW + v·dW − pl = s
                            of d[n, g, i·Wo + j, (u·kW + v)·Cg + c]

A block of columns of output row ``r`` of a sample and group is one task (the whole row unless
``W·Cg`` exceeds :data:`ACC_ELEMENTS`): for each tap row ``u`` whose ``i`` is an integer in
``[0, Ho)``, and each tap column ``v``, the real columns of the block it reaches form one range (zero
padding fused: the taps landing on the border are skipped), and each adds a contiguous vector of
``Cg`` channels into a ``(columns, Cg)`` accumulator; the accumulator is written once, transposed,
into the row's ``Cg`` planes.  No output is written twice and none is zeroed first.
"""
from __future__ import annotations

import numpy as np

from ._numba import columns as _columns, njit, prange


ACC_ELEMENTS = 8192     # a task's accumulator holds at most this many values (W or fewer columns × Cg)


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def gather(d, batch_major, dx, Wo, kH, kW, sH, sW, dH, dW, pt, pl):
    """dx (N, C, H, W), overwritten, from d (N·G, Ho·Wo, kH·kW·Cg), C-contiguous, whose first axis is
    (n, g) if ``batch_major`` else (g, n)."""
    N, C, H, W = dx.shape
    G = d.shape[0] // max(N, 1)
    Cg = C // G
    Ho = d.shape[1] // Wo
    B = max(1, min(W, ACC_ELEMENTS // Cg))          # columns per task
    blocks = (W + B - 1) // B
    for t in prange(N * G * H * blocks):
        n, g, r, s0 = t // (G * H * blocks), (t // (H * blocks)) % G, (t // blocks) % H, (t % blocks) * B
        plane = d[n * G + g] if batch_major else d[g * N + n]       # (Ho·Wo, kH·kW·Cg)
        width = min(B, W - s0)
        acc = np.zeros((width, Cg), dtype=dx.dtype)
        for u in range(kH):
            q = r + pt - u * dH
            if q < 0:
                break
            if q % sH != 0 or q // sH >= Ho:
                continue
            i = q // sH
            for v in range(kW):
                off = v * dW - pl - s0                  # column j lands on s0 + j·sW + off
                j0, j1 = _columns(off, sW, width, Wo)
                k0 = (u * kW + v) * Cg
                for j in range(j0, j1):
                    src = plane[i * Wo + j, k0:k0 + Cg]
                    dst = acc[j * sW + off]
                    for c in range(Cg):
                        dst[c] += src[c]
        for c in range(Cg):
            row = dx[n, g * Cg + c, r, s0:s0 + width]
            for s in range(width):
                row[s] = acc[s, c]
