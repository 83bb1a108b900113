"""Posterior files: atomic saves (a failed or killed write leaves the old file), priors stored by
state or passed back to ``load(path, prior=...)``, the constant-column mask, bit-identical
round trips; and the n = 0 edge cases of sampling."""
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import snpse_np as sn

from npz_files import rewrite_npz

PRIOR = sn.BoxUniform(-np.ones(2), np.ones(2))
X_O = np.array([0.1, -0.2])


def _train(prior=PRIOR, x_extra=None):
    theta = prior.sample(300, seed=0)
    x = theta + 0.1 * np.random.default_rng(1).standard_normal(theta.shape)
    if x_extra is not None:
        x = np.column_stack([x, x_extra])
    inference = sn.NPSE(prior, backend="numpy", hidden=16, show_progress=False, seed=0)
    return inference.append_simulations(theta, x).train(max_epochs=1, min_steps_per_epoch=5)


@pytest.fixture(scope="module")
def post():
    return _train()


def test_a_save_that_fails_half_way_leaves_the_old_file(post, tmp_path, monkeypatch):
    path = tmp_path / "posterior.npz"
    post.save(path)
    before = path.read_bytes()

    def disk_full(fh, **arrays):
        fh.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        post.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["posterior.npz"]  # the temporary file is gone too
    assert np.array_equal(sn.load(path, backend="numpy").params, post.params)


def test_a_save_killed_half_way_leaves_the_old_file(post, tmp_path):
    path = tmp_path / "posterior.npz"
    post.save(path)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        import snpse_np as sn
        post = sn.load({str(path)!r}, backend="numpy")
        def killed(fh, **arrays):
            fh.write(b"PK\\x03\\x04 half a file")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        np.savez = killed
        post.save({str(path)!r})
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert out.returncode == -signal.SIGKILL
    assert path.read_bytes() == before


def test_posterior_round_trip_is_bit_identical(post, tmp_path):
    path = tmp_path / "p.npz"
    post.set_default_x(X_O)
    post.save(path)
    back = sn.load(path, backend="numpy")
    assert np.array_equal(back.default_x, X_O)
    kw = dict(seed=3, method="rk4", steps=8)
    np.testing.assert_array_equal(back.sample(50, **kw), post.sample(50, **kw))
    th = PRIOR.sample(20, seed=4)
    np.testing.assert_array_equal(back.log_prob(th, method="rk4", steps=8), post.log_prob(th, method="rk4", steps=8))
    post.default_x = None


@pytest.mark.parametrize("prior", [sn.BoxUniform([-1.0, -2.0], [1.0, 2.0]), sn.Normal([0.0, 1.0], [1.0, 2.0]),
                                   sn.LogNormal([0.0, 1.0], [0.5, 0.2]),
                                   sn.MultivariateNormal([0.0, 1.0], cov=[[1.0, 0.3], [0.3, 2.0]])],
                         ids=lambda p: type(p).__name__)
def test_the_package_priors_are_stored_by_state(prior, tmp_path):
    path = tmp_path / "p.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "prior not stored" warning
        _train(prior).save(path)
    back = sn.load(path, backend="numpy").prior
    assert type(back) is type(prior)
    th = prior.sample(10, seed=1)
    np.testing.assert_array_equal(back.log_prob(th), prior.log_prob(th))


class ShiftedBox(sn.BoxUniform):
    """A custom prior: a subclass, whose overrides a file cannot hold."""

    def log_prob(self, theta):
        return super().log_prob(theta) + 1.0


def test_a_custom_prior_is_named_at_save_and_passed_back_at_load(tmp_path):
    prior = ShiftedBox(-np.ones(2), np.ones(2))
    post = _train(prior)
    path = tmp_path / "p.npz"
    with pytest.warns(UserWarning, match=r"ShiftedBox\) is not one of snpse_np's priors.*prior="):
        post.save(path)
    with pytest.raises(ValueError, match=r"saved with a prior of type .*ShiftedBox.*load\(path, prior="):
        sn.load(path)
    back = sn.load(path, prior=prior, backend="numpy")
    assert back.prior is prior
    th = np.array([[0.2, 0.3], [3.0, 0.0]])
    lp = back.log_prob(th, x=X_O, method="rk4", steps=8)
    assert np.isfinite(lp[0]) and lp[1] == -np.inf  # the custom support is used


def test_the_constant_column_mask_survives_save_and_load(tmp_path):
    with pytest.warns(RuntimeWarning, match="x column 2"):
        post = _train(x_extra=np.full(300, 3.0))
    path = tmp_path / "p.npz"
    post.save(path)
    back = sn.load(path, backend="numpy")
    assert list(back.x_std.constant) == [False, False, True]
    assert back.sample(3, x=[0.1, 0.2, 3.0], seed=0).shape == (3, 2)  # the training value is fine
    with pytest.raises(ValueError, match=r"x column 2 \(0-based\) was constant \(3\)"):
        back.sample(3, x=[0.1, 0.2, 3.5])


def test_no_samples_asked_no_samples_given(post):
    for kw in (dict(), dict(reject_outside_prior=True), dict(sampler="sde"), dict(method="rk4")):
        s = post.sample(0, x=X_O, **kw)
        assert s.shape == (0, 2), kw
    assert post.log_prob(np.zeros((0, 2)), x=X_O).shape == (0,)


def test_the_file_names_its_kind_and_old_files_without_one_are_npse(post, tmp_path):
    import json
    path = tmp_path / "p.npz"
    post.save(path)
    with np.load(path, allow_pickle=False) as f:
        assert json.loads(str(f["meta"]))["kind"] == "npse"
    rewrite_npz(path, kind=None)  # as written before the kind existed
    back = sn.load(path, backend="numpy")
    assert type(back) is sn.ScorePosterior
    kw = dict(x=X_O, seed=3, method="rk4", steps=8)
    np.testing.assert_array_equal(back.sample(20, **kw), post.sample(20, **kw))


def test_an_unknown_kind_is_a_value_error_naming_it(post, tmp_path):
    path = tmp_path / "p.npz"
    post.save(path)
    rewrite_npz(path, kind="snpse_z")
    with pytest.raises(ValueError, match="unknown posterior kind 'snpse_z'"):
        sn.load(path)
