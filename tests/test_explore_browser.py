"""The explore page in a real browser: Debian's headless Chromium driven by Playwright.

`convscope explore --no-browser --port 0` runs as a subprocess, and static pages are opened from
disk; the tests read the image view's pixels and compare them with conv2d's and conv2d_backward's
numbers, click pixels and compare the number view with explain's and explain_grad's, check the
layout at 1280×720, at 900 px and in the notebook's iframe, and drive the page from the keyboard.
The browser comes from tests/browser.py (skipped without Chromium or Playwright, unless
CONVSCOPE_REQUIRE_BROWSER is set, as in CI).
"""
import io
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import convscope
from convscope import explain, explain_grad
from convscope.explore import element, layer_data, write_page
from convscope.explore.data import COLORMAP, decode, parse_kernel

from browser import launch_browser
from oracle import require_torch, torch_module, torch_randn

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
# the page has answered the latest change of its controls (a function: the page's CSP forbids evaluating strings)
SETTLED = ("() => document.body.dataset.busy === '0' && !!document.body.dataset.changes && "
           "document.body.dataset.answered === document.body.dataset.changes")
START = ["--input", "3x6x6", "--integers", "-p", "1", "--padding-mode", "reflect"]
PARAMS = dict(padding=1, padding_mode="reflect")


def _default_sigint():
    """In the server's process, Ctrl-C's default action: a shell that starts the tests in the background
    (``cmd &``) ignores SIGINT in its children, and Python then installs no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def browser():
    with launch_browser() as b:
        yield b


@pytest.fixture(scope="module")
def url():
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "convscope", "explore", "--no-browser", "--port", "0", *START],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not match:
        proc.kill()
        pytest.fail(f"convscope explore printed no URL: {line!r} {proc.stderr.read()!r}")
    yield match.group(0)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0 and "Traceback" not in err, err


def open_page(browser, address, width=1280, height=720):
    context = browser.new_context(viewport={"width": width, "height": height})
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    pg.goto(address)
    pg.wait_for_selector("canvas[data-kind=output]")
    return context, pg


@pytest.fixture
def page(browser, url):
    context, pg = open_page(browser, url)
    yield pg
    context.close()
    assert pg.errors == [], pg.errors


# --------------------------------------------------------------------------- reading the page


def shown_arrays(pg):
    """The arrays the page holds (its current data), decoded."""
    data = pg.evaluate("window.convscopeData()")
    return data, {k: None if v is None else decode(v) for k, v in data["arrays"].items()}


def hyper(cfg):
    padding = cfg["padding"] if isinstance(cfg["padding"], (str, int)) else tuple(cfg["padding"])
    return dict(stride=tuple(cfg["stride"]), padding=padding, dilation=tuple(cfg["dilation"]), groups=cfg["groups"],
                padding_mode=cfg["padding_mode"])


def colours(values):
    """The page's colour map applied to one channel (value / max|channel|), as the page computes it."""
    v = np.asarray(values, np.float64)
    m = np.abs(v).max()
    t = np.clip(v / m, -1, 1) if m > 0 else np.zeros_like(v)
    stops = np.array([s for s, _ in COLORMAP])
    rgb = np.array([c for _, c in COLORMAP], np.float64)
    return np.stack([np.interp(t, stops, rgb[:, q]) for q in range(3)], axis=-1)


def canvas_rgb(pg, kind, index):
    data = pg.evaluate("""([kind, index]) => {
        const cv = document.querySelector(`canvas[data-kind=${kind}][data-index='${index}']`);
        return [cv.height, cv.width, Array.from(cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data)];
    }""", [kind, index])
    h, w, px = data
    return np.array(px, np.float64).reshape(h, w, 4)[:, :, :3]


def assert_colours(pg, kind, index, values):
    got = canvas_rgb(pg, kind, index)
    assert got.shape[:2] == np.shape(values)
    assert np.abs(got - colours(values)).max() <= 1.0, f"{kind}[{index}]"


