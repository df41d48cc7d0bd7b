"""Index arithmetic: output sizes, and which input pixel each padded coordinate and tap reads."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import convscope
from convscope.geometry import output_length, source_index, source_map, spec_tap_sources, tap_sources
from convscope.spec import ConvSpec, make_spec

from oracle import NP_PAD_MODE as NP_MODE
from oracle import PADDING_MODES as MODES
from oracle import TORCH_PAD_MODE as TORCH_MODE
from oracle import require_torch, torch_functional

require_torch()




def max_pad(mode: str, size: int, limit: int) -> int:
    """The largest padding torch allows on one side of ``size`` pixels (capped at ``limit``)."""
    if mode == "reflect":
        return min(size - 1, limit)
    if mode == "circular":
        return min(size, limit)
    return limit


def torch_length(size, kernel, stride, pad_total, dilation):
    """torch's output length along H for a (1, 1, size, 1) input, or None when torch rejects it."""
    top = pad_total // 2
    x = torch_functional("pad", np.zeros((1, 1, size, 1)), (0, 0, top, pad_total - top))
    w = np.zeros((1, 1, kernel, 1))
    try:
        return torch_functional("conv2d", x, w, stride=(stride, 1), dilation=(dilation, 1)).shape[2]
    except RuntimeError:
        return None


# --------------------------------------------------------------------------- output_length


def _length_cases(sizes, kernels, strides, pads, dilations):
    return list(itertools.product(sizes, kernels, strides, pads, dilations))


def assert_length_matches_torch(size, kernel, stride, pad_total, dilation):
    """output_length equals torch's output size, and is < 1 exactly where torch refuses."""
    expected = torch_length(size, kernel, stride, pad_total, dilation)
    got = output_length(size, kernel, stride, pad_total, dilation)
    if expected is None:
        assert got < 1, (size, kernel, stride, pad_total, dilation)
    else:
        assert got == expected, (size, kernel, stride, pad_total, dilation)


@pytest.mark.parametrize(
    "size, kernel, stride, dilation",
    list(itertools.product(range(1, 8), range(1, 5), range(1, 4), range(1, 3))),
)
def test_output_length_matches_torch(size, kernel, stride, dilation):
    for pad_total in range(0, 6):
        assert_length_matches_torch(size, kernel, stride, pad_total, dilation)


@pytest.mark.slow
def test_output_length_matches_torch_exhaustive():
    for size, kernel, stride, pad_total, dilation in _length_cases(
        range(1, 16), range(1, 8), range(1, 6), range(0, 10), range(1, 5)
    ):
        assert_length_matches_torch(size, kernel, stride, pad_total, dilation)


def test_output_length_formula_by_counting_windows():
    """Count by hand the window starts i·s whose last tap (i·s + d·(k−1)) stays in the padded input."""
    for size, kernel, stride, pad_total, dilation in _length_cases(
        range(1, 12), range(1, 6), range(1, 5), range(0, 6), range(1, 4)
    ):
        padded = size + pad_total
        count = sum(1 for start in range(0, padded, stride) if start + dilation * (kernel - 1) < padded)
        got = output_length(size, kernel, stride, pad_total, dilation)
        assert max(got, 0) == count


# --------------------------------------------------------------------------- conv2d_output_size


def torch_output_hw(input_hw, kernel_size, stride=1, padding=0, dilation=1):
    x, w = np.zeros((1, 1, *input_hw)), np.zeros((1, 1, *kernel_size))
    return tuple(torch_functional("conv2d", x, w, stride=stride, padding=padding, dilation=dilation).shape[2:])


def test_output_size_seed_values():
    assert convscope.conv2d_output_size((32, 35), (3, 2), stride=2) == torch_output_hw((32, 35), (3, 2), 2)
    assert convscope.conv2d_output_size((32, 35), (3, 2), stride=2) == (15, 17)
    assert convscope.conv2d_output_size(4, 2, stride=2) == torch_output_hw((4, 4), (2, 2), 2)
    assert convscope.conv2d_output_size(4, 2, stride=2) == (2, 2)


def test_output_size_returns_python_int_pair():
    hw = convscope.conv2d_output_size(np.int64(9), np.int32(3), stride=np.int64(2))
    assert isinstance(hw, tuple) and len(hw) == 2
    assert all(type(v) is int for v in hw)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("seed", range(6))
