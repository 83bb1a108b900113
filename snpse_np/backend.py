"""Backend selection: which array module and which kernels run the network, loss and samplers.

``get_backend(name=None)`` returns a ``Backend``:

- ``name``: "numpy", "numba" or "cuda";
- ``xp``: the array module (numpy, or cupy on the GPU);
- ``ops``: the op module (same names and signatures in every backend, see ``backends.numpy_ref``);
- ``synchronize()``, ``to_host(a)``, ``to_device(a)``;
- ``normal_source(rng)``: a function ``fill(out)`` writing standard normal draws into the
  device array ``out``; on the CPU drawn from ``rng`` itself, on the GPU by a device generator
  seeded from ``rng`` (drawing on the host and copying cost more than a sampler step there).

Choice: an explicit name, else the ``SNPSE_BACKEND`` environment variable, else the best
available (cuda with a GPU and CuPy, numba when it imports, numpy otherwise). Imports are lazy,
so ``import snpse_np`` loads neither numba nor cupy. The backend is passed down and stored by
the objects that use it; nothing here is global state.
"""
import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

BACKENDS = ("numpy", "numba", "cuda")


@dataclass(frozen=True)
class Backend:
    name: str
    xp: Any
    ops: Any
    synchronize: Callable[[], None]
    to_host: Callable[[Any], np.ndarray]
    to_device: Callable[[Any], Any]
    normal_source: Callable[[np.random.Generator], Callable[[Any], None]]

    def __repr__(self):
        return f"Backend({self.name!r})"


def _identity(a):
    return a


def _noop():
    return None


def _host_normal_source(rng):
    def fill(out):
        out[...] = rng.standard_normal(out.shape)
    return fill


def _cuda_normal_source(rng):
    import cupy as cp
    device_rng = cp.random.RandomState(int(rng.integers(2 ** 63)))

    def fill(out):
        out[...] = device_rng.standard_normal(out.shape, dtype=out.dtype)
    return fill


def _numpy_backend():
    from .backends import numpy_ref
    return Backend("numpy", np, numpy_ref, _noop, np.asarray, np.asarray, _host_normal_source)


def _numba_backend():
    ops = importlib.import_module(".backends.numba_cpu", __package__)
    return Backend("numba", np, ops, _noop, np.asarray, np.asarray, _host_normal_source)


def _cuda_backend():
    import cupy as cp
    ops = importlib.import_module(".backends.cuda", __package__)
    return Backend("cuda", cp, ops, cp.cuda.Device().synchronize, cp.asnumpy, cp.asarray, _cuda_normal_source)


def gpu_available():
    """True when CuPy imports and sees a CUDA device (the clean check; no exception leaks)."""
    try:
        import cupy
        return bool(cupy.cuda.is_available())
    except Exception:  # ImportError, or a CUDA driver error on a machine without a GPU
        return False


def numba_available():
    try:
        import numba  # noqa: F401
        return True
    except ImportError:
        return False


_MAKERS = {"numpy": _numpy_backend, "numba": _numba_backend, "cuda": _cuda_backend}


def get_backend(name=None):
    """Return the Backend for ``name`` (None: $SNPSE_BACKEND, else the best available)."""
    if isinstance(name, Backend):
        return name
    if name is None:
        name = os.environ.get("SNPSE_BACKEND") or None
    if name is None:
        if gpu_available():
            name = "cuda"
        elif numba_available():
            name = "numba"
        else:
            name = "numpy"
    if name not in _MAKERS:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
    if name == "cuda" and not gpu_available():
        raise ValueError("backend 'cuda' needs CuPy and a CUDA GPU; none was found "
                         "(install the 'gpu' extra on a GPU machine, or use 'numba'/'numpy')")
    if name == "numba" and not numba_available():
        raise ValueError("backend 'numba' needs the numba package (pip install numba)")
    return _MAKERS[name]()
