"""Kernels one row high (every 1-d convolution, run as the 2-d one of height 1): a sum over the
kernel's taps of matrix products on views of the padded input, with no column matrix.

Forward
-------
A kernel of height 1 makes output row ``i`` read padded row ``i·sH`` only.  Along that row,
tap ``t`` of output ``j`` reads padded column ``j·s + t·d = (j + q_t)·s + r_t`` with
``r_t = (t·d) mod s`` and ``q_t = ⌊t·d / s⌋`` (``s, d`` the stride and dilation along the row).
With the padded rows split into their ``s`` stride phases, ``phase_r[…, m] = x̃[…, m·s + r]``
(one copy; for stride 1 the padded rows themselves, no copy)::

    out[n, g, i, :] = Σ_t W_t[g] @ phase_{r_t}[n, g, i, q_t : q_t + W_out]      W_t[g] = w[g, :, :, 0, t]

each term a product ``(C_out/G × C/G) @ (C/G × W_out)`` on a unit-stride view: the first tap's
product is written into the output, the others' are added to it.

Backward (the adjoints)
-----------------------
* ``∂L/∂phase_{r_t}[n, g, i, q_t : q_t + W_out] += W_t[g]ᵀ @ grad_out[n, g, i]``: the phases'
  gradient, zero where no tap reads (the first tap of a phase writes, the others add), is
  interleaved back into the padded rows, and :func:`convscope.padding.fold` (the adjoint of the
  padding) sends the border's gradient to the pixels the border copied;
* ``∂L/∂W_t[g] = Σ_{n, i} grad_out[n, g, i] @ phase_{r_t}[n, g, i, q_t : q_t + W_out]ᵀ``.

Every product sums the taps a result reads and nothing else, over real zeros where the
padding is zeros, so NaN and ±Inf land where the definition puts them.  Python loops run over
the samples, groups and taps; the rows of a sample (height above 1) are a batch of products.
"""
from __future__ import annotations

import numpy as np

from ..padding import fold, pad

ERROR = "local"     # each output is rounded from the products it sums (see convscope.precision)
DIMS = (2,)         # 2-d convolutions with kernels one row high; a 1-d convolution reaches it lifted to height 1


def needs(spec, shape):
    """None if the kernel is one row high, else what the path needs."""
    if spec.kernel_size[0] != 1:
        return f"a kernel one row high (1-d convolutions), got kernel_size={spec.kernel_size}"
    return None


