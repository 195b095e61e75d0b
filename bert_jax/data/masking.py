"""Masked-LM masking options and the batched NumPy masker used when writing static masks.

The recipe is the original one (create_pretraining_data.py), applied to a whole batch at once:
- number of predictions k = min(max_predictions_per_seq, max(1, round(len(tokens) * prob))),
  [CLS]/[SEP] counted in len(tokens) but never predicted;
- candidates are visited in random order as groups (one token, or with whole-word masking all
  tokens of a word) and a group is taken only if it still fits in k, else skipped;
- each chosen token independently becomes [MASK] / stays / becomes a random token with
  probabilities mask_prob / keep_prob / random_prob (paper Table 8 studies these);
- positions are sorted.
`bert_jax.data.dynamic` implements the same recipe in TensorFlow for masking on the fly.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

# Whole-word masking modes. "wordpiece": a word is a token plus its following `##` pieces.
# "segmented": a word is a whitespace-separated unit of the input text, e.g. the words of a
# pre-segmented Chinese corpus (each character is its own WordPiece token, so only the
# segmentation knows where words end).
WHOLE_WORD_MODES = ("none", "wordpiece", "segmented")

# Paper Table 8: MASK/SAME/RND percentages of the chosen positions.
TABLE8_SPLITS = ("80/10/10", "100/0/0", "80/0/20", "80/20/0", "0/20/80", "0/0/100")

# Bits of the per-token `flags` arrays passed to `mask_batch`.
CANDIDATE = 1  # the token may be predicted (not [CLS]/[SEP]/padding)
WORD_START = 2  # the token starts a word (continuation tokens join the previous token's word)


def parse_split(split: str) -> tuple[float, float, float]:
    """MASK/SAME/RND percentages, e.g. "80/10/10", as probabilities (0.8, 0.1, 0.1)."""
    parts = split.split("/")
    try:
        values = [float(p) / 100 for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or abs(sum(values) - 1) > 1e-6 or min(values) < 0:
        raise ValueError(
            f"masking split {split!r} must be MASK/SAME/RND percentages summing to 100, e.g. "
            f"'80/10/10' (paper Table 8 also uses {', '.join(TABLE8_SPLITS[1:])})."
        )
    return values[0], values[1], values[2]


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """How masked-LM predictions are chosen (static masks in `prepare`, or on the fly)."""

    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    mask_prob: float = 0.8  # a chosen position becomes [MASK] ...
    keep_prob: float = 0.1  # ... or stays as it is ...
    random_prob: float = 0.1  # ... or becomes a random vocab token
    whole_word: str = "none"  # one of WHOLE_WORD_MODES

    def __post_init__(self):
        total = self.mask_prob + self.keep_prob + self.random_prob
        if abs(total - 1.0) > 1e-6 or min(self.mask_prob, self.keep_prob, self.random_prob) < 0:
            raise ValueError(
                f"mask/keep/random probabilities {self.mask_prob}/{self.keep_prob}/"
                f"{self.random_prob} must be >= 0 and sum to 1 (BERT uses 0.8/0.1/0.1)."
            )
        if not 0 < self.masked_lm_prob <= 1:
            raise ValueError(f"masked_lm_prob={self.masked_lm_prob} must be in (0, 1]; BERT: 0.15.")
        if self.max_predictions_per_seq < 1:
            raise ValueError(
                f"max_predictions_per_seq={self.max_predictions_per_seq} must be >= 1."
            )
        if self.whole_word not in WHOLE_WORD_MODES:
            raise ValueError(f"whole_word={self.whole_word!r} must be one of {WHOLE_WORD_MODES}.")

    @classmethod
    def from_split(cls, split: str = "80/10/10", **kwargs) -> MaskingConfig:
        mask, keep, rnd = parse_split(split)
        return cls(mask_prob=mask, keep_prob=keep, random_prob=rnd, **kwargs)

    @property
    def keep_share(self) -> float:
        """P(keep | not [MASK]): the original draws [MASK] first, then keep vs random."""
        return self.keep_prob / max(self.keep_prob + self.random_prob, 1e-12)


def masking_config(data_config) -> MaskingConfig:
    """A MaskingConfig from a config's `data` section (fields with defaults if absent)."""

    def get(name, default):
        return data_config.get(name, default) if hasattr(data_config, "get") else default

    return MaskingConfig.from_split(
        get("masking_split", "80/10/10"),
        masked_lm_prob=get("masked_lm_prob", 0.15),
        max_predictions_per_seq=get("max_predictions_per_seq", 20),
        whole_word=get("whole_word_mask", "none") or "none",
    )


def random_token_pool(tokens: Sequence[str]) -> np.ndarray:
    """Ids a "random token" replacement may take: all but bracketed ones ([PAD], [unused0]...).

    `tokens`: the vocabulary in id order (`tokenization.vocab_tokens`)."""
    bracketed = re.compile(r"^\[[^\]]+\]$")
    ids = [i for i, t in enumerate(tokens) if not bracketed.match(t)]
    return np.asarray(ids, np.int32)


