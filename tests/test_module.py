"""The ``convscope.Conv2d`` layer: parameters, initialisation, forward/backward, state and torch interop."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

import convscope
from convscope import Conv2d
from oracle import (assert_close, is_torch_module, parameter_grad, require_torch, set_parameter, to_numpy, to_tensor,
                    torch_conv2d, torch_dtype, torch_forward, torch_module, torch_module_backward, torch_zeros)

require_torch()




def layer_kwargs(cfg):
    """The keyword arguments of a config (everything but the three positional ones)."""
    return {k: v for k, v in cfg.items() if k not in ("in_channels", "out_channels", "kernel_size")}


def conv_kwargs(m):
    """The functional keyword arguments that reproduce layer ``m``."""
    return dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
                padding_mode=m.padding_mode)


def make_layers(cfg, seed=0):
    """A convscope layer and the torch layer built from the same config, with convscope's parameters."""
    m = Conv2d(cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"], seed=seed, **layer_kwargs(cfg))
    return m, m.to_torch()


def torch_layer(cfg, seed=None):
    """torch's Conv2d of a config, with torch's own parameters (drawn after seeding with ``seed``, if given)."""
    return torch_module("Conv2d", cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"], seed=seed,
                        **layer_kwargs(cfg))


def cfg(in_channels, out_channels, kernel_size, **kwargs):
    return dict(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, **kwargs)


CONFIGS = [
    cfg(3, 4, 3),
    cfg(4, 6, (3, 2), stride=2, padding=1),
    cfg(4, 4, 3, padding="same", dilation=2, padding_mode="reflect"),
    cfg(6, 4, (2, 3), padding="valid", groups=2, bias=False),
    cfg(3, 6, 3, groups=3, padding=(1, 2), padding_mode="circular"),
    cfg(2, 2, (4, 1), padding="same", padding_mode="replicate"),
    cfg(2, 3, 2, stride=(1, 2), dilation=(2, 1), padding=2, dtype=np.float64),
    cfg(4, 4, (1, 3), groups=4, padding=(0, 1), padding_mode="reflect", bias=False, dtype=np.float64),
]
IDS = [f"cfg{i}" for i in range(len(CONFIGS))]


def random_input(m, shape_hw=(7, 8), batch=2, seed=1, dtype=None):
    rng = np.random.default_rng(seed)
    shape = (m.in_channels, *shape_hw) if batch is None else (batch, m.in_channels, *shape_hw)
    return rng.standard_normal(shape).astype(dtype or m.dtype)


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_parameter_shapes_match_torch(config):
    m = Conv2d(config["in_channels"], config["out_channels"], config["kernel_size"], **layer_kwargs(config))
    t = torch_layer(config)
    assert isinstance(m.weight, np.ndarray)
    assert m.weight.shape == tuple(t.weight.shape)
    assert m.weight.shape == (config["out_channels"], config["in_channels"] // config.get("groups", 1),
                              *m.kernel_size)
    if config.get("bias", True):
        assert isinstance(m.bias, np.ndarray)
        assert m.bias.shape == tuple(t.bias.shape) == (config["out_channels"],)
    else:
        assert m.bias is None and t.bias is None
    assert m.weight_grad is None and m.bias_grad is None


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((64, 64, 3), {}),
        ((32, 256, (5, 3)), {}),
        ((64, 128, 3), dict(groups=8)),
        ((512, 512, (3, 3)), dict(groups=512)),   # depthwise: fan_in = 9
    ],
)
def test_init_weight_bounds_and_spread(args, kwargs):
    in_channels, out_channels, kernel = args
    kH, kW = (kernel, kernel) if isinstance(kernel, int) else kernel
    fan_in = in_channels // kwargs.get("groups", 1) * kH * kW
    bound = 1 / math.sqrt(fan_in)
    w = Conv2d(*args, seed=0, **kwargs).weight.astype(np.float64)
    assert w.size >= 4000
    assert np.abs(w).max() <= bound
    # spread over the whole interval, uniformly: extremes near ±bound, std bound/√3, mean 0
    assert w.max() > 0.99 * bound and w.min() < -0.99 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert abs(w.mean()) < 0.03 * bound
    # torch draws from the same interval
    t = to_numpy(torch_module("Conv2d", *args, seed=0, **kwargs).weight).astype(np.float64)
    assert np.abs(t).max() <= bound * (1 + 1e-6)
    assert np.abs(t).max() > 0.99 * bound
    assert t.std() == pytest.approx(w.std(), rel=0.05)


