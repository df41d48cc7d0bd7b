"""How one number of a convolution is made: :class:`Explainer`, :func:`explain` and :func:`explain_grad`.

An :class:`Explainer` binds one call (:func:`convscope.spec.bind`), computes its output once and,
when a gradient is asked for, its three gradients once, and then explains any element.
:func:`explain` and :func:`explain_grad` build one and explain one element.

Every term comes from :mod:`convscope.geometry` (which pixel a tap reads, and which real pixel a
padding cell copies), the same tables the reference loops use; every ``value`` is the number
:func:`convscope.conv2d` (``conv1d``, ``conv3d``) or its ``_backward`` returns at that index.  So an
explanation cannot disagree with the computation it explains.

Forward, written for 2-d, for output ``(n, o, i, j)`` of group ``g = o // (C_out/groups)``::

    out[n, o, i, j] = bias[o] + Σ_c Σ_u Σ_v  x̃[n, g·Cg + c, i·sH + u·dH, j·sW + v·dW] · w[o, c, u, v]

one term per tap ``(c, u, v)``; ``x̃`` is the padded input.  1-d has one spatial index (output
``i``, tap ``u``), 3-d three (output ``(t, i, j)``, tap ``(r, u, v)``).

Backward, for ``L = Σ out · grad_out``::

    ∂L/∂x[n, c, h, w]  = Σ over the taps (o, i, j, u, v) that read pixel (c, h, w)  grad_out[n, o, i, j] · w[o, c', u, v]
    ∂L/∂w[o, c, u, v]  = Σ_n Σ_i Σ_j  grad_out[n, o, i, j] · x̃[n, g·Cg + c, i·sH + u·dH, j·sW + v·dW]
    ∂L/∂bias[o]        = Σ_n Σ_i Σ_j  grad_out[n, o, i, j]

(``c' = c − g·Cg``, the channel's index inside its group).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..functional import ConvGrads, _run_backward, _run_forward
from ..geometry import is_padding_cell, padded_cell, spec_tap_sources, unread_cause
from ..spec import (
    _NO_ARRAY,
    AXIS_LETTERS,
    ConvCall,
    ConvShape,
    ConvSpec,
    _is_int,
    _is_torch_tensor,
    as_array,
    bind,
)

WRT = ("input", "weight", "bias")
#: The most terms one explanation builds; each is a Python object, so more would take long and much memory.
#: A larger sum raises ValueError, before any term is built, saying how to ask a smaller question.
MAX_TERMS = 500_000

#: Per number of spatial dimensions, the letters of an output position, an input pixel and a kernel tap.
OUT_LETTERS = {1: ("i",), 2: ("i", "j"), 3: ("t", "i", "j")}
IN_LETTERS = {1: ("l",), 2: ("h", "w"), 3: ("d", "h", "w")}
TAP_LETTERS = {1: ("u",), 2: ("u", "v"), 3: ("r", "u", "v")}
#: Per number of spatial dimensions, the names of a line of the input along each axis.
LINE_NAMES = {1: ("position",), 2: ("row", "column"), 3: ("depth slice", "row", "column")}


class Term(NamedTuple):
    """One product of a sum.

    Forward terms (one per tap ``(c, *tap)``): ``input_value × weight_value``.
    Gradient terms: ``grad_output_value × weight_value`` (∂input),
    ``grad_output_value × input_value`` (∂weight) or ``grad_output_value`` alone (∂bias).

    Attributes
    ----------
    product : the term's value (float64 arithmetic on the array's values)
    is_padding : the tap read a padding cell
    input_index : the index of the pixel in the input as passed, ``(n, c, *spatial)`` for a batch
        (``(n, c, h, w)`` in 2-d) and ``(c, *spatial)`` unbatched (as ``output_index``), so
        ``x[input_index] == input_value``: the pixel read, or for reflect, replicate and circular
        padding the real pixel the padding cell copied; None for zero padding (and for bias terms)
    input_value : that pixel's value (0 for zero padding)
    weight_index : forward ``(c_in_group, *tap)`` of ``weight[o]``; ∂input ``(o, c_in_group, *tap)``
    weight_value : the weight
    output_index : gradient terms: the output element ``(n, o, *position)`` (no ``n`` unbatched)
    grad_output_value : gradient terms: ``grad_output`` there
    padded_index : the cell read in the padded input, one coordinate per spatial axis
        (``(row, col)`` in 2-d)
    tap : the kernel tap, one index per spatial axis (``(u, v)`` in 2-d)
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

    The order of ``terms``: an output's terms run over ``(c, *tap)`` in row-major order, the
    channel of the group first and the kernel's last axis fastest (``terms_shape`` is
    ``(C/groups, *kernel_size)``; :meth:`channel_terms` and :meth:`term` index it).  ∂input's
    terms run over the output channels of the group, then the (position, tap) pairs reading the
    pixel along each axis; ∂weight's and ∂bias's over ``(n, *position)`` in row-major order.
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
    terms_shape: tuple | None = field(default=None, repr=False)

    @property
    def ndim(self) -> int:
        """The number of spatial dimensions (1, 2 or 3)."""
        return self.spec.ndim

    def channel_terms(self, c: int) -> list:
        """An output's terms of the ``c``-th input channel of the group, in tap order."""
        taps = int(np.prod(self.terms_shape[1:]))
        return self.terms[c * taps:(c + 1) * taps]

    def term(self, c: int, *tap: int) -> Term:
        """An output's term of channel ``c`` of the group and kernel tap ``tap``."""
        return self.terms[int(np.ravel_multi_index((c,) + tuple(tap), self.terms_shape))]

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

