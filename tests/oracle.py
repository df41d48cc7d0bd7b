"""The one torch-oracle helper: run the same convolution in torch and in convscope and compare.

It is the tests' one door to torch: the test files call torch only through the helpers here
(the comparisons, then "torch objects for the tests": torch's layers, tensors, functional calls and
autograd on NumPy arrays), and they share the case builders and constants at its end.

It compares shape, dtype and values of the forward, then the three gradients.
Tolerances are relative to the magnitude of torch's result:
float64 1e-9, float32 1e-4, float16 1e-2 (times ``max |torch|``).

float16 is convscope's "computed in float32, returned as float16": the oracle runs torch in
float32 on the same (float16-representable) values and rounds its results to float16.  torch's
own CPU float16 kernels are not used: they round intermediate results differently, and torch
2.13 crashes (SIGSEGV) on some grouped float16 convolutions, e.g. input (1, 2, 7, 1), a
(2, 1, 1, 1) weight, stride 2, padding 1, dilation 2, groups 2.
"""
from __future__ import annotations

import contextlib
import tracemalloc

import numpy as np
import pytest

import convscope

RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4, np.dtype(np.float16): 1e-2}


def tolerance(reference: np.ndarray, summands=None) -> float:
    """Absolute tolerance for comparing against ``reference``: RTOL × its magnitude, or × the largest
    of the ``summands`` it is a sum of, if larger (a sum that cancels is rounded to its terms' size)."""
    ref = np.asarray(reference)
    scale = float(np.abs(ref.astype(np.float64)).max()) if ref.size else 0.0
    if summands is not None and np.size(summands):
        scale = max(scale, float(np.abs(np.asarray(summands, dtype=np.float64)).max()))
    return RTOL[ref.dtype] * max(scale, 1e-30)


