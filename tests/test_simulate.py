"""snpse_np.simulate: seeds, executors, retries, streaming to a workdir, input checks.

The simulators are top-level functions (with functools.partial for their options) so that
process pools can pickle them by reference. Cross-process call counts go through files.
"""
import functools
import multiprocessing
import os
import re
import tempfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from snpse_np.simulate import SimulationResult, simulate

MARK = 999.0   # a theta row whose first entry is MARK makes the failing simulators fail


# ----------------------------------------------------------------------------- simulators

def noisy(theta, seed):
    """(m, 2) -> (m, 3): a linear map plus seeded noise; x row i depends on theta row i only."""
    rng = np.random.default_rng(seed)
    mean = np.column_stack([theta[:, 0], theta[:, 1], theta.sum(axis=1)])
    return mean + 0.1 * rng.standard_normal(mean.shape)


def seedless(theta):
    return np.column_stack([theta[:, 0] * 2.0, theta[:, 1] - 1.0])


def _log_call(log_dir, theta):
    """Record one call in ``log_dir`` (a file per call: safe across processes)."""
    if log_dir is not None:
        fd, _ = tempfile.mkstemp(dir=log_dir, prefix="call_")
        os.close(fd)


def counted(theta, seed, log_dir=None):
    _log_call(log_dir, theta)
    return noisy(theta, seed)


def fails_on_mark(theta, seed):
    if np.any(theta[:, 0] == MARK):
        raise RuntimeError("marked row")
    return noisy(theta, seed)


def fails_once(theta, seed, flag_dir):
    """Fails the first time it sees a block (flag file per first row), then works."""
    flag = os.path.join(flag_dir, f"seen_{theta[0, 0]:.6f}")
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return noisy(theta, seed)
    raise OSError("transient failure")


def interrupts_on_mark(theta, seed):
    if np.any(theta[:, 0] == MARK):
        raise KeyboardInterrupt   # stands for a killed run
    return noisy(theta, seed)


def with_nan(theta, seed):
    x = noisy(theta, seed)
    x[theta[:, 0] < 0.0, 1] = np.nan
    x[theta[:, 0] > 5.0, 0] = np.inf
    return x


def wrong_rows(theta):
    return np.zeros((theta.shape[0] + 1, 2))


def always_fails(theta):
    raise ValueError("nothing works")


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def pool():
    # spawn, not fork: if an earlier test started numba's OpenMP threads in this process, a
    # forked worker would be killed ("fork() called from a process already using GNU OpenMP").
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        yield ex


@pytest.fixture
def theta():
    return np.random.default_rng(0).uniform(0.0, 1.0, size=(500, 2))


def calls(log_dir):
    return len([f for f in os.listdir(log_dir) if f.startswith("call_")])


# ----------------------------------------------------------------------------- seeds

def test_same_seed_same_x_in_process_on_a_pool_and_for_any_chunk_size(theta, pool):
    x_ref = simulate(noisy, theta, seed=3, progress=False)
    assert x_ref.shape == (500, 3) and x_ref.dtype == np.float64
    assert np.abs(x_ref[:, :2] - theta).max() < 1.0     # row i was simulated at theta[i]
    for kwargs in (dict(chunk_size=100), dict(chunk_size=200),
                   dict(executor=pool, chunk_size=100), dict(executor=pool, chunk_size=300),
                   dict(executor=pool)):
        x = simulate(noisy, theta, seed=3, progress=False, **kwargs)
        np.testing.assert_array_equal(x, x_ref, err_msg=str(kwargs))
    assert not np.array_equal(simulate(noisy, theta, seed=4, progress=False), x_ref)


def test_chunk_size_is_rounded_up_to_whole_seed_blocks(theta):
    x, rep = simulate(noisy, theta, seed=1, chunk_size=250, progress=False, return_report=True)
    assert isinstance(rep, SimulationResult)
    assert (rep.chunk_size, rep.n_chunks, rep.seed_block) == (300, 2, 100)
    x1, rep1 = simulate(noisy, theta, seed=1, chunk_size=7, seed_block=10, progress=False,
                        return_report=True)
    assert (rep1.chunk_size, rep1.n_chunks) == (10, 50)
    np.testing.assert_array_equal(
        x1, simulate(noisy, theta, seed=1, chunk_size=30, seed_block=10, progress=False))
    # the seed block size is part of the rule: another one gives other noise
    assert not np.array_equal(x1, x)


