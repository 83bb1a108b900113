"""Atomic file writes: a reader, or a rerun after a kill, sees the old file or the whole new one.

``write_atomic(path, write)`` calls ``write(f)`` on a temporary file in the folder of ``path``
(same file system, so the rename is atomic), flushes and fsyncs it, then ``os.replace``s it onto
``path``. If ``write`` raises (disk full, a file-size limit, Ctrl-C) the temporary file is removed
and ``path`` is untouched. Every file the package writes goes through here.
"""
import os
import tempfile


def write_atomic(path, write, mode="wb"):
    """Write ``path`` through ``write(fileobj)``; ``mode`` "wb" (bytes) or "w" (text)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".part")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
