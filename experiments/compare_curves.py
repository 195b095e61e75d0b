r"""Side by side: one metric of several runs at the steps they all logged, as a Markdown table.

    python experiments/compare_curves.py --runs=runs/bf16/float32,runs/bf16/bfloat16 --key=loss
    python experiments/compare_curves.py --runs=A,B --split=eval --key=mlm_perplexity

Reads each workdir's metrics.jsonl (the rows of `--split`). With two runs, also prints the
largest absolute and relative difference between them, so that "the bfloat16 curve tracks the
float32 one" (or any other lever's) is a number, not a look at a plot. Non-finite values (a
diverged run) are listed by step, and the largest difference is over the steps where both runs
are finite.
"""

from __future__ import annotations

import math
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
    # A diverged run (nan/inf) is the largest difference there is; a max over it would hide it.
    for name, c in zip(names, curves, strict=True):
        bad = [f"{s} ({c[s]})" for s in steps if not math.isfinite(c[s])]
        if bad:
            lines.append(f"\nNON-FINITE {key} of {name} at steps {', '.join(bad)}.")
    if len(curves) == 2:
        lines.append("\n" + _largest_difference(curves, names, steps))
    return "\n".join(lines)


def _largest_difference(curves: list[dict[int, float]], names: list[str], steps: list[int]) -> str:
    """max |b - a| over the steps where both are finite, absolute and relative to a."""
    a, b = curves
    finite = [s for s in steps if math.isfinite(a[s]) and math.isfinite(b[s])]
    if not finite:
        return f"No step where both {names[0]} and {names[1]} are finite: nothing to compare."
    diff = {s: abs(b[s] - a[s]) for s in finite}
    of = "" if len(finite) == len(steps) else f" (of {len(steps)}; the others are not finite)"
    line = f"max |{names[1]} - {names[0]}| over {len(finite)} steps{of}: {max(diff.values()):.4f}"
    rel = [diff[s] / abs(a[s]) for s in finite if a[s]]
    if not rel:  # e.g. an accuracy that stayed at 0
        return line + f" ({names[0]} is 0 at each of them: no relative difference)"
    where = "" if len(rel) == len(finite) else " where it is not 0"
    return line + f" ({100 * max(rel):.2f}% of the reference{where})"


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
