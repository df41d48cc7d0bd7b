"""``convscope.conv2d`` and ``conv2d_backward`` against torch over a grid of parameters.

Every feature of ``nn.Conv2d`` (kernel size, stride, padding in all its forms,
dilation, groups, 1×1 and input-sized kernels) is run batched, unbatched and
with an empty batch, in every padding mode, in float32 and float64, through
the fast path and the reference loops.  :func:`oracle.check_against_torch`
compares shape, dtype and values of the forward and of the three gradients,
and checks that results are C-contiguous and that inputs are left untouched.

The default run covers every feature in every padding mode, dtype and
implementation, rotating the layout (batched / unbatched / zero-batch) so that
each layout meets every mode, dtype and implementation; the full product is
the ``slow`` sweep.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import convscope
from oracle import (assert_close, check_against_torch, random_case, require_torch, to_tensor, torch_autograd,
                    torch_conv2d, torch_functional)

require_torch()

pytestmark = [
    pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning"),
]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
DTYPES = (np.float64, np.float32)
ALGORITHMS = (None, "gemm", "reference")
LAYOUTS = ("batched", "unbatched", "zero_batch")


class Case:
    """One feature: input (C, H, W), weight shape, conv2d keyword arguments, bias or not."""

    def __init__(self, name, chw, weight_shape, bias=True, **params):
        self.name = name
        self.chw = chw
        self.weight_shape = weight_shape
        self.bias = bias
        self.params = params

    def arrays(self, layout, dtype, seed=0):
        rng = np.random.default_rng(seed)
        if layout == "batched":
            x_shape = (2,) + self.chw
        elif layout == "zero_batch":
            x_shape = (0,) + self.chw
        else:
            x_shape = self.chw
        return random_case(rng, x_shape, self.weight_shape, dtype, bias=self.bias)


FEATURES = [
    Case("kernel_int", (3, 6, 6), (4, 3, 3, 3), padding=1),
    Case("kernel_int_no_padding", (2, 5, 7), (3, 2, 3, 3)),
    Case("kernel_rectangular", (2, 6, 7), (3, 2, 2, 4), padding=(1, 2)),
    Case("stride_int", (2, 7, 8), (3, 2, 3, 3), stride=2, padding=1),
    Case("stride_pair", (2, 7, 8), (3, 2, 3, 2), stride=(2, 3), padding=(1, 0)),
    Case("padding_int", (2, 5, 5), (2, 2, 3, 3), padding=2),
    Case("padding_pair", (2, 5, 6), (3, 2, 3, 3), padding=(2, 1)),
    Case("padding_valid", (2, 6, 5), (3, 2, 3, 2), padding="valid"),
    Case("padding_same_odd_kernel", (2, 5, 6), (3, 2, 3, 5), padding="same"),
    Case("padding_same_even_kernel", (2, 5, 6), (3, 2, 2, 4), padding="same"),
    Case("padding_same_dilated", (2, 7, 6), (3, 2, 2, 3), padding="same", dilation=(3, 2)),
    Case("dilation_int", (2, 8, 7), (3, 2, 3, 3), dilation=2, padding=1),
    Case("dilation_pair_with_stride", (2, 8, 8), (2, 2, 3, 2), dilation=(2, 3), stride=(1, 2), padding=(2, 1)),
    Case("groups", (4, 6, 5), (6, 2, 3, 3), groups=2, padding=1),
    Case("depthwise", (3, 6, 6), (3, 1, 3, 3), groups=3, padding=1),
    Case("channel_multiplier", (3, 6, 5), (6, 1, 3, 3), groups=3, padding=1),
    Case("kernel_1x1", (3, 5, 4), (5, 3, 1, 1)),
    Case("kernel_1x1_stride_padding", (3, 5, 6), (4, 3, 1, 1), stride=2, padding=1),
    Case("kernel_fills_padded_input", (2, 5, 4), (3, 2, 7, 6), padding=1),
    Case("kernel_equals_input", (2, 4, 3), (3, 2, 4, 3)),
    Case("no_bias", (2, 6, 6), (3, 2, 3, 3), bias=False, padding=1),
    Case("everything", (4, 7, 8), (6, 2, 2, 3), groups=2, stride=(2, 1), padding=(1, 2),
         dilation=(1, 2), bias=False),
]
FEATURE_IDS = [c.name for c in FEATURES]


def _run(case, layout, mode, dtype, algorithm):
    x, w, b = case.arrays(layout, dtype)
    out = check_against_torch(x, w, b, algorithm=algorithm, padding_mode=mode, **case.params)
    assert out.ndim == x.ndim


def _default_grid():
    """Every feature × mode × dtype × implementation; the layout rotates over the grid."""
    params = []
    for (fi, case), (mi, mode), (di, dtype), (ai, algorithm) in itertools.product(
        enumerate(FEATURES), enumerate(PADDING_MODES), enumerate(DTYPES), enumerate((None, "reference"))
    ):
        layout = LAYOUTS[(fi + mi + di + ai) % len(LAYOUTS)]
        params.append(pytest.param(case, layout, mode, dtype, algorithm,
                                   id=f"{case.name}-{layout}-{mode}-{np.dtype(dtype).name}-{algorithm}"))
    return params


@pytest.mark.parametrize("case, layout, mode, dtype, algorithm", _default_grid())
def test_grid(case, layout, mode, dtype, algorithm):
    _run(case, layout, mode, dtype, algorithm)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", FEATURES, ids=FEATURE_IDS)
def test_grid_exhaustive(case, layout, mode, dtype, algorithm):
    _run(case, layout, mode, dtype, algorithm)


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("algorithm", (None, "reference"))
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_zero_batch(mode, algorithm):
    x, w, b = random_case(np.random.default_rng(1), (0, 3, 5, 6), (4, 3, 3, 3))
    out = check_against_torch(x, w, b, algorithm=algorithm, padding=1, padding_mode=mode)
    assert out.shape == (0, 4, 5, 6)


@pytest.mark.parametrize("algorithm", (None, "reference"))
@pytest.mark.parametrize("mode", PADDING_MODES)
def test_unbatched_equals_batch_of_one(mode, algorithm):
    x, w, b = random_case(np.random.default_rng(2), (3, 6, 5), (2, 3, 3, 2))
    params = dict(stride=(1, 2), padding=(1, 1), padding_mode=mode, algorithm=algorithm)
    out = check_against_torch(x, w, b, **params)
    batched = convscope.conv2d(x[None], w, b, **params)
    np.testing.assert_array_equal(out, batched[0])


# --------------------------------------------------------------------------- zero input channels


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op:UserWarning")
@pytest.mark.parametrize("unbatched", (False, True), ids=("batched", "unbatched"))
@pytest.mark.parametrize("mode", ("zeros", "reflect", "replicate", "circular"))
def test_zero_input_channels_is_refused(mode, unbatched):
    """torch 2.13 either raises (reflect, replicate) or returns an (N, 0, H_out, W_out) tensor whose
    channel count is not C_out (zeros, circular), so convscope refuses an input without channels."""
    x = np.zeros((0, 5, 6) if unbatched else (2, 0, 5, 6))
    w = np.ones((3, 0, 3, 3))
    try:
        out, _ = torch_conv2d(x, w, None, None, padding=1, padding_mode=mode)
    except RuntimeError:
        pass
    else:
        assert out.shape[-3] == 0 != w.shape[0]
    with pytest.raises(ValueError, match="input must have at least one channel"):
        convscope.conv2d(x, w, padding=1, padding_mode=mode)
    with pytest.raises(ValueError, match="in_channels must be a positive integer, got 0"):
        convscope.Conv2d(0, 3, 3)


# --------------------------------------------------------------------------- dtypes


FLOAT16_CASES = [c for c in FEATURES if c.name in (
    "kernel_int", "kernel_rectangular", "stride_pair", "padding_same_even_kernel", "dilation_int",
    "groups", "channel_multiplier", "kernel_1x1", "no_bias")]


@pytest.mark.parametrize("algorithm", (None, "reference"))
@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("case", FLOAT16_CASES, ids=[c.name for c in FLOAT16_CASES])
def test_float16(case, mode, algorithm):
    """float16 in, float16 out (computed in float32), within the oracle's float16 tolerance."""
    x, w, b = case.arrays("batched", np.float16)
    out = check_against_torch(x, w, b, algorithm=algorithm, padding_mode=mode, **case.params)
    assert out.dtype == np.float16


