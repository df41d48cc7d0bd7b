"""How one number of a convolution is made: :func:`explain` and :func:`explain_grad`.

Every term comes from :mod:`convscope.geometry` (which pixel a tap reads, and
which real pixel a padding cell copies), the same tables the reference loops
use; every ``value`` is the number :func:`convscope.conv2d` or
:func:`convscope.conv2d_backward` returns at that index.  So an explanation
cannot disagree with the computation it explains.

Forward, for output ``(n, o, i, j)`` of group ``g = o // (C_out/groups)``::

    out[n, o, i, j] = bias[o] + Σ_c Σ_u Σ_v  x̃[n, g·Cg + c, i·sH + u·dH, j·sW + v·dW] · w[o, c, u, v]

one term per tap ``(c, u, v)``; ``x̃`` is the padded input.

Backward, for ``L = Σ out · grad_out``::

    ∂L/∂x[n, c, h, w]  = Σ over the taps (o, i, j, u, v) that read pixel (c, h, w)  grad_out[n, o, i, j] · w[o, c', u, v]
    ∂L/∂w[o, c, u, v]  = Σ_n Σ_i Σ_j  grad_out[n, o, i, j] · x̃[n, g·Cg + c, i·sH + u·dH, j·sW + v·dW]
    ∂L/∂bias[o]        = Σ_n Σ_i Σ_j  grad_out[n, o, i, j]

(``c' = c − g·Cg``, the channel's index inside its group).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..functional import _spec_from_weight, conv2d, conv2d_backward
from ..geometry import spec_tap_sources
from ..spec import (
    ConvShape,
    ConvSpec,
    _is_int,
    _is_torch_tensor,
    as_array,
    check_grad_output_shape,
    check_input_ndim,
    check_same_dtype,
    check_shapes,
)

WRT = ("input", "weight", "bias")
#: The most terms one explanation builds; each is a Python object, so more would take long and much memory.
#: A larger sum raises ValueError, before any term is built, saying how to ask a smaller question.
MAX_TERMS = 500_000


class Term(NamedTuple):
    """One product of a sum.

    Forward terms (one per tap ``(c, u, v)``): ``input_value × weight_value``.
    Gradient terms: ``grad_output_value × weight_value`` (∂input),
    ``grad_output_value × input_value`` (∂weight) or ``grad_output_value`` alone (∂bias).

    Attributes
    ----------
    product : the term's value (float64 arithmetic on the array's values)
    is_padding : the tap read a padding cell
    input_index : the index of the pixel in the input as passed, ``(n, c, h, w)`` for a batch and
        ``(c, h, w)`` unbatched (as ``output_index``), so ``x[input_index] == input_value``: the
        pixel read, or for reflect, replicate and circular padding the real pixel the padding
        cell copied; None for zero padding (and for bias terms)
    input_value : that pixel's value (0 for zero padding)
    weight_index : forward ``(c_in_group, u, v)`` of ``weight[o]``; ∂input ``(o, c_in_group, u, v)``
    weight_value : the weight
    output_index : gradient terms: the output element ``(n, o, i, j)`` (``(o, i, j)`` unbatched)
    grad_output_value : gradient terms: ``grad_output`` there
    padded_index : ``(row, col)`` of the cell read in the padded input
    tap : ``(u, v)``, the kernel tap
    """

    product: float
    is_padding: bool = False
    input_index: tuple | None = None
    input_value: float | None = None
    weight_index: tuple | None = None
    weight_value: float | None = None
    output_index: tuple | None = None
    grad_output_value: float | None = None
    padded_index: tuple | None = None
    tap: tuple | None = None


@dataclass
class Explanation:
    """How one number is made: its value, the terms of its sum, and text and HTML renderings.

    ``kind`` is ``'output'`` (from :func:`explain`) or ``'input'``, ``'weight'``, ``'bias'``
    (from :func:`explain_grad`, the gradient with respect to that).  ``value`` is the number
    convscope returns at ``at``; ``sum_of_products + bias`` is the same sum done term by term
    in float64.  ``str(e)`` is the explanation as text, ``e._repr_html_()`` as HTML.
    """

    kind: str
    at: tuple
    value: float
    terms: list = field(repr=False)
    sum_of_products: float
    bias: float = 0.0
    window: np.ndarray | None = field(default=None, repr=False)
    window_padding: np.ndarray | None = field(default=None, repr=False)
    kernel: np.ndarray | None = field(default=None, repr=False)
    torch_value: float | None = None
    reason: str | None = None
    channels: range = field(default=range(0), repr=False)
    spec: ConvSpec | None = field(default=None, repr=False)
    shape: ConvShape | None = field(default=None, repr=False)
    unbatched: bool = field(default=False, repr=False)
    dtype: np.dtype | None = field(default=None, repr=False)
    has_bias: bool = field(default=False, repr=False)
    padded_input: np.ndarray | None = field(default=None, repr=False)

    def text(self, decimals: int | None = None) -> str:
        """The explanation as plain text (``decimals``: None picks 0 for whole numbers, else 4)."""
        from .render import to_text

        return to_text(self, decimals)

    def __str__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        from .render import to_html

        return to_html(self)


# --------------------------------------------------------------------------- arguments


def _is_torch_layer(obj) -> bool:
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "weight") and hasattr(obj, "stride")


def _is_layer(obj) -> bool:
    from ..module import _ConvNd

    return isinstance(obj, _ConvNd) or _is_torch_layer(obj)


def _layer_arguments(layer) -> dict:
    """weight, bias and the hyper-parameters of a convscope or torch Conv2d."""
    if getattr(layer, "transposed", False) is True:
        raise TypeError(f"explanations are of convolution layers (Conv2d) only, not of transposed ones, "
                        f"got {type(layer).__name__}")
    if _is_torch_layer(layer):
        if type(layer).__name__ != "Conv2d":
            raise TypeError(f"layer must be a torch.nn.Conv2d or a convscope.Conv2d, got {type(layer).__name__}")
        padding = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
        return dict(weight=layer.weight, bias=layer.bias, stride=tuple(layer.stride), padding=padding,
                    dilation=tuple(layer.dilation), groups=layer.groups, padding_mode=layer.padding_mode)
    if layer.spec.ndim != 2:
        raise TypeError(f"explanations are of 2-d layers (Conv2d) only, got {type(layer).__name__}")
    return dict(weight=layer.weight, bias=layer.bias, stride=layer.stride, padding=layer.padding,
                dilation=layer.dilation, groups=layer.groups, padding_mode=layer.padding_mode)


_DEFAULTS = dict(bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros")


def _arguments(layer_or_weight, form: str, **given) -> tuple[dict, bool]:
    """(weight, bias and hyper-parameters, whether they came from a torch layer).

    With a layer they come from the layer, and any hyper-parameter passed as well is refused.
    """
    if not _is_layer(layer_or_weight):
        return dict(_DEFAULTS, **given, weight=layer_or_weight), False
    passed = [name for name, value in given.items()
              if (value is not None if name == "bias" else value != _DEFAULTS[name])]
    if passed:
        raise TypeError(f"{form} takes the hyper-parameters from the layer; pass {', '.join(passed)} "
                        "only with a weight")
    return _layer_arguments(layer_or_weight), _is_torch_layer(layer_or_weight)


def _normalize_at(at, names: tuple[str, ...], sizes: tuple[int, ...], what: str) -> tuple[int, ...]:
    """``at`` as non-negative ints; negative entries count from the end, as in NumPy indexing."""
    layout = f"({', '.join(names)})"
    if not isinstance(at, (tuple, list)) and not (isinstance(at, np.ndarray) and at.ndim == 1):
        if _is_int(at) and len(names) == 1:
            at = (at,)
        else:
            raise TypeError(f"at must be a tuple {layout} for {what}, got {at!r}")
    items = tuple(at)
    if len(items) != len(names):
        raise ValueError(f"at must have {len(names)} indices {layout} for {what}, got {len(items)}: {items!r}")
    out = []
    for value, name, size in zip(items, names, sizes):
        if not _is_int(value):
            raise TypeError(f"at[{name}] must be an int, got {value!r} ({type(value).__name__})")
        v = int(value)
        if not -size <= v < size:
            raise ValueError(f"at[{name}] must be in 0..{size - 1} (or −{size}..−1), got {v}")
        out.append(v % size)
    return tuple(out)


def _as_float(a) -> float:
    return float(np.float64(a))


# --------------------------------------------------------------------------- torch


def _torch_conv(xt, wt, bt, spec: ConvSpec):
    """torch's conv2d of 4-D tensors, padded as ``nn.Conv2d`` pads for ``spec.padding_mode``."""
    import torch.nn.functional as F

    if spec.padding_mode == "zeros":
        return F.conv2d(xt, wt, bt, spec.stride, spec.padding_arg, spec.dilation, spec.groups)
    (pt, pb), (pl, pr) = spec.padding
    return F.conv2d(F.pad(xt, (pl, pr, pt, pb), mode=spec.padding_mode), wt, bt, spec.stride, 0,
                    spec.dilation, spec.groups)


