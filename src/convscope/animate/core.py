"""``animate``: a convolution, or one of its gradients, as frames, one number per frame."""
from __future__ import annotations

import numbers
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..explain.core import Explainer, Explanation, _arguments, _prepare
from ..explain.render import check_decimals, decimals_for
from ..module import layer_arguments_text
from ..spec import _is_int, check_positive_int
from . import media
from . import scenes as sc

MAX_FRAMES = 400        # the default bound on the number of frames (max_frames raises it)
MAX_GRID = 32           # the largest grid drawn (rows or columns of the padded input, the output, ...)
MAX_FRAME_BYTES = 300_000_000  # frames are kept as one byte per pixel; more than this is refused
DEFAULT_FPS = 2.0
MAX_FPS = 50.0
KINDS = {None: "output", "input": "input", "weight": "weight"}


def _require_viz():
    """Import matplotlib and Pillow, or say which extra installs them."""
    try:
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "matplotlib or Pillow"
        raise ModuleNotFoundError(f"convscope.animate needs matplotlib and Pillow ({missing} is not installed): "
                                  "pip install 'convscope[viz]'", name=missing) from None


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FrameInfo:
    """What one frame shows, as text: the element, its value and every string drawn.

    ``at`` is the element (``explain``'s ``at`` for the forward pass, ``explain_grad``'s for a
    gradient), ``value`` its number, ``value_text`` that number as drawn, ``title`` and
    ``subtitle`` the header, ``lines`` the arithmetic (terms, sums, the result), ``captions``
    the panel captions and ``side`` the per-slot sums, keyed like :meth:`Animation.cell_box`;
    ``cells`` the text of every cell, ``{(panel, slot): rows of strings}``.
    ``explanation`` is the :class:`~convscope.Explanation` every number comes from.
    """

    at: tuple
    value: float
    value_text: str
    title: str
    subtitle: str
    lines: tuple
    captions: dict = field(repr=False)
    side: dict = field(repr=False)
    cells: dict = field(repr=False)
    explanation: Explanation = field(repr=False)


class Frames(Sequence):
    """The frames as RGB ``uint8`` arrays ``(height, width, 3)``, made on access from the stored palette indices."""

    def __init__(self, indices: list[np.ndarray]):
        from .draw import PALETTE

        self._indices = indices
        self._palette = PALETTE

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self._palette[ix] for ix in self._indices[k]]
        return self._palette[self._indices[k]]