_TORCH_CONV = ("Conv1d", "Conv2d", "Conv3d")


def _is_torch_layer(obj) -> bool:
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "weight") and hasattr(obj, "stride")


def _is_layer(obj) -> bool:
    from ..module import _ConvNd

    return isinstance(obj, _ConvNd) or _is_torch_layer(obj)


def _layer_arguments(layer) -> dict:
    """weight, bias and the hyper-parameters of a convscope or torch Conv1d, Conv2d or Conv3d."""
    if getattr(layer, "transposed", False) is True:
        raise TypeError(f"explanations are of convolution layers (Conv1d, Conv2d, Conv3d) only, not of "
                        f"transposed ones, got {type(layer).__name__}")
    if _is_torch_layer(layer):
        if type(layer).__name__ not in _TORCH_CONV:
            raise TypeError(f"layer must be a torch.nn.Conv1d, Conv2d or Conv3d or a convscope one, "
                            f"got {type(layer).__name__}")
        padding = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
        return dict(weight=layer.weight, bias=layer.bias, stride=tuple(layer.stride), padding=padding,
                    dilation=tuple(layer.dilation), groups=layer.groups, padding_mode=layer.padding_mode)
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


def _weight_ndim(weight: np.ndarray) -> int:
    """The number of spatial dimensions the weight's rank says: (C_out, C/groups, *kernel)."""
    if weight.ndim not in (3, 4, 5):
        raise ValueError("weight must be 3-D (C_out, C/groups, kL) for conv1d, 4-D (C_out, C/groups, kH, kW) "
                         f"for conv2d or 5-D (C_out, C/groups, kD, kH, kW) for conv3d, got shape {weight.shape}")
    return weight.ndim - 2


# --------------------------------------------------------------------------- torch


def _torch_conv(xt, wt, bt, spec: ConvSpec):
    """torch's conv{n}d of batched tensors, padded as ``nn.Conv{n}d`` pads for ``spec.padding_mode``."""
    import torch.nn.functional as F

    conv = getattr(F, f"conv{spec.ndim}d")
    if spec.padding_mode == "zeros":
        return conv(xt, wt, bt, spec.stride, spec.padding_arg, spec.dilation, spec.groups)
    pads = tuple(p for before_after in reversed(spec.padding) for p in before_after)  # last axis first
    return conv(F.pad(xt, pads, mode=spec.padding_mode), wt, bt, spec.stride, 0, spec.dilation, spec.groups)