def _torch_tensor(a, requires_grad: bool = False):
    """A torch copy of ``a``, as 4-D when ``a`` is an unbatched input; float16 becomes float32."""
    import torch

    return torch.tensor(np.array(a, dtype=np.float32 if a.dtype == np.float16 else a.dtype),
                        requires_grad=requires_grad)


def _torch_forward(x, w, b, spec: ConvSpec, at):
    """torch's output at ``at`` for the same arrays (float16 computed in float32, then rounded)."""
    import torch

    with torch.no_grad():
        out = _torch_conv(_torch_tensor(x if x.ndim == 4 else x[None]), _torch_tensor(w),
                          None if b is None else _torch_tensor(b), spec)
    out = out.numpy().astype(x.dtype)
    return _as_float((out if x.ndim == 4 else out[0])[at])


def _torch_grads(gy, x, w, spec: ConvSpec):
    """torch's (∂input, ∂weight, ∂bias) of ``sum(conv2d(x, w, b) * gy)``, by autograd."""
    xt = _torch_tensor(x if x.ndim == 4 else x[None], requires_grad=True)
    wt = _torch_tensor(w, requires_grad=True)
    bt = _torch_tensor(np.zeros(w.shape[0], dtype=w.dtype), requires_grad=True)
    (_torch_conv(xt, wt, bt, spec) * _torch_tensor(gy if gy.ndim == 4 else gy[None])).sum().backward()
    dx, dw, db = (t.grad.numpy().astype(x.dtype) for t in (xt, wt, bt))
    return (dx if x.ndim == 4 else dx[0]), dw, db


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- explain


