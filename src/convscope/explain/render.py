"""Text and HTML for an :class:`~convscope.explain.core.Explanation`.

Both renderings say the same things in the same order: the element and its
value, the formula with this element's indices, the numbers (window beside
kernel and the products, or the gradient's terms), the sums, and torch's value
when it is known.
"""
from __future__ import annotations

import html
import itertools

import numpy as np

from ..geometry import source_map
from ..spec import AXIS_LETTERS, _is_int, input_shape_of
from .core import IN_LETTERS, LINE_NAMES, OUT_LETTERS, TAP_LETTERS

MODE_NOTES = {
    "zeros": "padding cells hold 0",
    "reflect": "a padding cell copies the pixel mirrored about the edge (the edge itself not repeated)",
    "replicate": "a padding cell copies the nearest edge pixel",
    "circular": "a padding cell copies the pixel from the opposite side (the input wraps around)",
}
DETAIL_CHANNELS = 4   # input channels shown in full in an output explanation; the rest as sums
MAX_TERM_LINES = 24   # gradient terms listed before "… and N more"


# --------------------------------------------------------------------------- numbers


def decimals_for(e) -> int:
    """0 when every number shown is a whole number (the seeds' integer examples), else 4."""
    values = [e.value, e.bias, e.sum_of_products]
    for t in e.terms:
        values += [t.product, t.input_value or 0.0, t.weight_value or 0.0, t.grad_output_value or 0.0]
    arr = np.asarray(values, dtype=np.float64)
    if e.window is not None:
        arr = np.concatenate([arr, e.window.ravel(), e.kernel.ravel()])
    whole = np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 1e9)
    return 0 if whole else 4


def check_decimals(decimals) -> int | None:
    """``decimals`` as given: None, or an int from 0 to 10."""
    if decimals is None:
        return None
    if not _is_int(decimals):
        raise TypeError(f"decimals must be an int or None, got {decimals!r} ({type(decimals).__name__})")
    if not 0 <= decimals <= 10:
        raise ValueError(f"decimals must be between 0 and 10, got {decimals}")
    return int(decimals)


def num(v: float, dec: int) -> str:
    s = f"{v:.{dec}f}"
    if s.lstrip("-").strip("0.") == "":
        s = s.lstrip("-")  # no "-0.0000"
    return s


def channel_terms(e, c: int) -> list:
    """The terms of the ``c``-th input channel of the group, in tap order (:meth:`Explanation.channel_terms`)."""
    return e.channel_terms(c)


def idx(t) -> str:
    return ", ".join(str(int(v)) for v in t)


def _slice_text(start: int, k: int, d: int) -> str:
    stop = start + (k - 1) * d + 1
    return f"{start}:{stop}" + (f":{d}" if d > 1 and k > 1 else "")


def grid_lines(a: np.ndarray, dec: int, marks: np.ndarray | None = None) -> list[str]:
    """Rows of a 2-D array, aligned, with ``*`` after marked (padding) cells."""
    cells = [[num(v, dec) for v in row] for row in a]
    width = max(len(c) for row in cells for c in row)
    lines = []
    for r, row in enumerate(cells):
        parts = []
        for c, s in enumerate(row):
            mark = "*" if marks is not None and marks[r, c] else " "
            parts.append(s.rjust(width) + mark)
        open_ = "[[" if r == 0 else " ["
        close = "]]" if r == len(cells) - 1 else "]"
        lines.append(open_ + " ".join(parts).rstrip() + close)
    return lines


def side_by_side(left: list[str], right: list[str], gap: int = 5) -> list[str]:
    width = max(len(s) for s in left) if left else 0
    rows = max(len(left), len(right))
    left = left + [""] * (rows - len(left))
    right = right + [""] * (rows - len(right))
    return [f"{a.ljust(width)}{' ' * gap}{b}".rstrip() for a, b in zip(left, right)]


# --------------------------------------------------------------------------- shared wording


def _out_name(e, at=None) -> str:
    return f"out[{idx(e.at if at is None else at)}]"


def layer_line(e) -> str:
    s = e.spec
    pad = s.padding_arg
    shape = e.shape
    in_shape = input_shape_of(shape)[1:] if e.unbatched else input_shape_of(shape)
    parts = [f"input {in_shape}", f"weight {(shape.out_channels, shape.in_per_group) + tuple(s.kernel_size)}"]
    if e.kind == "output":
        parts.append("bias" if e.has_bias else "no bias")
    parts += [f"stride {s.stride}", f"padding {pad!r}" if isinstance(pad, str) else f"padding {pad}",
              f"dilation {s.dilation}", f"groups {s.groups}", f"padding_mode {s.padding_mode!r}"]
    return ", ".join(parts)


