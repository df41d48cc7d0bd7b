"""How one number of a transposed convolution is made: ``explain(..., transposed=True)`` and
``explain_grad(..., transposed=True)`` (also for ``ConvTranspose1d/2d/3d`` layers, convscope's or torch's).

An output element is explained in two views with the same number:

* **scatter** (``.terms``): every input element stamps its value times the kernel onto the output;
  along each axis input element ``i`` through kernel tap ``u`` lands on output row
  ``r = i·stride + u·dilation − padding`` (:func:`convscope.geometry.transposed_taps`), so

      y[n, g·C_out/G + o, r…] = bias[…] + Σ_{c in group g} Σ_{(i, u) landing on r} x[n, c, i…]·w[c, o, u…];

* **gather** (``.gather``): the same number as an ordinary convolution, stride 1, of the input with
  ``stride − 1`` zeros inserted between its elements and ``dilation·(kernel − 1) − padding`` of zero
  padding on each side (plus ``output_padding`` at the end; a negative amount crops), with the kernel
  flipped along every spatial axis and its in/out channels swapped within each group:
  ``w'[g·C_out/G + o, c, u…] = w[g·C_in/G + c, o, k − 1 − u…]``.  It is an ordinary
  :class:`~convscope.explain.core.Explanation` of that convolution.

The gradients of ``L = Σ y · grad_out`` (derived in :mod:`convscope.functional`)::

    ∂L/∂x[n, c, i…]  = Σ_o Σ_{u: r = i·s + u·d − p in the output}  grad_out[n, g·C_out/G + o, r…] · w[c, o, u…]
    ∂L/∂w[c, o, u…]  = Σ_n Σ_{i: r = i·s + u·d − p in the output}  x[n, c, i…] · grad_out[n, g·C_out/G + o, r…]
    ∂L/∂bias[o]        = Σ_n Σ_r grad_out[n, o, r…]

The input gradient is the ordinary convolution of ``grad_out`` with the same weight (stride s, padding
p, dilation d, groups G).  Every ``value`` is the number :func:`convscope.conv_transpose2d` (1d, 3d) or
its ``_backward`` returns at that index.
"""
from __future__ import annotations

import html
import itertools
from dataclasses import dataclass, field, replace

import numpy as np

from .. import functional
from ..geometry import (gather_padding, transposed_output_length, transposed_reach, transposed_taps,
                        zero_inserted_cell)
from ..spec import AXIS_LETTERS, _is_int, _is_torch_tensor, as_array, bind_transpose, output_padding_for
from .core import WRT, Term, _as_float, _check_terms, _is_layer, _is_torch_layer, _normalize_at, torch_available
from .render import MAX_TERM_LINES, check_decimals, grid_lines, idx, num

__all__ = ["TransposedExplanation", "explain_transposed", "explain_grad_transposed", "gather_arrays",
           "is_transposed_call"]

_DEFAULTS = dict(bias=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1, padding_mode="zeros")
_TAP_NAMES = {1: ("u",), 2: ("u", "v"), 3: ("t", "u", "v")}
_INDEX_NAMES = {1: ("i",), 2: ("i", "j"), 3: ("h", "i", "j")}
DETAIL_CHANNELS = 4   # input channels whose gather window is drawn; the rest are in .gather.terms
MAX_GRID = 24         # the widest zero-inserted input drawn in full (cells per row)


# --------------------------------------------------------------------------- arguments


def _is_transposed_layer(obj) -> bool:
    return _is_layer(obj) and getattr(obj, "transposed", False) is True


def is_transposed_call(layer_or_weight, transposed, output_padding, output_size) -> bool:
    """Whether ``explain``/``explain_grad`` explains a transposed convolution: ``transposed=True``, a
    transposed layer, or (to be refused with a clear message) ``output_padding``/``output_size`` given."""
    if not isinstance(transposed, (bool, np.bool_)):
        raise TypeError(f"transposed must be True or False, got {transposed!r}")
    items = output_padding if isinstance(output_padding, (tuple, list)) else (output_padding,)
    zero = all(_is_int(a) and a == 0 for a in items)
    return bool(transposed) or _is_transposed_layer(layer_or_weight) or output_size is not None or not zero


def _arguments(layer_or_weight, form: str, transposed: bool, output_size, given: dict) -> tuple[dict, bool]:
    """(weight, bias and hyper-parameters, whether they came from a layer)."""
    if _is_layer(layer_or_weight):
        layer = layer_or_weight
        if not _is_transposed_layer(layer):
            raise TypeError(f"transposed=True explains transposed layers (ConvTranspose1d/2d/3d), got "
                            f"{type(layer).__name__}; explain a convolution layer without transposed=True")
        if _is_torch_layer(layer) and type(layer).__name__ not in ("ConvTranspose1d", "ConvTranspose2d",
                                                                   "ConvTranspose3d"):
            raise TypeError(f"layer must be a torch.nn.ConvTranspose1d/2d/3d or a convscope one, "
                            f"got {type(layer).__name__}")
        passed = [name for name, value in given.items()
                  if (value is not None if name == "bias" else value != _DEFAULTS[name])]
        if passed:
            hint = " (the layer's output_padding, or output_size=)" if "output_padding" in passed else ""
            raise TypeError(f"{form} takes the hyper-parameters from the layer; pass {', '.join(passed)} only "
                            f"with a weight{hint}")
        return dict(weight=layer.weight, bias=layer.bias, stride=tuple(layer.stride), padding=tuple(layer.padding),
                    output_padding=tuple(layer.output_padding), dilation=tuple(layer.dilation),
                    groups=layer.groups), True
    if not transposed:
        raise ValueError("output_padding and output_size are for transposed convolutions (transposed=True), "
                         f"got output_padding={given['output_padding']!r}, output_size={output_size!r}")
    if output_size is not None:
        raise TypeError("output_size is the argument of a transposed layer's forward (explain(layer, x, at, "
                        "output_size=...)); with a weight pass output_padding")
    if given["padding_mode"] != "zeros":
        raise ValueError(f"padding_mode of a transposed convolution must be 'zeros' (as torch's "
                         f"conv_transpose and ConvTranspose layers), got padding_mode={given['padding_mode']!r}")
    args = {k: v for k, v in given.items() if k != "padding_mode"}
    return dict(args, weight=layer_or_weight), False


