"""Every invalid call: the exception type, and a message naming the parameter and the value.

Also: every configuration torch rejects, convscope rejects (with ValueError or
TypeError, never an IndexError, AttributeError, ZeroDivisionError or assert);
errors come before any heavy work; and :func:`convscope.spec.make_spec`
normalises its arguments as torch does.
"""
from __future__ import annotations

import dataclasses
import re
import time
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convscope import (
    Conv2d,
    conv2d,
    conv2d_backward,
    conv2d_input,
    conv2d_output_size,
    conv2d_weight,
)
from convscope import algorithms
from convscope.spec import ConvSpec, make_spec

from oracle import needs_torch, torch_forward_or_error, torch_functional, torch_module, torch_zeros




def z(*shape, dtype=np.float64):
    return np.zeros(shape, dtype=dtype)


X = z(1, 3, 5, 5)          # input
W = z(2, 3, 3, 3)          # weight, output (1, 2, 3, 3)
B = z(2)                   # bias
G = z(1, 2, 3, 3)          # grad_output for X, W


class AlgorithmCalled(Exception):
    """Raised by the stand-in algorithms: validation let an invalid call through to the work."""


def _fail(*args, **kwargs):
    raise AlgorithmCalled("an algorithm ran before the call was validated")


@pytest.fixture
def no_algorithms(monkeypatch):
    """Replace every algorithm with one that fails if it is reached."""
    fake = types.SimpleNamespace(forward=_fail, grad_input=_fail, grad_weight=_fail)
    for name in list(algorithms.ALGORITHMS):
        monkeypatch.setitem(algorithms.ALGORITHMS, name, fake)


def case(case_id, exc, pattern, call):
    return pytest.param(exc, pattern, call, id=case_id)


# --------------------------------------------------------------------------- the issue's examples

ISSUE_EXAMPLES = [
    case("groups-divides-in_channels", ValueError,
         re.escape("in_channels (4) must be divisible by groups (3)"),
         lambda: Conv2d(4, 6, 3, groups=3)),
    case("stride-positive", ValueError,
         re.escape("stride must be positive, got (-1, 1)"),
         lambda: conv2d(X, W, stride=(-1, 1))),
    case("stride-positive-module", ValueError,
         re.escape("stride must be positive, got (-1, 1)"),
         lambda: Conv2d(3, 2, 3, stride=(-1, 1))),
    case("same-strided", ValueError,
         re.escape("padding='same' is not supported for strided convolutions"),
         lambda: conv2d(X, W, padding="same", stride=2)),
    case("same-strided-module", ValueError,
         re.escape("padding='same' is not supported for strided convolutions"),
         lambda: Conv2d(3, 2, 3, padding="same", stride=(1, 2))),
    case("reflect-too-large", ValueError,
         re.escape("reflect padding (3) must be smaller than the input height (2)"),
         lambda: conv2d(z(1, 3, 2, 9), W, padding=3, padding_mode="reflect")),
    case("reflect-too-large-module", ValueError,
         re.escape("reflect padding (3) must be smaller than the input height (2)"),
         lambda: Conv2d(3, 2, 3, padding=3, padding_mode="reflect")(z(1, 3, 2, 9, dtype=np.float32))),
    case("channels-mismatch", ValueError,
         re.escape("input has 4 channels but weight expects 3 (weight.shape[1]=3 × groups=1)"),
         lambda: conv2d(z(1, 4, 5, 5), W)),
    case("channels-mismatch-module", ValueError,
         re.escape("input has 4 channels but weight expects 3 (weight.shape[1]=3 × groups=1)"),
         lambda: Conv2d(3, 2, 3)(z(1, 4, 5, 5, dtype=np.float32))),
    case("empty-output", ValueError,
         re.escape("output would be empty: H_out = ⌊(2 + 0 − 1·(5−1) − 1)/1⌋ + 1 = −2"),
         lambda: conv2d(z(1, 3, 2, 9), z(2, 3, 5, 5))),
]


@pytest.mark.parametrize("exc, pattern, call", ISSUE_EXAMPLES)
def test_issue_examples(no_algorithms, exc, pattern, call):
    with pytest.raises(exc, match=pattern):
        call()


# --------------------------------------------------------------------------- hyper-parameters

