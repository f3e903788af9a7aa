"""hetero_lr without an arbiter (guest + one host); each holds a key pair, G and H.

The host's weights stay encrypted under the guest's key G; the guest is their key holder (as the
arbiter is in `hetero_lr_arbiter`) but never sees the host's scores, residuals or gradients:
everything it decrypts is masked. Per mini-batch of m rows (F = frac_bits, S = F + X_FRAC,
integers at scale 2^S; s: fresh host masks, 80 bits above the scores' size):

1. Host: [[U_h + s]]_G from its encrypted weights, and [[s]]_H under its own key.
2. Guest: decrypts q = U_h + s, sets Q = q + U_g (= Z + s) and sends [[Q + (2 - 4y) 2^S]]_G
   (= [[D + s]]_G, D the scaled residual).
3. Guest: has the host decrypt X_g^T [[s]]_H under a mask and gets its gradient exactly,
   X_g^T D = X_g^T (D + s) - X_g^T s (integers).
4. Guest: sends [[-2Q + 4 y' 2^S]]_G; the host returns [[s.(-2Q + 4 y' 2^S) + s.s]]_G, from which
   the guest has 2^2S (sum z^2 - 4 y'.z), the batch's Taylor loss terms.
5. Host: [[D]]_G = [[D + s]]_G - s, updates [[w_h]]_G with X_h^T [[D]]_G and refreshes it through
   the guest (`hetero_lr_core.EncWeights`).
The guest decides early stopping and tells the host the epoch loss; at the end the host has its
final weights decrypted under a mask.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from sharelearn.algorithms.context import StepContext
from sharelearn.algorithms.vertical.hetero_lr_core import (
    X_FRAC,
    EncWeights,
    Fitted,
    HeteroLrParams,
    Plan,
    Setup,
    Tags,
    Trainer,
    batches,
    check_loss,
    check_scale,
    converged,
    epoch_end,
    fitted,
    guest_block,
    host_block,
    learning_rate_at,
    masked_start,
    obj,
    recv_plan,
    serve_decrypt,
    serve_refresh,
    shared_seed,
    sigma_mask_bits,
    small_masks,
    step_plain,
    to_ints,
)
from sharelearn.core.link import Link
from sharelearn.crypto import he
from sharelearn.crypto.he import Encoded
from sharelearn.operators.he_arith import recv_encrypted, recv_public_key, send_encrypted

__all__ = ["run_guest", "run_host"]

_LOG2 = float(np.log(2.0))


@dataclass(frozen=True, slots=True)
class _Keys:
    pk: he.HEPublicKey  # this party's key pair
    sk: he.HEPrivateKey
    peer: he.HEPublicKey  # the other party's public key


def _keys(ctx: StepContext, params: HeteroLrParams, trainer: Trainer, peer: str, first: bool) -> _Keys:
    """Generate a key pair and swap public keys with `peer` (the guest sends first)."""
    pk, sk = trainer.he(he.keygen, params.he_scheme, params.key_bits)

    def receive() -> he.HEPublicKey:
        return recv_public_key(ctx.link, peer, Tags.PK, scheme=params.he_scheme, min_bits=params.key_bits)

    other = None if first else receive()
    ctx.link.send(peer, Tags.PK, pk.to_wire())
    return _Keys(pk, sk, receive() if other is None else other)


def run_guest(ctx: StepContext, params: HeteroLrParams, setup: Setup) -> Fitted:
    """Train the guest's weights and key-hold the host's; learns its gradients and the losses."""
    trainer, host = Trainer(ctx, params, setup), setup.hosts[0]
    x1, y, scaler = guest_block(ctx, params)
    n, w = len(y), np.zeros(x1.shape[1])
    v = np.zeros_like(w)
    keys = _keys(ctx, params, trainer, host, first=True)
    sk = keys.sk
    ctx.link.send(host, Tags.PLAN, Plan(n, x1.shape[1]).to_wire())
    host_k = recv_plan(ctx.link, host).features
    seed = shared_seed(ctx, setup, params)
    for epoch in range(params.epochs):
        link, lr, total = ctx.link.scope("epoch", epoch), learning_rate_at(params, epoch), 0.0
        for b, rows in enumerate(batches(n, params, seed, epoch)):
            bl = link.scope("batch", b)
            grad, loss = trainer.he(_guest_batch, bl, trainer, keys, x1[rows], y[rows], w, host_k)
            w, v = step_plain(w, v, grad, lr, params, params.fit_intercept)
            total += loss
        losses = [*trainer.history, total / n]
        check_loss(losses, epoch)
        stop = converged(losses, params.tol) or epoch == params.epochs - 1
        loss_e, stop = epoch_end(link, setup, ctx.party, losses[-1], stop)
        trainer.progress(epoch, loss_e)
        if stop:
            break
    serve_decrypt(ctx.link.scope("final"), host, Tags.FINAL, sk, shape=(host_k,), frac_bits=params.frac_bits)
    return fitted("guest", trainer, w, params.fit_intercept, scaler)


def _guest_batch(
    link: Link, trainer: Trainer, keys: _Keys, xb: np.ndarray, yb: np.ndarray, w: np.ndarray, host_k: int
) -> tuple[np.ndarray, float]:
    """Steps 2-4 at the guest: the batch's gradient (already / 4m) and its summed Taylor loss."""
    pk, sk, pk_host = keys.pk, keys.sk, keys.peer
    host, params = trainer.setup.hosts[0], trainer.params
    m, s = len(yb), params.frac_bits + X_FRAC
    q_enc = check_scale(recv_encrypted(link, host, Tags.SCORES, pk, shape=(m,)), 0, host, Tags.SCORES)
    s_enc = check_scale(recv_encrypted(link, host, Tags.MASK, pk_host, shape=(m,)), 0, host, Tags.MASK)
    q = obj(np.asarray(he.decrypt(sk, q_enc), dtype=object).tolist())
    big_q = q + to_ints(xb @ w, s)
    dq = big_q + to_ints(2.0 - 4.0 * yb, s)
    send_encrypted(link, host, Tags.RESIDUAL, he.encrypt(pk, dq))
    xs = masked_start(link, host, Tags.GRAD, he.matmul_plain(xb.T, s_enc, frac_bits=X_FRAC))
    ys = obj((2 * yb - 1).astype(np.int64).tolist())
    send_encrypted(link, host, Tags.LOSS_Q, he.encrypt(pk, -2 * big_q + 4 * (1 << s) * ys))
    serve_refresh(link, host, sk, size=2 * host_k, frac_bits=params.frac_bits)
    x_int = to_ints(xb, X_FRAC)
    g_int = x_int.T.dot(dq) - dataclasses.replace(xs, frac_bits=0).finish()
    grad = np.array([int(v) / 2 ** (X_FRAC + s) for v in g_int]) / (4 * m)
    r_enc = check_scale(recv_encrypted(link, host, Tags.LOSS_R, pk, shape=(1,)), 0, host, Tags.LOSS_R)
    (r,) = np.asarray(he.decrypt(sk, r_enc), dtype=object).tolist()
    eight = int(big_q.dot(big_q)) - 4 * (1 << s) * int(ys.dot(big_q)) + int(r)
    return grad, m * _LOG2 + eight / 2 ** (2 * s + 3)


