"""The explore page's transposed mode: its data, the element view (gather and scatter), the server and
the page in a real browser (Debian's Chromium through Playwright, tests/browser.py).

Every expected number comes from torch (tests/oracle.py): the output is torch's conv_transpose2d; the
scatter terms of an output are the (input element, kernel tap) pairs that torch's conv_transpose2d of
one-hot inputs and kernels lands there; the gather view's zero-inserted, padded input z̃ is rebuilt
from the element views and checked to give torch's output as an ordinary convolution (torch's conv2d)
with the flipped kernel.
"""
import http.client
import json
import threading
from urllib.parse import urlencode

import numpy as np
import pytest

import convscope
from convscope.explore import element, layer_data, write_page
from convscope.explore.data import decode
from convscope.explore.server import command_line, make_server
from oracle import assert_close, torch_conv2d, torch_conv_transpose2d, torch_landings

from browser import launch_browser
from test_explore_browser import open_page
from test_explore_server import stop

CONFIG = dict(input_shape=(2, 3, 3), out_channels=2, kernel_size=3, stride=2, padding=1, output_padding=1,
              integers=True, transposed=True)


def params(cfg):
    return dict(stride=tuple(cfg["stride"]), padding=tuple(p for p, _ in cfg["padding_resolved"]),
                output_padding=tuple(cfg["output_padding"]), groups=cfg["groups"], dilation=tuple(cfg["dilation"]))


def arrays(d):
    a = {k: None if v is None else decode(v) for k, v in d["arrays"].items()}
    return a["x"], a["weight"], a["bias"], a["output"]


def rebuilt_gather_input(d, elements):
    """z̃ of every input channel, from the element views' windows (NaN where no window reads a cell)."""
    C = d["config"]["input_shape"][0]
    z = np.full((C,) + tuple(d["gather"]["length"]), np.nan)
    for e in elements:
        for c, ch in enumerate(e["channels"]):
            for k, (_, _, zr, zc, _, _, _) in enumerate(e["taps"]):
                z[ch, zr, zc] = e["x"][c][k]
    return z


@pytest.mark.parametrize("config", [
    CONFIG,
    dict(input_shape=(1, 4, 3), kernel_size=(2, 3), stride=(3, 1), padding=(0, 1), dilation=(1, 2),
         output_padding=(2, 1), seed=4, transposed=True),
    dict(input_shape=(4, 3, 3), out_channels=4, groups=2, kernel_size=2, stride=2, seed=2, transposed=True),
])
def test_element_views_are_torch_numbers_both_ways(config):
    d = layer_data(**config)
    x, w, b, out = arrays(d)
    p = params(d["config"])
    if config.get("integers"):              # small integers: every order of the sums gives the same number
        np.testing.assert_array_equal(out, torch_conv_transpose2d(x, w, b, **p))
    else:                                   # float32 sums: torch's order depends on the CPU's kernels
        assert_close(out, torch_conv_transpose2d(x, w, b, **p), "output")
    assert tuple(d["shape"]["output_hw"]) == out.shape[1:]
    landings = torch_landings(x.shape[1:], w.shape[2:], **{k: v for k, v in p.items() if k != "groups"})
    O, Ho, Wo = out.shape
    Og, Cg = w.shape[1], x.shape[0] // d["config"]["groups"]
    elements = []
    for o in range(O):
        for r in range(Ho):
            for t in range(Wo):
                e = element(d, "output", (o, r, t))
                elements.append(e)
                assert e["v"] == float(out[o, r, t])
                assert e["s"] + (e["bias"] or 0.0) == pytest.approx(e["v"], abs=1e-4 * max(1, abs(e["v"])))
                g = o // Og
                assert e["channels"] == list(range(g * Cg, (g + 1) * Cg))
                expected = {(c, *hit) for c in e["channels"] for hit in landings.get((r, t), ())}
                assert {tuple(s[:5]) for s in e["scatter"]} == expected and e["n"] == len(expected)
                for c, i, j, u, v, xv, wv, prod in e["scatter"]:
                    assert xv == float(x[c, i, j]) and wv == float(w[c, o - g * Og, u, v]) and prod == xv * wv
    # the gather view: z̃ with the flipped, in/out-swapped kernel is an ordinary convolution giving torch's output
    z = rebuilt_gather_input(d, elements)
    z = np.nan_to_num(z)[None]
    G = d["config"]["groups"]
    flipped = w[:, :, ::-1, ::-1].reshape(G, Cg, Og, *w.shape[2:]).transpose(0, 2, 1, 3, 4).reshape(G * Og, Cg,
                                                                                                     *w.shape[2:])
    gathered, _ = torch_conv2d(z.astype(np.float64), np.ascontiguousarray(flipped, dtype=np.float64),
                               None if b is None else b.astype(np.float64), None, dilation=p["dilation"], groups=G)
    np.testing.assert_allclose(gathered[0], out, rtol=1e-6, atol=1e-5)


