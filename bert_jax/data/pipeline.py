"""tf.data input for pre-training: TFRecords of the original create_pretraining_data.py format.

Training input is a pure function of (files, seed, shard): rebuilding the pipeline yields the same
batches in the same order, so a trainer resumes exactly with `ds.skip(steps_done)`. With
`dynamic_masking`, unmasked records (prepare --dynamic_masking) are masked per batch, the mask a
pure function of (seed, shard, batch index) too (see dynamic.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from bert_jax.data import dynamic, packing
from bert_jax.data.masking import MaskingConfig

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
    max_seq_length: int, max_predictions_per_seq: int, packed: int = 0
) -> dict[str, tf.io.FixedLenFeature]:
    """The parse spec of the original tool's TFRecords (int64 except the float weights); with
    `packed` = K, of rows packed with up to K instances each (data/packing.py)."""
    seq, pred = [max_seq_length], [max_predictions_per_seq]
    spec = {
        "input_ids": tf.io.FixedLenFeature(seq, tf.int64),
        "input_mask": tf.io.FixedLenFeature(seq, tf.int64),
        "segment_ids": tf.io.FixedLenFeature(seq, tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature(pred, tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature(pred, tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature(pred, tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([packed or 1], tf.int64),
    }
    if packed:
        spec["position_ids"] = tf.io.FixedLenFeature(seq, tf.int64)
        spec["next_sentence_positions"] = tf.io.FixedLenFeature([packed], tf.int64)
        spec["next_sentence_weights"] = tf.io.FixedLenFeature([packed], tf.float32)
    return spec


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


def record_features(path: str) -> dict[str, int]:
    """Feature name -> number of values, from the first record of `path` ({} if empty)."""
    for raw in tf.data.TFRecordDataset(path).take(1):
        example = tf.train.Example.FromString(raw.numpy())
        found = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            found[name] = len(getattr(feature, kind).value) if kind else 0
        return found
    return {}


def check_record_lengths(
    path: str, max_seq_length: int, max_predictions_per_seq: int, dynamic_masking: bool = False
) -> dict[str, int]:
    """Checks the first record of `path` against the requested lengths; returns its features."""
    found = record_features(path)
    if not found:
        return found
    needed = ("input_ids", "input_mask", "segment_ids", "next_sentence_labels")
    missing = [name for name in needed if name not in found]
    if missing:
        raise ValueError(
            f"{path} lacks features {missing}; is it a pre-training file of the original "
            f"format (features {list(FEATURE_NAMES)})?"
        )
    masked = "masked_lm_positions" in found
    if dynamic_masking and packing.is_packed(found):
        raise ValueError(
            f"{path} holds packed rows, which carry static masks; turn dynamic_masking off, or "
            "read the unpacked files."
        )
    if dynamic_masking and masked:
        raise ValueError(
            f"{path} holds statically masked instances, but dynamic_masking was requested: its "
            "tokens already contain [MASK]. Prepare the data with dynamic_masking=True "
            "(unmasked records), or turn dynamic masking off."
        )
    if not dynamic_masking and not masked:
        raise ValueError(
            f"{path} holds unmasked instances (prepared with dynamic_masking=True); pass "
            "dynamic_masking=<MaskingConfig> (config: data.dynamic_masking=True) to mask them."
        )
    seq, pred = found["input_ids"], found.get("masked_lm_positions", max_predictions_per_seq)
    if (seq, pred) != (max_seq_length, max_predictions_per_seq):
        text = f"holds sequences of length {seq} with {pred} predictions"
        raise ValueError(_length_error(path, max_seq_length, max_predictions_per_seq, text))
    return found


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
    dynamic_masking: MaskingConfig | None = None,
    vocab_file: str | None = None,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """Batches of parsed features: int32 arrays, float32 weights, next_sentence_labels [batch].

    Files are sorted and split among `num_shards` hosts (by file when their number is a multiple
    of num_shards, else by record). Training: seeded shuffles, endless, full batches only. Eval: file order,
    one pass, a final partial batch. `dynamic_masking` (with the data's `vocab_file`) masks
    unmasked records afresh per batch; its max_predictions_per_seq is replaced by this
    function's, which sets the output shape. `skip_batches` (a resumed run) drops the first
    batches before they are parsed or masked.
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} is not in [0, num_shards={num_shards}).")
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive.")
    files = list_files(file_pattern)
    # By file only when every host gets as many files: each host feeds the same share of every
    # batch, so with 4 files on 3 hosts the 2 hosts of one file each would show their records
    # twice as often as the host of two.
    shard_files = len(files) % num_shards == 0
    if shard_files:
        files = files[shard_index::num_shards]
    elif len(files) > num_shards and shard_index == 0:
        logging.warning(
            "%d files on %d hosts: every host reads every file and keeps 1/%d of the records "
            "(files split unevenly would skew the sampling). For less reading, prepare the data "
            "with a number of files that the host count divides (data.prepare "
            "--num_train_files).", len(files), num_shards, num_shards,
        )  # fmt: skip
    # Fail now with a readable message rather than deep inside an iterator. Only the first
    # records of a few files: opening thousands of remote files up front would be slow, and
    # `as_numpy` turns a later mismatch into the same kind of message.
    dynamic_on = dynamic_masking is not None
    found = {}
    for path in files[:_FILES_CHECKED]:
        found = (
            check_record_lengths(path, max_seq_length, max_predictions_per_seq, dynamic_on) or found
        )
    if training and not found and not any(map(record_features, files[_FILES_CHECKED:])):
        # An endless training stream of no records never yields a batch (and a multi-host run
        # would wait for this host at the first step): say so instead.
        raise ValueError(
            f"host {shard_index} of {num_shards}: its training files {files[:3]}"
            f"{' ...' if len(files) > 3 else ''} hold no records. Prepare the data again with "
            "fewer --num_train_files, or point data.train_files at files with records."
        )
    masker = None
    if dynamic_on:
        if not vocab_file:
            raise ValueError("dynamic_masking needs vocab_file (the vocab.txt of the data).")
        config = dataclasses.replace(
            dynamic_masking, max_predictions_per_seq=max_predictions_per_seq
        )
        if config.whole_word == "segmented" and "word_starts" not in found:
            raise ValueError(
                f"whole_word='segmented' needs word boundaries, but {files[0]} has no "
                "'word_starts' feature; prepare the data with whole_word_mask='segmented' and "
                "dynamic_masking=True."
            )
        vocab = dynamic.VocabInfo.from_vocab_file(vocab_file)
        masker = dynamic.make_masker(config, vocab, seed, shard_index)

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
    if masker is not None:
        ds = ds.enumerate()  # the batch index, counted before any skip, seeds its masks
    ds = ds.skip(skip_batches)  # raw bytes: resuming at step s parses none of the s batches
    packed = found.get("next_sentence_labels", 0) if packing.is_packed(found) else 0
    spec = feature_spec(max_seq_length, max_predictions_per_seq, packed)
    if dynamic_on:
        spec = {k: v for k, v in spec.items() if not k.startswith("masked_lm")}
        if "word_starts" in found and dynamic_masking.whole_word != "none":
            spec["word_starts"] = tf.io.FixedLenFeature([max_seq_length], tf.int64)

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        # Parsing a whole batch at once is much faster than record by record.
        features = tf.io.parse_example(serialized, spec)
        out = {
            name: tf.cast(x, tf.int32) if x.dtype == tf.int64 else x for name, x in features.items()
        }
        if not packed:
            out["next_sentence_labels"] = tf.squeeze(out["next_sentence_labels"], axis=1)
        return out

    if masker is not None:
        ds = ds.map(lambda index, serialized: masker(index, parse(serialized)),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)  # fmt: skip
    else:
        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options).prefetch(tf.data.AUTOTUNE)
    return ds


