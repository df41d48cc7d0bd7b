"""One place that turns user arguments into a validated convolution.

Every public entry point (``conv2d``, ``conv2d_backward``, ``conv2d_input``,
``conv2d_weight``, ``conv2d_output_size`` and ``Conv2d``) goes through the
functions here, so every check and every error message lives in this module.

Two steps:

1. :func:`make_spec` normalises the hyper-parameters (kernel size, stride,
   padding, dilation, groups, padding mode) into a frozen :class:`ConvSpec`.
   Ints become pairs once; ``'same'`` and ``'valid'`` are resolved to explicit
   ``((top, bottom), (left, right))`` padding with torch's split.
2. :func:`check_shapes` checks a spec against the shapes of input, weight and
   bias and returns the :class:`ConvShape` (sizes of everything) the
   algorithms use.

Array arguments are converted by :func:`as_array`, which accepts NumPy arrays,
torch tensors and array-likes and enforces the dtype rules.

:func:`check_memory` refuses, before anything is allocated, a call whose results and
scratch cannot fit in the memory the process can still get (:func:`available_memory`).

Errors are ``TypeError`` for a wrong kind of value and ``ValueError`` for a
wrong value or shape; each message names the parameter, the rule and the value
received.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .geometry import output_length

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("valid", "same")
SUPPORTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
MAX_INT = 2**31 - 1  # the largest kernel size, stride, padding, dilation or groups accepted
MAX_ELEMENTS = 2**40  # the largest padded input (elements) a call may need

Pair = tuple[int, int]


@dataclass(frozen=True)
class ConvSpec:
    """The hyper-parameters of one 2-D convolution, normalised.

    Attributes
    ----------
    kernel_size : (kH, kW)
    stride : (sH, sW)
    padding : ((top, bottom), (left, right)), resolved from an int, a pair,
        ``'valid'`` or ``'same'``.
    dilation : (dH, dW)
    groups : int
    padding_mode : one of ``'zeros'``, ``'reflect'``, ``'replicate'``, ``'circular'``
    padding_arg : the padding as ``nn.Conv2d`` stores it: ``(pH, pW)``, ``'same'`` or ``'valid'``.
    """

    kernel_size: Pair
    stride: Pair = (1, 1)
    padding: tuple[Pair, Pair] = ((0, 0), (0, 0))
    dilation: Pair = (1, 1)
    groups: int = 1
    padding_mode: str = "zeros"
    padding_arg: Pair | str = (0, 0)

    def output_hw(self, input_hw: Pair) -> Pair:
        """Output height and width for an input of ``input_hw`` (may be <= 0: not validated)."""
        return tuple(  # type: ignore[return-value]
            output_length(n, k, s, p0 + p1, d)
            for n, k, s, (p0, p1), d in zip(
                input_hw, self.kernel_size, self.stride, self.padding, self.dilation
            )
        )


class ConvShape(NamedTuple):
    """All the sizes of one validated call (batched layout)."""

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


# --------------------------------------------------------------------------- scalars


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _fmt(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def to_pair(value, name: str) -> Pair:
    """``3 -> (3, 3)``; ``(3, 2) -> (3, 2)``. Rejects bools, floats, strings, wrong lengths and
    values beyond ``MAX_INT``."""
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        items = list(value)
        if len(items) != 2:
            raise ValueError(
                f"{name} must be an int or a pair of ints, got {len(items)} values: {_fmt(tuple(items))}"
            )
        if not all(_is_int(v) for v in items):
            raise TypeError(f"{name} must be an int or a pair of ints, got {_fmt(tuple(items))}")
        pair = (int(items[0]), int(items[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {_fmt(value)} ({type(value).__name__})")
    if max(pair) > MAX_INT:
        raise ValueError(f"{name} must be at most {MAX_INT}, got {pair}")
    return pair


def positive_pair(value, name: str) -> Pair:
    pair = to_pair(value, name)
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive, got {pair}")
    return pair


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


def normalize_padding(padding) -> Pair | str:
    """``1 -> (1, 1)``, ``(1, 2) -> (1, 2)``, ``'same'``/``'valid'`` unchanged."""
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise ValueError(
                f"padding must be an int, a pair of ints, 'valid' or 'same', got {padding!r}"
            )
        return padding
    try:
        pair = to_pair(padding, "padding")
    except TypeError:
        raise TypeError(
            f"padding must be an int, a pair of ints, 'valid' or 'same', got {_fmt(padding)} "
            f"({type(padding).__name__})"
        ) from None
    if min(pair) < 0:
        raise ValueError(f"padding must be non-negative, got {pair}")
    return pair


def resolve_padding(padding_arg: Pair | str, kernel_size: Pair, dilation: Pair) -> tuple[Pair, Pair]:
    """Explicit ``((top, bottom), (left, right))`` padding.

    ``'same'`` pads a total of ``d·(k−1)`` per dimension, ``total // 2`` on the
    top/left and the rest (one more when the total is odd) on the bottom/right,
    exactly as torch does.
    """
    if padding_arg == "valid":
        return ((0, 0), (0, 0))
    if padding_arg == "same":
        split = []
        for k, d in zip(kernel_size, dilation):
            total = d * (k - 1)
            split.append((total // 2, total - total // 2))
        return (split[0], split[1])
    ph, pw = padding_arg  # type: ignore[misc]
    return ((ph, ph), (pw, pw))


def make_spec(kernel_size, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros") -> ConvSpec:
    """Validate and normalise the hyper-parameters into a :class:`ConvSpec`."""
    kernel = positive_pair(kernel_size, "kernel_size")
    stride_p = positive_pair(stride, "stride")
    dilation_p = positive_pair(dilation, "dilation")
    padding_arg = normalize_padding(padding)
    groups_i = check_positive_int(groups, "groups")
    mode = check_padding_mode(padding_mode)
    if padding_arg == "same" and stride_p != (1, 1):
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


# --------------------------------------------------------------------------- arrays


def _is_torch_tensor(value) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def as_array(value, name: str, *, allow_none: bool = False) -> np.ndarray | None:
    """Convert ``value`` (ndarray, torch tensor or array-like) to an ndarray of a supported dtype.

    The result may share memory with ``value``; callers never write into it.
    """
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be an array or a tensor, got None")
    if _is_torch_tensor(value):
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
    """All given arrays (None skipped) must share one dtype; returns it."""
    present = {k: a for k, a in arrays.items() if a is not None}
    dtypes = {a.dtype for a in present.values()}
    if len(dtypes) > 1:
        names = ", ".join(present)
        listing = ", ".join(f"{k} is {a.dtype}" for k, a in present.items())
        raise TypeError(f"{names} must have the same dtype, but {listing}")
    return next(iter(dtypes))


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32 and returned as float16."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


# --------------------------------------------------------------------------- shapes


def _formula(n: int, k: int, s: int, pad_total: int, d: int, dim: str) -> str:
    out = output_length(n, k, s, pad_total, d)
    return f"{dim}_out = ⌊({n} + {pad_total} − {d}·({k}−1) − 1)/{s}⌋ + 1 = {out}".replace(
        "= -", "= −"
    )


def empty_output_message(spec: ConvSpec, input_hw: Pair) -> str | None:
    """The error text when the output would have no rows or columns, else None."""
    for n, k, s, (p0, p1), d, dim in zip(
        input_hw, spec.kernel_size, spec.stride, spec.padding, spec.dilation, "HW"
    ):
        if output_length(n, k, s, p0 + p1, d) < 1:
            return "output would be empty: " + _formula(n, k, s, p0 + p1, d, dim)
    return None


def check_input_hw(spec: ConvSpec, input_hw: Pair, name: str = "input") -> None:
    """Padding-mode limits and a non-empty output for an input of ``input_hw``."""
    H, W = input_hw
    if H < 1 or W < 1:
        raise ValueError(f"{name} height and width must be positive, got {H}×{W}")
    if spec.padding_mode in ("reflect", "circular"):
        for size, (p0, p1), dim in zip(input_hw, spec.padding, ("height", "width")):
            for p in (p0, p1):
                if spec.padding_mode == "reflect" and p >= size:
                    raise ValueError(
                        f"reflect padding ({p}) must be smaller than the {name} {dim} ({size})"
                    )
                if spec.padding_mode == "circular" and p > size:
                    raise ValueError(
                        f"circular padding ({p}) must not exceed the {name} {dim} ({size})"
                    )
    message = empty_output_message(spec, input_hw)
    if message:
        raise ValueError(message)


def check_input_ndim(shape: tuple, name: str = "input") -> None:
    if len(shape) not in (3, 4):
        raise ValueError(
            f"{name} must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {tuple(shape)}"
        )


def check_weight_shape(shape: tuple, name: str = "weight") -> None:
    if len(shape) != 4:
        raise ValueError(
            f"{name} must be 4-D (out_channels, in_channels/groups, kH, kW), got shape {tuple(shape)}"
        )
    if shape[0] < 1:
        raise ValueError(f"{name}.shape[0] (out_channels) must be positive, got shape {tuple(shape)}")
    if shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"{name}'s kernel size must be positive, got shape {tuple(shape)}")


def check_shapes(spec: ConvSpec, input_shape: tuple, weight_shape: tuple, bias_shape: tuple | None = None,
                 input_name: str = "input") -> ConvShape:
    """Check input, weight and bias shapes against ``spec``; return every size of the call.

    ``input_shape`` may be 3-D (unbatched); the returned sizes are for the batched layout.
    """
    check_input_ndim(input_shape, input_name)
    check_weight_shape(weight_shape)
    if len(input_shape) == 3:
        input_shape = (1,) + tuple(input_shape)
    N, C, H, W = (int(v) for v in input_shape)
    out_channels, c_per_group = int(weight_shape[0]), int(weight_shape[1])
    g = spec.groups
    if out_channels % g:
        raise ValueError(
            f"out_channels (weight.shape[0]={out_channels}) must be divisible by groups ({g})"
        )
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
    check_input_hw(spec, (H, W), input_name)
    (pt, pb), (pl, pr) = spec.padding
    padded = max(N, 1) * C * (H + pt + pb) * (W + pl + pr)
    if padded > MAX_ELEMENTS:
        raise ValueError(
            f"padding {spec.padding} makes the padded {input_name} "
            f"{max(N, 1)}×{C}×{H + pt + pb}×{W + pl + pr} = {padded} elements, more than {MAX_ELEMENTS}"
        )
    H_out, W_out = spec.output_hw((H, W))
    return ConvShape(N, C, H, W, out_channels, H_out, W_out, g)


def check_grad_output_shape(grad_shape: tuple, expected: tuple) -> None:
    if tuple(grad_shape) != tuple(expected):
        raise ValueError(
            f"grad_output must have the output's shape {tuple(expected)}, got {tuple(grad_shape)}"
        )


# --------------------------------------------------------------------------- settings and masks


def check_output_mask(output_mask) -> tuple[bool, bool, bool]:
    """``(input, weight, bias)``: which gradients ``conv2d_backward`` computes."""
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


def check_memory(arrays, workspace: int = 0) -> None:
    """ValueError, before any allocation, when the arrays a call makes cannot fit in memory.

    ``arrays`` are ``(name, shape, dtype)`` of the results (and copies) the call allocates;
    ``workspace`` the scratch bytes it needs on top of them.
    """
    sized = [(name, tuple(int(s) for s in shape), np.dtype(dtype)) for name, shape, dtype in arrays]
    sizes = [int(np.prod(shape, dtype=object)) * dtype.itemsize for _, shape, dtype in sized]
    need = sum(sizes) + int(workspace)
    if need < CHECK_MEMORY_FROM:
        return
    bound = available_memory()
    if bound is None or need <= bound[0]:
        return
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
