"""Convolutions over Dask arrays in 1, 2 and 3 spatial dimensions, chunk by chunk, lazily.

:func:`conv1d`, :func:`conv2d`, :func:`conv3d` and :func:`conv1d_backward`, :func:`conv2d_backward`,
:func:`conv3d_backward` give the same numbers as the in-memory :func:`convscope.conv1d`,
:func:`convscope.conv2d`, :func:`convscope.conv3d` and their backward passes, on arrays larger than
memory, on any Dask scheduler (threads, processes, ``distributed``)::

    import dask.array as da, convscope.dask
    x = da.random.default_rng(0).random((1, 1, 24000, 24000), chunks=(1, 1, 4000, 4000), dtype="f4")
    y = convscope.dask.conv2d(x, w, padding=2, padding_mode="reflect")    # lazy, chunked like x
    v = da.random.default_rng(0).random((1, 2, 600, 512, 512), chunks=(1, 2, 50, 512, 512), dtype="f4")
    z = convscope.dask.conv3d(v, w3, padding="same", padding_mode="replicate")   # a volume chunked in depth

How an output chunk is made
---------------------------
One code path serves every number of spatial dimensions: the arithmetic is done axis by axis, and
an output chunk is the product of one block per spatial axis.  Along an axis the outputs are cut
into blocks aligned to the stride with the input's chunks: output ``i`` belongs to the chunk
holding input position ``i·stride`` (:func:`convscope.geometry.output_blocks`), so with stride 1
and ``'same'`` the output is chunked exactly like the input.  For each block
:func:`convscope.geometry.block_read` says which padded positions its windows read (its own plus
the halo), and :func:`convscope.geometry.block_sources` which real position each of them copies
in the padding mode — the same source map the in-memory padding uses, so reflect, replicate and
circular (whose halo at the first chunk comes from the last one) are exact at the array's edges.
The task of an output chunk gathers those pixels from the input chunks it depends on (zeros where
the maps say zero padding) and runs the in-memory :func:`convscope.conv1d`, :func:`convscope.conv2d`
or :func:`convscope.conv3d` on them with padding 0; inside it the planner picks the algorithm,
under the workspace limit.  Only the pieces of the neighbouring chunks that a block reads (its
halo) are sent to its task, not the whole chunks.

The planner's choice depends on the size it is given, so a chunk may run another algorithm than
the whole array would: results agree with the in-memory ones to the algorithms' rounding, and
bit for bit in the forward with ``algorithm='reference'`` (the readable loops) when the batch is one
chunk (the loops' products over channels round differently for other batch sizes).  A forced
``algorithm`` that cannot compute the convolution (a 2-d-only one for a 3-d call, Winograd for a
5×5 kernel) is refused at the call, with the in-memory message.

The backward runs, per output chunk, the in-memory ``conv{1,2,3}d_backward`` on the gathered
block: its ∂/∂block is scattered back through the same source maps (the adjoint of the gather: a
border cell adds into the pixel it copied), one axis after the other, summed per input chunk over
the blocks that read it; ∂/∂weight and ∂/∂bias are per-block partial sums reduced by Dask's tree
sum (``split_every``).  float16 is computed in float32 throughout, as in memory, and rounded once
at the end.

Transposed convolutions
-----------------------
:func:`conv_transpose1d`, :func:`conv_transpose2d` and :func:`conv_transpose3d` are the input
gradient of the convolution they are the adjoint of, so they run on the backward's machinery: each
chunk of their input (that convolution's grad_output) is one block, and the output is cut at
``stride`` times the input's cuts.  Their backward functions run that convolution's forward
(∂/∂input) and its weight gradient with the arrays' roles swapped (∂/∂weight), over
``grad_output``'s chunks.

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
http://127.0.0.1:8787/status) shows the ``conv2d-…`` (``conv1d-…``, ``conv3d-…``) tasks as they run.
"""
from __future__ import annotations

import contextlib
import itertools
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
from .functional import Conv2dGrads, ConvGrads, ConvTransposeGrads, _spec_from_weight
from .functional import conv1d as _conv1d
from .functional import conv1d_backward as _conv1d_backward
from .functional import conv1d_input as _conv1d_input
from .functional import conv2d as _conv2d
from .functional import conv2d_backward as _conv2d_backward
from .functional import conv2d_input as _conv2d_input
from .functional import conv3d as _conv3d
from .functional import conv3d_backward as _conv3d_backward
from .functional import conv3d_input as _conv3d_input
from .spec import (
    ConvCall,
    as_array,
    check_output_padding,
    check_transposed_padding,
    check_transposed_shapes,
    check_transposed_weight_shape,
    check_grad_output_shape,
    check_input_ndim,
    check_num_threads,
    check_output_mask,
    check_same_dtype,
    check_shapes,
    check_workspace_bytes,
    compute_dtype,
    input_shape_of,
    lift,
    make_spec,
    output_shape_of,
)
from .threads import num_threads
from .workspace import get_workspace_limit, workspace_limit as _workspace_limit

