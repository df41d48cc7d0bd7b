"""animate: frame counts, the highlighted cells read back from the pixels, the numbers drawn, the files
written, the errors, and ``convscope animate``.

Pixel checks sample a small patch inside each cell (in a corner, clear of the text and the grid lines),
at the boxes :meth:`Animation.cell_box` gives, and compare its colour with the theme's colour for the
cell's role.  Which cells must carry which colour is derived from the frame's explanation (the padded
cells its terms read, the pixels padding cells copy), or from an independent call of ``explain`` /
``explain_grad`` for the same element.
"""
from __future__ import annotations

import builtins
import io
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

import convscope  # noqa: E402
from convscope import cli, conv2d, explain, explain_grad  # noqa: E402
from convscope.animate import MAX_FRAMES, Animation, animate  # noqa: E402
from convscope.animate.draw import THEME, rgb  # noqa: E402
from convscope.explain.render import channel_terms, idx, num  # noqa: E402
from convscope.tour import SEED000_B, SEED000_W, SEED000_X  # noqa: E402
from oracle import require_torch, to_numpy, torch_forward, torch_module, torch_randn  # noqa: E402

COLOURS = {name: np.array(rgb(THEME[name])) for name in
           ("normal", "padding", "window", "window_padding", "source", "current", "pending")}


def seed_case():
    """Seed 000's 5×5 input and 3×3 kernel and bias, as the tour holds them."""
    x = np.array(SEED000_X, dtype=np.float32)[None]
    w = np.array(SEED000_W, dtype=np.float32)[None, None]
    b = np.array([SEED000_B], dtype=np.float32)
    return x, w, b


def fill(anim: Animation, frame: np.ndarray, panel: str, r: int, c: int, slot: int = 0) -> np.ndarray:
    """The colour of a cell: the median of a 3×3 patch in its top-left corner, clear of text and lines."""
    x0, y0, x1, y1 = anim.cell_box(panel, r, c, slot)
    patch = frame[y0 + 4:y0 + 7, x0 + 3:x0 + 6].reshape(-1, 3)
    return np.median(patch, axis=0)


def role(colour: np.ndarray) -> str:
    """The theme colour nearest to ``colour`` (which must be within 8 of it in every channel)."""
    name = min(COLOURS, key=lambda n: np.abs(COLOURS[n] - colour).max())
    assert np.abs(COLOURS[name] - colour).max() <= 8, (colour, name)
    return name


def roles(anim: Animation, k: int, panel: str, slot: int = 0) -> dict:
    box, frame = anim.panels[(panel, slot)], anim.frames[k]
    return {(r, c): role(fill(anim, frame, panel, r, c, slot)) for r in range(box.rows) for c in range(box.cols)}


def highlighted(rs: dict) -> set:
    return {cell for cell, name in rs.items() if name in ("window", "window_padding")}


# --------------------------------------------------------------------------- frames and files


def test_seed_gif_has_one_frame_per_output_element(tmp_path):
    x, w, b = seed_case()
    anim = animate(w, x, b, stride=2, padding=1)
    out = conv2d(x, w, b, stride=2, padding=1)
    assert len(anim) == out[0].size == 9
    assert [info.at for info in anim.info] == [(0, i, j) for i in range(out.shape[1]) for j in range(out.shape[2])]
    width, height = anim.size
    assert width <= 900 and anim.frames[0].shape == (height, width, 3) and anim.frames[0].dtype == np.uint8
    path = anim.save(tmp_path / "conv.gif")
    assert path.stat().st_size < 300_000
    with Image.open(path) as gif:
        assert gif.n_frames == len(anim) and gif.size == anim.size
        gif.seek(4)
        assert np.abs(np.asarray(gif.convert("RGB"), dtype=int) - anim.frames[4]).max() <= 2
    assert anim.gif() == path.read_bytes()


