"""Runs a fine-tuning grid x seeds (config.sweep) and summarises it: best point on dev, mean +- std.

Each (batch size, learning rate, epochs) point and seed is one `finetune.finetune` run in
`workdir/bs<B>_lr<LR>_ep<E>/seed<S>`, sharing one featurized dataset. A finished run (its
results.json exists) is not run again, so rerunning the command after a crash continues.
The summary (workdir/summary.json and a printed table) ranks points by the mean over seeds of the
task's dev metric, as the paper selects the best fine-tuning learning rate on dev;
workdir/results.json holds the best point's metrics (means over seeds), its task and selection
metric, in the layout of a single run's results.json, so a sweep job (configs/sweeps/) can fill
a table cell ("dev.accuracy", "dev.{metric}") with a grid's best. Both files are written
atomically.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

from bert_jax import finetune, parallel
from bert_jax.model import check_attention_backend


def points(config: ml_collections.ConfigDict) -> list[tuple[str, dict[str, Any]]]:
    """(directory name, overrides) of every grid point; an empty sweep list means the single
    value already in the config."""
    s, t = config.sweep, config.train
    grid = itertools.product(
        s.batch_size or (t.batch_size,),
        s.learning_rate or (config.optimizer.learning_rate,),
        s.num_epochs or (t.num_epochs,),
    )
    return [
        (
            f"bs{b}_lr{lr:g}_ep{e}",
            {"train.batch_size": b, "optimizer.learning_rate": lr, "train.num_epochs": e},
        )
        for b, lr, e in grid
    ]


def with_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]):
    out = ml_collections.ConfigDict(config.to_dict())
    for dotted, value in overrides.items():
        section, field = dotted.split(".")
        out[section][field] = value
    return out


def run(
    config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every point x seed, then the summary. A single point and seed runs in `workdir` itself."""
    grid = points(config)
    seeds = tuple(config.sweep.seeds) or (config.train.seed,)
    # Before reading data:
    if "://" in workdir:
        raise ValueError(
            f"workdir={workdir}: fine-tuning writes its workdir with local file operations; give "
            "a local or mounted path (NFS, gcsfuse). Pre-training writes to gs:// directly."
        )
    parallel.compiler_options(config.train.get("compiler_options", ""))
    check_attention_backend(config.model.get("attention", "einsum"))
    ready = finetune.setup(config, log)
    single = len(grid) == 1 and len(seeds) == 1
    runs: dict[str, dict[int, dict]] = {}
    stopped = None
    for name, overrides in grid:
        for seed in seeds:
            point = with_overrides(config, {**overrides, "train.seed": seed})
            where = workdir if single else os.path.join(workdir, name, f"seed{seed}")
            if not single:
                log(f"--- {name} seed {seed}")
            result = finetune.finetune(point, where, ready, log)
            if "stopped_at_step" in result:
                stopped = result  # train.stop_at_step: finished later, without it
            else:
                runs.setdefault(name, {})[seed] = result
    if stopped is not None:
        return stopped
    summary = summarise(runs, ready.task.metric)
    # The best dev model of the whole sweep: the best point's best seed.
    point = summary["points"][summary["best_point"]]
    seed = point["seeds"][0] if point["best_seed"] is None else point["best_seed"]
    run_dir = workdir if single else os.path.join(workdir, summary["best_point"], f"seed{seed}")
    summary["best_model"] = os.path.join(run_dir, "best")
    if not single:
        os.makedirs(workdir, exist_ok=True)
        finetune.write_json(os.path.join(workdir, "summary.json"), summary)
        # The grid's result, shaped like one run's results.json (what sweep tables read): the
        # best point's metrics, each the mean over its seeds.
        results = best_point_results(summary["best_point"], runs)
        finetune.write_json(os.path.join(workdir, "results.json"), results)
        log(format_summary(summary))
    return summary


def best_point_results(best: str, runs: dict[str, dict[int, dict]]) -> dict[str, Any]:
    """The best point's results in the layout of one run's results.json (finetune.finetune):
    "task", "metric" (the selection metric: sweep cells read "dev.{metric}"), "select", and per
    evaluated split ("dev", "test", ...) the mean over its seeds of each numeric metric; plus
    "best_point" and "seeds". Per-run fields (history, epoch, train_seconds) stay in each run's
    own results.json."""
    by_seed = [runs[best][s] for s in sorted(runs[best])]
    first = by_seed[0]
    # The evaluated splits: the dicts of metrics (history is a list), in every seed's results.
    splits = [k for k, v in first.items() if isinstance(v, dict) and all(k in r for r in by_seed)]
    out: dict[str, Any] = {
        "task": first.get("task"),
        "metric": first.get("metric"),
        "select": first.get("select"),
        "best_point": best,
        "seeds": sorted(runs[best]),
    }
    for split in splits:
        metrics = [r[split] for r in by_seed]
        numeric = [
            k
            for k, v in metrics[0].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        out[split] = {k: float(np.mean([m[k] for m in metrics])) for k in numeric}
    return out


def summarise(runs: dict[str, dict[int, dict]], metric: str) -> dict[str, Any]:
    """Per point: the metric of every seed, mean and (sample) std; the best point by mean."""
    table = {}
    for name, by_seed in runs.items():
        values = [by_seed[s]["dev"][metric] for s in sorted(by_seed)]
        table[name] = {
            "seeds": sorted(by_seed),
            metric: values,
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "best_seed": sorted(by_seed)[int(np.nanargmax(values))] if any_finite(values) else None,
        }
    # NaN (e.g. STS-B with a constant prediction) ranks last.
    best = max(table, key=lambda k: -np.inf if np.isnan(table[k]["mean"]) else table[k]["mean"])
    return {"metric": metric, "best_point": best, "points": table}


def any_finite(values) -> bool:
    return bool(np.isfinite(values).any())


def format_summary(summary: dict[str, Any]) -> str:
    metric = summary["metric"]
    rows = [f"{'point':<24} {'dev ' + metric + ' mean +- std':>30}  seeds"]
    for name, p in sorted(summary["points"].items(), key=lambda kv: -kv[1]["mean"]):
        mark = "  <- best" if name == summary["best_point"] else ""
        values = " ".join(f"{v:.4f}" for v in p[metric])
        rows.append(f"{name:<24} {p['mean']:>21.4f} +- {p['std']:.4f}  {values}{mark}")
    return "\n".join(rows)
