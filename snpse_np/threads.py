"""How many CPU threads the package's own work uses (BLAS GEMMs and Numba kernels).

Oversubscription is the silent way to lose 20-30x: on the 2-core development machine, training
with 2 OpenBLAS threads per process beside another busy process ran 860 s instead of 37 s
(NOTES.md). The package's GEMMs are small (a batch of 128-1,024 rows times 256 x 256) and its
Numba kernels serial, so a second thread buys little even on an idle machine
(benchmarks/bench_threads.py measures it) and costs a lot on a busy one. So the package decides:

- ``threads=`` on ``NPSE`` / ``ScorePosterior`` (an int >= 1), else
- the environment variable ``SNPSE_THREADS``, else
- 1 thread.

``limit_threads(n)`` is a context manager that sets BLAS/OpenMP pools (through threadpoolctl) and
Numba's thread count for the work inside it and restores them on exit: importing snpse_np
changes nothing, and a caller's own settings outside the package's calls are untouched.
Simulators are not limited here (``simulate`` runs them on executors of the caller's choosing).
"""
import contextlib
import os

ENV_VAR = "SNPSE_THREADS"


def default_threads():
    """The thread count when none is given: $SNPSE_THREADS, else 1."""
    text = os.environ.get(ENV_VAR)
    if text is None or text.strip() == "":
        return 1
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"{ENV_VAR} must be a positive int, got {text!r}") from None
    if n < 1:
        raise ValueError(f"{ENV_VAR} must be a positive int, got {text!r}")
    return n


def check_threads(threads):
    """threads as an int >= 1 (None: ``default_threads()``); ValueError otherwise."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return int(threads)


@contextlib.contextmanager
def limit_threads(n):
    """Run the body with at most ``n`` BLAS/OpenMP threads and ``n`` Numba threads.

    Numba's count is set only if numba is already imported (the numba backend imports it) and
    is clipped to its pool size (NUMBA_NUM_THREADS); both are restored on exit.
    """
    from threadpoolctl import threadpool_limits
    import sys
    numba = sys.modules.get("numba")
    old_numba = None
    with threadpool_limits(limits=int(n)):
        if numba is not None:
            old_numba = numba.get_num_threads()
            numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
        try:
            yield
        finally:
            if old_numba is not None:
                numba.set_num_threads(old_numba)


def uses_threads(method):
    """Decorator: run a method under ``limit_threads(self.threads)``."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with limit_threads(self.threads):
            return method(self, *args, **kwargs)
    return wrapper
