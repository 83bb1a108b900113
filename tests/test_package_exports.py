"""Every name the package exports stays what it is after every submodule has been imported.

``sn.simulate`` once worked on the first call only: importing the submodule ``snpse_np.simulate``
rebound the package attribute to the module. Checked in a fresh process (an earlier test may
have imported anything), calling each exported function twice.
"""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import importlib, pkgutil, types, warnings
    import numpy as np
    import snpse_np as sn

    for info in pkgutil.walk_packages(sn.__path__, "snpse_np."):
        try:
            importlib.import_module(info.name)
        except ImportError:          # the GPU backend without CuPy
            pass

    for name in sn.__all__:
        first, second = getattr(sn, name), getattr(sn, name)
        assert not isinstance(first, types.ModuleType), (name, first)
        assert first is second, name

    theta = np.random.default_rng(0).normal(size=(20, 2))
    for _ in range(2):
        x = sn.simulate(lambda t, seed=None: t + 1.0, theta, seed=0, progress=False)
        assert np.array_equal(x, theta + 1.0)
        assert sn.get_backend("numpy").name == "numpy"
        assert sn.get_task("two_moons").dim_theta == 2
        prior = sn.BoxUniform(-np.ones(2), np.ones(2))
        assert sn.NPSE(prior, backend="numpy", show_progress=False).prior is prior
        assert sn.NLSE(prior, backend="numpy", show_progress=False).prior_score == "analytic"
        for cls in (sn.ScorePosterior, sn.TSNPSE, sn.SNPSEA, sn.SNPSEB, sn.SNPSEC, sn.SIRPosterior):
            assert isinstance(cls, type)
        assert callable(sn.load) and callable(sn.c2st)
    print("ok")
""")


def test_exported_names_survive_importing_every_submodule():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