@pytest.mark.parametrize("algorithm", (None, "reference"))
def test_float16_is_computed_in_float32(algorithm):
    """The float16 result is the float32 computation on the same values, rounded once."""
    x, w, b = random_case(np.random.default_rng(4), (2, 4, 6, 6), (3, 4, 3, 3), np.float16)
    out = convscope.conv2d(x, w, b, padding=1, algorithm=algorithm)
    expected = torch_functional("conv2d", *(a.astype(np.float32) for a in (x, w, b)), padding=1)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), expected.astype(np.float16).astype(np.float32),
                               rtol=0, atol=float(np.abs(expected).max()) * 2e-3)


@pytest.mark.parametrize("dtype", DTYPES + (np.float16,), ids=lambda d: np.dtype(d).name)
def test_output_dtype_follows_input(dtype):
    x, w, b = random_case(np.random.default_rng(5), (1, 2, 4, 4), (2, 2, 3, 3), dtype)
    assert convscope.conv2d(x, w, b).dtype == dtype
    grads = convscope.conv2d_backward(np.ones((1, 2, 2, 2), dtype), x, w)
    assert {g.dtype for g in grads} == {np.dtype(dtype)}


# --------------------------------------------------------------------------- array types


@pytest.mark.parametrize("algorithm", (None, "reference"))
@pytest.mark.parametrize("dtype", DTYPES + (np.float16,), ids=lambda d: np.dtype(d).name)
def test_torch_tensors(dtype, algorithm):
    x, w, b = random_case(np.random.default_rng(6), (2, 4, 6, 5), (6, 2, 3, 2), dtype)
    xt, wt, bt = (to_tensor(a) for a in (x, w, b))
    params = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    out = check_against_torch(xt, wt, bt, algorithm=algorithm, **params)
    assert type(out) is np.ndarray
    expected = torch_functional("conv2d", x, w, b, **params)
    assert_close(out, expected, "forward from tensors")
    grads = convscope.conv2d_backward(to_tensor(np.ones(out.shape, x.dtype)), xt, wt,
                                      algorithm=algorithm, **params)
    assert all(type(g) is np.ndarray for g in grads)


