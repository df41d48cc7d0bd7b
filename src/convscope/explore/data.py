"""Everything the explore page shows for one layer, from one computation: :func:`layer_data`.

One call of :func:`convscope.conv2d` and one of :func:`convscope.conv2d_backward` give every
array the page draws (the input, the weight, the bias, the output, ``grad_output`` and the three
gradients); they travel as compact typed arrays (base64 of little-endian float32 or float64).
How one element is made is asked for on demand, when a pixel is clicked:

* by the server, with :func:`element` (one :func:`convscope.explain` or
  :func:`convscope.explain_grad` call);
* in the browser, for ``--out`` pages and the notebook widget, by the page's script from the
  arrays (its arithmetic mirrors :func:`element`, and the tests compare the two).

Sizes are bounded (:data:`LIMITS`, :data:`MAX_BYTES`); every bound is checked by
:func:`prepare` before any array is drawn or computed, and a value beyond a bound raises
``ValueError`` naming the parameter, the bound and the value.  Invalid combinations (groups
that do not divide the channels, reflect padding wider than the input, ``'same'`` with a stride,
...) raise the library's own error, unchanged.
"""
from __future__ import annotations

import base64
import io
import numbers
from dataclasses import dataclass

import numpy as np

from ..explain import explain, explain_grad, explain_shape
from ..functional import conv2d, conv2d_backward
from ..geometry import source_map
from ..module import Conv2d
from ..spec import _is_int, as_array

#: Upper bounds of the single parameters (lower bounds and types are the library's).
LIMITS = {
    "height": 1024,        # input height H
    "width": 1024,         # input width W
    "channels": 16,        # input channels C
    "out_channels": 16,
    "kernel_size": 31,     # each of kH, kW
    "stride": 16,
    "dilation": 16,
    "padding": 64,         # each side
    "seed": 2**32 - 1,
}
#: Bytes of all the arrays a page carries (input, weight, bias, output, grad_output and the gradients).
MAX_BYTES = 96 * 2**20
#: Terms one element's explanation lists (an element with more is given with its value only).
MAX_TERMS = 65536

GRAD_OUTPUTS = ("ones", "random")
SCHEMA_VERSION = 2