@pytest.mark.parametrize("args, kwargs", [((1, 8192, 1), {}), ((12, 8192, (1, 2)), dict(groups=4))])
def test_init_bias_bounds_and_spread(args, kwargs):
    in_channels, out_channels, kernel = args
    kH, kW = (kernel, kernel) if isinstance(kernel, int) else kernel
    bound = 1 / math.sqrt(in_channels // kwargs.get("groups", 1) * kH * kW)
    b = Conv2d(*args, seed=3, **kwargs).bias.astype(np.float64)
    assert np.abs(b).max() <= bound
    assert b.max() > 0.99 * bound and b.min() < -0.99 * bound
    assert b.std() == pytest.approx(bound / math.sqrt(3), rel=0.04)
    t = to_numpy(torch_module("Conv2d", *args, seed=0, **kwargs).bias).astype(np.float64)
    assert np.abs(t).max() <= bound * (1 + 1e-6)
    assert t.std() == pytest.approx(b.std(), rel=0.08)


def test_init_bound_in_float16():
    m = Conv2d(16, 64, 3, dtype=np.float16, seed=0)
    bound = 1 / math.sqrt(16 * 9)
    assert m.weight.dtype == np.float16 and m.bias.dtype == np.float16
    # rounding to float16 may move a value by half an ulp
    assert np.abs(m.weight.astype(np.float64)).max() <= bound * (1 + 2.0 ** -11)
    assert np.abs(m.bias.astype(np.float64)).max() <= bound * (1 + 2.0 ** -11)


def test_seed_reproducible_and_seeds_differ():
    a = Conv2d(3, 8, 3, seed=123)
    b = Conv2d(3, 8, 3, seed=123)
    c = Conv2d(3, 8, 3, seed=124)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    assert not np.array_equal(a.weight, c.weight)
    assert not np.array_equal(a.bias, c.bias)
    # no seed: fresh draws each time
    assert not np.array_equal(Conv2d(3, 8, 3).weight, Conv2d(3, 8, 3).weight)


def test_seed_reproducible_in_float64():
    a = Conv2d(2, 4, (2, 3), dtype=np.float64, seed=7)
    b = Conv2d(2, 4, (2, 3), dtype=np.float64, seed=7)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)


@pytest.mark.parametrize(
    "dtype, expected",
    [(None, np.float32), (np.float32, np.float32), (np.float64, np.float64), (np.float16, np.float16),
     ("float64", np.float64), (np.dtype("float16"), np.float16)],
)
def test_dtype(dtype, expected):
    m = Conv2d(2, 3, 3, seed=0) if dtype is None else Conv2d(2, 3, 3, dtype=dtype, seed=0)
    assert m.dtype == expected
    assert m.weight.dtype == expected and m.bias.dtype == expected
    x = random_input(m)
    y = m(x)
    assert y.dtype == expected
    assert m.backward(np.ones_like(y)).dtype == expected
    assert m.weight_grad.dtype == expected and m.bias_grad.dtype == expected


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_, np.complex64])
def test_non_float_dtype_is_type_error(dtype):
    with pytest.raises(TypeError, match="dtype"):
        Conv2d(2, 3, 3, dtype=dtype)


# --------------------------------------------------------------------------- assigning parameters


def test_assign_wrong_shape_is_value_error():
    m = Conv2d(4, 6, (3, 2), groups=2, seed=0)
    original = m.weight.copy()
    with pytest.raises(ValueError, match=r"weight.*\(6, 2, 3, 2\).*\(6, 4, 3, 2\)"):
        m.weight = np.zeros((6, 4, 3, 2), np.float32)
    with pytest.raises(ValueError, match=r"weight.*\(6, 2, 2, 3\)"):
        m.weight = np.zeros((6, 2, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"bias.*\(6,\).*\(5,\)"):
        m.bias = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"bias.*\(1, 6\)"):
        m.bias = np.zeros((1, 6), np.float32)
    np.testing.assert_array_equal(m.weight, original)


def test_assign_non_float_is_type_error():
    m = Conv2d(1, 1, 2, seed=0)
    with pytest.raises(TypeError, match="weight has dtype int64"):
        m.weight = np.zeros((1, 1, 2, 2), dtype=np.int64)


