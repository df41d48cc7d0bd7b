"""Convolutions over Dask arrays: :func:`conv2d` and :func:`conv2d_backward`, chunk by chunk, lazily.

The same numbers as :func:`convscope.conv2d` and :func:`convscope.conv2d_backward`, on arrays
larger than memory, on any Dask scheduler (threads, processes, ``distributed``)::

    import dask.array as da, convscope.dask
    x = da.random.default_rng(0).random((1, 1, 24000, 24000), chunks=(1, 1, 4000, 4000), dtype="f4")
    y = convscope.dask.conv2d(x, w, padding=2, padding_mode="reflect")    # lazy, chunked like x

How an output chunk is made
---------------------------
The outputs are cut into blocks aligned to the stride with the input's chunks: output ``i``
belongs to the chunk holding input row ``i·stride`` (:func:`convscope.geometry.output_blocks`),
so with stride 1 and ``'same'`` the output is chunked exactly like the input.  For each block
:func:`convscope.geometry.block_read` says which padded rows and columns its windows read (its
rows plus the halo), and :func:`convscope.geometry.block_sources` which real pixel each of them
copies in the padding mode — the same source map the in-memory padding uses, so reflect,
replicate and circular (whose halo at the first chunk comes from the last one) are exact at the
array's edges.  The task of a block gathers those pixels from the input chunks it depends on
(zeros where the map says zero padding) and runs :func:`convscope.conv2d` on them with padding 0;
inside it the planner picks the algorithm, under the workspace limit.  Only the pieces of the
neighbouring chunks that a block reads (its halo) are sent to its task, not the whole chunks.

The planner's choice depends on the size it is given, so a chunk may run another algorithm than
the whole array would: results agree with the in-memory ones to the algorithms' rounding, and
bit for bit in the forward with ``algorithm='reference'`` (the readable loops).

The backward runs, per output block, :func:`convscope.conv2d_backward` on the gathered block:
its ∂/∂block is scattered back through the same source map (the adjoint of the gather: a border
cell adds into the pixel it copied), summed per input chunk over the blocks that read it;
∂/∂weight and ∂/∂bias are per-block partial sums reduced by Dask's tree sum (``split_every``).
float16 is computed in float32 throughout, as in memory, and rounded once at the end.

Chunks
------
Batch and spatial chunks may have any sizes, uneven and smaller than the kernel (a block then
reads several chunks).  Channels are rechunked to a single chunk: every output channel reads
all the input channels of its group, so a block needs them at once.  That rechunk costs one
pass over the input, and a chunk then holds ``C`` times the pixels of one channel's chunk;
choose spatial chunks so that ``C × chunk pixels × itemsize`` (plus the output chunk and the
algorithm's workspace) fits a worker's memory.  ``grad_input`` is rechunked back to ``x``'s chunks.

Settings per task
-----------------
Nothing is assumed about the workers' state: every task sets convscope's thread count
(``threads``, default 1: Dask runs one task per core) and runs under ``workspace_limit``
(default: the caller's :func:`convscope.get_workspace_limit`), both for the task's own thread
only (:func:`convscope.num_threads`, :func:`convscope.workspace_limit`), so the caller's settings
are left as they are.  The BLAS's thread pool is process-wide; ``distributed``'s workers start
with it at one thread.

Progress
--------
``with dask.diagnostics.ProgressBar(): y.compute()`` on the local schedulers; on a
``distributed`` cluster the dashboard (``client.dashboard_link``, by default
http://127.0.0.1:8787/status) shows the ``conv2d-…`` tasks as they run.
"""
from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass

import numpy as np

try:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without dask
    raise ImportError(
        "convscope.dask needs dask and distributed: pip install 'convscope[dask]'"
    ) from exc

from . import geometry, planner
from .functional import Conv2dGrads, _spec_from_weight
from .functional import conv2d as _conv2d
from .functional import conv2d_backward as _conv2d_backward
from .functional import conv2d_input as _conv2d_input
from .spec import (
    as_array,
    check_grad_output_shape,
    check_input_ndim,
    check_num_threads,
    check_output_mask,
    check_same_dtype,
    check_shapes,
    check_workspace_bytes,
    compute_dtype,
    output_shape_of,
)
from .threads import num_threads
from .workspace import get_workspace_limit, workspace_limit as _workspace_limit

__all__ = ["conv2d", "conv2d_backward"]

