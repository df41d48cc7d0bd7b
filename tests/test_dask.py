"""``convscope.dask``: the same numbers as in memory, chunk by chunk, on every Dask scheduler.

The halo arithmetic (:func:`convscope.geometry.block_read`, ``block_sources``, ``output_blocks``)
is checked against the whole-array source maps; the dask wrappers against in-memory
``convscope.conv2d`` / ``conv2d_backward`` in every padding mode, stride, dilation, groups,
``'same'``/``'valid'``, uneven chunks, chunks smaller than the kernel, batch and channel chunks
(threaded scheduler), and against torch for a few; one case on the processes scheduler and on a
``distributed.LocalCluster`` of two worker processes.  ``conv1d`` / ``conv3d`` and their backward
run on the same code path: checked against in-memory convscope and torch with uneven chunks in
batch and every spatial axis, in every padding mode, and with the 2-d tests' errors; the transposed
convolutions (on the backward's machinery) against in-memory convscope and torch.
"""
from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import convscope  # noqa: E402
import convscope.dask as cdask  # noqa: E402
from convscope import geometry  # noqa: E402
from convscope.spec import check_input_hw, make_spec  # noqa: E402
from oracle import assert_close, random_case, torch_conv2d, torch_conv_nd, torch_conv_transpose_nd  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

# (name, input shape, chunks, weight shape, parameters)
CASES = [
    ("pad1", (2, 3, 11, 10), ((1, 1), (3,), (4, 4, 3), (5, 5)), (4, 3, 3, 3), dict(padding=1)),
    ("stride2_uneven", (3, 2, 13, 12), ((2, 1), (1, 1), (1, 5, 2, 5), (3, 4, 5)), (3, 2, 3, 3),
     dict(stride=2, padding=2)),
    ("stride3_even_kernel", (1, 2, 12, 11), ((1,), (2,), (4, 4, 4), (2, 9)), (2, 2, 2, 4),
     dict(stride=(3, 2), padding=(1, 2))),
    ("dilation_same", (2, 2, 12, 12), ((1, 1), (2,), (5, 7), (3, 3, 6)), (3, 2, 3, 3),
     dict(padding="same", dilation=2)),
    ("even_same", (1, 3, 9, 10), ((1,), (3,), (2, 2, 5), (4, 6)), (2, 3, 4, 2), dict(padding="same")),
    ("valid_groups", (2, 4, 10, 9), ((2,), (2, 2), (3, 3, 4), (4, 5)), (6, 2, 3, 3),
     dict(padding="valid", groups=2)),
    ("depthwise_strided_dilated", (1, 3, 14, 13), ((1,), (3,), (6, 8), (7, 6)), (3, 1, 3, 3),
     dict(stride=2, dilation=2, padding=2, groups=3)),
    ("chunks_of_one", (1, 2, 7, 6), ((1,), (2,), (1,) * 7, (1,) * 6), (2, 2, 5, 3), dict(padding=(2, 1))),
    ("padding_beyond_kernel", (2, 1, 8, 9), ((1, 1), (1,), (3, 5), (2, 7)), (2, 1, 1, 2),
     dict(stride=2, padding=3)),
]

SEEDS = {name: i for i, (name, *_) in enumerate(CASES)}


def _arrays(name, x_shape, w_shape, dtype=np.float64):
    rng = np.random.default_rng(SEEDS[name])
    x, w, b = random_case(rng, x_shape, w_shape, dtype)
    return x, w, b, rng


PARAMS = [
    pytest.param(mode, case, id=f"{mode}-{case[0]}")
    for mode in PADDING_MODES for case in CASES
    if not (mode == "reflect" and case[0] == "padding_beyond_kernel")  # reflect needs padding < size
]


@pytest.mark.parametrize("mode, case", PARAMS)
def test_forward_and_backward_equal_in_memory(mode, case):
    name, x_shape, chunks, w_shape, params = case
    x, w, b, rng = _arrays(name, x_shape, w_shape)
    xd = da.from_array(x, chunks=chunks)
    expected = convscope.conv2d(x, w, b, padding_mode=mode, **params)
    y = cdask.conv2d(xd, w, b, padding_mode=mode, **params)
    assert isinstance(y, da.Array)
    assert_close(y.compute(scheduler="threads"), expected, "forward")
    assert y.chunks[0] == xd.chunks[0] and y.chunks[1] == (w_shape[0],)

    gy = rng.standard_normal(expected.shape)
    exact = convscope.conv2d_backward(gy, x, w, padding_mode=mode, **params)
    grads = cdask.conv2d_backward(da.from_array(gy, chunks=(1, 2, 3, 4)), xd, w, padding_mode=mode, **params)
    assert grads.input.chunks == xd.chunks
    got = dask.compute(*grads, scheduler="threads")
    for a, e, what in zip(got, exact, ("grad input", "grad weight", "grad bias")):
        assert_close(a, e, what)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_against_torch(mode):
    name, x_shape, chunks, w_shape, params = CASES[1]   # stride 2, padding 2, uneven chunks
    x, w, b, rng = _arrays(name, x_shape, w_shape)
    gy = rng.standard_normal(convscope.conv2d(x, w, b, padding_mode=mode, **params).shape)
    out, (dx, dw, db) = torch_conv2d(x, w, b, gy, padding_mode=mode, **params)
    xd = da.from_array(x, chunks=chunks)
    assert_close(cdask.conv2d(xd, w, b, padding_mode=mode, **params).compute(), out, "forward")
    grads = dask.compute(*cdask.conv2d_backward(gy, xd, w, padding_mode=mode, **params))
    for a, e, what in zip(grads, (dx, dw, db), ("grad input", "grad weight", "grad bias")):
        assert_close(a, e, what)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_reference_loops_are_bitwise_the_same(mode):
    """Each output sums the same taps in the same order, whichever chunk computes it."""
    name, x_shape, chunks, w_shape, params = CASES[6]
    x, w, b, _ = _arrays(name, x_shape, w_shape)
    expected = convscope.conv2d(x, w, b, padding_mode=mode, algorithm="reference", **params)
    got = cdask.conv2d(da.from_array(x, chunks=chunks), w, b, padding_mode=mode, algorithm="reference",
                       **params).compute()
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_float32_and_float16(dtype):
    name, x_shape, chunks, w_shape, params = CASES[3]
    x, w, b, rng = _arrays(name, x_shape, w_shape, dtype)
    xd = da.from_array(x, chunks=chunks)
    y = cdask.conv2d(xd, w, b, padding_mode="reflect", **params)
    expected = convscope.conv2d(x, w, b, padding_mode="reflect", **params)
    assert y.dtype == dtype
    assert_close(y.compute(), expected, "forward")
    gy = rng.standard_normal(expected.shape).astype(dtype)
    exact = convscope.conv2d_backward(gy, x, w, padding_mode="reflect", **params)
    for a, e in zip(dask.compute(*cdask.conv2d_backward(gy, xd, w, padding_mode="reflect", **params)), exact):
        assert_close(a, e, "gradient")


