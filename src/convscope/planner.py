"""Which implementation computes each pass of a convolution: one table.

A convolution has three passes, and each is planned on its own: ``forward``,
``grad_input`` (∂L/∂x) and ``grad_weight`` (∂L/∂w).  With ``algorithm=None``
(the default everywhere) the first row of :data:`TABLE` whose condition holds
names the implementation of each pass:

==========  ==============================================  ===========  ===========  ===========
row         condition                                       forward      grad_input   grad_weight
==========  ==============================================  ===========  ===========  ===========
1x1         1×1 kernel (any stride, padding, groups)        pointwise    pointwise    pointwise
fft-dw      one input channel per group, groups > 1,        fft          fft          fft
            kH·kW ≥ 49, stride 1, dilation 1
dw          one input channel per group, groups > 1         depthwise    depthwise    depthwise
wino        3×3, stride 1, dilation 1, groups 1,            winograd     winograd     winograd
            C_in ≥ 64 and C_out ≥ 64,
            100 ≤ H_out·W_out < 1024
wino-large  the same with H_out·W_out ≥ 1024                winograd     winograd     gemm
fft         kH·kW ≥ 25, stride ≤ 2, dilation 1, and the     fft          fft          fft
            cost model below estimates FFT's three passes
            faster than gemm's
else        everything else                                 gemm         gemm         gemm
==========  ==============================================  ===========  ===========  ===========

The thresholds come from timing each pass of each implementation against the
others on the project's machine (2 cores, AVX-512, OpenBLAS; batch 8, float32;
see ``bench/``):

* Winograd F(4×4, 3×3) beat im2col on ResNet-50's 3×3 stride-1 layers with 64
  to 256 channels at 56², 28² and 14² (forward 15.2 vs 17.9 ms, 9.4 vs 10.8 ms,
  7.9 vs 8.9 ms; grad_input 15.9 vs 22.8 ms at 56²), lost at 7² with 512
  channels (10.0 vs 8.6 ms: too few tiles for its products, a 36× larger
  kernel transform) and with 32 channels (6.9 vs 6.1 ms: the transforms cost
  more than the products they save).  Its weight gradient (the adjoint of the
  tile formula) beat im2col at 28² and 14² (8.6 vs 11.2 ms, 8.3 vs 9.4 ms) but
  not at 56² (17.0 vs 16.1 ms).
* The depthwise path beat gemm (grouped im2col) on MobileNetV2's depthwise
  layers: forward 11 vs 28 ms, grad_input 16 vs 57 ms, grad_weight 10 vs 26 ms
  at 32×112²; 3.6 vs 3.7, 4.8 vs 12.3, 2.1 vs 3.7 ms at 960×7².
* FFT (:mod:`convscope.algorithms.fft`, ``scipy.fft`` with 2 workers) costs
  per pass about the same whatever the kernel's size, im2col's cost grows with
  kH·kW.  Timed against gemm (each pass, float32, interleaved, median of 3) on
  229 dense layers with 5×5 to 15×15 kernels, 8 to 256 channels each way,
  images 14² to 112², batch 1 and 8, stride 1 and 2, and 24 with 3×3 kernels:
  FFT's three passes took 137 against 255 ms (8×64×56², 7×7), 22 against
  200 ms (8×16×56², 15×15), 7.6 against 33 ms (8×16×28², 11×11); they lost with
  many channels on small images, where the kernel's spectrum (C·C_out·F
  complex values for F frequencies) costs more than its reuse saves: 237 against
  191 ms (8×256×14², 7×7), 102 against 92 ms (8×128×28², 5×5), 71 against
  49 ms (1×64×56², 7×7: one sample), and at every 3×3 layer (1.1 to 26 times
  slower per pass).  For the 7×7/2 stem 3→64 at 224² the three passes took 870 against
  56 ms: it computes the stride-1 output and keeps a quarter of it.
  So the row *fft* compares two cost models fitted to those timings
  (least squares on relative error, milliseconds for all three passes)::

      fft  = 0.55 + 2.65e-6·K·F + 4.4e-7·K·F·kH + 6.3e-7·N·K·F + 9.1e-7·N·(C + C_out)·LH·LW·log₂(LH·LW)
      gemm = 0.29 + 2.9e-8·N·K·kH·kW·H_out·W_out + 2.13e-6·N·C·kH·kW·H_out·W_out

  with K = C·C_out/groups, the FFT grid LH × LW and F = LH·(LW/2 + 1) its
  frequencies (:func:`convscope.algorithms.fft.grid`); with ``numpy.fft`` (no
  SciPy) the transform term is taken ``NUMPY_FFT_FACTOR`` = 4 times (its
  rfft2 + irfft2 measured 2.4 to 4.4 times slower than scipy.fft's with 2
  workers).  The comparison picked the faster implementation for 240 of the
  253 layers; where it picked the slower one, that one took at most 1.24× the
  faster's time (8×256×14², 7×7), except on two layers of 1 to 2 ms (1.42×
  and 1.43×).  Three passes, not one, because a layer is trained: of the 229
  layers with kernels from 5×5, for the forward alone it picked the slower one
  for 17 (at worst 1.6×), for grad_input 30 (1.97×), for grad_weight 13
  (1.9×).  Grouped layers (not in the fit) gain more from FFT than dense
  ones: 85 against 246 ms (8×64×56², 7×7, 4 groups).
* For depthwise layers (row *fft-dw*) FFT needs no transposes (see the fft
  module's Layouts).  It beat the depthwise path in every pass of every layer
  measured from 9×9 on (32 to 512 channels, 14² to 112², batch 1 and 8; 48
  layers): e.g. three passes in 32 against 88 ms at 8×128×28², 9×9, 25 against
  382 ms at 8×32×28², 31×31, 41 against 337 ms at 1×128×56², 31×31.  At 7×7 it
  won 19 of 21 layers (109 against 175 ms at 8×128×56²; lost 65 against 63 ms
  at 1×128×112² and 309 against 286 ms at 1×512×112²), at 5×5 10 of 23 (but
  up to 1.9× slower: 319 against 170 ms at 1×512×112²), at 3×3 2 of 24.

The gemm path also has two layout decisions, planned here with the rest:

* *batch folded* (one product of width N·H_out·W_out instead of N of width
  H_out·W_out) when ``H_out·W_out < FOLD_BELOW`` for kernels larger than 1×1;
  the pointwise path folds its backward when ``H_out·W_out <
  FOLD_BELOW_1X1_BACKWARD`` and its forward when ``< FOLD_BELOW_1X1_FORWARD``;
* *stride phases* (split the padded input into its sH·sW phases first) when
  the stride exceeds 1, dilation is 1 and at least ``MIN_TAPS_PER_PHASE`` taps
  read each phase (the 7×7/2 stem: 49 taps, 4 phases);
* *batch slices*: for kernels larger than 1×1 with ``H_out·W_out ≥
  SLICE_FROM_PIXELS`` the batch is cut into slices whose scratch memory is at
  most ``SLICE_BYTES`` (or the workspace limit, if lower), so that the im2col
  matrix of a slice is still in cache when the product reads it: the 7×7/2
  stem's forward went from 25.5 to 18.7 ms and its forward + backward from 76
  to 62 ms, the 3×3/2 at 56² from 59 to 53 ms.  Smaller images lose by it (the 3×3 at 7², batch folded, 41 → 51 ms
  with 16 MiB slices), and so do 1×1 kernels, which copy little.

Precision.  Winograd and FFT mix values before summing them (across a 4×4 tile,
across a whole image), so their rounding error is relative to the call's largest
values rather than to the values an output reads: up to about 1e-7 × max |output|
in float32 (1e-16 in float64), at outputs that never read the largest value too.
With :func:`convscope.set_conv_precision` ``("highest")`` (or inside
``conv_precision("highest")``) a pass whose row names one of them (their module
says ``ERROR = "global"``) takes the first row below that holds and names a path
with local error (``"fft-dw"`` → depthwise, ``"wino"``/``"fft"`` → gemm), and the
reason says so.  The default, ``"high"``, keeps the table as it is
(:mod:`convscope.precision` says why).  NaN and ±Inf are handled whatever the
setting (:mod:`convscope.algorithms`).

An explicit ``algorithm='name'`` forces that implementation for every pass it
implements; a pass it did not implement would use the automatic choice
(today every implementation has all three passes).  A configuration the implementation cannot compute raises
ValueError naming ``algorithm``, the rule and the offending value.

:func:`plan` shows the choice and the reason for each pass without computing.
"""
from __future__ import annotations