SPLIT_EVERY = 8  # fan-in of the tree sum of the ∂/∂weight and ∂/∂bias partials


# --------------------------------------------------------------------------- what a block reads


@dataclass(frozen=True)
class _Run:
    """Block positions ``pos … pos + length − 1`` copy chunk positions ``loc, loc + step, …``.

    ``step`` is 1, −1 (a reflected border) or 0 (a replicated edge pixel).
    """

    pos: int
    length: int
    loc: int
    step: int

    @property
    def dst(self) -> slice:
        return slice(self.pos, self.pos + self.length)

    @property
    def src(self) -> slice:
        if self.step == 1:
            return slice(self.loc, self.loc + self.length)
        if self.step == 0:
            return slice(self.loc, self.loc + 1)
        last = self.loc - self.length
        return slice(self.loc, None if last < 0 else last, -1)


@dataclass(frozen=True)
class _Part:
    """The runs of a block's read that come from input chunk ``chunk`` (along one axis)."""

    chunk: int
    runs: tuple

    @property
    def locs(self) -> tuple[int, int]:
        """The range of chunk positions the runs read (only this piece of the chunk is sent)."""
        ends = [(r.loc, r.loc + (r.length - 1) * r.step) for r in self.runs]
        return min(min(e) for e in ends), max(max(e) for e in ends) + 1

    @property
    def positions(self) -> tuple[int, int]:
        """The range of block positions the runs fill."""
        return self.runs[0].pos, self.runs[-1].pos + self.runs[-1].length

    def shifted(self, loc: int, pos: int) -> "_Part":
        return _Part(self.chunk, tuple(_Run(r.pos - pos, r.length, r.loc - loc, r.step) for r in self.runs))


@dataclass(frozen=True)
class _AxisRead:
    """One block's read along one axis: its length, its parts by input chunk, any zero padding."""

    length: int
    parts: tuple
    zeros: bool


def _axis_read(sources: np.ndarray, starts: np.ndarray) -> _AxisRead:
    """Cut a block's source pixels (``-1``: zero) into runs, grouped by the input chunk they lie in.

    ``starts`` are the input chunks' first rows (and the axis length last).
    """
    chunk_of = np.searchsorted(starts, sources, side="right") - 1       # (length,)
    local = sources - starts[chunk_of]                                   # (length,)
    runs: dict[int, list] = {}
    current = None                                      # [pos, length, loc, step] of the open run
    for pos, (src, chunk, loc) in enumerate(zip(sources.tolist(), chunk_of.tolist(), local.tolist())):
        if src < 0:
            current = None
            continue
        if current is not None and current_chunk == chunk:
            step = loc - (current[2] + (current[1] - 1) * current[3])
            if current[1] == 1 and step in (-1, 0, 1):
                current[3] = step
            if step == current[3]:
                current[1] += 1
                continue
        current, current_chunk = [pos, 1, loc, 1], chunk
        runs.setdefault(chunk, []).append(current)
    parts = tuple(_Part(c, tuple(_Run(*run) for run in rs)) for c, rs in sorted(runs.items()))
    return _AxisRead(int(sources.size), parts, bool((sources < 0).any()))


class _Axis:
    """One spatial axis of a call: the input chunks, the output blocks and what each block reads."""

    def __init__(self, chunks, kernel, stride, dilation, before, after, mode, out_len):
        self.in_chunks = tuple(int(c) for c in chunks)
        size = sum(self.in_chunks)
        starts = np.concatenate([[0], np.cumsum(self.in_chunks)]).astype(np.intp)
        self.blocks = geometry.output_blocks(starts[1:-1].tolist(), stride, out_len)
        self.out_chunks = tuple(b - a for a, b in self.blocks)
        self.reads = []
        for o0, o1 in self.blocks:
            read = geometry.block_read(o0, o1, size, kernel, stride, dilation, before, after)
            self.reads.append(_axis_read(geometry.block_sources(read, size, before, mode), starts))

        # what a block's task receives: each part's piece of its chunk, runs counted from the piece
        self.pieces = [_AxisRead(r.length, tuple(p.shifted(p.locs[0], 0) for p in r.parts), r.zeros)
                       for r in self.reads]

    def readers(self, chunk: int) -> list:
        """``(block, slice of its positions, part)`` for every output block that reads input chunk
        ``chunk``, with the part's runs counted from the slice."""
        return [(i, slice(*part.positions), part.shifted(0, part.positions[0]))
                for i, read in enumerate(self.reads) for part in read.parts if part.chunk == chunk]