def test_unbatched_input_and_output_mask():
    x, w, b, rng = _arrays("pad1", (3, 9, 8), (4, 3, 3, 3))
    xd = da.from_array(x, chunks=(1, 4, 3))
    y = cdask.conv2d(xd, w, b, stride=2, padding=1, padding_mode="circular")
    expected = convscope.conv2d(x, w, b, stride=2, padding=1, padding_mode="circular")
    assert y.shape == expected.shape
    assert_close(y.compute(), expected)
    gy = rng.standard_normal(expected.shape)
    exact = convscope.conv2d_backward(gy, x, w, stride=2, padding=1, padding_mode="circular")
    for mask in ((True, False, False), (False, True, False), (False, False, True)):
        grads = cdask.conv2d_backward(da.from_array(gy), xd, w, stride=2, padding=1, padding_mode="circular",
                                      output_mask=mask)
        for g, e, wanted in zip(grads, exact, mask):
            if wanted:
                assert_close(g.compute(), e)
            else:
                assert g is None
    assert cdask.conv2d_backward(gy, xd, w, stride=2, padding=1).input.chunks == xd.chunks


def test_workspace_limit_and_threads_are_set_per_task(monkeypatch):
    x, w, b, _ = _arrays("pad1", (2, 3, 16, 16), (4, 3, 3, 3))
    seen = []
    in_memory = cdask._conv2d

    def spy(*args, **kwargs):
        seen.append((convscope.get_workspace_limit(), convscope.get_num_threads()))
        return in_memory(*args, **kwargs)

    monkeypatch.setattr(cdask, "_conv2d", spy)
    previous = convscope.set_num_threads(2)
    try:
        y = cdask.conv2d(da.from_array(x, chunks=(1, 3, 8, 16)), w, b, padding=1, threads=1,
                         workspace_limit=1 << 10)
        assert_close(y.compute(scheduler="sync"), convscope.conv2d(x, w, b, padding=1))
        assert convscope.get_num_threads() == 2                         # the caller's setting is kept
    finally:
        convscope.set_num_threads(previous)
    assert seen == [(1 << 10, 1)] * 4
    assert convscope.get_workspace_limit() != 1 << 10


def test_progress_bar_shows_the_work(capsys):
    from dask.diagnostics import ProgressBar

    x, w, b, _ = _arrays("pad1", (1, 3, 8, 8), (4, 3, 3, 3))
    with ProgressBar():
        cdask.conv2d(da.from_array(x, chunks=(1, 3, 4, 4)), w, b, padding=1).compute()
    assert "100%" in capsys.readouterr().out


def test_the_graph_pickles_and_runs_after_a_round_trip():
    cloudpickle = pytest.importorskip("cloudpickle")
    x, w, b, rng = _arrays("stride2_uneven", (2, 2, 9, 8), (3, 2, 3, 3))
    xd = da.from_array(x, chunks=(1, 1, 4, 3))
    y = cdask.conv2d(xd, w, b, stride=2, padding=1, padding_mode="reflect")
    grads = cdask.conv2d_backward(rng.standard_normal(y.shape), xd, w, stride=2, padding=1,
                                  padding_mode="reflect")
    for arr in (y,) + tuple(grads):
        graph = dict(arr.__dask_graph__())
        restored = pickle.loads(cloudpickle.dumps(graph))
        blocks = dask.get(restored, arr.__dask_keys__())      # nested like the chunks
        assert_close(np.block(_nested_lists(blocks)), arr.compute())


def _nested_lists(blocks):
    return [_nested_lists(b) for b in blocks] if isinstance(blocks, (list, tuple)) else blocks


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_map_overlap_boundaries_are_not_torch_padding(mode):
    """Why the halos are built from geometry's source maps rather than map_overlap's boundary modes:
    dask's 'reflect' repeats the edge pixel (numpy's 'symmetric'), torch's does not; 'nearest' and
    'periodic' agree with replicate and circular."""
    row = np.arange(6.0)
    torch_rows = row[geometry.source_map(6, 2, 2, mode)]
    padded = da.overlap.overlap(da.from_array(row, chunks=3), depth=2,
                                boundary={"reflect": "reflect", "replicate": "nearest", "circular": "periodic"}[mode])
    dask_rows = padded.compute()
    dask_rows = np.concatenate([dask_rows[:4], dask_rows[-4:]])     # the outer halos: [2 border, 2 real]
    torch_edges = np.concatenate([torch_rows[:4], torch_rows[-4:]])
    assert np.array_equal(dask_rows, torch_edges) == (mode != "reflect")
    assert np.array_equal(torch_rows, np.pad(row, 2, mode={"reflect": "reflect", "replicate": "edge",
                                                            "circular": "wrap"}[mode]))


# --------------------------------------------------------------------------- geometry of the blocks


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 30), kernel=st.integers(1, 5), stride=st.integers(1, 4), dilation=st.integers(1, 3),
       before=st.integers(0, 4), after=st.integers(0, 4), mode=st.sampled_from(PADDING_MODES),
       cuts=st.lists(st.integers(0, 30), max_size=4))
