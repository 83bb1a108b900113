"""A dependency-free progress line on stderr, rate-limited, that can be silenced."""
import sys
import time


class Progress:
    """``update(text)`` rewrites one status line at most every ``interval`` seconds;
    ``done(text)`` ends it with a newline. ``enabled=False`` prints nothing."""

    def __init__(self, enabled=True, interval=0.5, stream=None):
        self.enabled = enabled
        self.interval = interval
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self._last = -1e9
        self._width = 0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    @property
    def elapsed(self):
        return time.perf_counter() - self.start

    def update(self, text, force=False):
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < (self.interval if self._tty else max(self.interval, 10.0)):
            return
        self._last = now
        if self._tty:
            pad = max(self._width - len(text), 0)
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self, text):
        if not self.enabled:
            return
        if self._tty:
            pad = max(self._width - len(text), 0)
            self.stream.write("\r" + text + " " * pad + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