def _bind(args: dict, x, grad_output=None):
    """The validated call (:func:`convscope.spec.bind_transpose`), its dimension read from the weight."""
    w = as_array(args["weight"], "weight")
    nd = w.ndim - 2 if w.ndim in (3, 4, 5) else 2
    extra = {} if grad_output is None else dict(grad_output=grad_output)
    return bind_transpose(nd, input=x, weight=w, bias=args["bias"], stride=args["stride"], padding=args["padding"],
                          output_padding=args["output_padding"], groups=args["groups"], dilation=args["dilation"],
                          order=("input", "weight", "bias", "grad_output"), **extra)


def _bound(layer_or_weight, x, form, transposed, output_size, given, grad_output=None, with_grad=False):
    """(call, from a layer, from torch): the call bound once (again with the ``output_padding`` that
    ``output_size`` picks), grad_output all ones when None and ``with_grad``."""
    args, from_layer = _arguments(layer_or_weight, form, transposed, output_size, given)
    from_torch = _is_torch_layer(layer_or_weight) or any(
        _is_torch_tensor(a) for a in (args["weight"], x, args["bias"], grad_output))
    call = _bind(args, x)
    if output_size is not None:
        args["output_padding"] = output_padding_for(output_size, np.shape(call.input), call.conv.spec)
        call = _bind(args, x)
    if with_grad:
        if grad_output is None:
            grad_output = np.ones(call.caller_output_shape(), dtype=call.dtype)
        call = _bind(args, x, grad_output)
    return call, from_layer, from_torch


def _sizes(call):
    """(per-axis kernel, stride, padding, dilation, output_padding, input size, output size)."""
    s = call.conv.spec
    return (s.kernel_size, s.stride, tuple(p for p, _ in s.padding), s.dilation, call.output_padding,
            call.input_spatial, tuple(call.conv.shape.spatial))


def _batched(a: np.ndarray, call) -> np.ndarray:
    return a if call.batched else a[None]


def _passed(call, index: tuple) -> tuple:
    """A batched index ``(n, c, …)`` as the caller's array takes it (no ``n`` when unbatched)."""
    return tuple(index) if call.batched else tuple(index[1:])


def _axis_names(call) -> tuple:
    return tuple(a.lower() for a in AXIS_LETTERS[call.ndim])


# --------------------------------------------------------------------------- the gather view