def test_output_size_matches_torch(seed):
    rng = np.random.default_rng(seed)
    checked = 0
    while checked < 40:
        hw = tuple(int(v) for v in rng.integers(1, 12, 2))
        kernel = tuple(int(v) for v in rng.integers(1, 5, 2))
        dilation = tuple(int(v) for v in rng.integers(1, 3, 2))
        form = rng.integers(0, 4)
        if form == 0:
            padding, stride = int(rng.integers(0, 3)), tuple(int(v) for v in rng.integers(1, 4, 2))
        elif form == 1:
            padding, stride = tuple(int(v) for v in rng.integers(0, 3, 2)), int(rng.integers(1, 4))
        elif form == 2:
            padding, stride = "valid", tuple(int(v) for v in rng.integers(1, 4, 2))
        else:
            padding, stride = "same", 1
        # one argument of the pair given as an int now and then
        k_arg = kernel[0] if kernel[0] == kernel[1] else kernel
        hw_arg = hw[0] if hw[0] == hw[1] else hw
        try:
            expected = torch_output_hw(hw, kernel, stride, padding, dilation)
        except RuntimeError:
            with pytest.raises(ValueError, match="output would be empty"):
                convscope.conv2d_output_size(hw_arg, k_arg, stride, padding, dilation)
            continue
        assert convscope.conv2d_output_size(hw_arg, k_arg, stride, padding, dilation) == expected
        checked += 1


@pytest.mark.parametrize("hw", [(1, 1), (5, 4), (8, 13)])
@pytest.mark.parametrize("kernel", [(1, 1), (2, 3), (5, 4)])
def test_output_size_same_keeps_size_and_valid_is_zero_padding(hw, kernel):
    assert convscope.conv2d_output_size(hw, kernel, padding="same", dilation=(2, 1)) == hw
    if all(n >= k for n, k in zip(hw, kernel)):
        assert convscope.conv2d_output_size(hw, kernel, padding="valid") == convscope.conv2d_output_size(
            hw, kernel, padding=0
        )


def test_output_size_agrees_with_conv2d():
    x = np.zeros((1, 1, 11, 7))
    for kernel, stride, padding, dilation in [((3, 2), 2, 1, 1), ((1, 4), (3, 1), (0, 2), (1, 2)), (2, 1, "same", 3)]:
        w = np.zeros((1, 1, *((kernel, kernel) if isinstance(kernel, int) else kernel)))
        y = convscope.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
        assert convscope.conv2d_output_size((11, 7), kernel, stride, padding, dilation) == y.shape[2:]


# --------------------------------------------------------------------------- source_index / source_map


def np_padded_arange(size, before, after, mode):
    """np.pad of ``arange(size)``: each padded coordinate holds the index of the pixel it copies."""
    if mode == "zeros":
        return np.pad(np.arange(size), (before, after), mode="constant", constant_values=-1)
    return np.pad(np.arange(size), (before, after), mode=NP_MODE[mode])


def _map_cases():
    for mode in MODES:
        for size in range(1, 8):
            limit = max_pad(mode, size, 6)
            for before in range(0, limit + 1):
                for after in range(0, limit + 1):
                    yield mode, size, before, after


@pytest.mark.parametrize("mode", MODES)
def test_source_map_matches_np_pad(mode):
    cases = [c for c in _map_cases() if c[0] == mode]
    assert cases
    for _, size, before, after in cases:
        expected = np_padded_arange(size, before, after, mode)
        got = source_map(size, before, after, mode)
        assert got.shape == (before + size + after,)
        assert got.dtype == np.intp
        np.testing.assert_array_equal(got, expected, err_msg=str((mode, size, before, after)))


@pytest.mark.parametrize("mode", MODES)
def test_source_map_matches_torch_pad(mode):
    for _, size, before, after in (c for c in _map_cases() if c[0] == mode):
        x = np.arange(size, dtype=np.float64).reshape(1, 1, size)
        if mode == "zeros":
            padded = torch_functional("pad", x + 1, (before, after)) - 1
        else:
            padded = torch_functional("pad", x, (before, after), mode=TORCH_MODE[mode])
        expected = padded.reshape(-1).astype(np.intp)
        np.testing.assert_array_equal(source_map(size, before, after, mode), expected,
                                      err_msg=str((mode, size, before, after)))


@pytest.mark.parametrize("mode", MODES)
def test_source_index_matches_np_pad(mode):
    for size in range(1, 8):
        reach = max_pad(mode, size, 6)
        padded = np_padded_arange(size, reach, reach, mode)
        for r in range(-reach, size + reach):
            got = source_index(r, size, mode)
            expected = int(padded[r + reach])
            if expected == -1:
                assert got is None, (mode, size, r)
            else:
                assert got == expected, (mode, size, r)
                assert type(got) is int


