"""Fuzzing the public API with random shapes, dtypes and NaN/inf placements (Hypothesis).

Property: a call either returns a well-formed result (shapes as documented; no NaN where the
API promises none) or raises one of the package's own exceptions (ValueError, or RuntimeError
for "cannot finish", e.g. rejection sampling), never a TypeError/IndexError/LinAlgError from
deep inside numpy, and never a numpy floating-point warning (an unchecked NaN/inf/overflow).
Targets: priors, NPSE (constructor and data), sample, log_prob, and load on damaged files.

The number of examples per target is ``SNPSE_FUZZ_EXAMPLES`` (default 60: the whole file runs in
well under a minute in CI; the closing note's run used more); ``SNPSE_FUZZ_RANDOM=1`` draws
fresh inputs instead of the fixed derandomized ones. Inputs tried are counted in ``TRIED`` and
printed at the end of the module (``pytest -s``).
"""
import collections
import json
import os
import warnings
import zipfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import snpse_np as sn  # noqa: E402

EXAMPLES = int(os.environ.get("SNPSE_FUZZ_EXAMPLES", "60"))
# derandomized (the same inputs every run, so CI is reproducible) unless SNPSE_FUZZ_RANDOM=1
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("SNPSE_FUZZ_RANDOM") != "1",
                database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
ALLOWED = (ValueError, RuntimeError)  # TruncationError, FloatingPointError's ... are RuntimeError / ArithmeticError
TRIED = collections.Counter()
NUMPY_WARNINGS = ("invalid value encountered", "overflow encountered", "divide by zero encountered",
                  "Casting complex values")


def _call(target, fn):
    """Run fn(); ValueError/RuntimeError are fine; numpy floating-point warnings are failures."""
    TRIED[target] += 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except ALLOWED:
            out = None
    bad = [str(w.message) for w in caught if any(p in str(w.message) for p in NUMPY_WARNINGS)]
    assert not bad, f"{target}: numpy warnings {bad}"
    return out


# ----------------------------------------------------------------------------- strategies

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
NICE = st.floats(-3.0, 3.0, allow_nan=False, width=64)
DTYPES = st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex128, "U3", object])


