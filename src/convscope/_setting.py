"""A process-wide setting with a per-thread override: the workspace limit, the precision mode."""
from __future__ import annotations

import contextlib
import threading


class Setting:
    """``get()`` the calling thread's value: its innermost ``override`` block's, else the process's."""

    def __init__(self, default):
        self._value = default
        self._local = threading.local()
        self._lock = threading.Lock()

    def get(self):
        return getattr(self._local, "value", self._value)

    def set(self, value):
        """Set the value for every thread (and for this thread's open block); returns the previous one."""
        with self._lock:
            previous = self.get()
            self._value = value
            if hasattr(self._local, "value"):
                self._local.value = value
        return previous

    @contextlib.contextmanager
    def override(self, value):
        """The value for this thread inside a ``with`` block."""
        had = hasattr(self._local, "value")
        old = getattr(self._local, "value", None)
        self._local.value = value
        try:
            yield value
        finally:
            if had:
                self._local.value = old
            else:
                del self._local.value
