"""experiments/paper_tables.py: tables, results.json and plots from a fixture sweep workdir."""

import dataclasses
import importlib.util
import json
import logging
import math
import pathlib

import pytest

from configs.sweeps.common import Cell, Job, Sweep, Table, to_dict

_PATH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "paper_tables.py"
_spec = importlib.util.spec_from_file_location("paper_tables", _PATH)
paper_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paper_tables)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BASE = "Base & 50%"  # LaTeX specials in a row name

TABLE = Table(
    name="test_table",
    title="Test table",
    row_header="Model",
    rows=("Tiny", BASE),
    columns=("MNLI", "PPL"),
    paper={("Tiny", "MNLI"): 84.4, ("Tiny", "PPL"): 5.84, (BASE, "MNLI"): 86.6},
    lower_is_better=("PPL",),
    decimals={"PPL": 2},
    notes=("Stand-in tasks.",),
    row_x={"Tiny": 4e6, BASE: 110e6},
    row_x_label="parameters",
)


def _slug(model: str) -> str:
    return model.split(maxsplit=1)[0].lower()


def _mnli(model: str, seed: int) -> Job:
    cell = Cell(row=model, column="MNLI", metric="dev.accuracy", seed=seed)
    return Job(name=f"{_slug(model)}/mnli_seed{seed}", config="f.py", cells=(cell,))


def _pretrain(model: str) -> Job:
    cell = Cell(row=model, column="PPL", metric="end.mlm_perplexity", scale=1.0)
    return Job(name=f"{_slug(model)}/pretrain", config="p.py", cells=(cell,))


# job name -> (launch status or None: never launched, wall seconds, commit, results.json text)
FIXTURE = {
    "tiny/pretrain": ("done", 100.0, "abc123def4567890", {"end": {"mlm_perplexity": 6.1}}),
    "tiny/mnli_seed0": ("done", 50.0, "abc123def4567890", {"dev": {"accuracy": 0.80}}),
    "tiny/mnli_seed1": ("done", 50.0, "abc123def4567890", {"dev": {"accuracy": 0.84}}),
    "base/pretrain": ("done", 200.0, "0123456789abcdef", {"end": {"mlm_perplexity": 4.5}}),
    "base/mnli_seed0": ("failed", None, "abc123def4567890", None),
    "base/mnli_seed1": ("done", 50.0, "abc123def4567890", "{not json"),
    "base/mnli_seed2": ("running", None, "abc123def4567890", None),
    "base/mnli_seed3": (None, None, None, None),
}


@pytest.fixture
def root(tmp_path: pathlib.Path) -> pathlib.Path:
    jobs = [_pretrain("Tiny"), _mnli("Tiny", 0), _mnli("Tiny", 1), _pretrain(BASE)]
    jobs += [_mnli(BASE, s) for s in range(4)]
    sweep = Sweep(name="test", table=TABLE, jobs=tuple(jobs))  # checks the cells fit the table
    root = tmp_path / "sweep"
    root.mkdir()
    sweep_json = {"sweep": "test:profile=mini", "table": to_dict(TABLE), "jobs": to_dict(jobs)}
    (root / "sweep.json").write_text(json.dumps(sweep_json))
    assert [j.name for j in sweep.jobs] == list(FIXTURE)
    for name, (status, wall, commit, results) in FIXTURE.items():
        if status is None:
            continue
        work = root / name
        work.mkdir(parents=True)
        launch = {"command": ["python"], "git_commit": commit, "started": "2024-01-01T00:00:00"}
        launch |= {"finished": None, "wall_seconds": wall, "returncode": None, "status": status}
        (work / "launch.json").write_text(json.dumps(launch | {"host": "test"}))
        if results is not None:
            text = results if isinstance(results, str) else json.dumps(results)
            (work / "results.json").write_text(text)
        if name.endswith("pretrain"):
            lines = [{"step": s, "split": "train", "mlm_loss": 5.0 / s} for s in (1, 2, 3)]
            lines += [{"step": 3, "split": "eval", "mlm_perplexity": 40.0}]
            text = "\n".join(json.dumps(line) for line in lines) + "\n{truncated"
            (work / "metrics.jsonl").write_text(text)
    return root


