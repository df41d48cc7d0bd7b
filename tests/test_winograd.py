"""Winograd F(4×4, 3×3) (convscope.algorithms.winograd and its compiled tile transforms), forced on,
against torch and the reference loops: every padding mode, float32 and float64, whole and partial
tiles, padding wider than the kernel, float32's norm-relative error, and random configurations."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import convscope
from convscope.algorithms import winograd
from oracle import assert_close, check_against_torch, float32_against_exact, peak_bytes, recording_all_finite, rel_l2

MODES = ("zeros", "reflect", "replicate", "circular")

# (input shape, weight shape, keyword arguments): whole tiles, partial tiles at the bottom and the
# right, an output smaller than one tile, padding wider than the kernel, uneven padding
CASES = [
    ((2, 3, 8, 8), (4, 3, 3, 3), dict(padding=1)),
    ((2, 5, 9, 11), (4, 5, 3, 3), dict(padding=1)),
    ((1, 3, 5, 9), (2, 3, 3, 3), {}),
    ((2, 2, 3, 3), (3, 2, 3, 3), dict(padding="same")),
    ((2, 4, 12, 7), (5, 4, 3, 3), dict(padding=(2, 0))),
    ((1, 2, 6, 5), (2, 2, 3, 3), dict(padding=3)),
    ((0, 3, 6, 6), (4, 3, 3, 3), dict(padding=1)),
    ((3, 7, 7), (4, 3, 3, 3), dict(padding=1)),          # unbatched
]


def _arrays(x_shape, w_shape, dtype, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


def _fits(x_shape, params, mode):
    """Reflect padding must be smaller than the input, circular at most its size."""
    pad = params.get("padding", 0)
    pad = 1 if pad == "same" else pad
    p = max(pad) if isinstance(pad, tuple) else pad
    H, W = x_shape[-2:]
    return mode in ("zeros", "replicate") or p < min(H, W) or (mode == "circular" and p <= min(H, W))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_against_torch(case, mode, dtype):
    x_shape, w_shape, params = CASES[case]
    if not _fits(x_shape, params, mode):
        pytest.skip("padding too wide for this mode")
    x, w, b = _arrays(x_shape, w_shape, dtype, seed=case)
    check_against_torch(x, w, b, algorithm="winograd", padding_mode=mode, **params)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_against_reference(case, mode):
    """float64, no bias: forward and the three gradients equal the readable loops' to 1e-9."""
    x_shape, w_shape, params = CASES[case]
    if not _fits(x_shape, params, mode):
        pytest.skip("padding too wide for this mode")
    x, w, _ = _arrays(x_shape, w_shape, np.float64, seed=10 + case)
    params = dict(params, padding_mode=mode)
    want = convscope.conv2d(x, w, algorithm="reference", **params)
    assert_close(convscope.conv2d(x, w, algorithm="winograd", **params), want, "forward")
    g = np.random.default_rng(case).standard_normal(want.shape)
    got = convscope.conv2d_backward(g, x, w, algorithm="winograd", **params)
    ref = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    for field in ("input", "weight", "bias"):
        assert_close(getattr(got, field), getattr(ref, field), field)


def _windows(x, top, left, th, tw):
    """The 6×6 windows of x zero-extended, read from row −top, column −left: (C, N·th·tw, 36)."""
    N, C, H, W = x.shape
    z = np.zeros((N, C, 4 * th + 2 + abs(top) * 2 + H, 4 * tw + 2 + abs(left) * 2 + W))
    r0, c0 = abs(top) * 2, abs(left) * 2                      # x's corner in z
    z[:, :, r0:r0 + H, c0:c0 + W] = x
    out = np.empty((C, N, th, tw, 6, 6))
    for i in range(th):
        for j in range(tw):
            r, c = r0 - top + 4 * i, c0 - left + 4 * j
            out[:, :, i, j] = z[:, :, r:r + 6, c:c + 6].transpose(1, 0, 2, 3)
    return out.reshape(C, N * th * tw, 36)


