"""The command line: the demo (the README's first command) and bad arguments."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import convscope
from convscope import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "convscope", *args], capture_output=True, text=True, timeout=120)


def test_demo_runs_and_checks_one_output_by_hand():
    result = run()
    assert result.returncode == 0, result.stderr
    text = result.stdout
    x = np.array(cli.SEED000_INPUT, dtype=np.float32)[None]
    w = np.array(cli.SEED000_WEIGHT, dtype=np.float32)[None, None]
    b = np.array(cli.SEED000_BIAS, dtype=np.float32)
    out = convscope.conv2d(x, w, b)
    by_hand = re.search(r"= out\[0, 0, 0\]\s+(-?\d+\.\d{4})", text)
    assert by_hand, text
    assert float(by_hand.group(1)) == pytest.approx(float(out[0, 0, 0]), abs=0.5e-4)
    assert f"{(x[0, :3, :3] * w[0, 0]).sum():.4f}" in text           # the sum of products
    assert "bias" in text and "seed 001" in text
    for row in out[0]:                                                # the computed output is shown
        assert "  ".join(f"{v:7.4f}" for v in row).strip().split()[0] in text


def test_demo_is_the_default_and_a_subcommand():
    assert cli.main([]) == 0
    assert cli.main(["demo"]) == 0


@pytest.mark.parametrize("args", [["bogus"], ["--nope"], ["demo", "extra"]])
def test_bad_arguments_print_one_line_and_exit_2(args):
    result = run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convscope: error:")


def test_version():
    result = run("--version")
    assert result.returncode == 0 and convscope.__version__ in result.stdout


# --------------------------------------------------------------------------- shape and explain


def test_shape_prints_explain_shape():
    result = run("shape", "14x4x32x35", "-k", "3x2", "-s", "2", "--out-channels", "5")
    assert result.returncode == 0, result.stderr
    expected = convscope.explain_shape((14, 4, 32, 35), (3, 2), stride=2, out_channels=5)
    assert result.stdout.strip() == str(expected).strip()
    assert "H_out = ⌊(32 + 0 − 1·(3−1) − 1)/2⌋ + 1 = ⌊29/2⌋ + 1 = 15" in result.stdout
    assert "output shape (14, 5, 15, 17)" in result.stdout


def test_shape_with_padding_and_dilation_and_an_empty_output():
    result = run("shape", "1x1x6x6", "-k", "4", "-p", "same", "-d", "1")
    assert result.returncode == 0, result.stderr
    assert str(convscope.explain_shape((1, 1, 6, 6), 4, padding="same")).strip() == result.stdout.strip()
    empty = run("shape", "2x5", "-k", "3")
    assert empty.returncode == 0, empty.stderr
    assert "empty" in empty.stdout


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((6, 2, 3, 2))
    paths = {"x": tmp_path / "x.npy", "w": tmp_path / "w.npy", "g": tmp_path / "g.npy"}
    np.save(paths["x"], x)
    np.save(paths["w"], w)
    params = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, padding_mode="reflect")
    gy = rng.standard_normal(convscope.conv2d(x, w, **params).shape)
    np.save(paths["g"], gy)
    args = ["--input-file", str(paths["x"]), "--weight-file", str(paths["w"]), "-s", "2x1", "-p", "1x2",
            "-d", "1x2", "-g", "2", "--padding-mode", "reflect"]
    return x, w, gy, params, paths, args


def test_explain_from_files_matches_the_library(arrays):
    x, w, gy, params, paths, args = arrays
    result = run("explain", *args, "--bias", "0.25", "--at", "1,3,0,1")
    assert result.returncode == 0, result.stderr
    bias = np.full(6, 0.25)
    expected = convscope.explain(w, x, (1, 3, 0, 1), bias=bias, **params)
    assert result.stdout.strip() == str(expected).strip()
    assert expected.value == convscope.conv2d(x, w, bias, **params)[1, 3, 0, 1]
    assert result.stdout.startswith(f"out[1, 3, 0, 1] = {expected.value:.4f}")


@pytest.mark.parametrize("wrt, at, cli_at", [("input", (1, 2, 0, 4), "1,2,0,4"), ("weight", (4, 1, 2, 1), "4,1,2,1"),
                                             ("bias", (5,), "5")])
def test_explain_grad_from_files_matches_the_library(arrays, wrt, at, cli_at):
    x, w, gy, params, paths, args = arrays
    result = run("explain", *args, "--grad", wrt, "--grad-output-file", str(paths["g"]), "--at", cli_at)
    assert result.returncode == 0, result.stderr
    expected = convscope.explain_grad(w, x, gy, wrt, at, **params)
    assert result.stdout.strip() == str(expected).strip()
    component = getattr(convscope.conv2d_backward(gy, x, w, **params), wrt)
    assert expected.value == component[at]


def test_explain_takes_negative_indices_after_at_as_numpy_does(capsys):
    assert cli.main(["explain", "--input", "2x4x4", "--seed", "3", "--at", "-1,0"]) == 0
    spaced = capsys.readouterr().out
    assert cli.main(["explain", "--input", "2x4x4", "--seed", "3", "--at=-1,0"]) == 0
    attached = capsys.readouterr().out
    assert cli.main(["explain", "--input", "2x4x4", "--seed", "3", "--at", "1,0"]) == 0
    positive = capsys.readouterr().out
    assert spaced.startswith("out[0, 1, 0] = ")            # -1: the last of the output's 2 rows
    assert spaced == attached == positive


def test_explain_missing_leading_indices_are_zero_and_random_input_is_seeded():
    a = run("explain", "--input", "3x5x5", "--seed", "3", "--at", "1,2")
    b = run("explain", "--input", "3x5x5", "--seed", "3", "--at", "0,1,2")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("out[0, 1, 2] = ")
    c = run("explain", "--input", "3x5x5", "--seed", "4", "--at", "1,2")
    assert c.stdout != a.stdout


def test_explain_ones_kernel_grad_input_default_grad_output_and_html(tmp_path):
    page = tmp_path / "e.html"
    result = run("explain", "--input", "5x5", "--integers", "--ones", "-k", "2", "-s", "2", "--grad", "input",
                 "--at", "4,4", "--html", str(page))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("∂L/∂x[0, 4, 4] = 0")
    assert "No tap reads this pixel" in result.stdout
    assert "<table" in page.read_text(encoding="utf-8") or "No tap" in page.read_text(encoding="utf-8")
    shown = run("explain", "--input", "4x4", "--ones", "-k", "2", "-p", "1", "--html", str(page))
    assert shown.returncode == 0, shown.stderr
    assert page.read_text(encoding="utf-8").count('class="cs-win') >= 4


def test_colour_only_when_asked_or_on_a_terminal():
    pytest.importorskip("rich")
    plain = run("explain", "--input", "4x4", "--at", "0,0")
    coloured = run("explain", "--input", "4x4", "--at", "0,0", "--color", "always")
    assert "\x1b[" not in plain.stdout
    assert "\x1b[" in coloured.stdout
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured.stdout).split() == plain.stdout.split()


@pytest.mark.parametrize("args", [
    ["shape", "14x4", "-k", "0"],
    ["shape", "abc", "-k", "3"],
    ["shape", "1x1x5x5", "-k", "3", "-s", "2", "-p", "same"],
    ["shape", "1x1x5x5"],
    ["explain", "--input", "5x5", "--at", "9,9"],
    ["explain", "--input", "5x5", "--at", "1,x"],
    ["explain", "--input", "5x5", "--at", "0,0,0,0,0"],
    ["explain", "--input", "5x0"],
    ["explain", "--input", "5x5", "-k", "9"],
    ["explain", "--input-file", "/nonexistent/x.npy"],
    ["explain", "--grad", "output"],
    ["explain", "--padding-mode", "mirror"],
    ["explain", "-s", "2", "-p", "same"],
    ["explain", "--input", "3x5x5", "-g", "2"],
    ["explain", "--bias", "one"],
    ["explain", "--grad-output-file", "g.npy"],
    ["explain", "--input", "5x5", "--html", "/nonexistent/dir/e.html"],
    ["explain", "--input", "100000x100000"],
])
def test_bad_explain_and_shape_arguments_are_one_line_exit_2(args):
    result = run(*args)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convscope: error:"), result.stderr


def test_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "convscope", "tour"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.read(100)
    proc.stdout.close()   # like `convscope tour | head`
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in stderr


# --------------------------------------------------------------------------- bad files and oversized requests


def one_line_error(result) -> str:
    """The CLI's answer to a bad request: exit 2 and one line on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, (result.stdout or "")[-500:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convscope: error:"), result.stderr
    return lines[0]