class Animation:
    """Frames of a convolution (or of one gradient), with where each panel's cells are drawn.

    ``len(a)`` frames; ``a.frames[k]`` is frame ``k`` as an RGB array, ``a.info[k]`` its
    :class:`FrameInfo`.  ``a.save('conv.gif')`` (Pillow) or ``a.save('conv.mp4')`` (ffmpeg)
    writes it; in Jupyter the animation shows itself inline.

    Attributes
    ----------
    kind : ``'output'`` (the forward pass), ``'input'`` or ``'weight'`` (a gradient)
    layer : the layer as torch prints it (``Conv2d(1, 1, kernel_size=(3, 3), ...)``) and the input's
        shape, as the frames' header shows them
    size : ``(width, height)`` of every frame in pixels
    fps : frames per second used by :meth:`save` and the notebook display (a GIF holds its last
        frame three times as long)
    panels : ``{(panel, slot): PanelBox}``: the grid of every panel (see :meth:`cell_box`)
    """

    def __init__(self, kind: str, indices: list[np.ndarray], layout, info: list[FrameInfo], fps: float, layer: str):
        self.kind = kind
        self.layer = layer
        self._indices = indices
        self._layout = layout
        self.info = tuple(info)
        self.frames = Frames(indices)
        self.fps = fps
        self.size = (layout.width, layout.height)
        self.panels = dict(layout.boxes)

    def __len__(self) -> int:
        return len(self._indices)

    def __repr__(self) -> str:
        what = {"output": "the output", "input": "∂L/∂input", "weight": "∂L/∂weight"}[self.kind]
        return f"<Animation of {what}: {len(self)} frames, {self.size[0]}×{self.size[1]} px, {self.fps:g} fps>"

    def cell_box(self, panel: str, row: int, col: int, slot: int = 0) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: the pixels of one cell (``frame[y0:y1, x0:x1]``), the same in every frame.

        ``panel`` is one of ``'input'`` (the padded input x̃; ``row``, ``col`` are padded
        coordinates, as :attr:`Term.padded_index`), ``'kernel'``, ``'output'``,
        ``'grad_output'``, ``'grad_input'``, ``'grad_weight'``; ``slot`` numbers the panels of
        one column: for the forward pass the input channels of the output channel's group
        (slot ``c`` shows the explanation's channel ``c``), for ``grad='input'`` the output
        channels of the pixel's group, for ``grad='weight'`` the samples.
        """
        key = (panel, slot)
        if key not in self.panels:
            names = ", ".join(f"{p!r} slot {s}" for p, s in self.panels)
            raise KeyError(f"no panel {panel!r} slot {slot} in this animation (it has {names})")
        return self.panels[key].cell(row, col)

    def _fps(self, fps) -> float:
        return self.fps if fps is None else _check_fps(fps)

    def gif(self, fps: float | None = None) -> bytes:
        """The animation as GIF bytes."""
        return media.gif_bytes(self._indices, self._fps(fps))

    def save(self, path, fps: float | None = None) -> pathlib.Path:
        """Write a ``.gif`` (Pillow) or an ``.mp4`` (ffmpeg, which must be on PATH); returns the path.

        Raises ValueError for another suffix, RuntimeError when ffmpeg is missing or fails, and
        OSError when the file cannot be written.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or a path, got {type(path).__name__}")
        path = pathlib.Path(path)
        suffix = path.suffix.lower()
        rate = self._fps(fps)
        if suffix == ".gif":
            media.write_gif(path, self._indices, rate)
        elif suffix == ".mp4":
            media.write_mp4(path, self._indices, rate)
        else:
            raise ValueError(f"path must end in .gif or .mp4, got {suffix or 'no suffix'} ({str(path)!r})")
        return path

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """Jupyter shows the animation as ``image/gif`` output, with its size in ``text/plain``."""
        return media.mimebundle(self._indices, self.fps, self.frames[0], f"{len(self)} frames: {self.info[0].title} …")


# --------------------------------------------------------------------------- arguments


def _check_fps(fps) -> float:
    if not isinstance(fps, numbers.Real) or isinstance(fps, (bool, np.bool_)):
        raise TypeError(f"fps must be a number, got {fps!r} ({type(fps).__name__})")
    if not 0 < float(fps) <= MAX_FPS:
        raise ValueError(f"fps must be greater than 0 and at most {MAX_FPS:g}, got {fps}")
    return float(fps)


def _optional_index(value, size: int, name: str, what: str):
    """None, or ``value`` as an index into ``size`` things (negative counts from the end)."""
    if value is None:
        return None
    if not _is_int(value):
        raise TypeError(f"{name} must be an int or None, got {value!r} ({type(value).__name__})")
    if not -size <= value < size:
        raise ValueError(f"{name} must be in 0..{size - 1} (or −{size}..−1) for {what}, got {value}")
    return int(value) % size


def _layer_text(spec, shape, has_bias: bool | None, input_shape) -> str:
    """``Conv2d(...)`` as torch prints it, and the input's shape."""
    return (f"Conv2d({layer_arguments_text(shape.C, shape.out_channels, spec, has_bias)}) "
            f"on an input of shape {tuple(input_shape)}")


def _longest(texts, count: int = 6) -> list:
    """The ``count`` longest texts (by characters): the ones to measure when sizing a column."""
    return sorted(texts, key=len, reverse=True)[:count]


def _is_whole(*arrays) -> bool:
    for a in arrays:
        if a is None:
            continue
        a = np.asarray(a, dtype=np.float64)
        if not (np.all(np.isfinite(a)) and np.all(a == np.round(a)) and np.all(np.abs(a) < 1e9)):
            return False
    return True


_LEGEND = {
    "output": [("window", "read by the kernel (window)"), ("current", "this output"),
               ("pending", "not computed yet")],
    "input": [("window", "in this sum"), ("current", "this pixel's gradient"), ("pending", "not computed yet")],
    "weight": [("window", "in this sum"), ("current", "this weight's gradient"), ("pending", "not computed yet")],
}


def _legend(kind: str, spec) -> list:
    items = list(_LEGEND[kind])
    if spec.padding != ((0, 0), (0, 0)):
        mode = spec.padding_mode
        items.insert(1, ("padding", "padding (0)" if mode == "zeros" else f"padding ({mode}: a copy)"))
        items.insert(2, ("window_padding", "padding in the sum"))
        if mode != "zeros":
            items.insert(3, ("source", "pixel a padding cell copies"))
    return items


# --------------------------------------------------------------------------- animate


def animate(layer_or_weight, x, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", *,
            grad=None, grad_output=None, sample=0, out_channel=None, in_channel=None, max_frames=MAX_FRAMES,
            decimals=None, fps=DEFAULT_FPS, transposed=False, output_padding=0) -> Animation:
    """Animate a convolution: one frame per output element, or per element of a gradient.

    The parameters are :func:`convscope.explain`'s: a convscope or torch ``Conv2d`` layer, or a
    weight with ``bias``, ``stride``, ``padding``, ``dilation``, ``groups`` and ``padding_mode``;
    ``x`` a NumPy array or torch tensor, ``(N, C, H, W)`` or unbatched ``(C, H, W)``.

    * ``grad=None`` (the forward pass): one frame per output element ``out[n, o, i, j]`` of
      sample ``sample``, row by row.  Each frame shows, for every input channel of the output
      channel's group, the padded input x̃ with the cells the kernel window reads (only the taps:
      dilation gaps stay unhighlighted; the dashed outline is the window's extent, and it moves
      by the stride from frame to frame), padding cells in grey (a reflect, replicate or circular
      padding cell in the window marks the pixel it copies), the kernel ``w[o, c]``, each
      channel's sum; then the products ``x̃·w``, their sum, the bias and the value, and the output
      grid filling in::

          out[n, o, i, j] = bias[o] + Σ_c Σ_u Σ_v x̃[n, g·Cg + c, i·sH + u·dH, j·sW + v·dW] · w[o, c, u, v]

    * ``grad='input'``: one frame per input pixel ``(n, c, h, w)``: the cells of ``grad_output``
      and the kernel taps whose products make ``∂L/∂x[n, c, h, w] = Σ grad_out · w``, and the
      input gradient filling in.
    * ``grad='weight'``: one frame per weight ``(o, c, u, v)``: the input cells the tap reads
      and the ``grad_output`` cells, ``∂L/∂w[o, c, u, v] = Σ_n Σ_i Σ_j grad_out · x̃``, and the
      weight gradient filling in (every sample of the batch is drawn).

    ``L = Σ out · grad_output``; ``grad_output=None`` means ones (``L = out.sum()``), as in
    :func:`convscope.explain_grad`.  Every number drawn comes from :func:`~convscope.explain` /
    :func:`~convscope.explain_grad` (one explanation per frame, in :attr:`FrameInfo.explanation`).

    Parameters
    ----------
    sample : the sample of a batched input whose frames are drawn (forward and ``'input'``)
    out_channel : only the frames of this output channel (forward and ``'weight'``)
    in_channel : only the frames of this input channel (``'input'``), or of ``weight[:, in_channel]``
        (``'weight'``, an index inside the group)
    max_frames : refuse animations with more frames than this (default :data:`MAX_FRAMES` = 400)
    decimals : decimals shown; None: whole numbers when every number is whole, else 2 in the
        grids and 4 in the sums
    fps : frames per second of :meth:`Animation.save` and the notebook display (default 2)
    transposed, output_padding : ``transposed=True`` (implied by a convscope or torch
        ``ConvTranspose2d`` layer) animates ``conv_transpose2d(x, weight, bias, stride, padding,
        output_padding, groups, dilation)``, the weight ``(C_in, C_out/groups, kH, kW)``: one frame per
        input element stamping its weighted kernel onto the output, whose sums build up, and a frame
        adding the bias (see :mod:`convscope.animate.transposed`)

    Grids of more than :data:`MAX_GRID` (32) rows or columns are refused, and so are animations
    whose frames would take more than 300 MB.  Needs matplotlib and Pillow
    (``pip install 'convscope[viz]'``).

    Examples
    --------
    >>> import numpy as np
    >>> from convscope.animate import animate
    >>> x = np.arange(16.0).reshape(1, 4, 4)
    >>> a = animate(np.ones((1, 1, 3, 3)), x, padding=1, stride=2)
    >>> len(a), a.info[0].at
    (4, (0, 0, 0))
    >>> print("\\n".join(a.info[0].lines))
    Σ x̃·w = 0×1 + 0×1 + 0×1 + 0×1 + 0×1 + 1×1 + 0×1 + 4×1 + 5×1 = 10
    out[0, 0, 0] = Σ (no bias) = 10
    >>> x0, y0, x1, y1 = a.cell_box("input", 1, 1)      # padded cell (1, 1) holds x[0, 0, 0]
    >>> a.frames[0][y0 + 4, x0 + 3].tolist()            # the window's colour (THEME["window"])
    [255, 217, 102]
    >>> a.save("conv.gif")                              # doctest: +SKIP
    PosixPath('conv.gif')
    """
    if not isinstance(transposed, (bool, np.bool_)):
        raise TypeError(f"transposed must be True or False, got {transposed!r}")
    if transposed or getattr(layer_or_weight, "transposed", False) is True:
        from .transposed import animate_transposed

        return animate_transposed(layer_or_weight, x, bias, stride, padding, dilation, groups, padding_mode,
                                  output_padding=output_padding, grad=grad, grad_output=grad_output, sample=sample,
                                  out_channel=out_channel, in_channel=in_channel, max_frames=max_frames,
                                  decimals=decimals, fps=fps)
    if not (_is_int(output_padding) and output_padding == 0):
        raise ValueError(f"output_padding is a parameter of transposed convolutions: pass transposed=True "
                         f"(got output_padding={output_padding!r})")
    if grad is not None and (not isinstance(grad, str) or grad not in ("input", "weight")):
        hint = (" (∂L/∂bias is Σ grad_output, with no window to draw: see explain_grad(..., wrt='bias'))"
                if grad == "bias" else "")
        raise ValueError(f"grad must be None, 'input' or 'weight', got {grad!r}{hint}")
    kind = KINDS[grad]
    args, _ = _arguments(layer_or_weight, "animate(layer, x)", bias=bias, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, padding_mode=padding_mode)
    if grad is None and grad_output is not None:
        raise ValueError("grad_output is used only with grad='input' or grad='weight'")
    xa, wa, ba, ga, spec, shape, _ = _prepare(args["weight"], x, args["bias"] if grad is None else None,
                                              args["stride"], args["padding"], args["dilation"], args["groups"],
                                              args["padding_mode"], grad_output, with_grad=grad is not None)
    unbatched = xa.ndim == 3
    max_frames = check_positive_int(max_frames, "max_frames")
    fps = _check_fps(fps)
    decimals = check_decimals(decimals)
    if kind == "weight" and not (_is_int(sample) and sample == 0):
        raise ValueError("sample selects the frames of the forward pass and of grad='input'; grad='weight' sums "
                         f"over every sample, got sample={sample!r}")
    if sample is None:
        raise TypeError("sample must be an int, got None")
    n = _optional_index(sample, shape.N, "sample", "an unbatched input (one sample)" if unbatched else
                        f"a batch of {shape.N}")
    kH, kW = spec.kernel_size
    O, Cg = shape.out_channels, shape.in_per_group
    if kind == "input" and out_channel is not None:
        raise ValueError("out_channel selects the frames of the forward pass and of grad='weight'; "
                         "for grad='input' use in_channel")
    if kind == "output" and in_channel is not None:
        raise ValueError("in_channel selects the frames of grad='input' and grad='weight'; "
                         "the forward pass has one frame per output element: use out_channel")
    o_sel = _optional_index(out_channel, O, "out_channel", f"{O} output channel(s)")
    if kind == "input":
        c_sel = _optional_index(in_channel, shape.C, "in_channel", f"{shape.C} input channel(s)")
    else:
        c_sel = _optional_index(in_channel, Cg, "in_channel", f"the weight's {Cg} input channel(s) (C/groups)")
    outs = [o_sel] if o_sel is not None else list(range(O))
    prefix = () if unbatched else (n,)
    if kind == "output":
        ats = [prefix + (o, i, j) for o in outs for i in range(shape.H_out) for j in range(shape.W_out)]
        rule = f"one frame per output element: {len(outs)} output channel(s) × {shape.H_out} × {shape.W_out}"
        how = "pass out_channel=O (--out-channel), a smaller input, or a larger max_frames"
    elif kind == "input":
        chans = [c_sel] if c_sel is not None else list(range(shape.C))
        ats = [prefix + (c, h, w) for c in chans for h in range(shape.H) for w in range(shape.W)]
        rule = f"one frame per input pixel: {len(chans)} channel(s) × {shape.H} × {shape.W}"
        how = "pass in_channel=C (--in-channel), a smaller input, or a larger max_frames"
    else:
        chans = [c_sel] if c_sel is not None else list(range(Cg))
        ats = [(o, c, u, v) for o in outs for c in chans for u in range(kH) for v in range(kW)]
        rule = f"one frame per weight element: {len(outs)} × {len(chans)} × {kH} × {kW}"
        how = "pass out_channel=O or in_channel=C (--out-channel, --in-channel), or a larger max_frames"
    if len(ats) > max_frames:
        raise ValueError(f"animate draws {rule} = {len(ats)} frames, more than max_frames={max_frames}; {how}")
    (pt, pb), (pl, pr) = spec.padding
    grids = {"the padded input": (shape.H + pt + pb, shape.W + pl + pr), "the output": (shape.H_out, shape.W_out)}
    for what, (rows, cols) in grids.items():
        if max(rows, cols) > MAX_GRID:
            raise ValueError(f"animate draws every cell of {what}, which is {rows}×{cols} here, more than "
                             f"{MAX_GRID}×{MAX_GRID}; use a smaller (cropped) input")

    _require_viz()
    from . import draw

    params = dict(stride=spec.stride, padding=spec.padding_arg, dilation=spec.dilation, groups=spec.groups,
                  padding_mode=spec.padding_mode)
    explainer = Explainer(wa, xa, ba, **params, grad_output=ga)   # one convolution (or backward) for every frame
    if kind == "output":
        explanations = [explainer.explain(at) for at in ats]
    else:
        explanations = [explainer.explain_grad(grad, at) for at in ats]

    whole = _is_whole(xa, wa, ba, ga) and all(decimals_for(e) == 0 for e in explanations)
    grid_dec = decimals if decimals is not None else (0 if whole else 2)
    sum_dec = decimals if decimals is not None else (0 if whole else 4)
    x4 = xa[None] if unbatched else xa
    g4 = None if ga is None else (ga[None] if unbatched else ga)
    ctx = sc.Context(kind=kind, spec=spec, shape=shape, x4=x4, w=wa, g4=g4, unbatched=unbatched, sample=n,
                     grid_decimals=grid_dec, sum_decimals=sum_dec,
                     layer=_layer_text(spec, shape, (ba is not None) if kind == "output" else None, xa.shape),
                     loss="L = out.sum()" if grad_output is None else "L = Σ out · grad_output")
    panels = sc.panels_for(ctx)

    # pass 1 (no wrapping): every string, to size the cells and columns; pass 2 wraps the arithmetic
    measure = draw.Measure()
    rough = sc.build_scenes(ctx, explanations, width=10**6)
    cell_w = draw.cell_width(measure, _longest({t for s in rough for rows in s.texts.values() for row in rows
                                                for t in row}))
    captions: dict = {}
    side: dict = {}
    for s in rough:
        for key, text in s.captions.items():
            captions.setdefault(key, set()).add(text)
        for key, text in s.side.items():
            side.setdefault(key, set()).add(text)
    captions = {key: _longest(texts) for key, texts in captions.items()}
    side = {key: _longest(texts) for key, texts in side.items()}
    headers = ([(0, t) for t in _longest({s.title for s in rough})]
               + [(1, t) for t in _longest({s.subtitle for s in rough} | {ctx.layer})])
    legend = _legend(kind, spec)
    first = draw.make_layout(panels, measure, cell_w, captions, side, headers, 0, legend)
    scenes = sc.build_scenes(ctx, explanations, width=first.line_chars)
    layout = draw.make_layout(panels, measure, cell_w, captions, side, headers, max(len(s.lines) for s in scenes),
                              legend, width=first.width)
    size = layout.width * layout.height * len(scenes)
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"the frames would take {size / 1e6:.0f} MB ({len(scenes)} frames of "
                         f"{layout.width}×{layout.height} px), more than {MAX_FRAME_BYTES / 1e6:.0f} MB; {how}")

    renderer = draw.Renderer(layout, panels, ctx.layer)
    pal = draw.palette_image()
    try:
        indices = [draw.quantize(renderer.render(s), pal) for s in scenes]
    finally:
        renderer.close()
    info = [FrameInfo(at=e.at, value=e.value, value_text=s.value_text, title=s.title, subtitle=s.subtitle,
                      lines=tuple(s.lines), captions=dict(s.captions), side=dict(s.side), cells=dict(s.texts),
                      explanation=e)
            for e, s in zip(explanations, scenes)]
    return Animation(kind, indices, layout, info, fps, ctx.layer)