def mouse_of(pg):
    """The mouse and the page coordinates of the frame's origin (a notebook's iframe, or the page)."""
    if hasattr(pg, "mouse"):
        return pg.mouse, (0, 0)
    box = pg.frame_element().bounding_box()
    return pg.page.mouse, (box["x"], box["y"])


def click_pixel(pg, kind, index, r, c):
    before = pg.evaluate("document.body.dataset.element || ''")
    box = pg.evaluate("""([kind, index]) => {
        const cv = document.querySelector(`canvas[data-kind=${kind}][data-index='${index}']`);
        cv.scrollIntoView({block: 'nearest'});
        const b = cv.getBoundingClientRect();
        return [b.left + cv.clientLeft, b.top + cv.clientTop, cv.clientWidth / cv.width, cv.clientHeight / cv.height];
    }""", [kind, index])
    mouse, (x0, y0) = mouse_of(pg)
    mouse.click(x0 + box[0] + (c + 0.5) * box[2], y0 + box[1] + (r + 0.5) * box[3])
    wait_element(pg, before)


def wait_element(pg, before):
    pg.wait_for_function("(before) => (document.body.dataset.element || '') !== before", arg=before)


def value(pg, selector):
    return float(pg.get_attribute(selector, "data-value"))


def numbers_output(pg):
    """The number view of an output: its window cells and products per input channel."""
    return pg.evaluate("""() => [...document.querySelectorAll('#numbers details.channel')].map(d => ({
        c: +d.dataset.c,
        window: [...d.querySelectorAll('[data-grid=window] .cell[data-in="1"]')].map(e => [+e.dataset.r, +e.dataset.col, +e.dataset.value]),
        pads: [...d.querySelectorAll('[data-grid=window] .cell[data-pad="1"][data-in="1"]')].length,
        products: [...d.querySelectorAll('[data-grid=product] .cell')].map(e => +e.dataset.value)}))""")


def check_output(pg, o, i, j):
    """out[o, i, j]'s number view is explain's: value, Σ, bias, the window's cells, padding, products."""
    data, a = shown_arrays(pg)
    e = explain(a["weight"], a["x"], (o, i, j), bias=a["bias"], **hyper(data["config"]))
    assert pg.evaluate("document.body.dataset.element").startswith(f"output:{o},{i},{j}:")
    assert value(pg, "#numbers-value") == e.value and value(pg, "#numbers-sum") == pytest.approx(e.sum_of_products, abs=1e-9)
    if a["bias"] is not None:
        assert value(pg, "#numbers-bias") == e.bias
    taps = len(e.terms) // len(e.channels)
    shown = numbers_output(pg)
    assert [s["c"] for s in shown] == list(e.channels)
    for c, s in enumerate(shown):
        block = e.terms[c * taps:(c + 1) * taps]
        assert s["window"] == [[*t.padded_index, t.input_value] for t in block]
        assert s["pads"] == sum(t.is_padding for t in block)
        assert s["products"] == [t.product for t in block]
    return e


def change(pg, **controls):
    """Set controls (id → value) and wait for the page's answer."""
    for id_, v in controls.items():
        id_ = "#" + id_.replace("_", "-")
        if pg.get_attribute(id_, "type") == "checkbox":
            pg.set_checked(id_, bool(v))
        elif pg.evaluate(f"document.querySelector('{id_}').tagName") == "SELECT":
            pg.select_option(id_, str(v))
        else:
            pg.fill(id_, str(v))
    pg.wait_for_function(SETTLED)


def load_file(pg, path):
    before = pg.evaluate("document.body.dataset.changes || ''")
    pg.set_input_files("#file", str(path))
    pg.wait_for_function("(before) => (document.body.dataset.changes || '') !== before", arg=before)
    pg.wait_for_function(SETTLED)


# --------------------------------------------------------------------------- the image view and the numbers


