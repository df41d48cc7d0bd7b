"""The depthwise flat kernels (3×3, stride 1 and 2, planes read in place) and plane kernels (stride
phases flattened on one row pitch, forced) against torch and the reference: every stride, dilation,
padding and padding mode, channel multipliers, narrow planes (index maps) and wide ones (row copies),
unbatched and empty batches, NaN and Inf where torch puts them, the workspace limit, and hypothesis
over random configurations; and the automatic layout choice.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from oracle import require_torch  # noqa: E402
require_torch()

import convscope  # noqa: E402
from convscope.algorithms import depthwise  # noqa: E402
from convscope.algorithms.kernels import depthwise as kernels  # noqa: E402
from convscope.spec import check_shapes, make_spec  # noqa: E402
from oracle import (assert_close, assert_same_nonfinite, case_arrays, check_against_torch, peak_bytes,  # noqa: E402
                    torch_native_conv2d)

# ((C, H, W), weight shape, params): narrow planes take the index maps, wide ones the row copies
CASES = [
    ((3, 9, 8), (3, 1, 3, 3), dict(padding=1, groups=3)),
    ((3, 9, 8), (6, 1, 3, 3), dict(padding=1, groups=3, stride=2)),                    # multiplier 2
    ((2, 13, 11), (2, 1, 5, 5), dict(padding=(2, 1), groups=2, stride=(2, 3), dilation=(1, 2))),
    ((4, 7, 7), (4, 1, 3, 3), dict(groups=4, stride=2, dilation=2)),
    ((1, 5, 5), (1, 1, 3, 3), dict(padding=3)),                           # mostly border
    ((2, 12, 12), (6, 1, 4, 4), dict(padding=2, groups=2, stride=3)),                  # even kernel
    ((2, 9, 9), (2, 1, 1, 1), dict(groups=2, stride=2)),                              # taps on one phase
    ((2, 20, 40), (4, 1, 3, 3), dict(padding=1, groups=2)),                           # wide: row copies
    ((2, 21, 37), (2, 1, 3, 3), dict(padding=(1, 2), groups=2, stride=2, dilation=(2, 1))),
    ((2, 10, 34), (2, 1, 7, 7), dict(padding="same", groups=2)),
]
MODES = ("zeros", "reflect", "replicate", "circular")


@pytest.fixture
def planes(monkeypatch):
    monkeypatch.setattr(depthwise, "layout", lambda spec, shape, pass_="forward": "planes")


def _modes(case):
    (_, H, W), (_, _, kH, kW), params = case
    pad = params.get("padding", 0)
    if pad == "same" or max((pad,) if isinstance(pad, int) else pad) < min(H, W):
        return MODES
    return ("zeros", "replicate")           # reflect/circular need padding smaller than the input


PARAMS = [pytest.param(case, mode, id=f"p{i}-{mode}") for i, case in enumerate(CASES) for mode in _modes(case)]


@pytest.mark.parametrize("case, mode", PARAMS)
def test_planes_match_the_reference_and_torch(case, mode, planes):
    x, w, b, params = case_arrays(case, "batched", np.float64)
    params["padding_mode"] = mode
    want = convscope.conv2d(x, w, b, algorithm="reference", **params)
    assert_close(convscope.conv2d(x, w, b, algorithm="depthwise", **params), want, "forward")
    g = np.random.default_rng(2).standard_normal(want.shape)
    got = convscope.conv2d_backward(g, x, w, algorithm="depthwise", **params)
    ref = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    for field in ("input", "weight", "bias"):
        assert_close(getattr(got, field), getattr(ref, field), field)
    check_against_torch(x, w, b, algorithm="depthwise", **params)
    check_against_torch(*(a.astype(np.float32) for a in (x, w, b)), algorithm="depthwise", **params)


@pytest.mark.parametrize("shape_kind", ["unbatched", "zero_batch"])
def test_planes_unbatched_and_empty_batch(shape_kind, planes):
    x, w, b, params = case_arrays(CASES[1], shape_kind, np.float32)
    check_against_torch(x, w, b, algorithm="depthwise", **params)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[7]], ids=["narrow", "multiplier", "wide"])
@pytest.mark.parametrize("where", ["input", "weight", "grad_output"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_planes_put_nonfinite_values_where_torch_does(case, where, value, planes):
    """One NaN or ±Inf at a border pixel (input, grad_output) or a corner tap (weight): the planes'
    unused columns must not turn it into NaN where torch has a number (a non-finite weight makes
    grad_input take the rows, a non-finite input plane makes grad_weight sum its real columns)."""
    x, w, b, params = case_arrays(case, "batched", np.float32, seed=4)
    y = convscope.conv2d(x, w, b, algorithm="reference", **params)
    g = np.random.default_rng(6).standard_normal(y.shape).astype(np.float32)
    if where == "input":
        x[1, -1, 2, -1] = value          # the last column: the unused columns past a row read it
    elif where == "weight":
        w[0, 0, 0, 0] = value
    else:
        g[1, 0, 0, 0] = value
    out, (dx, dw, db) = torch_native_conv2d(x, w, b, g, **params)
    assert_same_nonfinite(convscope.conv2d(x, w, b, algorithm="depthwise", **params), out, "forward")
    grads = convscope.conv2d_backward(g, x, w, algorithm="depthwise", **params)
    for field, want in zip(grads._fields, (dx, dw, db)):
        assert_same_nonfinite(getattr(grads, field), want, f"grad {field}")


@pytest.mark.parametrize("limit", [16 << 10, 320 << 10])
def test_planes_stay_under_the_workspace_limit(limit, planes):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 16, 24, 20)).astype(np.float32)
    w = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    with convscope.workspace_limit(limit):
        y, peak = peak_bytes(lambda: convscope.conv2d(x, w, padding=1, groups=16, algorithm="depthwise"))
    assert peak <= x.nbytes + y.nbytes + limit, f"peak {peak / 2**10:.0f} KiB"
    assert_close(y, convscope.conv2d(x, w, padding=1, groups=16, algorithm="reference"))


def _index_case(k, stride, padding, dilation, hw):
    spec = make_spec(k, stride, padding, dilation, 1, "zeros")
    return spec, check_shapes(spec, (1, 1) + hw, (1, 1) + k)


def test_plane_geometry_and_index_maps():
    """The phases' geometry of a 5×5 stride-(2, 3) dilation-(1, 2) layer and of a 3×3 stride-2 one
    whose last row and column are never read, and where the index map puts each pixel, from the
    definition: padded (p, q) = (r + pt, s + pl) sits in phase (p mod sH, q mod sW) at row p div sH,
    column q div sW; an unread pixel goes to the dump slot."""
    spec, shape = _index_case((5, 5), (2, 3), (2, 1), (1, 2), (13, 11))
    assert (shape.H_out, shape.W_out) == (7, 2)
    assert depthwise.plane_geometry(spec, shape) == (6 * 2 + 4 + 1, 1 * 3 + 8 + 1, 9, 4, 2, 2)
    spec2, shape2 = _index_case((3, 3), (2, 2), (0, 0), (1, 1), (8, 8))
    assert depthwise.plane_geometry(spec2, shape2) == (7, 7, 4, 4, 1, 1)
    for (sp, sh), (sH, sW), (pt, pl) in [((spec, shape), (2, 3), (2, 1)), ((spec2, shape2), (2, 2), (0, 0))]:
        Hn, Wn, Hq, Wq, _, _ = depthwise.plane_geometry(sp, sh)
        plen = Hq * Wq + 32
        dump = sH * sW * plen
        idx = kernels._plane_index(sh.H, sh.W, Hn, Wn, Wq, sH, sW, pt, pl, plen, dump).reshape(sh.H, sh.W)
        for r in range(sh.H):
            for s_ in range(sh.W):
                p, q = r + pt, s_ + pl
                want = dump if p >= Hn or q >= Wn else ((p % sH) * sW + q % sW) * plen + (p // sH) * Wq + q // sW
                assert idx[r, s_] == want, (r, s_)
    assert (kernels._plane_index(8, 8, 7, 7, 4, 2, 2, 0, 0, 48, 192) == 192).sum() == 15   # row 7, column 7


def shape_of(c, hw, stride=1, m=1):
    """(spec, shape) of a batch-8 depthwise 3×3 layer, padding 1, with c channels of hw², multiplier m."""
    spec = make_spec((3, 3), stride, 1, 1, c, "zeros")
    return spec, check_shapes(spec, (8, c, hw, hw), (c * m, 1, 3, 3))


def test_layout_choice():
    """Channel blocks for 7² stride-1 forward and grad_input (multiplier 1), planes for grad_weight and
    the rest, rows beyond the planes' size; plan() names them."""
    assert depthwise.layout(*shape_of(960, 7)) == "flat"
    assert depthwise.layout(*shape_of(960, 7), "grad_weight") == "flat"
    assert depthwise.layout(*shape_of(960, 7, m=2)) == "flat"
    assert depthwise.layout(*shape_of(960, 7, m=2), "grad_input") == "planes"
    assert depthwise.layout(*shape_of(32, 112)) == "flat"
    assert depthwise.layout(*shape_of(576, 14, stride=2)) == "flat"
    assert depthwise.layout(*shape_of(576, 14, stride=2), "grad_input") == "planes"
    assert depthwise.layout(*shape_of(576, 14, stride=2), "grad_weight") == "planes"
    assert depthwise.layout(*shape_of(96, 112, stride=2)) == "planes"
    assert depthwise.layout(*shape_of(8, 512, stride=2), "grad_input") == "rows"
    spec = make_spec((3, 3), 1, 0, 1, 960, "zeros")                       # 7² → 5²: not the input's size
    assert depthwise.layout(spec, check_shapes(spec, (8, 960, 7, 7), (960, 1, 3, 3))) == "blocks"