__all__ = ["conv1d", "conv2d", "conv3d", "conv1d_backward", "conv2d_backward", "conv3d_backward",
           "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "conv_transpose1d_backward",
           "conv_transpose2d_backward", "conv_transpose3d_backward"]

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

        # which chunks a block reads: (chunk, the range of it read, whether that is all of it) per part
        self.sources = [tuple((p.chunk, p.locs, p.locs == (0, self.in_chunks[p.chunk])) for p in r.parts)
                        for r in self.reads]
        # what a block's task receives: each part's piece of its chunk, runs counted from the piece
        self.pieces = [_AxisRead(r.length, tuple(p.shifted(p.locs[0], 0) for p in r.parts), r.zeros)
                       for r in self.reads]

    def readers(self, chunk: int) -> list:
        """``(block, slice of its positions, part)`` for every output block that reads input chunk
        ``chunk``, with the part's runs counted from the slice."""
        return [(i, slice(*part.positions), part.shifted(0, part.positions[0]))
                for i, read in enumerate(self.reads) for part in read.parts if part.chunk == chunk]


def _axes(spec, shape, chunks) -> tuple:
    """One :class:`_Axis` per spatial axis of a call whose batched input has ``chunks``."""
    return tuple(
        _Axis(c, k, s, d, p0, p1, spec.padding_mode, o)
        for c, k, s, d, (p0, p1), o in zip(chunks[2:], spec.kernel_size, spec.stride, spec.dilation,
                                           spec.padding, shape.out_spatial)
    )


def _grid(counts) -> itertools.product:
    """Every index tuple with ``0 ≤ index[a] < counts[a]`` (one entry per spatial axis), in C order."""
    return itertools.product(*(range(c) for c in counts))


def _blocks(axes):
    """``(index, sources, pieces)`` of every output block, in C order: its index per axis, which input
    chunks it reads (:attr:`_Axis.sources`) and what its task receives of them (:attr:`_Axis.pieces`),
    one entry per axis."""
    for idx in _grid([len(a.reads) for a in axes]):
        yield (idx, tuple(a.sources[i] for a, i in zip(axes, idx)),
               tuple(a.pieces[i] for a, i in zip(axes, idx)))


# --------------------------------------------------------------------------- the tasks

_WHOLE = (slice(None), slice(None))      # the batch and channel axes of a block, taken whole


@dataclass(frozen=True)
class _Call:
    """Everything a task needs besides its arrays (plain values: it pickles for any worker)."""

    stride: tuple
    dilation: tuple
    groups: int
    algorithm: str | None
    threads: int
    workspace: int

    @property
    def ndim(self) -> int:
        return len(self.stride)

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=0, dilation=self.dilation, groups=self.groups,
                    algorithm=self.algorithm)


@contextlib.contextmanager
def _settings(call: _Call):
    with num_threads(call.threads), _workspace_limit(call.workspace):
        yield


def _gather(chunks, reads: tuple, lead: tuple, dtype) -> np.ndarray:
    """The padded block ``lead + (one length per read)`` from ``chunks``, one chunk (or piece of one)
    per combination of the reads' parts, in ``itertools.product`` order (one read per spatial axis)."""
    make = np.zeros if any(r.zeros for r in reads) else np.empty
    out = make(lead + tuple(r.length for r in reads), dtype=dtype)
    for parts, chunk in zip(itertools.product(*(r.parts for r in reads)), chunks):
        for runs in itertools.product(*(p.runs for p in parts)):
            out[_WHOLE + tuple(r.dst for r in runs)] = chunk[_WHOLE + tuple(r.src for r in runs)]  # step 0 broadcasts
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


# The in-memory functions a task runs, by number of spatial dimensions (looked up when it runs).

def _forward_block(chunks, reads, lead, weight, bias, call):
    block = _gather(chunks, reads, lead, weight.dtype)
    forward = (_conv1d, _conv2d, _conv3d)[call.ndim - 1]
    with _settings(call):
        return forward(block, weight, bias, **call.kwargs())