@pytest.mark.parametrize("top, left", [(1, 1), (0, 0), (2, 2), (-1, 3), (4, -2)])
def test_kernels_match_the_kronecker_matrices(top, left):
    """Each compiled transform, channels last (36, P, channels), equals its Kronecker-matrix statement
    (winograd.matrices) on windows cut from a zero-extended copy: input Bᵀ⊗Bᵀ, output Aᵀ⊗Aᵀ (+ bias,
    cropped), gradient (Aᵀ⊗Aᵀ)ᵀ, and the kernel transform G⊗G."""
    from convscope.algorithms.kernels import winograd as kernels

    rng = np.random.default_rng(6)
    BB, GG, AA = winograd.matrices(np.float64)
    x = rng.standard_normal((2, 3, 9, 7))
    th, tw = 3, 2
    V = np.empty((36, 2 * th * tw, 3))
    assert kernels.input_tiles_last(x, top, left, th, tw, V) == 0
    want = np.einsum("ts,cps->tpc", BB, _windows(x, top, left, th, tw))
    np.testing.assert_allclose(V, want, rtol=0, atol=1e-10)

    M = rng.standard_normal((36, 2 * th * tw, 4))
    bias = rng.standard_normal(4)
    out = np.empty((2, 4, 4 * th - 1, 4 * tw - 3))          # partial tiles: cropped
    assert kernels.output_tiles_last(M, bias, th, tw, out[:, :, None], 0, 1) == 0
    Y = np.einsum("qt,tpo->opq", AA, M).reshape(4, 2, th, tw, 4, 4).transpose(1, 0, 2, 4, 3, 5)
    Y = Y.reshape(2, 4, 4 * th, 4 * tw)[:, :, :out.shape[2], :out.shape[3]] + bias[:, None, None]
    np.testing.assert_allclose(out, Y, rtol=0, atol=1e-10)

    Z = np.empty((36, 2 * th * tw, 4))
    assert kernels.gradient_tiles_last(out[:, :, None], 0, 1, th, tw, Z) == 0
    g = np.zeros((2, 4, 4 * th, 4 * tw))
    g[:, :, :out.shape[2], :out.shape[3]] = out
    tiles = g.reshape(2, 4, th, 4, tw, 4).transpose(1, 0, 2, 4, 3, 5).reshape(4, 2 * th * tw, 16)
    np.testing.assert_allclose(Z, np.einsum("qt,opq->tpo", AA, tiles), rtol=0, atol=1e-10)

    w = rng.standard_normal((5, 3, 3, 3))
    U = winograd.transform_weight_last(w)
    np.testing.assert_allclose(U, np.einsum("tk,ock->tco", GG, w.reshape(5, 3, 9)), rtol=0, atol=1e-12)