def test_the_image_view_is_conv2ds_output_and_a_click_shows_explains_numbers(page):
    data, a = shown_arrays(page)
    params = hyper(data["config"])
    assert data["config"]["bias"] and params == hyper(layer_data(input_shape=(3, 6, 6), **PARAMS)["config"])
    out = convscope.conv2d(a["x"], a["weight"], a["bias"], **params)
    assert_colours(page, "output", "0", out[0])
    e = None
    for at in ((0, 0, 0), (0, 5, 3), (0, 2, 2)):
        click_pixel(page, "output", "0", *at[1:])
        e = check_output(page, *at)
    assert page.text_content("#numbers-value") == str(int(e.value))        # whole numbers are shown whole
    click_pixel(page, "output", "0", 0, 0)
    assert sum(s["pads"] for s in numbers_output(page)) == 15               # the corner: 5 of 9 taps per channel
    e = check_output(page, 0, 0, 0)
    copied = {tuple(t.input_index[-2:]) for t in e.terms[:9] if t.is_padding}     # reflect copies real pixels
    shown = page.eval_on_selector_all("#numbers details.channel[data-c='0'] .cell.hl-src",
                                      "els => els.map(e => [+e.dataset.r - 1, +e.dataset.col - 1])")
    assert copied and {tuple(v) for v in shown} == copied                   # padding 1: real = padded − 1
    assert "x[0, 0, 0]" in page.text_content("#numbers pre.arith")


def test_changing_parameters_and_many_channels(page):
    change(page, padding_mode="zeros", s_h=2, s_w=2, p_w=2, integers=False, bias=False)
    assert page.is_hidden("#error")
    assert page.text_content("#layer").startswith(repr(convscope.Conv2d(3, 1, 3, stride=2, padding=(1, 2), bias=False)))
    click_pixel(page, "output", "0", 0, 0)
    check_output(page, 0, 0, 0)
    assert re.fullmatch(r"-?\d+\.\d{4}", page.text_content("#numbers-value"))   # 4 decimals
    change(page, s_h=1, s_w=1, pad_kind="same", d_h=2, k_w=2, padding_mode="circular", in_c=4, out_channels=4,
           groups=2, bias=True)
    data, a = shown_arrays(page)
    out = convscope.conv2d(a["x"], a["weight"], a["bias"], **hyper(data["config"]))
    assert_colours(page, "output", "3", out[3])
    click_pixel(page, "output", "3", 0, 5)
    assert list(check_output(page, 3, 0, 5).channels) == [2, 3]


def test_the_gradient_view(page):
    change(page, in_c=2, out_channels=2, s_h=2, s_w=2, padding_mode="replicate", grad_output="random")
    page.check("#view-grad")
    page.wait_for_selector("canvas[data-kind=input]")
    data, a = shown_arrays(page)
    params = hyper(data["config"])
    x, w, gy = a["x"], a["weight"], a["grad_output"]
    assert len(np.unique(gy)) > 2                                    # the seeded random control
    grads = convscope.conv2d_backward(gy, x, w, **params)
    for c in range(2):
        assert_colours(page, "input", str(c), grads.input[c])
    assert_colours(page, "weight", "1,0", grads.weight[1, 0])
    for c, h, w_ in [(0, 0, 0), (1, 3, 4), (0, 5, 5)]:
        click_pixel(page, "input", str(c), h, w_)
        e = explain_grad(w, x, gy, "input", (c, h, w_), **params)
        assert value(page, "#numbers-value") == e.value == float(grads.input[c, h, w_])
        assert value(page, "#numbers-sum") == e.sum_of_products
        products = page.eval_on_selector_all("#numbers tr.term", "r => r.map(e => +e.dataset.product)")
        assert products == [t.product for t in e.terms]
    click_pixel(page, "weight", "1,1", 0, 2)
    e = explain_grad(w, x, gy, "weight", (1, 1, 0, 2), **params)
    assert value(page, "#numbers-value") == e.value and value(page, "#numbers-sum") == e.sum_of_products
    before = page.evaluate("document.body.dataset.element || ''")
    page.click("button[data-kind=bias][data-o='1']")
    wait_element(page, before)
    assert value(page, "#numbers-value") == explain_grad(w, x, gy, "bias", (1,), **params).value