def num_to_predict(lengths: np.ndarray, config: MaskingConfig) -> np.ndarray:
    """k per instance: round(len * prob) (half to even, as Python's round), at least 1, capped."""
    k = np.round(np.asarray(lengths) * config.masked_lm_prob).astype(np.int64)
    return np.minimum(config.max_predictions_per_seq, np.maximum(1, k))


def group_starts(flags: np.ndarray) -> np.ndarray:
    """[B, S] bool: candidates that start a masking group.

    A continuation token right after a non-candidate (e.g. a segment cut in mid-word) starts
    its own group, so no group ever spans [SEP] or padding.
    """
    cand = (flags & CANDIDATE) != 0
    prev_cand = np.zeros_like(cand)
    prev_cand[:, 1:] = cand[:, :-1]
    return cand & (((flags & WORD_START) != 0) | ~prev_cand)


def choose_positions(
    flags: np.ndarray, k: np.ndarray, rng: np.random.Generator, whole_word: bool
) -> np.ndarray:
    """[B, S] bool of the positions to predict (at most k[b] per row)."""
    cand = (flags & CANDIDATE) != 0
    b, s = cand.shape
    keys = rng.random((b, s), dtype=np.float32)
    if not whole_word:
        # k smallest random keys among the candidates = a uniform random k-subset.
        keys = np.where(cand, keys, np.float32(2.0))
        k_eff = np.minimum(k, cand.sum(axis=1))
        kth = np.sort(keys, axis=1)[np.arange(b), np.maximum(k_eff - 1, 0)]
        chosen = cand & (keys <= kth[:, None]) & (k_eff > 0)[:, None]
        # float32 keys can tie (~1e-4 of rows); never take more than k.
        return chosen & (np.cumsum(chosen, axis=1) <= k[:, None])
    starts = group_starts(flags)
    group = np.cumsum(starts, axis=1) - 1  # group index of each candidate token
    n_groups = starts.sum(axis=1)
    rows = np.repeat(np.arange(b), s).reshape(b, s)
    sizes = np.zeros((b, s + 1), np.int64)
    np.add.at(sizes, (rows[cand], group[cand]), 1)
    sizes = sizes[:, :s]
    valid = np.arange(s)[None, :] < n_groups[:, None]
    order = np.argsort(np.where(valid, keys, np.float32(2.0)), axis=1)  # random group order
    sorted_sizes = np.take_along_axis(sizes, order, axis=1)
    taken = np.zeros((b, s), bool)
    count = np.zeros(b, np.int64)
    for r in range(int(n_groups.max()) if b else 0):
        # The original's greedy rule: take a group if it fits, else skip it and go on.
        size = sorted_sizes[:, r]
        fits = (size > 0) & (count + size <= k)
        taken[:, r] = fits
        count += np.where(fits, size, 0)
        if ((count >= k) | (r + 1 >= n_groups)).all():
            break
    by_group = np.zeros((b, s), bool)
    np.put_along_axis(by_group, order, taken, axis=1)
    return cand & np.take_along_axis(by_group, np.maximum(group, 0), axis=1)


def mask_batch(
    tokens: np.ndarray,
    lengths: np.ndarray,
    flags: np.ndarray,
    *,
    config: MaskingConfig,
    rng: np.random.Generator,
    mask_id: int,
    pool: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Masks a padded batch of instances.

    tokens/flags: [B, S]; lengths: [B] tokens per instance including [CLS]/[SEP]. Returns the
    features input_ids (masked), masked_lm_positions/ids (zero padded to P), masked_lm_weights,
    and counts of mask/same/random decisions.
    """
    b, _ = tokens.shape
    p = config.max_predictions_per_seq
    chosen = choose_positions(
        flags, num_to_predict(lengths, config), rng, config.whole_word != "none"
    )
    n = chosen.sum(axis=1)
    # np.nonzero lists chosen positions row by row in increasing order: scatter them to slots
    # 0..n-1 of their row (linear time; a sort would be O(S log S) per row).
    rows_of, cols = np.nonzero(chosen)
    slot = np.arange(len(cols)) - np.repeat(np.cumsum(n) - n, n)
    positions = np.zeros((b, p), np.int64)
    positions[rows_of, slot] = cols
    weights = np.arange(p)[None, :] < n[:, None]
    labels = np.where(weights, np.take_along_axis(tokens, positions, axis=1), 0)
    u_mask = rng.random((b, p), dtype=np.float32)
    u_keep = rng.random((b, p), dtype=np.float32)
    random_ids = pool[rng.integers(0, len(pool), (b, p))]
    is_mask = weights & (u_mask < config.mask_prob)
    is_keep = weights & ~is_mask & (u_keep < config.keep_share)
    is_random = weights & ~is_mask & ~is_keep
    shown = np.where(is_mask, mask_id, np.where(is_random, random_ids, labels))
    masked = tokens.copy()
    rows = np.repeat(np.arange(b), p).reshape(b, p)
    masked[rows[weights], positions[weights]] = shown[weights]
    features = {
        "input_ids": masked,
        "masked_lm_positions": positions,
        "masked_lm_ids": labels,
        "masked_lm_weights": weights.astype(np.float32),
    }
    counts = {
        "mask": int(is_mask.sum()),
        "same": int(is_keep.sum()),
        "random": int(is_random.sum()),
    }
    return features, counts
