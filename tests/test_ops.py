"""Every op on every available backend against numpy_ref, through one helper.

``helper_test_op`` (as tinygrad's helper_test_op) runs an op on a backend and on numpy_ref with
copies of the same inputs and compares every written array and the return value with the
tolerance table of kernels/common.py (one table for the tests and the kernel lab). Backends:
numpy and numba always, cuda when CuPy sees a GPU (those cases are marked ``gpu``).

Also here: the backends expose the same ops with the same signatures; ``import snpse_np``
imports neither numba nor cupy; every kernel-lab variant passes its validation at tiny sizes
and every lab file's docstring lists its variants.
"""
import ast
import importlib
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from kernels.common import assert_close_to_ref, gpu_available  # noqa: E402
from snpse_np.backends import numpy_ref  # noqa: E402

ACTS = numpy_ref.ACTIVATIONS
DTYPES = [np.float32, np.float64]
GPU = gpu_available()
BACKENDS = ["numpy", "numba", pytest.param("cuda", marks=[pytest.mark.gpu,
                                                        pytest.mark.skipif(not GPU, reason="no CUDA GPU")])]
SHAPES = [(1, 37), (7, 29), (33, 19)]  # batch 1, sizes that are not multiples of a block


def ops_of(backend):
    return importlib.import_module({"numpy": "snpse_np.backends.numpy_ref", "numba": "snpse_np.backends.numba_cpu",
                                    "cuda": "snpse_np.backends.cuda"}[backend])


def helper_test_op(backend, op, args, writes, aliases=(), dtype=None):
    """Run ``op`` on ``backend`` and on numpy_ref with copies of ``args`` (arrays and scalars
    in op order) and compare the arrays at indices ``writes`` and the return value.

    aliases: pairs (i, j) meaning argument j IS argument i (an in-place call, e.g. h is z).
    """
    dtype = dtype or next(a.dtype for a in args if isinstance(a, np.ndarray))
    ops = ops_of(backend)
    if backend == "cuda":
        import cupy

        def put(a):  # order "K": a transposed input stays transposed on the device
            return cupy.array(a, copy=True, order="K")

        def get(a):
            return cupy.asnumpy(a)
    else:
        put = _copy_keep_layout

        def get(a):
            return a

    ref_args = [_copy_keep_layout(a) if isinstance(a, np.ndarray) else a for a in args]
    got_args = [put(a) if isinstance(a, np.ndarray) else a for a in args]
    for i, j in aliases:
        ref_args[j] = ref_args[i]
        got_args[j] = got_args[i]
    ref_ret = getattr(numpy_ref, op)(*ref_args)
    got_ret = getattr(ops, op)(*got_args)
    for i in writes:
        assert_close_to_ref(op, get(got_args[i]), ref_args[i], dtype, f" [{backend}] arg {i}")
    if ref_ret is not None:
        assert isinstance(got_ret, float), f"{op} must return a Python float, got {type(got_ret)}"
        assert_close_to_ref(op, got_ret, ref_ret, dtype, f" [{backend}] return")
    return got_args, got_ret


def _copy_keep_layout(a):
    """A copy with a's layout: C or F order kept, and a strided array stays strided."""
    if a.flags.c_contiguous or a.flags.f_contiguous:
        return np.array(a, copy=True, order="K")
    out = np.empty(a.shape + (2,), a.dtype)[..., 0]  # every stride doubled: non-contiguous
    out[...] = a
    return out


def rand(rng, shape, dtype, scale=1.0, order="C"):
    a = (scale * rng.standard_normal(shape)).astype(dtype)
    return np.asfortranarray(a) if order == "F" else a


