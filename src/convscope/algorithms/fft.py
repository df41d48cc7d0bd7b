r"""Convolution by real FFTs: one product over channels per frequency.

Domain: every convolution (any kernel, stride, dilation, padding and padding mode, groups).
It pays off for large kernels (:func:`cost_ms` against :func:`convscope.algorithms.gemm.cost_ms`):
the work per output pixel does not grow with the number of taps.

The stride-1 correlation
------------------------
Let ``x̃`` be the padded input of one channel, ``w̃`` the dilated kernel
(``w̃[u·dH, v·dW] = w[u, v]``, zero elsewhere, ``KH = dH·(kH−1) + 1`` rows), and ``y₁`` the
stride-1 correlation ``y₁[i, j] = Σ_pq x̃[i + p, j + q] · w̃[p, q]``.  The convolution's output
is ``y₁`` at ``(i·sH, j·sW)``, so only the first ``Hs = (H_out−1)·sH + 1`` rows of ``y₁`` are
needed, and they read the first ``Hu = Hs + KH − 1`` rows of ``x̃`` (likewise ``Ws``, ``Wu``).

On a periodic grid of ``LH × LW`` points, ``LH ≥ Hu`` and ``LW ≥ Wu`` (the next sizes with no
prime factor above 5: :func:`fast_length`), the *circular* correlation equals ``y₁`` on those
rows and columns, because ``i + p ≤ Hu − 1 < LH`` never wraps.  With ``X = rfft2(x̃)``,
``W = rfft2(w̃)`` (real input, so only ``LW//2 + 1`` columns of frequencies, ``F = LH·(LW//2+1)``
in all) and ``*`` the complex conjugate, summed over a group's input channels::

    Y[n, o, f] = Σ_c X[n, c, f] · W[o, c, f]*            y₁ = irfft2(Y)

that is, per frequency ``f`` and group, one matrix product ``(N, C/G) @ (C/G, C_out/G)``:
the spectra are laid out frequency-major, ``(F, G, N, C/G)`` and ``(F, G, C/G, C_out/G)``,
and ``np.matmul`` runs all the products at once.

Backward (derived once)
-----------------------
With ``g₁`` the gradient of ``y₁``, i.e. grad_out placed at ``(i·sH, j·sW)`` of an ``Hs × Ws``
grid with zeros between (the adjoint of subsampling), ``L = Σ y₁ · g₁`` and
``y₁[i] = Σ_p x̃[i + p] · w̃[p]`` (one axis shown; the other is the same)::

    ∂L/∂x̃[q] = Σ_i g₁[i] · w̃[q − i]        a convolution: Hs + KH − 1 = Hu rows, no wrap on LH
    ∂L/∂w̃[p] = Σ_i g₁[i] · x̃[i + p]        a correlation: i + p ≤ Hu − 1, no wrap on LH

On the periodic grid a convolution with ``a`` multiplies the spectrum by ``A`` and a
correlation by ``A*`` (the convolution theorem; for real ``a`` the DFT of ``i ↦ a[−i]`` is
``A*``), so::

    ∂L/∂X̃[n, c, f] = Σ_o G[n, o, f] · W[o, c, f]                    (F, G, N, C_out/G) @ (F, G, C_out/G, C/G)
    ∂L/∂W̃[o, c, f] = Σ_n X[n, c, f] · G[n, o, f]*  = (Gᴴ X)[o, c]   (F, G, C_out/G, N) @ (F, G, N, C/G)

the second summing over the batch inside the product.  ``irfft2`` of the first gives
``∂L/∂x̃`` on the grid; its first ``Hu × Wu`` values are the gradient of the padded input
(the rest of ``x̃`` was never read), and :func:`convscope.padding.fold` (the adjoint of
padding) sends the border's share to the pixels it copied.  The second is needed only at
the kernel's taps ``(u·dH, v·dW)``, so instead of a full ``irfft2`` it is evaluated there
by two small DFT matrix products (:func:`_at_taps`).

The kernel's spectrum likewise never goes through a padded ``LH × LW`` array: ``W`` and
``W*`` are two DFT matrix products of the ``kH × kW`` taps at their dilated positions
(:func:`_kernel_spectrum`), which write the frequency-major layout directly.

Layouts
-------
The per-frequency products need the spectra frequency-major, ``(F, G, N, C/G)``, which costs a
transposing copy of every spectrum (in tiles of ``TILE_FREQUENCIES`` frequencies, see
:func:`_tiled_copy`).  With one input channel per group (depthwise) there is no sum over
input channels: the forward and ∂L/∂x̃ are elementwise products (a sum over the channel
multiplier at most) and ∂L/∂W̃ a sum over the batch, which run on the spectra as the FFT
leaves them, channel-major ``(N, G, K, F)``, with no transposes.

Backend
-------
:func:`backend` (the one place that chooses) uses ``scipy.fft`` with ``workers=`` the
thread count (:func:`convscope.threads.get_num_threads`) when SciPy is installed (the
``fft`` extra), else ``numpy.fft`` on one thread; the code path is the same.  float32
runs in float32/complex64 (``numpy.fft`` before NumPy 2.0 computes in float64, and the
results are rounded back), float64 in float64/complex128.

Memory
------
The spectra of a whole batch slice, ``(F, G, N, C/G)`` complex, are kept while the output
channels (forward, grad_weight) or input channels (grad_input) are processed in blocks:
a block's kernel spectrum ``(F, G, C/G, block)`` is as large as ``block`` full-size planes
per input channel, the largest array of the path when channels are many.  The blocks are
as large as the workspace limit allows (:func:`_blocks`), at least one channel per group;
:func:`workspace` reports the need with blocks of one channel, so that
:mod:`convscope.algorithms` slices the batch (or, for the forward, cuts one sample into
rows) until that fits.  Below that (one sample, one row, one channel) the limit
is exceeded, as on every path.

Accuracy
--------
Every output is a sum over the whole grid of products of transformed values, so its rounding
error depends on the magnitudes of the whole input and kernel rather than on the output's own:
the error is spread evenly over the outputs.  In float32, on random layers (dense 7×7 to
31×31, depthwise 31×31, strided 5×5), the relative L2 error ``‖y − y_exact‖ / ‖y_exact‖`` of
the output and of both gradients measured 1.9e-7 to 2.5e-7 (im2col's: 2e-7 to 4e-7) and
``max |y − y_exact|`` 2e-7 to 3.4e-7 of ``max |y_exact|``; an output much smaller than the
largest gets a larger relative error than with direct summation.  float64 agrees with
direct convolution to about 1e-15 (relative L2).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ..padding import fold, pad, pad_into
from ..threads import get_num_threads, parallel_map
from ..workspace import get_workspace_limit

ERROR = "global"    # rounding error relative to the call's largest values, and NaN/Inf spread;
                    # a non-finite call is recomputed on a local path (see convscope.algorithms)

# the cost model of the three passes, milliseconds (fitted by bench/fit_cost_model.py)
COST_MS = dict(call=0.55, kernel=2.65e-6, kernel_tap=4.4e-7, product=6.3e-7, transform=9.1e-7)
NUMPY_FFT_FACTOR = 4       # numpy.fft's transforms against scipy.fft's with 2 workers (2.4–4.4× measured)


def needs(spec, shape):
    """None: the FFT path computes every convolution."""
    return None


# --------------------------------------------------------------------------- the FFT backend


class Backend(NamedTuple):
    """The real FFTs the path uses: ``rfft2(a, s)`` and ``irfft2(a, s)`` over the last two axes."""

    name: str
    rfft2: object
    irfft2: object
    threads: bool          # whether the transforms use get_num_threads() workers


_backend: dict = {}


def backend() -> Backend:
    """``scipy.fft`` (with workers) when SciPy can be imported, else ``numpy.fft``; chosen once.

    The transforms may overwrite their input (the path gives them scratch arrays only).
    """
    if "chosen" not in _backend:
        try:
            import scipy.fft as sfft
        except ImportError:
            sfft = None
        if sfft is not None:
            _backend["chosen"] = Backend(
                "scipy.fft",
                lambda a, s: sfft.rfft2(a, s=s, workers=get_num_threads(), overwrite_x=True),
                lambda a, s: sfft.irfft2(a, s=s, workers=get_num_threads(), overwrite_x=True),
                True)
        else:
            _backend["chosen"] = Backend("numpy.fft", lambda a, s: np.fft.rfft2(a, s=s),
                                         lambda a, s: np.fft.irfft2(a, s=s), False)
    return _backend["chosen"]


def describe_backend() -> str:
    """E.g. ``'scipy.fft, 2 workers'`` or ``'numpy.fft, 1 thread'`` (for :func:`convscope.plan`)."""
    b = backend()
    if b.threads:
        n = get_num_threads()
        return f"{b.name}, {n} worker{'s' if n != 1 else ''}"
    return f"{b.name}, 1 thread"


def fast_length(n: int) -> int:
    """The smallest m ≥ n whose prime factors are 2, 3 and 5 (sizes both FFT libraries do fast)."""
    best = 1
    while best < n:
        best *= 2
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


# --------------------------------------------------------------------------- sizes


class Grid(NamedTuple):
    """The sizes of one call (one axis each for H and W)."""

    Hp: int        # padded input
    Wp: int
    Hs: int        # stride-1 output rows/cols needed: (H_out − 1)·s + 1
    Ws: int
    Hu: int        # padded input rows/cols those read: Hs + d·(k − 1)
    Wu: int
    LH: int        # the periodic grid, ≥ Hu, Wu
    LW: int

    @property
    def Lr(self) -> int:
        """Columns of frequencies of a real FFT along W."""
        return self.LW // 2 + 1

    @property
    def F(self) -> int:
        """Frequencies in all."""
        return self.LH * self.Lr


def grid(spec, shape) -> Grid:
    (sH, sW), (dH, dW), (kH, kW) = spec.stride, spec.dilation, spec.kernel_size
    Hs, Ws = (shape.H_out - 1) * sH + 1, (shape.W_out - 1) * sW + 1
    Hu, Wu = Hs + dH * (kH - 1), Ws + dW * (kW - 1)
    return Grid(*spec.padded_size(shape.spatial), Hs, Ws, Hu, Wu, fast_length(Hu), fast_length(Wu))


def cost_terms(spec, shape) -> dict:
    """The terms of the cost model, ``K = C·C_out/groups`` and ``F`` the grid's frequencies::

        call: 1, kernel: K·F, kernel_tap: K·F·kH, product: N·K·F, transform: N·(C + C_out)·LH·LW·log₂(LH·LW)

    (the transform term ``NUMPY_FFT_FACTOR`` times with ``numpy.fft``).
    """
    import math

    g = grid(spec, shape)
    N, C, O = shape.N, shape.C, shape.out_channels
    K = C * O / shape.groups
    transform = N * (C + O) * g.LH * g.LW * math.log2(g.LH * g.LW)
    if backend().name != "scipy.fft":
        transform *= NUMPY_FFT_FACTOR
    return dict(call=1.0, kernel=K * g.F, kernel_tap=K * g.F * spec.kernel_size[0], product=N * K * g.F,
                transform=transform)


def cost_ms(spec, shape) -> float:
    """Estimated milliseconds of the three passes: Σ COST_MS[term] · :func:`cost_terms`[term]."""
    return sum(COST_MS[k] * v for k, v in cost_terms(spec, shape).items())


def describe(spec, shape, pass_) -> str:
    g = grid(spec, shape)
    return f"{describe_backend()}, {g.LH}×{g.LW} grid"


def _complex(dtype) -> np.dtype:
    return np.result_type(dtype, np.complex64)


# --------------------------------------------------------------------------- DFT matrices


@functools.lru_cache(maxsize=64)
def _dft(L: int, taps: int, step: int, sign: int, half: bool, dtype) -> np.ndarray:
    """E[t, a] = exp(sign·2πi·a·t·step / L) for taps t < ``taps`` and frequencies a < L
    (a < L//2 + 1 with ``half``): (taps, frequencies), read-only."""
    A = L // 2 + 1 if half else L
    phase = np.outer(np.arange(taps) * step, np.arange(A)) % L        # exact integers, then the angle
    e = np.exp(sign * 2j * np.pi * phase / L).astype(dtype)
    e.flags.writeable = False
    return e


@functools.lru_cache(maxsize=64)
def _inverse_half(L: int, taps: int, step: int, dtype) -> np.ndarray:
    """The inverse real DFT along the half axis at positions t·step: (taps, L//2 + 1), read-only.

    x[q] = (1/L) · Re Σ_{b < L//2+1} c_b · X[b] · exp(2πi·b·q/L), with c_b = 2 for the
    frequencies that stand for a conjugate pair and 1 for b = 0 and, L even, b = L/2.
    """
    c = np.full(L // 2 + 1, 2.0)
    c[0] = 1.0
    if L % 2 == 0:
        c[-1] = 1.0
    e = (_dft(L, taps, step, 1, True, np.dtype(np.complex128)) * (c / L)).astype(dtype)
    e.flags.writeable = False
    return e


def _kernel_spectrum(wt, g: Grid, spec, sign: int) -> np.ndarray:
    """Σ_uv wt[u, v, m] · exp(sign·2πi·(a·u·dH/LH + b·v·dW/LW)): (kH, kW, M) real → (F, M) complex.

    sign −1 is ``rfft2`` of the dilated kernel on the grid (W), sign +1 its conjugate (W*).
    """
    kH, kW, M = wt.shape
    (dH, dW) = spec.dilation
    cdt = _complex(wt.dtype)
    Ev = _dft(g.LW, kW, dW, sign, True, cdt)                        # (kW, Lr)
    Eu = _dft(g.LH, kH, dH, sign, False, cdt)                       # (kH, LH)
    s1 = np.matmul(Ev.T, wt.astype(cdt))                            # (Lr, kW) @ (kH, kW, M) → (kH, Lr, M)
    return (Eu.T @ s1.reshape(kH, g.Lr * M)).reshape(g.F, M)        # (LH, kH) @ (kH, Lr·M) → (LH, Lr·M) → (F, M)


def _at_taps(R, g: Grid, spec, dtype) -> np.ndarray:
    """The real signal whose half spectrum is R (F, M), at the taps (u·dH, v·dW): (kH, kW, M)."""
    (kH, kW), (dH, dW) = spec.kernel_size, spec.dilation
    M = R.shape[1]
    cdt = R.dtype
    Eu = _dft(g.LH, kH, dH, 1, False, cdt)                          # (kH, LH)
    Ev = _inverse_half(g.LW, kW, dW, cdt)                           # (kW, Lr)
    t = (Eu @ R.reshape(g.LH, g.Lr * M)).reshape(kH, g.Lr, M)       # (kH, LH) @ (LH, Lr·M) → (kH, Lr, M)
    out = np.matmul(Ev, t).real                                     # (kW, Lr) @ (kH, Lr, M) → (kH, kW, M)
    return (out / g.LH).astype(dtype)


# --------------------------------------------------------------------------- the grid and its adjoint


def _extend(x, spec, shape, g: Grid) -> np.ndarray:
    """The padded input's first Hu × Wu values, zero-extended to the grid: (N, C, LH, LW)."""
    N, C, H, W = x.shape
    buf = np.empty((N, C, g.LH, g.LW), dtype=x.dtype)
    if spec.padding_mode == "zeros":
        (pt, _), (pl, _) = spec.padding
        rows, cols = max(0, min(H, g.Hu - pt)), max(0, min(W, g.Wu - pl))
        return pad_into(buf, x[:, :, :rows, :cols], (pt, pl))
    xp = pad(x, spec)                                               # (N, C, Hp, Wp)
    return pad_into(buf, xp[:, :, :g.Hu, :g.Wu], (0, 0))


def _extend_adjoint(y, spec, shape, g: Grid) -> np.ndarray:
    """Adjoint of :func:`_extend`: (…, LH, LW) → (…, H, W)."""
    lead = y.shape[:-2]
    H, W = shape.H, shape.W
    if spec.padding_mode == "zeros":
        (pt, _), (pl, _) = spec.padding
        rows, cols = max(0, min(H, g.Hu - pt)), max(0, min(W, g.Wu - pl))
        out = np.zeros(lead + (H, W), dtype=y.dtype)
        out[..., :rows, :cols] = y[..., pt:pt + rows, pl:pl + cols]
        return out
    dxp = np.zeros(lead + (g.Hp, g.Wp), dtype=y.dtype)
    dxp[..., :g.Hu, :g.Wu] = y[..., :g.Hu, :g.Wu]
    return fold(dxp, spec, (H, W))


def _spectra(a, G, g: Grid, channel_major: bool = False) -> np.ndarray:
    """Spectra of grid arrays: a (N, G·K, LH, LW) real → (F, G, N, K) complex, frequency-major,
    or (N, G, K, F) channel-major (see Layouts)."""
    N, GK = a.shape[:2]
    K = GK // G
    spec_ = backend().rfft2(a, (g.LH, g.LW)).astype(_complex(a.dtype), copy=False)   # (N, G·K, LH, Lr)
    del a
    if channel_major:
        return spec_.reshape(N, G, K, g.F)                          # (N, G·K, LH, Lr) → (N, G, K, F) view
    out = np.empty((g.F, G, N, K), dtype=spec_.dtype)
    _tiled_copy(out, spec_.reshape(N, G, K, g.F).transpose(3, 1, 0, 2), axis=0)   # (N, G, K, F) → (F, G, N, K)
    return out


def _to_grid(Y, g: Grid, dtype, channel_major: bool = False) -> np.ndarray:
    """Inverse of :func:`_spectra`: Y (F, G, N, K), or (N, G, K, F) channel-major, complex →
    (N, G, K, LH, LW) real.  Y is scratch: the transform may overwrite it."""
    if channel_major:
        Yt = Y
        N, G, K, F = Y.shape
    else:
        F, G, N, K = Y.shape
        Yt = np.empty((N, G, K, F), dtype=Y.dtype)
        _tiled_copy(Yt, Y.transpose(2, 1, 3, 0), axis=3)            # (F, G, N, K) → (N, G, K, F)
    del Y
    y = backend().irfft2(Yt.reshape(N, G, K, g.LH, g.Lr), (g.LH, g.LW))   # (N, G, K, LH, LW)
    return y.astype(dtype, copy=False)


TILE_FREQUENCIES = 64


def _tiled_copy(dst, src, axis: int) -> None:
    """``dst[...] = src`` in tiles of TILE_FREQUENCIES along the frequency ``axis``.

    A transposing copy between the frequency-major and channel-major layouts reads one of them
    with a large stride; in tiles, the lines it touches stay in cache (measured: the 7×7/2 stem's
    (F, 1, 8, 32) → (8, 1, 32, F) complex64 copy took 74 ms whole and 22 ms in tiles of 64).
    """
    index = [slice(None)] * dst.ndim
    for f0 in range(0, dst.shape[axis], TILE_FREQUENCIES):
        index[axis] = slice(f0, f0 + TILE_FREQUENCIES)
        dst[tuple(index)] = src[tuple(index)]


# --------------------------------------------------------------------------- products and blocks


SPLIT_FROM = 1 << 14


def _product(a, b) -> np.ndarray:
    """a (F, G, n, k) @ b (F, G, k, m) → (F, G, n, m).

    NumPy's matmul calls BLAS once per frequency, and BLAS runs such small products on one
    thread, so from ``SPLIT_FROM`` multiply-adds per frequency the frequencies are split over
    the threads (measured, complex64, 2 cores: (8×64) @ (64×64) at 2112 frequencies 6.4 against
    12.3 ms; (8×16) @ (16×16) at 3280, 1.6 against 1.5 ms; (8×128) @ (128×128) at 840, 14.8
    against 15.6 ms).  With k = 1 (grad_weight of one sample, grad_input of one output channel
    per group) it is an outer product per frequency, and with n = m = 1 (a forward of one sample
    in blocks of one channel) a dot product, both run as NumPy elementwise operations.
    """
    F, G, n, k = a.shape
    m = b.shape[-1]
    if k == 1:
        return a * b                                                # (F, G, n, 1) * (F, G, 1, m)
    if n == 1 and m == 1:
        return np.einsum("fgik,fgkj->fgij", a, b)
    parts = min(get_num_threads(), F)
    if parts <= 1 or G * n * k * m < SPLIT_FROM:
        return np.matmul(a, b)
    out = np.empty((F, G, n, m), dtype=np.result_type(a, b))
    edges = [F * i // parts for i in range(parts + 1)]

    def run(i):
        s = slice(edges[i], edges[i + 1])
        np.matmul(a[s], b[s], out=out[s])
    parallel_map(run, range(parts))
    return out


def _blocks(total: int, fixed: int, per_channel: int) -> list[slice]:
    """Blocks of channels (per group) as large as the workspace limit allows (at least one)."""
    room = get_workspace_limit() - fixed
    size = max(1, min(total, room // max(per_channel, 1)))
    return [slice(c0, min(total, c0 + size)) for c0 in range(0, total, size)]


def _bytes(shape, g: Grid, itemsize: int) -> dict:
    """{pass: (fixed bytes, bytes per channel of a block)} of a batch slice (see :func:`workspace`)."""
    N, C, O, G = shape.N, shape.C, shape.out_channels, shape.groups
    Cg, Og = shape.in_per_group, shape.out_per_group
    r, c = itemsize, 2 * itemsize
    plane, F = g.LH * g.LW, g.F
    x, out = N * C * shape.H * shape.W * r, N * O * shape.H_out * shape.W_out * r
    padded = N * C * g.Hp * g.Wp * r
    # the extended grid and its spectrum, then the spectrum and its frequency-major copy
    spectra_x = max(N * C * (plane * r + F * c), 2 * N * C * F * c)
    spectra_g = max(N * O * (plane * r + F * c), 2 * N * O * F * c)
    return {
        # per output channel: its kernel spectrum and the first DFT stage, the product and its
        # transposed copy, its grid
        "forward": (padded + spectra_x + out, G * (2 * F * Cg * c + 2 * F * N * c + N * plane * r)),
        # per input channel: the same, and the padded gradient and its fold
        "grad_input": (spectra_g + x, G * (2 * F * Og * c + 2 * F * N * c + N * plane * r
                                           + 2 * N * g.Hp * g.Wp * r)),
        # grad_out's spectrum is kept while the input's is made; with both gradients at once the
        # input gradient is held too (x); per output channel: the product and the first DFT stage
        "grad_weight": (max(spectra_g, N * O * F * c + padded + spectra_x) + x, G * 2 * F * Cg * c),
    }


def workspace(pass_, spec, shape, itemsize):
    """Scratch bytes of a pass with blocks of one channel per group (outputs included)."""
    g = grid(spec, shape)
    fixed, per = _bytes(shape, g, itemsize)[pass_]
    return fixed + per


# --------------------------------------------------------------------------- the three passes


def _weight_taps(w, shape, order) -> np.ndarray:
    """w (C_out, C/G, kH, kW) → (kH, kW, G, a, b) with (a, b) = (C/G, C_out/G) for order "io",
    (C_out/G, C/G) for "oi"."""
    G, Og, Cg = shape.groups, shape.out_per_group, shape.in_per_group
    w5 = w.reshape(G, Og, Cg, *w.shape[2:])                          # (G, C_out/G, C/G, kH, kW)
    perm = (3, 4, 0, 2, 1) if order == "io" else (3, 4, 0, 1, 2)
    return np.ascontiguousarray(w5.transpose(perm))                 # (kH, kW, G, ·, ·)


def forward(x, w, b, spec, shape, cache=None):
    N, O, G, Og, Cg = shape.N, shape.out_channels, shape.groups, shape.out_per_group, shape.in_per_group
    out = np.empty((N, O, shape.H_out, shape.W_out), dtype=x.dtype)
    if N == 0:
        return out
    g = grid(spec, shape)
    (sH, sW), (kH, kW) = spec.stride, spec.kernel_size
    cm = Cg == 1                                                    # channel-major (see Layouts)
    X = _spectra(_extend(x, spec, shape, g), G, g, cm)              # (F, G, N, C/G), or (N, G, 1, F)
    fixed, per = _bytes(shape, g, x.itemsize)["forward"]
    wt = _weight_taps(w, shape, "io")                               # (kH, kW, G, C/G, C_out/G)
    out5 = out.reshape(N, G, Og, shape.H_out, shape.W_out)          # (N, G, C_out/G, H_out, W_out) view
    for blk in _blocks(Og, fixed, per):
        ob = blk.stop - blk.start
        key = (g, blk.start, blk.stop)
        K = None if cache is None else cache.get(key)
        if K is None:
            taps = np.ascontiguousarray(wt[..., blk]).reshape(kH, kW, G * Cg * ob)   # (kH, kW, G·C/G·ob)
            K = _kernel_spectrum(taps, g, spec, +1)                 # W*: (F, G·C/G·ob)
            # (F, G·ob) → (G, ob, F) channel-major; (F, G·C/G·ob) → (F, G, C/G, ob)
            K = np.ascontiguousarray(K.T).reshape(G, ob, g.F) if cm else K.reshape(g.F, G, Cg, ob)
            if cache is not None and ob == Og:
                cache.clear()
                cache[key] = K
        if cm:
            Y = X * K                                               # (N, G, 1, F) * (G, ob, F) → (N, G, ob, F)
        else:
            Y = _product(X, K)                                      # (F, G, N, C/G) @ (F, G, C/G, ob) → (F, G, N, ob)
        del K
        y = _to_grid(Y, g, x.dtype, cm)                             # (N, G, ob, LH, LW)
        y = y[..., :g.Hs:sH, :g.Ws:sW]                              # (N, G, ob, H_out, W_out) view
        if b is None:
            out5[:, :, blk] = y
        else:
            np.add(y, b.reshape(G, Og)[:, blk, None, None], out=out5[:, :, blk])     # (C_out,) → bias (G, ob, 1, 1)
        del y
    return out


def prepared_forward(w):
    """``forward`` keeping the kernel spectrum between batch slices (when it is one block)."""
    cache: dict = {}
    return lambda x, b, spec, shape: forward(x, w, b, spec, shape, cache=cache)


def _grad_spectra(grad_out, spec, shape, g: Grid, channel_major: bool) -> np.ndarray:
    """grad_out on the stride-1 grid (zeros between strided outputs), transformed:
    (F, G, N, C_out/G), or (N, G, C_out/G, F) channel-major."""
    N, O = grad_out.shape[:2]
    (sH, sW) = spec.stride
    buf = np.zeros((N, O, g.LH, g.LW), dtype=grad_out.dtype)
    buf[:, :, :g.Hs:sH, :g.Ws:sW] = grad_out
    return _spectra(buf, shape.groups, g, channel_major)


def backward(grad_out, x, w, spec, shape, mask):
    """(∂L/∂x or None, ∂L/∂w or None) as ``mask = (input, weight)`` asks; grad_out's spectrum is
    computed once for both."""
    want_dx, want_dw = mask
    N, C, G, Og, Cg = shape.N, shape.C, shape.groups, shape.out_per_group, shape.in_per_group
    (kH, kW) = spec.kernel_size
    dtype = grad_out.dtype
    dx = np.zeros((N, C, shape.H, shape.W), dtype=dtype) if want_dx else None
    dw = np.zeros((shape.out_channels, Cg, kH, kW), dtype=dtype) if want_dw else None
    if N == 0:
        return dx, dw
    g = grid(spec, shape)
    sizes = _bytes(shape, g, dtype.itemsize)
    cm = Cg == 1                                                    # channel-major (see Layouts)
    Gs = _grad_spectra(grad_out, spec, shape, g, cm)                # (F, G, N, C_out/G), or (N, G, C_out/G, F)
    if want_dx:
        wt = _weight_taps(w, shape, "oi")                           # (kH, kW, G, C_out/G, C/G)
        dx5 = dx.reshape(N, G, Cg, shape.H, shape.W)                # (N, C, H, W) → (N, G, C/G, H, W) view
        for blk in _blocks(Cg, *sizes["grad_input"]):
            cb = blk.stop - blk.start
            taps = np.ascontiguousarray(wt[..., blk]).reshape(kH, kW, G * Og * cb)  # (kH, kW, G·C_out/G·cb)
            K = _kernel_spectrum(taps, g, spec, -1)                 # W: (F, G·C_out/G·cb)
            if cm:
                K = np.ascontiguousarray(K.T).reshape(G, Og, g.F)   # (F, G·C_out/G) → (G, C_out/G, F)
                if Og == 1:
                    D = Gs * K                                      # (N, G, 1, F) * (G, 1, F) → (N, G, 1, F)
                else:
                    D = np.einsum("ngof,gof->ngf", Gs, K)[:, :, None]   # Σ_o: (N, G, F) → (N, G, 1, F)
            else:
                # (F, G, N, C_out/G) @ (F, G, C_out/G, cb) → (F, G, N, cb)
                D = _product(Gs, K.reshape(g.F, G, Og, cb))
            del K
            dx5[:, :, blk] = _extend_adjoint(_to_grid(D, g, dtype, cm), spec, shape, g)  # (N, G, cb, H, W)
    if want_dw:
        X = _spectra(_extend(x, spec, shape, g), G, g, cm)          # (F, G, N, C/G), or (N, G, 1, F)
        np.conjugate(Gs, out=Gs)                                    # G*, in place (Gs is scratch)
        dw5 = dw.reshape(G, Og, Cg, kH, kW)                         # (G, C_out/G, C/G, kH, kW) view
        for blk in _blocks(Og, *sizes["grad_weight"]):
            ob = blk.stop - blk.start
            if cm:
                R = np.einsum("ngof,ngf->gof", Gs[:, :, blk], X[:, :, 0])   # Σ_n G* X: (G, ob, F)
                R = R.reshape(G * ob, g.F).T                        # (G, ob, F) → (G·ob, F) → (F, G·ob) view
            else:
                GsH = Gs[:, :, :, blk].transpose(0, 1, 3, 2)        # (F, G, ob, N) view: Gᴴ
                # (F, G, ob, N) @ (F, G, N, C/G) → (F, G, ob, C/G) → (F, G·ob·C/G)
                R = _product(GsH, X).reshape(g.F, G * ob * Cg)
            taps = _at_taps(R, g, spec, dtype)                      # (kH, kW, G·ob·C/G)
            del R
            # (kH, kW, G·ob·C/G) → (kH, kW, G, ob, C/G) → (G, ob, C/G, kH, kW)
            dw5[:, blk] = taps.reshape(kH, kW, G, ob, Cg).transpose(2, 3, 4, 0, 1)
    return dx, dw
