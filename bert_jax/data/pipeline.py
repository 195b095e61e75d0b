"""tf.data input for pre-training: TFRecords of the original create_pretraining_data.py format.

Training input is a pure function of (files, seed, shard): rebuilding the pipeline yields the same
batches in the same order, so a trainer resumes exactly with `ds.skip(steps_done)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

FEATURE_NAMES = (
    "input_ids",
    "input_mask",
    "segment_ids",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_labels",
)
_INTERLEAVE_CYCLE = 4  # files read at once; mixes records across files without much memory
_FILES_CHECKED = 16  # files whose first record is checked when the pipeline is built


def feature_spec(
    max_seq_length: int, max_predictions_per_seq: int
) -> dict[str, tf.io.FixedLenFeature]:
    """The parse spec of the original tool's TFRecords (int64 except the float weights)."""
    seq, pred = [max_seq_length], [max_predictions_per_seq]
    return {
        "input_ids": tf.io.FixedLenFeature(seq, tf.int64),
        "input_mask": tf.io.FixedLenFeature(seq, tf.int64),
        "segment_ids": tf.io.FixedLenFeature(seq, tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature(pred, tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature(pred, tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature(pred, tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
    }


def list_files(file_pattern: str | Sequence[str]) -> list[str]:
    """Sorted files matching one glob, a comma-separated list of globs, or a list of globs."""
    patterns = [file_pattern] if isinstance(file_pattern, (str, os.PathLike)) else file_pattern
    patterns = [p for pat in patterns for p in os.fspath(pat).split(",") if p]
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    if not files:
        raise FileNotFoundError(
            f"No files match {patterns}; run `python -m bert_jax.data.prepare` to create them, or "
            "fix data.train_files / data.eval_files."
        )
    return files


def check_record_lengths(path: str, max_seq_length: int, max_predictions_per_seq: int) -> None:
    """Reads the first record of `path` and checks its lengths against the requested ones."""
    for raw in tf.data.TFRecordDataset(path).take(1):
        example = tf.train.Example.FromString(raw.numpy())
        found = {}
        for name in feature_spec(max_seq_length, max_predictions_per_seq):
            if name not in example.features.feature:
                raise ValueError(
                    f"{path} lacks feature {name!r}; is it a pre-training file of the original "
                    f"format (features {list(FEATURE_NAMES)})?"
                )
            feature = example.features.feature[name]
            kind = feature.WhichOneof("kind")
            found[name] = len(getattr(feature, kind).value) if kind else 0
        seq, pred = found["input_ids"], found["masked_lm_positions"]
        if (seq, pred) != (max_seq_length, max_predictions_per_seq):
            found = f"holds sequences of length {seq} with {pred} predictions"
            raise ValueError(_length_error(path, max_seq_length, max_predictions_per_seq, found))


def _length_error(where: str, max_seq_length: int, max_predictions_per_seq: int, found: str) -> str:
    return (
        f"{where} {found}, but max_seq_length={max_seq_length}, max_predictions_per_seq="
        f"{max_predictions_per_seq} were requested. Set them to the values the data was made "
        "with, or re-create the data with these lengths."
    )


def pretraining_dataset(
    file_pattern: str | list[str],
    *,
    batch_size: int,
    max_seq_length: int,
    max_predictions_per_seq: int,
    training: bool,
    seed: int = 0,
    shuffle_buffer: int = 10_000,
    shard_index: int = 0,
    num_shards: int = 1,
) -> tf.data.Dataset:
    """Batches of parsed features: int32 arrays, float32 weights, next_sentence_labels [batch].

    Files are sorted and split among `num_shards` hosts (by file when there are enough files,
    else by record). Training: seeded shuffles, endless, full batches only. Eval: file order,
    one pass, a final partial batch.
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} is not in [0, num_shards={num_shards}).")
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive.")
    files = list_files(file_pattern)
    shard_files = len(files) >= num_shards
    if shard_files:
        files = files[shard_index::num_shards]
    # Fail now with a readable message rather than deep inside an iterator. Only the first
    # records of a few files: opening thousands of remote files up front would be slow, and
    # `as_numpy` turns a later mismatch into the same kind of message.
    for path in files[:_FILES_CHECKED]:
        check_record_lengths(path, max_seq_length, max_predictions_per_seq)

    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        # With an explicit seed each rebuilt pipeline replays the same sequence of orders.
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(_INTERLEAVE_CYCLE, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if not shard_files:
        ds = ds.shard(num_shards, shard_index)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=training)
    spec = feature_spec(max_seq_length, max_predictions_per_seq)

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        # Parsing a whole batch at once is much faster than record by record.
        features = tf.io.parse_example(serialized, spec)
        out = {
            name: tf.cast(x, tf.int32) if x.dtype == tf.int64 else x for name, x in features.items()
        }
        out["next_sentence_labels"] = tf.squeeze(out["next_sentence_labels"], axis=1)
        return out

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options).prefetch(tf.data.AUTOTUNE)
    return ds


def as_numpy(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    """Yields batches as dicts of NumPy arrays, turning a length mismatch into a clear error."""
    iterator = ds.as_numpy_iterator()
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.InvalidArgumentError as e:
            spec = ds.element_spec
            if not (isinstance(spec, dict) and "input_ids" in spec and "Key: " in e.message):
                raise
            seq = spec["input_ids"].shape[-1]
            pred = spec["masked_lm_positions"].shape[-1]
            where, found = "A record of the input files", "has other lengths"
            raise ValueError(_length_error(where, seq, pred, found) + f" ({e.message})") from e
        yield batch