HYPER = [
    # stride
    case("stride-0", ValueError, r"stride must be positive, got \(0, 0\)", lambda: conv2d(X, W, stride=0)),
    case("stride-neg", ValueError, r"stride must be positive, got \(-2, -2\)", lambda: conv2d(X, W, stride=-2)),
    case("stride-bool", TypeError, r"stride.*True", lambda: conv2d(X, W, stride=True)),
    case("stride-float", TypeError, r"stride.*1\.0", lambda: conv2d(X, W, stride=1.0)),
    case("stride-float-in-pair", TypeError, r"stride.*\(1\.0, 1\)", lambda: conv2d(X, W, stride=(1.0, 1))),
    case("stride-bool-in-pair", TypeError, r"stride.*\(1, True\)", lambda: conv2d(X, W, stride=(1, True))),
    case("stride-3-tuple", ValueError, r"stride.*\(1, 1, 1\)", lambda: conv2d(X, W, stride=(1, 1, 1))),
    case("stride-empty", ValueError, r"stride.*\(\)", lambda: conv2d(X, W, stride=())),
    case("stride-str", TypeError, r"stride.*'1'", lambda: conv2d(X, W, stride="1")),
    case("stride-none", TypeError, r"stride.*None", lambda: conv2d(X, W, stride=None)),
    # padding
    case("padding-neg", ValueError, r"padding must be non-negative, got \(-1, -1\)",
         lambda: conv2d(X, W, padding=-1)),
    case("padding-neg-pair", ValueError, r"padding must be non-negative, got \(1, -2\)",
         lambda: conv2d(X, W, padding=(1, -2))),
    case("padding-neg-module", ValueError, r"padding must be non-negative, got \(-1, -1\)",
         lambda: Conv2d(3, 2, 3, padding=-1, padding_mode="reflect")),
    case("padding-full", ValueError, r"padding.*'full'", lambda: conv2d(X, W, padding="full")),
    case("padding-SAME", ValueError, r"padding.*'SAME'", lambda: conv2d(X, W, padding="SAME")),
    case("padding-empty-str", ValueError, r"padding.*''", lambda: conv2d(X, W, padding="")),
    case("padding-float", TypeError, r"padding.*1\.5", lambda: conv2d(X, W, padding=1.5)),
    case("padding-bool", TypeError, r"padding.*True", lambda: conv2d(X, W, padding=True)),
    case("padding-none", TypeError, r"padding.*None", lambda: conv2d(X, W, padding=None)),
    case("padding-3-tuple", ValueError, r"padding.*\(1, 1, 1\)", lambda: conv2d(X, W, padding=(1, 1, 1))),
    case("padding-float-in-pair", TypeError, r"padding.*\(1\.0, 1\)", lambda: conv2d(X, W, padding=(1.0, 1))),
    case("same-strided-pair", ValueError, r"padding='same'.*strided.*\(1, 2\)",
         lambda: conv2d(X, W, padding="same", stride=(1, 2))),
    # dilation
    case("dilation-0", ValueError, r"dilation must be positive, got \(0, 0\)", lambda: conv2d(X, W, dilation=0)),
    case("dilation-neg", ValueError, r"dilation must be positive, got \(1, -1\)",
         lambda: conv2d(X, W, dilation=(1, -1))),
    case("dilation-float", TypeError, r"dilation.*2\.0", lambda: conv2d(X, W, dilation=2.0)),
    case("dilation-bool", TypeError, r"dilation.*True", lambda: conv2d(X, W, dilation=True)),
    # groups
    case("groups-0", ValueError, r"groups must be a positive integer, got 0", lambda: conv2d(X, W, groups=0)),
    case("groups-neg", ValueError, r"groups.*-1", lambda: conv2d(X, W, groups=-1)),
    case("groups-bool", TypeError, r"groups.*True", lambda: conv2d(X, W, groups=True)),
    case("groups-float", TypeError, r"groups.*1\.0", lambda: conv2d(X, W, groups=1.0)),
    case("groups-str", TypeError, r"groups.*'1'", lambda: conv2d(X, W, groups="1")),
    case("groups-0-module", ValueError, r"groups.*0", lambda: Conv2d(3, 3, 3, groups=0)),
    case("groups-bool-module", TypeError, r"groups.*True", lambda: Conv2d(3, 3, 3, groups=True)),
    case("groups-float-module", TypeError, r"groups.*3\.0", lambda: Conv2d(3, 3, 3, groups=3.0)),
    # padding_mode
    case("padding_mode-foo", ValueError, r"padding_mode.*'foo'", lambda: conv2d(X, W, padding_mode="foo")),
    case("padding_mode-case", ValueError, r"padding_mode.*'Zeros'", lambda: conv2d(X, W, padding_mode="Zeros")),
    case("padding_mode-constant", ValueError, r"padding_mode.*'constant'",
         lambda: conv2d(X, W, padding_mode="constant")),
    case("padding_mode-none", ValueError, r"padding_mode.*None", lambda: conv2d(X, W, padding_mode=None)),
    case("padding_mode-module", ValueError, r"padding_mode.*'wrap'", lambda: Conv2d(3, 2, 3, padding_mode="wrap")),
    # algorithm
    case("algorithm-name", ValueError, r"algorithm.*'fast'", lambda: conv2d(X, W, algorithm="fast")),
    case("algorithm-int", ValueError, r"algorithm.*\b1\b", lambda: conv2d(X, W, algorithm=1)),
    case("algorithm-backward", ValueError, r"algorithm.*'im2col'",
         lambda: conv2d_backward(G, X, W, algorithm="im2col")),
    case("algorithm-input", ValueError, r"algorithm.*'REFERENCE'",
         lambda: conv2d_input(X.shape, W, G, algorithm="REFERENCE")),
    case("algorithm-weight", ValueError, r"algorithm.*'naive'",
         lambda: conv2d_weight(X, W.shape, G, algorithm="naive")),
    case("algorithm-module-forward", ValueError, r"algorithm.*'nope'",
         lambda: Conv2d(3, 2, 3)(z(1, 3, 5, 5, dtype=np.float32), algorithm="nope")),
]


# --------------------------------------------------------------------------- shapes

SHAPES = [
    case("input-2d", ValueError, r"input.*\(5, 5\)", lambda: conv2d(z(5, 5), W)),
    case("input-5d", ValueError, r"input.*\(1, 1, 3, 5, 5\)", lambda: conv2d(z(1, 1, 3, 5, 5), W)),
    case("input-0d", ValueError, r"input.*\(\)", lambda: conv2d(np.float64(1.0), W)),
    case("input-none", TypeError, r"input.*None", lambda: conv2d(None, W)),
    case("weight-3d", ValueError, r"weight.*\(3, 3, 3\)", lambda: conv2d(X, z(3, 3, 3))),
    case("weight-5d", ValueError, r"weight.*\(2, 3, 3, 3, 1\)", lambda: conv2d(X, z(2, 3, 3, 3, 1))),
    case("weight-none", TypeError, r"weight.*None", lambda: conv2d(X, None)),
    case("kernel-h-0", ValueError, r"weight.*kernel.*\(2, 3, 0, 3\)", lambda: conv2d(X, z(2, 3, 0, 3))),
    case("kernel-w-0", ValueError, r"weight.*kernel.*\(2, 3, 3, 0\)", lambda: conv2d(X, z(2, 3, 3, 0))),
    case("out_channels-0", ValueError, r"out_channels.*\(0, 3, 3, 3\)", lambda: conv2d(X, z(0, 3, 3, 3))),
    case("out_channels-not-divisible", ValueError,
         re.escape("out_channels (weight.shape[0]=3) must be divisible by groups (2)"),
         lambda: conv2d(z(1, 4, 5, 5), z(3, 2, 3, 3), groups=2)),
    case("channels-not-matching-groups", ValueError,
         re.escape("input has 5 channels but weight expects 4 (weight.shape[1]=2 × groups=2)"),
         lambda: conv2d(z(1, 5, 5, 5), z(4, 2, 3, 3), groups=2)),
    case("channels-unbatched", ValueError, r"input has 4 channels but weight expects 3",
         lambda: conv2d(z(4, 5, 5), W)),
    case("bias-length", ValueError, r"bias.*out_channels=2.*\(3,\)", lambda: conv2d(X, W, z(3))),
    case("bias-2d", ValueError, r"bias.*\(2, 1\)", lambda: conv2d(X, W, z(2, 1))),
    case("bias-scalar", ValueError, r"bias.*\(\)", lambda: conv2d(X, W, np.float64(0.0))),
    case("empty-h", ValueError, r"input height and width must be positive, got 0×5",
         lambda: conv2d(z(1, 3, 0, 5), W)),
    case("empty-w", ValueError, r"input height and width must be positive, got 5×0",
         lambda: conv2d(z(1, 3, 5, 0), W)),
    case("empty-h-unbatched", ValueError, r"input height and width must be positive, got 0×0",
         lambda: conv2d(z(3, 0, 0), W)),
    case("empty-h-zero-batch", ValueError, r"input height and width must be positive, got 0×5",
         lambda: conv2d(z(0, 3, 0, 5), W)),
    case("empty-output-w", ValueError,
         re.escape("output would be empty: W_out = ⌊(3 + 2 − 2·(4−1) − 1)/2⌋ + 1 = 0"),
         lambda: conv2d(z(1, 3, 9, 3), z(2, 3, 1, 4), stride=2, padding=(0, 1), dilation=2)),
    case("empty-output-dilated", ValueError,
         re.escape("output would be empty: H_out = ⌊(5 + 0 − 3·(3−1) − 1)/1⌋ + 1 = −1"),
         lambda: conv2d(X, W, dilation=3)),
    case("empty-output-zero-batch", ValueError, r"output would be empty: H_out",
         lambda: conv2d(z(0, 3, 2, 2), W)),
    case("reflect-width", ValueError,
         re.escape("reflect padding (2) must be smaller than the input width (2)"),
         lambda: conv2d(z(1, 3, 5, 2), W, padding=2, padding_mode="reflect")),
    case("reflect-same-bottom", ValueError,
         re.escape("reflect padding (2) must be smaller than the input height (2)"),
         lambda: conv2d(z(1, 3, 2, 5), z(2, 3, 4, 3), padding="same", padding_mode="reflect")),
    case("circular-too-large", ValueError,
         re.escape("circular padding (3) must not exceed the input height (2)"),
         lambda: conv2d(z(1, 3, 2, 5), z(2, 3, 1, 1), padding=3, padding_mode="circular")),
    case("circular-too-large-width", ValueError,
         re.escape("circular padding (4) must not exceed the input width (3)"),
         lambda: conv2d(z(1, 3, 5, 3), z(2, 3, 1, 1), padding=(0, 4), padding_mode="circular")),
]