def test_torch_tensors_requiring_grad():
    x, w, b = random_case(np.random.default_rng(7), (1, 2, 5, 5), (3, 2, 3, 3))
    xt, wt, bt = (to_tensor(a, requires_grad=True) for a in (x, w, b))
    out = convscope.conv2d(xt, wt, bt, padding=1)
    assert type(out) is np.ndarray
    assert_close(out, torch_functional("conv2d", xt, wt, bt, padding=1))
    assert xt.grad is None


def test_torch_tensor_mixed_with_numpy():
    x, w, b = random_case(np.random.default_rng(8), (2, 3, 5, 4), (2, 3, 2, 2))
    out = convscope.conv2d(to_tensor(x), w, to_tensor(b), padding=1)
    assert_close(out, torch_conv2d(x, w, b, None, padding=1)[0])


@pytest.mark.parametrize("algorithm", (None, "reference"))
@pytest.mark.parametrize("unbatched", (False, True), ids=("batched", "unbatched"))
def test_python_lists(unbatched, algorithm):
    """Lists are converted with np.asarray: Python floats become float64."""
    x, w, b = random_case(np.random.default_rng(9), (3, 5, 5) if unbatched else (2, 3, 5, 5), (2, 3, 3, 3))
    out = check_against_torch(x.tolist(), w.tolist(), b.tolist(), algorithm=algorithm, stride=2, padding=1)
    assert out.dtype == np.float64
    assert_close(out, check_against_torch(x, w, b, algorithm=algorithm, stride=2, padding=1))


NON_CONTIGUOUS = ("transposed", "negative_strides", "step_slice", "fortran", "read_only")


