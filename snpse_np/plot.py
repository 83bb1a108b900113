"""Figures: the pair plot of posterior samples and the calibration plots (rank ECDF / histogram,
expected coverage, TARP), in one style. matplotlib is optional: imported inside each function,
never at import time (``import snpse_np.plot`` needs numpy only).

Conventions follow the ``corner`` package (Foreman-Mackey 2016): the lower triangle shows 2-D
highest-density contours of the samples at the masses of the 0.5, 1, 1.5 and 2 sigma regions of
a 2-D Gaussian (1 - exp(-s^2/2): 11.8%, 39.3%, 67.5%, 86.5%), filled, over a histogram smoothed
by a Gaussian of one bin; the diagonal shows the 1-D marginals as step histograms with the
16/50/84% quantiles and a "median +upper -lower" title; true parameters are red lines across
every panel; a reference sample set (e.g. sbibm's) is drawn as black dashed contours. Axis limits
follow the posterior mass: the 0.5%-99.5% quantiles of the samples (and the reference), padded
by 10%, widened to include the truth, instead of the prior's box; modes that are small and far
apart (two_moons' two crescents at opposite corners, which no choice of limits can make fill a
panel) get zoomed insets in the panel's empty corners.

Every function returns the matplotlib Figure; with ``path`` it is saved atomically (PNG at
``dpi``, or PDF/SVG by the suffix), drawn on a bare Figure so pyplot's state is never touched. The shapes: samples (n, d); ranks (m, d); levels, coverage (k,).
"""
import numpy as np

CORNER_LEVELS = tuple(1.0 - np.exp(-0.5 * s * s) for s in (0.5, 1.0, 1.5, 2.0))
POSTERIOR_COLOR, REFERENCE_COLOR, TRUTH_COLOR = "#1f5fa8", "0.15", "#d62728"


def _figure(path, figsize, nrows=1, ncols=1):
    """(figure, axes (nrows, ncols)). With a path: a bare ``matplotlib.figure.Figure`` (rendered
    by Agg on save; pyplot and its global backend are left alone); without: a pyplot figure, for
    interactive use."""
    if path is None:
        import matplotlib.pyplot as plt
        fig = plt.figure(figsize=figsize)
    else:
        from matplotlib.figure import Figure
        fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _finish(fig, path, dpi):
    if path is None:
        return fig
    import os
    from .files import write_atomic
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    write_atomic(path, lambda fh: fig.savefig(fh, dpi=dpi, format=fmt, bbox_inches="tight"))
    return fig


def _smooth(h, width=1.0):
    """Separable Gaussian smoothing of a histogram (nx, ny) by ``width`` bins (reflecting edges)."""
    r = int(np.ceil(3 * width))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / width) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        hp = np.pad(h, pad, mode="reflect")
        h = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), axis, hp)
    return h


def _hpd_thresholds(h, masses):
    """Density values whose super-level sets of h hold the given fractions of its total mass."""
    flat = np.sort(h.ravel())[::-1]
    cum = np.cumsum(flat)
    cum /= cum[-1]
    out = [flat[min(np.searchsorted(cum, m), flat.size - 1)] for m in sorted(masses, reverse=True)]
    out = np.unique(out)  # increasing, as contour wants
    return out if out.size else np.array([flat[0]])


def _limits(sets, truth, lo_q=0.5, hi_q=99.5, pad=0.1):
    both = np.concatenate([s for s in sets if s is not None])
    lo, hi = np.percentile(both, lo_q, axis=0), np.percentile(both, hi_q, axis=0)
    if truth is not None:
        t = np.asarray(truth, dtype=float)
        lo, hi = np.minimum(lo, t), np.maximum(hi, t)
    span = np.where(hi > lo, hi - lo, 1.0)
    return lo - pad * span, hi + pad * span


