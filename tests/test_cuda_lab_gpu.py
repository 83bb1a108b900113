"""The kernel lab's GPU-only kernels on a GPU (marked ``gpu``; skipped without one): the fused
network and training step at the production tiles, the training step and the EM loop captured
as CUDA graphs, the block-cooperative trajectories, Philox on the device.

The same checks run inside ``kernels/gpu_profile.py lab`` (where the kernels are compiled once
for the timing too), so kernels/gpu_check.sh leaves this file out of its pytest step to save the
compile time; run it on any other GPU machine with ``python -m pytest -m gpu tests/test_cuda_lab_gpu.py``.
"""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from kernels.common import gpu_available, validate  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU")]


@pytest.mark.parametrize("op", ["mlp_forward", "mlp_backward"])
@pytest.mark.parametrize("size", [(5, "tiny"), (300, "paper")])
def test_fused_network_on_the_gpu(op, size):
    from kernels import fused_mlp as fm
    assert fm.default_tile() == fm.PROD_TRAIN
    validate(op, fm.VARIANTS["cuda_v1_fused"], fm.make_case(op, size, np.float32, np.random.default_rng(1)),
             fm.REFERENCE)


@pytest.mark.parametrize("variant", ["cuda_v1_fused", "cuda_v2_graph"])
def test_fused_training_step_and_its_graph(variant):
    from kernels import train_step as ts
    validate("train_step", ts.VARIANTS[variant], ts.make_case("train_step", (256, "paper"), np.float32,
                                                              np.random.default_rng(2)), ts.REFERENCE)


def test_training_step_graph_replays_step_after_step():
    """Three replays of one captured step (new draws and indices in the pinned buffers each
    time) equal three fused steps."""
    import cupy

    from kernels import train_step as ts
    rng = np.random.default_rng(3)
    case = ts.make_case("train_step", (64, "tiny16"), np.float32, rng)
    prob = case.args[-1]
    host = case.args[:-1]
    a = [cupy.asarray(x) for x in host]
    b = [cupy.asarray(x) for x in host]
    fused = ts.FusedTrainStep(prob, 64)
    graph = ts.GraphTrainStep(prob, *b[:6], 64, host[7].shape[0])
    for k in range(3):
        draws = host[7].copy()
        draws[:-1] *= rng.uniform(0.9, 1.1, draws.size - 1).astype(np.float32)
        draws[-1] = prob.step + k
        idx = rng.permutation(ts.N_DATA)[:64].astype(np.int32)
        la = fused(*a[:6], cupy.asarray(idx), cupy.asarray(draws))
        lb = graph.step(draws, idx)
        assert abs(la - lb) <= 1e-6 * max(1.0, abs(la))
    for x, y in zip(a[:4], b[:4]):
        np.testing.assert_allclose(cupy.asnumpy(y), cupy.asnumpy(x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op,variant", [("em_trajectory", "cuda_v3_block"), ("heun_trajectory", "cuda_v4_block_heun"),
                                        ("em_trajectory", "cuda_v5_graph")])
def test_block_trajectories_on_the_gpu(op, variant):
    from kernels import em_trajectory as em
    validate(op, em.VARIANTS[variant], em.make_case(op, (1000, 20, "paper"), np.float32, np.random.default_rng(4)),
             em.REFERENCE)


def test_block_em_philox_and_the_graph_draw_the_same_noise():
    import cupy

    from kernels import em_trajectory as em
    prob = em.make_problem("paper")
    assert em.check_block_philox(prob, n=700, steps=10, seed=5) < 2e-3
    th = (prob.sde.prior_std * np.random.default_rng(6).standard_normal((700, 5))).astype(np.float32)
    whole, graphed = cupy.asarray(th), cupy.asarray(th)
    em.BlockSampler(prob).em(whole, 10, seed=5)
    em.GraphEM(prob, graphed, 10, seed=5).run()
    assert cupy.array_equal(whole, graphed)


def test_device_philox_normals():
    from kernels import em_trajectory as em
    got = em.kernel_normals(11, 20_000, 5, 5)
    assert np.abs(got - em.philox_normals(11, 20_000, 5, 5)).max() < 1e-5
    stats = em.check_philox_moments(got)
    assert stats["ok"], stats