def test_the_keyboard_reaches_and_moves_through_the_image(page):
    for _ in range(80):                       # Tab goes through every control, then to the images
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.kind === 'output'"):
            break
    else:
        pytest.fail("Tab never reached the output image")
    before = page.evaluate("document.body.dataset.element || ''")
    for key in ("ArrowRight", "ArrowRight", "ArrowDown", "Enter"):
        page.keyboard.press(key)
    page.wait_for_function("() => (document.body.dataset.element || '').startsWith('output:0,1,2:')")
    check_output(page, 0, 1, 2)
    assert before != page.evaluate("document.body.dataset.element")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    page.wait_for_function("() => (document.body.dataset.element || '').startsWith('output:0,1,1:')")


# --------------------------------------------------------------------------- kernels, files and bad input


def test_kernels_files_and_bad_input_get_the_librarys_message(page, tmp_path):
    from PIL import Image

    change(page, kernel_kind="sobel_x")
    data, a = shown_arrays(page)
    assert np.array_equal(a["weight"][0, 0], parse_kernel("sobel_x").astype(np.float32))
    with pytest.raises(ValueError) as info:
        parse_kernel("1 0 -1\n2 x -2\n1 0 -1")
    change(page, kernel_text="1 0 -1\n2 x -2\n1 0 -1")
    assert page.is_visible("#error") and page.text_content("#error") == str(info.value)
    change(page, kernel_text="1 2\n3 4")
    assert page.is_hidden("#error")
    assert shown_arrays(page)[1]["weight"][0, 0].tolist() == [[1, 2], [3, 4]]

    corrupt = tmp_path / "corrupt.png"
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(buffer, format="PNG")
    corrupt.write_bytes(buffer.getvalue()[:45])
    load_file(page, corrupt)
    assert "corrupt.png: cannot read the file as a PNG or JPEG image" in page.text_content("#error")
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((10, 1100), np.uint8)).save(big)
    load_file(page, big)
    assert "big.png: the image is 1100×10 pixels; convscope explore shows at most 1024×1024" in page.text_content("#error")
    photo = tmp_path / "photo.png"
    pixels = np.arange(7 * 9 * 3, dtype=np.uint8).reshape(7, 9, 3)
    Image.fromarray(pixels, "RGB").save(photo)
    load_file(page, photo)
    assert page.is_hidden("#error")
    data, a = shown_arrays(page)
    assert np.array_equal(a["x"], pixels.transpose(2, 0, 1).astype(np.float32) / 255)
    assert [page.input_value(f"#in-{k}") for k in "chw"] == ["3", "7", "9"] and page.is_disabled("#in-h")
    assert page.evaluate("document.body.innerText").count("photo.png") == 1     # the file's name, once
    assert page.is_checked("#rgb")                                            # an RGB picture is shown as one
    click_pixel(page, "output", "0", 6, 8)
    check_output(page, 0, 6, 8)
    npy = tmp_path / "x.npy"
    x = (np.arange(30, dtype=np.float64).reshape(1, 5, 6) - 12) / 4
    np.save(npy, x)
    load_file(page, npy)
    data, a = shown_arrays(page)
    assert np.array_equal(a["x"], x) and data["config"]["dtype"] == "float64"
    assert [page.input_value(f"#in-{k}") for k in "chw"] == ["1", "5", "6"]
    change(page, source="image:digits")
    assert shown_arrays(page)[0]["config"]["input_shape"] == [1, 8, 8]


