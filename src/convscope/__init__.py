"""convscope: PyTorch's ``nn.Conv2d`` in NumPy, with the same numbers forward and backward.

Public API
----------
- :func:`conv2d`, :func:`conv2d_backward`, :func:`conv2d_input`, :func:`conv2d_weight`
- :func:`conv2d_output_size`
- :func:`conv1d`, :func:`conv3d` and their ``_backward``, ``_input``, ``_weight``, ``_output_size``
- :class:`Conv2d`, :class:`Conv2dGrads`, :class:`ConvSpec`
- :class:`Conv1d`, :class:`Conv3d`, :class:`ConvGrads`
- :func:`conv_transpose1d`, :func:`conv_transpose2d`, :func:`conv_transpose3d` and their ``_backward``
  and ``_output_size``; :class:`ConvTranspose1d`, :class:`ConvTranspose2d`, :class:`ConvTranspose3d`,
  :class:`ConvTransposeGrads`
- :func:`explain`, :func:`explain_grad`, :func:`explain_shape`: how one number is made (1-d, 2-d, 3-d);
  :class:`Explainer`: one convolution computed once, any of its numbers explained
- :func:`animate` (:class:`Animation`): a GIF or MP4, one frame per output or gradient element
- :func:`widget`: the interactive explore page of a layer, inline in a notebook
  (:mod:`convscope.explore` also serves it: ``convscope explore``)
- :func:`plan` (which implementation runs each pass, and why)
- :func:`set_tuning`, :func:`get_tuning`: time the candidates once per configuration, keep the fastest
- :func:`set_workspace_limit`, :func:`get_workspace_limit`, :func:`workspace_limit`
- :func:`set_num_threads`, :func:`get_num_threads`, :func:`num_threads`
- :func:`set_conv_precision`, :func:`get_conv_precision`, :func:`conv_precision`: whether the planner
  may choose Winograd and FFT, whose rounding error is relative to a call's largest values
"""
from .animate import Animation, animate
from .explain import (
    Explainer,
    Explanation,
    ShapeExplanation,
    Term,
    TransposedExplanation,
    explain,
    explain_grad,
    explain_shape,
)
from .functional import (
    Conv2dGrads,
    ConvGrads,
    ConvTransposeGrads,
    conv1d,
    conv1d_backward,
    conv1d_input,
    conv1d_output_size,
    conv1d_weight,
    conv2d,
    conv2d_backward,
    conv2d_input,
    conv2d_output_size,
    conv2d_weight,
    conv3d,
    conv3d_backward,
    conv3d_input,
    conv3d_output_size,
    conv3d_weight,
    conv_transpose1d,
    conv_transpose1d_backward,
    conv_transpose1d_output_size,
    conv_transpose2d,
    conv_transpose2d_backward,
    conv_transpose2d_output_size,
    conv_transpose3d,
    conv_transpose3d_backward,
    conv_transpose3d_output_size,
)
from .module import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .planner import plan
from .precision import conv_precision, get_conv_precision, set_conv_precision
from .spec import ConvSpec
from .threads import get_num_threads, num_threads, set_num_threads
from .tuning import get_tuning, set_tuning
from .workspace import get_workspace_limit, set_workspace_limit, workspace_limit
from . import explore
from .explore import widget

__version__ = "0.1.0"

__all__ = [
    "Animation",
    "Conv1d",
    "Conv2d",
    "Conv2dGrads",
    "Conv3d",
    "ConvGrads",
    "ConvSpec",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "ConvTransposeGrads",
    "Explainer",
    "Explanation",
    "ShapeExplanation",
    "Term",
    "TransposedExplanation",
    "animate",
    "conv1d",
    "conv1d_backward",
    "conv1d_input",
    "conv1d_output_size",
    "conv1d_weight",
    "conv2d",
    "conv2d_backward",
    "conv2d_input",
    "conv2d_output_size",
    "conv2d_weight",
    "conv3d",
    "conv3d_backward",
    "conv3d_input",
    "conv3d_output_size",
    "conv3d_weight",
    "conv_transpose1d",
    "conv_transpose1d_backward",
    "conv_transpose1d_output_size",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "conv_transpose2d_output_size",
    "conv_transpose3d",
    "conv_transpose3d_backward",
    "conv_transpose3d_output_size",
    "conv_precision",
    "explain",
    "explain_grad",
    "explain_shape",
    "get_conv_precision",
    "get_num_threads",
    "get_tuning",
    "get_workspace_limit",
    "num_threads",
    "plan",
    "set_conv_precision",
    "set_num_threads",
    "set_tuning",
    "set_workspace_limit",
    "widget",
    "workspace_limit",
]