from typing import NamedTuple

PASSES = ("forward", "grad_input", "grad_weight")

# gemm layouts, measured on ResNet-50's layers (batch 8, 2 cores)
FOLD_BELOW = 1024
FOLD_BELOW_1X1_BACKWARD = 256
FOLD_BELOW_1X1_FORWARD = 100
MIN_TAPS_PER_PHASE = 4
SLICE_BYTES = 24 << 20
SLICE_FROM_PIXELS = 196

# Winograd: where it measured faster than gemm
WINOGRAD_MIN_CHANNELS = 64
WINOGRAD_MIN_OUTPUT_PIXELS = 100
WINOGRAD_WEIGHT_BELOW_PIXELS = 1024

# FFT: where it measured faster than gemm (dense) or the depthwise path
FFT_MIN_TAPS = 25
FFT_MAX_STRIDE = 2
FFT_DEPTHWISE_MIN_TAPS = 49
# the cost models of the three passes, milliseconds (fitted; see the module docstring)
FFT_MS = dict(call=0.55, kernel=2.65e-6, kernel_tap=4.4e-7, product=6.3e-7, transform=9.1e-7)
GEMM_MS = dict(call=0.29, mac=2.9e-8, copy=2.13e-6)
NUMPY_FFT_FACTOR = 4


