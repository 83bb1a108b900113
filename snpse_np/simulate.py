"""Run a simulator over many parameter rows, in this process or on any ``concurrent.futures`` executor.

``simulate(simulator, theta)`` splits ``theta`` (n, d) into chunks of rows, runs
``simulator(theta_chunk) -> x_chunk`` ((m, d) -> (m, p)) on each, and puts the chunks back in
order: x is (n, p) float64, row i simulated at ``theta[i]``.

Executors
---------
``executor=None`` runs in this process. Any object with the ``concurrent.futures.Executor``
``submit`` method spreads the chunks over its workers; this module imports no engine::

    import multiprocessing                                    # local processes; spawn, not
    from concurrent.futures import ProcessPoolExecutor        # fork, once numba's OpenMP
    spawn = multiprocessing.get_context("spawn")              # threads ran in this process
    with ProcessPoolExecutor(4, mp_context=spawn) as ex:
        x = simulate(simulator, theta, executor=ex, seed=0)

    from dask.distributed import Client                       # Dask (local or a cluster)
    with Client(n_workers=4, threads_per_worker=1) as client:
        x = simulate(simulator, theta, executor=client.get_executor(), seed=0)

    from mpi4py.futures import MPIPoolExecutor                # MPI: mpiexec -n 5 python -m mpi4py.futures run.py
    with MPIPoolExecutor() as ex:
        x = simulate(simulator, theta, executor=ex, seed=0)

    import ray                                                # Ray: no Executor of its own,
    class RayExecutor:                                        # but ObjectRef.future() is a
        def __init__(self):                                   # concurrent.futures.Future
            self._call = ray.remote(lambda fn, *args: fn(*args))
        def submit(self, fn, *args):
            return self._call.remote(fn, *args).future()
    ray.init()
    x = simulate(simulator, theta, executor=RayExecutor(), seed=0)

With process-based executors the simulator travels by pickle: make it a top-level function
(or a picklable object) of an importable module; Dask and Ray use cloudpickle and also take
closures. See docs/simulation.md.

Seed rule
---------
If the simulator has a parameter named ``seed`` (found with ``inspect.signature``; ``**kwargs``
does not count), it is called as ``simulator(rows, seed=s)`` once per *seed block*: the rows
``[b * seed_block, (b + 1) * seed_block)`` of theta (the last block may be shorter) with
``s = child_seed(seed, b)`` (see ``snpse_np.rng``). Chunks are whole numbers of seed blocks
(``chunk_size`` is rounded up to a multiple of ``seed_block``) and a worker calls the simulator
once per block of its chunk. Hence x depends only on (simulator, theta, seed, seed_block): the
same seed gives the same x in process, on any executor and with any chunk size. Blocks of
``seed_block = 100`` rows keep vectorised simulators vectorised; ``seed_block=1`` is one seed
per row (fully general, slowest for vectorised simulators). ``seed=None`` draws a fresh base
seed (or reuses the one stored in ``workdir``, so a resumed run matches an uninterrupted one).

A simulator without a ``seed`` parameter is called once per chunk with all its rows, and its
reproducibility is its own business.

Failures
--------
A chunk whose call raises (or whose future fails: worker crash, pickling error) is submitted
again, up to ``max_retries`` more times (transient failures: the retry gives the same x as a
clean run). If it still fails, its rows are *isolated*: the chunk is run once more, seed block by
seed block (one call for a simulator without ``seed``), and a call that raises is split in two
halves, recursively, down to single rows (the halves of a call with seed s get
``child_seed(s, 0)`` and ``child_seed(s, 1)``, so x still depends only on the simulator, theta,
seed and seed_block). A row that raises on its own is ONE failed row: NaN in x, counted in
``n_failed_rows`` (and dropped downstream like a NaN row); the rest of its chunk is kept. With k
raising rows among m that costs about 2 k log2(m) extra calls. A simulator that raises
everywhere is not called 2m times: once the first ``ISOLATION_GIVE_UP`` rows of a chunk have all
failed alone with no call of the chunk succeeding, its remaining rows are marked failed unrun.

Failures are counted in the report, never raised, and never silent: a summary line goes to the
progress display, or with ``progress=False`` a ``RuntimeWarning``. Two exceptions to "never
raised":

- every row failed (no row of x was simulated): ``RuntimeError`` with the first error, since
  an all-NaN x is never what the caller wants;
- the simulator returned the wrong shape (not (m, p), or p differs between chunks) or complex
  numbers: ``ValueError`` at once, without retries, because it is a bug, not bad luck.

``KeyboardInterrupt`` in this process is not caught: pending chunks are cancelled and the
chunks already written to ``workdir`` stay.

Streaming to disk
-----------------
With ``workdir=path`` every finished chunk is written as it arrives to
``path/chunk_<index>.npz`` (arrays ``theta`` (m, d) and ``x`` (m, p)), atomically (temporary
file + ``os.replace``, ``snpse_np.files``), by this process, so workers need no shared file
system. A chunk with rows that failed is not written, so a rerun tries it again. A
``manifest.json`` records n, d, a hash of theta, chunk_size, seed_block and the base seed. A
rerun with the same workdir and theta loads the chunks already there and simulates only the
missing (or failed) ones; a workdir written for another theta, chunking or seed raises a
``ValueError`` saying so. ``chunk_size=None`` adopts the stored chunking.

Use ``return_report=True`` to get ``(x, SimulationResult)`` with the counts and the time.
"""
import dataclasses
import hashlib
import inspect
import json
import math
import os
import queue
import time
import warnings