def test_blocks_read_what_the_whole_array_reads(size, kernel, stride, dilation, before, after, mode, cuts):
    out_len = geometry.output_length(size, kernel, stride, before + after, dilation)
    assume(out_len >= 1)
    assume(not (mode == "reflect" and max(before, after) >= size))
    assume(not (mode == "circular" and max(before, after) > size))
    bounds = sorted(c for c in cuts if 0 < c < size)
    blocks = geometry.output_blocks(bounds, stride, out_len)
    assert [a for a, _ in blocks][0] == 0 and blocks[-1][1] == out_len
    assert all(b0[1] == b1[0] for b0, b1 in zip(blocks, blocks[1:]))
    smap = geometry.source_map(size, before, after, mode)
    taps = geometry.tap_sources(size, before, after, mode, kernel, stride, dilation, out_len)
    starts = [0] + bounds
    for o0, o1 in blocks:
        read = geometry.block_read(o0, o1, size, kernel, stride, dilation, before, after)
        sources = geometry.block_sources(read, size, before, mode)
        assert np.array_equal(sources, smap[read.padded_start:read.padded_stop])
        assert read.pad_before + (read.stop - read.start) + read.pad_after == sources.size
        assert set(taps[o0:o1].ravel()) <= set(sources.tolist())       # the block reads every tap
        # aligned to the stride: a block starts at the first output anchored (row i·stride) in a chunk
        assert o0 == 0 or any((o0 - 1) * stride < a <= o0 * stride for a in bounds)


@st.composite
def _chunks(draw, size):
    cuts = sorted(set(draw(st.lists(st.integers(1, size - 1), max_size=3)))) if size > 1 else []
    bounds = [0] + cuts + [size]
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


@settings(max_examples=25, deadline=None)
@given(data=st.data(), H=st.integers(1, 9), W=st.integers(1, 9), kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       padding=st.tuples(st.integers(0, 3), st.integers(0, 3)), mode=st.sampled_from(PADDING_MODES))
def test_random_chunks_and_parameters_equal_in_memory(data, H, W, kernel, stride, dilation, padding, mode):
    spec = convscope.ConvSpec(kernel, stride, tuple((p, p) for p in padding), dilation, 1, mode)
    try:
        check_input_hw(spec, (H, W))
    except ValueError:
        assume(False)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x, w, b = random_case(rng, (2, 2, H, W), (3, 2) + kernel)
    chunks = ((1, 1), (1, 1), data.draw(_chunks(H)), data.draw(_chunks(W)))
    params = dict(stride=stride, padding=padding, dilation=dilation, padding_mode=mode)
    expected = convscope.conv2d(x, w, b, **params)
    xd = da.from_array(x, chunks=chunks)
    assert_close(cdask.conv2d(xd, w, b, **params).compute(scheduler="sync"), expected, "forward")
    gy = rng.standard_normal(expected.shape)
    got = dask.compute(*cdask.conv2d_backward(gy, xd, w, **params), scheduler="sync")
    for a, e, what in zip(got, convscope.conv2d_backward(gy, x, w, **params), ("input", "weight", "bias")):
        assert_close(a, e, "grad " + what)


# --------------------------------------------------------------------------- bad input


def _good():
    x, w, b, _ = _arrays("pad1", (2, 3, 8, 8), (4, 3, 3, 3))
    return x, da.from_array(x, chunks=(1, 3, 4, 4)), w, b


def test_a_numpy_input_is_pointed_to_convscope_conv2d():
    x, _, w, b = _good()
    with pytest.raises(TypeError, match=r"needs a dask array as input.*use convscope\.conv2d"):
        cdask.conv2d(x, w, b)
    with pytest.raises(TypeError, match=r"use convscope\.conv2d_backward"):
        cdask.conv2d_backward(np.ones((2, 4, 6, 6)), x, w)


def test_a_dask_weight_is_refused():
    _, xd, w, b = _good()
    with pytest.raises(TypeError, match=r"weight must be an in-memory array .* \(weight\.compute\(\)\)"):
        cdask.conv2d(xd, da.from_array(w), b)
    with pytest.raises(TypeError, match=r"bias must be an in-memory array"):
        cdask.conv2d(xd, w, da.from_array(b))


BAD_PARAMETERS = [
    dict(groups=2),
    dict(padding=8, padding_mode="reflect"),
    dict(padding=9, padding_mode="circular"),
    dict(padding="same", stride=2),
    dict(padding="full"),
    dict(stride=0),
    dict(dilation=5),
    dict(padding_mode="mirror"),
    dict(algorithm="magic"),
]


@pytest.mark.parametrize("kwargs", BAD_PARAMETERS)
def test_bad_parameters_give_convscope_conv2d_s_messages(kwargs):
    x, xd, w, b = _good()
    with pytest.raises((TypeError, ValueError)) as in_memory:
        convscope.conv2d(x, w, b, **kwargs)
    with pytest.raises(in_memory.type) as on_dask:
        cdask.conv2d(xd, w, b, **kwargs)
    assert str(on_dask.value) == str(in_memory.value)


def test_bad_arrays_give_convscope_conv2d_s_messages():
    x, xd, w, b = _good()
    for args in ((xd[:, :2], w, b), (xd.astype(np.int32), w, b), (xd, w.astype(np.float32), b),
                 (xd, w[0], b), (xd, w, b[:2]), (xd[0, 0], w, b)):
        in_memory_args = (args[0].compute(),) + args[1:]
        with pytest.raises((TypeError, ValueError)) as in_memory:
            convscope.conv2d(*in_memory_args)
        with pytest.raises(in_memory.type) as on_dask:
            cdask.conv2d(*args)
        assert str(on_dask.value).split(" (convert")[0] == str(in_memory.value).split(" (convert")[0]