def run_all(commands, timeout=120):
    """Run the commands side by side (each ``python -m convscope ...``); every one is killed at ``timeout``."""
    procs = [subprocess.Popen([sys.executable, "-m", "convscope", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in commands]
    results = []
    try:
        for args, proc in zip(commands, procs):
            out, err = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.fixture
def bad_files(tmp_path):
    np.savez(tmp_path / "arrays.npz", x=np.ones((5, 5)))
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "malformed.npy").write_bytes(b"\x93NUMPY\x01\x00\x20\x00{'descr': <f8, 'shape': (5, 5)}   \n")
    with open(tmp_path / "huge.npy", "wb") as f:  # a valid header claiming 24 MB over 64 bytes of data
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (3000, 1000)})
        f.write(bytes(64))
    os.mkfifo(tmp_path / "fifo.npy")  # opening it for reading would wait for a writer forever
    return {"npz": (tmp_path / "arrays.npz", ".npz"), "empty": (tmp_path / "empty.npy", "empty"),
            "devnull": ("/dev/null", "not a regular file"), "malformed": (tmp_path / "malformed.npy", "malformed"),
            "huge": (tmp_path / "huge.npy", "24000000 bytes"), "fifo": (tmp_path / "fifo.npy", "not a regular file")}


def bad_file_commands(bad_files, tmp_path, kinds):
    for command in ("explain", "animate"):
        for option in ("--input-file", "--weight-file", "--grad-output-file"):
            for kind in kinds:
                path, words = bad_files[kind]
                args = [command, "--grad", "input", option, str(path)]
                yield args + (["-o", str(tmp_path / "a.gif")] if command == "animate" else []), option, words


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_bad_array_files_are_one_line_exit_2(bad_files, tmp_path, capsys):
    for args, option, words in bad_file_commands(bad_files, tmp_path, ["npz", "empty", "devnull", "malformed", "huge"]):
        status = cli.main(args)  # in the same process: an exception that escapes fails the test
        line = one_line_error(subprocess.CompletedProcess(args, status, "", capsys.readouterr().err))
        assert option in line and words in line, (args, line)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_waiting_for_a_writer(bad_files, tmp_path):
    commands = list(bad_file_commands(bad_files, tmp_path, ["fifo"]))
    for result, (_, option, words) in zip(run_all([args for args, _, _ in commands], timeout=60), commands):
        line = one_line_error(result)
        assert option in line and words in line, (result.args, line)


