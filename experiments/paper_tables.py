r"""Tables shaped like the BERT paper's, and plots, from the workdirs of a launched sweep.

    python experiments/paper_tables.py --root=runs/sweeps/table8_mini --out=docs/results/table8_mini

Reads ROOT/sweep.json (written by experiments/launch.py) and each job's results.json,
metrics.jsonl and launch.json (layout: configs/sweeps/common.py). Writes into OUT:
  table.md      "ours (paper)" per cell, ours = mean +- sample std over seeds, best per column bold,
                the table's notes and a status line of the jobs
  table.tex     the same table for LaTeX (booktabs)
  results.json  {"table", "cells": {"row|column": {values, seeds, mean, std, paper}}, "jobs", ...}
  *.png         learning curves; metric (and perplexity) vs model size when the table has row_x
A bad or missing file of one job only blanks that job's cells (with a warning), never the table.
"""

from __future__ import annotations

import json
import math
import pathlib
import statistics
import sys
from typing import Any

from absl import app, flags, logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from configs.sweeps.common import Job, Table, job_from_dict, table_from_dict  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defined only when run as a script, so that tests can import this module."""
    flags.DEFINE_string("root", "", "Workdir of a launched sweep (holds sweep.json).")
    flags.DEFINE_string("out", "", "Where to write table.md, table.tex, results.json and plots.")


STATUSES = ("done", "failed", "running", "not started")
DASH = "–"  # en dash: no value of ours


def load_sweep(root: str | pathlib.Path) -> tuple[str, Table, list[Job]]:
    """The sweep spec string, its table and its jobs, from ROOT/sweep.json."""
    path = pathlib.Path(root) / "sweep.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: --root must be the workdir of a launched sweep; run "
            "experiments/launch.py first (it writes sweep.json)."
        )
    d = json.loads(path.read_text())
    return d["sweep"], table_from_dict(d["table"]), [job_from_dict(j) for j in d["jobs"]]


def _read_json(path: pathlib.Path) -> dict[str, Any] | None:
    """The JSON object in `path`; None (with a warning) when it is malformed, None if absent."""
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        logging.warning("Ignoring malformed %s: %s", path, e)
        return None
    if not isinstance(d, dict):
        logging.warning("Ignoring malformed %s: not a JSON object.", path)
        return None
    return d


def _lookup(results: dict[str, Any], metric: str) -> float | None:
    """The number at dotted path `metric` of `results`, or None when absent or not a number.

    "{metric}" in the path stands for results["metric"], a fine-tuning run's selection metric."""
    if "{metric}" in metric:
        metric = metric.replace("{metric}", str(results.get("metric")))
    value: Any = results
    for key in metric.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    # bool is an int subclass, but True is no metric; inf/nan (a diverged run) have no mean.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def collect(root: str | pathlib.Path) -> dict[str, Any]:
    """Each cell's values over seeds (scaled), mean, std, paper value; each job's status."""
    root = pathlib.Path(root)
    spec, table, jobs = load_sweep(root)
    cells = {
        f"{r}|{c}": {"values": [], "seeds": [], "paper": table.paper.get((r, c)), "planned": 0}
        for r in table.rows
        for c in table.columns
    }
    for job in jobs:  # how many values each cell is meant to average (its seeds)
        for cell in job.cells:
            cells[f"{cell.row}|{cell.column}"]["planned"] += 1
    statuses, wall, commits = {}, 0.0, set()
    for job in jobs:
        launch = _read_json(root / job.name / "launch.json") or {}
        status = statuses[job.name] = launch.get("status", "not started")
        if status == "done":
            wall += launch.get("wall_seconds") or 0.0
        if launch.get("git_commit"):
            commits.add(launch["git_commit"])
        # A failed run's results.json (if any) is from a run that did not finish: not a result.
        results = None if status == "failed" else _read_json(root / job.name / "results.json")
        if results is None:
            continue
        for cell in sorted(job.cells, key=lambda c: c.seed):
            value = _lookup(results, cell.metric)
            if value is None:
                logging.warning(
                    "%s: no number at %r.", root / job.name / "results.json", cell.metric
                )
                continue
            entry = cells[f"{cell.row}|{cell.column}"]
            entry["values"].append(value * cell.scale)
            entry["seeds"].append(cell.seed)
    for entry in cells.values():
        values = entry["values"]
        entry["mean"] = statistics.mean(values) if values else None
        entry["std"] = statistics.stdev(values) if len(values) > 1 else None
    return {
        "table": table.name,
        "sweep": spec,
        "cells": cells,
        "jobs": statuses,
        "wall_seconds_done": wall,
        "git_commits": sorted(commits),
    }


