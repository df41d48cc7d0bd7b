"""``convscope explore``: an interactive page that shows a convolution with its real numbers.

- :func:`layer_data`: everything the page shows for one layer, from one ``conv2d`` and one
  ``conv2d_backward`` call, and :func:`element`: how one element is made, from
  :func:`convscope.explain` / :func:`convscope.explain_grad`;
- :func:`serve`: the local server (loopback only) behind ``convscope explore``;
- :func:`page_html` / :func:`write_page`: the page as one self-contained HTML file, its data
  precomputed, that works opened from disk;
- :func:`widget`: the page of your own layer (a weight or a convscope/torch ``Conv2d``), inline in
  a notebook.

Each takes ``transposed=True`` (and ``output_padding``) for a ``ConvTranspose2d``: its output from
``conv_transpose2d``, and for an output element the gather view (the zero-inserted, padded input
with the window and the flipped kernel) and the scatter terms.

Importing this package starts nothing.
"""
from .data import IMAGES, KERNELS, LIMITS, MAX_BYTES, MAX_TERMS, element, layer_data
from .notebook import ExplorePage, widget
from .server import page_html, serve, write_page

__all__ = ["IMAGES", "KERNELS", "LIMITS", "MAX_BYTES", "MAX_TERMS", "ExplorePage", "element", "layer_data", "page_html",
           "serve", "widget", "write_page"]
