"""Everything the explore page shows for one layer, as one JSON-able dict: :func:`layer_data`.

Every number in it comes from convscope itself:

* ``output`` from :func:`convscope.conv2d`;
* every output element's window, products, per-channel sums, Σ and value from
  :func:`convscope.explain` (one call per element);
* every input pixel's and every weight element's gradient, with its terms, from
  :func:`convscope.explain_grad` (one call per element), and the bias gradients too;
* the padded input from :func:`convscope.padding.pad`, and the real pixel each padding cell
  copies from :func:`convscope.geometry.source_map`;
* the output-size formula from :func:`convscope.explain_shape`.

The page only looks numbers up; it never computes one.

Sizes are bounded (:data:`LIMITS`, :data:`MAX_ELEMENTS`, :data:`MAX_TERMS`) so one call takes a
fraction of a second and the JSON stays within a few MB; a value beyond a bound raises
``ValueError`` naming the parameter, the bound and the value.  Invalid combinations (groups
that do not divide the channels, reflect padding wider than the input, ``'same'`` with a
stride, ...) raise the library's own error, unchanged.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..explain import explain, explain_grad, explain_shape
from ..explain.render import channel_terms
from ..functional import conv2d
from ..geometry import source_map
from ..module import Conv2d
from ..padding import pad
from ..spec import as_array

#: Upper bounds of the single parameters (lower bounds and types are the library's).
LIMITS = {
    "height": 64,          # input height H
    "width": 64,           # input width W
    "channels": 16,        # input channels C
    "out_channels": 16,
    "kernel_size": 11,     # each of kH, kW
    "stride": 8,
    "dilation": 8,
    "padding": 16,         # each side
    "seed": 2**32 - 1,
}
#: Explanations built: output elements + input pixels + weight elements + biases (one call each).
MAX_ELEMENTS = 2500
#: Terms of the output explanations, C_out·H_out·W_out·(C/groups)·kH·kW; the input and weight
#: gradients hold as many terms again (at most), each.
MAX_TERMS = 25000

GRAD_OUTPUTS = ("ones", "random")
SCHEMA_VERSION = 1


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _at_most(name: str, value, limit: int) -> None:
    if value > limit:
        raise ValueError(f"{name} must be at most {limit} in convscope explore, got {value}")


def _check_pair_bound(value, name: str, limit: int) -> None:
    """The upper bound of an int or pair parameter; anything else is left to the library."""
    items = [value] if _is_int(value) else list(value) if isinstance(value, (tuple, list)) else []
    for item in items:
        if _is_int(item) and item > limit:
            raise ValueError(f"{name} must be at most {limit} in convscope explore, got {value!r}")


def _one_sample(x) -> np.ndarray:
    """A loaded input as (C, H, W): HxW, CxHxW or 1xCxHxW; whole-number arrays become float32."""
    a = np.asarray(x)
    if a.dtype.kind in "biu":
        a = a.astype(np.float32)
    elif a.dtype.kind != "f":
        raise TypeError(f"input must hold numbers (float16, float32 or float64), got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(f"input must be one sample: HxW, CxHxW or 1xCxHxW, got shape {a.shape}")
        a = a[0]
    elif a.ndim != 3:
        raise ValueError(f"input must be HxW, CxHxW or 1xCxHxW, got shape {a.shape}")
    return a


def _shape_of(input_shape) -> tuple[int, int, int]:
    if not isinstance(input_shape, (tuple, list)) or not all(_is_int(v) for v in input_shape):
        raise TypeError(f"input_shape must be a tuple of ints (H, W), (C, H, W) or (1, C, H, W), got {input_shape!r}")
    dims = tuple(int(v) for v in input_shape)
    if len(dims) == 4 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) == 2:
        dims = (1,) + dims
    if len(dims) != 3:
        raise ValueError(f"input_shape must be (H, W), (C, H, W) or (1, C, H, W), got {tuple(input_shape)}")
    if min(dims) < 1:
        raise ValueError(f"input_shape must have positive sizes, got {tuple(input_shape)}")
    return dims  # type: ignore[return-value]


def check_bounds(C: int, H: int, W: int, out_channels, kernel_size, stride, padding, dilation) -> None:
    """Raise ValueError when a parameter is beyond explore's bounds (:data:`LIMITS`)."""
    _at_most("input channels C", C, LIMITS["channels"])
    _at_most("input height H", H, LIMITS["height"])
    _at_most("input width W", W, LIMITS["width"])
    if _is_int(out_channels):
        _at_most("out_channels", out_channels, LIMITS["out_channels"])
    _check_pair_bound(kernel_size, "kernel_size", LIMITS["kernel_size"])
    _check_pair_bound(stride, "stride", LIMITS["stride"])
    _check_pair_bound(dilation, "dilation", LIMITS["dilation"])
    if not isinstance(padding, str):
        _check_pair_bound(padding, "padding", LIMITS["padding"])