def _variant(a, layout):
    """The values of ``a`` in a non-C-contiguous (or read-only) array."""
    if layout == "transposed":
        if a.ndim < 2:
            return a
        return np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    if layout == "negative_strides":
        flip = (Ellipsis,) + (slice(None, None, -1),) * min(a.ndim, 2)
        return np.ascontiguousarray(a[flip])[flip]
    if layout == "step_slice":
        spread = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        spread[..., ::2] = a
        return spread[..., ::2]
    if layout == "fortran":
        return np.asfortranarray(a)
    read_only = a.copy()
    read_only.flags.writeable = False
    return read_only


@pytest.mark.parametrize("algorithm", (None, "reference"))
@pytest.mark.parametrize("layout", NON_CONTIGUOUS)
@pytest.mark.parametrize("mode", ("zeros", "reflect"))
def test_non_contiguous_inputs(layout, mode, algorithm):
    x, w, b = random_case(np.random.default_rng(10), (2, 4, 6, 5), (4, 2, 3, 2), np.float32)
    xv, wv, bv = (_variant(a, layout) for a in (x, w, b))
    if layout in ("transposed", "negative_strides", "step_slice"):
        assert not xv.flags.c_contiguous and not wv.flags.c_contiguous
    if layout == "read_only":
        assert not xv.flags.writeable
    params = dict(stride=(1, 2), padding=1, groups=2, padding_mode=mode)
    out = check_against_torch(xv, wv, bv, algorithm=algorithm, **params)
    np.testing.assert_array_equal(out, convscope.conv2d(x, w, b, algorithm=algorithm, **params))


@pytest.mark.parametrize("algorithm", (None, "reference"))
def test_non_contiguous_grad_output(algorithm):
    x, w, _ = random_case(np.random.default_rng(11), (2, 3, 6, 6), (4, 3, 3, 3), bias=False)
    params = dict(stride=2, padding=1)
    g = np.random.default_rng(12).standard_normal((2, 4, 3, 3))
    for layout in NON_CONTIGUOUS:
        gv = _variant(g, layout)
        grads = convscope.conv2d_backward(gv, x, w, algorithm=algorithm, **params)
        _, expected = torch_conv2d(x, w, None, g, **params)
        for got, exp, name in zip(grads, expected, grads._fields):
            assert_close(got, exp, name)
            assert got.flags.c_contiguous


def test_broadcast_input():
    """A zero-stride, read-only view (np.broadcast_to) is a valid input."""
    rng = np.random.default_rng(13)
    row = rng.standard_normal(6)
    x = np.broadcast_to(row, (2, 3, 5, 6))
    w = rng.standard_normal((2, 3, 3, 3))
    check_against_torch(x, w, None, padding=1, padding_mode="reflect")


