"""The 3-d fast paths that stack depth taps into channels (ndstack, ndwinograd): against torch and the
reference loops, forward and all gradients, in every feature, padding mode, dtype (float16 too) and
layout; blocks of output planes; NaN and ±Inf; the workspace limit; the planner's rows; and a property
test.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import convscope
from convscope import algorithms, planner
from convscope.algorithms import ndstack, ndwinograd
from convscope.spec import bind
from oracle import require_torch, case_arrays, peak_bytes

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

MODES = ("zeros", "reflect", "replicate", "circular")
DTYPES = (np.float64, np.float32)
LAYOUTS = ("batched", "unbatched", "zero_batch")
PATHS = ("ndstack", "ndwinograd")

# (input (C, D, H, W), weight shape, parameters): depth's stride, dilation and padding apart from the others'
CASES = [
    ((3, 5, 6, 7), (4, 3, 3, 3, 3), dict(padding=1)),
    ((4, 7, 6, 7), (6, 2, 3, 3, 2), dict(stride=(2, 1, 2), padding=(2, 1, 0), dilation=(2, 1, 1), groups=2)),
    ((3, 5, 6, 7), (4, 3, 2, 3, 3), dict(padding="same", bias=False)),
    ((3, 6, 6, 5), (4, 3, 3, 3, 3), dict(stride=(2, 1, 1), dilation=(2, 1, 1), padding=(2, 1, 1))),
    ((3, 5, 6, 7), (4, 3, 3, 1, 1), dict(padding=1, stride=(1, 2, 1))),          # 1×1 across: pointwise
    ((4, 5, 6, 7), (4, 1, 3, 3, 3), dict(padding=1, groups=4)),
    ((4, 5, 6, 7), (8, 1, 1, 3, 3), dict(padding=(0, 1, 1), groups=4)),          # k_D 1: depthwise in 2-d
    ((2, 4, 5, 5), (3, 2, 4, 3, 3), dict(padding="valid")),
    ((3, 4, 9, 10), (5, 3, 3, 5, 3), dict(stride=(1, 2, 2), padding=(1, 2, 1), dilation=(1, 1, 2))),
    ((4, 5, 6, 7), (3, 4, 3, 3, 3), dict(padding=(3, 1, 2), dilation=(2, 1, 1))),   # C_out ≤ C: flipped grad_input
]


def _serves(name, case):
    return algorithms.ALGORITHMS[name].needs(*_spec_shape(case)) is None


def _fits(mode, case):
    """Whether torch accepts ``mode`` here (reflect: padding below the size; circular: up to it)."""
    chw, w_shape, params = case
    call = bind(3, input=np.zeros((1,) + chw), weight=np.zeros(w_shape),
                **{k: v for k, v in params.items() if k != "bias"})
    for n, (p0, p1) in zip(chw[1:], call.spec.padding):
        if mode == "reflect" and max(p0, p1) >= n or mode == "circular" and max(p0, p1) > n:
            return False
    return True


def _grid():
    params = []
    for name in PATHS:
        served = [c for c in CASES if _serves(name, c)]
        for (ci, case), (di, dtype) in itertools.product(enumerate(served), enumerate(DTYPES)):
            for mi in (ci + di) % 2, (ci + di) % 2 + 2:                       # two of the four modes each
                mode = MODES[mi] if _fits(MODES[mi], case) else "zeros"
                layout = LAYOUTS[(ci + mi + di) % 3]
                params.append(pytest.param(name, case, mode, dtype, layout,
                                           id=f"{name}-{ci}-{mode}-{np.dtype(dtype).name}-{layout}"))
    return params


def test_every_path_has_cases():
    assert sum(_serves("ndwinograd", c) for c in CASES) >= 4
    assert all(_serves("ndstack", c) for c in CASES)
    flipped = [ndwinograd._flipped(*_spec_shape(c)) for c in CASES if _serves("ndwinograd", c)]
    assert any(flipped) and not all(flipped)              # both ways of ndwinograd's grad_input


def _spec_shape(case):
    chw, w_shape, params = case
    call = bind(3, input=np.zeros((2,) + chw), weight=np.zeros(w_shape),
                **{k: v for k, v in params.items() if k != "bias"})
    return call.spec, call.shape


@pytest.mark.parametrize("name, case, mode, dtype, layout", _grid())
def test_path_matches_torch(name, case, mode, dtype, layout):
    require_torch()
    from oracle import check_nd_against_torch

    x, w, b, params = case_arrays(case, layout, dtype)
    check_nd_against_torch(x, w, b, algorithm=name, padding_mode=mode, **params)


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_float16_matches_torch(name, layout):
    require_torch()
    from oracle import check_nd_against_torch

    x, w, b, params = case_arrays(CASES[0], layout, np.float16)
    check_nd_against_torch(x, w, b, algorithm=name, **params)


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("mode", MODES)
def test_blocks_of_planes_equal_the_reference_loops(name, mode, monkeypatch):
    """One output plane per block (each block's stacking, 2-d pass and un-stacking; ndwinograd's
    stacked transforms) gives the loops' numbers in float64, forward and all gradients."""
    monkeypatch.setattr(ndstack, "BLOCK_OUTPUTS", 1)
    monkeypatch.setattr(ndwinograd, "BLOCK_BYTES", 1)
    case = CASES[3] if mode != "circular" else CASES[0]
    x, w, b, params = case_arrays(case, "batched", np.float64, seed=3)
    kw = dict(params, padding_mode=mode)
    ref = convscope.conv3d(x, w, b, algorithm="reference", **kw)
    np.testing.assert_allclose(convscope.conv3d(x, w, b, algorithm=name, **kw), ref, rtol=1e-11, atol=1e-11)
    g = np.random.default_rng(4).standard_normal(ref.shape)
    fast = convscope.conv3d_backward(g, x, w, algorithm=name, **kw)
    slow = convscope.conv3d_backward(g, x, w, algorithm="reference", **kw)
    for field, a, r in zip(fast._fields, fast, slow):
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11, err_msg=field)


