"""``convscope animate --transposed`` and ``convscope explore --transposed``: the files they write, and
their refusals (one line on stderr, exit 2).  Expected numbers come from torch (tests/oracle.py)."""
import json
import re

import numpy as np
import pytest

from convscope import cli
from convscope.explore import layer_data
from convscope.explore.data import decode
from oracle import torch_conv_transpose2d

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convscope: error:") and "Traceback" not in err, err
    return lines[0]


def test_animate_transposed_writes_one_frame_per_input_element_and_the_bias(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "t.gif"
    assert cli.main(["animate", "--input", "2x2", "--integers", "-s", "2", "-p", "1", "--transposed",
                     "--output-padding", "1", "--bias", "0.5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "5 frames (one per input element stamped)" in printed
    with Image.open(out) as gif:
        assert gif.n_frames == 5


def test_animate_transposed_from_files_uses_the_transposed_weight_layout(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, size=(1, 2, 2)).astype(np.float32)
    w = rng.integers(-3, 4, size=(1, 3, 2, 2)).astype(np.float32)       # (C_in, C_out, kH, kW)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    assert cli.main(["animate", "--input-file", str(tmp_path / "x.npy"), "--weight-file", str(tmp_path / "w.npy"),
                     "--no-bias", "--transposed", "-s", "2", "--out-channel", "2",
                     "--out", str(tmp_path / "t.gif")]) == 0
    assert "4 frames" in capsys.readouterr().out
    from convscope.animate import animate

    last = animate(w, x, stride=2, transposed=True, out_channel=2).info[-1]
    np.testing.assert_array_equal(last.output, torch_conv_transpose2d(x[None], w, stride=2)[0, 2])


def test_explore_transposed_out_page_holds_conv_transpose2d(tmp_path, capsys):
    path = tmp_path / "t.html"
    assert cli.main(["explore", "--input", "2x3x3", "--integers", "--out-channels", "2", "-s", "2", "-p", "1",
                     "--transposed", "--output-padding", "1", "--out", str(path)]) == 0
    boot = json.loads(re.search(r'id="convscope-boot">(.*?)</script>', path.read_text(encoding="utf-8"), re.S).group(1))
    data = boot["data"]
    assert data["config"]["transposed"] and data["config"]["output_padding"] == [1, 1]
    x, w, b, out = (decode(data["arrays"][k]) for k in ("x", "weight", "bias", "output"))
    np.testing.assert_array_equal(out, torch_conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1))
    assert data == json.loads(json.dumps({k: v for k, v in layer_data(
        input_shape=(2, 3, 3), integers=True, out_channels=2, stride=2, padding=1, output_padding=1,
        transposed=True).items() if not k.startswith("_")}))
    assert "--transposed --output-padding 1" in boot["command"]


@pytest.mark.parametrize("command", ["animate", "explore"])
@pytest.mark.parametrize("args, words", [
    (["--output-padding", "1", "-s", "2"], "--output-padding 1 needs --transposed"),
    (["--transposed", "-s", "2", "--output-padding", "2"],
     "output_padding must be smaller than stride or dilation, got output_padding=(2, 2) with stride=(2, 2) and "
     "dilation=(1, 1)"),
    (["--transposed", "--output-padding", "1"], "output_padding must be smaller than stride or dilation"),
    (["--transposed", "--output-padding", "1x"], "--output-padding must be integers"),
    (["--transposed", "--padding-mode", "reflect"], 'Only "zeros" padding mode is supported for ConvTranspose2d'),
    (["--transposed", "-p", "same"], "padding"),
    (["--transposed", "--input", "3x3x3", "-g", "2"], "groups (2)"),
])
def test_bad_transposed_arguments_are_one_line_exit_2(tmp_path, capsys, command, args, words):
    tail = ["--out", str(tmp_path / ("t.gif" if command == "animate" else "t.html"))]
    assert cli.main([command, "--input", "3x3", *args, *tail]) == 2
    assert words in one_line(capsys)
    assert not (tmp_path / "t.gif").exists() and not (tmp_path / "t.html").exists()


@pytest.mark.parametrize("args, words", [
    (["--grad", "input"], "--grad and --in-channel do not apply"),
    (["--in-channel", "0"], "--grad and --in-channel do not apply"),
    (["--out-channel", "3"], "out_channel must be in 0..0"),
])
def test_bad_transposed_animate_arguments(tmp_path, capsys, args, words):
    assert cli.main(["animate", "--input", "2x2", "--transposed", *args, "--out", str(tmp_path / "t.gif")]) == 2
    assert words in one_line(capsys)
