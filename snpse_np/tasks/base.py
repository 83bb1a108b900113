"""The common shape of an sbibm task: prior, simulator, observations and reference samples.

A task is a prior p(theta) on R^{dim_theta}, a simulator x ~ p(x | theta) on R^{dim_x}, and
ten observations x_o^(k) (k = 1..10) with the parameters theta*^(k) that generated them and
10,000 reference posterior samples each (sbibm 1.1.0, Lueckmann et al. AISTATS 2021).

Subclasses set the class attributes and implement ``_simulate(theta, rng)`` (and, where the
likelihood is cheap and in closed form, ``_log_likelihood(theta, x)``). This base class does
the input checks so every task answers bad input with the same clear ``ValueError``.

Shapes: ``theta`` (n, dim_theta) or (dim_theta,) (one row); outputs (n, dim_x) float64.
"""
import numpy as np

from ..rng import as_generator
from . import references


class Task:
    """One sbibm task. Construct through :func:`snpse_np.tasks.get_task`.

    Attributes: ``name``, ``dim_theta``, ``dim_x``, ``prior`` (a :mod:`snpse_np.priors`
    object), ``ve_sigma_limits`` ((sigma_min, sigma_max) of the VE SDE in the authors' code,
    or None), ``num_simulations`` (sbibm's budgets), ``num_observations`` (10).
    """

    name = None
    dim_theta = None
    dim_x = None
    ve_sigma_limits = None
    num_simulations = (100, 1_000, 10_000, 100_000, 1_000_000)
    num_observations = references.NUM_OBSERVATIONS
    # Where the files live in the sbibm tree and which observation file this task reads.
    _folder = None
    _observation_file = "observation.csv"

    def __init__(self, data_dir=None, download=None):
        """``data_dir``: where to read the sbibm files (see :mod:`.references` for the search
        when None); ``download``: allow fetching the sbibm wheel (None: env decides)."""
        self.data_dir = data_dir
        self.download = download
        self.prior = self._make_prior()

    def _make_prior(self):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, dim_theta={self.dim_theta}, dim_x={self.dim_x})"

    # --- input checks -------------------------------------------------------------------------

    def _check_theta(self, theta):
        """``theta`` as (n, dim_theta) float64 (no copy if it is already); (dim_theta,) is one row."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.ndim == 1 and theta.shape[0] == self.dim_theta:
            theta = theta[None, :]
        if theta.ndim != 2 or theta.shape[1] != self.dim_theta:
            raise ValueError(f"{self.name}: theta must have shape (n, {self.dim_theta}), "
                             f"got {np.shape(theta)}")
        return theta

    def _check_x(self, x, n):
        """(dim_x,) or (n, dim_x) float64 observation(s) for ``n`` parameter rows."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape == (self.dim_x,) or x.shape == (n, self.dim_x):
            return x
        raise ValueError(f"{self.name}: x must have shape ({self.dim_x},) or ({n}, {self.dim_x}), "
                         f"got {x.shape}")

    # --- simulator -----------------------------------------------------------------------------

    def simulate(self, theta, seed=None):
        """Draw x ~ p(x | theta) for every row of ``theta``.

        ``theta``: (n, dim_theta); ``seed``: int, None or ``numpy.random.Generator``.
        Returns (n, dim_x) float64 (NaN rows where an ODE solve failed, as sbibm).
        """
        theta = self._check_theta(theta)
        rng = as_generator(seed)
        if theta.shape[0] == 0:
            return np.empty((0, self.dim_x))
        x = self._simulate(theta, rng)
        return np.ascontiguousarray(x, dtype=np.float64)

    def _simulate(self, theta, rng):
        raise NotImplementedError

    # --- likelihood ----------------------------------------------------------------------------

    def log_likelihood(self, theta, k=None, x=None):
        """log p(x | theta) for each row of ``theta``, shape (n,).

        Give either the observation number ``k`` (1..10, uses x_o^(k)) or the data ``x``
        ((dim_x,) shared by all rows, or (n, dim_x) one per row). Raises NotImplementedError
        for tasks without a cheap closed-form likelihood (SIR, Lotka-Volterra: an ODE solve
        per theta; slcp_distractors: numerically singular distractor density).
        """
        theta = self._check_theta(theta)
        if (k is None) == (x is None):
            raise ValueError("log_likelihood needs exactly one of k (observation number) or x")
        x = self.observation(k) if k is not None else self._check_x(x, theta.shape[0])
        return np.asarray(self._log_likelihood(theta, x), dtype=np.float64).reshape(theta.shape[0])

    def _log_likelihood(self, theta, x):
        raise NotImplementedError(
            f"{self.name}: no closed-form likelihood here (it needs an ODE solve per theta)")

    # --- files ---------------------------------------------------------------------------------

    def observation(self, k):
        """x_o^(k), shape (dim_x,) float64, k in 1..10."""
        x = references.load_observation(self._folder, k, self._observation_file,
                                        self.data_dir, self.download)
        if x.shape != (self.dim_x,):
            raise ValueError(f"{self.name}: observation {k} has shape {x.shape}, expected ({self.dim_x},)")
        return x

    def true_parameters(self, k):
        """theta*^(k) that generated x_o^(k), shape (dim_theta,) float64."""
        return references.load_true_parameters(self._folder, k, self.data_dir, self.download)

    def reference_samples(self, k):
        """The 10,000 sbibm reference posterior samples for x_o^(k), shape (10000, dim_theta)."""
        return references.load_reference_samples(self._folder, k, self.data_dir, self.download)

    def observation_seed(self, k):
        """The seed sbibm used to make observation k (int)."""
        return references.load_observation_seed(self._folder, k, self.data_dir, self.download)
