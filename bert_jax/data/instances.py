"""Instance features (what a TFRecord holds) and the statistics of a data run (stats.json)."""

from __future__ import annotations

import numpy as np

from bert_jax.data import masking
from bert_jax.tokenization import MASK


def instance_features(
    batch: dict[str, np.ndarray],
    *,
    masking_config: masking.MaskingConfig | None,
    rng: np.random.Generator,
    special: dict[str, int],
    pool: np.ndarray,
    counts: dict[str, int],
    word_starts: bool = False,
) -> dict[str, np.ndarray]:
    """Features of assembled instances, with static masks unless `masking_config` is None.

    Unmasked records (for dynamic masking) leave out the masked_lm_* features; `word_starts`
    adds a feature marking tokens that start a word, for whole-word masking on the fly.
    """
    tokens, lengths = batch["tokens"], batch["lengths"]
    seq = tokens.shape[1]
    features = {
        "input_ids": tokens,
        "input_mask": (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int8),
        "segment_ids": batch["segments"],
        "next_sentence_labels": batch["random_next"].reshape(-1, 1),
    }
    counts["instances"] += len(tokens)
    counts["tokens"] += int(lengths.sum())
    counts["random_next"] += int(batch["random_next"].sum())
    counts["short_target"] += int(batch["short"].sum())
    counts["short_instances"] += int((lengths < seq // 2).sum())
    if word_starts:
        # 1 where a masking group starts: a word's first token, any token after [CLS]/[SEP]
        # (e.g. a word cut by truncation), and the special tokens themselves.
        flags = batch["flags"]
        starts = masking.group_starts(flags) | ((flags & masking.CANDIDATE) == 0)
        features["word_starts"] = (features["input_mask"] & starts).astype(np.int8)
    if masking_config is None:
        return features
    masked, kinds = masking.mask_batch(
        tokens, lengths, batch["flags"], config=masking_config, rng=rng,
        mask_id=special[MASK], pool=pool,
    )  # fmt: skip
    features.update(masked)
    counts["predictions"] += int(masked["masked_lm_weights"].sum())
    for kind, n in kinds.items():
        counts[f"predictions_{kind}"] += n
    return features


COUNT_NAMES = (
    "documents", "sentences", "empty_documents", "empty_sentences", "one_sentence_documents",
    "document_tokens", "instances", "tokens", "truncated_tokens", "random_next",
    "forced_random_next", "target_draws", "short_target_draws", "short_target",
    "short_instances", "predictions", "predictions_mask", "predictions_same",
    "predictions_random",
)  # fmt: skip


def new_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_NAMES, 0)


def summarize(counts: dict[str, int]) -> dict[str, float | int]:
    """Counts plus the derived figures of stats.json."""
    n = max(counts["instances"], 1)
    p = max(counts["predictions"], 1)
    coin = counts["instances"] - counts["forced_random_next"]
    out: dict[str, float | int] = dict(counts)
    out.update(
        mean_tokens_per_instance=counts["tokens"] / n,
        fraction_random_next=counts["random_next"] / n,
        # Share of random B among pairs where a coin decided (~0.5; one-sentence chunks are
        # always random, which lifts fraction_random_next a few points above it).
        fraction_random_next_by_coin=(counts["random_next"] - counts["forced_random_next"])
        / max(coin, 1),
        # Target lengths drawn short (per document pass; ~short_seq_prob) and the share of
        # instances cut under such a target (higher: a short target makes more instances).
        fraction_short_target_draws=counts["short_target_draws"] / max(counts["target_draws"], 1),
        fraction_short_target=counts["short_target"] / n,
        fraction_short_instances=counts["short_instances"] / n,
        mean_predictions_per_instance=counts["predictions"] / n,
        predictions_per_token=counts["predictions"] / max(counts["tokens"], 1),
        observed_mask_same_random=[
            counts["predictions_mask"] / p,
            counts["predictions_same"] / p,
            counts["predictions_random"] / p,
        ],
    )
    return out