@pytest.mark.parametrize("layer_dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("given_dtype", [np.float16, np.float32, np.float64])
def test_assign_other_float_dtype_is_cast(layer_dtype, given_dtype):
    m = Conv2d(2, 3, 2, dtype=layer_dtype, seed=0)
    w = np.random.default_rng(0).standard_normal((3, 2, 2, 2)).astype(given_dtype)
    b = np.arange(3, dtype=given_dtype)
    m.weight = w
    m.bias = b
    assert m.weight.dtype == layer_dtype and m.bias.dtype == layer_dtype
    np.testing.assert_array_equal(m.weight, w.astype(layer_dtype))
    np.testing.assert_array_equal(m.bias, b.astype(layer_dtype))
    assert isinstance(m.weight, np.ndarray) and m.weight.flags.c_contiguous


def test_assign_torch_tensor():
    m = Conv2d(2, 3, 2, seed=0)
    w = to_tensor(np.random.default_rng(0).standard_normal((3, 2, 2, 2)), requires_grad=True)
    m.weight = w
    m.bias = to_tensor(np.arange(3.0, dtype=np.float32))
    assert isinstance(m.weight, np.ndarray) and m.weight.dtype == np.float32
    np.testing.assert_array_equal(m.weight, to_numpy(w).astype(np.float32))
    np.testing.assert_array_equal(m.bias, np.arange(3.0, dtype=np.float32))
    with pytest.raises(ValueError, match="weight"):
        m.weight = torch_zeros((3, 2, 2))


def test_assign_non_contiguous_array():
    m = Conv2d(2, 3, 2, dtype=np.float64, seed=0)
    w = np.asfortranarray(np.random.default_rng(0).standard_normal((3, 2, 2, 2)))
    m.weight = w
    np.testing.assert_array_equal(m.weight, w)
    assert m.weight.flags.c_contiguous


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_forward_equals_conv2d_and_torch(config):
    m, t = make_layers(config)
    x = random_input(m)
    y = m(x)
    np.testing.assert_array_equal(y, convscope.conv2d(x, m.weight, m.bias, **conv_kwargs(m)))
    np.testing.assert_array_equal(m.forward(x), y)
    assert_close(y, torch_forward(t, x), "module forward")
    expected, _ = torch_conv2d(x, m.weight, m.bias, None, **conv_kwargs(m))
    assert_close(y, expected, "functional forward")


@pytest.mark.parametrize("config", CONFIGS[:3], ids=IDS[:3])
def test_forward_unbatched_and_zero_batch(config):
    m, t = make_layers(config)
    for batch in (None, 0):
        x = random_input(m, batch=batch)
        y = m(x)
        assert_close(y, torch_forward(t, x), f"batch={batch}")


def test_forward_accepts_torch_tensor_and_list():
    m = Conv2d(1, 2, 2, dtype=np.float64, seed=0)
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    expected = m(x)
    np.testing.assert_array_equal(m(to_tensor(x)), expected)
    np.testing.assert_array_equal(m(x.tolist()), expected)


def test_float64_input_to_a_float32_layer_says_how_to_fix_it():
    """torch's rule (the layer is float32 and refuses float64), with the two ways out in the message."""
    m = Conv2d(1, 1, 3)
    fixes = r"convert it with {}, or make the layer float64 with Conv2d\(\.\.\., dtype=np\.float64\)"
    with pytest.raises(TypeError,
                       match="input is float64 and weight is float32 .the layer's dtype, torch's default.: "
                             + fixes.format(r"x\.astype\(np\.float32\)")):
        m(np.random.rand(1, 1, 5, 5))
    with pytest.raises(TypeError, match=fixes.format(r"x\.to\(torch\.float32\)")):
        m(to_tensor(np.random.rand(1, 1, 5, 5)))
    np.testing.assert_array_equal(m(np.random.rand(1, 1, 5, 5).astype(np.float32)).shape, (1, 1, 3, 3))
    m64 = Conv2d(1, 1, 3, dtype=np.float64)
    assert m64(np.random.rand(1, 1, 5, 5)).dtype == np.float64
    m(np.ones((1, 1, 5, 5), dtype=np.float32))
    with pytest.raises(TypeError, match=r"grad_output is float64 .*grad_output\.astype\(np\.float32\)"):
        m.backward(np.ones((1, 1, 3, 3)))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nested_lists_take_the_layers_dtype(dtype):
    m = Conv2d(1, 2, 2, dtype=dtype, seed=0)
    for x in ([[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]], [[[0.5, -1.25, 3.0], [2.0, 0.0, 1.5], [1.0, 1.0, -2.0]]]):
        expected = m(np.array(x, dtype=dtype))
        g = np.arange(expected.size, dtype=dtype).reshape(expected.shape)
        expected_grad = m.backward(g)
        y = m(x)
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, expected)
        grad = m.backward(g.tolist())
        assert grad.dtype == dtype
        np.testing.assert_array_equal(grad, expected_grad)
    with pytest.raises(TypeError, match="input could not be converted to a"):
        m([[1, "a"]])


