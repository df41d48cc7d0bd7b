"""The functional API: ``conv2d``, ``conv2d_backward``, ``conv2d_input``, ``conv2d_weight``.

Each function validates everything first (:mod:`convscope.spec`), converts to
the batched layout and compute dtype, runs one implementation from
:mod:`convscope.algorithms`, and returns C-contiguous arrays of the caller's
dtype and rank.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import algorithms, planner
from .algorithms import gather
from .algorithms.kernels import channel_bias
from .spec import (
    ConvCall,
    ConvShape,
    ConvTransposeCall,
    bind,
    bind_transpose,
    check_output_padding,
    check_transposed_padding,
    check_memory,
    check_output_mask,
    check_weight_shape,
    empty_output_message,
    empty_transposed_output_message,
    lift,
    make_spec,
    positive_tuple,
)


class Conv2dGrads(NamedTuple):
    """Gradients of ``sum(conv2d(input, weight, bias) * grad_output)`` (None where not asked for)."""

    input: np.ndarray
    weight: np.ndarray
    bias: np.ndarray


def _batched(a: np.ndarray, shape4: tuple, dtype: np.dtype) -> np.ndarray:
    """A read-only-by-convention (N, C, H, W) view or copy of ``a`` in ``dtype``, C-contiguous."""
    return np.ascontiguousarray(a.reshape(shape4), dtype=dtype)


def _result(a: np.ndarray | None, dtype: np.dtype, unbatched: bool) -> np.ndarray | None:
    if a is None:
        return None
    if unbatched:
        a = a[0]
    return np.ascontiguousarray(a, dtype=dtype)


def _spec_from_weight(weight_shape, stride, padding, dilation, groups, padding_mode, ndim: int = 2):
    check_weight_shape(weight_shape, ndim=ndim)
    return make_spec(tuple(weight_shape[2:]), stride, padding, dilation, groups, padding_mode, ndim=ndim)


def _bias_grad(gy: np.ndarray) -> np.ndarray:
    """Σ over batch and positions of a batched grad_output: (N, C_out, *out_spatial) → (C_out,).

    As a matrix-vector product with ones, which runs along the contiguous positions
    (several times faster than ``sum(axis=(0, 2, 3))`` on small images).
    """
    N, C = gy.shape[:2]
    L = math.prod(gy.shape[2:])
    ones = np.ones(L, dtype=gy.dtype)
    if N == 1:
        return gy.reshape(C, L) @ ones                 # (C_out, L) @ (L,) → (C_out,)
    return (gy.reshape(N, C, L) @ ones).sum(axis=0)   # (N, C_out, L) @ (L,) → (N, C_out)


def _check_memory(spec, shape, cdt, results, passes) -> None:
    """Refuse, before any array is made, a call whose results and scratch cannot fit in memory."""
    check_memory([(name, shape_, cdt) for name, shape_ in results],
                 algorithms.workspace_need(passes, spec, shape, cdt.itemsize))


def _squeeze(a: np.ndarray | None) -> np.ndarray | None:
    """A lifted 1-d result back to 1-d: (…, 1, L) → (…, L)."""
    return None if a is None else a.reshape(a.shape[:-2] + a.shape[-1:])


def _run_forward(call: ConvCall, algorithm) -> np.ndarray:
    """The output of a bound call (1-d runs as 2-d with height 1, as torch does)."""
    if call.ndim == 1:
        return _squeeze(_run_forward(lift(call), algorithm))
    spec, shape, cdt = call.spec, call.shape, call.compute_dtype
    name = planner.decide(spec, shape, algorithm, dtype=cdt).forward.algorithm
    _check_memory(spec, shape, cdt, [("output", call.output_shape)], [(name, "forward")])
    run = algorithms.run_forward if call.ndim == 2 else algorithms.run_forward_nd
    out = run(name, _batched(call.input, call.input_shape, cdt), np.ascontiguousarray(call.weight, dtype=cdt),
              None if call.bias is None else np.ascontiguousarray(call.bias, dtype=cdt), spec, shape)
    return _result(out, call.dtype, not call.batched)


def _run_backward(call: ConvCall, algorithm, mask) -> tuple:
    """(∂input, ∂weight, ∂bias) of a bound call, None where ``mask`` says no."""
    dx, dw, db = _compute_backward(call, algorithm, mask)
    return (_result(dx, call.dtype, not call.batched), _result(dw, call.dtype, False),
            _result(db, call.dtype, False))


def _compute_backward(call: ConvCall, algorithm, mask) -> tuple:
    """:func:`_run_backward`'s gradients in the compute dtype, batched."""
    if call.ndim == 1:
        dx, dw, db = _compute_backward(lift(call), algorithm, mask)
        return _squeeze(dx), _squeeze(dw), db
    spec, shape, cdt = call.spec, call.shape, call.compute_dtype
    plan = planner.decide(spec, shape, algorithm, dtype=cdt)
    grads = [("grad_input", call.input_shape), ("grad_weight", call.weight_shape),
             ("grad_bias", (shape.out_channels,))]
    _check_memory(spec, shape, cdt, [g for g, want in zip(grads, mask) if want],
                  [(getattr(plan, p).algorithm, p) for p, want in zip(("grad_input", "grad_weight"), mask) if want])
    x4 = _batched(call.input, call.input_shape, cdt) if mask[1] else None
    w4 = np.ascontiguousarray(call.weight, dtype=cdt) if mask[0] else None
    gy4 = _batched(call.grad_output, call.output_shape, cdt)
    run = algorithms.run_backward if call.ndim == 2 else algorithms.run_backward_nd
    dx, dw = run((plan.grad_input.algorithm, plan.grad_weight.algorithm), gy4, x4, w4, spec, shape, mask[:2])
    db = _bias_grad(gy4) if mask[2] else None
    return dx, dw, db