@st.composite
def arrays(draw, shape=None, nice=False):
    """Arrays of a random dtype and shape (or the given one), floats with NaN/inf anywhere."""
    dtype = draw(DTYPES) if not nice else np.float64
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    if dtype is object:
        flat = draw(st.lists(st.one_of(FLOATS, st.none(), st.text(max_size=2), st.complex_numbers()),
                             min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        a = np.empty(int(np.prod(shape)), dtype=object)
        a[:] = flat
        return a.reshape(shape)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        elements = NICE if nice else FLOATS
        if dt == np.float32:
            elements = elements.map(lambda v: float(np.float32(v)) if abs(v) < 3e38 or not np.isfinite(v) else v)
        return draw(hnp.arrays(dt, shape, elements=elements.filter(lambda v: dt != np.float32 or abs(v) < 3e38
                                                                    or not np.isfinite(v))))
    if dt.kind == "c":
        return draw(hnp.arrays(dt, shape, elements=st.complex_numbers(allow_nan=True, allow_infinity=True)))
    return draw(hnp.arrays(dt, shape))


@st.composite
def rows(draw, d, max_rows=6):
    """(n, d) float arrays (mostly the right width), entries with NaN/inf placed at random."""
    n = draw(st.integers(0, max_rows))
    width = draw(st.sampled_from([d, d, d, d - 1, d + 1, 0]))
    a = draw(hnp.arrays(np.float64, (n, max(width, 0)), elements=st.one_of(NICE, FLOATS)))
    return a if draw(st.booleans()) or n == 0 else a[0]


ANY_COUNT = st.one_of(st.integers(-2, 6), st.sampled_from([2.5, 1e1, np.nan, True, None, "3", np.int64(4)]))

# ----------------------------------------------------------------------------- priors

def _check_prior(prior, theta, n):
    s = prior.sample(n, seed=0)
    assert s.shape == (int(n), prior.dim) and np.all(np.isfinite(s))
    assert np.all(prior.support_contains(s))
    lp = prior.log_prob(theta)
    assert lp.ndim == 1 and not np.any(np.isnan(lp))
    assert np.all(np.isfinite(prior.log_prob(s)))


@st.composite
def prior_params(draw):
    """Mostly well-formed (d,) parameters (d,) / (d, d) for a prior, sometimes anything."""
    kind = draw(st.sampled_from(["box", "normal", "lognormal", "mvn"]))
    if draw(st.integers(0, 3)) == 0:
        return kind, draw(arrays()), draw(arrays())
    d = draw(st.integers(1, 3))
    a = draw(hnp.arrays(np.float64, (d,), elements=NICE))
    if kind == "box":
        b = a + draw(hnp.arrays(np.float64, (d,), elements=st.floats(1e-3, 5.0)))
    elif kind == "mvn":
        m = draw(hnp.arrays(np.float64, (d, d), elements=NICE))
        b = m @ m.T + draw(st.floats(1e-3, 2.0)) * np.eye(d)
    else:
        b = draw(hnp.arrays(np.float64, (d,), elements=st.floats(1e-3, 5.0)))
    # a few entries made NaN/inf, a shape made wrong, or a dtype changed
    spoil = draw(st.sampled_from(["none", "none", "none", "nan", "shape", "dtype"]))
    if spoil == "nan":
        b = b.copy()
        b.flat[draw(st.integers(0, b.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif spoil == "shape":
        b = np.append(b.ravel(), 1.0)
    elif spoil == "dtype":
        b = b.astype(draw(st.sampled_from([np.complex128, np.int64, np.float32, object, "U8"])))
    return kind, a, b


@FUZZ
@given(params=prior_params(), theta=st.one_of(rows(1), rows(2), rows(3), arrays()), n=ANY_COUNT)
def test_priors(params, theta, n):
    kind, a, b = params

    def make():
        if kind == "box":
            return sn.BoxUniform(a, b)
        if kind == "normal":
            return sn.Normal(a, b)
        if kind == "lognormal":
            return sn.LogNormal(a, b)
        return sn.MultivariateNormal(a, cov=b)
    prior = _call("prior constructor", make)
    if prior is None:
        return
    assert prior.dim >= 1
    _call("prior sample/log_prob", lambda: _check_prior(prior, theta, n))


# ----------------------------------------------------------------------------- NPSE

@FUZZ
@given(theta=st.one_of(rows(2, max_rows=8), arrays()), x=st.one_of(rows(3, max_rows=8), arrays()),
       hidden=st.one_of(st.just(8), st.integers(-3, 8), st.floats(-2, 9)),
       sde=st.sampled_from(["ve", "ve", "vp", "subvp", "edm", 3]),
       floor=st.one_of(st.just(0.1), FLOATS, st.integers(-1, 2)))
def test_npse_constructor_and_data(theta, x, hidden, sde, floor):
    prior = sn.BoxUniform(-np.ones(2), np.ones(2))
    inference = _call("NPSE constructor", lambda: sn.NPSE(prior, sde=sde, hidden=hidden, floor=floor,
                                                          backend="numpy", show_progress=False))
    if inference is None:
        return

    def append():
        inference.append_simulations(theta, x)
        th, xs = inference.get_simulations()
        assert th.ndim == 2 and th.shape[1] == 2 and xs.shape[0] == th.shape[0]
        assert np.all(np.isfinite(th)) and np.all(np.isfinite(xs))
    if isinstance(x, np.ndarray) and x.ndim == 2 and isinstance(theta, np.ndarray) and theta.ndim == 2:
        x = x[:theta.shape[0]]
        theta = theta[:x.shape[0]]
    _call("NPSE append_simulations", append)


@FUZZ
@given(th=rows(2, max_rows=40), noise=st.floats(0.0, 2.0), const=st.booleans(), outside=st.booleans(),
       huge=st.sampled_from([None, 1e30, 1e160, 1e300]))
def test_npse_trains_or_refuses_degenerate_data(th, noise, const, outside, huge):
    prior = sn.BoxUniform(-np.ones(2), np.ones(2))
    theta = np.clip(np.nan_to_num(np.atleast_2d(th) if th.size else th.reshape(0, 2)), -1, 1)
    if theta.ndim != 2 or theta.shape[1] != 2:
        return
    x = theta + noise * np.random.default_rng(0).standard_normal(theta.shape)
    if const and len(x):
        x[:, 1] = 2.0
    if outside and len(theta):
        theta[0, 0] = 1.5
    if huge is not None and len(x):
        x[-1, 0] = huge

    def train():
        inf = sn.NPSE(prior, backend="numpy", hidden=8, show_progress=False)
        post = inf.append_simulations(theta, x).train(max_epochs=1, min_steps_per_epoch=2)
        s = post.sample(3, x=x[0], seed=0, method="euler", steps=3)
        assert s.shape == (3, 2) and np.all(np.isfinite(s))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is constant", category=RuntimeWarning)
        _call("NPSE train on degenerate data", train)


# ----------------------------------------------------------------------------- sample / log_prob

@pytest.fixture(scope="module")
def post():
    prior = sn.BoxUniform(-np.ones(2), np.ones(2))
    theta = prior.sample(200, seed=0)
    x = theta + 0.1 * np.random.default_rng(1).standard_normal(theta.shape)
    inference = sn.NPSE(prior, backend="numpy", hidden=8, show_progress=False, seed=0)
    return inference.append_simulations(theta, x).train(max_epochs=1, min_steps_per_epoch=5)


ANY_NUMBER = st.one_of(st.integers(-3, 12), FLOATS, st.sampled_from([None, "3", True, 2.5, [1]]))


@FUZZ
@given(n=ANY_NUMBER, x=st.one_of(arrays(), rows(2, max_rows=2)), sampler=st.sampled_from(["ode", "sde", "pc", "x"]),
       method=st.sampled_from([None, "euler", "heun", "rk4", "rk45", "bogus"]), steps=ANY_NUMBER,
       batch_size=ANY_NUMBER, rtol=ANY_NUMBER, snr=ANY_NUMBER, corrector_steps=ANY_NUMBER, reject=st.booleans())
def test_sample(post, n, x, sampler, method, steps, batch_size, rtol, snr, corrector_steps, reject):
    if isinstance(steps, int) and steps > 12:
        steps = 12  # keep the run short; large step counts are not an input problem

    def run():
        s = post.sample(n, x=x, sampler=sampler, method=method, steps=steps, batch_size=batch_size, rtol=rtol,
                        atol=rtol, snr=snr, corrector_steps=corrector_steps, seed=0, reject_outside_prior=reject,
                        max_rejection_rounds=3)
        assert s.shape == (int(n), 2) and s.dtype == np.float64
        assert not np.any(np.isnan(s))
        if reject:
            assert np.all(post.prior.support_contains(s))
    _call("sample", run)


@FUZZ
@given(theta=st.one_of(arrays(), rows(2, max_rows=8)), x=st.one_of(rows(2, max_rows=1), arrays()),
       method=st.sampled_from(["rk4", "euler", "rk45", "heun", "bogus"]), steps=ANY_NUMBER,
       batch_size=st.one_of(st.none(), ANY_NUMBER), exact=st.booleans())
def test_log_prob(post, theta, x, method, steps, batch_size, exact):
    if isinstance(steps, int) and steps > 12:
        steps = 12

    def run():
        lp = post.log_prob(theta, x=x, method=method, steps=steps, batch_size=batch_size, exact=exact, seed=0)
        t = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        assert lp.shape == (t.shape[0],) and not np.any(np.isnan(lp))
        bad = ~np.all(np.isfinite(t), axis=1) | ~post.prior.support_contains(np.nan_to_num(t))
        assert np.all(lp[bad] == -np.inf)
    _call("log_prob", run)


# ----------------------------------------------------------------------------- load

@pytest.fixture(scope="module")
def good_file(post, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz_load") / "good.npz"
    post.save(path)
    return path


def _mutate_meta(meta, key_path, value):
    node = meta
    for k in key_path[:-1]:
        node = node[k]
    node[key_path[-1]] = value


META_PATHS = [("version",), ("net", "theta_sizes"), ("net", "x_sizes"), ("net", "head_sizes"), ("net", "activation"),
              ("net", "t_embed_dim"), ("sde",), ("sde", "name"), ("sde", "sigma_min"), ("sde", "sigma_max"),
              ("sde", "t_min"), ("precondition",), ("time_input",), ("floor",), ("dtype",), ("prior",),
              ("prior_type",)]
JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=False),
                                     st.text(max_size=6), st.sampled_from(["ve", "vp", "silu", "float32", "Normal",
                                                                           "BoxUniform", "noise", "sigma"])),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                           max_leaves=6)


@FUZZ
@given(how=st.sampled_from(["truncate", "flip", "drop", "replace", "meta"]), where=st.floats(0.0, 1.0),
       byte=st.integers(0, 255), key=st.sampled_from(["params", "theta_mean", "theta_std", "x_mean", "x_std", "meta",
                                                     "prior_low", "prior_high", "theta_constant", "x_constant"]),
       value=arrays(), meta_path=st.sampled_from(META_PATHS), meta_value=JSON_VALUES)
def test_load_damaged_files(good_file, tmp_path_factory, how, where, byte, key, value, meta_path, meta_value):
    raw = good_file.read_bytes()
    path = tmp_path_factory.mktemp("damaged") / "p.npz"
    if how == "truncate":
        path.write_bytes(raw[:int(where * len(raw))])
    elif how == "flip":
        i = min(int(where * len(raw)), len(raw) - 1)
        path.write_bytes(raw[:i] + bytes([byte]) + raw[i + 1:])
    else:
        with np.load(good_file) as f:
            arrays_ = {k: f[k] for k in f.files}
        if how == "drop":
            arrays_.pop(key, None)
        elif how == "replace":
            arrays_[key] = value
        else:
            meta = json.loads(str(arrays_["meta"]))
            try:
                _mutate_meta(meta, meta_path, meta_value)
            except (TypeError, KeyError):
                return
            arrays_["meta"] = np.array(json.dumps(meta))
        np.savez(path, **arrays_)

    def run():
        p = sn.load(path, backend="numpy")
        s = p.sample(2, x=[0.1, 0.2], seed=0, method="euler", steps=2)
        assert s.shape == (2, p.dim_theta)
    try:
        _call("load damaged file", run)
    except zipfile.BadZipFile as err:  # must have become a ValueError
        raise AssertionError(f"load let {err!r} through") from None


def test_zz_report_inputs_tried():
    """Prints the number of inputs tried per target (run with -s)."""
    print("\nfuzz inputs tried:", dict(TRIED), "total", sum(TRIED.values()))
    assert sum(TRIED.values()) > 0
