"""Why a convolution's output has the size it has, with the numbers filled in.

Along one dimension (height, then width) of ``n`` input pixels, with padding
``before`` and ``after``, kernel size ``k``, stride ``s`` and dilation ``d``::

    out = ⌊(n + before + after − d·(k−1) − 1) / s⌋ + 1

The padded input has ``n + before + after`` positions and one window spans
``d·(k−1) + 1`` of them (its *extent*).  The numerator is how far the window
can slide; the floor counts the whole strides that fit, and the ``+ 1`` is the
window at position 0.  Output ``i`` through tap ``u`` reads padded coordinate
``p = i·s + u·d``, which is input pixel ``p − before`` when that lies in
``0 … n−1`` and zero padding otherwise (:mod:`convscope.geometry`).

Three things follow from the formula, and :func:`explain_shape` reports each:

* the remainder of the floor, ``numerator mod s`` padded positions after the
  last window, is never read; when those positions are real pixels they are
  dropped silently;
* a stride larger than the extent skips the pixels between two windows, and a
  dilation larger than 1 skips the pixels between two taps unless another
  window reads them;
* a numerator below 0 means the padded input is smaller than one window: no
  window fits and the output is empty (torch raises).

``padding='same'`` pads a total of ``d·(k−1)`` per dimension, ``total // 2``
before and the rest after, so an odd total puts the extra row at the bottom
(the extra column at the right), as torch does.
"""
from __future__ import annotations

import html
from typing import NamedTuple

import numpy as np

from ..geometry import output_length, tap_sources, transposed_output_length
from ..spec import (MAX_INT, ConvSpec, _is_int, check_ndim, check_output_padding, check_positive_int,
                    check_transposed_padding, make_spec)

__all__ = ["DimExplanation", "ShapeExplanation", "TransposedDimExplanation", "TransposedShapeExplanation",
           "explain_shape"]

_INPUT_LAYOUTS = "(H, W), (C, H, W) or (N, C, H, W)"
_LAYOUTS = {1: "(L,), (C, L) or (N, C, L)", 2: _INPUT_LAYOUTS, 3: "(D, H, W), (C, D, H, W) or (N, C, D, H, W)"}
_AXES = {1: "L", 2: "HW", 3: "DHW"}

# Words for the spatial dimensions: (title, symbol, singular, plural, before, after).
_WORDS = {
    "L": ("length", "L", "position", "positions", "left", "right"),
    "D": ("depth", "D", "plane", "planes", "front", "back"),
    "H": ("height", "H", "row", "rows", "top", "bottom"),
    "W": ("width", "W", "column", "columns", "left", "right"),
}


class DimExplanation(NamedTuple):
    """The output size along one spatial dimension, and what feeds it.

    ``numerator`` is ``size + pad[0] + pad[1] − dilation·(kernel−1) − 1`` and
    ``out = numerator // stride + 1`` (≤ 0 when no window fits).  ``unread``
    lists the input indices (``0 … size−1``) that no tap of any window reads:
    every index when no window fits.
    """

    name: str  # 'H' or 'W'
    size: int
    kernel: int
    stride: int
    dilation: int
    pad: tuple[int, int]  # (before, after): (top, bottom) or (left, right)
    numerator: int
    out: int
    unread: tuple[int, ...]

    @property
    def extent(self) -> int:
        """Padded positions one window spans: ``dilation·(kernel−1) + 1``."""
        return self.dilation * (self.kernel - 1) + 1

    @property
    def padded_size(self) -> int:
        return self.size + self.pad[0] + self.pad[1]

    @property
    def empty(self) -> bool:
        return self.out < 1


# --------------------------------------------------------------------------- input_shape