def assert_close(actual, expected, what: str = "value", summands=None) -> None:
    """Same shape, same dtype, and max |actual − expected| within :func:`tolerance`."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if expected.size == 0:
        return
    err = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
    tol = tolerance(expected, summands)
    assert err <= tol, f"{what}: max |error| {err:.3g} > tolerance {tol:.3g}"


def _numpy_copy(a) -> np.ndarray:
    """A NumPy copy of an array, array-like or torch tensor."""
    return a.detach().numpy().copy() if hasattr(a, "detach") else np.array(a)


def torch_conv2d(x, w, b, grad_output, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """torch's output and (∂x, ∂w, ∂b) for ``sum(output * grad_output)``, via ``nn.Conv2d``.

    ``grad_output`` may be None (then only the forward is run and the grads are None).
    A missing bias is run as a zero bias so that its gradient is still reported.
    """
    return torch_conv_nd(x, w, b, grad_output, stride, padding, dilation, groups, padding_mode)


def random_case(rng, x_shape, w_shape, dtype=np.float64, bias=True):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


def check_against_torch(x, w, b=None, *, algorithm=None, seed=0, backward=True, **params):
    """Assert convscope equals torch on forward and (unless ``backward=False``) all three gradients.

    Also checks that the inputs were not modified and that the results are C-contiguous.
    Returns convscope's output.
    """
    originals = [None if a is None else _numpy_copy(a) for a in (x, w, b)]
    expected_out, _ = torch_conv2d(x, w, b, None, **params)
    out = convscope.conv2d(x, w, b, algorithm=algorithm, **params)
    assert_close(out, expected_out, "forward")
    assert out.flags.c_contiguous, "forward result is not C-contiguous"
    if backward:
        rng = np.random.default_rng(seed)
        grad_output = rng.standard_normal(expected_out.shape).astype(expected_out.dtype)
        _, (dx, dw, db) = torch_conv2d(x, w, b, grad_output, **params)
        grads = convscope.conv2d_backward(grad_output, x, w, algorithm=algorithm, **params)
        assert_close(grads.input, dx, "grad input")
        assert_close(grads.weight, dw, "grad weight")
        assert_close(grads.bias, db, "grad bias", summands=grad_output)   # Σ of grad_output
        for g, name in zip(grads, grads._fields):
            assert g.flags.c_contiguous, f"grad {name} is not C-contiguous"
    for before, after, name in zip(originals, (x, w, b), ("input", "weight", "bias")):
        if before is not None:
            assert np.array_equal(before, after), f"{name} was modified"
    return out


def case_arrays(case, layout: str, dtype, seed: int = 0):
    """(x, w, b, params) for a path test case ``(chw, w_shape, params)``; ``params`` may hold
    ``bias=False``.  ``layout`` is 'batched' (N = 2), 'unbatched' or 'zero_batch' (N = 0)."""
    chw, w_shape, params = case
    params = dict(params)
    bias = params.pop("bias", True)
    rng = np.random.default_rng(seed)
    x_shape = {"batched": (2,) + chw, "unbatched": chw, "zero_batch": (0,) + chw}[layout]
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b, params


def peak_bytes(fn):
    """(result, peak bytes allocated while fn ran), by tracemalloc."""
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def recording_all_finite(monkeypatch) -> list:
    """The sizes of the arrays ``convscope.algorithms.all_finite`` sums from now on (the checks the
    runners and the paths make before and after a ``"global"`` pass), recorded for the test."""
    from convscope import algorithms

    sizes, real = [], algorithms.all_finite

    def recording(*arrays):
        sizes.extend(a.size for a in arrays if a is not None)
        return real(*arrays)

    monkeypatch.setattr(algorithms, "all_finite", recording)
    return sizes


def rel_l2(a, b) -> float:
    """‖a − b‖ / ‖b‖ in float64 (the norm-relative error of a fast algorithm's result a)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def float32_against_exact(algorithm: str, x, w, rng, **params):
    """A path's float32 results against float64 gemm, and its own float64 forward.

    Returns ``(pairs, (y64, exact))``: ``pairs`` are (float32 result, float64 gemm result) for the
    output, grad-input and grad-weight (grad_output drawn from ``rng``, the output's shape)."""
    exact = convscope.conv2d(x, w, algorithm="gemm", **params)
    g = rng.standard_normal(exact.shape)
    exact_g = convscope.conv2d_backward(g, x, w, algorithm="gemm", **params)
    x32, w32, g32 = (a.astype(np.float32) for a in (x, w, g))
    y32 = convscope.conv2d(x32, w32, algorithm=algorithm, **params)
    grads32 = convscope.conv2d_backward(g32, x32, w32, algorithm=algorithm, **params)
    pairs = ((y32, exact), (grads32.input, exact_g.input), (grads32.weight, exact_g.weight))
    return pairs, (convscope.conv2d(x, w, algorithm=algorithm, **params), exact)


def torch_native_conv2d(x, w, b, grad_output, **params):
    """:func:`torch_conv2d` on torch's native CPU kernels (oneDNN switched off).

    Where a NaN or ±Inf weight (or, for ∂/∂weight, a NaN or ±Inf grad_output) meets a
    zero-padding cell, torch's result depends on the kernel it picks: its native kernels multiply
    the padding's zeros (0·Inf = NaN, as the definition ``Σ x̃ · w`` reads), its oneDNN float32
    kernels (picked for some shapes only) skip them.  convscope follows the definition, which is
    what these kernels compute; everywhere else both of torch's kernels give the same pattern.
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # oneDNN's notice about TF32 on Intel GPUs
        with torch.backends.mkldnn.flags(enabled=False):
            return torch_conv2d(x, w, b, grad_output, **params)


def nonfinite_masks(a):
    """(NaN, +Inf, −Inf) masks of an array."""
    a = np.asarray(a)
    return np.isnan(a), np.isposinf(a), np.isneginf(a)


def assert_same_nonfinite(actual, expected, what: str = "value", scale=None) -> None:
    """NaN, +Inf and −Inf at the same places as in ``expected``, and the finite values close
    (within :func:`tolerance` of their magnitude, or of ``scale`` when given)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    for kind, got, want in zip(("NaN", "+Inf", "-Inf"), nonfinite_masks(actual), nonfinite_masks(expected)):
        if not np.array_equal(got, want):
            first = tuple(int(i) for i in np.argwhere(got != want)[0])
            raise AssertionError(f"{what}: {kind} at {int(got.sum())} places, torch at {int(want.sum())} "
                                 f"(first difference at {first})")
    finite = np.isfinite(expected)
    if scale is None:
        assert_close(np.where(finite, actual, 0), np.where(finite, expected, 0), what)
    else:
        err = float(np.abs(actual[finite].astype(np.float64) - expected[finite]).max(initial=0))
        assert err <= RTOL[expected.dtype] * scale, f"{what}: max |error| {err:.3g} > {RTOL[expected.dtype]} × {scale:.3g}"


def assert_close_global(actual, expected, factors, what: str = "value") -> None:
    """:func:`assert_close` for a path whose rounding error is global (Winograd, FFT): the
    tolerance is relative to the larger of ``max |expected|`` and the product of the factors'
    largest magnitudes (e.g. (grad_output, x) for ∂/∂weight), so that an exact 0 (every tap on
    zero padding) may carry the rounding of the call's other values."""
    scale = float(np.prod([np.abs(np.asarray(f, np.float64)).max(initial=0) for f in factors]))
    expected = np.asarray(expected)
    assert_same_nonfinite(actual, expected, what, scale=max(scale, float(np.abs(expected).max(initial=0))))


# --------------------------------------------------------------------------- 1, 2 or 3 spatial dimensions


def torch_conv_nd(x, w, b, grad_output, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """:func:`torch_conv2d` for any dimension (the weight's rank says which): torch's output and
    (∂x, ∂w, ∂b) via ``nn.Conv1d/2d/3d``; float16 as float32 rounded to float16."""
    import torch

    x_np, w_np = _numpy_copy(x), _numpy_copy(w)
    if w_np.dtype == np.float16:
        as32 = lambda a: None if a is None else _numpy_copy(a).astype(np.float32)  # noqa: E731
        out, grads = torch_conv_nd(as32(x_np), as32(w_np), as32(b), as32(grad_output), stride, padding,
                                   dilation, groups, padding_mode)
        as16 = lambda a: a.astype(np.float16)  # noqa: E731
        return as16(out), None if grads is None else tuple(as16(g) for g in grads)
    layer_class = getattr(torch.nn, f"Conv{w_np.ndim - 2}d")
    x_t = torch.from_numpy(x_np).requires_grad_(True)
    layer = layer_class(w_np.shape[1] * groups, w_np.shape[0], tuple(w_np.shape[2:]), stride=stride,
                        padding=padding, dilation=dilation, groups=groups, bias=True,
                        padding_mode=padding_mode, dtype=getattr(torch, w_np.dtype.name))
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w_np.copy()))
        layer.bias.copy_(torch.from_numpy(np.zeros(w_np.shape[0], w_np.dtype) if b is None else _numpy_copy(b)))
    out = layer(x_t)
    if grad_output is None:
        return out.detach().numpy(), None
    out.backward(torch.from_numpy(_numpy_copy(grad_output)))
    return out.detach().numpy(), (x_t.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy())


