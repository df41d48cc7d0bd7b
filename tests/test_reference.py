"""The readable reference loops (:mod:`convscope.reference`) on their own, in 1, 2 and 3 dimensions.

They are the oracle the fast paths are tested against, so they are checked here without any other
path: called directly with a spec and shape (no planner, no workspace slicing), against torch for
the forward and the three gradients over every padding mode, stride, dilation and groups, and
against central differences of their own forward (which needs no torch).
"""
from __future__ import annotations

import numpy as np
import pytest

from convscope import reference
from oracle import (PADDING_MODES, assert_close, case_spec_shape, central_differences, mode_fits, require_torch,
                    torch_conv_nd)

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

# per number of spatial dimensions: (input (C, *spatial), weight shape, keyword arguments)
CASES = {
    1: [
        ((3, 9), (4, 3, 3), dict(padding=1)),
        ((4, 11), (6, 2, 3), dict(stride=2, padding=2, dilation=2, groups=2)),
        ((2, 8), (2, 1, 4), dict(padding="same", groups=2)),
        ((3, 7), (2, 3, 2), dict(stride=3, padding=1, dilation=3)),
    ],
    2: [
        ((3, 6, 7), (4, 3, 3, 3), dict(padding=1)),
        ((4, 8, 7), (6, 2, 3, 2), dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2)),
        ((3, 6, 5), (3, 1, 3, 3), dict(padding="same", dilation=(2, 1), groups=3)),
        ((2, 5, 6), (3, 2, 1, 2), dict(stride=2, padding=(0, 1))),
    ],
    3: [
        ((2, 4, 5, 4), (3, 2, 3, 3, 3), dict(padding=1)),
        ((4, 5, 4, 6), (4, 2, 2, 3, 2), dict(stride=(1, 2, 2), padding=(1, 1, 0), dilation=(2, 1, 1), groups=2)),
        ((2, 4, 4, 5), (4, 1, 3, 2, 3), dict(padding="same", groups=2)),
    ],
}
N = 2
# small cases for central differences (each difference is two full forwards), every mode fits them
SMALL = {
    1: ((2, 6), (4, 1, 3), dict(stride=2, padding=2, dilation=2, groups=2)),
    2: ((2, 5, 4), (2, 2, 3, 2), dict(stride=(1, 2), padding=(1, 2), dilation=(2, 1))),
    3: ((2, 3, 4, 3), (2, 1, 2, 3, 2), dict(padding=1, groups=2)),
}


def _grid():
    params = []
    for nd, cases in CASES.items():
        for ci, case in enumerate(cases):
            for mode in PADDING_MODES:
                if mode_fits(mode, *case):
                    dtypes = (np.float64, np.float32) if ci == 0 else (np.float64,)
                    for dtype in dtypes:
                        params.append(pytest.param(nd, case, mode, dtype,
                                                   id=f"{nd}d-{ci}-{mode}-{np.dtype(dtype).name}"))
    return params


GRID = _grid()


def _problem(case, mode, dtype=np.float64, seed=0):
    """(x, w, b, g, params, spec, shape): arrays for a case in ``mode`` (g shaped like the output)."""
    chw, w_shape, params = case
    params = dict(params, padding_mode=mode)
    spec, shape = case_spec_shape(chw, w_shape, params, N=N)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N,) + chw).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    g = rng.standard_normal((N, w_shape[0]) + tuple(shape.out_spatial)).astype(dtype)
    return x, w, b, g, params, spec, shape


def test_every_dimension_and_mode_is_covered():
    covered = {(p.values[0], p.values[2]) for p in GRID}
    assert covered == {(nd, mode) for nd in CASES for mode in PADDING_MODES}


@pytest.mark.parametrize("nd, case, mode, dtype", GRID)
def test_reference_matches_torch(nd, case, mode, dtype):
    """Forward, ∂input, ∂weight and the bias (whose gradient is Σ grad_output: the forward adds it
    once to every output of its channel) against torch's layer."""
    require_torch()
    x, w, b, g, params, spec, shape = _problem(case, mode, dtype)
    want_out, (want_dx, want_dw, want_db) = torch_conv_nd(x, w, b, g, **params)
    out = reference.forward(x, w, b, spec, shape)
    assert_close(out, want_out, "forward")
    assert_close(reference.grad_input(g, w, spec, shape), want_dx, "grad input")
    assert_close(reference.grad_weight(g, x, spec, shape), want_dw, "grad weight")
    shift = out.astype(np.float64) - reference.forward(x, w, None, spec, shape)      # the bias, broadcast
    assert_close(shift.astype(dtype), np.broadcast_to(b.reshape((1, -1) + (1,) * nd), out.shape), "bias")
    axes = (0,) + tuple(range(2, nd + 2))
    assert_close(g.sum(axis=axes, dtype=np.float64).astype(dtype), want_db, "grad bias")


def _indices(shape, count, seed):
    """The first and last entries (corners read through the padding) and ``count`` drawn ones."""
    rng = np.random.default_rng(seed)
    return [(0,) * len(shape), tuple(n - 1 for n in shape)] + \
        [tuple(int(rng.integers(0, n)) for n in shape) for _ in range(count)]


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("nd", sorted(CASES))
def test_reference_gradients_against_central_differences(nd, mode):
    """∂L/∂x and ∂L/∂w of ``L = Σ forward(x, w, b) · g`` at sampled entries, by central differences
    of the reference's own forward: the backward loops are the adjoints of the forward loops."""
    assert mode_fits(mode, *SMALL[nd])
    x, w, b, g, _, spec, shape = _problem(SMALL[nd], mode, seed=3)

    def loss_of_x(a):
        return float(np.sum(reference.forward(a, w, b, spec, shape) * g))

    def loss_of_w(a):
        return float(np.sum(reference.forward(x, a, b, spec, shape) * g))

    for name, a, loss, analytic in (("input", x, loss_of_x, reference.grad_input(g, w, spec, shape)),
                                    ("weight", w, loss_of_w, reference.grad_weight(g, x, spec, shape))):
        indices = _indices(a.shape, 6, seed=nd)
        numeric = central_differences(loss, a, indices)
        exact = np.array([analytic[i] for i in indices])
        scale = max(1.0, float(np.abs(analytic).max()))
        assert np.abs(numeric - exact).max() <= 1e-6 * scale, (name, numeric, exact)