def _conv(ndim, input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm):
    planner.check_algorithm(algorithm)
    call = bind(ndim, input=input, weight=weight, bias=bias, stride=stride, padding=padding,
                dilation=dilation, groups=groups, padding_mode=padding_mode, order=("input", "weight", "bias"))
    return _run_forward(call, algorithm)


def _backward(ndim, grad_output, input, weight, stride, padding, dilation, groups, padding_mode, algorithm,
              output_mask) -> tuple:
    planner.check_algorithm(algorithm)
    mask = check_output_mask(output_mask)
    call = bind(ndim, grad_output=grad_output, input=input, weight=weight, stride=stride, padding=padding,
                dilation=dilation, groups=groups, padding_mode=padding_mode,
                order=("grad_output", "input", "weight"))
    return _run_backward(call, algorithm, mask)


def _input_grad(ndim, input_size, weight, grad_output, stride, padding, dilation, groups, algorithm):
    planner.check_algorithm(algorithm)
    call = bind(ndim, input_size=input_size, weight=weight, grad_output=grad_output, stride=stride,
                padding=padding, dilation=dilation, groups=groups, order=("weight", "grad_output"))
    return _run_backward(call, algorithm, (True, False, False))[0]


def _weight_grad(ndim, input, weight_size, grad_output, stride, padding, dilation, groups, algorithm):
    planner.check_algorithm(algorithm)
    call = bind(ndim, input=input, weight_size=weight_size, grad_output=grad_output, stride=stride,
                padding=padding, dilation=dilation, groups=groups, order=("input", "grad_output"))
    return _run_backward(call, algorithm, (False, True, False))[1]


