"""Pre-training input glue: config -> prepared data, this host's train/eval batches.

The data order is a pure function of data.seed and the step, so that a resumed run sees exactly
the batches an uninterrupted one would (`train_batches(config, start_step)`).
"""

from __future__ import annotations

import atexit
import errno
import io
import itertools
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from bert_jax.data import packing


def count_vocab(vocab_file: str | os.PathLike) -> int:
    # tf.io.gfile: the vocabulary may be on gs:// (a TPU pod's data), which open() takes for a
    # local path. TF is imported only when a file is read.
    from tensorflow.io import gfile  # noqa: PLC0415

    path = os.fspath(vocab_file)
    if not gfile.exists(path):  # (gfile would raise TF's NotFoundError, not always naming it)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    with gfile.GFile(path, "rb") as f:
        text = f.read().decode("utf-8")
    # newline=None: the lines of open(vocab_file, encoding="utf-8"), as the tokenizer reads them.
    return sum(1 for line in io.StringIO(text, newline=None) if line.rstrip("\n"))


_local_copies: dict[str, str] = {}


def local_copy(path: str) -> str:
    """`path` itself if local; else (gs://, ...) a local copy of it, made once per process and
    removed at exit. For readers that take only local files (the `tokenizers` library)."""
    if "://" not in path:
        return path
    if path not in _local_copies:
        fd, local = tempfile.mkstemp(prefix="bert_jax_", suffix="_" + os.path.basename(path))
        os.close(fd)
        atexit.register(os.remove, local)
        from tensorflow.io import gfile  # noqa: PLC0415

        gfile.copy(path, local, overwrite=True)
        _local_copies[path] = local
    return _local_copies[path]


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
        if "://" in d.dir:
            raise ValueError(
                f"data.corpus prepares into a local data.dir, not {d.dir}: prepare it locally "
                "(python -m bert_jax.data.prepare), copy it up (gsutil -m cp -r), then set "
                "data.dir to the copy without data.corpus."
            )
        from bert_jax.data import prepare  # noqa: PLC0415

        def build(out_dir, vocab_file, seq, pred):
            prepare.prepare(
                d.corpus,
                out_dir,
                vocab_size=d.vocab_size,
                vocab_file=vocab_file or None,
                max_seq_length=seq,
                max_predictions_per_seq=pred,
                dupe_factor=d.dupe_factor,
                seed=d.seed + 12345,
                **prepare.options_from_config(d),
            )

        if jax.process_index() == 0:
            build(d.dir, d.vocab_file, d.max_seq_length, d.max_predictions_per_seq)
            if d.phase2_step and d.phase2_dir:
                # Phase 2 tokenizes with phase 1's vocabulary: the model's embeddings are shared.
                vocab = d.vocab_file or os.path.join(d.dir, "vocab.txt")
                build(d.phase2_dir, vocab, d.phase2_max_seq_length,
                      d.phase2_max_predictions_per_seq)  # fmt: skip
        _others_wait("bert_jax: data prepared")
    if d.dir:
        from bert_jax.data import prepare  # noqa: PLC0415

        if not d.corpus:
            prepare.check_built_options(d.dir, d)
        for built in filter(None, (d.dir, d.phase2_step and d.phase2_dir)):
            prepare.check_file_sizes(built)
            if not d.corpus:  # (a build compares its vocabulary through its arguments)
                _check_same_vocab(built, d.vocab_file)
        d.train_files = d.train_files or os.path.join(d.dir, "train-*.tfrecord")
        d.eval_files = d.eval_files or os.path.join(d.dir, "eval.tfrecord")
        d.vocab_file = d.vocab_file or os.path.join(d.dir, "vocab.txt")
    if d.pack_sequences > 1:  # (train.check_config refuses it with dynamic masking)
        _pack_training_files(d)
    return config


def _check_same_vocab(data_dir: str, vocab_file: str) -> None:
    """Records hold ids of the vocabulary they were prepared with (data_dir/vocab.txt): read
    with another one (an init checkpoint's, data.vocab_file) every id names another token."""
    built = os.path.join(data_dir, "vocab.txt")
    from tensorflow.io import gfile  # noqa: PLC0415 (data.dir may be on gs://)

    if not vocab_file or not gfile.exists(built) or gfile.isdir(built):
        return
    remote = "://" in built or "://" in vocab_file
    if not remote and os.path.samefile(built, vocab_file):
        return
    with gfile.GFile(built, "rb") as a, gfile.GFile(vocab_file, "rb") as b:
        if a.read() == b.read():
            return
    raise ValueError(
        f"{data_dir} was prepared with its vocab.txt, but the run tokenizes with {vocab_file} "
        "(data.vocab_file, or the init checkpoint's vocabulary): the records' ids would name "
        "other tokens. Prepare the data with that vocabulary (data.corpus with data.vocab_file, "
        "or `python -m bert_jax.data.prepare --vocab_file=...`) into another data.dir."
    )