def _axes(spec, shape, chunks) -> tuple[_Axis, _Axis]:
    return tuple(  # type: ignore[return-value]
        _Axis(c, k, s, d, p0, p1, spec.padding_mode, o)
        for c, k, s, d, (p0, p1), o in zip(chunks[2:], spec.kernel_size, spec.stride, spec.dilation,
                                           spec.padding, (shape.H_out, shape.W_out))
    )


# --------------------------------------------------------------------------- the tasks


@dataclass(frozen=True)
class _Call:
    """Everything a task needs besides its arrays (plain values: it pickles for any worker)."""

    stride: tuple
    dilation: tuple
    groups: int
    algorithm: str | None
    threads: int
    workspace: int

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=0, dilation=self.dilation, groups=self.groups,
                    algorithm=self.algorithm)


@contextlib.contextmanager
def _settings(call: _Call):
    with num_threads(call.threads), _workspace_limit(call.workspace):
        yield


def _gather(chunks, rows: _AxisRead, cols: _AxisRead, lead: tuple, dtype) -> np.ndarray:
    """The padded block (n, C, rows.length, cols.length) from ``chunks[row part][col part]``."""
    make = np.zeros if rows.zeros or cols.zeros else np.empty
    out = make(lead + (rows.length, cols.length), dtype=dtype)
    for rpart, row_chunks in zip(rows.parts, chunks):
        for cpart, chunk in zip(cols.parts, row_chunks):
            for r in rpart.runs:
                for c in cpart.runs:
                    out[:, :, r.dst, c.dst] = chunk[:, :, r.src, c.src]   # step 0 broadcasts
    return out


def _scatter_add(dst: np.ndarray, src: np.ndarray, run: _Run, axis: int) -> None:
    """The adjoint of one run of the gather: ``dst[loc…] += src[pos…]`` along ``axis``."""
    take = [slice(None)] * src.ndim
    take[axis] = run.dst
    part = src[tuple(take)]
    put = [slice(None)] * dst.ndim
    if run.step == 0:
        put[axis] = slice(run.loc, run.loc + 1)
        dst[tuple(put)] += part.sum(axis=axis, keepdims=True)
    elif run.step == 1:
        put[axis] = slice(run.loc, run.loc + run.length)
        dst[tuple(put)] += part
    else:
        put[axis] = slice(run.loc - run.length + 1, run.loc + 1)
        flip = [slice(None)] * src.ndim
        flip[axis] = slice(None, None, -1)
        dst[tuple(put)] += part[tuple(flip)]


def _forward_block(chunks, rows, cols, lead, weight, bias, call):
    block = _gather(chunks, rows, cols, lead, weight.dtype)
    with _settings(call):
        return _conv2d(block, weight, bias, **call.kwargs())


def _backward_block(grad_out, chunks, rows, cols, lead, weight, call, mask):
    """(∂/∂block, ∂/∂weight, ∂/∂bias) of one output block, in the compute dtype (None: not asked)."""
    cdt = compute_dtype(weight.dtype)
    w = weight.astype(cdt, copy=False)
    gy = grad_out.astype(cdt, copy=False)
    with _settings(call):
        if mask[1]:
            block = _gather(chunks, rows, cols, lead, cdt)
            return tuple(_conv2d_backward(gy, block, w, **call.kwargs(), output_mask=mask))
        dx = _conv2d_input(lead + (rows.length, cols.length), w, gy, **call.kwargs()) if mask[0] else None
        db = gy.sum(axis=(0, 2, 3)) if mask[2] else None
        return dx, None, db


def _grad_input_chunk(grads, row_parts, col_parts, shape, dtype):
    """∂/∂x of one input chunk ``shape`` (n, C, h, w): the blocks' gradients that read it, folded in."""
    acc = np.zeros(shape, dtype=dtype)
    for g, rpart, cpart in zip(grads, row_parts, col_parts):
        rows = np.zeros(shape[:3] + g.shape[3:], dtype=dtype)   # (n, C, h, block cols)
        for run in rpart.runs:
            _scatter_add(rows, g, run, axis=2)
        for run in cpart.runs:
            _scatter_add(acc, rows, run, axis=3)
    return acc


