"""The score network, hand-written: forward, backward (manual backprop) and forward-mode tangents.

Architecture (Sharrock et al. 2024, Sec. 5.1 / App. E.3.2):

    theta_emb = MLP_theta(theta_in)      d -> 256 -> 256 -> max(30, 4d)
    x_emb     = MLP_x(x)                 p -> 256 -> 256 -> max(30, 4p)
    t_emb     = sinusoidal(tau)          64 fixed channels, sines then cosines
    out       = MLP_head([theta_emb, x_emb, t_emb])   -> 256 -> 256 -> d

with an activation (SiLU by default) between layers and a linear output on every MLP.

The concatenation is never built: the head's first layer is the sum of three linear maps,

    z1 = theta_emb @ W_theta + x_emb @ W_x + t_emb @ W_t + b1,

so ``condition(x)`` can precompute ``x_emb @ W_x + b1`` once per observation and sampling never
runs the x-MLP again. All parameters live in ONE flat buffer (views per layer), so the optimiser
is a single fused update. Weights are stored (fan_in, fan_out): ``z = h @ W`` is a plain GEMM with
the batch as the long dimension. Initialisation is PyTorch's nn.Linear default,
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.

Every layer is z = h_in W + b, h_out = act(z), written once as three units at the bottom of this
file: ``linear_forward``, ``linear_backward`` (dL/dh_out -> dL/dz, dW, db, dL/dh_in) and
``linear_tangent`` (forward mode). The network's three passes are loops over them, each writing
into a ``Workspace`` made once per batch size:

- ``forward(params, theta_in, tau, ws, x=None, xc=None) -> out``  (B, d), caches pre-activations;
- ``backward(params, dout, ws, grads)``  accumulates nothing: writes d loss / d params into grads;
- ``tangent(params, t_in, ws) -> t_out``  forward-mode Jacobian products (K, B, d) -> (K, B, d)
  w.r.t. theta_in only (x and tau fixed), for the divergence in ``log_prob``.

The speed-ups live here too (the shared-time bias fold, in-place inference workspaces); the
plain float64 version of the same network, with its derivation, is ``snpse_np.reference``.
"""
import numpy as np

T_EMBED_DIM = 64


def default_sizes(dim_theta, dim_x, hidden=256):
    """The paper's layer widths for theta in R^d and x in R^p."""
    return dict(theta=[dim_theta, hidden, hidden, max(30, 4 * dim_theta)],
                x=[dim_x, hidden, hidden, max(30, 4 * dim_x)],
                head=[hidden, hidden, dim_theta])