def test_bad_backward_arguments():
    x, xd, w, _ = _good()
    with pytest.raises(ValueError, match=r"grad_output must have the output's shape \(2, 4, 8, 8\), got \(2, 4, 6, 6\)"):
        cdask.conv2d_backward(da.ones((2, 4, 6, 6)), xd, w, padding=1)
    with pytest.raises(ValueError, match="output_mask must have 3 entries"):
        cdask.conv2d_backward(da.ones((2, 4, 8, 8)), xd, w, padding=1, output_mask=(True,))
    with pytest.raises(TypeError, match="grad_output, input, weight must have the same dtype"):
        cdask.conv2d_backward(da.ones((2, 4, 8, 8), dtype=np.float32), xd, w, padding=1)


def test_bad_settings_and_unknown_chunks():
    _, xd, w, b = _good()
    with pytest.raises(ValueError, match="num_threads must be a positive integer, got 0"):
        cdask.conv2d(xd, w, b, threads=0)
    with pytest.raises(TypeError, match="workspace_limit must be an int number of bytes, got 1.5"):
        cdask.conv2d(xd, w, b, workspace_limit=1.5)
    unknown = xd[xd[:, 0, 0, 0] > -np.inf]
    with pytest.raises(ValueError, match=r"unknown chunk sizes .*; call input\.compute_chunk_sizes\(\)"):
        cdask.conv2d(unknown, w, b)


def test_import_is_lazy_and_names_the_extra_when_dask_is_missing():
    code = ("import sys; import convscope; assert 'dask' not in sys.modules, 'convscope imported dask'\n"
            "sys.modules['dask'] = None\n"
            "try:\n    import convscope.dask\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ)).stdout
    assert "pip install 'convscope[dask]'" in out


# --------------------------------------------------------------------------- other schedulers


def _scheduler_case():
    x, w, b, rng = _arrays("stride2_uneven", (3, 2, 13, 12), (3, 2, 3, 3))
    xd = da.from_array(x, chunks=((2, 1), (1, 1), (1, 5, 2, 5), (3, 4, 5)))
    params = dict(stride=2, padding=2, padding_mode="circular")
    expected = convscope.conv2d(x, w, b, **params)
    gy = rng.standard_normal(expected.shape)
    exact = (expected,) + tuple(convscope.conv2d_backward(gy, x, w, **params))
    lazy = (cdask.conv2d(xd, w, b, **params),) + tuple(cdask.conv2d_backward(gy, xd, w, **params))
    return lazy, exact


def test_processes_scheduler():
    lazy, exact = _scheduler_case()
    for a, e in zip(dask.compute(*lazy, scheduler="processes", num_workers=2), exact):
        assert_close(a, e)


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    environ = dict(os.environ)      # the nanny sets OMP/MKL/OPENBLAS_NUM_THREADS=1 in this process too
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       dashboard_address=None, silence_logs=logging.ERROR)
    client = distributed.Client(cluster, set_as_default=False)    # the other tests keep their own schedulers
    try:
        yield client
    finally:
        client.close()
        cluster.close()
        os.environ.clear()
        os.environ.update(environ)


def test_distributed_local_cluster(cluster_client):
    lazy, exact = _scheduler_case()
    for a, e in zip(cluster_client.compute(list(lazy), sync=True), exact):
        assert_close(a, e)
    # the tasks set their thread count for themselves: the workers' own setting is untouched
    counts = cluster_client.run(lambda: __import__("convscope").get_num_threads())
    assert set(counts.values()) == {convscope.threads._usable_cores()}
    assert len(cluster_client.run(os.getpid)) == 2


@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_only_halos_of_neighbouring_chunks_are_read(mode):
    """A block depends on its own chunk whole and on thin pieces of its neighbours (for circular
    padding, of the chunks on the far side): one row or column for a 'same' 3×3 kernel."""
    x, w, b, _ = _arrays("pad1", (1, 3, 32, 32), (4, 3, 3, 3))
    y = cdask.conv2d(da.from_array(x, chunks=(1, 3, 8, 8)), w, b, padding=1, padding_mode=mode)
    graph = dict(y.__dask_graph__())
    pieces = [k for k in graph if isinstance(k, tuple) and k[0].startswith("conv2d-halo")]
    shapes = {k: v.shape for k, v in zip(pieces, dask.get(graph, pieces))}
    assert shapes and all(min(s[2:]) == 1 for s in shapes.values())
    far = [k for k in pieces if k[3:5] == (3, 0) and k[5:7] == (7, 8)]   # last row chunk's last row
    assert bool(far) == (mode == "circular")
    assert y.chunks == ((1,), (4,), (8,) * 4, (8,) * 4)


