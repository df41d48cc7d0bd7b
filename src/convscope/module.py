"""``Conv1d``, ``Conv2d``, ``Conv3d``: the layers, with state, torch's initialisation, forward/backward
and torch interop, on one base :class:`_ConvNd`."""
from __future__ import annotations

import math

import numpy as np

from . import functional
from .spec import (
    SUPPORTED_DTYPES,
    ConvSpec,
    _is_torch_tensor,
    as_array,
    check_channels_groups,
    check_positive_int,
    make_spec,
)


def _import_torch(what: str):
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{what} needs PyTorch; install it with: pip install 'convscope[torch]'"
        ) from None
    return torch



def layer_arguments_text(in_channels: int, out_channels: int, spec, has_bias: bool | None) -> str:
    """The arguments of ``Conv1d/2d/3d(...)`` as torch prints them (defaults left out; ``has_bias=None``:
    bias not mentioned)."""
    s = f"{in_channels}, {out_channels}, kernel_size={spec.kernel_size}, stride={spec.stride}"
    if spec.padding_arg != (0,) * spec.ndim:
        s += f", padding={spec.padding_arg}"
    if spec.dilation != (1,) * spec.ndim:
        s += f", dilation={spec.dilation}"
    if spec.groups != 1:
        s += f", groups={spec.groups}"
    if has_bias is False:
        s += ", bias=False"
    if spec.padding_mode != "zeros":
        s += f", padding_mode={spec.padding_mode}"
    return s

