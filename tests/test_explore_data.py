"""The explore page's data: every number equals explain's / explain_grad's, element for element."""
import json
import types

import numpy as np
import pytest

import convscope
from convscope import cli, explain, explain_grad
from convscope.explain.render import channel_terms
from convscope.explore import LIMITS, MAX_ELEMENTS, MAX_TERMS, layer_data
from convscope.padding import pad

NP_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def arrays(d):
    """input, weight, bias and grad_output of a data dict, in the layer's dtype."""
    dtype = np.dtype(d["config"]["dtype"])
    b = None if d["bias"] is None else np.array(d["bias"], dtype=dtype)
    return (np.array(d["input"], dtype=dtype), np.array(d["weight"], dtype=dtype), b,
            np.array(d["grad_output"], dtype=dtype))


def hyper(d):
    cfg = d["config"]
    return dict(stride=tuple(cfg["stride"]), padding=cfg["padding"] if isinstance(cfg["padding"], (str, int))
                else tuple(cfg["padding"]), dilation=tuple(cfg["dilation"]), groups=cfg["groups"],
                padding_mode=cfg["padding_mode"])


def src(index):
    return (-1, -1) if index is None else tuple(index[1:])


def check_against_explain(d):
    """Every output, input-gradient, weight-gradient and bias-gradient element of ``d`` is explain's."""
    x, w, b, gy = arrays(d)
    params = hyper(d)
    O, Cg, kH, kW = w.shape
    C, H, W = x.shape
    Ho, Wo = d["shape"]["output_hw"]
    assert np.array_equal(np.array(d["output"]), convscope.conv2d(x, w, b, **params).astype(np.float64))
    for o in range(O):
        for i in range(Ho):
            for j in range(Wo):
                e = explain(w, x, (o, i, j), bias=b, **params)
                f = d["forward"][o][i][j]
                assert f["v"] == e.value == d["output"][o][i][j]
                assert f["s"] == e.sum_of_products
                assert e.bias == (0.0 if b is None else d["bias"][o])
                assert d["group_channels"][o] == list(e.channels)
                for c in range(Cg):
                    block = channel_terms(e, c)
                    assert f["p"][c] == [t.product for t in block]
                    assert f["cs"][c] == float(np.sum([t.product for t in block]))
                    assert d["windows"][i][j] == [[*t.tap, *t.padded_index, *src(t.input_index), int(t.is_padding)]
                                                  for t in block]
                    ch = d["group_channels"][o][c]
                    for t in block:   # the page reads x̃ and w from the grids: they are the terms' numbers
                        assert t.input_index is None or t.input_index[0] == ch
                        assert d["padded"][ch][t.padded_index[0]][t.padded_index[1]] == t.input_value
                        assert d["weight"][o][c][t.tap[0]][t.tap[1]] == t.weight_value
    for c in range(C):
        for h in range(H):
            for w_ in range(W):
                e = explain_grad(w, x, gy, "input", (c, h, w_), **params)
                g = d["grad_input"][c][h][w_]
                assert (g["v"], g["s"], g.get("r")) == (e.value, e.sum_of_products, e.reason)
                assert g["t"] == [[*t.output_index, *t.weight_index[1:], *t.padded_index, int(t.is_padding), t.product]
                                  for t in e.terms]
                for t in e.terms:
                    o, i, j = t.output_index
                    assert d["grad_output"][o][i][j] == t.grad_output_value
                    assert d["weight"][t.weight_index[0]][t.weight_index[1]][t.tap[0]][t.tap[1]] == t.weight_value
    for o, c, u, v in np.ndindex(w.shape):
        e = explain_grad(w, x, gy, "weight", (o, c, u, v), **params)
        g = d["grad_weight"][o][c][u][v]
        assert (g["v"], g["s"], g["ch"]) == (e.value, e.sum_of_products, e.channels.start)
        assert g["t"] == [[*t.output_index[1:], *t.padded_index, *src(t.input_index), int(t.is_padding), t.product]
                          for t in e.terms]
        for t in e.terms:
            assert d["padded"][g["ch"]][t.padded_index[0]][t.padded_index[1]] == t.input_value
    for o in range(O):
        e = explain_grad(w, x, gy, "bias", (o,), **params)
        assert d["grad_bias"][o] == {"v": e.value, "s": e.sum_of_products}