def _backward_block(grad_out, chunks, reads, lead, weight, call, mask):
    """(∂/∂block, ∂/∂weight, ∂/∂bias) of one output block, in the compute dtype (None: not asked)."""
    cdt = compute_dtype(weight.dtype)
    w = weight.astype(cdt, copy=False)
    gy = grad_out.astype(cdt, copy=False)
    nd = call.ndim
    with _settings(call):
        if mask[1]:
            block = _gather(chunks, reads, lead, cdt)
            backward = (_conv1d_backward, _conv2d_backward, _conv3d_backward)[nd - 1]
            return tuple(backward(gy, block, w, **call.kwargs(), output_mask=mask))
        input_grad = (_conv1d_input, _conv2d_input, _conv3d_input)[nd - 1]
        dx = input_grad(lead + tuple(r.length for r in reads), w, gy, **call.kwargs()) if mask[0] else None
        db = gy.sum(axis=(0,) + tuple(range(2, 2 + nd))) if mask[2] else None
        return dx, None, db


def _grad_input_chunk(grads, parts, shape, dtype):
    """∂/∂x of one input chunk ``shape`` (n, C, *spatial): the gradients of the blocks that read it,
    each with its parts (one per spatial axis), folded in one axis after the other."""
    acc = np.zeros(shape, dtype=dtype)
    last = len(shape) - 1
    for g, axis_parts in zip(grads, parts):
        for axis, part in enumerate(axis_parts, start=2):
            # (n, C, the chunk's sizes up to axis, the block's after it); the last axis folds into acc
            dst = acc if axis == last else np.zeros(shape[:axis + 1] + g.shape[axis + 1:], dtype=dtype)
            for run in part.runs:
                _scatter_add(dst, g, run, axis)
            g = dst
    return acc


def _piece(a, *spatial: slice):
    """A copy of ``a[:, :, *spatial]``: what a neighbouring task needs of a chunk (its halo)."""
    return a[_WHOLE + spatial].copy()


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


def _forward_arrays(function, input, weight, bias) -> tuple:
    """(input, weight, bias, dtype) of a forward call: ``input`` a dask array, the others in memory."""
    x = _check_dask(input, "input", function)
    w = _numpy_arg(weight, "weight")
    b = _numpy_arg(bias, "bias", allow_none=True)
    return x, w, b, check_same_dtype(input=as_array(_dtype_probe(x), "input"), weight=w, bias=b)


def _backward_arrays(function, grad_output, input, weight, output_mask) -> tuple:
    """(grad_output, input, weight, mask, dtype) of a backward call: ``input`` a dask array, ``grad_output``
    a dask or an in-memory one, ``weight`` in memory."""
    x = _check_dask(input, "input", function)
    mask = check_output_mask(output_mask)
    w = _numpy_arg(weight, "weight")
    if isinstance(grad_output, da.Array):
        gy = _check_dask(grad_output, "grad_output", function)
    else:
        gy = _numpy_arg(grad_output, "grad_output")
    dtype = check_same_dtype(grad_output=as_array(_dtype_probe(gy), "grad_output"),
                             input=as_array(_dtype_probe(x), "input"), weight=w)
    return gy, x, w, mask, dtype


def _check_forced(spec, shape, dtype, algorithm) -> None:
    """A forced ``algorithm`` must compute the convolution: the planner is asked of the whole call, as
    in memory (1-d as the 2-d convolution of height 1 it runs as).  A block's call differs from the
    whole one only in its sizes and padding, which no implementation's requirements read."""
    if algorithm is not None:
        whole = ConvCall(spec, shape, dtype, True)
        planned = lift(whole) if spec.ndim == 1 else whole
        planner.decide(planned.spec, planned.shape, algorithm, dtype=planned.compute_dtype)


def _task_settings(threads, workspace) -> tuple[int, int]:
    """(threads, workspace limit) for every task, checked (the limit defaults to the caller's now)."""
    threads = check_num_threads(threads)
    return threads, get_workspace_limit() if workspace is None else check_workspace_bytes(workspace,
                                                                                          "workspace_limit")


def _setup(nd, x, w, stride, padding, dilation, groups, padding_mode, algorithm, threads,
           workspace, dtype, bias=None):
    """Validate a call (before any graph is built); return (batched x, spec, shape, call)."""
    planner.check_algorithm(algorithm)
    threads, workspace = _task_settings(threads, workspace)
    check_input_ndim(x.shape, ndim=nd)
    spec = _spec_from_weight(w.shape, stride, padding, dilation, groups, padding_mode, ndim=nd)
    shape = check_shapes(spec, x.shape, w.shape, None if bias is None else bias.shape)
    _check_forced(spec, shape, dtype, algorithm)
    call = _Call(spec.stride, spec.dilation, spec.groups, algorithm, threads, workspace)
    xb = (x if x.ndim == nd + 2 else x[None]).rechunk({1: -1})     # (N, C, *spatial), channels whole
    return xb, spec, shape, call


