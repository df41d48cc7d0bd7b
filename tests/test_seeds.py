"""Every worked example of the seed documents (../shared/seeds/), reproduced.

The notebooks print their tensors to 4 decimals.  Where an example's inputs are
only known to 4 decimals, the comparison allows exactly the error that rounding
can cause, derived per element by :func:`rounding_bound`.
"""
import math

import numpy as np
import pytest

import convscope
from convscope.cli import SEED000_BIAS, SEED000_INPUT, SEED000_TORCH_OUTPUT, SEED000_WEIGHT

HALF_ULP4 = 0.5e-4  # the largest error of a number printed to 4 decimals


def rounding_bound(windows: np.ndarray, kernel: np.ndarray, n_rounded_constants: int = 1) -> np.ndarray:
    """Largest |exact − computed| for Σ window·kernel + constants when every printed number
    (window, kernel, constants and the printed result) carries up to ±0.5e-4 rounding error.

    ``windows`` is (..., kH, kW); the bound is (|x|+|w|)·δ + δ² per product, plus δ for each
    rounded additive constant and δ for the rounded printed result, plus float32 slack.
    """
    w = np.abs(kernel)
    x = np.abs(windows)
    per_product = (x + w) * HALF_ULP4 + HALF_ULP4 ** 2
    return per_product.sum(axis=(-2, -1)) + (n_rounded_constants + 1) * HALF_ULP4 + 1e-6


def windows_of(x2d: np.ndarray, k: tuple, stride: int = 1) -> np.ndarray:
    """(H_out, W_out, kH, kW): the window each output reads (no padding)."""
    v = np.lib.stride_tricks.sliding_window_view(x2d, k)
    return v[::stride, ::stride]


# ------------------------------------------------------------------ seed 000
X000 = np.array(SEED000_INPUT, dtype=np.float32)[None]  # (1, 5, 5) unbatched, as in the notebook


def test_seed000_ones_kernel_sums_the_window_plus_bias():
    m = convscope.Conv2d(in_channels=1, out_channels=1, kernel_size=3)
    m.weight = np.ones_like(m.weight)
    m.bias = np.array([-0.0658], dtype=np.float32)
    out = m(X000)
    printed = np.array([[-1.0637, -2.3257, -0.5727], [-3.4432, -3.6562, -0.2212], [1.4349, 3.2759, 3.8442]])
    assert out.shape == (1, 3, 3)
    bound = rounding_bound(windows_of(X000[0], (3, 3)), np.ones((3, 3)))
    assert np.all(np.abs(out[0] - printed) <= bound)
    # "by hand": the sum of x[0, 0:3, 0:3], plus m.bias
    assert out[0, 0, 0] == pytest.approx(X000[0, 0:3, 0:3].sum() + m.bias[0], abs=1e-6)


def test_seed000_general_kernel_and_the_by_hand_windows():
    w = np.array(SEED000_WEIGHT, dtype=np.float32)[None, None]
    b = np.array(SEED000_BIAS, dtype=np.float32)
    out = convscope.conv2d(X000, w, b)
    printed = np.array(SEED000_TORCH_OUTPUT)
    bound = rounding_bound(windows_of(X000[0], (3, 3)), w[0, 0])
    assert np.all(np.abs(out[0] - printed) <= bound)
    # The notebook's three checks: out[i, j] == sum(weight * x[0, i:i+3, j:j+3]) + bias
    for (i, j) in [(0, 0), (1, 0), (0, 1)]:
        by_hand = float((w[0, 0] * X000[0, i:i + 3, j:j + 3]).sum() + b[0])
        assert out[0, i, j] == pytest.approx(by_hand, abs=1e-6)


def test_seed000_stride_two():
    w = np.array([[0.2815, -0.0375, -0.1130], [-0.2259, -0.1822, 0.2419], [-0.0840, -0.2244, -0.0424]],
                 dtype=np.float32)[None, None]
    b = np.array([0.0358], dtype=np.float32)
    out = convscope.conv2d(X000, w, b, stride=2)
    printed = np.array([[0.6196, 0.4951], [-0.5877, -0.3147]])
    assert out.shape == (1, 2, 2)
    bound = rounding_bound(windows_of(X000[0], (3, 3), stride=2), w[0, 0])
    assert np.all(np.abs(out[0] - printed) <= bound)
    assert out[0, 1, 0] == pytest.approx(float((w[0, 0] * X000[0, 2:5, 0:3]).sum() + b[0]), abs=1e-6)


