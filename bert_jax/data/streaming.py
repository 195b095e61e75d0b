"""Streaming, sharded, parallel creation of pre-training TFRecords with bounded memory.

The corpus is a text file in the BERT format (one sentence per line, blank line between
documents). A first pass records where each document starts; the training documents are then cut
into `num_shards` byte-balanced ranges of whole documents, and each shard becomes one output file,
written by one worker process. A shard is read as a stream and processed in chunks of about
`chunk_chars` characters, so memory does not grow with the corpus.

Deviations from the original tool, which holds the whole corpus and all instances in memory:
- the random next sentence (B) comes from another document of the same chunk, not of the whole
  corpus (a chunk holds ~1000 Wikipedia articles at the default size; a corpus smaller than one
  chunk per shard is treated exactly as a whole);
- instances are shuffled within a chunk (all `dupe_factor` passes of it), not globally; the
  training pipeline's file interleave and shuffle buffer mix chunks and shards.
Output is deterministic given the seed and the number of shards, whatever the number of workers.
A shard's file appears complete or not at all, so an interrupted run keeps finished shards, and
`run_shards` skips shards already done.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing
import os
import pathlib
import queue
import random
import re
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np

from bert_jax import tokenization
from bert_jax.data import corpus as corpus_lib
from bert_jax.data import instances, masking, pretraining, records

DEFAULT_CHUNK_CHARS = 4_000_000  # ~1M tokens, ~1000 Wikipedia articles: ~50 MB per worker
MAX_LINE_CHARS = 100_000  # longer lines are split into sentences (counted as long_lines)
_BATCH = 2048  # instances masked and serialized together
_DEFAULT_MASKING = masking.MaskingConfig()
# C0 controls and DEL, except \t \n \r: deleted as BERT's normalizer does ("a\x00b" -> "ab"),
# and counted.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
READ_COUNTS = ("lines", "characters", "invalid_utf8_lines", "control_char_lines", "long_lines")


def new_read_counts() -> dict[str, int]:
    return dict.fromkeys(READ_COUNTS, 0)


def _blank(raw: bytes) -> bool:
    """Whether a line is blank as Python's str.strip() sees it (the original reader's rule):
    a line of only NBSP or ideographic spaces ends a document too, not just ASCII whitespace."""
    stripped = raw.strip()
    return not stripped or (not stripped.isascii() and not stripped.decode("utf-8", "ignore").strip())


def document_offsets(path: str | os.PathLike) -> np.ndarray:
    """Byte offsets of each document's first line, then the file size (int64)."""
    offsets = []
    pos, in_doc = 0, False
    with open(path, "rb") as f:
        for raw in f:
            blank = _blank(raw)
            if not blank and not in_doc:
                offsets.append(pos)
            in_doc = not blank
            pos += len(raw)
    offsets.append(pos)
    return np.asarray(offsets, np.int64)


def _clean_line(raw: bytes, counts: dict[str, int]) -> list[str]:
    """Bytes of one line -> sentences (usually one); bad bytes and controls counted, not fatal."""
    counts["lines"] += 1
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:  # the original drops undecodable bytes ("ignore"); so do we
        line = raw.decode("utf-8", "ignore")
        counts["invalid_utf8_lines"] += 1
    if _CONTROL.search(line):
        line = _CONTROL.sub("", line)
        counts["control_char_lines"] += 1
    line = line.strip()
    if len(line) <= MAX_LINE_CHARS:
        return [line] if line else []
    # A huge "sentence" is usually a document without line breaks: split it, then hard-wrap.
    counts["long_lines"] += 1
    out = []
    for sentence in corpus_lib.split_sentences(line):
        out.extend(_wrap(sentence, MAX_LINE_CHARS))
    return out


def _wrap(text: str, width: int) -> list[str]:
    pieces = []
    while len(text) > width:
        cut = text.rfind(" ", 0, width)
        cut = cut if cut > 0 else width
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    return [p for p in [*pieces, text] if p]


def iter_documents(
    path: str | os.PathLike, start: int, end: int, counts: dict[str, int]
) -> Iterator[list[str]]:
    """Documents of the text file whose first line starts in [start, end)."""
    doc: list[str] = []
    lines = 0  # raw lines of the current document (it may clean down to nothing)
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        for raw in f:
            if pos >= end and not lines:
                break
            pos += len(raw)
            if _blank(raw):  # a blank line ends the document (same rule as the index)
                if doc:
                    yield doc
                elif lines:
                    counts["empty_documents"] = counts.get("empty_documents", 0) + 1
                doc, lines = [], 0
                if pos >= end:
                    break
                continue
            lines += 1
            sentences = _clean_line(raw, counts)
            counts["characters"] += sum(map(len, sentences))
            doc.extend(sentences)
    if doc:
        yield doc
    elif lines:
        counts["empty_documents"] = counts.get("empty_documents", 0) + 1


