"""A 3-d convolution as one 2-d convolution: the depth taps stacked into channels.

A tap ``(t, u, v)`` of a 3-d kernel reads depth plane ``i·s_D + t·d_D`` of the (depth-)padded
input for output plane ``i``.  Copying, for every output plane, the ``k_D`` planes it reads
side by side as channels::

    X[(n, i), (c, t), h, w] = x̃_D[n, c, i·s_D + t·d_D, h, w]         (N·D_out, C·k_D, H, W)
    W2[o, (c, t), u, v]     = w[o, c, t, u, v]                         (C_out, C/G·k_D, kH, kW)

turns the sum over ``(c, t, u, v)`` of the 3-d convolution into the sum over ``((c, t), u, v)``
of the 2-d convolution of ``X`` with ``W2`` (the stride, padding, dilation, groups and padding
mode of the height and width axes), whose output ``(N·D_out, C_out, H_out, W_out)`` is the 3-d
output with its depth axis moved.  ``x̃_D`` is padded along depth only (reflect, replicate and
circular padding act on each axis on its own, so the 2-d convolution pads height and width).
The channel order ``c·k_D + t`` keeps every group's channels together, so groups carry over.

Backward (the adjoints of the stacking and of the 2-d convolution)
------------------------------------------------------------------
* ``∂L/∂W2`` is the 2-d convolution's weight gradient of ``X`` with grad_output moved to
  ``(N·D_out, C_out, H_out, W_out)``; reshaped it is ``∂L/∂w``;
* ``∂L/∂X`` is the 2-d convolution's input gradient, and every tap's block of it is added back
  onto the depth planes it was copied from (the adjoint of the stacking), then
  :func:`convscope.padding.fold` sends the depth border's gradient where the border came from.

The 2-d passes run through :func:`convscope.algorithms.run_forward` and
:func:`convscope.algorithms.run_backward`, which place NaN and ±Inf as torch does (the depth
padding is made of real zeros in ``X``) and keep the 2-d scratch under what is left of the
workspace limit.  Output planes are stacked a block at a time, as many as half the workspace
limit holds.  On a 2-d convolution there is nothing to stack and the 2-d pass runs as it is.
This module runs the local 2-d paths (im2col + GEMM, 1×1 products, depthwise);
:mod:`convscope.algorithms.ndwinograd` runs Winograd on the same stacking.
"""
from __future__ import annotations

import numpy as np

from ..padding import fold, pad
from ..spec import ConvShape, make_spec
from ..workspace import get_workspace_limit, workspace_limit

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)
DIMS = (2, 3)       # the numbers of spatial dimensions it computes
PLANNED_DIMS = (3,)  # where it is chosen automatically; on a 2-d convolution it is the 2-d pass itself


def needs(spec, shape):
    """None: the stacking serves every 2-d and 3-d convolution."""
    return None


def inner_path(spec, shape) -> str:
    """The local 2-d path the stacked convolution runs on: 1×1 products, depthwise or im2col + GEMM."""
    spec2, shape2 = stacked(spec, shape)
    if spec2.kernel_size == (1, 1):
        return "pointwise"
    return "depthwise" if shape2.groups > 1 and shape2.in_per_group == 1 else "gemm"


# --------------------------------------------------------------------------- the stacking


def _padding_arg(spec, axes):
    return spec.padding_arg if isinstance(spec.padding_arg, str) else tuple(spec.padding_arg[a] for a in axes)


def stacked(spec, shape, planes=None):
    """(spec, shape) of the 2-d convolution of the stacked input for ``planes`` output planes
    (default all); a 2-d convolution is its own."""
    if spec.ndim == 2:
        return spec, shape
    spec2 = make_spec(spec.kernel_size[1:], spec.stride[1:], _padding_arg(spec, (1, 2)), spec.dilation[1:],
                      spec.groups, spec.padding_mode)
    planes = shape.out_spatial[0] if planes is None else planes
    kD = spec.kernel_size[0]
    (_, H, W), (_, Ho, Wo) = shape.spatial, shape.out_spatial
    return spec2, ConvShape(shape.N * planes, shape.C * kD, H, W, shape.out_channels, Ho, Wo, shape.groups)


def depth_spec(spec):
    """The 3-d spec of the depth padding alone (kernel, stride and dilation 1 across)."""
    padding = spec.padding_arg if isinstance(spec.padding_arg, str) else (spec.padding_arg[0], 0, 0)
    return make_spec((spec.kernel_size[0], 1, 1), (spec.stride[0], 1, 1), padding, (spec.dilation[0], 1, 1),
                     1, spec.padding_mode, ndim=3)


