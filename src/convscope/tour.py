"""The guided tour: the seeds' own examples, in order, computed by convscope and explained.

The project grew from five documents by people learning ``nn.Conv2d`` (the
seeds, 000 to 004).  Each section of the tour takes one seed's examples, with
the numbers the seed printed, computes them with convscope, explains the
numbers the seed asked about, and (when torch is installed) checks every
result against torch on the same numbers.  The last section explains transposed
convolution with the convolution-arithmetic guide's example.

``convscope tour`` prints it; ``convscope tour --section N`` prints one section.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .explain import explain, explain_grad, explain_shape
from .explain.render import grid_lines, side_by_side
from .functional import conv2d, conv2d_backward, conv2d_output_size, conv_transpose2d
from .module import Conv2d

# Seed 000, a notebook: x = torch.randn(1, 5, 5) and three nn.Conv2d(1, 1, 3) layers, printed to 4 decimals.
SEED000_X = [
    [1.4518, 0.4856, -0.5389, 0.2733, -0.3157],
    [0.3609, -1.0716, -0.8421, -0.0280, 1.6671],
    [-0.1299, -0.9957, 0.2819, 0.1756, -1.1801],
    [1.1808, -0.9658, -1.1960, 1.0513, -0.0851],
    [-0.1109, 0.4165, 3.0197, 1.5542, 0.2885],
]
SEED000_ONES_BIAS = -0.0658
SEED000_ONES_OUT = [[-1.0637, -2.3257, -0.5727], [-3.4432, -3.6562, -0.2212], [1.4349, 3.2759, 3.8442]]
SEED000_W = [[0.1734, 0.2302, 0.2847], [0.2793, -0.2692, 0.2193], [-0.2059, 0.1034, 0.1096]]
SEED000_B = 0.0002
SEED000_OUT = [[0.3697, 0.2129, -0.1515], [-0.6041, -0.5124, 0.4407], [0.5533, 0.6222, -1.3116]]
SEED000_W_S2 = [[0.2815, -0.0375, -0.1130], [-0.2259, -0.1822, 0.2419], [-0.0840, -0.2244, -0.0424]]
SEED000_B_S2 = 0.0358
SEED000_OUT_S2 = [[0.6196, 0.4951], [-0.5877, -0.3147]]

# Seed 001, a forum thread: a 5×5 input, nn.Conv2d(1, 1, 3) and nn.Conv2d(1, 1, 1, padding=1).
SEED001_X = [
    [0.7504, 0.1157, 1.4940, -0.2619, -0.4732],
    [0.1497, 0.0805, 2.0829, -0.0925, -1.3367],
    [1.7471, 0.5205, -0.8532, -0.7358, -1.3931],
    [0.1159, -0.2376, 1.2683, -0.0959, -1.3171],
    [-0.1620, -1.8539, 0.0893, -0.0568, -0.0758],
]
SEED001_W = [[0.2405, 0.3018, 0.0011], [-0.1691, -0.0701, -0.0334], [-0.0429, 0.2668, -0.2152]]
SEED001_OUT = [[0.5142, 0.3803, 0.2687], [-0.4321, 1.1637, 1.0675], [0.1742, 0.0869, -0.4451]]
SEED001_BORDER = 0.9862     # every border value of the 1×1 layer's output
SEED001_OUT_1X1_11 = 1.0771  # its output at (1, 1)

# Seed 002, a notebook: a Sobel kernel, output sizes, stride and zero padding.
SOBEL = [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]

# Seed 003, a notebook: the gradients of a Sobel convolution, loss = out.sum().
SEED003_X = [[1, 1, 1, 2, 3], [1, 1, 1, 2, 3], [1, 1, 1, 2, 3], [2, 2, 2, 2, 3], [3, 3, 3, 3, 3], [4, 4, 4, 4, 4]]
SEED003_WEIGHT_GRAD = [[15, 18, 25], [21, 23, 28], [30, 31, 34]]
SEED003_INPUT_GRAD = [[1, 1, 0, -1, -1], [3, 3, 0, -3, -3], [4, 4, 0, -4, -4],
                      [4, 4, 0, -4, -4], [3, 3, 0, -3, -3], [1, 1, 0, -1, -1]]

# Seed 004, a notebook: cross_correlate and cross_correlation_grad by hand, stride 2.
SEED004_CC_OUT = [[65, 85, 105], [205, 225, 245], [345, 365, 385]]
SEED004_A = [[5, 27, 9, -15, 12], [2, 4, -2, -7, 8], [-8, 16, 5, 23, -6], [-17, 7, 9, -14, 3], [10, -5, 13, 6, -11]]
SEED004_B = [[8, 4], [2, 6]]
SEED004_OUT = [[176, -34], [8, 66]]
SEED004_WEIGHT_GRAD = [[11, 51], [-8, -10]]
SEED004_INPUT_GRAD = [[8, 4, 8, 4, 0], [2, 6, 2, 6, 0], [8, 4, 8, 4, 0], [2, 6, 2, 6, 0], [0, 0, 0, 0, 0]]

F32 = np.float32


def _a(values, *lead) -> np.ndarray:
    """float32 array with leading axes of size 1 (``_a(k, 1, 1)`` is a (1, 1, kH, kW) weight)."""
    a = np.array(values, dtype=F32)
    return a.reshape((1,) * len(lead) + a.shape)


@dataclass
class Checker:
    """Compares convscope's results with torch's on the same numbers; remembers disagreements."""

    torch: object = None
    failures: list = field(default_factory=list)
    checks: int = 0

    @classmethod
    def create(cls) -> "Checker":
        try:
            import torch
        except ImportError:
            return cls(None)
        return cls(torch)

    def conv(self, label, ours, x, w, b=None, op="conv2d", **params) -> str | None:
        """Check a forward result against ``torch.nn.functional.conv2d`` (or ``op``, e.g. ``'conv_transpose2d'``)."""
        if self.torch is None:
            return None
        t = self.torch
        with t.no_grad():
            theirs = getattr(t.nn.functional, op)(t.from_numpy(np.array(x)), t.from_numpy(np.array(w)),
                                                  None if b is None else t.from_numpy(np.array(b)), **params).numpy()
        return self._compare(label, ours, theirs)

    def grads(self, label, ours, x, w, gy, **params) -> str | None:
        """Check (∂input, ∂weight) against torch's autograd for ``sum(conv2d(x, w) * gy)``."""
        if self.torch is None:
            return None
        t = self.torch
        xt = t.tensor(np.array(x), requires_grad=True)
        wt = t.tensor(np.array(w), requires_grad=True)
        (t.nn.functional.conv2d(xt, wt, **params) * t.from_numpy(np.array(gy))).sum().backward()
        return (self._compare(label + " ∂input", ours[0], xt.grad.numpy()) + "\n"
                + self._compare(label + " ∂weight", ours[1], wt.grad.numpy()))

    def _compare(self, label, ours, theirs) -> str:
        self.checks += 1
        ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
        err = float(np.abs(ours - theirs).max()) if ours.shape == theirs.shape else float("inf")
        scale = max(float(np.abs(theirs).max()), 1e-30) if theirs.size else 1.0
        measure = f"largest |convscope − torch| = {err:.1e}"
        if err > 0:
            measure += f", {err / scale:.0e} of torch's largest |value|"
        if err <= 1e-5 * scale:
            return f"  ✓ torch {self.torch.__version__} agrees on {label}: {measure}"
        self.failures.append(label)
        return f"  ✗ torch {self.torch.__version__} DISAGREES on {label}: {measure}"