def _piece(a, rows: slice, cols: slice):
    """A copy of ``a[:, :, rows, cols]``: what a neighbouring task needs of a chunk (its halo)."""
    return a[:, :, rows, cols].copy()


def _pick_expanded(results, k):
    """``results[k][None]``: one block's partial ∂/∂weight or ∂/∂bias, as a chunk of the stack."""
    return results[k][None]


def _add_layer(graph: HighLevelGraph, name: str, layer: dict, depends_on: str) -> HighLevelGraph:
    """``graph`` plus one more layer ``name`` that reads layer ``depends_on``."""
    return HighLevelGraph({**graph.layers, name: layer}, {**graph.dependencies, name: {depends_on}})


# --------------------------------------------------------------------------- checks and graphs


def _check_dask(value, name: str, function: str):
    if not isinstance(value, da.Array):
        raise TypeError(
            f"convscope.dask.{function} needs a dask array as {name}, got {type(value).__name__}; "
            f"for an in-memory array use convscope.{function}, or wrap it with "
            f"dask.array.from_array({name}, chunks=...)"
        )
    if any(np.isnan(c) for dim in value.chunks for c in dim):
        raise ValueError(
            f"{name} has unknown chunk sizes (shape {value.shape}); call {name}.compute_chunk_sizes() first"
        )
    return value


def _numpy_arg(value, name: str, allow_none: bool = False):
    if isinstance(value, da.Array):
        raise TypeError(f"{name} must be an in-memory array (NumPy or torch), got a dask array; "
                        f"compute it first ({name}.compute())")
    return as_array(value, name, allow_none=allow_none)


def _dtype_probe(x) -> np.ndarray:
    """An empty array of ``x``'s dtype, for the dtype checks of :mod:`convscope.spec`."""
    return np.empty(0, dtype=x.dtype)


def _setup(x, w, stride, padding, dilation, groups, padding_mode, algorithm, threads,
           workspace, bias=None):
    """Validate a call (before any graph is built); return (x4, spec, shape, call)."""
    planner.check_algorithm(algorithm)
    threads = check_num_threads(threads)
    workspace = get_workspace_limit() if workspace is None else check_workspace_bytes(workspace,
                                                                                      "workspace_limit")
    check_input_ndim(x.shape)
    spec = _spec_from_weight(w.shape, stride, padding, dilation, groups, padding_mode)
    shape = check_shapes(spec, x.shape, w.shape, None if bias is None else bias.shape)
    call = _Call(spec.stride, spec.dilation, spec.groups, algorithm, threads, workspace)
    x4 = (x if x.ndim == 4 else x[None]).rechunk({1: -1})          # (N, C, H, W), channels whole
    return x4, spec, shape, call


