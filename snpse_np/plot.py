"""Pair plot of posterior samples (matplotlib, optional: imported only here, on demand)."""
import numpy as np


def pairplot(samples, reference=None, truth=None, path=None, labels=None, bins=50):
    """Histograms on the diagonal, 2-D histograms below; the reference samples as contours
    above the diagonal, the true parameters as red marks. samples: (n, d). Returns the figure."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = np.asarray(samples)
    d = samples.shape[1]
    labels = labels or [f"theta_{j + 1}" for j in range(d)]
    both = samples if reference is None else np.concatenate([samples, reference])
    lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
    fig, axes = plt.subplots(d, d, figsize=(2.2 * d, 2.2 * d), squeeze=False)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if i == j:
                ax.hist(samples[:, j], bins=bins, range=(lo[j], hi[j]), density=True, color="C0", alpha=0.7)
                if reference is not None:
                    ax.hist(reference[:, j], bins=bins, range=(lo[j], hi[j]), density=True, histtype="step",
                            color="k")
                if truth is not None:
                    ax.axvline(truth[j], color="r")
            elif i > j:
                ax.hist2d(samples[:, j], samples[:, i], bins=bins, range=[(lo[j], hi[j]), (lo[i], hi[i])],
                          cmap="Blues")
                if truth is not None:
                    ax.plot(truth[j], truth[i], "r+", ms=10)
            elif reference is not None:
                h, xe, ye = np.histogram2d(reference[:, j], reference[:, i], bins=30,
                                           range=[(lo[j], hi[j]), (lo[i], hi[i])])
                ax.contour(0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1]), h.T, levels=4, colors="k",
                           linewidths=0.7)
            else:
                ax.axis("off")
            if i == d - 1:
                ax.set_xlabel(labels[j])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i])
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return fig
