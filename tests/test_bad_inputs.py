"""A table of bad inputs across the public API: each must raise the named exception with a message
that says what is wrong (a phrase of it is asserted), at the boundary where it was passed, not
deep inside numpy, and never run on to return wrong numbers.

Rows: (id, call taking the shared context, exception type, phrase). The context holds a tiny
trained posterior (numpy backend, a few Adam steps: these tests are about checks, not accuracy),
damaged posterior files, and a CLI runner. Train-argument checks (lr=nan, init_params as a list,
batch_size of train) belong to ``NPSE.train`` and are tested with it.
"""
import contextlib
import io
import json
import re
import warnings

import numpy as np
import pytest

import snpse_np as sn
from snpse_np.sde import VESDE, VPSDE, make_sde, sde_from_config
from snpse_np.simulate import simulate
from snpse_np.truncation import TruncatedPrior

PRIOR = sn.BoxUniform(-np.ones(2), np.ones(2))
X_O = np.array([0.1, -0.2])


def _sim(theta, seed=None):
    return theta + 0.1 * np.random.default_rng(seed).standard_normal(theta.shape)


def _train(theta, x, prior=PRIOR):
    inference = sn.NPSE(prior, backend="numpy", hidden=16, show_progress=False, seed=0)
    return inference.append_simulations(theta, x).train(max_epochs=1, min_steps_per_epoch=5)


class CLIExit(Exception):
    """The CLI exited with status 2; the message is what it wrote to stderr."""


def _cli(*argv):
    from snpse_np.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(list(argv))
        except SystemExit as exc:
            if exc.code == 2:
                raise CLIExit(err.getvalue()) from None
            raise
    raise AssertionError("the CLI did not exit with status 2")


class ShiftedBox(sn.BoxUniform):
    """A custom prior: its posterior file cannot store it."""


