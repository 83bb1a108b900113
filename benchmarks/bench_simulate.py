"""Benchmark snpse_np.simulate: speed-up of 2 worker processes over 1, and the cost per chunk.

    python benchmarks/bench_simulate.py [--quick]

1. Speed-up. The simulator is the Lotka-Volterra task (``get_task("lotka_volterra").simulate``)
   if snpse_np.tasks has it, else a stand-in (vectorised Euler steps of the Lotka-Volterra ODE,
   about 1 ms per call of 100 rows), with a printed note. Each call gets one seed block of
   100 rows; n is set so one process works about 1.5 s. Times: in process, a
   ProcessPoolExecutor with 1 worker, and one with 2 (pools started and warmed beforehand, so
   the times are simulation plus shipping, not process start-up). Best of 3. Every process
   runs numba with one thread (NUMBA_NUM_THREADS=1) and pools use the spawn start method.
2. Overhead per chunk: 2,000 one-row chunks of a trivial simulator, total time / chunks, in
   process, on a 2-process pool, and in process with a workdir (one atomic .npz per chunk).

The whole run takes well under a minute on 2 cores.
"""
import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

# One thread per process: the task's numba kernels run rows in parallel threads, which would
# blur "2 processes versus 1". Set before numba is imported; spawned workers inherit it.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from snpse_np.simulate import simulate  # noqa: E402

ROWS_PER_CALL = 100
# spawn, not fork: forking a process that has started numba's OpenMP threads kills the child
# ("fork() called from a process already using GNU OpenMP").
SPAWN = multiprocessing.get_context("spawn")


def lotka_volterra_standin(theta, seed):
    """(m, 4) -> (m, 20): Euler-integrated predator-prey ODE, log-normal noise, 10 time points.

    Stand-in used only when snpse_np.tasks has no lotka_volterra: its cost (about 1 ms for
    100 rows, 100 vectorised steps) is what matters here, not its statistics.
    """
    rng = np.random.default_rng(seed)
    a, b, c, d = np.exp(theta - 2.0).T
    prey, pred = np.full(len(theta), 30.0), np.full(len(theta), 1.0)
    out = np.empty((len(theta), 20))
    dt = 0.2
    for step in range(100):
        prey, pred = (prey + dt * (a * prey - b * prey * pred),
                      pred + dt * (-c * pred + d * prey * pred))
        prey, pred = np.clip(prey, 1e-6, 1e6), np.clip(pred, 1e-6, 1e6)
        if step % 10 == 9:
            k = step // 10
            out[:, 2 * k], out[:, 2 * k + 1] = prey, pred
    return np.log1p(out) + 0.1 * rng.standard_normal(out.shape)


def trivial(theta):
    return theta[:, :1]


def get_simulator():
    """(simulator, theta sampler, label); the task if it exists, else the stand-in."""
    try:
        from snpse_np.tasks import get_task
        task = get_task("lotka_volterra")
        return task.simulate, lambda n: task.prior.sample(n, seed=0), "Lotka-Volterra task"
    except Exception as exc:   # noqa: BLE001 - any reason the task is missing
        print(f"NOTE: snpse_np.tasks has no usable lotka_volterra ({type(exc).__name__}: {exc});"
              f" using a stand-in numpy simulator of the same cost")
        sample = lambda n: np.random.default_rng(0).uniform(-1.0, 1.0, size=(n, 4))  # noqa: E731
        return lotka_volterra_standin, sample, "stand-in Lotka-Volterra (Euler, numpy)"


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3

    print(f"machine: {platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}, "
          f"{platform.platform()}, Python {platform.python_version()}, numpy {np.__version__}")
    print(f"load average before: {_load()} (other processes share these cores: a load near or "
          f"above the core count makes the speed-up meaningless)")

    simulator, sample, label = get_simulator()
    probe = sample(ROWS_PER_CALL)
    simulator(probe, seed=0)                     # warm-up (numba compilation, caches)
    t_call = best_of(5, lambda: simulator(probe, seed=0))
    calls = max(20, int((0.3 if args.quick else 1.5) / t_call))
    theta = sample(calls * ROWS_PER_CALL)
    run = dict(seed=1, progress=False, seed_block=ROWS_PER_CALL)
    chunk = ROWS_PER_CALL * max(1, calls // 32)
    print(f"\n1. speed-up, simulator: {label}, {t_call * 1e3:.2f} ms per call of "
          f"{ROWS_PER_CALL} rows; n = {len(theta)} rows = {calls} calls in "
          f"{-(-len(theta) // chunk)} chunks; best of {repeats}")
    t_inproc = best_of(repeats, lambda: simulate(simulator, theta, chunk_size=chunk, **run))
    times = {}
    for workers in (1, 2):
        with ProcessPoolExecutor(workers, mp_context=SPAWN) as ex:
            simulate(simulator, theta[:ROWS_PER_CALL * workers], executor=ex,
                     chunk_size=ROWS_PER_CALL, **run)           # start and warm the workers
            times[workers] = best_of(
                repeats, lambda: simulate(simulator, theta, executor=ex, chunk_size=chunk, **run))
    print(f"   in process        {t_inproc:7.3f} s")
    print(f"   1 worker process  {times[1]:7.3f} s")
    print(f"   2 worker processes{times[2]:7.3f} s   speed-up over 1 worker: "
          f"{times[1] / times[2]:.2f}x, over in process: {t_inproc / times[2]:.2f}x")

    n_chunks = 400 if args.quick else 2000
    tiny = np.zeros((n_chunks, 1))
    print(f"\n2. overhead per chunk: {n_chunks} chunks of 1 row, trivial simulator")
    t0 = best_of(repeats, lambda: simulate(trivial, tiny, chunk_size=1, progress=False))
    print(f"   in process              {t0 / n_chunks * 1e6:8.1f} us per chunk")
    with ProcessPoolExecutor(2, mp_context=SPAWN) as ex:
        simulate(trivial, tiny[:4], executor=ex, chunk_size=1, progress=False)
        t2 = best_of(repeats, lambda: simulate(trivial, tiny, executor=ex, chunk_size=1,
                                               progress=False))
    print(f"   2 worker processes      {t2 / n_chunks * 1e6:8.1f} us per chunk")
    n_disk = n_chunks // 4
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        simulate(trivial, tiny[:n_disk], chunk_size=1, progress=False, workdir=tmp)
        td = time.perf_counter() - t0
    print(f"   in process, workdir     {td / n_disk * 1e6:8.1f} us per chunk "
          f"({n_disk} chunks, one fsync'ed .npz each)")
    print(f"\nload average after: {_load()}")


def _load():
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:   # not available on this platform
        return "n/a"


if __name__ == "__main__":
    main()
