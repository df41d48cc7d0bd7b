"""Central-difference gradient check of ``conv2d_backward`` (no torch needed).

For ``L(input, weight, bias) = sum(conv2d(input, weight, bias) * g)`` with a
random ``g``, each checked element of each argument is moved by ±ε and
``(L(+ε) − L(−ε)) / 2ε`` is compared with the analytic gradient from
``conv2d_backward``.  ``L`` is linear in each argument, so the central
difference is exact up to rounding and a small tolerance is enough.

The checks run in float64 over every padding mode, strides, dilations,
groups, 'same' with even kernels and unbatched input, for the fast path and
the reference loops, and crosswise: the fast path's analytic gradients against
central differences of the reference forward.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import convscope

EPS = 1e-6
RTOL = 1e-7


def grad_check(f, args: dict, analytic: dict, *, eps: float = EPS, rtol: float = RTOL,
               max_elements: int | None = None, rng=None) -> int:
    """Compare ``analytic[name]`` with central differences of the scalar ``f(**args)``.

    Every array argument in ``args`` is checked: all its elements, or a random
    subset of ``max_elements`` of them.  An element passes when
    ``|analytic − numerical| ≤ rtol · (1 + max |analytic[name]|)``.  On the
    first disagreement an AssertionError names the argument and the index.
    Returns the number of elements checked.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    base = {name: np.array(value, dtype=np.float64) for name, value in args.items()}
    checked = 0
    for name, value in base.items():
        grad = np.asarray(analytic[name])
        assert grad.shape == value.shape, f"gradient of {name}: shape {grad.shape} != {value.shape}"
        flat = np.arange(value.size)
        if max_elements is not None and value.size > max_elements:
            flat = rng.choice(value.size, size=max_elements, replace=False)
        tol = rtol * (1.0 + float(np.abs(grad).max(initial=0.0)))
        for k in flat:
            index = np.unravel_index(k, value.shape)
            shifted = dict(base)
            plus, minus = value.copy(), value.copy()
            plus[index] += eps
            minus[index] -= eps
            shifted[name] = plus
            f_plus = f(**shifted)
            shifted[name] = minus
            f_minus = f(**shifted)
            numerical = (f_plus - f_minus) / (2 * eps)
            if not abs(grad[index] - numerical) <= tol:
                raise AssertionError(
                    f"gradient of {name}[{', '.join(str(int(i)) for i in index)}] disagrees: "
                    f"analytic {grad[index]:.10g}, numerical {numerical:.10g} (tolerance {tol:.3g})"
                )
            checked += 1
    return checked


# (input shape, weight shape, keyword arguments); channels per group and sizes kept small
CONFIGS = {
    "zeros_padding": ((2, 2, 5, 5), (3, 2, 3, 3), dict(padding=1)),
    "zeros_stride_leftover": ((1, 2, 8, 7), (2, 2, 2, 2), dict(stride=3)),
    "reflect_stride": ((2, 2, 6, 5), (2, 2, 3, 3), dict(padding=(2, 1), stride=2, padding_mode="reflect")),
    "reflect_maximal": ((1, 2, 4, 3), (2, 2, 3, 2), dict(padding=(3, 2), padding_mode="reflect")),
    "replicate_dilation": ((2, 2, 6, 6), (2, 2, 3, 3), dict(padding=2, dilation=2, padding_mode="replicate")),
    "replicate_large_padding": ((1, 2, 3, 4), (2, 2, 2, 3), dict(padding=(4, 3), padding_mode="replicate")),
    "circular_stride_pair": ((2, 2, 5, 6), (2, 2, 3, 2), dict(padding=(1, 2), stride=(2, 1), padding_mode="circular")),
    "circular_full_wrap": ((1, 2, 3, 4), (2, 2, 3, 3), dict(padding=(3, 4), padding_mode="circular")),
    "same_even_kernel_reflect": ((2, 2, 5, 6), (2, 2, 2, 4), dict(padding="same", padding_mode="reflect")),
    "same_even_kernel_dilated_circular": ((1, 2, 6, 6), (2, 2, 2, 3), dict(padding="same", dilation=(3, 2),
                                                                         padding_mode="circular")),
    "same_even_kernel_zeros": ((2, 2, 5, 5), (3, 2, 4, 2), dict(padding="same")),
    "groups_replicate": ((2, 4, 5, 5), (4, 2, 3, 3), dict(groups=2, padding=1, padding_mode="replicate")),
    "depthwise_reflect": ((2, 3, 5, 5), (3, 1, 3, 3), dict(groups=3, padding=1, padding_mode="reflect")),
    "channel_multiplier_circular": ((1, 2, 5, 6), (4, 1, 3, 2), dict(groups=2, padding=(1, 1), stride=(1, 2),
                                                                    padding_mode="circular")),
    "dilation_stride_zeros": ((2, 2, 8, 8), (2, 2, 3, 2), dict(dilation=(2, 3), stride=(2, 1), padding=(2, 1))),
    "kernel_1x1_stride_padding": ((2, 3, 5, 5), (2, 3, 1, 1), dict(stride=2, padding=1, padding_mode="replicate")),
    "kernel_fills_padded_input": ((1, 2, 4, 5), (2, 2, 6, 7), dict(padding=1, padding_mode="circular")),
    "unbatched_reflect_stride": ((2, 6, 5), (3, 2, 3, 3), dict(stride=2, padding=1, padding_mode="reflect")),
    "unbatched_same_even_zeros": ((2, 5, 6), (2, 2, 2, 2), dict(padding="same")),
    "unbatched_groups_circular": ((4, 5, 5), (2, 2, 3, 3), dict(groups=2, padding=2, padding_mode="circular")),
}