def check_padding(d):
    """The padded grid, the padding flags and each padding cell's source, against np.pad as an oracle."""
    x, _, _, _ = arrays(d)
    cfg = d["config"]
    (pt, pb), (pl, pr) = cfg["padding_resolved"]
    C, H, W = x.shape
    mode = cfg["padding_mode"]
    widths = ((0, 0), (pt, pb), (pl, pr))
    assert np.array_equal(np.array(d["padded"]), np.pad(x, widths, mode=NP_PAD[mode]).astype(np.float64))
    assert np.array_equal(np.array(d["padded"]), pad(x, convscope.ConvSpec(
        kernel_size=tuple(cfg["kernel_size"]), padding=tuple(map(tuple, cfg["padding_resolved"])),
        padding_mode=mode)).astype(np.float64))
    # the source of each padded cell: pad an array of pixel numbers the same way
    ids = np.arange(H * W).reshape(H, W)
    if mode == "zeros":
        expected = np.pad(ids, widths[1:], constant_values=-1)
    else:
        expected = np.pad(ids, widths[1:], mode=NP_PAD[mode])
    rows, cols = np.array(d["source_rows"]), np.array(d["source_cols"])
    real = (rows[:, None] >= 0) & (cols[None, :] >= 0)
    got = np.where(real, rows[:, None] * W + np.maximum(cols[None, :], 0), -1)
    assert np.array_equal(got, expected)
    is_pad = np.array(d["padding_rows"])[:, None] | np.array(d["padding_cols"])[None, :]
    interior = np.zeros_like(is_pad)
    interior[pt:pt + H, pl:pl + W] = True
    assert np.array_equal(is_pad, ~interior)


