"""The sbibm file loader: search order, every file of every task, errors, the wheel path."""
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from snpse_np.tasks import TASK_NAMES, DataNotFoundError, get_task, references

DIMS = {  # name -> (dim_theta, dim_x)
    "gaussian_linear": (10, 10), "gaussian_linear_uniform": (10, 10), "slcp": (5, 8),
    "slcp_distractors": (5, 100), "bernoulli_glm": (10, 10), "bernoulli_glm_raw": (10, 100),
    "gaussian_mixture": (2, 2), "two_moons": (2, 2), "sir": (2, 10), "lotka_volterra": (4, 20),
}


def _data_source():
    try:
        return references.find_source(download=False)
    except DataNotFoundError:
        return None


SOURCE = _data_source()
# Read before any fixture changes it: a run with SNPSE_NO_DOWNLOAD=1 skips the download test.
_OUTER_DOWNLOAD_ALLOWED = references._download_allowed(None)
needs_data = pytest.mark.skipif(SOURCE is None, reason="sbibm task files not reachable")


@pytest.fixture
def no_search(monkeypatch, tmp_path):
    """Point every search location at empty temp folders and disable the download."""
    monkeypatch.delenv(references.ENV_DATA_DIR, raising=False)
    monkeypatch.setenv(references.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.setenv(references.ENV_NO_DOWNLOAD, "1")
    monkeypatch.setattr(references, "_REPO_ROOT", tmp_path / "repo")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    references._read_cached.cache_clear()
    yield tmp_path
    references._read_cached.cache_clear()


@needs_data
def test_reads_all_tasks_and_observations_fast():
    references._read_cached.cache_clear()
    start = time.perf_counter()
    loaded = {name: [(get_task(name).observation(k), get_task(name).true_parameters(k),
                      get_task(name).reference_samples(k)) for k in range(1, 11)]
              for name in TASK_NAMES}
    elapsed = time.perf_counter() - start
    # about 3 s here (bz2 decompression dominates); generous for a loaded CI machine
    assert elapsed < 15.0, f"reading all sbibm files took {elapsed:.1f} s"
    for name, rows in loaded.items():
        d, p = DIMS[name]
        for x_o, theta_o, ref in rows:
            assert x_o.shape == (p,) and theta_o.shape == (d,)
            assert ref.shape == (10_000, d) and ref.dtype == np.float64
            assert np.all(np.isfinite(ref))
            assert np.unique(ref, axis=0).shape[0] == 10_000      # sbibm asserts unique rows


@needs_data
def test_returned_arrays_are_private_copies():
    task = get_task("two_moons")
    a = task.reference_samples(1)
    a[:] = 0.0
    assert np.any(task.reference_samples(1) != 0.0)


@needs_data
def test_observation_seeds():
    assert get_task("two_moons").observation_seed(1) == 1000011
    assert get_task("gaussian_linear").observation_seed(10) == 1000009


@needs_data
def test_explicit_dir_and_env_var(no_search, monkeypatch):
    kind, root = SOURCE
    if kind != "dir":
        pytest.skip("the data found is a wheel, not a directory")
    sbibm_root = Path(root).parent                     # the folder holding tasks/
    want = np.loadtxt(Path(root) / "slcp/files/num_observation_3/observation.csv",
                      delimiter=",", skiprows=1)
    # explicit argument: the sbibm root, or the tasks/ folder itself
    for d in (sbibm_root, Path(root)):
        np.testing.assert_array_equal(get_task("slcp", data_dir=d).observation(3), want)
    # environment variable
    monkeypatch.setenv(references.ENV_DATA_DIR, str(sbibm_root))
    np.testing.assert_array_equal(get_task("slcp").observation(3), want)
    # relative to the working directory: <cwd>/../shared/sbibm
    monkeypatch.delenv(references.ENV_DATA_DIR)
    shared = no_search / "shared"
    shared.mkdir()
    os.symlink(sbibm_root, shared / "sbibm")
    np.testing.assert_array_equal(get_task("slcp").observation(3), want)


def test_clear_error_when_nothing_is_found(no_search):
    with pytest.raises(DataNotFoundError) as info:
        get_task("two_moons").observation(1)
    msg = str(info.value)
    assert references.ENV_DATA_DIR in msg and "download" in msg
    assert str(no_search / "work" / "shared" / "sbibm") in msg       # names the places tried
    assert str(no_search / "cache") in msg


def test_explicit_empty_dir_is_an_error(no_search, monkeypatch):
    empty = no_search / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match="data_dir"):
        get_task("two_moons", data_dir=empty).observation(1)
    monkeypatch.setenv(references.ENV_DATA_DIR, str(empty))
    with pytest.raises(DataNotFoundError, match=references.ENV_DATA_DIR):
        get_task("two_moons").observation(1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="folder"):
        references.read_array("three_moons", 1, "observation.csv")
    for bad in (0, 11, 2.0, None):
        with pytest.raises(ValueError):
            references.check_observation_number(bad)


@needs_data
def test_reads_a_wheel(no_search):
    """A (small, hand-made) wheel in the cache is found and read with zipfile."""
    kind, root = SOURCE
    if kind != "dir":
        pytest.skip("the data found is a wheel already")
    cache = no_search / "cache"
    cache.mkdir()
    wheel = cache / f"sbibm-{references.SBIBM_VERSION}-py2.py3-none-any.whl"
    folder = Path(root) / "two_moons" / "files" / "num_observation_2"
    with zipfile.ZipFile(wheel, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f"sbibm/tasks/two_moons/files/num_observation_2/{f.name}")
    assert references.find_source() == ("wheel", str(wheel))
    task = get_task("two_moons")
    np.testing.assert_array_equal(task.reference_samples(2),
                                  get_task("two_moons", data_dir=root).reference_samples(2))
    with pytest.raises(DataNotFoundError, match="missing"):
        task.observation(3)


def test_downloads_the_wheel_once(no_search, monkeypatch):
    """The real thing: pip download of sbibm 1.1.0 (about 19 MB) into an empty cache."""
    if not _OUTER_DOWNLOAD_ALLOWED:
        pytest.skip(f"{references.ENV_NO_DOWNLOAD} is set")
    monkeypatch.delenv(references.ENV_NO_DOWNLOAD)
    try:
        kind, path = references.find_source()
    except DataNotFoundError as err:
        pytest.skip(f"no network / PyPI: {err}")
    assert kind == "wheel" and Path(path).parent == no_search / "cache"
    x = get_task("lotka_volterra").observation(1)
    assert x.shape == (20,)
    if SOURCE is not None:
        np.testing.assert_array_equal(
            x, get_task("lotka_volterra", data_dir=SOURCE[1]).observation(1))
    # second call: found in the cache, no second download
    assert references.find_source() == (kind, path)