CASES = [
    # (input shape, weight shape, parameters)
    ((1, 4, 5), (1, 1, 2, 2), dict(stride=(2, 1))),
    ((1, 5, 5), (1, 1, 2, 2), dict(dilation=2, padding="same")),
    ((2, 1, 4, 4), (2, 1, 2, 2), dict(padding=1, padding_mode="reflect", stride=2)),
    ((4, 3, 3), (2, 2, 2, 2), dict(groups=2, padding=(1, 0), padding_mode="replicate")),
    ((1, 3, 3), (1, 1, 2, 2), dict(padding=1, padding_mode="circular", stride=3)),
]


def _frame_count_grid():
    """Every case with every gradient; by default each case once, the gradients in turn."""
    grads = [None, "input", "weight"]
    return [pytest.param(xs, ws, params, grad, marks=() if gi == ci % 3 else pytest.mark.slow,
                         id=f"{grad}-{ci}")
            for ci, (xs, ws, params) in enumerate(CASES) for gi, grad in enumerate(grads)]


@pytest.mark.parametrize("xs, ws, params, grad", _frame_count_grid())
def test_frame_count_and_gif(tmp_path, xs, ws, params, grad):
    rng = np.random.default_rng(len(xs) + sum(ws))
    x = rng.integers(-4, 5, size=xs).astype(np.float64)
    w = rng.integers(-2, 3, size=ws).astype(np.float64)
    anim = animate(w, x, grad=grad, **params)
    out = conv2d(x, w, **params)
    sample = lambda a: a if a.ndim == 3 else a[0]  # noqa: E731  (frames show sample 0)
    expected = {None: sample(out).size, "input": sample(x).size, "weight": w.size}[grad]
    assert len(anim) == len(anim.info) == expected
    assert anim.kind == {None: "output", "input": "input", "weight": "weight"}[grad]
    for info in anim.info[:3] + anim.info[-2:]:  # each frame's number is the library's
        e = (explain(w, x, info.at, **params) if grad is None else
             explain_grad(w, x, None, grad, info.at, **params))
        assert info.value == e.value and info.value_text == num(e.value, 0)
        assert info.lines[-1].endswith(f"= {info.value_text}")
        assert info.title.startswith(f"{'out' if grad is None else '∂L/∂' + ('x' if grad == 'input' else 'w')}"
                                     f"[{idx(info.at)}] = {info.value_text}")
    path = anim.save(tmp_path / "a.gif")
    with Image.open(path) as gif:
        assert (gif.n_frames, gif.size) == (expected, anim.size)


def test_restricting_frames_and_the_frame_bound():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 3, 3))
    w = rng.standard_normal((4, 3, 2, 2))
    with pytest.raises(ValueError, match=r"one frame per output element: 4 output channel\(s\) × 2 × 2 = 16 frames, "
                                         r"more than max_frames=10; pass out_channel"):
        animate(w, x, max_frames=10)
    anim = animate(w, x, out_channel=-1, sample=1, max_frames=4)
    assert len(anim) == 4 and {info.at[:2] for info in anim.info} == {(1, 3)}
    with pytest.raises(ValueError, match=r"one frame per input pixel: 3 channel\(s\) × 3 × 3 = 27 frames, "
                                         r"more than max_frames=20; pass in_channel"):
        animate(w, x, grad="input", max_frames=20)
    anim = animate(w, x, grad="input", in_channel=2, sample=1, max_frames=9)
    assert [info.at for info in anim.info] == [(1, 2, h, v) for h in range(3) for v in range(3)]
    anim = animate(w, x, grad="weight", out_channel=0, in_channel=1)
    assert [info.at for info in anim.info] == [(0, 1, u, v) for u in range(2) for v in range(2)]
    assert MAX_FRAMES == 400


# --------------------------------------------------------------------------- pixels


def test_window_taps_padding_and_output_cells_carry_their_colours():
    x, w, b = seed_case()
    anim = animate(w, x, b, stride=2, padding=1)
    for k in (0, 4, 8):
        e = anim.info[k].explanation
        rs = roles(anim, k, "input")
        taps = {t.padded_index: t for t in e.terms}
        for cell, name in rs.items():
            if cell in taps:
                assert name == ("window_padding" if taps[cell].is_padding else "window"), (k, cell)
            else:  # outside the window: padding cells grey, the input's own cells plain
                assert name == ("padding" if anim_pad(anim)[cell] else "normal"), (k, cell)
        out = roles(anim, k, "output")
        i, j = e.at[-2:]
        assert out[(i, j)] == "current"
        done = {tuple(info.at[-2:]) for info in anim.info[:k]}
        assert {c for c, n in out.items() if n == "normal"} == done
        assert {c for c, n in out.items() if n == "pending"} == set(out) - done - {(i, j)}
        assert set(roles(anim, k, "kernel").values()) == {"normal"}