def _best(table: Table, collected: dict[str, Any], column: str) -> float | None:
    """The best mean of ours in `column`, or None when fewer than 2 rows have one."""
    means = [collected["cells"][f"{r}|{column}"]["mean"] for r in table.rows]
    means = [m for m in means if m is not None]
    if len(means) < 2:
        return None
    return min(means) if column in table.lower_is_better else max(means)


def _cells(table: Table, collected: dict[str, Any], pm: str, dash: str, bold) -> list[list[str]]:
    """The formatted "ours (paper)" cells, row by row; `pm`, `dash`, `bold` are the syntax."""
    best = {c: _best(table, collected, c) for c in table.columns}
    lines = []
    for row in table.rows:
        line = []
        for column in table.columns:
            entry, d = collected["cells"][f"{row}|{column}"], table.decimals.get(column, 1)
            if entry["mean"] is None:
                ours = dash
            else:
                ours = f"{entry['mean']:.{d}f}"
                if entry["std"] is not None:
                    ours += f"{pm}{entry['std']:.{d}f}"
                if entry["mean"] == best[column]:
                    ours = bold(ours)
                if len(entry["values"]) < entry["planned"]:  # seeds failed, diverged or unrun
                    ours += f" [{len(entry['values'])}/{entry['planned']}]"
            if entry["paper"] is not None:
                ours += f" ({entry['paper']:.{d}f})"
            line.append(ours)
        lines.append(line)
    return lines


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def status_line(collected: dict[str, Any]) -> str:
    """How many jobs are done/failed/running/not started, their wall time and git commits."""
    statuses = list(collected["jobs"].values())
    kinds = list(STATUSES) + sorted(set(statuses) - set(STATUSES))
    counts = ", ".join(f"{statuses.count(k)} {k}" for k in kinds)
    short = (c[:12] + ("-dirty" if c.endswith("-dirty") else "") for c in collected["git_commits"])
    commits = ", ".join(short) or "none recorded"
    return (
        f"Jobs: {counts} (of {len(statuses)}); wall time of done jobs: "
        f"{_duration(collected['wall_seconds_done'])}; git commits: {commits}."
    )


PARTIAL = (
    "[k/n]: the mean of the k seeds with a result out of the n planned (the others failed, "
    "diverged or have not run)."
)


def markdown(table: Table, collected: dict[str, Any]) -> str:
    """The table as Markdown: title, table, notes as bullets, status line."""

    def esc(s: str) -> str:  # a "|" in a name would split the Markdown cell
        return s.replace("|", "\\|")

    header = [esc(table.row_header)] + [esc(c) for c in table.columns]
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|:---|" + "---:|" * len(table.columns))
    body = _cells(table, collected, " ± ", DASH, lambda s: f"**{s}**")
    for row, cells in zip(table.rows, body, strict=True):
        lines.append("| " + " | ".join([esc(row)] + cells) + " |")
    lines.append("")
    if table.notes:
        lines += [f"- {note}" for note in table.notes] + [""]
    if any(0 < len(e["values"]) < e["planned"] for e in collected["cells"].values()):
        lines += [PARTIAL, ""]
    lines.append(status_line(collected))
    return "\n".join(lines) + "\n"


_TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(s: str) -> str:
    """`s` with LaTeX's special characters escaped."""
    return "".join(_TEX_SPECIALS.get(ch, ch) for ch in s)