def _output_size(ndim, input_size, name, kernel_size, stride, padding, dilation) -> tuple:
    size = positive_tuple(input_size, name, ndim)
    spec = make_spec(kernel_size, stride, padding, dilation, ndim=ndim)
    message = empty_output_message(spec, size)
    if message:
        raise ValueError(message)
    return spec.output_size(size)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", algorithm=None) -> np.ndarray:
    r"""2-D cross-correlation, exactly as ``torch.nn.functional.conv2d`` (plus ``padding_mode``).

    .. math::

        \text{out}(n, o, i, j) = \text{bias}(o) + \sum_{c=0}^{C/g-1} \sum_{u=0}^{k_H-1}
        \sum_{v=0}^{k_W-1} \tilde{x}(n, \lfloor o / (C_{out}/g) \rfloor \cdot C/g + c,\;
        i s_H + u d_H,\; j s_W + v d_W)\, w(o, c, u, v)

    where :math:`\tilde{x}` is the input padded as ``padding`` and ``padding_mode`` say.

    Parameters
    ----------
    input : array (N, C, H, W) or (C, H, W); float16, float32 or float64 (or a torch tensor)
    weight : array (C_out, C/groups, kH, kW), the same dtype
    bias : array (C_out,) or None
    stride, dilation : int or (int, int)
    padding : int, (int, int), ``'valid'`` or ``'same'``
    groups : int dividing C and C_out
    padding_mode : ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``
    algorithm : None (automatic: :mod:`convscope.planner` picks per pass; :func:`convscope.plan`
        shows the choice), or one of ``'gemm'``, ``'pointwise'``, ``'depthwise'``,
        ``'winograd'``, ``'fft'``, ``'ndgemm'`` (the N-d im2col), ``'reference'`` (the readable
        loops) to force that implementation; ValueError if it cannot compute this convolution.
        Rounding error: gemm, pointwise, depthwise and the reference round each output from
        the products it sums (error relative to what it read, as torch's CPU kernels); Winograd
        mixes the values of a 4×4 tile and FFT those of a whole image, so their error is relative
        to the call's largest values, up to about 1e-7 × max |output| in float32 (1e-16 in
        float64) even at outputs that never read the largest value.
        :func:`convscope.set_conv_precision` ``("highest")`` keeps the automatic choice
        on the local paths; ``algorithm=`` still forces.  NaN and ±Inf land where torch puts
        them on every path: Winograd and FFT run only on finite input, weight and bias, and a
        result of theirs that is not finite (a value that overflows inside a transform) is
        recomputed on gemm (depthwise for depthwise layers).  A non-finite weight tap that reads
        a zero-padding cell gives NaN (0·Inf), as torch's native kernels do.

    Shape
    -----
    output (N, C_out, H_out, W_out), or (C_out, H_out, W_out) for unbatched input, with
    ``H_out = ⌊(H + pad_top + pad_bottom − dH·(kH−1) − 1)/sH⌋ + 1`` and likewise W_out.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> x = np.ones((1, 1, 4, 4), dtype=np.float32)
    >>> w = np.ones((1, 1, 2, 2), dtype=np.float32)
    >>> convscope.conv2d(x, w, stride=3, padding=1)[0, 0]
    array([[1., 2.],
           [2., 4.]], dtype=float32)
    """
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm)


def conv2d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros", algorithm=None, output_mask=(True, True, True)) -> Conv2dGrads:
    """Gradients of ``sum(conv2d(input, weight, bias, ...) * grad_output)``.

    Returns a :class:`Conv2dGrads` ``(input, weight, bias)``: ∂/∂input (input's shape),
    ∂/∂weight (weight's shape) and ∂/∂bias ``(C_out,)``, which is ``grad_output`` summed
    over batch and positions whether or not the forward had a bias.  The parameters
    mean what they mean in :func:`conv2d`.

    ``output_mask`` = (input, weight, bias) says which gradients to compute, as in torch's
    ``convolution_backward``; the others are returned as None and cost nothing.  When
    ∂/∂input and ∂/∂weight run on the same implementation they share work (the gemm
    paths' transposed grad_output matrix).

    Examples
    --------
    >>> import numpy as np, convscope
    >>> A = np.array([[5, 27, 9, -15, 12], [2, 4, -2, -7, 8], [-8, 16, 5, 23, -6],
    ...               [-17, 7, 9, -14, 3], [10, -5, 13, 6, -11]], dtype=np.float32)
    >>> B = np.array([[8, 4], [2, 6]], dtype=np.float32)
    >>> g = convscope.conv2d_backward(np.ones((1, 2, 2), np.float32), A[None], B[None, None], stride=2)
    >>> g.weight[0, 0]
    array([[ 11.,  51.],
           [ -8., -10.]], dtype=float32)
    """
    return Conv2dGrads(*_backward(2, grad_output, input, weight, stride, padding, dilation, groups,
                                  padding_mode, algorithm, output_mask))


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 algorithm=None) -> np.ndarray:
    """Gradient of conv2d w.r.t. its input, as ``torch.nn.grad.conv2d_input``.

    ``input_size`` is the input's shape, (N, C, H, W) or (C, H, W): with a stride
    above 1 several input sizes give the same output size, so it cannot be
    recovered from ``grad_output``.  ``grad_output`` has the output's shape.
    """
    return _input_grad(2, input_size, weight, grad_output, stride, padding, dilation, groups, algorithm)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  algorithm=None) -> np.ndarray:
    """Gradient of conv2d w.r.t. its weight, as ``torch.nn.grad.conv2d_weight``.

    ``weight_size`` is the weight's shape ``(C_out, C/groups, kH, kW)``.
    """
    return _weight_grad(2, input, weight_size, grad_output, stride, padding, dilation, groups, algorithm)


