"""The implementations of forward, grad-input and grad-weight, by name, and how they are run.

Each implementation is a module that describes itself.  Over validated, batched
arrays of one compute dtype it has

* ``forward(x, w, b, spec, shape)``       → (N, C_out, H_out, W_out)
* ``backward(grad_out, x, w, spec, shape, (want_input, want_weight))`` → (dx or None, dw or None),
  both gradients at once, sharing work; or, where nothing is shared,
  ``grad_input(grad_out, w, spec, shape)`` → (N, C, H, W) and
  ``grad_weight(grad_out, x, spec, shape)`` → (C_out, C/groups, kH, kW);

and it declares

* ``needs(spec, shape)`` → None if it can compute the convolution, else "what it needs, got what"
  (absent: it computes every convolution);
* ``ERROR``: ``"local"`` or ``"global"``, where its rounding error goes (below);

and optionally

* ``cost_ms(spec, shape)`` → its estimated milliseconds for the three passes (the planner's cost model);
* ``describe(spec, shape, pass_)`` → the layout a pass runs in, for :func:`convscope.plan`;
* ``workspace(pass_, spec, shape, itemsize)`` → an upper estimate of the scratch bytes of a pass;
* ``prepared_forward(w)`` → ``f(x, b, spec, shape)``, the forward with its weight-only work
  done once, for running on many slices;
* ``FORWARD_INTO = True``: ``forward(..., out=view)`` writes into a C-contiguous view of the output
  (a batch slice's result is not copied);
* ``preferred_bytes(pass_, spec, shape)`` → a scratch size below the workspace limit that its
  slices of the batch should stay under because they run faster so (None: no preference).

``spec`` is a :class:`convscope.spec.ConvSpec`, ``shape`` a :class:`convscope.spec.ConvShape`
(2-d) or :class:`convscope.spec.ConvShapeNd`.  A module constant ``DIMS`` names the numbers of
spatial dimensions an implementation computes; without it, 2 only (:func:`dims`).  A 1-d
convolution runs as the 2-d one of height 1 (:func:`convscope.spec.lift`), so every 2-d path
serves it.  A module constant ``PASSES`` names the passes an implementation computes, a subset of
:data:`PASSES` (``"forward"``, ``"grad_input"``, ``"grad_weight"``); without it, all three.  A
module that serves only some passes declares them there and defines the functions of those only
(``forward``; ``backward`` or ``grad_input``/``grad_weight``); :attr:`Algorithm.passes` reads it,
and the tests generated from this registry (``tests/test_registry.py``) check exactly those passes.
:data:`ALGORITHMS` is built from the modules (:class:`Algorithm` derives ``grad_input`` and
``grad_weight`` from ``backward``, the one place they are); which implementation runs is
decided by :mod:`convscope.planner`, which reads these declarations.

The ``run_*`` functions here call an implementation under the workspace limit
(:mod:`convscope.workspace`): when its estimate exceeds the limit the batch is
cut into slices that fit (gradients w.r.t. the weight are summed over the
slices), and a pass whose single sample does not fit is run on blocks of
output rows of the padded sample, with the padding already applied (backward: the
blocks' gradients are summed into the padded sample's, then folded back).

Each implementation also declares where its rounding error goes, as a module
constant ``ERROR``:

* ``"local"``: each output is rounded from the products it sums, so NaN and ±Inf
  reach exactly the outputs that read them, as in torch;
* ``"global"`` (Winograd, FFT): values are mixed across a tile or a whole image
  before they are summed, so the error is relative to the call's largest values
  (:mod:`convscope.precision`), and one NaN or Inf (or one value large enough to
  overflow inside a transform) spreads over a tile or an image.

``run_forward`` and ``run_backward`` are the one place that makes the second kind
safe: before a ``"global"`` pass they check that what it reads (input, weight, bias,
grad_output) is finite, and after it that its result is; otherwise the pass is
computed (again) on the exact local path for the layer, :func:`exact_path`.  The
checks are sums over the arrays (no copies), about the cost of reading them once.  An
implementation declaring ``FINITE_ONLY = True`` checks its forward's input and result itself, in
the passes that read and write them: ``forward(..., finite_only=True)`` returns None when either
holds a value that is not finite, and the two passes over memory are saved; so do
``grad_input(..., finite_only=True)`` (grad_output and ∂L/∂x) and ``grad_weight(..., finite_only=True)``
(grad_output and x; ∂L/∂w, small, is still summed here).
"""
from __future__ import annotations