EXPECTED_MD = """### Test table

Ours: the mean ± sample std over each cell's seeds. \
Bold: the best per column among the cells with all their seeds.

| Model | MNLI | PPL |
|:---|---:|---:|
| Tiny | 82.0 ± 2.8 (84.4) | 6.10 (5.84) |
| Base & 50% | – (86.6) | **4.50** |

- Stand-in tasks.

Jobs: 5 done, 1 failed, 1 running, 1 not started (of 8); wall time of done jobs: 7.5 min; \
git commits: 0123456789ab, abc123def456.
"""

EXPECTED_TEX = r"""\begin{table}[t]
\centering
\caption{Test table (ours: mean $\pm$ std over seeds)}
\label{tab:test\_table}
\begin{tabular}{lrr}
\toprule
Model & MNLI & PPL \\
\midrule
Tiny & 82.0 $\pm$ 2.8 (84.4) & 6.10 (5.84) \\
Base \& 50\% & -- (86.6) & \textbf{4.50} \\
\bottomrule
\end{tabular}
\end{table}
"""


def test_write_tables_results_and_plots(root, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        written = paper_tables.write(root, out)
    # The malformed results.json blanks its cell, with a warning that names the file.
    assert str(root / "base/mnli_seed1/results.json") in caplog.text
    assert (out / "table.md").read_text() == EXPECTED_MD
    assert (out / "table.tex").read_text() == EXPECTED_TEX

    results = json.loads((out / "results.json").read_text())
    assert results["table"] == "test_table"
    tiny = results["cells"]["Tiny|MNLI"]
    assert tiny["values"] == pytest.approx([80.0, 84.0]) and tiny["seeds"] == [0, 1]
    assert tiny["mean"] == pytest.approx(82.0)
    assert tiny["std"] == pytest.approx(2 * math.sqrt(2)) and tiny["paper"] == 84.4
    assert results["cells"]["Tiny|PPL"] == {
        "values": [6.1], "seeds": [0], "mean": 6.1, "std": None, "best": 6.1, "best_seed": 0,
        "paper": 5.84, "planned": 1,
    }  # fmt: skip
    assert results["cells"][f"{BASE}|MNLI"] == {
        "values": [], "seeds": [], "mean": None, "std": None, "best": None, "best_seed": None,
        "paper": 86.6, "planned": 4,
    }  # fmt: skip
    assert results["cells"][f"{BASE}|PPL"]["paper"] is None
    assert results["jobs"] == {
        name: status or "not started" for name, (status, *_) in FIXTURE.items()
    }

    pngs = ["learning_curves.png", "metric_vs_size.png", "perplexity_vs_size.png"]
    assert written["files"][3:] == [str(out / name) for name in pngs]
    for name in pngs:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000, name


def test_bold_marks_best_of_two_or_more_rows(root):
    collected = paper_tables.collect(root)
    base = collected["cells"][f"{BASE}|MNLI"]

    def row_of(model: str) -> str:
        md = paper_tables.markdown(TABLE, collected)
        return next(line for line in md.splitlines() if line.startswith(f"| {model} |"))

    # One row with a value: nothing to compare, nothing bold.
    assert "**" not in row_of("Tiny")
    # Higher is better for MNLI: the higher mean is bold (with its std), the other is not.
    base |= {"values": [70.0], "mean": 70.0}
    assert "| **82.0 ± 2.8** (84.4) |" in row_of("Tiny")
    assert "| 70.0 [1/4] (86.6) |" in row_of(BASE)  # 1 of its 4 seeds has a result
    # A higher mean from 1 of 4 seeds does not beat a cell with all its seeds (it may be a lucky
    # seed): the complete cell stays bold.
    base |= {"values": [90.0], "mean": 90.0}
    assert "| **82.0 ± 2.8** (84.4) |" in row_of("Tiny")
    assert "| 90.0 [1/4] (86.6) |" in row_of(BASE)
    # Lower is better for PPL: 4.50 beats 6.10.
    assert "| **4.50** |" in row_of(BASE)


def test_a_cell_missing_seeds_says_how_many_it_averages(root):
    """A mean over the seeds that survived (a failed or diverged seed leaves no value) says so:
    its k of n planned, and a legend under the table."""
    collected = paper_tables.collect(root)
    assert paper_tables.PARTIAL["mean"] not in paper_tables.markdown(TABLE, collected)
    tiny = collected["cells"]["Tiny|MNLI"]
    tiny |= {"values": [80.0], "seeds": [0], "mean": 80.0, "std": None}
    md = paper_tables.markdown(TABLE, collected)
    assert "| Tiny | 80.0 [1/2] (84.4) | 6.10 (5.84) |" in md and paper_tables.PARTIAL["mean"] in md
    assert r"Tiny & 80.0 [1/2] (84.4) & 6.10 (5.84) \\" in paper_tables.latex(TABLE, collected)


def test_missing_sweep_json_names_path_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="launch.py") as err:
        paper_tables.collect(tmp_path)
    assert str(tmp_path / "sweep.json") in str(err.value)


