"""Corpus -> WordPiece vocab -> pre-training TFRecords, in one idempotent step.

    python -m bert_jax.data.prepare --corpus=sample:enwiki --output_dir=data/enwiki_128

writes into output_dir: vocab.txt, train-0000K-of-0000N.tfrecord, eval.tfrecord (from held-out
documents, so eval text is unseen) and stats.json. Re-running with the same arguments returns at
once; the output appears all at once (built in a temporary folder, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import time

from absl import app, flags

from bert_jax import tokenization
from bert_jax.data import corpus as corpus_lib
from bert_jax.data import pretraining

_VERSION = 1  # bump when the output for the same arguments changes; forces a rebuild


def _file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


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
) -> dict:
    """Builds (or finds already built) the pre-training data of `corpus`; returns stats.json."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction={eval_fraction} must be in [0, 1).")
    if num_train_files < 1:
        raise ValueError(f"num_train_files={num_train_files} must be at least 1.")
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
    }
    out = pathlib.Path(output_dir)
    stats_file = out / "stats.json"
    if stats_file.exists():
        stats = json.loads(stats_file.read_text())
        if stats.get("args") == args:
            print(f"{out}: already prepared ({stats['summary']}).")
            return stats
        differ = {k: (stats.get("args", {}).get(k), v) for k, v in args.items()}
        differ = {k: v for k, v in differ.items() if v[0] != v[1]}
        raise ValueError(
            f"{out} holds data prepared with other arguments (name: (found, requested)) "
            f"{differ}. Delete {out} or choose another output_dir."
        )
    if out.exists() and any(out.iterdir()):
        raise ValueError(
            f"{out} is not empty and has no stats.json, so it is not data made by prepare(); "
            "choose an empty or new output_dir."
        )

    start = time.time()
    documents = corpus_lib.read_documents(corpus)
    # At least 2 eval documents: a random next sentence must come from another document.
    n_eval = 0 if eval_fraction == 0 else max(2, round(len(documents) * eval_fraction))
    if len(documents) - n_eval < 2:
        raise ValueError(
            f"Corpus {corpus!r} has {len(documents)} documents; {n_eval} go to eval and at least "
            "2 must remain for training. Use a bigger corpus or eval_fraction=0."
        )
    train_docs, eval_docs = (
        documents[: len(documents) - n_eval],
        documents[len(documents) - n_eval :],
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        vocab_path = tmp / "vocab.txt"
        if vocab_file:
            shutil.copyfile(vocab_file, vocab_path)
        else:  # trained on training documents only, so eval text stays unseen
            tokenization.train_wordpiece(train_docs, vocab_size, vocab_path, lowercase=lowercase)
        tokenizer = tokenization.load_tokenizer(vocab_path, lowercase=lowercase)
        common = {
            "max_seq_length": max_seq_length,
            "max_predictions_per_seq": max_predictions_per_seq,
            "masked_lm_prob": masked_lm_prob,
            "short_seq_prob": short_seq_prob,
        }
        train_files = [
            f"train-{i:05d}-of-{num_train_files:05d}.tfrecord" for i in range(num_train_files)
        ]
        train_stats = pretraining.create_pretraining_data(
            train_docs, tokenizer, [tmp / f for f in train_files], dupe_factor=dupe_factor,
            seed=seed, **common,
        )  # fmt: skip
        eval_stats = None
        if eval_docs:
            # One pass: eval needs unseen text, not several maskings of it.
            eval_stats = pretraining.create_pretraining_data(
                eval_docs, tokenizer, [tmp / "eval.tfrecord"], dupe_factor=1, seed=seed + 1,
                **common,
            )  # fmt: skip
        corpus_counts = corpus_lib.corpus_stats(documents)
        instances = train_stats["instances"] + (eval_stats["instances"] if eval_stats else 0)
        seconds = time.time() - start
        stats = {
            "args": args,
            "summary": (
                f"{corpus_counts['documents']} documents, {corpus_counts['sentences']} "
                f"sentences, {instances} instances, vocab size {tokenizer.get_vocab_size()}, "
                f"{seconds:.1f} s"
            ),
            "corpus": corpus_counts,
            "vocab_size": tokenizer.get_vocab_size(),
            "train_files": train_files,
            "eval_file": "eval.tfrecord" if eval_stats else None,
            "train": train_stats,
            "eval": eval_stats,
            "seconds": seconds,
        }
        # stats.json is written last: its presence marks a complete output.
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{out}: prepared {stats['summary']}.")
    return stats


def _define_flags() -> None:
    # Defined only when run as a script: importing this module (train.py does) must not add
    # flags that could clash with the importing program's own.
    d = flags
    d.DEFINE_string("corpus", "sample:enwiki", "sample:<name> or a corpus file path.")
    d.DEFINE_string("output_dir", None, "Folder to create.", required=True)
    d.DEFINE_integer("vocab_size", 8000, "WordPiece vocab size to train.")
    d.DEFINE_string("vocab_file", None, "Use this vocab.txt instead of training one.")
    d.DEFINE_boolean("lowercase", True, "Lowercase and strip accents (an uncased model).")
    d.DEFINE_integer("max_seq_length", 128, "Tokens per instance, [CLS]/[SEP] included.")
    d.DEFINE_integer("max_predictions_per_seq", 20, "Cap on masked LM predictions.")
    d.DEFINE_float("masked_lm_prob", 0.15, "Share of tokens to predict.")
    d.DEFINE_float("short_seq_prob", 0.1, "Chance that a document gets a short target length.")
    d.DEFINE_integer("dupe_factor", 5, "Passes over the training corpus, new masks each time.")
    d.DEFINE_float("eval_fraction", 0.05, "Share of documents (the last ones) held out for eval.")
    d.DEFINE_integer("num_train_files", 4, "Training TFRecord files (round-robin).")
    d.DEFINE_integer("seed", 12345, "Seed of all randomness.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}; use --flag=value.")
    f = flags.FLAGS
    prepare(
        f.corpus,
        f.output_dir,
        vocab_size=f.vocab_size,
        vocab_file=f.vocab_file,
        lowercase=f.lowercase,
        max_seq_length=f.max_seq_length,
        max_predictions_per_seq=f.max_predictions_per_seq,
        masked_lm_prob=f.masked_lm_prob,
        short_seq_prob=f.short_seq_prob,
        dupe_factor=f.dupe_factor,
        eval_fraction=f.eval_fraction,
        num_train_files=f.num_train_files,
        seed=f.seed,
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
