"""What each frame of an animation shows, built from :func:`~convscope.explain` and
:func:`~convscope.explain_grad` (no drawing here).

A frame is a :class:`Scene`: for every panel (a grid of cells) the text of each cell, the
state of each cell (which colour it gets) and an optional outline, plus the title, the
captions, the per-slot sums and the lines of arithmetic.  The numbers of a frame's sum come
from its explanation's terms (their values, products, padded indices and source pixels);
the grids show the caller's arrays, padded through :func:`convscope.geometry.source_map`.

Panels, by kind of animation (``slot`` numbers the panels stacked in one column):

========== ================================ ==================================== =========================
kind       column ``a`` (slots)             column ``b`` (slots)                 right (slot 0)
========== ================================ ==================================== =========================
output     ``input``: x̃[n, g·Cg + c]        ``kernel``: w[o, c]                  ``output``: out[n, o]
input      ``grad_output``: grad_out[n, o]  ``kernel``: w[o, c − g·Cg]           ``grad_input``: ∂L/∂x[n, c]
weight     ``input``: x̃[n, g·Cg + c]        ``grad_output``: grad_out[n, o]      ``grad_weight``: ∂L/∂w[o, c]
========== ================================ ==================================== =========================

``input`` grids are the padded input x̃ (rows and columns are padded coordinates, as in
:attr:`Term.padded_index`).  For ``kind='input'`` a single ``input`` panel (slot 0) stands on
the left and shows where the pixel sits in x̃.  Slots: ``output``, the input channels of the
output channel's group; ``input``, the output channels of the input channel's group;
``weight``, the samples of the batch.  At most :data:`MAX_SLOTS` slots are drawn; the rest
appear in the sums.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..explain.render import channel_terms, idx, num
from ..geometry import source_map

MAX_SLOTS = 4  # panels drawn per column; further channels (or samples) are summed in the text

# cell states (each has one colour, see draw.THEME)
NORMAL, PAD, WINDOW, WINDOW_PAD, SOURCE, CURRENT, PENDING, TAPS_1, TAPS_2, TAPS_3 = range(10)
STATE_NAMES = ("normal", "padding", "window", "window_padding", "source", "current", "pending",
               "taps_1", "taps_2", "taps_3")  # taps_*: few to many kernel taps on a cell (transposed mode)


@dataclass(frozen=True)
class Panel:
    """A grid of ``rows × cols`` cells; ``pad`` marks its padding cells (padded-input panels)."""

    name: str
    slot: int
    rows: int
    cols: int
    column: str  # "left", "a", "b" or "right"
    pad: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.slot)


@dataclass
class Scene:
    """Everything one frame shows (strings and cell states; no pixels)."""

    title: str
    subtitle: str
    captions: dict
    texts: dict          # panel key → list of rows of cell strings
    states: dict         # panel key → int8 array of cell states
    outlines: dict       # panel key → (row0, col0, row1, col1, "window" | "current") or None
    side: dict           # slot → text beside the slot's panels ("Σ = …"), may be empty
    lines: list          # the arithmetic, already wrapped
    value_text: str


@dataclass
class Context:
    """What every frame of one animation shares."""

    kind: str
    spec: object
    shape: object
    x4: np.ndarray            # input, batched
    w: np.ndarray             # weight
    g4: np.ndarray | None     # grad_output, batched (gradient animations)
    unbatched: bool
    sample: int
    grid_decimals: int
    sum_decimals: int
    layer: str
    loss: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ padded input
    @property
    def maps(self) -> tuple[np.ndarray, np.ndarray]:
        """Padded row → real row and padded column → real column (−1: zero padding)."""
        if "maps" not in self._cache:
            s, sh = self.spec, self.shape
            self._cache["maps"] = (source_map(sh.H, *s.padding[0], s.padding_mode),
                                   source_map(sh.W, *s.padding[1], s.padding_mode))
        return self._cache["maps"]

    @property
    def pad_mask(self) -> np.ndarray:
        (pt, pb), (pl, pr) = self.spec.padding
        H, W = self.shape.H, self.shape.W
        mask = np.ones((H + pt + pb, W + pl + pr), dtype=bool)
        mask[pt:pt + H, pl:pl + W] = False
        return mask

    def padded_texts(self, n: int, ch: int) -> list[list[str]]:
        """The cells of x̃[n, ch]: each real pixel, and what each padding cell holds."""
        key = ("x", n, ch)
        if key not in self._cache:
            rmap, cmap = self.maps
            plane = self.x4[n, ch]
            self._cache[key] = [[num(float(plane[r, c]), self.grid_decimals) if r >= 0 and c >= 0 else "0"
                                 for c in cmap] for r in rmap]
        return self._cache[key]

    def grid_texts(self, name: str, a: np.ndarray, key) -> list[list[str]]:
        ck = (name, key)
        if ck not in self._cache:
            self._cache[ck] = [[num(float(v), self.grid_decimals) for v in row] for row in a]
        return self._cache[ck]

    def cell(self, padded: tuple[int, int]) -> tuple[int, int]:
        return int(padded[0]), int(padded[1])

    def source_cell(self, input_index) -> tuple[int, int]:
        """The padded coordinates of real pixel ``([n, ]c, h, w)`` (``h + top``, ``w + left``)."""
        (pt, _), (pl, _) = self.spec.padding
        return int(input_index[-2]) + pt, int(input_index[-1]) + pl

    def n_prefix(self, n: int) -> str:
        return "" if self.unbatched else f"{n}, "

    def input_caption(self, n: int, ch: int) -> str:
        padded = self.spec.padding != ((0, 0), (0, 0))
        return f"x̃[{self.n_prefix(n)}{ch}] (padded input)" if padded else f"x[{self.n_prefix(n)}{ch}] (input)"


# --------------------------------------------------------------------------- text helpers


def factor(v: float, dec: int, zero_padding: bool = False) -> str:
    """A number as a factor of a product: negative ones in parentheses; a zero-padding cell is ``0``."""
    if zero_padding:
        return "0"
    s = num(v, dec)
    return f"({s})" if s.startswith("-") else s


def wrap_sum(head: str, pieces: list[str], tail: str, width: int, max_lines: int) -> list[str]:
    """``head + ' + '.join(pieces) + tail`` in at most ``max_lines`` lines of ``width`` characters.

    Lines break between terms.  When all terms do not fit, the middle ones are replaced by
    ``… (k more) …``, keeping the first terms and the last one.
    """
    if not pieces:
        return [head.rstrip() + tail]
    for keep in range(len(pieces), 0, -1):
        if keep == len(pieces):
            shown = list(pieces)
        else:
            shown = pieces[:max(keep - 1, 1)] + [f"… ({len(pieces) - max(keep - 1, 1) - 1} more) …"] + pieces[-1:]
        lines = _wrap(head, shown, tail, width)
        if len(lines) <= max_lines:
            return lines
    return _wrap(head, shown, tail, width)[:max_lines]


def _wrap(head: str, pieces: list[str], tail: str, width: int) -> list[str]:
    indent = " " * min(len(head), 12)
    lines, current = [], head + pieces[0]
    for piece in pieces[1:]:
        if len(current) + 3 + len(piece) <= width:
            current += " + " + piece
        else:
            lines.append(current)
            current = indent + "+ " + piece
    if len(current) + len(tail) <= width:
        lines.append(current + tail)
    else:
        lines += [current, indent + tail.lstrip()]
    return lines


def wrap_text(text: str, width: int) -> list[str]:
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return lines + ([current] if current else [])


def _plural(word: str, count: int) -> str:
    return word if count == 1 else word + "s"


def _range(r: range) -> str:
    return str(r.start) if len(r) == 1 else f"{r.start}–{r.stop - 1}"


def _fill(rows: int, cols: int, current: tuple[int, int], value_text: str, done: dict):
    """Texts and states of a grid that fills in: computed cells (``done``: cell → text), the
    current one, the rest pending."""
    done[current] = value_text
    texts = [[done.get((r, c), "") for c in range(cols)] for r in range(rows)]
    states = np.full((rows, cols), PENDING, dtype=np.int8)
    for (r, c) in done:
        states[r, c] = NORMAL
    states[current] = CURRENT
    return texts, states


def _mark_reads(states: np.ndarray, terms, ctx: Context) -> None:
    """Window colour on the padded cells the terms read; a pale mark on the real pixel a
    reflect / replicate / circular padding cell copies."""
    sources = []
    for t in terms:
        states[ctx.cell(t.padded_index)] = WINDOW_PAD if t.is_padding else WINDOW
        if t.is_padding and t.input_index is not None:
            sources.append(ctx.source_cell(t.input_index))
    for cell in sources:
        if states[cell] not in (WINDOW, WINDOW_PAD):
            states[cell] = SOURCE


def _base_states(ctx: Context) -> np.ndarray:
    return np.where(ctx.pad_mask, PAD, NORMAL).astype(np.int8)


# --------------------------------------------------------------------------- panels


def panels_for(ctx: Context) -> list[Panel]:
    sh, s = ctx.shape, ctx.spec
    kH, kW = s.kernel_size
    pad = ctx.pad_mask
    Hp, Wp = pad.shape
    if ctx.kind == "output":
        S = min(sh.in_per_group, MAX_SLOTS)
        return ([Panel("input", c, Hp, Wp, "a", pad) for c in range(S)]
                + [Panel("kernel", c, kH, kW, "b") for c in range(S)]
                + [Panel("output", 0, sh.H_out, sh.W_out, "right")])
    if ctx.kind == "input":
        S = min(sh.out_per_group, MAX_SLOTS)
        return ([Panel("input", 0, Hp, Wp, "left", pad)]
                + [Panel("grad_output", k, sh.H_out, sh.W_out, "a") for k in range(S)]
                + [Panel("kernel", k, kH, kW, "b") for k in range(S)]
                + [Panel("grad_input", 0, sh.H, sh.W, "right")])
    S = min(sh.N, MAX_SLOTS)
    return ([Panel("input", k, Hp, Wp, "a", pad) for k in range(S)]
            + [Panel("grad_output", k, sh.H_out, sh.W_out, "b") for k in range(S)]
            + [Panel("grad_weight", 0, kH, kW, "right")])


# --------------------------------------------------------------------------- scenes


def build_scenes(ctx: Context, explanations: list, width: int, max_lines: int = 3) -> list[Scene]:
    """One :class:`Scene` per explanation; ``width`` is the line length (characters) of the arithmetic."""
    build = {"output": _forward, "input": _grad_input, "weight": _grad_weight}[ctx.kind]
    filled: dict = {}
    total = len(explanations)
    return [build(ctx, e, k, total, width, max_lines, filled) for k, e in enumerate(explanations)]


def _frame_text(k: int, total: int) -> str:
    return f"frame {k + 1}/{total}"


def _forward(ctx: Context, e, k: int, total: int, width: int, max_lines: int, filled: dict) -> Scene:
    s, sh = ctx.spec, ctx.shape
    dec, gdec = ctx.sum_decimals, ctx.grid_decimals
    n = ctx.sample
    o, i, j = e.at[-3:]
    Cg = sh.in_per_group
    S = min(Cg, MAX_SLOTS)
    ch0 = e.channels.start
    bn = ctx.n_prefix(n)
    out_name = f"out[{idx(e.at)}]"
    captions, texts, states, outlines, side = {}, {}, {}, {}, {}
    sums = [float(np.sum([t.product for t in channel_terms(e, c)])) for c in range(Cg)]
    for c in range(S):
        terms = channel_terms(e, c)
        key = ("input", c)
        captions[key] = ctx.input_caption(n, ch0 + c)
        texts[key] = ctx.padded_texts(n, ch0 + c)
        st = _base_states(ctx)
        _mark_reads(st, terms, ctx)
        states[key] = st
        rows = [t.padded_index[0] for t in terms]
        cols = [t.padded_index[1] for t in terms]
        outlines[key] = (min(rows), min(cols), max(rows), max(cols), "window")
        kkey = ("kernel", c)
        captions[kkey] = f"w[{o}, {c}] (kernel)"
        texts[kkey] = ctx.grid_texts("w", e.kernel[c], (o, c))
        states[kkey] = np.full(e.kernel[c].shape, NORMAL, dtype=np.int8)
        outlines[kkey] = None
        if Cg > 1:
            side[c] = f"Σ = {num(sums[c], dec)}"
    done = filled.setdefault(o, {})
    texts[("output", 0)], states[("output", 0)] = _fill(sh.H_out, sh.W_out, (i, j), num(e.value, gdec), done)
    captions[("output", 0)] = f"out[{bn}{o}] (output)"
    outlines[("output", 0)] = None

    value_text = num(e.value, dec)
    lines: list[str] = []
    if Cg == 1:
        pieces = [f"{factor(t.input_value, dec, t.input_index is None)}×{factor(t.weight_value, dec)}" for t in e.terms]
        lines += wrap_sum("Σ x̃·w = ", pieces, f" = {num(e.sum_of_products, dec)}", width, max_lines)
    else:
        for c in range(S):
            pieces = [f"{factor(t.input_value, dec, t.input_index is None)}×{factor(t.weight_value, dec)}" for t in channel_terms(e, c)]
            lines += wrap_sum(f"channel {ch0 + c}: ", pieces, f" = {num(sums[c], dec)}", width, 1)
        if Cg > S:
            rest = float(np.sum(sums[S:]))
            lines.append(f"{_plural('channel', Cg - S)} {_range(range(ch0 + S, ch0 + Cg))} (not drawn): "
                         f"Σ = {num(rest, dec)}")
        lines += wrap_sum("Σ over channels = ", [factor(v, dec) for v in sums],
                          f" = {num(e.sum_of_products, dec)}", width, 1)
    if e.has_bias:
        lines.append(f"{out_name} = Σ + bias[{o}] = {num(e.sum_of_products, dec)} + {num(e.bias, dec)} = {value_text}")
    else:
        lines.append(f"{out_name} = Σ (no bias) = {value_text}")

    (sH, sW), (dH, dW) = s.stride, s.dilation
    r0, c0, r1, c1 = outlines[("input", 0)][:4]
    parts = [_frame_text(k, total), f"window: rows {r0}–{r1}, columns {c0}–{c1} of x̃"]
    if (dH, dW) != (1, 1):
        parts.append(f"dilation {(dH, dW)}: only the tap cells are read, the gaps are skipped")
    if (sH, sW) != (1, 1):
        parts.append(f"stride {(sH, sW)}: the window jumps {sH} rows / {sW} columns")
    if s.groups > 1:
        parts.append(f"group {o // sh.out_per_group}: input channels {_range(e.channels)}")
    return Scene(title=f"{out_name} = {value_text}", subtitle="  ·  ".join(parts), captions=captions,
                 texts=texts, states=states, outlines=outlines, side=side, lines=lines, value_text=value_text)


def _grad_input(ctx: Context, e, k: int, total: int, width: int, max_lines: int, filled: dict) -> Scene:
    s, sh = ctx.spec, ctx.shape
    dec, gdec = ctx.sum_decimals, ctx.grid_decimals
    n = ctx.sample
    c, h, w_ = e.at[-3:]
    Cg = sh.in_per_group
    g = c // Cg
    outs = e.channels
    S = min(len(outs), MAX_SLOTS)
    bn = ctx.n_prefix(n)
    name = f"∂L/∂x[{idx(e.at)}]"
    captions, texts, states, outlines, side = {}, {}, {}, {}, {}

    key = ("input", 0)
    captions[key] = ctx.input_caption(n, c)
    texts[key] = ctx.padded_texts(n, c)
    st = _base_states(ctx)
    _mark_reads(st, e.terms, ctx)
    states[key] = st
    pr, pc = ctx.source_cell((c, h, w_))
    outlines[key] = (pr, pc, pr, pc, "current")

    by_o = {o: [t for t in e.terms if t.output_index[-3] == o] for o in outs}
    for slot in range(S):
        o = outs.start + slot
        gkey, kkey = ("grad_output", slot), ("kernel", slot)
        captions[gkey] = f"grad_out[{bn}{o}]"
        texts[gkey] = ctx.grid_texts("g", ctx.g4[n, o], (n, o))
        gst = np.full((sh.H_out, sh.W_out), NORMAL, dtype=np.int8)
        kst = np.full(s.kernel_size, NORMAL, dtype=np.int8)
        for t in by_o[o]:
            gst[tuple(int(v) for v in t.output_index[-2:])] = WINDOW
            kst[t.tap] = WINDOW
        states[gkey], states[kkey] = gst, kst
        captions[kkey] = f"w[{o}, {c - g * Cg}] (kernel)"
        texts[kkey] = ctx.grid_texts("w", ctx.w[o, c - g * Cg], (o, c - g * Cg))
        outlines[gkey] = outlines[kkey] = None
        if len(outs) > 1:
            side[slot] = f"Σ = {num(float(np.sum([t.product for t in by_o[o]])) if by_o[o] else 0.0, dec)}"
    rkey = ("grad_input", 0)
    done = filled.setdefault(c, {})
    texts[rkey], states[rkey] = _fill(sh.H, sh.W, (h, w_), num(e.value, gdec), done)
    captions[rkey] = f"∂L/∂x[{bn}{c}]"
    outlines[rkey] = None

    value_text = num(e.value, dec)
    if e.terms:
        pieces = [f"{factor(t.grad_output_value, dec)}×{factor(t.weight_value, dec)}" for t in e.terms]
        lines = wrap_sum("Σ grad_out·w = ", pieces, f" = {num(e.sum_of_products, dec)}", width, max_lines)
        if len(outs) > S:
            rest = range(outs.start + S, outs.stop)
            lines.append(f"(output {_plural('channel', len(rest))} {_range(rest)}: in the sum, not drawn)")
        reads = len({tuple(t.output_index) for t in e.terms})
        what = f"{reads} output{'s' if reads != 1 else ''} read this pixel ({len(e.terms)} tap{'s' if len(e.terms) != 1 else ''})"
    else:
        lines = wrap_text(f"No tap reads this pixel, so the gradient is 0. {e.reason or ''}".strip(), width)[:max_lines]
        what = "no output reads this pixel"
    lines.append(f"{name} = {value_text}")
    parts = [_frame_text(k, total), what]
    if s.groups > 1:
        parts.append(f"group {g}: output channels {_range(outs)}")
    return Scene(title=f"{name} = {value_text}   ({ctx.loss})", subtitle="  ·  ".join(parts), captions=captions,
                 texts=texts, states=states, outlines=outlines, side=side, lines=lines, value_text=value_text)


def _grad_weight(ctx: Context, e, k: int, total: int, width: int, max_lines: int, filled: dict) -> Scene:
    s, sh = ctx.spec, ctx.shape
    dec, gdec = ctx.sum_decimals, ctx.grid_decimals
    o, c, u, v = e.at
    ch = e.channels.start
    S = min(sh.N, MAX_SLOTS)
    name = f"∂L/∂w[{idx(e.at)}]"
    captions, texts, states, outlines, side = {}, {}, {}, {}, {}
    by_n = {n: [t for t in e.terms if (0 if ctx.unbatched else t.output_index[0]) == n] for n in range(sh.N)}
    sums = [float(np.sum([t.product for t in by_n[n]])) for n in range(sh.N)]
    for n in range(S):
        key, gkey = ("input", n), ("grad_output", n)
        captions[key] = ctx.input_caption(n, ch)
        texts[key] = ctx.padded_texts(n, ch)
        st = _base_states(ctx)
        _mark_reads(st, by_n[n], ctx)
        states[key] = st
        outlines[key] = None
        captions[gkey] = f"grad_out[{ctx.n_prefix(n)}{o}]"
        texts[gkey] = ctx.grid_texts("g", ctx.g4[n, o], (n, o))
        gst = np.full((sh.H_out, sh.W_out), NORMAL, dtype=np.int8)
        for t in by_n[n]:
            gst[tuple(int(q) for q in t.output_index[-2:])] = WINDOW
        states[gkey] = gst
        outlines[gkey] = None
        if sh.N > 1:
            side[n] = f"Σ = {num(sums[n], dec)}"
    rkey = ("grad_weight", 0)
    done = filled.setdefault((o, c), {})
    texts[rkey], states[rkey] = _fill(*s.kernel_size, (u, v), num(e.value, gdec), done)
    captions[rkey] = f"∂L/∂w[{o}, {c}]"
    outlines[rkey] = None

    value_text = num(e.value, dec)
    if sh.N == 1:
        pieces = [f"{factor(t.grad_output_value, dec)}×{factor(t.input_value, dec, t.input_index is None)}" for t in e.terms]
        lines = wrap_sum("Σ grad_out·x̃ = ", pieces, f" = {num(e.sum_of_products, dec)}", width, max_lines)
    else:
        lines = []
        for n in range(S):
            pieces = [f"{factor(t.grad_output_value, dec)}×{factor(t.input_value, dec, t.input_index is None)}" for t in by_n[n]]
            lines += wrap_sum(f"sample {n}: ", pieces, f" = {num(sums[n], dec)}", width, 1)
        if sh.N > S:
            lines.append(f"{_plural('sample', sh.N - S)} {_range(range(S, sh.N))} (not drawn): "
                         f"Σ = {num(float(np.sum(sums[S:])), dec)}")
        lines += wrap_sum("Σ over samples = ", [factor(q, dec) for q in sums], f" = {num(e.sum_of_products, dec)}",
                          width, 1)
    lines.append(f"{name} = {value_text}")
    (sH, sW), (dH, dW) = s.stride, s.dilation
    parts = [_frame_text(k, total), f"tap ({u}, {v}) reads x̃[i·{sH} + {u * dH}, j·{sW} + {v * dW}] for every output (i, j)"]
    if s.groups > 1:
        parts.append(f"group {o // sh.out_per_group}: input channel {ch}")
    return Scene(title=f"{name} = {value_text}   ({ctx.loss})", subtitle="  ·  ".join(parts), captions=captions,
                 texts=texts, states=states, outlines=outlines, side=side, lines=lines, value_text=value_text)