# A fine-tuning grid launched by experiments/launch.py: finetune_grid's jobs (2 points x 3
# seeds), each workdir with the launch.json of launch.py and the results.json of finetune.py.
def _grid_root(tmp_path, runs, lower_is_better=()) -> pathlib.Path:
    """`runs`: {job name: (launch.json status | "{bad" | None, results.json: accuracy | "{bad"
    | None)}; a job not in `runs` was never started."""
    from configs.sweeps import finetune_grid  # noqa: PLC0415

    sweep = finetune_grid.get_sweep("task=rotten_tomatoes,seeds=3,mini=true")
    table = dataclasses.replace(sweep.table, lower_is_better=lower_is_better)
    root = tmp_path / "grid"
    root.mkdir(parents=True)
    sweep_json = {"sweep": "grid", "table": to_dict(table), "jobs": to_dict(list(sweep.jobs))}
    (root / "sweep.json").write_text(json.dumps(sweep_json))
    for name, (status, accuracy) in runs.items():
        work = root / name
        work.mkdir(parents=True)
        launch = {"command": ["python"], "git_commit": "abc", "host": "h", "started": "t"}
        launch |= {"finished": "t", "wall_seconds": 60.0, "returncode": 0, "status": status}
        if status is not None:
            text = status if status.startswith("{") else json.dumps(launch)
            (work / "launch.json").write_text(text)
        if accuracy is not None:
            results = {"task": "rotten_tomatoes", "metric": "accuracy", "select": "last"}
            results |= {"epoch": 1, "dev": {"accuracy": accuracy, "f1": 0.5}}
            text = accuracy if isinstance(accuracy, str) else json.dumps(results)
            (work / "results.json").write_text(text)
    return root


A, B = "bs32_lr0.0001_ep1", "bs32_lr5e-05_ep1"  # the mini grid's two points
UNKNOWN = "unknown (bad launch.json)"  # the status of a launch.json that cannot be read


