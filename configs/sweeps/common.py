"""What a sweep is: jobs (one run each, with its own workdir) and the paper table they fill.

A sweep module in configs/sweeps/ defines `get_sweep(arg: str) -> Sweep`, where `arg` is a compact
string like "profile=mini,seeds=3" (parsed by `configs.common.parse_arg`). Each `Job` is one
`python -m bert_jax.main` run: a config file with its arg, and dotted overrides. A value written
"{job:NAME}" is replaced by the workdir of job NAME (a fine-tuning job names the pre-training job
it starts from), and NAME must then be listed in `after`; "{root}" by the sweep's directory.

Each job may fill table cells (`Cell`): the value at a dotted path of its workdir's
results.json, e.g. "end.mlm_perplexity" (pre-training) or "dev.accuracy" (fine-tuning). Cells
with the same row and column from several seeds are reported as mean +- std. No job fills a
table's average columns (`Table.averages`: GLUE's "Average", computed from the row's other cells)
or its paper rows (`Table.paper_rows`: the paper's models, beside ours).

Workdir layout of a launched sweep (experiments/launch.py writes it, experiments/paper_tables.py
reads it):

  ROOT/sweep.json          {"sweep": spec, "table": Table, "jobs": [Job, ...]} (as dicts)
  ROOT/<job name>/         the run's workdir: config.json, results.json, metrics.jsonl, ...
  ROOT/<job name>/launch.json
      {"command": [...], "git_commit": str, "started": iso time, "finished": iso time | null,
       "wall_seconds": float | null, "returncode": int | null, "status": "running"|"done"|"failed",
       "host": str}
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

_JOB_REF = re.compile(r"\{job:([^}]+)\}")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One value a job contributes to the table."""

    row: str
    column: str
    # Dotted path into the job's results.json.
    metric: str
    seed: int = 0
    # The value is multiplied by this (accuracy 0.84 -> 84.0, as the paper prints it).
    scale: float = 100.0


def cell_scale(task: str) -> float:
    """A Cell's scale for `task`'s metrics: SQuAD's EM/F1 are percentages in results.json already
    (as the official script prints them), every other task's a fraction (accuracy 0.84)."""
    return 1.0 if task.startswith("squad") else 100.0


@dataclasses.dataclass(frozen=True)
class Job:
    """One run: `python -m bert_jax.main --config=CONFIG --workdir=ROOT/NAME --config.K=V ...`."""

    name: str
    config: str
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    after: tuple[str, ...] = ()
    cells: tuple[Cell, ...] = ()

    @property
    def is_finetuning(self) -> bool:
        """Whether the job fine-tunes (configs/finetune.py), which runs in one process."""
        return self.config.split(":")[0].endswith("finetune.py")

    def references(self) -> set[str]:
        """Names of the jobs whose workdirs the overrides refer to ("{job:NAME}")."""
        return {
            m for v in self.overrides.values() if isinstance(v, str) for m in _JOB_REF.findall(v)
        }


