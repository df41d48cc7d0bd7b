"""The command line: the demo (the README's first command) and bad arguments."""
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
