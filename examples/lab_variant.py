"""Add a kernel variant to the lab and see it validated and timed.

The kernel lab (kernels/) holds numbered variants of every fused op next to the shipping ones:
each op file has ``OPS``, ``make_case`` (the op's arguments at one size), the sizes, and a
``VARIANTS`` registry of implementations; kernels/common.py validates every variant against
``snpse_np.backends.numpy_ref`` within the tolerance table (tests/tolerances.py: each entry
says why two correct implementations may differ that much), then times it.

This script adds two variants of ``ema_update`` (the weight EMA, e <- d e + (1 - d) p) to the
lab's adam.py registry, in memory:

- ``numba_v3_lerp``: one numba loop written as e + (1 - d)(p - e) (a lerp: one multiply-add);
- ``broken``: a variant with the weights swapped, d p + (1 - d) e, which validation must catch.

It validates both (the broken one fails with the tolerance and its reason), times the good one
against numpy_ref and the shipping numba kernel, and writes lab_variant.png (median ms per call).
To keep a variant: add it to VARIANTS in kernels/<op>.py and list it in that file's docstring
(tests/test_ops.py checks that every variant validates and is listed).

    python examples/lab_variant.py          # ~1 minute on one core
    python examples/lab_variant.py --tiny   # seconds: a smoke test (tests/test_examples.py)
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the lab is not installed: it runs from the repository

from kernels import adam  # noqa: E402  (the op file: OPS, make_case, sizes, VARIANTS)
from kernels.common import (Variant, namespace, print_table, time_module, use_lab_threading_layer,  # noqa: E402
                            validate_module)


def make_lerp():
    from numba import njit

    @njit(cache=False)  # compiled at the first call (timed separately): no cache files beside the example
    def _lerp(e, p, w):
        for i in range(e.shape[0]):
            e[i] += w * (p[i] - e[i])

    def ema_update(e, p, decay):
        # the kernel is compiled per dtype; its scalar is cast to e's dtype (as prod does)
        _lerp(e, p, e.dtype.type(1.0 - decay))
    return ema_update


def broken_ema_update(e, p, decay):
    e *= 1.0 - decay  # wrong on purpose: the two weights are swapped
    e += decay * p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a few seconds: small sizes, few repeats")
    ap.add_argument("--out", default=".", help="folder for the figure")
    args = ap.parse_args(argv)
    use_lab_threading_layer()  # a lab entry point: Numba's threading layer for prange variants

    # 1. register the variants (in memory; kernels/adam.py is unchanged)
    adam.VARIANTS["numba_v3_lerp"] = Variant(namespace(ema_update=make_lerp()), note="e += (1 - d)(p - e)")
    adam.VARIANTS["broken"] = Variant(namespace(ema_update=broken_ema_update), note="weights swapped")

    # 2. validate: every variant x op x dtype x tiny size, against numpy_ref
    n = validate_module(adam, variants=["numpy", "prod", "numba_v3_lerp"])
    print(f"validated numpy, prod and numba_v3_lerp: {n} checks passed (float32 and float64)")
    try:
        validate_module(adam, variants=["broken"])
        raise SystemExit("the broken variant passed validation: the lab's check is not working")
    except AssertionError as err:
        print(f"the broken variant is caught:\n  {err}")

    # 3. time the good ones (median of repeats; the first call, Numba's compile, is its own column)
    sizes = [10_000] if args.tiny else adam.TIMING_SIZES
    rows = [r for r in time_module(adam, sizes=sizes, variants=["numpy", "prod", "numba_v3_lerp"],
                                   repeats=3 if args.tiny else 20, min_time=0.0 if args.tiny else 0.05)
            if r["op"] == "ema_update"]
    print_table(rows, "ema_update, float32")

    from matplotlib.figure import Figure
    from snpse_np.files import write_atomic
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    labels = [f"{r['variant']}\n{r['size']}" for r in rows]
    ax.bar(range(len(rows)), [float(r["ms"]) for r in rows], color=["C0", "C1", "C2"] * len(sizes))
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set(ylabel="median ms per call", title="ema_update variants (validated against numpy_ref)")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "lab_variant.png")
    write_atomic(path, lambda f: fig.savefig(f, dpi=110, format="png", bbox_inches="tight"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