def test_output_and_gradient_transforms_on_a_block_of_depth_planes():
    """On (N, O, D, H, W) arrays the output and gradient transforms serve the planes a to a + nb of
    every sample, tile ((n·nb + d)·th + i)·tw + j of M and Z being tile (i, j) of plane a + d of
    sample n: each plane is what the 2-d call gives on its own tiles, and the other planes are left
    as they were."""
    from convscope.algorithms.kernels import winograd as kernels

    rng = np.random.default_rng(8)
    th, tw, T, nb, a = 3, 2, 6, 2, 1
    Ho, Wo = 4 * th - 1, 4 * tw - 3
    M = rng.standard_normal((36, 2 * nb * T, 4))
    bias = rng.standard_normal(4)
    out = np.full((2, 4, 4, Ho, Wo), np.nan)
    assert kernels.output_tiles_last(M, bias, th, tw, out, a, nb) == 0
    g = rng.standard_normal((2, 4, 4, Ho, Wo))
    Z = np.empty((36, 2 * nb * T, 4))
    assert kernels.gradient_tiles_last(g, a, nb, th, tw, Z) == 0
    for n in range(2):
        for d in range(nb):
            tiles = slice((n * nb + d) * T, (n * nb + d + 1) * T)
            alone = np.empty((1, 4, 1, Ho, Wo))
            kernels.output_tiles_last(np.ascontiguousarray(M[:, tiles]), bias, th, tw, alone, 0, 1)
            np.testing.assert_array_equal(out[n, :, a + d], alone[0, :, 0])
            Z1 = np.empty((36, T, 4))
            kernels.gradient_tiles_last(np.ascontiguousarray(g[n:n + 1, :, a + d:a + d + 1]), 0, 1, th, tw, Z1)
            np.testing.assert_array_equal(Z[:, tiles], Z1)
    assert np.isnan(out[:, :, 0]).all() and np.isnan(out[:, :, a + nb:]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_channels_last_transforms_count_rows_of_tiles_that_are_not_finite(value, dtype):
    """The channels-last transforms return how many rows of tiles hold a value that is not finite,
    among what they compute (input, output gradient) or write (output), overflow included; the values
    themselves are unchanged by the check."""
    from convscope.algorithms.kernels import winograd as kernels

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 7)).astype(dtype)
    th, tw = 3, 2
    V = np.empty((36, 2 * th * tw, 3), dtype=dtype)
    assert kernels.input_tiles_last(x, 1, 1, th, tw, V) == 0
    clean = V.copy()
    x[1, 2, 8, 6] = value                                    # the last pixel: the last row of tiles reads it
    x[0, 1, 4, 0] = value                                    # read by sample 0's rows of tiles 1 and 2
    assert kernels.input_tiles_last(x, 1, 1, th, tw, V) == 4       # each pixel read by two rows of tiles
    assert not np.isfinite(V[:, -1, 2]).all() and np.array_equal(V[:, :, 0], clean[:, :, 0])
    huge = np.full_like(x, np.finfo(dtype).max / 2)          # finite values whose transforms overflow
    assert kernels.input_tiles_last(huge, 1, 1, th, tw, V) == 2 * th

    M = rng.standard_normal((36, 2 * th * tw, 4)).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype)
    out = np.empty((2, 4, 4 * th - 1, 4 * tw - 3), dtype=dtype)
    assert kernels.output_tiles_last(M, bias, th, tw, out[:, :, None], 0, 1) == 0
    M[:, th * tw, 3] = value                                 # the first tile of sample 1, channel 3
    assert kernels.output_tiles_last(M, bias, th, tw, out[:, :, None], 0, 1) == 1
    assert not np.isfinite(out[1, 3, :4, :4]).all() and np.isfinite(out[0]).all()
    huge = np.full_like(M, np.finfo(dtype).max / 2)          # finite products whose sums overflow
    assert kernels.output_tiles_last(huge, bias, th, tw, out[:, :, None], 0, 1) == 2 * th

    g = rng.standard_normal((2, 4, 4 * th - 1, 4 * tw - 3)).astype(dtype)
    Z = np.empty((36, 2 * th * tw, 4), dtype=dtype)
    assert kernels.gradient_tiles_last(g[:, :, None], 0, 1, th, tw, Z) == 0
    g[0, 2, -1, -1] = value
    assert kernels.gradient_tiles_last(g[:, :, None], 0, 1, th, tw, Z) == 1


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_float32_error_is_small_in_norm(mode):
    """float32 on a 64-channel layer: relative L2 error ≤ 1e-5 (F(4×4, 3×3): about 2e-6) and max
    error ≤ 1e-4 of max |exact|, forward, grad-input and grad-weight; float64 ≤ 1e-12."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 64, 18, 21))
    w = rng.standard_normal((64, 64, 3, 3)) / 24.0
    pairs, (y64, exact) = float32_against_exact("winograd", x, w, rng, padding=1, padding_mode=mode)
    for got, want in pairs:
        assert got.dtype == np.float32
        assert rel_l2(got, want) <= 1e-5
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert rel_l2(y64, exact) <= 1e-12


def test_error_is_global():
    """The constant the non-finite fallback reads: a tile's values are mixed."""
    assert winograd.ERROR == "global"