class _ConvNd:
    """What the layers of every dimension share: validation, state, torch's initialisation,
    forward/backward, state_dict and torch interop.  Subclasses set ``_ndim``."""

    _ndim: int

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", dtype=np.float32, seed=None):
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.spec: ConvSpec = make_spec(kernel_size, stride, padding, dilation, groups, padding_mode,
                                        ndim=self._ndim)
        g = self.spec.groups
        check_channels_groups(self.in_channels, self.out_channels, g)
        if not isinstance(bias, (bool, np.bool_, int, np.integer)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        bias = bool(bias)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float16, float32 or float64, got {dtype!r}") from None
        if self.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"dtype must be float16, float32 or float64, got {self.dtype}")

        self._weight = np.empty((self.out_channels, self.in_channels // g) + self.spec.kernel_size, self.dtype)
        self._bias = np.empty(self.out_channels, self.dtype) if bias else None
        self.reset_parameters(seed)
        self.weight_grad: np.ndarray | None = None
        self.bias_grad: np.ndarray | None = None
        self._saved_input: np.ndarray | None = None

    def reset_parameters(self, seed=None) -> None:
        """Draw weight and bias again, as torch's ``reset_parameters``: both from
        ``U(−1/√fan_in, 1/√fan_in)`` with ``fan_in = in_channels/groups · Π kernel_size``
        (``kaiming_uniform_(a=√5)`` for the weight), from ``np.random.default_rng(seed)``."""
        fan_in = self.in_channels // self.spec.groups * math.prod(self.spec.kernel_size)
        bound = 1.0 / math.sqrt(fan_in)
        rng = np.random.default_rng(seed)
        self._weight = rng.uniform(-bound, bound, size=self._weight.shape).astype(self.dtype)
        if self._bias is not None:
            self._bias = rng.uniform(-bound, bound, size=self.out_channels).astype(self.dtype)

    # ----------------------------------------------------------------- hyper-parameters
    @property
    def kernel_size(self):
        return self.spec.kernel_size

    @property
    def stride(self):
        return self.spec.stride

    @property
    def padding(self):
        return self.spec.padding_arg

    @property
    def dilation(self):
        return self.spec.dilation

    @property
    def groups(self):
        return self.spec.groups

    @property
    def padding_mode(self):
        return self.spec.padding_mode

    # ----------------------------------------------------------------- parameters
    def _checked(self, value, name, shape):
        array = as_array(value, name)
        if array.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
        return np.array(array, dtype=self.dtype, order="C", copy=True)

    @property
    def weight(self) -> np.ndarray:
        return self._weight

    @weight.setter
    def weight(self, value):
        self._weight = self._checked(value, "weight", self._weight.shape)

    @property
    def bias(self) -> np.ndarray | None:
        return self._bias

    @bias.setter
    def bias(self, value):
        self._bias = None if value is None else self._checked(value, "bias", (self.out_channels,))

    def _conv_kwargs(self):
        s = self.spec
        return dict(stride=s.stride, padding=s.padding_arg, dilation=s.dilation,
                    groups=s.groups, padding_mode=s.padding_mode)

    # ----------------------------------------------------------------- compute
    def _layer_array(self, value, name: str, var: str) -> np.ndarray:
        """``value`` as an array: nested lists take the layer's dtype; an array of another float dtype is
        refused, as torch refuses it, with the two ways to make them agree."""
        if isinstance(value, (list, tuple)):
            try:
                value = np.asarray(value, dtype=self.dtype)
            except (ValueError, TypeError) as exc:
                raise TypeError(f"{name} could not be converted to a {self.dtype} array: {exc}") from None
        array = as_array(value, name)
        if array.dtype != self.dtype:
            fix = f"{var}.to(torch.{self.dtype})" if _is_torch_tensor(value) else f"{var}.astype(np.{self.dtype})"
            default = ", torch's default" if self.dtype == np.float32 else ""
            raise TypeError(f"{name} and weight must have the same dtype, but {name} is {array.dtype} and weight is "
                            f"{self.dtype} (the layer's dtype{default}): convert it with {fix}, or make the layer "
                            f"{array.dtype} with {type(self).__name__}(..., dtype=np.{array.dtype})")
        return array

    def forward(self, x, algorithm=None) -> np.ndarray:
        """The output for ``x``; keeps a copy of ``x`` for :meth:`backward`.

        ``x`` has the layer's dtype (float32 unless the layer was made with another ``dtype``);
        nested lists are converted to it.
        """
        xa = self._layer_array(x, "input", "x")
        conv = getattr(functional, f"conv{self._ndim}d")
        out = conv(xa, self._weight, self._bias, algorithm=algorithm, **self._conv_kwargs())
        self._saved_input = np.array(xa, copy=True)
        return out

    __call__ = forward

    def backward(self, grad_output, algorithm=None) -> np.ndarray:
        """Gradient w.r.t. the last forward's input; adds into ``weight_grad`` and ``bias_grad``."""
        if self._saved_input is None:
            raise RuntimeError("backward() needs a forward() first: there is no saved input")
        gy = self._layer_array(grad_output, "grad_output", "grad_output")
        backward = getattr(functional, f"conv{self._ndim}d_backward")
        grads = backward(gy, self._saved_input, self._weight, algorithm=algorithm,
                         **self._conv_kwargs())
        self.weight_grad = grads.weight if self.weight_grad is None else self.weight_grad + grads.weight
        if self._bias is not None:
            self.bias_grad = grads.bias if self.bias_grad is None else self.bias_grad + grads.bias
        return grads.input

    def zero_grad(self) -> None:
        """Reset the accumulated gradients to None, as ``torch.nn.Module.zero_grad``."""
        self.weight_grad = None
        self.bias_grad = None

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """``{'weight': …, 'bias': …}`` (copies; no ``'bias'`` key when the layer has none)."""
        state = {"weight": self._weight.copy()}
        if self._bias is not None:
            state["bias"] = self._bias.copy()
        return state

    def load_state_dict(self, state_dict) -> None:
        """Load ``weight`` (and ``bias``) from numpy arrays or torch tensors; keys must match exactly."""
        expected = set(self.state_dict())
        given = set(state_dict)
        if given != expected:
            missing, unexpected = sorted(expected - given), sorted(given - expected)
            raise ValueError(
                f"state_dict keys must be {sorted(expected)}: missing {missing}, unexpected {unexpected}"
            )
        weight = self._checked(state_dict["weight"], "weight", self._weight.shape)
        bias = self._checked(state_dict["bias"], "bias", (self.out_channels,)) if "bias" in given else None
        self._weight, self._bias = weight, bias

    @classmethod
    def from_torch(cls, module) -> "_ConvNd":
        """A convscope layer with the hyper-parameters and (copied) parameters of a ``torch.nn.Conv{1,2,3}d``
        (the class's dimension)."""
        torch = _import_torch(f"{cls.__name__}.from_torch")
        torch_class = getattr(torch.nn, cls.__name__)
        if not isinstance(module, torch_class):
            raise TypeError(f"from_torch expects a torch.nn.{cls.__name__}, got {type(module).__name__}")
        dtype = str(module.weight.dtype).replace("torch.", "")
        layer = cls(module.in_channels, module.out_channels, tuple(module.kernel_size),
                    stride=tuple(module.stride),
                    padding=module.padding if isinstance(module.padding, str) else tuple(module.padding),
                    dilation=tuple(module.dilation), groups=module.groups,
                    bias=module.bias is not None, padding_mode=module.padding_mode,
                    dtype=dtype if dtype in ("float16", "float32", "float64") else np.float32)
        layer.load_state_dict(module.state_dict())
        return layer

    def to_torch(self):
        """An equivalent ``torch.nn.Conv1d/2d/3d`` with copies of this layer's parameters."""
        torch = _import_torch(f"{type(self).__name__}.to_torch")
        module = getattr(torch.nn, type(self).__name__)(self.in_channels, self.out_channels, self.kernel_size,
                                 stride=self.stride, padding=self.padding, dilation=self.dilation,
                                 groups=self.groups, bias=self._bias is not None,
                                 padding_mode=self.padding_mode,
                                 dtype=getattr(torch, self.dtype.name))
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(self._weight.copy()))
            if self._bias is not None:
                module.bias.copy_(torch.from_numpy(self._bias.copy()))
        return module

    # ----------------------------------------------------------------- repr
    def extra_repr(self) -> str:
        return layer_arguments_text(self.in_channels, self.out_channels, self.spec, self._bias is not None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class Conv2d(_ConvNd):
    r"""A 2-D convolution layer with the parameters and numbers of ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (kH, kW)
    stride, dilation : int or pair (default 1)
    padding : int, pair, ``'valid'`` or ``'same'`` (default 0)
    groups : int dividing both channel counts (default 1)
    bias : bool (default True)
    padding_mode : ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``
    dtype : float16, float32 (default) or float64
    seed : seed for the initialisation (``np.random.default_rng(seed)``)

    Attributes
    ----------
    weight : ndarray (out_channels, in_channels // groups, kH, kW)
    bias : ndarray (out_channels,) or None
    weight_grad, bias_grad : accumulated gradients, None until the first ``backward``

    Initialisation follows torch's distributions: weight and bias are drawn from
    ``U(−1/√fan_in, 1/√fan_in)`` with ``fan_in = in_channels/groups · kH · kW``.

    Shape
    -----
    input (N, C_in, H, W) or (C_in, H, W) → output (N, C_out, H_out, W_out) or (C_out, H_out, W_out).

    Examples
    --------
    >>> import numpy as np, convscope
    >>> m = convscope.Conv2d(1, 1, 3, seed=0)
    >>> m
    Conv2d(1, 1, kernel_size=(3, 3), stride=(1, 1))
    >>> y = m(np.ones((1, 1, 5, 5), dtype=np.float32))
    >>> y.shape
    (1, 1, 3, 3)
    >>> dx = m.backward(np.ones_like(y))
    >>> bool(np.allclose(m.bias_grad, 9.0))
    True
    """

    _ndim = 2


class Conv1d(_ConvNd):
    r"""A 1-D convolution layer with the parameters and numbers of ``torch.nn.Conv1d``.

    The parameters and attributes are :class:`Conv2d`'s with one value per tuple (an int
    or a 1-tuple); ``weight`` is ``(out_channels, in_channels // groups, k)``, initialised from
    ``U(−1/√fan_in, 1/√fan_in)`` with ``fan_in = in_channels/groups · k``.

    Shape
    -----
    input (N, C_in, L) or (C_in, L) → output (N, C_out, L_out) or (C_out, L_out).

    Examples
    --------
    >>> import numpy as np, convscope
    >>> m = convscope.Conv1d(2, 4, 3, padding="same", seed=0)
    >>> m
    Conv1d(2, 4, kernel_size=(3,), stride=(1,), padding=same)
    >>> m(np.ones((8, 2, 50), dtype=np.float32)).shape
    (8, 4, 50)
    """

    _ndim = 1


class Conv3d(_ConvNd):
    r"""A 3-D convolution layer with the parameters and numbers of ``torch.nn.Conv3d``.

    The parameters and attributes are :class:`Conv2d`'s with three values per tuple
    ``(D, H, W)``; ``weight`` is ``(out_channels, in_channels // groups, kD, kH, kW)``,
    initialised from ``U(−1/√fan_in, 1/√fan_in)`` with ``fan_in = in_channels/groups · kD·kH·kW``.

    Shape
    -----
    input (N, C_in, D, H, W) or (C_in, D, H, W) → output (N, C_out, D_out, H_out, W_out)
    or (C_out, D_out, H_out, W_out).

    Examples
    --------
    >>> import numpy as np, convscope
    >>> m = convscope.Conv3d(1, 2, 3, padding=1, stride=(1, 2, 2), seed=0)
    >>> m(np.ones((1, 1, 4, 8, 8), dtype=np.float32)).shape
    (1, 2, 4, 4, 4)
    """

    _ndim = 3