@pytest.mark.parametrize("algorithm", (None, "reference"))
def test_parameter_forms(algorithm):
    """Lists, tuples and NumPy integers are accepted wherever torch takes an int or a pair."""
    x, w, b = random_case(np.random.default_rng(15), (2, 4, 7, 6), (4, 2, 3, 2))
    out = convscope.conv2d(x, w, b, stride=[2, np.int64(1)], padding=np.int64(1),
                           dilation=(np.int32(1), 2), groups=np.int64(2), algorithm=algorithm)
    expected = check_against_torch(x, w, b, algorithm=algorithm, stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------- 'same' padding


@pytest.mark.parametrize("algorithm", (None, "reference"))
@pytest.mark.parametrize("kernel, dilation", [
    ((2, 2), (1, 1)), ((4, 2), (1, 1)), ((2, 3), (1, 1)), ((3, 3), (2, 2)), ((2, 2), (3, 1)), ((4, 3), (1, 2)),
])
def test_same_padding_puts_extra_on_bottom_right(kernel, dilation, algorithm):
    """'same' equals torch's explicit asymmetric F.pad (odd extra row/column at the bottom/right)."""
    x, w, b = random_case(np.random.default_rng(14), (2, 2, 7, 6), (3, 2) + kernel)
    out = convscope.conv2d(x, w, b, padding="same", dilation=dilation, algorithm=algorithm)
    assert out.shape[-2:] == x.shape[-2:]
    pads = []
    for k, d in zip(reversed(kernel), reversed(dilation)):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    expected = torch_functional("conv2d", torch_functional("pad", x, pads), w, b, dilation=dilation)
    assert_close(out, expected)
    check_against_torch(x, w, b, algorithm=algorithm, padding="same", dilation=dilation)


# --------------------------------------------------------------------------- named cases


@pytest.mark.parametrize("algorithm", (None, "reference"))
class TestNamed:
    def test_simple_conv2d(self, algorithm):
        x, w, b = random_case(np.random.default_rng(20), (1, 4, 8, 8), (4, 4, 3, 3))
        check_against_torch(x, w, b, algorithm=algorithm)

    def test_padded_conv2d(self, algorithm):
        x, w, b = random_case(np.random.default_rng(21), (1, 4, 8, 8), (4, 4, 3, 3))
        check_against_torch(x, w, b, algorithm=algorithm, padding=1)

    def test_asymmetric_padding_conv2d(self, algorithm):
        x, w, b = random_case(np.random.default_rng(22), (2, 2, 6, 7), (3, 2, 4, 2))
        out = check_against_torch(x, w, b, algorithm=algorithm, padding="same")
        assert out.shape == (2, 3, 6, 7)

    def test_strided_conv2d(self, algorithm):
        x, w, b = random_case(np.random.default_rng(23), (2, 3, 8, 7), (4, 3, 3, 3))
        check_against_torch(x, w, b, algorithm=algorithm, stride=2)

    def test_strided_conv2d_pair(self, algorithm):
        x, w, b = random_case(np.random.default_rng(24), (2, 3, 8, 7), (4, 3, 3, 3))
        check_against_torch(x, w, b, algorithm=algorithm, stride=(3, 2))

    def test_dilated_conv2d(self, algorithm):
        x, w, b = random_case(np.random.default_rng(25), (1, 3, 8, 8), (2, 3, 3, 3))
        check_against_torch(x, w, b, algorithm=algorithm, dilation=2)

    def test_dilated_strided_padded_conv2d(self, algorithm):
        x, w, b = random_case(np.random.default_rng(26), (2, 2, 8, 8), (3, 2, 3, 2))
        check_against_torch(x, w, b, algorithm=algorithm, dilation=(2, 3), stride=(2, 1), padding=(2, 3))

    def test_grouped_conv2d(self, algorithm):
        x, w, b = random_case(np.random.default_rng(27), (2, 6, 5, 5), (4, 3, 3, 3))
        check_against_torch(x, w, b, algorithm=algorithm, groups=2, padding=1)

    def test_depthwise_conv2d(self, algorithm):
        x, w, b = random_case(np.random.default_rng(28), (2, 4, 6, 6), (4, 1, 3, 3))
        check_against_torch(x, w, b, algorithm=algorithm, groups=4, padding=1)

    def test_depthwise_channel_multiplier_conv2d(self, algorithm):
        x, w, b = random_case(np.random.default_rng(29), (2, 3, 6, 6), (6, 1, 3, 3))
        check_against_torch(x, w, b, algorithm=algorithm, groups=3, padding=1)

    def test_conv2d_1x1(self, algorithm):
        x, w, b = random_case(np.random.default_rng(30), (2, 6, 5, 5), (3, 6, 1, 1))
        check_against_torch(x, w, b, algorithm=algorithm)

    def test_conv2d_1x1_grouped(self, algorithm):
        x, w, b = random_case(np.random.default_rng(31), (2, 6, 5, 5), (4, 3, 1, 1))
        check_against_torch(x, w, b, algorithm=algorithm, groups=2)

    def test_large_kernel_conv2d(self, algorithm):
        x, w, b = random_case(np.random.default_rng(32), (1, 2, 6, 6), (2, 2, 8, 8))
        out = check_against_torch(x, w, b, algorithm=algorithm, padding=1)
        assert out.shape == (1, 2, 1, 1)

    def test_one_pixel_input(self, algorithm):
        x, w, b = random_case(np.random.default_rng(33), (2, 3, 1, 1), (2, 3, 1, 1))
        check_against_torch(x, w, b, algorithm=algorithm)

    def test_single_row_input(self, algorithm):
        x, w, b = random_case(np.random.default_rng(34), (2, 2, 1, 7), (3, 2, 1, 3))
        check_against_torch(x, w, b, algorithm=algorithm, stride=(1, 2), padding=(0, 1))

    def test_stride_larger_than_kernel(self, algorithm):
        x, w, b = random_case(np.random.default_rng(35), (1, 2, 8, 8), (2, 2, 2, 2))
        check_against_torch(x, w, b, algorithm=algorithm, stride=3, padding=1)

    @pytest.mark.parametrize("mode", ("reflect", "circular", "replicate"))
    def test_padding_mode_maximal_padding(self, algorithm, mode):
        """Reflect pads up to size − 1, circular up to the size itself, replicate anything."""
        H, W = 4, 3
        limit = {"reflect": (H - 1, W - 1), "circular": (H, W), "replicate": (5, 6)}[mode]
        x, w, b = random_case(np.random.default_rng(36), (2, 2, H, W), (2, 2, 3, 3))
        check_against_torch(x, w, b, algorithm=algorithm, padding=limit, padding_mode=mode)

    def test_nested_conv2d(self, algorithm):
        """Two convolutions in a row; the chain rule through conv2d_backward equals torch autograd."""
        rng = np.random.default_rng(37)
        x = rng.standard_normal((2, 3, 8, 8))
        w1, w2 = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 2, 3, 3))
        b1, b2 = rng.standard_normal(4), rng.standard_normal(2)
        p1 = dict(stride=1, padding=1, padding_mode="reflect")
        p2 = dict(stride=2, padding=1, groups=2, padding_mode="circular")
        h = convscope.conv2d(x, w1, b1, algorithm=algorithm, **p1)
        y = convscope.conv2d(h, w2, b2, algorithm=algorithm, **p2)
        g = rng.standard_normal(y.shape)
        g2 = convscope.conv2d_backward(g, h, w2, algorithm=algorithm, **p2)
        g1 = convscope.conv2d_backward(g2.input, x, w1, algorithm=algorithm, **p1)

        def chain(F, x, w1, b1, w2, b2):
            h = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w1, b1)
            return F.conv2d(F.pad(h, (1, 1, 1, 1), mode="circular"), w2, b2, stride=2, groups=2)

        yt, (dx, *dparams) = torch_autograd(chain, x, w1, b1, w2, b2, grad_output=g)
        assert_close(y, yt, "output")
        assert_close(g1.input, dx, "grad x")
        for got, want, name in zip((g1.weight, g1.bias, g2.weight, g2.bias), dparams, ("w1", "b1", "w2", "b2")):
            assert_close(got, want, name)