def _check_totals(C: int, H: int, W: int, weight_shape: tuple, out_hw: tuple[int, int]) -> None:
    O, Cg, kH, kW = weight_shape
    Ho, Wo = out_hw
    elements = O * Ho * Wo + C * H * W + O * Cg * kH * kW + O
    if elements > MAX_ELEMENTS:
        raise ValueError(
            f"this layer has {elements} numbers to explain ({O * Ho * Wo} outputs, {C * H * W} input pixels, "
            f"{O * Cg * kH * kW} weights, {O} biases); convscope explore explains at most {MAX_ELEMENTS}: "
            "make the input, the kernel or out_channels smaller")
    terms = O * Ho * Wo * Cg * kH * kW
    if terms > MAX_TERMS:
        raise ValueError(
            f"the output's explanations would hold {terms} terms (C_out·H_out·W_out·(C/groups)·kH·kW = "
            f"{O}·{Ho}·{Wo}·{Cg}·{kH}·{kW}); convscope explore shows at most {MAX_TERMS}: "
            "make the input, the kernel or out_channels smaller")


def _random(rng, shape, integers: bool, low: int, dtype, normal: bool = True) -> np.ndarray:
    """The CLI's seeded numbers: whole numbers in [low, −low], or 4-decimal samples."""
    if integers:
        return rng.integers(low, -low + 1, size=shape).astype(dtype)
    values = rng.standard_normal(shape) if normal else rng.uniform(-1, 1, size=shape)
    return values.round(4).astype(dtype)