def _grid(title: str, a, decimals: int = 4) -> list[str]:
    return [title, *("  " + line for line in grid_lines(np.asarray(a, dtype=np.float64), decimals))]


def _pair(left_title, left, right_title, right, decimals=4) -> list[str]:
    return side_by_side(_grid(left_title, left, decimals), _grid(right_title, right, decimals))


def _indent(text: str, pad: str = "  ") -> list[str]:
    return [pad + line if line else "" for line in str(text).split("\n")]


# --------------------------------------------------------------------------- sections


def section_seed000(check: Checker) -> list[str]:
    x = _a(SEED000_X, 1)  # (1, 5, 5): one channel, unbatched, as the notebook's torch.randn(1, 5, 5)
    ones = np.ones((1, 1, 3, 3), dtype=F32)
    b1 = _a([SEED000_ONES_BIAS])
    out1 = conv2d(x, ones, b1)
    lines = [
        "The notebook: nn.Conv2d(in_channels=1, out_channels=1, kernel_size=3) on x = torch.randn(1, 5, 5),",
        "first with every kernel value set to 1, so each output is the sum of a 3×3 window plus the bias.",
        "",
        *_grid("x, shape (1, 5, 5)", x[0]),
        "",
        f"Kernel: all ones; bias {SEED000_ONES_BIAS} (torch drew it at random, the notebook printed it).",
        *_pair("convscope.conv2d(x, ones, bias)", out1[0], "the notebook's m(x)", SEED000_ONES_OUT),
        check.conv("the ones kernel", out1, x, ones, b1),
        "The notebook printed its numbers to 4 decimals, and convscope computes from those printed numbers,",
        "so the 4th decimal can differ from the notebook's; torch, given the same printed numbers, agrees.",
        "",
        "How out[0, 0, 0] is made: the 3×3 window times the kernel of ones, summed, plus the bias.",
        "(This is the notebook's torch.sum(x[0, 0:3, 0:3]) + m.bias.)",
        "",
        *_indent(explain(ones, x, (0, 0, 0), bias=b1)),
        "",
        "Then a general kernel (the one torch initialised):",
    ]
    w = _a(SEED000_W, 1, 1)
    b = _a([SEED000_B])
    out = conv2d(x, w, b)
    lines += [
        *_pair("weight[0, 0]", w[0, 0], "bias", [[SEED000_B]]),
        *_pair("convscope.conv2d(x, weight, bias)", out[0], "the notebook's m(x)", SEED000_OUT),
        check.conv("the general kernel", out, x, w, b),
        "",
        "The notebook checked three outputs by hand, each as torch.sum(m.weight * window) + m.bias:",
    ]
    for (i, j), window in (((0, 0), "x[0, 0:3, 0:3]"), ((1, 0), "x[0, 1:4, 0:3]"), ((0, 1), "x[0, 0:3, 1:4]")):
        e = explain(w, x, (0, i, j), bias=b)
        lines.append(f"  out[0, {i}, {j}] = Σ weight ⊙ {window} + bias = {e.sum_of_products:.4f} + {e.bias:.4f}"
                     f" = {e.value:.4f}")
    lines += ["", "Moving down one row moves the window down one row. In full, out[0, 1, 0]:", "",
              *_indent(explain(w, x, (0, 1, 0), bias=b)), ""]
    w2, b2 = _a(SEED000_W_S2, 1, 1), _a([SEED000_B_S2])
    out2 = conv2d(x, w2, b2, stride=2)
    lines += [
        "Stride 2: nn.Conv2d(1, 1, kernel_size=3, stride=2). The window jumps two pixels at a time, so a 5×5",
        "input gives a 2×2 output.",
        *_pair("weight[0, 0]", w2[0, 0], "bias", [[SEED000_B_S2]]),
        *_pair("convscope.conv2d(x, weight, bias, stride=2)", out2[0], "the notebook's m(x)", SEED000_OUT_S2),
        check.conv("stride 2", out2, x, w2, b2, stride=2),
        "",
        "out[0, 1, 0] reads rows 2..4 (1·2 + u for u = 0, 1, 2), the notebook's x[0, 2:5, 0:3]:",
        "",
        *_indent(explain(w2, x, (0, 1, 0), bias=b2, stride=2)),
    ]
    return lines