def test_zero_inserted_cells_are_named_and_counted():
    d = layer_data(**CONFIG)
    e = element(d, "output", (0, 2, 2))
    kinds = {(zr, zc): what for _, _, zr, zc, _, _, what in e["taps"]}
    # stride 2, border d·(k−1)−p = 1: z̃ row/col z holds an input element when z−1 is even and within the input
    real = {z for z in range(8) if (z - 1) % 2 == 0 and 0 <= (z - 1) // 2 < 3}
    for (zr, zc), what in kinds.items():
        if zr in real and zc in real:
            assert what == 0
        elif 1 <= zr <= 5 and 1 <= zc <= 5:
            assert what == 1
        else:
            assert what == 2
    assert d["gather"] == {"border": [1, 1], "length": [8, 8]}


def test_bad_configurations():
    with pytest.raises(ValueError, match="output_padding must be smaller than stride or dilation"):
        layer_data(input_shape=(3, 3), stride=2, output_padding=2, transposed=True)
    with pytest.raises(ValueError, match="pass transposed=True"):
        layer_data(input_shape=(3, 3), stride=2, output_padding=1)
    with pytest.raises(ValueError, match='Only "zeros" padding mode'):
        layer_data(input_shape=(3, 3), padding_mode="reflect", transposed=True)
    with pytest.raises(ValueError, match="at must be an index"):
        element(layer_data(**CONFIG), "input", (0, 3, 0))
    with pytest.raises(ValueError, match="kind must be one of"):
        element(layer_data(**CONFIG), "padding", (0,))
    with pytest.raises(ValueError, match="at must be an index"):
        element(layer_data(**CONFIG), "output", (0, 6, 0))


def test_a_given_weight_is_in_the_transposed_layout():
    w = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)      # (C_in, C_out/groups, kH, kW)
    x = np.ones((2, 2, 2), np.float32)
    d = layer_data(x, weight=w, bias=False, stride=2, transposed=True)
    assert d["config"]["out_channels"] == 3
    np.testing.assert_array_equal(arrays(d)[3], torch_conv_transpose2d(x, w, None, stride=2))
    assert "--transposed" in command_line(d["config"])
    assert "--transposed --output-padding 1" in command_line(layer_data(**CONFIG)["config"])


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def server():
    srv = make_server(**CONFIG)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    stop(srv, thread)


def get(srv, path):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


def test_server_layers_and_elements(server):
    status, d = get(server, "/api/layer?" + urlencode(dict(input="2x3x3", out_channels=2, stride=2, padding=1,
                                                           output_padding=1, integers=1, transposed=1)))
    assert status == 200 and d["config"]["transposed"] and d["config"]["output_padding"] == [1, 1]
    local = layer_data(**CONFIG)
    assert d["arrays"] == json.loads(json.dumps(local["arrays"]))
    status, e = get(server, "/api/element?" + urlencode(dict(key=d["key"], kind="output", at="1,3,2")))
    assert status == 200 and e == json.loads(json.dumps(element(local, "output", (1, 3, 2))))
    for query, words in [(dict(stride=2, output_padding=2, transposed=1), "output_padding must be smaller"),
                         (dict(stride=2, output_padding=1), "pass transposed=True"),
                         (dict(transposed="maybe"), "transposed must be true or false"),
                         (dict(transposed=1, padding_mode="circular"), 'Only "zeros" padding mode')]:
        status, body = get(server, "/api/layer?" + urlencode(dict(input="3x3", **query)))
        assert status == 400 and words in body["error"], body
    for kind, at in (("weight", (1, 0, 2, 1)), ("input", (0, 2, 1)), ("bias", (1,))):
        status, e = get(server, "/api/element?" + urlencode(dict(key=d["key"], kind=kind, at=",".join(map(str, at)))))
        assert status == 200 and e == json.loads(json.dumps(element(local, kind, at)))
    status, body = get(server, "/api/element?" + urlencode(dict(key=d["key"], kind="weight", at="0,0,3,0")))
    assert status == 400 and "at must be an index" in body["error"]


# --------------------------------------------------------------------------- the page in a browser


@pytest.fixture(scope="module")
def browser():
    with launch_browser() as b:
        yield b