def conv2d_output_size(input_hw, kernel_size, stride=1, padding=0, dilation=1) -> tuple[int, int]:
    """``(H_out, W_out)`` for an input of ``input_hw`` (int or (H, W)).

    ``padding`` may be an int, a pair, ``'valid'`` or ``'same'``.  Raises ValueError,
    with the formula filled in, when the output would be empty.

    >>> conv2d_output_size((32, 35), (3, 2), stride=2)
    (15, 17)
    """
    return _output_size(2, input_hw, "input_hw", kernel_size, stride, padding, dilation)


# --------------------------------------------------------------------------- 1-d and 3-d


class ConvGrads(NamedTuple):
    """Gradients of ``sum(conv1d(...) * grad_output)`` or ``sum(conv3d(...) * grad_output)``
    (None where not asked for)."""

    input: np.ndarray
    weight: np.ndarray
    bias: np.ndarray


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", algorithm=None) -> np.ndarray:
    r"""1-D cross-correlation, exactly as ``torch.nn.functional.conv1d`` (plus ``padding_mode``).

    .. math::

        \text{out}(n, o, i) = \text{bias}(o) + \sum_{c=0}^{C/g-1} \sum_{u=0}^{k-1}
        \tilde{x}(n, \lfloor o / (C_{out}/g) \rfloor \cdot C/g + c,\; i s + u d)\, w(o, c, u)

    It runs as the 2-d convolution of ``(N, C, 1, L)`` (as torch does), so every 2-d
    implementation serves it; the parameters mean what they mean in :func:`conv2d`, with one
    value per axis (an int or a 1-tuple).

    Shape
    -----
    input (N, C, L) or (C, L), weight (C_out, C/groups, k), output (N, C_out, L_out) or
    (C_out, L_out) with ``L_out = ⌊(L + pad_left + pad_right − d·(k−1) − 1)/s⌋ + 1``.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> convscope.conv1d(np.arange(5.0)[None, None], np.ones((1, 1, 2)), padding=1)[0, 0]
    array([0., 1., 3., 5., 7., 4.])
    """
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", algorithm=None) -> np.ndarray:
    r"""3-D cross-correlation, exactly as ``torch.nn.functional.conv3d`` (plus ``padding_mode``).

    .. math::

        \text{out}(n, o, i, j, l) = \text{bias}(o) + \sum_{c} \sum_{t, u, v}
        \tilde{x}(n, g(o) \cdot C/g + c,\; i s_D + t d_D,\; j s_H + u d_H,\; l s_W + v d_W)\, w(o, c, t, u, v)

    The parameters mean what they mean in :func:`conv2d`, with three values per tuple
    ``(D, H, W)``.  ``algorithm``: None (``'ndgemm'``, vol2col + GEMM), ``'ndgemm'`` or
    ``'reference'``; the 2-d-only implementations raise ValueError.

    Shape
    -----
    input (N, C, D, H, W) or (C, D, H, W), weight (C_out, C/groups, kD, kH, kW), output
    (N, C_out, D_out, H_out, W_out), each size by the formula of :func:`conv2d`.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> convscope.conv3d(np.ones((1, 1, 3, 3, 3)), np.ones((1, 1, 2, 2, 2))).shape
    (1, 1, 2, 2, 2)
    """
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm)


def conv1d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros", algorithm=None, output_mask=(True, True, True)) -> ConvGrads:
    """Gradients of ``sum(conv1d(input, weight, bias, ...) * grad_output)``, as :func:`conv2d_backward`."""
    return ConvGrads(*_backward(1, grad_output, input, weight, stride, padding, dilation, groups,
                                padding_mode, algorithm, output_mask))


def conv3d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros", algorithm=None, output_mask=(True, True, True)) -> ConvGrads:
    """Gradients of ``sum(conv3d(input, weight, bias, ...) * grad_output)``, as :func:`conv2d_backward`."""
    return ConvGrads(*_backward(3, grad_output, input, weight, stride, padding, dilation, groups,
                                padding_mode, algorithm, output_mask))


def conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 algorithm=None) -> np.ndarray:
    """Gradient of conv1d w.r.t. its input, as ``torch.nn.grad.conv1d_input``
    (``input_size``: (N, C, L) or (C, L))."""
    return _input_grad(1, input_size, weight, grad_output, stride, padding, dilation, groups, algorithm)


def conv3d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 algorithm=None) -> np.ndarray:
    """Gradient of conv3d w.r.t. its input, as ``torch.nn.grad.conv3d_input``
    (``input_size``: (N, C, D, H, W) or (C, D, H, W))."""
    return _input_grad(3, input_size, weight, grad_output, stride, padding, dilation, groups, algorithm)


def conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  algorithm=None) -> np.ndarray:
    """Gradient of conv1d w.r.t. its weight, as ``torch.nn.grad.conv1d_weight``
    (``weight_size``: (C_out, C/groups, k))."""
    return _weight_grad(1, input, weight_size, grad_output, stride, padding, dilation, groups, algorithm)


def conv3d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  algorithm=None) -> np.ndarray:
    """Gradient of conv3d w.r.t. its weight, as ``torch.nn.grad.conv3d_weight``
    (``weight_size``: (C_out, C/groups, kD, kH, kW))."""
    return _weight_grad(3, input, weight_size, grad_output, stride, padding, dilation, groups, algorithm)


def conv1d_output_size(input_size, kernel_size, stride=1, padding=0, dilation=1) -> tuple[int]:
    """``(L_out,)`` for an input of length ``input_size`` (int or (L,)), as :func:`conv2d_output_size`.

    >>> conv1d_output_size(100, 5, stride=2, padding=2)
    (50,)
    """
    return _output_size(1, input_size, "input_size", kernel_size, stride, padding, dilation)


def conv3d_output_size(input_size, kernel_size, stride=1, padding=0, dilation=1) -> tuple[int, int, int]:
    """``(D_out, H_out, W_out)`` for an input of ``input_size`` (int or (D, H, W)), as
    :func:`conv2d_output_size`.

    >>> conv3d_output_size((16, 112, 112), 3, padding=1, stride=(1, 2, 2))
    (16, 56, 56)
    """
    return _output_size(3, input_size, "input_size", kernel_size, stride, padding, dilation)


# --------------------------------------------------------------------------- transposed convolutions
#
# A transposed convolution is the adjoint of a convolution.  Let C be the convolution with the same stride s,
# padding p, dilation d and groups g whose weight is the transposed weight w, of shape (C_in, C_out/g, k…),
# read as a convolution weight (C's out_channels are C_in, its in_channels/g are C_out/g).  Per axis, and
# writing g(c) for the group of channel c,
#
#     C(z)[n, c, i] = Σ_{o, u} w[c, o, u] · z[n, g(c)·C_out/g + o, i·s + u·d − p].
#
# The transposed convolution scatters every input element through the same taps:
#
#     y[n, g(c)·C_out/g + o, r] = b[…] + Σ_{c, i, u : i·s + u·d − p = r} x[n, c, i] · w[c, o, u],
#
# which is Cᵀ(x) + b: the input gradient of C (conv*_input) with grad_output x and an input size of y's.
# For L = Σ y · gy, differentiating the same sum:
#
#     ∂L/∂x[n, c, i]  = Σ_{o, u} w[c, o, u] · gy[n, g(c)·C_out/g + o, i·s + u·d − p]   = C(gy): C's forward;
#     ∂L/∂w[c, o, u]  = Σ_{n, i} x[n, c, i] · gy[n, g(c)·C_out/g + o, i·s + u·d − p]
#                     = C's weight gradient with input gy and grad_output x (the roles swapped);
#     ∂L/∂b[o]        = Σ_{n, r} gy[n, o, r].
#
# So the three passes of the planner's paths serve it: forward ← grad_input, grad_input ← forward,
# grad_weight ← grad_weight.  Sizes: C maps an input of length O = (I−1)·s − 2p + d·(k−1) + 1 + a to
# ⌊((I−1)·s + a)/s⌋ + 1 = I + ⌊a/s⌋ outputs.  For 0 ≤ a < s that is I; torch also allows s ≤ a < d, where
# C's output is longer than x by ⌊a/s⌋ rows: x is extended by that many rows of zeros (which add nothing to
# y), and ∂L/∂x leaves them out.


