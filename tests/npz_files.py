"""Test helper: rewrite a saved posterior (.npz) to make it stale, damaged or from another version."""
import json

import numpy as np


def rewrite_npz(path, **changes):
    """Rewrite the .npz at path: meta entries set, or deleted where the value is None; a key
    "drop_<name>" (any value) removes the array <name>."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    for k, v in changes.items():
        if k.startswith("drop_"):
            arrays.pop(k[len("drop_"):])
        elif v is None:
            meta.pop(k)
        else:
            meta[k] = v
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
