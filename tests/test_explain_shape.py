"""explain_shape: output sizes and unread rows/columns against torch, the text, the errors."""
from __future__ import annotations

import doctest
import itertools
import warnings

import numpy as np
import pytest

import convscope
from convscope.explain import shape as shape_module
from convscope.explain.shape import DimExplanation, ShapeExplanation, explain_shape
from oracle import require_torch, torch_autograd

require_torch()

SEED_H = "H_out = ⌊(32 + 0 − 1·(3−1) − 1)/2⌋ + 1 = ⌊29/2⌋ + 1 = 15"
SEED_W = "W_out = ⌊(35 + 0 − 1·(2−1) − 1)/2⌋ + 1 = ⌊33/2⌋ + 1 = 17"


def torch_grad(hw, kernel, stride, padding, dilation):
    """torch's output (H_out, W_out) and the input gradient of conv2d(x, ones) for grad_output ones.

    The gradient at (r, c) counts the taps that read input pixel (r, c): it is zero exactly at the
    pixels no window reads.  Returns None when torch rejects the configuration.
    """
    try:
        with warnings.catch_warnings():  # 'same' with an even kernel: torch notes that it pads a copy
            warnings.simplefilter("ignore", UserWarning)
            out, (dx, _) = torch_autograd(
                lambda F, x, w: F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation),
                np.zeros((1, 1) + hw), np.ones((1, 1) + kernel), grad_output=np.ones)
    except RuntimeError:
        return None
    return tuple(out.shape[2:]), dx[0, 0]


def _one_dim_cases():
    """(size, kernel, stride, padding, dilation) along one dimension; padding None means 'same'."""
    for size, k, s, p, d in itertools.product(range(1, 8), (1, 2, 3, 4), (1, 2, 3, 5), (0, 1, 2, None),
                                              (1, 2, 3)):
        if p is None and s != 1:
            continue
        yield size, k, s, p, d


ONE_DIM = list(_one_dim_cases())


