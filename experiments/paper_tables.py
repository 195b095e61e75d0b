r"""Tables shaped like the BERT paper's, and plots, from the workdirs of a launched sweep.

    python experiments/paper_tables.py --root=runs/sweeps/table8_mini --out=docs/results/table8_mini

Reads ROOT/sweep.json (written by experiments/launch.py) and each job's results.json,
metrics.jsonl and launch.json (layout: configs/sweeps/common.py). Writes into OUT:
  table.md      "ours (paper)" per cell, best per column bold, the table's notes and a status
                line of the jobs; ours = mean +- sample std over seeds (--aggregate=mean), or the
                best seed (--aggregate=best: the paper's "best of several random restarts on dev")
  table.tex     the same table for LaTeX (booktabs)
  results.json  {"table", "aggregate", "cells": {"row|column": {values, seeds, mean, std, best,
                best_seed, paper, planned}}, "jobs", "done_by_results", ...}
  *.png         learning curves; metric (and perplexity) vs model size when the table has row_x
A bad or missing file of one job only blanks that job's cells (with a warning), never the table.
An average column (Table.averages, e.g. GLUE's "Average") is the mean of the row's cells as shown
(mean over seeds, or best seed), blank and marked while any of them is; a paper row
(Table.paper_rows) prints the paper's numbers, its average the paper's printed one.
A job is done when launch.json says so or when its results.json holds a number for each of its
cells (written at the end of a run; the launcher may have died before recording it).
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
AGGREGATES = ("mean", "best")


def _define_flags() -> None:
    """Defined only when run as a script, so that tests can import this module."""
    flags.DEFINE_string("root", "", "Workdir of a launched sweep (holds sweep.json).")
    flags.DEFINE_string("out", "", "Where to write table.md, table.tex, results.json and plots.")
    flags.DEFINE_enum(
        "aggregate", "mean", AGGREGATES,
        "A cell's value from its seeds: mean (+- sample std) or best (the best seed, as the paper "
        "reports small datasets: best of several random restarts on dev).",
    )  # fmt: skip


STATUSES = ("done", "failed", "running", "not started")
UNKNOWN = "unknown (bad launch.json)"  # a launch.json that is malformed or has no status
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
    statuses, done_by_results, wall, commits = {}, {}, 0.0, set()
    for job in jobs:
        work = root / job.name
        launch = _read_json(work / "launch.json")
        if launch is None:  # absent, or malformed (warned)
            status = UNKNOWN if (work / "launch.json").exists() else "not started"
        else:
            status = launch.get("status", UNKNOWN)
            if status == "done":
                wall += launch.get("wall_seconds") or 0.0
            if launch.get("git_commit"):
                commits.add(launch["git_commit"])
        results = _read_json(work / "results.json")
        values = {c: None if results is None else _lookup(results, c.metric) for c in job.cells}
        # A run writes results.json at its end, so one with every cell's number is done whatever
        # launch.json says (unreadable, or the launcher died before recording the end).
        if status != "done" and results is not None and None not in values.values():
            done_by_results[job.name] = status
            status = "done"
        statuses[job.name] = status
        if status != "done":  # a failed or unfinished run's results.json is no result
            continue
        for cell in sorted(job.cells, key=lambda c: c.seed):
            if values[cell] is None:
                if results is not None:  # (a malformed one was warned about above)
                    logging.warning("%s: no number at %r.", work / "results.json", cell.metric)
                continue
            entry = cells[f"{cell.row}|{cell.column}"]
            entry["values"].append(values[cell] * cell.scale)
            entry["seeds"].append(cell.seed)
    for key, entry in cells.items():
        values = entry["values"]
        entry["mean"] = statistics.mean(values) if values else None
        entry["std"] = statistics.stdev(values) if len(values) > 1 else None
        # The best seed (the paper's "best of several restarts"): lowest where lower is better.
        pick = min if key.split("|", 1)[1] in table.lower_is_better else max
        i = values.index(pick(values)) if values else None
        entry["best"] = None if i is None else values[i]
        entry["best_seed"] = None if i is None else entry["seeds"][i]
    for column, inputs in table.averages.items():
        for row in table.rows:
            if row not in table.paper_rows:  # (a paper row's average is the paper's number)
                entry = cells[f"{row}|{column}"]
                entry |= _average([cells[f"{row}|{c}"] for c in inputs], inputs)
    return {
        "table": table.name,
        "sweep": spec,
        "cells": cells,
        "jobs": statuses,
        # Jobs counted done by their results.json: {name: what launch.json said}.
        "done_by_results": done_by_results,
        "wall_seconds_done": wall,
        "git_commits": sorted(commits),
    }


def _average(entries: list[dict[str, Any]], columns: tuple[str, ...]) -> dict[str, Any]:
    """An average cell from the cells of its `columns` (one row): the mean of their means and
    of their best seeds, None while any of them has no value (never a mean of fewer columns);
    `results` and `planned` sum their seeds, so an average of cells missing seeds says so."""
    missing = [c for c, e in zip(columns, entries, strict=True) if e["mean"] is None]
    return {
        "average_of": list(columns),
        "missing": missing,
        "mean": None if missing else statistics.mean(e["mean"] for e in entries),
        "best": None if missing else statistics.mean(e["best"] for e in entries),
        "results": sum(len(e["values"]) for e in entries),
        "planned": sum(e["planned"] for e in entries),
    }


def _results(entry: dict[str, Any]) -> int:
    """How many of a cell's planned seeds have a value (an average: of all its columns)."""
    return entry["results"] if "average_of" in entry else len(entry["values"])


