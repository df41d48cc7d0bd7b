r"""Strided kernels at least twice their stride (a DCGAN's 4×4/2, and its transposed up-sampling) as one
3×3 stride-1 convolution on the sub-pixel phases, run by Winograd F(4×4, 3×3).

The input gradient of a strided convolution (the forward of a transposed one) splits by the phase of
the pixel it lands on.  Along one axis, with kernel ``k``, stride ``s`` and leading padding ``p``, write
pixel ``t = s·a + b`` (``b < s``) and ``b + p = s·δ_b + ρ_b`` (``ρ_b < s``); the taps that reach it are
``u = ρ_b + s·m`` for ``m < M_b = ⌈(k − ρ_b)/s⌉``, read from output ``a + δ_b − m``::

    ∂L/∂x[s·a + b] = Σ_m w[ρ_b + s·m] · grad_out[a + δ_b − m]

For every phase these are a window of at most 3 neighbours of ``a`` whenever ``k ≤ 2s + 1``-ish (the
rule is :func:`phases`: the offsets ``δ_b − m`` of all phases span at most 3), so all ``s_H·s_W`` phases
are one 3×3 stride-1 correlation ``Q`` of grad_output, with ``C·s_H·s_W`` output channels in the order
``(c, b_H, b_W)`` and the weight

    W₃[(c, b_H, b_W), o, e_H, e_W] = w[o, c, ρ + s·(δ + top − e), …]   (0 where that is no tap)

in which every tap of ``w`` appears once.  Then

* ∂L/∂x = depth-to-space of ``Q(grad_out)``, cropped to H × W (grad_input);
* out = ``Qᵀ(S(x))`` + bias, with ``S`` space-to-depth of x zero-extended to whole phases (forward:
  ``Qᵀ`` is the 3×3 correlation with W₃ flipped and its channel axes swapped);
* ∂L/∂w = the taps of ``Q``'s weight gradient for its input grad_out and its output gradient ``S(x)``.

Winograd computes each pixel of ``Q`` with 36/16 multiplies per channel pair; the direct sums take
``(k_H/s_H)·(k_W/s_W)`` (4 for a 4×4/2), so this pays where the kernel is at least about twice the
stride.  Every pass runs on :func:`convscope.algorithms.winograd.correlate3x3` and
:func:`~convscope.algorithms.winograd.correlate3x3_weight`, with their rounding (``ERROR``) and their
checks of what they read and write (``FINITE_ONLY``).  Padding modes other than zeros pad first
(:func:`convscope.padding.pad`; the phases are then those of no padding) and fold the input gradient.
"""
from __future__ import annotations

import functools

import numpy as np

from ..padding import fold, pad
from . import patch, winograd

ERROR = "global"    # Winograd's tiles (see convscope.algorithms.winograd)
FINITE_ONLY = True  # each pass(..., finite_only=True) is None when what it reads or writes is not finite