def test_docstring_examples():
    import doctest

    result = doctest.testmod(cdask, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- 1 and 3 spatial dimensions

# (name, input shape, chunks, weight shape, parameters): uneven chunks in batch and every spatial axis,
# chunks smaller than the kernel's reach, channels chunked (rechunked whole)
ND_CASES = [
    ("1d_stride2", (3, 2, 17), ((2, 1), (1, 1), (5, 1, 6, 5)), (3, 2, 3), dict(stride=2, padding=2)),
    ("1d_same_dilated_groups", (2, 4, 13), ((1, 1), (3, 1), (2, 2, 2, 7)), (6, 2, 3),
     dict(padding="same", dilation=3, groups=2)),
    ("1d_valid_even_kernel", (2, 2, 12), ((1, 1), (2,), (3, 3, 4, 2)), (2, 2, 4), dict(padding="valid", stride=3)),
    ("1d_tuple_padding_chunks_of_one", (1, 1, 9), ((1,), (1,), (1,) * 9), (2, 1, 2),
     dict(padding=(3,), dilation=(2,))),
    ("3d_stride_tuples", (2, 2, 7, 6, 5), ((1, 1), (1, 1), (3, 4), (2, 1, 3), (5,)), (3, 2, 3, 3, 2),
     dict(stride=(2, 1, 2), padding=(1, 2, 1))),
    ("3d_same_dilated_groups", (1, 4, 6, 7, 5), ((1,), (2, 2), (2, 2, 2), (4, 3), (1, 4)), (4, 2, 3, 2, 3),
     dict(padding="same", dilation=(2, 1, 1), groups=2)),
    ("3d_valid_chunks_of_one", (2, 1, 5, 4, 6), ((1, 1), (1,), (1,) * 5, (3, 1), (2, 4)), (2, 1, 2, 3, 2),
     dict(padding="valid", stride=(1, 2, 1))),
    ("3d_depthwise_int_padding", (1, 3, 6, 5, 5), ((1,), (3,), (4, 2), (2, 3), (5,)), (3, 1, 3, 3, 3),
     dict(padding=2, dilation=(1, 2, 1), groups=3)),
]

ND_SEEDS = {name: 100 + i for i, (name, *_) in enumerate(ND_CASES)}

# every case in one padding mode by default (each dimension meets all four), every other pairing in the slow run
ND_PARAMS = [
    pytest.param(mode, case, id=f"{mode}-{case[0]}",
                 marks=() if PADDING_MODES.index(mode) == i % 4 else pytest.mark.slow)
    for i, case in enumerate(ND_CASES) for mode in PADDING_MODES
]


def _nd(name: str, dim: int):
    """``convscope.dask.<name>`` and the in-memory ``convscope.<name>`` for ``dim`` spatial dimensions."""
    return getattr(cdask, name.format(dim)), getattr(convscope, name.format(dim))


def _nd_arrays(name, x_shape, w_shape, dtype=np.float64):
    rng = np.random.default_rng(ND_SEEDS[name])
    x, w, b = random_case(rng, x_shape, w_shape, dtype)
    return x, w, b, rng


@pytest.mark.parametrize("mode, case", ND_PARAMS)
def test_1d_and_3d_equal_in_memory_and_torch(mode, case):
    name, x_shape, chunks, w_shape, params = case
    dim = len(w_shape) - 2
    params = dict(params, padding_mode=mode)
    x, w, b, rng = _nd_arrays(name, x_shape, w_shape)
    (forward, forward_in_memory), (backward, backward_in_memory) = _nd("conv{}d", dim), _nd("conv{}d_backward", dim)
    xd = da.from_array(x, chunks=chunks)
    expected = forward_in_memory(x, w, b, **params)
    gy = rng.standard_normal(expected.shape)
    torch_out, torch_grads = torch_conv_nd(x, w, b, gy, **params)
    y = forward(xd, w, b, **params)
    assert isinstance(y, da.Array) and y.chunks[:2] == (xd.chunks[0], (w_shape[0],))
    got = y.compute(scheduler="threads")
    assert_close(got, expected, "forward")
    assert_close(got, torch_out, "forward against torch")

    exact = backward_in_memory(gy, x, w, **params)
    grads = backward(da.from_array(gy, chunks=(1, 2) + (3,) * dim), xd, w, **params)
    assert isinstance(grads, convscope.ConvGrads) and grads.input.chunks == xd.chunks
    for a, e, t, what in zip(dask.compute(*grads, scheduler="threads"), exact, torch_grads,
                             ("grad input", "grad weight", "grad bias")):
        assert_close(a, e, what)
        assert_close(a, t, what + " against torch")


@pytest.mark.parametrize("dim, mode", [(1, "circular"), (3, "reflect")])
def test_1d_and_3d_reference_loops_are_bitwise_the_same(dim, mode):
    """With the batch in one chunk (the loops' channel products round differently for other batch sizes)."""
    name, x_shape, chunks, w_shape, params = ND_CASES[3 if dim == 1 else 7]
    x, w, b, _ = _nd_arrays(name, x_shape, w_shape)
    forward, forward_in_memory = _nd("conv{}d", dim)
    expected = forward_in_memory(x, w, b, padding_mode=mode, algorithm="reference", **params)
    got = forward(da.from_array(x, chunks=chunks), w, b, padding_mode=mode, algorithm="reference", **params)
    assert np.array_equal(got.compute(), expected)


@pytest.mark.parametrize("dim, dtype", [(1, np.float16), (3, np.float32)])
def test_1d_and_3d_float32_and_float16(dim, dtype):
    name, x_shape, chunks, w_shape, params = ND_CASES[1 if dim == 1 else 5]
    x, w, b, rng = _nd_arrays(name, x_shape, w_shape, dtype)
    (forward, forward_in_memory), (backward, backward_in_memory) = _nd("conv{}d", dim), _nd("conv{}d_backward", dim)
    xd = da.from_array(x, chunks=chunks)
    expected = forward_in_memory(x, w, b, padding_mode="replicate", **params)
    y = forward(xd, w, b, padding_mode="replicate", **params)
    assert y.dtype == dtype
    assert_close(y.compute(), expected, "forward")
    gy = rng.standard_normal(expected.shape).astype(dtype)
    exact = backward_in_memory(gy, x, w, padding_mode="replicate", **params)
    for a, e in zip(dask.compute(*backward(gy, xd, w, padding_mode="replicate", **params)), exact):
        assert_close(a, e, "gradient")


@pytest.mark.parametrize("dim", [1, 3])
def test_1d_and_3d_unbatched_input_and_output_mask(dim):
    x_shape, chunks, w_shape = {1: ((3, 11), (2, 4), (4, 3, 3)), 3: ((3, 5, 4, 6), (1, 2, 3, 4), (4, 3, 3, 2, 3))}[dim]
    rng = np.random.default_rng(dim)
    x, w, b = random_case(rng, x_shape, w_shape)
    (forward, forward_in_memory), (backward, backward_in_memory) = _nd("conv{}d", dim), _nd("conv{}d_backward", dim)
    params = dict(stride=2, padding=1, padding_mode="circular")
    xd = da.from_array(x, chunks=chunks)
    expected = forward_in_memory(x, w, b, **params)
    y = forward(xd, w, b, **params)
    assert y.shape == expected.shape
    assert_close(y.compute(), expected)
    gy = rng.standard_normal(expected.shape)
    exact = backward_in_memory(gy, x, w, **params)
    for mask in ((True, False, False), (False, True, False), (False, False, True)):
        grads = backward(da.from_array(gy), xd, w, output_mask=mask, **params)
        for g, e, wanted in zip(grads, exact, mask):
            if wanted:
                assert_close(g.compute(), e)
            else:
                assert g is None
    assert backward(gy, xd, w, **params).input.chunks == xd.chunks


@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_a_volume_chunked_in_depth_reads_only_halo_slices(mode):
    """A block of a depth-chunked volume depends on its own chunk whole and on one slice of each
    neighbour for a 'same' 3×3×3 kernel (with circular padding, the first reads the last chunk's last)."""
    rng = np.random.default_rng(7)
    x, w, b = random_case(rng, (1, 2, 16, 6, 5), (3, 2, 3, 3, 3))
    xd = da.from_array(x, chunks=(1, 2, 4, 6, 5))
    y = cdask.conv3d(xd, w, b, padding="same", padding_mode=mode)
    graph = dict(y.__dask_graph__())
    pieces = [k for k in graph if isinstance(k, tuple) and k[0].startswith("conv3d-halo")]
    shapes = [v.shape for v in dask.get(graph, pieces)]
    assert shapes and all(s == (1, 2, 1, 6, 5) for s in shapes)
    far = [k for k in pieces if k[3:6] == (3, 0, 0) and k[6:8] == (3, 4)]   # the last chunk's last slice
    assert bool(far) == (mode == "circular")
    assert y.chunks == ((1,), (3,), (4,) * 4, (6,), (5,))
    assert_close(y.compute(), convscope.conv3d(x, w, b, padding="same", padding_mode=mode))


def _good_nd(dim):
    rng = np.random.default_rng(dim)
    x, w, b = random_case(rng, {1: (2, 3, 8), 3: (2, 3, 5, 6, 4)}[dim], (4, 3) + (3,) * dim)
    return x, da.from_array(x, chunks=(1, 3) + (3,) * dim), w, b


@pytest.mark.parametrize("dim", [1, 3])
def test_1d_and_3d_numpy_input_is_pointed_to_the_in_memory_function(dim):
    x, _, w, b = _good_nd(dim)
    forward, backward = getattr(cdask, f"conv{dim}d"), getattr(cdask, f"conv{dim}d_backward")
    with pytest.raises(TypeError, match=rf"conv{dim}d needs a dask array as input.*use convscope\.conv{dim}d,"):
        forward(x, w, b)
    with pytest.raises(TypeError, match=rf"use convscope\.conv{dim}d_backward"):
        backward(np.ones((2, 4) + (6,) * dim), x, w)
    with pytest.raises(TypeError, match=r"weight must be an in-memory array"):
        forward(da.from_array(x), da.from_array(w), b)


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("kwargs", BAD_PARAMETERS + [
    dict(stride=(1, 1)),
    dict(padding=True),
    dict(algorithm="winograd"),            # 3×3 only in 2-d (1-d runs as the 2-d 1×3), not a 3-d path
    dict(algorithm="depthwise"),
    dict(threads=0),
])
def test_1d_and_3d_bad_parameters_give_the_in_memory_messages(dim, kwargs):
    x, xd, w, b = _good_nd(dim)
    forward, forward_in_memory = _nd("conv{}d", dim)
    in_memory_kwargs = {k: v for k, v in kwargs.items() if k != "threads"}
    if in_memory_kwargs:
        with pytest.raises((TypeError, ValueError)) as in_memory:
            forward_in_memory(x, w, b, **in_memory_kwargs)
    with pytest.raises((TypeError, ValueError)) as on_dask:
        forward(xd, w, b, **kwargs)                    # at the call: no graph is built
    if in_memory_kwargs:
        assert on_dask.type is in_memory.type and str(on_dask.value) == str(in_memory.value)
    else:
        assert str(on_dask.value) == "num_threads must be a positive integer, got 0"


@pytest.mark.parametrize("dim", [1, 3])
def test_1d_and_3d_bad_arrays_give_the_in_memory_messages(dim):
    x, xd, w, b = _good_nd(dim)
    (forward, forward_in_memory), (backward, backward_in_memory) = _nd("conv{}d", dim), _nd("conv{}d_backward", dim)
    for args in ((xd[:, :2], w, b), (xd.astype(np.int32), w, b), (xd, w.astype(np.float32), b),
                 (xd, w[0], b), (xd, w[..., None], b), (xd, w, b[:2]), (xd[0, 0], w, b)):
        with pytest.raises((TypeError, ValueError)) as in_memory:
            forward_in_memory(args[0].compute(), *args[1:])
        with pytest.raises(in_memory.type) as on_dask:
            forward(*args)
        assert str(on_dask.value).split(" (convert")[0] == str(in_memory.value).split(" (convert")[0]
    out_shape = forward_in_memory(x, w, b).shape
    for gy in (np.ones(out_shape[:-1] + (out_shape[-1] + 1,)), np.ones(out_shape, dtype=np.float32)):
        with pytest.raises((TypeError, ValueError)) as in_memory:
            backward_in_memory(gy, x, w)
        with pytest.raises(in_memory.type) as on_dask:
            backward(da.from_array(gy), xd, w)
        assert str(on_dask.value) == str(in_memory.value)
    with pytest.raises(ValueError, match="output_mask must have 3 entries"):
        backward(np.ones(out_shape), xd, w, output_mask=(True,))


def test_a_forced_algorithm_that_cannot_compute_is_refused_at_the_call():
    """As in memory, and before any graph is built (the 2-d wrapper too)."""
    x, xd, w, b = _good()
    with pytest.raises(ValueError) as in_memory:
        convscope.conv2d(x, w, b, algorithm="pointwise")
    with pytest.raises(ValueError) as on_dask:
        cdask.conv2d(xd, w, b, algorithm="pointwise")
    assert "cannot compute this convolution" in str(on_dask.value) and str(on_dask.value) == str(in_memory.value)
    with pytest.raises(ValueError, match=r"algorithm='winograd' cannot compute this convolution: it computes 2-d"):
        cdask.conv3d_backward(np.ones((2, 4, 3, 4, 2)), _good_nd(3)[1], _good_nd(3)[2], algorithm="winograd")


def _nd_scheduler_case(index):
    name, x_shape, chunks, w_shape, params = ND_CASES[index]
    dim = len(w_shape) - 2
    x, w, b, rng = _nd_arrays(name, x_shape, w_shape)
    params = dict(params, padding_mode="reflect")
    (forward, forward_in_memory), (backward, backward_in_memory) = _nd("conv{}d", dim), _nd("conv{}d_backward", dim)
    expected = forward_in_memory(x, w, b, **params)
    gy = rng.standard_normal(expected.shape)
    xd = da.from_array(x, chunks=chunks)
    exact = (expected,) + tuple(backward_in_memory(gy, x, w, **params))
    lazy = (forward(xd, w, b, **params),) + tuple(backward(gy, xd, w, **params))
    return lazy, exact


def test_1d_and_3d_on_a_distributed_local_cluster(cluster_client):
    for index in (0, 4):
        lazy, exact = _nd_scheduler_case(index)
        for a, e in zip(cluster_client.compute(list(lazy), sync=True), exact):
            assert_close(a, e)


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(data=st.data(), dim=st.sampled_from([1, 3]), mode=st.sampled_from(PADDING_MODES))
def test_1d_and_3d_random_chunks_and_parameters_equal_in_memory(data, dim, mode):
    sizes = tuple(data.draw(st.integers(1, 7)) for _ in range(dim))
    kernel = tuple(data.draw(st.integers(1, 3)) for _ in range(dim))
    stride = tuple(data.draw(st.integers(1, 3)) for _ in range(dim))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(dim))
    padding = tuple(data.draw(st.integers(0, 2)) for _ in range(dim))
    spec = make_spec(kernel, stride, padding, dilation, 1, mode, ndim=dim)
    try:
        check_input_hw(spec, sizes)
    except ValueError:
        assume(False)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x, w, b = random_case(rng, (2, 2) + sizes, (3, 2) + kernel)
    chunks = ((1, 1), (1, 1)) + tuple(data.draw(_chunks(n)) for n in sizes)
    params = dict(stride=stride, padding=padding, dilation=dilation, padding_mode=mode)
    (forward, forward_in_memory), (backward, backward_in_memory) = _nd("conv{}d", dim), _nd("conv{}d_backward", dim)
    expected = forward_in_memory(x, w, b, **params)
    xd = da.from_array(x, chunks=chunks)
    assert_close(forward(xd, w, b, **params).compute(scheduler="sync"), expected, "forward")
    gy = rng.standard_normal(expected.shape)
    got = dask.compute(*backward(gy, xd, w, **params), scheduler="sync")
    for a, e, what in zip(got, backward_in_memory(gy, x, w, **params), ("input", "weight", "bias")):
        assert_close(a, e, "grad " + what)


