"""experiments/paper_tables.py: tables, results.json and plots from a fixture sweep workdir."""

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
\caption{Test table}
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
        "values": [6.1], "seeds": [0], "mean": 6.1, "std": None, "paper": 5.84, "planned": 1
    }  # fmt: skip
    assert results["cells"][f"{BASE}|MNLI"] == {
        "values": [], "seeds": [], "mean": None, "std": None, "paper": 86.6, "planned": 4
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
    base |= {"values": [90.0], "mean": 90.0}
    assert "| 82.0 ± 2.8 (84.4) |" in row_of("Tiny")
    assert "| **90.0** [1/4] (86.6) |" in row_of(BASE)
    # Lower is better for PPL: 4.50 beats 6.10.
    assert "| **4.50** |" in row_of(BASE)


def test_a_cell_missing_seeds_says_how_many_it_averages(root):
    """A mean over the seeds that survived (a failed or diverged seed leaves no value) says so:
    its k of n planned, and a legend under the table."""
    collected = paper_tables.collect(root)
    assert paper_tables.PARTIAL not in paper_tables.markdown(TABLE, collected)
    tiny = collected["cells"]["Tiny|MNLI"]
    tiny |= {"values": [80.0], "seeds": [0], "mean": 80.0, "std": None}
    md = paper_tables.markdown(TABLE, collected)
    assert "| Tiny | 80.0 [1/2] (84.4) | 6.10 (5.84) |" in md and paper_tables.PARTIAL in md
    assert r"Tiny & 80.0 [1/2] (84.4) & 6.10 (5.84) \\" in paper_tables.latex(TABLE, collected)


def test_missing_sweep_json_names_path_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="launch.py") as err:
        paper_tables.collect(tmp_path)
    assert str(tmp_path / "sweep.json") in str(err.value)
