"""Which implementation computes each pass of a convolution: one table over the algorithms' declarations.

A convolution has three passes, and each is planned on its own: ``forward``,
``grad_input`` (∂L/∂x) and ``grad_weight`` (∂L/∂w).  With ``algorithm=None``
(the default everywhere) the first row of :data:`TABLE` whose condition holds
names the implementation of each pass:

==========  ==============================================  ===========  ===========  ===========
row         condition                                       forward      grad_input   grad_weight
==========  ==============================================  ===========  ===========  ===========
1x1         1×1 kernel (any stride, padding, groups)        pointwise    pointwise    pointwise
fft-dw      one input channel per group, groups > 1,        fft          fft          fft
            kH·kW ≥ 289, stride 1, dilation 1
dw          one input channel per group, groups > 1         depthwise    depthwise    depthwise
patch       kernel = stride, no padding, dilation 1         patch        patch        patch
            (patches that do not overlap), 2-d (H > 1)
direct      kH·kW ≥ 25, ≤ 64 input channels per group,      direct       (below)      (below)
            2-d (H > 1); where FFT could serve (the fft
            row's bounds), kH·kW ≤ 81 and ≤ 32 channels;
            or 3×3 at 3–16 input channels per group
            (an RGB image's first layer and up)
wino        3×3, stride 1, dilation 1, groups 1,            winograd     winograd     winograd
            C_in ≥ 16 and C_out ≥ 16, H_out·W_out ≥ 100
fft         kH·kW ≥ 25, stride ≤ 2, dilation 1, and FFT's   fft          fft          fft
            cost model estimates its three passes faster
            than gemm's
taps        height 1 (a 1-d convolution), stride 1,         taps         taps         taps
            ≥ 16 input channels per group, W_out ≥ 512
taps-few    height 1 (a 1-d convolution), Cg·k ≤ 32         taps         gemm         gemm
            taps × channels per group, ≥ 2¹⁸ outputs
strided-dx  stride > 1, ≥ 16 input channels per group,      gemm         gather       gemm
            2-d (H > 1)
else        everything else                                 gemm         gemm         gemm
==========  ==============================================  ===========  ===========  ===========

What each implementation can serve, its cost model and its layouts are declared by its own
module (see :mod:`convscope.algorithms`): this module only reads them.  The thresholds
were measured on the project's machines; ``bench/README.md`` tells how, and
``bench/fit_cost_model.py`` re-fits the FFT and gemm cost models.

A row whose choice for a pass is "(below)" decides only the other passes: that pass takes the first row
below it that holds and names one (the ``direct`` forward's gradients are FFT's or gemm's).

An explicit ``algorithm='name'`` forces that implementation for every pass.  A
configuration the implementation cannot compute raises ValueError naming
``algorithm``, the rule and the offending value.

Precision.  Winograd and FFT mix values before summing them (across a 4×4 tile, across a whole
image), so their rounding error is relative to the call's largest values rather than to the values
an output reads (their modules say ``ERROR = "global"``).  With
:func:`convscope.set_conv_precision` ``("highest")`` (or inside ``conv_precision("highest")``) a pass
whose row names one of them takes the first row below that holds and names a path with local error
(``"fft-dw"`` → depthwise, ``"wino"``/``"fft"`` → gemm), and the reason says so.  The default,
``"high"``, keeps the table as it is (:mod:`convscope.precision` says why).  NaN and ±Inf are
handled whatever the setting (:mod:`convscope.algorithms`).

3-d convolutions are planned by :data:`ND_TABLE` (1-d ones run, and are planned, as 2-d ones of
height 1): ``nd-wino`` (depth taps stacked into channels, then 2-d Winograd: ``ndwinograd``),
``nd-stack`` (the same stacking on the local 2-d paths: ``ndstack``) and ``nd-else`` (vol2col:
``ndgemm``); under precision ``"highest"`` the first row whose paths have local error.  Tuning does
not apply to them.

With tuning on (:func:`convscope.set_tuning`, :mod:`convscope.tuning`) the first call
of a configuration times the implementations that can serve it, per pass, and the
winners replace the table's choice from then on (not under precision ``"highest"``,
which keeps to the table's local paths).

:func:`plan` shows the choice and the reason for each pass without computing (with ``transposed=True``,
for a transposed convolution's passes: the adjoint convolution's, renamed).  The calls themselves ask
:func:`decide`, which remembers each configuration's choice per setting it depends on
(:func:`cache_key`) and leaves out the layout texts only :func:`plan` shows.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

from . import tuning
from .algorithms import ALGORITHMS
from .precision import get_conv_precision
from .threads import get_num_threads
from .workspace import get_workspace_limit, workspace_limit

PASSES = ("forward", "grad_input", "grad_weight")
NAMES = tuple(ALGORITHMS)

WINOGRAD_MIN_CHANNELS = 16            # Winograd from 16 channels each way (16–48: 0.5–0.8× gemm's time; 8: 0.94×)
WINOGRAD_MIN_OUTPUT_PIXELS = 100      # and from 10×10 outputs (7²: too few tiles for its products)
FFT_MIN_TAPS = 25                     # FFT considered from 5×5 (3×3: 1.1–26× slower per pass)
FFT_MAX_STRIDE = 2                    # it computes the stride-1 output and keeps 1/s² of it
FFT_DEPTHWISE_MIN_TAPS = 289          # FFT for depthwise from 17×17 (the compiled kernels won to 15×15, lost from 19×19)
GATHER_MIN_CHANNELS = 16              # strided grad_input gathered from 16 input channels per group (21: 0.67× gemm's, 3–4: 1.1–2×)
                                      # and in 2-d only (1-d, wav2vec's 3/2 and 2/2 at 512 channels: 1.02–1.12×)
TAPS_MIN_CHANNELS = 16                # 1-d tap products from 16 input channels per group (16 ch × 4000: 0.7× gemm's)
TAPS_MIN_OUTPUTS = 512                # and 512 outputs (W_out 256 and 100 at 128–256 channels: 0.93–1.1×, mixed)
DIRECT_MIN_TAPS = 25                  # forward as direct sums from 5×5 kernels
DIRECT_3X3_MAX_CHANNELS = 16          # and 3×3 up to 16 channels per group (3–16: 0.5–1.0× gemm's time, 0.65–1.0× Winograd's)
DIRECT_3X3_MIN_CHANNELS = 3           # from 3 (3×3 on one channel: 1.9× gemm's time)
DIRECT_MAX_CHANNELS = 64              # up to 64 input channels per group (7×7 dilated at 64: 0.48× gemm's time)
DIRECT_MAX_TAPS_BESIDE_FFT = 81       # where FFT could serve: up to 9×9 (11×11 at 16 channels, 21×21 at 3: 1.4–1.5× FFT's)
DIRECT_MAX_CHANNELS_BESIDE_FFT = 32   # and 32 channels per group (7×7 and 9×9 at 64: 1.4–2.6× FFT's; 5×5 at 32: 0.78×)
TAPS_FEW_MIN_OUTPUTS = 1 << 18        # 1-d forward as direct sums (taps.DIRECT_MAX_ROWS) from 2¹⁸ outputs (N·C_out·W_out;
                                      # 66K: 2.7× gemm's time, 255K–6.5M: 0.29–0.79×)


# --------------------------------------------------------------------------- the automatic table


def _is_1x1(spec, shape):
    return spec.kernel_size == (1, 1)


def _is_depthwise(spec, shape):
    return shape.groups > 1 and shape.in_per_group == 1


def _is_patch(spec, shape):
    return ALGORITHMS["patch"].needs(spec, shape) is None and shape.H > 1


def _wins_winograd(spec, shape):
    return (ALGORITHMS["winograd"].needs(spec, shape) is None
            and shape.C >= WINOGRAD_MIN_CHANNELS and shape.out_channels >= WINOGRAD_MIN_CHANNELS
            and shape.H_out * shape.W_out >= WINOGRAD_MIN_OUTPUT_PIXELS)


def cost_ms(spec, shape) -> tuple[float, float]:
    """(FFT's, gemm's) estimated milliseconds for the three passes (their modules' cost models)."""
    return ALGORITHMS["fft"].cost_ms(spec, shape), ALGORITHMS["gemm"].cost_ms(spec, shape)


def _fft_candidate(spec, shape) -> bool:
    kH, kW = spec.kernel_size
    return (kH * kW >= FFT_MIN_TAPS and max(spec.stride) <= FFT_MAX_STRIDE and spec.dilation == (1, 1)
            and not _is_depthwise(spec, shape))


def _wins_fft(spec, shape) -> bool:
    if not _fft_candidate(spec, shape):
        return False
    fft_ms, gemm_ms = cost_ms(spec, shape)
    return fft_ms < gemm_ms


def _gathers_input(spec, shape) -> bool:
    return max(spec.stride) > 1 and shape.in_per_group >= GATHER_MIN_CHANNELS and shape.H > 1


def _wins_taps(spec, shape) -> bool:
    return (shape.H == 1 and spec.kernel_size[0] == 1 and spec.stride[1] == 1
            and shape.in_per_group >= TAPS_MIN_CHANNELS and shape.W_out >= TAPS_MIN_OUTPUTS)


def _sums_few_taps(spec, shape) -> bool:
    return (shape.H == 1 and spec.kernel_size[0] == 1 and ALGORITHMS["taps"].direct(spec, shape)
            and shape.N * shape.out_channels * shape.W_out >= TAPS_FEW_MIN_OUTPUTS)


def _sums_directly(spec, shape) -> bool:
    taps, Cg = spec.kernel_size[0] * spec.kernel_size[1], shape.in_per_group
    if shape.H == 1:
        return False
    if spec.kernel_size == (3, 3):
        return DIRECT_3X3_MIN_CHANNELS <= Cg <= DIRECT_3X3_MAX_CHANNELS
    return (taps >= DIRECT_MIN_TAPS and Cg <= DIRECT_MAX_CHANNELS
            and (not _fft_candidate(spec, shape) or (taps <= DIRECT_MAX_TAPS_BESIDE_FFT
                                                      and Cg <= DIRECT_MAX_CHANNELS_BESIDE_FFT)))


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
        "one input channel per group: compiled multiply-adds per tap"),
    Row("patch", _is_patch, ("patch", "patch", "patch"),
        "kernel as large as its stride, no padding, dilation 1, 2-d: the patches do not overlap, so the input "
        "rearranged by patches (space to depth) makes it a 1×1 product, no im2col"),
    Row("direct", _sums_directly, ("direct", None, None),
        f"kH·kW ≥ {DIRECT_MIN_TAPS}, ≤ {DIRECT_MAX_CHANNELS} input channels per group, 2-d (where FFT could "
        f"serve, ≤ {DIRECT_MAX_TAPS_BESIDE_FFT} taps and ≤ {DIRECT_MAX_CHANNELS_BESIDE_FFT} channels), or 3×3 at "
        f"{DIRECT_3X3_MIN_CHANNELS}–{DIRECT_3X3_MAX_CHANNELS} channels per group: "
        "the forward as direct sums over the input's stride phases, no im2col"),
    Row("wino", _wins_winograd, ("winograd", "winograd", "winograd"),
        f"3×3 stride 1 with ≥ {WINOGRAD_MIN_CHANNELS} channels each way and ≥ "
        f"{WINOGRAD_MIN_OUTPUT_PIXELS} output pixels: Winograd F(4×4, 3×3), 4× fewer multiplies"),
    Row("fft", _wins_fft, ("fft", "fft", "fft"),
        f"kH·kW ≥ {FFT_MIN_TAPS}, stride ≤ {FFT_MAX_STRIDE}, dilation 1, and FFT's estimated cost "
        "below im2col's: products per frequency"),
    Row("taps", _wins_taps, ("taps", "taps", "taps"),
        f"a 1-d convolution (height 1), stride 1, ≥ {TAPS_MIN_CHANNELS} input channels per group, "
        f"≥ {TAPS_MIN_OUTPUTS} outputs: one matrix product per tap on views of the input (few taps × channels: direct sums), no im2col"),
    Row("taps-few", _sums_few_taps, ("taps", "gemm", "gemm"),
        f"a 1-d convolution (height 1) with ≤ {ALGORITHMS['taps'].DIRECT_MAX_ROWS} taps × channels per group and "
        f"≥ 2¹⁸ outputs: the forward as compiled direct sums, the gradients im2col + GEMM"),
    Row("strided-dx", _gathers_input, ("gemm", "gather", "gemm"),
        f"stride > 1 with ≥ {GATHER_MIN_CHANNELS} input channels per group, 2-d: im2col + GEMM, and grad_input "
        "gathered channels-last from the taps that reach each pixel (no scatter-add)"),
    Row("else", lambda spec, shape: True, ("gemm", "gemm", "gemm"),
        "general case: im2col + GEMM"),
)