# --------------------------------------------------------------------------- dtypes

F32 = np.float32
DTYPES = [
    case("int32", TypeError, r"input has dtype int32", lambda: conv2d(X.astype(np.int32), W)),
    case("int64-weight", TypeError, r"weight has dtype int64", lambda: conv2d(X, W.astype(np.int64))),
    case("uint8", TypeError, r"input has dtype uint8", lambda: conv2d(X.astype(np.uint8), W)),
    case("bool", TypeError, r"input has dtype bool", lambda: conv2d(X.astype(bool), W)),
    case("complex", TypeError, r"input has dtype complex128", lambda: conv2d(X.astype(np.complex128), W)),
    case("complex-bias", TypeError, r"bias has dtype complex64", lambda: conv2d(X, W, B.astype(np.complex64))),
    case("object", TypeError, r"input has dtype object", lambda: conv2d(X.astype(object), W)),
    case("string", TypeError, r"input has dtype <U", lambda: conv2d(X.astype(str), W)),
    case("string-scalar", TypeError, r"input has dtype <U", lambda: conv2d("abc", W)),
    case("int-list", TypeError, r"input has dtype int", lambda: conv2d([[[1, 2], [3, 4]]], z(1, 1, 1, 1))),
    case("ragged-list", TypeError, r"input could not be converted",
         lambda: conv2d([[[1.0, 2.0], [3.0]]], z(1, 1, 1, 1))),
    case("ragged-weight", TypeError, r"weight could not be converted",
         lambda: conv2d(z(1, 1, 2, 2), [[[[1.0], [2.0, 3.0]]]])),
    case("mixed-input-weight", TypeError, r"input.*weight.*same dtype.*input is float32.*weight is float64",
         lambda: conv2d(X.astype(F32), W)),
    case("mixed-bias", TypeError, r"bias.*same dtype.*bias is float32",
         lambda: conv2d(X, W, B.astype(F32))),
    case("mixed-half", TypeError, r"same dtype.*input is float16.*weight is float32",
         lambda: conv2d(X.astype(np.float16), W.astype(F32))),
    case("mixed-list-bias", TypeError, r"same dtype.*bias is float64",
         lambda: conv2d(X.astype(F32), W.astype(F32), [0.0, 0.0])),
    case("mixed-backward-grad", TypeError, r"grad_output.*same dtype.*grad_output is float32",
         lambda: conv2d_backward(G.astype(F32), X, W)),
    case("mixed-backward-weight", TypeError, r"same dtype.*weight is float32",
         lambda: conv2d_backward(G, X, W.astype(F32))),
    case("mixed-input-grad", TypeError, r"weight.*grad_output.*same dtype.*grad_output is float32",
         lambda: conv2d_input(X.shape, W, G.astype(F32))),
    case("mixed-weight-grad", TypeError, r"input.*grad_output.*same dtype.*grad_output is float32",
         lambda: conv2d_weight(X, W.shape, G.astype(F32))),
    case("int-grad_output", TypeError, r"grad_output has dtype int64",
         lambda: conv2d_backward(G.astype(np.int64), X, W)),
    case("module-int-input", TypeError, r"input has dtype int64",
         lambda: Conv2d(3, 2, 3)(X.astype(np.int64))),
    case("module-mixed-input", TypeError, r"same dtype.*input is float64.*weight is float32",
         lambda: Conv2d(3, 2, 3)(X)),
]


@needs_torch
@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: torch_zeros((1, 3, 5, 5), "bfloat16"), r"input has dtype bfloat16"),
        (lambda: torch_zeros((1, 3, 5, 5), np.int32), r"input has dtype int32"),
        (lambda: torch_zeros((1, 3, 5, 5), np.complex64), r"input has dtype complex64"),
        (lambda: torch_zeros((1, 3, 5, 5), np.bool_), r"input has dtype bool"),
    ],
    ids=["bfloat16", "int32", "complex64", "bool"],
)
def test_torch_tensor_dtypes(no_algorithms, make, pattern):
    with pytest.raises(TypeError, match=pattern):
        conv2d(make(), W)


@needs_torch
def test_bfloat16_torch_tensors_everywhere(no_algorithms):
    xb = torch_zeros((1, 3, 5, 5), "bfloat16")
    wb = torch_zeros((2, 3, 3, 3), "bfloat16")
    gb = torch_zeros((1, 2, 3, 3), "bfloat16")
    with pytest.raises(TypeError, match=r"weight has dtype bfloat16"):
        conv2d(X, wb)
    with pytest.raises(TypeError, match=r"bias has dtype bfloat16"):
        conv2d(X, W, torch_zeros((2,), "bfloat16"))
    with pytest.raises(TypeError, match=r"grad_output has dtype bfloat16"):
        conv2d_backward(gb, X, W)
    with pytest.raises(TypeError, match=r"input has dtype bfloat16"):
        conv2d_weight(xb, W.shape, G)
    with pytest.raises(TypeError, match=r"weight has dtype bfloat16"):
        Conv2d(3, 2, 3).weight = wb


@needs_torch
def test_mixed_torch_and_numpy_dtypes(no_algorithms):
    with pytest.raises(TypeError, match=r"input is float32.*weight is float64"):
        conv2d(torch_zeros((1, 3, 5, 5)), W)


# --------------------------------------------------------------------------- backward, grad.*

