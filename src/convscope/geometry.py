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


def transposed_output_length(size: int, kernel: int, stride: int, padding: int, dilation: int,
                             output_padding: int = 0) -> int:
    """``(size − 1)·stride − 2·padding + dilation·(kernel − 1) + output_padding + 1`` (may be ≤ 0).

    The output length of a transposed convolution: the largest input length of the convolution
    it is the adjoint of that gives ``size`` outputs is this plus ``stride − 1``; ``output_padding``
    picks among those lengths (and, below ``dilation``, beyond them: the extra rows get no taps).

    >>> transposed_output_length(3, 3, 2, 1, 1), transposed_output_length(3, 3, 2, 1, 1, 1)
    (5, 6)
    >>> output_length(6, 3, 2, 2, 1)                # both are convolution inputs that give 3 outputs
    3
    """
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


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


# --------------------------------------------------------------------------- blocks of outputs (halos)

from typing import NamedTuple  # noqa: E402


class BlockRead(NamedTuple):
    """What a block of outputs reads along one axis.

    ``padded_start:padded_stop`` are the padded coordinates its windows cover; of them,
    ``pad_before`` lie in the border before real row 0, then the real rows ``start:stop``,
    then ``pad_after`` in the border after the last real row.
    """

    padded_start: int
    padded_stop: int
    start: int
    stop: int
    pad_before: int
    pad_after: int


def block_read(o0: int, o1: int, size: int, kernel: int, stride: int, dilation: int,
               before: int, after: int) -> BlockRead:
    """The rows that output rows ``o0 … o1 − 1`` (``o0 < o1``) read along one axis.

    Output ``i`` reads padded coordinates ``i·stride … i·stride + dilation·(kernel − 1)``, so
    the block reads ``o0·stride … (o1 − 1)·stride + dilation·(kernel − 1)``: its rows plus a
    halo of ``dilation·(kernel − 1) + 1 − stride`` rows (when positive) shared with the next block.

    >>> block_read(0, 4, 10, 3, 1, 1, 1, 1)       # padding 1: one border row, real rows 0 … 4
    BlockRead(padded_start=0, padded_stop=6, start=0, stop=5, pad_before=1, pad_after=0)
    >>> block_read(4, 5, 9, 3, 2, 1, 1, 1)        # the last output, stride 2
    BlockRead(padded_start=8, padded_stop=11, start=7, stop=9, pad_before=0, pad_after=1)
    """
    p0 = o0 * stride
    p1 = (o1 - 1) * stride + dilation * (kernel - 1) + 1
    start = min(max(p0 - before, 0), size)
    stop = max(min(p1 - before, size), start)
    pad_before = min(max(before - p0, 0), p1 - p0)
    pad_after = (p1 - p0) - pad_before - (stop - start)
    return BlockRead(p0, p1, start, stop, pad_before, pad_after)


def block_sources(read: BlockRead, size: int, before: int, mode: str) -> np.ndarray:
    """For each padded coordinate of ``read`` the real pixel it copies (``-1``: zero padding).

    The same values as ``source_map(size, before, after, mode)[read.padded_start:read.padded_stop]``.

    >>> block_sources(block_read(0, 3, 5, 3, 1, 1, 2, 2), 5, 2, "reflect").tolist()
    [2, 1, 0, 1, 2]
    """
    out = np.empty(read.padded_stop - read.padded_start, dtype=np.intp)
    out[read.pad_before:read.pad_before + read.stop - read.start] = np.arange(read.start, read.stop)
    border = list(range(read.pad_before)) + list(range(out.size - read.pad_after, out.size))
    for k in border:
        src = source_index(read.padded_start + k - before, size, mode)
        out[k] = -1 if src is None else src
    return out