@pytest.mark.parametrize("algorithm", (None, "reference"))
def test_bias_gradient_without_forward_bias(algorithm):
    """conv2d_backward reports the bias gradient (grad_output summed) even with no bias."""
    x, w, _ = random_case(np.random.default_rng(40), (2, 3, 5, 5), (4, 3, 3, 3), bias=False)
    g = np.random.default_rng(41).standard_normal((2, 4, 3, 3))
    grads = convscope.conv2d_backward(g, x, w, algorithm=algorithm)
    assert_close(grads.bias, g.sum(axis=(0, 2, 3)))


def test_algorithms_agree_exactly_on_integers():
    """On small integers every product and sum is exact, so the implementations agree bit for bit."""
    rng = np.random.default_rng(42)
    x = rng.integers(-4, 5, (2, 4, 7, 6)).astype(np.float64)
    w = rng.integers(-4, 5, (6, 2, 3, 2)).astype(np.float64)
    b = rng.integers(-4, 5, 6).astype(np.float64)
    params = dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2, padding_mode="reflect")
    outs = [convscope.conv2d(x, w, b, algorithm=a, **params) for a in ALGORITHMS]
    expected = torch_conv2d(x, w, b, None, **params)[0]
    for out in outs:
        np.testing.assert_array_equal(out, expected)
