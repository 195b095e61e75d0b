r"""Pre-training step time against sequence length and model size, beside the FLOP count.

    python experiments/scaling.py --sizes=tiny,mini,small --seqs=128,256,512 \
        --output=runs/scaling.jsonl --table=docs/benchmarks.md --plot=docs/scaling.png
    python experiments/scaling.py --set=bf16_matmul=true,bf16_attention=true,dropout_rng=hash

Every point trains the same number of tokens per step (`--tokens`, so batch = tokens / seq) with
experiments/benchmark.py's step (MLM at `common.max_predictions(seq)` positions per sequence +
NSP, AdamW), and reports the median step time with the model FLOPs of DESIGN.md's formula. If
time followed the FLOPs, "time / FLOP ratio" would read 1.0 in every row: each row's step time
and FLOPs are divided by those of the row's baseline (the same size at the shortest length, and
the smallest size at the same length), so a ratio above 1 is time the FLOP count does not explain
(the attention's S^2 element-wise work, the vocabulary, fixed per-step costs).
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import benchmark  # noqa: E402

FLAGS = flags.FLAGS
TABLE_BEGIN, TABLE_END = "<!-- scaling table: begin -->", "<!-- scaling table: end -->"


def _define_flags() -> None:
    flags.DEFINE_list("sizes", ["tiny", "mini", "small"], "Model sizes (configs/common.py).")
    flags.DEFINE_list("seqs", ["128", "256", "512"], "Sequence lengths.")
    flags.DEFINE_integer("tokens", 4096, "Tokens per step: batch = tokens / seq.")
    flags.DEFINE_integer("vocab", 30522, "Vocabulary size.")
    flags.DEFINE_integer("steps", 5, "Timed steps per point (after compilation); the median.")
    flags.DEFINE_list("set", [], "Model config fields, e.g. --set=bf16_matmul=true.")
    flags.DEFINE_bool("keep_freed_memory", True, "As experiments/benchmark.py.")
    flags.DEFINE_string("output", "", "Append one JSON line per point to this file.")
    flags.DEFINE_string("table", "", "Rewrite the scaling table in this Markdown file.")
    flags.DEFINE_string("plot", "", "Write a figure of step time vs length and vs FLOPs here.")


def measure(size: str, seq: int, *, tokens: int, vocab: int, steps: int, sets) -> dict:
    """One point: the median step time of our pre-training step and its model FLOPs."""
    import numpy as np  # noqa: PLC0415

    from configs import common  # noqa: PLC0415

    batch, preds = tokens // seq, common.max_predictions(seq)
    config, fields = benchmark.bert_config(size, vocab, seq, sets=sets)
    rng = np.random.default_rng(0)
    batches = [benchmark.random_batch(rng, config.vocab_size, seq, batch, preds) for _ in range(2)]
    timing = benchmark.our_step(config, batches).measure(steps)
    return {
        "size": size, "seq": seq, "batch": batch, "options": fields,
        "gflop_per_step": round(benchmark.flops_per_sequence(config, seq, preds) * batch / 1e9, 2),
        "step_s": round(timing["step_s"], 4), "compile_s": round(timing["compile_s"], 1),
    }  # fmt: skip


def with_ratios(points: list[dict]) -> list[dict]:
    """Each point with (time ratio) / (FLOP ratio) against the same size's shortest length and
    the smallest size at the same length (1.0: time grows exactly with the FLOPs)."""

    def ratio(p, base):
        return round(
            (p["step_s"] / base["step_s"]) / (p["gflop_per_step"] / base["gflop_per_step"]), 3
        )

    out = []
    for p in points:
        same_size = min((q for q in points if q["size"] == p["size"]), key=lambda q: q["seq"])
        same_seq = min(
            (q for q in points if q["seq"] == p["seq"]), key=lambda q: q["gflop_per_step"]
        )
        out.append({**p, "vs_shorter": ratio(p, same_size), "vs_smaller": ratio(p, same_seq)})
    return out


def markdown_table(points: list[dict], peak_tflops: float) -> str:
    lines = [
        "| size | seq | batch | GFLOP/step | step s | TFLOP/s | MFU | time / FLOP ratio vs "
        "shortest length | vs smallest size | compile s |",
        "|" + "---|" * 10,
    ]
    for p in with_ratios(points):
        tflops = p["gflop_per_step"] / p["step_s"] / 1e3
        lines.append(
            f"| {p['size']} | {p['seq']} | {p['batch']} | {p['gflop_per_step']} | {p['step_s']} "
            f"| {tflops:.3f} | {tflops / peak_tflops:.3f} | {p['vs_shorter']} | {p['vs_smaller']} "
            f"| {p['compile_s']} |"
        )
    return "\n".join(lines)


def plot(points: list[dict], path: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib import ticker  # noqa: PLC0415

    fig, (by_seq, by_flops) = plt.subplots(1, 2, figsize=(10, 4))
    for size in dict.fromkeys(p["size"] for p in points):
        pts = sorted((p for p in points if p["size"] == size), key=lambda p: p["seq"])
        by_seq.plot([p["seq"] for p in pts], [p["step_s"] for p in pts], "o-", label=size)
        by_flops.plot(
            [p["gflop_per_step"] for p in pts], [p["step_s"] for p in pts], "o", label=size
        )
    slowest = max(points, key=lambda p: p["step_s"] / p["gflop_per_step"])
    fastest = min(points, key=lambda p: p["step_s"] / p["gflop_per_step"])
    bottom, top = (f(p["gflop_per_step"] for p in points) for f in (min, max))
    for p, style in ((fastest, "k--"), (slowest, "k:")):
        rate = p["step_s"] / p["gflop_per_step"]
        by_flops.plot([bottom, top], [rate * bottom, rate * top], style, lw=0.8)
    seqs = sorted({p["seq"] for p in points})
    by_seq.set(xlabel="sequence length (same tokens per step)", ylabel="step s", xscale="log",
               yscale="log", xticks=seqs, xticklabels=[str(s) for s in seqs])  # fmt: skip
    by_seq.xaxis.set_minor_locator(ticker.NullLocator())
    by_flops.set(xlabel="model GFLOP per step", xscale="log", yscale="log",
                 ylabel="step s (lines: fastest and slowest s per GFLOP)")  # fmt: skip
    by_seq.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str]) -> None:
    del argv
    seqs = [int(s) for s in FLAGS.seqs]
    for seq in seqs:
        if FLAGS.tokens % seq:
            raise app.UsageError(f"--tokens={FLAGS.tokens} is not a multiple of --seqs {seq}.")
    from bert_jax import host_memory  # noqa: PLC0415

    if FLAGS.keep_freed_memory:
        host_memory.keep_freed_memory()
    for size in FLAGS.sizes:  # a typo fails here, before any point is measured
        try:
            benchmark.bert_config(size, FLAGS.vocab, 128, sets=FLAGS.set)
        except ValueError as e:
            raise app.UsageError(f"--sizes / --set: {e}") from None
    import jax  # noqa: PLC0415

    # MFU against the float32 matmul peak on CPU (the yardstick, whatever the step's
    # matmuls run in), the bf16 peak on accelerators; measured before and after, the higher kept.
    peak_dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    peak = benchmark.matmul_peak(peak_dtype)
    points = []
    for size in FLAGS.sizes:
        for seq in seqs:
            p = measure(size, seq, tokens=FLAGS.tokens, vocab=FLAGS.vocab, steps=FLAGS.steps,
                        sets=FLAGS.set)  # fmt: skip
            print(json.dumps(p), flush=True)
            points.append(p)
            if FLAGS.output:
                with open(FLAGS.output, "a") as f:
                    f.write(json.dumps(p) + "\n")
    peak = max(peak, benchmark.matmul_peak(peak_dtype))
    table = markdown_table(points, peak / 1e12)
    print(f"{peak_dtype} matmul peak {peak / 1e12:.3f} TFLOP/s\n{table}")
    if FLAGS.table:
        benchmark.replace_block(FLAGS.table, TABLE_BEGIN, TABLE_END, table)
    if FLAGS.plot:
        plot(points, FLAGS.plot)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