def test_an_invalid_configuration_shows_the_librarys_message(page):
    with pytest.raises(ValueError) as info:
        convscope.Conv2d(3, 1, 3, groups=2)
    change(page, groups=2)
    assert page.is_visible("#error") and page.text_content("#error") == str(info.value)
    assert "stale" in page.get_attribute("#board", "class")
    change(page, in_h=2000)
    assert "input height H must be at most 1024 in convscope explore, got 2000" in page.text_content("#error")
    change(page, groups=1, in_h=6)
    assert page.is_hidden("#error") and "stale" not in page.get_attribute("#board", "class")


# --------------------------------------------------------------------------- static pages, layout, the notebook


STATIC = {
    "groups dilation reflect": dict(input_shape=(4, 7, 8), out_channels=4, groups=2, kernel_size=(3, 2),
                                    dilation=(2, 1), padding=2, padding_mode="reflect", grad_output="random"),
    "stride circular": dict(input_shape=(2, 9, 7), out_channels=2, stride=(2, 3), padding=(1, 2),
                            padding_mode="circular"),
    "float64 same": dict(x=np.linspace(-2, 3, 5 * 6).reshape(1, 5, 6), kernel="laplacian", padding="same",
                         bias=False),
}


def test_the_browsers_arithmetic_is_elements(browser, tmp_path):
    """In a static page the numbers are computed in the browser: they are element()'s (explain's)."""
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    pg = context.new_page()
    for name, config in STATIC.items():
        config = dict(config)
        x = config.pop("x", None)
        d = layer_data(x, **config)
        write_page(tmp_path / "p.html", x, **config)
        pg.goto((tmp_path / "p.html").as_uri())
        pg.wait_for_selector("canvas[data-kind=output]")
        a = {k: None if v is None else decode(v) for k, v in d["arrays"].items()}
        elements = [("output", at) for at in np.ndindex(a["output"].shape)]
        elements += [("input", at) for at in np.ndindex(a["x"].shape)]
        elements += [("weight", at) for at in np.ndindex(a["weight"].shape)]
        elements += [("bias", (o,)) for o in range(a["weight"].shape[0])]
        got = pg.evaluate("(items) => items.map(([k, at]) => window.convscopeElement(k, at))",
                          [[k, list(map(int, at))] for k, at in elements])
        for (kind, at), js in zip(elements, got):
            py = json.loads(json.dumps(element(d, kind, at)))
            assert js["v"] == py["v"] and js["n"] == py["n"], (name, kind, at)
            assert js["s"] == pytest.approx(py["s"], rel=1e-12, abs=1e-12), (name, kind, at)
            for field in ("taps", "x", "w", "p", "channels", "t", "ch", "bias"):
                if field in py and not (field == "t" and kind == "input" and not py["t"]):
                    assert js[field] == py[field], (name, kind, at, field)
            if "cs" in py:
                assert js["cs"] == pytest.approx(py["cs"], rel=1e-12, abs=1e-12)
    context.close()


def layout_ok(pg, kind="output", index=None):
    """No sideways scrolling; after a hover on the last output, its window on the input and the number
    view's window cells are inside the viewport."""
    assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "horizontal overflow"
    index = index or pg.eval_on_selector_all(f"canvas[data-kind={kind}]", "els => els[els.length - 1].dataset.index")
    before = pg.evaluate("document.body.dataset.element || ''")
    box = pg.evaluate("""(index) => {
        const cv = document.querySelector(`canvas[data-kind=output][data-index='${index}']`);
        cv.scrollIntoView({block: 'center'});
        const b = cv.getBoundingClientRect();
        return [b.left + b.width * 0.6, b.top + b.height * 0.6];
    }""", index)
    mouse, (x0, y0) = mouse_of(pg)
    mouse.move(x0 + box[0], y0 + box[1])
    wait_element(pg, before)
    inside = pg.evaluate("""() => {
        const ok = (e) => { const r = e.getBoundingClientRect();
            return r.width > 0 && r.left >= 0 && r.top >= 0 && r.right <= innerWidth && r.bottom <= innerHeight; };
        const wins = [...document.querySelectorAll('.box.window')].filter(e => e.style.display === 'block');
        const cells = [...document.querySelectorAll('#numbers [data-grid=window] .cell[data-in="1"]')]
            .filter(e => e.closest('details').open);
        return [wins.length > 0 && wins.every(ok), cells.length > 0 && cells.every(ok), ok(document.getElementById('numbers-value')),
                document.documentElement.scrollWidth <= innerWidth];
    }""")
    assert inside == [True, True, True, True], inside