# --------------------------------------------------------------------------- what each path can serve


def _needs_pointwise(spec, shape):
    if spec.kernel_size != (1, 1):
        return f"a 1×1 kernel, got kernel_size={spec.kernel_size}"
    return None


def _needs_depthwise(spec, shape):
    if shape.in_per_group != 1:
        return (f"one input channel per group (groups == in_channels), got in_channels={shape.C} "
                f"and groups={shape.groups}")
    return None


def _needs_winograd(spec, shape):
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


class Capability(NamedTuple):
    passes: tuple          # the passes the implementation has
    needs: object          # (spec, shape) → None if it can serve them, else "what it needs, got what"


CAPABILITIES = {
    "gemm": Capability(PASSES, lambda spec, shape: None),
    "reference": Capability(PASSES, lambda spec, shape: None),
    "pointwise": Capability(PASSES, _needs_pointwise),
    "depthwise": Capability(PASSES, _needs_depthwise),
    "winograd": Capability(PASSES, _needs_winograd),
    "fft": Capability(PASSES, lambda spec, shape: None),
    "ndgemm": Capability(PASSES, lambda spec, shape: None),
}
NAMES = tuple(CAPABILITIES)


# --------------------------------------------------------------------------- the automatic table


def _is_1x1(spec, shape):
    return spec.kernel_size == (1, 1)


def _is_depthwise(spec, shape):
    return shape.groups > 1 and shape.in_per_group == 1


def _wins_winograd(spec, shape):
    return (_needs_winograd(spec, shape) is None
            and shape.C >= WINOGRAD_MIN_CHANNELS and shape.out_channels >= WINOGRAD_MIN_CHANNELS
            and shape.H_out * shape.W_out >= WINOGRAD_MIN_OUTPUT_PIXELS)