GRADS = [
    case("grad_output-shape", ValueError, r"grad_output.*\(1, 2, 3, 3\).*got \(1, 2, 3, 4\)",
         lambda: conv2d_backward(z(1, 2, 3, 4), X, W)),
    case("grad_output-channels", ValueError, r"grad_output.*got \(1, 3, 3, 3\)",
         lambda: conv2d_backward(z(1, 3, 3, 3), X, W)),
    case("grad_output-batch", ValueError, r"grad_output.*got \(2, 2, 3, 3\)",
         lambda: conv2d_backward(z(2, 2, 3, 3), X, W)),
    case("grad_output-unbatched-for-batched", ValueError, r"grad_output.*got \(2, 3, 3\)",
         lambda: conv2d_backward(z(2, 3, 3), X, W)),
    case("grad_output-batched-for-unbatched", ValueError, r"grad_output.*\(2, 3, 3\).*got \(1, 2, 3, 3\)",
         lambda: conv2d_backward(G, X[0], W)),
    case("grad_output-none", TypeError, r"grad_output.*None", lambda: conv2d_backward(None, X, W)),
    case("backward-bad-input", ValueError, r"input.*\(3, 5\)", lambda: conv2d_backward(G, z(3, 5), W)),
    case("backward-bad-padding", ValueError, r"padding must be non-negative",
         lambda: conv2d_backward(G, X, W, padding=-1)),
    case("backward-reflect", ValueError, r"reflect padding \(3\).*input height \(2\)",
         lambda: conv2d_backward(z(1, 2, 2, 9), z(1, 3, 2, 9), W, padding=3, padding_mode="reflect")),
    case("backward-padding_mode", ValueError, r"padding_mode.*'mirror'",
         lambda: conv2d_backward(G, X, W, padding_mode="mirror")),
    # conv2d_input
    case("input-grad_output-shape", ValueError, r"grad_output.*got \(1, 2, 3, 3\)",
         lambda: conv2d_input((1, 3, 6, 5), W, G)),
    case("input-grad_output-stride", ValueError, r"grad_output.*\(1, 2, 2, 2\).*got \(1, 2, 3, 3\)",
         lambda: conv2d_input((1, 3, 5, 5), W, G, stride=2)),
    case("input_size-int", TypeError, r"input_size.*\b5\b", lambda: conv2d_input(5, W, G)),
    case("input_size-none", TypeError, r"input_size.*None", lambda: conv2d_input(None, W, G)),
    case("input_size-length-2", ValueError, r"input_size.*\(5, 5\)", lambda: conv2d_input((5, 5), W, G)),
    case("input_size-length-5", ValueError, r"input_size.*\(1, 1, 3, 5, 5\)",
         lambda: conv2d_input((1, 1, 3, 5, 5), W, G)),
    case("input_size-negative", ValueError, r"input_size.*\(1, 3, -5, 5\)",
         lambda: conv2d_input((1, 3, -5, 5), W, G)),
    case("input_size-zero-height", ValueError, r"input_size height and width must be positive, got 0×5",
         lambda: conv2d_input((1, 3, 0, 5), W, G)),
    case("input_size-channels", ValueError, r"input_size has 4 channels but weight expects 3",
         lambda: conv2d_input((1, 4, 5, 5), W, G)),
    case("input-weight-not-4d", ValueError, r"weight.*\(2, 3, 3\)",
         lambda: conv2d_input((1, 3, 5, 5), z(2, 3, 3), G)),
    case("input-groups", ValueError, r"out_channels.*divisible by groups \(2\)",
         lambda: conv2d_input((1, 6, 5, 5), z(3, 3, 3, 3), z(1, 3, 3, 3), groups=2)),
    # conv2d_weight
    case("weight-grad_output-shape", ValueError, r"grad_output.*\(1, 2, 2, 3\).*got \(1, 2, 3, 3\)",
         lambda: conv2d_weight(X, (2, 3, 4, 3), G)),
    case("weight_size-length-3", ValueError, r"weight_size.*\(2, 3, 3\)", lambda: conv2d_weight(X, (2, 3, 3), G)),
    case("weight_size-none", TypeError, r"weight_size.*None", lambda: conv2d_weight(X, None, G)),
    case("weight_size-int", TypeError, r"weight_size.*\b7\b", lambda: conv2d_weight(X, 7, G)),
    case("weight_size-negative", ValueError, r"weight_size.*\(2, 3, -3, 3\)",
         lambda: conv2d_weight(X, (2, 3, -3, 3), G)),
    case("weight_size-zero-kernel", ValueError, r"kernel size must be positive.*\(2, 3, 0, 3\)",
         lambda: conv2d_weight(X, (2, 3, 0, 3), G)),
    case("weight_size-zero-out", ValueError, r"out_channels.*\(0, 3, 3, 3\)",
         lambda: conv2d_weight(X, (0, 3, 3, 3), G)),
    case("weight_size-channels", ValueError, r"input has 3 channels but weight expects 2",
         lambda: conv2d_weight(X, (2, 2, 3, 3), G)),
    case("weight-input-2d", ValueError, r"input.*\(5, 5\)", lambda: conv2d_weight(z(5, 5), W.shape, G)),
]


@pytest.mark.parametrize(
    "call",
    [
        lambda: conv2d_input((1, 3, 5.0, 5), W, G),
        lambda: conv2d_input((1, 3, True, 5), W, G),
        lambda: conv2d_input("abcd", W, G),
        lambda: conv2d_weight(X, (2, 3, 3, 3.0), G),
        lambda: conv2d_weight(X, (2, 3, 3, None), G),
    ],
    ids=["input_size-float", "input_size-bool", "input_size-str", "weight_size-float", "weight_size-none-entry"],
)
def test_size_of_wrong_element_type_is_type_error(no_algorithms, call):
    """A size tuple holding a float, bool or string is a bad type, as a float stride is.

    (torch raises TypeError for ``input_size=(1, 3, 5.0, 5)`` too.)
    """
    with pytest.raises(TypeError, match=r"(input|weight)_size"):
        call()


# --------------------------------------------------------------------------- conv2d_output_size

OUTPUT_SIZE = [
    case("hw-zero", ValueError, r"input_hw must be positive, got \(0, 5\)", lambda: conv2d_output_size((0, 5), 3)),
    case("hw-negative", ValueError, r"input_hw.*\(-4, -4\)", lambda: conv2d_output_size(-4, 3)),
    case("hw-float", TypeError, r"input_hw.*5\.0", lambda: conv2d_output_size(5.0, 3)),
    case("hw-3", ValueError, r"input_hw.*\(5, 5, 5\)", lambda: conv2d_output_size((5, 5, 5), 3)),
    case("hw-none", TypeError, r"input_hw.*None", lambda: conv2d_output_size(None, 3)),
    case("kernel-0", ValueError, r"kernel_size must be positive, got \(0, 0\)", lambda: conv2d_output_size(5, 0)),
    case("kernel-float", TypeError, r"kernel_size.*3\.0", lambda: conv2d_output_size(5, 3.0)),
    case("kernel-3", ValueError, r"kernel_size.*\(3, 3, 3\)", lambda: conv2d_output_size(5, (3, 3, 3))),
    case("stride-0", ValueError, r"stride must be positive, got \(0, 1\)",
         lambda: conv2d_output_size(5, 3, stride=(0, 1))),
    case("padding-neg", ValueError, r"padding must be non-negative, got \(-1, -1\)",
         lambda: conv2d_output_size(5, 3, padding=-1)),
    case("padding-str", ValueError, r"padding.*'full'", lambda: conv2d_output_size(5, 3, padding="full")),
    case("same-strided", ValueError, r"padding='same' is not supported for strided convolutions",
         lambda: conv2d_output_size(5, 3, padding="same", stride=2)),
    case("dilation-0", ValueError, r"dilation must be positive, got \(0, 0\)",
         lambda: conv2d_output_size(5, 3, dilation=0)),
    case("empty", ValueError, re.escape("output would be empty: H_out = ⌊(5 + 0 − 1·(6−1) − 1)/1⌋ + 1 = 0"),
         lambda: conv2d_output_size((5, 5), 6)),
    case("empty-w", ValueError, re.escape("output would be empty: W_out = ⌊(4 + 2 − 3·(3−1) − 1)/1⌋ + 1 = 0"),
         lambda: conv2d_output_size((9, 4), 3, padding=1, dilation=3)),
]