def test_a_2d_npy_is_one_image_and_other_shapes_are_named(tmp_path):
    image = np.arange(30, dtype=np.float32).reshape(5, 6) % 7 - 3
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "kernel.npy", np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float32))
    np.save(tmp_path / "line.npy", np.ones(5, dtype=np.float32))
    np.save(tmp_path / "five.npy", np.ones((1, 1, 1, 5, 5), dtype=np.float32))
    grad = np.arange(12, dtype=np.float32).reshape(3, 4) - 5
    np.save(tmp_path / "grad.npy", grad)
    files = ["--input-file", str(tmp_path / "image.npy"), "--weight-file", str(tmp_path / "kernel.npy")]
    explained, grad_explained, animated, line, five = run_all([
        ["explain", *files, "--no-bias", "--at", "1,2"],
        ["explain", *files, "--grad", "weight", "--grad-output-file", str(tmp_path / "grad.npy"), "--at", "0,0,1,2"],
        ["animate", *files, "--grad", "input", "--grad-output-file", str(tmp_path / "grad.npy"),
         "-o", str(tmp_path / "a.gif")],
        ["explain", "--input-file", str(tmp_path / "line.npy")],
        ["animate", "--input-file", str(tmp_path / "five.npy"), "-o", str(tmp_path / "b.gif")],
    ])
    assert explained.returncode == 0, explained.stderr
    kernel = np.load(tmp_path / "kernel.npy")[None, None]
    assert explained.stdout.strip() == str(convscope.explain(kernel, image[None], (0, 1, 2))).strip()
    assert grad_explained.stdout.strip() == str(convscope.explain_grad(kernel, image[None], grad[None], "weight",
                                                                       (0, 0, 1, 2))).strip()
    assert animated.returncode == 0, animated.stderr
    assert "wrote" in animated.stdout and "30 frames" in animated.stdout  # one per input pixel, 5×6
    assert "(5,)" in one_line_error(line) and "HxW" in one_line_error(line)
    assert "(1, 1, 1, 5, 5)" in one_line_error(five)


