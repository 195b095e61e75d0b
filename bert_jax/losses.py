"""Pure losses and metrics. Each returns (sum, weight) so that totals aggregate exactly.

The mean of a loss over a global batch split across devices (or over an eval set) is
sum(sums) / sum(weights); averaging per-device means would weight a device with few masked tokens
as much as one with many. (Gradient accumulation, optim.make_optimizer's optax.MultiSteps,
averages the micro-batches' mean losses instead, as NVIDIA's and Hugging Face's accumulation do:
a micro-batch counts as much as another whatever its number of masked tokens.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from bert_jax.data import packing

Array = jax.Array


def weighted_cross_entropy(logits_BxKxC: Array, labels_BxK: Array, weights_BxK: Array):
    """(sum_i w_i * -log softmax(logits_i)[label_i], sum_i w_i), in float32.

    A weight-0 entry adds nothing whatever its label (e.g. Hugging Face's ignore index -100): the
    gather clips out-of-range labels (its default fills NaN, and NaN * 0 is NaN)."""
    logp = jax.nn.log_softmax(logits_BxKxC.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels_BxK[..., None], axis=-1, mode="clip")[..., 0]
    w = weights_BxK.astype(jnp.float32)
    return jnp.sum(nll * w), jnp.sum(w)


def weighted_correct(logits_BxKxC: Array, labels_BxK: Array, weights_BxK: Array):
    """(weighted number of hits, sum of weights): a hit is a label whose logit is the largest.

    Computed as "the label's logit equals the maximum", not argmax == label: XLA's CPU backend
    runs an argmax over a vocabulary as a slow (value, index) reduction, 9% of a BERT-tiny
    pre-training step (docs/benchmarks.md). The two differ only on an exact tie for the largest
    logit, which this counts as a hit (argmax takes the first of the tied)."""
    w = weights_BxK.astype(jnp.float32)
    label_logit_BxK = jnp.take_along_axis(logits_BxKxC, labels_BxK[..., None], axis=-1)[..., 0]
    hits = (label_logit_BxK >= jnp.max(logits_BxKxC, axis=-1)).astype(jnp.float32)
    return jnp.sum(hits * w), jnp.sum(w)


def visible_tokens(batch: dict[str, Array]) -> Array:
    """[B, P] the input token at each masked position: [MASK], a random token, or the answer."""
    return jnp.take_along_axis(jnp.asarray(batch["input_ids"]), batch["masked_lm_positions"], 1)


def unmasked_input_ids(batch: dict[str, Array]) -> Array:
    """The original tokens of a masked instance: masked_lm_ids put back at their positions."""
    ids_BxS, pos_BxP = jnp.asarray(batch["input_ids"]), batch["masked_lm_positions"]
    rows_Bx1 = jnp.arange(ids_BxS.shape[0])[:, None]
    original_BxP = jnp.where(
        batch["masked_lm_weights"] > 0, batch["masked_lm_ids"], visible_tokens(batch)
    )
    return ids_BxS.at[rows_Bx1, pos_BxP].set(original_BxP)


def pretraining_sums(
    outputs: dict[str, Array],
    batch: dict[str, Array],
    *,
    causal: bool = False,
    next_sentence: bool = True,
) -> dict[str, Array]:
    """Sums and weights of the MLM and NSP losses and accuracies for one batch.

    `batch['example_weights']` (optional, [B]) marks real examples (1) against padding examples (0)
    that fill the last eval batch to a fixed shape. `causal`: the "mlm" sums are those of a
    left-to-right LM instead (`mlm_logits` [B, S, V] of the unmasked input; the target of
    position t is token t+1). `next_sentence=False` (data without NSP): NSP sums are all zero.
    The MLM sums come from `mlm_logits`, or from `mlm_nll` and `mlm_hit` where the head scored
    the answers itself (heads.BertForPreTraining with model.fused_mlm_loss).
    """
    ex_w = batch.get("example_weights")
    if ex_w is None:
        ex_w = jnp.ones(batch["input_ids"].shape[:1], jnp.float32)
    if causal:
        logits = outputs["mlm_logits"][:, :-1]
        targets = unmasked_input_ids(batch)[:, 1:]
        mlm_w = batch["input_mask"][:, 1:].astype(jnp.float32) * ex_w[:, None]
    else:
        logits, targets = outputs.get("mlm_logits"), batch["masked_lm_ids"]
        mlm_w = batch["masked_lm_weights"] * ex_w[:, None]
    if packing.is_packed(batch):  # one NSP label per sequence of a row [B, K]
        nsp_w = batch["next_sentence_weights"] * ex_w[:, None]
        nsp_logits, nsp_labels = outputs["nsp_logits"], batch["next_sentence_labels"]
    else:
        nsp_w = ex_w[:, None]
        nsp_logits = outputs["nsp_logits"][:, None]
        nsp_labels = batch["next_sentence_labels"][:, None]
    if not next_sentence:
        nsp_w = jnp.zeros_like(nsp_w)
    sums = {}
    # The predictions only context can make: the answer is not the token the model sees there
    # ([MASK] or a random token; a causal LM never sees its target). Copying the visible token
    # at the kept 10% adds ~0.1 to mlm_accuracy and nothing here, so a model that reads no
    # context stays at the unigram guess here (experiments/mlm_baselines.py).
    hidden_w = mlm_w if causal else mlm_w * (visible_tokens(batch) != targets)
    if "mlm_nll" in outputs:  # the head scored its answers itself (model.fused_mlm_loss)

        def xent(w):
            return jnp.sum(outputs["mlm_nll"] * w), jnp.sum(w)

        def correct(w):
            return jnp.sum(outputs["mlm_hit"] * w), jnp.sum(w)
    else:
        xent = functools.partial(weighted_cross_entropy, logits, targets)
        correct = functools.partial(weighted_correct, logits, targets)
    sums["mlm_loss"], sums["mlm_weight"] = xent(mlm_w)
    sums["mlm_correct"], _ = correct(mlm_w)
    sums["mlm_hidden_correct"], sums["mlm_hidden_weight"] = correct(hidden_w)
    sums["nsp_loss"], sums["nsp_weight"] = weighted_cross_entropy(nsp_logits, nsp_labels, nsp_w)
    sums["nsp_correct"], _ = weighted_correct(nsp_logits, nsp_labels, nsp_w)
    return sums


def pretraining_metrics(sums: dict[str, Array]) -> dict[str, Array]:
    """Means from (possibly aggregated) sums; the total loss is MLM mean + NSP mean as in BERT."""
    mlm_w = jnp.maximum(sums["mlm_weight"], 1e-8)
    nsp_w = jnp.maximum(sums["nsp_weight"], 1e-8)
    hidden_w = jnp.maximum(sums["mlm_hidden_weight"], 1e-8)
    m = {
        "mlm_loss": sums["mlm_loss"] / mlm_w,
        "mlm_accuracy": sums["mlm_correct"] / mlm_w,
        "mlm_hidden_accuracy": sums["mlm_hidden_correct"] / hidden_w,
        "nsp_loss": sums["nsp_loss"] / nsp_w,
        "nsp_accuracy": sums["nsp_correct"] / nsp_w,
    }
    m["loss"] = m["mlm_loss"] + m["nsp_loss"]
    # Held-out masked-LM perplexity (BERT Table 6): exp of the mean loss per predicted token.
    m["mlm_perplexity"] = jnp.exp(m["mlm_loss"])
    return m


# --------------------------------------------------------------------------- fine-tuning heads


def task_sums(head: str, outputs: dict[str, Array], batch: dict[str, Array]) -> dict[str, Array]:
    """(sum, weight) of the loss of a fine-tuning head on one batch (see data/tasks/common.py).

    `loss`/`weight` give the mean loss per example (per scored token for "token"); `correct`
    (same weight) the accuracy where it is defined. `batch['example_weights']` [B] (optional)
    is 0 for rows that only pad the last eval batch.
    """
    ex_w = batch.get("example_weights")
    if ex_w is None:
        ex_w = jnp.ones(batch["input_ids"].shape[:1], jnp.float32)
    sums = {}
    if head in ("classification", "choice"):
        logits, labels = outputs["logits"][:, None], batch["label"][:, None]
        sums["loss"], sums["weight"] = weighted_cross_entropy(logits, labels, ex_w[:, None])
        sums["correct"], _ = weighted_correct(logits, labels, ex_w[:, None])
    elif head == "token":
        w = batch["label_weights"] * ex_w[:, None]
        sums["loss"], sums["weight"] = weighted_cross_entropy(outputs["logits"], batch["label"], w)
        sums["correct"], _ = weighted_correct(outputs["logits"], batch["label"], w)
    elif head == "regression":
        err = outputs["logits"][:, 0].astype(jnp.float32) - batch["label"]
        sums["loss"], sums["weight"] = jnp.sum(jnp.square(err) * ex_w), jnp.sum(ex_w)
    elif head == "multilabel":
        logits = outputs["logits"].astype(jnp.float32)
        # Binary cross-entropy per label, averaged over labels: one unit of weight per example.
        bce = optax.sigmoid_binary_cross_entropy(logits, batch["label"]).mean(axis=-1)
        sums["loss"], sums["weight"] = jnp.sum(bce * ex_w), jnp.sum(ex_w)
        hits = jnp.all((logits > 0) == (batch["label"] > 0.5), axis=-1).astype(jnp.float32)
        sums["correct"] = jnp.sum(hits * ex_w)
    elif head == "span":
        # The original run_squad.py: mean of the start and end cross-entropies.
        w = ex_w[:, None]
        start, _ = weighted_cross_entropy(
            outputs["start_logits"][:, None], batch["start_position"][:, None], w
        )
        end, _ = weighted_cross_entropy(
            outputs["end_logits"][:, None], batch["end_position"][:, None], w
        )
        sums["loss"], sums["weight"] = (start + end) / 2, jnp.sum(ex_w)
    else:
        raise ValueError(f"unknown head {head!r}.")
    return sums


def task_metrics(sums: dict[str, Array]) -> dict[str, Array]:
    weight = jnp.maximum(sums["weight"], 1e-8)
    m = {"loss": sums["loss"] / weight}
    if "correct" in sums:
        m["accuracy"] = sums["correct"] / weight
    return m
