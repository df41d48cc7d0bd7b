"""Where the taps of a 2-D transposed convolution land, for the pictures (animate, explore).

Per axis, with stride ``s``, padding ``p``, dilation ``d``, kernel size ``k`` and output padding ``a``:

* scatter: input element ``i`` times tap ``u`` lands on output row ``r = i·s − p + u·d`` (when
  ``0 ≤ r < out``; rows outside are cropped by the padding);
* gather: the same output row is an ordinary convolution over the input with ``s − 1`` zeros
  inserted between its elements and ``b = d·(k − 1) − p`` cells of zero padding on each side, plus
  ``a`` more at the end, read with the flipped kernel: ``r = Σ_u z̃[r + u·d] · w[k − 1 − u]``, where
  input element ``i`` sits at ``z̃[b + i·s]``.  A negative ``b`` crops the zero-inserted input instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import gather_padding, zero_inserted_cell

REAL, INSERTED, PADDING = 0, 1, 2   # what a cell of the zero-inserted, padded input z̃ holds


@dataclass(frozen=True)
class GatherAxis:
    """One axis of the gather view: an input of ``size`` elements, zero-inserted and padded."""

    size: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    output_padding: int

    @property
    def border(self) -> int:
        """Zeros before the first input element: ``d·(k − 1) − p`` (negative: that many cells cropped)."""
        return gather_padding(self.kernel, self.padding, self.dilation)[0]

    @property
    def length(self) -> int:
        """Cells of z̃: ``(size − 1)·s + 1`` zero-inserted, ``2·border + output_padding`` of padding."""
        return (self.size - 1) * self.stride + 1 + 2 * self.border + self.output_padding

    @property
    def out(self) -> int:
        """The output length, ``length − d·(k − 1)`` = ``(size − 1)·s − 2p + d·(k − 1) + a + 1``."""
        return self.length - self.dilation * (self.kernel - 1)

    def source(self, z: int) -> tuple[int, int]:
        """``(REAL, i)`` when cell ``z`` of z̃ holds input element ``i``, else ``(INSERTED, −1)`` for a zero
        between two elements or ``(PADDING, −1)``."""
        cell = zero_inserted_cell(z, self.border, self.stride, self.size)
        if cell == "x":
            return REAL, (z - self.border) // self.stride
        return (INSERTED if cell == "zero" else PADDING), -1

    def landing(self, i: int, u: int) -> int:
        """The output row that input element ``i`` times tap ``u`` lands on (may be outside the output)."""
        return i * self.stride - self.padding + u * self.dilation


def gather_axes(spec, input_hw, output_padding) -> tuple[GatherAxis, GatherAxis]:
    """The two :class:`GatherAxis` of a transposed call (``spec`` as the transposed layers hold it)."""
    return tuple(GatherAxis(int(n), k, s, p, d, a) for n, k, s, (p, _), d, a in
                 zip(input_hw, spec.kernel_size, spec.stride, spec.padding, spec.dilation, output_padding))


def tap_counts(spec, input_hw, output_padding) -> np.ndarray:
    """How many (input element, kernel tap) pairs of one channel land on each output cell: ``(H_out, W_out)``
    ints, from :func:`convscope.conv_transpose2d` of ones with a kernel of ones."""
    from .functional import conv_transpose2d

    counts = conv_transpose2d(np.ones((1, 1) + tuple(input_hw)), np.ones((1, 1) + tuple(spec.kernel_size)),
                              stride=spec.stride, padding=spec.padding_arg, output_padding=output_padding,
                              dilation=spec.dilation)[0, 0]
    return np.rint(counts).astype(np.int64)


_DEFAULTS = dict(bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, padding_mode="zeros")


def transposed_arguments(layer_or_weight, form: str, **given) -> dict:
    """weight, bias, stride, padding, output_padding, groups and dilation of a convscope or torch
    ``ConvTranspose2d`` layer, or of a weight with the hyper-parameters ``given`` (which a layer refuses)."""
    mode = given.get("padding_mode", "zeros")
    if not (hasattr(layer_or_weight, "weight") and hasattr(layer_or_weight, "stride")):
        if mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for ConvTranspose2d, got padding_mode={mode!r}')
        return dict({k: v for k, v in given.items() if k != "padding_mode"}, weight=layer_or_weight)
    passed = [name for name, value in given.items()
              if (value is not None if name == "bias" else value != _DEFAULTS[name])]
    if passed:
        raise TypeError(f"{form} takes the hyper-parameters from the layer; pass {', '.join(passed)} "
                        "only with a weight")
    layer = layer_or_weight
    if type(layer).__name__ != "ConvTranspose2d":
        raise TypeError(f"the transposed mode shows a ConvTranspose2d layer (convscope or torch) or a weight, "
                        f"got {type(layer).__name__}")
    if getattr(layer, "padding_mode", "zeros") != "zeros":
        raise ValueError(f'Only "zeros" padding mode is supported for ConvTranspose2d, '
                         f"got padding_mode={layer.padding_mode!r}")
    return dict(weight=layer.weight, bias=layer.bias, stride=tuple(layer.stride), padding=tuple(layer.padding),
                output_padding=tuple(layer.output_padding), groups=layer.groups, dilation=tuple(layer.dilation))
