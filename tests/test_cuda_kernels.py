"""The numba.cuda kernels under the CUDA simulator, on numpy arrays, at tiny sizes.

Marked ``cudasim`` and skipped unless NUMBA_ENABLE_CUDASIM=1 is in the environment of the
pytest process (it must be set before numba is imported; CI runs this file in a separate
pass: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim tests/test_cuda_kernels.py``).
The simulator runs each thread as a Python thread (~0.1 ms a thread, ~0.3 ms a random draw),
so every case here has tens of threads. Block reductions are exercised across two blocks
(B d > TPB = 128 elements). The simulator does not type-check kernels: tests/test_cuda_ptx.py
compiles the same kernels for sm_90.

Covered, each against the numpy reference:
- snpse_np.backends._cuda_kernels (dsm_perturb, dsm_loss, affine_step, langevin_step,
  trace_rows), imported through the package's loader ``_numba_cuda.load()``;
- the kernel lab's fused network (kernels/fused_mlp.py: forward and backward in one launch
  each, tiles of 4 rows, widths 8 and 16, a ragged last tile) against snpse_np.nn;
- the fused training step (kernels/train_step.py: gather, perturbation, network, loss,
  backward, Adam and EMA) against the package's ops;
- the whole-trajectory kernels (kernels/em_trajectory.py): one thread per sample (element by
  element with the noise given, by moments with xoroshiro128p), block-cooperative EM and PF-ODE
  Heun (element by element), and in-kernel Philox4x32-10: its words against the Random123
  known answers, its normals equal to the numpy reference's and N(0, 1) by moments, and the
  block EM drawing in-kernel against the reference loop fed the same normals.
"""
import os
import sys