def _grid():
    """2-D cases: each 1-D case for H, paired with a different one for W (a fixed rotation)."""
    rotated = ONE_DIM[len(ONE_DIM) // 3:] + ONE_DIM[:len(ONE_DIM) // 3]
    for (h, kh, sh, ph, dh), (w, kw, sw, pw, dw) in zip(ONE_DIM, rotated):
        if ph is None or pw is None:  # 'same' applies to both dimensions, with stride 1
            padding = "same"
            sh = sw = 1
        elif ph == pw == 0 and (h + w) % 2:
            padding = "valid"
        elif ph == pw:
            padding = ph
        else:
            padding = (ph, pw)
        yield (h, w), (kh, kw), (sh, sw), padding, (dh, dw)


GRID = list(_grid())


def test_grid_is_varied():
    paddings = {p if isinstance(p, str) else type(p).__name__ for _, _, _, p, _ in GRID}
    assert paddings == {"same", "valid", "int", "tuple"}
    assert sum(explain_shape(*case[:2], stride=case[2], padding=case[3], dilation=case[4]).empty
               for case in GRID) > 20


def test_output_hw_and_unread_match_torch():
    nonempty = 0
    for hw, kernel, stride, padding, dilation in GRID:
        case = (hw, kernel, stride, padding, dilation)
        e = explain_shape((2, 3) + hw, kernel, stride, padding, dilation, out_channels=4)
        result = torch_grad(hw, kernel, stride, padding, dilation)
        if result is None:
            assert e.empty, case
            assert e.output_shape is None, case
            assert min(e.output_hw) < 1, case
            with pytest.raises(ValueError, match="output would be empty"):
                convscope.conv2d_output_size(hw, kernel, stride, padding, dilation)
            continue
        nonempty += 1
        torch_hw, grad = result
        assert not e.empty, case
        assert e.output_hw == torch_hw == convscope.conv2d_output_size(hw, kernel, stride, padding, dilation), case
        assert e.output_shape == (2, 4) + torch_hw, case
        # Pixel (r, c) is unread exactly when row r or column c is unread.
        rows, cols = np.zeros(hw[0], bool), np.zeros(hw[1], bool)
        rows[list(e.unread[0])] = True
        cols[list(e.unread[1])] = True
        np.testing.assert_array_equal(grad == 0, rows[:, None] | cols[None, :], err_msg=str(case))
        # When torch reads some pixel, the unread rows and columns can be read off its gradient alone.
        if grad.any():
            assert e.unread[0] == tuple(np.flatnonzero(~grad.any(axis=1))), case
            assert e.unread[1] == tuple(np.flatnonzero(~grad.any(axis=0))), case
    assert nonempty > 100


def test_unread_in_the_middle_and_at_the_end_from_torch():
    """Stride gaps, dilation gaps and the floor's remainder, each confirmed by torch's gradient."""
    cases = [((6, 6), (2, 2), (3, 3), 0, (1, 1)),     # rows 2 and 5
             ((5, 9), (2, 1), (1, 4), 0, (3, 1)),     # dilation gap: row 2; stride gap + floor in W
             ((32, 35), (3, 2), (2, 2), 0, (1, 1)),   # the floor drops row 31 and column 34
             ((30, 30), (3, 1), (4, 5), 2, (3, 1))]
    for hw, kernel, stride, padding, dilation in cases:
        e = explain_shape(hw, kernel, stride, padding, dilation)
        _, grad = torch_grad(hw, kernel, stride, padding, dilation)
        expected = (tuple(np.flatnonzero(~grad.any(axis=1))), tuple(np.flatnonzero(~grad.any(axis=0))))
        assert e.unread == expected
        assert all(e.unread), "each case has unread rows and columns"
        assert tuple(d.unread for d in e.dims) == e.unread


def test_unread_reasons():
    dilated = str(explain_shape((5, 9), (2, 1), stride=(1, 4), dilation=(3, 1)))
    assert ("row 2 of the input is never read: with dilation 3 the taps of a window are 3 rows apart, "
            "and no window has a tap on the rows in between\n") in dilated
    assert ("columns 1–3 and 5–7 of the input are never read: stride 4 is larger than the kernel's "
            "extent 1, so each step skips 3 columns between windows\n") in dilated
    exact = str(explain_shape((10, 10), 3, stride=4, padding=1))
    assert "rows 2 and 6 of the input are never read" in exact and "drops" not in exact
    floor = str(explain_shape((11, 11), 3, stride=4, padding=1))
    assert ("rows 2, 6 and 10 of the input are never read: stride 4 is larger than the kernel's extent 3, "
            "so each step skips 1 row between windows (rows 2 and 6); the last window starts at padded "
            "row 8 and ends at 10 (input rows 7–9), and ⌊10/4⌋ drops the remainder of 2 padded rows "
            "(row 10)\n") in floor


def test_issue_example_rows_2_and_5():
    e = explain_shape((1, 1, 6, 6), 2, stride=3)
    assert e.unread == ((2, 5), (2, 5))
    text = str(e)
    assert "rows 2 and 5 of the input are never read" in text
    assert "columns 2 and 5 of the input are never read" in text
    assert "the last window starts at padded row 3 and ends at 4" in text
    assert "stride 3 is larger than the kernel's extent 2" in text


def test_seed_example_text_and_shape():
    e = explain_shape((14, 4, 32, 35), (3, 2), stride=2, out_channels=5)
    text = str(e)
    assert SEED_H in text
    assert SEED_W in text
    assert e.output_hw == (15, 17)
    assert e.output_shape == (14, 5, 15, 17)
    assert text.splitlines()[-1] == "output shape (14, 5, 15, 17)"
    header = text.splitlines()[0]
    for part in ("(14, 4, 32, 35)", "kernel_size=(3, 2)", "stride=(2, 2)", "padding=0 → ((0, 0), (0, 0))",
                 "dilation=(1, 1)"):
        assert part in header
    assert "row 31 of the input is never read" in text
    assert "column 34 of the input is never read" in text


def test_dims_records():
    e = explain_shape((14, 4, 32, 35), (3, 2), stride=2, padding=(1, 0), dilation=(2, 1))
    h, w = e.dims
    assert isinstance(h, DimExplanation) and isinstance(e, ShapeExplanation)
    assert (h.name, h.size, h.kernel, h.stride, h.dilation, h.pad) == ("H", 32, 3, 2, 2, (1, 1))
    assert h.numerator == 32 + 2 - 2 * 2 - 1 and h.out == h.numerator // 2 + 1 == e.output_hw[0]
    assert h.extent == 5 and h.padded_size == 34
    assert (w.name, w.size, w.pad, w.out) == ("W", 35, (0, 0), 17)
    assert "kernel extent d·(k−1) + 1 = 2·(3−1) + 1 = 5 rows" in str(e)


def test_same_split_for_even_kernels():
    e = explain_shape((1, 1, 8, 9), (4, 3), padding="same")
    assert e.spec.padding == ((1, 2), (1, 1))
    assert e.output_hw == (8, 9)
    text = str(e)
    assert ("padding='same': total 1·(4−1) = 3 → top 1, bottom 2 "
            "(torch puts the extra row at the bottom)") in text
    assert "padding='same': total 1·(3−1) = 2 → left 1, right 1" in text
    assert "H_out = ⌊(8 + 3 − 1·(4−1) − 1)/1⌋ + 1 = ⌊7/1⌋ + 1 = 8" in text
    dilated = str(explain_shape((5, 5), 2, padding="same", dilation=3))
    assert "total 3·(2−1) = 3 → left 1, right 2 (torch puts the extra column at the right)" in dilated


def test_empty_output_is_explained_not_raised():
    e = explain_shape((3, 2, 5), 3, out_channels=2)
    assert e.empty
    assert e.output_hw == (0, 3)
    assert e.output_shape is None
    text = str(e)
    assert "H_out = ⌊(2 + 0 − 1·(3−1) − 1)/1⌋ + 1 = ⌊−1/1⌋ + 1 = 0" in text
    assert "the padded height H + pads = 2 + 0 + 0 = 2 is smaller than the kernel's extent" in text
    assert "1·(3−1) + 1 = 3" in text
    assert "output would be empty" in text.splitlines()[-1]
    assert "height" in text.splitlines()[-1]
    deeper = explain_shape((1, 1, 4, 2), (1, 4), stride=3, dilation=(1, 3))
    assert deeper.empty and deeper.output_hw == (2, (2 - 9 - 1) // 3 + 1) == (2, -2)
    assert "W_out = ⌊(2 + 0 − 3·(4−1) − 1)/3⌋ + 1 = ⌊−8/3⌋ + 1 = −2" in str(deeper)
    assert "no window fits in the width" in str(deeper)


def test_output_shape_by_rank():
    assert explain_shape((4, 32, 35), (3, 2), stride=2, out_channels=5).output_shape == (5, 15, 17)
    assert explain_shape((4, 32, 35), (3, 2), stride=2).output_shape is None
    assert explain_shape((14, 4, 32, 35), (3, 2), stride=2).output_shape is None
    bare = explain_shape((32, 35), (3, 2), stride=2, out_channels=5)
    assert bare.output_hw == (15, 17) and bare.output_shape is None
    assert "(14, C_out, 15, 17)" in str(explain_shape((14, 4, 32, 35), (3, 2), stride=2))
    assert explain_shape((0, 4, 5, 5), 3, out_channels=2).output_shape == (0, 2, 3, 3)
    numpy_ints = explain_shape(np.array([2, 3, 7, 7]), np.int64(3), stride=(np.int32(2), 2),
                               out_channels=np.int64(4))
    assert numpy_ints.output_shape == (2, 4, 3, 3)
    assert all(type(v) is int for v in numpy_ints.output_shape)


def test_every_row_read_and_all_padding_notes():
    assert "every row of the input is read" in str(explain_shape((5, 5), 3, padding=1))
    e = explain_shape((2, 2), 1, stride=5, padding=3)
    assert e.unread == ((0, 1), (0, 1))
    assert "every output reads only padding" in str(e)


@pytest.mark.parametrize("indices, expected", [
    ([5], "row 5"),
    ([2, 5], "rows 2 and 5"),
    ([2, 5, 8], "rows 2, 5 and 8"),
    (list(range(10, 32)), "rows 10–31"),
    ([0, 1, 2, 3, 9], "rows 0–3 and 9"),
    (list(range(1, 64, 2)), "rows 1, 3, 5, …, 63 (every 2nd row, 32 in all)"),
    ([0, 3, 4, 7, 9, 13, 20, 21, 30], "rows 0, 3, 4, 7, …, 30 (9 in all)"),
])
def test_format_indices(indices, expected):
    assert shape_module.format_indices(indices, "row", "rows") == expected


@pytest.mark.parametrize("input_shape, exc, fragment", [
    ((32,), ValueError, "input_shape must have 2, 3 or 4 values"),
    ((1, 2, 3, 4, 5), ValueError, "got 5 values"),
    ((1, 1, 0, 5), ValueError, "input_shape height and width must be positive"),
    ((1, 1, 5, -1), ValueError, "input_shape height and width must be positive"),
    ((1, 0, 5, 5), ValueError, "input_shape must have at least one channel"),
    ((-1, 1, 5, 5), ValueError, "input_shape batch size must not be negative"),
    ((1, 1, 5, 2**31), ValueError, "input_shape values must be at most"),
    ((1, 1, 5.0, 5), TypeError, "input_shape must be a tuple of ints"),
    ((1, True, 5, 5), TypeError, "input_shape must be a tuple of ints"),
    ("14x4x32x35", TypeError, "input_shape must be a tuple of ints"),
    (32, TypeError, "input_shape must be a tuple of ints"),
    (None, TypeError, "input_shape"),
])
def test_bad_input_shape(input_shape, exc, fragment):
    with pytest.raises(exc, match=fragment.replace("(", r"\(")):
        explain_shape(input_shape, 3)


@pytest.mark.parametrize("kwargs, exc, fragment", [
    (dict(kernel_size=0), ValueError, "kernel_size must be positive"),
    (dict(kernel_size=(3, 2, 1)), ValueError, "kernel_size must be an int or a pair of ints"),
    (dict(kernel_size=3, stride=0), ValueError, "stride must be positive"),
    (dict(kernel_size=3, stride=True), TypeError, "stride must be an int or a pair of ints"),
    (dict(kernel_size=3, padding="foo"), ValueError, "padding must be an int, a pair of ints, 'valid' or 'same'"),
    (dict(kernel_size=3, padding=-1), ValueError, "padding must be non-negative"),
    (dict(kernel_size=3, padding=1.5), TypeError, "padding must be an int"),
    (dict(kernel_size=3, padding="same", stride=2), ValueError, "padding='same' is not supported for strided"),
    (dict(kernel_size=3, dilation=(1, 0)), ValueError, "dilation must be positive"),
    (dict(kernel_size=3, out_channels=0), ValueError, "out_channels must be a positive integer"),
    (dict(kernel_size=3, out_channels=2.0), TypeError, "out_channels must be an int"),
])
def test_bad_parameters_raise_the_library_errors(kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment.replace("(", r"\(")):
        explain_shape((1, 1, 5, 5), **kwargs)
    if "out_channels" not in kwargs:  # the same message as conv2d_output_size gives
        with pytest.raises(exc) as ours:
            explain_shape((1, 1, 5, 5), **kwargs)
        with pytest.raises(exc) as theirs:
            convscope.conv2d_output_size((5, 5), **kwargs)
        assert str(ours.value) == str(theirs.value)


def test_repr_html():
    e = explain_shape((14, 4, 32, 35), (3, 2), stride=2, out_channels=5)
    page = e._repr_html_()
    assert isinstance(page, str)
    assert SEED_H in page and SEED_W in page  # no character of the formulas needs escaping
    assert "output shape (14, 5, 15, 17)" in page
    assert "padding=0 → ((0, 0), (0, 0))" in page
    same = explain_shape((1, 1, 8, 8), 4, padding="same")._repr_html_()
    assert "padding=&#x27;same&#x27;" in same and "padding='same'" not in same
    assert "<li>" in same
    assert repr(e) == "ShapeExplanation(input_shape=(14, 4, 32, 35), output_hw=(15, 17), " \
                      "output_shape=(14, 5, 15, 17), empty=False)"


def test_docstring_examples():
    result = doctest.testmod(shape_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 5
    assert result.failed == 0