def run_host(ctx: StepContext, params: HeteroLrParams, setup: Setup) -> Fitted:
    """Train the host's weights under the guest's key; learns the epoch losses and its final weights."""
    trainer, g = Trainer(ctx, params, setup), setup.guest
    x, scaler = host_block(ctx, params)
    keys = _keys(ctx, params, trainer, g, first=False)
    ctx.link.send(g, Tags.PLAN, Plan(len(x), x.shape[1]).to_wire())
    guest_k = recv_plan(ctx.link, g).features
    seed = shared_seed(ctx, setup, params)
    weights = trainer.he(EncWeights.zeros, g, keys.peer, x.shape[1], params.frac_bits)
    for epoch in range(params.epochs):
        link, lr = ctx.link.scope("epoch", epoch), learning_rate_at(params, epoch)
        for b, rows in enumerate(batches(len(x), params, seed, epoch)):
            bl = link.scope("batch", b)
            trainer.he(_host_batch, bl, trainer, keys, weights, x[rows], lr, guest_k)
        loss, stop = epoch_end(link, setup, g, None, False)
        trainer.progress(epoch, loss)
        if stop:
            break
    return fitted("host", trainer, weights.reveal(ctx.link.scope("final")), False, scaler)


def _host_batch(
    link: Link, trainer: Trainer, keys: _Keys, weights: EncWeights, xb: np.ndarray, lr: float, guest_k: int
) -> None:
    """Steps 1, 3 (serving), 4 (serving) and 5 at the host."""
    pk, sk = keys.pk, keys.sk
    g, params = trainer.setup.guest, trainer.params
    m, s_bits = len(xb), params.frac_bits + X_FRAC
    u = dataclasses.replace(weights.scores(xb), frac_bits=0)
    s = small_masks(sigma_mask_bits(u.pk, s_bits + 16, m), m)
    send_encrypted(link, g, Tags.SCORES, u + Encoded(s, 0))
    send_encrypted(link, g, Tags.MASK, he.encrypt(pk, s))
    dq = check_scale(recv_encrypted(link, g, Tags.RESIDUAL, u.pk, shape=(m,)), 0, g, Tags.RESIDUAL)
    weights.update(link, xb, dataclasses.replace(dq - Encoded(s, 0), frac_bits=s_bits), lr, params)
    serve_decrypt(link, g, Tags.GRAD, sk, shape=(guest_k,), frac_bits=X_FRAC)
    lq = check_scale(recv_encrypted(link, g, Tags.LOSS_Q, u.pk, shape=(m,)), 0, g, Tags.LOSS_Q)
    r = he.matmul_plain(s.reshape(1, -1), lq, frac_bits=0) + Encoded(obj([int(s.dot(s))]), 0)
    send_encrypted(link, g, Tags.LOSS_R, r)
