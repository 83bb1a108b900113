"""Backends: one module per device, identical op names and signatures.

- ``numpy_ref``: the oracle; obvious numpy, float64-capable, also the numpy-only backend.
- ``numba_cpu``: fused ``@njit`` kernels (the CPU default when numba imports).
- ``cuda``: CuPy kernels for the MLP, numba.cuda kernels for the loss and samplers.

Ops use destination passing: outputs first, then inputs, then scalars, so every backend has
the same signatures and timed regions allocate nothing. See ``numpy_ref`` for the op list.
"""