import numpy as np

from .checks import real_array
from .files import write_atomic
from .progress import Progress
from .rng import as_generator, child_seed

SEED_BLOCK = 100          # rows per seed block: see "Seed rule" in the module docstring
ISOLATION_GIVE_UP = 16    # rows failed alone, with no success in the chunk, before the rest is given up
_TARGET_CHUNKS = 32       # default number of chunks: load balance without much per-chunk overhead
_MANIFEST = "manifest.json"


class SimulatorOutputError(ValueError):
    """The simulator returned an array of the wrong shape (a bug: raised, never retried)."""


@dataclasses.dataclass(frozen=True)
class SimulationResult:
    """What happened in one ``simulate`` call (``simulate(..., return_report=True)[1]``).

    n_rows            rows of theta (and of x)
    n_chunks          chunks theta was split into
    chunk_size        rows per chunk (the last may be shorter), after rounding to seed blocks
    seed_block        rows per seed block, None for a simulator without ``seed``
    n_failed_chunks   chunks with rows that still failed after the retries and the row isolation
    n_failed_rows     rows that failed (raised on their own, or a whole chunk lost to a worker
                      crash or a pickling error); NaN in x
    n_nonfinite_rows  rows the simulator *returned* with a NaN or inf (failed rows not included)
    n_retries         resubmissions made (successful or not)
    n_loaded_chunks   chunks read back from ``workdir`` instead of simulated
    first_error       the first failure, or None: "chunk i (rows a:b), row r: Type: message"
                      for a row that raised on its own, "chunk i (rows a:b): Type: message" for
                      a chunk lost whole
    seconds           wall time of the call
    """

    n_rows: int
    n_chunks: int
    chunk_size: int
    seed_block: "int | None"
    n_failed_chunks: int
    n_failed_rows: int
    n_nonfinite_rows: int
    n_retries: int
    n_loaded_chunks: int
    first_error: "str | None"
    seconds: float

    @property
    def ok(self):
        """True when every row was simulated and is finite."""
        return self.n_failed_rows == 0 and self.n_nonfinite_rows == 0

    def summary(self):
        """One line for a log."""
        line = (f"simulate: {self.n_rows} rows in {self.n_chunks} chunks, {self.seconds:.2f} s; "
                f"{self.n_failed_chunks} chunks with failed rows ({self.n_failed_rows} rows NaN), "
                f"{self.n_nonfinite_rows} non-finite rows")
        if self.n_loaded_chunks:
            line += f", {self.n_loaded_chunks} chunks loaded from workdir"
        if self.first_error:
            line += f"; first error: {self.first_error}"
        return line