# --------------------------------------------------------------------------- transposed convolutions (forward)

# (name, input shape, chunks, weight shape (C_in, C_out/groups, k…), parameters)
TRANSPOSED_CASES = [
    ("1d_stride2_output_padding", (2, 3, 9), ((1, 1), (2, 1), (4, 1, 4)), (3, 2, 3),
     dict(stride=2, padding=1, output_padding=1)),
    ("1d_dilation_beyond_stride", (1, 2, 7), ((1,), (2,), (2, 5)), (2, 1, 3),
     dict(stride=2, dilation=3, output_padding=2, groups=2)),      # output_padding ≥ stride: zero rows
    ("2d_uneven_groups", (2, 4, 7, 6), ((2,), (4,), (3, 1, 3), (2, 4)), (4, 1, 3, 2),
     dict(stride=(2, 1), padding=(1, 0), groups=2)),
    ("2d_cropping_padding_chunks_of_one", (1, 2, 5, 4), ((1,), (2,), (1,) * 5, (1,) * 4), (2, 3, 4, 4),
     dict(stride=3, padding=4, dilation=(1, 2))),                  # padding crops more than a stride
    ("3d_strided_volume", (1, 2, 5, 4, 3), ((1,), (1, 1), (2, 3), (4,), (1, 2)), (2, 2, 3, 3, 2),
     dict(stride=(2, 1, 2), padding=(1, 1, 0), output_padding=(1, 0, 1))),
]