def _ours(entry: dict[str, Any], aggregate: str) -> float | None:
    """The number a cell shows: the mean over its seeds, or its best seed's value."""
    return entry["mean"] if aggregate == "mean" else entry["best"]


def _best(
    table: Table, collected: dict[str, Any], column: str, aggregate: str
) -> tuple[set[str], bool]:
    """(rows to bold in `column`, whether the pick is provisional): the best among the rows with
    all their seeds, since a cell missing seeds can win on a lucky one; when no row has them all,
    the best of the others, provisional. Nothing is bold when fewer than 2 rows have a value."""
    entries = {r: collected["cells"][f"{r}|{column}"] for r in table.rows}
    ours = {r: _ours(e, aggregate) for r, e in entries.items()}
    ours = {r: v for r, v in ours.items() if v is not None}
    if len(ours) < 2:
        return set(), False
    complete = {r: v for r, v in ours.items() if _results(entries[r]) >= entries[r]["planned"]}
    pool = complete or ours
    best = (min if column in table.lower_is_better else max)(pool.values())
    return {r for r, v in pool.items() if v == best}, not complete


def _check(aggregate: str) -> None:
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r}; use one of {AGGREGATES}.")


def _cells(
    table: Table,
    collected: dict[str, Any],
    aggregate: str,
    *,
    pm: str,
    dash: str,
    bold,
    dagger: str,
) -> list[list[str]]:
    """The formatted "ours (paper)" cells, row by row; `pm`, `dash`, `bold`, `dagger` (marks a
    provisional best) are the syntax."""
    best = {c: _best(table, collected, c, aggregate) for c in table.columns}
    lines = []
    for row in table.rows:
        line = []
        for column in table.columns:
            entry, d = collected["cells"][f"{row}|{column}"], table.decimals.get(column, 1)
            if row in table.paper_rows:  # the paper's number as it is, nothing of ours
                line.append(dash if entry["paper"] is None else f"{entry['paper']:.{d}f}")
                continue
            value = _ours(entry, aggregate)
            if value is None and "average_of" in entry:  # blank until all its columns have one
                n = len(entry["average_of"])
                ours = f"{dash} [{n - len(entry['missing'])}/{n} columns]"
            elif value is None:
                ours = dash
            else:
                ours = f"{value:.{d}f}"
                if aggregate == "mean" and entry["std"] is not None:
                    ours += f"{pm}{entry['std']:.{d}f}"
                rows, provisional = best[column]
                if row in rows:
                    ours = bold(ours) + (dagger if provisional else "")
                if aggregate == "best" and entry["best_seed"] is not None:  # (not an average)
                    ours += f", seed {entry['best_seed']}"
                if _results(entry) < entry["planned"]:  # seeds failed, diverged or unrun
                    ours += f" [{_results(entry)}/{entry['planned']}]"
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
    """How many jobs are done/failed/running/not started, their wall time and git commits, and
    the jobs counted done by their results.json against what launch.json says."""
    statuses = list(collected["jobs"].values())
    kinds = list(STATUSES) + sorted(set(statuses) - set(STATUSES))
    counts = ", ".join(f"{statuses.count(k)} {k}" for k in kinds)
    short = (c[:12] + ("-dirty" if c.endswith("-dirty") else "") for c in collected["git_commits"])
    commits = ", ".join(short) or "none recorded"
    line = (
        f"Jobs: {counts} (of {len(statuses)}); wall time of done jobs: "
        f"{_duration(collected['wall_seconds_done'])}; git commits: {commits}."
    )
    said = {"not started": "no launch.json", UNKNOWN: "bad launch.json"}
    by_results = [
        f"{name} ({said.get(status, f'launch.json: {status}')})"
        for name, status in sorted(collected.get("done_by_results", {}).items())
    ]
    if by_results:
        line += (
            f" Counted done because their results.json holds every cell's number: "
            f"{', '.join(by_results)}."
        )
    return line


