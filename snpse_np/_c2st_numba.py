"""Compiled two-hidden-layer ReLU classifier for the fast C2ST (private; used by ``metrics.c2st``).

The network and its training copy scikit-learn's ``MLPClassifier`` at the settings sbibm uses:
input (d) -> ReLU (H) -> ReLU (H) -> logistic (1), H = 10 d; binary log-loss plus the L2 penalty
``0.5 * alpha * sum(W**2) / batch_rows`` on the weights (not the biases); Glorot-uniform
initialisation; Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8, bias-corrected step size) over
minibatches of 200 rows of a freshly shuffled index each epoch (the last batch may be smaller);
stop when the epoch's mean training loss has not improved by ``tol`` for more than
``n_iter_no_change`` epochs, or after ``max_iter`` epochs.

All parameters live in one flat vector ``theta`` of length P (see ``param_layout``); the kernels
take reshaped views of it, so the gradient and Adam's two moments are flat vectors of the same
length. Layout of ``theta`` (row-major blocks)::

    W1 (d, H) | b1 (H,) | W2 (H, H) | b2 (H,) | w3 (H,) | b3 (1,)

Matrix products: with ``blas`` an int, ``np.dot`` inside Numba calls scipy's BLAS (much faster
for H >= 50); with ``blas=None`` plain loops are compiled instead, so the classifier also runs
where scipy is not installed. Numba prunes the other branch at compile time (``blas is None`` is
decided by the argument's type), and the two variants are cached separately.

Only ``numpy`` and ``numba`` are imported here; ``metrics`` imports this module lazily.
"""
import numpy as np
from numba import njit


def param_layout(d, h):
    """Offsets of the blocks of ``theta`` for input dim ``d`` and hidden width ``h``.

    Returns ``(o_w1, o_b1, o_w2, o_b2, o_w3, o_b3, P)``.
    """
    o_w1 = 0
    o_b1 = o_w1 + d * h
    o_w2 = o_b1 + h
    o_b2 = o_w2 + h * h
    o_w3 = o_b2 + h
    o_b3 = o_w3 + h
    return o_w1, o_b1, o_w2, o_b2, o_w3, o_b3, o_b3 + 1


def init_params(d, h, rng, dtype):
    """Glorot-uniform initialisation as scikit-learn's for ReLU networks (factor 6, every layer).

    Weights and biases of a layer with (fan_in, fan_out) are U(-b, b), b = sqrt(6 / (fan_in + fan_out)),
    drawn from ``rng`` (a ``numpy.random.Generator``). Returns ``theta`` of shape (P,), dtype ``dtype``.
    """
    o_w1, o_b1, o_w2, o_b2, o_w3, o_b3, p = param_layout(d, h)
    theta = np.empty(p, dtype=np.float64)
    for lo, hi, fan_in, fan_out in ((o_w1, o_w2, d, h), (o_w2, o_w3, h, h), (o_w3, p, h, 1)):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        theta[lo:hi] = rng.uniform(-bound, bound, hi - lo)
    return theta.astype(dtype)


# --------------------------------------------------------------------------------------------
# matrix products: BLAS through np.dot (blas: int) or loops (blas: None); all C-contiguous
# --------------------------------------------------------------------------------------------

@njit(cache=True, fastmath=True)
def _mm_nn(A, B, out, blas):
    """out (m, n) = A (m, k) @ B (k, n)."""
    if blas is None:
        # i, l, j order: the inner loop runs along contiguous rows of B and out
        for i in range(A.shape[0]):
            for j in range(B.shape[1]):
                out[i, j] = 0
            for l in range(A.shape[1]):
                a = A[i, l]
                for j in range(B.shape[1]):
                    out[i, j] += a * B[l, j]
    else:
        np.dot(A, B, out)


@njit(cache=True, fastmath=True)
def _mm_tn(A, B, out, blas):
    """out (k, n) = A (m, k).T @ B (m, n)."""
    if blas is None:
        out[:] = 0
        for i in range(A.shape[0]):
            for l in range(A.shape[1]):
                a = A[i, l]
                for j in range(B.shape[1]):
                    out[l, j] += a * B[i, j]
    else:
        np.dot(A.T, B, out)