def _layout(name, spec, shape, pass_):
    """The implementation's own description of the pass, and the cost estimates where FFT competes."""
    text = ALGORITHMS[name].describe(spec, shape, pass_)
    if name in ("fft", "gemm") and _fft_candidate(spec, shape):
        lead = "estimated" if name == "fft" else "FFT estimated"
        text += "; {} {:.3g} ms against gemm's {:.3g} ms for the three passes".format(lead, *cost_ms(spec, shape))
    return text


# --------------------------------------------------------------------------- the plan


class Choice(NamedTuple):
    """The implementation of one pass, why it was chosen, and whether it was measured or read from the table."""

    algorithm: str
    reason: str
    source: str = "table"      # "table", "forced" or "measured"


class Plan(NamedTuple):
    """The implementation chosen for each pass of one convolution."""

    forward: Choice
    grad_input: Choice
    grad_weight: Choice

    def __str__(self) -> str:
        width = max(len(p) for p in PASSES)
        return "\n".join(f"{p.ljust(width)}  {getattr(self, p).algorithm:<10} [{getattr(self, p).source}] "
                         f"{getattr(self, p).reason}" for p in PASSES)


def check_algorithm(algorithm) -> None:
    """``algorithm`` must be None or a known name (checked before any work)."""
    if algorithm is None or (isinstance(algorithm, str) and algorithm in ALGORITHMS):
        return
    names = ", ".join(["None"] + [repr(n) for n in NAMES])
    raise ValueError(f"algorithm must be one of {names}, got {algorithm!r}")