def _bias_array(bias, rng, out_channels: int, integers: bool, dtype) -> np.ndarray | None:
    if bias is None or bias is False:
        return None
    if bias is True:
        return _random(rng, (out_channels,), integers, -3, dtype, normal=False)
    values = np.asarray(bias, dtype=np.float64).reshape(-1)
    if values.size == 1:
        values = np.repeat(values, out_channels)
    if values.size != out_channels:
        raise ValueError(f"bias must be one number or one per output channel ({out_channels}), got {values.size}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"bias must be finite, got {values.tolist()}")
    return values.astype(dtype)


def _term_index(index) -> tuple[int, int]:
    """(h, w) of a term's input pixel, (−1, −1) for zero padding."""
    return (-1, -1) if index is None else (int(index[-2]), int(index[-1]))


def layer_data(x=None, *, input_shape=(5, 5), out_channels=1, kernel_size=3, stride=1, padding=0,
               dilation=1, groups=1, padding_mode="zeros", bias=False, seed=0, integers=False,
               grad_output="ones", weight=None) -> dict:
    """The explore page's data for one ``Conv2d`` layer and one input sample.

    Parameters
    ----------
    x : array (H, W), (C, H, W) or (1, C, H, W), or None for a seeded random input of
        ``input_shape``; whole-number arrays are taken as float32.  Never modified.
    input_shape : (H, W), (C, H, W) or (1, C, H, W), used when ``x`` is None
    out_channels, kernel_size, stride, padding, dilation, groups, padding_mode :
        ``nn.Conv2d``'s parameters
    bias : False/None (no bias), True (seeded random), or a number or one number per output channel
    seed : seed of the random input, weight, bias and grad_output
        (``np.random.default_rng(seed)``, drawn in that order, as ``convscope explain`` draws them)
    integers : whole random numbers (input in −9..9, weight, bias and grad_output in −3..3)
        instead of 4-decimal ones
    grad_output : ``'ones'`` (the gradients of ``L = out.sum()``) or ``'random'`` (seeded, of
        ``L = Σ out · grad_output``)
    weight : array (C_out, C/groups, kH, kW), or None for a seeded random weight; when given,
        ``out_channels`` and ``kernel_size`` are its shape's (passing other values is an error), its
        dtype must be the input's, and it is never modified

    Returns
    -------
    dict (JSON-able; ``json.dumps`` it) with

    * ``config``: the parameters (``padding`` as given and ``padding_resolved``
      ``[[top, bottom], [left, right]]``; ``bias`` true or false and ``bias_given``, the values
      when they were given rather than drawn), ``input_given`` (``x`` was given), ``layer``
      (the layer's repr), ``dtype``, ``decimals`` (0 when every number is whole, else 4);
    * ``shape``: ``explain_shape``'s ``text`` and ``output_hw``;
    * ``input`` ``[C][H][W]``, ``padded`` ``[C][Hp][Wp]``, ``source_rows`` ``[Hp]`` and
      ``source_cols`` ``[Wp]`` (the real row / column a padded row / column copies, −1 for zero
      padding: padded cell (r, c) copies input pixel (source_rows[r], source_cols[c])),
      ``weight`` ``[C_out][C/groups][kH][kW]``, ``bias`` ``[C_out]`` or null, ``output``
      ``[C_out][H_out][W_out]``, ``grad_output`` ``[C_out][H_out][W_out]``;
    * ``padding_rows`` ``[Hp]``, ``padding_cols`` ``[Wp]``: whether a padded row / column is
      padding (a padded cell is padding when its row or its column is);
    * ``group_channels``: for output channel o, the input channels it reads (its group's);
    * ``windows[i][j]``: output (i, j)'s taps, ``[u, v, padded_row, padded_col, h, w, is_padding]``
      each (h = w = −1 where zero padding is read), the same for every output channel;
    * ``forward[o][i][j]``: ``{"v": value, "s": Σ products, "cs": [sum per input channel of the
      group], "p": [[products of the channel, in the taps' order] per input channel of the group]}``;
    * ``grad_input[c][h][w]``: ``{"v": value, "s": Σ terms, "t": [[o, i, j, c_in_group, u, v,
      padded_row, padded_col, is_padding, product], ...], "r": reason}`` (``r`` only when no
      window reads the pixel); the term is grad_output[o, i, j] · weight[o, c_in_group, u, v];
    * ``grad_weight[o][c][u][v]``: ``{"v", "s", "ch": input channel, "t": [[i, j, padded_row,
      padded_col, h, w, is_padding, product], ...]}``; the term is grad_output[o, i, j] · x̃ there;
    * ``grad_bias[o]``: ``{"v", "s"}`` (Σ of grad_output[o]).

    Examples
    --------
    >>> d = layer_data(input_shape=(3, 3), kernel_size=2, integers=True)
    >>> d["shape"]["output_hw"], len(d["forward"][0]), len(d["windows"][0][0])
    ([2, 2], 2, 4)
    >>> d["forward"][0][1][1]["v"] == d["output"][0][1][1]
    True
    """
    if not isinstance(grad_output, str) or grad_output not in GRAD_OUTPUTS:
        raise ValueError(f"grad_output must be 'ones' or 'random', got {grad_output!r}")
    if not _is_int(seed):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if not 0 <= seed <= LIMITS["seed"]:
        raise ValueError(f"seed must be in 0..{LIMITS['seed']}, got {seed}")
    if not isinstance(integers, (bool, np.bool_)):
        raise TypeError(f"integers must be True or False, got {integers!r}")
    if isinstance(bias, (bool, np.bool_)):
        bias = bool(bias)
    elif not (bias is None or isinstance(bias, (numbers.Real, tuple, list, np.ndarray))):
        raise TypeError(f"bias must be True, False, a number or a list of numbers, got {bias!r}")

    if x is None:
        C, H, W = _shape_of(input_shape)
    else:
        xa = _one_sample(x)
        C, H, W = xa.shape
    if weight is not None:
        wa = as_array(weight, "weight")
        if wa.ndim != 4:
            raise ValueError(f"weight must be 4-D (C_out, C/groups, kH, kW), got shape {wa.shape}")
        own_kernel = tuple(int(k) for k in wa.shape[2:])
        given_kernel = (kernel_size, kernel_size) if _is_int(kernel_size) else tuple(kernel_size)
        if out_channels != 1 and out_channels != wa.shape[0]:
            raise ValueError(f"out_channels is the weight's ({wa.shape[0]}) when a weight is given, got {out_channels!r}")
        if kernel_size != 3 and given_kernel != own_kernel:
            raise ValueError(f"kernel_size is the weight's {own_kernel} when a weight is given, got {kernel_size!r}")
        out_channels, kernel_size = int(wa.shape[0]), own_kernel
    check_bounds(C, H, W, out_channels, kernel_size, stride, padding, dilation)
    # The layer validates the hyper-parameters with nn.Conv2d's rules and messages.
    layer = Conv2d(C, out_channels, kernel_size, stride, padding, dilation, groups,
                   bias=bias is not None and bias is not False, padding_mode=padding_mode)
    spec = layer.spec

    rng = np.random.default_rng(seed)
    if x is None:
        xa = _random(rng, (C, H, W), integers, -9, np.float32)
    elif not np.all(np.isfinite(xa)):
        raise ValueError("input must hold finite numbers (no NaN or infinity)")
    dtype = xa.dtype
    kH, kW = spec.kernel_size
    if weight is None:
        w = _random(rng, (layer.out_channels, C // spec.groups, kH, kW), integers, -3, dtype, normal=False)
    else:
        if not np.all(np.isfinite(wa)):
            raise ValueError("weight must hold finite numbers (no NaN or infinity)")
        w = wa
    b = _bias_array(bias, rng, layer.out_channels, integers, dtype)
    params = dict(stride=spec.stride, padding=spec.padding_arg, dilation=spec.dilation, groups=spec.groups,
                  padding_mode=spec.padding_mode)
    out = conv2d(xa, w, b, **params)  # the input-dependent checks (reflect width, empty output) are conv2d's
    O, Ho, Wo = out.shape
    _check_totals(C, H, W, w.shape, (Ho, Wo))
    gy = (np.ones(out.shape, dtype=dtype) if grad_output == "ones"
          else _random(rng, out.shape, integers, -3, dtype))
    if not np.all(np.isfinite(out)):
        raise ValueError(f"the output is not finite in {dtype} (it overflows): use smaller numbers or float32")

    Cg = C // spec.groups
    taps = kH * kW
    windows = []
    forward = [[[None] * Wo for _ in range(Ho)] for _ in range(O)]
    group_channels = []
    for o in range(O):
        for i in range(Ho):
            for j in range(Wo):
                e = explain(w, xa, (o, i, j), bias=b, **params)
                if o == 0:
                    if j == 0:
                        windows.append([])
                    windows[i].append([[*t.tap, *t.padded_index, *_term_index(t.input_index), int(t.is_padding)]
                                       for t in e.terms[:taps]])
                blocks = [channel_terms(e, c) for c in range(Cg)]
                forward[o][i][j] = {
                    "v": e.value, "s": e.sum_of_products,
                    "cs": [float(np.sum([t.product for t in block])) for block in blocks],
                    "p": [[t.product for t in block] for block in blocks],
                }
        group_channels.append(list(e.channels))

    grad_input = [[[None] * W for _ in range(H)] for _ in range(C)]
    for c in range(C):
        for h in range(H):
            for w_ in range(W):
                e = explain_grad(w, xa, gy, "input", (c, h, w_), **params)
                item = {"v": e.value, "s": e.sum_of_products,
                        "t": [[*t.output_index, *t.weight_index[1:], *t.padded_index, int(t.is_padding), t.product]
                              for t in e.terms]}
                if e.reason:
                    item["r"] = e.reason
                grad_input[c][h][w_] = item
    grad_weight = [[[[None] * kW for _ in range(kH)] for _ in range(Cg)] for _ in range(O)]
    for o, c, u, v in np.ndindex(w.shape):
        e = explain_grad(w, xa, gy, "weight", (o, c, u, v), **params)
        grad_weight[o][c][u][v] = {
            "v": e.value, "s": e.sum_of_products, "ch": e.channels.start,
            "t": [[*t.output_index[1:], *t.padded_index, *_term_index(t.input_index), int(t.is_padding),
                   t.product] for t in e.terms]}
    grad_bias = []
    for o in range(O):
        e = explain_grad(w, xa, gy, "bias", (o,), **params)
        grad_bias.append({"v": e.value, "s": e.sum_of_products})

    (pt, pb), (pl, pr) = spec.padding
    shape = explain_shape((C, H, W), kernel_size, stride=stride, padding=padding, dilation=dilation, out_channels=O)
    arrays = [xa, w, gy] + ([] if b is None else [b])
    whole = all(np.all(a == np.round(a)) and np.all(np.abs(a) < 2**20) for a in arrays)
    return {
        "version": SCHEMA_VERSION,
        "config": {
            "input_shape": [C, H, W], "out_channels": O, "kernel_size": list(spec.kernel_size),
            "stride": list(spec.stride), "padding": _jsonable(padding),
            "padding_resolved": [[pt, pb], [pl, pr]], "dilation": list(spec.dilation), "groups": spec.groups,
            "padding_mode": spec.padding_mode, "bias": b is not None,
            "bias_given": None if b is None or bias is True else _floats(b), "seed": int(seed),
            "integers": bool(integers), "grad_output": grad_output, "input_given": x is not None,
            "dtype": str(dtype), "layer": repr(layer), "decimals": 0 if whole else 4,
            "weight_given": weight is not None,
        },
        "shape": {"text": str(shape), "output_hw": [Ho, Wo]},
        "input": _floats(xa),
        "padded": _floats(pad(xa, spec)),
        "source_rows": source_map(H, pt, pb, spec.padding_mode).tolist(),
        "source_cols": source_map(W, pl, pr, spec.padding_mode).tolist(),
        "padding_rows": [not pt <= r < pt + H for r in range(pt + H + pb)],
        "padding_cols": [not pl <= c < pl + W for c in range(pl + W + pr)],
        "weight": _floats(w),
        "bias": None if b is None else _floats(b),
        "output": _floats(out),
        "grad_output": _floats(gy),
        "group_channels": group_channels,
        "windows": windows,
        "forward": forward,
        "grad_input": grad_input,
        "grad_weight": grad_weight,
        "grad_bias": grad_bias,
    }


def _floats(a: np.ndarray) -> list:
    """Nested lists of Python floats: each the float64 value of the array's element, as explain reports it."""
    return np.asarray(a, dtype=np.float64).tolist()


def _jsonable(value):
    if isinstance(value, str) or _is_int(value):
        return value if isinstance(value, str) else int(value)
    return [int(v) for v in value]
