"""The explore page's data: one computation gives every array, and each element's numbers are explain's."""
import io
import json
import time

import numpy as np
import pytest

import convscope
from convscope import explain, explain_grad
from convscope.explain.render import channel_terms
from convscope.explore import IMAGES, KERNELS, LIMITS, MAX_BYTES, MAX_TERMS, element, layer_data
from convscope.explore.data import decode, load_image, parse_kernel, prepare, public, read_file
from convscope.explore.server import page_html

from oracle import assert_close, peak_bytes, torch_conv2d

NP_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def arrays(d):
    """Every array of a data dict, decoded."""
    return {k: None if v is None else decode(v) for k, v in d["arrays"].items()}


def hyper(d):
    cfg = d["config"]
    return dict(stride=tuple(cfg["stride"]), padding=cfg["padding"] if isinstance(cfg["padding"], (str, int))
                else tuple(cfg["padding"]), dilation=tuple(cfg["dilation"]), groups=cfg["groups"],
                padding_mode=cfg["padding_mode"])


def hw(index):
    return (-1, -1) if index is None else tuple(index[-2:])


def check_arrays(d):
    """The arrays are conv2d's and conv2d_backward's on the page's own input, weight, bias and grad_output."""
    a, params = arrays(d), hyper(d)
    assert np.array_equal(a["output"], convscope.conv2d(a["x"], a["weight"], a["bias"], **params))
    grads = convscope.conv2d_backward(a["grad_output"], a["x"], a["weight"], **params)
    assert np.array_equal(a["grad_input"], grads.input) and np.array_equal(a["grad_weight"], grads.weight)
    assert np.array_equal(a["grad_bias"], grads.bias)


def check_element(d, kind, at):
    """element() is explain's / explain_grad's, term for term."""
    a, params = arrays(d), hyper(d)
    x, w, b, gy = a["x"], a["weight"], a["bias"], a["grad_output"]
    got = json.loads(json.dumps(element(d, kind, at)))
    if kind == "output":
        e = explain(w, x, at, bias=b, **params)
        assert (got["v"], got["s"], got["n"]) == (e.value, e.sum_of_products, len(e.terms))
        assert got["bias"] == (e.bias if b is not None else None) and got["channels"] == list(e.channels)
        for c in range(w.shape[1]):
            block = channel_terms(e, c)
            assert got["taps"] == [[*t.tap, *t.padded_index, *hw(t.input_index), int(t.is_padding)] for t in block]
            assert got["p"][c] == [t.product for t in block] and got["x"][c] == [t.input_value for t in block]
            assert got["w"][c] == [t.weight_value for t in block]
            assert got["cs"][c] == float(np.sum([t.product for t in block]))
        assert got["v"] == a["output"][at]
        return got
    e = explain_grad(w, x, gy, kind, at, **params)
    assert (got["v"], got["s"], got["n"]) == (e.value, e.sum_of_products, len(e.terms))
    if kind == "input":
        assert got["r"] == e.reason
        assert got["t"] == [[*t.output_index[-3:], *t.weight_index[1:], *t.padded_index, int(t.is_padding),
                             t.grad_output_value, t.weight_value, t.product] for t in e.terms]
        assert got["v"] == a["grad_input"][at]
    elif kind == "weight":
        assert got["ch"] == e.channels.start
        assert got["t"] == [[*t.output_index[-2:], *t.padded_index, *hw(t.input_index), int(t.is_padding),
                             t.grad_output_value, t.input_value, t.product] for t in e.terms]
        assert got["v"] == a["grad_weight"][at]
    return got


def check_padding(d):
    """Each padded row / column's source, against np.pad of pixel numbers as an oracle."""
    cfg = d["config"]
    (pt, pb), (pl, pr) = cfg["padding_resolved"]
    _, H, W = cfg["input_shape"]
    mode = cfg["padding_mode"]
    ids = np.arange(H * W).reshape(H, W)
    widths = ((pt, pb), (pl, pr))
    expected = np.pad(ids, widths, constant_values=-1) if mode == "zeros" else np.pad(ids, widths, mode=NP_PAD[mode])
    rows, cols = np.array(d["source_rows"]), np.array(d["source_cols"])
    real = (rows[:, None] >= 0) & (cols[None, :] >= 0)
    assert np.array_equal(np.where(real, rows[:, None] * W + np.maximum(cols[None, :], 0), -1), expected)