def _piece_keys(dsk, name, source, sources) -> list:
    """The keys of what one block reads of ``source(chunk index per axis)``, one per combination of
    the parts of its reads (``sources``: :attr:`_Axis.sources` of the block, per axis), in
    ``itertools.product`` order: the chunk's key where the block reads all of it, else the key of a
    piece task (added to ``dsk``) that cuts out the part read, so that only halos move between workers."""
    keys = []
    for parts in itertools.product(*sources):
        key = source(tuple(chunk for chunk, _, _ in parts))
        if not all(whole for _, _, whole in parts):
            locs = tuple(loc for _, loc, _ in parts)
            piece = (name,) + key[1:] + sum(locs, ())
            dsk[piece] = (_piece, key) + tuple(slice(lo, hi) for lo, hi in locs)
            key = piece
        keys.append(key)
    return keys


def _forward(nd, input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm, threads,
             workspace_limit):
    """The output of ``conv{nd}d`` over a dask array, as a dask array (see :func:`conv2d`)."""
    prefix = f"conv{nd}d"
    x, w, b, dtype = _forward_arrays(prefix, input, weight, bias)
    xb, spec, shape, call = _setup(nd, x, w, stride, padding, dilation, groups, padding_mode,
                                   algorithm, threads, workspace_limit, dtype, b)
    out = _forward_graph(prefix, xb, _axes(spec, shape, xb.chunks), w, b, spec, shape, call, dtype)
    return out if x.ndim == nd + 2 else out[0]


def _forward_graph(prefix, xb, axes, weight, bias, spec, shape, call, dtype) -> da.Array:
    """The graph of the batched output of the convolution of ``xb`` (batched, channels whole), chunked
    as the axes' output blocks."""
    w = np.ascontiguousarray(weight)
    token = tokenize(xb.name, w, bias, spec, call)
    name = f"{prefix}-" + token
    wkey, bkey = f"{prefix}-weight-" + token, None
    dsk = {wkey: w}
    if bias is not None:
        bkey = f"{prefix}-bias-" + token
        dsk[bkey] = bias
    halo = f"{prefix}-halo-" + token
    for nb, n in enumerate(xb.chunks[0]):
        for idx, sources, pieces in _blocks(axes):
            keys = _piece_keys(dsk, halo, lambda c: (xb.name, nb, 0) + c, sources)
            dsk[(name, nb, 0) + idx] = (_forward_block, keys, pieces, (n, shape.C), wkey, bkey, call)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[xb])
    return da.Array(graph, name, chunks=(xb.chunks[0], (shape.out_channels,)) + tuple(a.out_chunks for a in axes),
                    dtype=dtype)


def _backward(nd, grad_output, input, weight, stride, padding, dilation, groups, padding_mode, algorithm,
              output_mask, threads, workspace_limit) -> tuple:
    """(∂/∂input, ∂/∂weight, ∂/∂bias) of ``conv{nd}d`` over dask arrays (see :func:`conv2d_backward`)."""
    prefix = f"conv{nd}d"
    gy_in, x, w, mask, dtype = _backward_arrays(prefix + "_backward", grad_output, input, weight, output_mask)
    xb, spec, shape, call = _setup(nd, x, w, stride, padding, dilation, groups, padding_mode, algorithm,
                                   threads, workspace_limit, dtype)
    unbatched = x.ndim == nd + 1
    check_grad_output_shape(gy_in.shape, output_shape_of(shape)[unbatched:])   # no batch axis when unbatched
    axes = _axes(spec, shape, xb.chunks)
    out_chunks = (xb.chunks[0], (shape.out_channels,)) + tuple(a.out_chunks for a in axes)
    if not isinstance(gy_in, da.Array):
        gy_in = da.from_array(gy_in, chunks=out_chunks[1:] if unbatched else out_chunks)
    gyb = (gy_in[None] if unbatched else gy_in).rechunk(out_chunks)              # (N, C_out, *out_spatial)
    grads = _backward_graph(prefix, gyb, xb if mask[1] else None, axes, spec, shape, call, mask, w)
    results = [None if g is None else g.astype(dtype) for g in grads]
    if mask[0]:
        dx = results[0][0] if unbatched else results[0]
        results[0] = dx.rechunk(x.chunks) if dx.chunks != x.chunks else dx
    return tuple(results)