def chunks(documents: Iterator[list[str]], chunk_chars: int) -> Iterator[list[list[str]]]:
    """Groups documents into chunks of >= chunk_chars characters; never a one-document chunk
    unless the whole input is one document (NSP needs another document to draw from), even when
    one document alone holds chunk_chars characters."""
    chunk, size, tail = [], 0, []
    for doc in documents:
        if size < chunk_chars or len(chunk) < 2:
            chunk.append(doc)
            size += sum(map(len, doc))
        else:
            tail.append(doc)
            if len(tail) == 2:
                yield chunk
                chunk, size, tail = tail, sum(sum(map(len, d)) for d in tail), []
    chunk.extend(tail)
    if chunk:
        yield chunk


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """Everything a worker needs to turn one byte range of the corpus into one TFRecord file."""

    text_file: str
    start: int
    end: int
    output: str
    shard: int
    seed: int
    vocab_file: str
    lowercase: bool
    recipe: pretraining.RecipeConfig
    masking: masking.MaskingConfig
    unmasked: bool = False  # write tokens only, for dynamic masking
    chunk_chars: int = DEFAULT_CHUNK_CHARS


def _chunk_seeds(seed: int, shard: int, chunk: int) -> tuple[random.Random, np.random.Generator]:
    state = np.random.SeedSequence([seed, shard, chunk]).generate_state(2, np.uint64)
    return random.Random(int(state[0])), np.random.default_rng(int(state[1]))


@dataclasses.dataclass(frozen=True)
class _Vocab:
    encoder: tokenization.SentenceEncoder
    special: dict[str, int]
    pool: np.ndarray  # ids a random replacement may take


_VOCABS: dict[tuple, _Vocab] = {}


def _vocab(vocab_file: str, lowercase: bool, word_mode: str) -> _Vocab:
    """One encoder per process and vocab: its word cache carries over from shard to shard.

    Built in the main process before workers are forked, so they inherit it (~0.3 s of vocab
    loading saved per worker)."""
    with open(vocab_file, "rb") as f:
        key = (f.read(), lowercase, word_mode)
    if key not in _VOCABS:
        _VOCABS.clear()  # a new vocab: the old cache is of no use
        tokenizer = tokenization.load_tokenizer(vocab_file, lowercase=lowercase)
        encoder = tokenization.SentenceEncoder(tokenizer, word_mode)
        _VOCABS[key] = _Vocab(
            encoder,
            tokenization.vocab_special_ids(tokenizer),
            masking.random_token_pool(encoder.tokens),
        )
    return _VOCABS[key]


def run_shard(job: ShardJob) -> dict[str, int]:
    """Writes job.output (atomically) and returns its counts."""
    word_mode = job.masking.whole_word
    vocab = _vocab(job.vocab_file, job.lowercase, word_mode)
    encoder, special, pool = vocab.encoder, vocab.special, vocab.pool
    counts = {**new_read_counts(), **instances.new_counts(), "chunks": 0, "skipped_chunks": 0}
    started = time.perf_counter()
    tmp = job.output + ".partial"
    docs = iter_documents(job.text_file, job.start, job.end, counts)
    with records.RecordWriter(tmp) as writer:
        for index, docs_chunk in enumerate(chunks(docs, job.chunk_chars)):
            chunk = pretraining.tokenize_chunk(docs_chunk, encoder, counts)
            counts["chunks"] += 1
            if job.recipe.next_sentence and chunk.num_documents < 2:
                counts["skipped_chunks"] += 1  # e.g. a shard that is one document after cleaning
                continue
            rng, np_rng = _chunk_seeds(job.seed, job.shard, index)
            table = pretraining.chunk_instances(chunk, job.recipe, rng, counts).arrays()
            order = np_rng.permutation(len(table["random_next"]))
            for begin in range(0, len(order), _BATCH):
                batch = pretraining.assemble(
                    chunk, table, order[begin : begin + _BATCH], job.recipe.max_seq_length
                )
                writer.write_batch(
                    instances.instance_features(
                        batch, masking_config=None if job.unmasked else job.masking, rng=np_rng,
                        special=special, pool=pool, counts=counts,
                        word_starts=job.unmasked and word_mode != "none",
                    )
                )  # fmt: skip
    os.replace(tmp, job.output)
    counts["worker_seconds"] = round(time.perf_counter() - started, 3)
    return counts


