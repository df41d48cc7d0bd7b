"""``convscope.conv2d_input`` / ``conv2d_weight`` against torch's ``nn.grad`` functions of the same name.

With a stride above 1 several input sizes give the same output size (H = 7 and
H = 8 with k = 3, s = 2 both give 3 rows), so ``input_size`` decides the shape
and the last rows/columns of the input gradient: the cases below include such
pairs.  torch needs a 4-D ``input_size`` and batched tensors; an unbatched
convscope call is compared with the batched torch result, squeezed.
"""
from __future__ import annotations

import numpy as np
import pytest

import convscope
from oracle import assert_close, require_torch, to_tensor, torch_autograd, torch_grad_function, torch_size

require_torch()

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

DTYPES = (np.float64, np.float32)
ALGORITHMS = (None, "reference")

# (input (N, C, H, W), weight (C_out, C/groups, kH, kW), keyword arguments)
CASES = {
    "plain": ((2, 3, 6, 6), (4, 3, 3, 3), {}),
    "padding": ((2, 3, 5, 6), (4, 3, 3, 3), dict(padding=1)),
    "padding_pair": ((2, 2, 5, 6), (3, 2, 3, 2), dict(padding=(2, 1))),
    "stride2_H7": ((2, 2, 7, 7), (3, 2, 3, 3), dict(stride=2)),
    "stride2_H8": ((2, 2, 8, 8), (3, 2, 3, 3), dict(stride=2)),
    "stride2_H7_W8": ((1, 2, 7, 8), (3, 2, 3, 3), dict(stride=2, padding=1)),
    "stride3_leftover2": ((2, 2, 8, 7), (2, 2, 2, 2), dict(stride=3)),
    "stride_pair": ((2, 2, 8, 7), (3, 2, 3, 2), dict(stride=(2, 3), padding=(1, 0))),
    "stride_larger_than_kernel": ((1, 2, 8, 8), (2, 2, 2, 2), dict(stride=3, padding=1)),
    "dilation": ((2, 2, 8, 7), (3, 2, 3, 3), dict(dilation=2, padding=1)),
    "dilation_pair_stride": ((2, 2, 8, 8), (2, 2, 3, 2), dict(dilation=(2, 3), stride=(2, 1), padding=(2, 1))),
    "groups": ((2, 4, 6, 5), (6, 2, 3, 3), dict(groups=2, padding=1)),
    "depthwise": ((2, 3, 6, 6), (3, 1, 3, 3), dict(groups=3, padding=1, stride=2)),
    "channel_multiplier": ((2, 3, 6, 5), (6, 1, 3, 3), dict(groups=3)),
    "kernel_1x1": ((2, 4, 5, 5), (3, 4, 1, 1), {}),
    "kernel_1x1_stride2_H6": ((2, 4, 6, 6), (3, 4, 1, 1), dict(stride=2)),
    "kernel_fills_input": ((2, 2, 5, 4), (3, 2, 7, 6), dict(padding=1)),
    "everything": ((2, 4, 8, 7), (6, 2, 2, 3), dict(groups=2, stride=(2, 3), padding=(1, 2), dilation=(2, 1))),
}