def _torch_tensor(a, requires_grad: bool = False):
    """A torch copy of ``a``; float16 becomes float32."""
    import torch

    return torch.tensor(np.array(a, dtype=np.float32 if a.dtype == np.float16 else a.dtype),
                        requires_grad=requires_grad)


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- checks


def _check_terms(what: str, names: str, factors: tuple[int, ...], smaller: str) -> None:
    """Refuse, before building any, an explanation of more than :data:`MAX_TERMS` terms."""
    count = int(np.prod(factors, dtype=object))
    if count > MAX_TERMS:
        raise ValueError(f"{what} is a sum of {names} = {'·'.join(map(str, factors))} = {count} terms; an "
                         f"explanation builds at most {MAX_TERMS}: ask a smaller question, {smaller}")


def _smaller_input(unbatched: bool, ndim: int) -> str:
    crop = ", ".join([":64"] * ndim)
    if unbatched:
        return f"for example of a crop of the input (x[:, {crop}])"
    return f"for example of fewer samples or a crop of the input (x[:1, :, {crop}])"


def _unread_reason(spec: ConvSpec, shape, dim: int, r: int) -> str | None:
    """Why no window reads real coordinate ``r`` along spatial axis ``dim``, or None when one does
    (directly or through a padding cell that copies it)."""
    size = shape.spatial[dim]
    table = spec_tap_sources(spec, tuple(shape.spatial))[dim]
    if (table == r).any():
        return None
    (before, after), k, s, d = spec.padding[dim], spec.kernel_size[dim], spec.stride[dim], spec.dilation[dim]
    why = unread_cause(r, size, k, s, d, before, after)
    name = LINE_NAMES[spec.ndim][dim]
    i = why.window
    if why.cause == "floor":
        last_end = i * s + (k - 1) * d
        return (f"no window reaches {name} {r}: the last window ends at padded {name} {last_end} "
                f"(input {name} {last_end - before}), and the floor in the output-size formula drops the rest")
    if why.cause == "dilation":
        taps = ", ".join(str(i * s + u * d) for u in range(min(k, 4))) + (", …" if k > 4 else "")
        return (f"dilation {d} skips {name} {r}: it falls between two taps of window {i} "
                f"(padded {name}s {taps})")
    return (f"stride {s} skips {name} {r}: window {i} ends at padded {name} {i * s + (k - 1) * d} and "
            f"window {i + 1} starts at {(i + 1) * s}")


# --------------------------------------------------------------------------- the explainer