def anim_pad(anim: Animation) -> np.ndarray:
    """Padding cells of the padded-input panel, from the spec (top/left counts) rather than the drawing."""
    e = anim.info[0].explanation
    (pt, pb), (pl, pr) = e.spec.padding
    mask = np.ones((e.shape.H + pt + pb, e.shape.W + pl + pr), dtype=bool)
    mask[pt:pt + e.shape.H, pl:pl + e.shape.W] = False
    return mask


def test_stride_moves_the_window_by_the_stride():
    x, w, b = seed_case()
    anim = animate(w, x, b, stride=2, padding=1)
    first, second, below = (highlighted(roles(anim, k, "input")) for k in (0, 1, 3))
    assert first == {tuple(t.padded_index) for t in anim.info[0].explanation.terms}
    assert second == {(r, c + 2) for r, c in first}
    assert below == {(r + 2, c) for r, c in first}


def test_dilation_highlights_only_the_taps():
    x = np.arange(36, dtype=np.float64).reshape(1, 6, 6)
    anim = animate(np.ones((1, 1, 2, 2)), x, dilation=(2, 3), stride=2)
    rs = roles(anim, 0, "input")
    taps = {(0, 0), (0, 3), (2, 0), (2, 3)}
    assert taps == {tuple(t.padded_index) for t in anim.info[0].explanation.terms}
    assert highlighted(rs) == taps
    gaps = {(r, c) for r in range(3) for c in range(4)} - taps  # inside the window's extent, not read
    assert all(rs[g] == "normal" for g in gaps)
    assert highlighted(roles(anim, 1, "input")) == {(r, c + 2) for r, c in taps}


@pytest.mark.parametrize("shape, sample", [((1, 4, 4), 0), ((2, 1, 4, 4), 1)])
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_copies_mark_their_source_pixel(mode, shape, sample):
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    # replicate copies the nearest edge pixel: with padding 1 it is always in the 2×2 window itself
    anim = animate(np.ones((1, 1, 2, 2)), x, padding=2 if mode == "replicate" else 1, padding_mode=mode, stride=3,
                   sample=sample)
    pad = anim_pad(anim)
    (pt, _), (pl, _) = anim.info[0].explanation.spec.padding
    seen = set()
    for k in range(len(anim)):
        e = anim.info[k].explanation
        rs = roles(anim, k, "input")
        taps = {tuple(t.padded_index) for t in e.terms}
        sources = {(t.input_index[-2] + pt, t.input_index[-1] + pl) for t in e.terms if t.is_padding} - taps
        seen |= sources
        for t in e.terms:  # the drawn source cell holds the pixel x[input_index], of this frame's sample
            if t.is_padding:
                r, c = t.input_index[-2] + pt, t.input_index[-1] + pl
                assert len(t.input_index) == x.ndim and (x.ndim == 3 or t.input_index[0] == sample)
                assert anim.info[k].cells[("input", 0)][r][c] == num(x[t.input_index], 0)
        for cell, name in rs.items():
            if cell in taps:
                assert name == ("window_padding" if pad[cell] else "window")
            elif cell in sources:
                assert name == "source"
            else:
                assert name == ("padding" if pad[cell] else "normal")
        # the numbers in the padded grid are explain's padded input (np.pad with the mode), whole numbers here
        assert anim.info[k].cells[("input", 0)] == [[num(v, 0) for v in row] for row in e.padded_input[0]]
    assert seen, "some window reads a padding cell whose source pixel is outside the window"