def candidates(spec, shape) -> tuple:
    """The implementations tuning times for this configuration: all that can serve it but the reference loops."""
    from .algorithms import dims

    return tuple(name for name, impl in ALGORITHMS.items()
                 if name != "reference" and spec.ndim in getattr(impl, "PLANNED_DIMS", dims(name))
                 and impl.needs(spec, shape) is None)


def choose(spec, shape, algorithm=None, dtype=None) -> Plan:
    """The :class:`Plan` for a validated ``spec`` and ``shape`` (see the module docstring), each reason
    followed by the implementation's layout for the pass (what :func:`plan` shows).

    ``dtype`` (the compute dtype, float32 when None) is what tuning measures in.
    """
    decided = decide(spec, shape, algorithm, dtype)
    if spec.ndim != 2:
        texts = [ALGORITHMS[c.algorithm].describe(spec, shape, p) for c, p in zip(decided, PASSES)]
    else:
        texts = [_layout(c.algorithm, spec, shape, p) for c, p in zip(decided, PASSES)]
    return Plan(*(c._replace(reason=c.reason + (f"; {text}" if text else "")) for c, text in zip(decided, texts)))


def decide(spec, shape, algorithm=None, dtype=None) -> Plan:
    """:func:`choose`'s plan without the layout texts: what a call runs, and why.

    Plans are remembered per configuration and per setting they depend on (precision, workspace
    limit, thread count, tuning's state: :func:`cache_key`), so a changed setting plans anew; a
    configuration that raises is never remembered.
    """
    check_algorithm(algorithm)
    return _decided(*cache_key(spec, shape, algorithm, dtype))


