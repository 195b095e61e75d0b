"""Corpus -> WordPiece vocab -> pre-training TFRecords, in one idempotent, resumable step.

    python -m bert_jax.data.prepare --corpus=sample:enwiki --output_dir=data/enwiki_128

writes into output_dir: vocab.txt, train-0000K-of-0000N.tfrecord, eval.tfrecord (from held-out
documents, so eval text is unseen) and stats.json. Re-running with the same arguments returns at
once; the output appears all at once (built in `.<name>.partial`, then renamed). An interrupted
run keeps its finished shards there and the same command continues from them.

Corpora: sample:<name> (enwiki, lee_background, peoples_daily), a text file (one sentence per
line, blank line between documents; .gz/.bz2 too), a MediaWiki XML dump, JSON Lines with a "text"
field, or tfds:<name>[:split] (see tfds_corpus.py). Ablation options: --masking_split (paper
Table 8), --whole_word_mask, --masked_lm_prob, --nonext_sentence, --dynamic_masking (records
without masks; the input pipeline masks them afresh every epoch).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import pathlib
import shutil
import time

from absl import app, flags

from bert_jax import tokenization
from bert_jax.data import corpus as corpus_lib
from bert_jax.data import instances, masking, pretraining, streaming

_VERSION = 2  # bump when the output for the same arguments changes; forces a rebuild


def _file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@contextlib.contextmanager
def _lock(path: pathlib.Path, what: pathlib.Path):
    """Keeps two prepare() runs from building the same output `what` at once: the second one
    waits (e.g. the jobs of a sweep sharing one data directory). No-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Another process is preparing {what}; waiting for it.")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def prepare(
    corpus: str,
    output_dir: str | os.PathLike,
    *,
    vocab_size: int = 8000,
    vocab_file: str | None = None,
    lowercase: bool = True,
    max_seq_length: int = 128,
    max_predictions_per_seq: int = 20,
    masked_lm_prob: float = 0.15,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 5,
    eval_fraction: float = 0.05,
    num_train_files: int = 4,
    seed: int = 12345,
    masking_split: str = "80/10/10",
    whole_word_mask: str = "none",
    next_sentence: bool = True,
    dynamic_masking: bool = False,
    num_workers: int = 0,
    chunk_chars: int = streaming.DEFAULT_CHUNK_CHARS,
) -> dict:
    """Builds (or finds already built) the pre-training data of `corpus`; returns stats.json.

    `dynamic_masking` writes unmasked records (no masked_lm_* features; a `word_starts` feature
    with whole-word masking) for `pipeline.pretraining_dataset(dynamic_masking=...)`.
    `num_workers` (0: one per core) does not change the output; the seed, num_train_files (the
    shards) and `chunk_chars` do: the documents are shuffled, and a random next sentence is
    drawn, within chunks of that many characters (memory per worker). A non-default
    `chunk_chars` is recorded with the other arguments.

    Processes that share `output_dir` (the jobs of a sweep) build it once: the others wait for
    the first (a lock file `.<name>.lock` beside it, removed once the output is complete) and
    then find it built.
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction={eval_fraction} must be in [0, 1).")
    if num_train_files < 1:
        raise ValueError(f"num_train_files={num_train_files} must be at least 1.")
    recipe = pretraining.RecipeConfig(max_seq_length, short_seq_prob, dupe_factor, next_sentence)
    mask_cfg = masking.MaskingConfig.from_split(
        masking_split, masked_lm_prob=masked_lm_prob,
        max_predictions_per_seq=max_predictions_per_seq, whole_word=whole_word_mask,
    )  # fmt: skip
    args = {
        "version": _VERSION,
        "corpus": os.fspath(corpus),
        "vocab_size": vocab_size,
        # The content, not the path, decides whether existing output still matches.
        "vocab_file_sha256": _file_sha256(vocab_file) if vocab_file else None,
        "lowercase": lowercase,
        "max_seq_length": max_seq_length,
        "max_predictions_per_seq": max_predictions_per_seq,
        "masked_lm_prob": masked_lm_prob,
        "short_seq_prob": short_seq_prob,
        "dupe_factor": dupe_factor,
        "eval_fraction": eval_fraction,
        "num_train_files": num_train_files,
        "seed": seed,
        "masking_split": masking_split,
        "whole_word_mask": whole_word_mask,
        "next_sentence": next_sentence,
        "dynamic_masking": dynamic_masking,
    }
    if chunk_chars != streaming.DEFAULT_CHUNK_CHARS:  # (absent at the default: older data matches)
        args["chunk_chars"] = chunk_chars
    out = pathlib.Path(output_dir)
    if (out / "stats.json").exists():  # built: no lock needed (the directory may be read-only)
        return _existing(out / "stats.json", args)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The lock lives beside the output, never inside what is built and renamed: a process that
    # waited for it finds the output complete or not begun, never half-way through the rename.
    lock = out.parent / f".{out.name}.lock"
    with _lock(lock, out):
        stats = _prepare_locked(
            corpus, out, args, recipe, mask_cfg, vocab_file=vocab_file,
            num_workers=num_workers, chunk_chars=chunk_chars,
        )  # fmt: skip
        # Removed only once the output is complete (a waiter holding the old file, or a newcomer
        # creating a new one, then finds it built); kept after a failure, so that two processes
        # never build at once.
        lock.unlink(missing_ok=True)
    return stats


def _prepare_locked(corpus, out, args, recipe, mask_cfg, *, vocab_file, num_workers, chunk_chars):
    stats_file = out / "stats.json"
    if stats_file.exists():
        return _existing(stats_file, args)
    if out.exists() and any(out.iterdir()):
        raise ValueError(
            f"{out} is not empty and has no stats.json, so it is not data made by prepare(); "
            "choose an empty or new output_dir."
        )
    work = out.parent / f".{out.name}.partial"
    if work.exists():
        found = work / "args.json"
        if not found.exists() or json.loads(found.read_text()) != args:
            shutil.rmtree(work)  # left by a run with other arguments: nothing to reuse
    work.mkdir(exist_ok=True)
    (work / "args.json").write_text(json.dumps(args))
    stats = _build(
        corpus, work, args, recipe, mask_cfg, vocab_file=vocab_file,
        num_workers=num_workers, chunk_chars=chunk_chars,
    )  # fmt: skip
    for name in ("args.json", "lock", "corpus.txt", "corpus.txt.counts.json"):  # (lock: older runs)
        (work / name).unlink(missing_ok=True)
    for done in work.glob("*.done.json"):
        done.unlink()
    # stats.json is written last: its presence marks a complete output.
    (work / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    if out.exists():
        out.rmdir()  # empty (checked above)
    os.replace(work, out)
    print(f"{out}: prepared {stats['summary']}.")
    return stats


def _existing(stats_file: pathlib.Path, args: dict) -> dict:
    """The stats of data already prepared with `args`; an error if made with other ones."""
    stats = json.loads(stats_file.read_text())
    if stats.get("args") == args:
        print(f"{stats_file.parent}: already prepared ({stats['summary']}).")
        return stats
    found = stats.get("args", {})
    differ = {k: (found.get(k), args.get(k)) for k in sorted(set(found) | set(args))}
    differ = {k: v for k, v in differ.items() if v[0] != v[1]}
    raise ValueError(
        f"{stats_file.parent} holds data prepared with other arguments (name: (found, "
        f"requested)) {differ}. Delete {stats_file.parent} or choose another output_dir."
    )


def _build(corpus, work, args, recipe, mask_cfg, *, vocab_file, num_workers, chunk_chars) -> dict:
    start = time.time()
    text_file, convert_counts = corpus_lib.to_text_file(
        corpus, work / "corpus.txt", workers=num_workers or os.cpu_count() or 1
    )
    offsets = streaming.document_offsets(text_file)
    n_docs = len(offsets) - 1
    eval_fraction, num_files = args["eval_fraction"], args["num_train_files"]
    # At least 2 eval documents: a random next sentence must come from another document.
    n_eval = 0 if eval_fraction == 0 else max(2, round(n_docs * eval_fraction))
    n_train = n_docs - n_eval
    if n_train < 2:
        raise ValueError(
            f"Corpus {corpus!r} has {n_docs} documents; {n_eval} go to eval and at least 2 "
            "must remain for training. Use a bigger corpus or eval_fraction=0."
        )
    min_docs = 2 if recipe.next_sentence else 1
    vocab_path = work / "vocab.txt"
    if vocab_file:
        shutil.copyfile(vocab_file, vocab_path)
    elif not vocab_path.exists():  # trained on training documents only: eval text stays unseen
        end = int(offsets[n_train])
        tokenization.train_wordpiece(
            lambda: streaming.iter_documents(text_file, 0, end, streaming.new_read_counts()),
            args["vocab_size"], work / "vocab.tmp", lowercase=args["lowercase"],
        )  # fmt: skip
        os.replace(work / "vocab.tmp", vocab_path)
    common = {
        "text_file": os.fspath(text_file), "vocab_file": os.fspath(vocab_path),
        "lowercase": args["lowercase"], "masking": mask_cfg,
        "unmasked": args["dynamic_masking"], "chunk_chars": chunk_chars,
    }  # fmt: skip
    train_files = [f"train-{i:05d}-of-{num_files:05d}.tfrecord" for i in range(num_files)]
    ranges = streaming.plan_shards(offsets, n_train, num_files, min_docs)
    jobs = [
        streaming.ShardJob(
            start=a,
            end=b,
            output=os.fspath(work / name),
            shard=i,
            seed=args["seed"],
            recipe=recipe,
            **common,
        )  # fmt: skip
        for i, (name, (a, b)) in enumerate(zip(train_files, ranges, strict=True))
    ]
    if n_eval:
        # One pass: eval needs unseen text, not several maskings of it.
        eval_recipe = pretraining.RecipeConfig(
            recipe.max_seq_length, recipe.short_seq_prob, 1, recipe.next_sentence
        )
        jobs.append(
            streaming.ShardJob(
                start=int(offsets[n_train]), end=int(offsets[-1]),
                output=os.fspath(work / "eval.tfrecord"), shard=0, seed=args["seed"] + 1,
                recipe=eval_recipe, **common,
            )
        )  # fmt: skip
    results = streaming.run_shards(jobs, num_workers)
    _refuse_empty_files(train_files, [results[j.output] for j in jobs], min_docs)
    train_counts = _sum([results[j.output] for j in jobs[:num_files]])
    eval_counts = _sum([results[jobs[-1].output]]) if n_eval else None
    corpus_counts = _sum([train_counts] + ([eval_counts] if eval_counts else []))
    corpus_counts = {
        k: corpus_counts[k]
        for k in ("documents", "sentences", "empty_documents", "empty_sentences",
                  "one_sentence_documents", *streaming.READ_COUNTS)
    }  # fmt: skip
    corpus_counts.update(convert_counts)
    with open(vocab_path, "rb") as f:
        vocab_size = sum(1 for _ in f)  # one token per line
    n_instances = train_counts["instances"] + (eval_counts["instances"] if eval_counts else 0)
    seconds = time.time() - start
    return {
        "args": args,
        "summary": (
            f"{corpus_counts['documents']} documents, {corpus_counts['sentences']} sentences, "
            f"{n_instances} instances, vocab size {vocab_size}, {seconds:.1f} s"
        ),
        "corpus": corpus_counts,
        "vocab_size": vocab_size,
        "train_files": train_files,
        "eval_file": "eval.tfrecord" if n_eval else None,
        "train": instances.summarize(train_counts),
        "eval": instances.summarize(eval_counts) if eval_counts else None,
        "shards": [results[j.output] for j in jobs[:num_files]],
        # Checked by runs (`check_file_sizes`): a copy cut at a record boundary reads short
        # without any error from TFRecord.
        "file_bytes": {os.path.basename(j.output): os.path.getsize(j.output) for j in jobs},
        "seconds": seconds,
        "instances_per_second": n_instances / max(seconds, 1e-9),
    }


def _refuse_empty_files(train_files: list[str], counts: list[dict], min_docs: int) -> None:
    """An output file without instances is refused before the data is published: a host that
    reads only that training file would wait forever for its first batch, and an empty eval
    file evaluates nothing. (Shards are planned on raw documents; cleaning can drop some.)"""
    why = (
        f"its part of the corpus has fewer than {min_docs} usable document(s) after cleaning "
        "(documents of only blank or control characters are dropped)"
    )
    empty = [name for name, c in zip(train_files, counts, strict=False) if not c["instances"]]
    if empty:
        raise ValueError(
            f"{len(empty)} of {len(train_files)} training files came out empty ({empty[:3]}): "
            f"{why}. Prepare with fewer --num_train_files (at most "
            f"{len(train_files) - len(empty)} here)."
        )
    if len(counts) > len(train_files) and not counts[-1]["instances"]:
        raise ValueError(
            f"eval.tfrecord came out empty: {why}. Use a larger --eval_fraction, or 0 for no "
            "eval file."
        )


def _sum(parts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            total[k] = total.get(k, 0) + v
    return total


# Config fields (configs/pretrain.py, `data` section) that map one-to-one onto prepare() options.
CONFIG_OPTIONS = (
    "masked_lm_prob", "masking_split", "whole_word_mask", "next_sentence", "dynamic_masking",
    "short_seq_prob", "lowercase", "num_train_files",
)  # fmt: skip


def options_from_config(data_config) -> dict:
    """The prepare() keyword arguments that a config's `data` section sets (those present)."""
    return {k: data_config[k] for k in CONFIG_OPTIONS if k in data_config}