# ((C, H, W), weight shape, params) served by the flat kernels: 3×3, stride 1, outputs the input's size
FLAT_CASES = [
    ((3, 9, 8), (3, 1, 3, 3), dict(padding=1, groups=3)),
    ((2, 7, 11), (4, 1, 3, 3), dict(padding=1, groups=2)),                           # multiplier 2
    ((2, 12, 10), (2, 1, 3, 3), dict(padding="same", dilation=2, groups=2)),
    ((2, 10, 12), (2, 1, 3, 3), dict(padding=(2, 1), dilation=(2, 1), groups=2)),
    ((3, 1, 1), (3, 1, 3, 3), dict(padding=1, groups=3)),                            # every tap wraps but one
    ((2, 2, 17), (2, 1, 3, 3), dict(padding=1, groups=2, bias=False)),
    ((3, 9, 8), (3, 1, 3, 3), dict(padding=1, groups=3, stride=2)),                  # stride 2: forward
    ((2, 14, 13), (4, 1, 3, 3), dict(padding=(2, 0), dilation=(2, 1), groups=2, stride=2)),
    ((2, 3, 1), (2, 1, 3, 3), dict(padding=1, groups=2, stride=2)),
]


def _spec_shape(x, w, params):
    """(spec, shape) of a 3×3 zero-padded case's arrays and params."""
    spec = make_spec((3, 3), params.get("stride", 1), params["padding"], params.get("dilation", 1),
                     params["groups"], "zeros")
    return spec, check_shapes(spec, x.shape, w.shape)