def test_forward_float16_layer():
    m = Conv2d(3, 4, 3, dtype=np.float16, seed=0, padding=1)
    x = random_input(m)
    y = m(x)
    assert y.dtype == np.float16
    expected = Conv2d(3, 4, 3, dtype=np.float32, padding=1)
    expected.weight, expected.bias = m.weight, m.bias
    np.testing.assert_allclose(y.astype(np.float32), expected(x.astype(np.float32)), rtol=1e-2, atol=1e-2)


# --------------------------------------------------------------------------- backward


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_backward_matches_torch_and_accumulates(config):
    config = dict(config, dtype=np.float64)
    m, t = make_layers(config)
    rng = np.random.default_rng(2)
    for step in range(2):
        x = random_input(m, seed=10 + step)
        y = m(x)
        g = rng.standard_normal(y.shape)
        dx = m.backward(g)
        _, want_dx = torch_module_backward(t, x, g)
        assert_close(dx, want_dx, f"grad input, step {step}")
        assert_close(m.weight_grad, parameter_grad(t, "weight"), f"weight_grad after {step + 1} backward")
        if t.bias is None:
            assert m.bias_grad is None
        else:
            assert_close(m.bias_grad, parameter_grad(t, "bias"), f"bias_grad after {step + 1} backward")
    # two backward calls really added up (not just the last one)
    single = convscope.conv2d_backward(g, x, m.weight, **conv_kwargs(m))
    assert not np.allclose(m.weight_grad, single.weight)


def test_backward_accumulates_the_sum_of_the_single_gradients():
    m = Conv2d(2, 3, 3, padding=1, padding_mode="reflect", dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 2, 5, 6)) for _ in range(3)]
    gs = [rng.standard_normal((2, 3, 5, 6)) for _ in range(3)]
    for x, g in zip(xs, gs):
        m(x)
        m.backward(g)
    singles = [convscope.conv2d_backward(g, x, m.weight, padding=1, padding_mode="reflect") for x, g in zip(xs, gs)]
    np.testing.assert_allclose(m.weight_grad, sum(s.weight for s in singles), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.bias_grad, sum(s.bias for s in singles), rtol=1e-12, atol=1e-12)


def test_zero_grad_resets_to_none():
    m = Conv2d(2, 3, 2, dtype=np.float64, seed=0)
    x = random_input(m)
    g = np.ones_like(m(x))
    m.backward(g)
    assert m.weight_grad is not None and m.bias_grad is not None
    m.zero_grad()
    assert m.weight_grad is None and m.bias_grad is None
    # after zero_grad the next backward starts from nothing again (same saved input)
    m.backward(g)
    single = convscope.conv2d_backward(g, x, m.weight)
    np.testing.assert_array_equal(m.weight_grad, single.weight)
    np.testing.assert_array_equal(m.bias_grad, single.bias)


def test_bias_grad_stays_none_without_bias():
    m = Conv2d(2, 3, 2, bias=False, seed=0)
    y = m(random_input(m))
    m.backward(np.ones_like(y))
    m.backward(np.ones_like(y))
    assert m.bias_grad is None
    assert m.weight_grad is not None


def test_backward_before_forward_is_runtime_error():
    m = Conv2d(2, 3, 2, seed=0)
    with pytest.raises(RuntimeError, match="forward"):
        m.backward(np.ones((1, 3, 4, 4), np.float32))
    assert m.weight_grad is None and m.bias_grad is None