def check_file_sizes(data_dir: str | os.PathLike) -> None:
    """Refuses record files of `data_dir` whose size differs from what prepare wrote (its
    stats.json): a file cut short, e.g. by an interrupted copy between machines. Read through
    tf.io.gfile: `data_dir` may be on gs://."""
    from tensorflow.io import gfile  # noqa: PLC0415 (heavy: only runs reading a data.dir)

    stats = _read_stats(data_dir)
    if stats is None:
        return
    for name, size in stats.get("file_bytes", {}).items():
        path = os.path.join(os.fspath(data_dir), name)
        found = gfile.stat(path).length if gfile.exists(path) and not gfile.isdir(path) else None
        if found != size:
            what = "is missing" if found is None else f"has {found} bytes"
            raise ValueError(
                f"{path} {what}, but prepare wrote {size} bytes (stats.json): the data is "
                "incomplete or was changed since. Copy it again, or prepare it again."
            )


def check_built_options(data_dir: str | os.PathLike, data_config) -> None:
    """Refuses a config that asks for other data than `data_dir` holds (by its stats.json), when
    the run will not build it (no data.corpus): a masking split, whole-word masking, pair option
    or casing given on the command line would be silently ignored by static records."""
    stats = _read_stats(data_dir)
    if stats is None:  # data made elsewhere (the original scripts): nothing recorded
        return
    recorded = stats["args"]
    baked = ["short_seq_prob", "next_sentence", "lowercase"]
    if not recorded.get("dynamic_masking"):  # else the pipeline masks with the config's options
        baked += ["masked_lm_prob", "masking_split", "whole_word_mask"]
    defaults = inspect.signature(prepare).parameters
    for key in baked:
        if key not in recorded or key not in data_config:
            continue
        value, built = data_config[key], recorded[key]
        nsp_on_single_segments = key == "next_sentence" and value and not built
        if value != built and (value != defaults[key].default or nsp_on_single_segments):
            raise ValueError(
                f"data.dir={os.fspath(data_dir)} holds data prepared with {key}={built!r} (its "
                f"stats.json), but config.data.{key}={value!r}; without data.corpus the data "
                f"is used as it is. Prepare data with that option (`prepare --{key}=...`, or set "
                "data.corpus to build it), or drop the override."
            )


