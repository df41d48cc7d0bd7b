"""Kernels one row high (every 1-d convolution, run as the 2-d one of height 1): a sum over the
kernel's taps of matrix products on views of the padded input, with no column matrix.

Forward
-------
A kernel of height 1 makes output row ``i`` read padded row ``i·sH`` only.  Along that row,
tap ``t`` of output ``j`` reads padded column ``j·s + t·d = (j + q_t)·s + r_t`` with
``r_t = (t·d) mod s`` and ``q_t = ⌊t·d / s⌋`` (``s, d`` the stride and dilation along the row).
With the padded rows split into their ``s`` stride phases, ``phase_r[…, m] = x̃[…, m·s + r]``
(one copy per sample; for stride 1 the padded rows themselves, no copy)::

    out[n, g, i, :] = Σ_t W_t[g] @ phase_{r_t}[n, g, i, q_t : q_t + W_out]      W_t[g] = w[g, :, :, 0, t]

each term a product ``(C_out/G × C/G) @ (C/G × W_out)`` on a unit-stride view.  The phases are
stacked by channel, row ``r·C/G + c`` of a group holding channel ``c`` of phase ``r``, so the taps of
one offset ``q`` whose phases follow each other (stride ``s`` above 1, dilation 1: ``s`` taps a
product) are one product ``[W_t …] @ rows`` of ``n·C/G`` rows: a *run*.  The output starts as the
bias (without one, the first run's product is written into it) and every other run's product is
added to it as BLAS computes it (:func:`convscope.blas.stacked`, no temporary), the samples'
products shared among BLAS's threads.

Backward (the adjoints)
-----------------------
* ``∂L/∂phase_{r_t}[n, g, i, q_t : q_t + W_out] += W_t[g]ᵀ @ grad_out[n, g, i]`` (a run's rows at
  once): the phases' gradient, zero where no tap reads (a run on phases no other run wrote yet
  writes, the others add), is
  interleaved back into the padded rows, and :func:`convscope.padding.fold` (the adjoint of the
  padding) sends the border's gradient to the pixels the border copied;
* ``∂L/∂W_t[g] = Σ_{n, i} grad_out[n, g, i] @ phase_{r_t}[n, g, i, q_t : q_t + W_out]ᵀ``.

With few taps × channels per group (``Cg·k ≤`` :data:`DIRECT_MAX_ROWS`) the forward is instead one
compiled pass of direct sums over the same phase rows (:mod:`convscope.algorithms.kernels.taps`).

Every product sums the taps a result reads and nothing else, over real zeros where the
padding is zeros, so NaN and ±Inf land where the definition puts them.  Python loops run over
the samples, groups and runs; the rows of a sample (height above 1) are a batch of products.
"""
from __future__ import annotations

import numpy as np

from .. import blas
from ..padding import fold, pad

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)
DIMS = (2,)         # 2-d convolutions with kernels one row high; a 1-d convolution reaches it lifted to height 1
DIRECT_MAX_ROWS = 32    # forward as compiled direct sums up to this many taps × channels per group (bench/README.md)


def needs(spec, shape):
    """None if the kernel is one row high, else what the path needs."""
    if spec.kernel_size[0] != 1:
        return f"a kernel one row high (1-d convolutions), got kernel_size={spec.kernel_size}"
    return None


