"""The guided tour (``convscope tour``, the README's first command): it runs end to end, checks
every result against torch, and explains the seeds' numbers with the numbers convscope computes."""
import re
import subprocess
import sys

import numpy as np
import pytest

import convscope
from convscope import tour
from oracle import require_torch, torch_autograd


def run(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "convscope", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.fixture(scope="module")
def full_tour():
    require_torch()
    result = run("tour")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_tour_runs_every_section_in_order_and_torch_agrees(full_tour):
    positions = [full_tour.index(tour.header(k)) for k in range(1, len(tour.SECTIONS) + 1)]
    assert positions == sorted(positions)
    assert "✗" not in full_tour and "DISAGREES" not in full_tour
    checks = re.findall(r"✓ torch \S+ agrees", full_tour)
    summary = re.search(r"All (\d+) results agree with torch", full_tour)
    assert summary and int(summary.group(1)) == len(checks) >= 15


def test_tour_seed004_weight_gradient_term_by_term(full_tour):
    A = np.array(tour.SEED004_A, dtype=np.float32)[None, None]
    B = np.array(tour.SEED004_B, dtype=np.float32)[None, None]
    out = convscope.conv2d(A, B, stride=2)
    grads = convscope.conv2d_backward(np.ones_like(out), A, B, stride=2)
    _, (_, want_dw) = torch_autograd(lambda F, a, b: F.conv2d(a, b, stride=2), A, B, grad_output=np.ones)
    np.testing.assert_array_equal(grads.weight, want_dw)
    section = full_tour[full_tour.index(tour.header(5)):]
    for u in range(2):
        for v in range(2):
            value = grads.weight[0, 0, u, v]
            # the four windows' pixels that tap (u, v) met, summed term by term
            terms = [A[0, 0, 2 * i + u, 2 * j + v] for i in range(2) for j in range(2)]
            assert sum(terms) == value
            line = "sum: " + " + ".join(f"{t:.0f}" for t in terms).replace("+ -", "− ") + f" = {value:.0f}"
            assert line in section, line
            assert f"∂L/∂w[0, 0, {u}, {v}] = {value:.0f}" in section


def test_tour_seed004_batch_weight_gradient_names_the_samples(full_tour):
    """The (14, 4, 32, 35) layer's ∂L/∂w[0, 0, 0, 0]: each row names the pixel x[n, c, h, w] of its own
    sample n with that pixel's value, and the sum is split over the 14 samples."""
    rng = np.random.default_rng(4)  # the tour's seeded arrays, drawn in the tour's order
    x = rng.standard_normal((14, 4, 32, 35)).astype(np.float32)
    section = full_tour[full_tour.index(tour.header(5)):]
    block = section[section.index("∂L/∂w[0, 0, 0, 0] ="):]
    block = block[:block.index("= ∂L/∂w[0, 0, 0, 0]")]
    row = r"grad_out\[(\d+), 0, (\d+), (\d+)\]\s+1\.0000 × x\[(\d+), (\d+), (\d+), (\d+)\]\s+(-?\d+\.\d{4}) ="
    rows = re.findall(row, block)
    assert len(rows) == 24
    for n, i, j, *index, value in rows:
        nn, c, h, w = (int(v) for v in index)
        assert (nn, c, h, w) == (int(n), 0, 2 * int(i), 2 * int(j))
        assert f"{x[nn, c, h, w]:.4f}" == value
    per_sample = re.search(r"sum per sample n \(Σ_i Σ_j\): (.*)", block).group(1)
    expected = [x[n, 0, 0:30:2, 0:34:2].astype(np.float64).sum() for n in range(14)]
    assert per_sample == ", ".join(f"{n}: {v:.4f}" for n, v in enumerate(expected))


def test_tour_shows_the_seed_answers(full_tour):
    # seed 001: the bias is the difference between the printed output and the sum of w·x
    x = np.array(tour.SEED001_X)
    w = np.array(tour.SEED001_W)
    sum_wx = float(np.sum(x[:3, :3] * w))
    assert f"it's not the sum of w·x = {sum_wx:.4f}" in full_tour
    assert f"0.5142 − {sum_wx:.4f} = {0.5142 - sum_wx:.4f}" in full_tour
    assert "(Every tap reads zero padding, so this output is the bias alone.)" in full_tour
    # seed 002's size question and seed 004's layer
    assert "⌊(4 + 0 − 1·(2−1) − 1)/2⌋ + 1 = ⌊2/2⌋ + 1 = 2" in full_tour
    assert "H_out = ⌊(32 + 0 − 1·(3−1) − 1)/2⌋ + 1 = ⌊29/2⌋ + 1 = 15" in full_tour
    assert "output shape (14, 5, 15, 17)" in full_tour
    # seed 004: a pixel no window reads
    assert "No tap reads this pixel" in full_tour and "the floor" in full_tour


@pytest.mark.parametrize("section", [pytest.param(n, marks=pytest.mark.slow) for n in range(1, len(tour.SECTIONS))]
                         + [len(tour.SECTIONS)])                   # the whole tour above runs every section
def test_each_section_alone(section):
    result = run("tour", "--section", str(section))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(tour.header(section).split("\n")[0])
    for other in range(1, len(tour.SECTIONS) + 1):
        if other != section:
            assert tour.header(other) not in result.stdout


def test_tour_without_torch_says_so_and_still_runs():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from convscope.cli import main\n"
            "sys.exit(main(['tour']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "torch is not installed" in result.stdout
    assert "✓" not in result.stdout
    assert tour.header(5) in result.stdout


def test_a_disagreement_with_torch_fails_the_tour():
    require_torch()
    check = tour.Checker.create()
    line = check.conv("a wrong result", np.zeros((1, 1, 1, 1)), np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)))
    assert "DISAGREES" in line and check.failures == ["a wrong result"]


