"""The sub-pixel phase path (convscope.algorithms.subpixel): its phase table derived independently, its
refusals, and its three passes (and a transposed layer's) against torch, the reference loops and central
differences, for the kernels it is for (a DCGAN's 4×4/2), odd sizes, rectangular strides, larger strides
and the padding modes."""
from __future__ import annotations

import numpy as np
import pytest

import convscope
from convscope.algorithms import ALGORITHMS, subpixel
from oracle import (assert_close, case_spec_shape, check_against_torch, check_grads_by_central_differences,
                    check_transpose_against_torch, require_torch)


def _reached(k, s, p):
    """{tap: (phase, window cell)} straight from the definition: pixel t = s·a + b of the input gradient
    receives grad_out[i]·w[u] for every s·i + u − p = t; the 3×3 window reads grad_out[a − top + e]."""
    found = {}
    for b in range(s):
        for u in range(k):
            for a in range(6, 12):                                 # any a far from the borders
                i, r = divmod(s * a + b + p - u, s)
                if r == 0:
                    found.setdefault(u, set()).add((b, i - a))     # offset of the output read
    return found


@pytest.mark.parametrize("k, s, p", [(4, 2, 1), (4, 2, 0), (3, 2, 1), (3, 2, 0), (5, 2, 2), (8, 4, 2), (6, 3, 1),
                                     (3, 1, 1), (2, 2, 0), (1, 2, 0)])
def test_phases_put_every_tap_where_the_definition_does(k, s, p):
    top, taps = subpixel.phases(k, s, p)
    reached = _reached(k, s, p)
    cells = {u: (b, e) for b, row in enumerate(taps) for e, u in enumerate(row) if u >= 0}
    assert sorted(cells) == list(range(k))                         # every tap once
    for u, (b, e) in cells.items():
        assert reached[u] == {(b, e - top)}                        # the phase and the output it reads


@pytest.mark.parametrize("k, s, p", [(7, 2, 3), (5, 1, 2), (13, 4, 0)])
def test_phases_refuse_a_reach_beyond_three(k, s, p):
    assert subpixel.phases(k, s, p) is None


@pytest.mark.parametrize("params, why", [
    (dict(stride=2, padding=1, groups=2), "groups=2"),
    (dict(stride=2, padding=1, dilation=2), "dilation=(2, 2)"),
    (dict(stride=2, padding=3, kernel=7), "kernel_size=(7, 7)"),
])
def test_needs_names_what_it_cannot_serve(params, why):
    params = dict(params)
    k = params.pop("kernel", 4)
    spec, shape = case_spec_shape((4, 12, 12), (4, 4 // params.get("groups", 1), k, k), params)
    assert why in subpixel.needs(spec, shape)
    with pytest.raises(ValueError, match="algorithm='subpixel' cannot compute"):
        convscope.conv2d(np.zeros((1, 4, 12, 12)), np.zeros((4, 4 // params.get("groups", 1), k, k)),
                         algorithm="subpixel", **params)


# (input (N, C, H, W), weight, parameters): every phase table above, odd and even sizes
CASES = [
    ((2, 6, 16, 16), (5, 6, 4, 4), dict(stride=2, padding=1)),
    ((2, 6, 15, 17), (5, 6, 4, 4), dict(stride=2, padding=1)),
    ((2, 3, 16, 14), (4, 3, 4, 4), dict(stride=2)),
    ((1, 3, 13, 11), (4, 3, 3, 3), dict(stride=2, padding=1)),
    ((2, 4, 20, 21), (3, 4, 5, 5), dict(stride=2, padding=2)),
    ((1, 4, 17, 16), (3, 4, 8, 8), dict(stride=4, padding=2)),
    ((2, 3, 9, 10), (2, 3, 4, 3), dict(stride=(2, 1), padding=1)),
    ((2, 4, 14, 12), (3, 4, 6, 6), dict(stride=3, padding=1)),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_passes_match_torch_and_reference(case, dtype):
    require_torch()
    xs, ws, params = CASES[case]
    rng = np.random.default_rng(case)
    x, w, b = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype), \
        rng.standard_normal(ws[0]).astype(dtype)
    out = check_against_torch(x, w, b, algorithm="subpixel", **params)
    if dtype == np.float64:
        assert_close(out, convscope.conv2d(x, w, b, algorithm="reference", **params), "forward vs reference")
        g = rng.standard_normal(out.shape)
        got = convscope.conv2d_backward(g, x, w, algorithm="subpixel", **params)
        want = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
        for field in ("input", "weight", "bias"):
            assert_close(getattr(got, field), getattr(want, field), f"grad {field} vs reference")


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_other_padding_modes_pad_first(mode):
    require_torch()
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((2, 3, 11, 12)), rng.standard_normal((4, 3, 4, 4)), rng.standard_normal(4)
    check_against_torch(x, w, b, algorithm="subpixel", stride=2, padding=1, padding_mode=mode)


@pytest.mark.parametrize("case", [0, 3, 5])
def test_gradients_against_central_differences(case):
    xs, ws, params = CASES[case]
    rng = np.random.default_rng(10 + case)
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])

    def op(x, w, b, **params):
        return convscope.conv2d(x, w, b, algorithm="subpixel", **params)

    g = rng.standard_normal(op(x, w, b, **params).shape)
    grads = convscope.conv2d_backward(g, x, w, algorithm="subpixel", **params)
    check_grads_by_central_differences(op, x, w, b, g, grads, seed=case, **params)


@pytest.mark.parametrize("x_shape, w_shape, params", [
    ((2, 64, 8, 8), (64, 32, 4, 4), dict(stride=2, padding=1)),                    # a DCGAN generator block
    ((2, 6, 7, 5), (6, 3, 4, 4), dict(stride=2, padding=1, output_padding=1)),
    ((1, 5, 6, 6), (5, 4, 3, 3), dict(stride=2, padding=1, output_padding=(1, 0))),
])
def test_transposed_layers_through_it(x_shape, w_shape, params):
    """A transposed convolution's forward is the input gradient this path computes, its backward the
    forward and the weight gradient: all three against torch's ConvTranspose2d."""
    require_torch()
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape) / 8, rng.standard_normal(w_shape[1])
    check_transpose_against_torch(x, w, b, algorithm="subpixel", **params)
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    check_transpose_against_torch(x32, w32, b32, algorithm="subpixel", **params)


def test_it_is_registered_with_global_error():
    assert ALGORITHMS["subpixel"].ERROR == "global" and ALGORITHMS["subpixel"].FINITE_ONLY