def _row(md: str, row: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {row} |"))


def test_a_point_missing_seeds_does_not_win_bold(tmp_path):
    """B's one surviving seed (one failed, one results.json cut mid-write) is higher than A's
    mean over 3 seeds; B's 3-seed mean would have been lower. A, complete, is the best."""
    runs = {f"{A}/seed{s}": ("done", v) for s, v in enumerate((0.86, 0.88, 0.885))}
    runs |= {f"{B}/seed0": ("done", '{"dev": {"accu'), f"{B}/seed1": ("failed", None)}
    runs |= {f"{B}/seed2": ("done", 0.885)}
    collected = paper_tables.collect(_grid_root(tmp_path, runs))
    md = paper_tables.markdown(paper_tables.load_sweep(tmp_path / "grid")[1], collected)
    assert _row(md, A) == f"| {A} | **87.5 ± 1.3** |"
    assert _row(md, B) == f"| {B} | 88.5 [1/3] |"
    assert paper_tables.PROVISIONAL not in md


def test_with_no_complete_point_the_best_is_provisional(tmp_path):
    runs = {f"{A}/seed0": ("done", 0.86), f"{A}/seed1": ("done", 0.87)}
    runs |= {f"{B}/seed0": ("done", 0.80), f"{B}/seed1": ("failed", None)}
    root = _grid_root(tmp_path, runs)
    table, collected = paper_tables.load_sweep(root)[1], paper_tables.collect(root)
    md = paper_tables.markdown(table, collected)
    assert _row(md, A) == f"| {A} | **86.5 ± 0.7**† [2/3] |"
    assert _row(md, B) == f"| {B} | 80.0 [1/3] |"
    assert paper_tables.PROVISIONAL in md
    tex = paper_tables.latex(table, collected)
    assert r"\textbf{86.5 $\pm$ 0.7}$^\dagger$ [2/3] \\" in tex


def test_aggregate_best_shows_each_points_best_seed(tmp_path):
    """--aggregate=best: the paper's "best of several random restarts on dev", labelled so."""
    runs = {f"{A}/seed{s}": ("done", v) for s, v in enumerate((0.86, 0.88, 0.87))}
    runs |= {f"{B}/seed{s}": ("done", v) for s, v in enumerate((0.89, 0.80, 0.81))}
    root = _grid_root(tmp_path, runs)
    written = paper_tables.write(root, tmp_path / "out", aggregate="best")
    md = (tmp_path / "out" / "table.md").read_text()
    assert paper_tables.LABEL["best"] in md and paper_tables.LABEL["mean"] not in md
    # By the mean A (87.0) beats B (83.3); by the best seed B's seed 0 (89.0) beats A's 88.0.
    assert _row(md, A) == f"| {A} | 88.0, seed 1 |"
    assert _row(md, B) == f"| {B} | **89.0**, seed 0 |"
    assert "ours: best seed of each cell" in (tmp_path / "out" / "table.tex").read_text()
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["aggregate"] == "best" and written["aggregate"] == "best"
    assert (saved["cells"][f"{B}|dev"]["best"], saved["cells"][f"{B}|dev"]["best_seed"]) == (89, 0)
    mean_md = paper_tables.markdown(paper_tables.load_sweep(root)[1], paper_tables.collect(root))
    assert _row(mean_md, A) == f"| {A} | **87.0 ± 1.0** |" and paper_tables.LABEL["mean"] in mean_md
    # Where lower is better (perplexity), the best seed is the lowest.
    low = paper_tables.collect(_grid_root(tmp_path / "low", runs, lower_is_better=("dev",)))
    assert (low["cells"][f"{B}|dev"]["best"], low["cells"][f"{B}|dev"]["best_seed"]) == (80, 1)
    with pytest.raises(ValueError, match="aggregate='max'"):
        paper_tables.markdown(paper_tables.load_sweep(root)[1], low, "max")


def test_job_status_agrees_with_the_results_it_contributes(tmp_path):
    """A results.json with every cell's number (written last by a run) makes its job done,
    whatever launch.json says, and the status line names it; a job whose launch.json cannot be
    read and that has no results is "unknown", not "not started"; a running job's results.json
    (here a diverged value) is not counted."""
    runs = {f"{A}/seed0": ("{bad", 0.86), f"{A}/seed1": ("running", 0.87)}
    runs |= {f"{A}/seed2": ("failed", 0.88), f"{B}/seed0": ("{bad", None)}
    runs |= {f"{B}/seed1": ("running", '{"dev": {"accuracy": NaN}}'), f"{B}/seed2": ("done", 0.8)}
    collected = paper_tables.collect(_grid_root(tmp_path, runs))
    assert collected["jobs"] == {
        f"{A}/seed0": "done", f"{A}/seed1": "done", f"{A}/seed2": "done",
        f"{B}/seed0": UNKNOWN, f"{B}/seed1": "running", f"{B}/seed2": "done",
    }  # fmt: skip
    assert collected["done_by_results"] == {
        f"{A}/seed0": UNKNOWN, f"{A}/seed1": "running", f"{A}/seed2": "failed"
    }  # fmt: skip
    assert collected["cells"][f"{A}|dev"]["seeds"] == [0, 1, 2]
    assert collected["cells"][f"{B}|dev"]["seeds"] == [2]
    line = paper_tables.status_line(collected)
    assert line.startswith(
        "Jobs: 4 done, 0 failed, 1 running, 0 not started, 1 unknown (bad launch.json) (of 6);"
    )
    assert (
        f"Counted done because their results.json holds every cell's number: {A}/seed0 "
        f"(bad launch.json), {A}/seed1 (launch.json: running), {A}/seed2 (launch.json: failed)."
    ) in line


# --------------------------------------------------------------------------- average columns


def _write_root(root: pathlib.Path, sweep: Sweep, results: dict) -> pathlib.Path:
    """A launched sweep's root: sweep.json, and per job in `results` its launch.json (done, or
    failed when its results are None) and results.json; the other jobs never started."""
    root.mkdir(parents=True)
    sweep_json = {"sweep": sweep.name, "table": to_dict(sweep.table)}
    (root / "sweep.json").write_text(json.dumps(sweep_json | {"jobs": to_dict(list(sweep.jobs))}))
    for name, result in results.items():
        work = root / name
        work.mkdir(parents=True)
        launch = {"command": ["python"], "git_commit": "abc", "host": "h", "started": "t"}
        status = "failed" if result is None else "done"
        launch |= {"finished": "t", "wall_seconds": 600.0, "returncode": 0, "status": status}
        (work / "launch.json").write_text(json.dumps(launch))
        if result is not None:
            (work / "results.json").write_text(json.dumps(result))
    return root


def _glue(task: str, metric: str, seed: int, dev: dict, **splits) -> dict:
    """results.json of a GLUE job of the paper's recipe: a learning-rate grid inside the job
    (bert_jax.finetune_sweep.best_point_results: the best point's metrics)."""
    out = {"task": task, "metric": metric, "select": "last", "best_point": "bs32_lr3e-05_ep3"}
    return out | {"seeds": [seed], "dev": dev, **splits}


def _run(task: str, metric: str, dev: dict) -> dict:
    """results.json of one fine-tuning run (bert_jax.finetune.finetune)."""
    history = [{"epoch": 1, "step": 100, **dev}]
    return {"task": task, "metric": metric, "select": "last", "epoch": 1, "dev": dev,
            "history": history, "train_seconds": 60.0, "steps": 100}  # fmt: skip


# Two seeds of each Tables 1-4 job: {task: (seed 0's, seed 1's) values}.
TABLE1_VALUES = {
    "mnli": ((0.840, 0.838), (0.846, 0.842)),  # (matched, mismatched)
    "qqp": (0.880, 0.884),
    "qnli": (0.912, 0.908),
    "sst2": (0.926, 0.930),
    "cola": (0.560, 0.580),
    "stsb": (0.886, 0.890),
    "mrpc": (0.900, 0.892),
    "rte": (0.680, 0.700),
    "squad1": ((80.6, 88.2), (81.0, 88.6)),  # (EM, F1), in percent as squad_eval writes them
    "squad2": ((73.0, 76.1), (73.4, 76.5)),  # (best_exact, best_f1)
    "swag": (0.812, 0.816),
}


def _table1_results(task: str, seed: int) -> dict:
    from bert_jax.data.tasks import glue  # noqa: PLC0415

    value = TABLE1_VALUES[task][seed]
    if task == "mnli":
        return _glue(task, "accuracy", seed, {"accuracy": value[0]},
                     dev_mismatched={"accuracy": value[1]})  # fmt: skip
    if task in glue.TASKS:
        metric = glue.TASKS[task].metric
        # (MRPC and QQP report accuracy beside their F1, STS-B Pearson beside Spearman.)
        return _glue(task, metric, seed, {"accuracy": 0.5, "pearson": 0.5} | {metric: value})
    if task == "squad1":
        return _run(task, "f1", {"exact_match": value[0], "f1": value[1]})
    if task == "squad2":
        dev = {"exact_match": 70.0, "f1": 73.0, "HasAns_exact": 75.0, "NoAns_exact": 65.0}
        dev |= {"best_exact": value[0], "best_exact_thresh": -1.5}
        return _run(task, "f1", dev | {"best_f1": value[1], "best_f1_thresh": -1.2})
    return _run(task, "accuracy", {"accuracy": value})


def _table1_root(tmp_path, failed=()) -> tuple[pathlib.Path, Table]:
    from configs.sweeps import table1  # noqa: PLC0415

    sweep = table1.get_sweep("init=/ckpt/bert-base-uncased,swag_dir=/data/swag,seeds=2")
    results = {}
    for job in sweep.jobs:
        task, seed = job.name.rsplit("_seed", 1)
        results[job.name] = None if job.name in failed else _table1_results(task, int(seed))
    return _write_root(tmp_path / "table1", sweep, results), sweep.table


OURS = "BERT-base (ours)"
TABLE1_OURS = (
    "| BERT-base (ours) | 84.3 ± 0.4 | 84.0 ± 0.3 | 88.2 ± 0.3 | 91.0 ± 0.3 | 92.8 ± 0.3 | "
    "57.0 ± 1.4 | 88.8 ± 0.3 | 89.6 ± 0.6 | 69.0 ± 1.4 | 82.7 | 80.8 ± 0.3 | 88.4 ± 0.3 | "
    "73.2 ± 0.3 | 76.3 ± 0.3 | 81.4 ± 0.3 |"
)
TABLE1_PAPER = (
    "| BERT-base (paper) | 84.6 | 83.4 | 71.2 | 90.5 | 93.5 | 52.1 | 85.8 | 88.9 | 66.4 | 79.6 | "
    "80.8 | 88.5 | – | – | 81.6 |",
    "| BERT-large (paper) | 86.7 | 85.9 | 72.1 | 92.7 | 94.9 | 60.5 | 86.5 | 89.3 | 70.1 | 82.1 | "
    "84.1 | 90.9 | 78.7 | 81.9 | 86.6 |",
)


def test_table1_from_fine_tuning_results(tmp_path):
    """Tables 1-4 from the results.json files the fine-tuning jobs write: MNLI-m and -mm from
    the one MNLI job, the Average the mean of the row's nine GLUE cells, the paper's rows as
    printed (their Average the paper's)."""
    root, table = _table1_root(tmp_path)
    written = paper_tables.write(root, tmp_path / "out")
    md = (tmp_path / "out" / "table.md").read_text()
    assert _row(md, OURS) == TABLE1_OURS
    assert (_row(md, "BERT-base (paper)"), _row(md, "BERT-large (paper)")) == TABLE1_PAPER
    nine = [(a + b) / 2 * 100 for a, b in zip(*TABLE1_VALUES["mnli"], strict=True)]
    nine += [sum(TABLE1_VALUES[t]) / 2 * 100 for t in ("qqp", "qnli", "sst2", "cola", "stsb")]
    nine += [sum(TABLE1_VALUES[t]) / 2 * 100 for t in ("mrpc", "rte")]
    average = written["cells"][f"{OURS}|Average"]
    assert average["mean"] == pytest.approx(sum(nine) / 9) and average["missing"] == []
    assert average["average_of"] == list(table.columns[:9]) and average["paper"] is None
    assert written["cells"]["BERT-large (paper)|Average"]["paper"] == 82.1
    assert "Average: the mean of the row's MNLI-m, MNLI-mm, QQP (F1)" in md
    assert "Rows BERT-base (paper), BERT-large (paper): the paper's numbers" in md
    assert "Jobs: 22 done, 0 failed, 0 running, 0 not started (of 22)" in md
    assert "**" not in md  # one row of ours: nothing to compare
    tex = (tmp_path / "out" / "table.tex").read_text()
    assert r"BERT-large (paper) & 86.7 & 85.9 & 72.1 &" in tex and "& 82.7 &" in tex
    # --aggregate=best: the mean of the cells' best seeds, with no seed of its own.
    best = paper_tables.markdown(table, paper_tables.collect(root), "best")
    assert "| 70.0, seed 1 | 83.2 | 81.0, seed 1 |" in _row(best, OURS)
    assert "(each cell as shown: its best seed)" in best


def test_an_average_is_blank_and_marked_while_a_column_is_missing(tmp_path):
    """Never a mean over fewer columns: CoLA's jobs failed, so the Average is blank, marked with
    how many of its columns have a value; a column missing a seed marks the Average as well."""
    root, table = _table1_root(tmp_path, failed=("cola_seed0", "cola_seed1", "rte_seed1"))
    collected = paper_tables.collect(root)
    md = paper_tables.markdown(table, collected)
    cells = _row(md, OURS).split(" | ")
    assert (cells[6], cells[9], cells[10]) == ("–", "68.0 [1/2]", "– [8/9 columns]")
    average = collected["cells"][f"{OURS}|Average"]
    assert average["mean"] is None and average["missing"] == ["CoLA (MCC)"]
    assert paper_tables.PARTIAL["mean"] in md
    assert r"-- [8/9 columns]" in paper_tables.latex(table, collected)
    # CoLA back (RTE still missing a seed): an average over all nine, marked partial.
    collected["cells"][f"{OURS}|CoLA (MCC)"] |= {"values": [57.0], "mean": 57.0, "best": 57.0}
    entry = collected["cells"][f"{OURS}|Average"]
    cells = [collected["cells"][f"{OURS}|{c}"] for c in table.averages["Average"]]
    entry |= paper_tables._average(cells, table.averages["Average"])
    assert entry["mean"] == pytest.approx((744.7 - 1.0) / 9)  # RTE 68.0 for 69.0
    assert "| 82.6 [16/18] |" in _row(paper_tables.markdown(table, collected), OURS)


def test_an_average_column_is_bold_only_among_complete_rows(tmp_path):
    """The bold rule of every column holds for an average: a row whose average leans on a
    cell missing seeds does not win over a complete row, however high."""
    table = Table("avg", "Avg", "Model", ("A", "B"), ("x", "y", "avg"), {("A", "avg"): 1.0},
                  averages={"avg": ("x", "y")})  # fmt: skip
    jobs = [
        Job(f"{r}_{c}{s}", "f.py", cells=(Cell(r, c, f"dev.{c}", s),))
        for r in ("A", "B")
        for c in ("x", "y")
        for s in (0, 1)
    ]
    values = {"A_x": 0.80, "A_y": 0.90, "B_x": 0.95, "B_y": 0.88}
    results = {j.name: {"dev": {j.name[2]: values[j.name[:3]]}} for j in jobs}
    results["B_x1"] = None  # failed: B's average (91.5) leans on 1 of x's 2 seeds
    root = _write_root(tmp_path / "avg", Sweep("avg", table, tuple(jobs)), results)
    md = paper_tables.markdown(table, paper_tables.collect(root))
    assert _row(md, "A") == "| A | **80.0 ± 0.0** | **90.0 ± 0.0** | **85.0** (1.0) |"
    assert _row(md, "B") == "| B | 95.0 [1/2] | 88.0 ± 0.0 | 91.5 [3/4] |"
