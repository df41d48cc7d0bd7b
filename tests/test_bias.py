"""The channel bias written over an output (``algorithms.kernels.channel_bias``): compiled and NumPy's
broadcast give the same values, NaN and ±Inf included, and the paths that use it keep torch's numbers."""
from __future__ import annotations

import numpy as np
import pytest

import convscope
from convscope.algorithms import kernels, ndgemm
from oracle import assert_same_nonfinite, require_torch

DTYPES = [np.float32, np.float64]


def _with_nonfinite(a, rng):
    flat = a.reshape(-1)
    for value in (np.nan, np.inf, -np.inf):
        flat[rng.integers(flat.size)] = value
    return a


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("add", [False, True], ids=["fill", "add"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_channel_bias_matches_broadcast(compiled, add, dtype, monkeypatch):
    monkeypatch.setattr(kernels, "BIAS_COMPILED_FROM", 1 if compiled else 10**12)
    rng = np.random.default_rng(0)
    b = _with_nonfinite(rng.standard_normal(6).astype(dtype), rng)
    b_before = b.copy()
    for shape, axes in (((3, 6, 5, 7), 1), ((3, 2, 3, 35), 2), ((2, 6, 3, 4, 5), 1)):
        out = _with_nonfinite(rng.standard_normal(shape).astype(dtype), rng)
        column = b.reshape(shape[1:1 + axes] + (1,) * (len(shape) - 1 - axes))
        with np.errstate(invalid="ignore"):
            expected = out + column if add else np.broadcast_to(column, shape).copy()
        got = kernels.channel_bias(out, b, add=add, channel_axes=axes)
        assert got is out                                           # in place
        np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(b, b_before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_channel_bias_on_a_strided_view_writes_the_view(dtype, monkeypatch):
    """A view that is not C-contiguous takes NumPy's broadcast and is written where it lies."""
    monkeypatch.setattr(kernels, "BIAS_COMPILED_FROM", 1)
    base = np.zeros((2, 3, 4, 8), dtype=dtype)
    view = base[:, :, :, ::2]
    b = np.array([1.0, -2.0, 3.0], dtype=dtype)
    kernels.channel_bias(view, b, add=True)
    expected = np.zeros_like(base)
    expected[:, :, :, ::2] = b.reshape(3, 1, 1)
    np.testing.assert_array_equal(base, expected)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_transposed_bias_as_torch(compiled, dtype, monkeypatch):
    """conv_transpose2d's bias, added over its output by either path, with NaN and ±Inf in the bias and
    the input, lands as torch's; the caller's arrays are left as they were."""
    require_torch()
    import torch

    monkeypatch.setattr(kernels, "BIAS_COMPILED_FROM", 1 if compiled else 10**12)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 5, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    b[1] = np.inf
    x[1, 2, 3, 4] = np.nan
    before = [a.copy() for a in (x, w, b)]
    for params in (dict(stride=2, padding=1, output_padding=1), dict(stride=1), dict(stride=2)):
        got = convscope.conv_transpose2d(x, w, b, **params)
        want = torch.nn.functional.conv_transpose2d(*(torch.from_numpy(a.astype(np.float64)) for a in (x, w, b)),
                                                    **params).numpy()
        assert got.dtype == dtype
        assert_same_nonfinite(got, want.astype(dtype), "forward")
    for a, a0 in zip((x, w, b), before):
        np.testing.assert_array_equal(a, a0)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])
def test_ndgemm_bias_as_torch(compiled, monkeypatch):
    """ndgemm's output starts as the bias (either path) and the products are added to it: torch's numbers."""
    require_torch()
    import torch

    monkeypatch.setattr(kernels, "BIAS_COMPILED_FROM", 1 if compiled else 10**12)
    calls, fill = [], kernels.channel_bias
    monkeypatch.setattr(ndgemm, "channel_bias", lambda *a, **k: calls.append(1) or fill(*a, **k))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5, 6))
    w = rng.standard_normal((5, 3, 2, 3, 2))
    b = rng.standard_normal(5)
    b[2] = -np.inf
    got = convscope.conv3d(x, w, b, padding=1, algorithm="ndgemm")
    want = torch.nn.functional.conv3d(*(torch.from_numpy(a) for a in (x, w, b)), padding=1).numpy()
    assert calls
    assert_same_nonfinite(got, want, "forward")
