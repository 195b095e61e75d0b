r"""Throughput and memory of pre-training data creation (`bert_jax.data.prepare`).

    python experiments/data_benchmark.py --corpus=sample:enwiki --dupe_factor=10 --runs=10
    python experiments/data_benchmark.py --corpus=sample:enwiki --repeat=10   # a 10x corpus

Times `prepare()` from a text-format corpus and a given vocab to finished TFRecords (the work the
original create_pretraining_data.py does), and prints instances/s, tokens/s and peak memory:
ru_maxrss of this process and of its largest child (resource.getrusage), and the peak of the
summed RSS of the whole process tree (the sampler excluded), sampled every 20 ms: what the
machine must hold.
Untimed set-up: converting the corpus to text, repeating it, fetching/training the vocab.
The default vocab is bert-base-uncased's (from the `minilm` sample), as the original tool used.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bert_jax import tokenization  # noqa: E402
from bert_jax.data import corpus, prepare, samples, streaming  # noqa: E402

flags.DEFINE_string("corpus", "sample:enwiki", "sample:<name> or a corpus file.")
flags.DEFINE_integer("repeat", 1, "Use the corpus repeated this many times (a bigger corpus).")
flags.DEFINE_string("vocab_file", "", "vocab.txt; default: bert-base-uncased (minilm sample).")
flags.DEFINE_integer("dupe_factor", 10, "Passes over the corpus (the original's dupe_factor).")
flags.DEFINE_integer("max_seq_length", 128, "Tokens per instance.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Masked LM predictions per instance.")
flags.DEFINE_integer("num_workers", 0, "Worker processes (0: one per core).")
flags.DEFINE_integer("num_train_files", 0, "Output files = shards (0: 4 per worker).")
flags.DEFINE_integer("chunk_chars", streaming.DEFAULT_CHUNK_CHARS, "Characters per chunk.")
flags.DEFINE_string("whole_word_mask", "none", "none | wordpiece | segmented.")
flags.DEFINE_boolean("dynamic_masking", False, "Write unmasked records.")
flags.DEFINE_string("workdir", "", "Where to write (default: a temporary folder, removed).")
flags.DEFINE_integer("runs", 1, "Timed runs; with more than one, a last line gives the median.")
FLAGS = flags.FLAGS


# Peak summed RSS of a process tree, sampled every 20 ms from /proc by a separate process (a
# thread here would make prepare() start its workers with spawn instead of fork, see
# streaming._context). It prints the peak (MB) when its stdin closes.
_SAMPLER = """
import os, sys, threading, time
root, me, peak, page = int(sys.argv[1]), os.getpid(), 0.0, os.sysconf("SC_PAGE_SIZE") / 2**20
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
while not done.is_set():
    parent, rss = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            parent[int(entry)], rss[int(entry)] = int(fields[1]), int(fields[21]) * page
    total = 0.0
    for pid in rss:
        p = pid
        while p > 1 and p != root:
            p = parent.get(p, 0)
        if p == root and pid != me:
            total += rss[pid]
    peak = max(peak, total)
    time.sleep(0.02)
print(round(peak))
"""


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _timed_run(text: pathlib.Path, vocab: str, out: pathlib.Path) -> dict:
    """One timed prepare() of `text` into `out` (emptied first), with its figures."""
    workers = FLAGS.num_workers or os.cpu_count() or 1
    shutil.rmtree(out, ignore_errors=True)
    sampler = subprocess.Popen(
        [sys.executable, "-c", _SAMPLER, str(os.getpid())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    stats = prepare.prepare(
        str(text), out, vocab_file=vocab, max_seq_length=FLAGS.max_seq_length,
        max_predictions_per_seq=FLAGS.max_predictions_per_seq,
        dupe_factor=FLAGS.dupe_factor, eval_fraction=0.0,
        num_train_files=FLAGS.num_train_files or 4 * workers, num_workers=workers,
        chunk_chars=FLAGS.chunk_chars, whole_word_mask=FLAGS.whole_word_mask,
        dynamic_masking=FLAGS.dynamic_masking,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_before
    tree_peak = float(sampler.communicate("")[0])
    train = stats["train"]
    return {
        "corpus": FLAGS.corpus,
        "repeat": FLAGS.repeat,
        "corpus_mb": round(pathlib.Path(text).stat().st_size / 2**20, 1),
        "workers": workers,
        "dupe_factor": FLAGS.dupe_factor,
        "max_seq_length": FLAGS.max_seq_length,
        "instances": train["instances"],
        "tokens": train["tokens"],
        "seconds": round(seconds, 2),
        "instances_per_s": round(train["instances"] / seconds),
        "tokens_per_s": round(train["tokens"] / seconds),
        # CPU time of this process and its workers: the work itself, which other load on
        # the machine does not change (the wall-clock figures above it does).
        "cpu_seconds": round(cpu, 2),
        "instances_per_cpu_s": round(train["instances"] / cpu),
        "peak_rss_self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_largest_child_mb": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        ),
        "peak_rss_tree_mb": round(tree_peak),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str]) -> None:
    del argv
    work = pathlib.Path(FLAGS.workdir or tempfile.mkdtemp(prefix="bert_jax_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        text, _ = corpus.to_text_file(FLAGS.corpus, work / "corpus.txt")
        if FLAGS.repeat > 1:  # copied block by block: this process must not hold it all
            source, text = pathlib.Path(text), work / f"corpus_x{FLAGS.repeat}.txt"
            with open(text, "wb") as out:
                for _ in range(FLAGS.repeat):
                    with open(source, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
                    out.write(b"\n")  # a blank line: the last document of a copy ends
        vocab = FLAGS.vocab_file
        if not vocab:
            try:
                vocab = str(samples.fetch("minilm") / "vocab.txt")
            except RuntimeError:  # offline and not cached: a vocab of the corpus itself
                vocab = str(work / "vocab.txt")
                tokenization.train_wordpiece([str(text)], 30_000, vocab)
        runs = [_timed_run(text, vocab, work / "out") for _ in range(FLAGS.runs)]
        for result in runs:
            print(json.dumps(result))
        if len(runs) > 1:
            rates = sorted(r["instances_per_s"] for r in runs)
            print(json.dumps({
                "runs": len(runs), "median_instances_per_s": rates[len(rates) // 2],
                "best_instances_per_s": rates[-1], "worst_instances_per_s": rates[0],
                "max_peak_rss_tree_mb": max(r["peak_rss_tree_mb"] for r in runs),
            }))  # fmt: skip
    finally:
        if not FLAGS.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
