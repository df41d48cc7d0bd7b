"""``Conv1d``, ``Conv2d``, ``Conv3d`` and ``ConvTranspose1d/2d/3d``: the layers, with state, torch's
initialisation, forward/backward and torch interop, on one base :class:`_ConvNd`."""
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
    check_input_ndim,
    check_output_padding,
    check_positive_int,
    check_transposed_padding,
    make_spec,
    output_padding_for,
)


def _import_torch(what: str):
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{what} needs PyTorch; install it with: pip install 'convscope[torch]'"
        ) from None
    return torch



def layer_arguments_text(in_channels: int, out_channels: int, spec, has_bias: bool | None,
                         output_padding: tuple | None = None) -> str:
    """The arguments of ``Conv1d/2d/3d(...)`` (or, with ``output_padding``, ``ConvTranspose1d/2d/3d(...)``)
    as torch prints them (defaults left out; ``has_bias=None``: bias not mentioned)."""
    s = f"{in_channels}, {out_channels}, kernel_size={spec.kernel_size}, stride={spec.stride}"
    if spec.padding_arg != (0,) * spec.ndim:
        s += f", padding={spec.padding_arg}"
    if spec.dilation != (1,) * spec.ndim:
        s += f", dilation={spec.dilation}"
    if output_padding is not None and output_padding != (0,) * spec.ndim:
        s += f", output_padding={output_padding}"
    if spec.groups != 1:
        s += f", groups={spec.groups}"
    if has_bias is False:
        s += ", bias=False"
    if spec.padding_mode != "zeros":
        s += f", padding_mode={spec.padding_mode}"
    return s


