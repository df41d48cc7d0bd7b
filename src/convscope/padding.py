"""Padding and its adjoint, driven by :mod:`convscope.geometry`'s source maps.

``pad`` builds the padded input: padded coordinate ``p`` holds input pixel
``source_map[p]`` (or 0 where the map says ``-1``).  Along each dimension this
is a linear map ``P`` (an ``(n + before + after) × n`` matrix with one 1 per
row, or none for a zero).  The gradient of the padded tensor therefore flows
back through ``Pᵀ``: every border cell adds its gradient into the real pixel it
copied.  ``fold`` applies ``Pᵀ`` for both dimensions.  For ``zeros`` padding it
is just the interior slice.
"""
from __future__ import annotations

import numpy as np

from .geometry import source_map


def pad(x: np.ndarray, spec) -> np.ndarray:
    """Pad the last two axes of ``x`` (…, H, W) as ``spec`` says.

    Returns a new array, or ``x`` itself when there is nothing to pad; never writes into ``x``.
    """
    (pt, pb), (pl, pr) = spec.padding
    H, W = x.shape[-2:]
    if spec.padding_mode == "zeros":
        if pt == pb == pl == pr == 0:
            return x
        out = np.empty(x.shape[:-2] + (H + pt + pb, W + pl + pr), dtype=x.dtype)
        out[..., :pt, :] = 0                   # zero the border only: the interior is overwritten
        out[..., pt + H:, :] = 0
        out[..., pt:pt + H, :pl] = 0
        out[..., pt:pt + H, pl + W:] = 0
        out[..., pt:pt + H, pl:pl + W] = x
        return out
    rows = source_map(H, pt, pb, spec.padding_mode)  # (H + pt + pb,), every entry a real row
    cols = source_map(W, pl, pr, spec.padding_mode)  # (W + pl + pr,)
    return x[..., rows[:, None], cols[None, :]]        # (…, Hp, Wp)


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


def fold(grad_padded: np.ndarray, spec, input_hw: tuple[int, int]) -> np.ndarray:
    """Gradient w.r.t. the unpadded input from the gradient w.r.t. the padded one.

    ``grad_padded`` is (…, H + pt + pb, W + pl + pr); the result is (…, H, W).
    """
    (pt, pb), (pl, pr) = spec.padding
    H, W = input_hw
    g = _fold_axis(grad_padded, H, pt, pb, spec.padding_mode, grad_padded.ndim - 2)
    return _fold_axis(g, W, pl, pr, spec.padding_mode, g.ndim - 1)