# ------------------------------------------------------------------ seed 001
X001 = np.array([[0.7504, 0.1157, 1.4940, -0.2619, -0.4732],
                 [0.1497, 0.0805, 2.0829, -0.0925, -1.3367],
                 [1.7471, 0.5205, -0.8532, -0.7358, -1.3931],
                 [0.1159, -0.2376, 1.2683, -0.0959, -1.3171],
                 [-0.1620, -1.8539, 0.0893, -0.0568, -0.0758]], dtype=np.float64)[None, None]
W001 = np.array([[0.2405, 0.3018, 0.0011], [-0.1691, -0.0701, -0.0334], [-0.0429, 0.2668, -0.2152]])[None, None]
OUT001 = np.array([[0.5142, 0.3803, 0.2687], [-0.4321, 1.1637, 1.0675], [0.1742, 0.0869, -0.4451]])


def test_seed001_the_missing_bias_explains_every_output():
    # The user's sum of products for the top-left window, without the bias:
    assert float(np.sum(W001[0, 0] * X001[0, 0, :3, :3])) == pytest.approx(0.36403413, abs=1e-8)
    without_bias = convscope.conv2d(X001, W001)[0, 0]
    assert without_bias[0, 0] == pytest.approx(0.36403413, abs=1e-8)
    # The bias the layer must have had: printed top-left minus the sum of products.
    bias = OUT001[0, 0] - without_bias[0, 0]
    out = convscope.conv2d(X001, W001, np.array([bias]))[0, 0]
    windows = windows_of(X001[0, 0], (3, 3))
    # the derived bias carries the top-left element's rounding error, so allow it twice
    bound = rounding_bound(windows, W001[0, 0]) + rounding_bound(windows[0, 0], W001[0, 0])
    assert np.all(np.abs(out - OUT001) <= bound)
    assert 0.14 < bias < 0.16


def test_seed001_border_of_1x1_conv_with_padding_is_the_bias():
    printed = np.array([
        [0.9862, 0.9862, 0.9862, 0.9862, 0.9862, 0.9862, 0.9862],
        [0.9862, 1.0771, 1.0002, 1.1672, 0.9544, 0.9288, 0.9862],
        [0.9862, 1.0043, 0.9959, 1.2385, 0.9749, 0.8242, 0.9862],
        [0.9862, 1.1978, 1.0492, 0.8828, 0.8970, 0.8174, 0.9862],
        [0.9862, 1.0002, 0.9574, 1.1398, 0.9745, 0.8266, 0.9862],
        [0.9862, 0.9665, 0.7615, 0.9970, 0.9793, 0.9770, 0.9862],
        [0.9862, 0.9862, 0.9862, 0.9862, 0.9862, 0.9862, 0.9862]])
    # For any 1×1 weight, the border of a padding=1 output reads only zero padding: it is the bias.
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((1, 1, 1, 1)), rng.standard_normal(1)
    out = convscope.conv2d(X001, w, b, padding=1)[0, 0]
    border = np.ones((7, 7), bool)
    border[1:-1, 1:-1] = False
    assert out.shape == (7, 7)
    assert np.all(out[border] == b[0])
    # The forum's layer: bias from the border, weight from one interior value; it predicts the rest.
    bias = printed[0, 0]
    weight = (printed[3, 3] - bias) / X001[0, 0, 2, 2]
    out = convscope.conv2d(X001, np.array([[[[weight]]]]), np.array([bias]), padding=1)[0, 0]
    assert np.all(out[border] == bias)
    dw = 2 * HALF_ULP4 / abs(X001[0, 0, 2, 2]) + HALF_ULP4 * abs(weight) / abs(X001[0, 0, 2, 2])
    bound = np.abs(X001[0, 0]) * dw + (abs(weight) + 1) * HALF_ULP4 * 2 + 1e-6
    assert np.all(np.abs(out[1:-1, 1:-1] - printed[1:-1, 1:-1]) <= bound)


# ------------------------------------------------------------------ seed 002
SOBEL = np.array([[1.0, 0, -1.0], [2.0, 0, -2.0], [1.0, 0.0, -1.0]], dtype=np.float32)


def _layer(kernel, stride=1, padding=0):
    kernel = np.asarray(kernel, dtype=np.float32)
    m = convscope.Conv2d(in_channels=1, out_channels=1, kernel_size=kernel.shape, stride=stride, padding=padding)
    m.weight = kernel[None, None]
    m.bias = np.zeros(1, dtype=np.float32)
    return m


def test_seed002_sobel_on_a_vertical_line():
    conv = _layer(SOBEL)
    assert repr(conv) == "Conv2d(1, 1, kernel_size=(3, 3), stride=(1, 1))"
    image = np.zeros((1, 1, 5, 5), dtype=np.float32)
    image[0, 0, :, 2] = 1
    z = conv(image)
    np.testing.assert_array_equal(z[0, 0], np.tile([-4.0, 0.0, 4.0], (3, 1)))