class Explainer:
    """One convolution, bound and computed once, that explains any of its numbers.

    ``Explainer(weight, x, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode='zeros',
    grad_output=None)`` or ``Explainer(layer, x, grad_output=None)`` with a convscope or torch
    ``Conv1d``, ``Conv2d`` or ``Conv3d``.  The number of spatial dimensions is the weight's rank
    minus 2: ``(C_out, C/groups, kL)`` is 1-d, ``(C_out, C/groups, kH, kW)`` 2-d and
    ``(C_out, C/groups, kD, kH, kW)`` 3-d; ``x`` is ``(N, C, *spatial)`` or unbatched
    ``(C, *spatial)``.  Everything is checked here, once, by :func:`convscope.spec.bind`.

    :attr:`output` (the convolution) is computed the first time it is needed, and :attr:`grads`
    (∂input, ∂weight, ∂bias of ``L = Σ out · grad_output``; ``grad_output=None`` means ones) the
    first time a gradient is explained; both are kept, so explaining every element costs one
    convolution and one backward pass, however many elements are explained.

    >>> import numpy as np, convscope
    >>> ex = convscope.Explainer(np.ones((1, 1, 2)), np.arange(5.0)[None], padding=1)
    >>> [ex.explain((0, i)).value for i in range(6)]
    [0.0, 1.0, 3.0, 5.0, 7.0, 4.0]
    >>> ex.explain_grad("input", (0, 2)).value                   # two windows read x[0, 2]
    2.0
    """

    def __init__(self, layer_or_weight, x, bias=None, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros", *, grad_output=None):
        args, from_layer = _arguments(layer_or_weight, "Explainer(layer, x)", bias=bias, stride=stride,
                                      padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode)
        self._bind(args, x, grad_output, from_layer)

    @classmethod
    def _of(cls, args: dict, x, grad_output, from_layer: bool) -> Explainer:
        self = cls.__new__(cls)
        self._bind(args, x, grad_output, from_layer)
        return self

    def _bind(self, args: dict, x, grad_output, from_layer: bool) -> None:
        weight = args["weight"]
        self.from_torch = from_layer or any(_is_torch_tensor(a) for a in (weight, x, args["bias"], grad_output))
        ndim = _weight_ndim(as_array(weight, "weight"))
        self.call: ConvCall = bind(ndim, input=x, weight=weight, bias=args["bias"],
                                   grad_output=_NO_ARRAY if grad_output is None else grad_output,
                                   stride=args["stride"], padding=args["padding"], dilation=args["dilation"],
                                   groups=args["groups"], padding_mode=args["padding_mode"],
                                   order=("input", "weight", "bias", "grad_output"))
        self.loss_given = grad_output is not None
        self._output = None
        self._grads = None
        self._torch = {}

    # ---- what was bound

    @property
    def spec(self) -> ConvSpec:
        return self.call.spec

    @property
    def shape(self):
        """Every size of the call (batched): a :class:`~convscope.spec.ConvShape` in 2-d, else a ``ConvShapeNd``."""
        return self.call.shape

    @property
    def ndim(self) -> int:
        return self.call.ndim

    @property
    def unbatched(self) -> bool:
        return not self.call.batched

    @property
    def grad_output(self) -> np.ndarray:
        """``grad_output`` as given, or ones of the output's shape."""
        if self.call.grad_output is not None:
            return self.call.grad_output
        return np.ones(self.call.caller_output_shape(), dtype=self.call.dtype)

    # ---- computed once

    @property
    def output(self) -> np.ndarray:
        """The convolution's output, as ``conv{n}d`` returns it (computed on first use, then kept)."""
        if self._output is None:
            self._output = _run_forward(self.call, None)
        return self._output

    @property
    def grads(self) -> ConvGrads:
        """(∂input, ∂weight, ∂bias) as ``conv{n}d_backward`` returns them (computed on first use, then kept)."""
        if self._grads is None:
            call = self.call.with_arrays(grad_output=self.grad_output)
            self._grads = ConvGrads(*_run_backward(call, None, (True, True, True)))
        return self._grads

    def with_grad_output(self, grad_output) -> Explainer:
        """The same convolution with another ``grad_output``: checked against the output's shape, the
        output already computed carried over, the gradients computed afresh when asked for."""
        c = self.call
        other = Explainer.__new__(Explainer)
        other._bind(dict(weight=c.weight, bias=c.bias, stride=c.spec.stride, padding=c.spec.padding_arg,
                         dilation=c.spec.dilation, groups=c.spec.groups, padding_mode=c.spec.padding_mode),
                    c.input, grad_output, False)
        other.from_torch = self.from_torch or _is_torch_tensor(grad_output)
        other._output = self._output
        return other

    def _torch_values(self, kind: str):
        """torch's output (kind 'output') or its three gradients, once per explainer."""
        if kind not in self._torch:
            c = self.call
            batch = (lambda a: a) if c.batched else (lambda a: a[None])
            unbatch = (lambda a: a) if c.batched else (lambda a: a[0])
            if kind == "output":
                import torch

                with torch.no_grad():
                    out = _torch_conv(_torch_tensor(batch(c.input)), _torch_tensor(c.weight),
                                      None if c.bias is None else _torch_tensor(c.bias), c.spec)
                self._torch[kind] = unbatch(out.numpy().astype(c.dtype))
            else:
                xt = _torch_tensor(batch(c.input), requires_grad=True)
                wt = _torch_tensor(c.weight, requires_grad=True)
                bt = _torch_tensor(np.zeros(c.weight.shape[0], dtype=c.dtype), requires_grad=True)
                (_torch_conv(xt, wt, bt, c.spec) * _torch_tensor(batch(self.grad_output))).sum().backward()
                dx, dw, db = (t.grad.numpy().astype(c.dtype) for t in (xt, wt, bt))
                self._torch[kind] = (unbatch(dx), dw, db)
        return self._torch[kind]

    def _torch_value(self, kind: str, at: tuple) -> float | None:
        if not (self.from_torch and torch_available()):
            return None
        if kind == "output":
            return _as_float(self._torch_values("output")[at])
        return _as_float(self._torch_values("grads")[WRT.index(kind)][at])

    def _as_passed(self, n: int, rest: tuple) -> tuple:
        """An index ``(n, *rest)`` of a batched view in the array as the caller passed it (no ``n`` unbatched)."""
        return tuple(rest) if self.unbatched else (n,) + tuple(rest)

    # ---- explanations

    def explain(self, at) -> Explanation:
        """How output element ``at`` is made: ``(n, c_out, *position)``, unbatched ``(c_out, *position)``."""
        spec, shape, nd = self.spec, self.shape, self.ndim
        letters = OUT_LETTERS[nd]
        sizes = (shape.out_channels,) + tuple(shape.out_spatial)
        axes = ", ".join(AXIS_LETTERS[nd])
        if self.unbatched:
            full = (0,) + _normalize_at(at, ("c_out",) + letters, sizes, f"unbatched input (C, {axes})")
        else:
            full = _normalize_at(at, ("n", "c_out") + letters, (shape.N,) + sizes, f"batched input (N, C, {axes})")
        n, o, pos = full[0], full[1], full[2:]
        out_at = full[1:] if self.unbatched else full
        kernel = tuple(spec.kernel_size)
        Cg = shape.in_per_group
        _check_terms(f"out[{', '.join(map(str, out_at))}]", "(C/groups)·" + "·".join("k" + a for a in AXIS_LETTERS[nd]),
                     (Cg,) + kernel, "for example with fewer input channels or a smaller kernel")
        value = _as_float(self.output[out_at])

        x = self.call.input
        xb = x if self.call.batched else x[None]
        wa = self.call.weight
        tables = spec_tap_sources(spec, tuple(shape.spatial))
        g = o // shape.out_per_group
        window = np.zeros((Cg,) + kernel)
        window_padding = np.zeros((Cg,) + kernel, dtype=bool)
        terms = []
        for c in range(Cg):
            ch = g * Cg + c
            for tap in itertools.product(*(range(k) for k in kernel)):   # row-major: the documented order
                p = padded_cell(pos, tap, spec.stride, spec.dilation)
                pad = is_padding_cell(p, shape.spatial, spec.padding)
                src = tuple(int(t[i, u]) for t, i, u in zip(tables, pos, tap))
                real = min(src) >= 0
                xv = _as_float(xb[(n, ch) + src]) if real else 0.0
                wv = _as_float(wa[(o, c) + tap])
                window[(c,) + tap] = xv
                window_padding[(c,) + tap] = pad
                terms.append(Term(product=xv * wv, is_padding=pad,
                                  input_index=self._as_passed(n, (ch,) + src) if real else None,
                                  input_value=xv, weight_index=(c,) + tap, weight_value=wv, padded_index=p, tap=tap))
        ba = self.call.bias
        channels = range(g * Cg, (g + 1) * Cg)
        return Explanation(
            kind="output", at=out_at, value=value, terms=terms,
            sum_of_products=float(np.sum([t.product for t in terms])), bias=_as_float(ba[o]) if ba is not None else 0.0,
            window=window, window_padding=window_padding, kernel=wa[o].astype(np.float64),
            torch_value=self._torch_value("output", out_at), channels=channels, spec=spec, shape=shape,
            unbatched=self.unbatched, dtype=self.call.dtype, has_bias=ba is not None,
            padded_input=self._padded_channels(xb[n], channels), terms_shape=(Cg,) + kernel,
        )

    def _padded_channels(self, x1, channels: range, limit: int = 40):
        """The padded input of ``channels`` (for pictures; 1-d and 2-d), or None when it is too large to show."""
        spec = self.spec
        if spec.ndim == 3 or max(spec.padded_size(self.shape.spatial)) > limit or len(channels) > 8:
            return None
        from ..padding import pad

        return np.array(pad(x1[channels.start:channels.stop].astype(np.float64), spec))  # a copy, never the caller's

    def explain_grad(self, wrt: str, at) -> Explanation:
        """How element ``at`` of ∂L/∂input (``wrt='input'``), ∂L/∂weight or ∂L/∂bias is made
        (see :func:`explain_grad`)."""
        if not isinstance(wrt, str) or wrt not in WRT:
            raise ValueError(f"wrt must be one of 'input', 'weight', 'bias', got {wrt!r}")
        if at is None:
            raise TypeError("at is required: the index of the gradient element to explain")
        spec, shape, nd = self.spec, self.shape, self.ndim
        axes = AXIS_LETTERS[nd]
        Cg, Og = shape.in_per_group, shape.out_per_group
        tables = spec_tap_sources(spec, tuple(shape.spatial))
        xb = self.call.input if self.call.batched else self.call.input[None]
        gy = self.grad_output
        gb = gy if self.call.batched else gy[None]
        wa = self.call.weight
        out_names = "·".join(f"{a}_out" for a in axes)   # the terms of ∂weight and ∂bias: one per output position
        reads = ((out_names, tuple(shape.out_spatial)) if self.unbatched else
                 ("N·" + out_names, (shape.N,) + tuple(shape.out_spatial)))
        terms, reason, channels = [], None, range(0)
        if wrt == "input":
            letters = IN_LETTERS[nd]
            sizes = (shape.C,) + tuple(shape.spatial)
            if self.unbatched:
                full = (0,) + _normalize_at(at, ("c",) + letters, sizes, f"unbatched input (C, {', '.join(axes)})")
            else:
                full = _normalize_at(at, ("n", "c") + letters, (shape.N,) + sizes,
                                     f"batched input (N, C, {', '.join(axes)})")
            n, c, pixel = full[0], full[1], full[2:]
            at_out = full[1:] if self.unbatched else full
            g = c // Cg
            channels = range(g * Og, (g + 1) * Og)  # the output channels that read input channel c
            pairs = [[(int(i), int(u)) for i, u in np.argwhere(t == r)] for t, r in zip(tables, pixel)]
            reading = "·".join(f"(taps reading {name} {letter})"
                               for name, letter in zip(LINE_NAMES[nd], letters))
            _check_terms(f"∂L/∂x[{', '.join(map(str, at_out))}]", "(C_out/groups)·" + reading,
                         (Og,) + tuple(len(p) for p in pairs),
                         "for example with fewer output channels or a smaller kernel")
            value = _as_float(self.grads.input[at_out])
            xv = _as_float(xb[full])
            for o in channels:
                for combo in itertools.product(*pairs):
                    out_pos, tap = tuple(i for i, _ in combo), tuple(u for _, u in combo)
                    gv, wv = _as_float(gb[(n, o) + out_pos]), _as_float(wa[(o, c - g * Cg) + tap])
                    p = padded_cell(out_pos, tap, spec.stride, spec.dilation)
                    terms.append(Term(product=gv * wv, is_padding=is_padding_cell(p, shape.spatial, spec.padding),
                                      input_index=at_out, input_value=xv,
                                      weight_index=(o, c - g * Cg) + tap, weight_value=wv,
                                      output_index=self._as_passed(n, (o,) + out_pos), grad_output_value=gv,
                                      padded_index=p, tap=tap))
            if not terms:
                reason = next(filter(None, (_unread_reason(spec, shape, dim, r) for dim, r in enumerate(pixel))), None)
        elif wrt == "weight":
            kernel = ", ".join("k" + a for a in axes)
            at_out = _normalize_at(at, ("o", "c") + TAP_LETTERS[nd], tuple(wa.shape), f"the weight (C_out, C/groups, {kernel})")
            o, c, tap = at_out[0], at_out[1], at_out[2:]
            _check_terms(f"∂L/∂w[{', '.join(map(str, at_out))}]", *reads, _smaller_input(self.unbatched, nd))
            value = _as_float(self.grads.weight[at_out])
            ch = (o // Og) * Cg + c
            channels = range(ch, ch + 1)
            for n in range(shape.N):
                for out_pos in itertools.product(*(range(m) for m in shape.out_spatial)):
                    src = tuple(int(t[i, u]) for t, i, u in zip(tables, out_pos, tap))
                    real = min(src) >= 0
                    xv = _as_float(xb[(n, ch) + src]) if real else 0.0
                    gv = _as_float(gb[(n, o) + out_pos])
                    p = padded_cell(out_pos, tap, spec.stride, spec.dilation)
                    terms.append(Term(product=gv * xv, is_padding=is_padding_cell(p, shape.spatial, spec.padding),
                                      input_index=self._as_passed(n, (ch,) + src) if real else None,
                                      input_value=xv, output_index=self._as_passed(n, (o,) + out_pos),
                                      grad_output_value=gv, padded_index=p, tap=tap))
        else:
            (o,) = _normalize_at(at, ("o",), (shape.out_channels,), "the bias (C_out,)")
            at_out = (o,)
            _check_terms(f"∂L/∂bias[{o}]", *reads, _smaller_input(self.unbatched, nd))
            value = _as_float(self.grads.bias[at_out])
            for n in range(shape.N):
                for out_pos in itertools.product(*(range(m) for m in shape.out_spatial)):
                    gv = _as_float(gb[(n, o) + out_pos])
                    terms.append(Term(product=gv, output_index=self._as_passed(n, (o,) + out_pos),
                                      grad_output_value=gv))
        return Explanation(
            kind=wrt, at=at_out, value=value, terms=terms,
            sum_of_products=float(np.sum([t.product for t in terms])) if terms else 0.0,
            torch_value=self._torch_value(wrt, at_out), reason=reason, channels=channels, spec=spec, shape=shape,
            unbatched=self.unbatched, dtype=self.call.dtype,
            kernel=wa[at_out[0]].astype(np.float64) if wrt == "weight" else None,
        )


# --------------------------------------------------------------------------- the functions


def _prepare(weight, x, bias, stride, padding, dilation, groups, padding_mode, grad_output=None,
             with_grad=False):
    """A 2-d call bound like conv2d / conv2d_backward, for animate: (input, weight, bias, grad_output (ones
    when ``with_grad`` and not given), spec, shape, whether an array came from torch)."""
    from_torch = any(_is_torch_tensor(a) for a in (weight, x, bias, grad_output))
    nd = _weight_ndim(as_array(weight, "weight"))
    if nd != 2:
        raise ValueError(f"animate draws 2-d convolutions (Conv2d) only, got a {nd}-d one (weight shape "
                         f"{tuple(as_array(weight, 'weight').shape)}); explain and explain_grad take 1-d and 3-d ones")
    call = bind(2, input=x, weight=weight, bias=bias, grad_output=_NO_ARRAY if grad_output is None else grad_output,
                stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
                order=("input", "weight", "bias", "grad_output"))
    gy = call.grad_output
    if with_grad and gy is None:
        gy = np.ones(call.caller_output_shape(), dtype=call.dtype)
    return call.input, call.weight, call.bias, gy, call.spec, call.shape, from_torch


def explain(layer_or_weight, x, at, bias=None, stride=1, padding=0, dilation=1, groups=1,
            padding_mode="zeros", *, transposed=False, output_padding=0, output_size=None) -> Explanation:
    """How output element ``at`` of a convolution is made, term by term.

    Two forms:

    * ``explain(weight, x, at, bias=None, stride=1, padding=0, dilation=1, groups=1,
      padding_mode='zeros')``, with :func:`convscope.conv2d`'s parameters (``conv1d``'s or
      ``conv3d``'s: the weight's rank says which, ``(C_out, C/groups, kL)`` for 1-d,
      ``(C_out, C/groups, kH, kW)`` for 2-d, ``(C_out, C/groups, kD, kH, kW)`` for 3-d);
    * ``explain(layer, x, at)``, where ``layer`` is a convscope or ``torch.nn`` ``Conv1d``,
      ``Conv2d`` or ``Conv3d`` (then the hyper-parameters come from the layer).

    A transposed convolution (``transposed=True`` with ``output_padding``, or a ``ConvTranspose1d/2d/3d``
    layer, with ``output_size``) is explained in its scatter and gather views by
    :func:`convscope.explain.transposed.explain_transposed`.

    ``x`` is a NumPy array or a torch tensor, ``(N, C, *spatial)`` (2-d: ``(N, C, H, W)``) or
    unbatched ``(C, *spatial)``; ``at`` is ``(n, c_out, *position)`` for batched input
    (``(n, c_out, i, j)`` in 2-d) and ``(c_out, *position)`` for unbatched input.
    When the layer or an array comes from torch, ``torch_value`` is torch's number.
    A sum of more than :data:`MAX_TERMS` terms raises ``ValueError``.  To explain many elements
    of one convolution, use an :class:`Explainer` (it computes the convolution once).

    Returns
    -------
    Explanation
        ``value`` (= ``conv2d(...)[at]``), ``bias``, ``sum_of_products``, ``terms`` (one per
        input channel of the group and kernel tap, in the order :class:`Explanation` documents),
        ``window`` (the input patch as the kernel sees it, ``(C/groups, *kernel_size)``, padding
        filled in), ``window_padding`` (which of its cells are padding), ``kernel``
        (``weight[c_out]``), ``torch_value``.

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
    >>> e1 = convscope.explain(np.array([[[1.0, -1.0]]]), np.array([[3.0, 5.0, 4.0]]), (0, 1))   # 1-d
    >>> e1.value, [t.input_index for t in e1.terms]
    (1.0, [(0, 1), (0, 2)])
    """
    from .transposed import explain_transposed, is_transposed_call
    if is_transposed_call(layer_or_weight, transposed, output_padding, output_size):
        return explain_transposed(layer_or_weight, x, at, bias, stride, padding, dilation, groups, padding_mode,
                                  transposed=transposed, output_padding=output_padding, output_size=output_size)
    args, from_layer = _arguments(layer_or_weight, "explain(layer, x, at)", bias=bias, stride=stride,
                                  padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode)
    return Explainer._of(args, x, None, from_layer).explain(at)


def explain_grad(layer_or_weight, x, grad_output=None, wrt="input", at=None, stride=1, padding=0,
                 dilation=1, groups=1, padding_mode="zeros", *, transposed=False, output_padding=0,
                 output_size=None) -> Explanation:
    """How one number of a gradient is made, for ``L = sum(conv{n}d(x, weight, ...) * grad_output)``.

    * ``wrt='input'``, ``at=(n, c, *pixel)`` (2-d: ``(n, c, h, w)``; ``(c, *pixel)`` unbatched): the
      output positions and kernel taps that read this pixel; the value is Σ grad_output · weight.
      A pixel no window reads has no terms and the value 0, and ``reason`` says why (for example a
      stride that skips it).
    * ``wrt='weight'``, ``at=(o, c, *tap)``: Σ over n and the output positions of
      grad_output · input (the input the tap read, padding included).
    * ``wrt='bias'``, ``at=(o,)``: Σ grad_output.

    ``layer_or_weight`` is a weight (its rank says 1-d, 2-d or 3-d, as in :func:`explain`) or a
    convscope / torch ``Conv1d``, ``Conv2d`` or ``Conv3d`` (then the hyper-parameters come from the
    layer); ``transposed=True`` or a ``ConvTranspose1d/2d/3d`` layer: see
    :func:`convscope.explain.transposed.explain_grad_transposed`.  ``grad_output`` has the output's
    shape; None means all ones (``L = out.sum()``).  ``value`` is ``conv{n}d_backward(...)``'s component
    at ``at``.  A sum of more than :data:`MAX_TERMS` terms raises ``ValueError`` (explain a crop of the
    input, or fewer samples).

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
    return Explainer._of(args, x, grad_output, from_layer).explain_grad(wrt, at)
