"""Optimizer factory: AdamW (optax's, or the original BERT's without bias correction) or LAMB,
BERT's learning-rate schedule, weight-decay mask, clipping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax


def bert_schedule(peak_lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """The original BERT schedule.

    Linear warmup lr * step / warmup for step < warmup, then linear decay lr * (1 - step / total)
    to 0 at `total_steps` (the decay is measured from step 0, as in the original optimization.py,
    so the warmup and the decay lines meet at step = warmup only approximately).
    """

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = peak_lr * step / max(warmup_steps, 1)
        decay = peak_lr * jnp.maximum(0.0, 1.0 - step / max(total_steps, 1))
        return jnp.where(step < warmup_steps, warm, decay)

    return schedule


def decay_mask(params) -> dict:
    """True for parameters that get weight decay: not LayerNorm parameters, not biases.

    Mirrors the original `exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"]`.
    """

    def keep(path, _):
        names = [getattr(k, "key", str(k)) for k in path]
        return not any("LayerNorm" in n or "layer_norm" in n for n in names) and not names[
            -1
        ].endswith("bias")

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(
    cfg: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, learning-rate schedule) from the `optimizer` section of a config.

    Steps count train steps (micro-batches). With grad_accum_steps=k the inner optimizer
    updates once per k of them, so its schedule runs over total_steps // k updates; the returned
    schedule maps a train step to the rate in effect (for logging).
    """
    check_hyperparameters(cfg)
    k = cfg.get("grad_accum_steps", 1)
    inner = bert_schedule(cfg.learning_rate, cfg.warmup_steps // k, max(total_steps // k, 1))
    opt = _FACTORIES[cfg.name](
        inner, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask
    )
    parts = []
    if cfg.grad_clip_norm:
        parts.append(clip_by_global_norm(cfg.grad_clip_norm))
    parts.append(opt)
    tx = optax.chain(*parts)
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k)
        return tx, lambda step: inner(step // k)
    return tx, inner


def check_hyperparameters(cfg: ml_collections.ConfigDict) -> None:
    """Refuses values that would train silently wrong: a negative clip norm reverses the
    gradient, eps=0 turns the update of a parameter with zero gradient (BERT's key biases, unused
    vocabulary rows) into 0/0 = NaN, a negative warmup means none."""
    if cfg.name not in _FACTORIES:
        raise ValueError(f"optimizer.name={cfg.name!r}; use one of {sorted(_FACTORIES)}.")
    rules = [
        ("learning_rate", cfg.learning_rate >= 0, "at least 0"),
        ("grad_clip_norm", cfg.grad_clip_norm >= 0, "at least 0 (0: no clipping)"),
        ("b1", 0 <= cfg.b1 < 1, "in [0, 1)"),
        ("b2", 0 <= cfg.b2 < 1, "in [0, 1)"),
        ("eps", cfg.eps > 0, "positive (BERT: 1e-6)"),
        ("weight_decay", cfg.weight_decay >= 0, "at least 0"),
        ("warmup_steps", cfg.warmup_steps >= 0, "at least 0"),
        ("grad_accum_steps", cfg.get("grad_accum_steps", 1) >= 1, "at least 1"),
    ]
    for name, ok, need in rules:
        if not ok:
            raise ValueError(f"optimizer.{name}={cfg.get(name)!r}; it must be {need}.")


class BertAdamState(NamedTuple):
    mu: Any
    nu: Any


def scale_by_bert_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """The original BERT's Adam direction (AdamWeightDecayOptimizer): m / (sqrt(v) + eps) with
    no bias correction, so early steps are smaller than optax's (by sqrt(1 - b2^t) / (1 - b1^t):
    0.32 at the first step, 0.15 at the tenth, 0.67 at the 600th) until both forget their start."""

    def init(params):
        zeros = jax.tree_util.tree_map(lambda p: jnp.zeros_like(p, jnp.float32), params)
        return BertAdamState(mu=zeros, nu=zeros)

    def update(grads, state, params=None):
        del params
        mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        direction = jax.tree_util.tree_map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        return direction, BertAdamState(mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def bert_adamw(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    mask: Any = None,
) -> optax.GradientTransformation:
    """AdamWeightDecayOptimizer of the original optimization.py: the uncorrected Adam direction
    plus weight_decay * param (where `mask`), times the learning rate."""
    return optax.chain(
        scale_by_bert_adam(b1, b2, eps),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate),
    )


_FACTORIES = {"adamw": optax.adamw, "bert_adamw": bert_adamw, "lamb": optax.lamb}


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Gradients times max_norm / max(global norm, max_norm): the original BERT's clipping
    (tf.clip_by_global_norm; exactly the gradients below the threshold). The same as optax's
    up to rounding above it, whose per-element division (t / norm * max_norm) XLA's CPU backend
    writes out as one more parameter-sized array before the Adam update reads it."""

    def update(updates, state, params=None):
        del params
        scale = max_norm / jnp.maximum(optax.tree.norm(updates), max_norm)
        return jax.tree_util.tree_map(lambda t: t * scale.astype(t.dtype), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update)


def freeze(tx: optax.GradientTransformation, *top_level: str) -> optax.GradientTransformation:
    """`tx` for every parameter except those under the `top_level` keys, which never change
    (zero updates, no optimizer state, no weight decay)."""

    def labels(params):
        return {k: jax.tree_util.tree_map(lambda _, k=k: "frozen" if k in top_level else "train", v)
                for k, v in params.items()}  # fmt: skip

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def update_if_finite(
    tx: optax.GradientTransformation,
    finite: jax.Array,
    grads,
    opt_state,
    params,
    *,
    with_norm: jax.Array | bool = True,
) -> tuple[Any, Any, jax.Array]:
    """(params, optimizer state, update norm) after one `tx` step if `finite` (a scalar bool),
    else the params and state unchanged and norm 0 (inside a jitted step). The norm is NaN
    where `with_norm` (a scalar bool) is false: it is one more pass over the parameters.
    An accumulating `tx` (optax.MultiSteps) always steps, a non-finite micro-batch adding zeros
    to its window (whose mean is over all k): its windows keep ending on multiples of k.

    A `lax.cond`, not a `jnp.where` of both outcomes per leaf: that where costs one more pass
    over the parameters and both Adam moments every step (+3% BERT-mini steps/s on CPU). The
    norm is that of the change applied, new - old params: read from the new params, where the
    norm of optax's updates made XLA keep them as one more [V, H]-sized array (another +3%)."""

    def update(operands):
        grads, opt_state, params = operands
        updates, opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        norm = norm_if(
            with_norm,
            lambda: optax.tree.norm(jax.tree_util.tree_map(jnp.subtract, new_params, params)),
        )
        return new_params, opt_state, norm

    def keep(operands):
        _, opt_state, params = operands
        return params, opt_state, jnp.zeros((), jnp.float32)

    if isinstance(tx, optax.MultiSteps):
        grads = jax.tree_util.tree_map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
        finite = jnp.array(True)
    return jax.lax.cond(finite, update, keep, (grads, opt_state, params))


def norm_if(now: jax.Array | bool, norm: Callable[[], jax.Array]) -> jax.Array:
    """`norm()` where `now` (a scalar bool, traced or not), else NaN, the work skipped (a cond)."""

    def nan():
        return jnp.full((), jnp.nan, jnp.float32)

    if isinstance(now, bool):
        return norm() if now else nan()
    return jax.lax.cond(now, norm, nan)
