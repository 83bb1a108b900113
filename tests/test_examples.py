"""The examples keep working: each runs at its ``--tiny`` size in a fresh process and writes its
figures (a few seconds each; the full sizes are for people, under two minutes on one core).
Also: importing the kernel lab's common module changes no global setting of Numba."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG = b"\x89PNG\r\n\x1a\n"
EXAMPLES = {
    "quickstart_2d.py": ["quickstart_2d_pairplot.png", "quickstart_2d_score.png"],
    "sequential.py": ["sequential.png"],
    "log_density.py": ["log_density.png"],
    "lab_variant.py": ["lab_variant.png"],
}


def _env():
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return env


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs_tiny_and_writes_its_figures(script, tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), "--tiny", "--out", str(tmp_path)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for name in EXAMPLES[script]:
        path = tmp_path / name
        assert path.is_file(), f"{script} did not write {name}:\n{proc.stdout[-2000:]}"
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000, name
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp_")], "a temporary file was left behind"
    if script == "lab_variant.py":  # the lab validated the new variant and caught the broken one
        assert "checks passed" in proc.stdout and "the broken variant is caught" in proc.stdout


def test_importing_the_lab_changes_no_numba_setting():
    """kernels/common.py used to set numba.config.THREADING_LAYER at import (for the whole pytest
    process); now only the lab's entry points do (``use_lab_threading_layer``)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import numba; before = numba.config.THREADING_LAYER; "
            "import kernels.common, kernels.adam; assert numba.config.THREADING_LAYER == before, "
            "numba.config.THREADING_LAYER; kernels.common.use_lab_threading_layer(); "
            "print(before, numba.config.THREADING_LAYER)")
    env = _env()
    env.pop("NUMBA_THREADING_LAYER", None)
    proc = subprocess.run([sys.executable, "-c", code, ROOT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["default", "workqueue"]


def _resolve(name):
    """True when ``name`` (as cited in docs/walkthrough.md) exists: a file of the repository, a
    lab variant, or a dotted name in snpse_np (``ops.x`` is the op x of backends/numpy_ref)."""
    import importlib
    import re
    name = re.sub(r"\(.*\)$", "", name)
    if "/" in name or name.endswith((".py", ".md")):
        return os.path.exists(os.path.join(ROOT, name))
    if re.fullmatch(r"(numpy|numba|cuda)_v\d\w*", name):
        lab = os.path.join(ROOT, "kernels")
        return any(f"``{name}``" in open(os.path.join(lab, f)).read() for f in os.listdir(lab) if f.endswith(".py"))
    head, *rest = name.split(".")
    modules = {"ops": "snpse_np.backends.numpy_ref"}
    for mod in ("reference", "nn", "npse", "sde", "schedule", "sampling", "score", "optim", "truncation",
                "sequential", "standardize", "time_sampling", "posterior"):
        modules[mod] = f"snpse_np.{mod}"
    if head in modules:
        obj = importlib.import_module(modules[head])
    else:  # a class cited by its name alone: look for it in the modules above
        found = [getattr(importlib.import_module(m), head) for m in modules.values()
                 if hasattr(importlib.import_module(m), head)]
        if not found:
            return False
        obj = found[0]
    for part in rest:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def test_every_name_the_walkthrough_cites_exists():
    """Files, lab variants and snpse_np names in `backticks` (those with a dot, a slash, or a
    class-like capital): a renamed function must be renamed in the walkthrough too."""
    import re
    text = open(os.path.join(ROOT, "docs", "walkthrough.md")).read()
    cited = set(re.findall(r"`([^`\s]+)`", text))
    checked = [c for c in cited if ("." in c or "/" in c or re.fullmatch(r"[A-Z]\w+|(numpy|numba|cuda)_v\d\w*", c))
               and not re.search(r"[=\"']", c)]
    assert len(checked) > 60
    missing = sorted(c for c in checked if not _resolve(c))
    assert not missing, missing
