"""The functional API: ``conv2d``, ``conv2d_backward``, ``conv2d_input``, ``conv2d_weight``.

Each function validates everything first (:mod:`convscope.spec`), converts to
the batched layout and compute dtype, runs one implementation from
:mod:`convscope.algorithms`, and returns C-contiguous arrays of the caller's
dtype and rank.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import algorithms, planner
from .spec import (
    ConvShape,
    ConvSpec,
    as_array,
    check_grad_output_shape,
    check_input_ndim,
    check_memory,
    check_output_mask,
    check_same_dtype,
    check_shapes,
    check_weight_shape,
    compute_dtype,
    empty_output_message,
    make_spec,
    positive_pair,
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


def _size_tuple(value, name: str, lengths: tuple[int, ...], layout: str) -> tuple[int, ...]:
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints {layout}, got {value!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items):
        raise TypeError(f"{name} must be a sequence of ints {layout}, got {items!r}")
    if len(items) not in lengths:
        raise ValueError(f"{name} must be a sequence of ints {layout}, got {len(items)} values: {items!r}")
    if min(items) < 0:
        raise ValueError(f"{name} must not contain negative sizes, got {items!r}")
    return tuple(int(v) for v in items)


def _spec_from_weight(weight_shape, stride, padding, dilation, groups, padding_mode) -> ConvSpec:
    check_weight_shape(weight_shape)
    return make_spec(tuple(weight_shape[2:]), stride, padding, dilation, groups, padding_mode)


def _bias_grad(gy: np.ndarray, shape: ConvShape) -> np.ndarray:
    """Σ over batch and positions of grad_output: (N, C_out, H_out, W_out) → (C_out,).

    As a matrix-vector product with ones, which runs along the contiguous positions
    (several times faster than ``sum(axis=(0, 2, 3))`` on small images).
    """
    L = shape.H_out * shape.W_out
    ones = np.ones(L, dtype=gy.dtype)
    return (gy.reshape(shape.N, shape.out_channels, L) @ ones).sum(axis=0)   # (N, C_out, L) @ (L,) → (N, C_out)


def _batched_shape(shape: ConvShape) -> tuple:
    return (shape.N, shape.C, shape.H, shape.W)


def _out_shape(shape: ConvShape, unbatched: bool) -> tuple:
    out = (shape.N, shape.out_channels, shape.H_out, shape.W_out)
    return out[1:] if unbatched else out


def _check_memory(spec, shape, cdt, results, passes) -> None:
    """Refuse, before any array is made, a call whose results and scratch cannot fit in memory."""
    check_memory([(name, shape_, cdt) for name, shape_ in results],
                 algorithms.workspace_need(passes, spec, shape, cdt.itemsize))


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
        ``'winograd'``, ``'fft'``, ``'reference'`` (the readable loops) to force that
        implementation; ValueError if it cannot compute this convolution.
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
    planner.check_algorithm(algorithm)
    x = as_array(input, "input")
    w = as_array(weight, "weight")
    b = as_array(bias, "bias", allow_none=True)
    dtype = check_same_dtype(input=x, weight=w, bias=b)
    check_input_ndim(x.shape)
    spec = _spec_from_weight(w.shape, stride, padding, dilation, groups, padding_mode)
    shape = check_shapes(spec, x.shape, w.shape, None if b is None else b.shape)
    name = planner.choose(spec, shape, algorithm, dtype=compute_dtype(dtype)).forward.algorithm
    cdt = compute_dtype(dtype)
    _check_memory(spec, shape, cdt, [("output", _out_shape(shape, False))], [(name, "forward")])
    out = algorithms.run_forward(
        name,
        _batched(x, _batched_shape(shape), cdt),
        np.ascontiguousarray(w, dtype=cdt),
        None if b is None else np.ascontiguousarray(b, dtype=cdt),
        spec, shape,
    )
    return _result(out, dtype, x.ndim == 3)


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
    planner.check_algorithm(algorithm)
    mask = check_output_mask(output_mask)
    x = as_array(input, "input")
    w = as_array(weight, "weight")
    gy = as_array(grad_output, "grad_output")
    dtype = check_same_dtype(grad_output=gy, input=x, weight=w)
    check_input_ndim(x.shape)
    spec = _spec_from_weight(w.shape, stride, padding, dilation, groups, padding_mode)
    shape = check_shapes(spec, x.shape, w.shape)
    unbatched = x.ndim == 3
    check_grad_output_shape(gy.shape, _out_shape(shape, unbatched))
    plan = planner.choose(spec, shape, algorithm, dtype=compute_dtype(dtype))
    cdt = compute_dtype(dtype)
    grads = [("grad_input", _batched_shape(shape)), ("grad_weight", w.shape), ("grad_bias", (shape.out_channels,))]
    _check_memory(spec, shape, cdt, [g for g, want in zip(grads, mask) if want],
                  [(getattr(plan, p).algorithm, p) for p, want in zip(("grad_input", "grad_weight"), mask) if want])
    x4 = _batched(x, _batched_shape(shape), cdt) if mask[1] else None
    w4 = np.ascontiguousarray(w, dtype=cdt) if mask[0] else None
    gy4 = _batched(gy, _out_shape(shape, False), cdt)
    dx, dw = algorithms.run_backward((plan.grad_input.algorithm, plan.grad_weight.algorithm),
                                     gy4, x4, w4, spec, shape, mask[:2])
    db = _bias_grad(gy4, shape) if mask[2] else None
    return Conv2dGrads(_result(dx, dtype, unbatched), _result(dw, dtype, False), _result(db, dtype, False))


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                 algorithm=None) -> np.ndarray:
    """Gradient of conv2d w.r.t. its input, as ``torch.nn.grad.conv2d_input``.

    ``input_size`` is the input's shape, (N, C, H, W) or (C, H, W): with a stride
    above 1 several input sizes give the same output size, so it cannot be
    recovered from ``grad_output``.  ``grad_output`` has the output's shape.
    """
    planner.check_algorithm(algorithm)
    size = _size_tuple(input_size, "input_size", (3, 4), "(N, C, H, W) or (C, H, W)")
    w = as_array(weight, "weight")
    gy = as_array(grad_output, "grad_output")
    dtype = check_same_dtype(weight=w, grad_output=gy)
    spec = _spec_from_weight(w.shape, stride, padding, dilation, groups, "zeros")
    shape = check_shapes(spec, size, w.shape, input_name="input_size")
    unbatched = len(size) == 3
    check_grad_output_shape(gy.shape, _out_shape(shape, unbatched))
    name = planner.choose(spec, shape, algorithm, dtype=compute_dtype(dtype)).grad_input.algorithm
    cdt = compute_dtype(dtype)
    _check_memory(spec, shape, cdt, [("grad_input", _batched_shape(shape))], [(name, "grad_input")])
    dx, _ = algorithms.run_backward((name, name), _batched(gy, _out_shape(shape, False), cdt), None,
                                    np.ascontiguousarray(w, dtype=cdt), spec, shape, (True, False))
    return _result(dx, dtype, unbatched)


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                  algorithm=None) -> np.ndarray:
    """Gradient of conv2d w.r.t. its weight, as ``torch.nn.grad.conv2d_weight``.

    ``weight_size`` is the weight's shape ``(C_out, C/groups, kH, kW)``.
    """
    planner.check_algorithm(algorithm)
    x = as_array(input, "input")
    size = _size_tuple(weight_size, "weight_size", (4,), "(C_out, C/groups, kH, kW)")
    gy = as_array(grad_output, "grad_output")
    dtype = check_same_dtype(input=x, grad_output=gy)
    check_input_ndim(x.shape)
    spec = _spec_from_weight(size, stride, padding, dilation, groups, "zeros")
    shape = check_shapes(spec, x.shape, size)
    unbatched = x.ndim == 3
    check_grad_output_shape(gy.shape, _out_shape(shape, unbatched))
    name = planner.choose(spec, shape, algorithm, dtype=compute_dtype(dtype)).grad_weight.algorithm
    cdt = compute_dtype(dtype)
    _check_memory(spec, shape, cdt, [("grad_weight", size)], [(name, "grad_weight")])
    _, dw = algorithms.run_backward((name, name), _batched(gy, _out_shape(shape, False), cdt),
                                    _batched(x, _batched_shape(shape), cdt), None, spec, shape,
                                    (False, True))
    return _result(dw, dtype, False)


def conv2d_output_size(input_hw, kernel_size, stride=1, padding=0, dilation=1) -> tuple[int, int]:
    """``(H_out, W_out)`` for an input of ``input_hw`` (int or (H, W)).

    ``padding`` may be an int, a pair, ``'valid'`` or ``'same'``.  Raises ValueError,
    with the formula filled in, when the output would be empty.

    >>> conv2d_output_size((32, 35), (3, 2), stride=2)
    (15, 17)
    """
    hw = positive_pair(input_hw, "input_hw")
    spec = make_spec(kernel_size, stride, padding, dilation)
    message = empty_output_message(spec, hw)
    if message:
        raise ValueError(message)
    return spec.output_hw(hw)