@pytest.mark.parametrize("size", [(1280, 720), (900, 700), (1024, 768)])
def test_the_layout_at_real_sizes(browser, tmp_path, size):
    path = tmp_path / "digits.html"
    write_page(path, input_shape=(1, 28, 28), kernel_size=5, out_channels=8)
    assert path.stat().st_size < 5_000_000
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    pg = context.new_page()
    pg.goto(path.as_uri())
    pg.wait_for_selector("canvas[data-kind=output]")
    layout_ok(pg)
    write_page(path, input_shape=(3, 12, 12), out_channels=2)
    pg.goto(path.as_uri())
    pg.wait_for_selector("canvas[data-kind=output]")
    layout_ok(pg)
    context.close()


def test_the_notebook_widget_in_its_760_px_iframe(browser):
    require_torch()
    layer = torch_module("Conv2d", 1, 8, 5, seed=0)
    x = torch_randn(2, 1, 28, 28)
    shown = convscope.widget(layer, x, sample=1)
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    pg = context.new_page()
    requests = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.set_content("<!doctype html><meta charset='utf-8'><div style='width:760px'>" + shown._repr_html_() + "</div>")
    pg.frame_locator("iframe").locator("canvas[data-kind=output]").first.wait_for()
    inner = next(f for f in pg.frames if f is not pg.main_frame)
    assert inner.evaluate("innerWidth") <= 760
    layout_ok(inner)
    click_pixel(inner, "output", "5", 10, 3)
    e = explain(layer, x, (1, 5, 10, 3))
    assert value(inner, "#numbers-value") == pytest.approx(e.value, rel=1e-6)
    assert value(inner, "#numbers-value") == decode(shown.data["arrays"]["output"])[5, 10, 3]
    assert "x[1, 0, 10, 3]" in inner.text_content("#numbers pre.arith")     # the user's index, with the sample
    context.close()
    assert all(u.startswith(("about:", "data:")) for u in requests), requests


def test_the_camera_with_sobel_x_from_disk_and_its_screenshot(browser, tmp_path):
    pytest.importorskip("skimage")
    from PIL import Image

    out = tmp_path / "camera.html"
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-m", "convscope", "explore", "--image", "camera", "--preset", "sobel_x", "-p", "1",
                    "--no-bias", "--out", str(out)], check=True, env=env, capture_output=True, timeout=60)
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = context.new_page()
    requests = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto(out.as_uri())
    pg.wait_for_selector("canvas[data-kind=output]")
    assert "convscope explore --image camera --preset sobel_x --no-bias -p 1" in pg.text_content("#hint")
    data, a = shown_arrays(pg)
    assert_colours(pg, "output", "0", convscope.conv2d(a["x"], a["weight"], None, padding=1)[0])
    layout_ok(pg, index="0")
    click_pixel(pg, "output", "0", 300, 262)       # the image is drawn smaller than 1:1: a click hits ±1 pixel
    o, i, j = map(int, pg.evaluate("document.body.dataset.element").split(":")[1].split(","))
    assert o == 0 and abs(i - 300) <= 1 and abs(j - 262) <= 1
    check_output(pg, o, i, j)
    shot = tmp_path / "page.png"
    pg.screenshot(path=str(shot))
    context.close()
    assert all(u.startswith(("file:", "data:")) for u in requests), requests   # nothing from the network
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 720) and np.asarray(image).std() > 20
    if os.environ.get("CONVSCOPE_WRITE_DOCS"):       # refresh the README's screenshot
        image.quantize(colors=64).save(os.path.join(DOCS, "explore-camera-sobel.png"), optimize=True)