def as_numpy(
    ds: tf.data.Dataset, source: str = "the input files"
) -> Iterator[dict[str, np.ndarray]]:
    """Yields batches as dicts of NumPy arrays, turning a length mismatch or a damaged file of
    `source` (the file pattern, for the message) into a clear error."""
    iterator = ds.as_numpy_iterator()
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.DataLossError as e:  # a truncated file or a failed checksum
            raise ValueError(
                f"A record file of {source} is damaged ({e.message.splitlines()[0]}); copy or "
                "prepare the data again. `python -m bert_jax.data.prepare` records each file's "
                "size in stats.json, and runs check them at the start."
            ) from e
        except tf.errors.InvalidArgumentError as e:
            spec = ds.element_spec
            if not (isinstance(spec, dict) and "input_ids" in spec and "Key: " in e.message):
                raise
            seq = spec["input_ids"].shape[-1]
            pred = spec["masked_lm_positions"].shape[-1]
            where, found = "A record of the input files", "has other lengths"
            raise ValueError(_length_error(where, seq, pred, found) + f" ({e.message})") from e
        yield batch


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of pre-training data, used from `first_step` on (paper: 128 then 512)."""

    first_step: int
    train_files: str
    eval_files: str
    max_seq_length: int
    max_predictions_per_seq: int


def phases(data_config) -> list[Phase]:
    """The data phases of a config's `data` section: one, or two when data.phase2_step > 0.

    Phase 2 reads data.phase2_train_files / phase2_eval_files, by default the files `prepare`
    writes into data.phase2_dir.
    """
    d = data_config
    out = [Phase(0, d.train_files, d.eval_files, d.max_seq_length, d.max_predictions_per_seq)]
    step = d.get("phase2_step", 0) if hasattr(d, "get") else 0
    if step:
        folder = d.get("phase2_dir", "")
        train = d.get("phase2_train_files", "") or (
            folder and os.path.join(folder, "train-*.tfrecord")
        )
        evals = d.get("phase2_eval_files", "") or (folder and os.path.join(folder, "eval.tfrecord"))
        if not train:
            raise ValueError(
                f"data.phase2_step={step} needs data.phase2_dir (or data.phase2_train_files): "
                "the data of the second phase, e.g. prepared with max_seq_length=512."
            )
        out.append(
            Phase(step, train, evals, d.phase2_max_seq_length, d.phase2_max_predictions_per_seq)
        )
    return out


def phase_at(all_phases: Sequence[Phase], step: int) -> Phase:
    """The phase in effect at `step`."""
    return [p for p in all_phases if p.first_step <= step][-1]


def phased_batches(
    all_phases: Sequence[Phase], start_step: int, make_batches: Callable[[Phase, int], Iterator]
) -> Iterator:
    """Batches for steps start_step, start_step + 1, ..., switching phase at each first_step.

    `make_batches(phase, skip)` returns the phase's batch iterator with its first `skip` batches
    skipped (a phase's data starts from its own beginning at its first step, so resuming at step
    s of a phase that began at f skips s - f of them).
    """
    for i, phase in enumerate(all_phases):
        end = all_phases[i + 1].first_step if i + 1 < len(all_phases) else None
        if end is not None and start_step >= end:
            continue
        begin = max(start_step, phase.first_step)
        batches = make_batches(phase, begin - phase.first_step)
        yield from batches if end is None else itertools.islice(batches, end - begin)
