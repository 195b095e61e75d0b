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