def _backward_graph(prefix, gyb, xb, axes, spec, shape, call, mask, weight) -> list:
    """The graphs of (∂/∂input, ∂/∂weight, ∂/∂bias), None where ``mask`` says no, in the compute dtype:
    ∂/∂input batched, chunked as the axes' input chunks.  ``gyb`` is the batched grad_output, chunked
    as the output blocks; ``xb`` the batched input, channels whole (read only for ∂/∂weight; None
    without it)."""
    cdt = compute_dtype(weight.dtype)
    w = np.ascontiguousarray(weight)
    token = tokenize(gyb.name, None if xb is None else xb.name, tuple(a.in_chunks for a in axes), w, spec, call,
                     mask)
    name, wkey = f"{prefix}-backward-" + token, f"{prefix}-weight-" + token
    dsk = {wkey: w}
    blocks = []
    halo = f"{prefix}-halo-" + token
    batch = gyb.chunks[0]
    for nb, n in enumerate(batch):
        for idx, sources, pieces in _blocks(axes):
            keys = _piece_keys(dsk, halo, lambda c: (xb.name, nb, 0) + c, sources) if mask[1] else []
            dsk[(name, nb) + idx] = (_backward_block, (gyb.name, nb, 0) + idx, keys, pieces, (n, shape.C), wkey,
                                     call, mask)
            blocks.append((name, nb) + idx)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[gyb] if xb is None else [xb, gyb])
    results = [None, None, None]
    if mask[0]:
        dx_name, part_name = f"{prefix}-grad-input-" + token, f"{prefix}-grad-block-" + token
        layer = {}
        for nb, n in enumerate(batch):
            for idx in _grid([len(a.reads) for a in axes]):
                layer[(part_name, nb) + idx] = (operator.getitem, (name, nb) + idx, 0)
            for jdx in _grid([len(a.in_chunks) for a in axes]):
                # (block index, slice of its positions, part) per axis, for every block reading chunk jdx
                readers = list(itertools.product(*(a.readers(j) for a, j in zip(axes, jdx))))
                keys = []
                for reader in readers:             # the piece of each block's gradient this chunk gets
                    idx = tuple(i for i, _, _ in reader)
                    key = (part_name + "-piece", nb) + idx + jdx
                    layer[key] = (_piece, (part_name, nb) + idx) + tuple(s for _, s, _ in reader)
                    keys.append(key)
                size = tuple(a.in_chunks[j] for a, j in zip(axes, jdx))
                layer[(dx_name, nb, 0) + jdx] = (
                    _grad_input_chunk, keys, [tuple(p for _, _, p in reader) for reader in readers],
                    (n, shape.C) + size, cdt)
        chunks = (batch, (shape.C,)) + tuple(a.in_chunks for a in axes)
        results[0] = da.Array(_add_layer(graph, dx_name, layer, name), dx_name, chunks=chunks, dtype=cdt)
    for k, label, tail in ((1, "weight", (shape.in_per_group,) + tuple(spec.kernel_size)), (2, "bias", ())):
        if mask[k]:
            pname = f"{prefix}-grad-{label}-partials-" + token
            layer = {(pname, b_index, 0) + (0,) * len(tail): (_pick_expanded, key, k)
                     for b_index, key in enumerate(blocks)}
            chunks = ((1,) * len(blocks), (shape.out_channels,)) + tuple((t,) for t in tail)
            partials = da.Array(_add_layer(graph, pname, layer, name), pname, chunks=chunks, dtype=cdt)
            results[k] = partials.sum(axis=0, split_every=SPLIT_EVERY)
    return results


def _adjoint_chunks(chunks, stride: int, size: int) -> tuple:
    """Chunks of a convolution's input of length ``size`` whose output blocks (aligned to ``stride``) are
    ``chunks``: cut at ``stride`` times the cuts of ``chunks`` (the last chunk takes the rest)."""
    cuts = np.cumsum(chunks)[:-1] * stride
    bounds = sorted({0, size} | {int(c) for c in cuts if c < size})
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


def _transposed_setup(nd, x, w, b, stride, padding, output_padding, groups, dilation, algorithm, threads,
                      workspace, dtype):
    """Validate a transposed call as :func:`convscope.spec.bind_transpose` does (before any graph is
    built); return (the batched input as the convolution's output, with its zero rows, spec, shape, call)
    of the convolution it is the adjoint of."""
    planner.check_algorithm(algorithm)
    threads, workspace = _task_settings(threads, workspace)
    check_input_ndim(x.shape, ndim=nd)
    check_transposed_weight_shape(w.shape, ndim=nd)
    spec = make_spec(tuple(w.shape[2:]), stride, check_transposed_padding(padding, nd), dilation, groups, ndim=nd)
    op = check_output_padding(output_padding, spec.stride, spec.dilation)
    shape = check_transposed_shapes(spec, op, x.shape, w.shape, None if b is None else b.shape)
    _check_forced(spec, shape, dtype, algorithm)
    call = _Call(spec.stride, spec.dilation, spec.groups, algorithm, threads, workspace)
    xb = x if x.ndim == nd + 2 else x[None]                          # (N, C_in, *I)
    extra = [o - i for o, i in zip(shape.out_spatial, xb.shape[2:])]
    if any(extra):                                                   # the convolution's output is longer: zeros
        xb = da.pad(xb, ((0, 0), (0, 0)) + tuple((0, e) for e in extra))
    return xb, spec, shape, call