def padding_line(e) -> str:
    s = e.spec
    if not any(s.pad_totals):
        return "x̃ is the input itself (no padding)."
    mode = f"; mode {s.padding_mode!r}: {MODE_NOTES[s.padding_mode]}."
    if s.ndim == 1:
        ((p0, p1),) = s.padding
        split = " ('same' puts any odd extra cell at the end)" if s.padding_arg == "same" else ""
        return f"x̃ is the input padded by {p0} cell(s) at the start and {p1} at the end{split}" + mode
    (pt, pb), (pl, pr) = s.padding[-2:]
    depth = ""
    if s.ndim == 3:
        (pf, pk) = s.padding[0]
        depth = f"{pf} depth slice(s) in front, {pk} at the back, "
    split = ""
    if s.padding_arg == "same":
        split = (" ('same' puts any odd extra slice, row or column at the back, bottom or right)" if s.ndim == 3
                 else " ('same' puts any odd extra row or column at the bottom or right)")
    return (f"x̃ is the input padded by {depth}{pt} row(s) on top, {pb} at the bottom, {pl} column(s) on the left "
            f"and {pr} on the right{split}" + mode)


def groups_line(e) -> str | None:
    s, shape = e.spec, e.shape
    if s.groups == 1:
        return None
    Og, Cg = shape.out_per_group, shape.in_per_group
    if e.kind == "output":
        o = e.at[0] if e.unbatched else e.at[1]
    elif e.kind == "weight":
        o = e.at[0]
    elif e.kind == "bias":
        return None
    else:
        return (f"groups {s.groups}: input channel {e.at[0] if e.unbatched else e.at[1]} is in group "
                f"{e.channels.start // Og}, so only output channels {_range(e.channels)} read it.")
    g = o // Og
    return (f"groups {s.groups}: the {shape.C} input channels are split into {s.groups} groups of {Cg}, and "
            f"the {shape.out_channels} output channels into groups of {Og}. Output channel {o} is in group {g}, "
            f"so it sees input channel{'s' if Cg > 1 else ''} {_range(range(g * Cg, (g + 1) * Cg))} only "
            + (f"(c = 0..{Cg - 1} in the formula is input channel {g * Cg} + c)." if Cg > 1 else
               f"(c = 0 in the formula is input channel {g * Cg})."))


def _range(r: range) -> str:
    return str(r.start) if len(r) == 1 else f"{r.start}–{r.stop - 1}"


def term_source(t, mode: str) -> str:
    """Where a term's input value comes from: a pixel, zero padding, or a padding copy."""
    if t.input_index is None:
        return "padding (0)"
    name = f"x[{idx(t.input_index)}]"
    return f"padding ← {name}" if t.is_padding else name


def torch_line(e, dec: int) -> str | None:
    if e.torch_value is None:
        return None
    diff = abs(e.torch_value - e.value)
    verdict = "the same number" if diff == 0 else f"|difference| {diff:.1e}"
    return f"torch computes {num(e.torch_value, max(dec, 4) if dec else 0)} ({verdict})"


# --------------------------------------------------------------------------- text


def to_text(e, decimals: int | None = None) -> str:
    decimals = check_decimals(decimals)
    dec = decimals_for(e) if decimals is None else decimals
    if e.kind == "output":
        return "\n".join(_output_text(e, dec))
    return "\n".join(_grad_text(e, dec))


def _formula_parts(e, at_pos) -> tuple[str, str, str, str]:
    """(Σ over the taps, x̃'s spatial index, x̃'s index with this element's numbers, the taps) of the forward formula."""
    s, nd = e.spec, e.ndim
    outs, taps, axes = OUT_LETTERS[nd], TAP_LETTERS[nd], AXIS_LETTERS[nd]
    sums = " ".join(f"Σ_{u}" for u in taps)
    general = ", ".join(f"{i}·s{a} + {u}·d{a}" for i, u, a in zip(outs, taps, axes))
    numbers = ", ".join(f"{i}·{st} + {u}·{d}" for i, u, st, d in zip(at_pos, taps, s.stride, s.dilation))
    return sums, general, numbers, ", ".join(taps)


