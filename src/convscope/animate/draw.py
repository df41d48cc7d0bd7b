"""Pixels for the scenes: the layout of the panels, and a matplotlib (Agg) renderer.

The renderer uses :class:`matplotlib.figure.Figure` with :class:`FigureCanvasAgg` directly
(no pyplot, no change of the user's backend; its drawing settings are set only while it
draws).  It creates every artist once, draws the first frame in full and, for each later
frame, redraws only the cells and texts that changed, then grabs the canvas.  Data
coordinates are pixels (``x`` to the right, ``y`` down), so :meth:`PanelBox.cell` is exact.

Colours (:data:`THEME`) are the same in every animation: gold for the cells a sum reads (the
window), grey for padding, a muted gold for padding inside the window, a pale gold for the
pixel a reflect / replicate / circular padding cell copies, blue for the element being
computed, light grey for elements not computed yet, three greens for the number of kernel taps an
output cell of a transposed convolution receives (few to many); a band inside the border cells outlines
the window's extent (or the pixel whose gradient is computed).  Frames are stored as indices into one
fixed :data:`PALETTE` (the theme's colours and their blends with the text colours), which
keeps GIFs small and every flat colour exact.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from . import scenes as sc

DPI = 100
MARGIN = 16
CELL_H = 26
MIN_CELL_W = 26
GAP_X = 26
GAP_Y = 12
CAPTION_H = 20
TITLE_H = 26
SUB_H = 18
LINE_H = 17
LEGEND_H = 22
SIDE_H = 22
MIN_WIDTH = 600

FONT = "DejaVu Sans"
MONO = "DejaVu Sans Mono"
SIZE_CELL = 8.5
SIZE_TITLE = 12.5
SIZE_TEXT = 9

THEME = {
    "background": "#ffffff",
    "text": "#1a1a1a",
    "muted": "#555555",
    "grid": "#b8b8b8",
    "pad_text": "#7a7a7a",
    "window_edge": "#c98a00",
    "current_edge": "#1565c0",
    # cell states
    "normal": "#ffffff",
    "padding": "#e2e2e2",
    "window": "#ffd966",
    "window_padding": "#e8d49a",
    "source": "#fff2c2",
    "current": "#8cc8ff",
    "pending": "#f3f3f3",
    "taps_1": "#e3f2dc",
    "taps_2": "#a9dba0",
    "taps_3": "#63bb6e",
}
STATE_COLORS = tuple(THEME[name] for name in sc.STATE_NAMES)


def rgb(color: str) -> tuple[int, int, int]:
    """``'#rrggbb'`` → (r, g, b)."""
    return tuple(int(color[k:k + 2], 16) for k in (1, 3, 5))  # type: ignore[return-value]


def _palette() -> np.ndarray:
    """The theme's colours, then blends of each ink over each background (antialiased edges)."""
    backgrounds = [rgb(THEME[n]) for n in ("background",) + sc.STATE_NAMES]
    inks = [rgb(THEME[n]) for n in ("text", "muted", "grid", "pad_text", "window_edge", "current_edge")]
    colors = list(backgrounds) + list(inks)
    for bg in backgrounds:
        for ink in inks:
            levels = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9) if ink in inks[:2] else (0.33, 0.66)
            for t in levels:
                colors.append(tuple(int(round(b * (1 - t) + f * t)) for b, f in zip(bg, ink)))
    colors += [(g, g, g) for g in range(0, 256, 17)]
    unique = list(dict.fromkeys(colors))
    assert len(unique) <= 256
    return np.array(unique, dtype=np.uint8)


