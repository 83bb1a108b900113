"""Argument checks at the public boundary: one home for "is this a usable number / array".

Every check raises ``ValueError`` with the argument's name and what was wrong, so a bad input
fails where the caller passed it, not deep inside numpy (``range() arg 3 must not be zero``,
``need at least one array to concatenate``) or, worse, runs and returns wrong numbers
(``batch_size=-1`` once returned uninitialised memory).

- ``real_array(value, name)``          float64 array; rejects complex and string arrays and
                                        object arrays of anything but real numbers (numpy would
                                        cast complex to real with only a warning);
- ``integer(value, name, minimum)``    an int >= minimum; integral floats (``1e4``) are taken,
                                        bools, NaN and floats such as 2.5 are not;
- ``real(value, name, ...)``           a finite float (optionally > or >= a bound).
"""
import math
import numbers

import numpy as np


def real_array(value, name):
    """``value`` as a float64 ndarray (any shape); ValueError if it is not real numbers."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as err:  # ragged nested lists
            raise ValueError(f"{name} must be an array of real numbers: {err}") from None
    kind = arr.dtype.kind
    if kind == "c":
        raise ValueError(f"{name} must be real, got a complex array (dtype {arr.dtype}); "
                         f"pass the real part (or the modulus) explicitly")
    if kind == "O":  # e.g. a list of numpy scalars: fine if every entry is a real number
        wrong = next((v for v in arr.flat if not isinstance(v, numbers.Real)), arr)
        if wrong is not arr:
            raise ValueError(f"{name} must be an array of real numbers, it holds {type(wrong).__name__} "
                             f"{wrong!r:.40}")
        return arr.astype(np.float64)
    if kind not in "fiub":
        raise ValueError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def integer(value, name, minimum=None):
    """``value`` as an int (an integer, or an integral float such as 1e4; not a bool);
    ValueError below ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or (
            not isinstance(value, numbers.Integral) and not float(value).is_integer()):
        raise ValueError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def real(value, name, above=None, at_least=None):
    """``value`` as a finite float; ``above``: strictly greater than; ``at_least``: >=."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if above is not None and not value > above:
        raise ValueError(f"{name} must be > {above}, got {value}")
    if at_least is not None and not value >= at_least:
        raise ValueError(f"{name} must be >= {at_least}, got {value}")
    return value