def test_seed_none_is_fresh_and_a_generator_is_accepted(theta):
    a = simulate(noisy, theta, progress=False)
    b = simulate(noisy, theta, progress=False)
    assert not np.array_equal(a, b)
    c = simulate(noisy, theta, seed=np.random.default_rng(5), progress=False)
    d = simulate(noisy, theta, seed=np.random.default_rng(5), progress=False)
    np.testing.assert_array_equal(c, d)


def test_seedless_simulator_is_called_once_per_chunk_without_rounding(theta, tmp_path):
    log = functools.partial(_seedless_logged, log_dir=str(tmp_path))
    x, rep = simulate(log, theta, chunk_size=125, progress=False, return_report=True)
    np.testing.assert_allclose(x, seedless(theta))
    assert (rep.chunk_size, rep.n_chunks, rep.seed_block) == (125, 4, None)
    assert calls(tmp_path) == 4


def _seedless_logged(theta, log_dir):
    _log_call(log_dir, theta)
    return seedless(theta)


# ----------------------------------------------------------------------------- failures

@pytest.mark.parametrize("use_pool", [False, True])
def test_a_raising_row_is_one_failed_row(theta, pool, use_pool):
    """Chunks that keep raising are retried, then their rows are isolated: only the marked rows
    fail (NaN, counted), the rest of their chunks is simulated, other chunks are untouched."""
    theta = theta.copy()
    theta[[150, 420], 0] = MARK                       # chunks 1 and 4 of 100 rows
    with pytest.warns(RuntimeWarning, match=r"2 chunks with failed rows \(2 rows NaN\)"):
        x, rep = simulate(fails_on_mark, theta, executor=pool if use_pool else None,
                          chunk_size=100, seed=0, progress=False, max_retries=2,
                          return_report=True)
    assert (rep.n_chunks, rep.n_failed_chunks, rep.n_failed_rows) == (5, 2, 2)
    assert rep.n_retries == 4 and not rep.ok and rep.n_nonfinite_rows == 0
    # on a pool the chunks finish in any order: either marked row may be the first error
    assert re.search(r"row (150|420): RuntimeError: marked row", rep.first_error)
    bad = np.zeros(500, bool)
    bad[[150, 420]] = True
    assert np.isnan(x[bad]).all() and np.isfinite(x[~bad]).all()
    assert np.abs(x[~bad, :2] - theta[~bad]).max() < 1.0   # row i still simulated at theta[i]
    ok = simulate(noisy, theta, chunk_size=100, seed=0, progress=False)
    np.testing.assert_array_equal(x[:100], ok[:100])
    np.testing.assert_array_equal(x[200:400], ok[200:400])
    # the isolation's seeds derive from the block seed: the same call gives the same x
    with pytest.warns(RuntimeWarning):
        again = simulate(fails_on_mark, theta, chunk_size=100, seed=0, progress=False)
    np.testing.assert_array_equal(again, x)


def test_one_percent_raising_rows_in_one_chunk_lose_only_those_rows(theta):
    """In process without a workdir everything is one chunk: 1% raising rows once made that
    chunk, hence the whole call, fail (RuntimeError: all 1 chunks failed)."""
    theta = theta.copy()
    marked = np.random.default_rng(1).choice(500, 5, replace=False)
    theta[marked, 0] = MARK
    for sim in (fails_on_mark, _seedless_fails_on_mark):
        with pytest.warns(RuntimeWarning, match=r"\(5 rows NaN\)"):
            x, rep = simulate(sim, theta, seed=0, progress=False, return_report=True)
        assert rep.n_chunks == 1 and rep.n_failed_rows == 5
        assert np.array_equal(np.flatnonzero(np.isnan(x).any(axis=1)), np.sort(marked))


def _seedless_fails_on_mark(theta):
    if np.any(theta[:, 0] == MARK):
        raise RuntimeError("marked row")
    return seedless(theta)