class ScoreNetwork:
    """Layer sizes, the flat parameter layout, and the three passes (see module docstring).

    theta_sizes: [d, h1, ..., E_theta]; x_sizes: [p, ..., E_x]; head_sizes: [h1, ..., d]
    (the head's input width E_theta + E_x + 64 is implied). ``activation`` names the
    nonlinearity between layers ("silu", "relu", "gelu", "tanh").
    """

    def __init__(self, theta_sizes, x_sizes, head_sizes, activation="silu", t_embed_dim=T_EMBED_DIM):
        if head_sizes[-1] != theta_sizes[0]:
            raise ValueError("the head must output dim theta values")
        if min(len(theta_sizes), len(x_sizes)) < 2 or len(head_sizes) < 2:
            # a head of one layer would end in the activation, not linear as every MLP here
            raise ValueError("theta_sizes, x_sizes and head_sizes need at least two entries each (one layer)")
        if t_embed_dim % 2:
            raise ValueError("t_embed_dim must be even (sines and cosines)")
        self.theta_sizes = list(map(int, theta_sizes))
        self.x_sizes = list(map(int, x_sizes))
        self.head_sizes = list(map(int, head_sizes))
        self.activation = activation
        self.t_embed_dim = int(t_embed_dim)
        self.dim_theta = self.theta_sizes[0]
        self.dim_x = self.x_sizes[0]
        self.layout = self._layout()
        self.size = sum(int(np.prod(shape)) for _, shape, _ in self.layout)

    @classmethod
    def paper(cls, dim_theta, dim_x, hidden=256, activation="silu"):
        s = default_sizes(dim_theta, dim_x, hidden)
        return cls(s["theta"], s["x"], s["head"], activation)

    def config(self):
        return dict(theta_sizes=self.theta_sizes, x_sizes=self.x_sizes, head_sizes=self.head_sizes,
                    activation=self.activation, t_embed_dim=self.t_embed_dim)

    # ------------------------------------------------------------------ parameters

    def _layout(self):
        """[(name, shape, fan_in)] in buffer order."""
        out = []
        for tag, sizes in (("theta", self.theta_sizes), ("x", self.x_sizes)):
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
                out += [(f"{tag}.{i}.W", (a, b), a), (f"{tag}.{i}.b", (b,), a)]
        e_th, e_x, h0 = self.theta_sizes[-1], self.x_sizes[-1], self.head_sizes[0]
        fan = e_th + e_x + self.t_embed_dim
        out += [("head.0.Wtheta", (e_th, h0), fan), ("head.0.Wx", (e_x, h0), fan),
                ("head.0.Wt", (self.t_embed_dim, h0), fan), ("head.0.b", (h0,), fan)]
        sizes = self.head_sizes
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            out += [(f"head.{i}.W", (a, b), a), (f"head.{i}.b", (b,), a)]
        return out

    def init(self, seed, dtype=np.float32):
        """A new flat parameter vector, PyTorch nn.Linear initialisation. seed: int or Generator."""
        from .rng import as_generator
        rng = as_generator(seed)
        flat = np.empty(self.size, dtype=dtype)
        off = 0
        for _, shape, fan_in in self.layout:
            n = int(np.prod(shape))
            bound = 1.0 / np.sqrt(fan_in)
            flat[off:off + n] = rng.uniform(-bound, bound, n)
            off += n
        return flat

    def views(self, flat):
        """dict name -> view into ``flat`` (numpy or cupy), shaped as in the layout."""
        if isinstance(flat, dict):
            return flat
        out, off = {}, 0
        for name, shape, _ in self.layout:
            n = int(np.prod(shape))
            out[name] = flat[off:off + n].reshape(shape)
            off += n
        return out

    def _layers(self, p, tag):
        """[(W, b, act)] of the MLP ``tag``: "theta", "x", or "head" (head layers 1, 2, ...):
        the activation between layers and "identity" on the last (every MLP ends linear)."""
        if tag == "head":
            names = [f"head.{i}" for i in range(1, len(self.head_sizes))]
        else:
            names = [f"{tag}.{i}" for i in range(len(getattr(self, f"{tag}_sizes")) - 1)]
        last = len(names) - 1
        return [(p[f"{n}.W"], p[f"{n}.b"], "identity" if k == last else self.activation)
                for k, n in enumerate(names)]

    def _grad_layers(self, g, tag):
        """[(dW, db)] views of the gradient buffer, in the order of ``_layers(., tag)``."""
        return [(dW, db) for dW, db, _ in self._layers(g, tag)]

    # ------------------------------------------------------------------ workspace

    def workspace(self, backend, batch, dtype=np.float32, tangents=0, train=False):
        """Buffers for a batch of ``batch`` rows (and ``tangents`` forward-mode directions)."""
        return Workspace(self, backend, batch, dtype, tangents, train)

    # ------------------------------------------------------------------ passes

    def condition(self, backend, p, x):
        """xc = x_emb(x) @ W_x + b1: the x part of the head's first layer. x: (n, p) -> (n, h0)."""
        ops, xp = backend.ops, backend.xp
        p = self.views(p)
        h = x
        for W, b, act in self._layers(p, "x") + [(p["head.0.Wx"], p["head.0.b"], "identity")]:
            # activations in place (h is z): nothing reads a pre-activation here
            z = xp.empty((h.shape[0], W.shape[1]), dtype=xp.result_type(h.dtype, W.dtype))
            h = linear_forward(ops, z, z, h, W, b, act)
        return h

    def forward(self, backend, p, theta_in, tau, ws, x=None, xc=None):
        """out (B, d) for theta_in (B, d), tau (B,) or one float for every row, and either
        x (B, p) or xc (1 or B, h0). ``p``: the flat buffer or its ``views`` (pass the views
        in loops: building ~30 views per call costs more than a small layer on the GPU).

        With x, the x-MLP runs and its activations are cached for ``backward`` (training).
        """
        ops, act = backend.ops, self.activation
        p = self.views(p)
        ws.theta_in, ws.x_in = theta_in, x
        # theta embedding
        h_theta = _mlp_forward(ops, self._layers(p, "theta"), theta_in, ws.th_z, ws.th_h)
        # x embedding (training) or the precomputed conditioning row(s)
        if x is not None:
            h_x = _mlp_forward(ops, self._layers(p, "x"), x, ws.x_z, ws.x_h)
            xc = linear_forward(ops, ws.xc, ws.xc, h_x, p["head.0.Wx"], p["head.0.b"], "identity")
        elif xc is None:
            raise ValueError("forward needs x or xc")
        # head layer 0: the sum of three linear maps h_theta W_theta + t_emb W_t + xc, then the activation
        z0, Wt = ws.hd_z[0], p["head.0.Wt"]
        shared_time = np.ndim(tau) == 0
        if shared_time and x is None and xc.shape[0] == 1:
            # one observation and one time for every row (fixed-step samplers): the x and time
            # parts are the same row for the whole batch; fold both into the bias (one 1 x 64 GEMM)
            ws.tau[:1].fill(tau)
            ops.sinusoidal_embedding(ws.t_emb[:1], ws.tau[:1])
            ops.matmul(ws.tmp[:1], ws.t_emb[:1], Wt)
            ws.tmp[:1] += xc
            linear_forward(ops, z0, ws.hd_h[0], h_theta, p["head.0.Wtheta"], ws.tmp[0], act)
        else:
            if shared_time:
                ws.tau.fill(tau)
                tau = ws.tau
            ops.matmul(z0, h_theta, p["head.0.Wtheta"])
            ops.sinusoidal_embedding(ws.t_emb, tau)
            ops.matmul(ws.tmp, ws.t_emb, Wt)
            z0 += ws.tmp  # (theta part + time part) + xc: training's order of the two sums
            ops.bias_act_forward(ws.hd_h[0], z0, xc if xc.shape[0] == z0.shape[0] else xc[0], act)
        # remaining head layers
        return _mlp_forward(ops, self._layers(p, "head"), ws.hd_h[0], ws.hd_z[1:], ws.hd_h[1:])

    def backward(self, backend, p, dout, ws, grads):
        """Write d loss / d params into the flat ``grads`` buffer, given dout = d loss / d out (B, d).

        Needs the caches of a ``forward`` with x (training mode workspace); overwrites the
        workspace's dh buffers, leaves ``dout`` as it is.
        """
        ops = backend.ops
        p, g = self.views(p), self.views(grads)
        # head layers n-1 .. 1, down to dL/dh of head layer 0 (in ws.hd_dh[0])
        dh0 = _mlp_backward(ops, self._grad_layers(g, "head"), ws.hd_dh, dout, self._layers(p, "head"),
                            ws.hd_z[1:], ws.hd_h[:-1])
        # head layer 0: its three maps share dL/dz0 and the bias b1; the time embedding has no
        # trainable input, so its map needs no input gradient
        dz0 = linear_backward(ops, g["head.0.Wtheta"], g["head.0.b"], ws.th_dh[-1], dh0, ws.hd_z[0],
                              ws.th_h[-1], p["head.0.Wtheta"], self.activation)
        linear_backward(ops, g["head.0.Wx"], None, ws.x_dh[-1], dz0, None, ws.x_h[-1], p["head.0.Wx"], "identity")
        linear_backward(ops, g["head.0.Wt"], None, None, dz0, None, ws.t_emb, p["head.0.Wt"], "identity")
        # the two embeddings, from the gradient of their outputs down to their first layers
        # (whose inputs, theta_in and x, need no gradient)
        for tag, inp, zs, hs, dhs in (("theta", ws.theta_in, ws.th_z, ws.th_h, ws.th_dh),
                                      ("x", ws.x_in, ws.x_z, ws.x_h, ws.x_dh)):
            _mlp_backward(ops, self._grad_layers(g, tag), [None] + dhs[:-1], dhs[-1], self._layers(p, tag),
                          zs, [inp] + hs[:-1])

    def tangent(self, backend, p, t_in, ws):
        """Forward-mode: J t for the K tangents t_in (K, B, d) of theta_in; returns (K, B, d).

        J = d out / d theta_in at the point of the last ``forward`` (x and tau held fixed).
        Tangents run through the theta-MLP and the head; the x and time parts are constants,
        so on this path head layer 0 is the one linear map W_theta.
        """
        p = self.views(p)
        path = ([(W, z, act) for (W, _, act), z in zip(self._layers(p, "theta"), ws.th_z)]
                + [(p["head.0.Wtheta"], ws.hd_z[0], self.activation)]
                + [(W, z, act) for (W, _, act), z in zip(self._layers(p, "head"), ws.hd_z[1:])])
        t = t_in
        for slot, (W, z, act) in enumerate(path):  # two buffers, used in turn
            t = linear_tangent(backend.ops, ws.tan(slot % 2, W.shape[1]), t, W, z, act)
        return t