def check_nd_against_torch(x, w, b=None, *, algorithm=None, seed=0, backward=True, **params):
    """:func:`check_against_torch` for any dimension: convscope's ``conv{n}d`` and ``conv{n}d_backward``
    against torch's layer, forward and all three gradients; inputs untouched, results C-contiguous."""
    nd = np.asarray(w).ndim - 2
    return _check_pair(getattr(convscope, f"conv{nd}d"), getattr(convscope, f"conv{nd}d_backward"), torch_conv_nd,
                       x, w, b, algorithm, seed, backward, params)


def _check_pair(forward, backward_fn, torch_fn, x, w, b, algorithm, seed, backward, params):
    """``forward`` and (unless ``backward`` is False) ``backward_fn`` against ``torch_fn``'s output and
    gradients; inputs untouched, results C-contiguous.  Returns the output."""
    originals = [None if a is None else _numpy_copy(a) for a in (x, w, b)]
    expected_out, _ = torch_fn(x, w, b, None, **params)
    out = forward(x, w, b, algorithm=algorithm, **params)
    assert_close(out, expected_out, "forward")
    assert out.flags.c_contiguous, "forward result is not C-contiguous"
    if backward:
        grad_output = np.random.default_rng(seed).standard_normal(expected_out.shape).astype(expected_out.dtype)
        _, want = torch_fn(x, w, b, grad_output, **params)
        grads = backward_fn(grad_output, x, w, algorithm=algorithm, **params)
        for got, expected, name in zip(grads, want, grads._fields):
            assert_close(got, expected, f"grad {name}", summands=grad_output if name == "bias" else None)
            assert got.flags.c_contiguous, f"grad {name} is not C-contiguous"
    for before, after, name in zip(originals, (x, w, b), ("input", "weight", "bias")):
        if before is not None:
            assert np.array_equal(before, after), f"{name} was modified"
    return out