def _tap_planes(spec, t, a, b):
    """The depth planes of the padded input that tap ``t`` reads for output planes ``a:b``."""
    s, d = spec.stride[0], spec.dilation[0]
    return slice(a * s + t * d, (b - 1) * s + t * d + 1, s)


def _stack(xp, spec, shape, a, b):
    """X (N·(b−a), C·k_D, H, W) of output planes ``a:b`` from the depth-padded input (N, C, Dp, H, W)."""
    N, C, kD = shape.N, shape.C, spec.kernel_size[0]
    H, W = shape.spatial[1:]
    X = np.empty((N, b - a, C, kD, H, W), dtype=xp.dtype)
    for t in range(kD):
        X[:, :, :, t] = xp[:, :, _tap_planes(spec, t, a, b)].transpose(0, 2, 1, 3, 4)   # (N, C, b−a, H, W) → (N, b−a, C, H, W)
    return X.reshape(N * (b - a), C * kD, H, W)


def _unstack_add(dxp, dX, spec, shape, a, b):
    """Adjoint of :func:`_stack`: add ∂L/∂X (N·(b−a), C·k_D, H, W) onto ∂L/∂x̃_D (N, C, Dp, H, W)."""
    N, C, kD = shape.N, shape.C, spec.kernel_size[0]
    d = dX.reshape((N, b - a, C, kD) + dX.shape[-2:])                # (N, b−a, C, k_D, H, W)
    for t in range(kD):
        dxp[:, :, _tap_planes(spec, t, a, b)] += d[:, :, :, t].transpose(0, 2, 1, 3, 4)   # → (N, C, b−a, H, W)


def _moved(a, planes):
    """(N, C_out, D, H_out, W_out) planes ``planes`` → (N·len, C_out, H_out, W_out), a copy."""
    block = a[:, :, planes]                                           # (N, C_out, b−a, H_out, W_out)
    N, O, P = block.shape[:3]
    return np.ascontiguousarray(block.transpose(0, 2, 1, 3, 4)).reshape((N * P, O) + block.shape[3:])


def _weight2(w, shape):
    return w.reshape((shape.out_channels, -1) + w.shape[3:])         # (C_out, Cg, k_D, kH, kW) → (C_out, Cg·k_D, kH, kW)


# --------------------------------------------------------------------------- blocks under the limit


def _plane_bytes(pass_, spec, shape, itemsize):
    """(fixed, per output plane): this module's own scratch bytes of a pass (the padded input or its
    gradient; per plane the stacked input or its gradient and the moved output or grad_output)."""
    N, C, O = shape.N, shape.C, shape.out_channels
    (_, H, W), (_, Ho, Wo) = shape.spatial, shape.out_spatial
    padded = N * C * spec.padded_size(shape.spatial)[0] * H * W
    fixed = 2 * padded if pass_ == "grad_input" else padded           # grad_input: ∂x̃_D and fold's copy
    return fixed * itemsize, N * (C * spec.kernel_size[0] * H * W + O * Ho * Wo) * itemsize


BLOCK_OUTPUTS = 2048    # output positions per block of planes: enough for the 2-d pass's products, few enough
                        # that its scratch stays in cache