def section_seed001(check: Checker) -> list[str]:
    x = _a(SEED001_X, 1, 1)   # (1, 1, 5, 5)
    w = _a(SEED001_W, 1, 1)
    window = x[0, 0, :3, :3].astype(np.float64)
    sum_wx = float(np.sum(window * w[0, 0]))
    bias = round(SEED001_OUT[0][0] - sum_wx, 4)
    b = _a([bias])
    lines = [
        "The forum question: m = torch.nn.Conv2d(1, 1, 3, padding=0); \"for the left top element 0.5142,",
        f"it's not the sum of w·x = {sum_wx:.4f}. Why?\"",
        "",
        "Because nn.Conv2d adds a bias (bias=True is the default). The forum did not print m.bias, but its",
        f"output says what it is: 0.5142 − {sum_wx:.4f} = {bias:.4f}. With that bias:",
        "",
    ]
    layer = _layer_from(check, w, b)
    x_in = check.torch.from_numpy(x) if check.torch is not None else x
    e = explain(layer, x_in, (0, 0, 0, 0))
    lines += _indent(e)
    out = conv2d(x, w, b)
    lines += [
        "",
        *_pair("convscope.conv2d(x, w, bias)", out[0, 0], "the forum's m(input)", SEED001_OUT),
        check.conv("the 3×3 layer", out, x, w, b),
        "",
        "The second question: m1 = torch.nn.Conv2d(1, 1, 1, padding=1) gives 0.9862 all round the border.",
        "\"How is 0.9862 calculated? And what is the default padding strategy?\"",
        "",
        "The default padding_mode is 'zeros'. A 1×1 kernel reads one pixel; on the border that pixel is",
        "padding, 0, so the output there is 0 × weight + bias = the bias. So m1's bias is 0.9862, and",
        f"out[1, 1] = 0.7504 × weight + 0.9862 = {SEED001_OUT_1X1_11} gives the weight:",
    ]
    w1 = round((SEED001_OUT_1X1_11 - SEED001_BORDER) / SEED001_X[0][0], 4)
    lines.append(f"  weight = ({SEED001_OUT_1X1_11} − {SEED001_BORDER}) / 0.7504 = {w1}.")
    wm1, bm1 = _a([[w1]], 1, 1), _a([SEED001_BORDER])
    out1 = conv2d(x, wm1, bm1, padding=1)
    lines += [
        "",
        *_grid("convscope.conv2d(x, weight, bias, padding=1), shape (7, 7)", out1[0, 0]),
        check.conv("the 1×1 layer with padding 1", out1, x, wm1, bm1, padding=1),
        "",
        "out[0, 0, 0, 0], on the border:",
        "",
        *_indent(explain(wm1, x, (0, 0, 0, 0), bias=bm1, padding=1)),
        "",
        "and out[0, 0, 1, 1], which reads the input's x[0, 0, 0, 0]:",
        "",
        *_indent(explain(wm1, x, (0, 0, 1, 1), bias=bm1, padding=1)),
    ]
    return lines