import functools

import numpy as np

from .. import reference
from ..geometry import spec_tap_sources
from ..padding import fold, pad
from ..threads import get_num_threads
from ..workspace import get_workspace_limit, workspace_limit
from . import depthwise, direct, fft, gather, gemm, ndgemm, ndstack, ndwinograd, patch, pointwise, subpixel, taps, winograd


PASSES = ("forward", "grad_input", "grad_weight")     # every pass an implementation may compute


class Algorithm:
    """One implementation as the registry holds it: its module, with the three passes always there.

    Attributes not defined here (``forward``, ``backward``, ``workspace``, ``ERROR``, ...) are the
    module's own.
    """

    def __init__(self, name, module):
        self.name, self.module = name, module

    def __getattr__(self, attr):
        return getattr(self.module, attr)

    def __repr__(self) -> str:
        return f"<algorithm {self.name!r} ({self.module.__name__})>"

    @property
    def passes(self) -> tuple:
        """The passes it computes: the module's ``PASSES``, or all three of :data:`PASSES`."""
        return tuple(getattr(self.module, "PASSES", PASSES))

    def needs(self, spec, shape):
        rule = getattr(self.module, "needs", None)
        return None if rule is None else rule(spec, shape)

    def grad_input(self, grad_out, w, spec, shape, **options):
        if hasattr(self, "backward"):
            return self.backward(grad_out, None, w, spec, shape, (True, False))[0]
        return self.module.grad_input(grad_out, w, spec, shape, **options)

    def grad_weight(self, grad_out, x, spec, shape, **options):
        if hasattr(self, "backward"):
            return self.backward(grad_out, x, None, spec, shape, (False, True))[1]
        return self.module.grad_weight(grad_out, x, spec, shape, **options)

    def cost_ms(self, spec, shape):
        """The module's estimate for the three passes, or None where it has no cost model."""
        model = getattr(self.module, "cost_ms", None)
        return None if model is None else model(spec, shape)

    def describe(self, spec, shape, pass_) -> str:
        text = getattr(self.module, "describe", None)
        return "" if text is None else text(spec, shape, pass_)


MODULES = (gemm, reference, pointwise, depthwise, winograd, fft, ndgemm, ndstack, ndwinograd, gather, taps, patch,
           subpixel, direct)
ALGORITHMS = {module.__name__.rsplit(".", 1)[1]: Algorithm(module.__name__.rsplit(".", 1)[1], module)
              for module in MODULES}


def _declared(impl, attr):
    """``getattr(impl, attr, None)``, reading a registry entry's module directly (a missing attribute
    then costs no exception raised through :meth:`Algorithm.__getattr__`)."""
    if type(impl) is Algorithm and attr not in impl.__dict__:
        return getattr(impl.module, attr, None)
    return getattr(impl, attr, None)


def _estimate(impl, pass_, spec, shape, itemsize):
    fn = _declared(impl, "workspace")
    if fn is None:
        return 0
    return _estimated(fn, pass_, spec, shape, itemsize, get_workspace_limit(), get_num_threads())


@functools.lru_cache(maxsize=4096)
def _estimated(fn, pass_, spec, shape, itemsize, limit, threads):
    """``fn(pass_, spec, shape, itemsize)``, remembered: an estimate depends on its arguments and on the
    workspace limit and thread count of the call (some paths size their blocks by them)."""
    return fn(pass_, spec, shape, itemsize)


def _batch_step(impl, pass_, spec, shape, itemsize):
    """Samples per slice so that a slice's estimate fits the limit (0: one sample does not fit).

    Where the implementation prefers smaller slices for speed, slices of at least one sample
    stay under that size too.
    """
    return _batch_steps(impl, (pass_,), spec, shape, itemsize)


