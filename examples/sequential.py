"""TSNPSE: the truncated region shrinks round by round.

The problem: theta ~ U[-3, 3]^2, x = theta + N(0, 0.15^2 I), observed at x_o = (1, -0.5). The
posterior is (up to the box) N(x_o, 0.15^2 I): a small blob in a wide prior, where a single
round of NPSE spends most simulations far from it.

TSNPSE (Sharrock et al. 2024, Sec. 3.2) runs rounds. Round 1 simulates from the prior; each
later round simulates from the prior truncated to the highest-probability region of the current
posterior estimate, HPR = {theta : log q(theta | x_o) > kappa}, kappa the epsilon-quantile of
log q over posterior samples (snpse_np/truncation.py), and trains on all rounds' data pooled.

Writes sequential.png into --out: one panel per round with that round's simulated theta (the
truncated prior's draws), the round's share of the prior mass, and the true posterior's
3-sigma circle; the last panel the final posterior samples.

    python examples/sequential.py           # ~1 minute on one core
    python examples/sequential.py --tiny    # seconds: a smoke test (tests/test_examples.py)
"""
import argparse
import math
import os
import tempfile

import numpy as np

import snpse_np as sn

NOISE = 0.15
X_O = np.array([1.0, -0.5])
EPSILON = 1e-3  # the HPR holds 1 - epsilon of the current posterior's mass


def simulator(theta, seed=None):
    """(n, 2) -> (n, 2): theta observed with Gaussian noise. Takes a seed: TSNPSE passes one per chunk."""
    return theta + NOISE * np.random.default_rng(seed).standard_normal(theta.shape)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a few seconds: tiny network, few steps")
    ap.add_argument("--out", default=".", help="folder for the figure")
    args = ap.parse_args(argv)
    if args.tiny:
        rounds, sims, steps, hidden, hpr = 2, 400, 30, 16, 300
    else:
        rounds, sims, steps, hidden, hpr = 5, 500, 1000, 64, 2000

    prior = sn.BoxUniform(-3 * np.ones(2), 3 * np.ones(2))
    with tempfile.TemporaryDirectory() as workdir:  # each round's simulations are written here
        tsnpse = sn.TSNPSE(prior, simulator, X_O, sde="ve", seed=0, workdir=workdir, show_progress=False,
                           hidden=hidden, train_kwargs=dict(max_steps=steps))
        posterior = tsnpse.run(num_simulations=rounds * sims, num_rounds=rounds, num_hpr_samples=hpr,
                               epsilon=EPSILON)
        proposals = []
        for r in range(rounds):
            with np.load(os.path.join(workdir, f"round_{r:02d}", "simulations.npz")) as f:
                proposals.append(f["theta"])
    samples = posterior.sample(2000, seed=1)

    mass = [1.0] + [s["acceptance"] for s in tsnpse.rounds[1:]]
    # the exact region for comparison: {log p > kappa} of N(x_o, NOISE^2 I) holding 1 - epsilon of
    # its mass is the disc |theta - x_o|^2 < -2 NOISE^2 log(epsilon), of prior mass area / 36
    exact = math.pi * -2 * NOISE ** 2 * math.log(EPSILON) / 36.0
    for r, (th, m) in enumerate(zip(proposals, mass)):
        lo, hi = th.min(0), th.max(0)
        print(f"round {r + 1}: {th.shape[0]} simulations in a region holding {m:.3g} of the prior "
              f"(their box {np.round(lo, 2).tolist()} .. {np.round(hi, 2).tolist()})")
    print(f"the exact posterior's region holds {exact:.3g} of the prior")
    err = np.abs(samples.mean(0) - X_O).max()
    print(f"final posterior: mean {np.round(samples.mean(0), 3).tolist()} (true {X_O.tolist()}, |error| {err:.3f}), "
          f"std {np.round(samples.std(0), 3).tolist()} (true {NOISE})")

    from matplotlib.figure import Figure
    from snpse_np.files import write_atomic
    fig = Figure(figsize=(3.2 * (rounds + 1), 3.4))
    axes = fig.subplots(1, rounds + 1)
    circle = np.linspace(0, 2 * np.pi, 200)
    for ax in axes:
        ax.plot(X_O[0] + 3 * NOISE * np.cos(circle), X_O[1] + 3 * NOISE * np.sin(circle), "r-", lw=1)
        ax.set(xlim=(-3, 3), ylim=(-3, 3), aspect="equal")
    for r, (ax, th, m) in enumerate(zip(axes, proposals, mass)):
        ax.scatter(th[:, 0], th[:, 1], s=2, color="C0")
        ax.set_title(f"round {r + 1}: proposal\n({m:.2g} of the prior)" if r else "round 1: the prior")
    axes[-1].scatter(samples[:, 0], samples[:, 1], s=2, color="C2")
    axes[-1].set_title(f"final posterior (red: true 3-sigma\ncircle; exact region {exact:.2g} of the prior)")
    path = os.path.join(args.out, "sequential.png")
    os.makedirs(args.out, exist_ok=True)
    write_atomic(path, lambda f: fig.savefig(f, dpi=110, format="png", bbox_inches="tight"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