def _contours(ax, a, b, lims_a, lims_b, bins, color, filled, dashed=False):
    h, xe, ye = np.histogram2d(a, b, bins=bins, range=[lims_a, lims_b])
    h = _smooth(h)
    if h.max() <= 0:
        return
    levels = _hpd_thresholds(h, CORNER_LEVELS)
    xc, yc = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
    if filled:
        from matplotlib.colors import LinearSegmentedColormap, to_rgba
        rgba = np.array(to_rgba(color))
        cmap = LinearSegmentedColormap.from_list("hpd", [(*rgba[:3], 0.0), (*rgba[:3], 0.55)])
        ax.contourf(xc, yc, h.T, levels=np.append(levels, h.max() * 1.0001), cmap=cmap, antialiased=True)
    ax.contour(xc, yc, h.T, levels=levels, colors=[color], linewidths=0.9,
               linestyles="--" if dashed else "-")


def _components(mask):
    """Connected components (8-neighbour) of a boolean grid: a list of index arrays (rows, cols)."""
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        stack, cells = [start], []
        seen[start] = True
        while stack:
            i, j = stack.pop()
            cells.append((i, j))
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    k, m = i + di, j + dj
                    if 0 <= k < mask.shape[0] and 0 <= m < mask.shape[1] and mask[k, m] and not seen[k, m]:
                        seen[k, m] = True
                        stack.append((k, m))
        out.append(np.array(cells).T)
    return out


def _mode_insets(ax, a, b, lims_a, lims_b, bins, reference, truth, max_fraction=0.2):
    """Zoomed insets of well-separated small modes (two_moons' two crescents at opposite corners).

    The 86.5% HPD region of the smoothed 2-D histogram is split into connected components; with 2
    to 4 of them whose bounding boxes together cover under ``max_fraction`` of the panel, each
    gets an inset (its box padded by 30%, contours at full resolution) in an empty corner of the
    panel, linked to it by ``indicate_inset_zoom``. Returns the number of insets drawn."""
    h, xe, ye = np.histogram2d(a, b, bins=bins, range=[lims_a, lims_b])
    h = _smooth(h)
    if h.max() <= 0:
        return 0
    comps = _components(h >= _hpd_thresholds(h, [CORNER_LEVELS[-1]])[0])
    comps = sorted(comps, key=lambda c: -h[c[0], c[1]].sum())[:4]
    if not 2 <= len(comps) <= 4:
        return 0
    boxes = [(xe[c[0].min()], xe[c[0].max() + 1], ye[c[1].min()], ye[c[1].max() + 1]) for c in comps]
    span_a, span_b = lims_a[1] - lims_a[0], lims_b[1] - lims_b[0]
    if sum((x1 - x0) * (y1 - y0) for x0, x1, y0, y1 in boxes) > max_fraction * span_a * span_b:
        return 0
    # candidate slots (axes fractions) in the panel's corners, used when no mode's box overlaps them
    slots = [(0.04, 0.56), (0.56, 0.04), (0.04, 0.04), (0.56, 0.56)]
    frac = [((x0 - lims_a[0]) / span_a, (x1 - lims_a[0]) / span_a, (y0 - lims_b[0]) / span_b,
             (y1 - lims_b[0]) / span_b) for x0, x1, y0, y1 in boxes]
    free = [s for s in slots if not any(fx0 < s[0] + 0.4 and fx1 > s[0] and fy0 < s[1] + 0.4 and fy1 > s[1]
                                       for fx0, fx1, fy0, fy1 in frac)]
    drawn = 0
    for (x0, x1, y0, y1), slot in zip(boxes, free):
        pa, pb = 0.3 * (x1 - x0), 0.3 * (y1 - y0)
        box_a, box_b = (x0 - pa, x1 + pa), (y0 - pb, y1 + pb)
        inset = ax.inset_axes([slot[0], slot[1], 0.4, 0.4])
        inside = (a >= box_a[0]) & (a <= box_a[1]) & (b >= box_b[0]) & (b <= box_b[1])
        _contours(inset, a[inside], b[inside], box_a, box_b, 40, POSTERIOR_COLOR, filled=True)
        if reference is not None:
            ra, rb = reference
            r_in = (ra >= box_a[0]) & (ra <= box_a[1]) & (rb >= box_b[0]) & (rb <= box_b[1])
            if r_in.sum() > 10:
                _contours(inset, ra[r_in], rb[r_in], box_a, box_b, 40, REFERENCE_COLOR, filled=False, dashed=True)
        if truth is not None and box_a[0] <= truth[0] <= box_a[1] and box_b[0] <= truth[1] <= box_b[1]:
            inset.plot(truth[0], truth[1], "s", color=TRUTH_COLOR, ms=3)
        inset.set_xlim(*box_a)
        inset.set_ylim(*box_b)
        inset.tick_params(labelsize=6, direction="in", length=2)
        inset.set_xticks([])
        inset.set_yticks([])
        ax.indicate_inset_zoom(inset, edgecolor="0.5", alpha=0.8)
        drawn += 1
    return drawn