def _seedless_always_fails_logged(theta, log_dir):
    _log_call(log_dir, theta)
    raise ValueError("nothing works")


def test_a_simulator_that_raises_everywhere_is_not_called_for_every_row(theta, tmp_path):
    sim = functools.partial(_seedless_always_fails_logged, log_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="every row raised"):
        simulate(sim, theta, progress=False, max_retries=0)
    # bisection down to ISOLATION_GIVE_UP single rows, then the rest is given up unrun
    from snpse_np.simulate import ISOLATION_GIVE_UP
    assert calls(tmp_path) < 4 * ISOLATION_GIVE_UP + 10 < 999


def complex_output(theta):
    return theta.astype(complex) * 1j


def test_complex_output_is_an_error_not_a_cast(theta):
    with pytest.raises(ValueError, match="complex"):
        simulate(complex_output, theta, progress=False)


def test_failures_are_summarised_on_the_progress_line(theta, capsys):
    theta = theta.copy()
    theta[0, 0] = MARK
    simulate(fails_on_mark, theta, chunk_size=100, seed=0, max_retries=0)
    err = capsys.readouterr().err
    assert "5/5 chunks" in err and "1 failed" in err
    assert "first error: chunk 0 (rows 0:100), row 0: RuntimeError: marked row" in err


def test_transient_failures_are_retried_until_they_succeed(theta, pool, tmp_path):
    sim = functools.partial(fails_once, flag_dir=str(tmp_path))
    x, rep = simulate(sim, theta, executor=pool, chunk_size=100, seed=2, progress=False,
                      max_retries=1, return_report=True)
    assert rep.n_failed_chunks == 0 and rep.n_retries == 5 and rep.first_error is None
    np.testing.assert_array_equal(x, simulate(noisy, theta, seed=2, progress=False))


def test_when_every_chunk_fails_it_raises_with_the_first_error(theta, pool):
    for executor in (None, pool):
        with pytest.raises(RuntimeError, match="all 5 chunks failed.*nothing works"):
            simulate(always_fails, theta, executor=executor, chunk_size=100, progress=False,
                     max_retries=1)


def test_nonfinite_rows_are_counted(theta):
    theta = theta.copy()
    theta[:3, 0] = -1.0
    theta[10:12, 0] = 6.0
    x, rep = simulate(with_nan, theta, seed=0, progress=False, return_report=True)
    assert rep.n_nonfinite_rows == 5 and rep.n_failed_rows == 0 and not rep.ok
    assert np.isfinite(x[12:]).all()


# ----------------------------------------------------------------------------- workdir

def test_deleted_chunks_are_the_only_ones_simulated_again(theta, tmp_path):
    work, log = tmp_path / "run", tmp_path / "log"
    log.mkdir()
    sim = functools.partial(counted, log_dir=str(log))
    x = simulate(sim, theta, chunk_size=100, seed=7, workdir=work, progress=False)
    assert sorted(os.listdir(work)) == [f"chunk_{i:06d}.npz" for i in range(5)] + ["manifest.json"]
    assert calls(log) == 5                          # one call per seed block
    with np.load(work / "chunk_000002.npz") as z:
        np.testing.assert_array_equal(z["theta"], theta[200:300])
        np.testing.assert_array_equal(z["x"], x[200:300])
    os.remove(work / "chunk_000001.npz")
    os.remove(work / "chunk_000003.npz")
    x2, rep = simulate(sim, theta, seed=7, workdir=work, progress=False, return_report=True)
    assert calls(log) == 7 and rep.n_loaded_chunks == 3     # chunk_size came from the workdir
    np.testing.assert_array_equal(x2, x)