@pytest.mark.parametrize("case", [CASES[0], CASES[9]], ids=("unstacked_grad_input", "flipped_grad_input"))
def test_uneven_blocks_of_planes_reuse_their_scratch(case, monkeypatch):
    """Blocks of two planes with a shorter last one (the scratch buffers of the first block reused by
    the others) give the loops' numbers in float64, forward and all gradients."""
    def two_planes(pass_, spec, shape, itemsize):
        planes = ndwinograd._budget(pass_, spec, shape, itemsize)[2]
        return [(a, min(planes, a + 2)) for a in range(0, planes, 2)]

    monkeypatch.setattr(ndwinograd, "blocks", two_planes)
    x, w, b, params = case_arrays(case, "batched", np.float64, seed=5)
    ref = convscope.conv3d(x, w, b, algorithm="reference", **params)
    assert ref.shape[2] % 2 == 1
    np.testing.assert_allclose(convscope.conv3d(x, w, b, algorithm="ndwinograd", **params), ref, rtol=1e-11,
                               atol=1e-11)
    g = np.random.default_rng(6).standard_normal(ref.shape)
    fast = convscope.conv3d_backward(g, x, w, algorithm="ndwinograd", **params)
    slow = convscope.conv3d_backward(g, x, w, algorithm="reference", **params)
    for field, a, r in zip(fast._fields, fast, slow):
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11, err_msg=field)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])  # most draws fail assume()
@given(st.data())
def test_paths_agree_with_reference_property(data):
    draw = data.draw
    name = draw(st.sampled_from(PATHS))
    groups = draw(st.sampled_from((1, 2)))
    C, O = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 3)) for _ in range(3))
    s = tuple(draw(st.integers(1, 2)) for _ in range(3))
    d = tuple(draw(st.integers(1, 2)) for _ in range(3))
    p = tuple(draw(st.integers(0, 2)) for _ in range(3))
    size = tuple(draw(st.integers(1, 6)) for _ in range(3))
    mode = draw(st.sampled_from(MODES))
    N = draw(st.integers(0, 2))
    span = tuple(dd * (kk - 1) + 1 for kk, dd in zip(k, d))
    assume(all(n + 2 * pp >= sp for n, pp, sp in zip(size, p, span)))
    assume(mode == "zeros" or all(pp < n for pp, n in zip(p, size)))
    call = bind(3, input=np.zeros((N, C) + size), weight=np.zeros((O, C // groups) + k), stride=s, padding=p,
                dilation=d, groups=groups, padding_mode=mode)
    assume(algorithms.ALGORITHMS[name].needs(call.spec, call.shape) is None)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((N, C) + size)
    w = rng.standard_normal((O, C // groups) + k)
    b = rng.standard_normal(O)
    kw = dict(stride=s, padding=p, dilation=d, groups=groups, padding_mode=mode)
    ref = convscope.conv3d(x, w, b, algorithm="reference", **kw)
    np.testing.assert_allclose(convscope.conv3d(x, w, b, algorithm=name, **kw), ref, rtol=1e-10, atol=1e-10)
    g = rng.standard_normal(ref.shape)
    for a, r in zip(convscope.conv3d_backward(g, x, w, algorithm=name, **kw),
                    convscope.conv3d_backward(g, x, w, algorithm="reference", **kw)):
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- NaN and ±Inf

HUGE = 3e38
PERTURBATIONS = [("input", v) for v in (np.nan, np.inf, -np.inf, HUGE)] + \
                [("weight", v) for v in (np.nan, np.inf, -np.inf)] + \
                [("grad_output", v) for v in (np.nan, np.inf, -np.inf)]


@pytest.mark.parametrize("name, out_channels", [("ndstack", 4), ("ndwinograd", 2), ("ndwinograd", 8)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("where, value", PERTURBATIONS, ids=[f"{w}={v}" for w, v in PERTURBATIONS])
def test_nonfinite_values_land_where_torch_puts_them(name, out_channels, dtype, where, value):
    """A corner weight tap reads the depth padding (real zeros in the stacked input) and the height
    and width padding (the 2-d pass's): 0·Inf is NaN there, as in torch's native kernels.  ndwinograd's
    grad_input with 2 output channels (of 3 input ones) correlates with the flipped kernel, with 8 it
    sums the stacked taps' tiles."""
    require_torch()
    from oracle import assert_same_nonfinite, torch_native_conv_nd

    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 4, 5, 6)).astype(dtype)
    w = rng.uniform(-1, 1, (out_channels, 3, 3, 3, 3)).astype(dtype)   # |w| < 1: 3e38 · w does not overflow
    b = rng.standard_normal(out_channels).astype(dtype)
    g = rng.standard_normal((2, out_channels, 4, 5, 6)).astype(dtype)
    if where == "input":
        x[(1, 2, 2, 2, 3) if value == HUGE else (1, 2, 0, 0, 1)] = value
    elif where == "weight":
        w[0, 0, 0, 0, 0] = value
    else:
        g[1, 0, 0, 0, 0] = value
    params = dict(padding=1)
    out, (dx, dw, db) = torch_native_conv_nd(x, w, b, g, **params)
    scale = HUGE if value == HUGE and algorithms.ALGORITHMS[name].ERROR == "global" else None
    assert_same_nonfinite(convscope.conv3d(x, w, b, algorithm=name, **params), out, "forward", scale)
    grads = convscope.conv3d_backward(g, x, w, algorithm=name, **params)
    for field, want in zip(grads._fields, (dx, dw, db)):
        assert_same_nonfinite(getattr(grads, field), want, f"grad {field}", scale)


@pytest.mark.parametrize("where", ["input", "output"])
def test_ndwinograd_forward_checks_input_and_result_in_its_transforms(where, monkeypatch):
    """ndwinograd's forward sums only the weight and the bias: its transforms check the input and the
    result, and a NaN read in a later block of planes, or an overflow, sends the call to ndstack."""
    require_torch()
    from oracle import assert_same_nonfinite, recording_all_finite, torch_native_conv_nd

    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 6, 9, 10)).astype(np.float32)
    w = (rng.uniform(-1, 1, (5, 4, 3, 3, 3)) / 8).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    if where == "input":
        x[1, 3, 5, 8, 9] = np.nan                                    # the last plane's last pixel
    else:
        x[1] *= np.float32(3e36)                                     # finite; the transforms overflow
    sizes = recording_all_finite(monkeypatch)
    got = convscope.conv3d(x, w, b, padding=1, algorithm="ndwinograd")
    assert x.size not in sizes and got.size not in sizes            # only the weight and the bias were summed
    sizes.clear()
    convscope.conv3d(x[:1], w, b, padding=1, algorithm="ndwinograd")
    assert sorted(sizes) == sorted({w.size, b.size})                 # nothing else, on a finite call
    want, _ = torch_native_conv_nd(x, w, b, None, padding=1)
    assert_same_nonfinite(got, want, f"{where}: forward", np.abs(want[np.isfinite(want)]).max())
    call = bind(3, input=x, weight=w, padding=1)
    spec, shape = call.spec, call.shape
    src, front, top, left = ndwinograd._source(x, spec)
    plane_blocks = [(a, a + 1) for a in range(shape.out_spatial[0])]   # one plane a block: the NaN in the last
    args = (src, ndstack._weight2(w, shape), 1, 1, (front, top, left), shape.out_spatial, b, plane_blocks)
    assert ndwinograd._correlate(*args, finite_only=True) is None
    assert not np.isfinite(ndwinograd._correlate(*args)).all()


@pytest.mark.parametrize("out_channels", [3, 6])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("where", ["grad_output", "input", "overflow"])
def test_ndwinograd_backward_checks_its_operands_in_its_transforms(out_channels, mode, where, monkeypatch):
    """ndwinograd's gradients sum only the weight, the weight gradient and an input gradient that was
    folded (padding other than zeros) or summed from the stacked taps (more output channels than input
    ones): the transforms check grad_output and x.  A NaN in the last block of planes, or finite values
    whose products overflow, sends the pass to ndstack, and the gradients land where torch puts them;
    a finite call sums nothing else."""
    require_torch()
    from oracle import assert_same_nonfinite, recording_all_finite, torch_native_conv_nd

    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 4, 6, 9, 10)).astype(np.float32)
    w = (rng.uniform(-1, 1, (out_channels, 4, 3, 3, 3)) / 8).astype(np.float32)
    b = rng.standard_normal(out_channels).astype(np.float32)
    g = rng.standard_normal((2, out_channels, 6, 9, 10)).astype(np.float32)
    if where == "grad_output":
        g[1, out_channels - 1, 5, 8, 9] = np.nan                     # the last plane's last pixel
    elif where == "input":
        x[1, 3, 5, 8, 9] = np.nan
    else:
        g[1] *= np.float32(3e36)                                     # finite; the transforms overflow
    params = dict(padding=1, padding_mode=mode)
    monkeypatch.setattr(ndwinograd, "BLOCK_BYTES", 1)                # one plane a block
    grads = convscope.conv3d_backward(g, x, w, algorithm="ndwinograd", **params)
    _, (dx, dw, db) = torch_native_conv_nd(x, w, b, g, **params)
    for field, want in zip(grads._fields, (dx, dw, db)):
        finite = want[np.isfinite(want)]
        assert_same_nonfinite(getattr(grads, field), want, f"{where}: grad {field}",
                              np.abs(finite).max() if finite.size else None)
    sizes = recording_all_finite(monkeypatch)
    convscope.conv3d_backward(g[:1], x[:1], w, algorithm="ndwinograd", **params)
    summed_dx = mode != "zeros" or out_channels > x.shape[1]
    assert sorted(sizes) == sorted([w.size, w.size] + ([x[:1].size] if summed_dx else []))   # a finite call
    call = bind(3, input=x, weight=w, padding=1, padding_mode=mode)
    spec, shape = call.spec, call.shape
    with np.errstate(all="ignore"):                                  # as the runner calls the passes
        if where == "input":
            assert ndwinograd._stacked_grad_weight(g, x, spec, shape, finite_only=True) is None
        else:
            pass_ = ndwinograd._flipped_input_gradient if ndwinograd._flipped(spec, shape) \
                else ndwinograd._unstacked_input_gradient
            assert pass_(g, w, spec, shape, finite_only=True) is None
        if where != "input":                                         # the overflow: in ∂L/∂w's products
            assert ndwinograd._stacked_grad_weight(g, x, spec, shape, finite_only=True) is None