class ConvTransposeGrads(NamedTuple):
    """Gradients of ``sum(conv_transpose{1,2,3}d(input, weight, bias, ...) * grad_output)`` (None where not
    asked for)."""

    input: np.ndarray
    weight: np.ndarray
    bias: np.ndarray


def _extended(a: np.ndarray, call: ConvTransposeCall) -> np.ndarray:
    """The transposed input ``a`` as C's output, batched: (N, C_in, *I) with zero rows appended to I where
    C's output is longer (a view when it is not)."""
    a = a.reshape(call.input_shape)                                  # (N, C_in, *I), unbatched or not
    want = call.conv.output_shape
    if a.shape == want:
        return a
    out = np.zeros(want, dtype=a.dtype)
    out[(slice(None), slice(None)) + tuple(slice(0, n) for n in call.input_spatial)] = a
    return out


def _transposed(ndim, input, weight, bias, stride, padding, output_padding, groups, dilation, algorithm):
    planner.check_algorithm(algorithm)
    call = bind_transpose(ndim, input=input, weight=weight, bias=bias, stride=stride, padding=padding,
                          output_padding=output_padding, groups=groups, dilation=dilation,
                          order=("input", "weight", "bias"))
    conv = call.conv.with_arrays(weight=call.weight, grad_output=_extended(call.input, call))
    y = _compute_backward(conv, algorithm, (True, False, False))[0]     # (N, C_out, *O), compute dtype
    if call.bias is not None:
        b = np.asarray(call.bias, dtype=y.dtype)                         # (C_out,)
        if not (y.flags.writeable and not np.may_share_memory(y, call.input)):
            y = y.copy()
        channel_bias(y, b, add=True)
    return _result(y, call.dtype, not call.batched)


def _transposed_backward(ndim, grad_output, input, weight, stride, padding, output_padding, groups, dilation,
                         algorithm, output_mask) -> ConvTransposeGrads:
    planner.check_algorithm(algorithm)
    mask = check_output_mask(output_mask)
    call = bind_transpose(ndim, grad_output=grad_output, input=input, weight=weight, stride=stride,
                          padding=padding, output_padding=output_padding, groups=groups, dilation=dilation,
                          order=("grad_output", "input", "weight"))
    conv = call.conv.with_arrays(input=call.grad_output, weight=call.weight)
    dx = dw = db = None
    if mask[0] and mask[1]:
        dx, dw = _shared_backward(call, conv, algorithm)
    if mask[0] and dx is None:                                       # C(gy), without C's extra rows
        dx = _run_forward(conv, algorithm)
        dx = np.ascontiguousarray(dx[(Ellipsis,) + tuple(slice(0, n) for n in call.input_spatial)])
    if mask[1] and dw is None:
        dw = _run_backward(conv.with_arrays(grad_output=_extended(call.input, call)), algorithm,
                           (False, True, False))[1]
    if mask[2]:
        gy = _batched(call.grad_output, call.output_shape, conv.compute_dtype)
        db = _result(_bias_grad(gy), call.dtype, False)
    return ConvTransposeGrads(dx, dw, db)


def _shared_backward(call: ConvTransposeCall, conv: ConvCall, algorithm) -> tuple:
    """(∂x, ∂w) of a transposed call whose two gradients, C's forward and weight gradient, both run gemm's passes:
    from one im2col of grad_output (:func:`convscope.algorithms.gather.forward_and_grad_weight`).
    (None, None) for the other plans, 3-d calls, and samples too large for the workspace limit."""
    c = lift(conv) if conv.ndim == 1 else conv
    if c.ndim != 2:
        return None, None
    spec, shape, cdt = c.spec, c.shape, c.compute_dtype
    plan = planner.decide(spec, shape, algorithm, dtype=cdt)
    if not gather.shares_im2col(plan.forward.algorithm, plan.grad_weight.algorithm):
        return None, None
    _check_memory(spec, shape, cdt, [("grad_input", call.input_shape), ("grad_weight", c.weight_shape)],
                  [("gemm", "forward"), ("gemm", "grad_weight")])
    gy = _batched(call.grad_output, c.input_shape, cdt)                 # C's input
    x = _batched(_extended(call.input, call), c.output_shape, cdt)      # C's grad_output
    with np.errstate(all="ignore"):
        both = gather.run_forward_and_grad_weight(gy, np.ascontiguousarray(c.weight, dtype=cdt), x, spec, shape)
    if both is None:
        return None, None
    dx, dw = both
    if conv.ndim == 1:
        dx, dw = _squeeze(dx), _squeeze(dw)
    dx = dx[(Ellipsis,) + tuple(slice(0, n) for n in call.input_spatial)]    # without C's extra rows
    return _result(dx, call.dtype, not call.batched), _result(dw, call.dtype, False)