def _batch_steps(impl, passes, spec, shape, itemsize):
    """The least :func:`_batch_step` of the ``passes``."""
    estimate, preferred = _declared(impl, "workspace"), _declared(impl, "preferred_bytes")
    limit, threads = get_workspace_limit(), get_num_threads()
    return min(_step(estimate, preferred, p, spec, shape, itemsize, limit, threads) for p in passes)


@functools.lru_cache(maxsize=4096)
def _step(estimate, preferred, pass_, spec, shape, itemsize, limit, threads):
    """:func:`_batch_step` from the implementation's ``workspace`` and ``preferred_bytes`` (either None),
    remembered per limit and thread count as :func:`_estimated` is."""
    total = 0 if estimate is None else estimate(pass_, spec, shape, itemsize)
    preferred = None if preferred is None else preferred(pass_, spec, shape)
    if shape.N == 0 or total <= min(limit, preferred or limit):
        return max(shape.N, 1)
    if shape.N == 1 or estimate is None:
        per_sample = total
    else:
        per_sample = estimate(pass_, spec, shape._replace(N=1), itemsize)
    step = int(limit // max(per_sample, 1))
    if preferred is not None and step >= 1:
        step = max(1, min(step, int(preferred // max(per_sample, 1))))
    return step


def _slices(N, step):
    return [slice(n0, min(N, n0 + step)) for n0 in range(0, N, step)]


def _rows_shape(spec, shape, rows):
    """Shape of a block of ``rows`` output rows of one padded sample (padding already applied)."""
    (sH, _), (dH, _), (kH, _) = spec.stride, spec.dilation, spec.kernel_size
    (pl, pr) = spec.padding[1]
    return shape._replace(N=1, H=(rows - 1) * sH + dH * (kH - 1) + 1, W=shape.W + pl + pr, H_out=rows)


def workspace_need(jobs, spec, shape, itemsize) -> int:
    """The scratch bytes the passes ``jobs``, ``((name, pass), ...)``, need at least: each pass's
    estimate, or the workspace limit where that is lower (the pass is then cut to fit it)."""
    limit, threads, need = get_workspace_limit(), get_num_threads(), 0
    for n, p in jobs:
        fn = _declared(ALGORITHMS[n], "workspace")
        if fn is not None:
            need = max(need, min(_estimated(fn, p, spec, shape, itemsize, limit, threads), limit))
    return need


def exact_path(shape) -> str:
    """The local path that recomputes a ``"global"`` pass: depthwise for depthwise layers, else gemm."""
    return "depthwise" if shape.groups > 1 and shape.in_per_group == 1 else "gemm"


def all_finite(*arrays) -> bool:
    """Whether every value of the arrays (None skipped) is finite, without a temporary array.

    A finite sum has no NaN or Inf among its terms; only when the sum is not finite (a NaN,
    an Inf, or finite values whose sum overflows) are the extremes looked at.
    """
    for a in arrays:
        if a is None or a.size == 0 or np.isfinite(a.sum()):
            continue
        if not (np.isfinite(a.min()) and np.isfinite(a.max())):
            return False
    return True


def _zero_padded(spec) -> bool:
    return spec.padding_mode == "zeros" and any(sum(p) for p in spec.padding)


def _nan_where_padding_meets(result, nonfinite, spec, shape, pass_):
    """NaN where a non-finite value meets a zero-padding cell: 0·(±Inf or NaN) is NaN.

    The padded input holds zeros, so a forward output whose non-finite weight tap reads padding is
    NaN, and so is a weight gradient ``∂w[o, :, u, v]`` that sums a non-finite ``grad_output[n, o, i, j]``
    times the padding tap ``(u, v)`` of ``(i, j)`` reads.  This is the definition and what torch's
    native kernels compute; a path that skips padding cells would leave ±Inf or a number there.
    ``nonfinite`` is the weight's mask (forward) or grad_output's (grad_weight).
    """
    if not _zero_padded(spec):
        return
    rows, cols = spec_tap_sources(spec, (shape.H, shape.W))     # (H_out, kH), (W_out, kW); -1: padding
    rows, cols = rows < 0, cols < 0
    if pass_ == "forward":
        taps = nonfinite.any(axis=1)                                    # (C_out, kH, kW)
        for o in np.flatnonzero(taps.any(axis=(1, 2))):
            u, v = np.nonzero(taps[o])
            hit = (rows[:, None, u] | cols[None, :, v]).any(axis=-1)    # (H_out, W_out)
            result[:, o, hit] = np.nan
    else:
        where = nonfinite.any(axis=0)                                   # (C_out, H_out, W_out)
        for o in np.flatnonzero(where.any(axis=(1, 2))):
            i, j = np.nonzero(where[o])
            hit = (rows[i, :, None] | cols[j, None, :]).any(axis=0)     # (kH, kW)
            result[o, :, hit] = np.nan


def run_forward(name, x, w, b, spec, shape):
    """The forward on implementation ``name``, under the workspace limit; a ``"global"`` one only on
    finite values and with a finite result (else on :func:`exact_path`)."""
    # NaN and Inf are results here, as in torch, not warnings; the call keeps the limit it started with
    with np.errstate(all="ignore"), workspace_limit(get_workspace_limit()):
        mixes = _declared(ALGORITHMS[name], "ERROR") != "local"
        itself = mixes and bool(_declared(ALGORITHMS[name], "FINITE_ONLY"))     # checks x and out itself
        finite_w = all_finite(w) if mixes or _zero_padded(spec) else True    # only these paths read it
        checked = mixes and finite_w and all_finite(b) and (itself or all_finite(x))
        if mixes and not checked:
            name = exact_path(shape)
        out = _forward(name, x, w, b, spec, shape, finite_only=checked and itself)
        if checked and (out is None or not (itself or all_finite(out))):
            out = _forward(exact_path(shape), x, w, b, spec, shape)
        if not finite_w:
            _nan_where_padding_meets(out, ~np.isfinite(w), spec, shape, "forward")
        return out


def _forward(name, x, w, b, spec, shape, finite_only=False):
    """The forward on ``name`` in slices under the limit; with ``finite_only`` (a ``FINITE_ONLY``
    implementation), None as soon as a slice's input or result is not finite."""
    impl = ALGORITHMS[name]
    itemsize = x.dtype.itemsize
    options = {"finite_only": True} if finite_only else {}
    step = _batch_step(impl, "forward", spec, shape, itemsize)
    if step >= shape.N:
        return impl.forward(x, w, b, spec, shape, **options)
    out = np.empty((shape.N, shape.out_channels, shape.H_out, shape.W_out), dtype=x.dtype)
    prepared = getattr(impl, "prepared_forward", None)
    fwd = prepared(w) if prepared else (lambda xs, bs, sp, sh, **o: impl.forward(xs, w, bs, sp, sh, **o))
    blocks = None if step >= 1 else _row_blocks(impl, ("forward",), spec, shape, itemsize,
                                                _padded_sample_bytes(spec, shape, itemsize))
    if blocks is None:
        into = bool(_declared(impl, "FORWARD_INTO")) and not prepared
        for sl in _slices(shape.N, max(step, 1)):
            sub = shape._replace(N=sl.stop - sl.start)
            if into:                            # each slice's result written in place
                part = impl.forward(x[sl], w, b, spec, sub, out=out[sl], **options)
            else:
                part = fwd(x[sl], b, spec, sub, **options)
                if part is not None:
                    out[sl] = part
            if part is None:
                return None
        return out
    # One sample is too big: pad it, then run blocks of output rows on the padded rows they read.
    flat = spec.unpadded()
    for n in range(shape.N):
        xp = pad(x[n:n + 1], spec)                                  # (1, C, Hp, Wp)
        for r0, r1, read in blocks:
            block = np.ascontiguousarray(xp[:, :, read])            # (1, C, rows read, Wp)
            part = fwd(block, b, flat, _rows_shape(spec, shape, r1 - r0), **options)
            if part is None:
                return None
            out[n:n + 1, :, r0:r1] = part
    return out




def _padded_sample_bytes(spec, shape, itemsize):
    return shape.C * (shape.H + sum(spec.padding[0])) * (shape.W + sum(spec.padding[1])) * itemsize


def _row_blocks(impl, passes, spec, shape, itemsize, fixed):
    """``[(r0, r1, read)]``: blocks of output rows ``r0:r1`` of one sample, as large as the passes'
    estimates plus ``fixed`` bytes allow under the limit, with ``read`` the padded rows they read;
    None when blocks would need as much as the whole sample (a path with little scratch)."""
    flat, limit = spec.unpadded(), get_workspace_limit()

    def need(rows):
        return fixed + max(_estimate(impl, p, flat, _rows_shape(spec, shape, rows), itemsize) for p in passes)

    rows = shape.H_out
    while rows > 1 and need(rows) > limit:
        rows = (rows + 1) // 2
    if need(rows) >= max(_estimate(impl, p, spec, shape._replace(N=1), itemsize) for p in passes):
        return None
    sH, dH, kH = spec.stride[0], spec.dilation[0], spec.kernel_size[0]
    blocks = []
    for r0 in range(0, shape.H_out, rows):
        r1 = min(shape.H_out, r0 + rows)
        blocks.append((r0, r1, slice(r0 * sH, (r1 - 1) * sH + dH * (kH - 1) + 1)))
    return blocks


def run_backward(names, grad_out, x, w, spec, shape, mask):
    """(∂L/∂x or None, ∂L/∂w or None): ``names = (grad_input's, grad_weight's)``, ``mask`` the same order.

    A ``"global"`` implementation computes a gradient only from finite grad_output and weight
    (∂L/∂x) or input (∂L/∂w), and only a finite gradient is kept; the others are computed on
    :func:`exact_path`.
    """
    with np.errstate(all="ignore"), workspace_limit(get_workspace_limit()):
        exact = exact_path(shape)
        names = list(names)
        checked, itself = [False, False], [False, False]
        finite_grad = None
        for i, other in enumerate((w, x)):
            if mask[i] and _declared(ALGORITHMS[names[i]], "ERROR") != "local":
                itself[i] = bool(_declared(ALGORITHMS[names[i]], "FINITE_ONLY"))   # grad_output, x, dx: its own
                if itself[i]:
                    checked[i] = all_finite(w) if i == 0 else True
                else:
                    finite_grad = all_finite(grad_out) if finite_grad is None else finite_grad
                    checked[i] = finite_grad and all_finite(other)
                names[i] = names[i] if checked[i] else exact
        finite_only = (checked[0] and itself[0], checked[1] and itself[1])
        dx, dw = _backward(tuple(names), grad_out, x, w, spec, shape, mask, finite_only)
        redo = (checked[0] and (dx is None or not (finite_only[0] or all_finite(dx))),
                checked[1] and (dw is None or not all_finite(dw)))
        if any(finite_only[i] and not redo[i] for i in range(2)):
            finite_grad = True                  # a pass that checked grad_output itself succeeded
        if any(redo):
            again = _backward((exact, exact), grad_out, x, w, spec, shape, redo)
            dx, dw = (again[0] if redo[0] else dx), (again[1] if redo[1] else dw)
        if dw is not None and _zero_padded(spec) and not (all_finite(grad_out) if finite_grad is None else finite_grad):
            _nan_where_padding_meets(dw, ~np.isfinite(grad_out), spec, shape, "grad_weight")
        return dx, dw


class _NotFinite(Exception):
    """A ``finite_only`` pass met a value that is not finite (it returned None)."""


def _backward(names, grad_out, x, w, spec, shape, mask, finite_only=(False, False)):
    """(dx, dw) as ``mask`` asks, in slices under the limit; a pass run ``finite_only`` (grad_input's,
    grad_weight's) gives None when what it read or wrote is not finite."""
    want_dx, want_dw = mask
    dtype = grad_out.dtype
    itemsize = dtype.itemsize
    shared = want_dx and want_dw and names[0] == names[1] and _declared(ALGORITHMS[names[0]], "backward") is not None
    if shared:
        jobs = [(ALGORITHMS[names[0]], "both")]
    else:
        jobs = ([(ALGORITHMS[names[0]], "grad_input")] if want_dx else []) + \
               ([(ALGORITHMS[names[1]], "grad_weight")] if want_dw else [])
    dx = dw = None
    failed = set()
    for impl, job in jobs:
        only = {"grad_input": finite_only[0], "grad_weight": finite_only[1]}.get(job, False)
        try:
            dx, dw = _backward_job(impl, job, only, grad_out, x, w, spec, shape, dx, dw)
        except _NotFinite:
            failed.add(job)
    if want_dw and dw is None and "grad_weight" not in failed:      # an empty batch
        dw = np.zeros((shape.out_channels, shape.in_per_group) + tuple(spec.kernel_size), dtype=dtype)
    return (None if "grad_input" in failed else dx), (None if "grad_weight" in failed else dw)


def _backward_job(impl, job, only, grad_out, x, w, spec, shape, dx, dw):
    """One job of :func:`_backward` ('both', 'grad_input' or 'grad_weight'): (dx, dw) updated."""
    dtype = grad_out.dtype
    itemsize = dtype.itemsize
    run = functools.partial(_run_job, finite_only=only)
    passes = ("grad_input", "grad_weight") if job == "both" else (job,)
    step = _batch_steps(impl, passes, spec, shape, itemsize)
    if step >= shape.N:                     # the whole batch at once
        part_dx, part_dw = run(impl, job, grad_out, x, w, spec, shape)
        dx = dx if part_dx is None else part_dx
        dw = _accumulate(dw, part_dw)
        return dx, dw
    blocks = None
    if step < 1:
        # x̃ and/or ∂x̃ of one sample, and fold's two copies of ∂x
        fixed = _padded_sample_bytes(spec, shape, itemsize) * len(passes) + \
            (2 * shape.C * shape.H * shape.W * itemsize if job != "grad_weight" else 0)
        blocks = _row_blocks(impl, passes, spec, shape, itemsize, fixed)
    step = max(step, 1)
    if job != "grad_weight" and (step < shape.N or blocks is not None):
        dx = np.empty((shape.N, shape.C, shape.H, shape.W), dtype=dtype)
    if blocks is not None:
        dw = _backward_rows(impl, job, blocks, grad_out, x, w, spec, shape, dx, dw, run)
        return dx, dw
    for sl in _slices(shape.N, step) if step < shape.N else [slice(0, shape.N)]:
        sub = shape._replace(N=sl.stop - sl.start)
        part_dx, part_dw = run(impl, job, grad_out[sl], None if x is None else x[sl], w, spec, sub)
        if part_dx is not None:
            if step < shape.N:
                dx[sl] = part_dx
            else:
                dx = part_dx
        dw = _accumulate(dw, part_dw)
    return dx, dw


def _run_job(impl, job, g, xs, w, spec, shape, finite_only=False):
    """(∂x part or None, ∂w part or None) of one slice: ``job`` is 'both', 'grad_input' or 'grad_weight';
    with ``finite_only`` (a ``FINITE_ONLY`` implementation), :class:`_NotFinite` where its pass gave None."""
    if job == "both":
        return impl.backward(g, xs, w, spec, shape, (True, True))
    options = {"finite_only": True} if finite_only else {}
    part = impl.grad_input(g, w, spec, shape, **options) if job == "grad_input" else \
        impl.grad_weight(g, xs, spec, shape, **options)
    if part is None:
        raise _NotFinite(job)
    return (part, None) if job == "grad_input" else (None, part)


def _accumulate(total, part):
    if part is None or total is None:
        return total if part is None else part
    total += part                                   # part is a fresh array per slice
    return total


def _backward_rows(impl, job, blocks, grad_out, x, w, spec, shape, dx, dw, run):
    """The backward of samples too big for the limit, one sample at a time on blocks of output rows.

    A block of output rows ``r0:r1`` reads the padded rows ``read`` only, so it is a convolution of
    those rows with no padding (the forward's blocks): its ∂/∂(rows read) is added into the padded
    sample's gradient, which :func:`convscope.padding.fold` (the adjoint of the padding) then takes
    to the input; its ∂w is one term of the sum over blocks.  Writes ``dx[n]``; returns ``dw``.
    ``run`` is :func:`_run_job` with the pass's ``finite_only``.
    """
    want_dx, want_dw = job != "grad_weight", job != "grad_input"
    flat = spec.unpadded()
    Hp, Wp = shape.H + sum(spec.padding[0]), shape.W + sum(spec.padding[1])
    for n in range(shape.N):
        xp = pad(x[n:n + 1], spec) if want_dw else None             # (1, C, Hp, Wp)
        dxp = np.zeros((1, shape.C, Hp, Wp), dtype=grad_out.dtype) if want_dx else None
        for r0, r1, read in blocks:
            g = np.ascontiguousarray(grad_out[n:n + 1, :, r0:r1])    # (1, C_out, rows, W_out)
            xs = None if xp is None else np.ascontiguousarray(xp[:, :, read])   # (1, C, rows read, Wp)
            part_dx, part_dw = run(impl, job, g, xs, w, flat, _rows_shape(spec, shape, r1 - r0))
            if part_dx is not None:
                dxp[:, :, read] += part_dx
            dw = _accumulate(dw, part_dw)
        if want_dx:
            dx[n:n + 1] = fold(dxp, spec, (shape.H, shape.W))
    return dw


# --------------------------------------------------------------------------- 1-d and 3-d


def dims(name) -> tuple:
    """The numbers of spatial dimensions implementation ``name`` computes (``DIMS``; 2-d only without it)."""
    return getattr(ALGORITHMS[name], "DIMS", (2,))


def run_forward_nd(name, x, w, b, spec, shape):
    """The forward of a convolution of any dimension on implementation ``name`` (one with local error),
    the batch cut into slices whose estimate fits the workspace limit (at least one sample each)."""
    impl = ALGORITHMS[name]
    with np.errstate(all="ignore"), workspace_limit(get_workspace_limit()):
        step = max(_batch_step(impl, "forward", spec, shape, x.dtype.itemsize), 1)
        if step >= shape.N:
            return impl.forward(x, w, b, spec, shape)
        out = np.empty((shape.N, shape.out_channels) + tuple(shape.out_spatial), dtype=x.dtype)
        for sl in _slices(shape.N, step):
            out[sl] = impl.forward(x[sl], w, b, spec, shape._replace(N=sl.stop - sl.start))
        return out


def run_backward_nd(names, grad_out, x, w, spec, shape, mask):
    """(∂L/∂x or None, ∂L/∂w or None) of a convolution of any dimension, as :func:`run_backward`
    (``names = (grad_input's, grad_weight's)``), in batch slices under the workspace limit."""
    dx = dw = None
    with np.errstate(all="ignore"), workspace_limit(get_workspace_limit()):
        itemsize = grad_out.dtype.itemsize
        if mask[0]:
            impl = ALGORITHMS[names[0]]
            step = max(_batch_step(impl, "grad_input", spec, shape, itemsize), 1)
            if step >= shape.N:
                dx = impl.grad_input(grad_out, w, spec, shape)
            else:
                dx = np.empty((shape.N, shape.C) + tuple(shape.spatial), dtype=grad_out.dtype)
                for sl in _slices(shape.N, step):
                    dx[sl] = impl.grad_input(grad_out[sl], w, spec, shape._replace(N=sl.stop - sl.start))
        if mask[1]:
            impl = ALGORITHMS[names[1]]
            step = max(_batch_step(impl, "grad_weight", spec, shape, itemsize), 1)
            for sl in _slices(shape.N, step) if step < shape.N else [slice(0, shape.N)]:
                dw = _accumulate(dw, impl.grad_weight(grad_out[sl], x[sl], spec, shape._replace(N=sl.stop - sl.start)))
    return dx, dw
