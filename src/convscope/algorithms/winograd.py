r"""Winograd F(m×m, 3×3) for 3×3, stride-1, dilation-1, ungrouped convolutions.

The minimal-filtering algorithm (Lavin & Gray, 2016) computes an m×m tile of
outputs from an (m+2)×(m+2) tile ``d`` of the padded input and the 3×3 kernel
``g`` with (m+2)² multiplies instead of 9m²::

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A

Summed over input channels, the elementwise product becomes, for each of the
T = (m+2)² transform positions ``t``, one matrix product over channels::

    U[t] = (G g Gᵀ)[t]          (C_out, C_in)       kernel transform
    V[t] = (Bᵀ d B)[t]          (C_in, P)           input transform, P = N · tiles
    M[t] = U[t] @ V[t]          (C_out, P)          one batched GEMM (T, C_out, C_in) @ (T, C_in, P)
    Y    = Aᵀ M A               (C_out, P, m, m)    output transform

Each 2-D transform ``Xᵀ t X`` is one small matrix product with the Kronecker
matrix ``Xᵀ ⊗ Xᵀ`` applied to the flattened tiles, e.g. V = (Bᵀ⊗Bᵀ) @ D with D
of shape ((m+2)², C_in·P), so all four steps run in BLAS.

F(4×4, 3×3) (points 0, ±1, ±2; T = 36) needs 36 multiplies per 16 outputs,
4× fewer than direct convolution's 144; F(2×2, 3×3) (points 0, ±1; T = 16)
2.25× fewer.  ``TILE`` selects m (4 by default).

Padding and sizes.  The input is padded first (every padding mode, through
:func:`convscope.padding.pad`), then zero-extended at the bottom/right to
whole tiles; outputs of partial tiles are cropped.

Grad-weight.  The output is linear in the kernel, so its adjoint gives
∂L/∂w = (G⊗G)ᵀ · Σ_tiles [(A⊗A) dy-tile] ⊙ V, the sum over tiles and samples
inside one batched product (:func:`grad_weight`).

Grad-input.  For stride 1 the gradient of the padded input is the *full*
correlation of grad_out with the kernel rotated by 180° and its channel axes
swapped::

    ∂L/∂x̃[n, c, p, q] = Σ_o Σ_uv grad_out[n, o, p − u, q − v] · w[o, c, u, v]
                      = corr(pad₂(grad_out), w[:, :, ::-1, ::-1]ᵀ)[n, c, p, q]

which is again a 3×3 stride-1 correlation (input grad_out zero-padded by 2 on
every side, weight (C_in, C_out, 3, 3)), computed by the same routine, followed
by :func:`convscope.padding.fold`.

Accuracy.  The transforms' coefficients (up to 8 in Aᵀ, 5 in Bᵀ, 1/24 in G)
amplify rounding: in float32, F(4×4, 3×3)'s output differs from the exact
result by a relative L2 error ‖y − y_exact‖/‖y_exact‖ of about 1e-6 to 3e-6 on
random data (direct im2col: about 3e-7); max |error| is about 1e-5 of max |y|
on ResNet-50's layers (measured 5e-6 to 1e-5), ten times below the tests'
float32 tolerance.  float64 results agree with direct convolution
to about 1e-15.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..padding import fold, pad
from ..threads import get_num_threads, parallel_map

ERROR = "global"    # rounding error relative to the call's largest values, and NaN/Inf spread;
                    # a non-finite call is recomputed on a local path (see convscope.algorithms)


def needs(spec, shape):
    """None for a 3×3 kernel, stride 1, dilation 1 and groups 1, else what is wrong."""
    wrong = []
    if spec.kernel_size != (3, 3):
        wrong.append(f"kernel_size={spec.kernel_size}")
    if spec.stride != (1, 1):
        wrong.append(f"stride={spec.stride}")
    if spec.dilation != (1, 1):
        wrong.append(f"dilation={spec.dilation}")
    if spec.groups != 1:
        wrong.append(f"groups={spec.groups}")
    if wrong:
        return "a 3×3 kernel, stride 1, dilation 1 and groups 1, got " + ", ".join(wrong)
    return None


TILE = 4

_BT = {
    4: [[4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1]],
    2: [[1, 0, -1, 0],
        [0, 1, 1, 0],
        [0, -1, 1, 0],
        [0, 1, 0, -1]],
}
_G = {
    4: [[1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1]],
    2: [[1, 0, 0],
        [1 / 2, 1 / 2, 1 / 2],
        [1 / 2, -1 / 2, 1 / 2],
        [0, 0, 1]],
}
_AT = {
    4: [[1, 1, 1, 1, 1, 0],
        [0, 1, -1, 2, -2, 0],
        [0, 1, 1, 4, 4, 0],
        [0, 1, -1, 8, -8, 1]],
    2: [[1, 1, 1, 0],
        [0, 1, -1, -1]],
}

_cache: dict = {}


def matrices(m: int, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kronecker transform matrices (Bᵀ⊗Bᵀ (T, T), G⊗G (T, 9), Aᵀ⊗Aᵀ (m², T)) in ``dtype``."""
    key = (m, np.dtype(dtype))
    if key not in _cache:
        BT, G, AT = (np.array(a[m], dtype=np.float64) for a in (_BT, _G, _AT))
        _cache[key] = tuple(np.ascontiguousarray(np.kron(a, a), dtype=dtype) for a in (BT, G, AT))
    return _cache[key]