# ----------------------------------------------------------------------------- one linear layer
# Every layer of the network is  z = h_in W + b,  h_out = act(z)  ("identity" on the last layer
# of each MLP). These three functions are that layer's forward pass, backward pass and
# forward-mode tangent, written once; the passes above loop over them (plus the head's first
# layer, a sum of three linear maps). Outputs first, as the ops. B rows, n inputs, m outputs.

def linear_forward(ops, z, h_out, h_in, W, b, act):
    """z = h_in @ W + b, then h_out = act(z); returns h_out.

    h_in (B, n), W (n, m), b (m,) or (B, m), z and h_out (B, m). z keeps the pre-activation for
    the backward pass and the tangents; h_out may be z (in place, when nothing reads z again).
    """
    ops.matmul(z, h_in, W)
    ops.bias_act_forward(h_out, z, b, act)
    return h_out


def linear_backward(ops, dW, db, dh_in, dh_out, z, h_in, W, act):
    """Backward through z = h_in @ W + b, h_out = act(z), given dh_out = dL/dh_out (B, m).

    dh_out becomes dL/dz = dh_out * act'(z) in place (left as it is for "identity", where z may
    be None); then dW = h_in^T dL/dz (n, m), db = dL/dz summed over the rows (m,) and
    dh_in = dL/dz W^T (B, n). db and dh_in are skipped when None (a first layer needs no input
    gradient; the head's first layer has one bias for its three maps). Returns dL/dz.
    """
    if act != "identity":
        ops.act_backward(dh_out, dh_out, z, act)
    dz = dh_out
    ops.matmul(dW, h_in.T, dz)
    if db is not None:
        ops.bias_grad(db, dz)
    if dh_in is not None:
        ops.matmul(dh_in, dz, W.T)
    return dz


