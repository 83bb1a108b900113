"""snpse_np: neural posterior score estimation (NPSE) and its sequential form (TSNPSE).

SNPSEA, SNPSEB and SNPSEC (paper Sec. 3.2, App. C) are experimental: the paper found them worse
than TSNPSE (SNPSE-C: C2ST ≈ 1).

Sharrock, Simons, Liu, Beaumont, "Sequential Neural Score Estimation: Likelihood-Free
Inference with Conditional Score Based Diffusion Models", ICML 2024.

Importing the package imports numpy only; numba and cupy load when a backend needs them.
"""
__version__ = "0.4.1"

from .priors import BoxUniform, LogNormal, MultivariateNormal, Normal  # noqa: F401

# Bound eagerly, not lazily: the function shares its name with its submodule, and importing the
# submodule (``import snpse_np.simulate``, or any module doing ``from .simulate import ...``) binds
# the package attribute ``simulate`` to the MODULE, which would then shadow a lazy name for good
# (``sn.simulate(...)`` worked once, then raised "'module' object is not callable"). Importing it
# here first makes the function the last binding; later imports find the module in sys.modules
# and leave the attribute alone. simulate.py needs numpy and the standard library only.
from .simulate import simulate  # noqa: E402,F401

_LAZY = {
    "NPSE": ("npse", "NPSE"),
    "NLSE": ("nlse", "NLSE"),
    "ScorePosterior": ("posterior", "ScorePosterior"),
    "load": ("posterior", "load"),
    "TSNPSE": ("sequential", "TSNPSE"),
    "SNPSEA": ("snpse_a", "SNPSEA"),  # experimental
    "SNPSEB": ("snpse_b", "SNPSEB"),  # experimental
    "SNPSEC": ("snpse_c", "SNPSEC"),  # experimental
    "SIRPosterior": ("sir", "SIRPosterior"),  # experimental
    "c2st": ("metrics", "c2st"),
    "get_backend": ("backend", "get_backend"),
    "get_task": ("tasks", "get_task"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'snpse_np' has no attribute {name!r}")


__all__ = ["BoxUniform", "Normal", "LogNormal", "MultivariateNormal", "simulate", *_LAZY]
