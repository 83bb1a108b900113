"""The ten sbibm benchmark tasks (sbibm 1.1.0, Lueckmann et al., AISTATS 2021), in numpy/numba.

    from snpse_np.tasks import get_task, TASK_NAMES
    task = get_task("two_moons")
    theta = task.prior.sample(1000, seed=0)          # (1000, dim_theta)
    x = task.simulate(theta, seed=1)                 # (1000, dim_x) float64
    x_o = task.observation(1)                        # (dim_x,)
    ref = task.reference_samples(1)                  # (10000, dim_theta)

Every task has ``name``, ``dim_theta``, ``dim_x``, ``prior``, ``simulate(theta, seed)``,
``observation(k)``, ``true_parameters(k)``, ``reference_samples(k)``, ``ve_sigma_limits`` and
``log_likelihood(theta, k)`` (NotImplementedError for SIR, Lotka-Volterra and
slcp_distractors). SIR and Lotka-Volterra also have ``trajectory(theta, t_eval)``. The task files
are found as described in :mod:`snpse_np.tasks.references`.

Importing this package imports numpy only; numba loads on the first ODE solve.
"""
import importlib

from .references import DataNotFoundError  # noqa: F401

# name -> (module, class)
_REGISTRY = {
    "gaussian_linear": ("gaussian_linear", "GaussianLinear"),
    "gaussian_linear_uniform": ("gaussian_linear", "GaussianLinearUniform"),
    "slcp": ("slcp", "SLCP"),
    "slcp_distractors": ("slcp", "SLCPDistractors"),
    "bernoulli_glm": ("bernoulli_glm", "BernoulliGLM"),
    "bernoulli_glm_raw": ("bernoulli_glm", "BernoulliGLMRaw"),
    "gaussian_mixture": ("gaussian_mixture", "GaussianMixture"),
    "two_moons": ("two_moons", "TwoMoons"),
    "sir": ("sir", "SIR"),
    "lotka_volterra": ("lotka_volterra", "LotkaVolterra"),
}

TASK_NAMES = tuple(_REGISTRY)

# Not an sbibm task (no reference posterior, one experimental observation), so not in
# TASK_NAMES, which the benchmark grid and the sbibm tests iterate over; get_task finds it.
_OTHER_TASKS = {"pyloric": ("pyloric", "Pyloric")}


def get_task(name, data_dir=None, download=None):
    """The task called ``name`` (one of ``TASK_NAMES``, or ``"pyloric"``: :mod:`.pyloric`).

    ``data_dir``: where the sbibm files are (None: search, see :mod:`.references`);
    ``download``: allow the one-time sbibm wheel download (None: unless SNPSE_NO_DOWNLOAD=1).
    The files are only read when asked for (observation, reference samples, ...).
    """
    if name not in _REGISTRY and name not in _OTHER_TASKS:
        valid = ", ".join(TASK_NAMES + tuple(_OTHER_TASKS))
        raise ValueError(f"unknown task {name!r}; valid names: {valid}")
    module, cls = _REGISTRY[name] if name in _REGISTRY else _OTHER_TASKS[name]
    mod = importlib.import_module(f".{module}", __name__)
    return getattr(mod, cls)(data_dir=data_dir, download=download)


__all__ = ["get_task", "TASK_NAMES", "DataNotFoundError"]