PALETTE = _palette()


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class PanelBox:
    """Where a panel's grid sits: top-left ``(x0, y0)`` in pixels, cell size, rows and columns."""

    x0: int
    y0: int
    cell_w: int
    cell_h: int
    rows: int
    cols: int

    def cell(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of a cell in frame pixels (``x1``, ``y1`` exclusive)."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise IndexError(f"cell ({row}, {col}) is outside this {self.rows}×{self.cols} grid")
        x = self.x0 + col * self.cell_w
        y = self.y0 + row * self.cell_h
        return x, y, x + self.cell_w, y + self.cell_h

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x0 + self.cols * self.cell_w, self.y0 + self.rows * self.cell_h


@dataclass
class Layout:
    width: int
    height: int
    boxes: dict                     # panel key → PanelBox
    side: dict                      # slot → (x, y) of the slot's sum text
    title_y: int
    subtitle_y: tuple[int, int]
    lines_y: list
    line_chars: int                 # characters per line of arithmetic
    columns: dict = field(default_factory=dict)  # column name → its right edge (x)
    legend: list = field(default_factory=list)  # (state, label, x, y) of each legend entry


class Measure:
    """Text sizes in pixels, from an Agg renderer (the same one that draws)."""

    def __init__(self):
        from matplotlib.backends.backend_agg import RendererAgg
        from matplotlib.font_manager import FontProperties

        self._renderer = RendererAgg(8, 8, DPI)
        self._props = {}
        self._FontProperties = FontProperties
        self._cache = {}

    def prop(self, family: str, size: float, weight: str = "normal", style: str = "normal"):
        key = (family, size, weight, style)
        if key not in self._props:
            self._props[key] = self._FontProperties(family=family, size=size, weight=weight, style=style)
        return self._props[key]

    def width(self, text: str, family: str = FONT, size: float = SIZE_TEXT, weight: str = "normal") -> int:
        if not text:
            return 0
        key = (text, family, size, weight)
        if key not in self._cache:
            w, _, _ = self._renderer.get_text_width_height_descent(text, self.prop(family, size, weight), ismath=False)
            self._cache[key] = int(np.ceil(w))
        return self._cache[key]

    def char_width(self) -> float:
        return self.width("0" * 100, MONO, SIZE_TEXT) / 100


def cell_width(measure: Measure, strings) -> int:
    widest = max((measure.width(s, FONT, SIZE_CELL) for s in strings), default=0)
    w = max(MIN_CELL_W, widest + 12)
    return w + (w % 2)


def make_layout(panels: list, measure: Measure, cell_w: int, captions: dict, side_texts: dict, headers: list,
                n_lines: int, legend: list, width: int | None = None) -> Layout:
    """Place the panels: columns ``left``, ``a``, ``b``, ``right``, the slots stacked in ``a`` and
    ``b``; a slot's sum (``side_texts``) sits under its column-``b`` panel.

    ``captions`` maps a panel key to every caption it shows (the widest sets the column width),
    ``side_texts`` a slot to its sum texts, ``headers`` the title (0) and subtitle (1) texts.
    """
    by_col: dict = {}
    for p in panels:
        by_col.setdefault(p.column, []).append(p)
    side_w = max((measure.width(t, weight="bold") for ts in side_texts.values() for t in ts), default=0)
    side_h = SIDE_H if side_w else 0
    col_w = {}
    for col, ps in by_col.items():
        col_w[col] = max(max(p.cols * cell_w, max((measure.width(c) for c in captions.get(p.key, [""])), default=0))
                         for p in ps)
    if "b" in col_w:
        col_w["b"] = max(col_w["b"], side_w)
    x = MARGIN
    col_x = {}
    for col in ("left", "a", "b", "right"):
        if col in col_w:
            col_x[col] = x
            x += col_w[col] + GAP_X
    body_right = x - GAP_X + MARGIN

    top = MARGIN + TITLE_H + 2 * SUB_H + 10
    slots = sorted({p.slot for p in by_col.get("a", [])})
    slot_y, y = {}, top
    for k in slots:
        a_rows = max(p.rows for p in panels if p.slot == k and p.column == "a")
        b_rows = max((p.rows for p in panels if p.slot == k and p.column == "b"), default=0)
        slot_y[k] = y
        y += CAPTION_H + max(a_rows * CELL_H, b_rows * CELL_H + side_h) + GAP_Y
    body_bottom = y - GAP_Y
    boxes = {}
    for p in panels:
        if p.column in ("a", "b"):
            y0 = slot_y[p.slot] + CAPTION_H
        else:
            y0 = top + CAPTION_H
            body_bottom = max(body_bottom, y0 + p.rows * CELL_H)
        boxes[p.key] = PanelBox(col_x[p.column], y0, cell_w, CELL_H, p.rows, p.cols)
    side = {}
    if side_w:
        for p in by_col.get("b", []):
            side[p.slot] = (col_x["b"], boxes[p.key].bbox[3] + side_h // 2 + 2)

    header_w = max((measure.width(t, weight="bold" if k == 0 else "normal",
                                  size=SIZE_TITLE if k == 0 else SIZE_TEXT) for k, t in headers), default=0)
    if width is None:
        width = max(body_right, MIN_WIDTH, header_w + 2 * MARGIN)
        width += width % 2
    lines_top = body_bottom + 16
    lines_y = [lines_top + k * LINE_H + LINE_H // 2 for k in range(n_lines)]
    # the legend: swatch and label, as many per row as fit
    items, x, y = [], MARGIN, lines_top + n_lines * LINE_H + 8 + LEGEND_H // 2
    for state, label in legend:
        w = 18 + measure.width(label, size=SIZE_CELL)
        if x > MARGIN and x + w > width - MARGIN:
            x, y = MARGIN, y + LEGEND_H
        items.append((state, label, x, y))
        x += w + 22
    height = y + LEGEND_H // 2 + MARGIN
    height += height % 2
    return Layout(width=width, height=height, boxes=boxes, side=side, title_y=MARGIN + TITLE_H // 2,
                  subtitle_y=(MARGIN + TITLE_H + SUB_H // 2, MARGIN + TITLE_H + SUB_H + SUB_H // 2),
                  lines_y=lines_y, line_chars=int((width - 2 * MARGIN) // measure.char_width()), legend=items,
                  columns={col: col_x[col] + col_w[col] for col in col_x})


# --------------------------------------------------------------------------- renderer


_RC = {  # drawing settings of our own figure, whatever the user's matplotlib style says
    "text.usetex": False,
    "font.family": "sans-serif",
    "font.sans-serif": [FONT],
    "font.monospace": [MONO],
    "text.antialiased": True,
    "patch.antialiased": True,
    "axes.unicode_minus": False,
}


BAND = 2  # width in pixels of a window-extent or current-pixel outline, drawn inside the cells


def _bands(outline, r: int, c: int) -> tuple:
    """The sides of cell ``(r, c)`` on the border of ``outline`` (``(r0, c0, r1, c1, kind)``), with its colour."""
    if outline is None:
        return ()
    r0, c0, r1, c1, kind = outline
    if not (r0 <= r <= r1 and c0 <= c <= c1):
        return ()
    color = THEME["window_edge"] if kind == "window" else THEME["current_edge"]
    sides = tuple(side for side, on in (("top", r == r0), ("bottom", r == r1), ("left", c == c0), ("right", c == c1))
                  if on)
    return tuple((side, color) for side in sides)


class _Cell:
    """The artists of one cell; each paints only inside the cell's box (so a cell can be redrawn alone)."""

    def __init__(self, ax, box: tuple[int, int, int, int], last_row: bool, last_col: bool, pad: bool, Rectangle):
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        flat = dict(antialiased=False, linewidth=0, snap=True)
        self.fill = Rectangle((x0, y0), w, h, facecolor=THEME["normal"], zorder=1, **flat)
        lines = [Rectangle((x0, y0), w, 1, **flat), Rectangle((x0, y0), 1, h, **flat)]  # top and left grid lines
        if last_row:
            lines.append(Rectangle((x0, y1 - 1), w, 1, **flat))
        if last_col:
            lines.append(Rectangle((x1 - 1, y0), 1, h, **flat))
        for line in lines:
            line.set_facecolor(THEME["grid"])
            line.set_zorder(2)
        self.lines = lines
        bottom, right = y1 - int(last_row), x1 - int(last_col)  # inside the cell's own grid lines
        self.bands = {"top": Rectangle((x0 + 1, y0 + 1), right - x0 - 1, BAND, **flat),
                      "bottom": Rectangle((x0 + 1, bottom - BAND), right - x0 - 1, BAND, **flat),
                      "left": Rectangle((x0 + 1, y0 + 1), BAND, bottom - y0 - 1, **flat),
                      "right": Rectangle((right - BAND, y0 + 1), BAND, bottom - y0 - 1, **flat)}
        for band in self.bands.values():
            band.set_visible(False)
            band.set_zorder(3)
        self.text = ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.5, "", ha="center", va="center", fontsize=SIZE_CELL,
                            style="italic" if pad else "normal", color=THEME["pad_text"] if pad else THEME["text"],
                            family=FONT, parse_math=False, zorder=4)
        for artist in [self.fill, *lines, *self.bands.values()]:
            ax.add_artist(artist)  # not add_patch: the axes limits are fixed, no need to update them
        self.key = None

    def update(self, state: int, text: str, bands: tuple) -> bool:
        """Set what the cell shows; True when that changed."""
        key = (state, text, bands)
        if key == self.key:
            return False
        self.key = key
        self.fill.set_facecolor(STATE_COLORS[state])
        self.text.set_text(text)
        on = dict(bands)
        for side, band in self.bands.items():
            band.set_visible(side in on)
            if side in on:
                band.set_facecolor(on[side])
        return True

    def artists(self) -> list:
        return [self.fill, *self.lines, *self.bands.values(), self.text]


class Renderer:
    """One figure holding every artist of an animation; :meth:`render` draws one scene.

    The first frame is a full draw.  Later frames redraw only what changed: each cell whose
    colour, text or outline changed (its artists cover exactly its box, the fill first, so the
    result is the same as a full draw), and the texts of the header, the captions, the sums and
    the arithmetic that changed, each over an opaque background box.
    """

    def __init__(self, layout: Layout, panels: list, layer: str):
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle

        self._matplotlib = matplotlib
        self.layout = L = layout
        self._started = False
        with matplotlib.rc_context(_RC):
            fig = Figure(figsize=(L.width / DPI, L.height / DPI), dpi=DPI, facecolor=THEME["background"])
            self.canvas = FigureCanvasAgg(fig)
            ax = fig.add_axes((0, 0, 1, 1))
            ax.set_xlim(0, L.width)
            ax.set_ylim(L.height, 0)
            ax.set_axis_off()
            self.fig, self.ax = fig, ax
            text = dict(parse_math=False, color=THEME["text"], family=FONT, zorder=6)
            self.cells: dict = {}
            self.texts: list = []  # (key, Text, eraser): redrawn every frame

            def eraser(x0, y0, x1, y1):
                rect = Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=THEME["background"], antialiased=False,
                                 linewidth=0, zorder=5)
                ax.add_artist(rect)
                return rect

            col_right = {}
            for p in panels:
                box = L.boxes[p.key]
                col_right[p.column] = L.columns[p.column]
            for p in panels:
                box = L.boxes[p.key]
                self.cells[p.key] = [[_Cell(ax, box.cell(r, c), r == p.rows - 1, c == p.cols - 1,
                                            p.pad is not None and bool(p.pad[r, c]), Rectangle)
                                      for c in range(p.cols)] for r in range(p.rows)]
                right = col_right[p.column]
                t = ax.text(box.x0, box.y0 - CAPTION_H / 2, "", ha="left", va="center", fontsize=SIZE_TEXT,
                            **dict(text, color=THEME["muted"]))
                self.texts.append((("caption", p.key), t, eraser(box.x0, box.y0 - CAPTION_H, right, box.y0)))
            for k, (x, y) in L.side.items():
                t = ax.text(x, y, "", ha="left", va="center", fontsize=SIZE_TEXT, weight="bold", **text)
                self.texts.append((("side", k), t, eraser(x, y - SIDE_H // 2, col_right["b"], y + SIDE_H // 2)))
            t = ax.text(MARGIN, L.title_y, "", ha="left", va="center", fontsize=SIZE_TITLE, weight="bold", **text)
            self.texts.append((("title",), t, eraser(0, L.title_y - TITLE_H // 2, L.width, L.title_y + TITLE_H // 2)))
            ax.text(MARGIN, L.subtitle_y[0], layer, ha="left", va="center", fontsize=SIZE_TEXT,
                    **dict(text, color=THEME["muted"]))
            y = L.subtitle_y[1]
            t = ax.text(MARGIN, y, "", ha="left", va="center", fontsize=SIZE_TEXT, **dict(text, color=THEME["muted"]))
            self.texts.append((("subtitle",), t, eraser(0, y - SUB_H // 2, L.width, y + SUB_H // 2)))
            for k, y in enumerate(L.lines_y):
                t = ax.text(MARGIN, y, "", ha="left", va="center", fontsize=SIZE_TEXT, **dict(text, family=MONO))
                self.texts.append((("line", k), t, eraser(0, y - LINE_H // 2, L.width, y + LINE_H // 2)))
            for state, label, x, y in L.legend:
                ax.add_patch(Rectangle((x, y - 7), 14, 14, facecolor=THEME[state], edgecolor=THEME["grid"],
                                       linewidth=0.8))
                ax.text(x + 19, y, label, ha="left", va="center", fontsize=SIZE_CELL,
                        **dict(text, color=THEME["muted"]))

    def render(self, scene: sc.Scene, full: bool = False) -> np.ndarray:
        """The frame for ``scene``: an RGB uint8 array ``(height, width, 3)``.

        ``full`` redraws the whole figure (the first frame always is); otherwise only what changed.
        """
        dirty = []
        for key, rows in self.cells.items():
            states, texts, outline = scene.states[key], scene.texts[key], scene.outlines.get(key)
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    if cell.update(int(states[r, c]), texts[r][c], _bands(outline, r, c)):
                        dirty.append(cell)
        values = {("title",): scene.title, ("subtitle",): scene.subtitle}
        values.update({("caption", key): text for key, text in scene.captions.items()})
        values.update({("side", k): text for k, text in scene.side.items()})
        values.update({("line", k): text for k, text in enumerate(scene.lines)})
        changed = []
        for entry in self.texts:
            key, artist, _ = entry
            value = values.get(key, "")
            if value != artist.get_text():
                artist.set_text(value)
                changed.append(entry)
        with self._matplotlib.rc_context(_RC):
            if full or not self._started:
                self.canvas.draw()
                self._started = True
            else:
                renderer = self.canvas.get_renderer()
                for cell in dirty:
                    for artist in cell.artists():
                        artist.draw(renderer)
                for _, artist, eraser in changed:
                    eraser.draw(renderer)
                    artist.draw(renderer)
        return np.array(self.canvas.buffer_rgba())[..., :3]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.fig.clear()


# --------------------------------------------------------------------------- palette


def palette_image():
    """A Pillow ``P`` image carrying :data:`PALETTE` (for quantizing and for GIFs)."""
    from PIL import Image

    img = Image.new("P", (1, 1))
    flat = PALETTE.ravel().tolist()
    img.putpalette(flat + [0] * (768 - len(flat)))
    return img


def quantize(frame: np.ndarray, pal) -> np.ndarray:
    """An RGB frame as indices into :data:`PALETTE` (nearest colour, no dithering)."""
    from PIL import Image

    dither = getattr(Image, "Dither", Image).NONE  # Pillow < 9.1 has Image.NONE
    img = Image.fromarray(frame, "RGB").quantize(palette=pal, dither=dither)
    return np.asarray(img, dtype=np.uint8).copy()