def _pack_training_files(d: ml_collections.ConfigDict) -> None:
    """data.pack_sequences: train on packed twins of the training files (made once, next to
    them). Eval files stay unpacked, so held-out metrics are per instance as always."""
    names = ["train_files"]
    if d.phase2_step:
        if not d.phase2_train_files and d.phase2_dir:
            d.phase2_train_files = os.path.join(d.phase2_dir, "train-*.tfrecord")
        names.append("phase2_train_files")
    pack = packing.pack_pattern if jax.process_index() == 0 else packing.packed_pattern
    for name in names:
        d[name] = pack(d[name], d.pack_sequences)
    _others_wait("bert_jax: data packed")


def _others_wait(what: str) -> None:
    """With several hosts, all wait here until process 0 (which writes the data) gets here."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices(what)


def _dataset(
    config,
    phase,
    *,
    training: bool,
    batch_size: int,
    shard: tuple[int, int] | None = None,
    skip: int = 0,
):
    from bert_jax.data import masking, pipeline  # noqa: PLC0415 (imports TensorFlow)

    d = config.data
    return pipeline.pretraining_dataset(
        phase.train_files if training else phase.eval_files,
        batch_size=batch_size,
        max_seq_length=phase.max_seq_length,
        max_predictions_per_seq=phase.max_predictions_per_seq,
        training=training,
        seed=d.seed,
        shuffle_buffer=d.shuffle_buffer,
        shard_index=shard[0] if shard else jax.process_index(),
        num_shards=shard[1] if shard else jax.process_count(),
        dynamic_masking=masking.masking_config(d) if d.dynamic_masking else None,
        vocab_file=local_copy(d.vocab_file) if d.dynamic_masking else None,
        skip_batches=skip,
    )


def train_batches(
    config, start_step: int, shard: tuple[int, int] | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """This host's slice of every global batch from `start_step` on; a pure function of the seed.

    `shard` = (index, count) of the hosts (default: this process of all): each host reads its
    own files and gives batch_size / count rows. With data.phase2_step the data (and sequence
    length) switches at that step; each phase's batches start from their own beginning, so a
    resumed run skips to the same place.
    """
    from bert_jax.data import pipeline  # noqa: PLC0415

    batch_size = config.train.batch_size // (shard[1] if shard else jax.process_count())

    def make(phase, skip):
        ds = _dataset(config, phase, training=True, batch_size=batch_size, shard=shard, skip=skip)
        return pipeline.as_numpy(ds, phase.train_files)

    return pipeline.phased_batches(pipeline.phases(config.data), start_step, make)


def eval_batches(config, step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """The held-out batches of the phase in effect at `step`, the last one padded."""
    from bert_jax.data import pipeline  # noqa: PLC0415

    t = config.train
    phase = pipeline.phase_at(pipeline.phases(config.data), step)
    if not phase.eval_files:
        return
    batch_size = t.eval_batch_size // jax.process_count()
    ds = _dataset(config, phase, training=False, batch_size=batch_size)
    batches = (pad_batch(b, batch_size) for b in pipeline.as_numpy(ds, phase.eval_files))
    if t.eval_batches:
        batches = itertools.islice(batches, t.eval_batches)
    if jax.process_count() == 1:
        yield from batches
        return
    spec = ds.element_spec
    empty = {k: np.zeros((0, *v.shape[1:]), v.dtype.as_numpy_dtype) for k, v in spec.items()}
    yield from in_lockstep(batches, pad_batch(empty, batch_size), _any_process)


def _any_process(flag: bool) -> bool:
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return bool(multihost_utils.process_allgather(np.array(flag)).any())


def in_lockstep(batches, filler, any_host) -> Iterator:
    """`batches`, then `filler` until no host has batches left (`any_host(flag)`: whether
    `flag` is true on any host, a collective every host calls at the same point).

    Hosts hold different numbers of eval records, and every host must take part in every
    (collective) evaluation step: the shorter ones add filler batches (example weight 0).
    """
    batches = iter(batches)
    while True:
        batch = next(batches, None)
        if not any_host(batch is not None):
            return
        yield filler if batch is None else batch


def pad_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads a short (last) batch to `size` rows with zero rows and sets `example_weights`."""
    n = len(batch["input_ids"])
    out = {
        k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)])
        for k, v in batch.items()
    }
    out["example_weights"] = (np.arange(size) < n).astype(np.float32)
    return out