#: The kernel presets of the page and of ``convscope explore --preset`` (cross-correlation, as conv2d).
KERNELS = {
    "identity": [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
    "box_blur": [[1 / 9] * 3] * 3,
    "gaussian": [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]],
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "sobel_x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "sobel_y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "emboss": [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
}

#: Images shipped inside packages (nothing is downloaded), scaled to [0, 1]: name → (package, what).
IMAGES = {
    "camera": ("scikit-image", "skimage.data.camera(), 512×512 grey"),
    "coins": ("scikit-image", "skimage.data.coins(), 303×384 grey"),
    "astronaut": ("scikit-image", "skimage.data.astronaut(), 512×512 RGB"),
    "digits": ("scikit-learn", "sklearn.datasets.load_digits(), the first 8×8 digit (a 0)"),
}

#: The diverging colour map of the page (blue–white–orange, readable with the common colour-vision
#: deficiencies): value / max|channel| in [−1, 1] → RGB, linear between these stops.
COLORMAP = [[-1.0, [33, 102, 172]], [-0.5, [146, 197, 222]], [0.0, [247, 247, 247]],
            [0.5, [253, 184, 99]], [1.0, [179, 88, 6]]]


def _at_most(name: str, value, limit: int) -> None:
    if value > limit:
        raise ValueError(f"{name} must be at most {limit} in convscope explore, got {value}")


def _check_pair_bound(value, name: str, limit: int) -> None:
    """The upper bound of an int or pair parameter; anything else is left to the library."""
    items = [value] if _is_int(value) else list(value) if isinstance(value, (tuple, list)) else []
    for item in items:
        if _is_int(item) and item > limit:
            raise ValueError(f"{name} must be at most {limit} in convscope explore, got {value!r}")


def one_sample(x, sample=None) -> np.ndarray:
    """An input as (C, H, W): HxW, CxHxW, or NxCxHxW with ``sample`` (needed when N > 1).

    Whole-number arrays become float32; float16 becomes float32 (exactly).
    """
    a = x if isinstance(x, np.ndarray) else as_array(x, "input")
    if a.dtype.kind in "biu":
        a = a.astype(np.float32)
    elif a.dtype.kind != "f":
        raise TypeError(f"input must hold numbers (float16, float32 or float64), got dtype {a.dtype}")
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3:
        if sample not in (None, 0):
            raise ValueError(f"sample must be 0 or None for an unbatched input (C, H, W), got {sample!r}")
        return a
    if a.ndim != 4:
        raise ValueError(f"input must be HxW, CxHxW or NxCxHxW, got shape {a.shape}")
    if sample is None:
        if a.shape[0] != 1:
            raise ValueError(f"input is a batch of {a.shape[0]} samples (shape {a.shape}): pass sample=n to show one")
        return a[0]
    if not _is_int(sample) or not 0 <= sample < a.shape[0]:
        raise ValueError(f"sample must be an int in 0..{a.shape[0] - 1} for an input of shape {a.shape}, got {sample!r}")
    return a[int(sample)]


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


def parse_kernel(kernel) -> np.ndarray:
    """A 2-D kernel from a preset name (:data:`KERNELS`), rows of numbers, or text.

    Text holds rows separated by new lines or ``;``, numbers separated by spaces or ``,``:
    ``"-1 0 1; -2 0 2; -1 0 1"``.  Returns float64 (kH, kW).
    """
    if isinstance(kernel, str):
        text = kernel.strip()
        if text in KERNELS:
            return np.array(KERNELS[text], dtype=np.float64)
        if len(text) > 8000:
            raise ValueError(f"kernel: the text must be at most 8000 characters, got {len(text)}")
        rows = [r for r in text.replace(";", "\n").splitlines() if r.strip()]
        if not rows:
            raise ValueError(f"kernel must be a preset ({', '.join(KERNELS)}) or rows of numbers, got an empty text")
        values = []
        for r, row in enumerate(rows):
            items = row.replace(",", " ").split()
            numbers_ = []
            for k, item in enumerate(items):
                try:
                    numbers_.append(float(item))
                except ValueError:
                    raise ValueError(f"kernel: row {r + 1}, entry {k + 1} is not a number: {item[:20]!r} "
                                     f"(write rows of numbers, like '-1 0 1; -2 0 2; -1 0 1', or a preset: "
                                     f"{', '.join(KERNELS)})") from None
            values.append(numbers_)
        if len({len(v) for v in values}) != 1:
            raise ValueError(f"kernel: every row must have as many numbers, got rows of {[len(v) for v in values]}")
        a = np.array(values, dtype=np.float64)
    else:
        a = np.array(as_array(kernel, "kernel"), dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"kernel must be 2-D (kH, kW), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("kernel must hold finite numbers (no NaN or infinity)")
    _check_pair_bound(tuple(int(s) for s in a.shape), "kernel_size", LIMITS["kernel_size"])
    return a


def load_image(name: str) -> np.ndarray:
    """A bundled image (:data:`IMAGES`) as float32 (C, H, W) in [0, 1]; ImportError names the extra."""
    if not isinstance(name, str) or name not in IMAGES:
        raise ValueError(f"image must be one of {', '.join(IMAGES)}, got {name!r}")
    package = IMAGES[name][0]
    try:
        if package == "scikit-image":
            import skimage.data
            a = getattr(skimage.data, name)()
        else:
            from sklearn.datasets import load_digits
            a = load_digits().images[0] / 16.0
    except ImportError:
        raise ImportError(f"image {name!r} comes with {package}: pip install 'convscope[images]'") from None
    a = np.asarray(a)
    if a.dtype == np.uint8:
        a = a / 255.0
    a = a.astype(np.float32)
    return a.transpose(2, 0, 1).copy() if a.ndim == 3 else a[None]  # (H, W, 3) → (3, H, W)


MAX_FILE_VALUES = 16 * 2**20  # numbers in a loaded file (a 16×1024×1024 input)


def _npy(data: bytes, name: str) -> np.ndarray:
    """A ``.npy`` file's array; its header is checked against the file's size before anything is allocated."""
    fmt = np.lib.format
    f = io.BytesIO(data)
    try:
        version = fmt.read_magic(f)
        header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = header(f)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise ValueError(f"{name}: not a readable .npy file ({exc})") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ValueError(f"{name}: the array must hold numbers, got dtype {dtype}")
    count = int(np.prod(shape, dtype=object))
    if count > MAX_FILE_VALUES:
        raise ValueError(f"{name}: the header claims shape {shape}, {count} numbers; convscope explore loads at "
                         f"most {MAX_FILE_VALUES}")
    need, have = count * dtype.itemsize, len(data) - f.tell()
    if need != have:
        raise ValueError(f"{name}: the header claims shape {shape} of {dtype} ({need} bytes) but the file holds "
                         f"{have} bytes after it: the file is damaged")
    return np.load(io.BytesIO(data), allow_pickle=False)


def _picture(data: bytes, name: str) -> np.ndarray:
    """A PNG or JPEG as float32 (C, H, W) in [0, 1]: one channel for grey pictures, else RGB."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"{name}: reading PNG and JPEG files needs Pillow: pip install 'convscope[images]'") from None
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if h > LIMITS["height"] or w > LIMITS["width"]:
            raise ValueError(f"{name}: the image is {w}×{h} pixels; convscope explore shows at most "
                             f"{LIMITS['width']}×{LIMITS['height']} (make it smaller first)")
        grey = img.mode in ("1", "L", "LA", "I", "I;16", "F")
        scale = {"I;16": 65535.0, "I": 65535.0, "F": 1.0}.get(img.mode, 255.0)
        img = img.convert("F" if img.mode in ("I", "I;16", "F") else "L" if grey else "RGB")
        a = np.asarray(img, dtype=np.float32) / np.float32(scale)
    except ValueError:
        raise
    except Exception as exc:  # Pillow's errors on a damaged file are of many types
        raise ValueError(f"{name}: cannot read the file as a PNG or JPEG image ({type(exc).__name__}: "
                         f"{str(exc)[:120]})") from None
    return a.transpose(2, 0, 1).copy() if a.ndim == 3 else a[None]  # (H, W, 3) → (3, H, W)


def read_file(data: bytes, name: str = "file") -> np.ndarray:
    """The input in a file's bytes: a ``.npy`` (no pickles) or a PNG / JPEG image (Pillow)."""
    if data[:6] == b"\x93NUMPY":
        return _npy(data, name)
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff":
        return _picture(data, name)
    raise ValueError(f"{name}: not a .npy, PNG or JPEG file (it starts with {data[:8]!r})")


@dataclass(frozen=True)
class Plan:
    """A checked request for :func:`build`: every bound holds, nothing is drawn or computed yet."""

    x: np.ndarray | None
    shape: tuple           # (C, H, W)
    layer: Conv2d
    weight: np.ndarray | None
    kernel: np.ndarray | None
    bias: object
    seed: int
    integers: bool
    grad_output: str
    out_hw: tuple
    extra: dict


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


def prepare(x=None, *, input_shape=(5, 5), out_channels=1, kernel_size=3, stride=1, padding=0, dilation=1,
            groups=1, padding_mode="zeros", bias=True, seed=0, integers=False, grad_output="ones", weight=None,
            kernel=None, image=None, sample=None, input_name=None) -> Plan:
    """Check :func:`layer_data`'s arguments, bounds and sizes first, before anything is drawn or computed."""
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
    if sum(v is not None for v in (x, image)) > 1:
        raise ValueError("give the input x or an image name, not both")
    if weight is not None and kernel is not None:
        raise ValueError("give a weight or a kernel, not both")

    extra = {"image": image, "input_name": input_name, "sample": sample}
    if image is not None:
        x = load_image(image)
        extra["input_name"] = image
    if x is None:
        C, H, W = _shape_of(input_shape)
        xa = None
    else:
        batch = np.shape(x)[0] if np.ndim(x) == 4 else None
        xa = one_sample(x, sample)
        extra["batch"] = batch
        C, H, W = xa.shape
    wa = ka = None
    if weight is not None:
        wa = as_array(weight, "weight")
        if wa.ndim != 4:
            raise ValueError(f"weight must be 4-D (C_out, C/groups, kH, kW), got shape {wa.shape}")
        own = tuple(int(k) for k in wa.shape[2:])
        given = (kernel_size, kernel_size) if _is_int(kernel_size) else tuple(kernel_size)
        if out_channels != 1 and out_channels != wa.shape[0]:
            raise ValueError(f"out_channels is the weight's ({wa.shape[0]}) when a weight is given, got {out_channels!r}")
        if kernel_size != 3 and given != own:
            raise ValueError(f"kernel_size is the weight's {own} when a weight is given, got {kernel_size!r}")
        out_channels, kernel_size = int(wa.shape[0]), own
    elif kernel is not None:
        ka = parse_kernel(kernel)
        kernel_size = tuple(int(s) for s in ka.shape)
        extra["kernel_name"] = kernel if isinstance(kernel, str) and kernel.strip() in KERNELS else None
    check_bounds(C, H, W, out_channels, kernel_size, stride, padding, dilation)
    # The layer validates the hyper-parameters with nn.Conv2d's rules and messages.
    layer = Conv2d(C, out_channels, kernel_size, stride, padding, dilation, groups,
                   bias=bias is not None and bias is not False, padding_mode=padding_mode)
    spec = layer.spec
    Ho, Wo = spec.output_hw((H, W))
    (pt, pb), (pl, pr) = spec.padding
    if Ho > 0 and Wo > 0:
        itemsize = 8 if xa is not None and xa.dtype == np.float64 else 4
        O, Cg, (kH, kW) = layer.out_channels, C // spec.groups, spec.kernel_size
        count = 2 * C * H * W + 2 * O * Cg * kH * kW + 2 * O + 2 * O * Ho * Wo + C * (H + pt + pb) * (W + pl + pr)
        if count * itemsize > MAX_BYTES:
            raise ValueError(
                f"this layer's arrays take {count * itemsize / 2**20:.0f} MiB (input {C}×{H}×{W}, output "
                f"{O}×{Ho}×{Wo}, their gradients and the padded input); convscope explore shows at most "
                f"{MAX_BYTES // 2**20} MiB: make the input or out_channels smaller")
    return Plan(xa, (C, H, W), layer, wa, ka, bias, int(seed), bool(integers), grad_output, (Ho, Wo), extra)


def build(plan: Plan) -> dict:
    """The page's data of a checked request (see :func:`layer_data`) and the arrays behind it."""
    layer, spec = plan.layer, plan.layer.spec
    C, H, W = plan.shape
    rng = np.random.default_rng(plan.seed)
    xa = plan.x
    if xa is None:
        xa = _random(rng, (C, H, W), plan.integers, -9, np.float32)
    elif not np.all(np.isfinite(xa)):
        raise ValueError("input must hold finite numbers (no NaN or infinity)")
    dtype = xa.dtype
    kH, kW = spec.kernel_size
    wshape = (layer.out_channels, C // spec.groups, kH, kW)
    if plan.weight is not None:
        if not np.all(np.isfinite(plan.weight)):
            raise ValueError("weight must hold finite numbers (no NaN or infinity)")
        w = plan.weight
    elif plan.kernel is not None:
        w = np.broadcast_to(plan.kernel.astype(dtype), wshape).copy()
    else:
        w = _random(rng, wshape, plan.integers, -3, dtype, normal=False)
    b = _bias_array(plan.bias, rng, layer.out_channels, plan.integers, dtype)
    params = dict(stride=spec.stride, padding=spec.padding_arg, dilation=spec.dilation, groups=spec.groups,
                  padding_mode=spec.padding_mode)
    out = conv2d(xa, w, b, **params)  # the input-dependent checks (reflect width, empty output) are conv2d's
    O, Ho, Wo = out.shape
    if not np.all(np.isfinite(out)):
        raise ValueError(f"the output is not finite in {dtype} (it overflows): use smaller numbers or float32")
    gy = (np.ones(out.shape, dtype=dtype) if plan.grad_output == "ones"
          else _random(rng, out.shape, plan.integers, -3, dtype))
    grads = conv2d_backward(gy, xa, w, **params)

    (pt, pb), (pl, pr) = spec.padding
    shape = explain_shape((C, H, W), spec.kernel_size, stride=spec.stride, padding=spec.padding_arg,
                          dilation=spec.dilation, out_channels=O)
    whole = all(np.all(a == np.round(a)) and np.all(np.abs(a) < 2**20) for a in (xa, w, gy, b) if a is not None)
    extra = plan.extra
    data = {
        "version": SCHEMA_VERSION,
        "config": {
            "input_shape": [C, H, W], "out_channels": O, "kernel_size": [kH, kW],
            "stride": list(spec.stride), "padding": _jsonable(spec.padding_arg),
            "padding_resolved": [[pt, pb], [pl, pr]], "dilation": list(spec.dilation), "groups": spec.groups,
            "padding_mode": spec.padding_mode, "bias": b is not None,
            "bias_given": None if b is None or plan.bias is True else _floats(b), "seed": plan.seed,
            "integers": plan.integers, "grad_output": plan.grad_output, "input_given": plan.x is not None,
            "image": extra.get("image"), "input_name": extra.get("input_name"),
            "sample": extra.get("sample"), "batch": extra.get("batch"),
            "kernel_given": plan.kernel is not None, "kernel_name": extra.get("kernel_name"),
            "kernel_values": None if plan.kernel is None else plan.kernel.tolist(),
            "dtype": str(dtype), "layer": repr(layer), "decimals": 0 if whole else 4,
            "weight_given": plan.weight is not None,
        },
        "shape": {"text": str(shape), "output_hw": [Ho, Wo]},
        "source_rows": source_map(H, pt, pb, spec.padding_mode).tolist(),
        "source_cols": source_map(W, pl, pr, spec.padding_mode).tolist(),
        "arrays": {
            "x": encode(xa), "weight": encode(w), "bias": None if b is None else encode(b), "output": encode(out),
            "grad_output": encode(gy), "grad_input": encode(grads.input), "grad_weight": encode(grads.weight),
            "grad_bias": encode(grads.bias),
        },
    }
    data["_arrays"] = (xa, w, b, gy, params)
    return data


def layer_data(x=None, *, input_shape=(5, 5), out_channels=1, kernel_size=3, stride=1, padding=0,
               dilation=1, groups=1, padding_mode="zeros", bias=True, seed=0, integers=False,
               grad_output="ones", weight=None, kernel=None, image=None, sample=None, input_name=None) -> dict:
    """The explore page's data for one ``Conv2d`` layer and one input sample.

    Parameters
    ----------
    x : array (H, W), (C, H, W) or (N, C, H, W) (then ``sample`` picks one), or None for a seeded
        random input of ``input_shape``; whole-number arrays are taken as float32.  Never modified.
    input_shape : (H, W), (C, H, W) or (1, C, H, W), used when ``x`` and ``image`` are None
    out_channels, kernel_size, stride, padding, dilation, groups, padding_mode :
        ``nn.Conv2d``'s parameters
    bias : True (seeded random, the default, like ``nn.Conv2d``), False/None (no bias), or a number
        or one number per output channel
    seed : seed of the random input, weight, bias and grad_output
        (``np.random.default_rng(seed)``, drawn in that order, as ``convscope explain`` draws them)
    integers : whole random numbers (input in −9..9, weight, bias and grad_output in −3..3)
    grad_output : ``'ones'`` (the gradients of ``L = out.sum()``) or ``'random'`` (seeded)
    weight : array (C_out, C/groups, kH, kW), or None; when given, ``out_channels`` and
        ``kernel_size`` are its shape's, and its dtype must be the input's
    kernel : a preset name (:data:`KERNELS`), a 2-D array or text (``"-1 0 1; -2 0 2; -1 0 1"``):
        every ``weight[o, c]`` is this kernel
    image : a bundled image's name (:data:`IMAGES`) as the input
    sample, input_name : the sample of a batch ``x`` to show, and the input's name for the page

    Returns
    -------
    dict (JSON-able once :func:`public` drops the arrays kept for the server) with ``config``,
    ``shape`` (``explain_shape``'s ``text`` and ``output_hw``), ``source_rows`` / ``source_cols``
    (the real row / column each padded row / column reads, −1 for zero padding) and ``arrays``:
    ``x`` (C, H, W), ``weight``, ``bias`` (or null), ``output`` (C_out, H_out, W_out),
    ``grad_output``, ``grad_input``, ``grad_weight``, ``grad_bias``, each ``{"shape", "dtype",
    "b64"}`` (see :func:`encode`).

    Examples
    --------
    >>> d = layer_data(input_shape=(3, 3), kernel_size=2, integers=True)
    >>> d["shape"]["output_hw"], decode(d["arrays"]["output"]).shape
    ([2, 2], (1, 2, 2))
    >>> e = element(d, "output", (0, 1, 1))
    >>> e["v"] == float(decode(d["arrays"]["output"])[0, 1, 1])
    True
    """
    return build(prepare(x, input_shape=input_shape, out_channels=out_channels, kernel_size=kernel_size,
                         stride=stride, padding=padding, dilation=dilation, groups=groups,
                         padding_mode=padding_mode, bias=bias, seed=seed, integers=integers,
                         grad_output=grad_output, weight=weight, kernel=kernel, image=image, sample=sample,
                         input_name=input_name))


def public(data: dict) -> dict:
    """The JSON-able part of :func:`layer_data`'s dict (without the arrays kept for :func:`element`)."""
    return {k: v for k, v in data.items() if not k.startswith("_")}


def encode(a: np.ndarray) -> dict:
    """``{"shape", "dtype", "b64"}``: the array as base64 of its little-endian float32 / float64 bytes."""
    a = np.ascontiguousarray(a, dtype="<f8" if a.dtype == np.float64 else "<f4")
    return {"shape": list(a.shape), "dtype": "float64" if a.dtype == np.float64 else "float32",
            "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode(item: dict) -> np.ndarray:
    """The array :func:`encode` wrote."""
    dtype = "<f8" if item["dtype"] == "float64" else "<f4"
    return np.frombuffer(base64.b64decode(item["b64"]), dtype=dtype).reshape(item["shape"])


# --------------------------------------------------------------------------- one element


KINDS = ("output", "input", "weight", "bias")


def _hw(index) -> tuple[int, int]:
    """(h, w) of a term's input pixel, (−1, −1) for zero padding (the index may carry the sample)."""
    return (-1, -1) if index is None else (int(index[-2]), int(index[-1]))


def element(data: dict, kind: str, at) -> dict:
    """How one element of :func:`layer_data`'s layer is made, from :func:`convscope.explain` or
    :func:`convscope.explain_grad` (the page's number view).

    ``kind`` is ``'output'`` (``at = (o, i, j)``), ``'input'`` (∂L/∂x, ``(c, h, w)``), ``'weight'``
    (∂L/∂w, ``(o, c, u, v)``) or ``'bias'`` (``(o,)``).  Returns ``{"kind", "at", "v": value,
    "s": Σ of the terms (float64), "n": number of terms}`` and

    * output: ``"channels"`` (input channels read), ``"taps"`` ``[[u, v, padded_row, padded_col,
      h, w, is_padding], ...]``, ``"x"``, ``"w"``, ``"p"`` (per channel, the window's values, the
      kernel's and the products, in the taps' order), ``"cs"`` (sum per channel), ``"bias"``;
    * input: ``"t"`` ``[[o, i, j, c_in_group, u, v, padded_row, padded_col, is_padding, grad_out,
      w, product], ...]`` and ``"r"`` (why no window reads the pixel, or null);
    * weight: ``"ch"`` (the input channel), ``"t"`` ``[[i, j, padded_row, padded_col, h, w,
      is_padding, grad_out, x̃, product], ...]``;

    with no ``"t"`` (and ``"s"`` null) when there are more than :data:`MAX_TERMS` terms.
    """
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    xa, w, b, gy, params = data["_arrays"]
    O, Cg, kH, kW = w.shape
    Ho, Wo = gy.shape[1:]
    if kind == "weight" and Ho * Wo > MAX_TERMS:
        return _without_terms(kind, at, w.shape, "weight", Ho * Wo, data)
    if kind == "bias" and Ho * Wo > MAX_TERMS:
        return _without_terms(kind, at, (O,), "bias", Ho * Wo, data)
    if kind == "output":
        e = explain(w, xa, at, bias=b, **params)
        taps = kH * kW
        blocks = [e.terms[c * taps:(c + 1) * taps] for c in range(Cg)]
        return {"kind": kind, "at": list(e.at), "v": e.value, "s": e.sum_of_products, "n": len(e.terms),
                "bias": e.bias if e.has_bias else None, "channels": list(e.channels),
                "taps": [[*t.tap, *t.padded_index, *_hw(t.input_index), int(t.is_padding)] for t in blocks[0]],
                "x": [[t.input_value for t in bl] for bl in blocks], "w": [[t.weight_value for t in bl] for bl in blocks],
                "p": [[t.product for t in bl] for bl in blocks],
                "cs": [float(np.sum([t.product for t in bl])) for bl in blocks]}
    e = explain_grad(w, xa, gy, kind, at, **params)
    item = {"kind": kind, "at": list(e.at), "v": e.value, "s": e.sum_of_products, "n": len(e.terms)}
    if kind == "input":
        item["r"] = e.reason
        item["t"] = [[*t.output_index[-3:], *t.weight_index[1:], *t.padded_index, int(t.is_padding),
                      t.grad_output_value, t.weight_value, t.product] for t in e.terms]
    elif kind == "weight":
        item["ch"] = e.channels.start
        item["t"] = [[*t.output_index[-2:], *t.padded_index, *_hw(t.input_index), int(t.is_padding),
                      t.grad_output_value, t.input_value, t.product] for t in e.terms]
    return item


def _without_terms(kind: str, at, shape: tuple, name: str, count: int, data: dict) -> dict:
    """An element with too many terms to list: its value (conv2d_backward's), and why no terms."""
    index = tuple(int(v) for v in (at if isinstance(at, (tuple, list)) else (at,)))
    if len(index) != len(shape) or not all(0 <= v < s for v, s in zip(index, shape)):
        raise ValueError(f"at must be an index of the {name} gradient, shape {shape}, got {at!r}")
    value = float(decode(data["arrays"]["grad_" + name])[index])
    return {"kind": kind, "at": list(index), "v": value, "s": None, "n": count, "t": None,
            "ch": None if kind != "weight" else index[1] + (index[0] // (shape[0] // data["config"]["groups"]))
            * shape[1]}


def _floats(a: np.ndarray) -> list:
    """Nested lists of Python floats: each the float64 value of the array's element, as explain reports it."""
    return np.asarray(a, dtype=np.float64).tolist()


def _jsonable(value):
    if isinstance(value, str) or _is_int(value):
        return value if isinstance(value, str) else int(value)
    return [int(v) for v in value]