def make_features(
    documents: list[list[str]],
    tokenizer,
    *,
    recipe: pretraining.RecipeConfig | None = None,
    masking_config: masking.MaskingConfig | None = _DEFAULT_MASKING,
    seed: int = 0,
    word_starts: bool = False,
    word_mode: str | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """All instances of a small in-memory corpus (one chunk) as feature arrays, shuffled.

    For tests and notebooks; `prepare` streams instead. `masking_config=None` leaves the
    instances unmasked; `word_starts` adds the word-start feature, with words as in
    `word_mode` (default: the masking's whole_word mode).
    """
    recipe = recipe or pretraining.RecipeConfig()
    whole_word = masking_config.whole_word if masking_config else "none"
    encoder = tokenization.SentenceEncoder(tokenizer, word_mode or whole_word)
    counts = instances.new_counts()
    chunk = pretraining.tokenize_chunk(documents, encoder, counts)
    rng, np_rng = _chunk_seeds(seed, 0, 0)
    table = pretraining.chunk_instances(chunk, recipe, rng, counts).arrays()
    order = np_rng.permutation(len(table["random_next"]))
    special = tokenization.vocab_special_ids(tokenizer)
    pool = masking.random_token_pool(encoder.tokens)
    parts = []
    for begin in range(0, len(order), _BATCH):
        batch = pretraining.assemble(
            chunk, table, order[begin : begin + _BATCH], recipe.max_seq_length
        )
        parts.append(
            instances.instance_features(
                batch, masking_config=masking_config, rng=np_rng, special=special, pool=pool,
                counts=counts, word_starts=word_starts,
            )
        )  # fmt: skip
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, counts


def _init_worker() -> None:
    # One process per core: the Rust tokenizer must not start a thread per core in each of them.
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _run_and_mark(job: ShardJob) -> tuple[str, dict[str, int]]:
    counts = run_shard(job)
    done = pathlib.Path(job.output + ".done.json")
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(counts))
    os.replace(tmp, done)  # a marker is whole or absent, even if the run dies here
    return job.output, counts


def run_shards(jobs: list[ShardJob], num_workers: int = 0) -> dict[str, dict[str, int]]:
    """Runs jobs (skipping those already done), in `num_workers` processes (0: one per core).

    Returns counts per output file. Finished shards leave `<output>.done.json`; a rerun after an
    interruption only does the rest.
    """
    results: dict[str, dict[str, int]] = {}
    todo = []
    for job in jobs:
        done = pathlib.Path(job.output + ".done.json")
        if done.exists() and os.path.exists(job.output):
            results[job.output] = json.loads(done.read_text())
        else:
            todo.append(job)
    workers = min(num_workers or os.cpu_count() or 1, len(todo))
    if workers <= 1:
        for job in todo:
            output, counts = _run_and_mark(job)
            results[output] = counts
        _VOCABS.clear()  # this process may go on to train: free the word cache
        return results
    # Biggest shards first, so no worker is left with a long one at the end.
    jobs_left = collections.deque(sorted(todo, key=lambda j: j.end - j.start, reverse=True))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def take() -> ShardJob | None:
        with lock:
            return jobs_left.popleft() if jobs_left and not errors else None

    def feed(pool) -> None:
        # Gives each child process one shard at a time from the queue the main process shares.
        finished: queue.Queue = queue.Queue()
        running = 0
        while True:
            while running < workers - 1 and (job := take()) is not None:
                pool.apply_async(
                    _run_and_mark, (job,), callback=finished.put, error_callback=finished.put
                )
                running += 1
            if not running:
                return
            item = finished.get()
            running -= 1
            if isinstance(item, BaseException):
                errors.append(item)  # re-raised by the main thread
            else:
                results[item[0]] = item[1]

    # The main process works too, so one process start-up less delays the run. Child
    # processes are all started here, before any other thread exists.
    context = _context()
    if context.get_start_method() == "fork":
        _vocab(todo[0].vocab_file, todo[0].lowercase, todo[0].masking.whole_word)
    with context.Pool(workers - 1, initializer=_init_worker) as pool:
        feeder = threading.Thread(target=feed, args=(pool,), daemon=True)
        feeder.start()
        try:
            while (job := take()) is not None:
                output, counts = _run_and_mark(job)
                results[output] = counts
        except BaseException as e:
            errors.append(e)  # stops the feeder from starting more shards
            raise
        finally:
            feeder.join()
            _VOCABS.clear()  # this process may go on to train: free the word cache
    if errors:
        raise errors[0]
    return results


def _context() -> multiprocessing.context.BaseContext:
    """ "fork" when it is safe, else "spawn".

    Forking copies a process that is already set up (~0.4 s less start-up per worker than
    spawn's fresh interpreter and imports), but a fork of a process running other threads
    (JAX, TensorFlow, or any thread at all) can deadlock in the child; then spawn.
    """
    heavy = {"jax", "tensorflow", "torch"} & set(sys.modules)
    if sys.platform.startswith("linux") and threading.active_count() == 1 and not heavy:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def plan_shards(
    offsets: np.ndarray, num_docs: int, num_shards: int, min_docs: int = 2
) -> list[tuple[int, int]]:
    """Byte ranges of `num_shards` runs of whole documents among the first `num_docs`,
    balanced by bytes, each of at least `min_docs` documents (NSP draws B from another one)."""
    if num_shards * min_docs > num_docs:
        raise ValueError(
            f"num_train_files={num_shards} needs at least {num_shards * min_docs} training "
            f"documents ({min_docs} per file), the corpus has {num_docs}. Use fewer files."
        )
    end = int(offsets[num_docs])
    bounds = [0]
    for s in range(1, num_shards):
        k = int(np.searchsorted(offsets[:num_docs], s * end / num_shards))
        k = min(max(k, bounds[-1] + min_docs), num_docs - (num_shards - s) * min_docs)
        bounds.append(k)
    bounds.append(num_docs)
    return [(int(offsets[a]), int(offsets[b])) for a, b in zip(bounds, bounds[1:], strict=False)]