@functools.lru_cache(maxsize=256)
def phases(k: int, s: int, p: int):
    """``(top, taps)`` of one axis, or None when the phases' offsets span more than 3: ``taps[b][e]``
    is the kernel tap that phase ``b`` reads at window position ``e`` of the 3×3 correlation
    (−1: none), the window reading grad_output rows ``a − top + e``."""
    rows = []
    for b in range(s):
        delta, rho = divmod(b + p, s)
        count = -(-(k - rho) // s) if rho < k else 0
        rows.append((delta, rho, count))
    lows = [d - m + 1 for d, _, m in rows if m > 0]
    highs = [d for d, _, m in rows if m > 0]
    if not highs:
        return None
    top = -min(lows)
    if max(highs) + top > 2:
        return None
    taps = tuple(tuple((rho + s * (delta + top - e)) if 0 <= delta + top - e < m else -1 for e in range(3))
                 for delta, rho, m in rows)
    return top, taps


def needs(spec, shape):
    """None for a 2-d, ungrouped, dilation-1 convolution strided along some axis, with a kernel larger than
    its stride (smaller ones have phases no tap reaches: the patches do not overlap) and phases that fit a
    3×3 window; else what is wrong."""
    wrong = []
    if spec.ndim != 2:
        wrong.append(f"a {spec.ndim}-d kernel")
    if spec.dilation != (1, 1):
        wrong.append(f"dilation={spec.dilation}")
    if spec.groups != 1:
        wrong.append(f"groups={spec.groups}")
    if spec.ndim == 2 and (max(spec.stride) == 1 or all(k <= s for k, s in zip(spec.kernel_size, spec.stride))):
        wrong.append(f"stride={spec.stride} with kernel_size={spec.kernel_size}")
    if not wrong and _axes(_zero_padded(spec)) is None:
        padding = spec.padding if spec.padding_mode == "zeros" else "0 (the padded input)"
        wrong.append(f"kernel_size={spec.kernel_size} with stride={spec.stride} and padding={padding}")
    if wrong:
        return ("a stride above 1 with a kernel larger than it, groups 1, dilation 1 and phases of at most "
                "3 taps' reach (about kernel ≤ 2·stride + 1), got " + ", ".join(wrong))
    return None


def _zero_padded(spec):
    """The spec the phases are taken of: itself with zero padding; for the other modes, the convolution
    of the input once padded (:func:`convscope.padding.pad`), with no padding."""
    return spec if spec.padding_mode == "zeros" else spec.unpadded()


def _padded_shape(spec, shape):
    H, W = spec.padded_size((shape.H, shape.W))
    return shape._replace(H=H, W=W)


def _axes(spec):
    (kH, kW), (sH, sW), ((pt, _), (pl, _)) = spec.kernel_size, spec.stride, spec.padding
    rows, cols = phases(kH, sH, pt), phases(kW, sW, pl)
    return None if rows is None or cols is None else (rows, cols)


def _extent(spec, shape):
    """(A_H, A_W): the phase grid's rows and columns, ⌈H/s_H⌉ × ⌈W/s_W⌉."""
    (sH, sW) = spec.stride
    return -(-shape.H // sH), -(-shape.W // sW)


@functools.lru_cache(maxsize=64)
def _indices(spec):
    """Index arrays into the weight with a zero tap appended on each axis: (sH, 3) and (sW, 3)."""
    (top_h, taps_h), (top_w, taps_w) = _axes(spec)
    kH, kW = spec.kernel_size
    rows = np.array([[kH if t < 0 else t for t in row] for row in taps_h])
    cols = np.array([[kW if t < 0 else t for t in row] for row in taps_w])
    return rows, cols


def phase_weight(w, spec):
    """W₃ (C·sH·sW, C_out, 3, 3) from w (C_out, C, kH, kW)."""
    O, C, kH, kW = w.shape
    (sH, sW) = spec.stride
    rows, cols = _indices(spec)
    padded = np.zeros((O, C, kH + 1, kW + 1), dtype=w.dtype)
    padded[:, :, :kH, :kW] = w
    w6 = padded[:, :, rows[:, None, :, None], cols[None, :, None, :]]      # (O, C, sH, sW, 3, 3)
    return np.ascontiguousarray(w6.transpose(1, 2, 3, 0, 4, 5)).reshape(C * sH * sW, O, 3, 3)


def _weight_taps(dw3, spec, O, C):
    """∂L/∂w (C_out, C, kH, kW) from ∂L/∂W₃: each tap from the one phase and window cell it sits at."""
    (sH, sW), (kH, kW) = spec.stride, spec.kernel_size
    (_, taps_h), (_, taps_w) = _axes(spec)
    where_h = {t: (b, e) for b, row in enumerate(taps_h) for e, t in enumerate(row) if t >= 0}
    where_w = {t: (b, e) for b, row in enumerate(taps_w) for e, t in enumerate(row) if t >= 0}
    bh, eh = (np.array(v) for v in zip(*(where_h[u] for u in range(kH))))
    bw, ew = (np.array(v) for v in zip(*(where_w[v] for v in range(kW))))
    d6 = dw3.reshape(C, sH, sW, O, 3, 3)
    picked = d6[:, bh[:, None], bw[None, :], :, eh[:, None], ew[None, :]]    # (kH, kW, C, O)
    return np.ascontiguousarray(picked.transpose(3, 2, 0, 1))


def _space_to_depth(x, spec, shape):
    """S(x) (N, C·sH·sW, A_H, A_W): x zero-extended to A_H·sH × A_W·sW, its phases as channels."""
    return patch.space_to_depth(x, *spec.stride, *_extent(spec, shape))


def _depth_to_space(z, spec, shape):
    """∂L/∂x (N, C, H, W) from Q's output z (N, C·sH·sW, A_H, A_W), cropped to H × W."""
    from .kernels import _numba
    from .kernels import patch as kernels

    (sH, sW) = spec.stride
    Ah, Aw = _extent(spec, shape)
    N, C, H, W = shape.N, shape.C, shape.H, shape.W
    exact = (Ah * sH, Aw * sW) == (H, W)
    dx = np.empty((N, C, Ah * sH, Aw * sW), dtype=z.dtype)
    _numba.launch(kernels.depth_to_space, np.ascontiguousarray(z), sH, sW, dx)
    return dx if exact else np.ascontiguousarray(dx[:, :, :H, :W])


def forward(x, w, b, spec, shape, finite_only=False):
    """out = Qᵀ(S(x)) + bias; with ``finite_only``, None if x or out holds a value that is not finite."""
    if spec.padding_mode != "zeros":
        return forward(pad(x, spec), w, b, spec.unpadded(), _padded_shape(spec, shape), finite_only)
    (top_h, _), (top_w, _) = _axes(spec)
    s = _space_to_depth(x, spec, shape)
    return winograd.correlate3x3(s, winograd.flipped(phase_weight(w, spec)), 2 - top_h, 2 - top_w, shape.H_out,
                                 shape.W_out, bias=b, finite_only=finite_only)


def grad_input(grad_out, w, spec, shape, finite_only=False):
    """∂L/∂x = depth-to-space of Q(grad_out); with ``finite_only``, None if grad_out or Q's output holds a
    value that is not finite."""
    if shape.N == 0:
        return np.zeros((0, shape.C, shape.H, shape.W), dtype=grad_out.dtype)
    if spec.padding_mode != "zeros":
        dxp = grad_input(grad_out, w, spec.unpadded(), _padded_shape(spec, shape), finite_only)
        if dxp is None:
            return None
        from . import all_finite

        dx = fold(dxp, spec, (shape.H, shape.W))
        return None if finite_only and not all_finite(dx) else dx      # fold's sums can overflow
    (top_h, _), (top_w, _) = _axes(spec)
    Ah, Aw = _extent(spec, shape)
    z = winograd.correlate3x3(grad_out, phase_weight(w, spec), top_h, top_w, Ah, Aw, finite_only=finite_only)
    return None if z is None else _depth_to_space(z, spec, shape)


def grad_weight(grad_out, x, spec, shape, finite_only=False):
    """∂L/∂w: the taps of Q's weight gradient (input grad_out, output gradient S(x)); with ``finite_only``,
    None if x or grad_out holds a value that is not finite."""
    if spec.padding_mode != "zeros":
        return grad_weight(grad_out, pad(x, spec), spec.unpadded(), _padded_shape(spec, shape), finite_only)
    (top_h, _), (top_w, _) = _axes(spec)
    dw3 = winograd.correlate3x3_weight(_space_to_depth(x, spec, shape), grad_out, top_h, top_w,
                                       finite_only=finite_only)
    return None if dw3 is None else _weight_taps(dw3, spec, shape.out_channels, shape.C)


def describe(spec, shape, pass_) -> str:
    spec, shape = _zero_padded(spec), (shape if spec.padding_mode == "zeros" else _padded_shape(spec, shape))
    (sH, sW) = spec.stride
    Ah, Aw = _extent(spec, shape)
    return (f"{sH * sW} sub-pixel phases as {shape.C * sH * sW} channels of one 3×3 stride-1 correlation at "
            f"{Ah}×{Aw}, Winograd F(4×4, 3×3)")


def workspace(pass_, spec, shape, itemsize):
    """Scratch bytes: S(x) or Q's output (with its zero-extended copy), W₃ and its transform, and
    Winograd's transforms and products (and for padding other than zeros, the padded input or its gradient
    and fold's copies)."""
    extra = 0
    if spec.padding_mode != "zeros":
        spec, shape = spec.unpadded(), _padded_shape(spec, shape)
        extra = 3 * shape.N * shape.C * shape.H * shape.W
    (sH, sW) = spec.stride
    Ah, Aw = _extent(spec, shape)
    N, C, O = shape.N, shape.C * sH * sW, shape.out_channels
    phased = N * C * Ah * Aw
    weights = (36 + 9 * 2) * C * O
    if pass_ == "forward":
        th, tw = -(-shape.H_out // 4), -(-shape.W_out // 4)
    else:
        th, tw = -(-Ah // 4), -(-Aw // 4)
    P = N * th * tw
    total = 2 * phased + weights + 36 * (C + O) * P + N * O * shape.H_out * shape.W_out + extra
    return total * itemsize