@njit(cache=True, fastmath=True)
def _mm_nt(A, B, out, blas):
    """out (m, k) = A (m, n) @ B (k, n).T."""
    if blas is None:
        # out[i, l] is a dot product of two contiguous rows
        for i in range(A.shape[0]):
            for l in range(B.shape[0]):
                s = A[i, 0] * 0
                for j in range(A.shape[1]):
                    s += A[i, j] * B[l, j]
                out[i, l] = s
    else:
        np.dot(A, B.T, out)


@njit(cache=True, fastmath=True)
def _mv(A, x, out, blas):
    """out (m,) = A (m, n) @ x (n,)."""
    if blas is None:
        for i in range(A.shape[0]):
            s = A[i, 0] * 0
            for j in range(A.shape[1]):
                s += A[i, j] * x[j]
            out[i] = s
    else:
        np.dot(A, x, out)


@njit(cache=True, fastmath=True)
def _mtv(A, x, out, blas):
    """out (n,) = A (m, n).T @ x (m,)."""
    if blas is None:
        out[:] = 0
        for i in range(A.shape[0]):
            a = x[i]
            for j in range(A.shape[1]):
                out[j] += a * A[i, j]
    else:
        np.dot(A.T, x, out)


# --------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------

@njit(cache=True, fastmath=True)
def _forward(theta, A0, d, h, A1, A2, z3, blas):
    """Forward pass of the rows of ``A0`` (B, d) into ``A1``, ``A2`` (B, H) and logits ``z3`` (B,)."""
    o_b1 = d * h
    o_w2 = o_b1 + h
    o_b2 = o_w2 + h * h
    o_w3 = o_b2 + h
    o_b3 = o_w3 + h
    W1 = theta[0:o_b1].reshape((d, h))
    b1 = theta[o_b1:o_w2]
    W2 = theta[o_w2:o_b2].reshape((h, h))
    b2 = theta[o_b2:o_w3]
    w3 = theta[o_w3:o_b3]
    b3 = theta[o_b3]
    nb = A0.shape[0]
    _mm_nn(A0, W1, A1, blas)                # (B, d) @ (d, H)
    for b in range(nb):
        for j in range(h):
            a = A1[b, j] + b1[j]
            A1[b, j] = a if a > 0 else 0    # ReLU
    _mm_nn(A1, W2, A2, blas)                # (B, H) @ (H, H)
    for b in range(nb):
        for j in range(h):
            a = A2[b, j] + b2[j]
            A2[b, j] = a if a > 0 else 0
    _mv(A2, w3, z3, blas)                   # (B, H) @ (H,) -> logits (B,)
    for b in range(nb):
        z3[b] += b3


@njit(cache=True, fastmath=True)
def _adam(theta, grad, m, v, lo, hi, wd, inv, lr_t, beta1, beta2, eps):
    """Adam update of ``theta[lo:hi]`` from ``grad[lo:hi]`` (summed over the batch).

    g = (grad + wd * theta) * inv, with wd = alpha for weights and 0 for biases, inv = 1 / batch rows;
    one branch-free loop in the parameters' dtype (vectorises).
    """
    dt = theta.dtype.type
    a = dt(wd)
    s = dt(inv)
    b1 = dt(beta1)
    b2 = dt(beta2)
    c1 = dt(1.0 - beta1)
    c2 = dt(1.0 - beta2)
    lt = dt(lr_t)
    ep = dt(eps)
    for i in range(lo, hi):
        g = (grad[i] + a * theta[i]) * s
        mi = b1 * m[i] + c1 * g
        vi = b2 * v[i] + c2 * g * g
        m[i] = mi
        v[i] = vi
        theta[i] -= lt * mi / (np.sqrt(vi) + ep)