def _layer_from(check: Checker, w, b):
    """A torch.nn.Conv2d with this weight and bias when torch is installed, else a convscope.Conv2d."""
    if check.torch is not None:
        t = check.torch
        layer = t.nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]))
        with t.no_grad():
            layer.weight.copy_(t.from_numpy(w))
            layer.bias.copy_(t.from_numpy(b))
        return layer
    layer = Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]))
    layer.weight, layer.bias = w, b
    return layer


def section_seed002(check: Checker) -> list[str]:
    image = np.zeros((1, 1, 5, 5), dtype=F32)
    image[0, 0, :, 2] = 1
    sobel = _a(SOBEL, 1, 1)
    zero_b = _a([0.0])
    z = conv2d(image, sobel, zero_b)
    lines = [
        "The notebook \"What's Convolution\": a Sobel kernel (bias set to 0) on an image with one vertical line.",
        "",
        *_pair("image[0, 0]", image[0, 0], "kernel", SOBEL, 0),
        *_grid("convscope.conv2d(image, sobel, bias=0): the edge detector answers −4, 0, 4", z[0, 0], 0),
        check.conv("the Sobel kernel", z, image, sobel, zero_b),
        "",
        *_indent(explain(sobel, image, (0, 0, 0, 0), bias=zero_b)),
        "",
        "Determining the size of the output. The notebook's rule M_new = M − K + 1 is the general formula",
        "with stride 1, no padding and no dilation: a 2×2 kernel of ones on a 4×4 image of ones.",
        "",
    ]
    ones4 = np.ones((1, 1, 4, 4), dtype=F32)
    k2 = np.ones((1, 1, 2, 2), dtype=F32)
    for stride, pad, note in ((1, 0, "the window takes 3 positions along each axis"),
                              (2, 0, "stride 2: the window jumps 2 pixels"),
                              (3, 0, "stride 3: the window fits once; the second would need row 4"),
                              (3, 1, "stride 3 with padding=1 (zero padding)")):
        z = conv2d(ones4, k2, zero_b, stride=stride, padding=pad)
        lines += [f"kernel 2×2 of ones, stride {stride}, padding {pad}: {note}",
                  *_indent(explain_shape((1, 1, 4, 4), 2, stride=stride, padding=pad)),
                  *_grid("output", z[0, 0], 0),
                  check.conv(f"stride {stride} padding {pad}", z, ones4, k2, zero_b, stride=stride, padding=pad), ""]
    lines += [
        "With padding=1 the corner output is 1, not 4: three of its four taps read zero padding.",
        "(The notebook printed z4's shape under z5 by mistake: z5 is 2×2.)",
        "",
        *_indent(explain(k2, ones4, (0, 0, 0, 0), bias=zero_b, stride=3, padding=1)),
        "",
        "The notebook's question: an image of size 4, kernel_size=2, stride=2. What is the size of the output?",
        "",
        *_indent(explain_shape((4, 4), 2, stride=2)),
    ]
    return lines


