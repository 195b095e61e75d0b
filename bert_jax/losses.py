"""Pure losses and metrics. Each returns (sum, weight) so that totals aggregate exactly.

The mean of a loss over a global batch split across devices (or accumulated over micro-batches,
or over an eval set) is sum(sums) / sum(weights); averaging per-device means would weight a device
with few masked tokens as much as one with many.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def weighted_cross_entropy(logits_BxKxC: Array, labels_BxK: Array, weights_BxK: Array):
    """(sum_i w_i * -log softmax(logits_i)[label_i], sum_i w_i), in float32."""
    logp = jax.nn.log_softmax(logits_BxKxC.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels_BxK[..., None], axis=-1)[..., 0]
    w = weights_BxK.astype(jnp.float32)
    return jnp.sum(nll * w), jnp.sum(w)


def weighted_correct(logits_BxKxC: Array, labels_BxK: Array, weights_BxK: Array):
    """(number of weighted argmax hits, sum of weights)."""
    w = weights_BxK.astype(jnp.float32)
    hits = (jnp.argmax(logits_BxKxC, axis=-1) == labels_BxK).astype(jnp.float32)
    return jnp.sum(hits * w), jnp.sum(w)


def pretraining_sums(outputs: dict[str, Array], batch: dict[str, Array]) -> dict[str, Array]:
    """Sums and weights of the MLM and NSP losses and accuracies for one batch.

    `batch['example_weights']` (optional, [B]) marks real examples (1) against padding examples (0)
    that fill the last eval batch to a fixed shape.
    """
    mlm_w = batch["masked_lm_weights"]
    ex_w = batch.get("example_weights")
    if ex_w is None:
        ex_w = jnp.ones(batch["next_sentence_labels"].shape, jnp.float32)
    mlm_w = mlm_w * ex_w[:, None]
    nsp_logits = outputs["nsp_logits"][:, None]
    nsp_labels = batch["next_sentence_labels"][:, None]
    sums = {}
    sums["mlm_loss"], sums["mlm_weight"] = weighted_cross_entropy(
        outputs["mlm_logits"], batch["masked_lm_ids"], mlm_w
    )
    sums["mlm_correct"], _ = weighted_correct(outputs["mlm_logits"], batch["masked_lm_ids"], mlm_w)
    sums["nsp_loss"], sums["nsp_weight"] = weighted_cross_entropy(
        nsp_logits, nsp_labels, ex_w[:, None]
    )
    sums["nsp_correct"], _ = weighted_correct(nsp_logits, nsp_labels, ex_w[:, None])
    return sums


def pretraining_metrics(sums: dict[str, Array]) -> dict[str, Array]:
    """Means from (possibly aggregated) sums; the total loss is MLM mean + NSP mean as in BERT."""
    mlm_w = jnp.maximum(sums["mlm_weight"], 1e-8)
    nsp_w = jnp.maximum(sums["nsp_weight"], 1e-8)
    m = {
        "mlm_loss": sums["mlm_loss"] / mlm_w,
        "mlm_accuracy": sums["mlm_correct"] / mlm_w,
        "nsp_loss": sums["nsp_loss"] / nsp_w,
        "nsp_accuracy": sums["nsp_correct"] / nsp_w,
    }
    m["loss"] = m["mlm_loss"] + m["nsp_loss"]
    return m
