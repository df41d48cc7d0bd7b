"""``convscope explore``: an interactive page that shows a convolution with its real numbers.

- :func:`layer_data`: everything the page shows for one layer, as a JSON-able dict, built from
  :func:`convscope.explain`, :func:`convscope.explain_grad`, :func:`convscope.explain_shape` and
  :mod:`convscope.geometry`;
- :func:`serve`: the local server (loopback only) behind ``convscope explore``;
- :func:`page_html` / :func:`write_page`: the page as one self-contained HTML file, its data
  precomputed, that works opened from disk;
- :func:`widget`: the page of your own layer (a weight or a convscope/torch ``Conv2d``), inline in
  a notebook.

Importing this package starts nothing.
"""
from .data import LIMITS, MAX_ELEMENTS, MAX_TERMS, layer_data
from .notebook import ExplorePage, widget
from .server import page_html, serve, write_page

__all__ = ["LIMITS", "MAX_ELEMENTS", "MAX_TERMS", "ExplorePage", "layer_data", "page_html", "serve", "widget",
           "write_page"]