def test_forward_keeps_a_copy_of_the_input():
    m = Conv2d(2, 3, 2, dtype=np.float64, seed=0)
    x = random_input(m)
    x_before = x.copy()
    y = m(x)
    x[...] = 100.0
    g = np.random.default_rng(0).standard_normal(y.shape)
    m.backward(g)
    expected = convscope.conv2d_backward(g, x_before, m.weight)
    np.testing.assert_array_equal(m.weight_grad, expected.weight)


def test_forward_keeps_a_copy_of_a_torch_input():
    m = Conv2d(2, 3, 2, dtype=np.float64, seed=0)
    x_array = random_input(m)
    x = to_tensor(x_array, copy=False)                   # shares x_array's memory
    x_before = x_array.copy()
    y = m(x)
    x_array.fill(100.0)                                  # changes the tensor the layer was given
    g = np.ones_like(y)
    m.backward(g)
    np.testing.assert_array_equal(m.weight_grad, convscope.conv2d_backward(g, x_before, m.weight).weight)


def test_backward_uses_the_last_forward():
    m = Conv2d(2, 3, 2, dtype=np.float64, seed=0)
    x1, x2 = random_input(m, seed=1), random_input(m, batch=None, seed=2)
    m(x1)
    y2 = m(x2)
    g = np.ones_like(y2)
    dx = m.backward(g)
    assert dx.shape == x2.shape
    np.testing.assert_array_equal(m.weight_grad, convscope.conv2d_backward(g, x2, m.weight).weight)


def test_backward_does_not_modify_grad_output():
    m = Conv2d(2, 3, 2, dtype=np.float64, seed=0)
    y = m(random_input(m))
    g = np.random.default_rng(0).standard_normal(y.shape)
    before = g.copy()
    m.backward(g)
    m.backward(g)
    np.testing.assert_array_equal(g, before)


# --------------------------------------------------------------------------- state


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_state_dict_keys_match_torch(config):
    m, t = make_layers(config)
    state = m.state_dict()
    assert list(state) == list(t.state_dict())
    np.testing.assert_array_equal(state["weight"], m.weight)
    if "bias" in state:
        np.testing.assert_array_equal(state["bias"], m.bias)
    assert all(isinstance(v, np.ndarray) for v in state.values())


def test_state_dict_holds_copies():
    m = Conv2d(2, 3, 2, seed=0)
    before = m.weight.copy()
    state = m.state_dict()
    state["weight"][...] = 5.0
    state["bias"][...] = 5.0
    np.testing.assert_array_equal(m.weight, before)
    assert not np.any(m.bias == 5.0)


def test_load_state_dict_numpy():
    src = Conv2d(4, 6, (3, 2), groups=2, seed=1)
    dst = Conv2d(4, 6, (3, 2), groups=2, seed=2)
    dst.load_state_dict(src.state_dict())
    np.testing.assert_array_equal(dst.weight, src.weight)
    np.testing.assert_array_equal(dst.bias, src.bias)
    x = random_input(src)
    np.testing.assert_array_equal(dst(x), src(x))


def test_load_state_dict_casts_to_layer_dtype():
    dst = Conv2d(2, 3, 2, dtype=np.float32, seed=0)
    w = np.random.default_rng(0).standard_normal((3, 2, 2, 2))
    dst.load_state_dict({"weight": w, "bias": np.ones(3)})
    assert dst.weight.dtype == np.float32 and dst.bias.dtype == np.float32
    np.testing.assert_array_equal(dst.weight, w.astype(np.float32))


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_load_state_dict_from_torch(config):
    t = torch_layer(config)
    m = Conv2d(config["in_channels"], config["out_channels"], config["kernel_size"], seed=5, **layer_kwargs(config))
    m.load_state_dict(t.state_dict())
    np.testing.assert_array_equal(m.weight, to_numpy(t.weight))
    if t.bias is not None:
        np.testing.assert_array_equal(m.bias, to_numpy(t.bias))
    x = random_input(m)
    assert_close(m(x), torch_forward(t, x))