@dataclasses.dataclass(frozen=True)
class Table:
    """The paper's table: rows x columns, the paper's numbers, and how to print ours."""

    name: str
    title: str
    row_header: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    # (row, column) -> the paper's value; missing cells print as "-".
    paper: dict[tuple[str, str], float]
    # Columns where lower is better (perplexity); the best cell per column is marked bold.
    lower_is_better: tuple[str, ...] = ()
    # Decimals printed per column (default 1).
    decimals: dict[str, int] = dataclasses.field(default_factory=dict)
    # Free text under the table: what the profile scaled down, stand-in tasks, ...
    notes: tuple[str, ...] = ()
    # Optional x value per row for plots of metric vs model size (e.g. parameter count).
    row_x: dict[str, float] = dataclasses.field(default_factory=dict)
    row_x_label: str = ""
    # Derived columns: column -> the columns whose mean it is, computed per row from the row's
    # cells (as aggregated: mean over seeds, or best seed) and blank while any of them has no
    # value (never a mean of fewer columns). No job fills one; a paper value is the paper's own.
    averages: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # Rows that hold only the paper's numbers (e.g. BERT-large beside our model): no job fills
    # them, and they print the paper's values as they are.
    paper_rows: tuple[str, ...] = ()

    def __post_init__(self):
        for column, inputs in self.averages.items():
            unknown = [c for c in (column, *inputs) if c not in self.columns]
            if unknown:
                raise ValueError(
                    f"table {self.name!r}: average {column!r} names columns {unknown} that are "
                    f"not among its columns {list(self.columns)}."
                )
            if not inputs:
                raise ValueError(f"table {self.name!r}: average {column!r} averages no columns.")
            derived = [c for c in inputs if c in self.averages]
            if derived:
                raise ValueError(
                    f"table {self.name!r}: average {column!r} averages the derived columns "
                    f"{derived}; average the columns that jobs fill."
                )
        unknown = [r for r in self.paper_rows if r not in self.rows]
        if unknown:
            raise ValueError(
                f"table {self.name!r}: paper_rows {unknown} are not among its rows "
                f"{list(self.rows)}."
            )


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    table: Table
    jobs: tuple[Job, ...]

    def __post_init__(self):
        names = [j.name for j in self.jobs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sweep {self.name!r}: job names {dupes} appear twice.")
        known = set(names)
        for job in self.jobs:
            missing = (set(job.after) | job.references()) - known
            if missing:
                raise ValueError(f"job {job.name!r} depends on unknown jobs {sorted(missing)}.")
            unlisted = job.references() - set(job.after)
            if unlisted:
                raise ValueError(
                    f"job {job.name!r} uses the workdir of {sorted(unlisted)} without waiting for "
                    "it: add them to `after`."
                )
            for cell in job.cells:
                if cell.row not in self.table.rows or cell.column not in self.table.columns:
                    raise ValueError(
                        f"job {job.name!r} fills ({cell.row!r}, {cell.column!r}), which is not a "
                        f"cell of table {self.table.name!r}."
                    )
                if cell.column in self.table.averages or cell.row in self.table.paper_rows:
                    what = (
                        f"column {cell.column!r} is an average of other columns"
                        if cell.column in self.table.averages
                        else f"row {cell.row!r} holds only the paper's numbers"
                    )
                    raise ValueError(
                        f"job {job.name!r} fills ({cell.row!r}, {cell.column!r}), but {what} "
                        f"in table {self.table.name!r}: no job fills it."
                    )


def to_dict(obj) -> Any:
    """Sweep/Table/Job/Cell as JSON-ready dicts (tuple keys of Table.paper become "row|column")."""
    if isinstance(obj, Table):
        d = {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        d["paper"] = {f"{r}|{c}": v for (r, c), v in obj.paper.items()}
        return d
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def table_from_dict(d: dict[str, Any]) -> Table:
    d = dict(d)
    d["paper"] = {tuple(k.split("|", 1)): v for k, v in d["paper"].items()}
    # (A sweep.json written before `averages` and `paper_rows` existed has neither.)
    for name in ("rows", "columns", "lower_is_better", "notes", "paper_rows"):
        if name in d:
            d[name] = tuple(d[name])
    d["averages"] = {k: tuple(v) for k, v in d.get("averages", {}).items()}
    return Table(**d)


def job_from_dict(d: dict[str, Any]) -> Job:
    d = dict(d)
    d["after"] = tuple(d["after"])
    d["cells"] = tuple(Cell(**c) for c in d["cells"])
    return Job(**d)


# The mini profiles' shared recipe (2 CPU cores, under an hour per table: 40 min for Table 8, 43 for
# Table 6, one job at a time, with bf16 matmuls on a CPU with AMX; 51 and 62 in float32; README):
# BERT-tiny-sized models pre-trained on the Wikipedia sample with 32-token rows, 40% masking, masked
# LM only and no dropout, with the demo's 8,192-piece vocabulary; a learning rate high enough for
# small models and no evaluation in between. Why each choice (table6.py has the measurements): with
# 64- or 128-token rows, 15% masking and NSP the models stayed on the unigram plateau of this 2.5 MB
# corpus for the whole budget (hidden-token accuracy at the most-frequent-token floor, every variant
# tied); BERT's learned absolute positions take longer to find the neighbouring tokens the longer
# the row (experiments/position_plateau.py); 40% masking gives each row more predictions (Wettig et
# al., 2022: BERT-tiny at 15% reaches held-out hidden accuracy 0.071 after 2,000 steps, at 40%
# 0.131); dropout only slows models that see each token a few times (Geiping & Goldstein,
# "Cramming", 2022). A table that varies one of these (Table 5: NSP; Table 8: the masking mix)
# overrides it.
MINI_CONFIG = "configs/pretrain.py:size=tiny,demo,seq=32"
# Every mini job, pre-training and fine-tuning, rounds its matmul operands to bfloat16 with
# float32 accumulation (model.bf16_matmul): on a CPU with bfloat16 units this cut Table 6's
# 8-layer pre-training step by a third (docs/benchmarks.md).
MINI_MATMUL = {"model.bf16_matmul": True}
MINI_STEPS = 2000
MINI_RECIPE = {
    "data.vocab_size": 8192,
    "data.max_seq_length": 32,
    "data.masked_lm_prob": 0.4,
    "data.max_predictions_per_seq": 13,
    "data.next_sentence": False,
    "train.batch_size": 64,
    "model.hidden_dropout_prob": 0.0,
    "model.attention_probs_dropout_prob": 0.0,
    **MINI_MATMUL,
}


def mini_pretraining(data_dir: str, steps: int = 0) -> dict[str, Any]:
    """Overrides of MINI_CONFIG for a mini-profile pre-training run (warmup: the first 10% of the
    steps)."""
    steps = steps or MINI_STEPS
    return {
        "data.dir": data_dir,
        "train.num_train_steps": steps,
        "train.eval_every": 100_000,
        "train.checkpoint_every": 100_000,
        "optimizer.learning_rate": 2e-3,
        "optimizer.warmup_steps": steps // 10,
        **MINI_RECIPE,
    }


# Fine-tuning a mini model: sentiment (the SST-2 / MNLI stand-in) on 4,000 of the Rotten
# Tomatoes training snippets (the dev set stays the fixed 20%), NER on all of WNUT-16 (tweets
# longer than a row are split into several rows at word boundaries). Both at the pre-training
# length: the position embeddings past it were never trained.
MINI_SENTIMENT = {
    "task.max_seq_length": MINI_RECIPE["data.max_seq_length"],
    "task.train_examples": 4000,
    "train.num_epochs": 2,
    "optimizer.learning_rate": 1e-3,
    "train.keep_train_state": False,
    **MINI_MATMUL,
}
MINI_NER = {
    "task.max_seq_length": MINI_RECIPE["data.max_seq_length"],
    "train.num_epochs": 6,
    "optimizer.learning_rate": 1e-3,
    "train.keep_train_state": False,
    **MINI_MATMUL,
}
MINI_NOTE = (
    f"Mini profile: pre-training {MINI_STEPS:,} steps x 64 rows of 32 tokens (lr 2e-3), masked "
    "LM only, 40% of the tokens masked, no dropout, an 8,192-piece WordPiece vocabulary, on the "
    "2.5 MB Wikipedia sample (the paper: 1M steps x 256 x 512 on 3.3B words with 15% masking, so "
    "our numbers are far from the paper's); sentiment columns: Rotten Tomatoes accuracy, trained "
    "on 4,000 snippets, on the fixed 20% dev split (SST-2 and MNLI need the network); NER "
    "columns: WNUT-16 entity F1 (CoNLL-2003 needs the network); fine-tuning at length 32. "
    "Compare rows within a column."
)


def with_matmul(sweep: Sweep, matmul: str) -> Sweep:
    """A mini sweep with the matmul precision of the sweep argument `matmul=`: "bf16" (the
    recipe's MINI_MATMUL) or "float32" (for a CPU without bfloat16 units, or to compare), named
    in the table's notes."""
    if matmul not in ("bf16", "float32"):
        raise ValueError(f"matmul={matmul!r}; use 'bf16' or 'float32'.")
    on = matmul == "bf16"
    jobs = tuple(
        dataclasses.replace(j, overrides={**j.overrides, "model.bf16_matmul": on})
        if "model.bf16_matmul" in j.overrides
        else j
        for j in sweep.jobs
    )
    note = (
        "Matmul operands rounded to bfloat16, float32 accumulation and activations "
        "(model.bf16_matmul; `matmul=float32` in the sweep argument turns it off)."
        if on
        else "Float32 matmuls (`matmul=float32`)."
    )
    table = dataclasses.replace(sweep.table, notes=(*sweep.table.notes, note))
    return Sweep(sweep.name, table, jobs)


def finetune_job(pre: str, name: str, task: str, overrides: dict[str, Any], cell: Cell) -> Job:
    """A fine-tuning run from pre-training job `pre` (its workdir: PRE/NAME), filling `cell`."""
    return Job(
        f"{pre}/{name}",
        f"configs/finetune.py:task={task}",
        {"init_checkpoint": f"{{job:{pre}}}", **overrides},
        after=(pre,),
        cells=(cell,),
    )


def paper_pretraining(corpus: str, data_dir: str, steps: int, extra: dict) -> tuple[str, dict]:
    """(config, overrides) of a paper-profile pre-training run: BERT-base on a corpus the user
    names, 1M steps unless `steps`, the paper's two phases: length 128 for 90% of the steps,
    then 512 (SQuAD fine-tunes at 384, so positions past 128 must be trained)."""
    if not corpus:
        raise ValueError("profile=paper needs corpus= (e.g. a MediaWiki .xml.bz2 dump).")
    steps = steps or 1_000_000
    return "configs/pretrain.py:size=base", {
        "data.corpus": corpus,
        "data.dir": data_dir,
        "data.vocab_size": 30522,
        "train.num_train_steps": steps,
        "data.phase2_step": steps * 9 // 10,
        "data.phase2_dir": f"{data_dir}_512",
        **extra,
    }


# The paper's GLUE recipe (PAPER.md): batch 32, 3 epochs, the learning rate chosen on dev from
# {5e-5, 4e-5, 3e-5, 2e-5}. Each job runs the four rates (bert_jax.finetune_sweep, one workdir
# per rate) and its results.json holds the best rate's dev metrics, so each seed's cell is the
# paper's procedure. Only each rate's selected model (best/) is kept: the train state of BERT-base
# is ~1.3 GB per run.
PAPER_GLUE_LEARNING_RATES = (5e-5, 4e-5, 3e-5, 2e-5)
PAPER_GLUE = {
    "train.batch_size": 32,
    "train.num_epochs": 3,
    "sweep.learning_rate": PAPER_GLUE_LEARNING_RATES,
    "train.keep_train_state": False,
}
PAPER_GLUE_NOTE = (
    "GLUE columns: batch 32, 3 epochs, each run at the best on dev of the learning rates "
    f"{', '.join(f'{lr:g}'.replace('e-0', 'e-') for lr in PAPER_GLUE_LEARNING_RATES)} (the "
    "paper's recipe)."
)

# The feature-based approach (Tables 7 and 8): the encoder frozen, its features fed to a freshly
# initialised 2-layer BiLSTM of 768 units per direction (the paper's) and a token classifier.
# The paper gives no optimizer settings for it. Only the BiLSTM and the classifier learn, from
# scratch, so they train at 1e-3, not at a fine-tuning rate: Table 7 mini's concatenated last
# four MiniLM-L6 layers reach WNUT-16 dev F1 32.6 at 1e-3 (docs/results/table7_mini) and 0.0 at
# 5e-5, CoNLL-2003's fine-tuning default (every token tagged O after all 4 epochs; 2026-12-07),
# and on BERT-tiny's features even 1e-3 was too low (table8.py). 3 epochs: CoNLL-2003's
# fine-tuning default, what Table 7 ran; not yet measured at BERT-base scale. A profile whose
# model is smaller (mini) overrides the size, rate and epochs.
FEATURE_BASED = {
    "head.freeze_encoder": True,
    "head.bilstm_layers": 2,
    "head.bilstm_size": 768,
    "optimizer.learning_rate": 1e-3,
    "train.num_epochs": 3,
}
FEATURE_BASED_NOTE = (
    f"Feature-based: frozen encoder, a {FEATURE_BASED['head.bilstm_layers']}-layer BiLSTM of "
    f"{FEATURE_BASED['head.bilstm_size']} units per direction, lr "
    f"{FEATURE_BASED['optimizer.learning_rate']:g} for {FEATURE_BASED['train.num_epochs']} "
    "epochs (configs/sweeps/common.py FEATURE_BASED, shared by Tables 7 and 8)."
)


def paper_cells(paper: dict[str, tuple[float, ...]], columns: tuple[str, ...]) -> dict:
    """{row: (value per column)} -> {(row, column): value}, as Table.paper holds them."""
    return {(r, c): v for r, values in paper.items() for c, v in zip(columns, values, strict=True)}