def section_seed003(check: Checker) -> list[str]:
    x = _a(SEED003_X, 1, 1)  # (1, 1, 6, 5)
    k = _a(SOBEL, 1, 1)
    out = conv2d(x, k)
    gy = np.ones_like(out)      # loss = out.sum()
    g = conv2d_backward(gy, x, k)
    lines = [
        "The notebook (adapted from a post on convolution backprop): a Sobel kernel on a 6×5 image, no bias,",
        "loss = out.sum(), then loss.backward(). With that loss, grad_output is all ones.",
        "",
        *_pair("x[0, 0], shape (6, 5)", x[0, 0], "kernel", SOBEL, 0),
        *_grid("out = conv2d(x, k), shape (4, 3)", out[0, 0], 0),
        "",
        *_pair("convscope ∂L/∂weight", g.weight[0, 0], "the notebook's conv.weight.grad", SEED003_WEIGHT_GRAD, 0),
        "",
        *_pair("convscope ∂L/∂x", g.input[0, 0], "the notebook's x_tensor.grad", SEED003_INPUT_GRAD, 0),
        check.grads("the Sobel convolution", (g.input, g.weight), x, k, gy),
        "",
        "A weight's gradient is the sum, over every output, of grad_output times the pixel that weight",
        "multiplied. Weight (0, 0) multiplied the top-left pixel of each of the 4×3 windows:",
        "",
        *_indent(explain_grad(k, x, gy, "weight", (0, 0, 0, 0))),
        "",
        "An input pixel's gradient is the sum, over every output whose window covers it, of grad_output",
        "times the weight that pixel met. The corner pixel is covered by one window only:",
        "",
        *_indent(explain_grad(k, x, gy, "input", (0, 0, 0, 0))),
        "",
        "The middle column meets only the kernel's middle column, which is 0:",
        "",
        *_indent(explain_grad(k, x, gy, "input", (0, 0, 2, 2))),
    ]
    return lines