class Ctx:
    pass


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    ctx = Ctx()
    d = tmp_path_factory.mktemp("bad_inputs")
    ctx.dir = d
    theta = PRIOR.sample(300, seed=0)
    ctx.theta, ctx.x = theta, _sim(theta, seed=1)
    ctx.post = _train(ctx.theta, ctx.x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the constant column's warning
        ctx.post_const = _train(theta, np.column_stack([ctx.x, np.full(300, 3.0)]))
    ctx.good = d / "good.npz"
    ctx.post.save(ctx.good)
    with np.load(ctx.good) as f:
        good = {k: f[k] for k in f.files}
    meta = json.loads(str(good["meta"]))

    def variant(name, drop=(), meta_change=None, **arrays):
        a = {k: v for k, v in good.items() if k not in drop}
        if meta_change is not None:
            m = json.loads(json.dumps(meta))
            meta_change(m)
            a["meta"] = np.array(json.dumps(m))
        a.update(arrays)
        path = d / f"{name}.npz"
        np.savez(path, **a)
        return path

    ctx.files = dict(
        text=d / "text.npz", empty=d / "empty.npz", truncated=d / "truncated.npz",
        missing=variant("missing", drop=("theta_std", "x_mean")),
        meta_json=variant("meta_json", meta=np.array("{not json")),
        meta_dtype=variant("meta_dtype", meta_change=lambda m: m.update(dtype="int8")),
        meta_prior=variant("meta_prior", meta_change=lambda m: m.update(prior="system")),
        meta_net=variant("meta_net", meta_change=lambda m: m["net"].update(theta_sizes=[2, -16, 30])),
        meta_sde=variant("meta_sde", meta_change=lambda m: m["sde"].update(name="edm")),
        meta_key=variant("meta_key", meta_change=lambda m: m.pop("precondition")),
        params=variant("params", params=good["params"][:-3]),
        params_nan=variant("params_nan", params=np.full_like(good["params"], np.nan)),
        std=variant("std", theta_std=-good["theta_std"]),
        prior_arrays=variant("prior_arrays", drop=("prior_high",)),
        prior_values=variant("prior_values", prior_low=np.array([2.0, 2.0])),
        pickled=variant("pickled", default_x=np.array([object()], dtype=object)),
        default_x=variant("default_x", default_x=np.array([1.0, 2.0, 3.0])),
        meta_array=variant("meta_array", meta=np.arange(3)),
    )
    ctx.files["text"].write_text("theta_1,theta_2\n0.1,0.2\n")
    ctx.files["empty"].write_bytes(b"")
    raw = ctx.good.read_bytes()
    ctx.files["truncated"].write_bytes(raw[:len(raw) // 2])
    custom = _train(theta, ctx.x, prior=ShiftedBox(-np.ones(2), np.ones(2)))
    ctx.files["custom"] = d / "custom.npz"
    with pytest.warns(UserWarning, match="not stored"):
        custom.save(ctx.files["custom"])
    return ctx


def _append(theta, x, **kw):
    return sn.NPSE(PRIOR, backend="numpy", show_progress=False).append_simulations(theta, x, **kw)


def _wrong_rows(theta):
    return np.zeros((theta.shape[0] + 1, 2))


def _complex_x(theta):
    return theta + 1j


TH = PRIOR.sample(50, seed=3)
XX = _sim(TH, seed=4)

ROWS = [
    # ------------------------------------------------------------------ priors
    ("box low/high shapes", lambda c: sn.BoxUniform([0, 0], [1]), ValueError, "same shape"),
    ("box high <= low", lambda c: sn.BoxUniform([1], [0]), ValueError, "high > low"),
    ("box NaN bound", lambda c: sn.BoxUniform([np.nan], [1]), ValueError, "must be finite"),
    ("box empty", lambda c: sn.BoxUniform([], []), ValueError, "non-empty 1-D"),
    ("box 2-D bounds", lambda c: sn.BoxUniform([[0, 0]], [[1, 1]]), ValueError, "1-D array"),
    ("box string bounds", lambda c: sn.BoxUniform(["a"], [1]), ValueError, "real numbers"),
    ("normal loc/scale shapes", lambda c: sn.Normal([0.0], [1.0, 2.0]), ValueError,
     "loc and scale must have the same shape"),
    ("lognormal loc/scale shapes", lambda c: sn.LogNormal([0.0, 0.0, 0.0], [1.0, 2.0]), ValueError,
     "loc and scale must have the same shape"),
    ("normal scale <= 0", lambda c: sn.Normal([0], [-1]), ValueError, "scale > 0"),
    ("normal complex loc", lambda c: sn.Normal([1j], [1.0]), ValueError, "complex"),
    ("normal inf scale", lambda c: sn.Normal([0.0], [np.inf]), ValueError, "must be finite"),
    ("mvn cov shape", lambda c: sn.MultivariateNormal([0, 0], cov=np.eye(3)), ValueError, "shape (2, 2)"),
    ("mvn not positive definite", lambda c: sn.MultivariateNormal([0, 0], cov=[[1, 2], [2, 1]]), ValueError,
     "positive definite"),
    ("mvn cov with inf", lambda c: sn.MultivariateNormal([0, 0], cov=[[np.inf, 0], [0, 1]]), ValueError,
     "must be finite"),
    ("mvn cov and precision", lambda c: sn.MultivariateNormal([0, 0], cov=np.eye(2), precision=np.eye(2)),
     ValueError, "exactly one of cov or precision"),
    ("mvn singular precision", lambda c: sn.MultivariateNormal([0, 0], precision=np.ones((2, 2))), ValueError,
     "positive definite"),
    ("mvn asymmetric", lambda c: sn.MultivariateNormal([0, 0], cov=[[1, 0.5], [0, 1]]), ValueError, "symmetric"),
    ("prior.sample 2.5", lambda c: PRIOR.sample(2.5), ValueError, "number of samples must be an int"),
    ("prior.sample -1", lambda c: PRIOR.sample(-1), ValueError, "must be an int >= 0"),
    ("prior.sample True", lambda c: PRIOR.sample(True), ValueError, "must be an int"),
    ("prior.log_prob wrong dim", lambda c: PRIOR.log_prob(np.zeros((4, 3))), ValueError, "shape (n, 2)"),
    ("prior.log_prob complex", lambda c: PRIOR.log_prob(np.zeros((4, 2)) + 1j), ValueError, "complex"),
    ("prior.sample_in_box no mass", lambda c: PRIOR.sample_in_box(5, [2, 2], [3, 3]), ValueError, "no prior mass"),
    # ------------------------------------------------------------------ SDEs
    ("ve sigma_min NaN", lambda c: VESDE(sigma_min=np.nan), ValueError, "sigma_min must be finite"),
    ("ve sigma_max < sigma_min", lambda c: VESDE(1.0, 0.5), ValueError, "sigma_max must exceed sigma_min"),
    ("vp beta_max inf", lambda c: VPSDE(beta_max=np.inf), ValueError, "beta_max must be finite"),
    ("vp beta order", lambda c: VPSDE(5.0, 1.0), ValueError, "0 <= beta_min < beta_max"),
    ("t_min 0", lambda c: VESDE(t_min=0.0), ValueError, "t_min must lie in (0, 1)"),
    ("unknown sde", lambda c: make_sde("edm"), ValueError, "unknown sde"),
    ("sde kwargs with instance", lambda c: make_sde(VESDE(), sigma_min=0.1), ValueError, "SDE instance"),
    ("sde config unknown key", lambda c: sde_from_config(dict(name="vp", sigma_min=1.0)), ValueError,
     "unknown parameters"),
    ("ve unset sigma_max", lambda c: VESDE().marginal(0.5), RuntimeError, "sigma_max is not set"),
    # ------------------------------------------------------------------ NPSE
    ("npse prior", lambda c: sn.NPSE(object()), ValueError, "prior must be a snpse_np prior"),
    ("npse hidden 0", lambda c: sn.NPSE(PRIOR, hidden=0), ValueError, "hidden must be an int >= 1"),
    ("npse hidden -5", lambda c: sn.NPSE(PRIOR, hidden=-5), ValueError, "hidden must be an int >= 1"),
    ("npse hidden 2.5", lambda c: sn.NPSE(PRIOR, hidden=2.5), ValueError, "hidden must be an int"),
    ("npse activation", lambda c: sn.NPSE(PRIOR, activation="swish"), ValueError, "unknown activation"),
    ("npse floor NaN", lambda c: sn.NPSE(PRIOR, floor=np.nan), ValueError, "floor must be finite"),
    ("npse dtype", lambda c: sn.NPSE(PRIOR, dtype=np.int32), ValueError, "dtype must be float32 or float64"),
    ("npse sde name", lambda c: sn.NPSE(PRIOR, sde="edm"), ValueError, "unknown sde"),
    ("npse backend", lambda c: sn.NPSE(PRIOR, backend="tpu"), ValueError, "unknown backend"),
    ("npse precondition", lambda c: sn.NPSE(PRIOR, precondition="edm"), ValueError, "precondition must be"),
    ("npse seed float", lambda c: sn.NPSE(PRIOR, seed=1.5), ValueError, "seed must be"),
    ("npse sde beta NaN", lambda c: sn.NPSE(PRIOR, sde="vp", beta_max=np.nan), ValueError, "beta_max must be finite"),
    # ------------------------------------------------------------------ appended data
    ("theta 1-D", lambda c: _append(TH[:, 0], XX), ValueError, "theta must be a 2-D array"),
    ("row counts", lambda c: _append(TH, XX[:-1]), ValueError, "same number of rows"),
    ("no rows", lambda c: _append(TH[:0], XX[:0]), ValueError, "no simulations given"),
    ("x 0 columns", lambda c: _append(TH, XX[:, :0]), ValueError, "at least one column"),
    ("theta columns", lambda c: _append(np.c_[TH, TH], XX), ValueError, "expected dim_theta = 2"),
    ("theta NaN", lambda c: _append(np.where(TH > 0.9, np.nan, TH), XX), ValueError, "theta contains NaN"),
    ("x all NaN", lambda c: _append(TH, XX * np.nan), ValueError, "nothing left to train on"),
    ("theta outside prior", lambda c: _append(TH * 3.0, XX), ValueError, "outside the prior's support"),
    ("x 1e300", lambda c: _append(TH, np.where(np.arange(50)[:, None] == 7, 1e300, XX)), ValueError,
     "x column 0 (0-based) cannot be z-scored"),
    ("x complex", lambda c: _append(TH, XX + 1j), ValueError, "x must be real"),
    ("x strings", lambda c: _append(TH, XX.astype(str)), ValueError, "x must be an array of real numbers"),
    ("x NaN refused", lambda c: _append(TH, np.where(np.arange(50)[:, None] == 3, np.nan, XX),
                                        exclude_invalid_x=False), ValueError, "NaN or inf in 1 rows"),
    ("x dim changes", lambda c: _append(TH, XX).append_simulations(TH, np.c_[XX, XX]), ValueError,
     "expected dim_x = 2"),
    ("no simulations", lambda c: sn.NPSE(PRIOR).get_simulations(), ValueError, "no simulations appended"),
    ("no posterior", lambda c: sn.NPSE(PRIOR).build_posterior(), ValueError, "train() has not run"),
    # ------------------------------------------------------------------ sample
    ("sample n -1", lambda c: c.post.sample(-1, x=X_O), ValueError, "n must be an int >= 0"),
    ("sample n 2.5", lambda c: c.post.sample(2.5, x=X_O), ValueError, "n must be an int"),
    ("sample batch_size -1", lambda c: c.post.sample(5, x=X_O, batch_size=-1), ValueError,
     "batch_size must be an int >= 1"),
    ("sample batch_size 0", lambda c: c.post.sample(5, x=X_O, batch_size=0), ValueError,
     "batch_size must be an int >= 1"),
    ("sample rtol < 0", lambda c: c.post.sample(5, x=X_O, rtol=-1.0), ValueError, "rtol must be > 0"),
    ("sample atol NaN", lambda c: c.post.sample(5, x=X_O, atol=np.nan), ValueError, "atol must be finite"),
    ("sample sampler", lambda c: c.post.sample(5, x=X_O, sampler="ddim"), ValueError, "unknown sampler"),
    ("sample method", lambda c: c.post.sample(5, x=X_O, method="rk3"), ValueError, "unknown ODE method"),
    ("sample method with sde", lambda c: c.post.sample(5, x=X_O, sampler="sde", method="rk4"), ValueError,
     "method applies to sampler='ode' only"),
    ("sample steps with rk45", lambda c: c.post.sample(5, x=X_O, method="rk45", steps=20), ValueError,
     "steps does not apply to the adaptive rk45"),
    ("sample steps 0", lambda c: c.post.sample(5, x=X_O, method="euler", steps=0), ValueError,
     "steps must be an int >= 1"),
    ("sample corrector_steps < 0", lambda c: c.post.sample(5, x=X_O, sampler="pc", corrector_steps=-1),
     ValueError, "corrector_steps must be an int >= 0"),
    ("sample snr < 0", lambda c: c.post.sample(5, x=X_O, sampler="pc", snr=-0.1), ValueError, "snr must be >= 0"),
    ("sample rejection rounds 0", lambda c: c.post.sample(5, x=X_O, reject_outside_prior=True,
                                                          max_rejection_rounds=0), ValueError,
     "max_rejection_rounds must be an int >= 1"),
    ("x wrong dim", lambda c: c.post.sample(5, x=[0.1, 0.2, 0.3]), ValueError, "dimension 2"),
    ("x NaN", lambda c: c.post.sample(5, x=[0.1, np.nan]), ValueError, "x contains NaN or inf"),
    ("x missing", lambda c: c.post.sample(5), ValueError, "no observation"),
    ("x complex obs", lambda c: c.post.sample(5, x=[0.1 + 1j, 0.2]), ValueError, "x must be real"),
    ("x off a constant column", lambda c: c.post_const.sample(5, x=[0.1, 0.2, 4.0]), ValueError,
     "x column 2 (0-based) was constant"),
    ("default x off a constant column", lambda c: c.post_const.set_default_x([0.1, 0.2, 2.0]), ValueError,
     "was constant"),
    # ------------------------------------------------------------------ log_prob
    ("log_prob theta shape", lambda c: c.post.log_prob(np.zeros((3, 3)), x=X_O), ValueError, "shape (n, 2)"),
    ("log_prob batch_size -1", lambda c: c.post.log_prob(np.zeros((3, 2)), x=X_O, batch_size=-1), ValueError,
     "batch_size must be an int >= 1"),
    ("log_prob steps with rk45", lambda c: c.post.log_prob(np.zeros((3, 2)), x=X_O, steps=50), ValueError,
     "steps does not apply to the adaptive rk45"),
    ("log_prob method", lambda c: c.post.log_prob(np.zeros((3, 2)), x=X_O, method="rk3"), ValueError,
     "unknown ODE method"),
    ("log_prob rtol 0", lambda c: c.post.log_prob(np.zeros((3, 2)), x=X_O, rtol=0.0), ValueError,
     "rtol must be > 0"),
    ("log_prob complex theta", lambda c: c.post.log_prob(np.zeros((3, 2)) + 1j, x=X_O), ValueError, "complex"),
    ("log_prob steps 2.5", lambda c: c.post.log_prob(np.zeros((3, 2)), x=X_O, method="rk4", steps=2.5),
     ValueError, "steps must be an int"),
    # ------------------------------------------------------------------ load
    ("load text file", lambda c: sn.load(c.files["text"]), ValueError, "text.npz: not an .npz file"),
    ("load empty file", lambda c: sn.load(c.files["empty"]), ValueError, "empty.npz: the file is empty"),
    ("load truncated", lambda c: sn.load(c.files["truncated"]), ValueError, "truncated.npz: cannot read it"),
    ("load missing keys", lambda c: sn.load(c.files["missing"]), ValueError, "missing ['theta_std', 'x_mean']"),
    ("load meta not JSON", lambda c: sn.load(c.files["meta_json"]), ValueError, "meta_json.npz: not a valid"),
    ("load meta dtype", lambda c: sn.load(c.files["meta_dtype"]), ValueError, "dtype must be float32 or float64"),
    ("load prior outside allow-list", lambda c: sn.load(c.files["meta_prior"]), ValueError, "unknown prior 'system'"),
    ("load net sizes", lambda c: sn.load(c.files["meta_net"]), ValueError, "list of >= 2 positive ints"),
    ("load sde name", lambda c: sn.load(c.files["meta_sde"]), ValueError,
     "meta_sde.npz: not a valid snpse_np posterior file: bad metadata (ValueError: unknown sde 'edm'"),
    ("load meta key", lambda c: sn.load(c.files["meta_key"]), ValueError, "meta lacks ['precondition']"),
    ("load meta array", lambda c: sn.load(c.files["meta_array"]), ValueError, "meta must be one string"),
    ("load params length", lambda c: sn.load(c.files["params"]), ValueError, "params must be a real array of shape"),
    ("load params NaN", lambda c: sn.load(c.files["params_nan"]), ValueError, "params holds NaN or inf"),
    ("load negative std", lambda c: sn.load(c.files["std"]), ValueError, "theta_std must be positive"),
    ("load prior arrays", lambda c: sn.load(c.files["prior_arrays"]), ValueError, "needs the arrays"),
    ("load prior values", lambda c: sn.load(c.files["prior_values"]), ValueError,
     "prior_values.npz: not a valid snpse_np posterior file: its BoxUniform prior: BoxUniform needs high > low"),
    ("load pickled array", lambda c: sn.load(c.files["pickled"]), ValueError, "pickled"),
    ("load default_x shape", lambda c: sn.load(c.files["default_x"]), ValueError, "default_x must be"),
    ("load custom prior", lambda c: sn.load(c.files["custom"]), ValueError, "load(path, prior=<the prior>)"),
    ("load prior of other dim", lambda c: sn.load(c.good, prior=sn.Normal([0.0], [1.0])), ValueError,
     "prior= has dim 1"),
    # ------------------------------------------------------------------ simulate
    ("simulate not callable", lambda c: simulate(3, TH, progress=False), ValueError, "simulator must be callable"),
    ("simulate theta 1-D", lambda c: simulate(_sim, TH[:, 0], progress=False), ValueError, "2-D"),
    ("simulate wrong rows", lambda c: simulate(_wrong_rows, TH, progress=False), ValueError, "(m, p) array"),
    ("simulate complex", lambda c: simulate(_complex_x, TH, progress=False), ValueError, "complex"),
    ("simulate chunk_size 0", lambda c: simulate(_sim, TH, chunk_size=0, progress=False), ValueError,
     "chunk_size must be an int >= 1"),
    ("simulate seed float", lambda c: simulate(_sim, TH, seed=1.5, progress=False), ValueError, "seed must be"),
    ("simulate executor", lambda c: simulate(_sim, TH, executor=object(), progress=False), ValueError,
     "executor must be"),
    ("simulate seed_block 0", lambda c: simulate(_sim, TH, seed_block=0, progress=False), ValueError,
     "seed_block must be an int >= 1"),
    # ------------------------------------------------------------------ TSNPSE and the truncated prior
    ("tsnpse x_o NaN", lambda c: sn.TSNPSE(PRIOR, _sim, [0.1, np.nan]), ValueError, "x_o contains NaN"),
    ("tsnpse x_o 2-D", lambda c: sn.TSNPSE(PRIOR, _sim, np.zeros((2, 3))), ValueError, "x_o must be one observation"),
    ("tsnpse simulator", lambda c: sn.TSNPSE(PRIOR, None, X_O), ValueError, "simulator must be callable"),
    ("tsnpse seed", lambda c: sn.TSNPSE(PRIOR, _sim, X_O, seed=-1), ValueError, "seed must be an int >= 0"),
    ("tsnpse sde", lambda c: sn.TSNPSE(PRIOR, _sim, X_O, sde=3), ValueError, "sde must be a name"),
    ("tsnpse train_kwargs", lambda c: sn.TSNPSE(PRIOR, _sim, X_O, train_kwargs=[1]), ValueError,
     "train_kwargs must be a dict"),
    ("tsnpse num_rounds 2.5", lambda c: sn.TSNPSE(PRIOR, _sim, X_O).run(num_rounds=2.5), ValueError,
     "num_rounds must be an int"),
    ("tsnpse num_hpr_samples 0", lambda c: sn.TSNPSE(PRIOR, _sim, X_O).run(num_hpr_samples=0), ValueError,
     "num_hpr_samples must be an int >= 4"),
    ("tsnpse x_o dimension", lambda c: sn.TSNPSE(PRIOR, _sim, [0.1, 0.2, 0.3], backend="numpy",
                                                 show_progress=False).run(num_simulations=100, num_rounds=1),
     ValueError, "x_o has 3 entries, but the simulator returns x with 2 columns"),
    ("truncated num_samples", lambda c: TruncatedPrior(PRIOR, c.post, X_O, num_samples=1), ValueError,
     "num_samples must be an int >= 4"),
    ("truncated epsilon", lambda c: TruncatedPrior(PRIOR, c.post, X_O, epsilon=-0.1), ValueError,
     "epsilon must be >= 0"),
    ("truncated box_margin", lambda c: TruncatedPrior(PRIOR, c.post, X_O, box_margin=-1.0), ValueError,
     "box_margin must be >= 0"),
    # ------------------------------------------------------------------ CLI: one line, exit status 2
    ("cli num-samples 0", lambda c: _cli("run", "--num-samples", "0", "--out", str(c.dir / "o")), CLIExit,
     "argument --num-samples: must be an int >= 1"),
    ("cli out not writable", lambda c: _cli("run", "--backend", "None", "--out", str(c.good / "sub")), CLIExit,
     "snpse run: error: --out"),
    ("cli unknown task", lambda c: _cli("run", "nope", "--out", str(c.dir / "o")), CLIExit,
     "snpse run: error: unknown task 'nope'"),
    ("cli observation 0", lambda c: _cli("run", "--obs", "0", "--out", str(c.dir / "o")), CLIExit,
     "snpse run: error: observation number must be in 1..10"),
    ("cli backend", lambda c: _cli("run", "--backend", "tpu", "--out", str(c.dir / "o")), CLIExit,
     "invalid choice: 'tpu'"),
]


def test_the_table_is_large_enough():
    assert len(ROWS) >= 60
    assert len({r[0] for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("name,call,exc,phrase", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(c, name, call, exc, phrase):
    with pytest.raises(exc, match=re.escape(phrase)) as info:
        call(c)
    if exc is CLIExit:  # one line: no traceback
        assert len(str(info.value).strip().splitlines()) == 1 or "usage:" in str(info.value)
