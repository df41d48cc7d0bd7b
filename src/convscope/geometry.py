"""Pure index arithmetic: the one place that knows which input pixel a tap reads.

Coordinates
-----------
Along one dimension of size ``n`` with padding ``(before, after)``:

* a *padded* coordinate ``p`` runs over ``0 … before + n + after − 1``;
* the *real* coordinate is ``r = p − before`` (negative in the top/left
  border, ``≥ n`` in the bottom/right one);
* output position ``i`` with kernel tap ``u`` reads padded coordinate
  ``p = i·stride + u·dilation``.

Which pixel supplies a padded coordinate depends on the padding mode
(torch's ``F.pad`` semantics, the same as ``np.pad``'s ``constant``,
``reflect``, ``edge`` and ``wrap``)::

    zeros      r outside [0, n)  → nothing (the value is 0)
    reflect    r < 0 → −r ;  r ≥ n → 2(n−1) − r        (the edge is not repeated)
    replicate  clamp(r, 0, n−1)
    circular   r mod n

The reference loops, the padding of the fast paths and its adjoint all ask
this module, so they cannot disagree.
"""
from __future__ import annotations

import numpy as np


def output_length(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """``⌊(size + pad_total − dilation·(kernel − 1) − 1) / stride⌋ + 1`` (may be ≤ 0).

    >>> output_length(32, 3, 2, 0, 1)
    15
    """
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def source_index(r: int, size: int, mode: str) -> int | None:
    """The real pixel (0 ≤ index < size) that supplies real coordinate ``r``, or None for a zero.

    >>> [source_index(r, 4, "reflect") for r in (-2, -1, 0, 3, 4, 5)]
    [2, 1, 0, 3, 2, 1]
    >>> [source_index(r, 4, "circular") for r in (-1, 4)]
    [3, 0]
    >>> print(source_index(-1, 4, "zeros"))
    None
    """
    if 0 <= r < size:
        return r
    if mode == "zeros":
        return None
    if mode == "reflect":
        return -r if r < 0 else 2 * (size - 1) - r
    if mode == "replicate":
        return 0 if r < 0 else size - 1
    if mode == "circular":
        return r % size
    raise ValueError(f"unknown padding_mode {mode!r}")


def source_map(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each padded coordinate ``p`` the real pixel it reads, ``-1`` for zero padding.

    Shape ``(before + size + after,)``, dtype intp.

    >>> source_map(3, 2, 2, "reflect").tolist()
    [2, 1, 0, 1, 2, 1, 0]
    >>> source_map(3, 1, 1, "zeros").tolist()
    [-1, 0, 1, 2, -1]
    """
    out = np.empty(before + size + after, dtype=np.intp)
    for p in range(out.size):
        src = source_index(p - before, size, mode)
        out[p] = -1 if src is None else src
    return out


def tap_sources(size: int, before: int, after: int, mode: str, kernel: int, stride: int,
                dilation: int, out_len: int) -> np.ndarray:
    """``table[i, u]``: the real pixel read by output ``i`` through tap ``u`` (``-1``: zero padding).

    Shape ``(out_len, kernel)``.
    """
    smap = source_map(size, before, after, mode)
    padded = np.arange(out_len)[:, None] * stride + np.arange(kernel)[None, :] * dilation
    return smap[padded]


def spec_tap_sources(spec, input_size: tuple) -> tuple:
    """One table per spatial axis of real pixels for ``spec``: ``(out_len, kernel)`` each.

    For 2-d, the row table ``(H_out, kH)`` and the column table ``(W_out, kW)``: output ``(i, j)``
    through tap ``(u, v)`` reads input pixel ``(rows[i, u], cols[j, v])``; when either is ``-1``
    the tap reads zero padding.  Likewise for 1-d (one table) and 3-d (depth, rows, columns).
    """
    out_size = spec.output_size(input_size)
    return tuple(
        tap_sources(n, p0, p1, spec.padding_mode, k, s, d, o)
        for n, (p0, p1), k, s, d, o in zip(
            input_size, spec.padding, spec.kernel_size, spec.stride, spec.dilation, out_size
        )
    )
