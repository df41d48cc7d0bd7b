"""The transposed mode of :func:`~convscope.animate.animate`: each input element stamps its weighted
kernel onto the output, frame by frame, and the output's sums build up.

One frame per input element ``x[n, c, i, j]`` of the output channel's group (then, with a bias, one
frame adding it): the element's value times the kernel ``w[c, o']`` (the stamp) is added to the
output cells ``out[n, o, i·sH − pH + u·dH, j·sW − pW + v·dW]``.  The output grid of every frame is
:func:`convscope.conv_transpose2d` of the elements stamped so far; the last frame of an output
channel is ``conv_transpose2d``'s output itself.  A grid of tap counts (how many kernel taps of one
channel land on each output cell, shaded from few to many) shows the uneven overlap: at stride 2
with a 3×3 kernel, the checkerboard of 1, 2 and 4 taps.

Panels (``slot`` as in :mod:`.scenes`):

=========== =============== ================================== ==================
left        column ``a``    column ``b``                       right
=========== =============== ================================== ==================
``input``:  ``kernel`` (0): ``stamp`` (0): x[n, c, i, j] ·      ``output``:
x[n, c]     w[c, o'];       w[c, o'], the cells cropped by      out[n, o], the
            ``taps`` (1)    the padding in grey                 sums so far
=========== =============== ================================== ==================
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from .._transposed_view import gather_axes, tap_counts, transposed_arguments
from ..explain.render import check_decimals, idx, num
from ..functional import conv_transpose2d
from ..module import layer_arguments_text
from ..spec import bind_transpose, check_positive_int
from . import scenes as sc
from .core import Animation

TAP_STATES = (sc.TAPS_1, sc.TAPS_2, sc.TAPS_3)
MIN_FRAME_PIXELS = 600 * 250   # no frame is smaller (the layout's minimum width; the header, two panels, the legend)


@dataclass(frozen=True)
class StampInfo:
    """What one frame of a transposed animation shows, as text, and the output grid drawn.

    ``at`` is the input element stamped (``(n, c, i, j)``, or ``(c, i, j)`` unbatched), None for the
    frame that adds the bias; ``out_channel`` the output channel ``o``; ``value`` the element's
    value (or the bias); ``hits`` the ``(u, v, r, t)`` of every kernel tap that lands on the output
    (``out[r, t]``); ``output`` the output channel as this frame shows it (float64 copy of
    ``conv_transpose2d`` of the elements stamped so far; the channel's last frame holds
    ``conv_transpose2d``'s output); ``title``, ``subtitle``, ``lines``, ``captions`` and ``cells``
    the strings drawn, as in :class:`~convscope.animate.FrameInfo`.
    """

    at: tuple | None
    out_channel: int
    value: float
    value_text: str
    title: str
    subtitle: str
    lines: tuple
    hits: tuple
    output: np.ndarray = field(repr=False)
    captions: dict = field(repr=False)
    side: dict = field(repr=False)
    cells: dict = field(repr=False)


def _tap_level(count: int, most: int) -> int:
    """0 for no tap, else 1–3: the shade of a cell receiving ``count`` taps when the most is ``most``."""
    if count <= 0:
        return 0
    return min(3, count) if most <= 3 else min(3, -(-3 * count // most))


def _legend(counts: np.ndarray, cropped: bool) -> list:
    most = int(counts.max())
    items = [("current", "this input element"), ("window", "cells this frame adds to"),
             ("pending", "not stamped yet")]
    if cropped:
        items.append(("padding", "tap cropped by the padding"))
    for level, state in enumerate(TAP_STATES, start=1):
        values = sorted({int(c) for c in np.unique(counts) if _tap_level(int(c), most) == level})
        if values:
            what = str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"
            items.append((sc.STATE_NAMES[state], f"{what} {'tap' if values == [1] else 'taps'}"))
    return items


@dataclass
class _Plan:
    """What every frame of one transposed animation shares."""

    x4: np.ndarray            # (N, C_in, H, W)
    w: np.ndarray             # (C_in, C_out/groups, kH, kW)
    b: np.ndarray | None
    spec: object
    output_padding: tuple
    n: int
    unbatched: bool
    counts: np.ndarray        # (H_out, W_out) taps per cell of one channel
    partial: dict             # o → (frames, H_out, W_out) float64: the output after each stamp
    final: np.ndarray         # (C_out, H_out, W_out) float64: conv_transpose2d's output of sample n
    frames: list              # (o, c, i, j) per stamp frame, (o, None, None, None) for a bias frame
    grid_decimals: int
    sum_decimals: int
    layer: str


def plan_frames(layer_or_weight, x, bias, stride, padding, output_padding, groups, dilation, padding_mode, *,
                sample, out_channel, max_frames, decimals, max_grid: int, max_frame_bytes: int) -> _Plan:
    """Check the arguments (before any drawing) and compute every number the frames show."""
    from .core import _is_whole, _optional_index

    args = transposed_arguments(layer_or_weight, "animate", bias=bias, stride=stride, padding=padding,
                                output_padding=output_padding, groups=groups, dilation=dilation,
                                padding_mode=padding_mode)
    call = bind_transpose(2, input=x, weight=args["weight"], bias=args["bias"], stride=args["stride"],
                          padding=args["padding"], output_padding=args["output_padding"], groups=args["groups"],
                          dilation=args["dilation"], order=("input", "weight", "bias"))
    max_frames = check_positive_int(max_frames, "max_frames")
    decimals = check_decimals(decimals)
    if sample is None:
        raise TypeError("sample must be an int, got None")
    spec, op = call.conv.spec, call.output_padding
    xa, wa, ba = call.input, call.weight, call.bias
    unbatched = not call.batched
    N, C, H, W = call.input_shape
    _, O, Ho, Wo = call.output_shape
    n = _optional_index(sample, N, "sample", "an unbatched input (one sample)" if unbatched else f"a batch of {N}")
    o_sel = _optional_index(out_channel, O, "out_channel", f"{O} output channel(s)")
    G = spec.groups
    Cg, Og = C // G, O // G
    outs = [o_sel] if o_sel is not None else list(range(O))
    count = len(outs) * (Cg * H * W + (ba is not None))
    if count > max_frames:
        raise ValueError(f"animate draws one frame per input element stamped ({len(outs)} output channel(s) × "
                         f"{Cg} input channel(s) × {H} × {W}{' + a bias frame each' if ba is not None else ''}) = "
                         f"{count} frames, more than max_frames={max_frames}; pass out_channel=O (--out-channel), "
                         "a smaller input, or a larger max_frames")
    least = count * MIN_FRAME_PIXELS           # frames are kept as one byte per pixel
    if least > max_frame_bytes:
        raise ValueError(f"the {count} frames would take more than {least / 1e6:.0f} MB, more than "
                         f"{max_frame_bytes / 1e6:.0f} MB; pass out_channel=O (--out-channel) or a smaller input")
    for what, (rows, cols) in {"the input": (H, W), "the output": (Ho, Wo)}.items():
        if max(rows, cols) > max_grid:
            raise ValueError(f"animate draws every cell of {what}, which is {rows}×{cols} here, more than "
                             f"{max_grid}×{max_grid}; use a smaller (cropped) input")

    x4 = xa.reshape(call.input_shape)
    params = dict(stride=spec.stride, padding=spec.padding_arg, output_padding=op, groups=G,
                  dilation=spec.dilation)
    final = np.asarray(conv_transpose2d(x4[n:n + 1], wa, ba, **params)[0], dtype=np.float64)
    unbiased = final if ba is None else np.asarray(conv_transpose2d(x4[n:n + 1], wa, None, **params)[0],
                                                   dtype=np.float64)
    # the output after each stamp: conv_transpose2d of the sample with only the elements stamped so far
    partial = {}
    for g in sorted({o // Og for o in outs}):
        order = Cg * H * W
        masks = np.zeros((order, C, H, W), dtype=xa.dtype)                        # (stamps, C_in, H, W)
        flat = masks.reshape(order, C * H * W)[:, g * Cg * H * W:(g + 1) * Cg * H * W]
        flat[np.tril_indices(order)] = 1
        prefixes = masks * x4[n]
        ys = np.asarray(conv_transpose2d(prefixes, wa, None, **params), dtype=np.float64)   # (stamps, O, Ho, Wo)
        for o in outs:
            if o // Og == g:
                partial[o] = ys[:, o].copy()
                partial[o][-1] = unbiased[o]      # the whole group stamped: conv_transpose2d's own output
    frames = []
    for o in outs:
        g = o // Og
        frames += [(o, c, i, j) for c in range(g * Cg, (g + 1) * Cg) for i in range(H) for j in range(W)]
        if ba is not None:
            frames.append((o, None, None, None))
    whole = _is_whole(xa, wa, ba) and _is_whole(final)
    return _Plan(x4=x4, w=wa, b=ba, spec=spec, output_padding=op, n=n, unbatched=unbatched,
                 counts=tap_counts(spec, (H, W), op), partial=partial, final=final, frames=frames,
                 grid_decimals=decimals if decimals is not None else (0 if whole else 2),
                 sum_decimals=decimals if decimals is not None else (0 if whole else 4),
                 layer=f"ConvTranspose2d({layer_arguments_text(C, O, spec, ba is not None, op)}) "
                       f"on an input of shape {tuple(xa.shape)}")


def panels(plan: _Plan) -> list:
    _, _, H, W = plan.x4.shape
    kH, kW = plan.spec.kernel_size
    Ho, Wo = plan.counts.shape
    return [sc.Panel("input", 0, H, W, "left"), sc.Panel("kernel", 0, kH, kW, "a"), sc.Panel("taps", 1, Ho, Wo, "a"),
            sc.Panel("stamp", 0, kH, kW, "b"), sc.Panel("output", 0, Ho, Wo, "right")]


def _texts(a: np.ndarray, dec: int) -> list:
    return [[num(float(v), dec) for v in row] for row in a]


def build_scenes(plan: _Plan, width: int, max_lines: int = 3) -> tuple[list, list]:
    """(scenes, infos): one :class:`~.scenes.Scene` and one :class:`StampInfo` per frame."""
    s = plan.spec
    _, C, H, W = plan.x4.shape
    kH, kW = s.kernel_size
    Ho, Wo = plan.counts.shape
    Cg, Og = C // s.groups, plan.w.shape[1]
    gdec, dec = plan.grid_decimals, plan.sum_decimals
    ax_h, ax_w = gather_axes(s, (H, W), plan.output_padding)
    most = int(plan.counts.max())
    tap_states = np.array([[TAP_STATES[_tap_level(int(c), most) - 1] if c > 0 else sc.NORMAL for c in row]
                           for row in plan.counts], dtype=np.int8)
    tap_texts = [[str(int(c)) for c in row] for row in plan.counts]
    bn = "" if plan.unbatched else f"{plan.n}, "
    step = {o: 0 for o in plan.partial}
    touched = {o: np.zeros((Ho, Wo), dtype=bool) for o in plan.partial}
    (sH, sW), (dH, dW) = s.stride, s.dilation
    (pH, _), (pW, _) = s.padding
    scenes, infos = [], []
    total = len(plan.frames)
    last_c: dict = {}
    for k, (o, c, i, j) in enumerate(plan.frames):
        g = o // Og
        oo = o - g * Og
        captions, texts, states, outlines = {}, {}, {}, {}
        bias_frame = c is None
        if bias_frame:
            c, i, j = last_c[o]
        last_c[o] = (c, i, j)
        xv = float(plan.x4[plan.n, c, i, j])
        kernel = plan.w[c, oo]
        stamp = (kernel.astype(np.float64) * xv) if not bias_frame else None
        hits, cropped = [], 0
        for u in range(kH):
            for v in range(kW):
                r, t = ax_h.landing(i, u), ax_w.landing(j, v)
                if 0 <= r < Ho and 0 <= t < Wo:
                    hits.append((u, v, r, t))
                else:
                    cropped += 1
        if bias_frame:
            grid = plan.final[o]
            texts[("stamp", 0)] = [[""] * kW for _ in range(kH)]
            states[("stamp", 0)] = np.full((kH, kW), sc.PENDING, dtype=np.int8)
            states[("output", 0)] = np.full((Ho, Wo), sc.WINDOW, dtype=np.int8)
            outlines[("output", 0)] = outlines[("taps", 1)] = None
            hits = []
        else:
            grid = plan.partial[o][step[o]]
            step[o] += 1
            texts[("stamp", 0)] = _texts(stamp, gdec)
            st = np.full((kH, kW), sc.PAD, dtype=np.int8)
            out_st = np.where(touched[o], sc.NORMAL, sc.PENDING).astype(np.int8)
            for u, v, r, t in hits:
                st[u, v] = sc.WINDOW
                out_st[r, t] = sc.WINDOW
                touched[o][r, t] = True
            states[("stamp", 0)] = st
            states[("output", 0)] = out_st
            if hits:
                rows, cols = [h[2] for h in hits], [h[3] for h in hits]
                box = (min(rows), min(cols), max(rows), max(cols), "window")
            else:
                box = None
            outlines[("output", 0)] = outlines[("taps", 1)] = box
        captions[("stamp", 0)] = (f"x[{bn}{c}, {i}, {j}] · w[{c}, {oo}] (the stamp)" if not bias_frame
                                  else "(no stamp: the bias)")
        done = np.zeros((H, W), dtype=np.int8)
        flat = done.reshape(-1)
        flat[:] = sc.PENDING
        flat[:i * W + j] = sc.NORMAL
        if bias_frame:
            flat[:] = sc.NORMAL
        else:
            done[i, j] = sc.CURRENT
        texts[("input", 0)] = _texts(plan.x4[plan.n, c], gdec)
        states[("input", 0)] = done
        outlines[("input", 0)] = None
        captions[("input", 0)] = f"x[{bn}{c}] (input channel {c})"
        texts[("kernel", 0)] = _texts(kernel, gdec)
        states[("kernel", 0)] = np.full((kH, kW), sc.NORMAL, dtype=np.int8)
        outlines[("kernel", 0)] = None
        captions[("kernel", 0)] = f"w[{c}, {oo}] (kernel)"
        texts[("taps", 1)] = tap_texts
        states[("taps", 1)] = tap_states
        captions[("taps", 1)] = f"taps per output cell (of {Cg} channel{'s' if Cg > 1 else ''}: × {Cg})" \
            if Cg > 1 else "taps per output cell"
        texts[("output", 0)] = _texts(grid, gdec)
        captions[("output", 0)] = f"out[{bn}{o}] (output)"

        out_name = f"out[{bn}{o}]"
        if bias_frame:
            b = float(plan.b[o])
            value, value_text = b, num(b, dec)
            title = f"{out_name} = Σ stamps + bias[{o}] = Σ + {value_text}"
            lines = [f"every cell of {out_name} gets bias[{o}] = {value_text} added: "
                     f"the output is conv_transpose2d's",
                     f"out[{bn}{o}, 0, 0] = {num(float(plan.partial[o][-1][0, 0]), dec)} + {value_text} = "
                     f"{num(float(grid[0, 0]), dec)}"]
            parts = [f"frame {k + 1}/{total}", "the bias, once per output cell"]
            at = None
        else:
            value, value_text = xv, num(xv, dec)
            at = (c, i, j) if plan.unbatched else (plan.n, c, i, j)
            x_name = f"x[{idx(at)}]"
            title = f"{x_name} = {value_text} stamps {value_text} · w[{c}, {oo}] onto {out_name}"
            head = f"{x_name} lands at row {i}·{sH} − {pH} + u·{dH}, column {j}·{sW} − {pW} + v·{dW}: "
            pieces = [f"[{r}, {t}] += {sc.factor(xv, dec)}×{sc.factor(float(kernel[u, v]), dec)} → "
                      f"{num(float(grid[r, t]), dec)}" for u, v, r, t in hits]
            lines = sc.wrap_sum(head, pieces, "", width, max_lines) if pieces else \
                [head + "no tap lands inside the output"]
            if cropped:
                lines.append(f"{cropped} of the {kH * kW} taps fall outside the output: the padding "
                             f"({pH}, {pW}) crops them")
            parts = [f"frame {k + 1}/{total}", f"stride {(sH, sW)}: the stamps of neighbouring elements are "
                     f"{sH} rows / {sW} columns apart", f"a cell receives up to {most} taps per channel"]
            if s.groups > 1:
                parts.append(f"group {g}: input channels {g * Cg}–{(g + 1) * Cg - 1}")
        scenes.append(sc.Scene(title=title, subtitle="  ·  ".join(parts), captions=captions, texts=texts,
                               states=states, outlines=outlines, side={}, lines=lines, value_text=value_text))
        infos.append(StampInfo(at=at, out_channel=o, value=value, value_text=value_text, title=title,
                               subtitle=scenes[-1].subtitle, lines=tuple(lines), hits=tuple(hits),
                               output=np.array(grid, dtype=np.float64), captions=dict(captions), side={},
                               cells=dict(texts)))
    return scenes, infos


def animate_transposed(layer_or_weight, x, bias=None, stride=1, padding=0, dilation=1, groups=1,
                       padding_mode="zeros", *, output_padding=0, grad=None, grad_output=None, sample=0,
                       out_channel=None, in_channel=None, max_frames, decimals=None, fps):
    """:func:`~convscope.animate.animate`'s transposed mode (see there); returns an
    :class:`~convscope.animate.Animation` whose :attr:`~Animation.info` holds :class:`StampInfo`."""
    from . import core

    if grad is not None or grad_output is not None:
        raise ValueError(f"the transposed mode animates the forward pass only (each input element stamping its "
                         f"weighted kernel), got grad={grad!r}; see explain_grad for the gradients")
    if in_channel is not None:
        raise ValueError("in_channel is not used in the transposed mode: every input channel of the group stamps "
                         "onto each output channel; select frames with out_channel")
    if not isinstance(output_padding, (numbers.Integral, tuple, list)) or isinstance(output_padding, bool):
        raise TypeError(f"output_padding must be an int or a pair of ints, got {output_padding!r}")
    fps = core._check_fps(fps)
    plan = plan_frames(layer_or_weight, x, bias, stride, padding, output_padding, groups, dilation, padding_mode,
                       sample=sample, out_channel=out_channel, max_frames=max_frames, decimals=decimals,
                       max_grid=core.MAX_GRID, max_frame_bytes=core.MAX_FRAME_BYTES)
    core._require_viz()
    cropped = any(p > 0 for p, _ in plan.spec.padding)
    return _draw(panels(plan), lambda width: build_scenes(plan, width), plan.layer, _legend(plan.counts, cropped),
                 fps)


class TransposedAnimation(Animation):
    """An :class:`~convscope.animate.Animation` of a transposed convolution (``kind='transposed'``)."""

    def __repr__(self) -> str:
        return (f"<Animation of a transposed convolution: {len(self)} frames, {self.size[0]}×{self.size[1]} px, "
                f"{self.fps:g} fps>")


def _draw(panel_list: list, scenes_for, layer: str, legend: list, fps: float) -> TransposedAnimation:
    """Lay out and render the frames: ``scenes_for(width)`` gives (scenes, infos) with the arithmetic
    wrapped at ``width`` characters (first unwrapped, to size the cells and columns)."""
    from . import core, draw

    measure = draw.Measure()
    rough, _ = scenes_for(10**6)
    cell_w = draw.cell_width(measure, core._longest({t for s in rough for rows in s.texts.values()
                                                     for row in rows for t in row}))
    captions: dict = {}
    for s in rough:
        for key, text in s.captions.items():
            captions.setdefault(key, set()).add(text)
    captions = {key: core._longest(texts) for key, texts in captions.items()}
    headers = ([(0, t) for t in core._longest({s.title for s in rough})]
               + [(1, t) for t in core._longest({s.subtitle for s in rough} | {layer})])
    first = draw.make_layout(panel_list, measure, cell_w, captions, {}, headers, 0, legend)
    scenes, infos = scenes_for(first.line_chars)
    layout = draw.make_layout(panel_list, measure, cell_w, captions, {}, headers, max(len(s.lines) for s in scenes),
                              legend, width=first.width)
    size = layout.width * layout.height * len(scenes)
    if size > core.MAX_FRAME_BYTES:
        raise ValueError(f"the frames would take {size / 1e6:.0f} MB ({len(scenes)} frames of "
                         f"{layout.width}×{layout.height} px), more than {core.MAX_FRAME_BYTES / 1e6:.0f} MB; "
                         "pass out_channel=O (--out-channel), a smaller input, or a larger max_frames")
    renderer = draw.Renderer(layout, panel_list, layer)
    pal = draw.palette_image()
    try:
        indices = [draw.quantize(renderer.render(s), pal) for s in scenes]
    finally:
        renderer.close()
    return TransposedAnimation("transposed", indices, layout, infos, fps, layer)