def section_seed004(check: Checker) -> list[str]:
    A = np.arange(1, 50, dtype=F32).reshape(1, 1, 7, 7)
    B = np.arange(1, 5, dtype=F32).reshape(1, 1, 2, 2)
    cc = conv2d(A, B, stride=2)
    lines = [
        "The notebook writes cross_correlate (the forward) and cross_correlation_grad (the weight gradient)",
        "as loops with stride 2, and checks them against torch.",
        "",
        "cross_correlate(A, B) with A = arange(1, 50) as 7×7, B = arange(1, 5) as 2×2, stride 2:",
        *_pair("convscope.conv2d(A, B, stride=2)", cc[0, 0], "the notebook's cross_correlate", SEED004_CC_OUT, 0),
        check.conv("cross_correlate", cc, A, B, stride=2),
        "",
        *_indent(explain(B, A, (0, 0, 0, 0), stride=2)),
        "",
        "Its layer: nn.Conv2d(4, 5, kernel_size=(3, 2), stride=2) on a (14, 4, 32, 35) batch, a rectangular kernel:",
        "",
        *_indent(explain_shape((14, 4, 32, 35), (3, 2), stride=2, out_channels=5)),
        "",
    ]
    rng = np.random.default_rng(4)
    x = rng.standard_normal((14, 4, 32, 35)).astype(F32)
    w = rng.standard_normal((5, 4, 3, 2)).astype(F32)
    b = rng.standard_normal(5).astype(F32)
    out = conv2d(x, w, b, stride=2)
    gy = np.ones_like(out)
    g = conv2d_backward(gy, x, w, stride=2)
    same = all(np.array_equal(g.weight[0], g.weight[o]) for o in range(5))
    lines += [
        "With random numbers of that shape (seeded, like the notebook's torch.randn) and loss = output.sum():",
        f"  output shape {out.shape}; ∂L/∂weight shape {g.weight.shape}.",
        check.conv("the (14, 4, 32, 35) layer", out, x, w, b, stride=2),
        check.grads("the (14, 4, 32, 35) layer", (g.input, g.weight), x, w, gy, stride=2),
        f"  Every output channel gets the same weight gradient ({'yes' if same else 'no'}), as in the notebook's",
        "  printout: with grad_output all ones, ∂L/∂w[o, c, u, v] = Σ_n Σ_i Σ_j x[n, c, 2i + u, 2j + v]",
        "  does not depend on o. One element, over all 14 · 15 · 17 = 3570 outputs:",
        "",
        *_indent(explain_grad(w, x, gy, "weight", (0, 0, 0, 0), stride=2)),
        "",
    ]
    A5 = _a(SEED004_A, 1, 1)
    B2 = _a(SEED004_B, 1, 1)
    out5 = conv2d(A5, B2, stride=2)
    gy5 = np.ones_like(out5)
    g5 = conv2d_backward(gy5, A5, B2, stride=2)
    lines += [
        "Last, a 5×5 A and a 2×2 kernel B, stride 2. The notebook built nn.Conv2d(1, 1, kernel_size=1,",
        "stride=2) and then replaced its weight by B: the kernel size comes from the weight, so the layer",
        "runs a 2×2 kernel.",
        "",
        *_pair("A", A5[0, 0], "B", B2[0, 0], 0),
        *_pair("convscope.conv2d(A, B, stride=2)", out5[0, 0], "the notebook's output", SEED004_OUT, 0),
        check.conv("A ⋆ B", out5, A5, B2, stride=2),
        "",
        *_pair("convscope ∂L/∂B", g5.weight[0, 0], "the notebook's cross_correlation_grad", SEED004_WEIGHT_GRAD, 0),
        *_pair("convscope ∂L/∂A", g5.input[0, 0], "the notebook's A.grad", SEED004_INPUT_GRAD, 0),
        check.grads("A ⋆ B", (g5.input, g5.weight), A5, B2, gy5, stride=2),
        "",
        "The weight gradient [[11, 51], [-8, -10]], term by term: tap (u, v) met A[2i + u, 2j + v] at output (i, j).",
    ]
    for u in range(2):
        for v in range(2):
            lines += ["", *_indent(explain_grad(B2, A5, gy5, "weight", (0, 0, u, v), stride=2))]
    lines += [
        "",
        "The last row and column of A.grad are 0. No window reads them:",
        "",
        *_indent(explain_grad(B2, A5, gy5, "input", (0, 0, 4, 4), stride=2)),
    ]
    return lines