def _output_text(e, dec: int) -> list[str]:
    s, shape = e.spec, e.shape
    nd = e.ndim
    at = e.at
    n = 0 if e.unbatched else at[0]
    o, pos = at[-nd - 1], at[-nd:]
    b = "" if e.unbatched else "n, "
    bn = "" if e.unbatched else f"{n}, "
    starts = tuple(p * st for p, st in zip(pos, s.stride))
    sums, general, numbers, taps = _formula_parts(e, pos)
    outs = ", ".join(OUT_LETTERS[nd])
    plural = {"position": "positions", "row": "rows", "column": "columns", "depth slice": "depth slices"}
    spans = [f"{plural[name]} {a}..{a + (k - 1) * d}"
             for name, a, k, d in zip(LINE_NAMES[nd], starts, s.kernel_size, s.dilation)]
    span = " and ".join(spans) if nd < 3 else f"{spans[0]}, {spans[1]} and {spans[2]}"
    if nd == 2:
        (dH, dW) = s.dilation
        gaps = (f" (dilation {(dH, dW)}: the taps are {dH} row{'s' if dH > 1 else ''} and {dW} column"
                f"{'s' if dW > 1 else ''} apart)")
    elif nd == 1:
        gaps = f" (dilation {s.dilation[0]}: the taps are {s.dilation[0]} cells apart)"
    else:
        dD, dH, dW = s.dilation
        gaps = f" (dilation {s.dilation}: the taps are {dD} slice(s), {dH} row(s) and {dW} column(s) apart)"
    lines = [
        f"{_out_name(e)} = {num(e.value, dec)}",
        f"  conv{nd}d: {layer_line(e)}",
        "",
        "The formula",
        f"  out[{b}o, {outs}] = bias[o] + Σ_c {sums} x̃[{b}c, {general}] · w[o, c, {taps}]",
        f"  {_out_name(e)} = bias[{o}] + Σ_c {sums} x̃[{bn}c, {numbers}] · w[{o}, c, {taps}]",
        f"  The window: {span} of x̃" + (gaps if any(d != 1 for d in s.dilation) else "") + ".",
        "  " + padding_line(e),
    ]
    gl = groups_line(e)
    if gl:
        lines.append("  " + gl)
    Cg = shape.in_per_group
    per_channel = [float(np.sum([t.product for t in channel_terms(e, c)])) for c in range(Cg)]
    for c in range(min(Cg, DETAIL_CHANNELS)):
        ch = e.channels.start + c
        block = channel_terms(e, c)
        window = ", ".join(_slice_text(a, k, d) for a, k, d in zip(starts, s.kernel_size, s.dilation))
        lines += ["", f"Input channel {ch}: the window x̃[{bn}{ch}, {window}] beside the kernel w[{o}, {c}]"]
        lines += _window_lines(e, c, dec, starts)
        if e.window_padding[c].any():
            lines.append("  * padding cell" + (" (zero padding: the value is 0)" if s.padding_mode == "zeros" else
                                               f" (padding_mode {s.padding_mode!r}: the products name the pixel "
                                               "each one copies)"))
        lines.append(f"  products, tap ({taps}): input × weight = product")
        src = [term_source(t, s.padding_mode) for t in block]
        width = max(len(x) for x in src)
        vals = [num(t.input_value, dec) for t in block]
        wts = [num(t.weight_value, dec) for t in block]
        prods = [num(t.product, dec) for t in block]
        vw, ww, pw = (max(len(x) for x in col) for col in (vals, wts, prods))
        for t, sname, xv, wv, pv in zip(block, src, vals, wts, prods):
            lines.append(f"    ({idx(t.tap)})  {sname.ljust(width)}  {xv.rjust(vw)} × {wv.rjust(ww)}"
                         f" = {pv.rjust(pw)}")
        lines.append(f"  sum for input channel {ch}: {num(per_channel[c], dec)}")
    if Cg > DETAIL_CHANNELS:
        rest = ", ".join(f"{e.channels.start + c}: {num(per_channel[c], dec)}"
                         for c in range(DETAIL_CHANNELS, Cg))
        lines += ["", f"Sums for the other input channels ({Cg - DETAIL_CHANNELS} more; all terms in .terms): {rest}"]
    lines.append("")
    if Cg > 1:
        total = " + ".join(num(v, dec) for v in per_channel) if Cg <= 8 else "…"
        lines.append(f"Σ over input channels {_range(e.channels)}: {total} = {num(e.sum_of_products, dec)}")
    label = f"= {_out_name(e)}"
    bias_label = f"+ bias[{o}]" if e.has_bias else "+ bias (none)"
    width = max(len("sum of products"), len(bias_label), len(label))
    vals = [num(e.sum_of_products, dec), num(e.bias, dec), num(e.value, dec)]
    vw = max(len(v) for v in vals)
    lines += [
        f"{'sum of products'.ljust(width)}  {vals[0].rjust(vw)}",
        f"{bias_label.ljust(width)}  {vals[1].rjust(vw)}",
        f"{label.ljust(width)}  {vals[2].rjust(vw)}",
    ]
    if e.has_bias and e.sum_of_products != 0:
        lines.append(f"(Without the bias the sum is {num(e.sum_of_products, dec)}: "
                     f"nn.Conv{nd}d adds a bias unless bias=False.)")
    if all(t.is_padding and t.input_index is None for t in e.terms):
        lines.append("(Every tap reads zero padding, so this output is the bias alone.)")
    tl = torch_line(e, dec)
    if tl:
        lines.append(tl)
    return lines