# --------------------------------------------------------------------------- the layer

MODULE = [
    case("in_channels-neg", ValueError, r"in_channels.*-1", lambda: Conv2d(-1, 2, 3)),
    case("in_channels-float", TypeError, r"in_channels.*3\.0", lambda: Conv2d(3.0, 2, 3)),
    case("in_channels-bool", TypeError, r"in_channels.*True", lambda: Conv2d(True, 2, 3)),
    case("out_channels-0", ValueError, r"out_channels.*\b0\b", lambda: Conv2d(3, 0, 3)),
    case("out_channels-neg", ValueError, r"out_channels.*-2", lambda: Conv2d(3, -2, 3)),
    case("out_channels-str", TypeError, r"out_channels.*'2'", lambda: Conv2d(3, "2", 3)),
    case("out_channels-groups", ValueError, re.escape("out_channels (6) must be divisible by groups (4)"),
         lambda: Conv2d(4, 6, 3, groups=4)),
    case("kernel-0", ValueError, r"kernel_size must be positive, got \(0, 0\)", lambda: Conv2d(3, 2, 0)),
    case("kernel-0-pair", ValueError, r"kernel_size must be positive, got \(3, 0\)", lambda: Conv2d(3, 2, (3, 0))),
    case("kernel-float", TypeError, r"kernel_size.*3\.0", lambda: Conv2d(3, 2, 3.0)),
    case("kernel-bool", TypeError, r"kernel_size.*True", lambda: Conv2d(3, 2, True)),
    case("kernel-3-tuple", ValueError, r"kernel_size.*\(3, 3, 3\)", lambda: Conv2d(3, 2, (3, 3, 3))),
    case("kernel-none", TypeError, r"kernel_size.*None", lambda: Conv2d(3, 2, None)),
    case("stride-bool", TypeError, r"stride.*True", lambda: Conv2d(3, 2, 3, stride=True)),
    case("dilation-0", ValueError, r"dilation must be positive, got \(0, 0\)", lambda: Conv2d(3, 2, 3, dilation=0)),
    case("padding-str", ValueError, r"padding.*'full'", lambda: Conv2d(3, 2, 3, padding="full")),
    case("bias-not-bool", TypeError, r"bias.*'yes'", lambda: Conv2d(3, 2, 3, bias="yes")),
    case("dtype-int", TypeError, r"dtype.*int32", lambda: Conv2d(3, 2, 3, dtype=np.int32)),
    case("dtype-complex", TypeError, r"dtype.*complex128", lambda: Conv2d(3, 2, 3, dtype=np.complex128)),
    case("dtype-garbage", TypeError, r"dtype.*'nonsense'", lambda: Conv2d(3, 2, 3, dtype="nonsense")),
    case("forward-2d", ValueError, r"input.*\(5, 5\)", lambda: Conv2d(3, 2, 3)(z(5, 5, dtype=F32))),
    case("forward-empty-h", ValueError, r"input height and width must be positive, got 0×5",
         lambda: Conv2d(3, 2, 3)(z(1, 3, 0, 5, dtype=F32))),
    case("forward-empty-output", ValueError, r"output would be empty: W_out",
         lambda: Conv2d(3, 2, 3)(z(1, 3, 5, 2, dtype=F32))),
    case("forward-circular", ValueError, r"circular padding \(3\) must not exceed the input width \(2\)",
         lambda: Conv2d(3, 2, 1, padding=3, padding_mode="circular")(z(1, 3, 4, 2, dtype=F32))),
]


@pytest.mark.parametrize("exc, pattern, call", HYPER + SHAPES + DTYPES + GRADS + OUTPUT_SIZE + MODULE)
def test_error(no_algorithms, exc, pattern, call):
    with pytest.raises(exc, match=pattern):
        call()


def test_backward_on_a_bad_grad_output_keeps_the_layer_usable():
    m = Conv2d(3, 2, 3, seed=0)
    x = np.ones((1, 3, 5, 5), np.float32)
    y = m(x)
    with pytest.raises(ValueError, match=r"grad_output.*\(1, 2, 3, 3\).*got \(1, 2, 4, 4\)"):
        m.backward(np.ones((1, 2, 4, 4), np.float32))
    assert m.weight_grad is None and m.bias_grad is None
    m.backward(np.ones_like(y))
    assert m.weight_grad.shape == m.weight.shape


# --------------------------------------------------------------------------- before any heavy work


def _huge(shape, dtype=np.float32):
    """A read-only array of ``shape`` that takes no memory (every element is one zero)."""
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


HUGE = (10_000, 3, 100_000, 100_000)  # 3·10¹⁴ elements: any real work would never finish


@pytest.mark.parametrize(
    "exc, call",
    [
        (ValueError, lambda: conv2d(_huge(HUGE), z(8, 4, 3, 3, dtype=F32))),
        (ValueError, lambda: conv2d(_huge(HUGE), z(8, 3, 3, 3, dtype=F32), z(9, dtype=F32))),
        (ValueError, lambda: conv2d(_huge(HUGE), z(8, 3, 3, 3, dtype=F32), padding=100_000,
                                    padding_mode="reflect")),
        (ValueError, lambda: conv2d(_huge(HUGE), z(8, 3, 3, 3, dtype=F32), algorithm="nope")),
        (TypeError, lambda: conv2d(_huge(HUGE), z(8, 3, 3, 3))),
        (TypeError, lambda: conv2d(_huge(HUGE, np.int64), z(8, 3, 3, 3, dtype=F32))),
        (ValueError, lambda: conv2d(_huge(HUGE), z(8, 3, 3, 3, dtype=F32), stride=(1, 0))),
        (ValueError, lambda: conv2d_backward(_huge((10_000, 8, 99_998, 99_999)), _huge(HUGE),
                                             z(8, 3, 3, 3, dtype=F32))),
        (ValueError, lambda: conv2d_input(HUGE, z(8, 3, 3, 3, dtype=F32), _huge((10_000, 8, 9, 9)))),
        (ValueError, lambda: conv2d_weight(_huge(HUGE), (8, 3, 3, 3), _huge((10_000, 8, 5, 5)))),
        (ValueError, lambda: Conv2d(3, 8, 3)(_huge((10_000, 4, 100_000, 100_000)))),
    ],
)
def test_huge_invalid_call_raises_at_once(exc, call):
    start = time.perf_counter()
    with pytest.raises(exc):
        call()
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------- make_spec