def _read_stats(data_dir: str | os.PathLike) -> dict | None:
    """The stats.json of `data_dir` (local or gs://), None if it has none."""
    from tensorflow.io import gfile  # noqa: PLC0415 (heavy: only runs reading a data.dir)

    stats_file = os.path.join(os.fspath(data_dir), "stats.json")
    if not gfile.exists(stats_file) or gfile.isdir(stats_file):
        return None
    with gfile.GFile(stats_file) as f:
        return json.loads(f.read())


def _define_flags() -> None:
    # Defined only when run as a script: importing this module (train.py does) must not add
    # flags that could clash with the importing program's own.
    d = flags
    d.DEFINE_string("corpus", "sample:enwiki", "sample:<name>, tfds:<name>, or a corpus file.")
    d.DEFINE_string("output_dir", None, "Folder to create.", required=True)
    d.DEFINE_integer("vocab_size", 8000, "WordPiece vocab size to train.")
    d.DEFINE_string("vocab_file", None, "Use this vocab.txt instead of training one.")
    d.DEFINE_boolean("lowercase", True, "Lowercase and strip accents (an uncased model).")
    d.DEFINE_integer("max_seq_length", 128, "Tokens per instance, [CLS]/[SEP] included.")
    d.DEFINE_integer("max_predictions_per_seq", 20, "Cap on masked LM predictions.")
    d.DEFINE_float("masked_lm_prob", 0.15, "Share of tokens to predict.")
    d.DEFINE_string("masking_split", "80/10/10", "MASK/SAME/RND percentages (paper Table 8).")
    d.DEFINE_enum("whole_word_mask", "none", list(masking.WHOLE_WORD_MODES),
                  "Mask whole words: 'wordpiece' (## pieces) or 'segmented' (space-separated "
                  "words of a pre-segmented corpus, e.g. sample:peoples_daily).")  # fmt: skip
    d.DEFINE_boolean("next_sentence", True, "Sentence pairs + NSP; false: packed single segments.")
    d.DEFINE_boolean("dynamic_masking", False, "Write unmasked records (mask in the pipeline).")
    d.DEFINE_float("short_seq_prob", 0.1, "Chance that a document gets a short target length.")
    d.DEFINE_integer("dupe_factor", 5, "Passes over the training corpus, new masks each time.")
    d.DEFINE_float("eval_fraction", 0.05, "Share of documents (the last ones) held out for eval.")
    d.DEFINE_integer("num_train_files", 4, "Training TFRecord files (= shards).")
    d.DEFINE_integer("seed", 12345, "Seed of all randomness.")
    d.DEFINE_integer("num_workers", 0, "Worker processes (0: one per core); output unchanged.")
    d.DEFINE_integer("chunk_chars", streaming.DEFAULT_CHUNK_CHARS, "Characters per chunk.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}; use --flag=value.")
    f = flags.FLAGS
    prepare(
        f.corpus, f.output_dir, vocab_size=f.vocab_size, vocab_file=f.vocab_file,
        lowercase=f.lowercase, max_seq_length=f.max_seq_length,
        max_predictions_per_seq=f.max_predictions_per_seq, masked_lm_prob=f.masked_lm_prob,
        short_seq_prob=f.short_seq_prob, dupe_factor=f.dupe_factor, eval_fraction=f.eval_fraction,
        num_train_files=f.num_train_files, seed=f.seed, masking_split=f.masking_split,
        whole_word_mask=f.whole_word_mask, next_sentence=f.next_sentence,
        dynamic_masking=f.dynamic_masking, num_workers=f.num_workers, chunk_chars=f.chunk_chars,
    )  # fmt: skip


if __name__ == "__main__":
    _define_flags()
    app.run(main)