def _prepare(weight, x, bias, stride, padding, dilation, groups, padding_mode, grad_output=None,
             with_grad=False):
    """Validate like conv2d / conv2d_backward; return arrays, spec, shape and torch provenance."""
    from_torch = any(_is_torch_tensor(a) for a in (weight, x, bias, grad_output))
    xa = as_array(x, "input")
    wa = as_array(weight, "weight")
    ba = as_array(bias, "bias", allow_none=True)
    ga = as_array(grad_output, "grad_output", allow_none=True)
    check_same_dtype(input=xa, weight=wa, bias=ba, grad_output=ga)
    check_input_ndim(xa.shape)
    spec = _spec_from_weight(wa.shape, stride, padding, dilation, groups, padding_mode)
    shape = check_shapes(spec, xa.shape, wa.shape, None if ba is None else ba.shape)
    if with_grad:
        out_shape = (shape.out_channels, shape.H_out, shape.W_out)
        if xa.ndim == 4:
            out_shape = (shape.N,) + out_shape
        if ga is None:
            ga = np.ones(out_shape, dtype=xa.dtype)
        check_grad_output_shape(ga.shape, out_shape)
    return xa, wa, ba, ga, spec, shape, from_torch


def _padded_cell(spec: ConvSpec, i: int, j: int, u: int, v: int) -> tuple[int, int]:
    (sH, sW), (dH, dW) = spec.stride, spec.dilation
    return i * sH + u * dH, j * sW + v * dW


def _as_passed(unbatched: bool, n: int, c: int, h: int, w: int) -> tuple[int, ...]:
    """Index ``(n, c, h, w)`` of a 4-D view in the array as the caller passed it (no ``n`` unbatched)."""
    return (c, h, w) if unbatched else (n, c, h, w)


def _check_terms(what: str, names: str, factors: tuple[int, ...], smaller: str) -> None:
    """Refuse, before building any, an explanation of more than :data:`MAX_TERMS` terms."""
    count = int(np.prod(factors, dtype=object))
    if count > MAX_TERMS:
        raise ValueError(f"{what} is a sum of {names} = {'·'.join(map(str, factors))} = {count} terms; an "
                         f"explanation builds at most {MAX_TERMS}: ask a smaller question, {smaller}")