def _transposed(nd, input, weight, bias, stride, padding, output_padding, groups, dilation, algorithm, threads,
                workspace_limit):
    """The output of ``conv_transpose{nd}d`` over a dask array: the input gradient of the convolution it is
    the adjoint of (see :mod:`convscope.functional`), with ``input`` as that convolution's grad_output."""
    prefix = f"conv_transpose{nd}d"
    x, w, b, dtype = _forward_arrays(prefix, input, weight, bias)
    xb, spec, shape, call = _transposed_setup(nd, x, w, b, stride, padding, output_padding, groups, dilation,
                                              algorithm, threads, workspace_limit, dtype)
    chunks = (xb.chunks[0], (shape.C,)) + tuple(_adjoint_chunks(c, s, n) for c, s, n in
                                                zip(xb.chunks[2:], spec.stride, shape.spatial))
    axes = _axes(spec, shape, chunks)
    gyb = xb.rechunk((xb.chunks[0], (shape.out_channels,)) + tuple(a.out_chunks for a in axes))
    y = _backward_graph(prefix, gyb, None, axes, spec, shape, call, (True, False, False), w)[0]
    if b is not None:
        y = y + b.astype(y.dtype).reshape((1, -1) + (1,) * nd)       # (1, C_out, 1, …)
    y = y.astype(dtype)
    return y if x.ndim == nd + 2 else y[0]


def _transposed_backward(nd, grad_output, input, weight, stride, padding, output_padding, groups, dilation,
                         algorithm, output_mask, threads, workspace_limit) -> tuple:
    """(∂/∂input, ∂/∂weight, ∂/∂bias) of ``conv_transpose{nd}d`` over dask arrays: with C the convolution it
    is the adjoint of, C's forward of grad_output (without C's extra rows), C's weight gradient with
    grad_output as its input and ``input`` as its grad_output, and grad_output's sum."""
    prefix = f"conv_transpose{nd}d"
    gy_in, x, w, mask, dtype = _backward_arrays(prefix + "_backward", grad_output, input, weight, output_mask)
    xb, spec, shape, call = _transposed_setup(nd, x, w, None, stride, padding, output_padding, groups, dilation,
                                              algorithm, threads, workspace_limit, dtype)
    unbatched = x.ndim == nd + 1
    check_grad_output_shape(gy_in.shape, input_shape_of(shape)[unbatched:])    # the transposed output's shape
    if not isinstance(gy_in, da.Array):
        chunks = (xb.chunks[0], (shape.C,)) + tuple(_adjoint_chunks(c, s, n) for c, s, n in
                                                    zip(xb.chunks[2:], spec.stride, shape.spatial))
        gy_in = da.from_array(gy_in, chunks=chunks[1:] if unbatched else chunks)
    gyb = (gy_in[None] if unbatched else gy_in).rechunk({1: -1})     # (N, C_out, *O): C's input, channels whole
    axes = _axes(spec, shape, gyb.chunks)
    grad = prefix + "-grad"
    results = [None, None, None]
    if mask[0]:
        dx = _forward_graph(grad, gyb, axes, w, None, spec, shape, call, dtype)   # (N, C_in, *C's output)
        dx = dx[(slice(None), slice(None)) + tuple(slice(0, n) for n in x.shape[-nd:])]
        dx = dx[0] if unbatched else dx
        results[0] = dx.rechunk(x.chunks) if dx.chunks != x.chunks else dx
    if mask[1]:
        xo = xb.rechunk((gyb.chunks[0], (shape.out_channels,)) + tuple(a.out_chunks for a in axes))
        results[1] = _backward_graph(grad, xo, gyb, axes, spec, shape, call, (False, True, False), w)[1].astype(dtype)
    if mask[2]:
        cdt = compute_dtype(dtype)
        results[2] = gyb.astype(cdt).sum(axis=(0,) + tuple(range(2, 2 + nd)), split_every=SPLIT_EVERY).astype(dtype)
    return tuple(results)