def _flat_layouts(x, w, params):
    return [depthwise.layout(*_spec_shape(x, w, params), p) for p in ("forward", "grad_input", "grad_weight")]


@pytest.mark.parametrize("case", FLAT_CASES, ids=[f"f{i}" for i in range(len(FLAT_CASES))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_flat_match_the_reference_and_torch(case, dtype):
    x, w, b, params = case_arrays(case, "batched", dtype)
    layouts = _flat_layouts(x, w, params)
    stride1 = params.get("stride", 1) == 1
    assert layouts == ["flat", "flat" if stride1 and w.shape[0] == x.shape[1] else "planes",
                       "flat" if stride1 else "planes"], layouts
    want = convscope.conv2d(x, w, b, algorithm="reference", **params)
    assert_close(convscope.conv2d(x, w, b, algorithm="depthwise", **params), want, "forward")
    g = np.random.default_rng(2).standard_normal(want.shape).astype(dtype)
    got = convscope.conv2d_backward(g, x, w, algorithm="depthwise", **params)
    ref = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    for field in ("input", "weight"):
        assert_close(getattr(got, field), getattr(ref, field), field)
    check_against_torch(x, w, b, algorithm="depthwise", **params)


def _with_one_nonfinite(case, seeds, where, index, value):
    """(x, w, b, grad_output, params, torch's native output and gradients) for a float32 case with
    ``value`` at ``index`` of the input or grad_output (the weight: at its channel index[1], tap
    (index[2] % 3, index[3] % 3))."""
    x, w, b, params = case_arrays(case, "batched", np.float32, seed=seeds[0])
    y = convscope.conv2d(x, w, b, algorithm="reference", **params)
    g = np.random.default_rng(seeds[1]).standard_normal(y.shape).astype(np.float32)
    if where == "input":
        x[index] = value
    elif where == "weight":
        w[index[1], 0, index[2] % 3, index[3] % 3] = value
    else:
        g[index] = value
    return x, w, b, g, params, torch_native_conv2d(x, w, b, g, **params)


@pytest.mark.parametrize("where", ["input", "weight", "grad_output"])
@pytest.mark.parametrize("spot", ["first", "edge", "last"])
@pytest.mark.parametrize("stride, value", [(1, np.nan), (1, np.inf), (2, np.inf)])
def test_flat_put_nonfinite_values_where_torch_does(where, spot, stride, value):
    """One NaN or Inf in the first plane's corner, at the end of an inner row (the flat runs of the
    next row wrap onto it), or in the last plane's corner: only the outputs (and gradients) whose
    windows hold it may change."""
    case = ((4, 6, 7), (4, 1, 3, 3), dict(padding=1, groups=4, stride=stride))
    index = {"first": (0, 0, 0, 0), "edge": (1, 2, 2, -1), "last": (-1, -1, -1, -1)}[spot]
    x, w, b, g, params, (out, (dx, dw, db)) = _with_one_nonfinite(case, (4, 6), where, index, value)
    assert_same_nonfinite(convscope.conv2d(x, w, b, algorithm="depthwise", **params), out, "forward")
    grads = convscope.conv2d_backward(g, x, w, algorithm="depthwise", **params)
    for field, want in zip(grads._fields, (dx, dw, db)):
        assert_same_nonfinite(getattr(grads, field), want, f"grad {field}")


def test_flat_stays_under_the_workspace_limit():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 16, 24, 20)).astype(np.float32)
    w = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    with convscope.workspace_limit(16 << 10):
        convscope.conv2d(x, w, padding=1, groups=16, algorithm="depthwise")       # the kernels loaded
        y, peak = peak_bytes(lambda: convscope.conv2d(x, w, padding=1, groups=16, algorithm="depthwise"))
    assert peak <= x.nbytes + y.nbytes + (16 << 10), f"peak {peak / 2**10:.0f} KiB"
    assert_close(y, convscope.conv2d(x, w, padding=1, groups=16, algorithm="reference"))