def _smaller_input(unbatched: bool) -> str:
    crop = "x[:, :64, :64]" if unbatched else "x[:1, :, :64, :64]"
    return f"for example of a crop of the input ({crop})" if unbatched else \
        f"for example of fewer samples or a crop of the input ({crop})"


def _is_padding_cell(spec: ConvSpec, shape: ConvShape, p: tuple[int, int]) -> bool:
    (pt, _), (pl, _) = spec.padding
    return not (0 <= p[0] - pt < shape.H and 0 <= p[1] - pl < shape.W)


def explain(layer_or_weight, x, at, bias=None, stride=1, padding=0, dilation=1, groups=1,
            padding_mode="zeros", *, transposed=False, output_padding=0, output_size=None) -> Explanation:
    """How output element ``at`` of a convolution is made, term by term.

    Two forms:

    * ``explain(weight, x, at, bias=None, stride=1, padding=0, dilation=1, groups=1,
      padding_mode='zeros')``, with :func:`convscope.conv2d`'s parameters;
    * ``explain(layer, x, at)``, where ``layer`` is a :class:`convscope.Conv2d` or a
      ``torch.nn.Conv2d`` (then the hyper-parameters come from the layer).

    A transposed convolution (``transposed=True`` with ``output_padding``, or a ``ConvTranspose1d/2d/3d``
    layer, with ``output_size``) is explained in its scatter and gather views by
    :func:`convscope.explain.transposed.explain_transposed`.

    ``x`` is a NumPy array or a torch tensor, ``(N, C, H, W)`` or unbatched ``(C, H, W)``;
    ``at`` is ``(n, c_out, i, j)`` for batched input and ``(c_out, i, j)`` for unbatched input.
    When the layer or an array comes from torch, ``torch_value`` is torch's number.
    A sum of more than :data:`MAX_TERMS` terms raises ``ValueError``.

    Returns
    -------
    Explanation
        ``value`` (= ``conv2d(...)[at]``), ``bias``, ``sum_of_products``, ``terms`` (one per
        input channel of the group and kernel tap), ``window`` (the input patch as the kernel
        sees it, ``(C/groups, kH, kW)``, padding filled in), ``window_padding`` (which of its
        cells are padding), ``kernel`` (``weight[c_out]``), ``torch_value``.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> x = np.arange(16, dtype=np.float64).reshape(1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2))
    >>> e = convscope.explain(w, x, (0, 0, 0), bias=np.array([0.5]), padding=1)
    >>> e.value, e.sum_of_products, e.bias
    (0.5, 0.0, 0.5)
    >>> [t.is_padding for t in e.terms]
    [True, True, True, False]
    """
    from .transposed import explain_transposed, is_transposed_call
    if is_transposed_call(layer_or_weight, transposed, output_padding, output_size):
        return explain_transposed(layer_or_weight, x, at, bias, stride, padding, dilation, groups, padding_mode,
                                  transposed=transposed, output_padding=output_padding, output_size=output_size)
    args, from_layer = _arguments(layer_or_weight, "explain(layer, x, at)", bias=bias, stride=stride,
                                  padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode)
    xa, wa, ba, _, spec, shape, from_torch = _prepare(args["weight"], x, args["bias"], args["stride"],
                                                      args["padding"], args["dilation"], args["groups"],
                                                      args["padding_mode"])
    unbatched = xa.ndim == 3
    if unbatched:
        at4 = (0,) + _normalize_at(at, ("c_out", "i", "j"), (shape.out_channels, shape.H_out, shape.W_out),
                                   "unbatched input (C, H, W)")
    else:
        at4 = _normalize_at(at, ("n", "c_out", "i", "j"),
                            (shape.N, shape.out_channels, shape.H_out, shape.W_out), "batched input (N, C, H, W)")
    n, o, i, j = at4
    out_at = at4[1:] if unbatched else at4
    kH, kW = spec.kernel_size
    _check_terms(f"out[{', '.join(map(str, out_at))}]", "(C/groups)·kH·kW", (shape.in_per_group, kH, kW),
                 "for example with fewer input channels or a smaller kernel")

    out = conv2d(xa, wa, ba, spec.stride, spec.padding_arg, spec.dilation, spec.groups, spec.padding_mode)
    value = _as_float(out[out_at])

    x4 = xa if not unbatched else xa[None]
    rows, cols = spec_tap_sources(spec, (shape.H, shape.W))
    Cg = shape.in_per_group
    g = o // shape.out_per_group
    window = np.zeros((Cg, kH, kW))
    window_padding = np.zeros((Cg, kH, kW), dtype=bool)
    terms = []
    for c in range(Cg):
        ch = g * Cg + c
        for u in range(kH):
            for v in range(kW):
                p = _padded_cell(spec, i, j, u, v)
                pad = _is_padding_cell(spec, shape, p)
                h, w_ = int(rows[i, u]), int(cols[j, v])
                real = h >= 0 and w_ >= 0
                xv = _as_float(x4[n, ch, h, w_]) if real else 0.0
                wv = _as_float(wa[o, c, u, v])
                window[c, u, v] = xv
                window_padding[c, u, v] = pad
                terms.append(Term(product=xv * wv, is_padding=pad,
                                  input_index=_as_passed(unbatched, n, ch, h, w_) if real else None,
                                  input_value=xv, weight_index=(c, u, v), weight_value=wv, padded_index=p,
                                  tap=(u, v)))
    bias_value = _as_float(ba[o]) if ba is not None else 0.0
    torch_value = None
    if (from_torch or from_layer) and torch_available():
        torch_value = _torch_forward(xa, wa, ba, spec, out_at)
    return Explanation(
        kind="output", at=out_at, value=value, terms=terms,
        sum_of_products=float(np.sum([t.product for t in terms])), bias=bias_value,
        window=window, window_padding=window_padding, kernel=wa[o].astype(np.float64),
        torch_value=torch_value, channels=range(g * Cg, (g + 1) * Cg), spec=spec, shape=shape,
        unbatched=unbatched, dtype=xa.dtype, has_bias=ba is not None,
        padded_input=_padded_channels(x4[n], spec, shape, range(g * Cg, (g + 1) * Cg)),
    )


