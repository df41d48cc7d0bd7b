"""One place that turns user arguments into a validated convolution.

Every public entry point (``conv1d``/``conv2d``/``conv3d`` and their ``_backward``, ``_input``,
``_weight`` and ``_output_size``, and the layers) goes through the functions here, so every check
and every error message lives in this module.

Three steps, for 1, 2 or 3 spatial dimensions:

1. :func:`make_spec` normalises the hyper-parameters (kernel size, stride,
   padding, dilation, groups, padding mode) into a frozen :class:`ConvSpec`.
   Ints become one value per axis once; ``'same'`` and ``'valid'`` are resolved to
   explicit per-axis ``(before, after)`` padding with torch's split.
2. :func:`check_shapes` checks a spec against the shapes of input, weight and
   bias and returns the sizes of everything the algorithms use: a :class:`ConvShape`
   (2-d: ``N, C, H, W, …``) or a :class:`ConvShapeNd` (``spatial``/``out_spatial`` tuples;
   the 2-d shape has them as properties).
3. :func:`bind` does both for one call's arrays and arguments and returns a frozen
   :class:`ConvCall` (spec, shape, dtype, batched or not, the arrays); :func:`lift` turns a
   1-d call into the 2-d call of height 1 it runs as.

Array arguments are converted by :func:`as_array`, which accepts NumPy arrays,
torch tensors and array-likes and enforces the dtype rules.

:func:`check_memory` refuses, before anything is allocated, a call whose results and
scratch cannot fit in the memory the process can still get (:func:`available_memory`).

Errors are ``TypeError`` for a wrong kind of value and ``ValueError`` for a
wrong value or shape; each message names the parameter, the rule and the value
received.
"""
from __future__ import annotations

import functools
import math
import numbers
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .geometry import output_length, transposed_output_length

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("valid", "same")
SUPPORTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
MAX_INT = 2**31 - 1  # the largest kernel size, stride, padding, dilation or groups accepted
MAX_ELEMENTS = 2**40  # the largest padded input (elements) a call may need
DIMS = (1, 2, 3)  # the numbers of spatial dimensions a convolution may have

Pair = tuple[int, int]

# per number of spatial dimensions: the axes' letters, their names, the tuple's name in messages
AXIS_LETTERS = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}
AXIS_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
_TUPLE_OF = {1: "a tuple of one int", 2: "a pair of ints", 3: "a tuple of 3 ints"}


@dataclass(frozen=True)
class ConvSpec:
    """The hyper-parameters of one convolution with 1, 2 or 3 spatial dimensions, normalised.

    Built by :func:`make_spec` only.  Every tuple has one entry per spatial axis
    (``(kL,)``, ``(kH, kW)`` or ``(kD, kH, kW)``).

    Attributes
    ----------
    kernel_size : per-axis kernel sizes
    stride : per-axis strides
    padding : per-axis ``(before, after)``, resolved from an int, a tuple,
        ``'valid'`` or ``'same'``; for 2-D ``((top, bottom), (left, right))``.
    dilation : per-axis dilations
    groups : int
    padding_mode : one of ``'zeros'``, ``'reflect'``, ``'replicate'``, ``'circular'``
    padding_arg : the padding as torch's layer stores it: a tuple, ``'same'`` or ``'valid'``.
    """

    kernel_size: tuple
    stride: tuple = (1, 1)
    padding: tuple = ((0, 0), (0, 0))
    dilation: tuple = (1, 1)
    groups: int = 1
    padding_mode: str = "zeros"
    padding_arg: tuple | str = (0, 0)

    @property
    def ndim(self) -> int:
        """The number of spatial dimensions (1, 2 or 3)."""
        return len(self.kernel_size)

    @property
    def pad_totals(self) -> tuple:
        """``before + after`` per axis."""
        return tuple(p0 + p1 for p0, p1 in self.padding)

    def padded_size(self, input_size) -> tuple:
        """The padded input's spatial size for an input of spatial size ``input_size``."""
        return tuple(n + t for n, t in zip(input_size, self.pad_totals))

    def output_size(self, input_size) -> tuple:
        """Output spatial size for an input of spatial size ``input_size`` (may be <= 0: not validated)."""
        return tuple(
            output_length(n, k, s, p0 + p1, d)
            for n, k, s, (p0, p1), d in zip(
                input_size, self.kernel_size, self.stride, self.padding, self.dilation
            )
        )

    def transposed_output_size(self, input_size, output_padding) -> tuple:
        """The output spatial size of the transposed convolution of an input of spatial size
        ``input_size`` (may be <= 0: not validated)."""
        return tuple(
            transposed_output_length(n, k, s, p0, d, a)
            for n, k, s, (p0, _), d, a in zip(
                input_size, self.kernel_size, self.stride, self.padding, self.dilation, output_padding
            )
        )

    def output_hw(self, input_hw: Pair) -> Pair:
        """Output height and width for an input of ``input_hw`` (2-D; may be <= 0: not validated)."""
        return self.output_size(input_hw)  # type: ignore[return-value]

    def unpadded(self) -> ConvSpec:
        """This convolution without padding (kernel, stride, dilation and groups kept): the spec of a
        block of an input that is already padded."""
        return make_spec(self.kernel_size, self.stride, 0, self.dilation, self.groups, ndim=self.ndim)

    def pointwise(self) -> ConvSpec:
        """Stride 1, dilation 1 and no padding (kernel and groups kept): for a 1×1 kernel, the
        convolution of the pixels its taps read, once they are subsampled."""
        return make_spec(self.kernel_size, 1, 0, 1, self.groups, ndim=self.ndim)


class ConvShape(NamedTuple):
    """All the sizes of one validated 2-D call (batched layout)."""

    N: int
    C: int
    H: int
    W: int
    out_channels: int
    H_out: int
    W_out: int
    groups: int

    @property
    def in_per_group(self) -> int:
        return self.C // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def spatial(self) -> tuple:
        return (self.H, self.W)

    @property
    def out_spatial(self) -> tuple:
        return (self.H_out, self.W_out)

    @property
    def ndim(self) -> int:
        return 2