def cache_key(spec, shape, algorithm=None, dtype=None) -> tuple:
    """What a plan depends on: the configuration and the settings the table, the implementations'
    declarations and tuning read."""
    return (spec, shape, algorithm, dtype, get_conv_precision(), get_workspace_limit(), get_num_threads(),
            tuning.state())


@functools.lru_cache(maxsize=1024)
def _decided(spec, shape, algorithm, dtype, precision, limit, threads, tuning_state) -> Plan:
    with workspace_limit(limit):
        return _decide(spec, shape, algorithm, dtype, precision)


def _decide(spec, shape, algorithm, dtype, precision) -> Plan:
    if algorithm is not None:
        _check_dims(algorithm, spec)
    if spec.ndim != 2:
        return _decide_nd(spec, shape, algorithm, precision)
    if algorithm is not None:
        problem = ALGORITHMS[algorithm].needs(spec, shape)
        if problem is not None:
            raise ValueError(f"algorithm={algorithm!r} cannot compute this convolution: it needs {problem}")
    auto = next(row for row in TABLE if row.condition(spec, shape))
    local_only = algorithm is None and precision == "highest"
    tuned = algorithm is None and not local_only and tuning.get_tuning()
    measured = tuning.measured(spec, shape, dtype) if tuned else None
    choices = []
    for i, pass_ in enumerate(PASSES):
        if algorithm is not None:
            name, reason, source = algorithm, f"forced by algorithm={algorithm!r}", "forced"
        elif measured is not None:
            name, reason, source = measured[pass_]["algorithm"], tuning.reason(measured, pass_), "measured"
        else:
            row = auto if auto.choice[i] is not None else \
                next(r for r in TABLE[TABLE.index(auto) + 1:] if r.choice[i] is not None and r.condition(spec, shape))
            name, reason, source = row.choice[i], f"row {row.name!r}: {row.why}", "table"
            if local_only and ALGORITHMS[name].ERROR != "local":
                local = next(r for r in TABLE if r.choice[i] is not None and r.condition(spec, shape)
                             and ALGORITHMS[r.choice[i]].ERROR == "local")
                name, reason = local.choice[i], (f"row {local.name!r}: {local.why}; conv precision 'highest' keeps to "
                                                 f"paths whose error is local (row {row.name!r} would choose {row.choice[i]})")
        choices.append(Choice(name, reason, source))
    return Plan(*choices)


