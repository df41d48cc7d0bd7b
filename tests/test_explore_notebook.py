"""convscope.widget / convscope.explore.widget: the explore page of the user's own layer in a notebook."""
import html
import re

import numpy as np
import pytest

import convscope
from convscope import Conv2d, explain, explain_grad
from convscope.explore import ExplorePage, element, layer_data, widget
from convscope.explore.data import decode
from oracle import require_torch, to_numpy, torch_forward, torch_module, torch_randn

require_torch()


def _data_matches_explain(data, w, x, b, **params):
    out = convscope.conv2d(x, w, b, **params)
    assert np.array_equal(decode(data["arrays"]["output"]), out)
    for o, i, j in np.ndindex(out.shape):
        e = explain(w, x, (o, i, j), bias=b, **params)
        assert element(data, "output", (o, i, j))["v"] == e.value
    gy = np.ones_like(out)
    for c, h, w_ in np.ndindex(x.shape):
        assert element(data, "input", (c, h, w_))["v"] == explain_grad(w, x, gy, "input", (c, h, w_), **params).value
    for idx in np.ndindex(w.shape):
        assert element(data, "weight", idx)["v"] == explain_grad(w, x, gy, "weight", idx, **params).value


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_a_convscope_layer(mode):
    layer = Conv2d(4, 2, (2, 3), stride=(1, 2), padding=1, groups=2, padding_mode=mode)
    x = np.random.default_rng(1).standard_normal((4, 5, 6)).astype(np.float32)
    x0, w0 = x.copy(), layer.weight.copy()
    page = widget(layer, x)
    assert isinstance(page, ExplorePage)
    assert np.array_equal(x, x0) and np.array_equal(layer.weight, w0)
    cfg = page.data["config"]
    assert cfg["weight_given"] and cfg["kernel_size"] == [2, 3] and cfg["out_channels"] == 2 and cfg["groups"] == 2
    assert np.array_equal(decode(page.data["arrays"]["weight"]), layer.weight)
    _data_matches_explain(page.data, layer.weight, x, layer.bias, stride=(1, 2), padding=1, groups=2,
                          padding_mode=mode)


def test_a_torch_layer_and_torch_input_give_torchs_numbers():
    layer = torch_module("Conv2d", 2, 3, 3, padding="same", dilation=2, padding_mode="reflect", seed=0)
    x = torch_randn(1, 2, 6, 5)
    page = widget(layer, x)
    expected = torch_forward(layer, x)[0]
    got = decode(page.data["arrays"]["output"])
    assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
    assert layer.weight.grad is None


def test_a_weight_with_hyper_parameters_and_the_page():
    w = np.arange(8.0).reshape(2, 1, 2, 2) - 3
    x = np.arange(12.0).reshape(3, 4)
    page = widget(w, x, bias=np.array([0.5, -1.0]), stride=2, padding=(1, 0), grad_output="random", seed=3)
    assert page.data["config"]["grad_output"] == "random"
    gy = decode(page.data["arrays"]["grad_output"])
    e = explain_grad(w, x[None], gy, "weight", (1, 0, 1, 1), stride=2, padding=(1, 0))
    assert decode(page.data["arrays"]["grad_weight"])[1, 0, 1, 1] == e.value
    frame = page._repr_html_()
    assert frame.startswith("<iframe") and 'sandbox="allow-scripts"' in frame
    assert html.unescape(re.search(r'srcdoc="([^"]*)"', frame).group(1)) == page.html
    assert "convscope explore --" not in page.html      # no command reproduces a weight given from Python
    assert not re.search(r"(src|href)=[\"']?https?://", page.html)


def test_errors_are_the_librarys():
    w = np.ones((1, 1, 3, 3))
    with pytest.raises(TypeError, match="takes the hyper-parameters from the layer; pass stride"):
        widget(Conv2d(1, 1, 3), np.ones((5, 5)), stride=2)
    with pytest.raises(TypeError, match="same dtype"):
        widget(w, np.ones((5, 5), np.float32))
    with pytest.raises(ValueError, match="pass sample=n"):
        widget(w, np.ones((2, 1, 5, 5)))
    with pytest.raises(ValueError, match=r"sample must be an int in 0\.\.1"):
        widget(w, np.ones((2, 1, 5, 5)), sample=2)
    with pytest.raises(ValueError, match="input height H must be at most 1024"):
        widget(w, np.ones((1025, 5)))
    with pytest.raises(ValueError, match=r"kernel_size is the weight's \(3, 3\)"):
        layer_data(np.ones((5, 5)), weight=w, kernel_size=2)
    with pytest.raises(ValueError, match=r"out_channels is the weight's \(1\)"):
        layer_data(np.ones((5, 5)), weight=w, out_channels=2)
    with pytest.raises(ValueError) as info:
        convscope.conv2d(np.ones((1, 2, 5, 5)), np.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError) as mine:
        widget(np.ones((1, 1, 3, 3)), np.ones((2, 5, 5)))
    assert str(mine.value) == str(info.value)


def test_the_digit_layer_of_torch_and_a_batch_with_sample():
    layer = torch_module("Conv2d", 1, 8, 5, seed=0)
    x = torch_randn(3, 1, 28, 28)
    page = widget(layer, x, sample=2)
    expected = torch_forward(layer, x)[2]
    got = decode(page.data["arrays"]["output"])
    assert got.shape == (8, 24, 24) and np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
    assert page.data["config"]["sample"] == 2 and page.data["config"]["batch"] == 3
    assert np.array_equal(decode(page.data["arrays"]["x"]), to_numpy(x)[2])
    assert len(page.html.encode()) < 5_000_000
    single = widget(torch_module("Conv2d", 1, 8, 5), torch_randn(1, 1, 28, 28))
    assert single.data["config"]["sample"] == 0       # a 4-D input: its labels carry n = 0
