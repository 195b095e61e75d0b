"""Dynamic masking: the masking recipe of `masking.py`, in TensorFlow, applied to each batch.

Records written by `prepare(dynamic_masking=True)` carry unmasked tokens. Each batch is masked
with stateless random ops seeded from (seed, shard, batch index), so the same batch index always
gets the same mask (a rebuilt pipeline resumed with `ds.skip(k)` replays exactly), while an
instance seen again in a later epoch sits at another batch index and gets a fresh mask -- RoBERTa's
dynamic masking instead of the original's `dupe_factor` static copies.

Whole-word groups come from the records' `word_starts` feature when present (needed for
"segmented" words, e.g. Chinese), else for "wordpiece" from the vocab (`##` pieces continue).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from bert_jax import tokenization
from bert_jax.data.masking import MaskingConfig, random_token_pool


@dataclasses.dataclass(frozen=True)
class VocabInfo:
    """What masking needs to know about the vocabulary."""

    mask_id: int
    cls_id: int
    sep_id: int
    pool: np.ndarray  # ids a random replacement may take
    continuation: np.ndarray  # bool per id: a `##` piece

    @classmethod
    def from_vocab_file(cls, vocab_file: str, lowercase: bool = True) -> VocabInfo:
        tokenizer = tokenization.load_tokenizer(vocab_file, lowercase=lowercase)
        special = tokenization.vocab_special_ids(tokenizer)
        tokens = tokenization.vocab_tokens(tokenizer)
        return cls(
            mask_id=special[tokenization.MASK],
            cls_id=special[tokenization.CLS],
            sep_id=special[tokenization.SEP],
            pool=random_token_pool(tokens),
            continuation=np.array([t.startswith("##") for t in tokens], bool),
        )


def _choose_tokens(keys, cand, k):
    # The k smallest random keys among candidates: a uniform random k-subset.
    keys = tf.where(cand, keys, 2.0)
    k_eff = tf.minimum(k, tf.reduce_sum(tf.cast(cand, tf.int32), axis=1))
    kth = tf.gather(tf.sort(keys, axis=1), tf.maximum(k_eff - 1, 0), batch_dims=1)
    chosen = cand & (keys <= kth[:, None]) & (k_eff > 0)[:, None]
    return chosen & (tf.cumsum(tf.cast(chosen, tf.int32), axis=1) <= k[:, None])


def _choose_words(keys, cand, starts, k):
    """Greedy over words in random order: take a word if it still fits in k, else skip it."""
    seq = tf.shape(cand)[1]
    batch = tf.shape(cand)[0]
    prev_cand = tf.pad(cand[:, :-1], [[0, 0], [1, 0]])
    starts = cand & (starts | ~prev_cand)  # never a group across [SEP] or padding
    group = tf.cumsum(tf.cast(starts, tf.int32), axis=1) - 1
    n_groups = tf.reduce_sum(tf.cast(starts, tf.int32), axis=1)
    rows = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(cand))
    segment = tf.where(cand, rows * seq + group, batch * seq)  # non-candidates: a dump bucket
    flat = tf.reshape(segment, [-1])
    sizes = tf.math.unsorted_segment_sum(tf.ones_like(flat), flat, batch * seq + 1)[:-1]
    sizes = tf.reshape(sizes, [batch, seq])
    valid = tf.range(seq)[None, :] < n_groups[:, None]
    order = tf.argsort(tf.where(valid, keys, 2.0), axis=1, stable=True)
    sorted_sizes = tf.gather(sizes, order, batch_dims=1)

    def step(state, size):
        count, _ = state
        fits = (size > 0) & (count + size <= k)
        return count + tf.where(fits, size, 0), fits

    _, taken = tf.scan(
        step, tf.transpose(sorted_sizes), initializer=(tf.zeros_like(k), tf.zeros_like(k, bool))
    )
    by_group = tf.gather(tf.transpose(taken), tf.argsort(order, axis=1), batch_dims=1)
    return cand & tf.gather(by_group, tf.maximum(group, 0), batch_dims=1)


def make_masker(
    config: MaskingConfig, vocab: VocabInfo, seed: int, shard_index: int = 0
) -> Callable[[tf.Tensor, dict[str, tf.Tensor]], dict[str, tf.Tensor]]:
    """A `(batch_index, features) -> features` map adding masked_lm_* and masking input_ids."""
    p = config.max_predictions_per_seq
    pool = tf.constant(vocab.pool, tf.int32)
    continuation = tf.constant(vocab.continuation)
    base_seed = tf.constant([seed, shard_index], tf.int64)
    whole_word = config.whole_word != "none"
    keep_share = config.keep_share

    def mask(index: tf.Tensor, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        ids, input_mask = features["input_ids"], features["input_mask"]
        batch_seed = tf.random.experimental.stateless_fold_in(base_seed, index)
        seeds = [tf.random.experimental.stateless_fold_in(batch_seed, i) for i in range(4)]
        cand = (input_mask > 0) & (ids != vocab.cls_id) & (ids != vocab.sep_id)
        lengths = tf.reduce_sum(input_mask, axis=1)
        # round() half to even, like Python's round in the original and NumPy's.
        k = tf.cast(tf.round(tf.cast(lengths, tf.float64) * config.masked_lm_prob), tf.int32)
        k = tf.minimum(p, tf.maximum(1, k))
        keys = tf.random.stateless_uniform(tf.shape(ids), seeds[0])
        if whole_word:
            if "word_starts" in features:
                starts = features["word_starts"] > 0
            else:
                starts = ~tf.gather(continuation, ids)
            chosen = _choose_words(keys, cand, starts, k)
        else:
            chosen = _choose_tokens(keys, cand, k)
        n = tf.reduce_sum(tf.cast(chosen, tf.int32), axis=1)
        positions = tf.argsort(tf.cast(~chosen, tf.int32), axis=1, stable=True)[:, :p]
        weights = tf.range(p)[None, :] < n[:, None]
        positions = tf.where(weights, positions, 0)
        labels = tf.where(weights, tf.gather(ids, positions, batch_dims=1), 0)
        shape = tf.shape(positions)
        u_mask = tf.random.stateless_uniform(shape, seeds[1])
        u_keep = tf.random.stateless_uniform(shape, seeds[2])
        random_ids = tf.gather(
            pool, tf.random.stateless_uniform(shape, seeds[3], 0, len(vocab.pool), tf.int32)
        )
        is_mask = u_mask < config.mask_prob
        is_random = ~is_mask & (u_keep >= keep_share)
        shown = tf.where(is_mask, vocab.mask_id, tf.where(is_random, random_ids, labels))
        rows = tf.broadcast_to(tf.range(shape[0])[:, None], shape)
        where = tf.where(weights)
        indices = tf.stack([tf.gather_nd(rows, where), tf.gather_nd(positions, where)], axis=1)
        out = {k: v for k, v in features.items() if k != "word_starts"}
        out["input_ids"] = tf.tensor_scatter_nd_update(ids, indices, tf.gather_nd(shown, where))
        out["masked_lm_positions"] = positions
        out["masked_lm_ids"] = labels
        out["masked_lm_weights"] = tf.cast(weights, tf.float32)
        return out

    return mask
