"""The ``convscope`` command line (also ``python -m convscope``).

``convscope`` with no arguments (or ``convscope demo``) prints the demo: the
example of seed 000 computed by convscope, with one output worked by hand as
window · kernel + bias.  Bad arguments print one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from . import __version__
from .functional import conv2d

# Seed 000 (a notebook learning nn.Conv2d): the 5×5 input, and the weight and bias of
# nn.Conv2d(1, 1, kernel_size=3), as the notebook printed them (4 decimals).
SEED000_INPUT = [
    [1.4518, 0.4856, -0.5389, 0.2733, -0.3157],
    [0.3609, -1.0716, -0.8421, -0.0280, 1.6671],
    [-0.1299, -0.9957, 0.2819, 0.1756, -1.1801],
    [1.1808, -0.9658, -1.1960, 1.0513, -0.0851],
    [-0.1109, 0.4165, 3.0197, 1.5542, 0.2885],
]
SEED000_WEIGHT = [
    [0.1734, 0.2302, 0.2847],
    [0.2793, -0.2692, 0.2193],
    [-0.2059, 0.1034, 0.1096],
]
SEED000_BIAS = [0.0002]
SEED000_TORCH_OUTPUT = [
    [0.3697, 0.2129, -0.1515],
    [-0.6041, -0.5124, 0.4407],
    [0.5533, 0.6222, -1.3116],
]


class UsageError(Exception):
    """A bad command line: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UsageError(message)


def _grid(a, indent: str = "  ") -> list[str]:
    """Rows of a 2-D array with 4 decimals, aligned."""
    a = np.asarray(a, dtype=np.float64)
    cells = [[f"{v:.4f}" for v in row] for row in a]
    width = max(len(c) for row in cells for c in row)
    lines = []
    for r, row in enumerate(cells):
        body = "  ".join(c.rjust(width) for c in row)
        lines.append(f"{indent}{'[[' if r == 0 else ' ['}{body}]{']' if r == len(cells) - 1 else ''}")
    return lines


def _side_by_side(left: list[str], right: list[str], gap: int = 4) -> list[str]:
    width = max(len(s) for s in left)
    rows = max(len(left), len(right))
    left = left + [""] * (rows - len(left))
    right = right + [""] * (rows - len(right))
    return [f"{a.ljust(width)}{' ' * gap}{b}".rstrip() for a, b in zip(left, right)]


def demo_text() -> str:
    """The demo: seed 000's convolution, checked by hand, and against torch when it is installed."""
    x = np.array(SEED000_INPUT, dtype=np.float32)[None]          # (1, 5, 5): C, H, W
    weight = np.array(SEED000_WEIGHT, dtype=np.float32)[None, None]  # (1, 1, 3, 3)
    bias = np.array(SEED000_BIAS, dtype=np.float32)
    out = conv2d(x, weight, bias)                                 # (1, 3, 3)
    printed = np.array(SEED000_TORCH_OUTPUT)
    lines = [
        f"convscope {__version__}: PyTorch's nn.Conv2d in NumPy, with the numbers shown.",
        "",
        "Seed 000, a notebook learning nn.Conv2d: nn.Conv2d(1, 1, kernel_size=3) on a 5×5 input,",
        "with the weight and bias the notebook printed.",
        "",
        "input x, shape (1, 5, 5)",
        *_grid(x[0]),
        "",
        *_side_by_side(["weight[0, 0], shape (3, 3)", *_grid(weight[0, 0])],
                       ["bias", f"  [{bias[0]:.4f}]"]),
        "",
        *_side_by_side(["convscope.conv2d(x, weight, bias)", *_grid(out[0])],
                       ["the notebook's torch printed", *_grid(printed)]),
        "The notebook shows its numbers rounded to 4 decimals, so the two agree to within that",
        f"rounding (largest difference {np.abs(out[0] - printed).max():.4f}).",
        "",
        "One output by hand: out[0, 0, 0] = Σ (window ⊙ kernel) + bias",
        "",
    ]
    window = x[0, 0:3, 0:3]
    kernel = weight[0, 0]
    lines += _side_by_side(["window = x[0, 0:3, 0:3]", *_grid(window)],
                           ["kernel = weight[0, 0]", *_grid(kernel)])
    lines.append("")
    products = (window.astype(np.float64) * kernel.astype(np.float64))
    for u in range(3):
        terms = "   ".join(
            f"{window[u, v]:7.4f} × {kernel[u, v]:7.4f} = {products[u, v]:7.4f}" for v in range(3)
        )
        lines.append(f"  {terms}")
    total = products.sum()
    lines += [
        "",
        f"  sum of products  {total:8.4f}",
        f"  + bias           {bias[0]:8.4f}",
        f"  = out[0, 0, 0]   {total + bias[0]:8.4f}   (conv2d gave {out[0, 0, 0]:.4f})",
        "",
        f"Leave out the bias and you get {total:.4f}, not {total + bias[0]:.4f}: seed 001's question",
        "(\"why is the top-left output not the sum of w·x?\") has this answer.",
    ]
    try:
        import torch
    except ImportError:
        lines.append("(Install torch to see the same numbers checked against torch.nn.functional.conv2d.)")
    else:
        expected = torch.nn.functional.conv2d(
            torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias)
        ).numpy()
        lines.append(
            f"torch {torch.__version__} on the same numbers: largest |convscope − torch| = "
            f"{np.abs(out - expected).max():.1e}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convscope", description="PyTorch's nn.Conv2d in NumPy, with the numbers shown.")
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    sub.add_parser("demo", help="seed 000's convolution computed and checked by hand (the default)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command in (None, "demo"):
            print(demo_text())
        return 0
    except UsageError as exc:
        print(f"convscope: error: {exc} (see convscope --help)", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:
        print(f"convscope: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