def cost_ms(spec, shape) -> tuple[float, float]:
    """(FFT's, gemm's) estimated milliseconds for the three passes (the cost models above)."""
    import math

    from .algorithms import fft

    g = fft.grid(spec, shape)
    N, C, O = shape.N, shape.C, shape.out_channels
    K = C * O / shape.groups
    kH, kW = spec.kernel_size
    taps_out = kH * kW * shape.H_out * shape.W_out
    transform = FFT_MS["transform"] * N * (C + O) * g.LH * g.LW * math.log2(g.LH * g.LW)
    if fft.backend().name != "scipy.fft":
        transform *= NUMPY_FFT_FACTOR
    fft_ms = (FFT_MS["call"] + FFT_MS["kernel"] * K * g.F + FFT_MS["kernel_tap"] * K * g.F * kH
              + FFT_MS["product"] * N * K * g.F + transform)
    gemm_ms = GEMM_MS["call"] + GEMM_MS["mac"] * N * K * taps_out + GEMM_MS["copy"] * N * C * taps_out
    return fft_ms, gemm_ms


def _fft_candidate(spec, shape) -> bool:
    kH, kW = spec.kernel_size
    return (kH * kW >= FFT_MIN_TAPS and max(spec.stride) <= FFT_MAX_STRIDE and spec.dilation == (1, 1)
            and not _is_depthwise(spec, shape))


def _wins_fft(spec, shape) -> bool:
    if not _fft_candidate(spec, shape):
        return False
    fft_ms, gemm_ms = cost_ms(spec, shape)
    return fft_ms < gemm_ms


def _wins_fft_depthwise(spec, shape) -> bool:
    kH, kW = spec.kernel_size
    return (_is_depthwise(spec, shape) and kH * kW >= FFT_DEPTHWISE_MIN_TAPS and spec.stride == (1, 1)
            and spec.dilation == (1, 1))


class Row(NamedTuple):
    name: str
    condition: object      # (spec, shape) → bool
    choice: tuple          # (forward, grad_input, grad_weight)
    why: str


TABLE = (
    Row("1x1", _is_1x1, ("pointwise", "pointwise", "pointwise"),
        "1×1 kernel: a matrix product over channels, no im2col (strided: subsample first)"),
    Row("fft-dw", _wins_fft_depthwise, ("fft", "fft", "fft"),
        f"one input channel per group, kH·kW ≥ {FFT_DEPTHWISE_MIN_TAPS}, stride 1, dilation 1: "
        "FFT, whose cost does not grow with the kernel"),
    Row("dw", _is_depthwise, ("depthwise", "depthwise", "depthwise"),
        "one input channel per group: multiply-adds per tap, vectorised over batch and channels"),
    Row("wino", lambda spec, shape: _wins_winograd(spec, shape)
        and shape.H_out * shape.W_out < WINOGRAD_WEIGHT_BELOW_PIXELS,
        ("winograd", "winograd", "winograd"),
        f"3×3 stride 1 with ≥ {WINOGRAD_MIN_CHANNELS} channels each way and "
        f"{WINOGRAD_MIN_OUTPUT_PIXELS}–{WINOGRAD_WEIGHT_BELOW_PIXELS - 1} output pixels: "
        "Winograd F(4×4, 3×3), 4× fewer multiplies"),
    Row("wino-large", _wins_winograd, ("winograd", "winograd", "gemm"),
        f"3×3 stride 1 with ≥ {WINOGRAD_MIN_CHANNELS} channels each way and ≥ "
        f"{WINOGRAD_WEIGHT_BELOW_PIXELS} output pixels: Winograd F(4×4, 3×3) "
        "(grad_weight: im2col GEMM)"),
    Row("fft", _wins_fft, ("fft", "fft", "fft"),
        f"kH·kW ≥ {FFT_MIN_TAPS}, stride ≤ {FFT_MAX_STRIDE}, dilation 1, and FFT's estimated cost "
        "below im2col's: products per frequency"),
    Row("else", lambda spec, shape: True, ("gemm", "gemm", "gemm"),
        "general case: im2col + GEMM"),
)


# --------------------------------------------------------------------------- gemm layouts