def test_grad_input_highlights_the_outputs_and_taps_that_read_the_pixel():
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 4, size=(2, 5, 5)).astype(np.float64)
    w = rng.integers(-2, 3, size=(2, 2, 3, 3)).astype(np.float64)
    g = rng.integers(-2, 3, size=(2, 3, 3)).astype(np.float64)
    anim = animate(w, x, grad="input", grad_output=g, stride=2, padding=1, padding_mode="reflect", in_channel=1)
    assert len(anim) == 25
    for k in (0, 6, 24):
        info = anim.info[k]
        e = explain_grad(w, x, g, "input", info.at, stride=2, padding=1, padding_mode="reflect")
        assert info.value == e.value and info.at[0] == 1
        assert highlighted(roles(anim, k, "input")) == {tuple(t.padded_index) for t in e.terms}
        for slot, o in enumerate(e.channels):
            mine = [t for t in e.terms if t.output_index[0] == o]
            assert highlighted(roles(anim, k, "grad_output", slot)) == {tuple(t.output_index[1:]) for t in mine}
            assert highlighted(roles(anim, k, "kernel", slot)) == {tuple(t.tap) for t in mine}
            assert info.side[slot] == f"Σ = {num(sum(t.product for t in mine), 0)}"
        h, w_ = info.at[1:]
        assert roles(anim, k, "grad_input")[(h, w_)] == "current"
        pieces = [f"{t.grad_output_value:.0f}×" for t in e.terms]
        assert all(p.lstrip("-") in "".join(info.lines).replace("(", "").replace(")", "") for p in pieces)


def test_grad_input_of_a_pixel_no_window_reads():
    x = np.arange(25, dtype=np.float64).reshape(1, 5, 5)
    anim = animate(np.ones((1, 1, 2, 2)), x, grad="input", stride=2)
    k = [info.at for info in anim.info].index((0, 4, 4))
    info = anim.info[k]
    assert info.value == 0 and info.explanation.terms == []
    assert "No tap reads this pixel" in " ".join(info.lines) and "the floor" in " ".join(info.lines)
    assert highlighted(roles(anim, k, "input")) == set()
    assert highlighted(roles(anim, k, "grad_output")) == set()


def test_grad_weight_highlights_what_the_tap_reads_in_every_sample():
    rng = np.random.default_rng(6)
    x = rng.integers(-3, 4, size=(2, 1, 4, 4)).astype(np.float64)
    w = rng.integers(-2, 3, size=(1, 1, 2, 2)).astype(np.float64)
    g = rng.integers(-2, 3, size=(2, 1, 4, 4)).astype(np.float64)
    anim = animate(w, x, grad="weight", grad_output=g, padding=1, dilation=2)
    assert len(anim) == 4
    for k, info in enumerate(anim.info):
        e = explain_grad(w, x, g, "weight", info.at, padding=1, dilation=2)
        assert info.value == e.value
        for n in range(2):
            mine = [t for t in e.terms if t.output_index[0] == n]
            assert highlighted(roles(anim, k, "input", n)) == {tuple(t.padded_index) for t in mine}
            assert highlighted(roles(anim, k, "grad_output", n)) == {tuple(t.output_index[2:]) for t in mine}
            assert info.side[n] == f"Σ = {num(sum(t.product for t in mine), 0)}"
        assert roles(anim, k, "grad_weight")[info.at[2:]] == "current"


# --------------------------------------------------------------------------- numbers


def test_multichannel_frames_show_each_channel_sum_and_the_total():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 3, 4, 4)).round(2).astype(np.float32)
    w = rng.standard_normal((2, 3, 2, 2)).round(2).astype(np.float32)
    b = np.array([0.5, -0.25], dtype=np.float32)
    anim = animate(w, x, b, stride=2, out_channel=1)
    for info in anim.info:
        e = explain(w, x, info.at, bias=b, stride=2)
        assert info.value_text == num(e.value, 4) and info.title == f"out[{idx(e.at)}] = {num(e.value, 4)}"
        sums = [sum(t.product for t in channel_terms(e, c)) for c in range(3)]
        assert [info.side[c] for c in range(3)] == [f"Σ = {num(s, 4)}" for s in sums]
        text = "\n".join(info.lines)
        for c in range(3):
            assert f"channel {c}: " in text and f" = {num(sums[c], 4)}" in text
        assert info.lines[-1] == (f"out[{idx(e.at)}] = Σ + bias[1] = {num(e.sum_of_products, 4)} + "
                                  f"{num(e.bias, 4)} = {num(e.value, 4)}")
        assert info.captions[("kernel", 2)] == "w[1, 2] (kernel)"