@pytest.mark.parametrize("shape_kind", ["unbatched", "zero_batch"])
@pytest.mark.parametrize("case", [FLAT_CASES[0], FLAT_CASES[6]], ids=["s1", "s2"])
def test_flat_unbatched_and_empty_batch(shape_kind, case):
    x, w, b, params = case_arrays(case, shape_kind, np.float32)
    check_against_torch(x, w, b, algorithm="depthwise", **params)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=st.integers(1, 3), m=st.integers(1, 2), h=st.integers(1, 9), w_=st.integers(1, 9),
       dh=st.integers(1, 2), dw=st.integers(1, 2), ph=st.integers(0, 2), pw=st.integers(0, 2),
       stride=st.sampled_from([1, 2]), seed=st.integers(0, 99))
def test_flat_property_against_the_reference(c, m, h, w_, dh, dw, ph, pw, stride, seed):
    """Random 3×3 layers of the flat kernels' kinds (stride 1 with the input's size out, whatever the
    dilation; stride 2, whatever the padding) against the reference loops, float64, all passes."""
    pad = (dh, dw) if stride == 1 else (ph, pw)
    assume(h + 2 * pad[0] > 2 * dh and w_ + 2 * pad[1] > 2 * dw)          # a non-empty output
    spec = make_spec((3, 3), stride, pad, (dh, dw), c, "zeros")
    shape = check_shapes(spec, (2, c, h, w_), (c * m, 1, 3, 3))
    assume(depthwise.layout(spec, shape) == "flat")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c, h, w_))
    w = rng.standard_normal((c * m, 1, 3, 3))
    b = rng.standard_normal(c * m)
    got = depthwise.forward(x, w, b, spec, shape)
    params = dict(stride=stride, padding=pad, dilation=(dh, dw), groups=c, algorithm="reference")
    assert_close(got, convscope.conv2d(x, w, b, **params), "forward")
    g = rng.standard_normal(got.shape)
    dx, dwt = depthwise.backward(g, x, w, spec, shape, (True, True))
    ref = convscope.conv2d_backward(g, x, w, **params)
    assert_close(dx, ref.input, "grad_input")
    assert_close(dwt, ref.weight, "grad_weight")


# ((C, H, W), weight shape, params) served by the flat kernels' channel runs: stride 1, multiplier 1, small
# planes, enough channels that a run spans several planes and the channels fill several blocks
CHANNEL_RUN_CASES = [
    ((24, 7, 7), (24, 1, 3, 3), dict(padding=1, groups=24)),
    ((20, 5, 9), (20, 1, 3, 3), dict(padding="same", dilation=2, groups=20)),
    ((18, 6, 4), (18, 1, 3, 3), dict(padding=(2, 1), dilation=(2, 1), groups=18, bias=False)),
    ((16, 1, 1), (16, 1, 3, 3), dict(padding=1, groups=16)),                        # every tap wraps but one
    ((30, 2, 17), (30, 1, 3, 3), dict(padding=1, groups=30)),
]


def _channel_blocks(x, w, params):
    return [depthwise.channel_block(*_spec_shape(x, w, params), p) for p in ("forward", "grad_input", "grad_weight")]


