"""Depthwise convolutions (one input channel per group): compiled multiply-adds per kernel tap.

With ``C/groups = 1`` every output channel ``o = c·m + k`` (``m = C_out/C``, the
channel multiplier) reads one input channel ``c``, so the convolution is, per
tap ``(u, v)``, an elementwise product of a shifted window of the padded input
with one weight per channel::

    out[n, o, i, j] = b[o] + Σ_u Σ_v  w[o, u, v] · x̃[n, c, i·sH + u·dH, j·sW + v·dW]

There is no matrix product to hand to BLAS (im2col would copy the input kH·kW
times to multiply it by 1×(kH·kW) matrices).  The three passes are numba kernels
(:mod:`convscope.algorithms.kernels.depthwise`), in one of four layouts (:func:`layout`):

* *planes*: one (sample, channel) plane at a time, in the caller's NCHW layout, the padded
  plane split by stride phase and flattened on one row pitch, so that each tap is one
  contiguous run over the whole plane's outputs (images whose padded plane has at most
  :data:`PLANE_MAX_VALUES` values);
* *channel blocks*: :data:`BLOCK` channels at a time, channels last in a per-block tile, so
  that tiny planes still give long vectorised loops (``m = 1``, stride 1, outputs narrower than
  :data:`BLOCKS_BELOW_WIDTH`, forward and grad-input);
* *rows*: one output row at a time per (sample, channel), the taps' multiply-adds
  running along the row; for images larger than the planes';
* *flat*: 3×3, zero padding, stride 1 with outputs the input's size or (forward) stride 2: each
  (sample, channel) plane read in place as one flat run per tap, the taps that wrap past a row's or
  the plane's edge multiplied by a mask of zeros, a plane whose result is not finite computed again
  tap by tap (forward, grad-input as the forward of the rotated kernel with multiplier 1, grad-weight);
  with stride 1, multiplier 1 and small planes (:func:`channel_block`), one run spans several channels'
  planes, each tap's weights and mask laid out along it once per block of channels.

Backward, the adjoints of the same sum:

* ``∂L/∂x̃[n, c, i·sH + u·dH, j·sW + v·dW] += Σ_k w[c·m + k, u, v] · g[n, c·m + k, i, j]``,
  then :func:`convscope.padding.fold` sends the border's gradient home;
* ``∂L/∂w[o, u, v] = Σ_n Σ_i Σ_j g[n, o, i, j] · x̃[n, c, i·sH + u·dH, j·sW + v·dW]``.

Zero padding is fused into the kernels (taps that fall in the border are skipped);
the other padding modes pad once (:func:`convscope.padding.pad`) and run the
kernels unpadded.  Every output reads only its own window, so NaN and Inf land
where torch puts them.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..padding import fold
from .kernels import fused_padding

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)

BLOCK = 16                 # channels per block of the channel-block kernels
BLOCKS_BELOW_WIDTH = 8     # channel blocks below 8 outputs wide, stride 1 (7²: planes 1.2–1.3× slower; 14²: 0.8×)
FLAT_STRIDE2_MAX_VALUES = 56 * 56   # the flat stride-2 forward up to 56² planes (112²: the planes 0.9× its time)
PLANE_MAX_VALUES = 1 << 17  # planes up to 131,072 scratch values per plane (112²: rows 1.1–1.5× slower)
CHANNEL_RUN_MAX_VALUES = 16 * 16   # several channels' planes per flat run up to 16² (7²–14²: 0.45–0.8×; 28²: 1.2×)
CHANNEL_RUN_VALUES = 4096          # outputs per channel run (its weights and masks: 10 values each)


def needs(spec, shape):
    """None if the path can compute this convolution, else what it needs and what it got."""
    if shape.in_per_group != 1:
        return (f"one input channel per group (groups == in_channels), got in_channels={shape.C} "
                f"and groups={shape.groups}")
    return None


def plane_geometry(spec, shape) -> tuple:
    """(Hn, Wn, Hq, Wq, Sr, Sc) of the planes layout: the padded rows and columns the outputs read,
    the rows and row pitch of one stride phase, and the largest tap offset in phase rows and columns."""
    (sH, sW), (dH, dW), (kH, kW) = spec.stride, spec.dilation, spec.kernel_size
    Hn = (shape.H_out - 1) * sH + dH * (kH - 1) + 1
    Wn = (shape.W_out - 1) * sW + dW * (kW - 1) + 1
    return Hn, Wn, -(-Hn // sH), -(-Wn // sW), dH * (kH - 1) // sH, dW * (kW - 1) // sW


def _plane_values(spec, shape) -> int:
    """Scratch values of one planes-layout plane: every phase of the padded plane and its gradient's
    shifted copy, with the vector slack."""
    _, _, Hq, Wq, Sr, Sc = plane_geometry(spec, shape)
    return spec.stride[0] * spec.stride[1] * (Hq + Sr + 1) * (Wq + Sc) + 64


def _flat(spec, shape, pass_) -> bool:
    """Whether the flat kernels serve ``pass_``: a 3×3 kernel, zero padding, stride 1 with the input's size
    out (grad_input: multiplier 1), or stride 2 (forward) on planes up to :data:`FLAT_STRIDE2_MAX_VALUES`."""
    if spec.kernel_size != (3, 3) or spec.padding_mode != "zeros":
        return False
    if spec.stride == (2, 2) and pass_ == "forward":
        # (the outputs of a row fit on its grid row; 14²–56²: 0.8× the planes' time, 112²: 1.1×)
        return shape.W_out <= shape.W and shape.H * shape.W <= FLAT_STRIDE2_MAX_VALUES
    return (spec.stride == (1, 1) and (shape.H_out, shape.W_out) == (shape.H, shape.W)
            and (pass_ != "grad_input" or shape.out_per_group == 1))


def channel_block(spec, shape, pass_="forward") -> int:
    """Channels per run of the flat kernels that run several channels' planes at once (stride 1,
    multiplier 1, planes up to :data:`CHANNEL_RUN_MAX_VALUES`), or 0 where each plane is its own run."""
    from ..threads import get_num_threads

    HW = shape.H * shape.W
    if (pass_ == "grad_weight" or spec.stride != (1, 1) or shape.out_per_group != 1 or HW > CHANNEL_RUN_MAX_VALUES
            or layout(spec, shape, pass_) != "flat"):
        return 0
    return max(1, min(CHANNEL_RUN_VALUES // HW, -(-shape.C // (2 * get_num_threads()))))   # two blocks per thread


def layout(spec, shape, pass_="forward") -> str:
    """``"flat"``, ``"blocks"``, ``"planes"`` or ``"rows"``: the kernels that run ``pass_``."""
    if _flat(spec, shape, pass_):
        return "flat"            # (7²–112², one thread: 0.5–0.8× the planes' time; 7²: 0.65× the blocks')
    if (shape.out_per_group == 1 and shape.W_out < BLOCKS_BELOW_WIDTH and spec.stride == (1, 1)
            and pass_ != "grad_weight"):
        return "blocks"          # (grad_weight at 7²: planes 0.9× the blocks' time)
    return "planes" if _plane_values(spec, shape) <= PLANE_MAX_VALUES else "rows"


_DESCRIPTIONS = {"blocks": "channel blocks, channels last", "rows": "rows",
                 "flat": "(sample, channel) planes read in place, one flat run per tap",
                 "planes": "(sample, channel) planes, stride phases flattened"}


def describe(spec, shape, pass_) -> str:
    per_block = channel_block(spec, shape, pass_)
    if per_block:
        return f"(sample, channel) planes read in place, one flat run per tap over {per_block} channels' planes"
    return _DESCRIPTIONS[layout(spec, shape, pass_)]


def _repeated(w, shape, spec):
    """(blocks, kH, kW, W_out·BLOCK): block b's weights w[b·BLOCK + cc, u, v] at every (j, cc) of an
    output row, zero past the last channel (the channel-block kernels' weights)."""
    C, Wo = shape.out_channels, shape.W_out
    kH, kW = spec.kernel_size
    nb = -(-C // BLOCK)
    wp = np.zeros((nb * BLOCK, kH, kW), dtype=w.dtype)
    wp[:C] = w.reshape(C, kH, kW)                                   # (C, 1, kH, kW) → (C, kH, kW)
    blocks = wp.reshape(nb, BLOCK, kH, kW).transpose(0, 2, 3, 1)[:, :, :, None, :]   # (nb, kH, kW, 1, BLOCK)
    out = np.empty((nb, kH, kW, Wo, BLOCK), dtype=w.dtype)
    np.copyto(out, blocks)                                          # repeated W_out times
    return out.reshape(nb, kH, kW, Wo * BLOCK)


def _args(spec, pt, pl):
    (sH, sW), (dH, dW) = spec.stride, spec.dilation
    return sH, sW, dH, dW, pt, pl


def _chunks(shape) -> int:
    """Parallel chunks of the planes kernels: one per thread."""
    from .kernels import _numba

    return _numba._threads()


def forward(x, w, b, spec, shape):
    from .kernels import _numba, depthwise as kernels

    N, Co, Ho, Wo = shape.N, shape.out_channels, shape.H_out, shape.W_out
    kH, kW = spec.kernel_size
    out = np.empty((N, Co, Ho, Wo), dtype=x.dtype)
    if N == 0:
        return out
    xs, pt, pl = fused_padding(x, spec)
    bias = np.zeros(Co, dtype=x.dtype) if b is None else np.ascontiguousarray(b)
    lay = layout(spec, shape)
    w3 = np.ascontiguousarray(w.reshape(Co, kH, kW))                          # (C·m, 1, kH, kW) → (C·m, kH, kW)
    per_block = channel_block(spec, shape) if lay == "flat" else 0
    if per_block:
        _numba.launch(kernels.forward_flat_channels, xs.reshape(-1), w3, bias, out, shape.H, shape.W,  # (N·C·H·W,)
                      *spec.dilation, pt, pl, True, per_block)
    elif lay == "flat":
        _numba.launch(kernels.forward_flat, xs.reshape(-1), w3, bias, out, shape.H, shape.W,  # (N·C·H·W,)
                      spec.stride[0], *spec.dilation, pt, pl, shape.out_per_group, True, _chunks(shape))
    elif lay == "blocks":
        _numba.launch(kernels.forward_blocks, xs, _repeated(w, shape, spec), bias, out, *_args(spec, pt, pl))
    elif lay == "planes":
        _numba.launch(kernels.forward_planes, xs, w3, bias, out, *_args(spec, pt, pl), shape.out_per_group,
                      plane_geometry(spec, shape), _chunks(shape))
    else:
        _numba.launch(kernels.forward, xs, w3, bias, out, *_args(spec, pt, pl), shape.out_per_group)
    return out


def backward(grad_out, x, w, spec, shape, mask):
    """(∂L/∂x or None, ∂L/∂w or None) as ``mask = (input, weight)`` asks."""
    from .kernels import _numba, depthwise as kernels

    want_dx, want_dw = mask
    N, C, Co = shape.N, shape.C, shape.out_channels
    kH, kW = spec.kernel_size
    dtype = grad_out.dtype
    g = np.ascontiguousarray(grad_out)
    zeros = spec.padding_mode == "zeros"
    (pt, pb), (pl, pr) = spec.padding
    dx = dw = None
    if want_dx:
        dx = np.empty((N, C, shape.H, shape.W), dtype=dtype)
        target = dx if zeros else np.empty((N, C, shape.H + pt + pb, shape.W + pl + pr), dtype=dtype)
        args = _args(spec, pt, pl) if zeros else _args(spec, 0, 0)
        w3 = np.ascontiguousarray(w.reshape(Co, kH, kW))                          # → (C·m, kH, kW)
        lay = layout(spec, shape, "grad_input")
        per_block = channel_block(spec, shape, "grad_input") if lay == "flat" else 0
        if N and lay == "flat":
            # the forward of grad_output with the kernel rotated by 180° and the padding mirrored
            w_rot = np.ascontiguousarray(w3[:, ::-1, ::-1])
            if per_block:
                _numba.launch(kernels.forward_flat_channels, g.reshape(-1), w_rot, np.zeros(C, dtype=dtype), dx,
                              shape.H, shape.W, *spec.dilation, pb, pr, False, per_block)    # (N·C·H·W,)
            else:
                _numba.launch(kernels.forward_flat, g.reshape(-1), w_rot, np.zeros(C, dtype=dtype), dx,  # (N·C·H·W,)
                              shape.H, shape.W, 1, *spec.dilation, pb, pr, 1, False, _chunks(shape))
        elif N and lay == "blocks":
            _numba.launch(kernels.grad_input_blocks, g, _repeated(w, shape, spec), target, *args)
        elif N and lay == "planes" and np.isfinite(w3).all():
            # (a non-finite weight takes the rows: the planes' unused columns would give it zeros to meet)
            _numba.launch(kernels.grad_input_planes, g, w3, target, *args, shape.out_per_group,
                          plane_geometry(spec, shape), _chunks(shape))
        elif N:
            _numba.launch(kernels.grad_input, g, w3, target, *args, shape.out_per_group)
        if not zeros:
            dx = fold(target, spec, (shape.H, shape.W)) if N else dx
    if want_dw:
        xs, ptx, plx = fused_padding(x, spec)
        if N == 0:
            dw = np.zeros((Co, 1, kH, kW), dtype=dtype)
        elif layout(spec, shape, "grad_weight") == "flat":
            dw = np.empty((Co, kH, kW), dtype=dtype)
            _numba.launch(kernels.grad_weight_flat, g.reshape(-1), xs.reshape(-1), dw, N, C,  # flat (N·C·H·W,)
                          shape.H, shape.W, *spec.dilation, ptx, plx, shape.out_per_group, _chunks(shape))
            dw = dw.reshape(Co, 1, kH, kW)
        elif layout(spec, shape, "grad_weight") == "planes":
            dw = np.empty((Co, kH, kW), dtype=dtype)
            _numba.launch(kernels.grad_weight_planes, g, xs, dw, *_args(spec, ptx, plx), shape.out_per_group,
                          plane_geometry(spec, shape), _chunks(shape))
            dw = dw.reshape(Co, 1, kH, kW)
        elif layout(spec, shape, "grad_weight") == "blocks":
            parts = np.empty((N, kH, kW, Co), dtype=dtype)
            _numba.launch(kernels.grad_weight_blocks, g, xs, parts, *_args(spec, ptx, plx))
            dw = np.ascontiguousarray(parts.sum(axis=0).transpose(2, 0, 1))      # (kH, kW, C) → (C, kH, kW)
            dw = dw.reshape(Co, 1, kH, kW)
        else:
            dw = np.empty((Co, kH, kW), dtype=dtype)
            _numba.launch(kernels.grad_weight, g, xs, dw, *_args(spec, ptx, plx), shape.out_per_group)
            dw = dw.reshape(Co, 1, kH, kW)
    return dx, dw


def workspace(pass_, spec, shape, itemsize):
    """Scratch bytes (the result included): the result, the padded copy and its gradient (modes other
    than zeros), the weight's copies; for planes, each thread's plane scratch; for channel blocks,
    each thread's tile and rows, the weights repeated along a row and the samples' shares of the
    weight gradient."""
    from ..threads import get_num_threads

    (pt, pb), (pl, pr) = spec.padding
    kH, kW = spec.kernel_size
    N, C, Co = shape.N, shape.C, shape.out_channels
    padded = 0 if spec.padding_mode == "zeros" else N * C * (shape.H + pt + pb) * (shape.W + pl + pr)
    result = {"forward": N * Co * shape.H_out * shape.W_out, "grad_input": N * C * shape.H * shape.W,
              "grad_weight": Co * kH * kW}[pass_]
    total = result + padded * (2 if pass_ == "grad_input" else 1) + 2 * Co * kH * kW
    lay = layout(spec, shape, pass_)
    if lay == "flat":
        total += 6 * shape.H * shape.W + (Co * kH * kW + C if pass_ == "grad_input" else 0)   # masks; rotated kernel, zero bias
        total += get_num_threads() * shape.H * shape.W if spec.stride != (1, 1) else 0       # each thread's grid row
        total += get_num_threads() * 10 * channel_block(spec, shape, pass_) * shape.H * shape.W   # a run's weights, biases
    elif lay == "planes":
        total += get_num_threads() * 2 * _plane_values(spec, shape)
    elif lay == "blocks":
        rows = (shape.H_out - 1) * spec.stride[0] + spec.dilation[0] * (kH - 1) + 1
        cols = (shape.W_out - 1) * spec.stride[1] + spec.dilation[1] * (kW - 1) + 1 + spec.stride[1]
        per_thread = BLOCK * (rows * cols + (kH * kW + 2) * shape.W_out)
        total += get_num_threads() * per_thread + -(-Co // BLOCK) * BLOCK * kH * kW * shape.W_out
        if pass_ == "grad_weight":
            total += 2 * N * Co * kH * kW
    return total * itemsize