@njit(cache=True, fastmath=True, nogil=True)
def train_epoch(X, y, perm, theta, grad, m, v, step, d, h, batch, lr, alpha, beta1, beta2, eps, blas):
    """One epoch of Adam over ``X[perm]`` in minibatches of ``batch`` rows; updates ``theta`` in place.

    X: (n, d); y: (n,) in {0, 1}, same dtype as X; perm: (n,) int64 visiting order;
    theta, grad, m, v: (P,) parameters, gradient buffer and Adam moments (updated in place);
    step: number of Adam steps taken so far (for the bias correction); blas: int or None.
    Returns ``(mean training loss of the epoch incl. the L2 term, new step count)``: the
    row-weighted mean of the per-batch losses, as scikit-learn's ``loss_curve_``.
    """
    n = perm.shape[0]
    o_b1 = d * h
    o_w2 = o_b1 + h
    o_b2 = o_w2 + h * h
    o_w3 = o_b2 + h
    o_b3 = o_w3 + h
    P = theta.shape[0]
    W2 = theta[o_w2:o_b2].reshape((h, h))
    w3 = theta[o_w3:o_b3]
    gW1 = grad[0:o_b1].reshape((d, h))
    gb1 = grad[o_b1:o_w2]
    gW2 = grad[o_w2:o_b2].reshape((h, h))
    gb2 = grad[o_b2:o_w3]
    gw3 = grad[o_w3:o_b3]
    dt = X.dtype.type
    # work buffers, (batch, .) rows; the last, smaller batch uses their first nb rows
    A0 = np.empty((batch, d), dtype=X.dtype)    # inputs
    A1 = np.empty((batch, h), dtype=X.dtype)    # layer-1 activations
    A2 = np.empty((batch, h), dtype=X.dtype)    # layer-2 activations
    D1 = np.empty((batch, h), dtype=X.dtype)    # dloss/d(layer-1 pre-activation)
    D2 = np.empty((batch, h), dtype=X.dtype)    # dloss/d(layer-2 pre-activation)
    z3 = np.empty(batch, dtype=X.dtype)         # logits
    d3 = np.empty(batch, dtype=X.dtype)         # dloss/dlogit = sigmoid(z) - y
    total = 0.0
    for start in range(0, n, batch):
        nb = min(batch, n - start)
        a0 = A0[:nb]
        a1 = A1[:nb]
        a2 = A2[:nb]
        e1 = D1[:nb]
        e2 = D2[:nb]
        o3 = d3[:nb]
        for b in range(nb):
            r = perm[start + b]
            for k in range(d):
                a0[b, k] = X[r, k]
        _forward(theta, a0, d, h, a1, a2, z3[:nb], blas)
        # binary log-loss from the logit (stable form, float64) and the output delta
        bl = 0.0
        for b in range(nb):
            z = np.float64(z3[b])
            t = np.float64(y[perm[start + b]])
            if z >= 0:
                e = np.exp(-z)
                p = 1.0 / (1.0 + e)
                bl += np.log1p(e) + (1.0 - t) * z
            else:
                e = np.exp(z)
                p = e / (1.0 + e)
                bl += np.log1p(e) - t * z
            o3[b] = dt(p - t)
        # L2 penalty 0.5 alpha |W|^2 on the weights only; batch loss * nb = bl + penalty
        sq = 0.0
        for i in range(0, o_b1):
            sq += np.float64(theta[i]) * np.float64(theta[i])
        for i in range(o_w2, o_b2):
            sq += np.float64(theta[i]) * np.float64(theta[i])
        for i in range(o_w3, o_b3):
            sq += np.float64(theta[i]) * np.float64(theta[i])
        total += bl + 0.5 * alpha * sq
        # backward pass; gradients are sums over the batch (scaled by 1/nb in _adam)
        _mtv(a2, o3, gw3, blas)                 # gw3 (H,) = A2.T @ d3
        gb3 = 0.0
        for b in range(nb):
            db = o3[b]
            gb3 += np.float64(db)
            for j in range(h):
                # D2 = d3 w3^T masked by relu'(layer 2)
                e2[b, j] = db * w3[j] if a2[b, j] > 0 else dt(0)
        grad[o_b3] = dt(gb3)
        _mm_tn(a1, e2, gW2, blas)               # gW2 (H, H) = A1.T @ D2
        _mm_nt(e2, W2, e1, blas)                # D1 (B, H) = D2 @ W2.T, masked below
        for j in range(h):
            gb2[j] = 0
            gb1[j] = 0
        for b in range(nb):
            for j in range(h):
                gb2[j] += e2[b, j]
                if a1[b, j] <= 0:               # relu'(layer 1)
                    e1[b, j] = 0
                gb1[j] += e1[b, j]
        _mm_tn(a0, e1, gW1, blas)               # gW1 (d, H) = A0.T @ D1
        # Adam step, block by block (weights carry the L2 term, biases do not)
        step += 1
        lr_t = lr * np.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
        inv = 1.0 / nb
        _adam(theta, grad, m, v, 0, o_b1, alpha, inv, lr_t, beta1, beta2, eps)       # W1
        _adam(theta, grad, m, v, o_b1, o_w2, 0.0, inv, lr_t, beta1, beta2, eps)      # b1
        _adam(theta, grad, m, v, o_w2, o_b2, alpha, inv, lr_t, beta1, beta2, eps)    # W2
        _adam(theta, grad, m, v, o_b2, o_w3, 0.0, inv, lr_t, beta1, beta2, eps)      # b2
        _adam(theta, grad, m, v, o_w3, o_b3, alpha, inv, lr_t, beta1, beta2, eps)    # w3
        _adam(theta, grad, m, v, o_b3, P, 0.0, inv, lr_t, beta1, beta2, eps)         # b3
    return total / n, step