def _check_input_shape(input_shape, ndim: int = 2) -> tuple[int, ...]:
    """``input_shape`` as a tuple of ints: ``ndim``, ``ndim + 1`` or ``ndim + 2`` values, spatial sizes
    positive."""
    layouts = _LAYOUTS[ndim]
    if isinstance(input_shape, (str, bytes)) or not (
        isinstance(input_shape, (tuple, list)) or (isinstance(input_shape, np.ndarray) and input_shape.ndim == 1)
    ):
        raise TypeError(
            f"input_shape must be a tuple of ints {layouts}, "
            f"got {input_shape!r} ({type(input_shape).__name__})"
        )
    items = tuple(input_shape)
    if not all(_is_int(v) for v in items):
        raise TypeError(f"input_shape must be a tuple of ints {layouts}, got {items!r}")
    shape = tuple(int(v) for v in items)
    if len(shape) not in (ndim, ndim + 1, ndim + 2):
        counts = f"{ndim}, {ndim + 1} or {ndim + 2}"
        raise ValueError(
            f"input_shape must have {counts} values {layouts}, got {len(shape)} values: {shape}"
        )
    if max(shape) > MAX_INT:
        raise ValueError(f"input_shape values must be at most {MAX_INT}, got {shape}")
    if min(shape[-ndim:]) < 1:
        names = {1: "length", 2: "height and width", 3: "depth, height and width"}[ndim]
        raise ValueError(f"input_shape {names} must be positive, got {shape}")
    if len(shape) >= ndim + 1 and shape[-ndim - 1] < 1:
        raise ValueError(f"input_shape must have at least one channel, got {shape}")
    if len(shape) == ndim + 2 and shape[0] < 0:
        raise ValueError(f"input_shape batch size must not be negative, got {shape}")
    return shape


# --------------------------------------------------------------------------- text pieces


def _num(value: int) -> str:
    """An integer with a typographic minus sign."""
    return str(value).replace("-", "−")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def format_indices(indices, singular: str, plural: str) -> str:
    """A readable list of indices: ``row 5``, ``rows 2 and 5``, ``rows 2, 5 and 8``, ``rows 10–31``.

    Runs of three or more become ranges; long lists are shortened.

    >>> format_indices([2, 5], "row", "rows")
    'rows 2 and 5'
    >>> format_indices([0, 1, 2, 3, 9], "column", "columns")
    'columns 0–3 and 9'
    >>> format_indices(range(1, 64, 2), "row", "rows")
    'rows 1, 3, 5, …, 63 (every 2nd row, 32 in all)'
    """
    idx = [int(i) for i in indices]
    if len(idx) == 1:
        return f"{singular} {idx[0]}"
    runs: list[list[int]] = []
    for i in idx:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    items: list[str] = []
    for a, b in runs:
        if b - a >= 2:
            items.append(f"{a}–{b}")
        else:
            items.extend(str(i) for i in range(a, b + 1))
    if len(items) <= 6:
        return f"{plural} {_join(items)}"
    steps = {b - a for a, b in zip(idx, idx[1:])}
    if len(steps) == 1:
        step = steps.pop()
        return (f"{plural} {idx[0]}, {idx[1]}, {idx[2]}, …, {idx[-1]} "
                f"(every {_ordinal(step)} {singular}, {len(idx)} in all)")
    return f"{plural} {', '.join(items[:4])}, …, {items[-1]} ({len(idx)} in all)"


def _formula_lines(dim: DimExplanation) -> list[str]:
    """The general formula, then the same with the numbers filled in."""
    _, sym, _, _, before, after = _WORDS[dim.name]
    general = (f"{sym}_out = ⌊({sym} + pad_{before} + pad_{after} − d·(k−1) − 1)/s⌋ + 1")
    filled = (f"{sym}_out = ⌊({dim.size} + {dim.pad[0] + dim.pad[1]} − {dim.dilation}·({dim.kernel}−1) − 1)"
              f"/{dim.stride}⌋ + 1 = ⌊{_num(dim.numerator)}/{dim.stride}⌋ + 1")
    return [general, f"{filled} = {_num(dim.out)}"]


def _same_line(dim: DimExplanation) -> str:
    _, _, singular, _, before, after = _WORDS[dim.name]
    total = dim.pad[0] + dim.pad[1]
    line = (f"padding='same': total {dim.dilation}·({dim.kernel}−1) = {total} "
            f"→ {before} {dim.pad[0]}, {after} {dim.pad[1]}")
    if total % 2:
        line += f" (torch puts the extra {singular} at the {after})"
    return line