# --------------------------------------------------------------------------- the workspace limit

MiB = 1 << 20


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("limit", [1 * MiB, 64 * MiB])
def test_forward_stays_under_the_limit_with_the_same_numbers(name, limit):
    """Peak extra memory ≤ input + output + limit; under a small limit the planes run in several
    blocks and the 2-d pass in slices, with the same numbers."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 12, 24, 24)).astype(np.float32)
    w = (rng.standard_normal((16, 16, 3, 3, 3)) / 12).astype(np.float32)
    whole = convscope.conv3d(x, w, padding=1, algorithm=name)
    call = bind(3, input=x, weight=w, padding=1)
    with convscope.workspace_limit(limit):
        if name == "ndwinograd":
            blocks = ndwinograd.blocks("forward", call.spec, call.shape, 4)
        else:
            blocks, _ = ndstack._blocks("forward", call.spec, call.shape, 4)
        y, peak = peak_bytes(lambda: convscope.conv3d(x, w, padding=1, algorithm=name))
    assert peak <= x.nbytes + y.nbytes + limit, f"peak {peak / MiB:.1f} MiB"
    assert (len(blocks) == 12) == (limit == MiB)             # one plane per block under the small limit
    np.testing.assert_allclose(y, whole, rtol=1e-5, atol=1e-5 * float(np.abs(whole).max()))


@pytest.mark.parametrize("name", PATHS)
def test_backward_under_a_small_limit_gives_the_same_numbers(name):
    x, w, b, params = case_arrays(((8, 6, 12, 12), (8, 8, 3, 3, 3), dict(padding=1)), "batched", np.float64)
    g = np.random.default_rng(1).standard_normal(convscope.conv3d(x, w, b, **params).shape)
    whole = convscope.conv3d_backward(g, x, w, algorithm=name, **params)
    with convscope.workspace_limit(64 << 10):
        call = bind(3, input=x, weight=w, **params)
        if name == "ndwinograd":
            assert all(len(ndwinograd.blocks(p, call.spec, call.shape, 8)) > 1 for p in ("grad_input", "grad_weight"))
        else:
            assert len(ndstack._blocks("grad_input", call.spec, call.shape, 8)[0]) > 1
        cut = convscope.conv3d_backward(g, x, w, algorithm=name, **params)
    for a, r in zip(cut, whole):
        np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- the planner


@pytest.mark.parametrize("x_shape, w_shape, params, expected", [
    ((2, 64, 8, 28, 28), (128, 64, 3, 3, 3), dict(padding=1), "ndwinograd"),       # C3D
    ((1, 32, 32, 32, 32), (32, 32, 3, 3, 3), dict(padding=1), "ndwinograd"),       # 3-D U-Net, 96 stacked channels
    ((1, 128, 8, 8, 8), (128, 128, 3, 3, 3), dict(padding=1), "ndwinograd"),
    ((2, 64, 8, 28, 28), (64, 64, 3, 1, 1), dict(padding=(1, 0, 0)), "ndstack"),   # I3D's temporal 3×1×1
    ((2, 64, 8, 28, 28), (64, 64, 3, 3, 3), dict(padding=1, stride=(1, 2, 2)), "ndstack"),   # no Winograd
    ((2, 4, 8, 8, 8), (8, 4, 3, 3, 3), dict(padding=1), "ndgemm"),                 # small: vol2col's fewer passes
    ((2, 8, 8, 8, 8), (8, 8, 3, 3, 3), dict(padding=1), "ndwinograd"),             # 24 stacked channels
    ((2, 3, 16, 56, 56), (64, 3, 3, 3, 3), dict(padding=1), "ndstack"),            # C3D's first layer: 9
    ((1, 64, 8, 4, 4), (64, 64, 3, 3, 3), dict(padding=1), "ndstack"),             # one tile per plane
])
def test_planner_rows(x_shape, w_shape, params, expected):
    p = convscope.plan(x_shape, w_shape, **params)
    assert {c.algorithm for c in p} == {expected}
    if expected != "ndgemm":
        assert "depth taps stacked into channels" in p.forward.reason


def test_precision_highest_keeps_3d_convolutions_on_local_paths():
    with convscope.conv_precision("highest"):
        p = convscope.plan((1, 32, 32, 32, 32), (32, 32, 3, 3, 3), padding=1)
    assert {c.algorithm for c in p} == {"ndstack"}
    assert all(algorithms.ALGORITHMS[c.algorithm].ERROR == "local" for c in p)


def test_forcing_ndwinograd_where_it_cannot_run_names_the_rule():
    x, w = np.zeros((1, 2, 4, 6, 6)), np.zeros((2, 2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"algorithm='ndwinograd' cannot compute this convolution: it needs a "
                                         r"3×3 kernel, stride 1, dilation 1 and groups 1 across height and "
                                         r"width, got stride=\(2, 2\)"):
        convscope.conv3d(x, w, stride=(1, 2, 2), algorithm="ndwinograd")
    assert planner.candidates(*_spec_shape_3d()) == ("ndgemm", "ndstack", "ndwinograd")


def _spec_shape_3d():
    call = bind(3, input=np.zeros((1, 64, 4, 12, 12)), weight=np.zeros((64, 64, 3, 3, 3)), padding=1)
    return call.spec, call.shape