def test_single_channel_lines_list_every_product():
    x, w, b = seed_case()
    anim = animate(w, x, b, stride=2, padding=1)
    e = anim.info[4].explanation
    text = " ".join(anim.info[4].lines)
    for t in e.terms:
        a = "0" if t.input_index is None else num(t.input_value, 4)
        piece = f"{a if not a.startswith('-') else f'({a})'}×"
        assert piece in text
    assert f"= {num(e.sum_of_products, 4)}" in text
    assert anim.info[4].lines[-1] == (f"out[0, 1, 1] = Σ + bias[0] = {num(e.sum_of_products, 4)} + "
                                      f"{num(e.bias, 4)} = {num(e.value, 4)}")


def test_torch_layer_and_tensors_and_the_callers_arrays_unchanged():
    require_torch()
    layer = torch_module("Conv2d", 2, 2, 3, padding=1, padding_mode="reflect", stride=2, seed=0)
    x = torch_randn(1, 2, 4, 4)
    before, weight_before = to_numpy(x), to_numpy(layer.weight)
    anim = animate(layer, x, out_channel=1)
    assert len(anim) == 4
    y = torch_forward(layer, x)
    for info in anim.info:
        assert info.value == explain(layer, x, info.at).value
        assert info.value == pytest.approx(float(y[info.at]), abs=1e-5)
    assert np.array_equal(to_numpy(x), before) and np.array_equal(to_numpy(layer.weight), weight_before)
    assert anim.layer == f"{layer!r} on an input of shape (1, 2, 4, 4)"
    xa = np.random.default_rng(0).standard_normal((2, 4, 4))
    wa = np.random.default_rng(1).standard_normal((1, 2, 2, 2))
    ga = np.ones((1, 3, 3))
    copies = [a.copy() for a in (xa, wa, ga)]
    animate(wa, xa, grad="weight", grad_output=ga)
    animate(wa, xa, grad="input", grad_output=ga, in_channel=0)
    assert all(np.array_equal(a, c) for a, c in zip((xa, wa, ga), copies))
    conv_layer = convscope.Conv2d(2, 1, 2, seed=0)
    x32 = xa.astype(np.float32)
    assert animate(conv_layer, x32).info[0].value == explain(conv_layer, x32, (0, 0, 0)).value


def test_the_header_names_the_layer():
    x = np.zeros((2, 5, 5))
    anim = animate(np.ones((2, 1, 2, 2)), x, stride=2, padding=1, dilation=2, groups=2, padding_mode="replicate",
                   out_channel=0)
    header = anim.info[0].subtitle
    assert "frame 1/9" in header and "dilation (2, 2)" in header and "stride (2, 2)" in header
    assert "group 0: input channels 0" in header
    assert anim.layer == ("Conv2d(2, 2, kernel_size=(2, 2), stride=(2, 2), padding=(1, 1), dilation=(2, 2), "
                          "groups=2, bias=False, padding_mode=replicate) on an input of shape (2, 5, 5)")
    assert anim.info[0].captions[("input", 0)] == "x̃[0] (padded input)"
    last = animate(np.ones((2, 1, 2, 2)), x[:, :3, :3], groups=2, out_channel=1).info[-1]
    assert last.captions[("input", 0)] == "x[1] (input)" and "group 1: input channels 1" in last.subtitle


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(grad="bias"), ValueError, "grad must be None, 'input' or 'weight', got 'bias'"),
    (dict(grad=1), ValueError, "grad must be"),
    (dict(grad_output=np.ones((1, 3, 3))), ValueError, "grad_output is used only with grad"),
    (dict(out_channel=1), ValueError, "out_channel must be in 0..0"),
    (dict(out_channel=0.0), TypeError, "out_channel must be an int"),
    (dict(in_channel=0), ValueError, "in_channel selects the frames of grad='input'"),
    (dict(grad="input", out_channel=0), ValueError, "for grad='input' use in_channel"),
    (dict(grad="weight", sample=1), ValueError, "sample selects"),
    (dict(sample=1), ValueError, "sample must be in 0..0"),
    (dict(max_frames=0), ValueError, "max_frames must be a positive integer"),
    (dict(max_frames=4), ValueError, "= 9 frames, more than max_frames=4"),
    (dict(fps=0), ValueError, "fps must be greater than 0"),
    (dict(fps="fast"), TypeError, "fps must be a number"),
    (dict(decimals=-1), ValueError, "decimals must be between 0 and 10"),
    (dict(stride="2"), TypeError, "stride"),
    (dict(padding_mode="mirror"), ValueError, "padding_mode must be one of"),
    (dict(grad="input", grad_output=np.ones((1, 2, 2))), ValueError, "grad_output"),
])
def test_bad_arguments_name_the_parameter(kwargs, exc, words):
    x = np.zeros((1, 5, 5))
    with pytest.raises(exc) as info:
        animate(np.ones((1, 1, 3, 3)), x, **kwargs)
    assert words in str(info.value)


