r"""What sequence packing buys on real pre-training data: our step on unpacked and packed batches
of the same TFRecords, timed in one process (A B A B; the faster of each kind is kept).

    python experiments/packing_benchmark.py --data=data/enwiki_128 --size=mini --batch=32

--data is a directory `prepare` wrote (vocab.txt, train-*.tfrecord); its training files are
packed once into packed<K>/ beside them (as --config.data.pack_sequences=K does). Prints one
JSON line: token fill of the rows and instances per row (over the whole files), the median step
seconds of each, and from them instances/s and real (non-padding) tokens/s of both, and the
ratio. Packed rows hold more instances, but their attention mask is [S, S] per row instead of
[S], so the step time is measured, not assumed equal.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("data", "data/enwiki_128", "A directory written by bert_jax.data.prepare.")
    flags.DEFINE_string("size", "mini", "tiny | mini | small | medium | base | large.")
    flags.DEFINE_integer("batch", 32, "Rows per step (both ways).")
    flags.DEFINE_integer("max_per_row", 3, "Most instances per packed row.")
    flags.DEFINE_integer("steps", 8, "Timed steps per measurement (the median is kept).")
    flags.DEFINE_integer("batches", 4, "Distinct batches of each kind cycled through.")


def real_batches(pattern: str, seq: int, pred: int, batch: int, count: int) -> list[dict]:
    from bert_jax.data import pipeline  # noqa: PLC0415

    ds = pipeline.pretraining_dataset(
        pattern, batch_size=batch, max_seq_length=seq, max_predictions_per_seq=pred,
        training=True, shuffle_buffer=1000,
    )  # fmt: skip
    batches = pipeline.as_numpy(ds)
    return [next(batches) for _ in range(count)]


def main(argv: list[str]) -> None:
    del argv
    from bert_jax import host_memory  # noqa: PLC0415

    host_memory.keep_freed_memory()  # as bert_jax.main and benchmark.py run (before JAX starts)
    import benchmark  # noqa: PLC0415

    from bert_jax import inputs  # noqa: PLC0415
    from bert_jax.data import packing, pipeline  # noqa: PLC0415

    plain_glob = os.path.join(FLAGS.data, "train-*.tfrecord")
    found = pipeline.record_features(pipeline.list_files(plain_glob)[0])
    seq, pred = found["input_ids"], found["masked_lm_positions"]
    packed_glob = packing.pack_pattern(plain_glob, FLAGS.max_per_row)
    stats = json.loads(pathlib.Path(packed_glob).parent.joinpath("stats.json").read_text())
    vocab = inputs.count_vocab(os.path.join(FLAGS.data, "vocab.txt"))
    config, _ = benchmark.bert_config(FLAGS.size, vocab, seq)
    kinds = {
        "unpacked": real_batches(plain_glob, seq, pred, FLAGS.batch, FLAGS.batches),
        "packed": real_batches(packed_glob, seq, pred, FLAGS.batch, FLAGS.batches),
    }
    step_s = {kind: [] for kind in kinds}
    for _ in range(2):  # A B A B: drift of a shared machine hits both
        for kind, batches in kinds.items():
            step_s[kind].append(benchmark.our_step(config, batches).measure(FLAGS.steps)["step_s"])
    result = {
        "data": FLAGS.data, "size": FLAGS.size, "seq": seq, "batch": FLAGS.batch,
        "max_per_row": FLAGS.max_per_row,
        "token_fill_unpacked": round(stats["token_fill_unpacked"], 4),
        "token_fill_packed": round(stats["token_fill_packed"], 4),
        "instances_per_row": round(stats["instances_per_row"], 4),
    }  # fmt: skip
    # Content per row from the whole files (stats.json), not from the few timed batches.
    per_row = {
        "unpacked": (1.0, stats["token_fill_unpacked"]),
        "packed": (stats["instances_per_row"], stats["token_fill_packed"]),
    }
    for kind, (instances, fill) in per_row.items():
        best = min(step_s[kind])
        result[f"{kind}_step_s"] = round(best, 4)
        result[f"{kind}_instances_per_s"] = round(FLAGS.batch * instances / best, 2)
        result[f"{kind}_real_tokens_per_s"] = round(FLAGS.batch * seq * fill / best, 1)
    result["speedup_instances_per_s"] = round(
        result["packed_instances_per_s"] / result["unpacked_instances_per_s"], 3
    )
    print(json.dumps(result))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
