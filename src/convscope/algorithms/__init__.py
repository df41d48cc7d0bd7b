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
* ``ERROR``: ``"local"`` when every output is a sum over its own window only (a NaN or Inf
  reaches the outputs whose windows hold it, as in torch), ``"global"`` when transforms mix
  values from the whole tile or grid (Winograd, FFT);

and optionally

* ``cost_ms(spec, shape)`` → its estimated milliseconds for the three passes (the planner's cost model);
* ``describe(spec, shape, pass_)`` → the layout a pass runs in, for :func:`convscope.plan`;
* ``workspace(pass_, spec, shape, itemsize)`` → an upper estimate of the scratch bytes of a pass;
* ``prepared_forward(w)`` → ``f(x, b, spec, shape)``, the forward with its weight-only work
  done once, for running on many slices;
* ``preferred_bytes(pass_, spec, shape)`` → a scratch size below the workspace limit that its
  slices of the batch should stay under because they run faster so (None: no preference).

``spec`` is a :class:`convscope.spec.ConvSpec`, ``shape`` a :class:`convscope.spec.ConvShape`.
:data:`ALGORITHMS` is built from the modules (:class:`Algorithm` derives ``grad_input`` and
``grad_weight`` from ``backward``, the one place they are); which implementation runs is
decided by :mod:`convscope.planner`, which reads these declarations.

The ``run_*`` functions here call an implementation under the workspace limit
(:mod:`convscope.workspace`): when its estimate exceeds the limit the batch is
cut into slices that fit (gradients w.r.t. the weight are summed over the
slices), and a forward whose single sample does not fit is run on blocks of
output rows of the padded sample, with the padding already applied.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .. import reference
from ..padding import pad
from ..workspace import get_workspace_limit
from . import depthwise, fft, gemm, pointwise, winograd


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

    def needs(self, spec, shape):
        rule = getattr(self.module, "needs", None)
        return None if rule is None else rule(spec, shape)

    def grad_input(self, grad_out, w, spec, shape):
        if hasattr(self, "backward"):
            return self.backward(grad_out, None, w, spec, shape, (True, False))[0]
        return self.module.grad_input(grad_out, w, spec, shape)

    def grad_weight(self, grad_out, x, spec, shape):
        if hasattr(self, "backward"):
            return self.backward(grad_out, x, None, spec, shape, (False, True))[1]
        return self.module.grad_weight(grad_out, x, spec, shape)

    def cost_ms(self, spec, shape):
        """The module's estimate for the three passes, or None where it has no cost model."""
        model = getattr(self.module, "cost_ms", None)
        return None if model is None else model(spec, shape)

    def describe(self, spec, shape, pass_) -> str:
        text = getattr(self.module, "describe", None)
        return "" if text is None else text(spec, shape, pass_)


MODULES = (gemm, reference, pointwise, depthwise, winograd, fft)
ALGORITHMS = {module.__name__.rsplit(".", 1)[1]: Algorithm(module.__name__.rsplit(".", 1)[1], module)
              for module in MODULES}


def _estimate(impl, pass_, spec, shape, itemsize):
    fn = getattr(impl, "workspace", None)
    return 0 if fn is None else fn(pass_, spec, shape, itemsize)


def _batch_step(impl, pass_, spec, shape, itemsize):
    """Samples per slice so that a slice's estimate fits the limit (0: one sample does not fit).

    Where the implementation prefers smaller slices for speed, slices of at least one sample
    stay under that size too.
    """
    limit = get_workspace_limit()
    total = _estimate(impl, pass_, spec, shape, itemsize)
    preferred = getattr(impl, "preferred_bytes", None)
    preferred = None if preferred is None else preferred(pass_, spec, shape)
    if shape.N == 0 or total <= min(limit, preferred or limit):
        return max(shape.N, 1)
    per_sample = total if shape.N == 1 else _estimate(impl, pass_, spec, shape._replace(N=1), itemsize)
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


def run_forward(name, x, w, b, spec, shape):
    impl = ALGORITHMS[name]
    itemsize = x.dtype.itemsize
    step = _batch_step(impl, "forward", spec, shape, itemsize)
    if step >= shape.N:
        return impl.forward(x, w, b, spec, shape)
    out = np.empty((shape.N, shape.out_channels, shape.H_out, shape.W_out), dtype=x.dtype)
    prepared = getattr(impl, "prepared_forward", None)
    fwd = prepared(w) if prepared else (lambda xs, bs, sp, sh: impl.forward(xs, w, bs, sp, sh))
    if step >= 1:
        for sl in _slices(shape.N, step):
            out[sl] = fwd(x[sl], b, spec, shape._replace(N=sl.stop - sl.start))
        return out
    # One sample is too big: pad it, then run blocks of output rows on the padded rows they read.
    flat = dataclasses.replace(spec, padding=((0, 0), (0, 0)), padding_mode="zeros", padding_arg=(0, 0))
    padded_bytes = shape.C * (shape.H + sum(spec.padding[0])) * (shape.W + sum(spec.padding[1])) * itemsize
    limit = get_workspace_limit()
    rows = shape.H_out
    while rows > 1 and padded_bytes + _estimate(impl, "forward", flat, _rows_shape(spec, shape, rows),
                                                itemsize) > limit:
        rows = (rows + 1) // 2
    sH, dH, kH = spec.stride[0], spec.dilation[0], spec.kernel_size[0]
    for n in range(shape.N):
        xp = pad(x[n:n + 1], spec)                                  # (1, C, Hp, Wp)
        for r0 in range(0, shape.H_out, rows):
            r1 = min(shape.H_out, r0 + rows)
            block = xp[:, :, r0 * sH:(r1 - 1) * sH + dH * (kH - 1) + 1]   # (1, C, rows read, Wp) view
            out[n:n + 1, :, r0:r1] = fwd(np.ascontiguousarray(block), b, flat, _rows_shape(spec, shape, r1 - r0))
    return out


def run_backward(names, grad_out, x, w, spec, shape, mask):
    """(∂L/∂x or None, ∂L/∂w or None): ``names = (grad_input's, grad_weight's)``, ``mask`` the same order."""
    want_dx, want_dw = mask
    dtype = grad_out.dtype
    itemsize = dtype.itemsize
    shared = want_dx and want_dw and names[0] == names[1] and hasattr(ALGORITHMS[names[0]], "backward")
    if shared:
        jobs = [(ALGORITHMS[names[0]], "both")]
    else:
        jobs = ([(ALGORITHMS[names[0]], "grad_input")] if want_dx else []) + \
               ([(ALGORITHMS[names[1]], "grad_weight")] if want_dw else [])
    dx = dw = None
    for impl, job in jobs:
        passes = ("grad_input", "grad_weight") if job == "both" else (job,)
        step = max(1, min(_batch_step(impl, p, spec, shape, itemsize) for p in passes))
        if job != "grad_weight" and step < shape.N:
            dx = np.empty((shape.N, shape.C, shape.H, shape.W), dtype=dtype)
        for sl in _slices(shape.N, step) if step < shape.N else [slice(0, shape.N)]:
            sub = shape._replace(N=sl.stop - sl.start)
            g, xs = grad_out[sl], None if x is None else x[sl]
            if job == "both":
                part_dx, part_dw = impl.backward(g, xs, w, spec, sub, (True, True))
            elif job == "grad_input":
                part_dx, part_dw = impl.grad_input(g, w, spec, sub), None
            else:
                part_dx, part_dw = None, impl.grad_weight(g, xs, spec, sub)
            if part_dx is not None:
                if step < shape.N:
                    dx[sl] = part_dx
                else:
                    dx = part_dx
            if part_dw is not None:
                if dw is None:
                    dw = part_dw
                else:
                    dw += part_dw                   # part_dw is a fresh array per slice
    if want_dw and dw is None:                  # an empty batch
        dw = np.zeros((shape.out_channels, shape.in_per_group) + tuple(spec.kernel_size), dtype=dtype)
    return dx, dw