def simulate(simulator, theta, executor=None, chunk_size=None, seed=None, progress=True,
             workdir=None, max_retries=2, *, seed_block=SEED_BLOCK, return_report=False):
    """Simulate x (n, p) float64 at every row of ``theta`` (n, d); see the module docstring.

    simulator      callable (m, d) -> (m, p); with a ``seed`` parameter it gets
                   ``seed=child_seed(seed, block_index)`` once per seed block
    theta          (n, d) array, n >= 1
    executor       None (in process) or a ``concurrent.futures.Executor``-like object
    chunk_size     rows per chunk, rounded up to a multiple of ``seed_block`` for seeded
                   simulators; None: about 32 chunks (4 per worker if the executor tells its
                   ``_max_workers`` and that is more), one chunk in process without a workdir
    seed           int, None (fresh) or a numpy Generator (one int is drawn from it)
    progress       one updating line on stderr (chunks done/total, rows/s, failures)
    workdir        folder to stream chunks to and resume from (created if missing)
    max_retries    resubmissions of a failing chunk before its failing rows are isolated
    seed_block     rows per seed block (keyword only)
    return_report  return ``(x, SimulationResult)`` instead of x (keyword only)
    """
    start_time = time.perf_counter()
    if not callable(simulator):
        raise ValueError(f"simulator must be callable, got {type(simulator).__name__}")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise ValueError("executor must be None or have a concurrent.futures-style submit(fn, *args)")
    theta = _check_theta(theta)
    max_retries = _check_int(max_retries, "max_retries", minimum=0)
    seed_block = _check_int(seed_block, "seed_block", minimum=1)
    _check_seed(seed)
    n = theta.shape[0]

    takes_seed = _accepts_seed(simulator)
    unit = seed_block if takes_seed else 1
    manifest = _read_manifest(workdir) if workdir is not None else None
    if chunk_size is None:
        chunk_size = (manifest["chunk_size"] if manifest is not None
                      else _default_chunk_size(n, executor, workdir, unit))
    chunk_size = _check_int(chunk_size, "chunk_size", minimum=1)
    chunk_size = min(unit * math.ceil(chunk_size / unit), unit * math.ceil(n / unit))
    base_seed = _base_seed(seed, manifest) if takes_seed else None
    bounds = [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]

    store = None
    if workdir is not None:
        store = _ChunkStore(workdir, theta, {
            "n_rows": n, "dim": theta.shape[1], "theta_sha256": _theta_hash(theta),
            "chunk_size": chunk_size, "seed_block": seed_block if takes_seed else None,
            "base_seed": base_seed}, manifest)

    board = _Board(n, bounds, _ProgressLine(len(bounds), progress))
    run_token = os.urandom(8).hex()   # tags submissions as distinct (see _run_chunk)
    try:
        todo = []
        for i, (a, b) in enumerate(bounds):
            x_stored = store.load(i, a, b) if store is not None else None
            if x_stored is None:
                todo.append(i)
            else:
                board.put(i, x_stored, loaded=True)

        def job(i, attempt):
            a, b = bounds[i]
            seeds = None
            if takes_seed:
                seeds = [child_seed(base_seed, blk) for blk in range(a // unit, -(-b // unit))]
            return (simulator, theta[a:b], seeds, seed_block, (run_token, i, attempt))

        def on_success(i, x_chunk):
            board.put(i, x_chunk)
            if store is not None:
                a, b = bounds[i]
                store.save(i, theta[a:b], board.x[a:b])

        def on_isolated(i, result):
            board.put_isolated(i, *result)
            if store is not None and not result[1].any():  # a chunk with failed rows is tried again
                a, b = bounds[i]
                store.save(i, theta[a:b], board.x[a:b])

        if executor is None:
            retries = _run_inline(todo, job, on_success, on_isolated, board, max_retries)
        else:
            retries = _run_on_executor(executor, todo, job, on_success, on_isolated, board, max_retries)
    except BaseException:
        board.progress.finish(board)   # end the line so a traceback starts on its own
        raise

    report = board.report(chunk_size, seed_block if takes_seed else None, retries,
                          time.perf_counter() - start_time)
    failed = report.n_failed_chunks > 0
    board.progress.finish(board, report.summary() if failed else None)
    if board.x is None:
        raise RuntimeError(f"simulate: all {len(bounds)} chunks failed, every row raised "
                           f"(after {max_retries} retries each); first error: {report.first_error}")
    if failed and not progress:
        warnings.warn(report.summary(), RuntimeWarning, stacklevel=2)
    return (board.x, report) if return_report else board.x


# ----------------------------------------------------------------------------- worker side

def _run_chunk(simulator, theta_chunk, block_seeds, seed_block, tag):
    """Simulate one chunk (m, d) -> (m, p) float64; runs in the worker.

    ``block_seeds`` is None (simulator without ``seed``: one call for the chunk) or one int per
    seed block of the chunk (one call per block). ``tag`` = (run token, chunk index, attempt) is
    unused here: it makes every submission distinct, so executors that cache calls by hashing
    their arguments (Dask's ``pure=True``) neither reuse a failed attempt nor merge two chunks
    with equal theta rows.
    """
    del tag
    if block_seeds is None:
        return _checked_output(simulator(theta_chunk), theta_chunk.shape[0])
    parts = []
    for k, s in enumerate(block_seeds):
        rows = theta_chunk[k * seed_block:(k + 1) * seed_block]
        part = _checked_output(simulator(rows, seed=s), rows.shape[0])
        if parts and part.shape[1] != parts[0].shape[1]:
            raise SimulatorOutputError(
                f"simulator returned {parts[0].shape[1]} columns for one seed block and "
                f"{part.shape[1]} for another; every row of x needs the same p")
        parts.append(part)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _run_chunk_isolated(simulator, theta_chunk, block_seeds, seed_block, tag):
    """Simulate a chunk whose whole calls failed, isolating the rows that raise (see "Failures").

    Returns (x (m, p) with NaN rows where a row failed, or None if every row failed;
    failed (m,) bool; the first error (j, "Type: message") with row j within the chunk, or None).
    """
    del tag
    iso = _Isolation(simulator, theta_chunk.shape[0])
    if block_seeds is None:
        iso.run(theta_chunk, 0, None)
    else:
        for k, s in enumerate(block_seeds):
            iso.run(theta_chunk[k * seed_block:(k + 1) * seed_block], k * seed_block, s)
    return iso.x, iso.failed, iso.first_error


class _Isolation:
    """Bisection of failing calls down to the single rows that raise."""

    def __init__(self, simulator, m):
        self.simulator, self.x = simulator, None
        self.failed = np.zeros(m, dtype=bool)
        self.first_error, self.successes = None, 0

    def run(self, rows, offset, seed):
        m = rows.shape[0]
        if self.successes == 0 and self.failed.sum() >= ISOLATION_GIVE_UP:
            self.failed[offset:offset + m] = True  # raises everywhere: not worth 2m more calls
            return
        try:
            out = self.simulator(rows) if seed is None else self.simulator(rows, seed=seed)
        except Exception as exc:  # noqa: BLE001 - any simulator error; KeyboardInterrupt passes
            if m == 1:
                self.failed[offset] = True
                if self.first_error is None:
                    self.first_error = (offset, f"{type(exc).__name__}: {exc}")
                return
            half = m // 2
            seeds = (None, None) if seed is None else (child_seed(seed, 0), child_seed(seed, 1))
            self.run(rows[:half], offset, seeds[0])
            self.run(rows[half:], offset + half, seeds[1])
            return
        part = _checked_output(out, m)
        if self.x is None:
            self.x = np.full((self.failed.size, part.shape[1]), np.nan)
        elif part.shape[1] != self.x.shape[1]:
            raise SimulatorOutputError(
                f"simulator returned {self.x.shape[1]} columns for some rows and {part.shape[1]} "
                f"for others; every row of x needs the same p")
        self.x[offset:offset + m] = part
        self.successes += 1


def _checked_output(out, m):
    try:
        x = real_array(out, "simulator output")
    except ValueError as exc:
        raise SimulatorOutputError(str(exc)) from None
    if x.ndim != 2 or x.shape[0] != m:
        raise SimulatorOutputError(
            f"simulator must return an (m, p) array for m = {m} parameter rows, "
            f"got shape {x.shape}")
    return x


# ----------------------------------------------------------------------------- drivers

def _run_inline(todo, job, on_success, on_isolated, board, max_retries):
    """Run the chunks one after another in this process; returns the number of retries."""
    retries = 0
    for i in todo:
        for attempt in range(max_retries + 1):
            retries += attempt > 0
            try:
                x_chunk = _run_chunk(*job(i, attempt))
            except SimulatorOutputError:
                raise
            except Exception:  # noqa: BLE001 - any simulator error is a chunk failure
                continue
            on_success(i, x_chunk)
            break
        else:  # every attempt raised: find the rows that raise
            on_isolated(i, _run_chunk_isolated(*job(i, max_retries + 1)))
    return retries


def _run_on_executor(executor, todo, job, on_success, on_isolated, board, max_retries):
    """Submit every chunk, collect them as they finish, resubmit failures.

    Finished futures are handed over through a queue filled by done-callbacks: O(1) per
    completion whatever the number of chunks (``concurrent.futures.wait`` over all pending
    futures would be O(n) per call), and it works with any Future that has
    ``add_done_callback`` (Dask's, mpi4py's and Ray's executors return such futures).
    A chunk that failed every attempt goes back once more, to ``_run_chunk_isolated`` (attempt
    number ``max_retries + 1``); if that fails too (a worker crash, a pickling error), the whole
    chunk is lost.
    """
    done = queue.SimpleQueue()
    pending = {}
    retries = 0

    def submit(i, attempt):
        fn = _run_chunk if attempt <= max_retries else _run_chunk_isolated
        try:
            fut = executor.submit(fn, *job(i, attempt))
        except Exception as exc:  # noqa: BLE001 - e.g. a broken pool: counts as a failed attempt
            done.put((None, i, attempt, exc))
            return
        pending[fut] = (i, attempt)
        fut.add_done_callback(done.put)

    try:
        for i in todo:
            submit(i, 0)
        remaining = len(todo)
        while remaining:
            try:
                item = done.get(timeout=0.2)
            except queue.Empty:
                board.progress.draw(board)   # keep rows/s alive while chunks are slow
                continue
            if isinstance(item, tuple):    # submit() itself failed
                _, i, attempt, exc = item
            else:
                i, attempt = pending.pop(item)
                exc = _future_error(item)
            if exc is None:
                if attempt <= max_retries:
                    on_success(i, item.result())
                else:
                    on_isolated(i, item.result())
                remaining -= 1
            elif isinstance(exc, SimulatorOutputError):
                raise exc
            elif attempt < max_retries:
                retries += 1
                submit(i, attempt + 1)
            elif attempt == max_retries:
                submit(i, attempt + 1)   # isolate the rows that raise
            else:
                board.fail(i, exc)
                remaining -= 1
    finally:
        for fut in pending:   # on an error or Ctrl-C: drop what has not started yet
            fut.cancel()
    return retries


def _future_error(fut):
    if fut.cancelled():
        return RuntimeError("the chunk's future was cancelled")
    return fut.exception()


# ----------------------------------------------------------------------------- bookkeeping

class _Board:
    """x as it fills in, the per-chunk outcome, and the progress display."""

    def __init__(self, n, bounds, progress):
        self.n = n
        self.bounds = bounds
        self.progress = progress
        self.x = None            # (n, p), allocated when the first chunk tells p; NaN = not done
        self.n_done = 0
        self.n_loaded = 0
        self.rows_simulated = 0
        self.failed = []         # chunk indices with failed rows
        self.n_failed_rows = 0
        self.first_error = None
        self.n_nonfinite = 0

    def put(self, i, x_chunk, loaded=False):
        a, b = self.bounds[i]
        if self.x is None:
            self.x = np.full((self.n, x_chunk.shape[1]), np.nan)
        elif x_chunk.shape[1] != self.x.shape[1]:
            raise SimulatorOutputError(
                f"chunk {i} has {x_chunk.shape[1]} columns, earlier chunks "
                f"{self.x.shape[1]}: every row of x needs the same p")
        self.x[a:b] = x_chunk
        self.n_nonfinite += int(np.count_nonzero(~np.isfinite(x_chunk).all(axis=1)))
        self.n_done += 1
        if loaded:
            self.n_loaded += 1
        else:
            self.rows_simulated += b - a
        self.progress.draw(self)

    def put_isolated(self, i, x_chunk, failed, first_error):
        """A chunk after row isolation: x_chunk (m, p) or None (every row failed), failed (m,)
        bool, first_error (row within the chunk, "Type: message") or None."""
        a, b = self.bounds[i]
        if x_chunk is None:
            self._lost(i, f"chunk {i} (rows {a}:{b}), every row: {first_error[1]}", b - a)
            return
        if self.x is None:
            self.x = np.full((self.n, x_chunk.shape[1]), np.nan)
        elif x_chunk.shape[1] != self.x.shape[1]:
            raise SimulatorOutputError(
                f"chunk {i} has {x_chunk.shape[1]} columns, earlier chunks "
                f"{self.x.shape[1]}: every row of x needs the same p")
        self.x[a:b] = x_chunk
        ok = ~failed
        self.n_nonfinite += int(np.count_nonzero(~np.isfinite(x_chunk[ok]).all(axis=1)))
        self.rows_simulated += int(ok.sum())
        if failed.any():
            self._lost(i, f"chunk {i} (rows {a}:{b}), row {a + first_error[0]}: {first_error[1]}",
                       int(failed.sum()))
        else:
            self.n_done += 1
            self.progress.draw(self)

    def fail(self, i, exc):
        a, b = self.bounds[i]
        self._lost(i, f"chunk {i} (rows {a}:{b}): {type(exc).__name__}: {exc}", b - a)

    def _lost(self, i, error, rows):
        if self.first_error is None:
            self.first_error = error
        self.failed.append(i)
        self.n_failed_rows += rows
        self.n_done += 1
        self.progress.draw(self)

    def report(self, chunk_size, seed_block, retries, seconds):
        return SimulationResult(
            n_rows=self.n, n_chunks=len(self.bounds), chunk_size=chunk_size,
            seed_block=seed_block, n_failed_chunks=len(self.failed),
            n_failed_rows=self.n_failed_rows,
            n_nonfinite_rows=self.n_nonfinite, n_retries=retries, n_loaded_chunks=self.n_loaded,
            first_error=self.first_error, seconds=seconds)


class _ProgressLine:
    """The simulate line (chunks done/total, rows/s, failures) on the shared ``Progress``."""

    def __init__(self, total, enabled):
        self.total = total
        self.line = Progress(enabled=enabled, interval=0.1)

    def draw(self, board):
        text = self._text(board)
        if board.n_done < self.total:
            self.line.update(text)

    def finish(self, board, summary=None):
        """Close the line with the final counts, then the failure summary on a line of its own."""
        self.line.done(self._text(board))
        if summary:
            self.line.done(summary)

    def _text(self, board):
        rate = board.rows_simulated / max(self.line.elapsed, 1e-9)
        text = f"simulate: {board.n_done}/{self.total} chunks, {rate:,.0f} rows/s"
        if board.failed:
            text += f", {len(board.failed)} failed"
        if board.n_loaded:
            text += f", {board.n_loaded} loaded"
        return text


# ----------------------------------------------------------------------------- workdir

class _ChunkStore:
    """``workdir/chunk_<index>.npz`` files (theta rows and x), written atomically."""

    def __init__(self, workdir, theta, meta, manifest):
        self.dir = os.fspath(workdir)
        self.theta = theta
        if manifest is None:
            os.makedirs(self.dir, exist_ok=True)
            write_atomic(os.path.join(self.dir, _MANIFEST),
                         lambda f: f.write(json.dumps(meta, indent=1).encode()))
            return
        for key in ("n_rows", "dim", "theta_sha256", "chunk_size", "seed_block", "base_seed"):
            if manifest.get(key) != meta[key]:
                what = "theta" if key == "theta_sha256" else key
                raise ValueError(
                    f"workdir {self.dir!r} belongs to another run: its {what} is "
                    f"{_short(manifest.get(key))}, this call's is {_short(meta[key])}. "
                    f"Use a new workdir (or the same {what} to resume that run).")

    def path(self, i):
        return os.path.join(self.dir, f"chunk_{i:06d}.npz")

    def load(self, i, a, b):
        """x (b - a, p) stored for chunk i, or None if it is not there (or unreadable)."""
        path = self.path(i)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path) as z:
                theta_stored, x_stored = z["theta"], z["x"]
        except Exception as exc:  # noqa: BLE001 - a damaged file is simulated again
            warnings.warn(f"simulate: cannot read {path} ({exc}); simulating chunk {i} again",
                          RuntimeWarning, stacklevel=3)
            return None
        if theta_stored.shape != (b - a, self.theta.shape[1]) or not np.array_equal(
                theta_stored, self.theta[a:b], equal_nan=True):
            raise ValueError(
                f"workdir {self.dir!r} belongs to another run: {os.path.basename(path)} holds "
                f"other theta rows than rows {a}:{b} of this theta. Use a new workdir.")
        if x_stored.ndim != 2 or x_stored.shape[0] != b - a:
            raise ValueError(f"{path} holds x of shape {x_stored.shape}, expected {b - a} rows")
        return np.asarray(x_stored, dtype=np.float64)

    def save(self, i, theta_rows, x_rows):
        write_atomic(self.path(i), lambda f: np.savez(f, theta=theta_rows, x=x_rows))


def _read_manifest(workdir):
    path = os.path.join(os.fspath(workdir), _MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _theta_hash(theta):
    return hashlib.sha256(np.ascontiguousarray(theta).tobytes()).hexdigest()


def _short(value):
    text = repr(value)
    return text if len(text) <= 20 else text[:16] + "...'"


# ----------------------------------------------------------------------------- checks

def _check_theta(theta):
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 2:
        raise ValueError(f"theta must be a 2-D (n, d) array, got shape {theta.shape}")
    if theta.shape[0] == 0 or theta.shape[1] == 0:
        raise ValueError(f"theta must have at least one row and one column, got shape {theta.shape}")
    return theta


def _check_int(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _accepts_seed(simulator):
    """True if ``simulator`` has a parameter named ``seed`` that can be passed by keyword."""
    try:
        params = inspect.signature(simulator).parameters
    except (TypeError, ValueError):   # some builtins have no signature
        return False
    p = params.get("seed")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def _base_seed(seed, manifest):
    """The int that block seeds derive from: ``seed`` itself if an int; otherwise the one a
    workdir stored (so a resumed run continues the same stream), else one drawn afresh."""
    if seed is None or isinstance(seed, np.random.Generator):
        if manifest is not None and manifest.get("base_seed") is not None:
            return int(manifest["base_seed"])
        return int(as_generator(seed).integers(2**63))
    return int(seed)


def _check_seed(seed):
    if seed is None or isinstance(seed, np.random.Generator):
        return
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, None or a numpy Generator, got {seed!r}")


def _default_chunk_size(n, executor, workdir, unit):
    if executor is None and workdir is None:
        return n            # in process, nothing to balance or checkpoint: one chunk
    workers = getattr(executor, "_max_workers", None)
    target = max(_TARGET_CHUNKS, 4 * workers if isinstance(workers, int) else 0)
    return max(unit, math.ceil(n / target))
