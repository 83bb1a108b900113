"""Reading the sbibm 1.1.0 task files: observations, true parameters, reference posterior samples.

sbibm (Lueckmann et al., "Benchmarking Simulation-Based Inference", AISTATS 2021) ships, for
every task and every observation ``k = 1..10``, a folder

    <root>/tasks/<folder>/files/num_observation_<k>/
        observation.csv                        1 x dim_x    (header data_1..data_D)
        true_parameters.csv                    1 x dim_theta
        reference_posterior_samples.csv.bz2    10000 x dim_theta (bz2-compressed csv)
        observation_seed.csv                   the seed that made the observation
        observation_raw.csv                    bernoulli_glm only (1 x 100 spikes)
        observation_distractors.csv            slcp only (1 x 100)

Every csv has one header line, then comma-separated float32 text. The same tree sits inside the
sbibm wheel on PyPI under ``sbibm/tasks/<folder>/files/...``.

Where the files are looked for, in this order (the first hit wins):

1. an explicit ``data_dir`` argument (a directory, or a path to the sbibm wheel);
2. the environment variable ``SNPSE_SBIBM_DIR`` (same);
3. ``shared/sbibm`` or ``../shared/sbibm`` relative to the current working directory, then
   relative to the repository root (the folder above the ``snpse_np`` package);
4. the sbibm wheel in the user cache (``$SNPSE_CACHE_DIR`` or ``~/.cache/snpse_np``). When it
   is missing it is fetched once with ``python -m pip download --no-deps sbibm==1.1.0``
   (only downloaded and read with ``zipfile``, never installed), unless ``download=False`` or
   ``SNPSE_NO_DOWNLOAD=1``.

An explicit ``data_dir`` or ``SNPSE_SBIBM_DIR`` that holds no task files is an error (not a
silent fall-through), so a typo never reads data from somewhere else. When nothing is found a
:class:`DataNotFoundError` names every place tried and how to fix it.

A "directory" can be the sbibm root (holding ``tasks/``), the ``tasks/`` folder itself, or a
folder holding ``sbibm/tasks/`` (an unzipped wheel).
"""
import bz2
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

SBIBM_VERSION = "1.1.0"
ENV_DATA_DIR = "SNPSE_SBIBM_DIR"
ENV_CACHE_DIR = "SNPSE_CACHE_DIR"
ENV_NO_DOWNLOAD = "SNPSE_NO_DOWNLOAD"

NUM_OBSERVATIONS = 10

# Task folders in the sbibm tree (the variants bernoulli_glm_raw and slcp_distractors share
# their base task's folder). Used to recognise a data directory.
TASK_FOLDERS = (
    "gaussian_linear", "gaussian_linear_uniform", "slcp", "bernoulli_glm",
    "gaussian_mixture", "two_moons", "sir", "lotka_volterra",
)

# snpse_np/tasks/references.py -> repository root is two folders above the package folder.
_REPO_ROOT = Path(__file__).resolve().parents[2]

_log = logging.getLogger(__name__)


class DataNotFoundError(FileNotFoundError):
    """No sbibm task files could be found (or a requested file is missing)."""


# ---------------------------------------------------------------------------------------------
# Locating the data


def _tasks_root(path):
    """The folder holding the task folders under ``path``, or None if ``path`` has none."""
    path = Path(path)
    for cand in (path / "tasks", path / "sbibm" / "tasks", path):
        if cand.is_dir() and any((cand / name / "files").is_dir() for name in TASK_FOLDERS):
            return cand
    return None


def _source_from_path(path):
    """A data source ``("dir", tasks_root)`` or ``("wheel", file)`` for ``path``, or None."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".whl":
        return ("wheel", str(path.resolve()))
    root = _tasks_root(path)
    return ("dir", str(root.resolve())) if root is not None else None


def _relative_candidates():
    """``shared/sbibm`` and ``../shared/sbibm`` next to the cwd and the repository root."""
    out = []
    for base in (Path.cwd(), _REPO_ROOT):
        for rel in ("shared/sbibm", "../shared/sbibm"):
            cand = (base / rel).resolve()
            if cand not in out:
                out.append(cand)
    return out


def cache_dir():
    """The user cache folder for the sbibm wheel: ``$SNPSE_CACHE_DIR`` or ``~/.cache/snpse_np``."""
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "snpse_np"


def _cached_wheel(folder):
    hits = sorted(Path(folder).glob(f"sbibm-{SBIBM_VERSION}-*.whl"))
    return hits[0] if hits else None


def _download_allowed(download):
    if download is not None:
        return bool(download)
    return os.environ.get(ENV_NO_DOWNLOAD, "").strip().lower() in ("", "0", "false", "no")


def _download_wheel(folder):
    """Fetch the sbibm wheel into ``folder`` with pip (no install, no dependencies).

    Downloads into a temporary folder first and then renames, so a concurrent reader never
    sees a half-written wheel. Returns the wheel path; raises RuntimeError on failure.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _log.warning("snpse_np: downloading the sbibm %s wheel (about 19 MB, once) into %s",
                 SBIBM_VERSION, folder)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", f"sbibm=={SBIBM_VERSION}", "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RuntimeError(f"`{' '.join(cmd)}` failed: {err}") from err
        wheel = _cached_wheel(tmp)
        if proc.returncode != 0 or wheel is None:
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
            raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): "
                               + " | ".join(tail))
        target = folder / wheel.name
        if not target.exists():
            shutil.move(str(wheel), str(target))
    return target