def test_seed002_output_size_stride_and_zero_padding():
    image1 = np.ones((1, 1, 4, 4), dtype=np.float32)
    conv1 = _layer(np.ones((2, 2)))
    assert repr(conv1) == "Conv2d(1, 1, kernel_size=(2, 2), stride=(1, 1))"
    z1 = conv1(image1)
    assert z1.shape[2:4] == (3, 3) == (4 - 2 + 1, 4 - 2 + 1)        # M_new = M − K + 1
    np.testing.assert_array_equal(z1[0, 0], np.full((3, 3), 4.0))
    z3 = _layer(np.ones((2, 2)), stride=2)(image1)
    assert z3.shape[2:4] == (2, 2)
    np.testing.assert_array_equal(z3[0, 0], np.full((2, 2), 4.0))
    z4 = _layer(np.ones((2, 2)), stride=3)(image1)
    np.testing.assert_array_equal(z4[0, 0], [[4.0]])
    z5 = _layer(np.ones((2, 2)), stride=3, padding=1)(image1)
    np.testing.assert_array_equal(z5[0, 0], [[1.0, 2.0], [2.0, 4.0]])


def test_seed002_zero_kernel_and_the_size_question():
    image = np.array([[-1.2867, -0.3587, 0.1210, 1.1602], [0.9151, 0.9038, 0.6008, 1.3080],
                      [-0.1274, -1.4992, -0.5576, 1.6338], [-0.6670, -1.2433, -0.0077, -0.5008]],
                     dtype=np.float32)[None, None]
    np.testing.assert_array_equal(_layer(np.zeros((3, 3)))(image)[0, 0], np.zeros((2, 2)))
    # "an image of size 4, kernel_size=2, stride=2: (M − K)/stride + 1 = 2"
    assert convscope.conv2d_output_size(4, 2, stride=2) == ((4 - 2) // 2 + 1,) * 2 == (2, 2)


# ------------------------------------------------------------------ seed 003
X003 = np.array([[1, 1, 1, 2, 3], [1, 1, 1, 2, 3], [1, 1, 1, 2, 3],
                 [2, 2, 2, 2, 3], [3, 3, 3, 3, 3], [4, 4, 4, 4, 4]], dtype=np.float32).reshape(1, 1, 6, 5)


@pytest.mark.parametrize("algorithm", [None, "reference"])
def test_seed003_sobel_gradients(algorithm):
    k = SOBEL.reshape(1, 1, 3, 3)
    out = convscope.conv2d(X003, k, algorithm=algorithm)
    grads = convscope.conv2d_backward(np.ones_like(out), X003, k, algorithm=algorithm)  # loss = out.sum()
    np.testing.assert_array_equal(grads.weight[0, 0], [[15, 18, 25], [21, 23, 28], [30, 31, 34]])
    np.testing.assert_array_equal(grads.input[0, 0], [[1, 1, 0, -1, -1], [3, 3, 0, -3, -3], [4, 4, 0, -4, -4],
                                                      [4, 4, 0, -4, -4], [3, 3, 0, -3, -3], [1, 1, 0, -1, -1]])
    # The weight gradient of sum(out) is the sum of each tap's window; the input gradient
    # counts, per pixel, the kernel taps that read it.
    windows = np.lib.stride_tricks.sliding_window_view(X003[0, 0], (4, 3))  # (3, 3, 4, 3)
    np.testing.assert_array_equal(grads.weight[0, 0], windows.sum(axis=(-2, -1)))


def test_seed003_shapes():
    rng = np.random.default_rng(0)
    conv_t = convscope.Conv2d(2, 28, 3, stride=1, seed=0)
    assert conv_t(rng.standard_normal((20, 2, 50, 50)).astype(np.float32)).shape == (20, 28, 48, 48)
    image = rng.random((1, 1, 8, 8)).astype(np.float32)
    assert convscope.Conv2d(1, 2, 3, seed=0)(image).shape == (1, 2, 6, 6)
    assert convscope.Conv2d(1, 5, 3, seed=0)(image).shape == (1, 5, 6, 6)


# ------------------------------------------------------------------ seed 004
def cross_correlate(A, B, stride):
    """Seed 004's forward, as the notebook wrote it."""
    m, n = A.shape
    p, q = B.shape
    output = np.zeros((int((m - p) / stride) + 1, int((n - q) / stride) + 1))
    for i in range(output.shape[0]):
        for j in range(output.shape[1]):
            value = 0
            for u in range(p):
                for v in range(q):
                    value += A[stride * i + u, stride * j + v] * B[u, v]
            output[i, j] = value
    return output


def cross_correlation_grad(A, B, C_grad, stride):
    """Seed 004's weight gradient, as the notebook wrote it."""
    p, q = B.shape
    m, n = A.shape
    weight_grad = np.zeros((p, q))
    x_lim = math.floor((m - p) / stride + 1)
    y_lim = math.floor((n - q) / stride + 1)
    for a in range(p):
        for b in range(q):
            value = 0
            for i in range(x_lim):
                for j in range(y_lim):
                    value += C_grad[i, j] * A[i * stride + a, j * stride + b]
            weight_grad[a, b] = value
    return weight_grad


def test_seed004_cross_correlate_example():
    A = np.arange(1, 50, dtype=np.float32).reshape(7, 7)
    B = np.arange(1, 5, dtype=np.float32).reshape(2, 2)
    out = convscope.conv2d(A[None, None], B[None, None], stride=2)[0, 0]
    np.testing.assert_array_equal(out, [[65, 85, 105], [205, 225, 245], [345, 365, 385]])
    np.testing.assert_array_equal(out, cross_correlate(A, B, 2))


def test_seed004_layer_shapes_and_formula():
    C_out, C_in, K, stride, H, W, N = 5, 4, (3, 2), 2, 32, 35, 14
    layer = convscope.Conv2d(in_channels=C_in, out_channels=C_out, kernel_size=K, stride=stride, seed=0)
    assert layer.weight.shape == (5, 4, 3, 2) and layer.bias.shape == (5,)
    assert layer.weight.dtype == np.float32
    x = np.random.default_rng(0).standard_normal((N, C_in, H, W)).astype(np.float32)
    assert layer(x).shape == (14, 5, 15, 17)
    out_h = math.floor((H - (K[0] - 1) - 1) / stride + 1)
    out_w = math.floor((W - (K[1] - 1) - 1) / stride + 1)
    assert convscope.conv2d_output_size((H, W), K, stride=stride) == (out_h, out_w) == (15, 17)


def test_seed004_convolve_and_weight_grad_loops_agree():
    """The notebook's convolve() and convolution_grad() loops against conv2d / conv2d_backward."""
    rng = np.random.default_rng(4)
    N, C_in, C_out, H, W, stride = 2, 4, 5, 9, 8, 2
    x = rng.standard_normal((N, C_in, H, W))
    weight = rng.standard_normal((C_out, C_in, 3, 2))
    bias = rng.standard_normal(C_out)
    out = convscope.conv2d(x, weight, bias, stride=stride)
    expected = np.zeros_like(out)
    for i in range(N):
        for j in range(C_out):
            for k in range(C_in):
                expected[i, j] += cross_correlate(x[i, k], weight[j, k], stride)
            expected[i, j] += bias[j]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    grad = rng.standard_normal(out.shape)
    w_grad = np.zeros_like(weight)
    for j in range(C_out):
        for k in range(C_in):
            for i in range(N):
                w_grad[j, k] += cross_correlation_grad(x[i, k], weight[j, k], grad[i, j], stride)
    np.testing.assert_allclose(convscope.conv2d_backward(grad, x, weight, stride=stride).weight, w_grad,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("algorithm", [None, "reference"])
def test_seed004_rectangular_example_and_weight_grad(algorithm):
    A = np.array([[5, 27, 9, -15, 12], [2, 4, -2, -7, 8], [-8, 16, 5, 23, -6],
                  [-17, 7, 9, -14, 3], [10, -5, 13, 6, -11]], dtype=np.float32)[None, None]
    B = np.array([[8, 4], [2, 6]], dtype=np.float32)[None, None]
    out = convscope.conv2d(A, B, stride=2, algorithm=algorithm)
    np.testing.assert_array_equal(out[0, 0], [[176, -34], [8, 66]])
    C_grad = np.ones_like(out)                                    # l = output.sum()
    grads = convscope.conv2d_backward(C_grad, A, B, stride=2, algorithm=algorithm)
    np.testing.assert_array_equal(grads.weight[0, 0], [[11, 51], [-8, -10]])
    np.testing.assert_array_equal(grads.weight[0, 0], cross_correlation_grad(A[0, 0], B[0, 0], C_grad[0, 0], 2))
    np.testing.assert_array_equal(grads.input[0, 0], [[8, 4, 8, 4, 0], [2, 6, 2, 6, 0], [8, 4, 8, 4, 0],
                                                      [2, 6, 2, 6, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(grads.bias, [4.0])
