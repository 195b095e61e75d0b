"""Pre-training input glue: config -> prepared data, this host's train/eval batches.

The data order is a pure function of data.seed and the step, so that a resumed run sees exactly
the batches an uninterrupted one would (`train_batches(config, start_step)`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np


def count_vocab(vocab_file: str) -> int:
    with open(vocab_file, encoding="utf-8") as f:
        return sum(1 for line in f if line.rstrip("\n"))


def resolve_data(
    config: ml_collections.ConfigDict, init_vocab_file: str | None = None
) -> ml_collections.ConfigDict:
    """Builds the data from data.corpus if asked (a no-op when built) and fills default paths.

    `init_vocab_file`, the vocabulary of an init checkpoint, is used unless data.vocab_file is set:
    continuing from released weights must tokenize with their vocabulary, not a new one.
    """
    config = ml_collections.ConfigDict(config.to_dict())  # never mutate the caller's config
    d = config.data
    d.vocab_file = d.vocab_file or os.fspath(init_vocab_file or "")
    if d.corpus:
        if not d.dir:
            raise ValueError("data.corpus needs data.dir, the directory to prepare the data in.")
        from bert_jax.data import prepare  # noqa: PLC0415

        if jax.process_index() == 0:
            prepare.prepare(
                d.corpus,
                d.dir,
                vocab_size=d.vocab_size,
                vocab_file=d.vocab_file or None,
                max_seq_length=d.max_seq_length,
                max_predictions_per_seq=d.max_predictions_per_seq,
                dupe_factor=d.dupe_factor,
                seed=d.seed + 12345,
            )
    if d.dir:
        d.train_files = d.train_files or os.path.join(d.dir, "train-*.tfrecord")
        d.eval_files = d.eval_files or os.path.join(d.dir, "eval.tfrecord")
        d.vocab_file = d.vocab_file or os.path.join(d.dir, "vocab.txt")
    return config


def train_batches(config, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """This host's slice of every global batch from `start_step` on; a pure function of the seed."""
    from bert_jax.data import pipeline  # noqa: PLC0415 (imports TensorFlow)

    d = config.data
    ds = pipeline.pretraining_dataset(
        d.train_files,
        batch_size=config.train.batch_size // jax.process_count(),
        max_seq_length=d.max_seq_length,
        max_predictions_per_seq=d.max_predictions_per_seq,
        training=True,
        seed=d.seed,
        shuffle_buffer=d.shuffle_buffer,
        shard_index=jax.process_index(),
        num_shards=jax.process_count(),
    )
    return pipeline.as_numpy(ds.skip(start_step))


def eval_batches(config) -> Iterator[dict[str, np.ndarray]]:
    from bert_jax.data import pipeline  # noqa: PLC0415

    d, t = config.data, config.train
    batch_size = t.eval_batch_size // jax.process_count()
    ds = pipeline.pretraining_dataset(
        d.eval_files,
        batch_size=batch_size,
        max_seq_length=d.max_seq_length,
        max_predictions_per_seq=d.max_predictions_per_seq,
        training=False,
        shard_index=jax.process_index(),
        num_shards=jax.process_count(),
    )
    for i, batch in enumerate(pipeline.as_numpy(ds)):
        if t.eval_batches and i >= t.eval_batches:
            return
        yield pad_batch(batch, batch_size)


def pad_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads a short (last) batch to `size` rows with zero rows and sets `example_weights`."""
    n = len(batch["input_ids"])
    out = {
        k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)])
        for k, v in batch.items()
    }
    out["example_weights"] = (np.arange(size) < n).astype(np.float32)
    return out
