"""The ``convscope`` command line (also ``python -m convscope``).

* ``convscope tour``: the guided tour through the seeds' examples (the main job);
* ``convscope explain``: how one output or gradient number is made;
* ``convscope shape``: the output size, step by step;
* ``convscope explore``: an interactive local page (or, with ``--out``, a static one) showing a
  layer's numbers, how each output and gradient is made;
* ``convscope animate``: a GIF or MP4 of the convolution or a gradient, one frame per element;
* ``convscope`` alone (or ``convscope demo``): a short demo, seed 000's convolution by hand.

Bad arguments print one line on stderr and exit 2, never a traceback.  Output is
plain text, coloured with ``rich`` (an optional extra) when stdout is a terminal.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import stat
import sys

import numpy as np

from . import __version__
from .animate.core import MAX_FRAMES as ANIMATE_MAX_FRAMES
from .explain import explain, explain_grad, explain_shape
from .explain.render import check_decimals
from .functional import _spec_from_weight, conv2d
from .spec import AXIS_LETTERS, bind_transpose, check_shapes
from .tour import SECTIONS, SEED000_B, SEED000_OUT, SEED000_W, SEED000_X, Checker, intro, section_text

# Seed 000 (a notebook learning nn.Conv2d): the 5×5 input, and the weight and bias of
# nn.Conv2d(1, 1, kernel_size=3), as the notebook printed them (4 decimals); the tour holds them.
SEED000_INPUT = SEED000_X
SEED000_WEIGHT = SEED000_W
SEED000_BIAS = [SEED000_B]
SEED000_TORCH_OUTPUT = SEED000_OUT


class UsageError(Exception):
    """A bad command line: reported as one line, exit status 2."""


class OutputError(Exception):
    """stdout cannot be written (a full disk, a closed terminal): reported as one line, exit status 2."""


def _write(text: str = "") -> None:
    """Print ``text`` on stdout; a failed write is an OutputError (a closed pipe stays a BrokenPipeError)."""
    try:
        sys.stdout.write(text + "\n")
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc)) from None


def _flush() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc)) from None


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so what is left in its buffer is dropped at exit without another error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


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
    lines += ["", "Next: `convscope tour` walks through all the seeds' examples, and `convscope explain --help`",
              "shows how to explain any output or gradient number of your own convolution."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- argument values


def _ints(text: str, name: str, seps: str = "x,") -> tuple[int, ...]:
    """``'14x4x32x35'`` or ``'1,2'`` → ints; a UsageError names the option otherwise."""
    parts = [text]
    for sep in seps:
        parts = [q for p in parts for q in p.split(sep)]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"{name} must be integers separated by {' or '.join(repr(c) for c in seps)}, "
                         f"got {text!r}") from None
    return values


def _pair_or_int(text: str, name: str, ndim: int = 2):
    """One int, or one per spatial axis (``ndim`` of them)."""
    values = _ints(text, name)
    if len(values) == 1:
        return values[0]
    if len(values) == ndim:
        return values
    if ndim == 2:
        raise UsageError(f"{name} must be one integer or two (like 3x2), got {text!r}")
    if ndim == 1:
        raise UsageError(f"{name} must be one integer for a 1-d convolution, got {text!r}")
    raise UsageError(f"{name} must be one integer or {ndim} (like {'x'.join(['3'] * ndim)}), got {text!r}")


def _padding(text: str, ndim: int = 2):
    if text in ("same", "valid"):
        return text
    return _pair_or_int(text, "--padding", ndim)


MAX_VALUES = 10**7  # the most values of one array the commands explain, draw or load


def _load(path: str, name: str) -> np.ndarray:
    """The array in the ``.npy`` file ``path``; anything else is a UsageError naming ``name``.

    Only a regular file is opened (a FIFO or a device could block or never end), its header is
    checked against the file's size before any data is read, and pickles are never loaded.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UsageError(f"{name}: {path!r} is not a regular file (give a .npy file saved with np.save)")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # never waits, even if path changed
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise UsageError(f"{name}: {path!r} is not a regular file (give a .npy file saved with np.save)")
            return _read_npy(f, info.st_size, f"{name}: {path!r}")
    except OSError as exc:
        raise UsageError(f"{name}: cannot read {path!r} ({exc.strerror or exc})") from None
    except (ValueError, EOFError) as exc:
        raise UsageError(f"{name}: cannot read {path!r} as a .npy file ({exc})") from None


