"""numba.cuda kernels for the loss and the sampler steps (imports numba.cuda only, not CuPy).

Used by ``backends.cuda`` on CuPy arrays (CUDA array interface), and testable on numpy arrays
under ``NUMBA_ENABLE_CUDASIM=1`` (tests/test_cuda_kernels.py). Each ``launch_*`` function
picks the grid and launches one op with numpy_ref's maths:

- ``launch_dsm_perturb(theta_in, theta0, z, alpha, sigma, c_in)``;
- ``launch_dsm_loss(dout, out, z, c, acc)``: writes dout and ADDS sum r^2 (float64) to acc[0];
  the caller zeroes acc and divides by n (returning the float needs a host copy anyway);
- ``launch_affine_step(theta, a, score, b, noise, c)``;
- ``launch_langevin_step(theta, score, noise, snr, alpha, acc)``: acc (2,) float64 zeroed by
  the caller; the batch norms are reduced on the device and the update kernel reads them, so
  no host round trip;
- ``launch_trace_rows(out, tangent_out, tangent_in)``.

All take ``stream`` (0: the default stream, or a numba stream such as
``cuda.external_stream(cupy_stream.ptr)``). numba-cuda 0.30.4 under numpy >= 2.5 needs
``numpy.row_stack`` before import: ``ensure_row_stack()`` puts it back.
"""
import math

import numpy as np


def ensure_row_stack():
    """numba-cuda 0.30.4 calls numpy.row_stack, removed in numpy 2.5; alias it to vstack."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


ensure_row_stack()

from numba import cuda, float64  # noqa: E402

TPB = 128  # threads per block; the shared reduction buffers below have this size


def blocks(n, tpb=TPB):
    return max(1, (int(n) + tpb - 1) // tpb)


# ----------------------------------------------------------------------------- reductions

@cuda.jit(device=True)
def _block_sum_add(sm, t, acc, slot):
    # Tree reduction of sm[0:TPB] (shared float64) by the block's threads, then one atomic
    # add of the block's total into acc[slot]. Every thread of the block must call this.
    cuda.syncthreads()
    s = TPB // 2
    while s > 0:
        if t < s:
            sm[t] += sm[t + s]
        cuda.syncthreads()
        s //= 2
    if t == 0:
        cuda.atomic.add(acc, slot, sm[0])


# ----------------------------------------------------------------------------- loss

@cuda.jit
def _dsm_perturb(theta_in, theta0, z, alpha, sigma, c_in):
    # One thread per element k of the (B, d) arrays: row i = k // d, column j = k % d.
    k = cuda.grid(1)
    d = theta0.shape[1]
    if k < theta0.shape[0] * d:
        i = k // d
        j = k - i * d
        theta_in[i, j] = c_in[i] * (alpha[i] * theta0[i, j] + sigma[i] * z[i, j])


@cuda.jit
def _dsm_loss(dout, out, z, c, acc):
    # One thread per element: r = c_i out_ij + z_ij (array dtype), dout = (2/n) c_i r;
    # r^2 in float64 summed per block in shared memory, one atomic add per block into acc[0].
    sm = cuda.shared.array(TPB, float64)
    k = cuda.grid(1)
    t = cuda.threadIdx.x
    B, d = out.shape
    n = B * d
    v = 0.0
    if k < n:
        i = k // d
        j = k - i * d
        r = c[i] * out[i, j] + z[i, j]
        dout[i, j] = (2.0 / n) * c[i] * r
        v = float64(r) * float64(r)
    sm[t] = v
    _block_sum_add(sm, t, acc, 0)


# ----------------------------------------------------------------------------- samplers

@cuda.jit
def _affine_step(theta, a, score, b, noise, c):
    # One thread per element of theta (B, d): theta = a_i theta + b_i score + c_i noise.
    k = cuda.grid(1)
    d = theta.shape[1]
    if k < theta.shape[0] * d:
        i = k // d
        j = k - i * d
        theta[i, j] = a[i] * theta[i, j] + (b[i] * score[i, j] + c[i] * noise[i, j])


@cuda.jit
def _row_norm_sums(score, noise, acc):
    # One thread per row i: |noise_i| and |score_i| (float64); block sums atomically added to
    # acc[0] (noise) and acc[1] (score).
    sm = cuda.shared.array(TPB, float64)
    i = cuda.grid(1)
    t = cuda.threadIdx.x
    a = 0.0
    s = 0.0
    if i < score.shape[0]:
        for j in range(score.shape[1]):
            a += float64(noise[i, j]) * float64(noise[i, j])
            s += float64(score[i, j]) * float64(score[i, j])
        a = math.sqrt(a)
        s = math.sqrt(s)
    sm[t] = a
    _block_sum_add(sm, t, acc, 0)
    sm[t] = s
    _block_sum_add(sm, t, acc, 1)


@cuda.jit
def _langevin_update(theta, score, noise, acc, snr, alpha):
    # One thread per element; every thread recomputes the shared step size from acc (cheap,
    # and saves a host round trip): eps = 2 alpha (snr mean|noise| / mean|score|)^2.
    k = cuda.grid(1)
    B, d = theta.shape
    if k < B * d:
        i = k // d
        j = k - i * d
        nz = acc[0] / B
        ns = max(acc[1] / B, 1e-30)
        ratio = snr * nz / ns
        eps = 2.0 * alpha * ratio * ratio
        theta[i, j] = theta[i, j] + (eps * float64(score[i, j]) + math.sqrt(2.0 * eps) * float64(noise[i, j]))


@cuda.jit
def _trace_rows(out, tangent_out, tangent_in):
    # One thread per row i: sum over k < K and j < d of tangent_out[k, i, j] tangent_in[k, i, j].
    i = cuda.grid(1)
    K, B, d = tangent_out.shape
    if i < B:
        acc = 0.0
        for k in range(K):
            for j in range(d):
                acc += float64(tangent_out[k, i, j]) * float64(tangent_in[k, i, j])
        out[i] = acc


# ----------------------------------------------------------------------------- launchers

def launch_dsm_perturb(theta_in, theta0, z, alpha, sigma, c_in, stream=0):
    _dsm_perturb[blocks(theta0.shape[0] * theta0.shape[1]), TPB, stream](theta_in, theta0, z, alpha, sigma, c_in)


def launch_dsm_loss(dout, out, z, c, acc, stream=0):
    _dsm_loss[blocks(out.shape[0] * out.shape[1]), TPB, stream](dout, out, z, c, acc)


def launch_affine_step(theta, a, score, b, noise, c, stream=0):
    _affine_step[blocks(theta.shape[0] * theta.shape[1]), TPB, stream](theta, a, score, b, noise, c)


def launch_langevin_step(theta, score, noise, snr, alpha, acc, stream=0):
    _row_norm_sums[blocks(theta.shape[0]), TPB, stream](score, noise, acc)
    _langevin_update[blocks(theta.shape[0] * theta.shape[1]), TPB, stream](theta, score, noise, acc,
                                                                         float(snr), float(alpha))


def launch_trace_rows(out, tangent_out, tangent_in, stream=0):
    _trace_rows[blocks(tangent_out.shape[1]), TPB, stream](out, tangent_out, tangent_in)