def _transposed_output_size(ndim, input_size, kernel_size, stride, padding, output_padding, dilation) -> tuple:
    size = positive_tuple(input_size, "input_size", ndim)
    spec = make_spec(kernel_size, stride, check_transposed_padding(padding, ndim), dilation, ndim=ndim)
    op = check_output_padding(output_padding, spec.stride, spec.dilation)
    message = empty_transposed_output_message(spec, size, op)
    if message:
        raise ValueError(message)
    return spec.transposed_output_size(size, op)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     algorithm=None) -> np.ndarray:
    r"""2-D transposed convolution, exactly as ``torch.nn.functional.conv_transpose2d``.

    Every input element scatters its value times the kernel onto the output:

    .. math::

        \text{out}(n, g C_{out}/G + o, r, t) = \text{bias}(\cdot) + \sum_{c \in \text{group } g}
        \sum_{\substack{i, u:\; i s_H + u d_H - p_H = r \\ j, v:\; j s_W + v d_W - p_W = t}}
        x(n, c, i, j)\, w(c, o, u, v)

    It is the gradient of :func:`conv2d` with respect to its input (the adjoint), computed by
    the same implementations: the planner's grad-input choice for this convolution runs it.

    Parameters
    ----------
    input : array (N, C_in, H, W) or (C_in, H, W); float16, float32 or float64 (or a torch tensor)
    weight : array (C_in, C_out/groups, kH, kW), the same dtype: the weight of the convolution from
        C_out to C_in channels that this is the adjoint of
    bias : array (C_out,) or None
    stride, dilation : int or (int, int)
    padding : int or (int, int): ``dilation·(k−1) − padding`` zeros are (in effect) added around
        the input; no strings
    output_padding : int or (int, int), each smaller than its stride or its dilation: the rows added
        at the bottom/right, choosing among the output sizes that a convolution with this stride maps
        to the input's size
    groups : int dividing C_in
    algorithm : as in :func:`conv2d` (the implementation of the grad-input pass)

    Shape
    -----
    output (N, C_out, H_out, W_out), or (C_out, H_out, W_out) for unbatched input, with
    ``H_out = (H − 1)·sH − 2·pH + dH·(kH − 1) + output_padding_H + 1`` and likewise W_out.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> convscope.conv_transpose2d(x, np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[1., 1., 2., 2.],
           [1., 1., 2., 2.],
           [3., 3., 4., 4.],
           [3., 3., 4., 4.]])
    """
    return _transposed(2, input, weight, bias, stride, padding, output_padding, groups, dilation, algorithm)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     algorithm=None) -> np.ndarray:
    r"""1-D transposed convolution, exactly as ``torch.nn.functional.conv_transpose1d``.

    .. math::

        \text{out}(n, g C_{out}/G + o, r) = \text{bias}(\cdot) + \sum_{c \in \text{group } g}
        \sum_{i, u:\; i s + u d - p = r} x(n, c, i)\, w(c, o, u)

    The parameters mean what they mean in :func:`conv_transpose2d`, with one value per axis.

    Shape
    -----
    input (N, C_in, L) or (C_in, L), weight (C_in, C_out/groups, k), output (N, C_out, L_out) or
    (C_out, L_out) with ``L_out = (L − 1)·s − 2·p + d·(k − 1) + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> convscope.conv_transpose1d(np.array([[[1.0, 2.0, 3.0]]]), np.ones((1, 1, 3)), stride=2, padding=1)[0, 0]
    array([1., 3., 2., 5., 3.])
    """
    return _transposed(1, input, weight, bias, stride, padding, output_padding, groups, dilation, algorithm)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     algorithm=None) -> np.ndarray:
    r"""3-D transposed convolution, exactly as ``torch.nn.functional.conv_transpose3d``.

    The parameters mean what they mean in :func:`conv_transpose2d`, with three values per tuple
    ``(D, H, W)``; ``algorithm`` as in :func:`conv3d`.

    Shape
    -----
    input (N, C_in, D, H, W) or (C_in, D, H, W), weight (C_in, C_out/groups, kD, kH, kW), output
    (N, C_out, D_out, H_out, W_out), each size by the formula of :func:`conv_transpose2d`.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> convscope.conv_transpose3d(np.ones((1, 2, 3, 3, 3)), np.ones((2, 4, 2, 2, 2)), stride=2).shape
    (1, 4, 6, 6, 6)
    """
    return _transposed(3, input, weight, bias, stride, padding, output_padding, groups, dilation, algorithm)