def row_lines(values: np.ndarray, dec: int, marks=None, window=None, width: int | None = None) -> list[str]:
    """A 1-d array as one row of cells ``width`` wide (default: its widest number), ``*`` after marked
    (padding) cells, and under it a line of ``^`` below the ``window`` cells (when given)."""
    cells = [num(v, dec) for v in values]
    width = max(len(c) for c in cells) if width is None else width
    row = " ".join(c.rjust(width) + ("*" if marks is not None and marks[k] else " ") for k, c in enumerate(cells))
    lines = ["[" + row.rstrip() + "]"]
    if window is not None:
        lines.append(" " + " ".join(("^" if window[k] else " ").rjust(width) + " " for k in range(len(cells))).rstrip())
    return lines


def _window_lines(e, c: int, dec: int, starts: tuple) -> list[str]:
    """The window beside the kernel: 2-d grids; 1-d rows (under the padded input, the window marked);
    3-d one depth slice at a time."""
    s = e.spec
    if e.ndim == 2:
        return ["  " + line for line in side_by_side(
            ["window", *grid_lines(e.window[c], dec, e.window_padding[c])],
            ["kernel", *grid_lines(e.kernel[c], dec)])]
    if e.ndim == 1:
        prod = np.array([t.product for t in channel_terms(e, c)])
        rows = [("window", e.window[c], e.window_padding[c]), ("kernel", e.kernel[c], None),
                ("products", prod, e.window_padding[c])]
        shown = [values for _, values, _ in rows] + ([] if e.padded_input is None else [e.padded_input[c]])
        width = max(len(num(v, dec)) for values in shown for v in values)
        lines = []
        if e.padded_input is not None:
            pad, win = _padded_masks(e, c)
            row, carets = row_lines(e.padded_input[c], dec, pad, win, width)
            lines += [f"  {'x̃'.ljust(10)} {row}", f"  {'(window ^)'.ljust(10)} {carets}"]
        for name, values, marks in rows:
            lines.append(f"  {name.ljust(10)} " + row_lines(values, dec, marks, width=width)[0])
        return lines
    lines = []
    for r in range(s.kernel_size[0]):
        depth = starts[0] + r * s.dilation[0]
        lines.append(f"  tap depth r = {r}: x̃ depth slice {depth}")
        lines += ["    " + line for line in side_by_side(
            ["window", *grid_lines(e.window[c, r], dec, e.window_padding[c, r])],
            ["kernel", *grid_lines(e.kernel[c, r], dec)])]
    return lines


