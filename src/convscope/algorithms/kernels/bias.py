"""A channel's bias over its outputs (numba): the (sample, channel) rows of an output set to, or
increased by, their channel's bias, the rows shared among the threads."""
from __future__ import annotations

from ._numba import njit, prange


@njit(cache=True, parallel=True)
def channel_rows(out, b, add):
    """out[n, c, k] = b[c], or += b[c] with ``add``, for out (N, C, L), b (C,)."""
    N, C, L = out.shape
    for t in prange(N * C):
        n, c = t // C, t % C
        row, bc = out[n, c], b[c]
        if add:
            for k in range(L):
                row[k] += bc
        else:
            for k in range(L):
                row[k] = bc
