"""The one way numba.cuda is imported: ``load()``, called by the cuda backend and the kernel lab.

numba-cuda 0.30.4 (the lent GPU machines' version) calls ``numpy.row_stack`` while it imports,
and numpy 2.5 removed that alias of ``numpy.vstack``: the import fails with "module 'numpy' has no
attribute 'row_stack'". ``load()`` puts the alias back, only when it is missing, and then imports
the package's numba.cuda kernels (``_cuda_kernels``). It is an explicit call made where the GPU
code loads, never a side effect of importing ``snpse_np`` or one of its modules (importing
``_cuda_kernels`` directly on such a numpy raises ImportError and names this function).

Without a GPU, ``from numba import cuda`` still works (``cuda.is_available()`` is False), and
with ``NUMBA_ENABLE_CUDASIM=1`` in the environment of the process the kernels run in Numba's
CUDA simulator on numpy arrays (tests/test_cuda_kernels.py).
"""
import importlib

import numpy as np


def load():
    """Import numba.cuda and the package's numba.cuda kernels; returns ``_cuda_kernels``.

    Adds ``numpy.row_stack = numpy.vstack`` first when numpy lacks it (numpy >= 2.5), which
    numba-cuda 0.30.4 needs at import.
    """
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
    return importlib.import_module("snpse_np.backends._cuda_kernels")