CONFIGS = {
    "zeros p1": dict(input_shape=(2, 5, 5), out_channels=2, padding=1),
    "reflect p1": dict(input_shape=(3, 5, 6), padding=1, padding_mode="reflect", integers=True),
    "replicate p2": dict(input_shape=(4, 5), padding=2, padding_mode="replicate", kernel_size=2, bias=False),
    "circular pair": dict(input_shape=(2, 4, 5), padding=(1, 2), padding_mode="circular", out_channels=2),
    "same dilated even": dict(input_shape=(5, 5), kernel_size=(2, 4), padding="same", dilation=2,
                              padding_mode="replicate", bias=[0.5]),
    "valid stride": dict(input_shape=(2, 7, 6), padding="valid", stride=2, out_channels=2, integers=True),
    "stride skips": dict(input_shape=(6, 6), kernel_size=2, stride=3, grad_output="random"),
    "groups": dict(input_shape=(4, 4, 4), out_channels=6, groups=2, padding=1, padding_mode="reflect",
                   bias=[0.1, -0.2, 0.3, 0.0, 1.5, -1.0], grad_output="random"),
    "sobel on a float64 input": dict(x=np.linspace(-1, 1, 42).reshape(6, 7), kernel="sobel_x", padding=1),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_every_element_is_explains(name):
    kwargs = dict(CONFIGS[name])
    d = layer_data(kwargs.pop("x", None), **kwargs)
    check_arrays(d)
    check_padding(d)
    a = arrays(d)
    for at in np.ndindex(a["output"].shape):
        check_element(d, "output", at)
    for at in np.ndindex(a["x"].shape):
        check_element(d, "input", at)
    for at in np.ndindex(a["weight"].shape):
        check_element(d, "weight", at)
    for o in range(a["weight"].shape[0]):
        check_element(d, "bias", (o,))


def test_the_arrays_are_torchs():
    d = layer_data(input_shape=(3, 9, 8), out_channels=4, kernel_size=3, stride=2, padding=1,
                   padding_mode="reflect", grad_output="random")
    a = arrays(d)
    out, (gx, gw, gb) = torch_conv2d(a["x"], a["weight"], a["bias"], a["grad_output"], **hyper(d))
    for name, expected in (("output", out), ("grad_input", gx), ("grad_weight", gw), ("grad_bias", gb)):
        assert_close(a[name], expected, name)


def test_the_digit_layer_builds_fast_and_its_page_is_small():
    start = time.perf_counter()
    d = layer_data(input_shape=(1, 28, 28), kernel_size=5, out_channels=8)
    seconds = time.perf_counter() - start
    page = page_html(d, static=True)
    assert seconds < 2 and len(page.encode()) < 5_000_000, (seconds, len(page))
    assert decode(d["arrays"]["output"]).shape == (8, 24, 24)
    check_element(d, "output", (7, 23, 23))
    check_element(d, "weight", (3, 0, 4, 4))
    layer_data(input_shape=(3, 32, 32), out_channels=4)          # CIFAR-sized


def test_an_element_with_too_many_terms_has_its_value_only():
    d = layer_data(input_shape=(1, 300, 300), kernel_size=3)
    assert 298 * 298 > MAX_TERMS
    got = element(d, "weight", (0, 0, 1, 2))
    assert got["t"] is None and got["s"] is None and got["n"] == 298 * 298
    assert got["v"] == decode(d["arrays"]["grad_weight"])[0, 0, 1, 2]
    assert element(d, "bias", (0,))["t"] is None
    check_element(d, "output", (0, 297, 0))
    with pytest.raises(ValueError, match="at must be an index of the weight gradient"):
        element(d, "weight", (0, 0, 3, 0))


def test_a_batch_takes_sample_and_labels_keep_the_sample():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    d = layer_data(x, kernel_size=2, sample=1)
    assert np.array_equal(decode(d["arrays"]["x"]), x[1]) and d["config"]["sample"] == 1
    assert d["config"]["batch"] == 2
    with pytest.raises(ValueError, match="pass sample=n"):
        layer_data(x)
    with pytest.raises(ValueError, match=r"sample must be an int in 0\.\.1"):
        layer_data(x, sample=2)


# --------------------------------------------------------------------------- kernels and images


def test_kernel_presets_and_typed_kernels():
    for name, rows in KERNELS.items():
        d = layer_data(input_shape=(2, 6, 6), kernel=name, out_channels=2)
        w = decode(d["arrays"]["weight"])
        assert np.array_equal(w, np.broadcast_to(np.array(rows, np.float32), w.shape)), name
        assert d["config"]["kernel_name"] == name
    assert np.array_equal(parse_kernel("-1 0 1; -2 0 2\n-1,0,1"), np.array(KERNELS["sobel_x"], float))
    d = layer_data(input_shape=(5, 5), kernel="1 2\n3 4", bias=False)
    assert decode(d["arrays"]["weight"]).tolist() == [[[[1, 2], [3, 4]]]] and d["config"]["kernel_size"] == [2, 2]


@pytest.mark.parametrize("text, words", [
    ("1 0 -1; 2 x -2", r"kernel: row 2, entry 2 is not a number: 'x'"),
    ("1 2; 3", r"every row must have as many numbers, got rows of \[2, 1\]"),
    ("", "kernel must be a preset"),
    ("nan 1", "finite"),
    ("; ".join(["1 " * 32] * 2), "kernel_size must be at most 31"),
])
def test_bad_kernels_are_named(text, words):
    with pytest.raises(ValueError, match=words):
        layer_data(kernel=text)


def test_bundled_images():
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    shapes = {"camera": (1, 512, 512), "coins": (1, 303, 384), "astronaut": (3, 512, 512), "digits": (1, 8, 8)}
    assert set(IMAGES) == set(shapes)
    for name, shape in shapes.items():
        x = load_image(name)
        assert x.shape == shape and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1, name
    import skimage.data

    assert np.array_equal(load_image("astronaut")[1] * 255, skimage.data.astronaut()[:, :, 1].astype(np.float32))
    d = layer_data(image="camera", kernel="sobel_x", padding=1, bias=False)
    assert d["config"]["input_name"] == "camera" and d["shape"]["output_hw"] == [512, 512]
    check_element(d, "output", (0, 200, 300))
    with pytest.raises(ValueError, match="image must be one of camera, coins, astronaut, digits, got 'moon'"):
        layer_data(image="moon")


def png(shape, mode="L") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.arange(np.prod(shape), dtype=np.uint8).reshape(shape), mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_png_and_npy_files():
    pytest.importorskip("PIL")
    x = read_file(png((5, 7)), "a.png")
    assert x.shape == (1, 5, 7) and x[0, 0, 1] == np.float32(1 / 255)
    assert read_file(png((4, 6, 3), "RGB"), "rgb.png").shape == (3, 4, 6)
    buffer = io.BytesIO()
    np.save(buffer, np.ones((2, 3, 3)))
    assert read_file(buffer.getvalue(), "x.npy").shape == (2, 3, 3)


def npy_claiming(shape) -> bytes:
    """A .npy whose header claims ``shape`` but whose body holds 8 bytes."""
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 8


@pytest.mark.parametrize("data, words", [
    (png((4, 4))[:40], "a.png: cannot read the file as a PNG or JPEG image"),
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "a.png: cannot read the file as a PNG or JPEG image"),
    (png((1025, 8)), r"a.png: the image is 8×1025 pixels; convscope explore shows at most 1024×1024"),
    (npy_claiming((2**17, 2**17)), r"the header claims shape \(131072, 131072\), 17179869184 numbers"),
    (npy_claiming((3, 3)), r"claims shape \(3, 3\) of float64 \(72 bytes\) but the file holds 8 bytes"),
    (b"\x93NUMPY\x01\x00\xff", "not a readable .npy file"),
    (b"hello", r"not a \.npy, PNG or JPEG file"),
])
def test_bad_files_are_refused_before_allocating(data, words):
    pytest.importorskip("PIL")
    with pytest.raises(ValueError, match=words):
        _, peak = peak_bytes(lambda: read_file(data, "a.png"))
    _, peak = peak_bytes(lambda: pytest.raises(ValueError, read_file, data, "a.png"))
    assert peak < 4_000_000


