"""hetero_lr with an arbiter: the arbiter holds the only private key and decrypts masked values only.

Per mini-batch of m rows (F = frac_bits, S = F + X_FRAC; see `hetero_lr` for what each role learns):

1. Each host sends the guest [[u_h]] = X_h [[w_h]], computed on its encrypted weights.
2. The guest forms [[z]] = sum_h [[u_h]] + u_g and [[d]] = [[z]] + 2 - 4y (the Taylor residual
   4 (sigma(z) - y)), and sends [[d]] to every host.
3. The guest has the arbiter decrypt X_g^T [[d]] under a mask and steps its plaintext weights.
4. The guest sends the arbiter [[Z + r]] (Z = z 2^S, r uniform 80 bits above |Z|) and
   [[-2 r.Z - r.r - 4 y'.Z 2^S]] (y' = 2y - 1): the arbiter adds sum (Z + r)^2 and obtains
   8 * 2^2S * (sum of the Taylor loss terms) without seeing z.
5. Each host computes [[w_h]] <- (1 - lr alpha) [[w_h]] - lr / 4m X_h^T [[d]] and refreshes it
   through the arbiter (`hetero_lr_core.EncWeights`).
After each epoch the arbiter tells everyone the loss and whether to stop; at the end each host has
its final weights decrypted under a mask.

The arbiter answers only the requests listed above, from the party named, at the scope
(epoch, batch) it is serving, of the shape and frac_bits that step produces; anything else is a
ProtocolError naming the sender.
"""

from __future__ import annotations

import dataclasses

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
    batch_sizes,
    batches,
    check_loss,
    check_scale,
    decrypt_expected,
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
)
from sharelearn.core.link import Link
from sharelearn.crypto import he
from sharelearn.crypto.he import EncArray, Encoded
from sharelearn.operators.he_arith import recv_encrypted, recv_public_key, send_encrypted

__all__ = ["run_arbiter", "run_guest", "run_host"]

_LOG2 = float(np.log(2.0))


def run_arbiter(ctx: StepContext, params: HeteroLrParams, setup: Setup) -> Fitted:
    """Hold the key; decrypt the guest's masked gradient and loss terms and refresh the hosts' weights."""
    trainer = Trainer(ctx, params, setup)
    pk, sk = trainer.he(he.keygen, params.he_scheme, params.key_bits)
    for p in [setup.guest, *setup.hosts]:
        ctx.link.send(p, Tags.PK, pk.to_wire())
    guest_plan = recv_plan(ctx.link, setup.guest)
    host_features = {h: recv_plan(ctx.link, h).features for h in setup.hosts}
    f, s = params.frac_bits, params.frac_bits + X_FRAC
    for epoch in range(params.epochs):
        link, total = ctx.link.scope("epoch", epoch), 0.0
        for b, m in enumerate(batch_sizes(guest_plan.rows, params)):
            bl = link.scope("batch", b)
            trainer.he(
                serve_decrypt,
                bl,
                setup.guest,
                Tags.GRAD,
                sk,
                shape=(guest_plan.features,),
                frac_bits=s + X_FRAC,
            )
            total += trainer.he(_serve_loss, bl, setup.guest, sk, m, s)
            for h in setup.hosts:
                trainer.he(serve_refresh, bl, h, sk, size=2 * host_features[h], frac_bits=f)
        trainer.progress(epoch, total / guest_plan.rows)
        check_loss(trainer.history, epoch)
        stop = trainer.converged()
        epoch_end(link, setup, ctx.party, total / guest_plan.rows, stop or epoch == params.epochs - 1)
        if stop:
            break
    final = ctx.link.scope("final")
    for h in setup.hosts:
        serve_decrypt(final, h, Tags.FINAL, sk, shape=(host_features[h],), frac_bits=f)
    return Fitted("arbiter", np.zeros(0), 0.0, trainer.history, trainer.he_seconds)


def _serve_loss(link: Link, guest: str, sk: he.HEPrivateKey, m: int, s: int) -> float:
    """Sum of the batch's Taylor loss terms from [[Z + r]] and the guest's correction (step 4)."""
    zr = decrypt_expected(link, guest, Tags.LOSS_Z, sk, (m,))
    (c,) = decrypt_expected(link, guest, Tags.LOSS_C, sk, (1,))
    eight = sum(v * v for v in zr) + c  # = 2^2S (sum z^2 - 4 y'.z)
    return float(m * _LOG2 + eight / 2 ** (2 * s + 3))


