"""The explore page of your own layer, inline in a Jupyter notebook: :func:`widget`."""
from __future__ import annotations

import html

from .._transposed_view import transposed_arguments
from ..explain.core import _arguments
from ..spec import as_array, check_same_dtype
from .data import layer_data
from .server import page_html


class ExplorePage:
    """One layer's explore page, every element precomputed; a notebook shows it inline.

    ``data`` is :func:`convscope.explore.layer_data`'s dict, ``html`` the self-contained page (as
    ``convscope explore --out`` writes it).  In a notebook the page is shown in a sandboxed
    ``<iframe>`` (scripts only: no network, no access to the notebook); click a pixel of the
    output, of ∂L/∂x or of ∂L/∂w to see how it is made.  ``explainer`` is the
    :class:`convscope.Explainer` the arrays came from: ``page.explainer.explain((o, i, j))`` (or
    ``explain_grad``) explains any element in Python without computing the convolution again (None
    for a transposed layer).
    """

    def __init__(self, data: dict, height: int = 760):
        self.data = data
        self.explainer = data.get("_explainer")
        self.height = height
        self.html = page_html(data, static=True)

    def save(self, path) -> str:
        """Write the page to ``path`` (it works opened from disk); return ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.html)
        return str(path)

    def _repr_html_(self) -> str:
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" sandbox="allow-scripts" '
                f'title="convscope explore" style="width:100%;height:{self.height}px;border:1px solid #ddd">'
                "</iframe>")

    def __repr__(self) -> str:
        return f"ExplorePage({self.data['config']['layer']}, input {tuple(self.data['config']['input_shape'])})"


def widget(layer_or_weight, x, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", *,
           sample=None, grad_output="ones", seed=0, height=760, transposed=False,
           output_padding=0) -> ExplorePage:
    """The explore page of a layer and one input sample, for a notebook.

    Two forms, as :func:`convscope.explain`: ``widget(weight, x, bias=None, stride=1, padding=0,
    dilation=1, groups=1, padding_mode='zeros')`` or ``widget(layer, x)`` with a
    :class:`convscope.Conv2d` or a ``torch.nn.Conv2d`` (its own weight and bias).  ``x`` is
    (H, W), (C, H, W) or (N, C, H, W), NumPy or torch; of a batch, ``sample=n`` is shown (the
    page's labels name ``x[n, c, h, w]``, and its gradients are those of that sample).
    ``grad_output`` is ``'ones'`` (the gradients of ``L = out.sum()``) or ``'random'`` (seeded
    by ``seed``).  ``transposed=True`` (implied by a convscope or torch ``ConvTranspose2d``) shows
    ``conv_transpose2d`` with ``output_padding`` and the weight ``(C, C_out/groups, kH, kW)``: click
    an output pixel for its gather view on the zero-inserted input and its scatter terms.  Sizes are
    bounded as in ``convscope explore``
    (:data:`convscope.explore.LIMITS`); nothing is modified.

    The arrays come from one :class:`convscope.Explainer` (one convolution, one backward pass; for a
    transposed layer one ``conv_transpose2d`` and one of its ``_backward``); the page computes the numbers of a clicked pixel from them, as :func:`convscope.explore.element`
    does with that explainer.

    >>> import numpy as np
    >>> page = widget(np.ones((1, 1, 3, 3)), np.arange(25.0).reshape(5, 5), padding=1)
    >>> from convscope.explore.data import decode
    >>> float(decode(page.data["arrays"]["output"])[0, 0, 0]), "<iframe" in page._repr_html_()  # x[0,0]+x[0,1]+x[1,0]+x[1,1]
    (12.0, True)
    """
    if not isinstance(transposed, bool):
        raise TypeError(f"transposed must be True or False, got {transposed!r}")
    transposed = transposed or getattr(layer_or_weight, "transposed", False) is True
    if transposed:
        args = transposed_arguments(layer_or_weight, "widget", bias=bias, stride=stride, padding=padding,
                                    output_padding=output_padding, groups=groups, dilation=dilation,
                                    padding_mode=padding_mode)
        extra = dict(transposed=True, output_padding=args["output_padding"])
    else:
        args, _ = _arguments(layer_or_weight, "widget", bias=bias, stride=stride, padding=padding,
                             dilation=dilation, groups=groups, padding_mode=padding_mode)
        extra = dict(padding_mode=args["padding_mode"], output_padding=output_padding)
    xa = as_array(x, "input")
    w = as_array(args["weight"], "weight")
    b = as_array(args["bias"], "bias", allow_none=True)
    check_same_dtype(input=xa, weight=w, bias=b)
    if xa.ndim == 4 and sample is None and xa.shape[0] > 1:
        raise ValueError(f"x is a batch of {xa.shape[0]} samples (shape {xa.shape}): pass sample=n to show one")
    data = layer_data(xa, weight=w, bias=False if b is None else b, stride=args["stride"],
                      padding=args["padding"], dilation=args["dilation"], groups=args["groups"],
                      grad_output=grad_output, seed=seed,
                      sample=None if xa.ndim != 4 else (0 if sample is None else sample), **extra)
    return ExplorePage(data, height)
