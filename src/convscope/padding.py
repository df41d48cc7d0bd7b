"""Padding and its adjoint, driven by :mod:`convscope.geometry`'s source maps.

``pad`` builds the padded input: padded coordinate ``p`` holds input pixel
``source_map[p]`` (or 0 where the map says ``-1``).  Along each dimension this
is a linear map ``P`` (an ``(n + before + after) × n`` matrix with one 1 per
row, or none for a zero).  The gradient of the padded tensor therefore flows
back through ``Pᵀ``: every border cell adds its gradient into the real pixel it
copied.  ``fold`` applies ``Pᵀ`` along every spatial dimension.  For ``zeros`` padding it
is just the interior slice.
"""
from __future__ import annotations

import math

import numpy as np

from .geometry import source_map


def pad(x: np.ndarray, spec) -> np.ndarray:
    """Pad the last ``spec.ndim`` axes of ``x`` (…, H, W), (…, L) or (…, D, H, W) as ``spec`` says.

    Returns a new array, or ``x`` itself when there is nothing to pad; never writes into ``x``.
    """
    nd = spec.ndim
    sizes = x.shape[-nd:]
    if spec.padding_mode == "zeros":
        if not any(spec.pad_totals):
            return x
        out = np.empty(x.shape[:-nd] + spec.padded_size(sizes), dtype=x.dtype)
        return pad_into(out, x, tuple(p0 for p0, _ in spec.padding))
    maps = [source_map(n, p0, p1, spec.padding_mode) for n, (p0, p1) in zip(sizes, spec.padding)]
    # every entry a real pixel: one gather of the flattened axes, which gives a C-contiguous result
    # (indexing with np.ix_ behind an Ellipsis lays the leading axes out innermost)
    flat = np.ravel_multi_index(np.ix_(*maps), sizes)                 # (*padded sizes) → index into (…, Π sizes)
    lead = x.shape[:-nd]
    return np.take(x.reshape(lead + (math.prod(sizes),)), flat.ravel(), axis=-1).reshape(lead + flat.shape)


def pad_into(dst: np.ndarray, src: np.ndarray, before: tuple) -> np.ndarray:
    """Zero the border, copy the interior: ``src`` into ``dst`` at offset ``before`` along the last
    ``len(before)`` axes, every other cell of ``dst`` set to 0.  Returns ``dst``.

    ``dst`` is typically fresh (``np.empty``): only the border is written with zeros, along each axis
    the cells before and after the interior, within the interior of the axes before it; the interior
    is written once, from ``src``.  ``src`` must fit: ``before[i] + src.shape[-nd + i] <= dst.shape[-nd + i]``.
    """
    nd = len(before)
    interior = tuple(slice(p0, p0 + n) for p0, n in zip(before, src.shape[src.ndim - nd:]))
    for axis, cells in enumerate(interior):
        inner, rest = interior[:axis], (slice(None),) * (nd - axis - 1)
        dst[(Ellipsis,) + inner + (slice(0, cells.start),) + rest] = 0
        dst[(Ellipsis,) + inner + (slice(cells.stop, None),) + rest] = 0
    dst[(Ellipsis,) + interior] = src
    return dst


def _fold_axis(g: np.ndarray, size: int, before: int, after: int, mode: str, axis: int) -> np.ndarray:
    """Adjoint of padding along one axis: (…, before + size + after, …) → (…, size, …)."""
    interior = [slice(None)] * g.ndim
    interior[axis] = slice(before, before + size)
    out = g[tuple(interior)].copy()
    if mode == "zeros" or before + after == 0:
        return out
    smap = source_map(size, before, after, mode)
    for p in list(range(before)) + list(range(before + size, before + size + after)):
        src_index = [slice(None)] * g.ndim
        dst_index = [slice(None)] * g.ndim
        src_index[axis] = p
        dst_index[axis] = smap[p]
        out[tuple(dst_index)] += g[tuple(src_index)]
    return out


def fold(grad_padded: np.ndarray, spec, input_size: tuple) -> np.ndarray:
    """Gradient w.r.t. the unpadded input from the gradient w.r.t. the padded one.

    ``grad_padded`` is (…, *padded sizes) over the last ``spec.ndim`` axes; the result is
    (…, *input_size).
    """
    g = grad_padded
    nd = spec.ndim
    for k, (n, (p0, p1)) in enumerate(zip(input_size, spec.padding)):
        g = _fold_axis(g, n, p0, p1, spec.padding_mode, g.ndim - nd + k)
    return g