class _ConvNd:
    """What the layers of every dimension share: validation, state, torch's initialisation,
    forward/backward, state_dict and torch interop.  Subclasses set ``_ndim``; the transposed layers
    (:class:`_ConvTransposeNd`) set ``transposed``."""

    _ndim: int
    transposed = False

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

        self._weight = np.empty(self._weight_shape(), self.dtype)
        self._bias = np.empty(self.out_channels, self.dtype) if bias else None
        self.reset_parameters(seed)
        self.weight_grad: np.ndarray | None = None
        self.bias_grad: np.ndarray | None = None
        self._saved_input: np.ndarray | None = None

    def _weight_shape(self) -> tuple:
        return (self.out_channels, self.in_channels // self.spec.groups) + self.spec.kernel_size

    def reset_parameters(self, seed=None) -> None:
        """Draw weight and bias again, as torch's ``reset_parameters``: both from
        ``U(−1/√fan_in, 1/√fan_in)`` with ``fan_in = weight.shape[1] · Π kernel_size``
        (``kaiming_uniform_(a=√5)`` for the weight), from ``np.random.default_rng(seed)``:
        ``in_channels/groups · Π kernel_size`` for a convolution, ``out_channels/groups · Π kernel_size``
        for a transposed one (whose weight is ``(in_channels, out_channels/groups, k…)``)."""
        fan_in = self._weight.shape[1] * math.prod(self.spec.kernel_size)
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
        return self._forward(x, algorithm, self._conv_kwargs())

    def __call__(self, *args, **kwargs) -> np.ndarray:
        return self.forward(*args, **kwargs)

    def _forward(self, x, algorithm, kwargs: dict) -> np.ndarray:
        xa = self._layer_array(x, "input", "x")
        conv = getattr(functional, f"conv{'_transpose' if self.transposed else ''}{self._ndim}d")
        out = conv(xa, self._weight, self._bias, algorithm=algorithm, **kwargs)
        self._saved_input = np.array(xa, copy=True)
        self._saved_kwargs = kwargs
        return out

    def backward(self, grad_output, algorithm=None) -> np.ndarray:
        """Gradient w.r.t. the last forward's input; adds into ``weight_grad`` and ``bias_grad``."""
        if self._saved_input is None:
            raise RuntimeError("backward() needs a forward() first: there is no saved input")
        gy = self._layer_array(grad_output, "grad_output", "grad_output")
        backward = getattr(functional, f"conv{'_transpose' if self.transposed else ''}{self._ndim}d_backward")
        grads = backward(gy, self._saved_input, self._weight, algorithm=algorithm, **self._saved_kwargs)
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

    @staticmethod
    def _hyper_parameters_of(module) -> dict:
        """The keyword arguments (beyond the channels and kernel size) of a torch layer of this kind."""
        return dict(stride=tuple(module.stride),
                    padding=module.padding if isinstance(module.padding, str) else tuple(module.padding),
                    dilation=tuple(module.dilation), groups=module.groups, padding_mode=module.padding_mode)

    def _hyper_parameters(self) -> dict:
        """This layer's keyword arguments (beyond the channels, kernel size and bias) for its torch twin."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
                    padding_mode=self.padding_mode)

    @classmethod
    def from_torch(cls, module) -> "_ConvNd":
        """A convscope layer with the hyper-parameters and (copied) parameters of the torch layer of the
        class's name (``torch.nn.Conv{1,2,3}d`` or ``torch.nn.ConvTranspose{1,2,3}d``)."""
        torch = _import_torch(f"{cls.__name__}.from_torch")
        torch_class = getattr(torch.nn, cls.__name__)
        if not isinstance(module, torch_class):
            raise TypeError(f"from_torch expects a torch.nn.{cls.__name__}, got {type(module).__name__}")
        dtype = str(module.weight.dtype).replace("torch.", "")
        layer = cls(module.in_channels, module.out_channels, tuple(module.kernel_size),
                    bias=module.bias is not None,
                    dtype=dtype if dtype in ("float16", "float32", "float64") else np.float32,
                    **cls._hyper_parameters_of(module))
        layer.load_state_dict(module.state_dict())
        return layer

    def to_torch(self):
        """An equivalent torch layer (``torch.nn.`` and this class's name) with copies of this layer's
        parameters."""
        torch = _import_torch(f"{type(self).__name__}.to_torch")
        module = getattr(torch.nn, type(self).__name__)(self.in_channels, self.out_channels, self.kernel_size,
                                                        bias=self._bias is not None,
                                                        dtype=getattr(torch, self.dtype.name),
                                                        **self._hyper_parameters())
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


class _ConvTransposeNd(_ConvNd):
    """What the transposed layers share: torch's ``_ConvTransposeNd`` constructor (``output_padding``,
    ``padding_mode='zeros'`` only), the transposed weight ``(in_channels, out_channels/groups, k…)`` and
    ``forward(x, output_size=None)``."""

    transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, padding_mode="zeros", dtype=np.float32, seed=None):
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {type(self).__name__}, '
                             f"got padding_mode={padding_mode!r}")
        check_transposed_padding(padding, self._ndim)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias, dtype=dtype, seed=seed)
        self.output_padding = check_output_padding(output_padding, self.spec.stride, self.spec.dilation)

    def _weight_shape(self) -> tuple:
        return (self.in_channels, self.out_channels // self.spec.groups) + self.spec.kernel_size

    def _conv_kwargs(self, output_padding=None):
        s = self.spec
        return dict(stride=s.stride, padding=s.padding_arg,
                    output_padding=self.output_padding if output_padding is None else output_padding,
                    groups=s.groups, dilation=s.dilation)

    def forward(self, x, output_size=None, algorithm=None) -> np.ndarray:
        """The output for ``x``; keeps a copy of ``x`` (and the output padding used) for :meth:`backward`.

        ``output_size`` (torch's rule): the output's spatial size, or its whole shape, each size
        between the size with ``output_padding = 0`` and that plus ``stride − 1``; it sets the output
        padding for this call in place of the layer's ``output_padding``.
        """
        if output_size is None:
            return self._forward(x, algorithm, self._conv_kwargs())
        xa = self._layer_array(x, "input", "x")
        check_input_ndim(xa.shape, ndim=self._ndim)
        return self._forward(xa, algorithm, self._conv_kwargs(output_padding_for(output_size, xa.shape, self.spec)))

    @staticmethod
    def _hyper_parameters_of(module) -> dict:
        return dict(stride=tuple(module.stride), padding=tuple(module.padding),
                    output_padding=tuple(module.output_padding), groups=module.groups,
                    dilation=tuple(module.dilation), padding_mode=module.padding_mode)

    def _hyper_parameters(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    groups=self.groups, dilation=self.dilation)

    def extra_repr(self) -> str:
        return layer_arguments_text(self.in_channels, self.out_channels, self.spec, self._bias is not None,
                                    self.output_padding)


class ConvTranspose2d(_ConvTransposeNd):
    r"""A 2-D transposed convolution layer with the parameters and numbers of ``torch.nn.ConvTranspose2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (kH, kW)
    stride, dilation : int or pair (default 1)
    padding : int or pair (default 0): ``dilation·(k−1) − padding`` zeros are (in effect) added
        around the input
    output_padding : int or pair (default 0), each smaller than its stride or its dilation: rows
        and columns added at the bottom and right of the output, choosing its size
    groups : int dividing both channel counts (default 1)
    bias : bool (default True)
    padding_mode : ``'zeros'`` only (as torch)
    dtype : float16, float32 (default) or float64
    seed : seed for the initialisation (``np.random.default_rng(seed)``)

    Attributes
    ----------
    weight : ndarray (in_channels, out_channels // groups, kH, kW)
    bias : ndarray (out_channels,) or None
    weight_grad, bias_grad : accumulated gradients, None until the first ``backward``

    Initialisation follows torch's distributions: weight and bias are drawn from
    ``U(−1/√fan_in, 1/√fan_in)`` with ``fan_in = out_channels/groups · kH · kW`` (torch's fan-in of
    the weight's second axis).

    Shape
    -----
    input (N, C_in, H, W) or (C_in, H, W) → output (N, C_out, H_out, W_out) or (C_out, H_out, W_out),
    ``H_out = (H − 1)·sH − 2·pH + dH·(kH − 1) + output_padding_H + 1`` and likewise W_out.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> m = convscope.ConvTranspose2d(8, 4, 4, stride=2, padding=1, seed=0)
    >>> m
    ConvTranspose2d(8, 4, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1))
    >>> m(np.ones((1, 8, 16, 16), dtype=np.float32)).shape
    (1, 4, 32, 32)
    >>> m3 = convscope.ConvTranspose2d(1, 1, 3, stride=2, padding=1, seed=0)
    >>> m3(np.ones((1, 1, 3, 3), np.float32), output_size=(6, 6)).shape
    (1, 1, 6, 6)
    """

    _ndim = 2


class ConvTranspose1d(_ConvTransposeNd):
    r"""A 1-D transposed convolution layer with the parameters and numbers of ``torch.nn.ConvTranspose1d``.

    The parameters and attributes are :class:`ConvTranspose2d`'s with one value per tuple; ``weight``
    is ``(in_channels, out_channels // groups, k)``.

    Shape
    -----
    input (N, C_in, L) or (C_in, L) → output (N, C_out, L_out) or (C_out, L_out),
    ``L_out = (L − 1)·s − 2·p + d·(k − 1) + output_padding + 1``.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> convscope.ConvTranspose1d(2, 3, 4, stride=4, seed=0)(np.ones((2, 10), np.float32)).shape
    (3, 40)
    """

    _ndim = 1


class ConvTranspose3d(_ConvTransposeNd):
    r"""A 3-D transposed convolution layer with the parameters and numbers of ``torch.nn.ConvTranspose3d``.

    The parameters and attributes are :class:`ConvTranspose2d`'s with three values per tuple
    ``(D, H, W)``; ``weight`` is ``(in_channels, out_channels // groups, kD, kH, kW)``.

    Shape
    -----
    input (N, C_in, D, H, W) or (C_in, D, H, W) → output (N, C_out, D_out, H_out, W_out) or
    (C_out, D_out, H_out, W_out), each size by the formula of :class:`ConvTranspose2d`.

    Examples
    --------
    >>> import numpy as np, convscope
    >>> m = convscope.ConvTranspose3d(2, 2, 2, stride=2, seed=0)
    >>> m(np.ones((1, 2, 2, 4, 4), np.float32)).shape
    (1, 2, 4, 8, 8)
    """

    _ndim = 3