def _piece_keys(dsk, name, source, rows, cols, row_axis, col_axis) -> list:
    """``[row part][col part]`` keys of what one block reads of ``source(row chunk, col chunk)``:
    the chunk's key where the block reads all of it, else the key of a piece task (added to ``dsk``)
    that cuts out the part read, so that only halos move between workers."""
    keys = []
    for rp in rows.parts:
        keys.append([])
        for cp in cols.parts:
            key = source(rp.chunk, cp.chunk)
            (r0, r1), (c0, c1) = rp.locs, cp.locs
            if (r1 - r0, c1 - c0) != (row_axis.in_chunks[rp.chunk], col_axis.in_chunks[cp.chunk]):
                piece = (name,) + key[1:] + (r0, r1, c0, c1)
                dsk[piece] = (_piece, key, slice(r0, r1), slice(c0, c1))
                key = piece
            keys[-1].append(key)
    return keys


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
           algorithm=None, threads=1, workspace_limit=None):
    """:func:`convscope.conv2d` of a dask array, lazily: a dask array of the output.

    Parameters
    ----------
    input : dask array (N, C, H, W) or (C, H, W), chunked in any way (channels are rechunked whole)
    weight, bias : NumPy arrays (or torch tensors), as for :func:`convscope.conv2d`
    stride, padding, dilation, groups, padding_mode, algorithm : as for :func:`convscope.conv2d`
    threads : convscope's thread count inside each task (default 1)
    workspace_limit : scratch bytes per task (default: :func:`convscope.get_workspace_limit` now)

    Returns
    -------
    dask array (N, C_out, H_out, W_out) (or (C_out, H_out, W_out)): batch chunks as the input's,
    one channel chunk, spatial chunks aligned to the stride with the input's.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convscope, convscope.dask
    >>> x = np.arange(2 * 3 * 10 * 9, dtype=np.float64).reshape(2, 3, 10, 9)
    >>> w = np.ones((4, 3, 3, 3))
    >>> y = convscope.dask.conv2d(da.from_array(x, chunks=(1, 1, 4, 5)), w, padding=1,
    ...                           padding_mode="reflect")
    >>> y.chunks
    ((1, 1), (4,), (4, 4, 2), (5, 4))
    >>> bool(np.allclose(y.compute(), convscope.conv2d(x, w, padding=1, padding_mode="reflect")))
    True
    """
    x = _check_dask(input, "input", "conv2d")
    w = _numpy_arg(weight, "weight")
    b = _numpy_arg(bias, "bias", allow_none=True)
    dtype = check_same_dtype(input=as_array(_dtype_probe(x), "input"), weight=w, bias=b)
    x4, spec, shape, call = _setup(x, w, stride, padding, dilation, groups, padding_mode,
                                   algorithm, threads, workspace_limit, b)
    rows_axis, cols_axis = _axes(spec, shape, x4.chunks)
    w = np.ascontiguousarray(w)
    token = tokenize(x4.name, w, b, spec, call)
    name = "conv2d-" + token
    wkey, bkey = "conv2d-weight-" + token, None
    dsk = {wkey: w}
    if b is not None:
        bkey = "conv2d-bias-" + token
        dsk[bkey] = b
    halo = "conv2d-halo-" + token
    for nb, n in enumerate(x4.chunks[0]):
        for i, (rows, rows_in) in enumerate(zip(rows_axis.reads, rows_axis.pieces)):
            for j, (cols, cols_in) in enumerate(zip(cols_axis.reads, cols_axis.pieces)):
                keys = _piece_keys(dsk, halo, lambda r, c: (x4.name, nb, 0, r, c), rows, cols,
                                   rows_axis, cols_axis)
                dsk[(name, nb, 0, i, j)] = (_forward_block, keys, rows_in, cols_in, (n, shape.C), wkey, bkey, call)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x4])
    out = da.Array(graph, name, chunks=(x4.chunks[0], (shape.out_channels,), rows_axis.out_chunks,
                                        cols_axis.out_chunks), dtype=dtype)
    return out if x.ndim == 4 else out[0]