class ConvShapeNd(NamedTuple):
    """All the sizes of one validated call with 1 or 3 spatial dimensions (batched layout)."""

    N: int
    C: int
    spatial: tuple
    out_channels: int
    out_spatial: tuple
    groups: int

    in_per_group = ConvShape.in_per_group
    out_per_group = ConvShape.out_per_group

    @property
    def ndim(self) -> int:
        return len(self.spatial)


def input_shape_of(shape) -> tuple:
    """The batched input's shape ``(N, C, *spatial)`` of a :class:`ConvShape` or :class:`ConvShapeNd`."""
    return (shape.N, shape.C) + tuple(shape.spatial)


def output_shape_of(shape) -> tuple:
    """The batched output's shape ``(N, C_out, *out_spatial)``."""
    return (shape.N, shape.out_channels) + tuple(shape.out_spatial)


# --------------------------------------------------------------------------- scalars


def _is_int(value) -> bool:
    if type(value) is int:                                                # the common case, without the ABC check
        return True
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _ints(items) -> bool:
    """Whether every item is a plain ``int`` (not a bool, not a NumPy integer)."""
    for v in items:
        if type(v) is not int:
            return False
    return True


def _fmt(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_ndim(ndim) -> int:
    if not _is_int(ndim) or ndim not in DIMS:
        raise ValueError(f"the number of spatial dimensions must be 1, 2 or 3, got {_fmt(ndim)}")
    return int(ndim)


def to_tuple(value, name: str, ndim: int = 2) -> tuple:
    """``3 -> (3,) * ndim``; a tuple of ``ndim`` ints unchanged.  Rejects bools, floats, strings,
    wrong lengths and values beyond ``MAX_INT``."""
    if type(value) is int and value <= MAX_INT:                          # the common cases first
        return (value,) * ndim
    if type(value) is tuple and len(value) == ndim and _ints(value) and max(value) <= MAX_INT:
        return value
    what = f"an int or {_TUPLE_OF[ndim]}"
    if _is_int(value):
        items = (int(value),) * ndim
    elif isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        items = list(value)
        if len(items) != ndim:
            raise ValueError(f"{name} must be {what}, got {len(items)} values: {_fmt(tuple(items))}")
        if not all(_is_int(v) for v in items):
            raise TypeError(f"{name} must be {what}, got {_fmt(tuple(items))}")
        items = tuple(int(v) for v in items)
    else:
        raise TypeError(f"{name} must be {what}, got {_fmt(value)} ({type(value).__name__})")
    if max(items) > MAX_INT:
        raise ValueError(f"{name} must be at most {MAX_INT}, got {items}")
    return items


def to_pair(value, name: str) -> Pair:
    """``3 -> (3, 3)``; ``(3, 2) -> (3, 2)`` (:func:`to_tuple` for two axes)."""
    return to_tuple(value, name, 2)  # type: ignore[return-value]


def positive_tuple(value, name: str, ndim: int = 2) -> tuple:
    items = to_tuple(value, name, ndim)
    if min(items) < 1:
        raise ValueError(f"{name} must be positive, got {items}")
    return items


def positive_pair(value, name: str) -> Pair:
    return positive_tuple(value, name, 2)  # type: ignore[return-value]


def check_positive_int(value, name: str) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {_fmt(value)} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    if value > MAX_INT:
        raise ValueError(f"{name} must be at most {MAX_INT}, got {value}")
    return int(value)


def check_padding_mode(padding_mode) -> str:
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(
            f"padding_mode must be one of {', '.join(repr(m) for m in PADDING_MODES)}, "
            f"got {_fmt(padding_mode)}"
        )
    return padding_mode


def normalize_padding(padding, ndim: int = 2) -> tuple | str:
    """``1 -> (1,) * ndim``, a tuple of ``ndim`` ints unchanged, ``'same'``/``'valid'`` unchanged."""
    what = f"an int, {_TUPLE_OF[ndim]}, 'valid' or 'same'"
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise ValueError(f"padding must be {what}, got {padding!r}")
        return padding
    try:
        items = to_tuple(padding, "padding", ndim)
    except TypeError:
        raise TypeError(f"padding must be {what}, got {_fmt(padding)} ({type(padding).__name__})") from None
    if min(items) < 0:
        raise ValueError(f"padding must be non-negative, got {items}")
    return items


def resolve_padding(padding_arg, kernel_size: tuple, dilation: tuple) -> tuple:
    """Explicit per-axis ``(before, after)`` padding.

    ``'same'`` pads a total of ``d·(k−1)`` per dimension, ``total // 2`` before
    (top/left) and the rest (one more when the total is odd) after, exactly as torch does.
    """
    if padding_arg == "valid":
        return ((0, 0),) * len(kernel_size)
    if padding_arg == "same":
        split = []
        for k, d in zip(kernel_size, dilation):
            total = d * (k - 1)
            split.append((total // 2, total - total // 2))
        return tuple(split)
    return tuple((p, p) for p in padding_arg)


def make_spec(kernel_size, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
              ndim: int = 2) -> ConvSpec:
    """Validate and normalise the hyper-parameters of an ``ndim``-d convolution into a :class:`ConvSpec`.

    A pure function: arguments that are plain ints, strings or tuples (or lists, read as tuples) of
    plain ints are answered from a cache; a call that raises is never cached, so it raises again.
    """
    key = _plain_key((kernel_size, stride, padding, dilation, groups, padding_mode, ndim))
    if key is None:
        return _make_spec(kernel_size, stride, padding, dilation, groups, padding_mode, ndim)
    return _cached_spec(*key)


def _plain_key(args) -> tuple | None:
    """``args`` with lists made tuples, when every one is a plain int, a str, or a tuple or list of plain
    ints (equal keys then mean equal arguments: no ``True`` standing for ``1``); else None."""
    key = []
    for v in args:
        t = type(v)
        if t is int or t is str:
            key.append(v)
        elif (t is tuple or t is list) and _ints(v):
            key.append(tuple(v))
        else:
            return None
    return tuple(key)


def _make_spec(kernel_size, stride, padding, dilation, groups, padding_mode, ndim) -> ConvSpec:
    ndim = check_ndim(ndim)
    kernel = positive_tuple(kernel_size, "kernel_size", ndim)
    stride_p = positive_tuple(stride, "stride", ndim)
    dilation_p = positive_tuple(dilation, "dilation", ndim)
    padding_arg = normalize_padding(padding, ndim)
    groups_i = check_positive_int(groups, "groups")
    mode = check_padding_mode(padding_mode)
    if padding_arg == "same" and stride_p != (1,) * ndim:
        raise ValueError(
            f"padding='same' is not supported for strided convolutions, got stride={stride_p}"
        )
    return ConvSpec(
        kernel_size=kernel,
        stride=stride_p,
        padding=resolve_padding(padding_arg, kernel, dilation_p),
        dilation=dilation_p,
        groups=groups_i,
        padding_mode=mode,
        padding_arg=padding_arg,
    )


_cached_spec = functools.lru_cache(maxsize=1024)(_make_spec)


@functools.lru_cache(maxsize=256)
def lifted_spec(spec: ConvSpec) -> ConvSpec:
    """A 1-d spec as the 2-d spec of the same convolution over inputs of height 1.

    The new leading axis has kernel 1, stride 1, dilation 1 and no padding, so a 1-d
    convolution of ``(N, C, L)`` is the 2-d one of ``(N, C, 1, L)`` (as torch computes it).
    """
    if spec.ndim != 1:
        raise ValueError(f"only a 1-d spec is lifted to 2-d, got a {spec.ndim}-d spec")
    padding_arg = spec.padding_arg if isinstance(spec.padding_arg, str) else (0,) + spec.padding_arg
    return ConvSpec(
        kernel_size=(1,) + spec.kernel_size,
        stride=(1,) + spec.stride,
        padding=((0, 0),) + spec.padding,
        dilation=(1,) + spec.dilation,
        groups=spec.groups,
        padding_mode=spec.padding_mode,
        padding_arg=padding_arg,
    )


# --------------------------------------------------------------------------- arrays


def _is_torch_tensor(value) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def as_array(value, name: str, *, allow_none: bool = False) -> np.ndarray | None:
    """Convert ``value`` (ndarray, torch tensor or array-like) to an ndarray of a supported dtype.

    The result may share memory with ``value``; callers never write into it.
    """
    if type(value) is np.ndarray:                                          # the common case
        if value.dtype in SUPPORTED_DTYPES:
            return value
        array = value
    elif value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be an array or a tensor, got None")
    elif _is_torch_tensor(value):
        tensor = value.detach()
        if tensor.is_complex() or not tensor.is_floating_point() or str(tensor.dtype) == "torch.bfloat16":
            raise TypeError(
                f"{name} has dtype {str(tensor.dtype).replace('torch.', '')}; "
                "convscope supports float16, float32 and float64"
            )
        array = tensor.cpu().numpy()
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} could not be converted to an array: {exc}") from None
    if array.dtype not in SUPPORTED_DTYPES:
        hint = ""
        if array.dtype.kind in "iub":
            hint = f" (convert it first, e.g. np.asarray({name}, dtype=np.float32))"
        raise TypeError(
            f"{name} has dtype {array.dtype}; convscope supports float16, float32 and float64{hint}"
        )
    return array


def check_same_dtype(**arrays) -> np.dtype:
    """All given arrays (None skipped) must share one dtype; returns it (None when no array is given:
    a call known by its shapes only, as :func:`convscope.plan`'s)."""
    present = {k: a for k, a in arrays.items() if a is not None}
    dtypes = {a.dtype for a in present.values()}
    if len(dtypes) > 1:
        names = ", ".join(present)
        listing = ", ".join(f"{k} is {a.dtype}" for k, a in present.items())
        raise TypeError(f"{names} must have the same dtype, but {listing}")
    return next(iter(dtypes), None)


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32 and returned as float16."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


# --------------------------------------------------------------------------- shapes


def _formula(n: int, k: int, s: int, pad_total: int, d: int, dim: str) -> str:
    out = output_length(n, k, s, pad_total, d)
    return f"{dim}_out = ⌊({n} + {pad_total} − {d}·({k}−1) − 1)/{s}⌋ + 1 = {out}".replace(
        "= -", "= −"
    )


def empty_output_message(spec: ConvSpec, input_size: tuple) -> str | None:
    """The error text when the output would be empty along some axis, else None."""
    for n, k, s, (p0, p1), d, dim in zip(
        input_size, spec.kernel_size, spec.stride, spec.padding, spec.dilation, AXIS_LETTERS[spec.ndim]
    ):
        if output_length(n, k, s, p0 + p1, d) < 1:
            return "output would be empty: " + _formula(n, k, s, p0 + p1, d, dim)
    return None


def _and(words) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def check_input_size(spec: ConvSpec, input_size: tuple, name: str = "input") -> None:
    """Padding-mode limits and a non-empty output for an input of spatial size ``input_size``."""
    names = AXIS_NAMES[spec.ndim]
    if min(input_size) < 1:
        raise ValueError(f"{name} {_and(names)} must be positive, got {'×'.join(map(str, input_size))}")
    if spec.padding_mode in ("reflect", "circular"):
        for size, (p0, p1), dim in zip(input_size, spec.padding, names):
            for p in (p0, p1):
                if spec.padding_mode == "reflect" and p >= size:
                    raise ValueError(
                        f"reflect padding ({p}) must be smaller than the {name} {dim} ({size})"
                    )
                if spec.padding_mode == "circular" and p > size:
                    raise ValueError(
                        f"circular padding ({p}) must not exceed the {name} {dim} ({size})"
                    )
    message = empty_output_message(spec, input_size)
    if message:
        raise ValueError(message)


check_input_hw = check_input_size


def _layouts(ndim: int) -> tuple[str, str]:
    axes = ", ".join(AXIS_LETTERS[ndim])
    return f"{ndim + 1}-D (C, {axes})", f"{ndim + 2}-D (N, C, {axes})"


def check_input_ndim(shape: tuple, name: str = "input", ndim: int = 2) -> None:
    if len(shape) not in (ndim + 1, ndim + 2):
        unbatched, batched = _layouts(ndim)
        raise ValueError(f"{name} must be {unbatched} or {batched}, got shape {tuple(shape)}")


def check_weight_shape(shape: tuple, name: str = "weight", ndim: int = 2) -> None:
    if len(shape) != ndim + 2:
        kernel = ", ".join("k" + a for a in AXIS_LETTERS[ndim])
        raise ValueError(
            f"{name} must be {ndim + 2}-D (out_channels, in_channels/groups, {kernel}), got shape {tuple(shape)}"
        )
    if shape[0] < 1:
        raise ValueError(f"{name}.shape[0] (out_channels) must be positive, got shape {tuple(shape)}")
    if min(shape[2:]) < 1:
        raise ValueError(f"{name}'s kernel size must be positive, got shape {tuple(shape)}")


def check_shapes(spec: ConvSpec, input_shape: tuple, weight_shape: tuple, bias_shape: tuple | None = None,
                 input_name: str = "input"):
    """Check input, weight and bias shapes against ``spec``; return every size of the call.

    ``input_shape`` may be unbatched; the returned sizes are for the batched layout: a
    :class:`ConvShape` for a 2-d spec, a :class:`ConvShapeNd` for 1-d and 3-d.  Shapes given as
    tuples of plain ints (an array's ``shape``) are answered from a cache; a call that raises is
    never cached.
    """
    if (type(input_shape) is tuple and type(weight_shape) is tuple and _ints(input_shape) and _ints(weight_shape)
            and (bias_shape is None or (type(bias_shape) is tuple and _ints(bias_shape)))
            and type(input_name) is str and type(spec) is ConvSpec):
        return _cached_shapes(spec, input_shape, weight_shape, bias_shape, input_name)
    return _check_shapes(spec, input_shape, weight_shape, bias_shape, input_name)


def _check_shapes(spec, input_shape, weight_shape, bias_shape, input_name):
    nd = spec.ndim
    check_input_ndim(input_shape, input_name, nd)
    check_weight_shape(weight_shape, ndim=nd)
    if len(input_shape) == nd + 1:
        input_shape = (1,) + tuple(input_shape)
    N, C = int(input_shape[0]), int(input_shape[1])
    spatial = tuple(int(v) for v in input_shape[2:])
    out_channels, c_per_group = int(weight_shape[0]), int(weight_shape[1])
    g = spec.groups
    check_divisible_by_groups("out_channels", out_channels, g, "weight.shape[0]")
    if C != c_per_group * g:
        raise ValueError(
            f"{input_name} has {C} channel{'' if C == 1 else 's'} but weight expects {c_per_group * g} "
            f"(weight.shape[1]={c_per_group} × groups={g})"
        )
    if C < 1:
        raise ValueError(f"{input_name} must have at least one channel, got shape {tuple(input_shape)}")
    if bias_shape is not None and tuple(bias_shape) != (out_channels,):
        raise ValueError(
            f"bias must be 1-D with out_channels={out_channels} elements, got shape {tuple(bias_shape)}"
        )
    check_input_size(spec, spatial, input_name)
    padded_sizes = spec.padded_size(spatial)
    padded = max(N, 1) * C * int(np.prod(padded_sizes, dtype=object))
    if padded > MAX_ELEMENTS:
        raise ValueError(
            f"padding {spec.padding} makes the padded {input_name} "
            f"{'×'.join(map(str, (max(N, 1), C) + padded_sizes))} = {padded} elements, more than {MAX_ELEMENTS}"
        )
    out_spatial = spec.output_size(spatial)
    if nd == 2:
        return ConvShape(N, C, spatial[0], spatial[1], out_channels, out_spatial[0], out_spatial[1], g)
    return ConvShapeNd(N, C, spatial, out_channels, out_spatial, g)


_cached_shapes = functools.lru_cache(maxsize=1024)(_check_shapes)


def check_grad_output_shape(grad_shape: tuple, expected: tuple) -> None:
    if tuple(grad_shape) != tuple(expected):
        raise ValueError(
            f"grad_output must have the output's shape {tuple(expected)}, got {tuple(grad_shape)}"
        )


def check_divisible_by_groups(name: str, count: int, groups: int, source: str = "") -> None:
    """The rule "``name`` must be divisible by groups", with its one message; ``source`` names where the
    count was read (``"weight.shape[0]"``), when it is not the parameter itself."""
    if count % groups:
        where = f"{source}={count}" if source else str(count)
        raise ValueError(f"{name} ({where}) must be divisible by groups ({groups})")


def check_channels_groups(in_channels: int, out_channels: int, groups: int) -> None:
    """A layer's channel counts against its groups (torch's two rules)."""
    for name, count in (("in_channels", in_channels), ("out_channels", out_channels)):
        check_divisible_by_groups(name, count, groups)


def _is_size_vector(value, lengths: tuple[int, ...]) -> bool:
    """Whether an array is itself a shape: one axis of ``lengths`` integers (``np.array(x.shape)``)."""
    shape = tuple(value.shape)
    return len(shape) == 1 and shape[0] in lengths and all(_is_int(v) for v in value.tolist())


def size_tuple(value, name: str, lengths: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """A shape argument (``input_size``, ``weight_size``): a sequence of ``lengths`` non-negative ints."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and not _is_size_vector(value, lengths):
        kind = type(value)                                          # an array where its shape is meant
        raise TypeError(f"{name} must be a sequence of ints {layout}, got a {kind.__module__}.{kind.__qualname__}; "
                        f"pass {name}.shape")
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints {layout}, got {value!r}") from None
    if not all(_is_int(v) for v in items):
        raise TypeError(f"{name} must be a sequence of ints {layout}, got {items!r}")
    if len(items) not in lengths:
        raise ValueError(f"{name} must be a sequence of ints {layout}, got {len(items)} values: {items!r}")
    if min(items) < 0:
        raise ValueError(f"{name} must not contain negative sizes, got {items!r}")
    return tuple(int(v) for v in items)


# --------------------------------------------------------------------------- the binding step


@dataclass(frozen=True)
class ConvCall:
    """One validated call: the spec, every size, the dtype, the layout, and the arrays as given
    (converted by :func:`as_array`, never written into).

    ``shape`` is batched (a :class:`ConvShape` for 2-d, :class:`ConvShapeNd` otherwise);
    ``batched`` says whether the caller's input had a batch axis.
    """

    spec: ConvSpec
    shape: object
    dtype: np.dtype
    batched: bool
    input: np.ndarray | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    grad_output: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return self.spec.ndim

    @property
    def compute_dtype(self) -> np.dtype:
        return compute_dtype(self.dtype)

    @property
    def padded_spatial(self) -> tuple:
        """The padded input's spatial size."""
        return self.spec.padded_size(self.shape.spatial)

    @property
    def input_shape(self) -> tuple:
        """The batched input's shape ``(N, C, *spatial)``."""
        return input_shape_of(self.shape)

    @property
    def output_shape(self) -> tuple:
        """The batched output's shape ``(N, C_out, *out_spatial)``."""
        return output_shape_of(self.shape)

    @property
    def weight_shape(self) -> tuple:
        return (self.shape.out_channels, self.shape.in_per_group) + tuple(self.spec.kernel_size)

    def caller_output_shape(self) -> tuple:
        """The output's shape in the caller's layout (no batch axis for unbatched input)."""
        return self.output_shape if self.batched else self.output_shape[1:]

    def with_arrays(self, **arrays) -> ConvCall:
        """The same call (spec, shape, dtype, layout) with some of its arrays (``input``, ``weight``,
        ``bias``, ``grad_output``) given anew, e.g. a transposed call's arrays as the convolution's."""
        unknown = set(arrays) - {"input", "weight", "bias", "grad_output"}
        if unknown:
            raise TypeError(f"with_arrays takes input, weight, bias and grad_output, got {', '.join(sorted(unknown))}")
        current = dict(input=self.input, weight=self.weight, bias=self.bias, grad_output=self.grad_output)
        return ConvCall(self.spec, self.shape, self.dtype, self.batched, **{**current, **arrays})


def lift(call: ConvCall) -> ConvCall:
    """A 1-d call as the 2-d call of the same convolution over inputs of height 1 (:func:`lifted_spec`);
    the arrays become views with a height axis of 1 before the last axis."""
    s = call.shape
    shape = ConvShape(s.N, s.C, 1, s.spatial[0], s.out_channels, 1, s.out_spatial[0], s.groups)

    def up(a):
        return None if a is None else a.reshape(a.shape[:-1] + (1,) + a.shape[-1:])   # (…, L) → (…, 1, L)

    return ConvCall(lifted_spec(call.spec), shape, call.dtype, call.batched,
                    up(call.input), up(call.weight), call.bias, up(call.grad_output))


_NO_ARRAY = object()


def _bound_arrays(order: tuple, **given) -> tuple:
    """((input, weight, bias, grad_output), dtype): the arrays given (None where not), converted
    by :func:`as_array` in ``order`` and checked to share one dtype."""
    arrays = {}
    for name in order:
        value = given[name]
        if value is not _NO_ARRAY:
            arrays[name] = as_array(value, name, allow_none=(name == "bias"))
    dtype = check_same_dtype(**arrays)
    return tuple(arrays.get(k) for k in ("input", "weight", "bias", "grad_output")), dtype


def bind(ndim: int, *, input=_NO_ARRAY, weight=_NO_ARRAY, bias=_NO_ARRAY, grad_output=_NO_ARRAY,
         input_size=_NO_ARRAY, weight_size=_NO_ARRAY, stride=1, padding=0, dilation=1, groups=1,
         padding_mode="zeros", order: tuple = ("grad_output", "input", "weight", "bias"),
         size_names: tuple = ("input_size", "weight_size")) -> ConvCall:
    """Turn one call's arrays and arguments into a validated :class:`ConvCall`.

    Pass the arrays the call has (``bias=None`` for no bias); ``input_size`` /
    ``weight_size`` stand for the input / weight when only their shapes are known
    (``conv*_input``, ``conv*_weight``).  ``order`` is the order in which the arrays
    are named in a dtype message (the call's parameter order), ``size_names`` the names of
    ``input_size`` and ``weight_size`` in messages (the caller's parameter names).  Checks, in order: the
    arrays' kinds and dtypes, the input's rank, the spec (from the weight's kernel
    size), the shapes, grad_output's shape.
    """
    key = _bind_key(ndim, (input, weight, bias, grad_output), input_size, weight_size,
                    (stride, padding, dilation, groups, padding_mode), order, size_names)
    bound = _BOUND.get(key) if key is not None else None
    if bound is not None:
        return ConvCall(*bound, *(None if a is _NO_ARRAY else a for a in (input, weight, bias, grad_output)))
    ndim = check_ndim(ndim)
    if input_size is not _NO_ARRAY:
        axes = ", ".join(AXIS_LETTERS[ndim])
        input_size = size_tuple(input_size, size_names[0], (ndim + 1, ndim + 2), f"(N, C, {axes}) or (C, {axes})")
    if weight_size is not _NO_ARRAY:
        kernel = ", ".join("k" + a for a in AXIS_LETTERS[ndim])
        weight_size = size_tuple(weight_size, size_names[1], (ndim + 2,), f"(C_out, C/groups, {kernel})")
    (x, w, b, gy), dtype = _bound_arrays(order, input=input, weight=weight, bias=bias, grad_output=grad_output)
    if input_size is not _NO_ARRAY:
        in_shape, in_name = input_size, size_names[0]
    else:
        in_shape, in_name = x.shape, "input"
        check_input_ndim(in_shape, ndim=ndim)
    w_shape = weight_size if weight_size is not _NO_ARRAY else w.shape
    check_weight_shape(w_shape, ndim=ndim)
    spec = make_spec(tuple(w_shape[2:]), stride, padding, dilation, groups, padding_mode, ndim=ndim)
    shape = check_shapes(spec, in_shape, w_shape, None if b is None else b.shape, input_name=in_name)
    batched = len(in_shape) == ndim + 2
    call = ConvCall(spec, shape, dtype, batched, x, w, b, gy)
    if gy is not None:
        check_grad_output_shape(gy.shape, call.caller_output_shape())
    if key is not None:
        if len(_BOUND) >= _BOUND_SIZE:
            _BOUND.clear()
        _BOUND[key] = (spec, shape, dtype, batched)
    return call


# bind's answers for calls whose arrays are ndarrays of a supported dtype and whose other arguments are
# plain (:func:`_plain_key`): what the checks depend on (shapes, dtypes, arguments) → (spec, shape,
# dtype, batched); a call that raises is never remembered, so it raises again
_BOUND: dict = {}
_BOUND_SIZE = 1024


def _bind_key(ndim, arrays, input_size, weight_size, arguments, order, size_names) -> tuple | None:
    """What :func:`bind`'s checks read of a call, or None when that is not only shapes, dtypes and plain
    arguments (another kind of array, a size or an argument that is not plain)."""
    parts = []
    for a in arrays:
        if a is _NO_ARRAY or a is None:
            parts.append(a is None)
        elif type(a) is np.ndarray and a.dtype in SUPPORTED_DTYPES:
            parts.append((a.shape, a.dtype))
        else:
            return None
    sizes = _plain_key(tuple(v for v in (input_size, weight_size) if v is not _NO_ARRAY))
    plain = _plain_key(arguments)
    if sizes is None or plain is None or type(ndim) is not int:
        return None
    return (ndim, *parts, input_size is _NO_ARRAY, sizes, plain, order, size_names)


# --------------------------------------------------------------------------- transposed convolutions
#
# A transposed convolution is bound as the convolution it is the adjoint of (see functional.py): the same
# spec, the transposed weight read as that convolution's weight (out_channels = the transposed input's
# channels), an input of the transposed output's size and an output of the transposed input's size.


def _transposed_weight_layout(ndim: int) -> str:
    kernel = ", ".join("k" + a for a in AXIS_LETTERS[ndim])
    return f"(in_channels, out_channels/groups, {kernel})"


def check_transposed_weight_shape(shape: tuple, name: str = "weight", ndim: int = 2) -> None:
    """A transposed convolution's weight: ``(in_channels, out_channels/groups, k…)``, every size positive."""
    if len(shape) != ndim + 2:
        raise ValueError(f"{name} of a transposed convolution must be {ndim + 2}-D "
                         f"{_transposed_weight_layout(ndim)}, got shape {tuple(shape)}")
    if min(shape) < 1:
        raise ValueError(f"{name} {_transposed_weight_layout(ndim)} must have positive sizes, "
                         f"got shape {tuple(shape)}")


def check_transposed_padding(padding, ndim: int = 2) -> tuple:
    """A transposed convolution's padding: an int or one non-negative int per axis (no strings, as torch)."""
    if isinstance(padding, str):
        raise TypeError(f"padding of a transposed convolution must be an int or {_TUPLE_OF[ndim]} "
                        f"('valid' and 'same' are for convolutions), got {padding!r}")
    return normalize_padding(padding, ndim)


def check_output_padding(output_padding, stride: tuple, dilation: tuple) -> tuple:
    """``output_padding`` per axis, each ``0 ≤ a < max(stride, dilation)`` (torch's rule)."""
    ndim = len(stride)
    items = to_tuple(output_padding, "output_padding", ndim)
    if min(items) < 0:
        raise ValueError(f"output_padding must be non-negative, got {items}")
    for a, s, d, dim in zip(items, stride, dilation, AXIS_NAMES[ndim]):
        if a >= max(s, d):
            raise ValueError(
                f"output_padding must be smaller than stride or dilation, got output_padding={items} with "
                f"stride={tuple(stride)} and dilation={tuple(dilation)} ({dim}: {a} ≥ max({s}, {d}))"
            )
    return items


def _transposed_formula(n: int, k: int, s: int, p: int, d: int, a: int, dim: str) -> str:
    out = transposed_output_length(n, k, s, p, d, a)
    return (f"{dim}_out = ({n}−1)·{s} − 2·{p} + {d}·({k}−1) + {a} + 1 = {out}"
            .replace("= -", "= −"))


def empty_transposed_output_message(spec: ConvSpec, input_size: tuple, output_padding: tuple) -> str | None:
    """The error text when a transposed convolution's output would be empty along some axis, else None."""
    for n, k, s, (p, _), d, a, dim in zip(input_size, spec.kernel_size, spec.stride, spec.padding,
                                          spec.dilation, output_padding, AXIS_LETTERS[spec.ndim]):
        if transposed_output_length(n, k, s, p, d, a) < 1:
            return "output would be empty: " + _transposed_formula(n, k, s, p, d, a, dim)
    return None


def check_transposed_shapes(spec: ConvSpec, output_padding: tuple, input_shape: tuple, weight_shape: tuple,
                            bias_shape: tuple | None = None):
    """Check a transposed convolution's input, weight and bias shapes; return the sizes of the convolution
    it is the adjoint of (:func:`check_shapes`'s result for an input of the transposed output's shape).

    That convolution's output is the transposed input, with ``⌊output_padding/stride⌋`` more rows per axis
    where ``output_padding ≥ stride`` (allowed when ``dilation > stride``); those rows are zeros.
    """
    nd = spec.ndim
    check_input_ndim(input_shape, "input", nd)
    check_transposed_weight_shape(weight_shape, ndim=nd)
    if len(input_shape) == nd + 1:
        input_shape = (1,) + tuple(input_shape)
    N, C = int(input_shape[0]), int(input_shape[1])
    spatial = tuple(int(v) for v in input_shape[2:])
    in_channels, out_per_group = int(weight_shape[0]), int(weight_shape[1])
    g = spec.groups
    if C != in_channels:
        raise ValueError(
            f"input has {C} channel{'' if C == 1 else 's'} but weight expects {in_channels} (weight.shape[0]: "
            f"a transposed convolution's weight is {_transposed_weight_layout(nd)})"
        )
    check_divisible_by_groups("in_channels", in_channels, g, "weight.shape[0]")
    out_channels = out_per_group * g
    if bias_shape is not None and tuple(bias_shape) != (out_channels,):
        raise ValueError(
            f"bias must be 1-D with out_channels={out_channels} elements (weight.shape[1]={out_per_group} × "
            f"groups={g}), got shape {tuple(bias_shape)}"
        )
    if min(spatial) < 1:
        raise ValueError(f"input {_and(AXIS_NAMES[nd])} must be positive, got {'×'.join(map(str, spatial))}")
    message = empty_transposed_output_message(spec, spatial, output_padding)
    if message:
        raise ValueError(message)
    out_spatial = spec.transposed_output_size(spatial, output_padding)
    return check_shapes(spec, (N, out_channels) + out_spatial, tuple(weight_shape), input_name="output")


def output_padding_for(output_size, input_shape: tuple, spec: ConvSpec) -> tuple:
    """The ``output_padding`` that gives ``output_size`` (torch's ``_output_padding``).

    ``output_size`` is the spatial size, or the whole output shape (with the batch and channel axes, or
    the channel axis for an unbatched input).  Each size must lie between the output size with
    ``output_padding = 0`` and that plus ``stride − 1``.
    """
    nd = spec.ndim
    check_input_ndim(input_shape, "input", nd)
    layout = ", ".join(AXIS_LETTERS[nd])
    try:
        items = tuple(output_size)
    except TypeError:
        raise TypeError(f"output_size must be a sequence of ints ({layout}), got {_fmt(output_size)} "
                        f"({type(output_size).__name__})") from None
    if not all(_is_int(v) for v in items):
        raise TypeError(f"output_size must be a sequence of ints ({layout}), got {items!r}")
    leading = len(input_shape) - nd
    if len(items) == leading + nd:
        items = items[leading:]
    if len(items) != nd:
        raise ValueError(f"output_size must have {nd} or {leading + nd} elements for a {len(input_shape)}-D "
                         f"input, got {len(items)}: {items!r}")
    items = tuple(int(v) for v in items)
    spatial = tuple(int(v) for v in input_shape[leading:])
    low = spec.transposed_output_size(spatial, (0,) * nd)
    high = tuple(m + s - 1 for m, s in zip(low, spec.stride))
    if not all(lo <= n <= hi for n, lo, hi in zip(items, low, high)):
        raise ValueError(
            f"output_size {items} cannot be reached: valid sizes range from {low} to {high} for an input of "
            f"{spatial} (output_padding 0 … stride − 1)"
        )
    return tuple(n - lo for n, lo in zip(items, low))


@dataclass(frozen=True)
class ConvTransposeCall:
    """One validated transposed-convolution call: ``conv`` is the convolution it is the adjoint of (its
    input has the transposed output's shape; its arrays are not set), with the call's arrays as given.

    ``input_spatial`` is the transposed input's spatial size; ``conv.shape.out_spatial`` may be longer
    (:func:`check_transposed_shapes`).
    """

    conv: ConvCall
    output_padding: tuple
    input_spatial: tuple
    input: np.ndarray | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    grad_output: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return self.conv.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.conv.dtype

    @property
    def batched(self) -> bool:
        return self.conv.batched

    @property
    def input_shape(self) -> tuple:
        """The batched transposed input's shape ``(N, C_in, *spatial)``."""
        return (self.conv.shape.N, self.conv.shape.out_channels) + tuple(self.input_spatial)

    @property
    def output_shape(self) -> tuple:
        """The batched transposed output's shape ``(N, C_out, *out_spatial)``."""
        return self.conv.input_shape

    def caller_output_shape(self) -> tuple:
        return self.output_shape if self.batched else self.output_shape[1:]


def bind_transpose(ndim: int, *, input, weight, bias=_NO_ARRAY, grad_output=_NO_ARRAY, stride=1, padding=0,
                   output_padding=0, groups=1, dilation=1,
                   order: tuple = ("grad_output", "input", "weight", "bias")) -> ConvTransposeCall:
    """Turn one transposed-convolution call's arrays and arguments into a :class:`ConvTransposeCall`.

    Checks, in order: the arrays' kinds and dtypes, the input's and weight's ranks, the spec, the
    output padding, the shapes, grad_output's shape.
    """
    ndim = check_ndim(ndim)
    (x, w, b, gy), dtype = _bound_arrays(order, input=input, weight=weight, bias=bias, grad_output=grad_output)
    check_input_ndim(x.shape, ndim=ndim)
    check_transposed_weight_shape(w.shape, ndim=ndim)
    spec = make_spec(tuple(w.shape[2:]), stride, check_transposed_padding(padding, ndim), dilation, groups,
                     ndim=ndim)
    op = check_output_padding(output_padding, spec.stride, spec.dilation)
    shape = check_transposed_shapes(spec, op, x.shape, w.shape, None if b is None else b.shape)
    conv = ConvCall(spec, shape, dtype, x.ndim == ndim + 2)
    call = ConvTransposeCall(conv, op, tuple(int(n) for n in x.shape[-ndim:]), x, w, b, gy)
    if gy is not None:
        check_grad_output_shape(gy.shape, call.caller_output_shape())
    return call


# --------------------------------------------------------------------------- settings and masks


def check_output_mask(output_mask) -> tuple[bool, bool, bool]:
    """``(input, weight, bias)``: which gradients ``conv2d_backward`` computes."""
    if type(output_mask) is tuple and len(output_mask) == 3 and all(type(v) is bool for v in output_mask):
        return output_mask
    try:
        items = tuple(output_mask)
    except TypeError:
        raise TypeError(f"output_mask must be a sequence of 3 bools (input, weight, bias), "
                        f"got {_fmt(output_mask)} ({type(output_mask).__name__})") from None
    if len(items) != 3:
        raise ValueError(f"output_mask must have 3 entries (input, weight, bias), got {len(items)}: {items!r}")
    if not all(isinstance(v, (bool, np.bool_)) for v in items):
        raise TypeError(f"output_mask must hold bools (input, weight, bias), got {items!r}")
    return tuple(bool(v) for v in items)  # type: ignore[return-value]


def check_workspace_bytes(value, name: str = "workspace limit") -> int:
    """A byte count ≥ 0 (an int, not a bool or a float)."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int number of bytes, got {_fmt(value)} ({type(value).__name__})")
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return int(value)


def check_num_threads(value) -> int:
    if not _is_int(value):
        raise TypeError(f"num_threads must be an int, got {_fmt(value)} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"num_threads must be a positive integer, got {value}")
    return int(value)


CONV_PRECISIONS = ("highest", "high")


def check_conv_precision(value) -> str:
    """``'highest'`` (only paths whose rounding error is local) or ``'high'`` (Winograd and FFT too)."""
    if not isinstance(value, str) or value not in CONV_PRECISIONS:
        raise ValueError(f"conv precision must be one of {', '.join(repr(m) for m in CONV_PRECISIONS)}, "
                         f"got {_fmt(value)}")
    return value


# --------------------------------------------------------------------------- memory


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isascii() and text.isdigit() else None        # 'max': no limit


def _proc_kib(path: str, key: str) -> int | None:
    """``key:  N kB`` of a /proc file, in bytes."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """Bytes the process's memory cgroup (v2 ``memory.max``, or v1 ``memory.limit_in_bytes``) still allows."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    paths = {"v2": "/", "v1": "/"}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            paths["v2"] = path
        elif "memory" in controllers.split(","):
            paths["v1"] = path
    rooms = []
    for version, (limit_file, usage_file) in (("v2", ("memory.max", "memory.current")),
                                              ("v1", ("memory.limit_in_bytes", "memory.usage_in_bytes"))):
        base = "/sys/fs/cgroup" if version == "v2" else "/sys/fs/cgroup/memory"
        for directory in {base + paths[version].rstrip("/"), base}:
            limit, usage = _read_int(f"{directory}/{limit_file}"), _read_int(f"{directory}/{usage_file}")
            if limit is not None and usage is not None and limit < 1 << 60:
                rooms.append(limit - usage)
    return min(rooms) if rooms else None


def available_memory() -> tuple[int, str] | None:
    """(bytes, where the bound comes from): the memory a call may still allocate, the least of the
    machine's (MemAvailable + SwapFree), the memory cgroup's room, and RLIMIT_AS / RLIMIT_DATA minus
    what the process maps / uses.  None where none of them is known."""
    bounds = []
    avail = _proc_kib("/proc/meminfo", "MemAvailable")
    if avail is not None:
        bounds.append((avail + (_proc_kib("/proc/meminfo", "SwapFree") or 0), "available on the machine (MemAvailable + SwapFree)"))
    cgroup = _cgroup_room()
    if cgroup is not None:
        bounds.append((cgroup, "left under the memory cgroup's limit"))
    try:
        import resource
    except ImportError:                                                   # not on POSIX
        resource = None
    if resource is not None:
        for name, used_key in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
            soft, _ = resource.getrlimit(getattr(resource, name))
            used = _proc_kib("/proc/self/status", used_key)
            if soft != resource.RLIM_INFINITY and used is not None:
                bounds.append((soft - used, f"left under {name}"))
    return min(bounds) if bounds else None


CHECK_MEMORY_FROM = 64 << 20   # calls needing less than this are not checked (reading the bounds costs more)
READING_SECONDS = 1.0          # a reading of the bounds is reused for this long (under the same rlimits)
READING_SHARE = 16             # by calls needing at most this fraction of it; others read afresh

_reading = None                # (monotonic time, available_memory function, rlimits, bound) of the last reading


def _rlimits() -> tuple:
    try:
        import resource
    except ImportError:                                                   # not on POSIX
        return ()
    return resource.getrlimit(resource.RLIMIT_AS), resource.getrlimit(resource.RLIMIT_DATA)


def _recent_room() -> int | None:
    """The room of the last reading of :func:`available_memory`, if it is recent and the rlimits are unchanged."""
    reading = _reading
    if reading is None or reading[1] is not available_memory or reading[3] is None:
        return None
    if time.monotonic() - reading[0] > READING_SECONDS or reading[2] != _rlimits():
        return None
    return reading[3][0]


def check_memory(arrays, workspace: int = 0) -> None:
    """ValueError, before any allocation, when the arrays a call makes cannot fit in memory.

    ``arrays`` are ``(name, shape, dtype)`` of the results (and copies) the call allocates;
    ``workspace`` the scratch bytes it needs on top of them.  A call needing less than
    :data:`CHECK_MEMORY_FROM`, or at most ``1/READING_SHARE`` of a reading of the bounds taken
    less than :data:`READING_SECONDS` ago, is let through without reading them again; only a
    fresh reading refuses a call.
    """
    global _reading
    need = int(workspace)
    for _, shape, dtype in arrays:
        need += math.prod(map(int, shape)) * np.dtype(dtype).itemsize
    if need < CHECK_MEMORY_FROM:
        return
    room = _recent_room()
    if room is not None and need <= room // READING_SHARE:
        return
    fn, limits, at = available_memory, _rlimits(), time.monotonic()
    bound = fn()
    _reading = (at, fn, limits, bound)
    if bound is None or need <= bound[0]:
        return
    sized = [(name, tuple(int(s) for s in shape), np.dtype(dtype)) for name, shape, dtype in arrays]
    sizes = [math.prod(shape) * dtype.itemsize for _, shape, dtype in sized]
    room, source = bound
    k = max(range(len(sized)), key=sizes.__getitem__)
    name, shape, dtype = sized[k]
    rest = need - sizes[k]
    raise ValueError(
        f"{name} of shape {shape} ({dtype}) needs {sizes[k]} bytes ({_gib(sizes[k])}"
        + (f"; {need} bytes with the other results and the scratch" if rest else "")
        + f"), more than the {max(room, 0)} bytes ({_gib(max(room, 0))}) {source}"
    )


def _gib(nbytes: int) -> str:
    return f"{nbytes / (1 << 30):.3g} GiB"