@njit(cache=True, fastmath=True, nogil=True)
def accuracy(X, y, theta, d, h, chunk, blas):
    """Fraction of rows of ``X`` (n, d) whose predicted class (logit > 0, i.e. p > 0.5) equals ``y`` (n,).

    Runs the forward pass in chunks of ``chunk`` rows so that the activations stay small.
    """
    n = X.shape[0]
    A0 = np.empty((chunk, d), dtype=X.dtype)
    A1 = np.empty((chunk, h), dtype=X.dtype)
    A2 = np.empty((chunk, h), dtype=X.dtype)
    z3 = np.empty(chunk, dtype=X.dtype)
    correct = 0
    for start in range(0, n, chunk):
        nb = min(chunk, n - start)
        a0 = A0[:nb]
        for b in range(nb):
            for k in range(d):
                a0[b, k] = X[start + b, k]
        _forward(theta, a0, d, h, A1[:nb], A2[:nb], z3[:nb], blas)
        for b in range(nb):
            pred = 1.0 if z3[b] > 0 else 0.0
            if pred == y[start + b]:
                correct += 1
    return correct / n


def fit_predict_accuracy(X_train, y_train, X_test, y_test, rng, *, blas, hidden=None,
                         batch_size=200, learning_rate=1e-3, alpha=1e-4, beta1=0.9, beta2=0.999,
                         eps=1e-8, tol=1e-4, n_iter_no_change=10, max_iter=10000):
    """Train the classifier on one fold and return ``(test accuracy, epochs run)``.

    X_train (n, d), y_train (n,), X_test (m, d), y_test (m,): C-contiguous, one float dtype
    (float32 or float64; the network computes in it). ``rng``: ``numpy.random.Generator`` for
    the initialisation and the per-epoch shuffles. ``blas``: int (BLAS) or None (loops).
    Stopping rule as scikit-learn's with ``early_stopping=False``: the epoch's training loss
    counts as "no improvement" when > best - tol; stop once that happened more than
    ``n_iter_no_change`` epochs in a row.
    """
    n, d = X_train.shape
    h = 10 * d if hidden is None else int(hidden)
    dtype = X_train.dtype
    theta = init_params(d, h, rng, dtype)
    grad = np.zeros_like(theta)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    batch = min(batch_size, n)
    step = 0
    best = np.inf
    bad = 0
    epochs = 0
    for epochs in range(1, max_iter + 1):
        perm = rng.permutation(n)
        loss, step = train_epoch(X_train, y_train, perm, theta, grad, m, v, step, d, h, batch,
                                 learning_rate, alpha, beta1, beta2, eps, blas)
        if not np.isfinite(loss):
            raise FloatingPointError("C2ST classifier training diverged (non-finite loss)")
        bad = bad + 1 if loss > best - tol else 0
        best = min(best, loss)
        if bad > n_iter_no_change:
            break
    acc = accuracy(X_test, y_test, theta, d, h, 1024, blas)
    return acc, epochs
