"""The explanation's HTML in a real browser (headless Chromium driven by Playwright): hovering a tap
highlights that tap in every table, and the pixel its padding copies.

Skipped when Playwright or Chromium is missing, unless ``CONVSCOPE_REQUIRE_BROWSER`` is set (CI sets it).
"""
import numpy as np
import pytest

from convscope import explain

from browser import launch_browser

HIGHLIGHT = "rgb(255, 159, 67)"  # the hover colour of render._link_style
SOURCE = "rgb(155, 231, 167)"


@pytest.fixture(scope="module")
def page():
    with launch_browser() as browser:
        p = browser.new_page(viewport={"width": 1200, "height": 900})
        yield p
        p.close()


def _backgrounds(page, selector):
    return page.eval_on_selector_all(selector, "els => els.map(e => getComputedStyle(e).backgroundColor)")


@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_hovering_a_weight_highlights_its_tap_everywhere(page, mode):
    x = np.arange(2 * 5 * 6, dtype=np.float64).reshape(1, 2, 5, 6)
    w = np.random.default_rng(0).standard_normal((1, 2, 3, 3))
    e = explain(w, x, (0, 0, 0, 1), padding=1, dilation=(1, 2), padding_mode=mode)
    page.set_content("<!doctype html><meta charset='utf-8'>" + e._repr_html_())
    for t in e.terms:
        c, (u, v) = t.weight_index[0], t.tap
        key = f"cs-t{c}-{u}-{v}"
        kernels = page.locator(f"table:has(caption:text-is('kernel w[0, {c}]')) td")
        kernels.nth(u * 3 + v).hover()
        assert _backgrounds(page, f"td.{key}") == [HIGHLIGHT] * 4  # padded cell, window, weight, product
        others = page.eval_on_selector_all(
            f"td:not(.{key}):not(.s-{key})", "els => els.filter(e => getComputedStyle(e).backgroundColor"
            f" === '{HIGHLIGHT}').length")
        assert others == 0
        sources = _backgrounds(page, f"td.s-{key}")
        assert sources == ([SOURCE] if t.is_padding and t.input_index is not None else [])
        padded = page.locator(f"table:has(caption:text-matches('padded input x̃, channel {c}')) tr").nth(
            t.padded_index[0]).locator("td").nth(t.padded_index[1])
        assert float(padded.inner_text()) == pytest.approx(t.input_value, abs=5e-5)


def test_screenshot_is_not_blank(page, tmp_path):
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    e = explain(np.ones((1, 1, 3, 3)), x, (0, 0, 0, 0), padding=1, padding_mode="replicate")
    page.set_content("<!doctype html><meta charset='utf-8'>" + e._repr_html_())
    page.locator("td.cs-t0-0-0").first.hover()
    path = tmp_path / "explain.png"
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