def click_output(pg, o, r, t):
    cv = pg.locator(f"canvas[data-kind=output][data-index='{o}']")
    box = cv.bounding_box()
    h, w = pg.evaluate(f"() => {{ const c = document.querySelector(\"canvas[data-kind=output][data-index='{o}']\"); "
                       "return [c.height, c.width]; }")
    pg.mouse.click(box["x"] + (t + 0.5) * box["width"] / w, box["y"] + (r + 0.5) * box["height"] / h)
    pg.wait_for_function(f"() => (document.body.dataset.element || '').startsWith('output:{o},{r},{t}:')")


def test_static_page_computes_every_element_as_python_does(browser, tmp_path):
    config = dict(CONFIG, input_shape=(2, 3, 4), groups=2, out_channels=4, dilation=(1, 2), seed=3)
    path = write_page(tmp_path / "t.html", **config)
    d = layer_data(**config)
    context, pg = open_page(browser, f"file://{path}")
    try:
        O, Ho, Wo = d["shape"]["output_hw"] and (4, *d["shape"]["output_hw"])
        got = pg.evaluate("""([O, Ho, Wo]) => { const all = [];
            for (let o = 0; o < O; o++) for (let r = 0; r < Ho; r++) for (let t = 0; t < Wo; t++)
              all.push(window.convscopeElement('output', [o, r, t]));
            return all; }""", [O, Ho, Wo])
        want = [json.loads(json.dumps(element(d, "output", (o, r, t))))
                for o in range(O) for r in range(Ho) for t in range(Wo)]
        assert got == want                      # the browser's float64 arithmetic is Python's, term by term
        click_output(pg, 1, 2, 3)
        e = element(d, "output", (1, 2, 3))
        _, _, _, out = arrays(d)
        assert float(pg.locator("#numbers-value").get_attribute("data-value")) == float(out[1, 2, 3])
        assert float(pg.locator("#numbers-sum").get_attribute("data-value")) == e["s"]
        assert pg.locator("table.terms tr.term").count() == e["n"]
        cells = pg.locator("[data-grid=gather] .cell")
        L = d["gather"]["length"]
        assert cells.count() == L[0] * L[1] * len(e["channels"])          # a small z̃ is drawn whole
        whats = [int(v) for v in cells.evaluate_all("cs => cs.map((c) => c.dataset.what)")][:L[0] * L[1]]
        border = d["gather"]["border"]
        for k, what in enumerate(whats):
            zr, zc = divmod(k, L[1])
            inside = [0 <= z - b <= (n - 1) * s for z, b, n, s in zip((zr, zc), border, (3, 4), (2, 2))]
            real = all(inside) and (zr - border[0]) % 2 == 0 and (zc - border[1]) % 2 == 0
            assert what == (0 if real else 1 if all(inside) else 2), (zr, zc)
        assert pg.errors == []
    finally:
        context.close()


def test_live_page_switches_to_the_transposed_layer(browser, server):
    context, pg = open_page(browser, server.url)
    try:
        pg.uncheck("#transposed")
        pg.wait_for_function("() => document.body.dataset.busy === '0' && !window.convscopeData().config.transposed")
        assert pg.locator("#view-grad-label").is_visible()
        pg.check("#transposed")
        pg.fill("#op-h", "1")
        pg.fill("#op-w", "0")
        pg.wait_for_function("() => document.body.dataset.busy === '0' && window.convscopeData().config.transposed "
                             "&& window.convscopeData().config.output_padding.join() === '1,0'")
        d = pg.evaluate("window.convscopeData()")
        x, w, b, out = arrays(d)
        np.testing.assert_array_equal(out, torch_conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=(1, 0)))
        click_output(pg, 0, 4, 1)
        assert float(pg.locator("#numbers-value").get_attribute("data-value")) == float(out[0, 4, 1])
        assert pg.errors == []
    finally:
        context.close()


def test_the_notebook_widget_of_a_transposed_layer():
    from convscope.explore import widget
    from oracle import torch_layer_output, torch_transpose_layer

    x = np.random.default_rng(1).standard_normal((2, 3, 3)).astype(np.float32)
    module = torch_transpose_layer(2, 2, 3, 3, stride=2, padding=1, output_padding=1)
    page = widget(module, x)
    _, w, b, out = arrays(page.data)
    np.testing.assert_allclose(out, torch_layer_output(module, x), rtol=1e-5, atol=1e-6)
    assert page.data["config"]["layer"] == repr(module) and "<iframe" in page._repr_html_()
    layer = convscope.ConvTranspose2d(2, 2, 2, stride=2, seed=0)
    np.testing.assert_array_equal(arrays(widget(layer, x).data)[3], layer(x))
    weight = np.ones((2, 1, 3, 3), np.float32)
    d = widget(weight, x, stride=2, output_padding=1, transposed=True).data
    np.testing.assert_array_equal(arrays(d)[3], torch_conv_transpose2d(x, weight, stride=2, output_padding=1))
    with pytest.raises(TypeError, match="from the layer"):
        widget(layer, x, stride=2)
    with pytest.raises(ValueError, match="pass transposed=True"):
        widget(weight, x, output_padding=1)