def linear_tangent(ops, t_out, t_in, W, z, act):
    """Forward-mode through one layer for K directions at once: t_out = act'(z) * (t_in @ W)
    (the bias is a constant and drops out). t_in (K, B, n), t_out (K, B, m), z (B, m): the
    forward pass's pre-activation, shared by the K directions. Returns t_out."""
    K, B = t_in.shape[0], t_in.shape[1]
    ops.matmul(t_out.reshape(K * B, -1), t_in.reshape(K * B, -1), W)
    if act != "identity":
        ops.act_tangent(t_out, t_out, z, act)
    return t_out


def _mlp_forward(ops, layers, inp, zs, hs):
    """An MLP [(W, b, act)] into cached buffers: zs[i] = h_{i-1} W_i + b_i, hs[i] = act_i(zs[i])."""
    h = inp
    for (W, b, act), z, h_out in zip(layers, zs, hs):
        h = linear_forward(ops, z, h_out, h, W, b, act)
    return h


def _mlp_backward(ops, grads, dh_ins, dh, layers, zs, h_ins):
    """Backward through an MLP [(W, b, act)] from dh = dL/dh of its last layer, last layer
    first. Layer i reads zs[i] and h_ins[i] and writes (dW, db) = grads[i] and dL/d h_ins[i]
    into dh_ins[i] (None: not needed). Returns the last dh_in written (dh_ins[0])."""
    for (dW, db), dh_in, (W, _, act), z, h_in in reversed(list(zip(grads, dh_ins, layers, zs, h_ins))):
        linear_backward(ops, dW, db, dh_in, dh, z, h_in, W, act)
        dh = dh_in
    return dh


class Workspace:
    """Preallocated buffers for one batch size: pre-activations (z), activations (h), their
    gradients (dh), the time embedding, the conditioning rows and the tangent ping-pong buffers.

    The last layer of each MLP is linear, so its h is its z (one buffer).
    """

    def __init__(self, net, backend, batch, dtype, tangents, train):
        xp = backend.xp
        self.batch, self.dtype, self.tangents = batch, dtype, tangents

        # Without backward or tangents nothing reads a pre-activation after its activation ran:
        # the activation then overwrites it in place (h is z), halving the memory traffic.
        in_place = not train and not tangents

        def stack(sizes):
            zs = [xp.empty((batch, w), dtype=dtype) for w in sizes[1:]]
            hs = (zs if in_place else [xp.empty((batch, w), dtype=dtype) for w in sizes[1:-1]] + [zs[-1]])
            return zs, hs

        self.th_z, self.th_h = stack(net.theta_sizes)
        self.hd_z, self.hd_h = stack([0] + net.head_sizes)
        self.t_emb = xp.empty((batch, net.t_embed_dim), dtype=dtype)
        self.tau = xp.empty(batch, dtype=dtype)  # a shared time broadcast to the rows
        self.tmp = xp.empty((batch, net.head_sizes[0]), dtype=dtype)
        self.xc = xp.empty((batch, net.head_sizes[0]), dtype=dtype)
        self.theta_in = self.x_in = None  # set by forward: backward needs the inputs
        if train:
            self.x_z, self.x_h = stack(net.x_sizes)
            self.th_dh = [xp.empty((batch, w), dtype=dtype) for w in net.theta_sizes[1:]]
            self.x_dh = [xp.empty((batch, w), dtype=dtype) for w in net.x_sizes[1:]]
            self.hd_dh = [xp.empty((batch, w), dtype=dtype) for w in net.head_sizes[:-1]]
        width = max(net.theta_sizes[1:] + net.head_sizes)
        self._tan = [xp.empty(tangents * batch * width, dtype=dtype) for _ in range(2)] if tangents else []

    def tan(self, slot, width):
        """Ping-pong tangent buffer ``slot`` viewed as (K, B, width)."""
        n = self.tangents * self.batch * width
        return self._tan[slot][:n].reshape(self.tangents, self.batch, width)