def transform_weight(w, m=None):
    """U = G g Gᵀ for every (output, input) channel pair: (O, C, 3, 3) → (T, O, C)."""
    m = TILE if m is None else m
    O, C = w.shape[:2]
    GG = matrices(m, w.dtype)[1]
    return (GG @ w.reshape(O * C, 9).T).reshape((m + 2) ** 2, O, C)   # (T, 9) @ (9, O·C) → (T, O, C)


def _halves(n, parts):
    """``parts`` contiguous slices covering range(n) (fewer when n is small)."""
    parts = max(1, min(parts, n))
    edges = [n * i // parts for i in range(parts + 1)]
    return [slice(edges[i], edges[i + 1]) for i in range(parts)]


def _input_transform(x, top, bottom, left, right, m):
    """V = (Bᵀ⊗Bᵀ) @ tiles of x zero-padded by (top, bottom, left, right): (T, C, N·th·tw).

    Also returns (H_out, W_out, th, tw) of the 3×3 correlation on that padded input.
    """
    a = m + 2
    N, C, H, W = x.shape
    Ho, Wo = H + top + bottom - 2, W + left + right - 2
    th, tw = -(-Ho // m), -(-Wo // m)                               # tiles down and across
    P = N * th * tw
    BB = matrices(m, x.dtype)[0]
    # the zero-padded input, extended to whole tiles: (N, C, th·m + 2, tw·m + 2)
    Hz, Wz = th * m + 2, tw * m + 2
    xz = np.empty((N, C, Hz, Wz), dtype=x.dtype)
    s = xz.strides
    tiles = as_strided(xz, (N, C, th, tw, a, a), (s[0], s[1], m * s[2], m * s[3], s[2], s[3]))
    D = np.empty((C, N, th, tw, a, a), dtype=x.dtype)
    xz[:, :, :top] = 0
    xz[:, :, top + H:] = 0
    xz[:, :, top:top + H, :left] = 0
    xz[:, :, top:top + H, left + W:] = 0
    xz[:, :, top:top + H, left:left + W] = x
    np.copyto(D, tiles.transpose(1, 0, 2, 3, 4, 5))                 # (N, C, th, tw, a, a) → (C, N, th, tw, a, a)
    del xz, tiles
    V = (BB @ D.reshape(C * P, a * a).T).reshape(a * a, C, P)       # (T, T) @ (T, C·P) view → (T, C, P)
    return V, (Ho, Wo, th, tw)


def correlate3x3(x, w, top, bottom, left, right, bias=None, m=None, U=None):
    """3×3 stride-1 correlation of x (N, C, H, W) zero-padded by (top, bottom, left, right) with w (O, C, 3, 3).

    Returns (N, O, H + top + bottom − 2, W + left + right − 2), plus ``bias`` (O,) if given.
    ``U`` is :func:`transform_weight` of ``w``, when already computed.  The products run in
    BLAS; the output scatter is split over output channels and run on
    :func:`convscope.threads.parallel_map`.  The tile gather stays on one thread: split in
    two it ran slower, its threads competing with BLAS's still-spinning workers.
    """
    m = TILE if m is None else m
    a = m + 2
    N = x.shape[0]
    O = w.shape[0]
    V, (Ho, Wo, th, tw) = _input_transform(x, top, bottom, left, right, m)   # (T, C, P)
    P = N * th * tw
    _, _, AA = matrices(m, x.dtype)
    parts = get_num_threads()
    if U is None:
        U = transform_weight(w, m)                                  # (T, O, C)
    M = np.matmul(U, V)                                             # (T, O, C) @ (T, C, P) → (T, O, P)
    del V, U
    Y = (M.reshape(a * a, O * P).T @ AA.T).reshape(O, N, th, tw, m, m)  # (O·P, T) view @ (T, m²) → (O, N, th, tw, m, m)
    del M
    if bias is not None:
        Y.reshape(O, P * m * m)[...] += bias[:, None]               # (O, N, th, tw, m, m) → (O, P·m²): long rows
    whole = th * m == Ho and tw * m == Wo
    full = np.empty((N, O, th, m, tw, m), dtype=x.dtype)
    out = full.reshape(N, O, th * m, tw * m) if whole else np.empty((N, O, Ho, Wo), dtype=x.dtype)

    def scatter(os_):
        src = Y[os_].transpose(1, 0, 2, 4, 3, 5)                    # (o, N, th, tw, m, m) → (N, o, th, m, tw, m)
        dst = full[:, os_]
        np.copyto(dst, src)
        if not whole:
            np.copyto(out[:, os_], dst.reshape(N, os_.stop - os_.start, th * m, tw * m)[:, :, :Ho, :Wo])

    parallel_map(scatter, _halves(O, parts))
    return out


def forward(x, w, b, spec, shape, U=None):
    if spec.padding_mode == "zeros":
        (pt, pb), (pl, pr) = spec.padding
        return correlate3x3(x, w, pt, pb, pl, pr, bias=b, U=U)
    return correlate3x3(pad(x, spec), w, 0, 0, 0, 0, bias=b, U=U)


def prepared_forward(w):
    """``forward`` with the kernel transform computed once, for running on many slices."""
    U = transform_weight(w)
    return lambda x, b, spec, shape: forward(x, w, b, spec, shape, U=U)


def grad_input(grad_out, w, spec, shape):
    wr = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))   # (C_out, C, 3, 3) → (C, C_out, 3, 3)
    dxp = correlate3x3(grad_out, wr, 2, 2, 2, 2)                    # (N, C, Hp, Wp)
    (pt, pb), (pl, pr) = spec.padding
    if spec.padding_mode == "zeros":
        if pt == pb == pl == pr == 0:
            return dxp
        return np.ascontiguousarray(dxp[:, :, pt:pt + shape.H, pl:pl + shape.W])
    return fold(dxp, spec, (shape.H, shape.W))


