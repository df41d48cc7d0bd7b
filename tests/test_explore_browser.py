"""The explore page in a real browser: Debian's headless Chromium driven by Playwright.

`convscope explore --no-browser --port 0` runs as a subprocess; the tests change parameters,
hover cells and check that the highlighted cells and the numbers shown are explain's and
explain_grad's.  The browser comes from tests/browser.py (skipped without Chromium or Playwright,
unless CONVSCOPE_REQUIRE_BROWSER is set, as in CI).
"""
import io
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import convscope
from convscope import explain, explain_grad

from browser import launch_browser

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
# the page has answered the latest change (a function: the page's CSP forbids evaluating strings)
SETTLED = "(before) => document.body.dataset.busy === '0' && (document.body.dataset.settled || '') !== before"
START = ["--input", "3x6x6", "--integers", "-p", "1", "--padding-mode", "reflect", "--bias"]


@pytest.fixture(scope="module")
def browser():
    with launch_browser() as b:
        yield b


@pytest.fixture(scope="module")
def url():
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "convscope", "explore", "--no-browser", "--port", "0", *START],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not match:
        proc.kill()
        pytest.fail(f"convscope explore printed no URL: {line!r} {proc.stderr.read()!r}")
    yield match.group(0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err, err


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(url)
    pg.wait_for_selector("[data-grid=output]")
    yield pg
    context.close()
    assert errors == [], errors


# --------------------------------------------------------------------------- reading the page


def cells(pg, selector, keys):
    return pg.eval_on_selector_all(
        selector, f"els => els.map(e => [{', '.join(f'+e.dataset.{k}' for k in keys)}])")


def marked(pg, grid, cls, keys):
    return {tuple(v) for v in cells(pg, f"[data-grid={grid}].{cls}", keys)}


def value(pg, selector):
    return float(pg.get_attribute(selector, "data-value"))


def arrays_shown(pg):
    """The input, weight and bias as the page shows them (cells' data-value), as float32 arrays."""
    real = cells(pg, "[data-grid=input]:not([data-pad])", ["c", "h", "w", "value"])
    C, H, W = (max(v[k] for v in real) + 1 for k in range(3))
    x = np.zeros((C, H, W), np.float32)
    for c, h, w, v in real:
        x[c, h, w] = v
    ws = cells(pg, "[data-grid=weight]", ["o", "c", "u", "v", "value"])
    w = np.zeros(tuple(max(v[k] for v in ws) + 1 for k in range(4)), np.float32)
    for o, c, u, v, val in ws:
        w[o, c, u, v] = val
    bs = cells(pg, "[data-grid=bias]", ["o", "value"])
    b = np.array([v for _, v in sorted(bs)], np.float32) if bs else None
    return x, w, b


def change(pg, **controls):
    """Set controls (id → value) and wait for the page's answer."""
    before = pg.evaluate("document.body.dataset.settled || ''")
    for id_, v in controls.items():
        id_ = "#" + id_.replace("_", "-")
        if pg.get_attribute(id_, "type") == "checkbox":
            pg.set_checked(id_, bool(v))
        elif pg.evaluate(f"document.querySelector('{id_}').tagName") == "SELECT":
            pg.select_option(id_, str(v))
        else:
            pg.fill(id_, str(v))
    pg.wait_for_function(SETTLED, arg=before)


def check_output(pg, o, i, j, **params):
    """Hover out[o, i, j]; its window, the pixels padding copied and the arithmetic are explain's."""
    pg.hover(f"[data-grid=output][data-o='{o}'][data-i='{i}'][data-j='{j}']")
    x, w, b = arrays_shown(pg)
    e = explain(w, x, (o, i, j), bias=b, **params)
    window = {(ch, *t.padded_index) for ch in e.channels for t in e.terms[:len(e.terms) // len(e.channels)]}
    assert marked(pg, "input", "hl", ["c", "r", "col"]) == window
    copied = {t.input_index for t in e.terms if t.is_padding and t.input_index is not None}
    assert marked(pg, "input", "hl-src", ["c", "h", "w"]) == copied
    assert value(pg, "#explain-value") == e.value
    assert value(pg, "#explain-sum") == e.sum_of_products
    if b is not None:
        assert value(pg, "#explain-bias") == e.bias
    shown = {(c, u, v): val for c, u, v, val in cells(pg, "#explain [data-grid=product]", ["c", "u", "v", "value"])}
    assert shown == {(e.channels[t.weight_index[0]], *t.tap): t.product for t in e.terms}
    shown = {(c, u, v): val for c, u, v, val in cells(pg, "#explain [data-grid=window]", ["c", "u", "v", "value"])}
    assert shown == {(e.channels[t.weight_index[0]], *t.tap): t.input_value for t in e.terms}
    return e


# --------------------------------------------------------------------------- the tests


def test_hover_shows_the_window_copied_pixels_and_explains_numbers(page):
    params = dict(padding=1, padding_mode="reflect")
    e = check_output(page, 0, 0, 0, **params)                       # the corner: 5 of 9 taps read padding
    assert sum(t.is_padding for t in e.terms) == 15
    assert page.text_content("#explain-value") == str(int(e.value))  # whole numbers are shown whole
    assert page.get_attribute("[data-grid=output][data-o='0'][data-i='0'][data-j='0']", "class").split()[-1] == "sel"
    check_output(page, 0, 5, 3, **params)
    check_output(page, 0, 2, 2, **params)                            # inside: no padding, nothing copied
    assert marked(page, "input", "hl-src", ["c", "h", "w"]) == set()
    page.click("[data-grid=output][data-o='0'][data-i='4'][data-j='5']")     # a click pins the cell
    pinned = float(page.get_attribute("#explain-value", "data-value"))
    page.hover("[data-grid=output][data-o='0'][data-i='1'][data-j='1']")
    assert float(page.get_attribute("#explain-value", "data-value")) == pinned
    check_output(page, 0, 4, 5, **params)
    page.click("[data-grid=output][data-o='0'][data-i='4'][data-j='5']")     # a second click unpins it
    check_output(page, 0, 1, 1, **params)


def test_changing_parameters(page):
    change(page, padding_mode="zeros", s_h=2, s_w=2, p_w=2, integers=False, bias=False)
    assert page.is_hidden("#error")
    params = dict(stride=2, padding=(1, 2), padding_mode="zeros")
    assert page.text_content("#layer").startswith(repr(convscope.Conv2d(3, 1, 3, stride=2, padding=(1, 2),
                                                                        bias=False)))
    e = check_output(page, 0, 0, 0, **params)
    assert re.fullmatch(r"-?\d+\.\d{4}", page.text_content("#explain-value"))   # 4 decimals
    assert float(page.text_content("#explain-value")) == pytest.approx(e.value, abs=5e-5)
    check_output(page, 0, 2, 3, **params)
    change(page, s_h=1, s_w=1, pad_kind="same", d_h=2, k_w=2, padding_mode="circular", in_c=4, out_channels=2,
           groups=2, bias=True)
    params = dict(padding="same", dilation=(2, 1), padding_mode="circular", groups=2)
    e = check_output(page, 1, 0, 4, **params)
    assert list(e.channels) == [2, 3]
    dimmed = page.eval_on_selector_all(".tile.dim [data-grid=input]", "els => [...new Set(els.map(e => +e.dataset.c))]")
    assert sorted(dimmed) == [0, 1]                                   # the other group's channels are dimmed


def test_gradient_view(page):
    change(page, in_c=2, out_channels=2, s_h=2, s_w=2, p_h=1, p_w=1, padding_mode="replicate",
           grad_output="random")
    params = dict(stride=2, padding=1, padding_mode="replicate")
    page.check("#view-grad")
    page.wait_for_selector("[data-grid=grad_input]")
    x, w, b = arrays_shown(page)
    gy = np.zeros((2, 3, 3), np.float32)
    for o, i, j, v in cells(page, "[data-grid=grad_output]", ["o", "i", "j", "value"]):
        gy[o, i, j] = v
    assert len(np.unique(gy)) > 2                                     # the seeded random control
    for c, h, w_ in [(0, 0, 0), (1, 3, 4), (0, 5, 5)]:
        page.hover(f"[data-grid=grad_input][data-c='{c}'][data-h='{h}'][data-w='{w_}']")
        e = explain_grad(w, x, gy, "input", (c, h, w_), **params)
        assert value(page, "#explain-value") == e.value == float(convscope.conv2d_backward(gy, x, w, **params).input[c, h, w_])
        assert value(page, "#explain-sum") == e.sum_of_products
        assert [float(v) for v in page.eval_on_selector_all("#explain tr.term", "r => r.map(e => e.dataset.product)")] \
            == [t.product for t in e.terms]
        assert marked(page, "grad_output", "hl", ["o", "i", "j"]) == {t.output_index for t in e.terms}
        assert marked(page, "weight", "hl", ["o", "c", "u", "v"]) == {t.weight_index for t in e.terms}
        assert marked(page, "input", "hl", ["c", "r", "col"]) == {(c, *t.padded_index) for t in e.terms}
        if (h, w_) == (0, 0):       # the corner pixel is also read through the padding cells that copy it
            assert any(t.is_padding for t in e.terms)
            assert cells(page, "[data-grid=input].hl[data-pad]", ["c"])
    page.hover("[data-grid=input][data-c='1'][data-h='2'][data-w='1']")   # the input grid works too
    assert value(page, "#explain-value") == explain_grad(w, x, gy, "input", (1, 2, 1), **params).value
    page.hover("[data-grid=weight][data-o='1'][data-c='1'][data-u='0'][data-v='2']")
    e = explain_grad(w, x, gy, "weight", (1, 1, 0, 2), **params)
    assert value(page, "#explain-value") == e.value
    assert marked(page, "input", "hl", ["c", "r", "col"]) == {(1, *t.padded_index) for t in e.terms}
    assert marked(page, "input", "hl-src", ["c", "h", "w"]) == {t.input_index for t in e.terms if t.is_padding}
    assert marked(page, "grad_output", "hl", ["o", "i", "j"]) == {t.output_index for t in e.terms}


def test_an_invalid_configuration_shows_the_librarys_message(page):
    with pytest.raises(ValueError) as info:
        convscope.Conv2d(3, 1, 3, groups=2)
    change(page, groups=2)
    assert page.is_visible("#error")
    assert page.text_content("#error") == str(info.value)
    assert "stale" in page.get_attribute("#board", "class")
    with pytest.raises(ValueError) as info:
        convscope.conv2d(np.zeros((3, 6, 6), np.float32), np.zeros((1, 3, 3, 3), np.float32), padding=7,
                         padding_mode="reflect")
    change(page, groups=1, p_h=7, p_w=7)
    assert page.text_content("#error") == str(info.value)
    change(page, p_h=1, p_w=1)                                        # fixed: the page works again
    assert page.is_hidden("#error") and "stale" not in page.get_attribute("#board", "class")
    check_output(page, 0, 1, 1, padding=1, padding_mode="reflect")


def test_a_loaded_npy_input(page, tmp_path):
    x = (np.arange(30, dtype=np.float64).reshape(1, 5, 6) - 12) / 4
    path = tmp_path / "x.npy"
    np.save(path, x)
    before = page.evaluate("document.body.dataset.settled || ''")
    page.set_input_files("#npy-file", str(path))
    page.wait_for_function(SETTLED, arg=before)
    assert page.is_hidden("#error") and page.text_content("#file-name") == "x.npy"
    assert page.is_disabled("#in-h")
    shown = cells(page, "[data-grid=input]:not([data-pad])", ["c", "h", "w", "value"])
    assert {(c, h, w_): v for c, h, w_, v in shown} == {idx: float(x[idx]) for idx in np.ndindex(x.shape)}
    e = check_output(page, 0, 4, 0, padding=1, padding_mode="reflect")
    x64, w, b = arrays_shown(page)
    assert e.value == explain(w.astype(np.float64), x, (0, 4, 0), bias=b.astype(np.float64), padding=1,
                              padding_mode="reflect").value                 # computed in the file's float64


def test_the_static_page_from_file_and_a_screenshot(browser, tmp_path):
    from PIL import Image

    out = tmp_path / "conv.html"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-m", "convscope", "explore", "--out", str(out), "--input", "2x5x5", "-s", "2",
                    "-p", "1", "--padding-mode", "circular", "--bias", "0.25"], check=True, env=env,
                   capture_output=True, timeout=60)
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    pg = context.new_page()
    requests = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto(out.as_uri())
    pg.wait_for_selector("[data-grid=output]")
    assert pg.is_visible("#hint") and "convscope explore --input 2x5x5" in pg.text_content("#hint")
    assert pg.is_disabled("#k-h")
    check_output(pg, 0, 1, 2, stride=2, padding=1, padding_mode="circular")
    check_output(pg, 0, 0, 0, stride=2, padding=1, padding_mode="circular")
    shot = tmp_path / "page.png"
    pg.screenshot(path=str(shot))
    context.close()
    assert all(u.startswith(("file:", "data:")) for u in requests), requests   # nothing from the network
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == (1100, 700)
    pixels = np.asarray(image)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50   # not blank


def test_the_notebook_widget_in_its_iframe(browser):
    layer = convscope.Conv2d(2, 2, 3, stride=2, padding=1, padding_mode="replicate")
    x = np.random.default_rng(5).standard_normal((2, 5, 5)).astype(np.float32)
    shown = convscope.widget(layer, x)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    requests = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.set_content("<!doctype html><meta charset='utf-8'><h1>notebook</h1>" + shown._repr_html_())
    frame = pg.frame_locator("iframe")
    frame.locator("[data-grid=output]").first.wait_for()
    inner = next(f for f in pg.frames if f is not pg.main_frame)
    for o, i, j in [(0, 0, 0), (1, 2, 1)]:
        inner.hover(f"[data-grid=output][data-o='{o}'][data-i='{i}'][data-j='{j}']")
        e = explain(layer, x, (o, i, j))
        assert value(inner, "#explain-value") == e.value
        copied = {t.input_index for t in e.terms if t.is_padding and t.input_index is not None}
        assert marked(inner, "input", "hl-src", ["c", "h", "w"]) == copied
    assert "Your layer" in inner.text_content("#hint")
    context.close()
    assert all(u.startswith(("about:", "data:")) for u in requests), requests