def test_load_state_dict_wrong_keys():
    m = Conv2d(2, 3, 2, seed=0)
    state = m.state_dict()
    with pytest.raises(ValueError, match="bias"):
        m.load_state_dict({"weight": state["weight"]})
    with pytest.raises(ValueError, match="running_mean"):
        m.load_state_dict(dict(state, running_mean=np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match="weights"):
        m.load_state_dict({"weights": state["weight"], "bias": state["bias"]})
    no_bias = Conv2d(2, 3, 2, bias=False, seed=0)
    with pytest.raises(ValueError, match="bias"):
        no_bias.load_state_dict(state)
    with pytest.raises(ValueError, match="bias"):
        no_bias.load_state_dict(torch_module("Conv2d", 2, 3, 2).state_dict())


def test_load_state_dict_wrong_shape_leaves_layer_unchanged():
    m = Conv2d(2, 3, 2, seed=0)
    before = m.state_dict()
    with pytest.raises(ValueError, match=r"bias.*\(4,\)"):
        m.load_state_dict({"weight": np.zeros((3, 2, 2, 2), np.float32), "bias": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match="weight"):
        m.load_state_dict(torch_module("Conv2d", 2, 3, 3).state_dict())
    np.testing.assert_array_equal(m.weight, before["weight"])
    np.testing.assert_array_equal(m.bias, before["bias"])


# --------------------------------------------------------------------------- torch interop

FROM_TORCH = [
    cfg(3, 4, 3),
    cfg(3, 4, 3, padding=1, padding_mode="zeros"),
    cfg(3, 4, 3, padding=1, padding_mode="reflect"),
    cfg(3, 4, (3, 2), padding=(2, 1), padding_mode="replicate"),
    cfg(3, 4, 3, padding=(1, 2), padding_mode="circular"),
    cfg(3, 4, (2, 4), padding="same"),
    cfg(3, 4, (2, 3), padding="same", padding_mode="reflect", dilation=(2, 1)),
    cfg(3, 4, 3, padding="valid"),
    cfg(4, 6, 3, groups=2, stride=(2, 1)),
    cfg(4, 8, 3, groups=4, padding_mode="circular", padding=1),
    cfg(3, 4, 3, dilation=2, padding=2),
    cfg(3, 4, 3, bias=False),
    cfg(3, 4, 3, dtype=np.float64, padding=1, padding_mode="replicate"),
    cfg(3, 4, 3, dtype=np.float16, padding=1),
]
FROM_TORCH_IDS = [f"from{i}" for i in range(len(FROM_TORCH))]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("config", FROM_TORCH, ids=FROM_TORCH_IDS)
def test_from_torch(config):
    t = torch_layer(config, seed=0)
    m = Conv2d.from_torch(t)
    assert repr(m) == repr(t)
    assert (m.in_channels, m.out_channels) == (t.in_channels, t.out_channels)
    assert m.kernel_size == t.kernel_size and m.stride == t.stride and m.dilation == t.dilation
    assert m.padding == t.padding and m.groups == t.groups and m.padding_mode == t.padding_mode
    assert m.dtype == to_numpy(t.weight).dtype and t.weight.dtype == torch_dtype(m.dtype)
    np.testing.assert_array_equal(m.weight, to_numpy(t.weight))
    if t.bias is None:
        assert m.bias is None
    else:
        np.testing.assert_array_equal(m.bias, to_numpy(t.bias))
    x = random_input(m)
    y = m(x)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(y.dtype)
    y_t, dx_t = torch_module_backward(t, x, g)
    assert_close(y, y_t, "forward")
    dx = m.backward(g)
    assert_close(dx, dx_t, "grad input")
    assert_close(m.weight_grad, parameter_grad(t, "weight"), "weight_grad")
    if t.bias is not None:
        assert_close(m.bias_grad, parameter_grad(t, "bias"), "bias_grad")
    # copies: changing the torch module afterwards does not reach the convscope layer
    before = m.weight.copy()
    set_parameter(t, "weight", 2 * to_numpy(t.weight))
    np.testing.assert_array_equal(m.weight, before)


def test_from_torch_bfloat16_is_type_error():
    with pytest.raises(TypeError, match="bfloat16"):
        Conv2d.from_torch(torch_module("Conv2d", 2, 3, 2, dtype="bfloat16"))


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError, match="Linear"):
        Conv2d.from_torch(torch_module("Linear", 2, 3))
    with pytest.raises(TypeError, match="Conv1d"):
        Conv2d.from_torch(torch_module("Conv1d", 2, 3, 3))


@pytest.mark.parametrize("config", FROM_TORCH, ids=FROM_TORCH_IDS)
def test_to_torch_round_trip(config):
    m = Conv2d(config["in_channels"], config["out_channels"], config["kernel_size"], seed=4, **layer_kwargs(config))
    t = m.to_torch()
    assert is_torch_module(t, "Conv2d")
    assert repr(t) == repr(m)
    assert t.weight.dtype == torch_dtype(m.dtype)
    assert t.padding == m.padding and t.padding_mode == m.padding_mode
    np.testing.assert_array_equal(to_numpy(t.weight), m.weight)
    if m.bias is None:
        assert t.bias is None
    else:
        np.testing.assert_array_equal(to_numpy(t.bias), m.bias)
    back = Conv2d.from_torch(t)
    assert repr(back) == repr(m) and back.dtype == m.dtype
    np.testing.assert_array_equal(back.weight, m.weight)
    if m.bias is not None:
        np.testing.assert_array_equal(back.bias, m.bias)
    # the torch module holds copies
    set_parameter(t, "weight", np.zeros_like(m.weight))
    assert np.any(m.weight != 0)
    x = random_input(m)
    np.testing.assert_array_equal(back(x), m(x))


def test_to_torch_forward_matches():
    m = Conv2d(3, 5, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), dtype=np.float64, seed=2)
    x = random_input(m, shape_hw=(9, 10))
    assert_close(m(x), torch_forward(m.to_torch(), x))