def clear_cache() -> None:
    """Forget the remembered plans (for code that changes the table or the thresholds at run time)."""
    _decided.cache_clear()


ND_WHY = "vol2col + GEMM, the fast path over any number of spatial dimensions"
ND_WINOGRAD_MIN_CHANNELS = 16        # stacked channels C·k_D from 16 (24 won 2.5× over ndgemm; 9, 3 lost 2×, 1.3×)
ND_WINOGRAD_MIN_OUT_CHANNELS = 8     # and 8 output channels (8 and 16: 1.6–3× faster than ndgemm, ndstack)
ND_WINOGRAD_MIN_PLANE_PIXELS = 49    # and 7×7 output planes (7×7 won 1.5×; 4×4, one tile: 1.6–2.4× slower)
ND_STACK_MIN_MACS = 10_000_000       # depth stacking from 10⁷ multiply-adds (below: ndgemm's fewer passes won)


def _check_dims(algorithm, spec) -> None:
    """A forced implementation must compute convolutions of the spec's number of dimensions."""
    from .algorithms import dims

    if spec.ndim not in dims(algorithm):
        served = " and ".join(f"{d}-d" for d in dims(algorithm))
        raise ValueError(f"algorithm={algorithm!r} cannot compute this convolution: it computes {served} "
                         f"convolutions only, got a {spec.ndim}-d one (kernel_size={spec.kernel_size})")


def _nd_macs(spec, shape) -> int:
    taps = 1
    for k in spec.kernel_size:
        taps *= k
    outputs = 1
    for o in shape.out_spatial:
        outputs *= o
    return shape.N * shape.out_channels * outputs * shape.in_per_group * taps