def _tidy(ax, n_ticks=4):
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(n_ticks, prune="lower"))
    ax.yaxis.set_major_locator(MaxNLocator(n_ticks, prune="lower"))
    ax.tick_params(labelsize=8, direction="in", top=True, right=True)


def pairplot(samples, reference=None, truth=None, path=None, labels=None, bins=None, limits=None,
             sample_label="posterior", reference_label="reference", dpi=150, panel_size=2.4, insets=True):
    """Corner-style pair plot of samples (n, d) (see the module docstring).

    reference: optional (n_ref, d) samples drawn as dashed contours / step histograms; truth: (d,)
    true parameters (red lines); labels: d axis labels (default theta_1..theta_d in mathtext);
    limits: optional (d, 2) axis limits (default: follow the mass); bins per axis (default
    sqrt(n) within [30, 120] for the histograms, 3 n^(1/3) within [30, 100] for the contours: small
    modes, such as two_moons' crescents, keep their shape); insets: zoom into 2-4 small,
    well-separated modes of a 2-D panel (``_mode_insets``). Returns the figure.
    """
    samples = np.asarray(samples, dtype=float)
    if samples.ndim != 2 or samples.shape[0] < 2:
        raise ValueError(f"samples must have shape (n >= 2, d), got {samples.shape}")
    samples = samples[np.all(np.isfinite(samples), axis=1)]
    d = samples.shape[1]
    n = samples.shape[0]
    bins = int(np.clip(np.sqrt(n), 30, 120)) if bins is None else int(bins)
    bins2d = int(np.clip(3 * n ** (1 / 3), 30, 100)) if bins is None else bins  # fewer points per 2-D bin
    if reference is not None:
        reference = np.asarray(reference, dtype=float)
        if reference.ndim != 2 or reference.shape[1] != d:
            raise ValueError(f"reference must have shape (n, {d}), got {reference.shape}")
    if truth is not None:
        truth = np.asarray(truth, dtype=float).ravel()
        if truth.size != d:
            raise ValueError(f"truth must have {d} entries, got {truth.size}")
    labels = list(labels) if labels is not None else [rf"$\theta_{{{j + 1}}}$" for j in range(d)]
    if len(labels) != d:
        raise ValueError(f"need {d} labels, got {len(labels)}")
    if limits is None:
        lo, hi = _limits([samples, reference], truth)
    else:
        limits = np.asarray(limits, dtype=float)
        if limits.shape != (d, 2):
            raise ValueError(f"limits must have shape ({d}, 2), got {limits.shape}")
        lo, hi = limits[:, 0], limits[:, 1]
    fig, axes = _figure(path, (panel_size * d, panel_size * d), d, d)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                edges = np.linspace(lo[j], hi[j], bins + 1)
                ax.hist(samples[:, j], bins=edges, density=True, histtype="stepfilled", color=POSTERIOR_COLOR,
                        alpha=0.25)
                ax.hist(samples[:, j], bins=edges, density=True, histtype="step", color=POSTERIOR_COLOR, lw=1.2)
                if reference is not None:
                    ax.hist(reference[:, j], bins=edges, density=True, histtype="step", color=REFERENCE_COLOR,
                            lw=1.0, ls="--")
                q16, q50, q84 = np.percentile(samples[:, j], [16, 50, 84])
                for q in (q16, q50, q84):
                    ax.axvline(q, color=POSTERIOR_COLOR, lw=0.8, ls=":")
                ax.set_title(f"{labels[j]} = ${q50:.3g}^{{+{q84 - q50:.2g}}}_{{-{q50 - q16:.2g}}}$", fontsize=9)
                ax.set_xlim(lo[j], hi[j])
                if truth is not None:
                    ax.axvline(truth[j], color=TRUTH_COLOR, lw=1.2)
            else:
                lims = [(lo[j], hi[j]), (lo[i], hi[i])]
                _contours(ax, samples[:, j], samples[:, i], *lims, bins2d, POSTERIOR_COLOR, filled=True)
                if reference is not None:
                    _contours(ax, reference[:, j], reference[:, i], *lims, bins2d, REFERENCE_COLOR, filled=False,
                              dashed=True)
                if truth is not None:
                    ax.axvline(truth[j], color=TRUTH_COLOR, lw=1.0)
                    ax.axhline(truth[i], color=TRUTH_COLOR, lw=1.0)
                    ax.plot(truth[j], truth[i], "s", color=TRUTH_COLOR, ms=4)
                ax.set_xlim(lo[j], hi[j])
                ax.set_ylim(lo[i], hi[i])
                if insets:
                    _mode_insets(ax, samples[:, j], samples[:, i], *lims, bins2d,
                                 None if reference is None else (reference[:, j], reference[:, i]),
                                 None if truth is None else (truth[j], truth[i]))
            _tidy(ax)
            if i == j:
                ax.set_yticks([])  # a density's scale says nothing here
            if i == d - 1:
                ax.set_xlabel(labels[j], fontsize=11)
                for tick in ax.get_xticklabels():
                    tick.set_rotation(45)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i], fontsize=11)
                for tick in ax.get_yticklabels():
                    tick.set_rotation(45)
            elif i != j:
                ax.set_yticklabels([])
    handles = _legend_handles(sample_label, reference_label if reference is not None else None, truth is not None)
    fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(0.98, 0.98), frameon=False,
               fontsize=10 if d > 1 else 8)
    fig.subplots_adjust(wspace=0.06, hspace=0.06)
    return _finish(fig, path, dpi)