REPR_CASES = [
    ((1, 1, 3), {}),
    ((3, 8, (3, 5)), {}),
    ((3, 8, 3), dict(stride=2)),
    ((3, 8, 3), dict(stride=(2, 1))),
    ((3, 8, 3), dict(padding=0)),
    ((3, 8, 3), dict(padding=1)),
    ((3, 8, 3), dict(padding=(0, 2))),
    ((3, 8, 3), dict(padding=(0, 0))),
    ((3, 8, 3), dict(padding="same")),
    ((3, 8, 3), dict(padding="valid")),
    ((3, 8, 3), dict(dilation=1)),
    ((3, 8, 3), dict(dilation=2)),
    ((3, 8, 3), dict(dilation=(1, 3))),
    ((4, 8, 3), dict(groups=2)),
    ((4, 4, 3), dict(groups=4)),
    ((3, 8, 3), dict(bias=False)),
    ((3, 8, 3), dict(padding=1, padding_mode="reflect")),
    ((3, 8, 3), dict(padding_mode="circular")),
    ((3, 8, 3), dict(padding="same", padding_mode="replicate")),
    ((3, 8, 3), dict(padding_mode="zeros")),
    ((4, 8, (2, 3)), dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1), groups=4, bias=False,
                          padding_mode="circular")),
    ((4, 8, 3), dict(padding="same", dilation=2, groups=2, bias=False, padding_mode="reflect")),
    ((3, 8, 3), dict(dtype=np.float64)),
]


@pytest.mark.parametrize("args, kwargs", REPR_CASES)
def test_repr_matches_torch(args, kwargs):
    assert repr(Conv2d(*args, **kwargs)) == repr(torch_module("Conv2d", *args, **kwargs))


def test_repr_issue_example():
    assert repr(Conv2d(1, 1, 3)) == "Conv2d(1, 1, kernel_size=(3, 3), stride=(1, 1))"


# --------------------------------------------------------------------------- without torch


def test_torch_interop_without_torch_is_import_error(monkeypatch):
    t = torch_module("Conv2d", 2, 3, 2)
    m = Conv2d(2, 3, 2, seed=0)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"(?i)torch"):
        m.to_torch()
    with pytest.raises(ImportError, match=r"(?i)torch"):
        Conv2d.from_torch(t)
    # the rest of the layer works without torch
    other = Conv2d(2, 3, 2, seed=1)
    y = other(np.ones((1, 2, 4, 4), np.float32))
    other.backward(np.ones_like(y))
    other.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(other.weight, m.weight)
    assert repr(other) == "Conv2d(2, 3, kernel_size=(2, 2), stride=(1, 1))"


def test_the_torch_extra_accepts_newer_torch_and_the_test_extra_pins_it():
    tomllib = pytest.importorskip("tomllib")
    import pathlib

    project = tomllib.loads((pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert extras["torch"] == ["torch>=2.1"]  # never downgrades a user's newer torch
    assert "torch==2.13.0" in extras["test"]  # the oracle's exact version