def _geometry(spec, shape):
    """(s, [(r_t, q_t)], used, Lph): the row stride, each tap's phase and offset in it, the padded
    columns any tap reads (``0:used``) and the length of a phase."""
    s, d, k = spec.stride[1], spec.dilation[1], spec.kernel_size[1]
    taps = [((t * d) % s, (t * d) // s) for t in range(k)]
    used = (shape.W_out - 1) * s + (k - 1) * d + 1
    return s, taps, used, -(-used // s)


def _rows(a, spec, shape):
    """The padded rows a kernel of height 1 reads: (N, C, Hp, ·) → (N, C, H_out, ·), a view."""
    sH = spec.stride[0]
    return a[:, :, 0:(shape.H_out - 1) * sH + 1:sH]


def _phases(xr, spec, shape):
    """The stride phases of the rows ``xr`` (N, C, H_out, ≥ used): a list indexed by phase, each
    (N, C, H_out, ≥ Lph) with its columns ``m`` read by some tap holding ``xr[…, m·s + r]``;
    for stride 1 ``[xr]`` itself.  Phases no tap reads are None."""
    s, taps, used, Lph = _geometry(spec, shape)
    if s == 1:
        return [xr]
    wanted = sorted({r for r, _ in taps})
    ph = np.empty((len(wanted),) + xr.shape[:3] + (Lph,), dtype=xr.dtype)   # (phases, N, C, H_out, Lph)
    out = [None] * s
    for i, r in enumerate(wanted):
        n_r = len(range(r, used, s))
        ph[i, ..., :n_r] = xr[..., r:used:s]
        out[r] = ph[i]
    return out


def _tap_weights(w, shape):
    """(k, C_out, C/G): tap t's matrix, contiguous, from w (C_out, C/G, 1, k)."""
    return np.ascontiguousarray(w[:, :, 0, :].transpose(2, 0, 1))     # (C_out, Cg, k) → (k, C_out, Cg)


def _groups(shape):
    Og, Cg = shape.out_per_group, shape.in_per_group
    return [(slice(g * Og, (g + 1) * Og), slice(g * Cg, (g + 1) * Cg)) for g in range(shape.groups)]


def _sum_products(dst, terms, tmp):
    """dst (H_out, M, L) = Σ over ``terms`` [(A (M, K), V (H_out, K, L))] of A @ V; tmp is scratch
    of dst's shape (the first product is written into dst, the others added)."""
    for i, (a, v) in enumerate(terms):
        if i == 0:
            np.matmul(a, v, out=dst)
        else:
            np.matmul(a, v, out=tmp)
            dst += tmp


def forward(x, w, b, spec, shape):
    """out (N, C_out, H_out, W_out)."""
    N, H_out, W_out = shape.N, shape.H_out, shape.W_out
    _, taps, _, _ = _geometry(spec, shape)
    phases = _phases(_rows(pad(x, spec), spec, shape), spec, shape)
    wt = _tap_weights(w, shape)
    out = np.empty((N, shape.out_channels, H_out, W_out), dtype=x.dtype)
    tmp = np.empty((H_out, shape.out_per_group, W_out), dtype=x.dtype) if len(taps) > 1 else None
    for n in range(N):
        for og, cg in _groups(shape):
            dst = out[n, og].transpose(1, 0, 2)                          # (Og, H_out, W_out) → (H_out, Og, W_out)
            terms = [(wt[t, og], phases[r][n, cg, :, q:q + W_out].transpose(1, 0, 2))   # (H_out, Cg, W_out)
                     for t, (r, q) in enumerate(taps)]
            _sum_products(dst, terms, tmp)
            if b is not None:
                dst += b[og, None]
    return out


def grad_input(grad_out, w, spec, shape):
    """∂L/∂x (N, C, H, W): each tap's Wᵀ @ grad_out added into the phase window it read, the phases
    interleaved into the padded rows, then the padding's adjoint."""
    N, C, H_out, W_out = shape.N, shape.C, shape.H_out, shape.W_out
    s, taps, used, Lph = _geometry(spec, shape)
    dtype = grad_out.dtype
    wt = _tap_weights(w, shape)
    wanted = sorted({r for r, _ in taps})
    dph = np.zeros((len(wanted), N, C, H_out, Lph), dtype=dtype)     # (phases, N, C, H_out, Lph)
    slot = {r: i for i, r in enumerate(wanted)}
    tmp = np.empty((H_out, shape.in_per_group, W_out), dtype=dtype)
    for n in range(N):
        for og, cg in _groups(shape):
            g = grad_out[n, og].transpose(1, 0, 2)                       # (Og, H_out, W_out) → (H_out, Og, W_out)
            written = set()
            for t, (r, q) in enumerate(taps):
                dst = dph[slot[r], n, cg, :, q:q + W_out].transpose(1, 0, 2)   # (H_out, Cg, W_out)
                aT = wt[t, og].T                                         # (Cg, Og)
                if r not in written:
                    np.matmul(aT, g, out=dst)
                    written.add(r)
                else:
                    np.matmul(aT, g, out=tmp)
                    dst += tmp
    Hp, Wp = spec.padded_size((shape.H, shape.W))
    if s == 1 and spec.stride[0] == 1 and H_out == Hp and used == Wp:
        dxp = dph[0]                                                    # the padded rows are the one phase
    else:
        dxp = np.zeros((N, C, Hp, Wp), dtype=dtype)
        rows = _rows(dxp, spec, shape)                                  # (N, C, H_out, Wp), a view
        for r in wanted:
            n_r = len(range(r, used, s))
            rows[..., r:used:s] = dph[slot[r], ..., :n_r]
    del dph                                                             # fold copies the padded gradient
    if not any(spec.pad_totals):
        return dxp                                                      # no padding: its adjoint is the identity
    return fold(dxp, spec, (shape.H, shape.W))


def grad_weight(grad_out, x, spec, shape):
    """∂L/∂w (C_out, C/G, 1, k): per tap and group, Σ over samples and rows of grad_out @ phase windowᵀ."""
    N, H_out, W_out = shape.N, shape.H_out, shape.W_out
    _, taps, _, _ = _geometry(spec, shape)
    phases = _phases(_rows(pad(x, spec), spec, shape), spec, shape)
    dw = np.empty((len(taps), shape.out_channels, shape.in_per_group), dtype=grad_out.dtype)   # (k, C_out, Cg)
    for og, cg in _groups(shape):
        g = grad_out[:, og].transpose(0, 2, 1, 3)                        # (N, Og, H_out, W_out) → (N, H_out, Og, W_out)
        for t, (r, q) in enumerate(taps):
            v = phases[r][:, cg, :, q:q + W_out].transpose(0, 2, 3, 1)   # (N, Cg, H_out, W_out) → (N, H_out, W_out, Cg)
            dw[t, og] = np.matmul(g, v).sum(axis=(0, 1))                 # (N, H_out, Og, Cg) → (Og, Cg)
    return np.ascontiguousarray(dw.transpose(1, 2, 0)[:, :, None, :])     # (k, C_out, Cg) → (C_out, Cg, 1, k)


def describe(spec, shape, pass_) -> str:
    """The layout a pass runs in, for :func:`convscope.plan`."""
    s = spec.stride[1]
    parts = [f"{spec.kernel_size[1]} tap products per sample (W_out = {shape.W_out})"]
    if s > 1:
        parts.append(f"{s} stride phases")
    return ", ".join(parts)


def workspace(pass_, spec, shape, itemsize) -> int:
    """An upper estimate of the scratch bytes of a pass: the padded input, its stride phases and one
    product's scratch (grad_input: the phases' gradient and the padded gradient, twice for the
    padding's adjoint, instead; grad_weight:
    the per-row products of one tap and group)."""
    N, C = shape.N, shape.C
    Hp, Wp = spec.padded_size((shape.H, shape.W))
    s, taps, _, Lph = _geometry(spec, shape)
    padded = N * C * Hp * Wp if any(spec.pad_totals) else 0
    phases = N * C * shape.H_out * Lph * len({r for r, _ in taps}) if s > 1 else 0
    if pass_ == "forward":
        total = padded + phases + shape.H_out * shape.out_per_group * shape.W_out
    elif pass_ == "grad_input":
        total = N * C * shape.H_out * Lph * len({r for r, _ in taps}) + 2 * N * C * Hp * Wp \
            + shape.H_out * shape.in_per_group * shape.W_out
    else:
        total = padded + phases + N * shape.H_out * shape.out_per_group * shape.in_per_group \
            + 2 * len(taps) * shape.out_channels * shape.in_per_group
    return total * itemsize