def output_blocks(input_bounds, stride: int, out_len: int) -> list[tuple[int, int]]:
    """Blocks of outputs aligned to the stride with the input's blocks (chunks) along one axis.

    ``input_bounds`` are the starts of the input blocks after the first (real coordinates);
    output ``i`` belongs to the block holding real row ``i·stride`` (the last block also takes
    the outputs whose first row lies beyond the input).  Empty blocks are left out.

    >>> output_blocks([4, 8], 2, 5)               # input rows 0-3 | 4-7 | 8-9, stride 2
    [(0, 2), (2, 4), (4, 5)]
    >>> output_blocks([3, 6, 9], 1, 8)            # 'valid' 3-tap kernel over 10 rows
    [(0, 3), (3, 6), (6, 8)]
    """
    cuts = sorted({min(-(-a // stride), out_len) for a in input_bounds} | {0, out_len})
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


# --------------------------------------------------------------------------- single cells and unread rows


def padded_cell(out_index, tap, stride, dilation) -> tuple:
    """The padded coordinates ``i·stride + u·dilation`` (one per axis) output ``out_index`` reads through ``tap``.

    >>> padded_cell((1, 2), (2, 0), (2, 1), (1, 3))
    (4, 2)
    """
    return tuple(int(i) * s + int(u) * d for i, u, s, d in zip(out_index, tap, stride, dilation))


def is_padding_cell(padded, input_size, padding) -> bool:
    """Whether padded coordinates ``padded`` (one per axis) lie in the border: some real coordinate
    ``p − before`` is outside ``[0, size)``.

    >>> is_padding_cell((0, 3), (4, 4), ((1, 1), (1, 1))), is_padding_cell((1, 4), (4, 4), ((1, 1), (1, 1)))
    (True, False)
    """
    return not all(0 <= p - before < n for p, n, (before, _) in zip(padded, input_size, padding))


class Unread(NamedTuple):
    """Why no tap reads a real coordinate along one axis.

    ``cause`` is ``'floor'`` (it lies past the end of the last window, ``window``, which the floor
    in the output-size formula left the last), ``'dilation'`` (it falls between two taps of window
    ``window``) or ``'stride'`` (it falls in the gap between window ``window`` and the next).
    """

    cause: str
    window: int


def unread_cause(r: int, size: int, kernel: int, stride: int, dilation: int, before: int,
                 after: int) -> Unread | None:
    """Why no window reads real coordinate ``r`` (``0 ≤ r < size``) directly, or None when one does.

    A window ``i`` covers padded coordinates ``i·stride … i·stride + dilation·(kernel − 1)`` and reads
    those ``i·stride + u·dilation``; ``r`` is at padded coordinate ``p = r + before``.  Unread, it is
    past the last window (``'floor'``), or inside the span of the latest window that starts at or
    before it, between two taps (``'dilation'``), or past that window's end and before the next
    window's start (``'stride'``).  The output must be non-empty.

    >>> unread_cause(4, 5, 2, 2, 1, 0, 0), unread_cause(2, 6, 2, 3, 1, 0, 0), unread_cause(1, 6, 2, 2, 3, 0, 0)
    (Unread(cause='floor', window=1), Unread(cause='stride', window=0), Unread(cause='dilation', window=0))
    >>> print(unread_cause(3, 6, 2, 3, 1, 0, 0))
    None
    """
    last = output_length(size, kernel, stride, before + after, dilation) - 1
    extent = dilation * (kernel - 1)
    p = r + before
    first = max(0, -(-(p - extent) // stride))     # the first window whose span reaches p
    if any((p - i * stride) % dilation == 0 for i in range(first, min(p // stride, last) + 1)):
        return None
    if p > last * stride + extent:
        return Unread("floor", last)
    i = min(p // stride, last)
    return Unread("dilation" if p - i * stride <= extent else "stride", i)


def unread_positions(size: int, kernel: int, stride: int, dilation: int, before: int, after: int) -> dict:
    """``{r: Unread}`` for every real coordinate ``r`` no window reads directly, in increasing order.

    >>> list(unread_positions(6, 2, 3, 1, 0, 0))
    [2, 5]
    """
    causes = {r: unread_cause(r, size, kernel, stride, dilation, before, after) for r in range(size)}
    return {r: c for r, c in causes.items() if c is not None}


# --------------------------------------------------------------------------- transposed convolutions


def transposed_taps(r: int, size: int, kernel: int, stride: int, padding: int, dilation: int) -> list:
    """The ``(i, u)`` pairs, input element ``i`` (``0 ≤ i < size``) through kernel tap ``u``, that land on
    output row ``r`` of a transposed convolution along one axis: ``i·stride + u·dilation − padding = r``.

    The scatter view: input element ``i`` stamps tap ``u`` of the kernel on row ``i·stride + u·dilation −
    padding``.  Sorted by ``i``.  Rows beyond the last stamp (``output_padding`` above the stride's
    reach) get none.

    >>> transposed_taps(1, 3, 3, 2, 1, 1), transposed_taps(2, 3, 3, 2, 1, 1)   # i = 3, k = 3, s = 2, p = 1
    ([(0, 2), (1, 0)], [(1, 1)])
    >>> transposed_taps(0, 2, 2, 1, 0, 3)                                        # dilation 3
    [(0, 0)]
    """
    pairs = []
    for u in range(kernel):
        q = r + padding - u * dilation
        if q % stride == 0 and 0 <= q // stride < size:
            pairs.append((q // stride, u))
    return sorted(pairs)


def transposed_reach(i: int, out_len: int, kernel: int, stride: int, padding: int, dilation: int) -> list:
    """The ``(r, u)`` pairs, output row ``r`` (``0 ≤ r < out_len``) that input element ``i`` reaches through
    kernel tap ``u``: ``r = i·stride + u·dilation − padding`` (the inverse of :func:`transposed_taps`).
    Taps that land outside the output (cropped by ``padding``) are left out.

    >>> transposed_reach(0, 5, 3, 2, 1, 1)
    [(0, 1), (1, 2)]
    """
    rows = ((i * stride + u * dilation - padding, u) for u in range(kernel))
    return [(r, u) for r, u in rows if 0 <= r < out_len]


def gather_padding(kernel: int, padding: int, dilation: int, output_padding: int = 0) -> tuple[int, int]:
    """``(before, after)``: the zeros around the zero-inserted input of a transposed convolution's gather view,
    ``dilation·(kernel − 1) − padding`` on each side and ``output_padding`` more after (negative: cropped).

    >>> gather_padding(3, 1, 1), gather_padding(3, 1, 1, 1), gather_padding(2, 3, 1)
    ((1, 1), (1, 2), (-2, -2))
    """
    before = dilation * (kernel - 1) - padding
    return before, before + output_padding


def zero_inserted_cell(m: int, before: int, stride: int, size: int) -> str:
    """What cell ``m`` of the zero-inserted input (``stride − 1`` zeros between the ``size`` elements, ``before``
    cells of padding first) holds along one axis: ``'x'`` an input element, ``'zero'`` an inserted zero,
    ``'pad'`` padding.

    >>> [zero_inserted_cell(m, 1, 2, 3) for m in range(7)]
    ['pad', 'x', 'zero', 'x', 'zero', 'x', 'pad']
    """
    t = m - before
    if t < 0 or t > (size - 1) * stride:
        return "pad"
    return "x" if t % stride == 0 else "zero"