def gather_arrays(x: np.ndarray, weight: np.ndarray, stride, padding, dilation, output_padding, groups: int):
    """The gather view's arrays: ``(z, w_flipped, offsets)``.

    ``x`` is ``(C_in, *I)`` (one sample), ``weight`` ``(C_in, C_out/groups, *k)``.  ``z`` (``(C_in, *Z)``, the
    input's dtype) is ``x`` with ``stride − 1`` zeros inserted between its elements along each axis, padded by
    ``dilation·(k − 1) − padding`` zeros on each side and ``output_padding`` more at the end (cropped where
    that is negative); ``w_flipped`` (``(C_out, C_in/groups, *k)``) is the kernel flipped along every spatial
    axis with in/out swapped within each group.  ``conv(z, w_flipped, dilation=dilation, groups=groups)``
    is the transposed convolution of ``x``.  ``offsets[a]`` is the ``z`` coordinate of input element 0 along
    axis ``a`` (input element ``i`` sits at ``offsets[a] + i·stride``; it may be negative when cropped).

    >>> z, w2, off = gather_arrays(np.array([[1.0, 2.0, 3.0]]), np.array([[[1.0, 2.0, 3.0]]]), (2,), (1,), (1,),
    ...                            (0,), 1)
    >>> z, w2, off
    (array([[0., 1., 0., 2., 0., 3., 0.]]), array([[[3., 2., 1.]]]), (1,))
    """
    nd = x.ndim - 1
    C_in, out_per_group = weight.shape[:2]
    spread = np.zeros((C_in,) + tuple((n - 1) * s + 1 for n, s in zip(x.shape[1:], stride)), dtype=x.dtype)
    spread[(slice(None),) + tuple(slice(None, None, s) for s in stride)] = x      # (C_in, *((I − 1)·s + 1))
    before, after = zip(*(gather_padding(k, p, d, a)
                          for k, p, d, a in zip(weight.shape[2:], padding, dilation, output_padding)))
    z = np.pad(spread, [(0, 0)] + [(max(b, 0), max(a, 0)) for b, a in zip(before, after)])
    z = z[(slice(None),) + tuple(slice(max(-b, 0), z.shape[1 + ax] - max(-a, 0))
                                 for ax, (b, a) in enumerate(zip(before, after)))]
    k = weight.shape[2:]
    w = weight.reshape((groups, C_in // groups, out_per_group) + k)           # (G, C_in/G, C_out/G, *k)
    w = w[(Ellipsis,) + (slice(None, None, -1),) * nd]                        # flipped taps
    w = np.swapaxes(w, 1, 2).reshape((groups * out_per_group, C_in // groups) + k)   # (C_out, C_in/G, *k)
    return z, np.ascontiguousarray(w), tuple(before)


# --------------------------------------------------------------------------- the explanation


@dataclass
class TransposedExplanation:
    """How one number of a transposed convolution is made.

    ``kind`` is ``'output'`` (:func:`convscope.explain` with ``transposed=True`` or a transposed layer) or
    ``'input'``, ``'weight'``, ``'bias'`` (:func:`convscope.explain_grad`).  ``value`` is the number
    convscope returns at ``at``; ``sum_of_products + bias`` is the same sum done term by term in float64.

    For an output: ``terms`` is the scatter view, one :class:`~convscope.explain.core.Term` per (input
    element, kernel tap) landing on ``at``: ``input_index`` (the full index in the input as passed),
    ``weight_index`` ``(c_in, o_in_group, *taps)``, their values and product, ``output_index`` = ``at``.
    ``axis_taps[a]`` are the ``(i, u)`` pairs landing on ``at``'s row along axis ``a``.  ``gather`` is the
    ordinary explanation of the same number as a convolution of ``gather_input`` (the zero-inserted, padded
    sample, in the caller's layout with a batch of one) with ``gather_weight`` (the flipped kernel) at
    ``gather_at``; ``gather_offsets[a]`` is where input element 0 sits in ``gather_input`` along axis ``a``.

    For a gradient: ``terms`` name their factors, ``output_index``/``grad_output_value`` (grad_output's
    element) and ``weight_index``/``weight_value`` (∂input) or ``input_index``/``input_value`` (∂weight).
    """

    kind: str
    at: tuple
    value: float
    terms: list = field(repr=False)
    sum_of_products: float
    bias: float = 0.0
    torch_value: float | None = None
    reason: str | None = None
    call: object = field(default=None, repr=False)
    has_bias: bool = field(default=False, repr=False)
    axis_taps: tuple = field(default=(), repr=False)
    gather_input: np.ndarray | None = field(default=None, repr=False)
    gather_weight: np.ndarray | None = field(default=None, repr=False)
    gather_at: tuple | None = field(default=None, repr=False)
    gather_offsets: tuple = field(default=(), repr=False)
    _gather: object = field(default=None, repr=False)

    @property
    def ndim(self) -> int:
        return self.call.ndim

    @property
    def gather(self):
        """The gather view: :func:`convscope.explain` of the ordinary convolution (stride 1, this dilation
        and groups) of ``gather_input`` with ``gather_weight`` at ``gather_at``; its value is this value."""
        if self.kind != "output":
            raise TypeError(f"the gather view is of output elements; this explains ∂L/∂{self.kind}")
        if self._gather is None:
            from .core import explain

            s = self.call.conv.spec
            bias = None if self.call.bias is None else self.call.bias
            self._gather = explain(self.gather_weight, self.gather_input, self.gather_at, bias=bias,
                                   dilation=s.dilation, groups=s.groups)
        return self._gather

    def text(self, decimals: int | None = None) -> str:
        """The explanation as plain text (``decimals``: None picks 0 for whole numbers, else 4)."""
        decimals = check_decimals(decimals)
        dec = _decimals_for(self) if decimals is None else decimals
        lines = _output_text(self, dec) if self.kind == "output" else _grad_text(self, dec)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        return _html(self)


def _term_sum(terms) -> float:
    return float(np.sum([t.product for t in terms], dtype=np.float64)) if terms else 0.0


def _torch_result(call, wrt: str | None, at: tuple):
    """torch's ``conv_transpose{n}d`` (``wrt=None``) or its gradient by autograd at ``at``, for the call's
    arrays (float16 computed in float32, then rounded)."""
    import torch

    def tensor(a, grad=False):
        a = np.array(a, dtype=np.float32 if a.dtype == np.float16 else a.dtype)
        return torch.tensor(a, requires_grad=grad)

    s = call.conv.spec
    x = tensor(_batched(np.asarray(call.input), call), True)
    w = tensor(np.asarray(call.weight), True)
    b = tensor(np.zeros(call.weight.shape[1] * s.groups, call.dtype) if call.bias is None or wrt else
               np.asarray(call.bias), True)
    fn = getattr(torch.nn.functional, f"conv_transpose{call.ndim}d")
    y = fn(x, w, b, s.stride, tuple(p for p, _ in s.padding), call.output_padding, s.groups, s.dilation)
    if wrt is None:
        out = y.detach().numpy().astype(call.dtype)
        return _as_float((out if call.batched else out[0])[at])
    (y * tensor(_batched(np.asarray(call.grad_output), call))).sum().backward()
    grad = {"input": x, "weight": w, "bias": b}[wrt].grad.numpy().astype(call.dtype)
    if wrt == "input" and not call.batched:
        grad = grad[0]
    return _as_float(grad[at])


def explain_transposed(layer_or_weight, x, at, bias=None, stride=1, padding=0, dilation=1, groups=1,
                       padding_mode="zeros", *, transposed=True, output_padding=0,
                       output_size=None) -> TransposedExplanation:
    """:func:`convscope.explain` of a transposed convolution (``transposed=True``, or a transposed layer).

    ``at`` is ``(n, c_out, *out_index)`` for batched input, ``(c_out, *out_index)`` unbatched.  With a layer
    (convscope's or torch's ``ConvTranspose1d/2d/3d``) the hyper-parameters are the layer's, and
    ``output_size`` picks the output padding as the layer's ``forward(x, output_size)`` does.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> x, w = np.array([[[1.0, 2.0, 3.0]]]), np.ones((1, 1, 3))
    >>> e = convscope.explain(w, x, (0, 0, 1), stride=2, padding=1, transposed=True)
    >>> e.value, [(t.input_index, t.weight_index) for t in e.terms]
    (3.0, [((0, 0, 0), (0, 0, 2)), ((0, 0, 1), (0, 0, 0))])
    """
    given = dict(bias=bias, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation,
                 groups=groups, padding_mode=padding_mode)
    call, from_layer, from_torch = _bound(layer_or_weight, x, "explain(layer, x, at)", transposed, output_size,
                                          given)
    nd = call.ndim
    k, s, p, d, a, I, O = _sizes(call)
    Cin, Og, G = call.weight.shape[0], call.weight.shape[1], call.conv.spec.groups
    Cout, Cg = Og * G, Cin // G
    layout = ", ".join(AXIS_LETTERS[nd])
    if call.batched:
        at_full = _normalize_at(at, ("n", "c_out") + _axis_names(call), (call.conv.shape.N, Cout) + O,
                                f"batched input (N, C_in, {layout})")
    else:
        at_full = (0,) + _normalize_at(at, ("c_out",) + _axis_names(call), (Cout,) + O,
                                       f"unbatched input (C_in, {layout})")
    n, o_full, r = at_full[0], at_full[1], at_full[2:]
    out_at = _passed(call, at_full)
    axis_taps = tuple(transposed_taps(r[ax], I[ax], k[ax], s[ax], p[ax], d[ax]) for ax in range(nd))
    _check_terms(f"y[{idx(out_at)}]", "(C_in/groups)·(taps landing along each axis)",
                 (Cg,) + tuple(len(t) for t in axis_taps), "for example with fewer input channels or a smaller kernel")

    y = getattr(functional, f"conv_transpose{nd}d")(call.input, call.weight, call.bias, s, p, a, G, d)
    value = _as_float(y[out_at])
    xb, w = _batched(np.asarray(call.input), call), np.asarray(call.weight)
    g, o = divmod(o_full, Og)
    terms = []
    for c in range(g * Cg, (g + 1) * Cg):
        for combo in itertools.product(*axis_taps):
            i = tuple(pair[0] for pair in combo)
            u = tuple(pair[1] for pair in combo)
            xv, wv = _as_float(xb[(n, c) + i]), _as_float(w[(c, o) + u])
            terms.append(Term(product=xv * wv, input_index=_passed(call, (n, c) + i), input_value=xv,
                              weight_index=(c, o) + u, weight_value=wv, output_index=out_at, tap=u))
    bias_value = _as_float(call.bias[o_full]) if call.bias is not None else 0.0
    z, w_flipped, offsets = gather_arrays(xb[n], w, s, p, d, a, G)
    torch_value = _torch_result(call, None, out_at) if (from_torch or from_layer) and torch_available() else None
    return TransposedExplanation(
        kind="output", at=out_at, value=value, terms=terms, sum_of_products=_term_sum(terms), bias=bias_value,
        torch_value=torch_value, call=call, has_bias=call.bias is not None, axis_taps=axis_taps,
        gather_input=z[None] if call.batched else z, gather_weight=w_flipped,
        gather_at=((0,) if call.batched else ()) + (o_full,) + r, gather_offsets=offsets)


def explain_grad_transposed(layer_or_weight, x, grad_output=None, wrt="input", at=None, stride=1, padding=0,
                            dilation=1, groups=1, padding_mode="zeros", *, transposed=True, output_padding=0,
                            output_size=None) -> TransposedExplanation:
    """:func:`convscope.explain_grad` of a transposed convolution, for ``L = sum(conv_transpose(x, w) ·
    grad_output)`` (grad_output None: all ones).

    * ``wrt='input'``, ``at=(n, c_in, *index)`` (no ``n`` unbatched): Σ grad_output · weight over the output
      elements this input element's stamps land on;
    * ``wrt='weight'``, ``at=(c_in, o, *taps)``: Σ input · grad_output over the input elements and where
      they land through this tap;
    * ``wrt='bias'``, ``at=(o,)``: Σ grad_output.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> x, w = np.array([[[1.0, 2.0, 3.0]]]), np.array([[[1.0, 10.0, 100.0]]])
    >>> e = convscope.explain_grad(w, x, None, "input", (0, 0, 0), stride=2, padding=1, transposed=True)
    >>> e.value, [(t.output_index, t.weight_index) for t in e.terms]
    (110.0, [((0, 0, 0), (0, 0, 1)), ((0, 0, 1), (0, 0, 2))])
    """
    if not isinstance(wrt, str) or wrt not in WRT:
        raise ValueError(f"wrt must be one of 'input', 'weight', 'bias', got {wrt!r}")
    given = dict(bias=None, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation,
                 groups=groups, padding_mode=padding_mode)
    if at is None:
        raise TypeError("at is required: the index of the gradient element to explain")
    call, from_layer, from_torch = _bound(layer_or_weight, x, "explain_grad(layer, ...)", transposed, output_size,
                                          given, grad_output, with_grad=True)
    call = _without_bias(call)
    nd = call.ndim
    k, s, p, d, a, I, O = _sizes(call)
    Cin, Og, G = call.weight.shape[0], call.weight.shape[1], call.conv.spec.groups
    Cg, N = Cin // G, call.conv.shape.N
    xb, w = _batched(np.asarray(call.input), call), np.asarray(call.weight)
    gy = _batched(np.asarray(call.grad_output), call)
    layout = ", ".join(AXIS_LETTERS[nd])
    names = _axis_names(call)
    terms, reason = [], None
    if wrt == "input":
        if call.batched:
            at_full = _normalize_at(at, ("n", "c_in") + names, (N, Cin) + I, f"batched input (N, C_in, {layout})")
        else:
            at_full = (0,) + _normalize_at(at, ("c_in",) + names, (Cin,) + I, f"unbatched input (C_in, {layout})")
        at_out = _passed(call, at_full)
        n, c, i = at_full[0], at_full[1], at_full[2:]
        reach = tuple(transposed_reach(i[ax], O[ax], k[ax], s[ax], p[ax], d[ax]) for ax in range(nd))
        _check_terms(f"∂L/∂x[{idx(at_out)}]", "(C_out/groups)·(taps landing inside the output along each axis)",
                     (Og,) + tuple(len(t) for t in reach), "for example with fewer output channels or a smaller kernel")
        g = c // Cg
        xv = _as_float(xb[(n, c) + i])
        for o in range(Og):
            for combo in itertools.product(*reach):
                r = tuple(pair[0] for pair in combo)
                u = tuple(pair[1] for pair in combo)
                gv, wv = _as_float(gy[(n, g * Og + o) + r]), _as_float(w[(c, o) + u])
                terms.append(Term(product=gv * wv, input_index=at_out, input_value=xv, weight_index=(c, o) + u,
                                  weight_value=wv, output_index=_passed(call, (n, g * Og + o) + r),
                                  grad_output_value=gv, tap=u))
        if not terms:
            reason = _cropped_reason(call, i, reach)
    elif wrt == "weight":
        at_out = _normalize_at(at, ("c_in", "o") + _TAP_NAMES[nd], tuple(w.shape),
                               f"the weight (C_in, C_out/groups, {', '.join('k' + x for x in AXIS_LETTERS[nd])})")
        c, o, u = at_out[0], at_out[1], at_out[2:]
        _check_terms(f"∂L/∂w[{idx(at_out)}]", "N·(input elements)" if call.batched else "(input elements)",
                     ((N,) if call.batched else ()) + I, "for example of fewer samples or a crop of the input")
        o_full = (c // Cg) * Og + o
        # per axis, the (input element, output row) pairs that tap u joins inside the output
        joined = [[(i, r) for i in range(I[ax]) for r, tap in transposed_reach(i, O[ax], k[ax], s[ax], p[ax], d[ax])
                   if tap == u[ax]] for ax in range(nd)]
        for n in range(N):
            for combo in itertools.product(*joined):
                i = tuple(pair[0] for pair in combo)
                r = tuple(pair[1] for pair in combo)
                xv, gv = _as_float(xb[(n, c) + i]), _as_float(gy[(n, o_full) + r])
                terms.append(Term(product=xv * gv, input_index=_passed(call, (n, c) + i), input_value=xv,
                                  output_index=_passed(call, (n, o_full) + r), grad_output_value=gv, tap=u))
    else:
        (o,) = _normalize_at(at, ("o",), (Og * G,), "the bias (C_out,)")
        at_out = (o,)
        _check_terms(f"∂L/∂bias[{o}]", "N·(output elements)" if call.batched else "(output elements)",
                     ((N,) if call.batched else ()) + O, "for example of fewer samples or a smaller input")
        for n in range(N):
            for r in itertools.product(*(range(m) for m in O)):
                gv = _as_float(gy[(n, o) + r])
                terms.append(Term(product=gv, output_index=_passed(call, (n, o) + r), grad_output_value=gv))
    backward = getattr(functional, f"conv_transpose{nd}d_backward")
    grads = backward(call.grad_output, call.input, call.weight, s, p, a, G, d,
                     output_mask=tuple(name == wrt for name in WRT))
    value = _as_float(getattr(grads, wrt)[at_out])
    torch_value = _torch_result(call, wrt, at_out) if (from_torch or from_layer) and torch_available() else None
    return TransposedExplanation(kind=wrt, at=at_out, value=value, terms=terms, sum_of_products=_term_sum(terms),
                                 torch_value=torch_value, reason=reason, call=call)


def _without_bias(call):
    return replace(call, bias=None)   # the gradients do not depend on the bias


def _cropped_reason(call, i: tuple, reach: tuple) -> str:
    """Why an input element's stamps all land outside the output (padding crops them)."""
    k, s, p, d, a, I, O = _sizes(call)
    ax = next(ax for ax in range(call.ndim) if not reach[ax])
    rows = [i[ax] * s[ax] + u * d[ax] - p[ax] for u in range(k[ax])]
    name = AXIS_LETTERS[call.ndim][ax]
    return (f"along {name} input element {i[ax]} stamps its kernel on rows {', '.join(map(str, rows))} "
            f"(i·s + u·d − p), all outside the output's 0..{O[ax] - 1}: padding {p[ax]} crops them")


# --------------------------------------------------------------------------- text


def _decimals_for(e: TransposedExplanation) -> int:
    values = [e.value, e.bias, e.sum_of_products]
    for t in e.terms:
        values += [t.product, t.input_value or 0.0, t.weight_value or 0.0, t.grad_output_value or 0.0]
    arr = np.asarray(values, dtype=np.float64)
    whole = np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 1e9)
    return 0 if whole else 4


def _layer_line(e: TransposedExplanation) -> str:
    call = e.call
    k, s, p, d, a, I, O = _sizes(call)
    in_shape = tuple(np.shape(call.input))
    parts = [f"input {in_shape}", f"weight {tuple(call.weight.shape)}"]
    if e.kind == "output":
        parts.append("bias" if e.has_bias else "no bias")
    parts += [f"stride {s}", f"padding {p}", f"output_padding {a}", f"dilation {d}",
              f"groups {call.conv.spec.groups}"]
    return f"conv_transpose{call.ndim}d: " + ", ".join(parts)


def _size_lines(e: TransposedExplanation) -> list[str]:
    k, s, p, d, a, I, O = _sizes(e.call)
    lines = []
    for ax, name in enumerate(AXIS_LETTERS[e.ndim]):
        out = transposed_output_length(I[ax], k[ax], s[ax], p[ax], d[ax], a[ax])
        lines.append(f"  {name}_out = ({I[ax]}−1)·{s[ax]} − 2·{p[ax]} + {d[ax]}·({k[ax]}−1) + {a[ax]} + 1 "
                     f"= {out}")
    return lines


def _weight_lines(e: TransposedExplanation) -> list[str]:
    call = e.call
    Cin, Og, G = call.weight.shape[0], call.weight.shape[1], call.conv.spec.groups
    kernel = ", ".join("k" + x for x in AXIS_LETTERS[e.ndim])
    k, s, p, d, a, I, O = _sizes(call)
    lines = [
        f"Why the weight is (in_channels, out_channels/groups, {kernel}) = {tuple(call.weight.shape)}: a transposed",
        f"  convolution is the adjoint (the input gradient) of the convolution from {Og * G} to {Cin} channels",
        "  with this same weight, whose layout is (out, in/groups, …) from that convolution's side. So",
        "  w[c, o] is the kernel input channel c stamps onto output channel o of its group.",
    ]
    if any(a):
        lines.append(f"output_padding {a} only picks the output size: it adds {a} row(s) at the end of each axis "
                     "(none on the other side)")
        lines.append("  and pads nothing of the input; every size it picks convolves back to the input's size.")
    else:
        lines.append(f"output_padding {a} only picks the output size (the sizes up to stride − 1 more all "
                     "convolve back to the input's size).")
    return lines


def _output_text(e: TransposedExplanation, dec: int) -> list[str]:
    call = e.call
    k, s, p, d, a, I, O = _sizes(call)
    nd = e.ndim
    letters = [x.lower() for x in AXIS_LETTERS[nd]]
    Og = call.weight.shape[1]
    o_full = e.at[1] if call.batched else e.at[0]
    g, o = divmod(o_full, Og)
    head = f"y[{idx(e.at)}]"
    lines = [f"{head} = {num(e.value, dec)}   (a transposed convolution)", "  " + _layer_line(e), *_size_lines(e),
             "", *_weight_lines(e), "",
             "Scatter view: every input element stamps its value times the kernel onto the output;",
             "  input x[…, i] through kernel tap u lands on y[…, i·s + u·d − p] along each axis, so "
             f"{head} collects:"]
    for ax in range(nd):
        pairs = e.axis_taps[ax]
        where = ", ".join(f"i = {i} via u = {u} ({i}·{s[ax]} + {u}·{d[ax]} − {p[ax]} = {e.at[-nd + ax]})"
                          for i, u in pairs) or "nothing (no stamp reaches it)"
        lines.append(f"  along {AXIS_LETTERS[nd][ax]}: {len(pairs)} tap{'' if len(pairs) == 1 else 's'}: {where}")
    if call.conv.spec.groups > 1:
        Cg = call.weight.shape[0] // call.conv.spec.groups
        lines.append(f"  groups {call.conv.spec.groups}: output channel {o_full} is channel {o} of group {g}, which "
                     f"gathers input channels {g * Cg}..{(g + 1) * Cg - 1}")
    lines.append("  the terms:")
    shown = e.terms[:MAX_TERM_LINES]
    if shown:
        src = [f"input x[{idx(t.input_index)}] · w[{idx(t.weight_index)}] lands on {head}" for t in shown]
        width = max(map(len, src))
        for t, text in zip(shown, src):
            lines.append(f"    {text.ljust(width)}   {num(t.input_value, dec)} × {num(t.weight_value, dec)} = "
                         f"{num(t.product, dec)}")
    else:
        lines.append("    none: no input element's stamp lands here, so the output is the bias alone")
    if len(e.terms) > MAX_TERM_LINES:
        lines.append(f"    … and {len(e.terms) - MAX_TERM_LINES} more terms (all of them in .terms)")
    lines += [f"  sum of products   {num(e.sum_of_products, dec)}",
              f"  + bias[{o_full}]" + " " * max(1, 9 - len(str(o_full))) + num(e.bias, dec) if e.has_bias else
              "  + bias (none)     0",
              f"  = {head}   {num(e.value, dec)}", ""]
    lines += _gather_text(e, dec, letters)
    if e.torch_value is not None:
        diff = abs(e.torch_value - e.value)
        lines.append(f"torch computes {num(e.torch_value, max(dec, 4) if dec else 0)} "
                     f"({'the same number' if diff == 0 else f'|difference| {diff:.1e}'})")
    return lines


def _gather_text(e: TransposedExplanation, dec: int, letters) -> list[str]:
    call = e.call
    k, s, p, d, a, I, O = _sizes(call)
    nd = e.ndim
    q = tuple(gather_padding(k[ax], p[ax], d[ax])[0] for ax in range(nd))
    z_shape = tuple(e.gather_input.shape)
    lines = [
        "Gather view: the same number = a convolution of the zero-inserted input with the flipped kernel.",
        f"  z = x with stride − 1 = {tuple(v - 1 for v in s)} zero(s) inserted between its elements, padded by "
        f"d·(k − 1) − p = {q} on each side",
        f"  (plus output_padding {a} at the end; a negative amount crops): shape {z_shape}.",
        f"  w' = the kernel flipped along every axis, in/out swapped per group: w'[g·C_out/G + o, c] = "
        f"w[g·C_in/G + c, o, {', '.join('::-1' for _ in range(nd))}], shape {tuple(e.gather_weight.shape)}.",
        f"  y = conv{nd}d(z, w', stride 1, dilation {d}, groups {call.conv.spec.groups}): the window of "
        f"{'y[' + idx(e.at) + ']'} starts at z[…, {', '.join(map(str, e.gather_at[-nd:]))}].",
    ]
    ge = e.gather
    Cg = call.weight.shape[0] // call.conv.spec.groups
    r = e.gather_at[-nd:]
    for c in range(min(Cg, DETAIL_CHANNELS)):
        ch = ge.channels.start + c
        marks = _window_marks(e, r)
        lines.append(f"  input channel {ch}: the window of z (· an inserted zero, * padding) beside "
                     f"w'[{ge.at[-nd - 1]}, {c}]")
        win, ker = ge.window[c], ge.kernel[c]
        if nd == 1:
            win, ker, marks = win[None], ker[None], marks[None]
        if win.ndim == 2:
            left = ["window", *_marked_grid(win, marks, dec)]
            right = ["flipped kernel", *grid_lines(ker, dec)]
            width = max(map(len, left))
            lines += ["    " + (lft.ljust(width) + "     " + rgt).rstrip()
                      for lft, rgt in itertools.zip_longest(left, right, fillvalue="")]
        else:                                             # 3-d: one plane of the window per kernel depth
            for t in range(win.shape[0]):
                lines += [f"    depth tap {t}:", *("      " + line for line in _marked_grid(win[t], marks[t], dec)),
                          "      flipped kernel", *("      " + line for line in grid_lines(ker[t], dec))]
    if Cg > DETAIL_CHANNELS:
        lines.append(f"  ({Cg - DETAIL_CHANNELS} more input channels; every term in .gather.terms)")
    nonzero = sum(1 for t in ge.terms if t.input_value != 0)
    lines += [f"  Σ window · w' = {num(ge.sum_of_products, dec)}, + bias {num(ge.bias, dec)} = {num(ge.value, dec)}: "
              f"of its {len(ge.terms)} taps, those on inserted zeros and padding add 0,",
              f"  and the others ({nonzero} with a nonzero input) are the scatter view's terms.", ""]
    return lines


def _window_marks(e: TransposedExplanation, r: tuple) -> np.ndarray:
    """For each kernel tap of the gather window at ``r``: '' (an input element), '·' (inserted zero), '*' (padding)."""
    k, s, p, d, a, I, O = _sizes(e.call)
    per_axis = []
    for ax in range(e.ndim):
        kinds = [zero_inserted_cell(r[ax] + u * d[ax], e.gather_offsets[ax], s[ax], I[ax]) for u in range(k[ax])]
        per_axis.append(kinds)
    marks = np.empty(tuple(k), dtype=object)
    for u in itertools.product(*(range(n) for n in k)):
        kinds = [per_axis[ax][u[ax]] for ax in range(e.ndim)]
        marks[u] = "*" if "pad" in kinds else "·" if "zero" in kinds else ""
    return marks


def _marked_grid(a: np.ndarray, marks: np.ndarray, dec: int) -> list[str]:
    cells = [[num(v, dec) for v in row] for row in a]
    width = max(len(c) for row in cells for c in row)
    out = []
    for r, row in enumerate(cells):
        body = " ".join(c.rjust(width) + (marks[r, col] or " ") for col, c in enumerate(row)).rstrip()
        out.append(("[[" if r == 0 else " [") + body + ("]]" if r == len(cells) - 1 else "]"))
    return out


def _grad_text(e: TransposedExplanation, dec: int) -> list[str]:
    call = e.call
    k, s, p, d, a, I, O = _sizes(call)
    nd = e.ndim
    b = "n, " if call.batched else ""
    ax_i = ", ".join(_INDEX_NAMES[nd])
    taps = ", ".join(_TAP_NAMES[nd])
    letters = AXIS_LETTERS[nd] if nd > 1 else ("",)
    land = ", ".join(f"{i}·s{x} + {u}·d{x} − p{x}" for i, u, x in zip(_INDEX_NAMES[nd], _TAP_NAMES[nd], letters))
    head = {"input": "∂L/∂x", "weight": "∂L/∂w", "bias": "∂L/∂bias"}[e.kind] + f"[{idx(e.at)}]"
    lines = [f"{head} = {num(e.value, dec)}   where L = Σ y · grad_out, y the transposed convolution",
             "  " + _layer_line(e), "", "The formula"]
    if e.kind == "input":
        lines += [f"  ∂L/∂x[{b}c, {ax_i}] = Σ_o Σ_({taps}) grad_out[{b}g·C_out/G + o, {land}] · "
                  f"w[c, o, {taps}]:",
                  "  grad_out read where this input element's stamps landed (taps landing outside the output are "
                  "left out). It is the",
                  f"  ordinary convolution of grad_out with the same weight: conv{nd}d(grad_out, w, stride={s}, "
                  f"padding={p}, dilation={d}, groups={call.conv.spec.groups})."]
    elif e.kind == "weight":
        lines += [f"  ∂L/∂w[c, o, {taps}] = {'Σ_n ' if call.batched else ''}Σ_({ax_i}) x[{b}c, {ax_i}] · "
                  f"grad_out[{b}g·C_out/G + o, {land}]:",
                  "  each input element times grad_out where this tap stamped it."]
    else:
        lines.append(f"  ∂L/∂bias[o] = {'Σ_n ' if call.batched else ''}Σ grad_out[{b}o, …]: the bias is "
                     "added to every output of channel o.")
    lines.append("")
    if not e.terms:
        lines.append("No stamp of this input element lands inside the output, so the gradient is 0.")
        if e.reason:
            lines.append("Why: " + e.reason + ".")
    else:
        what = {"input": "grad_out × weight", "weight": "input × grad_out", "bias": "grad_out"}[e.kind]
        lines.append(f"The {len(e.terms)} term{'s' if len(e.terms) != 1 else ''} ({what} = product):")
        for t in e.terms[:MAX_TERM_LINES]:
            gname = f"grad_out[{idx(t.output_index)}]"
            if e.kind == "input":
                lines.append(f"  {gname} {num(t.grad_output_value, dec)} × w[{idx(t.weight_index)}] "
                             f"{num(t.weight_value, dec)} = {num(t.product, dec)}")
            elif e.kind == "weight":
                lines.append(f"  x[{idx(t.input_index)}] {num(t.input_value, dec)} × {gname} "
                             f"{num(t.grad_output_value, dec)} = {num(t.product, dec)}")
            else:
                lines.append(f"  {gname} {num(t.product, dec)}")
        if len(e.terms) > MAX_TERM_LINES:
            lines.append(f"  … and {len(e.terms) - MAX_TERM_LINES} more terms (all of them in .terms)")
        lines.append(f"sum of the terms: {num(e.sum_of_products, dec)}")
    lines.append(f"= {head} = {num(e.value, dec)}")
    if e.torch_value is not None:
        diff = abs(e.torch_value - e.value)
        lines.append(f"torch computes {num(e.torch_value, max(dec, 4) if dec else 0)} "
                     f"({'the same number' if diff == 0 else f'|difference| {diff:.1e}'})")
    return lines


# --------------------------------------------------------------------------- HTML

_STYLE = ("<style>.cs-texpl{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px}"
          ".cs-texpl pre{margin:2px 0}.cs-texpl table{border-collapse:collapse;margin:4px 0}"
          ".cs-texpl td{border:1px solid #ccc;padding:2px 6px;text-align:right}"
          ".cs-texpl td.cs-zero{color:#999;background:#f6f6f6}.cs-texpl td.cs-pad{color:#999;background:#eee;"
          "font-style:italic}.cs-texpl td.cs-win{background:#ffe08a;outline:2px solid #d19a00}</style>")


def _html(e: TransposedExplanation) -> str:
    dec = _decimals_for(e)
    parts = [_STYLE, '<div class="cs-texpl">', f"<pre>{html.escape(e.text(dec))}</pre>"]
    if e.kind == "output" and e.ndim in (1, 2):
        parts.append(_gather_table(e, dec))
    parts.append("</div>")
    return "".join(parts)


def _gather_table(e: TransposedExplanation, dec: int) -> str:
    """The zero-inserted, padded input (first channel of the output's group) with the window highlighted."""
    k, s, p, d, a, I, O = _sizes(e.call)
    z = np.asarray(e.gather_input, dtype=np.float64)
    z = z[0] if e.call.batched else z
    Cg = e.call.weight.shape[0] // e.call.conv.spec.groups
    o_full = e.gather_at[-e.ndim - 1]
    ch = (o_full // e.call.weight.shape[1]) * Cg
    plane = z[ch] if e.ndim == 2 else z[ch][None]
    if plane.shape[1] > MAX_GRID or plane.shape[0] > MAX_GRID:
        return "<div>(the zero-inserted input is too large to draw; its window is above)</div>"
    r = e.gather_at[-e.ndim:]
    rows_r, cols_r = ((0,), r) if e.ndim == 1 else ((r[0],), (r[1],))
    kk, dd = ((1,) + tuple(k), (1,) + tuple(d)) if e.ndim == 1 else (k, d)
    win_rows = {rows_r[0] + u * dd[0] for u in range(kk[0])}
    win_cols = {cols_r[-1] + v * dd[1] for v in range(kk[1])}
    body = []
    for m in range(plane.shape[0]):
        cells = []
        for c in range(plane.shape[1]):
            if e.ndim == 2:
                kinds = (zero_inserted_cell(m, e.gather_offsets[0], s[0], I[0]),
                         zero_inserted_cell(c, e.gather_offsets[1], s[1], I[1]))
            else:
                kinds = (zero_inserted_cell(c, e.gather_offsets[0], s[0], I[0]),)
            cls = ["cs-pad"] if "pad" in kinds else ["cs-zero"] if "zero" in kinds else []
            if m in win_rows and c in win_cols:
                cls.append("cs-win")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{html.escape(num(plane[m, c], dec))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div>zero-inserted, padded input z, channel {ch}: the gather window highlighted "
            "(grey: inserted zeros and padding)</div><table>" + "".join(body) + "</table>")