def _read_npy(f, size: int, where: str) -> np.ndarray:
    if size == 0:
        raise UsageError(f"{where} is empty (give a .npy file saved with np.save)")
    head = f.read(6)
    if head.startswith(b"PK"):
        raise UsageError(f"{where} is a .npz archive; give one array as a .npy file (np.save)")
    if head != b"\x93NUMPY":
        raise UsageError(f"{where} is not a .npy file (it does not start with numpy's magic string)")
    f.seek(0)
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise UsageError(f"{where}: .npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, _, dtype = read_header(f)
    except (ValueError, SyntaxError, EOFError):
        raise UsageError(f"{where} has a malformed .npy header (not a file np.save wrote, or a damaged one)") from None
    if dtype.hasobject:
        raise UsageError(f"{where} holds Python objects (dtype {dtype}); convscope never loads pickles")
    count = math.prod(shape)
    if count > MAX_VALUES:
        raise UsageError(f"{where} holds an array of shape {shape}: more than {MAX_VALUES} values, "
                         "too large to explain")
    need, have = count * dtype.itemsize, size - f.tell()
    if need > have:
        raise UsageError(f"{where}: its header claims shape {shape} of {dtype} ({need} bytes), "
                         f"but the file holds {have} bytes of data")
    f.seek(0)
    return np.lib.format.read_array(f, allow_pickle=False)


def _add_conv_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--stride", default="1", help="int or HxW (default 1)")
    p.add_argument("-p", "--padding", default="0", help="int, HxW, 'same' or 'valid' (default 0)")
    p.add_argument("-d", "--dilation", default="1", help="int or HxW (default 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convscope", description="PyTorch's nn.Conv2d in NumPy, with the numbers shown.")
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    sub.add_parser("demo", help="seed 000's convolution computed and checked by hand (the default)")

    tour = sub.add_parser("tour", help="the guided tour: the seeds' examples computed and explained")
    tour.add_argument("--section", type=int, metavar="N", help=f"show section N only (1–{len(SECTIONS)})")
    tour.add_argument("--no-pause", action="store_true", help="do not wait for Enter between sections")
    _add_color(tour)

    shape = sub.add_parser("shape", help="the output size, step by step (explain_shape)")
    shape.add_argument("input_shape", help="HxW, CxHxW or NxCxHxW, e.g. 14x4x32x35 (--dims 1: L, CxL or NxCxL; "
                                          "--dims 3: DxHxW, CxDxHxW or NxCxDxHxW)")
    shape.add_argument("-k", "--kernel", required=True, help="kernel size: int or HxW (one per axis)")
    shape.add_argument("--dims", type=int, choices=(1, 2, 3), default=2,
                       help="spatial dimensions: 1 (Conv1d), 2 (Conv2d, default) or 3 (Conv3d)")
    _add_conv_options(shape)
    shape.add_argument("--out-channels", type=int, help="output channels, for the full output shape")
    shape.add_argument("--transposed", action="store_true",
                       help="a transposed convolution (conv_transpose): its output size, the output_padding "
                            "values allowed, and the kernel taps each output row receives")
    shape.add_argument("--output-padding", default="0", metavar="A",
                       help="with --transposed: int or HxW (default 0)")
    _add_color(shape)

    ex = sub.add_parser(
        "explain", help="how one output (or gradient) number is made",
        description="Explain how one number of a convolution is made, term by term. Without --input-file "
                    "the input is seeded random (--input gives its shape); without --weight-file the kernel "
                    "is seeded random (or ones with --ones).",
        epilog="examples:  convscope explain --input 5x5 --kernel 3 --bias 0.1 --at 1,2\n"
               "           convscope explain --input 5x5 --kernel 3 --no-bias --at 0,0\n"
               "           convscope explain --input 2x6x6 --integers -p 1 --padding-mode reflect --at 0,0\n"
               "           convscope explain --input 5x5 --ones -k 2 -s 2 --grad input --at 4,4\n"
               "           convscope explain --dims 1 --input 2x9 -k 3 -d 2 --at 4\n"
               "           convscope explain --dims 3 --input 4x5x5 -k 3 -p 1 --at 0,2,2,2\n"
               "           convscope explain --input 3x3 --integers -k 3 -s 2 -p 1 --transposed --at 1,2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_array_options(ex)
    ex.add_argument("--dims", type=int, choices=(1, 2, 3), default=2,
                    help="spatial dimensions: 1 (Conv1d: --input L, CxL or NxCxL), 2 (Conv2d, default) or "
                         "3 (Conv3d: --input DxHxW, CxDxHxW or NxCxDxHxW); sizes such as --kernel take one "
                         "int or one per axis")
    _add_transposed_options(ex, "a transposed convolution (conv_transpose2d): the weight is (C_in, out_channels/groups, "
                                "kH, kW); the output is explained in its scatter and gather views")
    ex.add_argument("--at", default=None,
                    help="the element, comma-separated; missing leading indices are 0, negative ones count from "
                         "the end. Output: [n,]o,i,j "
                         "(--dims 1: [n,]o,i; --dims 3: [n,]o,t,i,j); --grad input: [n,]c,h,w; --grad weight: "
                         "o,c,u,v; --grad bias: o (default: all 0)")
    ex.add_argument("--grad", choices=("input", "weight", "bias"), help="explain a gradient element instead")
    ex.add_argument("--grad-output-file", metavar="G.npy", help="grad_output (default: all ones, L = out.sum())")
    ex.add_argument("--decimals", type=int, help="decimals shown, 0 to 10 (default: 0 for whole numbers, else 4)")
    ex.add_argument("--html", metavar="FILE", help="also write the explanation as HTML to FILE")
    _add_color(ex)

    xp = sub.add_parser(
        "explore", help="an interactive page: a layer's images and feature maps, and the numbers of any pixel",
        description="Serve a local page (127.0.0.1 only, no network needed) that shows a layer's input, "
                    "output and gradients as images, and beside them the numbers of the pixel you point at or "
                    "click: its window, padding included, the kernel and the arithmetic; change the parameters "
                    "in the page. With --out, write a self-contained page for this configuration instead. "
                    "Without --input-file or --image the input is seeded random, as in `convscope explain`.",
        epilog="examples:  convscope explore\n"
               "           convscope explore --input 3x6x6 --integers -p 1 --padding-mode reflect\n"
               "           convscope explore --image camera --preset sobel_x -p 1\n"
               "           convscope explore --input 1x28x28 -k 5 --out-channels 8 --out digits.html",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    xsrc = xp.add_mutually_exclusive_group()
    xsrc.add_argument("--input", metavar="SHAPE", help="random input of this shape: HxW, CxHxW or 1xCxHxW (default 5x5)")
    xsrc.add_argument("--input-file", metavar="FILE", help="the input: a .npy (HxW, CxHxW or NxCxHxW with --sample), "
                                                          "a PNG or a JPEG (scaled to 0..1)")
    xsrc.add_argument("--image", metavar="NAME", help="a bundled image: camera, coins, astronaut (RGB) or digits "
                                                      "(pip install 'convscope[images]')")
    xp.add_argument("--sample", type=int, metavar="N", help="the sample of a batched --input-file (default 0)")
    xp.add_argument("--seed", type=int, default=0, help="seed of the random input, kernel, bias and grad_output (default 0)")
    xp.add_argument("--integers", action="store_true", help="random whole numbers instead of normal samples")
    xker = xp.add_mutually_exclusive_group()
    xker.add_argument("-k", "--kernel", default=None, help="kernel size of a random kernel: int or HxW (default 3)")
    xker.add_argument("--preset", metavar="NAME", help="a kernel preset: identity, box_blur, gaussian, sharpen, sobel_x, "
                                                       "sobel_y, laplacian, emboss (every weight[o, c] is it)")
    xker.add_argument("--kernel-values", metavar="ROWS", help="a kernel typed as rows: '-1 0 1; -2 0 2; -1 0 1'")
    xker.add_argument("--weight-file", metavar="W.npy", help="the weight (C_out, C/groups, kH, kW), from a .npy file")
    xp.add_argument("--out-channels", type=int, default=None, help="output channels (default 1)")
    _add_bias_options(xp)
    _add_conv_options(xp)
    xp.add_argument("-g", "--groups", type=int, default=1, help="groups (default 1)")
    xp.add_argument("--padding-mode", default="zeros", help="zeros, reflect, replicate or circular")
    xp.add_argument("--grad-output", choices=("ones", "random"), default="ones",
                    help="grad_output of the gradient view: ones (L = out.sum(), the default) or seeded random")
    _add_transposed_options(xp, "the page of a ConvTranspose2d (weight C x out/groups x kH x kW): the output, and "
                                "for a clicked pixel the gather view on the zero-inserted input and the scatter list")
    xp.add_argument("--host", default="127.0.0.1", help="loopback address to listen on: 127.0.0.1 (default), ::1 or localhost")
    xp.add_argument("--port", type=int, default=0, help="port (default 0: a free one, printed)")
    xp.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    xp.add_argument("--out", metavar="FILE", help="write a self-contained page (works from disk, no server) and exit")
    xp.add_argument("--verbose", action="store_true", help="log every request on stderr")

    an = sub.add_parser(
        "animate", help="a GIF (or MP4) of the convolution: one frame per output or gradient element",
        description="Animate a convolution with its numbers: one frame per output element (or, with --grad, per "
                    "element of the input or weight gradient). The input and kernel options are explain's. "
                    "Needs matplotlib and Pillow (pip install 'convscope[viz]'); .mp4 needs ffmpeg.",
        epilog="examples:  convscope animate --input 5x5 -p 1 -s 2 --bias 0.1 --out conv.gif\n"
               "           convscope animate --input 2x5x5 --integers -p 1 --padding-mode reflect --out conv.gif\n"
               "           convscope animate --input 4x4 --ones -k 2 -s 2 --grad input --out grad.mp4",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_array_options(an)
    an.add_argument("--grad", choices=("input", "weight"), help="animate a gradient instead of the output")
    an.add_argument("--grad-output-file", metavar="G.npy", help="grad_output (default: all ones, L = out.sum())")
    an.add_argument("--sample", type=int, default=0, metavar="N", help="the sample of a batched input (default 0)")
    an.add_argument("--out-channel", type=int, metavar="O",
                    help="only the frames of output channel O (the output, or --grad weight)")
    an.add_argument("--in-channel", type=int, metavar="C",
                    help="only the frames of input channel C (--grad input), or of weight[:, C] (--grad weight)")
    an.add_argument("--fps", type=float, default=2.0, help="frames per second (default 2)")
    an.add_argument("--max-frames", type=int, default=ANIMATE_MAX_FRAMES, metavar="N",
                    help=f"refuse more frames than this (default {ANIMATE_MAX_FRAMES})")
    an.add_argument("--decimals", type=int, help="decimals shown, 0 to 10 (default: 0 for whole numbers, else 2 in "
                                                 "the grids and 4 in the sums)")
    an.add_argument("-o", "--out", required=True, metavar="FILE", help="the file to write: FILE.gif or FILE.mp4")
    _add_transposed_options(an, "animate conv_transpose2d (weight C x out/groups x kH x kW): each input element "
                                "stamps its weighted kernel onto the output, one frame each, then the bias")
    return parser


def _add_transposed_options(p: argparse.ArgumentParser, what: str) -> None:
    """--transposed and --output-padding (animate and explore)."""
    p.add_argument("--transposed", action="store_true", help=what)
    p.add_argument("--output-padding", default=None, metavar="A",
                   help="with --transposed: int or HxW, each smaller than the stride or the dilation (default 0)")


def _output_padding(args):
    """--output-padding (int or HxW), only with --transposed; 0 without it."""
    if args.output_padding is None:
        return 0
    if not args.transposed:
        raise UsageError(f"--output-padding {args.output_padding} needs --transposed (it is a parameter of "
                         "transposed convolutions)")
    return _pair_or_int(args.output_padding, "--output-padding")


def _add_array_options(p: argparse.ArgumentParser) -> None:
    """The input, the kernel and the convolution's parameters (explain and animate)."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", metavar="SHAPE", help="random input of this shape: HxW, CxHxW or NxCxHxW (default 5x5)")
    src.add_argument("--input-file", metavar="X.npy", help="the input, from a .npy file: HxW (one channel), CxHxW "
                                                          "or NxCxHxW")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input, kernel and bias (default 0)")
    p.add_argument("--integers", action="store_true", help="random whole numbers instead of normal samples")
    ker = p.add_mutually_exclusive_group()
    ker.add_argument("--weight-file", metavar="W.npy",
                     help="the weight (C_out, C/groups, kH, kW), or one kH×kW kernel, from a .npy file")
    ker.add_argument("--ones", action="store_true", help="a kernel of ones")
    p.add_argument("-k", "--kernel", default="3", help="kernel size of a random or ones kernel (default 3)")
    p.add_argument("--out-channels", type=int, default=1, help="output channels of a random or ones kernel")
    _add_bias_options(p)
    _add_conv_options(p)
    p.add_argument("-g", "--groups", type=int, default=1, help="groups (default 1)")
    p.add_argument("--padding-mode", default="zeros", help="zeros, reflect, replicate or circular")


def _add_bias_options(p: argparse.ArgumentParser) -> None:
    """A bias unless --no-bias, as nn.Conv2d has one unless bias=False (explain, animate and explore)."""
    bias = p.add_mutually_exclusive_group()
    bias.add_argument("--bias", nargs="?", const="random", metavar="B[,B...]",
                      help="the bias: seeded random (the default, as nn.Conv2d has a bias), or the values "
                           "given (one, or one per output channel)")
    bias.add_argument("--no-bias", action="store_true", help="no bias (nn.Conv2d's bias=False)")


def _add_color(p: argparse.ArgumentParser) -> None:
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour with rich: auto (when stdout is a terminal), always or never")


# --------------------------------------------------------------------------- output


def _use_rich(color: str) -> bool:
    if color == "never" or (color == "auto" and not sys.stdout.isatty()):
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def emit(text: str, color: str = "never") -> None:
    """Print ``text``; with rich, numbers, padding marks, headings and checks are coloured."""
    if not _use_rich(color):
        _write(text)
        return
    from rich.console import Console
    from rich.highlighter import RegexHighlighter
    from rich.theme import Theme

    class _Highlighter(RegexHighlighter):
        base_style = "cs."
        highlights = [
            r"(?P<number>(?<![\w\[])-?\d+\.\d+|(?<=[ \[(])-?\d+(?=[ \],)]|$))",
            r"(?P<pad>padding ←|padding \(0\)|\d+\*)",
            r"(?P<ok>✓[^\n]*)",
            r"(?P<bad>✗[^\n]*)",
            r"(?P<head>^[^\n]+\n═+$)",
            r"(?P<value>^(out|∂L/∂\w+)\[[^\]]*\] = [^\n]*)",
        ]

    theme = Theme({"cs.number": "cyan", "cs.pad": "magenta", "cs.ok": "green", "cs.bad": "bold red",
                   "cs.head": "bold yellow", "cs.value": "bold"})
    console = Console(highlighter=_Highlighter(), theme=theme, soft_wrap=True,
                      force_terminal=True if color == "always" else None)
    try:
        console.print(text, markup=False, highlight=True)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc)) from None


# --------------------------------------------------------------------------- commands


def run_tour(args) -> int:
    check = Checker.create()
    if args.section is not None:
        if not 1 <= args.section <= len(SECTIONS):
            raise UsageError(f"--section must be between 1 and {len(SECTIONS)}, got {args.section}")
        numbers = [args.section]
    else:
        numbers = list(range(1, len(SECTIONS) + 1))
        emit(intro(check), args.color)
    pause = not args.no_pause and len(numbers) > 1 and sys.stdin.isatty() and sys.stdout.isatty()
    for k, number in enumerate(numbers):
        if pause and k > 0:
            try:
                answer = input(f"\n— Enter: section {number}/{len(SECTIONS)}, q: quit — ")
            except EOFError:
                answer = ""
            if answer.strip().lower().startswith("q"):
                return 0
        _write()
        emit(section_text(number, check), args.color)
    if check.failures:
        print(f"convscope: {len(check.failures)} result(s) disagree with torch: {', '.join(check.failures)}",
              file=sys.stderr)
        return 1
    if check.torch is not None and len(numbers) == len(SECTIONS):
        _write(f"\nAll {check.checks} results agree with torch {check.torch.__version__}.")
    return 0


def run_shape(args) -> int:
    dims = _ints(args.input_shape, "input_shape", "x")
    n = args.dims
    text = explain_shape(dims, _pair_or_int(args.kernel, "--kernel", n), stride=_pair_or_int(args.stride, "--stride", n),
                         padding=_padding(args.padding, n), dilation=_pair_or_int(args.dilation, "--dilation", n),
                         out_channels=args.out_channels, ndim=n, transposed=args.transposed,
                         output_padding=_pair_or_int(args.output_padding, "--output-padding", n))
    emit(str(text), args.color)
    return 0


_INPUT_LAYOUTS = {1: ("L", "CxL", "NxCxL"), 2: ("HxW", "CxHxW", "NxCxHxW"), 3: ("DxHxW", "CxDxHxW", "NxCxDxHxW")}


def _input_from_file(path: str, ndim: int = 2) -> np.ndarray:
    """The input of ``--input-file``: HxW (one channel, one sample), CxHxW or NxCxHxW (``ndim`` 1: L, CxL or
    NxCxL; 3: DxHxW, CxDxHxW or NxCxDxHxW); whole numbers as float32."""
    x = _load(path, "--input-file")
    if x.ndim not in (ndim, ndim + 1, ndim + 2):
        one, unbatched, batched = _INPUT_LAYOUTS[ndim]
        raise UsageError(f"--input-file: {path!r} holds an array of shape {x.shape}; the input must be {one} "
                         f"(one channel), {unbatched} or {batched}")
    if x.dtype.kind in "biu":
        x = x.astype(np.float32)
    return x[None] if x.ndim == ndim else x


def _seeded_input(args, rng) -> np.ndarray:
    nd = getattr(args, "dims", 2)
    dims = _ints(args.input or {1: "8", 2: "5x5", 3: "4x4x4"}[nd], "--input", "x")
    if len(dims) == nd:
        dims = (1,) + dims
    if len(dims) not in (nd + 1, nd + 2) or min(dims) < 1:
        one, unbatched, batched = _INPUT_LAYOUTS[nd]
        raise UsageError(f"--input must be {one}, {unbatched} or {batched} with positive sizes, got {args.input!r}")
    if math.prod(dims) > MAX_VALUES:
        raise UsageError(f"--input {args.input} is too large to explain (more than {MAX_VALUES} values)")
    x = rng.integers(-9, 10, size=dims) if args.integers else rng.standard_normal(dims).round(4)
    return x.astype(np.float32)


def _seeded_weight(args, rng, x: np.ndarray, params: dict) -> np.ndarray:
    """A ones or seeded random kernel, its shape checked against the input before it is drawn."""
    nd = getattr(args, "dims", 2)
    kernel = _pair_or_int(args.kernel, "--kernel", nd)
    ks = (kernel,) * nd if isinstance(kernel, int) else tuple(kernel)
    groups = params["groups"]
    channels = x.shape[-nd - 1]
    if args.out_channels < 1 or groups < 1 or min(ks) < 1:
        raise UsageError("--out-channels, --groups and --kernel must be positive")
    if channels % groups:
        raise UsageError(f"--groups ({groups}) must divide the input's {channels} channels")
    shape = (args.out_channels, channels // groups) + ks
    _check_call(x.shape, shape, params)
    if args.ones:
        return np.ones(shape, dtype=x.dtype)
    if args.integers:
        return rng.integers(-3, 4, size=shape).astype(x.dtype)
    return rng.uniform(-1, 1, size=shape).round(4).astype(x.dtype)


def _check_call(x_shape: tuple, w_shape: tuple, params: dict) -> None:
    """The convolution's rules (the library's messages) and the size of what would be computed."""
    spec = _spec_from_weight(w_shape, params["stride"], params["padding"], params["dilation"], params["groups"],
                             params["padding_mode"], ndim=len(w_shape) - 2)
    shape = check_shapes(spec, x_shape, w_shape)
    if math.prod(w_shape) > MAX_VALUES:
        raise UsageError(f"the weight {w_shape} is too large to explain (more than {MAX_VALUES} values)")
    sizes = (shape.N, shape.out_channels) + tuple(shape.out_spatial)
    outputs = math.prod(sizes)
    if outputs > MAX_VALUES:
        raise UsageError(f"the output would hold {outputs} values ({'×'.join(map(str, sizes))}), too many to "
                         f"explain (more than {MAX_VALUES})")


def _as_dtype(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A loaded weight or grad_output in the input's float dtype (whole numbers and other floats)."""
    return a.astype(dtype) if a.dtype != dtype and a.dtype.kind in "biuf" and dtype.kind == "f" else a


def _bias(args, rng, out_channels: int, dtype) -> np.ndarray | None:
    """The bias: seeded random unless --no-bias (as nn.Conv2d has one unless bias=False), or --bias's values."""
    if args.no_bias:
        return None
    if args.bias is None or args.bias == "random":
        values = rng.integers(-3, 4, size=out_channels) if args.integers else \
            rng.uniform(-1, 1, size=out_channels).round(4)
        return values.astype(dtype)
    values = _bias_values(args.bias)
    if len(values) == 1:
        values = values * out_channels
    return np.array(values, dtype=dtype)


def _bias_values(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--bias must be numbers separated by ',' (or nothing: seeded random), got {text!r}") from None


def _explain_arrays(args, params: dict):
    """Input, weight and bias of explain and animate: from files or seeded (drawn in that order)."""
    nd = getattr(args, "dims", 2)
    rng = np.random.default_rng(args.seed)
    x = _input_from_file(args.input_file, nd) if args.input_file else _seeded_input(args, rng)
    if args.weight_file:
        w = _load(args.weight_file, "--weight-file")
        if w.ndim == nd:
            w = w[None, None]  # kH×kW (kL, kD×kH×kW): one kernel, one output and one input channel
        w = _as_dtype(w, x.dtype)
        if w.ndim == nd + 2:
            _check_call(x.shape, w.shape, params)
    else:
        w = _seeded_weight(args, rng, x, params)
    return x, w, _bias(args, rng, w.shape[0] if w.ndim == nd + 2 else 1, x.dtype)


def _grad_output(args, x: np.ndarray) -> np.ndarray | None:
    """``--grad-output-file`` in the input's dtype; H_out×W_out is one channel of one sample, as the input's H×W."""
    if not args.grad_output_file:
        return None
    nd = getattr(args, "dims", 2)
    gy = _load(args.grad_output_file, "--grad-output-file")
    if gy.ndim == nd:
        gy = gy.reshape((1,) * (x.ndim - nd) + gy.shape)
    return _as_dtype(gy, x.dtype)


def _conv_params(args) -> dict:
    nd = getattr(args, "dims", 2)
    return dict(stride=_pair_or_int(args.stride, "--stride", nd), padding=_padding(args.padding, nd),
                dilation=_pair_or_int(args.dilation, "--dilation", nd), groups=args.groups,
                padding_mode=args.padding_mode)


def _transposed_arrays(args, params: dict):
    """Input, weight ``(C_in, out_channels/groups, kH, kW)`` and bias of ``explain``/``animate --transposed``, checked
    by the library's rules (torch's) before the weight is drawn; seeded in the order input, weight, bias."""
    if params["padding_mode"] != "zeros":
        raise UsageError('--padding-mode: a transposed convolution pads with zeros only (Only "zeros" padding mode '
                         'is supported for ConvTranspose2d, as in torch)')
    rng = np.random.default_rng(args.seed)
    x = _input_from_file(args.input_file) if args.input_file else _seeded_input(args, rng)
    if args.weight_file:
        w = _load(args.weight_file, "--weight-file")
        w = _as_dtype(w[None, None] if w.ndim == 2 else w, x.dtype)
    else:
        kernel = _pair_or_int(args.kernel, "--kernel")
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        groups = params["groups"]
        if args.out_channels < 1 or groups < 1 or kh < 1 or kw < 1:
            raise UsageError("--out-channels, --groups and --kernel must be positive")
        if args.out_channels % groups:
            raise UsageError(f"--groups ({groups}) must divide --out-channels ({args.out_channels})")
        shape = (x.shape[-3], args.out_channels // groups, kh, kw)
        if math.prod(shape) > MAX_VALUES:
            raise UsageError(f"the weight {shape} is too large to explain (more than {MAX_VALUES} values)")
        w = np.broadcast_to(np.zeros((), x.dtype), shape)        # its shape only, to check the call
    if w.ndim == 4:
        call = bind_transpose(2, input=x, weight=w, bias=None,
                              **{k: v for k, v in params.items() if k != "padding_mode"})
        outputs = math.prod(call.output_shape)
        if outputs > MAX_VALUES:
            raise UsageError(f"the output would hold {outputs} values, too many to explain (more than {MAX_VALUES})")
    if not args.weight_file:
        w = (np.ones(w.shape) if args.ones else rng.integers(-3, 4, size=w.shape) if args.integers else
             rng.uniform(-1, 1, size=w.shape).round(4)).astype(x.dtype)
    return x, w, _bias(args, rng, (w.shape[1] * params["groups"]) if w.ndim == 4 else 1, x.dtype)


def run_explain(args) -> int:
    check_decimals(args.decimals)
    params = _conv_params(args)
    nd = args.dims
    if args.transposed:
        if nd != 2:
            raise UsageError(f"--transposed explains 2-d transposed convolutions; got --dims {nd}")
        params["output_padding"] = _output_padding(args)
        x, w, bias = _transposed_arrays(args, params)
    else:
        _output_padding(args)
        x, w, bias = _explain_arrays(args, params)
        if w.ndim != nd + 2:
            raise UsageError(f"--weight-file holds an array of shape {w.shape}; with --dims {nd} the weight must be "
                             f"{nd + 2}-D (C_out, C/groups, {', '.join('k' + a for a in AXIS_LETTERS[nd])}) or one "
                             f"{nd}-D kernel")
    batched = x.ndim == nd + 2
    at_given = _ints(args.at, "--at", ",") if args.at is not None else ()
    if args.grad is None:
        if args.grad_output_file:
            raise UsageError("--grad-output-file needs --grad input, weight or bias")
        full = nd + 2 if batched else nd + 1
        e = explain(w, x, _fill_at(at_given, full, "--at"), bias=bias, transposed=args.transposed, **params)
    else:
        gy = _grad_output(args, x)
        full = {"input": nd + 2 if batched else nd + 1, "weight": nd + 2, "bias": 1}[args.grad]
        e = explain_grad(w, x, gy, args.grad, _fill_at(at_given, full, "--at"), transposed=args.transposed,
                         **params)
    emit(e.text(args.decimals), args.color)
    if args.html:
        try:
            with open(args.html, "w", encoding="utf-8") as f:
                f.write("<!doctype html><meta charset='utf-8'><title>convscope explain</title>" + e._repr_html_())
        except OSError as exc:
            raise UsageError(f"--html: cannot write {args.html!r} ({exc.strerror})") from None
    return 0


def run_explore(args) -> int:
    from .explore import serve, write_page
    from .explore.data import read_file
    from .explore.server import check_host

    config = dict(stride=_pair_or_int(args.stride, "--stride"), padding=_padding(args.padding),
                  dilation=_pair_or_int(args.dilation, "--dilation"), groups=args.groups,
                  padding_mode=args.padding_mode, seed=args.seed, integers=args.integers,
                  grad_output=args.grad_output, sample=args.sample)
    if args.out_channels is not None:
        config["out_channels"] = args.out_channels
    if args.kernel is not None:
        config["kernel_size"] = _pair_or_int(args.kernel, "--kernel")
    elif args.preset is not None or args.kernel_values is not None:
        config["kernel"] = args.preset if args.preset is not None else args.kernel_values
    if args.no_bias:
        config["bias"] = False
    elif args.bias is None or args.bias == "random":
        config["bias"] = True
    else:
        config["bias"] = _bias_values(args.bias)
    x = None
    if args.input_file:
        x = _read_input_file(args.input_file, read_file)
    elif args.image:
        config["image"] = args.image
    else:
        config["input_shape"] = _ints(args.input or "5x5", "--input", "x")
    output_padding = _output_padding(args)
    if args.transposed:
        config.update(transposed=True, output_padding=output_padding)
    if args.weight_file:
        config["weight"] = _load(args.weight_file, "--weight-file")
        if x is None and "image" not in config:
            config["input_shape"] = _ints(args.input or "5x5", "--input", "x")
    if args.out:
        try:
            write_page(args.out, x, input_file=args.input_file, **config)
        except OSError as exc:
            raise UsageError(f"--out: cannot write {args.out!r} ({exc.strerror or exc})") from None
        _write(f"convscope explore: wrote {args.out} ({os.path.getsize(args.out) // 1024} KiB); "
              "open it in a browser, no server needed")
        return 0
    check_host(args.host)
    try:
        serve(x, host=args.host, port=args.port, open_browser=not args.no_browser, verbose=args.verbose,
              npy_name=args.input_file, **config)
    except OSError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _read_input_file(path: str, read_file) -> np.ndarray:
    """explore's --input-file: a regular file holding a .npy, a PNG or a JPEG."""
    if not os.path.isfile(path):
        raise UsageError(f"--input-file: {path!r} is not a regular file")
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 2**20 + 1)
    except OSError as exc:
        raise UsageError(f"--input-file: cannot read {path!r} ({exc.strerror or exc})") from None
    if len(data) > 64 * 2**20:
        raise UsageError(f"--input-file: {path!r} is larger than 64 MiB")
    try:
        return read_file(data, f"--input-file {os.path.basename(path)}")
    except ImportError as exc:
        raise UsageError(str(exc)) from None


def run_animate(args) -> int:
    out = args.out
    suffix = os.path.splitext(out)[1].lower()
    if suffix not in (".gif", ".mp4"):
        raise UsageError(f"--out must name a .gif or .mp4 file, got {out!r}")
    if suffix == ".mp4" and shutil.which("ffmpeg") is None:
        raise UsageError("--out .mp4 needs ffmpeg, which was not found on PATH (install ffmpeg, or write a .gif)")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise UsageError(f"--out: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(out) and not os.access(out, os.W_OK)):
        raise UsageError(f"--out: cannot write {out!r} (permission denied)")
    check_decimals(args.decimals)
    if args.grad is None and args.grad_output_file:
        raise UsageError("--grad-output-file needs --grad input or weight")
    params = _conv_params(args)
    output_padding = _output_padding(args)
    if args.transposed:
        if args.grad is not None or args.in_channel is not None:
            raise UsageError("--transposed animates the forward pass, one frame per input element: "
                             "--grad and --in-channel do not apply (select frames with --out-channel)")
        params["output_padding"] = output_padding
        x, w, bias = _transposed_arrays(args, params)
        gy = None
    else:
        x, w, bias = _explain_arrays(args, params)
        gy = _grad_output(args, x)
    from .animate import animate

    try:
        anim = animate(w, x, bias, **params, grad=args.grad, grad_output=gy, sample=args.sample,
                       out_channel=args.out_channel, in_channel=args.in_channel, max_frames=args.max_frames,
                       decimals=args.decimals, fps=args.fps, transposed=args.transposed)
        anim.save(out)
    except (ImportError, RuntimeError) as exc:  # the viz extra or ffmpeg is missing, or ffmpeg failed
        print(f"convscope: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"convscope: error: --out: cannot write {out!r} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    what = "input element stamped" if args.transposed else \
        {None: "output element", "input": "input pixel", "weight": "weight element"}[args.grad]
    _write(f"wrote {out}: {len(anim)} frames (one per {what}), {anim.size[0]}×{anim.size[1]} px, {args.fps:g} fps")
    return 0


def _fill_at(given: tuple[int, ...], full: int, name: str) -> tuple[int, ...]:
    """Missing leading indices are 0: ``(i, j)`` → ``(0, 0, i, j)``."""
    if len(given) > full:
        raise UsageError(f"{name} takes at most {full} indices here, got {len(given)}")
    return (0,) * (full - len(given)) + tuple(given)


def main(argv: list[str] | None = None) -> int:
    status = _main(argv)
    try:
        _flush()  # a full disk shows here, not in the interpreter's last flush
    except OutputError as exc:
        if status != 0:  # the error is already reported: drop the rest quietly
            _stdout_to_devnull()
            return status
        return _output_failed(exc)
    except BrokenPipeError:
        _stdout_to_devnull()
    return status


def _output_failed(exc: OutputError) -> int:
    _stdout_to_devnull()
    print(f"convscope: error: cannot write the output to stdout ({exc})", file=sys.stderr)
    return 2


_INDEX_LIST = re.compile(r"^-\d+(,-?\d+)*$")


def _negative_indices_attached(argv: list[str]) -> list[str]:
    """argv with ``--at -1,0`` written ``--at=-1,0``: argparse takes a value that starts with '-' and is
    not a plain negative number for an option, so negative indices need the '=' form."""
    out = []
    for arg in argv:
        if out and out[-1] == "--at" and _INDEX_LIST.match(arg):
            out[-1] = f"--at={arg}"
        else:
            out.append(arg)
    return out


def _main(argv: list[str] | None) -> int:
    try:
        argv = _negative_indices_attached(sys.argv[1:] if argv is None else list(argv))
        args = build_parser().parse_args(argv)
        if args.command in (None, "demo"):
            _write(demo_text())
            return 0
        return {"tour": run_tour, "shape": run_shape, "explain": run_explain,
                "explore": run_explore, "animate": run_animate}[args.command](args)
    except OutputError as exc:
        return _output_failed(exc)
    except UsageError as exc:
        print(f"convscope: error: {exc} (see convscope --help)", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:
        print(f"convscope: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convscope: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader (e.g. `| head`) closed the pipe: stop quietly
        _stdout_to_devnull()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