# The convolution-arithmetic guide's transposed case (Dumoulin and Visin, "A guide to convolution arithmetic for
# deep learning", 2016): i = 3, k = 3, s = 2, p = 1 gives 5 outputs, or 6 with output_padding 1.
ARITH_X = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
ARITH_W = [[1, 0, -1], [2, 1, 0], [0, 3, 1]]
ARITH_AT = (0, 1, 1)      # an output where two rows and two columns of stamps overlap: 4 terms


def section_transposed(check: Checker) -> list[str]:
    x, w = _a(ARITH_X, 1, 1), _a(ARITH_W, 1, 1)
    params = dict(stride=2, padding=1)
    y = conv_transpose2d(x, w, **params)
    y6 = conv_transpose2d(x, w, output_padding=1, **params)
    back5, back6 = conv2d_output_size(5, 3, **params), conv2d_output_size(6, 3, **params)
    lines = [
        "A transposed convolution (nn.ConvTranspose2d, F.conv_transpose2d) runs a convolution's arithmetic",
        "backwards: every input element stamps its value times the kernel onto a larger output. The",
        "convolution-arithmetic guide's case: input i = 3, kernel k = 3, stride s = 2, padding p = 1.",
        "",
        *_indent(explain_shape((1, 1, 3, 3), 3, stride=2, padding=1, transposed=True)),
        "",
        f"With output_padding=1 the output is {y6.shape[-2]}×{y6.shape[-1]}. A convolution with the same kernel, "
        f"stride and padding maps",
        f"both sizes back to 3 (5 → {back5[0]}, 6 → {back6[0]}): output_padding only picks which of those sizes "
        "you get.",
        "",
        *_pair("x", x[0, 0], "w (weight[0, 0]: in_channels, out_channels/groups, kH, kW)", w[0, 0], 0),
        *_pair("conv_transpose2d(x, w, stride=2, padding=1)", y[0, 0], "…with output_padding=1", y6[0, 0], 0),
        check.conv("the arithmetic case", y, x, w, op="conv_transpose2d", **params),
        check.conv("output_padding 1", y6, x, w, op="conv_transpose2d", output_padding=1, **params),
        "",
        f"How y[{', '.join(map(str, ARITH_AT))}] is made, in both views: scatter (which input elements, times which "
        "kernel",
        "tap, land here) and gather (the same number as an ordinary convolution over the zero-inserted input):",
        "",
        *_indent(explain(w, x[0], ARITH_AT, transposed=True, **params)),
        "",
    ]
    ones = np.ones((1, 1, 3, 3), dtype=F32)
    stamps = conv_transpose2d(ones, ones, **params)
    rows = explain_shape((3, 3), 3, stride=2, padding=1, transposed=True).taps[0]
    two = [r for r, n in enumerate(rows) if n == 2]
    one = [r for r, n in enumerate(rows) if n == 1]
    ones4 = np.ones((1, 1, 4, 4), dtype=F32)
    even = conv_transpose2d(ones, ones4, **params)
    lines += [
        "The checkerboard. Ones through ones count the taps landing on each output: along each axis rows "
        f"{', '.join(map(str, two))}",
        f"get 2 taps and rows {', '.join(map(str, one))} get 1 (the kernel's extent 3 does not divide evenly by "
        "the stride 2),",
        "so a flat input comes out as a grid of 4s, 2s and 1s: the checkerboard artefact of decoders and GANs.",
        *_pair("conv_transpose2d(ones, ones 3×3)", stamps[0, 0], "with a 4×4 kernel (extent divisible by 2)",
               even[0, 0], 0),
        check.conv("the taps per output", stamps, ones, ones, op="conv_transpose2d", **params),
        "With a 4×4 kernel every interior output gets 2×2 taps; only the border gets fewer.",
        "",
    ]
    back = conv2d(y, w, **params)
    rng = np.random.default_rng(6)
    z = rng.standard_normal((1, 1, 5, 5)).astype(np.float64)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    lhs = float(np.sum(conv2d(z, w64, **params) * x64))
    rhs = float(np.sum(z * conv_transpose2d(x64, w64, **params)))
    lines += [
        "Why \"transposed\", and why \"deconvolution\" is a misnomer. Convolving the output with the same kernel, "
        "stride and",
        "padding does not give x back, so the transposed convolution is not an inverse:",
        *_pair("conv2d(y, w, stride=2, padding=1)", back[0, 0], "x", x[0, 0], 0),
        check.conv("the convolution of y", back, y, w, **params),
        "What it is: the transpose (adjoint) of that convolution, the map whose matrix is the convolution's matrix",
        "transposed. For any z of the output's shape, Σ conv2d(z, w) · x = Σ z · conv_transpose2d(x, w):",
        f"  with a seeded random 5×5 z: {lhs:.6f} = {rhs:.6f} (float64)",
        "The same sum makes the transposed convolution the convolution's input gradient (∂L/∂z of",
        "L = Σ conv2d(z, w) · x is conv_transpose2d(x, w)), and gives its weight the layout (in, out/groups, k…):",
        "it is the weight of the convolution it transposes, which maps out_channels to in_channels.",
    ]
    return lines