def test_layer_hyper_parameters_and_large_grids_are_refused():
    layer = convscope.Conv2d(1, 1, 3, seed=0)
    with pytest.raises(TypeError, match="animate\\(layer, x\\) takes the hyper-parameters from the layer"):
        animate(layer, np.zeros((1, 5, 5)), stride=2)
    with pytest.raises(ValueError, match="every cell of the padded input, which is 34×34 here, more than 32×32"):
        animate(np.ones((1, 1, 3, 3)), np.zeros((1, 32, 32)), padding=1, stride=16)


def _hide(monkeypatch, package: str) -> None:
    """Make ``import package`` (and its submodules) fail, as where the package is not installed."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == package or name.startswith(package + "."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_matplotlib_names_the_extra(monkeypatch):
    _hide(monkeypatch, "matplotlib")
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'convscope\[viz\]'"):
        animate(np.ones((1, 1, 2, 2)), np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="padding_mode"):  # arguments are checked first
        animate(np.ones((1, 1, 2, 2)), np.zeros((1, 3, 3)), padding_mode="mirror")


def test_save_suffix_ffmpeg_and_unwritable_paths(tmp_path, monkeypatch):
    anim = animate(np.ones((1, 1, 2, 2)), np.arange(9.0).reshape(1, 3, 3))
    with pytest.raises(ValueError, match=r"path must end in .gif or .mp4, got .png"):
        anim.save(tmp_path / "a.png")
    with pytest.raises(OSError):
        anim.save(tmp_path / "missing" / "a.gif")
    with pytest.raises(ValueError, match="fps must be greater than 0"):
        anim.save(tmp_path / "a.gif", fps=-1)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="ffmpeg"):
        anim.save(tmp_path / "a.mp4")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_mp4_when_ffmpeg_is_present(tmp_path):
    anim = animate(np.ones((1, 1, 2, 2)), np.arange(12.0).reshape(1, 3, 4), padding=1)
    path = anim.save(tmp_path / "a.mp4", fps=4)
    assert path.stat().st_size > 1000
    if shutil.which("ffprobe"):
        probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                                "stream=nb_read_frames,width,height", "-of", "csv=p=0", str(path)],
                               capture_output=True, text=True, check=True)
        width, height, frames = (int(v) for v in probe.stdout.strip().split(","))
        assert (width, height, frames) == (*anim.size, len(anim))


def test_notebook_output_is_the_gif_as_image_gif(monkeypatch):
    anim = animate(np.ones((1, 1, 2, 2)), np.arange(9.0).reshape(1, 3, 3))
    bundle = anim._repr_mimebundle_()
    assert set(bundle) == {"image/gif", "text/plain"} and not hasattr(anim, "_repr_html_")
    with Image.open(io.BytesIO(bundle["image/gif"])) as gif:
        assert gif.n_frames == len(anim) == 4
    assert f"GIF, {len(bundle['image/gif']) / 1e3:.0f} kB" in bundle["text/plain"]
    assert "4 frames" in repr(anim)
    from convscope.animate import media

    monkeypatch.setattr(media, "HTML_MAX_BYTES", 100)  # a GIF too large to inline: the first frame, and how to save it
    bundle = anim._repr_mimebundle_()
    assert set(bundle) == {"image/png", "text/plain"} and ".save(" in bundle["text/plain"]
    assert bundle["image/png"].startswith(b"\x89PNG")


# --------------------------------------------------------------------------- the command line


def test_cli_writes_the_gif_and_prints_one_line(tmp_path, capsys):
    out = tmp_path / "conv.gif"
    code = cli.main(["animate", "--input", "5x5", "-k", "3", "-p", "1", "-s", "2", "--bias", "0.1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "9 frames" in lines[0]
    with Image.open(out) as gif:
        assert gif.n_frames == 9


def test_cli_gradient_options(tmp_path, capsys):
    g = tmp_path / "g.npy"
    np.save(g, np.full((2, 3, 3), 2.0, dtype=np.float32))
    out = tmp_path / "g.gif"
    code = cli.main(["animate", "--input", "2x4x4", "--integers", "--out-channels", "2", "-k", "2", "--grad", "weight",
                     "--grad-output-file", str(g), "--out-channel", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "8 frames (one per weight element)" in captured.out
    code = cli.main(["animate", "--input", "2x4x4", "-k", "2", "--grad", "input", "--in-channel", "1",
                     "--fps", "5", "--out", str(out)])
    assert code == 0 and "16 frames (one per input pixel)" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--out", "{tmp}/a.png"], "--out must name a .gif or .mp4 file"),
    (["--out", "{tmp}/missing/a.gif"], "does not exist"),
    (["--out-channel", "3", "--out", "{tmp}/a.gif"], "out_channel must be in 0..0"),
    (["--max-frames", "2", "--out", "{tmp}/a.gif"], "more than max_frames=2"),
    (["--grad-output-file", "{tmp}/g.npy", "--out", "{tmp}/a.gif"], "--grad-output-file needs --grad"),
    (["--grad", "bias", "--out", "{tmp}/a.gif"], "invalid choice"),
    (["--fps", "0", "--out", "{tmp}/a.gif"], "fps must be greater than 0"),
    ([], "the following arguments are required: -o/--out"),
])
def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, args, words):
    code = cli.main(["animate", "--input", "4x4", *[a.replace("{tmp}", str(tmp_path)) for a in args]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("convscope: error:") and words in err[0], err


def test_cli_mp4_without_ffmpeg_and_without_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cli.main(["animate", "--input", "4x4", "--out", str(tmp_path / "a.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ffmpeg" in err[0]
    monkeypatch.undo()
    _hide(monkeypatch, "PIL")
    assert cli.main(["animate", "--input", "4x4", "--out", str(tmp_path / "a.gif")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'convscope[viz]'" in err[0]


def test_cli_subprocess_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "convscope", "animate", "--input", "3x3", "-k", "2",
                             "--out", str(tmp_path / "a.gif")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.count("\n") == 1 and "4 frames" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "convscope", "animate", "--input", "3x3", "-k", "5",
                          "--out", str(tmp_path / "b.gif")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_frames_drawn_in_part_equal_frames_drawn_in_full(monkeypatch):
    """Later frames redraw only the cells and texts that changed: the pixels must be those of a full draw."""
    from convscope.animate import draw

    x = np.arange(9, dtype=np.float64).reshape(1, 3, 3) / 7
    params = dict(padding=1, padding_mode="reflect", stride=(1, 2), dilation=(2, 1))
    parts = animate(np.ones((1, 1, 2, 2)), x, **params)
    grads = animate(np.ones((1, 1, 2, 2)), x, grad="input", **params)
    render = draw.Renderer.render
    monkeypatch.setattr(draw.Renderer, "render", lambda self, scene, full=False: render(self, scene, full=True))
    for a, b in ((parts, animate(np.ones((1, 1, 2, 2)), x, **params)),
                 (grads, animate(np.ones((1, 1, 2, 2)), x, grad="input", **params))):
        assert len(a) == len(b)
        for k in range(len(a)):
            assert np.array_equal(a.frames[k], b.frames[k]), k