# --------------------------------------------------------------------------- the public functions


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
           algorithm=None, threads=1, workspace_limit=None):
    """:func:`convscope.conv1d` of a dask array, lazily: as :func:`conv2d`, along one spatial axis.

    ``input`` is a dask array (N, C, L) or (C, L), chunked in any way; the output (N, C_out, L_out)
    (or (C_out, L_out)) keeps the batch chunks, has one channel chunk, and its chunks along L are
    aligned to the stride with the input's.  The other parameters are :func:`conv2d`'s, with one
    value per axis (an int or a 1-tuple).

    Examples
    --------
    >>> import numpy as np, dask.array as da, convscope, convscope.dask
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 50)); w = np.ones((4, 3, 5))
    >>> params = dict(padding="same", dilation=2, padding_mode="circular")
    >>> y = convscope.dask.conv1d(da.from_array(x, chunks=(1, 3, 12)), w, **params)
    >>> y.chunks
    ((1, 1), (4,), (12, 12, 12, 12, 2))
    >>> bool(np.allclose(y.compute(), convscope.conv1d(x, w, **params)))
    True
    """
    return _forward(1, input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm, threads,
                    workspace_limit)


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
    return _forward(2, input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm, threads,
                    workspace_limit)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
           algorithm=None, threads=1, workspace_limit=None):
    """:func:`convscope.conv3d` of a dask array, lazily: as :func:`conv2d`, along three spatial axes.

    ``input`` is a dask array (N, C, D, H, W) or (C, D, H, W), chunked in any way (a volume is
    often chunked in depth only: a block then reads ``dilation·(k_D − 1)`` slices of halo); the
    output (N, C_out, D_out, H_out, W_out) keeps the batch chunks, has one channel chunk, and its
    spatial chunks are aligned to the stride with the input's.  The other parameters are
    :func:`conv2d`'s, with three values per tuple ``(D, H, W)``.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convscope, convscope.dask
    >>> x = np.random.default_rng(0).standard_normal((1, 2, 9, 6, 5)); w = np.ones((3, 2, 3, 3, 3))
    >>> params = dict(stride=(2, 1, 1), padding=1, padding_mode="reflect")
    >>> y = convscope.dask.conv3d(da.from_array(x, chunks=(1, 2, 4, 6, 5)), w, **params)
    >>> y.chunks
    ((1,), (3,), (2, 2, 1), (6,), (5,))
    >>> bool(np.allclose(y.compute(), convscope.conv3d(x, w, **params)))
    True
    """
    return _forward(3, input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm, threads,
                    workspace_limit)


def conv1d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros", algorithm=None, output_mask=(True, True, True), threads=1,
                    workspace_limit=None) -> ConvGrads:
    """:func:`convscope.conv1d_backward` over dask arrays, lazily, as :func:`conv2d_backward`.

    Returns a :class:`convscope.ConvGrads` of dask arrays ``(input, weight, bias)`` (None where
    ``output_mask`` says so): ∂/∂input chunked like ``input``, ∂/∂weight ``(C_out, C/groups, k)``
    and ∂/∂bias ``(C_out,)`` summed over the blocks by a tree sum.
    """
    return ConvGrads(*_backward(1, grad_output, input, weight, stride, padding, dilation, groups, padding_mode,
                                algorithm, output_mask, threads, workspace_limit))


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
    return Conv2dGrads(*_backward(2, grad_output, input, weight, stride, padding, dilation, groups, padding_mode,
                                  algorithm, output_mask, threads, workspace_limit))