@pytest.mark.parametrize("section", [pytest.param("0", marks=pytest.mark.slow), str(len(tour.SECTIONS) + 1), "x"])
def test_bad_section_is_one_line_and_exit_2(section):
    result = run("tour", "--section", section)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_tour_transposed_section_computes_the_arithmetic_case_and_explains_one_output(full_tour):
    """i = 3, k = 3, s = 2, p = 1 → 5 (6 with output_padding 1), y[0, 1, 1] in both views, the checkerboard,
    and the adjoint identity, each with the numbers derived here."""
    section = full_tour[full_tour.index(tour.header(6)):]
    x = np.array(tour.ARITH_X, dtype=np.float32)[None, None]
    w = np.array(tour.ARITH_W, dtype=np.float32)[None, None]
    y = convscope.conv_transpose2d(x, w, stride=2, padding=1)
    y6 = convscope.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    assert y.shape[-2:] == (5, 5) and y6.shape[-2:] == (6, 6)
    assert "H_out = (3−1)·2 − 2·1 + 1·(3−1) + 0 + 1 = 5" in section
    assert "(5 → 3, 6 → 3)" in section
    assert "✓ torch" in section and "agrees on the arithmetic case" in section
    # y[0, 1, 1]: rows and columns each receive i = 0 via u = 2 and i = 1 via u = 0
    c, i, j = tour.ARITH_AT
    terms = [(a, b, u, v) for a in range(3) for b in range(3) for u in range(3) for v in range(3)
             if 2 * a + u - 1 == i and 2 * b + v - 1 == j]
    assert len(terms) == 4
    for a, b, u, v in terms:
        xv, wv = x[0, 0, a, b], w[0, 0, u, v]
        assert (f"input x[0, {a}, {b}] · w[0, 0, {u}, {v}] lands on y[{c}, {i}, {j}]   "
                f"{xv:.0f} × {wv:.0f} = {xv * wv:.0f}") in section
    assert sum(x[0, 0, a, b] * w[0, 0, u, v] for a, b, u, v in terms) == y[0, 0, i, j]
    assert f"y[{c}, {i}, {j}] = {y[0, 0, i, j]:.0f}   (a transposed convolution)" in section
    assert "= a convolution of the zero-inserted input with the flipped kernel" in section
    # the checkerboard: rows 1 and 3 get 2 taps, rows 0, 2, 4 get 1
    assert "rows 1, 3\nget 2 taps and rows 0, 2, 4 get 1" in section
    stamps = convscope.conv_transpose2d(np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 3, 3), np.float32),
                                        stride=2, padding=1)
    assert "[[1  2  1  2  1]" in section and stamps[0, 0, 1, 1] == 4 and stamps[0, 0, 0, 0] == 1
    # not an inverse: conv2d(y) is not x; the adjoint identity holds
    back = convscope.conv2d(y, w, stride=2, padding=1)
    assert not np.array_equal(back, x)
    assert f"[[{back[0, 0, 0, 0]:.0f}  {back[0, 0, 0, 1]:.0f}  {back[0, 0, 0, 2]:.0f}]" in section
    z = np.random.default_rng(6).standard_normal((1, 1, 5, 5))
    lhs = float(np.sum(convscope.conv2d(z, w.astype(np.float64), stride=2, padding=1) * x))
    rhs = float(np.sum(z * convscope.conv_transpose2d(x.astype(np.float64), w.astype(np.float64), stride=2,
                                                      padding=1)))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    assert f"{lhs:.6f} = {rhs:.6f}" in section and "not an inverse" in section