def _arrays(x_shape, w_shape, params, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    out_hw = convscope.conv2d_output_size(x_shape[2:], w_shape[2:], params.get("stride", 1),
                                          params.get("padding", 0), params.get("dilation", 1))
    g = rng.standard_normal((x_shape[0], w_shape[0]) + tuple(out_hw)).astype(dtype)
    return x, w, g


def _torch_input(x_shape, w, g, params):
    return torch_grad_function("conv2d_input", x_shape, w, g, **params)


def _torch_weight(x, w_shape, g, params):
    return torch_grad_function("conv2d_weight", x, w_shape, g, **params)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", CASES)
def test_conv2d_input(name, dtype, algorithm):
    x_shape, w_shape, params = CASES[name]
    x, w, g = _arrays(x_shape, w_shape, params, dtype)
    w_before, g_before = w.copy(), g.copy()
    got = convscope.conv2d_input(x_shape, w, g, algorithm=algorithm, **params)
    assert_close(got, _torch_input(x_shape, w, g, params), "conv2d_input")
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(w, w_before)
    np.testing.assert_array_equal(g, g_before)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", CASES)
def test_conv2d_weight(name, dtype, algorithm):
    x_shape, w_shape, params = CASES[name]
    x, w, g = _arrays(x_shape, w_shape, params, dtype)
    x_before, g_before = x.copy(), g.copy()
    got = convscope.conv2d_weight(x, w_shape, g, algorithm=algorithm, **params)
    assert_close(got, _torch_weight(x, w_shape, g, params), "conv2d_weight")
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(g, g_before)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["plain", "stride2_H7", "stride2_H8", "stride_pair", "groups", "everything"])
def test_unbatched(name, dtype, algorithm):
    x_shape, w_shape, params = CASES[name]
    x, w, g = _arrays((1,) + x_shape[1:], w_shape, params, dtype)
    dx = convscope.conv2d_input(x_shape[1:], w, g[0], algorithm=algorithm, **params)
    assert_close(dx, _torch_input((1,) + x_shape[1:], w, g, params)[0], "conv2d_input unbatched")
    dw = convscope.conv2d_weight(x[0], w_shape, g[0], algorithm=algorithm, **params)
    assert_close(dw, _torch_weight(x, w_shape, g, params), "conv2d_weight unbatched")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_input_size_decides_the_shape(algorithm):
    """One grad_output, two input sizes with the same output size: different, correct gradients."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 2, 3, 3))
    g = rng.standard_normal((2, 3, 3, 3))
    results = {}
    for H in (7, 8):
        size = (2, 2, H, H)
        assert convscope.conv2d_output_size((H, H), 3, stride=2) == (3, 3)
        results[H] = convscope.conv2d_input(size, w, g, stride=2, algorithm=algorithm)
        assert_close(results[H], _torch_input(size, w, g, dict(stride=2)), f"H={H}")
    assert results[7].shape == (2, 2, 7, 7) and results[8].shape == (2, 2, 8, 8)
    # the eighth row and column are read by no tap: their gradient is exactly zero
    assert not results[8][:, :, 7, :].any() and not results[8][:, :, :, 7].any()
    np.testing.assert_allclose(results[8][:, :, :7, :7], results[7], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_zero_batch(algorithm):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((3, 2, 3, 3))
    g = np.zeros((0, 3, 3, 3))
    x = np.zeros((0, 2, 7, 7))
    dx = convscope.conv2d_input((0, 2, 7, 7), w, g, stride=2, algorithm=algorithm)
    assert_close(dx, _torch_input((0, 2, 7, 7), w, g, dict(stride=2)))
    dw = convscope.conv2d_weight(x, (3, 2, 3, 3), g, stride=2, algorithm=algorithm)
    assert_close(dw, _torch_weight(x, (3, 2, 3, 3), g, dict(stride=2)))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("size_type", (tuple, list, torch_size, np.array))
def test_size_argument_types(size_type, algorithm):
    x_shape, w_shape, params = CASES["stride2_H7"]
    x, w, g = _arrays(x_shape, w_shape, params, np.float64)
    dx = convscope.conv2d_input(size_type(x_shape), w, g, algorithm=algorithm, **params)
    assert_close(dx, _torch_input(x_shape, w, g, params))
    dw = convscope.conv2d_weight(x, size_type(w_shape), g, algorithm=algorithm, **params)
    assert_close(dw, _torch_weight(x, w_shape, g, params))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_torch_tensor_arguments(algorithm):
    x_shape, w_shape, params = CASES["everything"]
    x, w, g = _arrays(x_shape, w_shape, params, np.float32)
    xt, wt, gt = (to_tensor(a) for a in (x, w, g))
    dx = convscope.conv2d_input(xt.shape, wt, gt, algorithm=algorithm, **params)
    dw = convscope.conv2d_weight(xt, wt.shape, gt, algorithm=algorithm, **params)
    assert type(dx) is np.ndarray and type(dw) is np.ndarray
    assert_close(dx, _torch_input(x_shape, w, g, params))
    assert_close(dw, _torch_weight(x, w_shape, g, params))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float16(algorithm):
    x_shape, w_shape, params = CASES["groups"]
    x, w, g = _arrays(x_shape, w_shape, params, np.float16)
    dx = convscope.conv2d_input(x_shape, w, g, algorithm=algorithm, **params)
    dw = convscope.conv2d_weight(x, w_shape, g, algorithm=algorithm, **params)
    assert_close(dx, _torch_input(x_shape, w, g, params))
    assert_close(dw, _torch_weight(x, w_shape, g, params))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("kernel, dilation", [((3, 3), (1, 1)), ((2, 4), (1, 1)), ((2, 3), (3, 2))])
def test_same_padding(kernel, dilation, algorithm):
    """torch's nn.grad takes only numeric padding; 'same' is compared with autograd through F.conv2d."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 6, 7))
    w = rng.standard_normal((3, 2) + kernel)
    g = rng.standard_normal((2, 3, 6, 7))
    _, (want_dx, want_dw) = torch_autograd(lambda F, x, w: F.conv2d(x, w, padding="same", dilation=dilation),
                                           x, w, grad_output=g)
    dx = convscope.conv2d_input(x.shape, w, g, padding="same", dilation=dilation, algorithm=algorithm)
    dw = convscope.conv2d_weight(x, w.shape, g, padding="same", dilation=dilation, algorithm=algorithm)
    assert_close(dx, want_dx, "conv2d_input")
    assert_close(dw, want_dw, "conv2d_weight")


@pytest.mark.parametrize("name", CASES)
def test_agree_with_conv2d_backward(name):
    """conv2d_input / conv2d_weight are conv2d_backward's input and weight gradients."""
    x_shape, w_shape, params = CASES[name]
    x, w, g = _arrays(x_shape, w_shape, params, np.float64)
    grads = convscope.conv2d_backward(g, x, w, **params)
    np.testing.assert_array_equal(convscope.conv2d_input(x_shape, w, g, **params), grads.input)
    np.testing.assert_array_equal(convscope.conv2d_weight(x, w_shape, g, **params), grads.weight)