# (forward used for the central differences, implementation whose analytic gradient is checked)
PAIRS = [("gemm", "gemm"), ("reference", "reference"), ("reference", "gemm")]


def _problem(x_shape, w_shape, params, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    out_shape = convscope.conv2d(x, w, b, **params).shape
    g = rng.standard_normal(out_shape)
    return x, w, b, g


def _loss(g, params, algorithm):
    def f(input, weight, bias):
        return float(np.sum(convscope.conv2d(input, weight, bias, algorithm=algorithm, **params) * g))
    return f


@pytest.mark.parametrize("forward, backward", PAIRS, ids=[f"{f}-fd_vs_{b}" for f, b in PAIRS])
@pytest.mark.parametrize("name", CONFIGS)
def test_grad_check(name, forward, backward):
    x_shape, w_shape, params = CONFIGS[name]
    x, w, b, g = _problem(x_shape, w_shape, params, seed=sorted(CONFIGS).index(name))
    grads = convscope.conv2d_backward(g, x, w, algorithm=backward, **params)
    # the reference forward is slow: check a random subset of the input's elements there
    max_elements = None if forward == "gemm" else 40
    checked = grad_check(_loss(g, params, forward), {"input": x, "weight": w, "bias": b},
                         grads._asdict(), max_elements=max_elements, rng=np.random.default_rng(1))
    assert checked >= min(x.size, 40) + min(w.size, 40) + b.size


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_grad_check_reference_every_element(name):
    x_shape, w_shape, params = CONFIGS[name]
    x, w, b, g = _problem(x_shape, w_shape, params, seed=7)
    grads = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    grad_check(_loss(g, params, "reference"), {"input": x, "weight": w, "bias": b}, grads._asdict())


@pytest.mark.parametrize("algorithm", ("gemm", "reference"))
def test_grad_check_without_forward_bias(algorithm):
    """The bias gradient is reported when the forward has no bias: it is d/db at b = 0."""
    x, w, _, g = _problem((2, 2, 5, 5), (3, 2, 3, 3), dict(padding=1), seed=3)
    grads = convscope.conv2d_backward(g, x, w, padding=1, algorithm=algorithm)
    grad_check(_loss(g, dict(padding=1), algorithm), {"input": x, "weight": w, "bias": np.zeros(3)},
               grads._asdict())


@pytest.mark.parametrize("argument, index", [
    ("input", (1, 0, 0, 4)),
    ("weight", (2, 1, 0, 2)),
    ("bias", (1,)),
])
def test_grad_check_reports_argument_and_index(argument, index):
    """The helper catches one wrong gradient entry and says where it is."""
    params = dict(padding=1, padding_mode="reflect")
    x, w, b, g = _problem((2, 2, 5, 5), (3, 2, 3, 3), params, seed=4)
    grads = convscope.conv2d_backward(g, x, w, **params)._asdict()
    wrong = grads[argument].copy()
    wrong[index] += 0.5
    grads[argument] = wrong
    expected = rf"gradient of {argument}\[{', '.join(map(str, index))}\] disagrees"
    with pytest.raises(AssertionError, match=expected):
        grad_check(_loss(g, params, "gemm"), {"input": x, "weight": w, "bias": b}, grads)


def test_grad_check_detects_a_missing_border_fold():
    """An input gradient that ignores what the reflect border copied fails the check."""
    params = dict(padding=1, padding_mode="reflect")
    x, w, b, g = _problem((1, 1, 4, 4), (1, 1, 3, 3), params, seed=5)
    interior_only = convscope.conv2d_backward(g, x, w, padding=1)  # zero padding: no fold
    grads = convscope.conv2d_backward(g, x, w, **params)._asdict()
    grads["input"] = interior_only.input
    with pytest.raises(AssertionError, match=r"gradient of input\["):
        grad_check(_loss(g, params, "gemm"), {"input": x, "weight": w, "bias": b}, grads)


def test_runs_without_torch():
    """With torch made unimportable, convscope and this module still import and check gradients."""
    code = (
        "import sys, importlib.util\n"
        "sys.modules['torch'] = None\n"
        f"spec = importlib.util.spec_from_file_location('gradcheck_without_torch', {__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "module.test_grad_check('circular_stride_pair', 'gemm', 'gemm')\n"
        "assert sys.modules['torch'] is None\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