def _grad_text(e, dec: int) -> list[str]:
    s, nd = e.spec, e.ndim
    outs, taps, pix = ", ".join(OUT_LETTERS[nd]), ", ".join(TAP_LETTERS[nd]), ", ".join(IN_LETTERS[nd])
    sums = " ".join(f"Σ_{i}" for i in OUT_LETTERS[nd])
    b = "" if e.unbatched else "n, "
    head = {"input": f"∂L/∂x[{idx(e.at)}]", "weight": f"∂L/∂w[{idx(e.at)}]", "bias": f"∂L/∂bias[{idx(e.at)}]"}[e.kind]
    lines = [f"{head} = {num(e.value, dec)}   where L = Σ out · grad_out", f"  conv{nd}d: {layer_line(e)}", "",
             "The formula"]
    if e.kind == "input":
        lines += [f"  ∂L/∂x[{b}c, {pix}] = Σ grad_out[{b}o, {outs}] · w[o, c', {taps}] over every output (o, {outs}) "
                  f"and kernel tap ({taps}) that reads pixel (c, {pix})",
                  "  (c' is c's index inside its group; a padding cell that copies the pixel counts as a read).",
                  "  " + padding_line(e)]
    elif e.kind == "weight":
        sum_n = "" if e.unbatched else "Σ_n "
        _, general, _, _ = _formula_parts(e, OUT_LETTERS[nd])
        tap = e.at[2:]
        cells = ", ".join(f"{i if st == 1 else f'{i}·{st}'} + {u * d}"
                          for i, u, st, d in zip(OUT_LETTERS[nd], tap, s.stride, s.dilation))
        lines += [f"  ∂L/∂w[o, c, {taps}] = {sum_n}{sums} grad_out[{b}o, {outs}] · x̃[{b}c, {general}]",
                  f"  Tap ({idx(tap)}) reads, for output ({outs}), the cell ({cells}) of x̃."
                  + (" This is the notebook's cross_correlation_grad (seed 004)." if nd == 2 else ""),
                  "  " + padding_line(e)]
    else:
        sum_n = "" if e.unbatched else "Σ_n "
        lines += [f"  ∂L/∂bias[o] = {sum_n}{sums} grad_out[{b}o, {outs}]: the bias is added to every output of "
                  "channel o."]
    gl = groups_line(e)
    if gl:
        lines.append("  " + gl)
    lines.append("")
    if not e.terms:
        lines.append("No tap reads this pixel, so no output depends on it and the gradient is 0.")
        if e.reason:
            lines.append("Why: " + e.reason + ".")
        tl = torch_line(e, dec)
        if tl:
            lines.append(tl)
        return lines
    rows = []
    for t in e.terms[:MAX_TERM_LINES]:
        g = f"grad_out[{idx(t.output_index)}]"
        if e.kind == "input":
            rows.append((g, num(t.grad_output_value, dec), f"w[{idx(t.weight_index)}]" +
                         (" (via padding)" if t.is_padding else ""), num(t.weight_value, dec), num(t.product, dec)))
        elif e.kind == "weight":
            rows.append((g, num(t.grad_output_value, dec), term_source(t, s.padding_mode),
                         num(t.input_value, dec), num(t.product, dec)))
        else:
            rows.append((g, num(t.grad_output_value, dec), "", "", num(t.product, dec)))
    widths = [max(len(r[k]) for r in rows) for k in range(5)]
    what = {"input": "grad_out × weight", "weight": "grad_out × input", "bias": "grad_out"}[e.kind]
    lines.append(f"The {len(e.terms)} term{'s' if len(e.terms) != 1 else ''} ({what} = product):")
    for r in rows:
        if e.kind == "bias":
            lines.append(f"  {r[0].ljust(widths[0])}  {r[1].rjust(widths[1])}")
        else:
            lines.append(f"  {r[0].ljust(widths[0])}  {r[1].rjust(widths[1])} × {r[2].ljust(widths[2])}  "
                         f"{r[3].rjust(widths[3])} = {r[4].rjust(widths[4])}")
    if len(e.terms) > MAX_TERM_LINES:
        lines.append(f"  … and {len(e.terms) - MAX_TERM_LINES} more terms (all of them in .terms)")
    if e.kind == "weight" and not e.unbatched and e.shape.N > 1:
        lines.append(_per_sample_line(e, dec))
    if len(e.terms) <= 12:
        lines.append("sum: " + " + ".join(num(t.product, dec) for t in e.terms).replace("+ -", "− ")
                     + f" = {num(e.sum_of_products, dec)}")
    else:
        lines.append(f"sum of the {len(e.terms)} terms: {num(e.sum_of_products, dec)}")
    lines.append(f"= {head} = {num(e.value, dec)}")
    tl = torch_line(e, dec)
    if tl:
        lines.append(tl)
    return lines