def gemm_folded(spec, shape, backward: bool) -> bool:
    """Whether the gemm / pointwise paths use the batch-folded layout."""
    L = shape.H_out * shape.W_out
    if spec.kernel_size != (1, 1):
        return L < FOLD_BELOW
    return L < (FOLD_BELOW_1X1_BACKWARD if backward else FOLD_BELOW_1X1_FORWARD)


def gemm_phases(spec) -> bool:
    """Whether the gemm path splits the padded input into stride phases."""
    (sH, sW), (dH, dW) = spec.stride, spec.dilation
    kH, kW = spec.kernel_size
    return ((sH > 1 or sW > 1) and dH == dW == 1 and (kH > sH or kW > sW)
            and kH * kW >= MIN_TAPS_PER_PHASE * sH * sW)


def gemm_slice_bytes(spec, shape):
    """The scratch bytes a slice of the batch should stay under on the gemm path (None: no slicing)."""
    if spec.kernel_size == (1, 1) or shape.H_out * shape.W_out < SLICE_FROM_PIXELS:
        return None
    return SLICE_BYTES


def _layout(name, spec, shape, pass_):
    if name == "fft":
        from .algorithms import fft

        g = fft.grid(spec, shape)
        text = f"{fft.describe_backend()}, {g.LH}×{g.LW} grid"
        if _fft_candidate(spec, shape):
            text += "; estimated {:.3g} ms against gemm's {:.3g} ms for the three passes".format(*cost_ms(spec, shape))
        return text
    if name not in ("gemm", "pointwise"):
        return ""
    L = shape.H_out * shape.W_out
    parts = []
    if gemm_folded(spec, shape, pass_ != "forward"):
        parts.append(f"batch folded (H_out·W_out = {L})")
    else:
        parts.append(f"per sample (H_out·W_out = {L})")
    if name == "gemm" and gemm_phases(spec):
        parts.append(f"{spec.stride[0] * spec.stride[1]} stride phases")
    if name == "gemm" and gemm_slice_bytes(spec, shape):
        parts.append(f"batch slices of ≤ {gemm_slice_bytes(spec, shape) >> 20} MiB scratch")
    text = ", ".join(parts)
    if name == "gemm" and _fft_candidate(spec, shape):
        text += "; FFT estimated {:.3g} ms against gemm's {:.3g} ms for the three passes".format(*cost_ms(spec, shape))
    return text


# --------------------------------------------------------------------------- the plan


class Choice(NamedTuple):
    """The implementation of one pass and why it was chosen."""

    algorithm: str
    reason: str


class Plan(NamedTuple):
    """The implementation chosen for each pass of one convolution."""

    forward: Choice
    grad_input: Choice
    grad_weight: Choice

    def __str__(self) -> str:
        width = max(len(p) for p in PASSES)
        return "\n".join(f"{p.ljust(width)}  {getattr(self, p).algorithm:<10} {getattr(self, p).reason}"
                         for p in PASSES)


def check_algorithm(algorithm) -> None:
    """``algorithm`` must be None or a known name (checked before any work)."""
    if algorithm is None or (isinstance(algorithm, str) and algorithm in CAPABILITIES):
        return
    names = ", ".join(["None"] + [repr(n) for n in NAMES])
    raise ValueError(f"algorithm must be one of {names}, got {algorithm!r}")