def _wins_nd_winograd(spec, shape) -> bool:
    from .algorithms import ndstack

    if ALGORITHMS["ndwinograd"].needs(spec, shape) is not None:
        return False
    _, shape2 = ndstack.stacked(spec, shape)
    return (shape2.C >= ND_WINOGRAD_MIN_CHANNELS and shape.out_channels >= ND_WINOGRAD_MIN_OUT_CHANNELS
            and shape2.H_out * shape2.W_out >= ND_WINOGRAD_MIN_PLANE_PIXELS)


# rows of 3-d convolutions (1-d ones are planned as 2-d ones), the first that holds
ND_TABLE = (
    Row("nd-wino", _wins_nd_winograd, ("ndwinograd", "ndwinograd", "ndwinograd"),
        f"(k, 3, 3) kernel, stride and dilation 1 across height and width, groups 1, ≥ {ND_WINOGRAD_MIN_CHANNELS} "
        f"stacked channels, ≥ {ND_WINOGRAD_MIN_OUT_CHANNELS} output channels, ≥ {ND_WINOGRAD_MIN_PLANE_PIXELS} "
        "output pixels per plane"),
    Row("nd-stack", lambda spec, shape: _nd_macs(spec, shape) >= ND_STACK_MIN_MACS,
        ("ndstack", "ndstack", "ndstack"),
        f"≥ {ND_STACK_MIN_MACS:.0e} multiply-adds"),
    Row("nd-else", lambda spec, shape: True, ("ndgemm", "ndgemm", "ndgemm"), f"{{ndim}}-d convolution: {ND_WHY}"),
)


def _decide_nd(spec, shape, algorithm, precision) -> Plan:
    """The plan of a convolution that is not 2-d (1-d convolutions are planned as 2-d ones by the
    functional API): the first row of :data:`ND_TABLE` that holds (under precision ``"highest"``, the
    first whose paths have local error), or the forced implementation."""
    if algorithm is not None:
        problem = ALGORITHMS[algorithm].needs(spec, shape)
        if problem is not None:
            raise ValueError(f"algorithm={algorithm!r} cannot compute this convolution: it needs {problem}")
        return Plan(*(Choice(algorithm, f"forced by algorithm={algorithm!r}", "forced") for _ in PASSES))
    local_only = precision == "highest"
    row = next(r for r in ND_TABLE if r.condition(spec, shape)
               and not (local_only and any(ALGORITHMS[c].ERROR != "local" for c in r.choice)))
    why = f"row {row.name!r}: " + row.why.format(ndim=spec.ndim)
    return Plan(*(Choice(name, why, "table") for name in row.choice))