def test_make_spec_int_becomes_pair():
    spec = make_spec(3, stride=2, padding=1, dilation=4, groups=5)
    assert spec.kernel_size == (3, 3)
    assert spec.stride == (2, 2)
    assert spec.dilation == (4, 4)
    assert spec.padding == ((1, 1), (1, 1))
    assert spec.padding_arg == (1, 1)
    assert spec.groups == 5
    assert spec.padding_mode == "zeros"


def test_make_spec_pairs_kept_in_order():
    spec = make_spec((3, 2), stride=(1, 2), padding=(4, 0), dilation=[2, 3], padding_mode="circular")
    assert spec.kernel_size == (3, 2)
    assert spec.stride == (1, 2)
    assert spec.dilation == (2, 3)
    assert spec.padding == ((4, 4), (0, 0))
    assert spec.padding_arg == (4, 0)
    assert spec.padding_mode == "circular"


def test_make_spec_numpy_integers_become_python_ints():
    spec = make_spec(np.int64(3), stride=np.array([1, 2]), padding=(np.int32(1), 2), groups=np.int16(2))
    assert spec.kernel_size == (3, 3) and spec.stride == (1, 2) and spec.padding == ((1, 1), (2, 2))
    assert spec.groups == 2
    for value in (*spec.kernel_size, *spec.stride, *spec.padding[0], *spec.padding[1], spec.groups):
        assert type(value) is int


def test_make_spec_valid():
    spec = make_spec((5, 2), padding="valid", dilation=3)
    assert spec.padding == ((0, 0), (0, 0))
    assert spec.padding_arg == "valid"


@pytest.mark.parametrize("k", range(1, 8))
@pytest.mark.parametrize("d", range(1, 4))
def test_make_spec_same_split(k, d):
    spec = make_spec((k, 2), padding="same", dilation=(d, 1))
    (top, bottom), (left, right) = spec.padding
    total = d * (k - 1)
    assert top + bottom == total
    assert top == total // 2          # floor half on top
    assert bottom - top in (0, 1)     # the odd extra at the bottom
    assert (left, right) == (0, 1)    # kW = 2, dW = 1: total 1, all on the right
    assert spec.padding_arg == "same"
    # the output keeps the input's size
    for n in (1, 4, 9):
        assert spec.output_hw((n, n)) == (n, n)