def grad_weight(grad_out, x, spec, shape, m=None):
    """∂L/∂w by the adjoint of the tile formula: with Z = (A⊗A) dy-tiles, (T, C_out, P),

        ∂L/∂w = (G⊗G)ᵀ · Σ_tiles Z[t] Vᵀ[t]

    the sum over tiles (and samples) running inside one batched product
    (T, C_out, P) @ (T, P, C_in).  Outputs beyond H_out, W_out in partial tiles get zero
    gradient, so they contribute nothing.
    """
    m = TILE if m is None else m
    a = m + 2
    if spec.padding_mode == "zeros":
        (pt, pb), (pl, pr) = spec.padding
        V, (Ho, Wo, th, tw) = _input_transform(x, pt, pb, pl, pr, m)
    else:
        V, (Ho, Wo, th, tw) = _input_transform(pad(x, spec), 0, 0, 0, 0, m)   # (T, C, P)
    N, O = grad_out.shape[:2]
    P = N * th * tw
    _, GG, AA = matrices(m, grad_out.dtype)
    gt = np.zeros((O, N, th, m, tw, m), dtype=grad_out.dtype)
    # (N, O, Ho, Wo) → (O, N, Ho, Wo) into whole tiles
    gt.reshape(O, N, th * m, tw * m)[:, :, :Ho, :Wo] = grad_out.transpose(1, 0, 2, 3)
    g2 = np.empty((O, N, th, tw, m, m), dtype=grad_out.dtype)
    np.copyto(g2, gt.transpose(0, 1, 2, 4, 3, 5))                   # (O, N, th, m, tw, m) → (O, N, th, tw, m, m)
    del gt
    Z = (AA.T @ g2.reshape(O * P, m * m).T).reshape(a * a, O, P)    # (T, m²) @ (m², O·P) view → (T, O, P)
    del g2
    dU = np.matmul(Z, V.transpose(0, 2, 1))                         # (T, O, P) @ (T, P, C) → (T, O, C)
    del Z, V
    C = dU.shape[2]
    dw9 = GG.T @ dU.reshape(a * a, O * C)                           # (9, T) @ (T, O·C) → (9, O·C)
    return np.ascontiguousarray(dw9.T).reshape(O, C, 3, 3)          # (O·C, 9) → (O, C, 3, 3)


def workspace(pass_, spec, shape, itemsize, m=None):
    """Scratch bytes: the tiled input, its transform, the products, the output transform, the result."""
    m = TILE if m is None else m
    T = (m + 2) ** 2
    (pt, pb), (pl, pr) = spec.padding
    Hp, Wp = shape.H + pt + pb, shape.W + pl + pr
    th, tw = -(-shape.H_out // m), -(-shape.W_out // m)
    P = shape.N * th * tw
    if pass_ == "grad_weight":
        cin, cout = shape.C, shape.out_channels
        xz = shape.N * cin * (th * m + 2) * (tw * m + 2) + (0 if spec.padding_mode == "zeros" else shape.N * cin * Hp * Wp)
        total = max(xz + T * cin * P, 2 * T * cin * P) + T * cin * P + 2 * m * m * cout * P + T * cout * P \
            + 2 * T * cout * cin
        return total * itemsize
    if pass_ == "forward":
        cin, cout = shape.C, shape.out_channels
        xz = shape.N * cin * (th * m + 2) * (tw * m + 2) + (0 if spec.padding_mode == "zeros" else shape.N * cin * Hp * Wp)
    else:
        cin, cout = shape.out_channels, shape.C
        xz = shape.N * cin * (th * m + 2) * (tw * m + 2) + shape.N * cout * Hp * Wp
    total = max(xz + T * cin * P, 2 * T * cin * P, T * cin * P + T * cout * P + T * cin * cout) \
        + T * cout * P + m * m * cout * P + 2 * shape.N * cout * th * m * tw * m
    return total * itemsize
