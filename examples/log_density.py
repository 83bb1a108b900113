"""Log-densities and calibration: log_prob against an analytic posterior, and a coverage check.

The problem: a linear Gaussian, theta ~ N(0, I_2), x = theta + N(0, s^2 I_2) with s = 0.5, whose
posterior is exact: p(theta | x) = N(x / (1 + s^2), s^2 / (1 + s^2) I).

``posterior.log_prob`` integrates the probability-flow ODE forward from theta at t_min to t = 1
together with the divergence of its velocity (exact trace, forward-mode tangents), so

    log q(theta | x) = log p_1(theta_1) + int_{t_min}^1 div v(theta_t, t) dt

(snpse_np/sampling.py; the plain version: reference.velocity_divergence). Two checks:

1. at one observation: log q against the exact log-density on posterior samples (a scatter;
   the correlation and the mean offset are printed);
2. calibration (amortised, over many observations): for m test pairs (theta*, x*) from the
   prior predictive, the credibility level of theta* in q(. | x*) is the share of posterior
   samples with a higher density, P_q(log q(theta) > log q(theta* | x*)). For a calibrated
   posterior it is uniform: its ECDF (the expected coverage of the highest-density regions) lies
   on the diagonal, inside the band drawn.

Writes log_density.png into --out.

    python examples/log_density.py          # ~1-2 minutes on one core
    python examples/log_density.py --tiny   # seconds: a smoke test (tests/test_examples.py)
"""
import argparse
import math
import os

import numpy as np

import snpse_np as sn

S = 0.5


def simulator(theta, seed=None):
    return theta + S * np.random.default_rng(seed).standard_normal(theta.shape)


def exact_log_density(theta, x):
    """log N(theta; x / (1 + s^2), s^2 / (1 + s^2) I) per row; theta (n, d), x (d,)."""
    var = S ** 2 / (1 + S ** 2)
    r = theta - x / (1 + S ** 2)
    d = theta.shape[1]
    return -0.5 * np.sum(r * r, axis=1) / var - 0.5 * d * math.log(2 * math.pi * var)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a few seconds: tiny network, few steps")
    ap.add_argument("--out", default=".", help="folder for the figure")
    args = ap.parse_args(argv)
    n_sims, steps, hidden, n_check, m, n_cov = ((300, 30, 16, 50, 5, 20) if args.tiny else
                                                (4000, 3000, 128, 500, 100, 100))

    prior = sn.Normal(np.zeros(2), np.ones(2))
    theta = prior.sample(n_sims, seed=0)
    inference = sn.NPSE(prior, sde="ve", seed=0, hidden=hidden, show_progress=False)
    posterior = inference.append_simulations(theta, simulator(theta, seed=1)).train(max_steps=steps)

    # 1. log q against the exact log-density, on posterior samples at one observation
    x_o = np.array([0.8, -0.4])
    samples = posterior.sample(n_check, x=x_o, seed=2)
    logq = posterior.log_prob(samples, x=x_o)  # adaptive RK45, exact trace
    logp = exact_log_density(samples, x_o)
    corr = float(np.corrcoef(logq, logp)[0, 1])
    print(f"log_prob vs exact on {n_check} samples: correlation {corr:.3f}, "
          f"mean(log q - log p) {np.mean(logq - logp):+.3f} nats")

    # 2. expected coverage over m observations (sample_batched / log_prob_batched: one batch)
    theta_star = prior.sample(m, seed=3)
    x_star = simulator(theta_star, seed=4)
    draws = posterior.sample_batched(n_cov, x_star, seed=5)                        # (m, n_cov, 2)
    # a fixed-step RK4 is deterministic: each theta* is ranked against its own samples by the
    # same estimator (as TSNPSE's truncation does), which is all the ranking needs
    lq_draws = posterior.log_prob_batched(draws, x_star, method="rk4", steps=10)   # (m, n_cov)
    lq_star = posterior.log_prob_batched(theta_star[:, None, :], x_star, method="rk4", steps=10)  # (m, 1)
    credibility = np.mean(lq_draws > lq_star, axis=1)                             # (m,)
    levels = np.linspace(0, 1, 101)
    ecdf = np.mean(credibility[None, :] <= levels[:, None], axis=1)
    band = 1.36 / math.sqrt(m)  # Kolmogorov-Smirnov 95% band for m uniform values
    ks = float(np.max(np.abs(ecdf - levels)))
    print(f"coverage over {m} observations: max |ECDF - diagonal| {ks:.3f} (95% band {band:.3f})")

    from matplotlib.figure import Figure
    from snpse_np.files import write_atomic
    fig = Figure(figsize=(9, 4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.scatter(logp, logq, s=4)
    lim = [min(logp.min(), logq.min()), max(logp.max(), logq.max())]
    ax1.plot(lim, lim, "k--", lw=0.8)
    ax1.set(xlabel="exact log p(theta | x_o)", ylabel="log_prob (probability-flow ODE)",
            title=f"log-densities at x_o (correlation {corr:.3f})")
    ax2.fill_between(levels, levels - band, levels + band, color="0.85", label="95% band (KS)")
    ax2.plot(levels, levels, "k--", lw=0.8)
    ax2.plot(levels, ecdf, color="C0", label="NPSE")
    ax2.set(xlabel="credibility level", ylabel="share of theta* inside the HPD region",
            title=f"expected coverage over {m} observations", xlim=(0, 1), ylim=(0, 1))
    ax2.legend(loc="upper left")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "log_density.png")
    write_atomic(path, lambda f: fig.savefig(f, dpi=110, format="png", bbox_inches="tight"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