import numpy as np
import pytest

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
pytestmark = [pytest.mark.cudasim,
              pytest.mark.skipif(not SIM, reason="set NUMBA_ENABLE_CUDASIM=1 in the environment to run"),
              pytest.mark.filterwarnings("ignore:overflow encountered"),  # uint64 wrap-around in the RNG
              pytest.mark.filterwarnings("ignore:Compilation is falling back to object mode"),
              pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")]  # numba.cuda.random, sim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from kernels.common import assert_close_to_ref  # noqa: E402
from snpse_np.backends import numpy_ref  # noqa: E402

DTYPES = [np.float32, np.float64]
SIZES = [(1, 3), (7, 2), (33, 5)]  # (B, d); 33 x 5 = 165 elements: two blocks of 128


def kernels():
    from snpse_np.backends._numba_cuda import load
    return load()


def helper_test_kernel(op, launch, args, writes, acc_size=0, ret=None):
    """Launch ``launch(*args[, acc])`` and numpy_ref's ``op`` on copies of ``args``; compare
    the written arrays, and, for ops returning a value, ``ret(acc)`` with the return."""
    dtype = next(a.dtype for a in args if isinstance(a, np.ndarray))
    ref_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    got_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    ref_ret = getattr(numpy_ref, op)(*ref_args)
    acc = np.zeros(acc_size, np.float64) if acc_size else None
    launch(*got_args, *(() if acc is None else (acc,)))
    for i in writes:
        assert_close_to_ref(op, got_args[i], ref_args[i], dtype, f" [cudasim] arg {i}")
    if ref_ret is not None:
        assert_close_to_ref(op, ret(acc, got_args), ref_ret, dtype, " [cudasim] return")


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def test_simulator_is_active():
    from numba import config, cuda
    assert config.ENABLE_CUDASIM and cuda.is_available()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,d", SIZES)
def test_dsm_perturb(dtype, B, d):
    rng = np.random.default_rng(1)
    th0, z = rand(rng, (B, d), dtype), rand(rng, (B, d), dtype)
    alpha, sigma, c_in = (rng.uniform(0.05, 2.0, B).astype(dtype) for _ in range(3))
    helper_test_kernel("dsm_perturb", kernels().launch_dsm_perturb, [np.empty_like(th0), th0, z, alpha, sigma, c_in],
                       (0,))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,d", SIZES)
def test_dsm_loss(dtype, B, d):
    rng = np.random.default_rng(2)
    out, z = rand(rng, (B, d), dtype), rand(rng, (B, d), dtype)
    c = rng.uniform(0.05, 2.0, B).astype(dtype)
    helper_test_kernel("dsm_loss", kernels().launch_dsm_loss, [np.empty_like(out), out, z, c], (0,), acc_size=1,
                       ret=lambda acc, args: float(acc[0]) / out.size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,d", SIZES)
def test_affine_step(dtype, B, d):
    rng = np.random.default_rng(3)
    theta, score, noise = (rand(rng, (B, d), dtype) for _ in range(3))
    a, b, c = (rng.uniform(0.5, 1.5, B).astype(dtype) for _ in range(3))
    helper_test_kernel("affine_step", kernels().launch_affine_step, [theta, a, score, b, noise, c], (0,))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,d", [(1, 3), (7, 2), (133, 1)])  # 133 rows: two blocks of row norms
def test_langevin_step(dtype, B, d):
    rng = np.random.default_rng(4)
    theta, score, noise = (rand(rng, (B, d), dtype) for _ in range(3))
    helper_test_kernel("langevin_step", lambda th, s, n, snr, al, acc: kernels().launch_langevin_step(th, s, n, snr,
                                                                                                      al, acc),
                       [theta, score, noise, 0.16, 0.9], (0,), acc_size=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,d", SIZES)
def test_trace_rows(dtype, B, d):
    rng = np.random.default_rng(5)
    t_out, t_in = rand(rng, (d, B, d), dtype), rand(rng, (d, B, d), dtype)
    helper_test_kernel("trace_rows", kernels().launch_trace_rows, [np.empty(B, dtype), t_out, t_in], (0,))


# ----------------------------------------------------------------------------- the lab's trajectory kernel

@pytest.fixture(scope="module")
def em():
    from kernels import em_trajectory
    return em_trajectory


@pytest.mark.parametrize("shared", [True, False])
def test_em_trajectory_matches_the_package_step_loop(em, shared):
    prob = em.make_problem("tiny")
    rng = np.random.default_rng(6)
    n, steps, d = 10, 3, prob.net.dim_theta
    theta = (prob.sde.prior_std * rng.standard_normal((n, d))).astype(np.float32)
    noise = rng.standard_normal((steps, n, d)).astype(np.float32)
    ref = theta.copy()
    em.REFERENCE.em_trajectory(ref, noise, prob)
    got = theta.copy()
    em.run_trajectory(got, noise, prob, shared=shared)
    assert_close_to_ref("em_trajectory", got, ref, np.float32)


def test_em_trajectory_in_kernel_rng_matches_reference_moments(em):
    stats = em.check_moments(em.make_problem("tiny"), n_kernel=48, steps=4, n_ref=4000, seed=1)
    assert stats["finite"]
    assert stats["ok"], stats


def test_em_trajectory_states_are_numbas(em):
    from numba.cuda.random import xoroshiro128p_dtype
    s = em.host_states(4, 3)
    assert s.dtype == xoroshiro128p_dtype and len(np.unique(s["s0"])) == 4


# ----------------------------------------------------------------------------- fused network and training step

@pytest.mark.parametrize("name", ["fused_mlp", "train_step"])
def test_fused_lab_kernels_match_the_package(name):
    import importlib

    from kernels.common import validate_module
    mod = importlib.import_module(f"kernels.{name}")
    assert "cuda_v1_fused" in mod.VARIANTS
    assert validate_module(mod, variants=["cuda_v1_fused"]) == len(mod.TINY_SIZES) * len(mod.OPS)


def test_fused_tile_is_the_simulators():
    from kernels import fused_mlp
    assert fused_mlp.default_tile() == fused_mlp.SIM  # PROD_TRAIN is checked by tests/test_cuda_ptx.py


def test_fused_backward_accumulates_into_a_zeroed_gradient():
    # backward() zeroes grads itself: a dirty buffer gives the same gradient
    from kernels import fused_mlp
    prob = fused_mlp.make_problem("tiny")
    case = fused_mlp.make_case("mlp_backward", (5, "tiny"), np.float32, np.random.default_rng(3))
    grads, theta_in, tau, x, dout, _ = case.args
    fn = fused_mlp.FusedNet(prob.net, prob.params)
    out = np.empty_like(dout)
    fn.forward(out, theta_in, tau, x)
    clean = fn.backward(np.empty_like(grads), dout).copy()
    dirty = np.full_like(grads, 7.0)
    assert np.array_equal(fn.backward(dirty, dout), clean)
    assert fn.launches == 3


# ----------------------------------------------------------------------------- block-cooperative trajectories

@pytest.mark.parametrize("op", ["em_trajectory", "heun_trajectory"])
def test_block_trajectory_kernels_match_the_package_loops(em, op):
    from kernels.common import validate
    var = em.VARIANTS["cuda_v3_block" if op == "em_trajectory" else "cuda_v4_block_heun"]
    for size in em.TINY_SIZES:
        validate(op, var, em.make_case(op, size, np.float32, np.random.default_rng(11)), em.REFERENCE)


def test_block_em_with_in_kernel_philox_matches_the_reference_loop(em):
    assert em.check_block_philox(em.make_problem("tiny"), n=9, steps=3, seed=5) < 1e-5


def test_block_em_step_range_composes(em):
    # one launch per step (what the CUDA graph captures) equals the whole trajectory in one launch
    prob = em.make_problem("tiny")
    bs = em.BlockSampler(prob)
    th = (prob.sde.prior_std * np.random.default_rng(2).standard_normal((6, 2))).astype(np.float32)
    whole, steps = th.copy(), th.copy()
    bs.em(whole, 3, seed=9)
    for s in range(3):
        bs.em(steps, 3, seed=9, s_range=(s, s + 1))
    assert np.array_equal(whole, steps)


KAT = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
       ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
       ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]  # Random123's kat_vectors, Philox4x32-10


@pytest.mark.parametrize("counter,key,want", KAT)
def test_compiled_philox_matches_random123_known_answers(em, counter, key, want):
    got = em.kernel_philox_words(np.array([counter], np.uint32), key)
    assert tuple(int(w) for w in got[0]) == want


def test_in_kernel_philox_normals_equal_the_reference_and_are_standard_normal(em):
    got = em.kernel_normals(seed=3, n=32, steps=4, d=5)  # 640 draws: 640 threads, a few seconds
    ref = em.philox_normals(3, 32, 4, 5)
    assert np.allclose(got, ref, rtol=0, atol=1e-6)
    stats = em.check_philox_moments(got)
    assert stats["ok"], stats
    # other seeds give other draws
    assert not np.allclose(em.philox_normals(4, 32, 4, 5), ref)