@pytest.mark.parametrize("case", TRANSPOSED_CASES, ids=[c[0] for c in TRANSPOSED_CASES])
def test_transposed_equal_in_memory_and_torch(case):
    name, x_shape, chunks, w_shape, params = case
    dim = len(w_shape) - 2
    rng = np.random.default_rng(len(name))
    x, w, b = random_case(rng, x_shape, w_shape)
    b = rng.standard_normal(w_shape[1] * params.get("groups", 1))
    expected = getattr(convscope, f"conv_transpose{dim}d")(x, w, b, **params)
    torch_out, _ = torch_conv_transpose_nd(x, w, b, None, **params)
    y = getattr(cdask, f"conv_transpose{dim}d")(da.from_array(x, chunks=chunks), w, b, **params)
    assert y.chunks[0] == chunks[0] and y.dtype == x.dtype
    got = y.compute(scheduler="threads")
    assert_close(got, expected, "forward")
    assert_close(got, torch_out, "forward against torch")
    no_bias = getattr(cdask, f"conv_transpose{dim}d")(da.from_array(x[0], chunks=chunks[1:]), w, **params)
    assert_close(no_bias.compute(scheduler="sync"), getattr(convscope, f"conv_transpose{dim}d")(x[0], w, **params))

    gy = rng.standard_normal(expected.shape)
    _, torch_grads = torch_conv_transpose_nd(x, w, b, gy, **params)
    exact = getattr(convscope, f"conv_transpose{dim}d_backward")(gy, x, w, **params)
    gy_chunks = (1, 2) + (3,) * dim                                   # unlike the output's chunks
    grads = getattr(cdask, f"conv_transpose{dim}d_backward")(da.from_array(gy, chunks=gy_chunks),
                                                             da.from_array(x, chunks=chunks), w, **params)
    assert grads.input.chunks == chunks
    for a, e, t, what in zip(dask.compute(*grads, scheduler="threads"), exact, torch_grads,
                             ("grad input", "grad weight", "grad bias")):
        assert_close(a, e, what)
        assert_close(a, t, what + " against torch")