def _legend_handles(sample_label, reference_label, truth):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    out = [Patch(facecolor=POSTERIOR_COLOR, alpha=0.4, edgecolor=POSTERIOR_COLOR, label=sample_label)]
    if reference_label:
        out.append(Line2D([], [], color=REFERENCE_COLOR, ls="--", label=reference_label))
    if truth:
        out.append(Line2D([], [], color=TRUTH_COLOR, marker="s", ms=4, label=r"true $\theta$"))
    return out


def rank_plot(ranks, num_samples, kind="ecdf", labels=None, path=None, confidence=0.95, seed=0, dpi=150):
    """SBC ranks (m, d) in 0..num_samples: ``kind="ecdf"`` draws ECDF(u) - u per dimension with the
    simultaneous ``confidence`` band (``diagnostics.ecdf_band``); ``"hist"`` one histogram per
    dimension with the pointwise binomial ``confidence`` band of a uniform."""
    from .diagnostics import ecdf_band
    ranks = np.asarray(ranks)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    m, d = ranks.shape
    n = int(num_samples)
    labels = list(labels) if labels is not None else [rf"$\theta_{{{j + 1}}}$" for j in range(d)]
    if kind == "ecdf":
        fig, axes = _figure(path, (4.2, 3.4))
        ax = axes[0, 0]
        z, lower, upper = ecdf_band(m, n, confidence=confidence, seed=seed)
        ax.fill_between(z, lower - z, upper - z, color="0.85", label=f"{confidence:.0%} band (uniform)")
        for j in range(d):
            u = np.sort((ranks[:, j] + 0.5) / (n + 1))
            ecdf = np.searchsorted(u, z, side="left") / m
            ax.plot(z, ecdf - z, lw=1.3, label=labels[j])
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xlabel("fractional rank $u$")
        ax.set_ylabel("ECDF$(u) - u$")
        ax.set_xlim(0, 1)
        ax.legend(frameon=False, fontsize=8)
        _tidy(ax)
        ax.set_title(f"SBC: {m} rounds x {n} samples", fontsize=9)
    elif kind == "hist":
        fig, axes = _figure(path, (3.0 * d, 2.6), 1, d)
        bins = max(2, min(20, m // 10, n + 1))
        edges = np.linspace(-0.5, n + 0.5, bins + 1)
        p = 1.0 / bins
        z = _normal_quantile(0.5 + confidence / 2)
        mean, sd = m * p, np.sqrt(m * p * (1 - p))
        for j, ax in enumerate(axes[0]):
            ax.axhspan(mean - z * sd, mean + z * sd, color="0.85", lw=0)
            ax.axhline(mean, color="0.4", lw=0.8)
            ax.hist(ranks[:, j], bins=edges, histtype="stepfilled", color=POSTERIOR_COLOR, alpha=0.35)
            ax.hist(ranks[:, j], bins=edges, histtype="step", color=POSTERIOR_COLOR)
            ax.set_xlabel(f"rank of {labels[j]}")
            ax.set_xlim(-0.5, n + 0.5)
            _tidy(ax)
        axes[0, 0].set_ylabel("count")
    else:
        raise ValueError(f"kind must be 'ecdf' or 'hist', got {kind!r}")
    fig.tight_layout()
    return _finish(fig, path, dpi)


def _normal_quantile(p):
    """Phi^-1(p) by bisection on erf (stdlib math; p in (0, 1))."""
    import math
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def coverage_plot(levels, coverage, m, path=None, label="HPD coverage", title="Expected coverage",
                  confidence=0.95, dpi=150, ax=None):
    """Expected coverage against the credibility level with the diagonal (calibrated) and the
    pointwise binomial ``confidence`` band for m observations; below the diagonal is
    over-confident, above under-confident. Also draws TARP's ECP curve (levels = alpha)."""
    levels, coverage = np.asarray(levels, dtype=float), np.asarray(coverage, dtype=float)
    if levels.shape != coverage.shape or levels.ndim != 1:
        raise ValueError(f"levels and coverage must be 1-D of one length, got {levels.shape} and {coverage.shape}")
    own = ax is None
    if own:
        fig, axes = _figure(path, (3.6, 3.6))
        ax = axes[0, 0]
    else:
        fig = ax.figure
    grid = np.linspace(0, 1, 201)
    z = _normal_quantile(0.5 + confidence / 2)
    half = z * np.sqrt(grid * (1 - grid) / max(int(m), 1))
    ax.fill_between(grid, grid - half, grid + half, color="0.85", lw=0, label=f"{confidence:.0%} band")
    ax.plot([0, 1], [0, 1], color="0.3", lw=0.8, ls="--")
    ax.plot(levels, coverage, "-o", color=POSTERIOR_COLOR, ms=3, lw=1.3, label=label)
    ax.text(0.97, 0.05, "over-confident", ha="right", va="bottom", fontsize=7, color="0.4", transform=ax.transAxes)
    ax.text(0.03, 0.95, "under-confident", ha="left", va="top", fontsize=7, color="0.4", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage")
    ax.set_title(title, fontsize=9)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.9))
    _tidy(ax, 5)
    if own:
        fig.tight_layout()
        return _finish(fig, path, dpi)
    return fig


def tarp_plot(alpha, ecp, m, atc=None, path=None, dpi=150):
    """TARP's expected coverage probability against alpha, in ``coverage_plot``'s style."""
    title = "TARP" + ("" if atc is None else f" (ATC {atc:+.3f})")
    return coverage_plot(alpha, ecp, m, path=path, label="ECP", title=title, dpi=dpi)