def plan(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
         algorithm=None, *, transposed=False, output_padding=0) -> Plan:
    """What ``conv2d`` and ``conv2d_backward`` (or ``conv1d``/``conv3d``'s) would run for these shapes, and why.

    ``input_shape`` is (N, C, H, W) or (C, H, W), ``weight_shape`` (C_out, C/groups, kH, kW);
    a 3-D weight (C_out, C/groups, k) plans a 1-d convolution (as the 2-d one of height 1 it
    runs as), a 5-D weight a 3-d one;
    the other parameters mean what they mean in :func:`convscope.conv2d`.  Nothing is computed
    (unless tuning is on and the configuration is new: then its candidates are timed).
    Each choice says where it came from: ``source`` is ``"table"``, ``"forced"`` or ``"measured"``.

    With ``transposed=True`` it plans ``conv_transpose*d`` and ``conv_transpose*d_backward``: the
    weight is the transposed layout ``(C_in, C_out/groups, k…)``, ``output_padding`` means what it
    means in :func:`convscope.conv_transpose2d` and ``padding_mode`` must be ``'zeros'``.  The
    passes are the transposed call's: its forward is the input gradient of the convolution it is
    the adjoint of, its input gradient that convolution's forward, its weight gradient that
    convolution's (:mod:`convscope.functional`); each reason says which.

    >>> import convscope
    >>> p = convscope.plan((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    >>> p.forward.algorithm, p.grad_input.algorithm, p.grad_weight.algorithm
    ('winograd', 'winograd', 'winograd')
    >>> p.forward.source
    'table'
    >>> convscope.plan((8, 32, 112, 112), (32, 1, 3, 3), padding=1, groups=32).forward.algorithm
    'depthwise'
    >>> t = convscope.plan((16, 512, 4, 4), (512, 256, 4, 4), stride=2, padding=1, transposed=True)
    >>> t.forward.algorithm, t.grad_input.algorithm, t.grad_weight.algorithm
    ('gather', 'gemm', 'gemm')
    """
    from .spec import bind, lift

    check_algorithm(algorithm)
    if transposed:
        return _plan_transposed(input_shape, weight_shape, stride, padding, dilation, groups, padding_mode,
                                algorithm, output_padding)
    ndim = _ndim(weight_shape)
    call = bind(ndim, input_size=input_shape, weight_size=weight_shape, stride=stride, padding=padding,
                dilation=dilation, groups=groups, padding_mode=padding_mode,
                size_names=("input", "weight"))      # the messages conv2d gives for the same shapes
    if ndim == 1:                               # planned as the 2-d convolution it runs as
        call = lift(call)
    return choose(call.spec, call.shape, algorithm)


def _ndim(weight_shape) -> int:
    """The number of spatial dimensions a weight shape says: a 3-D weight is 1-d's, 5-D 3-d's, else 2-d
    (the binding step then checks the shape, and names what it got)."""
    try:
        length = len(weight_shape.shape if hasattr(weight_shape, "dtype") else weight_shape)
    except (TypeError, AttributeError):
        return 2
    return length - 2 if length in (3, 5) else 2


# the transposed call's passes, from the passes of the convolution it is the adjoint of
TRANSPOSED_PASSES = (("forward", "grad_input"), ("grad_input", "forward"), ("grad_weight", "grad_weight"))


def _plan_transposed(input_shape, weight_shape, stride, padding, dilation, groups, padding_mode, algorithm,
                     output_padding) -> Plan:
    """:func:`plan` of ``conv_transpose*d``: the adjoint convolution's plan, its passes renamed."""
    from .algorithms import gather
    from .spec import (AXIS_LETTERS, ConvCall, check_output_padding, check_transposed_padding,
                       check_transposed_shapes, lift, make_spec, size_tuple)

    if padding_mode != "zeros":
        raise ValueError(f'Only "zeros" padding mode is supported for transposed convolutions, '
                         f"got padding_mode={padding_mode!r}")
    ndim = _ndim(weight_shape)
    axes = ", ".join(AXIS_LETTERS[ndim])
    weight_shape = size_tuple(weight_shape, "weight", (ndim + 2,),
                              f"(C_in, C_out/groups, {', '.join('k' + a for a in AXIS_LETTERS[ndim])})")
    input_shape = size_tuple(input_shape, "input", (ndim + 1, ndim + 2), f"(N, C_in, {axes}) or (C_in, {axes})")
    spec = make_spec(weight_shape[2:], stride, check_transposed_padding(padding, ndim), dilation, groups, ndim=ndim)
    op = check_output_padding(output_padding, spec.stride, spec.dilation)
    call = ConvCall(spec, check_transposed_shapes(spec, op, input_shape, weight_shape), None,
                    len(input_shape) == ndim + 2)
    if ndim == 1:
        call = lift(call)
    conv = choose(call.spec, call.shape, algorithm)
    shared = call.spec.ndim == 2 and gather.shares_im2col(conv.forward.algorithm, conv.grad_weight.algorithm)
    return Plan(*(getattr(conv, of)._replace(reason=f"the adjoint convolution's {of.replace('_', '-')} pass; "
                                             + getattr(conv, of).reason
                                             + (f"; {gather.SHARED}" if shared and of != "grad_input" else ""))
                  for _, of in TRANSPOSED_PASSES))