def conv_transpose1d_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, algorithm=None, output_mask=(True, True, True)) -> ConvTransposeGrads:
    """Gradients of ``sum(conv_transpose1d(input, weight, bias, ...) * grad_output)``, as
    :func:`conv_transpose2d_backward`."""
    return _transposed_backward(1, grad_output, input, weight, stride, padding, output_padding, groups,
                                dilation, algorithm, output_mask)


def conv_transpose2d_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, algorithm=None, output_mask=(True, True, True)) -> ConvTransposeGrads:
    """Gradients of ``sum(conv_transpose2d(input, weight, bias, ...) * grad_output)``.

    Returns a :class:`ConvTransposeGrads` ``(input, weight, bias)``: ∂/∂input is the convolution
    (:func:`conv2d`) of ``grad_output`` with the same weight; ∂/∂weight is that convolution's weight
    gradient with ``grad_output`` as its input and ``input`` as its grad_output; ∂/∂bias ``(C_out,)``
    is ``grad_output`` summed over batch and positions.  ``output_mask`` = (input, weight, bias)
    says which to compute, as in :func:`conv2d_backward`; the parameters mean what they mean in
    :func:`conv_transpose2d`.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> x, w = np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2))
    >>> g = convscope.conv_transpose2d_backward(np.ones((1, 1, 4, 4)), x, w, stride=2)
    >>> g.input[0, 0], g.bias
    (array([[4., 4.],
           [4., 4.]]), array([16.]))
    """
    return _transposed_backward(2, grad_output, input, weight, stride, padding, output_padding, groups,
                                dilation, algorithm, output_mask)


def conv_transpose3d_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, algorithm=None, output_mask=(True, True, True)) -> ConvTransposeGrads:
    """Gradients of ``sum(conv_transpose3d(input, weight, bias, ...) * grad_output)``, as
    :func:`conv_transpose2d_backward`."""
    return _transposed_backward(3, grad_output, input, weight, stride, padding, output_padding, groups,
                                dilation, algorithm, output_mask)


def conv_transpose1d_output_size(input_size, kernel_size, stride=1, padding=0, output_padding=0,
                                 dilation=1) -> tuple[int]:
    """``(L_out,)`` of :func:`conv_transpose1d` for an input of length ``input_size`` (int or (L,)):
    ``(L − 1)·s − 2·p + d·(k − 1) + output_padding + 1``.  Raises ValueError, with the formula
    filled in, when the output would be empty.

    >>> conv_transpose1d_output_size(3, 3, stride=2, padding=1), conv_transpose1d_output_size(3, 3, 2, 1, 1)
    ((5,), (6,))
    """
    return _transposed_output_size(1, input_size, kernel_size, stride, padding, output_padding, dilation)


def conv_transpose2d_output_size(input_size, kernel_size, stride=1, padding=0, output_padding=0,
                                 dilation=1) -> tuple[int, int]:
    """``(H_out, W_out)`` of :func:`conv_transpose2d` for an input of ``input_size`` (int or (H, W)), as
    :func:`conv_transpose1d_output_size`.

    >>> conv_transpose2d_output_size((16, 16), 4, stride=2, padding=1)
    (32, 32)
    """
    return _transposed_output_size(2, input_size, kernel_size, stride, padding, output_padding, dilation)


def conv_transpose3d_output_size(input_size, kernel_size, stride=1, padding=0, output_padding=0,
                                 dilation=1) -> tuple[int, int, int]:
    """``(D_out, H_out, W_out)`` of :func:`conv_transpose3d` for an input of ``input_size`` (int or
    (D, H, W)), as :func:`conv_transpose1d_output_size`.

    >>> conv_transpose3d_output_size((4, 8, 8), 2, stride=2)
    (8, 16, 16)
    """
    return _transposed_output_size(3, input_size, kernel_size, stride, padding, output_padding, dilation)