# ----------------------------------------------------------------------------- MLP layers

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mkn", [(1, 5, 3), (7, 29, 13), (33, 19, 1), (5, 1, 4)])
@pytest.mark.parametrize("layout", ["nn", "tn", "nt", "tt"])
def test_matmul(backend, dtype, mkn, layout):
    """out = a @ b for every layout the network passes: h @ W, h.T @ dz, dz @ W.T (and both)."""
    rng = np.random.default_rng(11)
    m, k, n = mkn
    a = rand(rng, (m, k), dtype, 1.0 / np.sqrt(k), "F" if layout[0] == "t" else "C")
    b = rand(rng, (k, n), dtype, 1.0, "F" if layout[1] == "t" else "C")
    helper_test_op(backend, "matmul", [np.empty((m, n), dtype), a, b], (0,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", ["shared", "per_row"])
@pytest.mark.parametrize("inplace", [False, True])
def test_bias_act_forward(backend, dtype, act, shape, bias, inplace):
    rng = np.random.default_rng(1)
    z = rand(rng, shape, dtype, 3.0)
    b = rand(rng, shape[1:] if bias == "shared" else shape, dtype)
    h = np.empty_like(z)
    helper_test_op(backend, "bias_act_forward", [h, z, b, act], (0, 1), aliases=[(1, 0)] if inplace else ())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("inplace", [False, True])
def test_act_backward(backend, dtype, act, shape, inplace):
    rng = np.random.default_rng(2)
    dz, dh, z = np.empty(shape, dtype), rand(rng, shape, dtype), rand(rng, shape, dtype, 3.0)
    helper_test_op(backend, "act_backward", [dz, dh, z, act], (0,), aliases=[(1, 0)] if inplace else ())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("inplace", [False, True])
def test_act_tangent(backend, dtype, act, K, inplace):
    rng = np.random.default_rng(3)
    z = rand(rng, (7, 29), dtype, 3.0)
    t = rand(rng, (K, 7, 29), dtype)
    dt = np.empty_like(t)
    helper_test_op(backend, "act_tangent", [dt, t, z, act], (0,), aliases=[(1, 0)] if inplace else ())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_elementwise_ops_accept_non_contiguous_inputs(backend, dtype, act):
    rng = np.random.default_rng(4)
    shape = (9, 13)
    z, dh = rand(rng, shape, dtype, 3.0, "F"), rand(rng, shape, dtype, 1.0, "F")
    b = rand(rng, (2 * shape[1],), dtype)[::2]  # a strided bias
    helper_test_op(backend, "bias_act_forward", [np.empty_like(z), z, b, act], (0, 1))
    helper_test_op(backend, "act_backward", [np.empty_like(z), dh, z, act], (0,))
    helper_test_op(backend, "bias_grad", [np.empty(shape[1], dtype), z], (0,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bias_grad(backend, dtype, shape):
    rng = np.random.default_rng(5)
    helper_test_op(backend, "bias_grad", [np.empty(shape[1], dtype), rand(rng, shape, dtype)], (0,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,channels", [(1, 64), (7, 10), (33, 2)])
@pytest.mark.parametrize("scale", [1.0, 30.0, -1e3])
def test_sinusoidal_embedding(backend, dtype, B, channels, scale):
    # scale: tau = t in [0, 1], sigma_t up to tens, and large negative values (log sigma, stress).
    rng = np.random.default_rng(6)
    tau = (scale * rng.uniform(0.0, 1.0, B)).astype(dtype)
    helper_test_op(backend, "sinusoidal_embedding", [np.empty((B, channels), dtype), tau], (0,))


@pytest.mark.parametrize("backend", BACKENDS)
def test_act_value_and_grad_helpers(backend):
    if backend == "cuda":
        pytest.skip("helpers return new arrays; covered through the ops")
    ops = ops_of(backend)
    z = np.linspace(-9, 9, 301).astype(np.float32).reshape(7, 43)
    for act in ACTS:
        assert_close_to_ref("bias_act_forward", ops.act_value(z, act), numpy_ref.act_value(z, act), np.float32)
        assert_close_to_ref("act_backward", ops.act_grad(z, act), numpy_ref.act_grad(z, act), np.float32)


# ----------------------------------------------------------------------------- loss, optimiser, samplers

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,d", [(1, 5), (7, 3), (33, 10)])
def test_dsm_perturb_and_loss(backend, dtype, B, d):
    rng = np.random.default_rng(7)
    theta0, z = rand(rng, (B, d), dtype), rand(rng, (B, d), dtype)
    alpha, sigma, c_in = (rng.uniform(0.05, 2.0, B).astype(dtype) for _ in range(3))
    helper_test_op(backend, "dsm_perturb", [np.empty_like(theta0), theta0, z, alpha, sigma, c_in], (0,))
    _, loss = helper_test_op(backend, "dsm_loss", [np.empty_like(theta0), theta0, z, sigma], (0,))
    assert loss > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 37, 1001])
@pytest.mark.parametrize("step", [1, 7])
def test_adam_step(backend, dtype, n, step):
    rng = np.random.default_rng(8)
    p, g, m = rand(rng, n, dtype), rand(rng, n, dtype), rand(rng, n, dtype, 0.1)
    v = np.abs(rand(rng, n, dtype, 0.01))
    helper_test_op(backend, "adam_step", [p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, step], (0, 2, 3))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ema_update(backend, dtype):
    rng = np.random.default_rng(9)
    helper_test_op(backend, "ema_update", [rand(rng, 1001, dtype), rand(rng, 1001, dtype), 0.999], (0,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,d", [(1, 5), (7, 3), (133, 2)])
def test_sampler_steps(backend, dtype, B, d):
    rng = np.random.default_rng(10)
    theta, score, noise = (rand(rng, (B, d), dtype) for _ in range(3))
    a, b, c = (rng.uniform(0.5, 1.5, B).astype(dtype) for _ in range(3))
    helper_test_op(backend, "affine_step", [theta, a, score, b, noise, c], (0,))
    helper_test_op(backend, "langevin_step", [theta, score, noise, 0.16, 0.9], (0,))
    t_out, t_in = rand(rng, (d, B, d), dtype), rand(rng, (d, B, d), dtype)
    helper_test_op(backend, "trace_rows", [np.empty(B, dtype), t_out, t_in], (0,))


# ----------------------------------------------------------------------------- numba specifics

def test_numba_propagates_nan_like_numpy():
    # fastmath without nnan: a NaN pre-activation must reach the output (training stops on it).
    from snpse_np.backends import numba_cpu
    for dtype in DTYPES:
        for act in ACTS:
            z = np.array([[np.nan, 1.0, -2.0]], dtype)
            h = np.empty_like(z)
            numba_cpu.bias_act_forward(h, z.copy(), np.zeros(3, dtype), act)
            assert np.isnan(h[0, 0]), (act, dtype)
        out = np.array([[np.nan, 1.0]], dtype)
        assert np.isnan(numba_cpu.dsm_loss(np.empty_like(out), out, np.zeros_like(out), np.ones(1, dtype)))


def test_numba_fast_silu_matches_float64_as_well_as_numpy_float32():
    # The rational sigmoid is allowed only within float32 accuracy of the float64 truth.
    from snpse_np.backends import numba_cpu
    z = np.linspace(-30, 30, 200_001).astype(np.float32)
    truth = numpy_ref.act_value(z.astype(np.float64), "silu")
    err_numba = np.max(np.abs(numba_cpu.act_value(z, "silu") - truth))
    err_numpy = np.max(np.abs(numpy_ref.act_value(z, "silu") - truth))
    assert err_numba < max(4 * err_numpy, 1e-5)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_unknown_activation_raises(backend):
    z = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="unknown activation"):
        ops_of(backend).bias_act_forward(z, z, np.zeros(3, np.float32), "swish")


# ----------------------------------------------------------------------------- structure

def _public_functions(mod):
    return {n: f for n, f in vars(mod).items() if inspect.isfunction(f) and not n.startswith("_")
            and f.__module__ == mod.__name__}


def test_numba_backend_has_every_op_with_the_same_signature():
    from snpse_np.backends import numba_cpu
    ref = _public_functions(numpy_ref)
    got = _public_functions(numba_cpu)
    for name, f in ref.items():
        assert name in got, f"numba_cpu lacks {name}"
        assert inspect.signature(got[name]) == inspect.signature(f), name
    assert numba_cpu.NAME == "numba" and tuple(numba_cpu.ACTIVATIONS) == tuple(numpy_ref.ACTIVATIONS)


def test_cuda_backend_has_every_op_with_the_same_signature():
    # Read from the source: cupy may be missing here.
    path = os.path.join(ROOT, "snpse_np", "backends", "cuda.py")
    tree = ast.parse(open(path).read())
    got = {n.name: [a.arg for a in n.args.args] for n in tree.body
           if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    for name, f in _public_functions(numpy_ref).items():
        assert name in got, f"cuda.py lacks {name}"
        assert got[name] == list(inspect.signature(f).parameters), name


def test_import_snpse_np_imports_neither_numba_nor_cupy():
    code = ("import sys, snpse_np; snpse_np.BoxUniform; from snpse_np import backend; "
            "bad = [m for m in ('numba', 'cupy') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


# ----------------------------------------------------------------------------- the kernel lab

# Every kernels/<op>.py file (each has a VARIANTS registry); the others are tools.
LAB_TOOLS = ("common.py", "bench_all.py", "gpu_profile.py", "__init__.py")
LAB = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "kernels")) if f.endswith(".py") and f not in LAB_TOOLS)


def _lab(name):
    return importlib.import_module(f"kernels.{name}")


@pytest.mark.parametrize("name", LAB)
def test_kernel_lab_variants_pass_validation(name):
    from kernels.common import validate_module
    mod = _lab(name)
    assert hasattr(mod, "VARIANTS") and hasattr(mod, "OPS"), f"kernels/{name}.py has no VARIANTS/OPS"
    assert "prod" in mod.VARIANTS and "numpy" in mod.VARIANTS
    assert validate_module(mod) > 0


@pytest.mark.parametrize("name", LAB)
def test_kernel_lab_docstring_lists_every_variant(name):
    mod = _lab(name)
    doc = mod.__doc__
    for v in list(mod.VARIANTS) + ["prod", "numpy"]:
        assert f"``{v}``" in doc, f"kernels/{name}.py docstring does not list variant {v!r}"


def test_xoroshiro_state_port_matches_numba():
    from numba.cuda.random import init_xoroshiro128p_states_cpu, xoroshiro128p_dtype

    from kernels.em_trajectory import host_states
    for seed in (0, 12345):
        ref = np.empty(6, dtype=xoroshiro128p_dtype)
        init_xoroshiro128p_states_cpu(ref, seed, 0)
        assert np.array_equal(host_states(6, seed), ref)