@pytest.mark.parametrize("config", [
    dict(CONFIG, grad_output="random"),
    dict(input_shape=(4, 3, 2), out_channels=2, groups=2, kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1),
         padding=(1, 0), seed=5, grad_output="random", transposed=True),
])
def test_gradient_elements_are_torch_numbers(config):
    from oracle import torch_conv_transpose_nd

    d = layer_data(**config)
    x, w, b, out = arrays(d)
    gy = decode(d["arrays"]["grad_output"])
    p = params(d["config"])
    _, (gx, gw, gb) = torch_conv_transpose_nd(x[None], w, b, gy[None], **p)
    landings = torch_landings(x.shape[1:], w.shape[2:], **{k: v for k, v in p.items() if k != "groups"})
    Og, Cg = w.shape[1], x.shape[0] // d["config"]["groups"]
    hits = {}                       # (i, j, u, v) → (r, t), from torch
    for (r, t), found in landings.items():
        for key in found:
            hits[key] = (r, t)
    for c, i, j in np.ndindex(*x.shape):
        e = element(d, "input", (c, i, j))
        assert e["v"] == pytest.approx(float(gx[0, c, i, j]), abs=1e-4 * max(1, np.abs(gx).max()))
        g = c // Cg
        want = {(g * Og + oo, *hits[(i, j, u, v)], u, v) for oo in range(Og) for u, v in np.ndindex(*w.shape[2:])
                if (i, j, u, v) in hits}
        assert {tuple(t[:5]) for t in e["t"]} == want
        assert e["s"] == pytest.approx(e["v"], abs=1e-4 * max(1, np.abs(gx).max()))
    for c, oo, u, v in np.ndindex(*w.shape):
        e = element(d, "weight", (c, oo, u, v))
        assert e["v"] == pytest.approx(float(gw[c, oo, u, v]), abs=1e-4 * max(1, np.abs(gw).max()))
        assert {tuple(t[:4]) for t in e["t"]} == {(i, j, *hits[(i, j, u, v)]) for i, j in np.ndindex(*x.shape[1:])
                                                  if (i, j, u, v) in hits}
        assert e["s"] == pytest.approx(e["v"], abs=1e-4 * max(1, np.abs(gw).max()))
    for o in range(out.shape[0]):
        e = element(d, "bias", (o,))
        assert e["v"] == pytest.approx(float(gb[o]), abs=1e-4) and e["s"] == pytest.approx(e["v"], abs=1e-4)


def test_static_page_gradients_are_python_s(browser, tmp_path):
    config = dict(CONFIG, grad_output="random", seed=1)
    path = write_page(tmp_path / "g.html", **config)
    d = layer_data(**config)
    context, pg = open_page(browser, f"file://{path}")
    try:
        x, w, b, out = arrays(d)
        queries = ([("input", list(ix)) for ix in np.ndindex(*x.shape)]
                   + [("weight", list(ix)) for ix in np.ndindex(*w.shape)] + [("bias", [o]) for o in range(len(b))])
        queries = [(k, [int(v) for v in at]) for k, at in queries]
        got = pg.evaluate("(qs) => qs.map(([k, at]) => window.convscopeElement(k, at))", queries)
        assert got == [json.loads(json.dumps(element(d, k, tuple(at)))) for k, at in queries]
        pg.check("#view-grad")
        cv = pg.locator("canvas[data-kind=input][data-index='1']")
        box = cv.bounding_box()
        pg.mouse.click(box["x"] + 2.5 * box["width"] / 3, box["y"] + 0.5 * box["height"] / 3)
        pg.wait_for_function("() => (document.body.dataset.element || '').startsWith('input:1,0,2:')")
        gx = decode(d["arrays"]["grad_input"])
        assert float(pg.locator("#numbers-value").get_attribute("data-value")) == float(gx[1, 0, 2])
        assert pg.locator("table.terms tr.term").count() == element(d, "input", (1, 0, 2))["n"]
        assert pg.errors == []
    finally:
        context.close()