def _extent_line(dim: DimExplanation) -> str:
    _, _, _, plural, _, _ = _WORDS[dim.name]
    return (f"kernel extent d·(k−1) + 1 = {dim.dilation}·({dim.kernel}−1) + 1 = {dim.extent} {plural}: "
            f"the {dim.kernel} taps of a window are {dim.dilation} {plural} apart")


def _empty_line(dim: DimExplanation) -> str:
    title, sym, _, _, _, _ = _WORDS[dim.name]
    return (f"no window fits: the padded {title} {sym} + pads = {dim.size} + {dim.pad[0]} + {dim.pad[1]} "
            f"= {dim.padded_size} is smaller than the kernel's extent d·(k−1) + 1 = "
            f"{dim.dilation}·({dim.kernel}−1) + 1 = {dim.extent}")


def _unread_line(dim: DimExplanation) -> str:
    """Which input indices no window reads, and why (stride gap, dilation gap, floor)."""
    _, _, singular, plural, _, _ = _WORDS[dim.name]
    if not dim.unread:
        return f"every {singular} of the input is read"
    last_start = (dim.out - 1) * dim.stride
    last_end = last_start + dim.extent - 1
    dropped, between_taps, between_windows = [], [], []
    for r in dim.unread:
        p = r + dim.pad[0]  # padded coordinate
        if p > last_end:
            dropped.append(r)
        elif p - min(p // dim.stride, dim.out - 1) * dim.stride < dim.extent:  # inside the latest window
            between_taps.append(r)
        else:
            between_windows.append(r)

    several = sum(map(bool, (between_windows, between_taps, dropped))) > 1

    def which(rows):  # " (row 2)" when the line gives several causes
        if not several:
            return ""
        listed = format_indices(rows, singular, plural)
        return f": {listed}" if "(" in listed else f" ({listed})"

    reasons = []
    if between_windows:
        gap = dim.stride - dim.extent
        reasons.append(
            f"stride {dim.stride} is larger than the kernel's extent {dim.extent}, so each step skips "
            f"{gap} {singular if gap == 1 else plural} between windows"
            + which(between_windows)
        )
    if between_taps:
        reasons.append(
            f"with dilation {dim.dilation} the taps of a window are {dim.dilation} {plural} apart, "
            f"and no window has a tap on the {plural} in between"
            + which(between_taps)
        )
    if dropped:
        remainder = dim.numerator % dim.stride
        span = f"the last window starts at padded {singular} {last_start} and ends at {last_end}"
        if dim.pad[0]:
            first_real, last_real = max(last_start - dim.pad[0], 0), last_end - dim.pad[0]
            span += (f" (input {singular} {first_real})" if first_real == last_real
                     else f" (input {plural} {first_real}–{last_real})")
        reasons.append(
            f"{span}, and ⌊{_num(dim.numerator)}/{dim.stride}⌋ drops the remainder of {remainder} padded "
            f"{singular if remainder == 1 else plural}"
            + which(dropped)
        )
    count = "is" if len(dim.unread) == 1 else "are"
    line = f"{format_indices(dim.unread, singular, plural)} of the input {count} never read: " + "; ".join(reasons)
    if len(dim.unread) == dim.size:
        line += f"; no window reaches a real {singular}, so every output reads only padding"
    return line


# --------------------------------------------------------------------------- the result


class ShapeExplanation:
    """The output size of a convolution, dimension by dimension, with the numbers filled in.

    Attributes
    ----------
    input_shape : tuple of ints, as given: (H, W), (C, H, W) or (N, C, H, W) (1-d: (L,), (C, L)
        or (N, C, L); 3-d: (D, H, W), (C, D, H, W) or (N, C, D, H, W))
    spec : :class:`~convscope.spec.ConvSpec`, the validated hyper-parameters
    padding : the padding as given (an int, a pair, ``'same'`` or ``'valid'``)
    out_channels : int or None
    dims : (:class:`DimExplanation` for H, :class:`DimExplanation` for W); one per spatial axis
    output_size : (H_out, W_out), (L_out,) or (D_out, H_out, W_out); the computed numbers, ≤ 0
        where the output is empty
    output_hw : the same as ``output_size``
    empty : True when no window fits along some dimension
    output_shape : (N, out_channels, H_out, W_out) for 4-D input, (out_channels, H_out, W_out)
        for 3-D input; None when ``out_channels`` is None, when the output is empty, and for
        2-D input (a bare (H, W) size: torch's conv2d takes only 3-D or 4-D input, so there is
        no tensor shape to report, and ``output_hw`` is the answer)
    unread : (rows, cols), the input rows and columns no window reads; input pixel (r, c) is
        read by some window exactly when r is not in ``rows`` and c is not in ``cols`` (one
        tuple per spatial axis)

    ``str()`` gives the explanation as text, ``_repr_html_()`` as HTML.
    """

    def __init__(self, input_shape: tuple[int, ...], spec: ConvSpec, padding, out_channels: int | None,
                 dims: tuple[DimExplanation, ...]):
        self.input_shape = input_shape
        self.spec = spec
        self.padding = padding
        self.out_channels = out_channels
        self.dims = dims
        self.output_size = tuple(d.out for d in dims)
        self.output_hw = self.output_size
        self.empty = any(d.empty for d in dims)
        self.unread = tuple(d.unread for d in dims)
        nd = len(dims)
        if self.empty or out_channels is None or len(input_shape) == nd:
            self.output_shape = None
        else:
            self.output_shape = input_shape[:-nd - 1] + (out_channels,) + self.output_size

    # ---- content shared by the text and the HTML

    def header(self) -> str:
        """One line naming the configuration: input shape and hyper-parameters, padding resolved."""
        s = self.spec
        if isinstance(self.padding, str):
            given = repr(self.padding)
        elif _is_int(self.padding):
            given = str(int(self.padding))
        else:
            given = str(tuple(int(v) for v in self.padding))
        text = (f"input {self.input_shape}, kernel_size={s.kernel_size}, stride={s.stride}, "
                f"padding={given} → {s.padding}, dilation={s.dilation}")
        if self.out_channels is not None:
            text += f", out_channels={self.out_channels}"
        return text

    def sections(self) -> list[tuple[str, list[str], list[str]]]:
        """Per dimension: (title, formula lines, notes)."""
        out = []
        for dim in self.dims:
            title, sym, _, _, before, after = _WORDS[dim.name]
            heading = (f"{title.capitalize()}: {sym} = {dim.size}, kernel {dim.kernel}, stride {dim.stride}, "
                       f"dilation {dim.dilation}, padding {before} {dim.pad[0]} + {after} {dim.pad[1]}")
            notes = []
            if self.spec.padding_arg == "same":
                notes.append(_same_line(dim))
            if dim.dilation > 1:
                notes.append(_extent_line(dim))
            if dim.empty:
                notes.append(_empty_line(dim))
            elif not self.empty:
                notes.append(_unread_line(dim))
            out.append((heading, _formula_lines(dim), notes))
        return out

    def conclusion(self) -> str:
        """The last line: the output shape, or why the output would be empty."""
        nd = len(self.dims)
        sizes = "×".join(_num(v) for v in self.output_size)
        if self.empty:
            which = " and ".join(_WORDS[d.name][0] for d in self.dims if d.empty)
            return (f"the output would be empty ({sizes}): no window fits in the "
                    f"{which}, so no input pixel is read and conv{nd}d raises an error for this input")
        if self.output_shape is not None:
            return f"output shape {self.output_shape}"
        if len(self.input_shape) == nd:
            names = ", ".join(f"{d.name}_out" for d in self.dims)
            return f"output size ({names}) = {self.output_size}"
        prefix = "" if len(self.input_shape) == nd + 1 else f"{self.input_shape[0]}, "
        return (f"output shape ({prefix}C_out, {', '.join(str(v) for v in self.output_size)}); "
                f"pass out_channels for the channel count")

    # ---- renderings

    def __str__(self) -> str:
        lines = [self.header()]
        for heading, formulas, notes in self.sections():
            lines.append(heading)
            lines.extend("  " + f for f in formulas)
            lines.extend("  " + n for n in notes)
        lines.append(self.conclusion())
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        parts = ['<div class="convscope-shape">', f"<p><strong>{esc(self.header())}</strong></p>"]
        for heading, formulas, notes in self.sections():
            parts.append(f"<p>{esc(heading)}</p>")
            parts.append("<pre>" + "\n".join(esc(f) for f in formulas) + "</pre>")
            if notes:
                parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
        parts.append(f"<p><strong>{esc(self.conclusion())}</strong></p>")
        parts.append("</div>")
        return "\n".join(parts)

    def __repr__(self) -> str:
        return (f"ShapeExplanation(input_shape={self.input_shape}, output_hw={self.output_hw}, "
                f"output_shape={self.output_shape}, empty={self.empty})")


# --------------------------------------------------------------------------- entry point


def _explain_dim(name: str, size: int, kernel: int, stride: int, pad: tuple[int, int],
                 dilation: int) -> DimExplanation:
    numerator = size + pad[0] + pad[1] - dilation * (kernel - 1) - 1
    out = output_length(size, kernel, stride, pad[0] + pad[1], dilation)
    table = tap_sources(size, pad[0], pad[1], "zeros", kernel, stride, dilation, max(out, 0))
    read = np.zeros(size, dtype=bool)
    read[table[table >= 0]] = True
    unread = tuple(int(i) for i in np.flatnonzero(~read))
    return DimExplanation(name, size, kernel, stride, dilation, pad, numerator, out, unread)


def explain_shape(input_shape, kernel_size, stride=1, padding=0, dilation=1,
                  out_channels=None, ndim=2, transposed=False, output_padding=0) -> ShapeExplanation:
    """Explain the output size of ``conv2d`` (``conv1d``, ``conv3d``) for an input of ``input_shape``.

    Parameters
    ----------
    input_shape : (H, W), (C, H, W) or (N, C, H, W), ints; 1-d: (L,), (C, L) or (N, C, L);
        3-d: (D, H, W), (C, D, H, W) or (N, C, D, H, W)
    kernel_size, stride, dilation : int or (int, int) (a tuple per axis)
    padding : int, (int, int), ``'valid'`` or ``'same'``
    out_channels : int or None; with it, ``output_shape`` is the full output shape
    ndim : the number of spatial dimensions: 1, 2 (default) or 3
    transposed : explain ``conv_transpose{1,2,3}d`` instead (a :class:`TransposedShapeExplanation`):
        the output size ``(n−1)·s − 2p + d·(k−1) + output_padding + 1``, the ``output_padding``
        values allowed and why, and how many kernel taps reach each output row
    output_padding : int or tuple, for ``transposed=True`` only

    The hyper-parameters are validated exactly as :func:`convscope.conv2d` does
    (TypeError / ValueError with the same messages); a configuration whose
    output would be empty is explained, not raised: ``.empty`` is True.

    Examples
    --------
    >>> e = explain_shape((1, 1, 6, 6), 2, stride=3, out_channels=1)
    >>> e.output_shape
    (1, 1, 2, 2)
    >>> e.unread
    ((2, 5), (2, 5))
    >>> print(e)  # doctest: +NORMALIZE_WHITESPACE
    input (1, 1, 6, 6), kernel_size=(2, 2), stride=(3, 3), padding=0 → ((0, 0), (0, 0)),
        dilation=(1, 1), out_channels=1
    Height: H = 6, kernel 2, stride 3, dilation 1, padding top 0 + bottom 0
      H_out = ⌊(H + pad_top + pad_bottom − d·(k−1) − 1)/s⌋ + 1
      H_out = ⌊(6 + 0 − 1·(2−1) − 1)/3⌋ + 1 = ⌊4/3⌋ + 1 = 2
      rows 2 and 5 of the input are never read: stride 3 is larger than the kernel's extent 2,
        so each step skips 1 row between windows (row 2); the last window starts at padded
        row 3 and ends at 4, and ⌊4/3⌋ drops the remainder of 1 padded row (row 5)
    Width: W = 6, kernel 2, stride 3, dilation 1, padding left 0 + right 0
      W_out = ⌊(W + pad_left + pad_right − d·(k−1) − 1)/s⌋ + 1
      W_out = ⌊(6 + 0 − 1·(2−1) − 1)/3⌋ + 1 = ⌊4/3⌋ + 1 = 2
      columns 2 and 5 of the input are never read: stride 3 is larger than the kernel's extent 2,
        so each step skips 1 column between windows (column 2); the last window starts at padded
        column 3 and ends at 4, and ⌊4/3⌋ drops the remainder of 1 padded column (column 5)
    output shape (1, 1, 2, 2)
    >>> explain_shape((2, 2), 3).empty
    True
    >>> explain_shape((8, 3, 16, 112, 112), 3, padding=1, stride=(1, 2, 2), out_channels=32, ndim=3).output_shape
    (8, 32, 16, 56, 56)
    >>> explain_shape((4, 2, 100), 5, stride=2, ndim=1).conclusion()
    'output shape (4, C_out, 48); pass out_channels for the channel count'

    A transposed convolution (the convolution-arithmetic case i = 3, k = 3, s = 2, p = 1):

    >>> t = explain_shape((3,), 3, stride=2, padding=1, ndim=1, transposed=True)
    >>> t.output_size, t.taps
    ((5,), ((1, 2, 1, 2, 1),))
    >>> explain_shape((3,), 3, stride=2, padding=1, ndim=1, transposed=True, output_padding=1).output_size
    (6,)
    """
    ndim = check_ndim(ndim)
    shape = _check_input_shape(input_shape, ndim)
    if not isinstance(transposed, (bool, np.bool_)):
        raise TypeError(f"transposed must be True or False, got {transposed!r}")
    if transposed:
        padding = check_transposed_padding(padding, ndim)
    elif not (_is_int(output_padding) and output_padding == 0):
        raise ValueError(f"output_padding is for transposed convolutions (transposed=True), got {output_padding!r}")
    spec = make_spec(kernel_size, stride, padding, dilation, ndim=ndim)
    channels = None if out_channels is None else check_positive_int(out_channels, "out_channels")
    if transposed:
        op = check_output_padding(output_padding, spec.stride, spec.dilation)
        tdims = tuple(
            _explain_transposed_dim(name, n, k, s, pad[0], d, a)
            for name, n, k, s, pad, d, a in zip(_AXES[ndim], shape[-ndim:], spec.kernel_size, spec.stride,
                                                spec.padding, spec.dilation, op)
        )
        return TransposedShapeExplanation(shape, spec, padding, channels, tdims)
    dims = tuple(
        _explain_dim(name, n, k, s, pad, d)
        for name, n, k, s, pad, d in zip(_AXES[ndim], shape[-ndim:], spec.kernel_size, spec.stride,
                                         spec.padding, spec.dilation)
    )
    return ShapeExplanation(shape, spec, padding, channels, dims)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- transposed convolutions


class TransposedDimExplanation(NamedTuple):
    """The output size of a transposed convolution along one spatial dimension.

    ``out = (size − 1)·stride − 2·padding + dilation·(kernel − 1) + output_padding + 1``;
    ``taps[r]`` is how many (input element, kernel tap) pairs land on output row ``r``.
    """

    name: str
    size: int
    kernel: int
    stride: int
    dilation: int
    padding: int
    output_padding: int
    out: int
    taps: tuple

    @property
    def empty(self) -> bool:
        return self.out < 1

    @property
    def unread(self) -> tuple:
        """Every input element is read (each stamps the whole kernel)."""
        return ()

    @property
    def smallest(self) -> int:
        """The output size with ``output_padding = 0``."""
        return self.out - self.output_padding


def _explain_transposed_dim(name, size, kernel, stride, padding, dilation, output_padding):
    out = transposed_output_length(size, kernel, stride, padding, dilation, output_padding)
    # input element i through tap u lands on output row i·s + u·d − p (the scatter view)
    rows = (np.arange(size)[:, None] * stride + np.arange(kernel)[None, :] * dilation - padding).ravel()
    rows = rows[(rows >= 0) & (rows < max(out, 0))]
    taps = tuple(int(t) for t in np.bincount(rows, minlength=max(out, 0)))
    return TransposedDimExplanation(name, size, kernel, stride, dilation, padding, output_padding, out, taps)


def _transposed_notes(dim: TransposedDimExplanation) -> list[str]:
    _, sym, singular, plural, before, after = _WORDS[dim.name]
    s, d, lo = dim.stride, dim.dilation, dim.smallest
    if dim.empty:
        return [f"{sym}_out = {_num(dim.out)}: the output would be empty and conv_transpose raises an error"]
    outputs = f"{dim.size} output{'' if dim.size == 1 else 's'}"
    if s == 1:
        notes = [f"output_padding may be 0 … {d - 1} (smaller than stride {s} or dilation {d}): with stride 1 "
                 f"only the convolution input size {sym}_out = {lo} gives {outputs}"]
    else:
        notes = [
            f"output_padding may be 0 … {max(s, d) - 1} (smaller than stride {s} or dilation {d}): "
            f"output_padding 0 … {s - 1} give {sym}_out = {lo} … {lo + s - 1}, the input sizes of the "
            f"convolution with this kernel, stride and padding that give {outputs}, so output_padding only "
            f"picks which of them the transposed convolution returns (the extra {plural} are added at the {after})"
        ]
    if d > s:
        notes.append(f"output_padding {s} … {d - 1} (allowed because dilation {d} > stride {s}) add {plural} "
                     f"that no kernel tap reaches (they hold the bias only)")
    taps = np.array(dim.taps)
    most = int(taps.max())
    if int(taps.min()) == most:
        notes.append(f"every output {singular} receives {most} kernel tap{'' if most == 1 else 's'}: "
                     f"the overlap is even (no checkerboard along the {_WORDS[dim.name][0]})")
        return notes
    groups = []
    for count in sorted(set(dim.taps), reverse=True):
        where = np.flatnonzero(taps == count)
        groups.append(f"{format_indices(where, singular, plural)} receive{'s' if len(where) == 1 else ''} "
                      f"{count} tap{'' if count == 1 else 's'}")
    notes.append("uneven overlap (the checkerboard): " + "; ".join(groups)
                 + f" (stride {s}, kernel extent {d * (dim.kernel - 1) + 1})")
    return notes


class TransposedShapeExplanation(ShapeExplanation):
    """The output size of a transposed convolution, dimension by dimension (``explain_shape(...,
    transposed=True)``).

    Attributes are :class:`ShapeExplanation`'s, with ``dims`` of :class:`TransposedDimExplanation`,
    ``output_padding`` (per axis) and ``taps`` (per axis, the number of kernel taps reaching each
    output row); ``unread`` is empty tuples (every input element is read).
    """

    def __init__(self, input_shape, spec, padding, out_channels, dims):
        super().__init__(input_shape, spec, padding, out_channels, dims)
        self.output_padding = tuple(d.output_padding for d in dims)
        self.taps = tuple(d.taps for d in dims)

    def header(self) -> str:
        s = self.spec
        text = (f"transposed convolution: input {self.input_shape}, kernel_size={s.kernel_size}, "
                f"stride={s.stride}, padding={tuple(p for p, _ in s.padding)}, "
                f"output_padding={self.output_padding}, dilation={s.dilation}")
        if self.out_channels is not None:
            text += f", out_channels={self.out_channels}"
        return text

    def sections(self):
        out = []
        for dim in self.dims:
            title, sym, _, _, _, _ = _WORDS[dim.name]
            heading = (f"{title.capitalize()}: {sym} = {dim.size}, kernel {dim.kernel}, stride {dim.stride}, "
                       f"dilation {dim.dilation}, padding {dim.padding}, output_padding {dim.output_padding}")
            formulas = [
                f"{sym}_out = ({sym} − 1)·s − 2·p + d·(k−1) + output_padding + 1",
                f"{sym}_out = ({dim.size}−1)·{dim.stride} − 2·{dim.padding} + {dim.dilation}·({dim.kernel}−1) + "
                f"{dim.output_padding} + 1 = {_num(dim.out)}",
            ]
            out.append((heading, formulas, _transposed_notes(dim)))
        return out

    def conclusion(self) -> str:
        nd = len(self.dims)
        if self.empty:
            sizes = "×".join(_num(v) for v in self.output_size)
            return f"the output would be empty ({sizes}): conv_transpose{nd}d raises an error for this input"
        return super().conclusion()
