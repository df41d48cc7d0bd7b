"""Explanations of single numbers of a convolution (1-d, 2-d or 3-d), built on :mod:`convscope.geometry`.

- :class:`Explainer`: one convolution computed once, then any of its numbers explained;
- :func:`explain`: how one output element is made (window × kernel, summed, plus the bias);
- :func:`explain_grad`: how one element of ∂input, ∂weight or ∂bias is made;
- :func:`explain_shape`: the output-size formula with the numbers filled in;
- ``transposed=True`` (or a ``ConvTranspose1d/2d/3d`` layer): a :class:`TransposedExplanation`, the
  scatter and gather views of a transposed convolution (:mod:`convscope.explain.transposed`).

Each returns an object whose ``str()`` is readable text and whose ``_repr_html_()``
shows the same in Jupyter.
"""
from .core import Explainer, Explanation, Term, explain, explain_grad
from .shape import ShapeExplanation, explain_shape
from .transposed import TransposedExplanation

__all__ = ["Explainer", "Explanation", "ShapeExplanation", "Term", "TransposedExplanation", "explain",
           "explain_grad", "explain_shape"]