def test_source_index_interior_is_identity():
    for mode in MODES:
        for size in range(1, 6):
            assert [source_index(r, size, mode) for r in range(size)] == list(range(size))


def test_source_index_unknown_mode():
    with pytest.raises(ValueError, match="'mirror'"):
        source_index(-1, 4, "mirror")


# --------------------------------------------------------------------------- tap_sources


def torch_tap_table(padded, kernel, stride, dilation):
    """``table[i, u]`` read off torch from a padded column whose pixel ``j`` holds ``j + 1``.

    Out channel ``u`` is a one-hot kernel at tap ``u``, so output ``(u, i)`` minus one is the pixel
    that tap reads (−1: a zero of the padding).
    """
    w = np.zeros((kernel, 1, kernel, 1))
    for u in range(kernel):
        w[u, 0, u, 0] = 1.0
    out = torch_functional("conv2d", padded, w, stride=(stride, 1), dilation=(dilation, 1))
    return (out[0, :, :, 0].T - 1).astype(np.intp)  # (out_len, kernel)


@pytest.mark.parametrize("mode", MODES)
def test_tap_sources_matches_torch(mode):
    checked = 0
    for size in range(1, 7):
        x = (np.arange(size, dtype=np.float64) + 1).reshape(1, 1, size, 1)
        limit = max_pad(mode, size, 3)
        for before, after in itertools.product(range(limit + 1), repeat=2):
            padded = torch_functional("pad", x, (0, 0, before, after), mode=TORCH_MODE[mode])
            for kernel, stride, dilation in itertools.product(range(1, 4), range(1, 3), range(1, 3)):
                out_len = output_length(size, kernel, stride, before + after, dilation)
                if out_len < 1:
                    continue
                got = tap_sources(size, before, after, mode, kernel, stride, dilation, out_len)
                expected = torch_tap_table(padded, kernel, stride, dilation)
                assert got.shape == (out_len, kernel)
                np.testing.assert_array_equal(
                    got, expected, err_msg=str((mode, size, before, after, kernel, stride, dilation))
                )
                checked += 1
    assert checked > 100


@pytest.mark.parametrize("mode", MODES)
def test_spec_tap_sources_matches_torch_2d(mode):
    """Output (i, j) through tap (u, v) reads pixel (rows[i, u], cols[j, v]), read off a torch conv."""
    H, W = 5, 4
    for kernel, stride, padding, dilation in [((3, 2), (1, 2), (1, 1), (1, 1)), ((2, 3), 1, "same", (2, 1)),
                                              ((3, 3), 2, (2, 0), 1), ((1, 2), (2, 1), (0, 1), (1, 3))]:
        spec = make_spec(kernel, stride, padding, dilation, padding_mode=mode)
        rows, cols = spec_tap_sources(spec, (H, W))
        H_out, W_out = spec.output_hw((H, W))
        kH, kW = spec.kernel_size
        assert rows.shape == (H_out, kH) and cols.shape == (W_out, kW)

        x = (np.arange(H * W, dtype=np.float64) + 1).reshape(1, 1, H, W)
        (pt, pb), (pl, pr) = spec.padding
        x = torch_functional("pad", x, (pl, pr, pt, pb), mode=TORCH_MODE[mode])
        w = np.zeros((kH * kW, 1, kH, kW))
        for u, v in itertools.product(range(kH), range(kW)):
            w[u * kW + v, 0, u, v] = 1.0
        out = torch_functional("conv2d", x, w, stride=spec.stride, dilation=spec.dilation)[0] - 1  # (kH·kW, H_out, W_out)
        for u, v in itertools.product(range(kH), range(kW)):
            r, c = rows[:, u][:, None], cols[:, v][None, :]
            expected = np.where((r < 0) | (c < 0), -1, r * W + c)
            np.testing.assert_array_equal(out[u * kW + v], expected, err_msg=str((mode, kernel, u, v)))


def test_spec_tap_sources_uses_asymmetric_padding():
    spec = ConvSpec(kernel_size=(2, 2), padding=((0, 1), (1, 0)), padding_mode="reflect")
    rows, cols = spec_tap_sources(spec, (3, 3))
    np.testing.assert_array_equal(rows, tap_sources(3, 0, 1, "reflect", 2, 1, 1, 3))
    np.testing.assert_array_equal(cols, tap_sources(3, 1, 0, "reflect", 2, 1, 1, 3))
    # reflect at the bottom: padded row 3 reads row 1; at the left: padded column 0 reads column 1
    assert rows[2].tolist() == [2, 1]
    assert cols[0].tolist() == [1, 0]
