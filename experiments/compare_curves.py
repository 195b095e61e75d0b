r"""Side by side: one metric of several runs at the steps they all logged, as a Markdown table.

    python experiments/compare_curves.py --runs=runs/bf16/float32,runs/bf16/bfloat16 --key=loss
    python experiments/compare_curves.py --runs=A,B --split=eval --key=mlm_perplexity

Reads each workdir's metrics.jsonl (the rows of `--split`). With two runs, also prints the
largest absolute and relative difference between them, so that "the bfloat16 curve tracks the
float32 one" (or any other lever's) is a number, not a look at a plot.
"""

from __future__ import annotations

import pathlib
import sys

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from paper_tables import read_metrics  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_list("runs", [], "Workdirs (two or more), the first is the reference.")
    flags.DEFINE_string("key", "loss", "Metric to compare (a key of metrics.jsonl).")
    flags.DEFINE_string("split", "train", "Rows of this split: train | eval.")


def curve(workdir: str, split: str, key: str) -> dict[int, float]:
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is {workdir!r} a run's workdir?")
    # A re-evaluated step keeps its last value.
    rows = read_metrics(path)
    return {int(r["step"]): float(r[key]) for r in rows if r.get("split") == split and key in r}


def compare(curves: list[dict[int, float]], names: list[str], key: str) -> str:
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    if not steps:
        raise ValueError(f"the runs share no step with {key!r}; check --split and --key.")
    lines = [f"| step | {' | '.join(names)} |", "|---:" * (len(names) + 1) + "|"]
    lines += [f"| {s} | " + " | ".join(f"{c[s]:.4f}" for c in curves) + " |" for s in steps]
    if len(curves) == 2:
        diffs = [abs(curves[1][s] - curves[0][s]) for s in steps]
        rel = max(d / abs(curves[0][s]) for d, s in zip(diffs, steps, strict=True) if curves[0][s])
        lines.append(
            f"\nmax |{names[1]} - {names[0]}| over {len(steps)} steps: {max(diffs):.4f} "
            f"({100 * rel:.2f}% of the reference)"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    if len(FLAGS.runs) < 2:
        raise app.UsageError("--runs needs at least two workdirs, separated by commas.")
    curves = [curve(run, FLAGS.split, FLAGS.key) for run in FLAGS.runs]
    names = [pathlib.Path(run).name for run in FLAGS.runs]
    print(f"{FLAGS.split} {FLAGS.key}\n")
    print(compare(curves, names, FLAGS.key))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