def test_oversized_requests_are_refused_before_any_work():
    kernel, channels, terms = run_all([
        ["explain", "-k", "100000"],
        ["explain", "--out-channels", "100000000"],
        ["explain", "--input", "1x3000x3000", "--grad", "weight", "-k", "1"],
    ], timeout=60)
    assert "output would be empty" in one_line_error(kernel)
    assert "(100000000, 1, 3, 3)" in one_line_error(channels)
    line = one_line_error(terms)
    assert "9000000 terms" in line and "ask a smaller question" in line


@pytest.mark.parametrize("command", ["explain", "animate"])
def test_decimals_between_0_and_10(command, tmp_path):
    extra = ["-o", str(tmp_path / "a.gif")] if command == "animate" else []
    *bad, good = run_all([[command, "--input", "3x3", "--decimals", d, *extra]
                          for d in ("-1", "11", "100000000", "10")])
    for result in bad:
        assert "decimals must be between 0 and 10" in one_line_error(result)
    assert good.returncode == 0, good.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["shape", "1x1x5x5", "-k", "3"], ["explain", "--input", "4x4"],
                                  ["tour", "--section", "2"]])
def test_a_full_disk_on_stdout_is_one_line_exit_2(args):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "convscope", *args], stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    assert "No space left" in one_line_error(result)


# --------------------------------------------------------------------------- a batch, and the bias by default


def test_explain_of_a_batch_names_the_sample_in_its_products():
    result = run("explain", "--input", "2x1x4x4", "--integers", "--at", "1,0,1,1")
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^    \((\d), (\d)\)  x\[(\d+), (\d+), (\d+), (\d+)\]", result.stdout, re.M)
    assert len(rows) == 9
    for u, v, n, c, h, w in rows:
        assert (int(n), int(c), int(h), int(w)) == (1, 0, 1 + int(u), 1 + int(v))
    assert "x̃[1, 0, 1:4, 1:4]" in result.stdout


def test_explain_has_a_bias_by_default_as_nn_conv2d():
    default, given, none = run_all([["explain", "--input", "5x5", "--integers", "--seed", "3", "--at", "1,1"],
                                    ["explain", "--input", "5x5", "--integers", "--seed", "3", "--at", "1,1", "--bias"],
                                    ["explain", "--input", "5x5", "--integers", "--seed", "3", "--at", "1,1",
                                     "--no-bias"]])
    rng = np.random.default_rng(3)  # the documented draws: input, then weight, then bias
    x = rng.integers(-9, 10, size=(1, 5, 5)).astype(np.float32)
    w = rng.integers(-3, 4, size=(1, 1, 3, 3)).astype(np.float32)
    b = rng.integers(-3, 4, size=1).astype(np.float32)
    assert default.returncode == 0, default.stderr
    assert default.stdout == given.stdout
    assert default.stdout.strip() == str(convscope.explain(w, x, (0, 1, 1), bias=b)).strip()
    assert "+ bias[0]" in default.stdout
    assert none.stdout.strip() == str(convscope.explain(w, x, (0, 1, 1))).strip()
    assert "+ bias (none)" in none.stdout


@pytest.mark.parametrize("extra, bias", [([], True), (["--bias"], True), (["--no-bias"], False),
                                         (["--bias", "0.5,1"], [0.5, 1.0])])
def test_explore_and_animate_have_a_bias_by_default(monkeypatch, tmp_path, extra, bias):
    import convscope.explore

    seen = {}
    monkeypatch.setattr(convscope.explore, "write_page", lambda out, x, **config: seen.update(config))
    monkeypatch.setattr(os.path, "getsize", lambda path: 0)
    assert cli.main(["explore", "--input", "3x3", "-k", "2", "--out-channels", "2", "--out",
                     str(tmp_path / "p.html"), *extra]) == 0
    assert seen["bias"] == bias
    args = cli.build_parser().parse_args(["animate", "--input", "3x3", "--out-channels", "2", "-k", "2",
                                          "-o", "a.gif", *extra])
    _, _, b = cli._explain_arrays(args, cli._conv_params(args))
    assert (b is not None) == (bias is not False)
    if isinstance(bias, list):
        assert b.tolist() == bias