# --------------------------------------------------------------------------- bounds and errors


@pytest.mark.parametrize("kwargs, name, bound, value", [
    (dict(input_shape=(1025, 4)), "input height H", LIMITS["height"], "1025"),
    (dict(input_shape=(4, 1030)), "input width W", LIMITS["width"], "1030"),
    (dict(input_shape=(17, 4, 4)), "input channels C", LIMITS["channels"], "17"),
    (dict(out_channels=17), "out_channels", LIMITS["out_channels"], "17"),
    (dict(kernel_size=(3, 32)), "kernel_size", LIMITS["kernel_size"], "(3, 32)"),
    (dict(stride=17), "stride", LIMITS["stride"], "17"),
    (dict(dilation=(1, 17)), "dilation", LIMITS["dilation"], "(1, 17)"),
    (dict(padding=65), "padding", LIMITS["padding"], "65"),
    (dict(seed=2**32), "seed", LIMITS["seed"], str(2**32)),
])
def test_each_bound_names_the_parameter_the_bound_and_the_value(kwargs, name, bound, value):
    with pytest.raises(ValueError) as info:
        layer_data(**kwargs)
    message = str(info.value)
    assert name in message and str(bound) in message and value in message


def test_the_total_size_is_bounded_before_the_work():
    def refused():
        with pytest.raises(ValueError, match=rf"convscope explore shows at most {MAX_BYTES // 2**20} MiB") as info:
            prepare(input_shape=(16, 1024, 1024), out_channels=16, kernel_size=1)
        return str(info.value)

    message, peak = peak_bytes(refused)
    assert "input 16×1024×1024, output 16×1024×1024" in message and peak < 1_000_000
    assert json.dumps(public(layer_data(input_shape=(1, 64, 64), out_channels=16)))   # JSON-able


