"""Compiled kernels (numba), one module per family.

Nothing here is imported by ``import convscope``: an algorithm imports its kernel module inside the
function that needs it, and the kernel module imports numba through :mod:`._numba`, which prepares
numba's cache directory and threading layer first.  Each kernel is compiled with ``cache=True``, once
per machine.
"""