def test_transposed_float32_and_its_chunks_follow_the_stride():
    x, w, _ = random_case(np.random.default_rng(5), (2, 3, 10, 9), (3, 4, 3, 3), np.float32)
    b = np.arange(4, dtype=np.float32)
    y = cdask.conv_transpose2d(da.from_array(x, chunks=(1, 3, 4, 5)), w, b, stride=2, padding=1)
    assert y.chunks == ((1, 1), (4,), (8, 8, 3), (10, 7))          # cut at twice the input's cuts
    assert_close(y.compute(), convscope.conv_transpose2d(x, w, b, stride=2, padding=1))


@pytest.mark.parametrize("kwargs", [dict(groups=2), dict(output_padding=2, stride=2), dict(padding="same"),
                                    dict(padding=-1), dict(stride=0), dict(algorithm="magic"),
                                    dict(algorithm="pointwise")])
def test_transposed_bad_parameters_give_the_in_memory_messages(kwargs):
    x, w, b = random_case(np.random.default_rng(6), (2, 3, 6, 5), (3, 2, 3, 3))
    with pytest.raises((TypeError, ValueError)) as in_memory:
        convscope.conv_transpose2d(x, w, b, **kwargs)
    with pytest.raises(in_memory.type) as on_dask:
        cdask.conv_transpose2d(da.from_array(x), w, b, **kwargs)
    assert str(on_dask.value) == str(in_memory.value)
    with pytest.raises(TypeError, match=r"conv_transpose3d needs a dask array as input.*use convscope\.conv_transpose3d"):
        cdask.conv_transpose3d(x, w, b)


def test_transposed_backward_arguments():
    x, w, _ = random_case(np.random.default_rng(6), (2, 3, 6, 5), (3, 2, 3, 3))
    xd = da.from_array(x, chunks=(1, 3, 4, 5))
    for gy, kwargs in ((np.ones((2, 2, 9, 7)), {}), (np.ones((2, 2, 8, 7), np.float32), {}),
                       (np.ones((2, 2, 8, 7)), dict(output_mask=(True, False))),
                       (np.ones((2, 2, 8, 7)), dict(output_padding=1))):
        with pytest.raises((TypeError, ValueError)) as in_memory:
            convscope.conv_transpose2d_backward(gy, x, w, **kwargs)
        with pytest.raises(in_memory.type) as on_dask:
            cdask.conv_transpose2d_backward(gy, xd, w, **kwargs)
        assert str(on_dask.value) == str(in_memory.value)
    gy = np.random.default_rng(7).standard_normal((2, 8, 7))        # unbatched
    grads = cdask.conv_transpose2d_backward(gy, xd[0], w, output_mask=(False, True, True))
    exact = convscope.conv_transpose2d_backward(gy, x[0], w)
    assert grads.input is None
    assert_close(grads.weight.compute(), exact.weight)
    assert_close(grads.bias.compute(), exact.bias)


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(data=st.data(), dim=st.sampled_from([1, 2, 3]))
def test_transposed_random_chunks_and_parameters_equal_in_memory(data, dim):
    sizes = tuple(data.draw(st.integers(1, 6)) for _ in range(dim))
    kernel = tuple(data.draw(st.integers(1, 3)) for _ in range(dim))
    stride = tuple(data.draw(st.integers(1, 3)) for _ in range(dim))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(dim))
    padding = tuple(data.draw(st.integers(0, 2)) for _ in range(dim))
    output_padding = tuple(data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x, w, b = random_case(rng, (2, 2) + sizes, (2, 3) + kernel)
    b = rng.standard_normal(3)
    params = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
    forward = getattr(convscope, f"conv_transpose{dim}d")
    try:
        expected = forward(x, w, b, **params)
    except ValueError:                                           # an empty output
        assume(False)
    xd = da.from_array(x, chunks=((1, 1), (1, 1)) + tuple(data.draw(_chunks(n)) for n in sizes))
    lazy = getattr(cdask, f"conv_transpose{dim}d")
    assert_close(lazy(xd, w, b, **params).compute(scheduler="sync"), expected, "forward")
    gy = rng.standard_normal(expected.shape)
    exact = getattr(convscope, f"conv_transpose{dim}d_backward")(gy, x, w, **params)
    got = dask.compute(*getattr(cdask, f"conv_transpose{dim}d_backward")(gy, xd, w, **params), scheduler="sync")
    for a, e, what in zip(got, exact, ("input", "weight", "bias")):
        assert_close(a, e, "grad " + what)


def test_transposed_on_a_distributed_local_cluster(cluster_client):
    name, x_shape, chunks, w_shape, params = TRANSPOSED_CASES[4]
    rng = np.random.default_rng(9)
    x, w, _ = random_case(rng, x_shape, w_shape)
    b = rng.standard_normal(w_shape[1])
    expected = convscope.conv_transpose3d(x, w, b, **params)
    gy = rng.standard_normal(expected.shape)
    xd = da.from_array(x, chunks=chunks)
    lazy = [cdask.conv_transpose3d(xd, w, b, **params)] + list(cdask.conv_transpose3d_backward(gy, xd, w, **params))
    exact = [expected] + list(convscope.conv_transpose3d_backward(gy, x, w, **params))
    for a, e in zip(cluster_client.compute(lazy, sync=True), exact):
        assert_close(a, e)