def conv2d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros", algorithm=None, output_mask=(True, True, True), threads=1,
                    workspace_limit=None) -> Conv2dGrads:
    """:func:`convscope.conv2d_backward` over dask arrays, lazily.

    Returns a :class:`convscope.Conv2dGrads` of dask arrays ``(input, weight, bias)`` (None where
    ``output_mask`` says so): ∂/∂input chunked like ``input``; ∂/∂weight ``(C_out, C/groups, kH, kW)``
    and ∂/∂bias ``(C_out,)``, each one chunk, the tree sum (fan-in 8) of one partial per output
    block.  ``grad_output`` is a dask array (or an in-memory one) of the output's shape, rechunked
    to the output's chunks as :func:`conv2d` makes them.  The other parameters are :func:`conv2d`'s.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convscope, convscope.dask
    >>> x = np.random.default_rng(0).standard_normal((2, 2, 9, 8)); w = np.ones((3, 2, 3, 3))
    >>> g = np.ones((2, 3, 5, 4))
    >>> grads = convscope.dask.conv2d_backward(g, da.from_array(x, chunks=(1, 2, 3, 3)), w, stride=2,
    ...                                        padding=1, padding_mode="circular")
    >>> grads.input.chunks
    ((1, 1), (2,), (3, 3, 3), (3, 3, 2))
    >>> exact = convscope.conv2d_backward(g, x, w, stride=2, padding=1, padding_mode="circular")
    >>> all(np.allclose(a.compute(), b) for a, b in zip(grads, exact))
    True
    """
    x = _check_dask(input, "input", "conv2d_backward")
    mask = check_output_mask(output_mask)
    w = _numpy_arg(weight, "weight")
    gy_in = grad_output
    if not isinstance(gy_in, da.Array):
        gy_in = _numpy_arg(gy_in, "grad_output")
    else:
        _check_dask(gy_in, "grad_output", "conv2d_backward")
    dtype = check_same_dtype(grad_output=as_array(_dtype_probe(gy_in), "grad_output"),
                             input=as_array(_dtype_probe(x), "input"), weight=w)
    x4, spec, shape, call = _setup(x, w, stride, padding, dilation, groups, padding_mode, algorithm, threads,
                                   workspace_limit)
    unbatched = x.ndim == 3
    check_grad_output_shape(gy_in.shape, output_shape_of(shape)[unbatched:])   # no batch axis when unbatched
    rows_axis, cols_axis = _axes(spec, shape, x4.chunks)
    out_chunks = (x4.chunks[0], (shape.out_channels,), rows_axis.out_chunks, cols_axis.out_chunks)
    if not isinstance(gy_in, da.Array):
        gy_in = da.from_array(gy_in, chunks=out_chunks[1:] if unbatched else out_chunks)
    gy4 = (gy_in[None] if unbatched else gy_in).rechunk(out_chunks)              # (N, C_out, H_out, W_out)
    cdt = compute_dtype(dtype)
    w = np.ascontiguousarray(w)
    token = tokenize(gy4.name, x4.name, w, spec, call, mask)
    name, wkey = "conv2d-backward-" + token, "conv2d-weight-" + token
    dsk = {wkey: w}
    blocks = []
    halo = "conv2d-halo-" + token
    for nb, n in enumerate(x4.chunks[0]):
        for i, (rows, rows_in) in enumerate(zip(rows_axis.reads, rows_axis.pieces)):
            for j, (cols, cols_in) in enumerate(zip(cols_axis.reads, cols_axis.pieces)):
                keys = _piece_keys(dsk, halo, lambda r, c: (x4.name, nb, 0, r, c), rows, cols,
                                   rows_axis, cols_axis) if mask[1] else []
                dsk[(name, nb, i, j)] = (_backward_block, (gy4.name, nb, 0, i, j), keys, rows_in, cols_in,
                                         (n, shape.C), wkey, call, mask)
                blocks.append((name, nb, i, j))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x4, gy4])
    results = [None, None, None]
    if mask[0]:
        dx_name, part_name = "conv2d-grad-input-" + token, "conv2d-grad-block-" + token
        layer = {}
        for nb, n in enumerate(x4.chunks[0]):
            for i in range(len(rows_axis.reads)):
                for j in range(len(cols_axis.reads)):
                    layer[(part_name, nb, i, j)] = (operator.getitem, (name, nb, i, j), 0)
            for jr, h in enumerate(rows_axis.in_chunks):
                for jc, wd in enumerate(cols_axis.in_chunks):
                    pairs = [(i, rs, rp, j, cs, cp) for i, rs, rp in rows_axis.readers(jr)
                             for j, cs, cp in cols_axis.readers(jc)]
                    keys = []
                    for i, rs, _, j, cs, _ in pairs:       # the piece of each block's gradient this chunk gets
                        key = (part_name + "-piece", nb, i, j, jr, jc)
                        layer[key] = (_piece, (part_name, nb, i, j), rs, cs)
                        keys.append(key)
                    layer[(dx_name, nb, 0, jr, jc)] = (
                        _grad_input_chunk, keys, [p[2] for p in pairs], [p[5] for p in pairs],
                        (n, shape.C, h, wd), cdt)
        dx = da.Array(_add_layer(graph, dx_name, layer, name), dx_name, chunks=x4.chunks, dtype=cdt)
        dx = dx.astype(dtype)
        dx = dx[0] if unbatched else dx
        results[0] = dx.rechunk(x.chunks) if dx.chunks != x.chunks else dx
    for k, label, tail in ((1, "weight", (shape.in_per_group,) + tuple(spec.kernel_size)), (2, "bias", ())):
        if mask[k]:
            pname = f"conv2d-grad-{label}-partials-" + token
            layer = {(pname, b_index, 0) + (0,) * len(tail): (_pick_expanded, key, k)
                     for b_index, key in enumerate(blocks)}
            chunks = ((1,) * len(blocks), (shape.out_channels,)) + tuple((t,) for t in tail)
            partials = da.Array(_add_layer(graph, pname, layer, name), pname, chunks=chunks, dtype=cdt)
            results[k] = partials.sum(axis=0, split_every=SPLIT_EVERY).astype(dtype)
    return Conv2dGrads(*results)