def _blocks(pass_, spec, shape, itemsize):
    """[(a, b)]: blocks of output planes of at least ``BLOCK_OUTPUTS`` output positions (batch and
    plane) whose own scratch fits half the limit (one plane at least), and the workspace limit left
    for the 2-d passes."""
    limit = get_workspace_limit()
    fixed, per_plane = _plane_bytes(pass_, spec, shape, itemsize)
    D_out, (Ho, Wo) = shape.out_spatial[0], shape.out_spatial[1:]
    wanted = -(-BLOCK_OUTPUTS // max(shape.N * Ho * Wo, 1))
    step = int(max(1, min(D_out, wanted, (limit // 2 - fixed) // max(per_plane, 1))))
    left = max(0, limit - fixed - step * per_plane)
    return [(a, min(D_out, a + step)) for a in range(0, D_out, step)], left


def workspace(pass_, spec, shape, itemsize, inner=None) -> int:
    """Scratch bytes of a pass: its own (:func:`_plane_bytes`, one block) and the 2-d pass's estimate
    for a block, up to the limit left to it."""
    from . import ALGORITHMS

    inner = inner_path(spec, shape) if inner is None else inner
    estimate = getattr(ALGORITHMS[inner], "workspace", None)
    if spec.ndim == 2:
        return 0 if estimate is None else estimate(pass_, spec, shape, itemsize)
    blocks, left = _blocks(pass_, spec, shape, itemsize)
    a, b = blocks[0]
    fixed, per_plane = _plane_bytes(pass_, spec, shape, itemsize)
    own = fixed + (b - a) * per_plane
    return own + (0 if estimate is None else min(left, estimate(pass_, *stacked(spec, shape, b - a), itemsize)))


# --------------------------------------------------------------------------- the passes


def forward(x, w, b, spec, shape, inner=None):
    """out (N, C_out, *out_spatial)."""
    from . import run_forward

    inner = inner_path(spec, shape) if inner is None else inner
    if spec.ndim == 2:
        return run_forward(inner, x, w, b, spec, shape)
    N, O = shape.N, shape.out_channels
    xp = pad(x, depth_spec(spec))                                     # (N, C, Dp, H, W)
    w2 = _weight2(w, shape)
    out = np.empty((N, O) + tuple(shape.out_spatial), dtype=x.dtype)
    blocks, left = _blocks("forward", spec, shape, x.dtype.itemsize)
    for a, c in blocks:
        spec2, shape2 = stacked(spec, shape, c - a)
        with workspace_limit(left):
            y = run_forward(inner, _stack(xp, spec, shape, a, c), w2, b, spec2, shape2)   # (N·(c−a), O, Ho, Wo)
        out[:, :, a:c] = y.reshape((N, c - a, O) + y.shape[2:]).transpose(0, 2, 1, 3, 4)
    return out


def grad_input(grad_out, w, spec, shape, inner=None):
    """∂L/∂x (N, C, *spatial): the 2-d input gradient of each block, added back onto the planes it
    was stacked from, then the depth padding's adjoint."""
    from . import run_backward

    inner = inner_path(spec, shape) if inner is None else inner
    if spec.ndim == 2:
        return run_backward((inner, inner), grad_out, None, w, spec, shape, (True, False))[0]
    lead = depth_spec(spec)
    dxp = np.zeros((shape.N, shape.C) + lead.padded_size(shape.spatial), dtype=grad_out.dtype)
    w2 = _weight2(w, shape)
    blocks, left = _blocks("grad_input", spec, shape, grad_out.dtype.itemsize)
    for a, b in blocks:
        spec2, shape2 = stacked(spec, shape, b - a)
        with workspace_limit(left):
            dX = run_backward((inner, inner), _moved(grad_out, slice(a, b)), None, w2, spec2, shape2,
                              (True, False))[0]                       # (N·(b−a), C·k_D, H, W)
        _unstack_add(dxp, dX, spec, shape, a, b)
    return fold(dxp, lead, tuple(shape.spatial))


def grad_weight(grad_out, x, spec, shape, inner=None):
    """∂L/∂w (C_out, C/groups, *kernel): Σ over blocks of the 2-d weight gradients."""
    from . import run_backward

    inner = inner_path(spec, shape) if inner is None else inner
    if spec.ndim == 2:
        return run_backward((inner, inner), grad_out, x, None, spec, shape, (False, True))[1]
    xp = pad(x, depth_spec(spec))                                     # (N, C, Dp, H, W)
    dw = None
    blocks, left = _blocks("grad_weight", spec, shape, grad_out.dtype.itemsize)
    for a, b in blocks:
        spec2, shape2 = stacked(spec, shape, b - a)
        with workspace_limit(left):
            part = run_backward((inner, inner), _moved(grad_out, slice(a, b)), _stack(xp, spec, shape, a, b),
                                None, spec2, shape2, (False, True))[1]   # (C_out, Cg·k_D, kH, kW)
        dw = part if dw is None else dw + part
    if dw is None:                                                    # no output planes: a batch of 0
        dw = np.zeros((shape.out_channels, shape.in_per_group * spec.kernel_size[0]) + spec.kernel_size[1:],
                      dtype=grad_out.dtype)
    return dw.reshape((shape.out_channels, shape.in_per_group) + tuple(spec.kernel_size))


def describe(spec, shape, pass_, inner=None) -> str:
    """The 2-d path a pass runs on, for :func:`convscope.plan`."""
    inner = inner_path(spec, shape) if inner is None else inner
    if spec.ndim == 2:
        return f"the 2-d pass on {inner}"
    _, shape2 = stacked(spec, shape)
    return (f"depth taps stacked into channels: one 2-d convolution of ({shape2.N}, {shape2.C}, "
            f"{shape2.H}, {shape2.W}) on {inner}")