SECTIONS = [
    ("seed 000: one output by hand, a general kernel, stride 2", section_seed000),
    ("seed 001: the missing bias, and the border of a 1×1 convolution with padding", section_seed001),
    ("seed 002: Sobel, output size, stride and zero padding", section_seed002),
    ("seed 003: the gradients of a Sobel convolution", section_seed003),
    ("seed 004: cross_correlate, a rectangular kernel, and the weight gradient by hand", section_seed004),
    ("transposed convolution: 3 → 5 (or 6), both views of one output, the checkerboard", section_transposed),
]


def header(number: int) -> str:
    title = f"{number}/{len(SECTIONS)} · {SECTIONS[number - 1][0]}"
    return f"{title}\n{'═' * len(title)}"


def intro(check: Checker) -> str:
    lines = [
        "convscope tour: PyTorch's nn.Conv2d, every number shown",
        "",
        "convscope grew from five documents by people learning nn.Conv2d (the seeds, 000 to 004). This tour",
        "takes their examples, with the numbers they printed, computes them with convscope, and shows how",
        "each number they asked about is made. The last section goes on to transposed convolution (the",
        "up-sampling layer of decoders), with the convolution-arithmetic guide's example.",
        "",
    ]
    lines += [f"  {k}. {title}" for k, (title, _) in enumerate(SECTIONS, 1)]
    lines += ["", "convscope tour --section N shows one section."]
    if check.torch is None:
        lines.append("torch is not installed, so the results are not checked against torch "
                     "(pip install \"convscope[torch]\").")
    else:
        lines.append(f"Every result is checked against torch {check.torch.__version__} on the same numbers (✓).")
    return "\n".join(lines)


def section_text(number: int, check: Checker) -> str:
    body = SECTIONS[number - 1][1](check)
    text = "\n".join(line for line in body if line is not None)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return header(number) + "\n\n" + text.strip("\n")
