"""animate's transposed mode: each input element stamps its weighted kernel onto the output.

Every expected number comes from torch (tests/oracle.py): the output after each frame is torch's
conv_transpose2d of the elements stamped so far, the last frame of a channel its whole output (bias
included); the cells a stamp lands on, and the tap counts of the overlap, are read from torch's
conv_transpose2d of one-hot inputs and kernels.  Colours are read back from the frames' pixels.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

import convscope  # noqa: E402
from convscope.animate import animate  # noqa: E402
from convscope.animate.draw import THEME, rgb  # noqa: E402
from convscope.explain.render import num  # noqa: E402
from oracle import torch_conv_transpose2d, torch_landings, torch_tap_counts, torch_transpose_layer  # noqa: E402

COLOURS = {name: np.array(rgb(THEME[name])) for name in
           ("normal", "padding", "window", "current", "pending", "taps_1", "taps_2", "taps_3")}
PARAMS = dict(stride=2, padding=1, output_padding=1)


def case(C=2, O=2, H=3, W=3, k=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.integers(-5, 6, size=(1, C, H, W)).astype(dtype)
    w = rng.integers(-3, 4, size=(C, O, k, k)).astype(dtype)
    b = rng.integers(-3, 4, size=O).astype(dtype)
    return x, w, b


def role(anim, frame, panel, r, c, slot=0) -> str:
    x0, y0, x1, y1 = anim.cell_box(panel, r, c, slot)
    colour = np.median(frame[y0 + 4:y0 + 7, x0 + 3:x0 + 6].reshape(-1, 3), axis=0)
    name = min(COLOURS, key=lambda n: np.abs(COLOURS[n] - colour).max())
    assert np.abs(COLOURS[name] - colour).max() <= 8, (panel, r, c, colour, name)
    return name


def test_the_sums_build_up_to_conv_transpose2d_and_the_last_frame_adds_the_bias():
    x, w, b = case(H=2, W=2)
    anim = animate(w, x, b, transposed=True, **PARAMS)
    out = torch_conv_transpose2d(x, w, b, **PARAMS)[0]
    unbiased = torch_conv_transpose2d(x, w, None, **PARAMS)[0]
    C, H, W = x.shape[1:]
    assert len(anim) == out.shape[0] * (C * H * W + 1)
    by_o = {o: [f for f in anim.info if f.out_channel == o] for o in range(out.shape[0])}
    for o, frames in by_o.items():
        stamps, last = frames[:-1], frames[-1]
        assert [f.at for f in stamps] == [(0, c, i, j) for c in range(C) for i in range(H) for j in range(W)]
        for k, f in enumerate(stamps):          # the output so far: torch's output of the elements stamped
            mask = np.zeros(C * H * W, dtype=x.dtype)
            mask[:k + 1] = 1
            expected = torch_conv_transpose2d(x * mask.reshape(x.shape), w, None, **PARAMS)[0, o]
            np.testing.assert_allclose(f.output, expected, rtol=0, atol=1e-4 * max(1, np.abs(expected).max()))
        assert np.array_equal(stamps[-1].output, unbiased[o].astype(np.float64))
        assert last.at is None and last.value == float(b[o])
        assert np.array_equal(last.output, out[o].astype(np.float64))      # exactly conv_transpose2d's
        assert last.cells[("output", 0)] == [[num(float(v), 0) for v in row] for row in out[o]]
        assert f"bias[{o}]" in last.title and num(float(b[o]), 0) in last.title


def test_each_stamp_lands_where_torch_puts_it_and_adds_x_times_w():
    x, w, b = case(C=1, O=1, H=3, W=4, seed=3)
    params = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    anim = animate(w, x, None, transposed=True, **params)
    landings = torch_landings((3, 4), (3, 3), **params)
    previous = np.zeros_like(anim.info[0].output)
    for f in anim.info:
        _, c, i, j = f.at
        expected = {(r, t, u, v) for (r, t), hits in landings.items() for (ii, jj, u, v) in hits if (ii, jj) == (i, j)}
        assert {(r, t, u, v) for u, v, r, t in f.hits} == expected
        added = f.output - previous
        for u, v, r, t in f.hits:
            assert added[r, t] == pytest.approx(float(x[0, c, i, j]) * float(w[c, 0, u, v]))
        previous = f.output
    assert np.array_equal(anim.info[-1].output, torch_conv_transpose2d(x, w, None, **params)[0, 0])


def test_the_frames_colour_the_element_its_stamp_and_the_checkerboard_of_tap_counts():
    x = np.arange(1.0, 10.0, dtype=np.float32).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 3, 3), dtype=np.float32)
    anim = animate(w, x, transposed=True, stride=2)
    counts = torch_tap_counts((3, 3), (3, 3), stride=2)
    assert sorted(np.unique(counts)) == [1, 2, 4]                 # the checkerboard: 1, 2 and 4 taps
    shade = {1: "taps_1", 2: "taps_2", 4: "taps_3"}
    frame = anim.frames[4]
    Ho, Wo = counts.shape
    for r in range(Ho):
        for t in range(Wo):
            assert role(anim, frame, "taps", r, t, 1) == shade[counts[r, t]]
    assert anim.info[4].cells[("taps", 1)] == [[str(c) for c in row] for row in counts]
    # darker green for more taps
    lum = [sum(rgb(THEME[s])) for s in ("taps_1", "taps_2", "taps_3")]
    assert lum[0] > lum[1] > lum[2]
    f = anim.info[4]                                                 # x[0, 0, 1, 1]
    assert f.at == (0, 0, 1, 1)
    assert role(anim, frame, "input", 1, 1) == "current"
    assert role(anim, frame, "input", 0, 0) == "normal" and role(anim, frame, "input", 2, 2) == "pending"
    hit = {(r, t) for _, _, r, t in f.hits}
    touched = {(r, t) for g in anim.info[:4] for _, _, r, t in g.hits}
    for r in range(Ho):
        for t in range(Wo):
            expected = "window" if (r, t) in hit else "normal" if (r, t) in touched else "pending"
            assert role(anim, frame, "output", r, t) == expected, (r, t)


def test_cropped_taps_are_grey_in_the_stamp():
    x, w, _ = case(C=1, O=1)
    anim = animate(w, x, transposed=True, stride=2, padding=1)
    f = anim.info[0]                                     # x[0, 0, 0, 0]: padding 1 crops its first row and column
    landed = {(u, v) for u, v, _, _ in f.hits}
    for u in range(3):
        for v in range(3):
            assert role(anim, anim.frames[0], "stamp", u, v) == ("window" if (u, v) in landed else "padding")
    assert any("crops" in line for line in f.lines)


def test_layers_convscope_and_torch():
    layer = convscope.ConvTranspose2d(2, 3, 2, stride=2, output_padding=1, dilation=2, seed=1)
    x = np.random.default_rng(0).standard_normal((2, 1, 2)).astype(np.float32)
    anim = animate(layer, x, out_channel=1)
    assert anim.info[-1].at is None
    np.testing.assert_array_equal(anim.info[-1].output, layer(x)[1].astype(np.float64))
    module = torch_transpose_layer(2, 2, 3, 2, stride=2, output_padding=1, dilation=2)
    from_torch = animate(module, x, out_channel=2, decimals=3)
    out = torch_conv_transpose2d(x, module.weight, module.bias, stride=2, output_padding=1, dilation=2)
    np.testing.assert_allclose(from_torch.info[-1].output, out[2], rtol=1e-6, atol=1e-6)
    assert "ConvTranspose2d(2, 3, kernel_size=(2, 2)" in from_torch.layer
    assert "output_padding=(1, 1)" in from_torch.layer
    assert "transposed convolution" in repr(from_torch)


def test_save_gif_and_mp4(tmp_path):
    x, w, b = case(C=1, O=1, H=2, W=2)
    anim = animate(w, x, b, transposed=True, stride=2)
    path = anim.save(tmp_path / "t.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == len(anim) == 5
    assert "image/gif" in anim._repr_mimebundle_()
    last = anim.frames[-1]                                  # the bias frame adds to every output cell
    box = anim.panels[("output", 0)]
    assert (box.rows, box.cols) == (5, 5)
    assert {role(anim, last, "output", r, t) for r in range(5) for t in range(5)} == {"window"}
    if shutil.which("ffmpeg"):
        assert anim.save(tmp_path / "t.mp4").stat().st_size > 0


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(grad="input"), ValueError, "forward pass only"),
    (dict(in_channel=0), ValueError, "in_channel"),
    (dict(padding_mode="reflect"), ValueError, 'Only "zeros" padding mode'),
    (dict(output_padding=2), ValueError, "output_padding must be smaller than stride or dilation"),
    (dict(transposed="yes"), TypeError, "transposed must be True or False"),
    (dict(max_frames=3), ValueError, "more than max_frames=3"),
    (dict(out_channel=5), ValueError, "out_channel"),
])
def test_bad_arguments(kwargs, error, words):
    x, w, b = case(C=1, O=1, H=2, W=2)
    kwargs = dict(dict(transposed=True, stride=2), **kwargs)
    with pytest.raises(error, match=words):
        animate(w, x, b, **kwargs)


def test_output_padding_needs_transposed_and_layers_keep_their_parameters():
    x, w, b = case(C=1, O=1, H=2, W=2)
    with pytest.raises(ValueError, match="pass transposed=True"):
        animate(w, x, b, output_padding=1, stride=2)
    layer = convscope.ConvTranspose2d(1, 1, 3, stride=2)
    with pytest.raises(TypeError, match="from the layer"):
        animate(layer, x, stride=2)
    with pytest.raises(TypeError, match="ConvTranspose2d"):
        animate(convscope.Conv2d(1, 1, 3), x, transposed=True)


def test_groups_stamp_only_their_own_input_channels():
    rng = np.random.default_rng(5)
    x = rng.integers(-4, 5, size=(2, 4, 2, 2)).astype(np.float64)          # a batch: sample 1 is drawn
    w = rng.integers(-3, 4, size=(4, 1, 2, 2)).astype(np.float64)          # groups 2: C_out = 2
    anim = animate(w, x, transposed=True, groups=2, stride=2, sample=1, out_channel=1)
    assert {f.at[1] for f in anim.info} == {2, 3} and all(f.at[0] == 1 for f in anim.info)
    out = torch_conv_transpose2d(x, w, groups=2, stride=2)
    np.testing.assert_array_equal(anim.info[-1].output, out[1, 1])
    assert "group 1: input channels 2–3" in anim.info[0].subtitle


def test_too_many_frames_for_memory_are_refused_before_any_work():
    x = np.zeros((1, 64, 8, 8), np.float32)
    w = np.zeros((64, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="frames would take more than"):
        animate(w, x, transposed=True, max_frames=10**6)