def find_source(data_dir=None, download=None):
    """Locate the sbibm files; returns ``(kind, path)`` with kind ``"dir"`` or ``"wheel"``.

    ``data_dir``: a directory (or the sbibm wheel) to use, skipping the search.
    ``download``: allow fetching the wheel into the cache; None reads ``SNPSE_NO_DOWNLOAD``.
    Raises :class:`DataNotFoundError` naming every place tried.
    """
    if data_dir is not None:
        src = _source_from_path(data_dir)
        if src is None:
            raise DataNotFoundError(
                f"data_dir={str(data_dir)!r} holds no sbibm task files (expected "
                f"<data_dir>/tasks/<task>/files/num_observation_<k>/..., or the sbibm wheel)")
        return src
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        src = _source_from_path(env)
        if src is None:
            raise DataNotFoundError(
                f"{ENV_DATA_DIR}={env!r} holds no sbibm task files (expected "
                f"<dir>/tasks/<task>/files/num_observation_<k>/..., or the sbibm wheel)")
        return src

    tried = []
    for cand in _relative_candidates():
        src = _source_from_path(cand)
        if src is not None:
            return src
        tried.append(str(cand))

    cache = cache_dir()
    wheel = _cached_wheel(cache) if cache.is_dir() else None
    if wheel is not None:
        return ("wheel", str(wheel))
    tried.append(f"{cache}/sbibm-{SBIBM_VERSION}-*.whl")

    if _download_allowed(download):
        try:
            return ("wheel", str(_download_wheel(cache)))
        except (RuntimeError, OSError) as err:
            why = f"the download failed: {err}"
    else:
        why = (f"the download is disabled ({ENV_NO_DOWNLOAD} is set or download=False)")
    raise DataNotFoundError(
        "sbibm task files not found. Tried:\n  " + "\n  ".join(tried) + f"\nand {why}.\n"
        f"Fix: set {ENV_DATA_DIR} to a folder holding sbibm's tasks/<task>/files/... tree "
        f"(or pass data_dir=...), or allow the one-time download of the sbibm {SBIBM_VERSION} "
        f"wheel into {cache} (unset {ENV_NO_DOWNLOAD}; needs network access to PyPI), "
        f"or place the wheel there yourself (pip download --no-deps sbibm=={SBIBM_VERSION} "
        f"-d {cache}).")


# ---------------------------------------------------------------------------------------------
# Reading files


def _parse_csv(raw):
    """Bytes of a csv with one header line -> (rows, cols) float64 array."""
    text = raw.decode("utf-8")
    arr = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    return arr


@lru_cache(maxsize=32)
def _read_cached(kind, path, relpath):
    """Pure file read, cached: the parsed array, read-only (callers get copies)."""
    if kind == "dir":
        file = Path(path) / relpath
        if not file.is_file():
            raise DataNotFoundError(f"missing sbibm file {file}")
        raw = file.read_bytes()
    else:
        member = f"sbibm/tasks/{relpath}"
        with zipfile.ZipFile(path) as zf:
            try:
                raw = zf.read(member)
            except KeyError:
                raise DataNotFoundError(f"missing {member} in the wheel {path}") from None
    if relpath.endswith(".bz2"):
        raw = bz2.decompress(raw)
    arr = _parse_csv(raw)
    arr.flags.writeable = False
    return arr


def check_observation_number(k):
    """Validate ``k`` in 1..10 and return it as int."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"observation number must be an int in 1..{NUM_OBSERVATIONS}, got {k!r}")
    if not 1 <= int(k) <= NUM_OBSERVATIONS:
        raise ValueError(f"observation number must be in 1..{NUM_OBSERVATIONS}, got {k}")
    return int(k)


def read_array(folder, k, filename, data_dir=None, download=None):
    """``tasks/<folder>/files/num_observation_<k>/<filename>`` as a (rows, cols) float64 array."""
    if folder not in TASK_FOLDERS:
        raise ValueError(f"unknown sbibm task folder {folder!r}; valid: {', '.join(TASK_FOLDERS)}")
    k = check_observation_number(k)
    kind, path = find_source(data_dir, download)
    relpath = f"{folder}/files/num_observation_{k}/{filename}"
    return np.array(_read_cached(kind, path, relpath))


def load_observation(folder, k, filename="observation.csv", data_dir=None, download=None):
    """The observation x_o, shape (dim_x,) float64."""
    return read_array(folder, k, filename, data_dir, download).reshape(-1)


def load_true_parameters(folder, k, data_dir=None, download=None):
    """The parameters theta* that generated observation k, shape (dim_theta,) float64."""
    return read_array(folder, k, "true_parameters.csv", data_dir, download).reshape(-1)


def load_reference_samples(folder, k, data_dir=None, download=None):
    """The 10,000 reference posterior samples for observation k, shape (10000, dim_theta)."""
    return read_array(folder, k, "reference_posterior_samples.csv.bz2", data_dir, download)


def load_observation_seed(folder, k, data_dir=None, download=None):
    """The seed sbibm used for observation k (int)."""
    return int(read_array(folder, k, "observation_seed.csv", data_dir, download)[0, 0])