def _per_sample_line(e, dec: int, limit: int = 16) -> str:
    """A weight gradient's sum split by sample: the sum over the positions of each sample n of the batch."""
    sums = np.zeros(e.shape.N)
    for t in e.terms:
        sums[t.output_index[0]] += t.product
    shown = ", ".join(f"{n}: {num(v, dec)}" for n, v in enumerate(sums[:limit]))
    more = f", … ({e.shape.N - limit} more)" if e.shape.N > limit else ""
    sums_ij = " ".join(f"Σ_{i}" for i in OUT_LETTERS[e.ndim])
    return f"sum per sample n ({sums_ij}): {shown}{more}"


# --------------------------------------------------------------------------- HTML

_STYLE = (
    "<style>"
    ".cs-expl{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;line-height:1.35}"
    ".cs-expl table{border-collapse:collapse;margin:4px 12px 8px 0;display:inline-table;vertical-align:top}"
    ".cs-expl td,.cs-expl th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    ".cs-expl th{background:#f4f4f4;font-weight:600}"
    ".cs-expl td.cs-pad{background:#eeeeee;color:#777;font-style:italic}"
    ".cs-expl td.cs-win{background:#ffe08a;outline:2px solid #d19a00}"
    ".cs-expl td.cs-win.cs-pad{background:#f3dfa6}"
    ".cs-expl td.cs-src{background:#d5f5dc;box-shadow:inset 0 0 0 2px #27ae60}"
    ".cs-expl td.cs-win.cs-src{background:#ffe08a}"
    ".cs-expl .cs-value{font-size:15px;font-weight:700}"
    ".cs-expl caption{caption-side:top;text-align:left;color:#555;padding-bottom:2px}"
    "</style>"
)


def _esc(s) -> str:
    return html.escape(str(s))


def _grid_html(a: np.ndarray, dec: int, caption: str, pad=None, win=None, titles=None, keys=None) -> str:
    """A table of ``a``; ``keys[r][c]`` are extra class names that tie the cell to its tap (hover links)."""
    rows = []
    for r in range(a.shape[0]):
        cells = []
        for c in range(a.shape[1]):
            cls = []
            if win is not None and win[r, c]:
                cls.append("cs-win")
            if pad is not None and pad[r, c]:
                cls.append("cs-pad")
            if keys is not None:
                cls.extend(keys[r][c])
            attr = f' class="{" ".join(cls)}"' if cls else ""
            title = f' title="{_esc(titles[r][c])}"' if titles is not None and titles[r][c] else ""
            cells.append(f"<td{attr}{title}>{_esc(num(a[r, c], dec))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><caption>{_esc(caption)}</caption>{''.join(rows)}</table>"


_HTML_IDS = itertools.count()


def _link_style(root: str, keys: list[str]) -> str:
    """Hover links, in CSS only (no script, so it works wherever the HTML is shown).

    Hovering any cell of class ``k`` (a tap: its padded-input cell, window cell, kernel weight and
    product) highlights every cell of class ``k``, and with ``s-k`` the real pixel a padding cell
    copied (reflect, replicate, circular).  ``:has()`` needs a current browser; elsewhere the
    tables are shown without the links.
    """
    rules = []
    for k in keys:
        rules.append(f"#{root}:has(.{k}:hover) td.{k}{{background:#ff9f43;outline:2px solid #c0392b;color:#000}}")
        rules.append(f"#{root}:has(.{k}:hover) td.s-{k}{{background:#9be7a7;outline:2px dashed #1e8449}}")
    return "<style>" + "".join(rules) + "</style>" if rules else ""


def _padded_masks(e, c: int):
    """Boolean masks (padding cells, window cells) over the padded input, for channel offset c."""
    s, shape = e.spec, e.shape
    sizes = s.padded_size(shape.spatial)
    pad = np.ones(sizes, dtype=bool)
    pad[tuple(slice(p0, p0 + n) for (p0, _), n in zip(s.padding, shape.spatial))] = False
    win = np.zeros(sizes, dtype=bool)
    for t in channel_terms(e, c):
        win[t.padded_index] = True
    return pad, win


def to_html(e) -> str:
    dec = decimals_for(e)
    lines = to_text(e, dec).split("\n")
    start = lines.index("The formula")
    stop = lines.index("", start)  # the formula block ends at the first blank line
    root = f"cs-expl-{next(_HTML_IDS)}"
    parts = [_STYLE, f'<div class="cs-expl" id="{root}">', f'<div class="cs-value">{_esc(lines[0])}</div>']
    parts += [f"<div>{_esc(line.strip())}</div>" for line in lines[1:stop] if line.strip()]
    parts.append(_output_html(e, dec, root) if e.kind == "output" else _grad_html(e, dec))
    parts.append("</div>")
    return "".join(parts)


def _output_html(e, dec: int, root: str) -> str:
    if e.ndim != 2:
        return _output_html_nd(e, dec, root)
    s, shape = e.spec, e.shape
    kH, kW = s.kernel_size
    (pt, _), (pl, _) = s.padding
    o = e.at[-3]
    out = []
    links = []
    Cg = shape.in_per_group
    for c in range(min(Cg, DETAIL_CHANNELS)):
        ch = e.channels.start + c
        block = channel_terms(e, c)
        keys = [f"cs-t{c}-{t.tap[0]}-{t.tap[1]}" for t in block]  # one class per tap, linking its cells
        links.extend(keys)
        tap_keys = [[[] for _ in range(kW)] for _ in range(kH)]  # window, kernel and products cells
        for t, key in zip(block, keys):
            tap_keys[t.tap[0]][t.tap[1]].append(key)
        out.append(f"<div><b>input channel {ch}</b></div><div>")
        if e.padded_input is not None:
            pad, win = _padded_masks(e, c)
            cell_keys = [[[] for _ in range(pad.shape[1])] for _ in range(pad.shape[0])]
            for t, key in zip(block, keys):
                cell_keys[t.padded_index[0]][t.padded_index[1]].append(key)
                if t.is_padding and t.input_index is not None:  # the real pixel this padding cell copies
                    src = cell_keys[t.input_index[-2] + pt][t.input_index[-1] + pl]
                    src.extend(k for k in ("cs-src", "s-" + key) if k not in src)
            rmap = source_map(shape.H, pt, s.padding[0][1], s.padding_mode)  # padded row → real row, −1: zero
            cmap = source_map(shape.W, pl, s.padding[1][1], s.padding_mode)
            bn = "" if e.unbatched else f"{e.at[0]}, "
            titles = [[("zero padding" if rmap[r] < 0 or cmap[cc] < 0 else
                        f"padding ({s.padding_mode}) ← x[{bn}{ch}, {rmap[r]}, {cmap[cc]}]")
                       if pad[r, cc] else f"x[{bn}{ch}, {r - pt}, {cc - pl}]" for cc in range(pad.shape[1])]
                      for r in range(pad.shape[0])]
            caption = f"padded input x̃, channel {ch}: the window highlighted"
            if any(t.is_padding and t.input_index is not None for t in block):
                caption += f" (green: the pixels its {s.padding_mode} padding copies)"
            out.append(_grid_html(e.padded_input[c], dec, caption, pad, win, titles, cell_keys))
        titles = [[term_source(block[u * kW + v], s.padding_mode) for v in range(kW)] for u in range(kH)]
        out.append(_grid_html(e.window[c], dec, "window", e.window_padding[c], None, titles, tap_keys))
        out.append(_grid_html(e.kernel[c], dec, f"kernel w[{o}, {c}]", keys=tap_keys))
        prod = np.array([t.product for t in block]).reshape(kH, kW)
        out.append(_grid_html(prod, dec, "products", e.window_padding[c], keys=tap_keys))
        out.append(f"</div><div>sum for input channel {ch}: {_esc(num(sum(t.product for t in block), dec))}</div>")
    out += _totals_html(e, dec, o)
    return _link_style(root, links) + "".join(out)


def _totals_html(e, dec: int, o: int) -> list[str]:
    """The sum of products, the bias, the value (and torch's) as a table, and the hover hint."""
    rows = [("sum of products", e.sum_of_products), (f"+ bias[{o}]" if e.has_bias else "+ bias (none)", e.bias),
            (f"= out[{idx(e.at)}]", e.value)]
    if e.torch_value is not None:
        rows.append(("torch", e.torch_value))
    return ["<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(num(v, dec))}</td></tr>" for k, v in rows)
            + "</table>",
            "<div>Hover a cell of the window, the kernel or the products to see its tap in every table.</div>"]


def _output_html_nd(e, dec: int, root: str) -> str:
    """1-d: the padded input row (window highlighted), the window, kernel and products as rows;
    3-d: the window, kernel and products one depth slice at a time."""
    s, shape = e.spec, e.shape
    o = e.at[-s.ndim - 1]
    out, links = [], []
    for c in range(min(shape.in_per_group, DETAIL_CHANNELS)):
        ch = e.channels.start + c
        block = channel_terms(e, c)
        keys = {t.tap: f"cs-t{c}-" + "-".join(map(str, t.tap)) for t in block}  # one class per tap
        links.extend(keys.values())
        sources = {t.tap: term_source(t, s.padding_mode) for t in block}
        prod = np.array([t.product for t in block]).reshape(e.window[c].shape)
        out.append(f"<div><b>input channel {ch}</b></div><div>")
        if s.ndim == 1:
            (kL,) = s.kernel_size
            tap_keys = [[[keys[(u,)]] for u in range(kL)]]
            titles = [[sources[(u,)] for u in range(kL)]]
            if e.padded_input is not None:
                pad, win = _padded_masks(e, c)
                cell_keys = [[[] for _ in range(pad.size)]]
                for t in block:
                    cell_keys[0][t.padded_index[0]].append(keys[t.tap])
                out.append(_grid_html(e.padded_input[c][None], dec, f"padded input x̃, channel {ch}: the window "
                                      "highlighted", pad[None], win[None], keys=cell_keys))
            out.append(_grid_html(e.window[c][None], dec, "window", e.window_padding[c][None], None, titles, tap_keys))
            out.append(_grid_html(e.kernel[c][None], dec, f"kernel w[{o}, {c}]", keys=tap_keys))
            out.append(_grid_html(prod[None], dec, "products", e.window_padding[c][None], keys=tap_keys))
        else:
            _, kH, kW = s.kernel_size
            for r in range(s.kernel_size[0]):
                tap_keys = [[[keys[(r, u, v)]] for v in range(kW)] for u in range(kH)]
                titles = [[sources[(r, u, v)] for v in range(kW)] for u in range(kH)]
                depth = e.at[-3] * s.stride[0] + r * s.dilation[0]
                out.append(f"<div>tap depth r = {r}: x̃ depth slice {depth}</div><div>")
                out.append(_grid_html(e.window[c, r], dec, "window", e.window_padding[c, r], None, titles, tap_keys))
                out.append(_grid_html(e.kernel[c, r], dec, f"kernel w[{o}, {c}, {r}]", keys=tap_keys))
                out.append(_grid_html(prod[r], dec, "products", e.window_padding[c, r], keys=tap_keys))
                out.append("</div>")
        out.append(f"</div><div>sum for input channel {ch}: {_esc(num(sum(t.product for t in block), dec))}</div>")
    return _link_style(root, links) + "".join(out + _totals_html(e, dec, o))


def _grad_html(e, dec: int) -> str:
    if not e.terms:
        return f"<div>No tap reads this pixel: the gradient is 0. {_esc(e.reason or '')}</div>"
    head = {"input": ("grad_out", "", "weight", "", "product"),
            "weight": ("grad_out", "", "input", "", "product"),
            "bias": ("grad_out", "value", "", "", "product")}[e.kind]
    rows = []
    for t in e.terms[:200]:
        cls = ' class="cs-pad"' if t.is_padding else ""
        if e.kind == "input":
            cells = (f"grad_out[{idx(t.output_index)}]", num(t.grad_output_value, dec), f"w[{idx(t.weight_index)}]",
                     num(t.weight_value, dec), num(t.product, dec))
        elif e.kind == "weight":
            cells = (f"grad_out[{idx(t.output_index)}]", num(t.grad_output_value, dec),
                     term_source(t, e.spec.padding_mode), num(t.input_value, dec), num(t.product, dec))
        else:
            cells = (f"grad_out[{idx(t.output_index)}]", num(t.grad_output_value, dec), "", "", num(t.product, dec))
        rows.append(f"<tr{cls}>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    more = f"<div>… and {len(e.terms) - 200} more terms</div>" if len(e.terms) > 200 else ""
    table = ("<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")
    total = (f"<table><tr><th>sum</th><td>{_esc(num(e.sum_of_products, dec))}</td></tr>"
             f"<tr><th>value</th><td>{_esc(num(e.value, dec))}</td></tr>"
             + (f"<tr><th>torch</th><td>{_esc(num(e.torch_value, dec))}</td></tr>" if e.torch_value is not None else "")
             + "</table>")
    return table + more + total
