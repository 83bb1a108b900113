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

Three passes, each writing into a ``Workspace`` made once per batch size:

- ``forward(params, theta_in, tau, ws, x=None, xc=None) -> out``  (B, d), caches pre-activations;
- ``backward(params, dout, ws, grads)``  accumulates nothing: writes d loss / d params into grads;
- ``tangent(params, t_in, ws) -> t_out``  forward-mode Jacobian products (K, B, d) -> (K, B, d)
  w.r.t. theta_in only (x and tau fixed), for the divergence in ``log_prob``.
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

    def _mlp(self, p, tag, sizes):
        return [(p[f"{tag}.{i}.W"], p[f"{tag}.{i}.b"]) for i in range(len(sizes) - 1)]

    # ------------------------------------------------------------------ workspace

    def workspace(self, backend, batch, dtype=np.float32, tangents=0, train=False):
        """Buffers for a batch of ``batch`` rows (and ``tangents`` forward-mode directions)."""
        return Workspace(self, backend, batch, dtype, tangents, train)

    # ------------------------------------------------------------------ passes

    def condition(self, backend, p, x):
        """xc = x_emb(x) @ W_x + b1: the x part of the head's first layer. x: (n, p) -> (n, h0)."""
        ops, act = backend.ops, self.activation
        p = self.views(p)
        h = x
        layers = self._mlp(p, "x", self.x_sizes)
        for i, (W, b) in enumerate(layers):
            z = h @ W
            last = i == len(layers) - 1
            ops.bias_act_forward(z, z, b, "identity" if last else act)
            h = z
        xc = h @ p["head.0.Wx"]
        xc += p["head.0.b"]
        return xc

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
        _mlp_forward(ops, self._mlp(p, "theta", self.theta_sizes), theta_in, ws.th_z, ws.th_h, act)
        # x embedding (training) or the precomputed conditioning row(s)
        if x is not None:
            _mlp_forward(ops, self._mlp(p, "x", self.x_sizes), x, ws.x_z, ws.x_h, act)
            ops.matmul(ws.xc, ws.x_h[-1], p["head.0.Wx"])
            xc = ws.xc
            xc += p["head.0.b"]
        elif xc is None:
            raise ValueError("forward needs x or xc")
        # head layer 0: sum of three linear maps, then the activation
        z0 = ws.hd_z[0]
        ops.matmul(z0, ws.th_h[-1], p["head.0.Wtheta"])
        shared_time = np.ndim(tau) == 0
        if shared_time and x is None and xc.shape[0] == 1:
            # one observation and one time for every row (fixed-step samplers): the x and time
            # parts are the same row for the whole batch; fold both into the bias (one 1 x 64 GEMM)
            ws.tau[:1].fill(tau)
            ops.sinusoidal_embedding(ws.t_emb[:1], ws.tau[:1])
            ops.matmul(ws.tmp[:1], ws.t_emb[:1], p["head.0.Wt"])
            ws.tmp[:1] += xc
            ops.bias_act_forward(ws.hd_h[0], z0, ws.tmp[0], act)
        else:
            if shared_time:
                ws.tau.fill(tau)
                tau = ws.tau
            ops.sinusoidal_embedding(ws.t_emb, tau)
            ops.matmul(ws.tmp, ws.t_emb, p["head.0.Wt"])
            z0 += ws.tmp
            ops.bias_act_forward(ws.hd_h[0], z0, xc if xc.shape[0] == z0.shape[0] else xc[0], act)
        # remaining head layers
        layers = [(p[f"head.{i}.W"], p[f"head.{i}.b"]) for i in range(1, len(self.head_sizes))]
        _mlp_forward(ops, layers, ws.hd_h[0], ws.hd_z[1:], ws.hd_h[1:], act)
        return ws.hd_h[-1]

    def backward(self, backend, p, dout, ws, grads):
        """Write d loss / d params into the flat ``grads`` buffer, given dout = d loss / d out (B, d).

        Needs the caches of a ``forward`` with x (training mode workspace).
        """
        ops, act = backend.ops, self.activation
        p = self.views(p)
        g = self.views(grads)
        n_head = len(self.head_sizes)
        # head layers n_head-1 .. 1
        dz = dout
        for i in range(n_head - 1, 0, -1):
            h_prev = ws.hd_h[i - 1]
            ops.matmul(g[f"head.{i}.W"], h_prev.T, dz)
            ops.bias_grad(g[f"head.{i}.b"], dz)
            dh = ws.hd_dh[i - 1]
            ops.matmul(dh, dz, p[f"head.{i}.W"].T)
            ops.act_backward(dh, dh, ws.hd_z[i - 1], act)
            dz = dh
        # head layer 0: three weight blocks and the bias
        ops.matmul(g["head.0.Wtheta"], ws.th_h[-1].T, dz)
        ops.matmul(g["head.0.Wx"], ws.x_h[-1].T, dz)
        ops.matmul(g["head.0.Wt"], ws.t_emb.T, dz)
        ops.bias_grad(g["head.0.b"], dz)
        ops.matmul(ws.th_dh[-1], dz, p["head.0.Wtheta"].T)
        ops.matmul(ws.x_dh[-1], dz, p["head.0.Wx"].T)
        for tag, sizes, hs, zs, dhs, inp in (("theta", self.theta_sizes, ws.th_h, ws.th_z, ws.th_dh, ws.theta_in),
                                             ("x", self.x_sizes, ws.x_h, ws.x_z, ws.x_dh, ws.x_in)):
            layers = self._mlp(p, tag, sizes)
            dz = dhs[-1]  # linear output layer: dz = dh
            for i in range(len(layers) - 1, -1, -1):
                h_prev = hs[i - 1] if i > 0 else inp
                ops.matmul(g[f"{tag}.{i}.W"], h_prev.T, dz)
                ops.bias_grad(g[f"{tag}.{i}.b"], dz)
                if i > 0:
                    dh = dhs[i - 1]
                    ops.matmul(dh, dz, layers[i][0].T)
                    ops.act_backward(dh, dh, zs[i - 1], act)
                    dz = dh

    def tangent(self, backend, p, t_in, ws):
        """Forward-mode: J t for the K tangents t_in (K, B, d) of theta_in; returns (K, B, d).

        J = d out / d theta_in at the point of the last ``forward`` (x and tau held fixed).
        Tangents run through the theta-MLP and the head; the x and time parts are constants.
        """
        ops, act = backend.ops, self.activation
        p = self.views(p)
        K, B = t_in.shape[0], t_in.shape[1]
        t = t_in
        th_layers = self._mlp(p, "theta", self.theta_sizes)
        for i, (W, _) in enumerate(th_layers):
            nxt = ws.tan(i % 2, W.shape[1])
            ops.matmul(nxt.reshape(K * B, -1), t.reshape(K * B, -1), W)
            if i < len(th_layers) - 1:
                ops.act_tangent(nxt, nxt, ws.th_z[i], act)
            t = nxt
        slot = len(th_layers)
        W0 = p["head.0.Wtheta"]
        nxt = ws.tan(slot % 2, W0.shape[1])
        ops.matmul(nxt.reshape(K * B, -1), t.reshape(K * B, -1), W0)
        ops.act_tangent(nxt, nxt, ws.hd_z[0], act)
        t = nxt
        n_head = len(self.head_sizes)
        for i in range(1, n_head):
            slot += 1
            W = p[f"head.{i}.W"]
            nxt = ws.tan(slot % 2, W.shape[1])
            ops.matmul(nxt.reshape(K * B, -1), t.reshape(K * B, -1), W)
            if i < n_head - 1:
                ops.act_tangent(nxt, nxt, ws.hd_z[i], act)
            t = nxt
        return t


def _mlp_forward(ops, layers, inp, zs, hs, act):
    """Run an MLP into cached buffers: zs[i] = h_{i-1} @ W_i + b_i, hs[i] = act(zs[i]) (linear last)."""
    h = inp
    for i, (W, b) in enumerate(layers):
        ops.matmul(zs[i], h, W)
        last = i == len(layers) - 1
        ops.bias_act_forward(hs[i], zs[i], b, "identity" if last else act)
        h = hs[i]
    return h


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
