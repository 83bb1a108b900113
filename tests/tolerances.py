"""The tolerance table: (dtype, op) -> (rtol, atol, reason), and the comparison that uses it.

One table for the package's tests (tests/test_ops.py: every op on every backend against
``backends.numpy_ref``) and the kernel lab (``kernels/common.py`` imports it from here to
validate its variants). Each entry says why two correct implementations of the op may differ
by that much; float64 entries are 1e-9 / 1e-11 (only reassociation and FMA contraction).

``assert_close_to_ref(op, got, ref, dtype, what)`` raises an AssertionError naming the worst
entry, the tolerance and its reason. Plain numpy; importing this changes no setting.
"""
import numpy as np

# Compared against numpy_ref run in the SAME dtype on the same inputs. Reasons name what makes
# two correct implementations differ.
_F32_ULPS = "float32 rounding: a different but valid order of the same few operations"
_F32_FAST = ("float32 rational tanh/sigmoid (|err| <= 2.7e-7 on tanh) times |z| <= ~15 in silu/gelu "
             "and their derivatives; numpy's own float32 exp/tanh are off by ~1e-6 at these inputs")
_F32_SUM = "float32 sums of B rows in another order (or a float64 accumulator) vs numpy's"
_F64 = "float64: only reassociation and FMA contraction differ"
TOLERANCES = {
    ("float32", "bias_act_forward"): (1e-5, 1e-5, _F32_FAST),
    ("float32", "act_backward"): (1e-5, 2e-5, _F32_FAST + "; gelu' has 1 - tanh^2 cancellation"),
    ("float32", "act_tangent"): (1e-5, 2e-5, _F32_FAST + "; gelu' has 1 - tanh^2 cancellation"),
    ("float32", "bias_grad"): (1e-5, 1e-5, _F32_SUM),
    ("float32", "sinusoidal_embedding"): (0.0, 2e-7, "both round a float64 sin/cos to float32; "
                                          "the float64 values differ in the last bits (1 ulp of 1.0 in float32 "
                                          "is 1.2e-7)"),
    ("float32", "dsm_perturb"): (1e-6, 1e-6, _F32_ULPS),
    ("float32", "dsm_loss"): (1e-5, 1e-7, _F32_ULPS + "; the loss is summed in float64"),
    ("float32", "adam_step"): (1e-5, 1e-7, _F32_ULPS + "; sqrt(v / bc2) vs fused divisions"),
    ("float32", "ema_update"): (1e-6, 1e-7, _F32_ULPS),
    ("float32", "affine_step"): (1e-6, 1e-6, _F32_ULPS),
    ("float32", "langevin_step"): (1e-5, 1e-6, "float64 batch norms summed in another order, "
                                   "then a float32 update"),
    ("float32", "matmul"): (1e-5, 1e-5, "float32 sums of k products in another order (blocked GEMM, "
                             "FMA); the cases scale entries of out to ~1"),
    ("float32", "trace_rows"): (1e-5, 1e-5, _F32_SUM + " (K d terms per row)"),
    ("float32", "matmul_tf32"): (5e-3, 5e-3, "TF32 keeps 10 mantissa bits of each operand (relative error up "
                                 "to 2^-10 if truncated) before float32 accumulation: ~8e-4 standard error "
                                 "per entry of out ~ 1, 5e-3 is > 6 of them"),
    ("float32", "em_trajectory"): (2e-3, 2e-3, "float32 MLP over many steps: rounding differences "
                                   "grow along the trajectory (affine map with |a| ~ 1)"),
    ("float32", "heun_trajectory"): (2e-3, 2e-3, "float32 MLP over many steps (as em_trajectory), two "
                                     "evaluations a step"),
    ("float32", "mlp_forward"): (1e-5, 1e-5, "float32 sums of K products per layer in another order "
                                 "(register tiles vs BLAS), over ~6 layers"),
    ("float32", "mlp_backward"): (1e-4, 2e-6, "float32 gradient sums over the batch in another order "
                                  "(per-tile sums added atomically in arrival order vs one GEMM)"),
    ("float32", "train_step"): (1e-4, 1e-6, "float32 forward, loss and backward in another summation "
                                "order, then Adam's division by sqrt(v) (v ~ g^2 early on)"),
}
for _op in {k[1] for k in TOLERANCES}:
    TOLERANCES[("float64", _op)] = (1e-9, 1e-11, _F64)
TOLERANCES[("float64", "em_trajectory")] = (1e-7, 1e-7, _F64 + ", accumulated over the trajectory")


def tolerance(dtype, op):
    return TOLERANCES[(np.dtype(dtype).name, op)]


def assert_close_to_ref(op, got, ref, dtype, what=""):
    """Raise AssertionError when ``got`` and ``ref`` differ by more than the table allows."""
    rtol, atol, reason = tolerance(dtype, op)
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise AssertionError(f"{op}{what}: shape {got.shape} != reference {ref.shape}")
    bad = ~(np.abs(got - ref) <= atol + rtol * np.abs(ref))
    bad &= ~(np.isnan(got) & np.isnan(ref))
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, np.abs(got - ref), -1)), got.shape) if got.ndim else ()
        raise AssertionError(
            f"{op}{what} ({np.dtype(dtype).name}): {int(bad.sum())} of {got.size} values off; worst at {i}: "
            f"{got[i]!r} vs reference {ref[i]!r} (rtol {rtol}, atol {atol}: {reason})")