def conv3d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros", algorithm=None, output_mask=(True, True, True), threads=1,
                    workspace_limit=None) -> ConvGrads:
    """:func:`convscope.conv3d_backward` over dask arrays, lazily, as :func:`conv2d_backward`.

    Returns a :class:`convscope.ConvGrads` of dask arrays ``(input, weight, bias)`` (None where
    ``output_mask`` says so): ∂/∂input chunked like ``input``, ∂/∂weight
    ``(C_out, C/groups, kD, kH, kW)`` and ∂/∂bias ``(C_out,)`` summed over the blocks by a tree sum.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convscope, convscope.dask
    >>> x = np.random.default_rng(0).standard_normal((2, 2, 7, 5, 4)); w = np.ones((2, 1, 2, 3, 3))
    >>> g = np.ones((2, 2, 6, 5, 4))
    >>> params = dict(padding=(0, 1, 1), groups=2, padding_mode="replicate")
    >>> grads = convscope.dask.conv3d_backward(g, da.from_array(x, chunks=(1, 1, 3, 5, 2)), w, **params)
    >>> grads.input.chunks
    ((1, 1), (1, 1), (3, 3, 1), (5,), (2, 2))
    >>> exact = convscope.conv3d_backward(g, x, w, **params)
    >>> all(np.allclose(a.compute(), b) for a, b in zip(grads, exact))
    True
    """
    return ConvGrads(*_backward(3, grad_output, input, weight, stride, padding, dilation, groups, padding_mode,
                                algorithm, output_mask, threads, workspace_limit))


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     algorithm=None, threads=1, workspace_limit=None):
    """:func:`convscope.conv_transpose1d` of a dask array, lazily, as :func:`conv_transpose2d`."""
    return _transposed(1, input, weight, bias, stride, padding, output_padding, groups, dilation, algorithm,
                       threads, workspace_limit)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     algorithm=None, threads=1, workspace_limit=None):
    """:func:`convscope.conv_transpose2d` of a dask array, lazily: a dask array of the output.

    A transposed convolution is the input gradient of the convolution it is the adjoint of, so it runs
    on :func:`conv2d_backward`'s machinery: each input chunk of ``input`` (that convolution's
    grad_output) is one block, whose gradient is scattered into the output's chunks, cut at ``stride``
    times the input's.  ``input`` is a dask array (N, C_in, H, W) or (C_in, H, W) chunked in any way;
    ``weight`` ``(C_in, C_out/groups, kH, kW)`` and ``bias`` are in-memory; the other parameters are
    :func:`convscope.conv_transpose2d`'s, ``threads`` and ``workspace_limit`` :func:`conv2d`'s.

    Examples
    --------
    >>> import numpy as np, dask.array as da, convscope, convscope.dask
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 7, 6)); w = np.ones((3, 2, 3, 3))
    >>> params = dict(stride=2, padding=1, output_padding=1)
    >>> y = convscope.dask.conv_transpose2d(da.from_array(x, chunks=(1, 3, 4, 3)), w, **params)
    >>> y.chunks
    ((1, 1), (2,), (8, 6), (6, 6))
    >>> bool(np.allclose(y.compute(), convscope.conv_transpose2d(x, w, **params)))
    True
    """
    return _transposed(2, input, weight, bias, stride, padding, output_padding, groups, dilation, algorithm,
                       threads, workspace_limit)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     algorithm=None, threads=1, workspace_limit=None):
    """:func:`convscope.conv_transpose3d` of a dask array, lazily, as :func:`conv_transpose2d`."""
    return _transposed(3, input, weight, bias, stride, padding, output_padding, groups, dilation, algorithm,
                       threads, workspace_limit)


def conv_transpose1d_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, algorithm=None, output_mask=(True, True, True), threads=1,
                              workspace_limit=None) -> ConvTransposeGrads:
    """:func:`convscope.conv_transpose1d_backward` over dask arrays, lazily, as :func:`conv_transpose2d_backward`."""
    return ConvTransposeGrads(*_transposed_backward(1, grad_output, input, weight, stride, padding, output_padding,
                                                    groups, dilation, algorithm, output_mask, threads,
                                                    workspace_limit))


def conv_transpose2d_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, algorithm=None, output_mask=(True, True, True), threads=1,
                              workspace_limit=None) -> ConvTransposeGrads:
    """:func:`convscope.conv_transpose2d_backward` over dask arrays, lazily.

    Returns a :class:`convscope.functional.ConvTransposeGrads` of dask arrays ``(input, weight, bias)`` (None where
    ``output_mask`` says so): ∂/∂input is the forward convolution of ``grad_output`` (chunked like
    ``input``), ∂/∂weight the convolution's weight gradient with the roles of the arrays swapped and
    ∂/∂bias ``grad_output``'s sum, both tree sums over the blocks.  ``grad_output`` (a dask or an
    in-memory array of the output's shape) may be chunked in any way; the other parameters are
    :func:`conv_transpose2d`'s.
    """
    return ConvTransposeGrads(*_transposed_backward(2, grad_output, input, weight, stride, padding, output_padding,
                                                    groups, dilation, algorithm, output_mask, threads,
                                                    workspace_limit))


def conv_transpose3d_backward(grad_output, input, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1, algorithm=None, output_mask=(True, True, True), threads=1,
                              workspace_limit=None) -> ConvTransposeGrads:
    """:func:`convscope.conv_transpose3d_backward` over dask arrays, lazily, as :func:`conv_transpose2d_backward`."""
    return ConvTransposeGrads(*_transposed_backward(3, grad_output, input, weight, stride, padding, output_padding,
                                                    groups, dilation, algorithm, output_mask, threads,
                                                    workspace_limit))