CONFIGS = {
    "zeros p1": dict(input_shape=(2, 5, 5), out_channels=2, padding=1, bias=True),
    "reflect p1": dict(input_shape=(3, 5, 6), padding=1, padding_mode="reflect", integers=True),
    "replicate p2": dict(input_shape=(4, 5), padding=2, padding_mode="replicate", kernel_size=2),
    "circular pair": dict(input_shape=(2, 4, 5), padding=(1, 2), padding_mode="circular", out_channels=2),
    "reflect pair rect": dict(input_shape=(3, 6), kernel_size=(2, 3), padding=(2, 1), padding_mode="reflect"),
    "same dilated even": dict(input_shape=(5, 5), kernel_size=(2, 4), padding="same", dilation=2,
                              padding_mode="replicate", bias=[0.5]),
    "valid stride": dict(input_shape=(2, 7, 6), padding="valid", stride=2, out_channels=2, integers=True),
    "stride skips": dict(input_shape=(6, 6), kernel_size=2, stride=3, grad_output="random"),
    "dilation": dict(input_shape=(7, 7), dilation=(2, 3), padding=1, padding_mode="circular", seed=3),
    "groups": dict(input_shape=(4, 4, 4), out_channels=6, groups=2, padding=1, padding_mode="reflect",
                   bias=[0.1, -0.2, 0.3, 0.0, 1.5, -1.0], grad_output="random"),
    "depthwise": dict(input_shape=(3, 4, 4), out_channels=3, groups=3, kernel_size=(3, 2), padding=(1, 0)),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_every_number_is_explains(name):
    d = layer_data(**CONFIGS[name])
    check_against_explain(d)
    check_padding(d)
    json.dumps(d, allow_nan=False)


def test_a_given_input_float64_and_its_layouts():
    x = np.random.default_rng(5).standard_normal((2, 4, 5))
    before = x.copy()
    d3 = layer_data(x, padding=1, padding_mode="reflect", kernel_size=(3, 2))
    assert np.array_equal(x, before)                     # the caller's array is untouched
    assert d3["config"]["dtype"] == "float64" and d3["config"]["input_given"]
    assert np.array_equal(np.array(d3["input"]), x)
    check_against_explain(d3)
    check_padding(d3)
    d4 = layer_data(x[None], padding=1, padding_mode="reflect", kernel_size=(3, 2))
    assert d4 == d3                                      # 1xCxHxW is the same sample
    d2 = layer_data(x[0], padding=1, kernel_size=2)
    assert d2["config"]["input_shape"] == [1, 4, 5]
    assert layer_data(np.arange(9).reshape(3, 3), kernel_size=2)["config"]["dtype"] == "float32"  # whole numbers


def test_numbers_are_convscope_explains_seeded_ones():
    """The same seed, shape and kernel give the same input and weight as `convscope explain`."""
    for integers in (False, True):
        args = types.SimpleNamespace(seed=7, input_file=None, input="2x5x4", integers=integers, groups=1,
                                     weight_file=None, kernel="3x2", out_channels=3, ones=False, bias=None,
                                     no_bias=True, stride="1", padding="0", dilation="1", padding_mode="zeros")
        x, w, _ = cli._explain_arrays(args, cli._conv_params(args))
        d = layer_data(input_shape=(2, 5, 4), kernel_size=(3, 2), out_channels=3, seed=7, integers=integers)
        assert np.array_equal(np.array(d["input"], dtype=np.float32), x)
        assert np.array_equal(np.array(d["weight"], dtype=np.float32), w)
        assert d["config"]["decimals"] == (0 if integers else 4)


def test_grad_output_ones_is_the_sum_and_random_is_a_control():
    ones = layer_data(input_shape=(4, 4), kernel_size=2, bias=True)
    assert np.all(np.array(ones["grad_output"]) == 1)
    random = layer_data(input_shape=(4, 4), kernel_size=2, bias=True, grad_output="random")
    g = np.array(random["grad_output"])
    assert len(np.unique(g)) > 3
    x, w, _, gy = arrays(random)
    grads = convscope.conv2d_backward(gy, x, w)
    assert np.array([[e["v"] for e in row] for row in random["grad_input"][0]]).tolist() == \
        grads.input[0].astype(np.float64).tolist()
    assert random["grad_bias"][0]["v"] == float(grads.bias[0])


def test_output_matches_torch():
    torch = pytest.importorskip("torch")
    d = layer_data(input_shape=(2, 5, 5), out_channels=2, kernel_size=3, padding=1, padding_mode="reflect",
                   stride=2, bias=True)
    x, w, b, _ = arrays(d)
    layer = torch.nn.Conv2d(2, 2, 3, stride=2, padding=1, padding_mode="reflect")
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        layer.bias.copy_(torch.from_numpy(b))
        expected = layer(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.array(d["output"]), expected, rtol=1e-5, atol=1e-5)


def test_shape_text_is_explain_shapes():
    d = layer_data(input_shape=(2, 6, 6), kernel_size=2, stride=3, out_channels=4)
    assert d["shape"]["text"] == str(convscope.explain_shape((2, 6, 6), 2, stride=3, out_channels=4))
    assert d["shape"]["output_hw"] == [2, 2]
    assert d["config"]["layer"] == repr(convscope.Conv2d(2, 4, 2, stride=3, bias=False))


def test_unread_pixels_carry_the_reason():
    d = layer_data(input_shape=(5, 5), kernel_size=2, stride=2)
    g = d["grad_input"][0][4][4]
    assert g["t"] == [] and g["v"] == 0.0
    assert g["r"] == explain_grad(np.array(d["weight"], dtype=np.float32), np.array(d["input"], dtype=np.float32),
                                  None, "input", (0, 4, 4), stride=2).reason
    assert "r" not in d["grad_input"][0][0][0]


# --------------------------------------------------------------------------- bounds and errors


@pytest.mark.parametrize("kwargs, name, bound, value", [
    (dict(input_shape=(65, 4)), "input height H", LIMITS["height"], "65"),
    (dict(input_shape=(4, 70)), "input width W", LIMITS["width"], "70"),
    (dict(input_shape=(17, 4, 4)), "input channels C", LIMITS["channels"], "17"),
    (dict(out_channels=17), "out_channels", LIMITS["out_channels"], "17"),
    (dict(kernel_size=(3, 12)), "kernel_size", LIMITS["kernel_size"], "(3, 12)"),
    (dict(stride=9), "stride", LIMITS["stride"], "9"),
    (dict(dilation=(1, 9)), "dilation", LIMITS["dilation"], "(1, 9)"),
    (dict(padding=17), "padding", LIMITS["padding"], "17"),
    (dict(seed=2**32), "seed", LIMITS["seed"], str(2**32)),
])
def test_each_bound_names_the_parameter_the_bound_and_the_value(kwargs, name, bound, value):
    with pytest.raises(ValueError) as info:
        layer_data(**kwargs)
    message = str(info.value)
    assert name in message and str(bound) in message and value in message


def test_totals_are_bounded_before_the_work():
    with pytest.raises(ValueError, match=rf"explains at most {MAX_ELEMENTS}") as info:
        layer_data(input_shape=(40, 40), kernel_size=1)
    assert "1600 input pixels" in str(info.value)
    with pytest.raises(ValueError, match=rf"at most {MAX_TERMS}") as info:
        layer_data(input_shape=(16, 16), kernel_size=11, padding=5)
    assert "C_out·H_out·W_out·(C/groups)·kH·kW = 1·16·16·1·11·11" in str(info.value)


def test_the_largest_layers_stay_small():
    """At the bounds the JSON stays within a few MB."""
    for kwargs in (dict(input_shape=(14, 14), kernel_size=11, padding=5, padding_mode="reflect"),
                   dict(input_shape=(3, 12, 12), out_channels=4, padding=1, bias=True)):
        text = json.dumps(layer_data(**kwargs), separators=(",", ":"))
        assert len(text) < 4_000_000


def library_message(call):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("kwargs, library", [
    (dict(input_shape=(3, 5, 5), groups=2), lambda: convscope.Conv2d(3, 1, 3, groups=2)),
    (dict(input_shape=(2, 5, 5), out_channels=3, groups=2), lambda: convscope.Conv2d(2, 3, 3, groups=2)),
    (dict(padding="same", stride=2), lambda: convscope.Conv2d(1, 1, 3, padding="same", stride=2)),
    (dict(padding_mode="mirror"), lambda: convscope.Conv2d(1, 1, 3, padding_mode="mirror")),
    (dict(padding="full"), lambda: convscope.Conv2d(1, 1, 3, padding="full")),
    (dict(kernel_size=0), lambda: convscope.Conv2d(1, 1, 0)),
    (dict(stride=(1, 0)), lambda: convscope.Conv2d(1, 1, 3, stride=(1, 0))),
    (dict(padding=-1), lambda: convscope.Conv2d(1, 1, 3, padding=-1)),
    (dict(groups=0), lambda: convscope.Conv2d(1, 1, 3, groups=0)),
    (dict(out_channels=0), lambda: convscope.Conv2d(1, 0, 3)),
    (dict(input_shape=(3, 3), padding=3, padding_mode="reflect"),
     lambda: convscope.conv2d(np.zeros((1, 3, 3), np.float32), np.zeros((1, 1, 3, 3), np.float32), padding=3,
                              padding_mode="reflect")),
    (dict(input_shape=(2, 2), kernel_size=5),
     lambda: convscope.conv2d(np.zeros((1, 2, 2), np.float32), np.zeros((1, 1, 5, 5), np.float32))),
])
def test_invalid_combinations_raise_the_librarys_message(kwargs, library):
    expected = library_message(library)
    assert library_message(lambda: layer_data(**kwargs)) == expected


@pytest.mark.parametrize("x, error, words", [
    (np.zeros((2, 1, 4, 4)), ValueError, "one sample"),
    (np.zeros((1, 1, 1, 4, 4)), ValueError, "HxW, CxHxW or 1xCxHxW"),
    (np.array([["a", "b"], ["c", "d"]]), TypeError, "dtype <U1"),
    (np.full((3, 3), np.nan), ValueError, "finite"),
])
def test_bad_inputs(x, error, words):
    with pytest.raises(error, match=words):
        layer_data(x, kernel_size=2)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(grad_output="zeros"), ValueError, "grad_output must be 'ones' or 'random', got 'zeros'"),
    (dict(seed=-1), ValueError, "seed must be in 0..4294967295, got -1"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(bias=[1.0, 2.0], out_channels=3), ValueError, r"bias must be one number or one per output channel \(3\), got 2"),
    (dict(bias="yes"), TypeError, "bias must be True, False, a number or a list of numbers"),
    (dict(input_shape=(1, 2, 3, 4, 5)), ValueError, "input_shape must be"),
    (dict(integers=1), TypeError, "integers must be True or False"),
])
def test_bad_parameters_name_themselves(kwargs, error, words):
    with pytest.raises(error, match=words):
        layer_data(**kwargs)

