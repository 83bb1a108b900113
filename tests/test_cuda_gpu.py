"""The cuda backend's numba.cuda path and its prepared options, on a GPU (marked ``gpu``; skipped without one).

- ``backends.cuda.numba_ops`` in both launch modes against numpy_ref, for every loss and sampler
  op, float32 and float64, with sizes across several blocks; repeated calls on the same buffers
  (the prepared argument blocks and cached device views are reused) and on fresh buffers;
- the langevin step's scalars change between calls on one prepared launch;
- kernels run on CuPy's current stream (a non-default stream, then synchronised);
- ``make_ops``: the switch's two sides give the same training losses and ODE samples;
- ``matmul_tf32``: TF32 accuracy (within 2e-3 relative, and measurably not float32: TF32 is
  really used), float64 untouched, cuBLAS pointer mode restored.

Run by kernels/gpu_check.sh. The lab's fused and trajectory kernels are validated on the GPU by
kernels/gpu_profile.py ("lab"), where they are compiled once for the timing as well.
"""
import dataclasses
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from kernels.common import assert_close_to_ref, gpu_available  # noqa: E402
from snpse_np.backends import numpy_ref  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU")]

MODES = ["prepared", "dispatcher"]
DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="module")
def cb():
    from snpse_np.backends import cuda
    return cuda


def _cases(rng, dtype, B, d):
    r = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    u = lambda: rng.uniform(0.5, 1.5, B).astype(dtype)  # noqa: E731
    return {"dsm_perturb": ([np.empty((B, d), dtype), r(B, d), r(B, d), u(), u(), u()], (0,)),
            "dsm_loss": ([np.empty((B, d), dtype), r(B, d), r(B, d), u()], (0,)),
            "affine_step": ([r(B, d), u(), r(B, d), u(), r(B, d), u()], (0,)),
            "langevin_step": ([r(B, d), r(B, d), r(B, d), 0.16, 0.9], (0,)),
            "trace_rows": ([np.empty(B, dtype), r(d, B, d), r(d, B, d)], (0,))}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,d", [(1, 3), (33, 5), (1000, 2)])
def test_numba_ops_match_numpy_ref(cb, mode, dtype, B, d):
    import cupy
    ops = cb.numba_ops(mode)
    for op, (args, writes) in _cases(np.random.default_rng(B + d), dtype, B, d).items():
        ref = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        ref_ret = getattr(numpy_ref, op)(*ref)
        got = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        for call in range(2):  # the second call reuses the same buffers: prepared launch and views cached
            if call:
                for g, a in zip(got, args):
                    if isinstance(a, np.ndarray):
                        g[...] = cupy.asarray(a)
            got_ret = getattr(ops, op)(*got)
            cupy.cuda.Device().synchronize()
            for i in writes:
                assert_close_to_ref(op, cupy.asnumpy(got[i]), ref[i], dtype, f" [{mode}, call {call}]")
            if ref_ret is not None:
                assert isinstance(got_ret, float)
                assert_close_to_ref(op, got_ret, ref_ret, dtype, f" [{mode}, call {call}, return]")


def test_prepared_langevin_takes_new_scalars(cb):
    import cupy
    ops = cb.numba_ops("prepared")
    rng = np.random.default_rng(0)
    th, s, n = (rng.standard_normal((40, 3)).astype(np.float32) for _ in range(3))
    for snr, alpha in ((0.16, 0.9), (0.3, 0.5), (0.05, 1.0)):
        ref = th.copy()
        numpy_ref.langevin_step(ref, s, n, snr, alpha)
        got = cupy.asarray(th)
        ops.langevin_step(got, cupy.asarray(s), cupy.asarray(n), snr, alpha)
        assert_close_to_ref("langevin_step", cupy.asnumpy(got), ref, np.float32, f" snr {snr}")