LABEL = {
    "mean": "Ours: the mean ± sample std over each cell's seeds.",
    "best": (
        "Ours: each cell's best seed (the paper's best of several random restarts on dev), "
        "not the mean over seeds; the seed follows the value."
    ),
}
TEX_LABEL = {"mean": r"ours: mean $\pm$ std over seeds", "best": "ours: best seed of each cell"}
BOLD = "Bold: the best per column among the cells with all their seeds."
PARTIAL = {
    a: f"[k/n]: the {a} of the k seeds with a result out of the n planned (the others failed, "
    "diverged or have not run)."
    for a in AGGREGATES
}
AVERAGE = (
    "{column}: the mean of the row's {inputs} (each cell as shown: {how}); blank, "
    "{dash} [k/n columns], while only k of its n columns have a value (never a mean of fewer); "
    "its [k/n] counts the seeds of all its columns."
)
AVERAGE_HOW = {"mean": "the mean over its seeds", "best": "its best seed"}
PAPER_ROWS = "Rows {rows}: the paper's numbers (an average as the paper prints it)."
PROVISIONAL = (
    "†: no cell of this column has all its seeds; the bold one is the best of the incomplete "
    "cells, provisional."
)


def markdown(table: Table, collected: dict[str, Any], aggregate: str = "mean") -> str:
    """The table as Markdown: title, what a cell is, table, notes as bullets, status line."""
    _check(aggregate)

    def esc(s: str) -> str:  # a "|" in a name would split the Markdown cell
        return s.replace("|", "\\|")

    header = [esc(table.row_header)] + [esc(c) for c in table.columns]
    lines = [f"### {table.title}", "", f"{LABEL[aggregate]} {BOLD}", ""]
    lines += ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * len(table.columns)]
    body = _cells(
        table, collected, aggregate, pm=" ± ", dash=DASH, bold=lambda s: f"**{s}**", dagger="†"
    )
    for row, cells in zip(table.rows, body, strict=True):
        lines.append("| " + " | ".join([esc(row)] + cells) + " |")
    lines.append("")
    if table.notes:
        lines += [f"- {note}" for note in table.notes] + [""]
    for column, inputs in table.averages.items():
        lines += [
            AVERAGE.format(
                column=esc(column), inputs=", ".join(inputs), how=AVERAGE_HOW[aggregate], dash=DASH
            ),
            "",
        ]
    if table.paper_rows:
        lines += [PAPER_ROWS.format(rows=", ".join(esc(r) for r in table.paper_rows)), ""]
    cells = collected["cells"].values()
    if any(_ours(e, aggregate) is not None and _results(e) < e["planned"] for e in cells):
        lines += [PARTIAL[aggregate], ""]
    if any(_best(table, collected, c, aggregate)[1] for c in table.columns):
        lines += [PROVISIONAL, ""]
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


def latex(table: Table, collected: dict[str, Any], aggregate: str = "mean") -> str:
    """The table as a LaTeX table environment (needs \\usepackage{booktabs})."""
    _check(aggregate)
    body = _cells(
        table, collected, aggregate, pm=r" $\pm$ ", dash="--",
        bold=lambda s: rf"\textbf{{{s}}}", dagger=r"$^\dagger$",
    )  # fmt: skip
    header = [tex_escape(table.row_header)] + [tex_escape(c) for c in table.columns]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(table.title)} ({TEX_LABEL[aggregate]})}}",
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


def write(
    root: str | pathlib.Path, out_dir: str | pathlib.Path, aggregate: str = "mean"
) -> dict[str, Any]:
    """Collects the sweep at `root` and writes table.md, table.tex, results.json and plots."""
    out_dir = pathlib.Path(out_dir)
    _, table, _ = load_sweep(root)
    collected = collect(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(markdown(table, collected, aggregate))
    (out_dir / "table.tex").write_text(latex(table, collected, aggregate))
    collected["aggregate"] = aggregate
    (out_dir / "results.json").write_text(json.dumps(collected, indent=2) + "\n")
    collected["files"] = [str(out_dir / n) for n in ("table.md", "table.tex", "results.json")]
    collected["files"] += plot(root, table, collected, out_dir)
    return collected


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.root or not FLAGS.out:
        raise app.UsageError("Give --root=<sweep workdir> and --out=<folder for the tables>.")
    collected = write(FLAGS.root, FLAGS.out, FLAGS.aggregate)
    print(pathlib.Path(FLAGS.out, "table.md").read_text())
    print("Wrote:\n  " + "\n  ".join(collected["files"]))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