def torch_grad_function(name: str, *args, **kwargs) -> np.ndarray:
    """``torch.nn.grad.<name>(*args, **kwargs)`` with NumPy arrays in and out (sizes pass through)."""
    import torch

    args = [torch.from_numpy(_numpy_copy(a)) if isinstance(a, np.ndarray) else a for a in args]
    return getattr(torch.nn.grad, name)(*args, **kwargs).numpy()


def torch_error(ndim: int, x_shape, w_shape, bias_shape=None, dtype=np.float64, layer=False, **params):
    """The exception torch raises for ``conv{ndim}d`` on arrays of these shapes (``layer=True``: through
    ``nn.Conv{ndim}d``, for ``padding_mode``), or None when it accepts them."""
    import torch

    x = torch.zeros(tuple(x_shape), dtype=getattr(torch, np.dtype(dtype).name))
    w = torch.zeros(tuple(w_shape), dtype=x.dtype)
    b = None if bias_shape is None else torch.zeros(tuple(bias_shape), dtype=x.dtype)
    try:
        if layer:
            mode = params.pop("padding_mode", "zeros")
            groups = params.get("groups", 1)
            m = getattr(torch.nn, f"Conv{ndim}d")(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]),
                                                  padding_mode=mode, bias=False, dtype=x.dtype, **params)
            m(x)
        else:
            getattr(torch.nn.functional, f"conv{ndim}d")(x, w, b, **params)
    except Exception as exc:  # noqa: BLE001 - any refusal counts; the caller compares its meaning
        return exc
    return None