def latex(table: Table, collected: dict[str, Any]) -> str:
    """The table as a LaTeX table environment (needs \\usepackage{booktabs})."""
    body = _cells(table, collected, r" $\pm$ ", "--", lambda s: rf"\textbf{{{s}}}")
    header = [tex_escape(table.row_header)] + [tex_escape(c) for c in table.columns]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(table.title)}}}",
        rf"\label{{tab:{tex_escape(table.name)}}}",
        rf"\begin{{tabular}}{{l{'r' * len(table.columns)}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for row, cells in zip(table.rows, body, strict=True):
        lines.append(" & ".join([tex_escape(row)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def read_metrics(path: pathlib.Path) -> list[dict[str, Any]]:
    """The JSON lines of a metrics.jsonl; malformed lines (a run killed mid-write) skipped."""
    if not path.exists():
        return []
    rows, bad = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            bad += bool(line.strip())
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    if bad:
        logging.warning("Skipped %d malformed lines of %s.", bad, path)
    return rows


def _curve(rows: list[dict[str, Any]], split: str, key: str) -> tuple[list, list]:
    points = [(r["step"], r[key]) for r in rows if r.get("split") == split and key in r]
    return [p[0] for p in points], [p[1] for p in points]


def _plot_learning_curves(plt, root: pathlib.Path, jobs: list[str], path: pathlib.Path) -> bool:
    curves = {job: read_metrics(root / job / "metrics.jsonl") for job in jobs}
    # Pre-training runs only (fine-tuning losses are on another scale): their MLM loss.
    train = {j: _curve(r, "train", "mlm_loss") for j, r in curves.items()}
    train = {j: c for j, c in train.items() if c[0]}
    if not train:
        return False
    evals = {j: _curve(r, "eval", "mlm_perplexity") for j, r in curves.items()}
    evals = {j: c for j, c in evals.items() if c[0]}
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(12 if evals else 6, 4), squeeze=False)
    for job, (x, y) in train.items():
        axes[0, 0].plot(x, y, label=job)
    axes[0, 0].set(xlabel="step", ylabel="train MLM loss", title="Pre-training loss")
    axes[0, 0].legend(fontsize="small")
    if evals:
        for job, (x, y) in evals.items():
            axes[0, 1].plot(x, y, marker=".", label=job)
        axes[0, 1].set(xlabel="step", ylabel="eval MLM perplexity", yscale="log", title="Eval")
        axes[0, 1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_vs_size(plt, table: Table, collected: dict, columns: list[str], path, *, log_y) -> bool:
    """Ours (mean, std error bars) and the paper's values vs row_x, one subplot per column."""
    rows = sorted((r for r in table.rows if r in table.row_x), key=lambda r: table.row_x[r])
    if not rows or not columns:
        return False
    fig, axes = plt.subplots(1, len(columns), figsize=(5 * len(columns), 4), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        entries = [(table.row_x[r], collected["cells"][f"{r}|{column}"]) for r in rows]
        ours = [(x, e["mean"], e["std"] or 0.0) for x, e in entries if e["mean"] is not None]
        paper = [(x, e["paper"]) for x, e in entries if e["paper"] is not None]
        if ours:
            xs, means, stds = zip(*ours, strict=True)
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label="ours")
        if paper:
            xs, values = zip(*paper, strict=True)
            ax.plot(xs, values, "--", marker="s", label="paper")
        ax.set(xscale="log", xlabel=table.row_x_label or "size", ylabel=column, title=column)
        if log_y:
            ax.set_yscale("log")
        ax.legend(fontsize="small")
    fig.suptitle(table.title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot(
    root: str | pathlib.Path, table: Table, collected: dict[str, Any], out_dir: str | pathlib.Path
) -> list[str]:
    """Writes the PNG plots that the data allows into `out_dir`; returns their paths."""
    # Imported here: the tables need no matplotlib, and Agg must be chosen before pyplot loads.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root, out_dir = pathlib.Path(root), pathlib.Path(out_dir)
    written = []
    path = out_dir / "learning_curves.png"
    if _plot_learning_curves(plt, root, list(collected["jobs"]), path):
        written.append(str(path))
    if table.row_x:
        path = out_dir / "metric_vs_size.png"
        if _plot_vs_size(plt, table, collected, list(table.columns), path, log_y=False):
            written.append(str(path))
        lower = [c for c in table.columns if c in table.lower_is_better]
        path = out_dir / "perplexity_vs_size.png"
        if _plot_vs_size(plt, table, collected, lower, path, log_y=True):
            written.append(str(path))
    return written


def write(root: str | pathlib.Path, out_dir: str | pathlib.Path) -> dict[str, Any]:
    """Collects the sweep at `root` and writes table.md, table.tex, results.json and plots."""
    out_dir = pathlib.Path(out_dir)
    _, table, _ = load_sweep(root)
    collected = collect(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(markdown(table, collected))
    (out_dir / "table.tex").write_text(latex(table, collected))
    (out_dir / "results.json").write_text(json.dumps(collected, indent=2) + "\n")
    collected["files"] = [str(out_dir / n) for n in ("table.md", "table.tex", "results.json")]
    collected["files"] += plot(root, table, collected, out_dir)
    return collected


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.root or not FLAGS.out:
        raise app.UsageError("Give --root=<sweep workdir> and --out=<folder for the tables>.")
    collected = write(FLAGS.root, FLAGS.out)
    print(pathlib.Path(FLAGS.out, "table.md").read_text())
    print("Wrote:\n  " + "\n  ".join(collected["files"]))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