def _geometry(spec, shape):
    """(s, runs, used, Lph): the row stride; the taps as runs ``(q, r0, [t, …])`` of taps with the
    same offset ``q`` and consecutive phases ``r0, r0 + 1, …``; the padded columns any tap reads
    (``0:used``); the length of a phase."""
    s, d, k = spec.stride[1], spec.dilation[1], spec.kernel_size[1]
    runs = []
    for t in range(k):
        r, q = (t * d) % s, (t * d) // s
        last = runs[-1] if runs else None
        if last is not None and last[0] == q and last[1] + len(last[2]) == r:
            last[2].append(t)
        else:
            runs.append((q, r, [t]))
    used = (shape.W_out - 1) * s + (k - 1) * d + 1
    return s, runs, used, -(-used // s)


def _rows(a, spec, shape):
    """The padded rows a kernel of height 1 reads: (N, C, Hp, ·) → (N, C, H_out, ·), a view."""
    sH = spec.stride[0]
    return a[:, :, 0:(shape.H_out - 1) * sH + 1:sH]


def _phased(xr, spec, shape):
    """The rows ``xr`` (N, C, H_out, ≥ used) by group and stride phase, (N, G, s·Cg, H_out, ≥ Lph):
    row ``r·Cg + c`` of group ``g`` holds ``xr[:, g·Cg + c, :, m·s + r]`` at column ``m`` (one copy; for
    stride 1 a view of ``xr``).  Only the columns some tap reads are written."""
    s, runs, used, Lph = _geometry(spec, shape)
    N, G, Cg, H_out = shape.N, shape.groups, shape.in_per_group, shape.H_out
    by_group = xr.reshape(N, G, Cg, H_out, xr.shape[-1])              # (N, C, …) → (N, G, Cg, …), a view
    if s == 1:
        return by_group
    ph = np.empty((N, G, s, Cg, H_out, Lph), dtype=xr.dtype)
    for r in sorted({r0 + i for _, r0, ts in runs for i in range(len(ts))}):
        ph[:, :, r, ..., :len(range(r, used, s))] = by_group[..., r:used:s]
    return ph.reshape(N, G, s * Cg, H_out, Lph)                        # (…, s, Cg, …) → (…, s·Cg, …)


def _run_weights(w, shape, runs):
    """Per group, per run, its taps' matrices side by side: (C_out/G, len(run)·Cg), contiguous."""
    mats = []
    for og in _groups(shape):
        wg = w[og, :, 0, :]                                            # (Og, Cg, k)
        mats.append([np.ascontiguousarray(wg[:, :, ts].transpose(0, 2, 1)).reshape(wg.shape[0], -1)
                     for _, _, ts in runs])                            # (Og, Cg, n) → (Og, n, Cg) → (Og, n·Cg)
    return mats


def _window(ph, g, r0, n, q, shape, sample=None):
    """The phase rows of a run (``n`` taps from phase ``r0``) at offset ``q``: (…, n·Cg, H_out, W_out), a view."""
    Cg = shape.in_per_group
    lead = slice(None) if sample is None else sample
    return ph[lead, g, r0 * Cg:(r0 + n) * Cg, :, q:q + shape.W_out]


def _groups(shape):
    """The output channels of each group, as slices."""
    Og = shape.out_per_group
    return [slice(g * Og, (g + 1) * Og) for g in range(shape.groups)]


def direct(spec, shape) -> bool:
    """Whether the forward runs as compiled direct sums (few taps × channels per group)."""
    return shape.in_per_group * spec.kernel_size[1] <= DIRECT_MAX_ROWS


def _direct_forward(rows, w, b, spec, shape):
    """out (N, C_out, H_out, W_out) from the padded rows (N, C, H_out, ≥ used): the phases' rows summed
    directly (:func:`convscope.algorithms.kernels.taps.row_sums`)."""
    from .kernels import _numba, taps as kernels

    s, d, k = spec.stride[1], spec.dilation[1], spec.kernel_size[1]
    G, Cg, Og = shape.groups, shape.in_per_group, shape.out_per_group
    ph = np.ascontiguousarray(_phased(rows, spec, shape))             # (N, G, s·Cg, H_out, Lph)
    c, t = np.divmod(np.arange(Cg * k), k)                           # row r = c·k + t
    src_rows, offsets = (t * d) % s * Cg + c, (t * d) // s
    wr = np.ascontiguousarray(w.reshape(G, Og, Cg * k))              # (C_out, Cg, 1, k) → (G, Og, Cg·k)
    bias = np.empty(0, dtype=ph.dtype) if b is None else np.ascontiguousarray(b, dtype=ph.dtype)
    out = np.empty((shape.N, shape.out_channels, shape.H_out, shape.W_out), dtype=ph.dtype)
    _numba.launch(kernels.row_sums, ph, src_rows, offsets, wr, bias, out)
    return out


def forward(x, w, b, spec, shape):
    """out (N, C_out, H_out, W_out)."""
    rows = _rows(pad(x, spec), spec, shape)                          # (N, C, H_out, Wp)
    if direct(spec, shape):
        return _direct_forward(rows, w, b, spec, shape)
    N, H_out, W_out = shape.N, shape.H_out, shape.W_out
    s, runs, _, _ = _geometry(spec, shape)
    mats = _run_weights(w, shape, runs)
    out = np.empty((N, shape.out_channels, H_out, W_out), dtype=x.dtype)
    step = max(N, 1) if s == 1 else 1        # stride 1: the phases are the rows, a view; else one sample's copy
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        ph = _phased(rows[n0:n1], spec, shape._replace(N=n1 - n0))       # (n, G, s·Cg, H_out, Lph)
        for g, og in enumerate(_groups(shape)):
            dst = out[n0:n1, og].transpose(0, 2, 1, 3)                   # (n, Og, H_out, W_out) → (n, H_out, Og, W_out)
            if b is not None:
                dst[...] = b[og, None]
            for i, (q, r0, ts) in enumerate(runs):
                v = _window(ph, g, r0, len(ts), q, shape).transpose(0, 2, 1, 3)   # (n, H_out, n·Cg, W_out)
                blas.stacked(mats[g][i], v, dst, accumulate=b is not None or i > 0)
    return out


def grad_input(grad_out, w, spec, shape):
    """∂L/∂x (N, C, H, W): each run's Wᵀ @ grad_out added into the phase windows it read, the phases
    interleaved into the padded rows, then the padding's adjoint."""
    N, C, H_out, W_out = shape.N, shape.C, shape.H_out, shape.W_out
    G, Cg = shape.groups, shape.in_per_group
    s, runs, used, Lph = _geometry(spec, shape)
    dtype = grad_out.dtype
    mats = _run_weights(w, shape, runs)
    dph = np.zeros((N, G, s * Cg, H_out, Lph), dtype=dtype)             # (N, G, s·Cg, H_out, Lph)
    for g, og in enumerate(_groups(shape)):
        gy = grad_out[:, og].transpose(0, 2, 1, 3)                       # (N, Og, H_out, W_out) → (N, H_out, Og, W_out)
        written = set()
        for i, (q, r0, ts) in enumerate(runs):
            dst = _window(dph, g, r0, len(ts), q, shape).transpose(0, 2, 1, 3)   # (N, H_out, n·Cg, W_out)
            phases = set(range(r0, r0 + len(ts)))
            blas.stacked(mats[g][i].T, gy, dst, accumulate=bool(phases & written))
            written |= phases
    Hp, Wp = spec.padded_size((shape.H, shape.W))
    if s == 1 and spec.stride[0] == 1 and H_out == Hp and used == Wp:
        dxp = dph.reshape(N, C, Hp, Wp)                                 # (N, G, Cg, …) → (N, C, …): the padded rows
    else:
        dxp = np.zeros((N, C, Hp, Wp), dtype=dtype)
        rows = _rows(dxp, spec, shape).reshape(N, G, Cg, H_out, Wp)     # a view of dxp's rows by group
        by_phase = dph.reshape(N, G, s, Cg, H_out, Lph)
        for r in sorted({r0 + i for _, r0, ts in runs for i in range(len(ts))}):
            rows[..., r:used:s] = by_phase[:, :, r, ..., :len(range(r, used, s))]
    del dph                                                             # fold copies the padded gradient
    if not any(spec.pad_totals):
        return dxp                                                      # no padding: its adjoint is the identity
    return fold(dxp, spec, (shape.H, shape.W))


def grad_weight(grad_out, x, spec, shape):
    """∂L/∂w (C_out, C/G, 1, k): per run and group, Σ over samples and rows of grad_out @ windowᵀ."""
    Og, Cg = shape.out_per_group, shape.in_per_group
    _, runs, _, _ = _geometry(spec, shape)
    ph = _phased(_rows(pad(x, spec), spec, shape), spec, shape)
    dw = np.empty((shape.out_channels, spec.kernel_size[1], Cg), dtype=grad_out.dtype)   # (C_out, k, Cg)
    for g, og in enumerate(_groups(shape)):
        gy = grad_out[:, og].transpose(0, 2, 1, 3)                       # (N, Og, H_out, W_out) → (N, H_out, Og, W_out)
        for q, r0, ts in runs:
            v = _window(ph, g, r0, len(ts), q, shape).transpose(0, 2, 3, 1)   # (N, H_out, W_out, n·Cg)
            part = blas.few_rows(gy, v).sum(axis=(0, 1))                 # (N, H_out, Og, n·Cg) → (Og, n·Cg)
            dw[og, ts] = part.reshape(Og, len(ts), Cg)
    return np.ascontiguousarray(dw.transpose(0, 2, 1)[:, :, None, :])     # (C_out, k, Cg) → (C_out, Cg, 1, k)


def describe(spec, shape, pass_) -> str:
    """The layout a pass runs in, for :func:`convscope.plan`."""
    s, runs, _, _ = _geometry(spec, shape)
    if pass_ == "forward" and direct(spec, shape):
        text = (f"compiled direct sums over {shape.in_per_group * spec.kernel_size[1]} taps × channels "
                f"per group (W_out = {shape.W_out})")
        return text + (f", {s} stride phases" if s > 1 else "")
    text = f"{len(runs)} matrix products per sample and group (W_out = {shape.W_out})"
    if s > 1:
        text += f", {s} stride phases stacked by channel (taps of one offset in one product)"
    return text


def workspace(pass_, spec, shape, itemsize) -> int:
    """An upper estimate of the scratch bytes of a pass: the padded input, its stride phases (forward:
    one sample's, or every sample's for the direct sums, which need nothing more) and the scratch of
    one run's products (those of every sample at stride 1, added through a temporary where BLAS cannot
    add them in place; grad_input: the phases' gradient and the padded gradient, twice for the
    padding's adjoint, instead; grad_weight: the per-row products of one run and group)."""
    N, C, H_out, W_out = shape.N, shape.C, shape.H_out, shape.W_out
    Hp, Wp = spec.padded_size((shape.H, shape.W))
    s, runs, _, Lph = _geometry(spec, shape)
    widest = max(len(ts) for _, _, ts in runs) * shape.in_per_group
    padded = N * C * Hp * Wp if any(spec.pad_totals) else 0
    phases = N * C * H_out * s * Lph
    batch = N if s == 1 else 1                                          # samples in one run's products
    if pass_ == "forward" and direct(spec, shape):
        rows = shape.in_per_group * spec.kernel_size[1]
        total = padded + phases + shape.out_channels * rows + 4 * rows   # the phases (a copy), weights, row tables
    elif pass_ == "forward":
        total = padded + (phases // max(N, 1) if s > 1 else 0) + batch * H_out * shape.out_per_group * W_out
    elif pass_ == "grad_input":
        total = phases + 2 * N * C * Hp * Wp + N * H_out * widest * W_out
    else:
        total = padded + (phases if s > 1 else 0) + N * H_out * shape.out_per_group * widest \
            + 2 * shape.out_channels * shape.in_per_group * spec.kernel_size[1]
    return total * itemsize