def library_message(call):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("kwargs, library", [
    (dict(input_shape=(3, 5, 5), groups=2), lambda: convscope.Conv2d(3, 1, 3, groups=2)),
    (dict(input_shape=(2, 5, 5), out_channels=3, groups=2), lambda: convscope.Conv2d(2, 3, 3, groups=2)),
    (dict(padding="same", stride=2), lambda: convscope.Conv2d(1, 1, 3, padding="same", stride=2)),
    (dict(padding_mode="mirror"), lambda: convscope.Conv2d(1, 1, 3, padding_mode="mirror")),
    (dict(kernel_size=0), lambda: convscope.Conv2d(1, 1, 0)),
    (dict(padding=-1), lambda: convscope.Conv2d(1, 1, 3, padding=-1)),
    (dict(out_channels=0), lambda: convscope.Conv2d(1, 0, 3)),
    (dict(input_shape=(3, 3), padding=3, padding_mode="reflect"),
     lambda: convscope.conv2d(np.zeros((1, 3, 3), np.float32), np.zeros((1, 1, 3, 3), np.float32),
                              np.zeros(1, np.float32), padding=3, padding_mode="reflect")),
    (dict(input_shape=(2, 2), kernel_size=5),
     lambda: convscope.conv2d(np.zeros((1, 2, 2), np.float32), np.zeros((1, 1, 5, 5), np.float32))),
])
def test_invalid_combinations_raise_the_librarys_message(kwargs, library):
    expected = library_message(library)
    assert library_message(lambda: layer_data(**kwargs)) == expected


@pytest.mark.parametrize("x, error, words", [
    (np.zeros((1, 1, 1, 4, 4)), ValueError, "HxW, CxHxW or NxCxHxW"),
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
    (dict(kernel="sobel_x", weight=np.ones((1, 1, 3, 3), np.float32)), ValueError, "a weight or a kernel, not both"),
])
def test_bad_parameters_name_themselves(kwargs, error, words):
    with pytest.raises(error, match=words):
        layer_data(**kwargs)


def test_the_default_bias_is_nn_conv2ds():
    assert layer_data()["config"]["bias"] is True
    assert layer_data(bias=False)["arrays"]["bias"] is None