def test_a_killed_run_keeps_its_chunks_and_resumes(theta, tmp_path):
    marked = theta.copy()
    marked[350, 0] = MARK
    work = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        simulate(interrupts_on_mark, marked, chunk_size=100, seed=1, workdir=work, progress=False)
    assert sorted(f for f in os.listdir(work) if f.startswith("chunk")) == [
        f"chunk_{i:06d}.npz" for i in range(3)]
    assert not [f for f in os.listdir(work) if f.startswith(".tmp_")]
    log = tmp_path / "log"
    log.mkdir()
    x, rep = simulate(functools.partial(counted, log_dir=str(log)), marked, chunk_size=100,
                      seed=1, workdir=work, progress=False, return_report=True)
    assert calls(log) == 2 and rep.n_loaded_chunks == 3
    np.testing.assert_array_equal(x, simulate(noisy, marked, chunk_size=100, seed=1, progress=False))


def test_resume_with_seed_none_continues_the_stored_stream(theta, tmp_path, pool):
    x = simulate(noisy, theta, chunk_size=100, executor=pool, workdir=tmp_path, progress=False)
    for name in ("chunk_000000.npz", "chunk_000004.npz"):
        os.remove(tmp_path / name)
    np.testing.assert_array_equal(simulate(noisy, theta, workdir=tmp_path, progress=False), x)


def test_a_workdir_of_another_run_is_refused(theta, tmp_path):
    simulate(noisy, theta, chunk_size=100, seed=1, workdir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="belongs to another run: its theta"):
        simulate(noisy, theta + 1.0, chunk_size=100, seed=1, workdir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="belongs to another run: its chunk_size"):
        simulate(noisy, theta, chunk_size=200, seed=1, workdir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="belongs to another run: its base_seed"):
        simulate(noisy, theta, chunk_size=100, seed=2, workdir=tmp_path, progress=False)
    # a chunk file whose theta rows differ from this theta's (e.g. copied from elsewhere)
    other = tmp_path / "other"
    simulate(noisy, theta[::-1], chunk_size=100, seed=1, workdir=other, progress=False)
    os.replace(other / "chunk_000001.npz", tmp_path / "chunk_000001.npz")
    with pytest.raises(ValueError, match="chunk_000001.npz holds other theta rows"):
        simulate(noisy, theta, chunk_size=100, seed=1, workdir=tmp_path, progress=False)


# ----------------------------------------------------------------------------- checks

def test_input_checks(theta):
    with pytest.raises(ValueError, match="2-D"):
        simulate(noisy, theta[:, 0], progress=False)
    with pytest.raises(ValueError, match="at least one row"):
        simulate(noisy, theta[:0], progress=False)
    with pytest.raises(ValueError, match=r"\(m, p\) array for m = 500.*\(501, 2\)"):
        simulate(wrong_rows, theta, progress=False)
    with pytest.raises(ValueError, match="chunk_size"):
        simulate(noisy, theta, chunk_size=0, progress=False)
    with pytest.raises(ValueError, match="max_retries"):
        simulate(noisy, theta, max_retries=-1, progress=False)
    with pytest.raises(ValueError, match="seed"):
        simulate(noisy, theta, seed=1.5, progress=False)
    with pytest.raises(ValueError, match="executor"):
        simulate(noisy, theta, executor=object(), progress=False)


def test_wrong_shape_from_a_worker_is_raised_not_retried(theta, pool):
    with pytest.raises(ValueError, match=r"\(m, p\) array"):
        simulate(wrong_rows, theta, executor=pool, chunk_size=100, progress=False)


def test_progress_line_goes_to_stderr_only_when_asked(theta, capsys):
    simulate(noisy, theta, chunk_size=100, seed=0)
    out = capsys.readouterr()
    assert out.out == "" and "5/5 chunks" in out.err and "rows/s" in out.err
    simulate(noisy, theta, chunk_size=100, seed=0, progress=False)
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- Dask

def test_dask_local_cluster_gives_the_same_x(theta):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        ex = client.get_executor()
        x = simulate(noisy, theta, executor=ex, chunk_size=100, seed=3, progress=False)
        np.testing.assert_array_equal(x, simulate(noisy, theta, seed=3, progress=False))
        # identical theta rows in every chunk and no seed: Dask must not merge the chunks
        same = np.ones((40, 2))
        y = simulate(_seedless_random, same, executor=ex, chunk_size=10, progress=False)
        assert len(np.unique(y[:, 0])) == 40


def _seedless_random(theta):
    return np.random.default_rng().standard_normal((theta.shape[0], 1))