@pytest.mark.parametrize("case", CHANNEL_RUN_CASES, ids=[f"c{i}" for i in range(len(CHANNEL_RUN_CASES))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_channel_runs_match_the_reference_and_torch(case, dtype):
    x, w, b, params = case_arrays(case, "batched", dtype, seed=3)
    with convscope.num_threads(2):
        forward, grad_input, grad_weight = _channel_blocks(x, w, params)
        assert forward > 1 and grad_input == forward and grad_weight == 0, (forward, grad_input, grad_weight)
        assert x.shape[1] > forward, "one block holds every channel"
        want = convscope.conv2d(x, w, b, algorithm="reference", **params)
        assert_close(convscope.conv2d(x, w, b, algorithm="depthwise", **params), want, "forward")
        g = np.random.default_rng(5).standard_normal(want.shape).astype(dtype)
        got = convscope.conv2d_backward(g, x, w, algorithm="depthwise", **params)
        ref = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
        assert_close(got.input, ref.input, "input")
        check_against_torch(x, w, b, algorithm="depthwise", **params)


@pytest.mark.parametrize("where", ["input", "weight", "grad_output"])
@pytest.mark.parametrize("spot", ["first", "inside", "edge", "last"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_channel_runs_put_nonfinite_values_where_torch_does(where, spot, value):
    """One NaN or Inf in the array's first plane (computed exactly), inside a run (the block's planes are
    computed again), at the end of a plane's row next to the following plane in the same run, or in the
    array's last plane: only the outputs (and gradients) whose windows hold it may change."""
    case = ((24, 5, 6), (24, 1, 3, 3), dict(padding=1, groups=24))
    index = {"first": (0, 0, 0, 0), "inside": (1, 9, 2, 3), "edge": (0, 10, -1, -1), "last": (-1, -1, -1, -1)}[spot]
    x, w, b, g, params, (out, (dx, dw, db)) = _with_one_nonfinite(case, (7, 8), where, index, value)
    with convscope.num_threads(2):
        assert depthwise.channel_block(*_spec_shape(x, w, params)) > 1
        assert_same_nonfinite(convscope.conv2d(x, w, b, algorithm="depthwise", **params), out, "forward")
        grads = convscope.conv2d_backward(g, x, w, algorithm="depthwise", **params)
    for field, want in zip(grads._fields, (dx, dw, db)):
        assert_same_nonfinite(getattr(grads, field), want, f"grad {field}")


def test_channel_runs_only_for_small_planes():
    with convscope.num_threads(2):
        assert depthwise.channel_block(*shape_of(960, 7)) == depthwise.CHANNEL_RUN_VALUES // 49
        assert depthwise.channel_block(*shape_of(576, 14), "grad_input") == depthwise.CHANNEL_RUN_VALUES // 196
        assert depthwise.channel_block(*shape_of(6, 7)) == 2                     # two blocks per thread
        assert depthwise.channel_block(*shape_of(192, 28)) == 0                  # large planes: one run each
        assert depthwise.channel_block(*shape_of(960, 7), "grad_weight") == 0
        assert depthwise.channel_block(*shape_of(960, 7, m=2)) == 0
        assert depthwise.channel_block(*shape_of(576, 14, stride=2)) == 0
        assert "over 83 channels' planes" in depthwise.describe(*shape_of(960, 7), "forward")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=st.integers(4, 12), h=st.integers(1, 8), w_=st.integers(1, 8), dh=st.integers(1, 2),
       dw=st.integers(1, 2), n=st.integers(1, 3), seed=st.integers(0, 99))
def test_channel_runs_property_against_the_reference(c, h, w_, dh, dw, n, seed):
    """Random stride-1 'same' depthwise 3×3 layers with small planes against the reference loops, float64."""
    spec = make_spec((3, 3), 1, (dh, dw), (dh, dw), c, "zeros")
    shape = check_shapes(spec, (n, c, h, w_), (c, 1, 3, 3))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w_))
    w = rng.standard_normal((c, 1, 3, 3))
    b = rng.standard_normal(c)
    params = dict(padding=(dh, dw), dilation=(dh, dw), groups=c, algorithm="reference")
    with convscope.num_threads(2):
        assert depthwise.channel_block(spec, shape) >= 1
        assert_close(depthwise.forward(x, w, b, spec, shape), convscope.conv2d(x, w, b, **params), "forward")
        g = rng.standard_normal((n, c, h, w_))
        dx, _ = depthwise.backward(g, x, w, spec, shape, (True, False))
    assert_close(dx, convscope.conv2d_backward(g, x, w, **params).input, "grad_input")