def torch_native_conv_nd(x, w, b, grad_output, **params):
    """:func:`torch_conv_nd` on torch's native CPU kernels (oneDNN off), as :func:`torch_native_conv2d`."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.backends.mkldnn.flags(enabled=False):
            return torch_conv_nd(x, w, b, grad_output, **params)


# --------------------------------------------------------------------------- transposed convolutions


def torch_conv_transpose_nd(x, w, b, grad_output, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """torch's ``conv_transpose{n}d`` output (the weight's rank says which) and, unless ``grad_output`` is
    None, (∂x, ∂w, ∂b) of ``sum(output * grad_output)`` by autograd.  A missing bias is run as a zero bias
    so that its gradient is still reported; float16 as float32 rounded to float16."""
    import torch

    x_np, w_np = _numpy_copy(x), _numpy_copy(w)
    params = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    if w_np.dtype == np.float16:
        as32 = lambda a: None if a is None else _numpy_copy(a).astype(np.float32)  # noqa: E731
        out, grads = torch_conv_transpose_nd(as32(x_np), as32(w_np), as32(b), as32(grad_output), **params)
        as16 = lambda a: a.astype(np.float16)  # noqa: E731
        return as16(out), None if grads is None else tuple(as16(g) for g in grads)
    x_t = torch.from_numpy(x_np).requires_grad_(True)
    w_t = torch.from_numpy(w_np).requires_grad_(True)
    b_np = np.zeros(w_np.shape[1] * groups, w_np.dtype) if b is None else _numpy_copy(b)
    b_t = torch.from_numpy(b_np).requires_grad_(True)
    out = getattr(torch.nn.functional, f"conv_transpose{w_np.ndim - 2}d")(x_t, w_t, b_t, **params)
    if grad_output is None:
        return out.detach().numpy(), None
    out.backward(torch.from_numpy(_numpy_copy(grad_output)))
    return out.detach().numpy(), (x_t.grad.numpy(), w_t.grad.numpy(), b_t.grad.numpy())


def check_transpose_against_torch(x, w, b=None, *, algorithm=None, seed=0, backward=True, **params):
    """convscope's ``conv_transpose{n}d`` and ``conv_transpose{n}d_backward`` against torch, forward and all
    three gradients (:func:`assert_close`); inputs untouched, results C-contiguous.  Returns the output."""
    nd = np.asarray(w).ndim - 2
    return _check_pair(getattr(convscope, f"conv_transpose{nd}d"), getattr(convscope, f"conv_transpose{nd}d_backward"),
                       torch_conv_transpose_nd, x, w, b, algorithm, seed, backward, params)


def torch_transpose_error(ndim: int, x_shape, w_shape, bias_shape=None, dtype=np.float64, w_dtype=None,
                          **params):
    """The exception torch raises for ``conv_transpose{ndim}d`` on zero arrays of these shapes (``w_dtype``:
    the weight's dtype, when it differs), or None when it accepts them."""
    import torch

    x = torch.zeros(tuple(x_shape), dtype=getattr(torch, np.dtype(dtype).name))
    w = torch.zeros(tuple(w_shape), dtype=getattr(torch, np.dtype(w_dtype or dtype).name))
    b = None if bias_shape is None else torch.zeros(tuple(bias_shape), dtype=x.dtype)
    try:
        getattr(torch.nn.functional, f"conv_transpose{ndim}d")(x, w, b, **params)
    except Exception as exc:  # noqa: BLE001 - any refusal counts; the caller compares its meaning
        return exc
    return None


def torch_transpose_layer(ndim: int, *args, **kwargs):
    """``torch.nn.ConvTranspose{ndim}d(*args, **kwargs)``, or the exception its constructor raises."""
    import torch

    try:
        return getattr(torch.nn, f"ConvTranspose{ndim}d")(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return exc


def torch_layer_output(module, x, output_size=None):
    """``module(x, output_size)`` on a NumPy ``x`` as a NumPy array, or the exception torch raises."""
    import torch

    try:
        return module(torch.from_numpy(_numpy_copy(x)), output_size).detach().numpy()
    except Exception as exc:  # noqa: BLE001
        return exc


def check_layer_round_trip(layer, x: np.ndarray, torch_name: str):
    """A convscope layer against its torch twin ``torch.nn.<torch_name>``: to_torch's repr, forward,
    backward (grad input, and weight/bias grads accumulated over two calls) and from_torch's
    state; returns the layer from_torch gave back."""
    import torch

    module = layer.to_torch()
    assert isinstance(module, getattr(torch.nn, torch_name)) and repr(module) == repr(layer)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = module(xt)
    y = layer(x)
    assert_close(y, yt.detach().numpy(), "forward")
    g = np.random.default_rng(1).standard_normal(y.shape)
    yt.backward(torch.from_numpy(g))
    assert_close(layer.backward(g), xt.grad.numpy(), "grad input")
    layer.backward(g)                                            # accumulates
    assert_close(layer.weight_grad, 2 * module.weight.grad.numpy(), "weight_grad")
    assert_close(layer.bias_grad, 2 * module.bias.grad.numpy(), "bias_grad")
    back = type(layer).from_torch(module)
    assert repr(back) == repr(layer)
    for key, value in back.state_dict().items():
        assert np.array_equal(value, layer.state_dict()[key])
    return back


# --------------------------------------------------------------------------- torch objects for the tests
#
# The test files reach torch only through these helpers: they build torch's layers and tensors, run
# torch's functions and autograd on NumPy arrays, and hand NumPy arrays back.


def _torch():
    import torch

    return torch


def has_torch() -> bool:
    """Whether torch can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


needs_torch = pytest.mark.skipif(not has_torch(), reason="torch is not installed")


def require_torch() -> None:
    """Skip the calling test (or, at import, the whole test module) when torch is not installed."""
    pytest.importorskip("torch")


@contextlib.contextmanager
def torch_num_threads(n: int):
    """torch on ``n`` threads for the duration (nothing when torch is not installed)."""
    if not has_torch():
        yield
        return
    torch = _torch()
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def torch_dtype(dtype):
    """torch's dtype of a NumPy dtype, or of a name NumPy lacks (``'bfloat16'``)."""
    name = dtype if isinstance(dtype, str) and dtype == "bfloat16" else np.dtype(dtype).name
    return getattr(_torch(), name)


def to_numpy(a) -> np.ndarray:
    """A NumPy copy of a tensor (detached), array or array-like."""
    return _numpy_copy(a)


def to_tensor(a, *, requires_grad: bool = False, copy: bool = True):
    """A torch tensor of a NumPy array (a copy, or with ``copy=False`` a tensor sharing its memory)."""
    a = np.asarray(a)
    t = _torch().from_numpy(a.copy() if copy else a)
    return t.requires_grad_(True) if requires_grad else t


def torch_zeros(shape, dtype="float32"):
    """``torch.zeros(shape)`` of a dtype given by name or NumPy dtype (``'bfloat16'`` too)."""
    torch = _torch()
    return torch.zeros(tuple(shape), dtype=torch_dtype(dtype))


def torch_size(shape):
    """``shape`` as a ``torch.Size``."""
    return _torch().Size(shape)


def torch_module(name: str, *args, seed=None, **kwargs):
    """``torch.nn.<name>(*args, **kwargs)``, a NumPy ``dtype`` keyword turned into torch's; torch's
    generator seeded with ``seed`` first when given (its parameters are then torch's own draw)."""
    torch = _torch()
    if seed is not None:
        torch.manual_seed(seed)
    if "dtype" in kwargs:
        kwargs = dict(kwargs, dtype=torch_dtype(kwargs["dtype"]))
    return getattr(torch.nn, name)(*args, **kwargs)


def is_torch_module(obj, name: str) -> bool:
    """Whether ``obj`` is a ``torch.nn.<name>``."""
    return isinstance(obj, getattr(_torch().nn, name))


def torch_randn(*shape, seed=None):
    """``torch.randn(*shape)`` (float32), from torch's generator as it stands or seeded with ``seed``."""
    torch = _torch()
    if seed is not None:
        torch.manual_seed(seed)
    return torch.randn(*shape)


def torch_forward(module, x) -> np.ndarray:
    """``module(x)`` without autograd, for a NumPy array or tensor ``x``, as a NumPy array."""
    torch = _torch()
    with torch.no_grad():
        return module(x if isinstance(x, torch.Tensor) else to_tensor(x)).numpy()


def torch_module_backward(module, x, grad_output):
    """(output, ∂input) of ``sum(module(x) * grad_output)`` by autograd, as NumPy arrays; the module's
    parameter gradients accumulate as in torch (read them with :func:`parameter_grad`)."""
    x_t = to_tensor(_numpy_copy(x), requires_grad=True)
    y = module(x_t)
    y.backward(to_tensor(grad_output))
    return y.detach().numpy(), x_t.grad.numpy()


def parameter_grad(module, name: str):
    """A torch module's ``<name>.grad`` as a NumPy array (None when it has none)."""
    grad = getattr(module, name).grad
    return None if grad is None else grad.numpy().copy()


def set_parameter(module, name: str, value) -> None:
    """Overwrite a torch module's parameter ``name`` in place with a NumPy value (outside autograd)."""
    torch = _torch()
    with torch.no_grad():
        getattr(module, name).copy_(to_tensor(np.asarray(value)))


def torch_functional(name: str, *args, **kwargs) -> np.ndarray:
    """``torch.nn.functional.<name>(*args, **kwargs)`` with NumPy arrays in (as tensors) and out."""
    torch = _torch()
    args = [to_tensor(a) if isinstance(a, np.ndarray) else a for a in args]
    return getattr(torch.nn.functional, name)(*args, **kwargs).detach().numpy()


def torch_autograd(f, *arrays, grad_output):
    """(output, gradients) of ``sum(f(F, *tensors) * grad_output)`` by torch's autograd.

    ``f`` receives ``torch.nn.functional`` and the arrays as tensors requiring grad (None stays None)
    and returns a tensor; ``grad_output`` is an array, or a function of the output's shape that
    makes one (``np.ones``).  Returns the output and the arrays' gradients as NumPy arrays.
    """
    torch = _torch()
    tensors = [None if a is None else to_tensor(_numpy_copy(a), requires_grad=True) for a in arrays]
    out = f(torch.nn.functional, *tensors)
    g = grad_output(tuple(out.shape)) if callable(grad_output) else grad_output
    out.backward(to_tensor(np.asarray(g, dtype=_numpy_copy(out.detach()).dtype)))
    grads = tuple(None if t is None else t.grad.numpy() for t in tensors)
    return out.detach().numpy(), grads


def torch_forward_or_error(x, w, b=None, padding_mode="zeros", **params):
    """torch's ``conv2d`` forward of NumPy arrays (``F.conv2d`` for zeros padding, else ``nn.Conv2d``
    with ``padding_mode``) as a NumPy array, or the exception torch raises."""
    import warnings

    torch = _torch()
    try:
        xt, wt = to_tensor(x), to_tensor(w)
        bt = None if b is None else to_tensor(b)
        if padding_mode == "zeros":
            return torch.nn.functional.conv2d(xt, wt, bt, **params).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Initializing zero-element tensors is a no-op"
            layer = torch.nn.Conv2d(wt.shape[1] * params.get("groups", 1), wt.shape[0], tuple(wt.shape[2:]),
                                    bias=bt is not None, padding_mode=padding_mode, dtype=wt.dtype, **params)
        with torch.no_grad():
            layer.weight.copy_(wt)
            if bt is not None:
                layer.bias.copy_(bt)
            return layer(xt).numpy()
    except Exception as exc:  # noqa: BLE001 - any refusal counts; the caller compares its meaning
        return exc


# --------------------------------------------------------------------------- shared test cases and constants

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
LAYOUTS = ("batched", "unbatched", "zero_batch")
NP_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
TORCH_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def case_spec_shape(chw, w_shape, params, N: int = 2):
    """(spec, shape) of a case ``(chw, w_shape, params)`` in any dimension (the weight's rank says which),
    batched with ``N`` samples; ``params`` may hold ``bias`` (ignored)."""
    from convscope.spec import check_shapes, make_spec

    spec = make_spec(w_shape[2:], params.get("stride", 1), params.get("padding", 0), params.get("dilation", 1),
                     params.get("groups", 1), params.get("padding_mode", "zeros"), ndim=len(w_shape) - 2)
    return spec, check_shapes(spec, (N,) + tuple(chw), w_shape)


def mode_fits(mode, chw, w_shape, params) -> bool:
    """Whether torch accepts padding ``mode`` for this case (reflect: padding below the size; circular:
    up to it; zeros and replicate: any)."""
    spec, _ = case_spec_shape(chw, w_shape, dict(params, padding_mode="zeros"), N=1)
    for n, (p0, p1) in zip(chw[1:], spec.padding):
        if mode == "reflect" and max(p0, p1) >= n or mode == "circular" and max(p0, p1) > n:
            return False
    return True


def central_differences(f, a, indices, eps: float = 1e-6) -> np.ndarray:
    """∂f/∂a at ``indices`` by central differences ``(f(a + ε) − f(a − ε)) / 2ε`` (``f`` scalar; no torch)."""
    out = []
    for idx in indices:
        hi, lo = a.copy(), a.copy()
        hi[idx] += eps
        lo[idx] -= eps
        out.append((f(hi) - f(lo)) / (2 * eps))
    return np.array(out)


def check_grads_by_central_differences(op, x, w, b, g, grads, seed: int, label: str = "", samples: int = 6,
                                       **params) -> None:
    """The three gradients of ``L = Σ op(x, w, b, **params) · g`` (``grads``: input, weight, bias) against
    central differences of ``op`` at ``samples`` random entries of each (float64; no torch)."""
    rng = np.random.default_rng(seed)
    for what, arr, got, loss in [
        ("input", x, grads.input, lambda a: float((op(a, w, b, **params) * g).sum())),
        ("weight", w, grads.weight, lambda a: float((op(x, a, b, **params) * g).sum())),
        ("bias", b, grads.bias, lambda a: float((op(x, w, a, **params) * g).sum())),
    ]:
        indices = [tuple(int(rng.integers(s)) for s in arr.shape) for _ in range(samples)]
        numeric = central_differences(loss, arr, indices)
        analytic = np.array([got[i] for i in indices])
        assert np.allclose(analytic, numeric, atol=1e-6), f"{label}∂/∂{what} at {indices}: {analytic} vs {numeric}"


# --------------------------------------------------------------------------- the transposed pictures


def torch_conv_transpose2d(x, w, b=None, **params) -> np.ndarray:
    """torch's ``conv_transpose2d`` output alone (see :func:`torch_conv_transpose_nd`)."""
    return torch_conv_transpose_nd(x, w, b, None, **params)[0]


def torch_tap_counts(input_hw, kernel_size, **params) -> np.ndarray:
    """How many (input element, kernel tap) pairs of one channel land on each output cell: torch's
    ``conv_transpose2d`` of ones with a kernel of ones, as ints (H_out, W_out)."""
    counts = torch_conv_transpose2d(np.ones((1, 1) + tuple(input_hw)), np.ones((1, 1) + tuple(kernel_size)),
                                    **params)[0, 0]
    return np.rint(counts).astype(np.int64)


def torch_landings(input_hw, kernel_size, **params) -> dict:
    """``{(r, t): {(i, j, u, v), ...}}``: which input element times which kernel tap lands on each output
    cell, read from torch's ``conv_transpose2d`` of one-hot inputs with one-hot kernels."""
    H, W = input_hw
    kH, kW = kernel_size
    onehots = np.eye(H * W).reshape(H * W, 1, H, W)                    # (H·W, 1, H, W): one element each
    found: dict = {}
    for u in range(kH):
        for v in range(kW):
            w = np.zeros((1, 1, kH, kW))
            w[0, 0, u, v] = 1.0
            out = torch_conv_transpose2d(onehots, w, **params)[:, 0]    # (H·W, H_out, W_out)
            for k, r, t in zip(*np.nonzero(out)):
                found.setdefault((int(r), int(t)), set()).add((int(k) // W, int(k) % W, u, v))
    return found


# --------------------------------------------------------------------------- explanations


def torch_conv_layer(ndim: int, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """A ``torch.nn.Conv{ndim}d`` holding copies of ``weight`` and ``bias`` (NumPy; no bias when None), with
    these hyper-parameters, in the weight's dtype."""
    w = _numpy_copy(weight)
    layer = torch_module(f"Conv{ndim}d", w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=stride,
                         padding=padding, dilation=dilation, groups=groups, bias=bias is not None,
                         padding_mode=padding_mode, dtype=w.dtype)
    set_parameter(layer, "weight", w)
    if bias is not None:
        set_parameter(layer, "bias", _numpy_copy(bias))
    return layer


def torch_transpose_at(x, w, b, at, grad_output=None, wrt=None, **params) -> float:
    """torch's ``conv_transpose{n}d`` output at ``at`` (``wrt=None``), or the element ``at`` of its gradient
    ``wrt`` (``'input'``, ``'weight'``, ``'bias'``) of ``sum(output * grad_output)``; an unbatched ``x``
    (one axis fewer than the weight) is run with a batch of one, as the caller's index takes it."""
    x = _numpy_copy(x)
    unbatched = x.ndim == np.asarray(w).ndim - 1
    xb = x[None] if unbatched else x
    gb = None if grad_output is None else (_numpy_copy(grad_output)[None] if unbatched else grad_output)
    out, grads = torch_conv_transpose_nd(xb, w, b, gb, **params)
    if wrt is None:
        return float((out[0] if unbatched else out)[tuple(at)])
    grad = dict(zip(("input", "weight", "bias"), grads))[wrt]
    return float((grad[0] if unbatched and wrt == "input" else grad)[tuple(at)])


def torch_native_conv_transpose_nd(x, w, b, grad_output, **params):
    """:func:`torch_conv_transpose_nd` on torch's native CPU kernels (oneDNN off), as
    :func:`torch_native_conv2d`: where a NaN or ±Inf input (the adjoint convolution's grad_output) meets
    a tap that lands outside the output, the native weight gradient multiplies the zeros there, as
    convscope does; oneDNN's skips them."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.backends.mkldnn.flags(enabled=False):
            return torch_conv_transpose_nd(x, w, b, grad_output, **params)