def choose(spec, shape, algorithm=None) -> Plan:
    """The :class:`Plan` for a validated ``spec`` and ``shape`` (see the module docstring)."""
    check_algorithm(algorithm)
    from .algorithms import ALGORITHMS
    from .precision import get_conv_precision

    if algorithm is not None:
        _check_dims(algorithm, spec)
    if spec.ndim != 2:
        return _choose_nd(spec, algorithm)
    auto = next(row for row in TABLE if row.condition(spec, shape))
    local_only = algorithm is None and get_conv_precision() == "highest"
    choices = []
    for i, pass_ in enumerate(PASSES):
        if algorithm is not None:
            cap = CAPABILITIES[algorithm]
            problem = cap.needs(spec, shape)
            if problem is not None:
                raise ValueError(f"algorithm={algorithm!r} cannot compute this convolution: "
                                 f"it needs {problem}")
            if pass_ in cap.passes:
                name, reason = algorithm, f"forced by algorithm={algorithm!r}"
            else:
                name = auto.choice[i]
                reason = (f"algorithm={algorithm!r} has no {pass_}; automatic choice "
                          f"(row {auto.name!r}: {auto.why})")
        else:
            name, reason = auto.choice[i], f"row {auto.name!r}: {auto.why}"
            if local_only and ALGORITHMS[name].ERROR != "local":
                row = next(r for r in TABLE if r.condition(spec, shape) and ALGORITHMS[r.choice[i]].ERROR == "local")
                name, reason = row.choice[i], (f"row {row.name!r}: {row.why}; conv precision 'highest' keeps to "
                                               f"paths whose error is local (row {auto.name!r} would choose {auto.choice[i]})")
        layout = _layout(name, spec, shape, pass_)
        choices.append(Choice(name, reason + (f"; {layout}" if layout else "")))
    return Plan(*choices)


ND_WHY = "vol2col + GEMM, the fast path over any number of spatial dimensions"


def _check_dims(algorithm, spec) -> None:
    """A forced implementation must compute convolutions of the spec's number of dimensions."""
    from .algorithms import dims

    if spec.ndim not in dims(algorithm):
        served = " and ".join(f"{d}-d" for d in dims(algorithm))
        raise ValueError(f"algorithm={algorithm!r} cannot compute this convolution: it computes {served} "
                         f"convolutions only, got a {spec.ndim}-d one (kernel_size={spec.kernel_size})")


def _choose_nd(spec, algorithm) -> Plan:
    """The plan of a convolution that is not 2-d (1-d convolutions are planned as 2-d ones by the
    functional API): ``ndgemm`` for every pass, or the forced implementation."""
    if algorithm is not None:
        return Plan(*(Choice(algorithm, f"forced by algorithm={algorithm!r}") for _ in PASSES))
    return Plan(*(Choice("ndgemm", f"{spec.ndim}-d convolution: {ND_WHY}") for _ in PASSES))


def plan(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
         algorithm=None) -> Plan:
    """What ``conv2d`` and ``conv2d_backward`` (or ``conv1d``/``conv3d``'s) would run for these shapes, and why.

    ``input_shape`` is (N, C, H, W) or (C, H, W), ``weight_shape`` (C_out, C/groups, kH, kW);
    a 3-D weight (C_out, C/groups, k) plans a 1-d convolution (as the 2-d one of height 1 it
    runs as), a 5-D weight a 3-d one;
    the other parameters mean what they mean in :func:`convscope.conv2d`.  Nothing is computed.

    >>> import convscope
    >>> p = convscope.plan((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    >>> p.forward.algorithm, p.grad_input.algorithm, p.grad_weight.algorithm
    ('winograd', 'winograd', 'gemm')
    >>> convscope.plan((8, 32, 112, 112), (32, 1, 3, 3), padding=1, groups=32).forward.algorithm
    'depthwise'
    """
    from .spec import ConvCall, check_input_ndim, check_shapes, check_weight_shape, lift, make_spec

    check_algorithm(algorithm)
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    ndim = len(weight_shape) - 2 if len(weight_shape) in (3, 5) else 2   # a 3-D weight is 1-d's, 5-D 3-d's
    check_input_ndim(input_shape, ndim=ndim)
    check_weight_shape(weight_shape, ndim=ndim)
    spec = make_spec(weight_shape[2:], stride, padding, dilation, groups, padding_mode, ndim=ndim)
    shape = check_shapes(spec, input_shape, weight_shape)
    if ndim == 1:                               # planned as the 2-d convolution it runs as
        lifted = lift(ConvCall(spec, shape, None, len(input_shape) == 3))
        spec, shape = lifted.spec, lifted.shape
    return choose(spec, shape, algorithm)