def test_make_spec_frozen_and_hashable():
    spec = make_spec(3, padding="same")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.stride = (2, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.padding = ((0, 0), (0, 0))
    assert spec == make_spec((3, 3), 1, "same", 1, 1, "zeros")
    assert hash(spec) == hash(make_spec((3, 3), padding="same"))
    assert spec != make_spec(3, padding=1)  # same numbers, different padding_arg
    assert isinstance(spec, ConvSpec)


def test_make_spec_output_hw():
    spec = make_spec((3, 2), stride=2)
    assert spec.output_hw((32, 35)) == ((32 - 3) // 2 + 1, (35 - 2) // 2 + 1)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(kernel_size=0), ValueError, r"kernel_size must be positive, got \(0, 0\)"),
        (dict(kernel_size=3, stride=(-1, 1)), ValueError, r"stride must be positive, got \(-1, 1\)"),
        (dict(kernel_size=3, padding="same", stride=2), ValueError, r"padding='same'"),
        (dict(kernel_size=3, groups=False), TypeError, r"groups.*False"),
        (dict(kernel_size=3, padding_mode="edge"), ValueError, r"padding_mode.*'edge'"),
        (dict(kernel_size=(3, 3.5)), TypeError, r"kernel_size.*3\.5"),
    ],
)
def test_make_spec_errors(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make_spec(**kwargs)


@needs_torch
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("kernel", [(1, 1), (2, 3), (4, 4), (5, 2)])
@pytest.mark.parametrize("dilation", [(1, 1), (2, 1), (3, 2)])
def test_make_spec_same_matches_torch(kernel, dilation):
    """torch's 'same' equals an explicit asymmetric pad by make_spec's split, then a valid conv."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 9, 8))
    w = rng.standard_normal((3, 2, *kernel))
    (top, bottom), (left, right) = make_spec(kernel, padding="same", dilation=dilation).padding
    expected = torch_functional("conv2d", x, w, padding="same", dilation=dilation)
    explicit = torch_functional("conv2d", torch_functional("pad", x, (left, right, top, bottom)), w, dilation=dilation)
    assert np.array_equal(expected, explicit)


# --------------------------------------------------------------------------- torch rejects ⇒ convscope rejects

# (input shape, weight shape, bias shape or None, parameters); float64 unless a dtype is given
REJECTED = {
    "stride-0": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(stride=0)),
    "stride-neg": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(stride=(1, -1))),
    "stride-3": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(stride=(1, 1, 1))),
    "stride-empty": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(stride=())),
    "stride-bool": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(stride=True)),
    "stride-float": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(stride=1.0)),
    "padding-neg": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(padding=-1)),
    "padding-neg-pair": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(padding=(0, -1))),
    "padding-full": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(padding="full")),
    "padding-empty": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(padding=())),
    "padding-float": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(padding=1.0)),
    "padding-none": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(padding=None)),
    "same-strided": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(padding="same", stride=(2, 1))),
    # beyond torch's int64 limits: "expected padding to be at most 4611686018427387903",
    # "Overflow when unpacking long long"
    "padding-int64-limit": ((1, 1, 3, 3), (1, 1, 2, 2), None, dict(padding=2**62)),
    "stride-int64-overflow": ((1, 1, 3, 3), (1, 1, 2, 2), None, dict(stride=2**63)),
    "dilation-0": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(dilation=0)),
    "dilation-neg": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(dilation=(-1, 1))),
    "groups-0": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(groups=0)),
    "groups-neg": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(groups=-1)),
    "groups-bool": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(groups=True)),
    "groups-float": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(groups=1.0)),
    "input-1d": ((5,), (2, 3, 3, 3), None, {}),
    "input-2d": ((5, 5), (2, 3, 3, 3), None, {}),
    "input-5d": ((1, 1, 3, 5, 5), (2, 3, 3, 3), None, {}),
    "weight-3d": ((1, 3, 5, 5), (3, 3, 3), None, {}),
    "weight-5d": ((1, 3, 5, 5), (2, 3, 3, 3, 1), None, {}),
    "kernel-h-0": ((1, 3, 5, 5), (2, 3, 0, 3), None, {}),
    "kernel-w-0": ((1, 3, 5, 5), (2, 3, 3, 0), None, {}),
    "out-0": ((1, 3, 5, 5), (0, 3, 3, 3), None, {}),
    "out-not-divisible": ((1, 4, 5, 5), (3, 2, 3, 3), None, dict(groups=2)),
    "in-not-matching": ((1, 4, 5, 5), (2, 3, 3, 3), None, {}),
    "in-not-matching-groups": ((1, 5, 5, 5), (4, 2, 3, 3), None, dict(groups=2)),
    "in-not-matching-unbatched": ((4, 5, 5), (2, 3, 3, 3), None, {}),
    "in-zero-weight-channels": ((1, 3, 5, 5), (2, 0, 3, 3), None, {}),
    "bias-length": ((1, 3, 5, 5), (2, 3, 3, 3), (3,), {}),
    "bias-2d": ((1, 3, 5, 5), (2, 3, 3, 3), (2, 1), {}),
    "empty-h": ((1, 3, 0, 5), (2, 3, 3, 3), None, {}),
    "empty-w": ((1, 3, 5, 0), (2, 3, 3, 3), None, {}),
    "empty-h-padded": ((1, 3, 0, 5), (2, 3, 1, 1), None, dict(padding=1)),
    "kernel-too-big": ((1, 3, 2, 9), (2, 3, 5, 5), None, {}),
    "kernel-too-big-zero-batch": ((0, 3, 2, 2), (2, 3, 3, 3), None, {}),
    "kernel-too-big-unbatched": ((3, 4, 2), (2, 3, 3, 3), None, {}),
    "dilated-too-big": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(dilation=3)),
    "mixed-dtypes": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(dtypes=("float32", "float64", None))),
    "mixed-bias": ((1, 3, 5, 5), (2, 3, 3, 3), (2,), dict(dtypes=("float64", "float64", "float32"))),
    "mixed-half": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(dtypes=("float16", "float32", None))),
    # padding modes (torch: nn.Conv2d)
    "reflect-h": ((1, 3, 2, 9), (2, 3, 3, 3), None, dict(padding=3, padding_mode="reflect")),
    "reflect-equal": ((1, 3, 5, 2), (2, 3, 3, 3), None, dict(padding=2, padding_mode="reflect")),
    "reflect-h-1": ((1, 3, 1, 5), (2, 3, 3, 1), None, dict(padding=(1, 0), padding_mode="reflect")),
    "reflect-same": ((1, 3, 2, 5), (2, 3, 4, 3), None, dict(padding="same", padding_mode="reflect")),
    "reflect-zero-batch": ((0, 3, 5, 5), (2, 3, 3, 3), None, dict(padding=5, padding_mode="reflect")),
    "reflect-unbatched": ((3, 5, 5), (2, 3, 3, 3), None, dict(padding=5, padding_mode="reflect")),
    "circular-h": ((1, 3, 2, 5), (2, 3, 1, 1), None, dict(padding=3, padding_mode="circular")),
    "circular-w": ((1, 3, 5, 3), (2, 3, 1, 1), None, dict(padding=(0, 4), padding_mode="circular")),
    "circular-same": ((1, 3, 1, 5), (2, 3, 5, 1), None, dict(padding="same", padding_mode="circular")),
    "circular-zero-batch": ((0, 3, 5, 5), (2, 3, 3, 3), None, dict(padding=6, padding_mode="circular")),
    "replicate-empty-h": ((1, 3, 0, 3), (2, 3, 1, 1), None, dict(padding=1, padding_mode="replicate")),
    "replicate-kernel-too-big": ((1, 3, 2, 2), (2, 3, 5, 5), None, dict(padding=1, padding_mode="replicate")),
    "replicate-groups": ((1, 4, 5, 5), (3, 2, 3, 3), None, dict(groups=2, padding=1, padding_mode="replicate")),
    "reflect-same-strided": ((1, 3, 5, 5), (2, 3, 3, 3), None,
                             dict(padding="same", stride=2, padding_mode="reflect")),
    "mode-unknown": ((1, 3, 5, 5), (2, 3, 3, 3), None, dict(padding=1, padding_mode="mirror")),
}


def _arrays(x_shape, w_shape, b_shape, dtypes):
    x = np.zeros(x_shape, dtype=dtypes[0])
    w = np.zeros(w_shape, dtype=dtypes[1])
    b = None if b_shape is None else np.zeros(b_shape, dtype=dtypes[2] or dtypes[1])
    return x, w, b


def _expect_clean_rejection(call):
    """``call`` must raise ValueError or TypeError (any other exception fails the test)."""
    try:
        call()
    except (ValueError, TypeError) as exc:
        return exc
    pytest.fail(f"accepted a configuration torch rejects: {call}")


@needs_torch
@pytest.mark.parametrize("name", list(REJECTED))
def test_torch_rejects_then_convscope_rejects(no_algorithms, name):
    x_shape, w_shape, b_shape, params = REJECTED[name]
    params = dict(params)
    mixed = "dtypes" in params
    dtypes = params.pop("dtypes", ("float64", "float64", None))
    x, w, b = _arrays(x_shape, w_shape, b_shape, dtypes)

    assert isinstance(torch_forward_or_error(x, w, b, **params), Exception)

    _expect_clean_rejection(lambda: conv2d(x, w, b, **params))
    _expect_clean_rejection(lambda: conv2d(x, w, b, algorithm="reference", **params))
    _expect_clean_rejection(lambda: conv2d_backward(np.zeros((1, 1, 1, 1), x.dtype), x, w, **params))
    if not mixed and b is None and "padding_mode" not in params:
        _expect_clean_rejection(lambda: conv2d_input(x.shape, w, np.zeros((1, 1, 1, 1)), **params))
        _expect_clean_rejection(lambda: conv2d_weight(x, w.shape, np.zeros((1, 1, 1, 1)), **params))


@needs_torch
@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((4, 6, 3), dict(groups=3)),
        ((3, 3, 3), dict(padding_mode="foo")),
        ((3, 3, 3), dict(padding="full")),
        ((3, 3, 3), dict(padding="same", stride=2)),
        ((3, 3, 3), dict(groups=-1)),
        ((3, 3, 3.0), {}),
        ((3, 3, (3, 3.0)), {}),
    ],
)
def test_torch_module_rejects_then_convscope_module_rejects(args, kwargs):
    with pytest.raises(Exception):
        torch_module("Conv2d", *args, **kwargs)
    _expect_clean_rejection(lambda: Conv2d(*args, **kwargs))


# random configurations, valid or not: convscope rejects exactly what torch rejects

MODES = ("zeros", "reflect", "replicate", "circular")


@st.composite
def configurations(draw):
    """Mostly valid configurations, each parameter invalid now and then."""

    def mostly(good, bad):
        return draw(bad) if draw(st.integers(0, 19)) == 0 else draw(good)

    groups = mostly(st.integers(1, 3), st.integers(-1, 0))
    cin_per_group = draw(st.integers(1, 3))
    C = mostly(st.just(cin_per_group * max(groups, 1)), st.integers(1, 6))
    out = mostly(st.integers(1, 2).map(lambda m: m * max(groups, 1)), st.integers(0, 4))
    kH, kW = mostly(st.integers(1, 3), st.integers(0, 4)), mostly(st.integers(1, 3), st.integers(0, 4))
    H, W = mostly(st.integers(1, 8), st.integers(0, 6)), mostly(st.integers(1, 8), st.integers(0, 6))
    N = draw(st.sampled_from([None, 0, 1, 2]))
    x_shape = (C, H, W) if N is None else (N, C, H, W)
    w_shape = (out, cin_per_group, kH, kW)
    bias = mostly(st.sampled_from([None, out]), st.just(out + 1))
    mode = draw(st.sampled_from(MODES))
    # torch's padding modes crop on negative padding (F.pad), convscope rejects it: zeros only
    pad = st.integers(0, 3) if mode != "zeros" else st.integers(0, 3) | st.integers(-1, 0)
    padding = draw(st.sampled_from(["same", "valid"]) | pad | st.tuples(pad, pad))
    stride = mostly(st.integers(1, 3) | st.tuples(st.integers(1, 3), st.integers(1, 3)),
                    st.integers(-1, 0) | st.tuples(st.integers(-1, 3), st.integers(-1, 3)))
    dilation = mostly(st.integers(1, 2) | st.tuples(st.integers(1, 3), st.integers(1, 2)),
                      st.integers(-1, 0) | st.tuples(st.integers(-1, 3), st.integers(-1, 3)))
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode)
    return x_shape, w_shape, None if bias is None else (bias,), params


def _check_rejected_exactly_when_torch_rejects(config):
    x_shape, w_shape, b_shape, params = config
    x, w, b = _arrays(x_shape, w_shape, b_shape, ("float64", "float64", None))
    expected = torch_forward_or_error(x, w, b, **params)
    if isinstance(expected, Exception):
        _expect_clean_rejection(lambda: conv2d(x, w, b, **params))
    elif len(x_shape) == 4 and x_shape[0] == 0:
        # torch skips some checks for an empty batch (e.g. it accepts dilation=0 there);
        # convscope validates the same way whatever the batch size
        pass
    else:
        out = conv2d(x, w, b, **params)
        assert out.shape == tuple(expected.shape)


@needs_torch
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@settings(max_examples=300, deadline=None)
@given(configurations())
def test_random_configurations_rejected_exactly_when_torch_rejects(config):
    _check_rejected_exactly_when_torch_rejects(config)


@needs_torch
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@settings(max_examples=5000, deadline=None)
@given(configurations())
def test_random_configurations_rejected_exactly_when_torch_rejects_exhaustive(config):
    _check_rejected_exactly_when_torch_rejects(config)


def test_padding_too_large_to_allocate_is_refused_before_any_work(no_algorithms):
    x, w = np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"padding \(\(1073741824, 1073741824\), .* more than"):
        conv2d(x, w, padding=2**30)


def test_padding_too_large_is_refused_for_an_empty_batch_too(no_algorithms):
    with pytest.raises(ValueError, match=r"padded input 1×1×2147483651×2147483651 = .* more than"):
        conv2d(np.zeros((0, 1, 3, 3)), np.zeros((1, 1, 2, 2)), padding=2**30)


# --------------------------------------------------------------------------- specs derived from specs, one message per rule


@pytest.mark.parametrize("ndim, kernel, params", [
    (2, (3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 3), groups=2, padding_mode="reflect")),
    (3, 3, dict(stride=2, padding=1, dilation=2, padding_mode="circular")),
    (1, 5, dict(padding="same", dilation=2, padding_mode="replicate")),
])
def test_unpadded_and_pointwise_are_validated_specs(ndim, kernel, params):
    spec = make_spec(kernel, ndim=ndim, **params)
    flat = spec.unpadded()
    assert flat == make_spec(kernel, spec.stride, 0, spec.dilation, spec.groups, ndim=ndim)
    assert flat.padding == ((0, 0),) * ndim and flat.padding_mode == "zeros" and flat.padding_arg == (0,) * ndim
    assert (flat.kernel_size, flat.stride, flat.dilation, flat.groups) == \
        (spec.kernel_size, spec.stride, spec.dilation, spec.groups)
    point = spec.pointwise()
    assert point == make_spec(kernel, 1, 0, 1, spec.groups, ndim=ndim)
    assert point.stride == point.dilation == (1,) * ndim and point.padding == flat.padding


def test_call_with_arrays_keeps_the_binding_and_refuses_unknown_names():
    from convscope.spec import bind

    x, w, g = np.zeros((2, 3, 5, 5)), np.zeros((4, 3, 3, 3)), np.zeros((2, 4, 3, 3))
    call = bind(2, input=x, weight=w)
    other = call.with_arrays(grad_output=g, input=np.ones_like(x))
    assert (other.spec, other.shape, other.dtype, other.batched) == (call.spec, call.shape, call.dtype, call.batched)
    assert other.grad_output is g and other.weight is w and np.array_equal(other.input, np.ones_like(x))
    assert call.grad_output is None and call.input is x              # the original call is unchanged
    with pytest.raises(TypeError, match="with_arrays takes input, weight, bias and grad_output, got output"):
        call.with_arrays(output=g)


def test_divisible_by_groups_has_one_message_for_layers_and_calls():
    """out_channels % groups: the layer names the parameter, the call says where it read the count."""
    rule = r"out_channels \({}6\) must be divisible by groups \(4\)"
    with pytest.raises(ValueError, match=rule.format("")):
        Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match=rule.format(re.escape("weight.shape[0]="))):
        conv2d(np.zeros((1, 4, 5, 5)), np.zeros((6, 1, 3, 3)), groups=4)


def test_plan_goes_through_the_binding_step():
    """plan rejects what conv2d rejects, with conv2d's messages for the same shapes."""
    from convscope import plan

    with pytest.raises(TypeError, match=r"input must be a sequence of ints \(N, C, H, W\) or \(C, H, W\)"):
        plan((8, 64, 5.0, 56), (64, 64, 3, 3))
    for call in (lambda: plan((8, 64, 56, 56), (64, 32, 3, 3)),
                 lambda: conv2d(np.zeros((1, 64, 6, 6)), np.zeros((64, 32, 3, 3)))):
        with pytest.raises(ValueError, match=r"input has 64 channels but weight expects 32"):
            call()
    with pytest.raises(ValueError, match=r"input must be a sequence of ints \(N, C, L\) or \(C, L\), got 4 values"):
        plan((8, 64, 56, 56), (64, 64, 3))
    with pytest.raises(ValueError, match=r"out_channels \(weight.shape\[0\]=6\) must be divisible by groups \(4\)"):
        plan((1, 4, 5, 5), (6, 1, 3, 3), groups=4)
    assert plan((4, 56), (64, 4, 3), padding=1).forward.algorithm in algorithms.ALGORITHMS
