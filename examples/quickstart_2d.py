"""Quickstart: NPSE on a 2-D problem, its posterior as a pair plot, and the learned score field.

The problem: theta ~ U[-1, 1]^2 and only the distance from the origin is observed,

    x = |theta| + N(0, 0.05^2),

so the posterior at x_o = 0.6 is a ring of radius 0.6 (density proportional to
N(x_o; |theta|, 0.05^2) inside the box). NPSE learns the score s(theta_t, x, t) of the diffused
posterior; sampling integrates the probability-flow ODE from noise at t = 1 down to t_min.

Writes two figures into --out (default: the current folder):

- quickstart_2d_pairplot.png: the posterior samples (pair plot) against exact draws (rejection
  sampling of the analytic ring, dashed);
- quickstart_2d_score.png: the learned score field at three noise levels (arrows), over the
  samples. At small sigma_t the arrows point at the ring; at large sigma_t at its centre.

    python examples/quickstart_2d.py            # ~1 minute on one core
    python examples/quickstart_2d.py --tiny     # seconds: a smoke test (tests/test_examples.py)

Reading on: docs/walkthrough.md (the algorithm), snpse_np/reference.py (the same maths, plain).
"""
import argparse
import os

import numpy as np

import snpse_np as sn
from snpse_np.score import ScoreField

NOISE = 0.05
X_O = np.array([0.6])


def simulator(theta, seed=None):
    """(n, 2) -> (n, 1): the distance from the origin, observed with noise."""
    rng = np.random.default_rng(seed)
    return np.linalg.norm(theta, axis=1, keepdims=True) + NOISE * rng.standard_normal((theta.shape[0], 1))


def exact_posterior(n, seed):
    """n exact draws by rejection: prior draws kept with probability N(x_o; |theta|, NOISE^2) / max."""
    rng = np.random.default_rng(seed)
    out = []
    while sum(len(o) for o in out) < n:
        theta = rng.uniform(-1, 1, (100_000, 2))
        keep = rng.uniform(size=len(theta)) < np.exp(-0.5 * ((np.linalg.norm(theta, axis=1) - X_O[0]) / NOISE) ** 2)
        out.append(theta[keep])
    return np.concatenate(out)[:n]


def learned_score(posterior, theta, x, t):
    """The learned score at time t in theta's own units, (n, 2).

    The network works in z-scored space, z = (theta - mean) / std, so by the chain rule
    grad_theta log p = grad_z log p / std (the score field is evaluated there: score.ScoreField)."""
    be, std = posterior.backend, posterior.theta_std
    field = ScoreField(posterior.model, be, posterior.params, posterior.embed(x[None]), theta.shape[0],
                       posterior.dtype)
    z = be.to_device(std.forward(theta).astype(posterior.dtype))
    return be.to_host(field.score(z, t)) / std.std


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a few seconds: tiny network, few steps")
    ap.add_argument("--out", default=".", help="folder for the figures")
    args = ap.parse_args(argv)
    n_sims, steps, hidden, n_samples = (300, 30, 16, 300) if args.tiny else (4000, 3000, 128, 5000)

    # 1. simulate
    prior = sn.BoxUniform(-np.ones(2), np.ones(2))
    theta = prior.sample(n_sims, seed=0)
    x = simulator(theta, seed=1)

    # 2. train the score network by denoising score matching (snpse_np/npse.py)
    inference = sn.NPSE(prior, sde="ve", seed=0, hidden=hidden, show_progress=False)
    posterior = inference.append_simulations(theta, x).train(max_steps=steps)
    s = inference.summary
    print(f"trained {s['steps']} steps in {s['train_seconds']:.1f}s, best validation loss {s['best_val_loss']:.4f}")

    # 3. sample p(theta | x_o): the probability-flow ODE, Heun on the EDM grid (snpse_np/sampling.py)
    samples = posterior.sample(n_samples, x=X_O, seed=2)
    radius = np.linalg.norm(samples, axis=1)
    print(f"posterior radius: mean {radius.mean():.3f} (ring at {X_O[0]}), std {radius.std():.3f} "
          f"(noise {NOISE})")

    # 4. figures (matplotlib only here; bare Figures, pyplot untouched)
    from matplotlib.figure import Figure
    from snpse_np.plot import pairplot
    os.makedirs(args.out, exist_ok=True)
    pairplot(samples, reference=exact_posterior(n_samples, seed=3), reference_label="exact (rejection)",
             labels=[r"$\theta_1$", r"$\theta_2$"], limits=[(-1, 1), (-1, 1)],
             path=os.path.join(args.out, "quickstart_2d_pairplot.png"))

    grid = np.linspace(-0.95, 0.95, 9 if args.tiny else 17)
    g1, g2 = np.meshgrid(grid, grid)
    points = np.stack([g1.ravel(), g2.ravel()], axis=1)
    sde = posterior.sde
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 3)
    ring = np.linspace(0, 2 * np.pi, 200)
    for ax, t in zip(axes, (0.05, 0.3, 0.7)):
        score = learned_score(posterior, points, X_O, t)
        sigma = float(sde.marginal(t)[1]) * float(posterior.theta_std.std.mean())  # sigma_t in theta units
        length = np.linalg.norm(score, axis=1, keepdims=True)
        ax.scatter(samples[:2000, 0], samples[:2000, 1], s=1, color="0.7")
        ax.quiver(points[:, 0], points[:, 1], *(score / np.maximum(length, 1e-12)).T, np.log10(length.ravel()),
                  cmap="viridis", scale=25)
        ax.plot(X_O[0] * np.cos(ring), X_O[0] * np.sin(ring), "r--", lw=0.8)
        ax.set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal", title=f"score at t = {t} (sigma_t ~ {sigma:.2g})")
    fig.suptitle("learned score field s(theta, x_o, t): unit arrows, colour = log10 |s|")
    path = os.path.join(args.out, "quickstart_2d_score.png")
    from snpse_np.files import write_atomic
    write_atomic(path, lambda f: fig.savefig(f, dpi=110, format="png", bbox_inches="tight"))
    print(f"wrote {os.path.join(args.out, 'quickstart_2d_pairplot.png')} and {path}")


if __name__ == "__main__":
    main()
