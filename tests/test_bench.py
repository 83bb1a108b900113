"""The benchmark's bookkeeping (snpse_np.bench): observation lists, the rows a summary keeps,
the published references, the tables and figure, and one tiny run end to end."""
import csv
import os

import numpy as np
import pytest

from snpse_np import bench


def _row(task="two_moons", method="npse", sde="ve", budget=1000, obs=1, seed=0, c2st=0.6, version="0.3.0"):
    return dict(task=task, method=method, sde=sde, budget=str(budget), observation=str(obs), seed=str(seed),
                c2st=str(c2st), c2st_classifier="fast", mean_error="0.1", variance_ratio="1.0", train_seconds="10",
                sample_seconds="2", truncation_seconds="0", simulations=str(budget), backend="numba", machine="m",
                version=version)


def test_parse_obs():
    assert bench.parse_obs("1-5") == [1, 2, 3, 4, 5]
    assert bench.parse_obs("1,3,7") == [1, 3, 7]
    assert bench.parse_obs("2-3,9") == [2, 3, 9]
    for bad in ("0-2", "11", "3-12"):
        with pytest.raises(ValueError, match="1..10"):
            bench.parse_obs(bad)


def test_latest_rows_keeps_newest_version_and_last_rerun():
    rows = [_row(obs=1, c2st=0.9, version="0.2.0"), _row(obs=2, c2st=0.9, version="0.2.0"),
            _row(obs=1, c2st=0.7, version="0.10.0"), _row(obs=1, c2st=0.6, version="0.10.0"),  # rerun supersedes
            _row(obs=1, c2st=0.8, version="0.2.0", sde="vp")]  # another cell keeps its only version
    kept = bench.latest_rows(rows)
    ve = [r for r in kept if r["sde"] == "ve"]
    assert [(r["observation"], r["c2st"], r["version"]) for r in ve] == [("1", "0.6", "0.10.0")]  # 0.10 > 0.2
    assert [(r["sde"], r["c2st"]) for r in kept if r["sde"] == "vp"] == [("vp", "0.8")]


def test_published_c2st_matches_sbibm_results():
    """The packaged extract equals the mean of sbibm's main_paper.csv where ../shared has it."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "sbibm", "results", "main_paper.csv")
    if not os.path.exists(path):
        pytest.skip("sbibm's results table is not on this machine")
    with open(path) as fh:
        vals = [float(r["C2ST"]) for r in csv.DictReader(fh) if r["task"] == "slcp" and r["algorithm"] == "SNPE"
                and r["num_simulations"] == "10⁴" and int(r["num_observation"]) in (1, 2, 3)]
    assert len(vals) == 3
    assert bench.published_c2st("slcp", 10_000, "SNPE", [1, 2, 3]) == pytest.approx(np.mean(vals), abs=1e-9)
    assert bench.published_c2st("slcp", 12_345, "SNPE", [1]) is None


def test_tables_split_tuning_and_checking_observations():
    rows = [_row(obs=k, c2st=0.5 + 0.01 * k) for k in range(1, 11)]
    text = bench.summary_table(rows)
    line = [ln for ln in text.splitlines() if ln.startswith("two_moons")][0].split()
    assert line[3:6] == ["10", f"{np.mean([0.51, 0.52, 0.53, 0.54, 0.55]):.3f}",
                         f"{np.mean([0.56, 0.57, 0.58, 0.59, 0.60]):.3f}"]
    md = bench.markdown_table(rows)
    cells = [c.strip() for c in md.splitlines()[2].split("|")[1:-1]]
    assert cells[:6] == ["two_moons", "npse-ve", "1000", "0.3.0", "0.530", "0.580"]
    assert cells[6] == " ".join(f"{0.5 + 0.01 * k:.2f}" for k in range(1, 11))
    assert cells[7] == f"{bench.published_c2st('two_moons', 1000, 'NPE', list(range(1, 11))):.3f}"


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [_row(task=t, budget=b, obs=k, c2st=0.6) for t in ("two_moons", "slcp") for b in (1000, 10000)
            for k in (1, 2)]
    path = tmp_path / "c2st.png"
    bench.plot_c2st(rows, str(path))
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no rows"):
        bench.plot_c2st([], str(tmp_path / "empty.png"))


def test_append_csv_row_writes_header_once(tmp_path):
    path = tmp_path / "sub" / "rows.csv"
    for k in (1, 2):
        bench.append_csv_row(str(path), _row(obs=k), bench.FIELDS)
    rows = bench.read_rows(str(path))
    assert [r["observation"] for r in rows] == ["1", "2"]
    assert list(rows[0]) == bench.FIELDS


def test_run_benchmark_end_to_end(tmp_path):
    """A tiny amortised run: one network, two observations scored against sbibm's references."""
    path = tmp_path / "rows.csv"
    rows = bench.run_benchmark("gaussian_linear", budget=600, observations=[1, 2], num_samples=500,
                               csv_path=str(path), show_progress=False, train_kwargs=dict(max_steps=300))
    assert [r["observation"] for r in rows] == [1, 2]
    assert rows[0]["train_seconds"] == rows[1]["train_seconds"]  # one network serves both
    for r in rows:
        assert 0.5 <= r["c2st"] <= 1.0 and np.isfinite(r["mean_error"])
    assert len(bench.read_rows(str(path))) == 2


def test_run_benchmark_with_a_baseline_labels_its_rows(tmp_path):
    """Rows of a baseline run name it in the method, so they form their own cell in the tables."""
    rows = bench.run_benchmark("gaussian_linear", budget=600, observations=[1], num_samples=300,
                               show_progress=False, train_kwargs=dict(max_steps=200), baseline="auto")
    assert rows[0]["method"] == "npse/auto" and 0.5 <= rows[0]["c2st"] <= 1.0
    assert "npse/auto-ve" in bench.summary_table(rows)