def test_numba_ops_follow_cupys_current_stream(cb):
    import cupy
    ops = cb.numba_ops("prepared")
    rng = np.random.default_rng(1)
    args, _ = _cases(rng, np.float32, 5000, 5)["affine_step"]
    ref = [a.copy() for a in args]
    numpy_ref.affine_step(*ref)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        got = [cupy.asarray(a) for a in args]
        ops.affine_step(*got)
        out = cupy.asnumpy(got[0], stream=stream)  # ordered after the kernel on the same stream
    assert_close_to_ref("affine_step", out, ref[0], np.float32, " [non-default stream]")


def test_numba_ops_reject_non_contiguous(cb):
    import cupy
    ops = cb.numba_ops("prepared")
    a = cupy.zeros((8, 6), np.float32)[:, :3]
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.affine_step(a, cupy.ones(8, np.float32), a, cupy.ones(8, np.float32), a, cupy.ones(8, np.float32))


def test_switch_sides_agree_end_to_end(cb):
    """Training on cuda with the loss/sampler ops from numba and from CuPy: the same losses;
    ODE samples agree row by row."""
    import snpse_np as sn
    from snpse_np.backend import get_backend
    be = get_backend("cuda")
    results = {}
    for side in ("cupy", "numba"):
        backend = dataclasses.replace(be, ops=cb.make_ops(loss_sampler=side))
        rng = np.random.default_rng(0)
        theta = rng.standard_normal((600, 2))
        x = theta + 0.1 * rng.standard_normal((600, 2))
        prior = sn.Normal(np.zeros(2), np.ones(2))
        inf = sn.NPSE(prior, backend=backend, seed=0, show_progress=False)
        post = inf.append_simulations(theta, x).train(max_epochs=3, min_steps_per_epoch=5)
        results[side] = (inf.summary["history"], post.sample(200, x=np.zeros(2), sampler="ode", seed=1))
    np.testing.assert_allclose(results["numba"][0], results["cupy"][0], rtol=1e-4)
    np.testing.assert_allclose(results["numba"][1], results["cupy"][1], rtol=1e-3, atol=1e-3)


def test_make_ops_has_every_op(cb):
    ops = cb.make_ops(loss_sampler="numba", matmul="tf32")
    for name in (n for n in dir(numpy_ref) if not n.startswith("_") and callable(getattr(numpy_ref, n))):
        assert callable(getattr(ops, name)), name
    assert ops.matmul is cb.matmul_tf32 and ops.dsm_loss == cb.numba_ops().dsm_loss
    with pytest.raises(ValueError):
        cb.make_ops(loss_sampler="triton")


@pytest.mark.parametrize("layout", ["nn", "tn", "nt"])
def test_matmul_tf32_is_tf32(cb, layout):
    import cupy
    from cupy_backends.cuda.libs import cublas
    rng = np.random.default_rng(3)
    m, k, n = 257, 256, 129
    a = rng.standard_normal((m, k)).astype(np.float32) / 16
    b = rng.standard_normal((k, n)).astype(np.float32)
    ad, bd = cupy.asarray(a), cupy.asarray(b)
    if layout == "tn":
        ad = cupy.asarray(np.ascontiguousarray(a.T)).T
    elif layout == "nt":
        bd = cupy.asarray(np.ascontiguousarray(b.T)).T
    out = cupy.empty((m, n), np.float32)
    handle = cupy.cuda.device.get_cublas_handle()
    mode = cublas.getPointerMode(handle)
    cb.matmul_tf32(out, ad, bd)
    assert cublas.getPointerMode(handle) == mode
    exact = a.astype(np.float64) @ b.astype(np.float64)
    rel = np.linalg.norm(cupy.asnumpy(out) - exact) / np.linalg.norm(exact)
    assert 1e-6 < rel < 2e-3, rel  # TF32 (10-bit mantissas), and not plain float32 (~1e-7)
    out64 = cupy.empty((m, n), np.float64)
    cb.matmul_tf32(out64, cupy.asarray(a, np.float64), cupy.asarray(b, np.float64))
    np.testing.assert_allclose(cupy.asnumpy(out64), a.astype(np.float64) @ b, rtol=1e-10, atol=1e-10)