@pytest.mark.parametrize("where", ["input", "output"])
def test_forward_in_batch_slices_recomputes_a_nonfinite_slice(where, monkeypatch):
    """A Winograd forward cut into batch slices (a small workspace limit) whose last slice reads a NaN or
    overflows is recomputed on the exact path: torch's NaN and Inf masks, and no pass over x or out."""
    from oracle import assert_same_nonfinite, torch_native_conv2d

    x, w, b = _arrays((4, 8, 12, 12), (8, 8, 3, 3), np.float32, seed=6)
    w /= 8
    if where == "input":
        x[3, 5, 11, 0] = np.nan
    else:
        x[3] *= np.float32(3e36)                              # finite; Winograd's transforms overflow
    spec, shape = _spec_shape(x.shape, w.shape, 1, "zeros")
    one = winograd.workspace("forward", spec, shape._replace(N=1), 4)
    sizes = recording_all_finite(monkeypatch)
    with convscope.workspace_limit(one):
        got = convscope.conv2d(x, w, b, padding=1, algorithm="winograd")
    assert x.size not in sizes and got.size not in sizes     # only the weight and the bias were summed
    want, _ = torch_native_conv2d(x, w, b, None, padding=1)
    assert_same_nonfinite(got, want, f"{where}: forward", np.abs(want[np.isfinite(want)]).max())
    assert not np.isfinite(winograd.forward(x[3:], w, b, spec, shape._replace(N=1))).all()   # what was caught
    assert winograd.forward(x[3:], w, b, spec, shape._replace(N=1), finite_only=True) is None
    assert winograd.forward(x[:3], w, b, spec, shape._replace(N=3), finite_only=True) is not None


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("limit", ["slices", "rows"])
@pytest.mark.parametrize("where", ["grad_output", "input", "none"])
def test_backward_checks_what_it_reads_and_writes_itself(where, limit, mode, monkeypatch):
    """Winograd's grad_input and grad_weight check grad_output, x and ∂L/∂x in their transforms, in
    batch slices and in blocks of rows: a NaN in the last sample sends the pass to the exact path (torch's
    NaN masks), and only the weight and ∂L/∂w (small) are summed separately (reflect: ∂L/∂x after fold)."""
    from oracle import assert_same_nonfinite, torch_native_conv2d

    x, w, b = _arrays((4, 8, 12, 12), (8, 8, 3, 3), np.float32, seed=9)
    g = np.random.default_rng(10).standard_normal((4, 8, 12, 12)).astype(np.float32)
    if where == "grad_output":
        g[3, 6, 11, 0] = np.nan
    elif where == "input":
        x[3, 2, 0, 11] = np.nan
    spec, shape = _spec_shape(x.shape, w.shape, 1, mode)
    per_sample = max(winograd.workspace(p, spec, shape._replace(N=1), 4) for p in ("grad_input", "grad_weight"))
    sizes = recording_all_finite(monkeypatch)
    with convscope.workspace_limit(per_sample if limit == "slices" else per_sample // 3):
        got = convscope.conv2d_backward(g, x, w, padding=1, padding_mode=mode, algorithm="winograd")
    if where == "none":            # the weight and ∂L/∂w; with reflect, each slice's ∂L/∂x after fold's sums
        assert w.size in sizes
        assert all(n == w.size or (mode != "zeros" and n % x[0].size == 0) for n in sizes), sizes
    _, want = torch_native_conv2d(x, w, b, g, padding=1, padding_mode=mode)
    for field, expected in zip(got._fields, want):
        assert_same_nonfinite(getattr(got, field), expected, f"{where}: grad {field}")
    assert where == "none" or not all(np.isfinite(e).all() for e in want[:2])


def _spec_shape(x_shape, w_shape, padding, mode):
    from convscope.spec import check_shapes, make_spec

    spec = make_spec((3, 3), 1, padding, 1, 1, mode)
    return spec, check_shapes(spec, x_shape, w_shape)


def test_prepared_forward_agrees():
    x, w, b = _arrays((2, 4, 10, 9), (3, 4, 3, 3), np.float32, seed=3)
    spec, shape = _spec_shape(x.shape, w.shape, 1, "zeros")
    assert_close(winograd.prepared_forward(w)(x, b, spec, shape),
                 convscope.conv2d(x, w, b, padding=1, algorithm="reference"))


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("mode", ["zeros", "replicate"])
@pytest.mark.parametrize("pass_", ["forward", "grad_input", "grad_weight"])
def test_workspace_bounds_the_scratch(pass_, mode, fused, monkeypatch):
    """A pass's peak allocation (tracemalloc) stays under its workspace estimate plus its result, on the
    flat passes and on the fused ones (whose estimate is then the smaller)."""
    monkeypatch.setattr(winograd, "FUSED_FROM_PIXELS", 1 << 60)
    if fused:
        flat = winograd.workspace(pass_, *_spec_shape((3, 16, 21, 18), (24, 16, 3, 3), 2, mode), 4)
        _count_fused(monkeypatch, 1)
        if pass_ != "grad_weight":
            assert winograd.workspace(pass_, *_spec_shape((3, 16, 21, 18), (24, 16, 3, 3), 2, mode), 4) < flat
    x, w, b = _arrays((3, 16, 21, 18), (24, 16, 3, 3), np.float32, seed=4)
    spec, shape = _spec_shape(x.shape, w.shape, 2, mode)
    g = np.random.default_rng(0).standard_normal((3, 24, shape.H_out, shape.W_out)).astype(np.float32)
    run = {"forward": lambda: winograd.forward(x, w, b, spec, shape),
           "grad_input": lambda: winograd.grad_input(g, w, spec, shape),
           "grad_weight": lambda: winograd.grad_weight(g, x, spec, shape)}[pass_]
    run()                                                     # compiled before measuring
    result, peak = peak_bytes(run)
    assert peak <= winograd.workspace(pass_, spec, shape, 4) + result.nbytes


def test_importing_the_path_does_not_import_numba():
    code = ("import sys, convscope, convscope.algorithms.winograd; "
            "assert 'numba' not in sys.modules, 'numba imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_random_configurations_against_reference(data):
    """float64, every mode, 0–3 padding per side, 1–13 rows and columns, batch 0–2."""
    mode = data.draw(st.sampled_from(MODES), label="padding_mode")
    H, W = data.draw(st.integers(1, 13), label="H"), data.draw(st.integers(1, 13), label="W")
    limit = {"zeros": 3, "replicate": 3, "reflect": min(H, W) - 1, "circular": min(H, W)}[mode]
    pads = [data.draw(st.integers(0, min(3, limit)), label="pad") for _ in range(2)]
    assume(H + 2 * pads[0] >= 3 and W + 2 * pads[1] >= 3)
    N, C, O = data.draw(st.integers(0, 2)), data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    x, w, b = _arrays((N, C, H, W), (O, C, 3, 3), np.float64, seed=data.draw(st.integers(0, 2**16)))
    params = dict(padding=tuple(pads), padding_mode=mode)
    want = convscope.conv2d(x, w, b, algorithm="reference", **params)
    assert_close(convscope.conv2d(x, w, b, algorithm="winograd", **params), want, "forward")
    g = np.random.default_rng(N + C).standard_normal(want.shape)
    got = convscope.conv2d_backward(g, x, w, algorithm="winograd", **params)
    ref = convscope.conv2d_backward(g, x, w, algorithm="reference", **params)
    for field in ("input", "weight", "bias"):
        assert_close(getattr(got, field), getattr(ref, field), field)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channels_last_input_transform_checks_rows_no_window_reads(dtype):
    """With padding wider than the kernel reaches, some rows of x are read by no window of the output
    asked for; the input transform still counts them, so that a pass that checked its input itself
    vouches for all of it (the NaN-where-padding-meets rule of the weight gradient relies on that)."""
    from convscope.algorithms.kernels import winograd as kernels

    x = np.ones((1, 2, 12, 5), dtype=dtype)
    th, tw = 1, 1                                            # one row of tiles: rows −2 … 3 of x read
    V = np.empty((36, 1, 2), dtype=dtype)
    assert kernels.input_tiles_last(x, 2, 0, th, tw, V) == 0
    x[0, 1, 10, 3] = np.nan                                  # far below any window
    assert kernels.input_tiles_last(x, 2, 0, th, tw, V) == 1
    assert np.isfinite(V).all()


def _count_fused(monkeypatch, threshold):
    """Run the fused passes from ``threshold`` outputs per plane, whatever the channels; returns the list
    their calls append to (each call's Ho · Wo)."""
    calls = []
    fused = winograd._fused

    def spy(*args):
        calls.append(args[4] * args[5])                       # Ho · Wo
        return fused(*args)

    monkeypatch.setattr(winograd, "FUSED_FROM_PIXELS", threshold)
    monkeypatch.setattr(winograd, "FUSED_MAX_TRANSFORM_BYTES", 1 << 60)
    monkeypatch.setattr(winograd, "_fused", spy)
    return calls


FUSED_CASES = CASES[:6] + [
    ((2, 5, 10, 13), (7, 5, 3, 3), dict(padding=1)),           # output channels short of a vector, partial tiles
    ((1, 3, 9, 9), (33, 3, 3, 3), dict(padding=2)),            # a vector and one channel; 9 tiles: two blocks
    ((3, 16, 8, 12), (32, 16, 3, 3), dict(padding=1)),         # whole vectors, blocks across samples
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("case", range(len(FUSED_CASES)))
def test_fused_passes_against_torch(case, mode, dtype, monkeypatch):
    """The fused passes (blocks of 8 tiles, compiled products) forced on every size: forward and the
    input gradient (the same correlation on grad_output) against torch, in both padding layouts."""
    x_shape, w_shape, params = FUSED_CASES[case]
    if not _fits(x_shape, params, mode):
        pytest.skip("padding too wide for this mode")
    calls = _count_fused(monkeypatch, 1)
    x, w, b = _arrays(x_shape, w_shape, dtype, seed=case)
    check_against_torch(x, w, b, algorithm="winograd", padding_mode=mode, **params)
    assert len(calls) >= 2                                    # the forward and the input gradient


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("top, left", [(1, 1), (0, 0), (2, 2), (-1, 3), (4, -2)])
def test_fused_passes_equal_the_flat_ones(top, left, dtype, monkeypatch):
    """correlate3x3 at any offset (windows reaching past every edge, or starting inside x), with the
    bias and with a precomputed kernel transform: the fused passes give the flat passes' values
    (the same sums in another order: float64 to 1e-12, float32 to 1e-5 of the largest value)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 6, 13, 11)).astype(dtype)
    w = rng.standard_normal((19, 6, 3, 3)).astype(dtype)
    b = rng.standard_normal(19).astype(dtype)
    Ho, Wo = 13 + 2 - 2 * top, 11 + 2 - 2 * left
    monkeypatch.setattr(winograd, "FUSED_FROM_PIXELS", 1 << 60)
    flat = winograd.correlate3x3(x, w, top, left, Ho, Wo, bias=b)
    calls = _count_fused(monkeypatch, 1)
    fused = winograd.correlate3x3(x, w, top, left, Ho, Wo, bias=b)
    again = winograd.correlate3x3(x, w, top, left, Ho, Wo, U=winograd.transform_weight_last(w))
    assert calls == [Ho * Wo, Ho * Wo]
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(fused, flat, rtol=0, atol=tol * np.abs(flat).max())
    np.testing.assert_allclose(again + b[:, None, None], flat, rtol=0, atol=tol * np.abs(flat).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_fused_passes_report_what_is_not_finite(value, dtype, monkeypatch):
    """With ``finite_only`` the fused passes return None when a value they read (the input, padding
    cells excluded) or write (the output, overflow included) is not finite; the kernel counts the blocks
    of tiles that met one."""
    from convscope.algorithms.kernels import _numba, winograd as kernels

    _count_fused(monkeypatch, 1)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    clean = winograd.correlate3x3(x, w, 1, 1, 9, 10, finite_only=True)
    assert clean is not None and np.isfinite(clean).all()
    x[1, 2, 8, 9] = value                                     # the last pixel: read by sample 1's last tiles
    assert winograd.correlate3x3(x, w, 1, 1, 9, 10, finite_only=True) is None
    lanes = _numba.REGISTER_BYTES // np.dtype(dtype).itemsize
    U = np.zeros((36, 3, lanes), dtype=dtype)
    U[:, :, :4] = winograd.transform_weight_last(w)
    out = np.empty((2, 4, 9, 10), dtype=dtype)
    # 18 tiles in blocks of 8; tiles (1, 2) and (2, 2) of sample 1 (p = 14 and 17) read the pixel
    assert kernels.fused_tiles(x, U, np.zeros(4, dtype), 1, 1, 3, 3, out) == 2
    huge = np.full_like(x, np.finfo(dtype).max / 4)           # finite values whose sums overflow
    assert winograd.correlate3x3(huge, np.abs(w), 1, 1, 9, 10, finite_only=True) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_passes_put_nonfinite_values_where_torch_does(dtype, monkeypatch):
    """A layer the planner sends to Winograd, on the fused passes: NaN, ±Inf and values that overflow,
    in the input, the weight and grad_output, land where torch's native kernels put them (the call
    falls back to a local path, as the flat passes' does)."""
    from test_nonfinite import _check

    calls = _count_fused(monkeypatch, 1)
    _check("winograd", (64, 12, 12), (64, 64, 3, 3), dict(padding=1), dtype)
    assert calls


def test_fused_passes_where_the_kernel_transform_stays_in_cache():
    """The Winograd correlations take the fused passes from 14² outputs with up to about 128 × 128
    float32 channels (the kernel transform, 36 × C × C_out values, read by every block of tiles), the
    flat ones below that size or above those channels."""
    assert winograd.fused(14, 14, 128, 128, 4) and winograd.fused(56, 56, 64, 64, 4)
    assert not winograd.fused(13, 15, 64, 64, 4)                  # 195 outputs
    assert not winograd.fused(28, 28, 256, 256, 4) and not winograd.fused(56, 56, 128, 160, 4)
    assert not winograd.fused(28, 28, 128, 128, 8) and winograd.fused(28, 28, 90, 90, 8)
    assert 36 * 128 * 128 * 4 <= winograd.FUSED_MAX_TRANSFORM_BYTES < 36 * 128 * 160 * 4