def _padded_channels(x3, spec: ConvSpec, shape: ConvShape, channels: range, limit: int = 40):
    """The padded input of ``channels`` (for pictures), or None when it is too large to show."""
    (pt, pb), (pl, pr) = spec.padding
    if shape.H + pt + pb > limit or shape.W + pl + pr > limit or len(channels) > 8:
        return None
    from ..padding import pad

    return np.array(pad(x3[channels.start:channels.stop].astype(np.float64), spec))  # a copy, never the caller's


# --------------------------------------------------------------------------- explain_grad


def _unread_reason(spec: ConvSpec, shape: ConvShape, dim: int, r: int) -> str | None:
    """Why no window reads real row (dim 0) or column (dim 1) ``r``, or None when one does."""
    before = spec.padding[dim][0]
    k, s, d = spec.kernel_size[dim], spec.stride[dim], spec.dilation[dim]
    out_len = (shape.H_out, shape.W_out)[dim]
    table = spec_tap_sources(spec, (shape.H, shape.W))[dim]
    if (table == r).any():
        return None
    name = ("row", "column")[dim]
    p = r + before  # its padded coordinate
    last_end = (out_len - 1) * s + (k - 1) * d
    if p > last_end:
        return (f"no window reaches {name} {r}: the last window ends at padded {name} {last_end} "
                f"(input {name} {last_end - before}), and the floor in the output-size formula drops the rest")
    spanning = [i for i in range(min(p // s, out_len - 1) + 1) if i * s <= p <= i * s + (k - 1) * d]
    if spanning:
        i = spanning[-1]
        taps = ", ".join(str(i * s + u * d) for u in range(min(k, 4))) + (", …" if k > 4 else "")
        return (f"dilation {d} skips {name} {r}: it falls between two taps of window {i} "
                f"(padded {name}s {taps})")
    i = min(p // s, out_len - 1)
    return (f"stride {s} skips {name} {r}: window {i} ends at padded {name} {i * s + (k - 1) * d} and "
            f"window {i + 1} starts at {(i + 1) * s}")


def explain_grad(layer_or_weight, x, grad_output=None, wrt="input", at=None, stride=1, padding=0,
                 dilation=1, groups=1, padding_mode="zeros", *, transposed=False, output_padding=0,
                 output_size=None) -> Explanation:
    """How one number of a gradient is made, for ``L = sum(conv2d(x, weight, ...) * grad_output)``.

    * ``wrt='input'``, ``at=(n, c, h, w)`` (``(c, h, w)`` unbatched): the output positions and
      kernel taps that read this pixel; the value is Σ grad_output · weight.  A pixel no window
      reads has no terms and the value 0, and ``reason`` says why (for example a stride that
      skips it).
    * ``wrt='weight'``, ``at=(o, c, u, v)``: Σ over n, i, j of grad_output · input (the input
      the tap read, padding included).
    * ``wrt='bias'``, ``at=(o,)``: Σ grad_output.

    ``layer_or_weight`` is a weight or a convscope / torch ``Conv2d`` (then the hyper-parameters
    come from the layer); ``transposed=True`` or a ``ConvTranspose1d/2d/3d`` layer: see
    :func:`convscope.explain.transposed.explain_grad_transposed`.  ``grad_output`` has the output's shape; None means all ones
    (``L = out.sum()``).  ``value`` is ``conv2d_backward(...)``'s component at ``at``.  A sum of
    more than :data:`MAX_TERMS` terms raises ``ValueError`` (explain a crop of the input, or fewer
    samples).

    Examples
    --------
    >>> import numpy as np, convscope
    >>> A = np.array([[5, 27, 9, -15, 12], [2, 4, -2, -7, 8], [-8, 16, 5, 23, -6],
    ...               [-17, 7, 9, -14, 3], [10, -5, 13, 6, -11]], dtype=np.float32)[None]
    >>> B = np.array([[8, 4], [2, 6]], dtype=np.float32)[None, None]
    >>> e = convscope.explain_grad(B, A, None, "weight", (0, 0, 0, 0), stride=2)
    >>> e.value, [t.input_value for t in e.terms]
    (11.0, [5.0, 9.0, -8.0, 5.0])
    >>> convscope.explain_grad(B, A, None, "input", (0, 4, 4), stride=2).value
    0.0
    """
    from .transposed import explain_grad_transposed, is_transposed_call
    if is_transposed_call(layer_or_weight, transposed, output_padding, output_size):
        return explain_grad_transposed(layer_or_weight, x, grad_output, wrt, at, stride, padding, dilation, groups,
                                       padding_mode, transposed=transposed, output_padding=output_padding,
                                       output_size=output_size)
    if not isinstance(wrt, str) or wrt not in WRT:
        raise ValueError(f"wrt must be one of 'input', 'weight', 'bias', got {wrt!r}")
    args, from_layer = _arguments(layer_or_weight, "explain_grad(layer, ...)", stride=stride, padding=padding,
                                  dilation=dilation, groups=groups, padding_mode=padding_mode)
    args["bias"] = None  # the gradients do not depend on the bias
    if at is None:
        raise TypeError("at is required: the index of the gradient element to explain")
    xa, wa, _, ga, spec, shape, from_torch = _prepare(args["weight"], x, None, args["stride"], args["padding"],
                                                      args["dilation"], args["groups"], args["padding_mode"],
                                                      grad_output, with_grad=True)
    unbatched = xa.ndim == 3
    x4 = xa[None] if unbatched else xa
    g4 = ga[None] if unbatched else ga
    Cg, Og = shape.in_per_group, shape.out_per_group
    rows, cols = spec_tap_sources(spec, (shape.H, shape.W))

    def component(at_out):  # conv2d_backward's value at ``at_out``, computed once the size is checked
        grads = conv2d_backward(ga, xa, wa, spec.stride, spec.padding_arg, spec.dilation, spec.groups,
                                spec.padding_mode, output_mask=tuple(name == wrt for name in WRT))
        return _as_float(getattr(grads, wrt)[at_out])

    reads = ("H_out·W_out", (shape.H_out, shape.W_out)) if unbatched else \
        ("N·H_out·W_out", (shape.N, shape.H_out, shape.W_out))
    terms, reason = [], None
    channels = range(0)
    if wrt == "input":
        if unbatched:
            at_n = (0,) + _normalize_at(at, ("c", "h", "w"), (shape.C, shape.H, shape.W), "unbatched input (C, H, W)")
        else:
            at_n = _normalize_at(at, ("n", "c", "h", "w"), (shape.N, shape.C, shape.H, shape.W),
                                 "batched input (N, C, H, W)")
        n, c, h, w_ = at_n
        at_out = at_n[1:] if unbatched else at_n
        g = c // Cg
        channels = range(g * Og, (g + 1) * Og)  # the output channels that read input channel c
        ius = np.argwhere(rows == h)  # (i, u) pairs whose tap reads row h
        jvs = np.argwhere(cols == w_)
        _check_terms(f"∂L/∂x[{', '.join(map(str, at_out))}]", "(C_out/groups)·(taps reading row h)·(taps "
                     "reading column w)", (Og, len(ius), len(jvs)),
                     "for example with fewer output channels or a smaller kernel")
        value = component(at_out)
        for o in channels:
            for i, u in ius:
                for j, v in jvs:
                    gv, wv = _as_float(g4[n, o, i, j]), _as_float(wa[o, c - g * Cg, u, v])
                    p = _padded_cell(spec, int(i), int(j), int(u), int(v))
                    terms.append(Term(product=gv * wv, is_padding=_is_padding_cell(spec, shape, p),
                                      input_index=_as_passed(unbatched, n, c, h, w_),
                                      input_value=_as_float(x4[n, c, h, w_]),
                                      weight_index=(o, c - g * Cg, int(u), int(v)), weight_value=wv,
                                      output_index=_as_passed(unbatched, n, o, int(i), int(j)), grad_output_value=gv,
                                      padded_index=p, tap=(int(u), int(v))))
        if not terms:
            reason = _unread_reason(spec, shape, 0, h) or _unread_reason(spec, shape, 1, w_)
    elif wrt == "weight":
        at_n = _normalize_at(at, ("o", "c", "u", "v"), tuple(wa.shape), "the weight (C_out, C/groups, kH, kW)")
        o, c, u, v = at_n
        at_out = at_n
        _check_terms(f"∂L/∂w[{', '.join(map(str, at_out))}]", *reads, _smaller_input(unbatched))
        value = component(at_out)
        g = o // Og
        ch = g * Cg + c
        channels = range(ch, ch + 1)
        for n in range(shape.N):
            for i in range(shape.H_out):
                for j in range(shape.W_out):
                    h, w_ = int(rows[i, u]), int(cols[j, v])
                    real = h >= 0 and w_ >= 0
                    xv = _as_float(x4[n, ch, h, w_]) if real else 0.0
                    gv = _as_float(g4[n, o, i, j])
                    p = _padded_cell(spec, i, j, u, v)
                    terms.append(Term(product=gv * xv, is_padding=_is_padding_cell(spec, shape, p),
                                      input_index=_as_passed(unbatched, n, ch, h, w_) if real else None,
                                      input_value=xv,
                                      weight_index=None, weight_value=None,
                                      output_index=_as_passed(unbatched, n, o, i, j),
                                      grad_output_value=gv, padded_index=p, tap=(u, v)))
    else:
        (o,) = _normalize_at(at, ("o",), (shape.out_channels,), "the bias (C_out,)")
        at_out = (o,)
        _check_terms(f"∂L/∂bias[{o}]", *reads, _smaller_input(unbatched))
        value = component(at_out)
        for n in range(shape.N):
            for i in range(shape.H_out):
                for j in range(shape.W_out):
                    gv = _as_float(g4[n, o, i, j])
                    terms.append(Term(product=gv, output_index=_as_passed(unbatched, n, o, i, j), grad_output_value=gv))
    torch_value = None
    if (from_torch or from_layer) and torch_available():
        dx, dw, db = _torch_grads(ga, xa, wa, spec)
        torch_value = _as_float({"input": dx, "weight": dw, "bias": db}[wrt][at_out])
    return Explanation(
        kind=wrt, at=at_out, value=value, terms=terms,
        sum_of_products=float(np.sum([t.product for t in terms])) if terms else 0.0,
        torch_value=torch_value, reason=reason, channels=channels, spec=spec, shape=shape,
        unbatched=unbatched, dtype=xa.dtype,
        kernel=wa[at_out[0]].astype(np.float64) if wrt == "weight" else None,
    )