def run_guest(ctx: StepContext, params: HeteroLrParams, setup: Setup) -> Fitted:
    """Train the guest's plaintext weights; learns its own gradients and the epoch losses."""
    assert setup.arbiter is not None  # setup_roles guarantees an arbiter in this mode
    trainer, arbiter = Trainer(ctx, params, setup), setup.arbiter
    x1, y, scaler = guest_block(ctx, params)
    n, w = len(y), np.zeros(x1.shape[1])
    v = np.zeros_like(w)
    pk = recv_public_key(ctx.link, arbiter, Tags.PK, scheme=params.he_scheme, min_bits=params.key_bits)
    ctx.link.send(arbiter, Tags.PLAN, Plan(n, x1.shape[1]).to_wire())
    seed = shared_seed(ctx, setup, params)
    s = params.frac_bits + X_FRAC
    for epoch in range(params.epochs):
        link, lr = ctx.link.scope("epoch", epoch), learning_rate_at(params, epoch)
        for b, rows in enumerate(batches(n, params, seed, epoch)):
            bl, xb, yb, m = link.scope("batch", b), x1[rows], y[rows], len(rows)
            u_hosts = [
                check_scale(recv_encrypted(bl, h, Tags.SCORES, pk, shape=(m,)), s, h, Tags.SCORES)
                for h in setup.hosts
            ]
            z = trainer.he(he.add_all, u_hosts) + xb @ w
            d = z + (2.0 - 4.0 * yb)
            for h in setup.hosts:
                send_encrypted(bl, h, Tags.RESIDUAL, d)
            grad = masked_start(
                bl, arbiter, Tags.GRAD, trainer.he(he.matmul_plain, xb.T, d, frac_bits=X_FRAC)
            )
            trainer.he(_send_loss, bl, arbiter, z, yb, s)
            w, v = step_plain(w, v, grad.finish() / (4 * m), lr, params, params.fit_intercept)
        loss, stop = epoch_end(link, setup, arbiter, None, False)
        trainer.progress(epoch, loss)
        if stop:
            break
    return fitted("guest", trainer, w, params.fit_intercept, scaler)


def _send_loss(link: Link, arbiter: str, z: EncArray, y: np.ndarray, s: int) -> None:
    """Step 4: [[Z + r]] and [[-2 r.Z - r.r - 4 y'.Z 2^S]]; the arbiter sees z only under r."""
    m = len(y)
    r = small_masks(sigma_mask_bits(z.pk, s + 16, m), m)
    zi = dataclasses.replace(z, frac_bits=0)
    send_encrypted(link, arbiter, Tags.LOSS_Z, zi + Encoded(r, 0))
    ys = obj((2 * y - 1).astype(np.int64).tolist())
    coef = -2 * r - 4 * (1 << s) * ys
    c = he.matmul_plain(coef.reshape(1, -1), zi, frac_bits=0)
    send_encrypted(link, arbiter, Tags.LOSS_C, c - Encoded(obj([int(np.dot(r, r))]), 0))


def run_host(ctx: StepContext, params: HeteroLrParams, setup: Setup) -> Fitted:
    """Train the host's weights under the arbiter's key; learns the epoch losses and its final weights."""
    assert setup.arbiter is not None
    trainer, arbiter, g = Trainer(ctx, params, setup), setup.arbiter, setup.guest
    x, scaler = host_block(ctx, params)
    pk = recv_public_key(ctx.link, arbiter, Tags.PK, scheme=params.he_scheme, min_bits=params.key_bits)
    ctx.link.send(arbiter, Tags.PLAN, Plan(len(x), x.shape[1]).to_wire())
    seed = shared_seed(ctx, setup, params)
    weights = trainer.he(EncWeights.zeros, arbiter, pk, x.shape[1], params.frac_bits)
    s = params.frac_bits + X_FRAC
    for epoch in range(params.epochs):
        link, lr = ctx.link.scope("epoch", epoch), learning_rate_at(params, epoch)
        for b, rows in enumerate(batches(len(x), params, seed, epoch)):
            bl, xb = link.scope("batch", b), x[rows]
            send_encrypted(bl, g, Tags.SCORES, trainer.he(weights.scores, xb))
            d = check_scale(recv_encrypted(bl, g, Tags.RESIDUAL, pk, shape=(len(rows),)), s, g, Tags.RESIDUAL)
            trainer.he(weights.update, bl, xb, d, lr, params)
        loss, stop = epoch_end(link, setup, arbiter, None, False)
        trainer.progress(epoch, loss)
        if stop:
            break
    return fitted("host", trainer, weights.reveal(ctx.link.scope("final")), False, scaler)