def check_batch(
    batch: dict[str, np.ndarray], vocab_size: int, where: str, type_vocab_size: int = 2
) -> None:
    """Refuses a batch that the model would silently mis-read: an out-of-range id gives NaN
    embeddings (JAX fills out-of-range gathers) or, in a one-row table (type_vocab_size=1), row 0
    for every segment (flax's Embed broadcasts it), and a loss would not say why."""
    ids, mask = batch["input_ids"], batch["input_mask"]
    seq = ids.shape[1]

    def reject(bad: np.ndarray, describe: Callable[..., str], kind: str, fix: str) -> None:
        """Raises for the first of `bad` (np.argwhere's indices), counting them all."""
        if len(bad):
            first = describe(*(int(i) for i in bad[0]))
            raise ValueError(f"{where}: {first} ({len(bad)} such {kind} in the batch); {fix}")

    def refuse(name: str, values: np.ndarray, low: int, high: int, fix: str) -> None:
        reject(np.argwhere((values < low) | (values >= high)),
               lambda *at: f"{name}[{', '.join(map(str, at))}] = {int(values[at])} is outside "
                           f"[{low}, {high})", "values", fix)  # fmt: skip

    for name in ("input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
                 "masked_lm_weights", "next_sentence_labels", "position_ids",
                 "next_sentence_positions", "next_sentence_weights"):  # fmt: skip
        # (numpy would broadcast a one-row array over the batch in the loss, silently)
        if name in batch and batch[name].shape[0] != ids.shape[0]:
            raise ValueError(f"{where}: {name} has {batch[name].shape[0]} rows, input_ids "
                             f"{ids.shape[0]}; the records are malformed.")  # fmt: skip
    vocab_fix = "the data was made with another vocabulary: set data.vocab_file to its vocab.txt."
    refuse("input_ids", ids, 0, vocab_size, vocab_fix)
    if packing.is_packed(batch):  # input_mask numbers the sequences of a row
        packed = batch["next_sentence_positions"].shape[1]
        refuse("input_mask", mask, 0, packed + 1, f"packed rows hold at most {packed} sequences.")
        for name in ("position_ids", "next_sentence_positions"):
            refuse(name, batch[name], 0, seq, f"positions index the {seq} tokens of a row.")
    else:
        refuse("input_mask", mask, 0, 2, "input_mask must be 0 or 1.")
        # Padding after the tokens (model.attention 'dot' and 'cudnn' read a row's mask as its
        # length; every BERT pipeline pads at the end).
        reject(np.argwhere(mask[:, 1:] > mask[:, :-1]),
               lambda row, col: f"input_mask[{row}] has a 1 at position {col + 1} after a 0 at "
                                f"{col}", "rows or gaps",
               "padding must come after a row's tokens, its mask 1s then 0s.")  # fmt: skip
    refuse("segment_ids", batch["segment_ids"], 0, type_vocab_size,
           f"the model has type_vocab_size={type_vocab_size} segments; sentence pairs need 2 "
           "(model.type_vocab_size, or a checkpoint trained with segments).")  # fmt: skip
    if "masked_lm_positions" in batch:
        refuse("masked_lm_positions", batch["masked_lm_positions"], 0, seq,
               f"positions index the {seq} tokens of a sequence.")  # fmt: skip
        refuse("masked_lm_ids", batch["masked_lm_ids"], 0, vocab_size, vocab_fix)
        if "masked_lm_weights" in batch:  # a scored prediction at a padding position
            positions, weights = batch["masked_lm_positions"], batch["masked_lm_weights"]
            padding = np.take_along_axis(mask, positions, axis=1) == 0
            reject(np.argwhere(padding & (weights > 0)),
                   lambda row, j: f"masked_lm_positions[{row}, {j}] = {int(positions[row, j])} "
                                  f"has weight {float(weights[row, j])} but is padding "
                                  "(input_mask 0)", "predictions",
                   "the records are malformed: a prediction must point at one of its row's "
                   "tokens, or have weight 0.")  # fmt: skip
    if "next_sentence_labels" in batch:
        refuse("next_sentence_labels", batch["next_sentence_labels"], 0, 2, "labels are 0 or 1.")


def prefetch(batches: Iterator, size: int, prepare: Callable[[Any], Any]) -> Iterator:
    """Yields `prepare(batch)` for each batch, computed up to `size` batches ahead in a
    background thread (reading, checking and copying the next batches to the devices while
    the current step runs). The order is unchanged; an exception (a bad batch, a failed read)
    is raised where its batch would have been yielded. `size` 0: no thread, no look-ahead.
    """
    if size <= 0:
        yield from map(prepare, batches)
        return
    ready: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for batch in batches:
                if not offer((prepare(batch), None)):
                    return
            offer((done, None))
        except BaseException as e:  # handed to the consumer, raised in its thread
            offer((None, e))

    thread = threading.Thread(target=work, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()  # the consumer stopped (finished, raised, or closed the generator)
        thread.join(timeout=10)
