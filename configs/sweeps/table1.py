r"""BERT Tables 1-4: one checkpoint fine-tuned on GLUE, SQuAD 1.1/2.0 and SWAG.

  python experiments/launch.py \
      --sweep=configs/sweeps/table1.py:init=/ckpt/bert-base-uncased,swag_dir=/data/swag \
      --root=runs/sweeps/table1
  python experiments/paper_tables.py --root=runs/sweeps/table1 --out=docs/results/table1

One row of ours (the checkpoint `init=`: a Hugging Face dir, a Google TF checkpoint or a bert-jax
pre-training workdir, row label `name=`) beside the paper's BERT-base and BERT-large rows.
Columns: the nine GLUE numbers of Table 1 and their Average, SQuAD 1.1 EM/F1 (Table 2), SQuAD
2.0 EM/F1 (Table 3) and SWAG accuracy (Table 4). Ours are all dev numbers; so are the paper's
SQuAD and SWAG ones, but its GLUE numbers are the test leaderboard's (see NOTES).

There is no offline (mini) profile: GLUE and SQuAD come from TFDS, SWAG from its CSV files, none
built in. Prepare the TFDS datasets once on a machine with internet, then point TFDS_DATA_DIR at
them (the jobs read it; glue/ax gives MNLI's diagnostic leaderboard file):

  tfds build glue/mnli glue/qqp glue/qnli glue/sst2 glue/cola glue/stsb glue/mrpc glue/rte \
      glue/ax squad/v1.1 squad/v2.0 --data_dir=/data/tfds
  export TFDS_DATA_DIR=/data/tfds

`arg` keys: init (required), name (row label, default "BERT-base (ours)"), seeds (default 1),
swag_dir (a folder with SWAG's train.csv and val.csv, github.com/rowanz/swagaf data/; without it
the SWAG jobs are left out, with a note), skip (tasks to leave out, "+"-separated, e.g.
skip=squad2+qqp, for data that cannot be reached; named in the notes).
"""

from __future__ import annotations

from configs import common as config_common
from configs import finetune
from configs.sweeps import common

PAPER_ROWS = ("BERT-base (paper)", "BERT-large (paper)")
# GLUE column -> (task, results.json metric). MNLI's one job gives both of its columns: the
# GLUE adapter (bert_jax/data/tasks/registry.py) evaluates dev_matched as "dev" (the split
# that selects the model and the learning rate) and dev_mismatched under its own name.
GLUE = {
    "MNLI-m": ("mnli", "dev.accuracy"),
    "MNLI-mm": ("mnli", "dev_mismatched.accuracy"),
    "QQP (F1)": ("qqp", "dev.f1"),
    "QNLI": ("qnli", "dev.accuracy"),
    "SST-2": ("sst2", "dev.accuracy"),
    "CoLA (MCC)": ("cola", "dev.matthews_corr"),
    "STS-B (Spearman)": ("stsb", "dev.spearman"),
    "MRPC (F1)": ("mrpc", "dev.f1"),
    "RTE": ("rte", "dev.accuracy"),
}
AVERAGE = "Average"
# column -> (task, metric, scale). SQuAD's EM/F1 are in percent already, SWAG's accuracy a
# fraction. SQuAD 2.0: at the no-answer threshold tuned on dev (the paper selects it on dev to
# maximise F1): evaluate-v2.0.py's best_exact / best_f1, each at its own best threshold.
OTHERS = {
    "SQuAD 1.1 EM": ("squad1", "dev.exact_match", 1.0),
    "SQuAD 1.1 F1": ("squad1", "dev.f1", 1.0),
    "SQuAD 2.0 EM": ("squad2", "dev.best_exact", 1.0),
    "SQuAD 2.0 F1": ("squad2", "dev.best_f1", 1.0),
    "SWAG": ("swag", "dev.accuracy", 100.0),
}
COLUMNS = (*GLUE, AVERAGE, *OTHERS)
# The paper's numbers (PAPER.md): Table 1 (GLUE test), Table 2 (SQuAD 1.1 dev), Table 3 (SQuAD
# 2.0 dev, BERT-large only), Table 4 (SWAG dev). The Average is the mean of the nine GLUE
# numbers, MNLI-m and MNLI-mm counted apart (WNLI left out): 716.4 / 9 = 79.6 and 738.7 / 9 =
# 82.1, as printed; one MNLI number would give 79.05 and 81.55.
PAPER = {
    "BERT-base (paper)": (84.6, 83.4, 71.2, 90.5, 93.5, 52.1, 85.8, 88.9, 66.4, 79.6)
    + (80.8, 88.5, None, None, 81.6),
    "BERT-large (paper)": (86.7, 85.9, 72.1, 92.7, 94.9, 60.5, 86.5, 89.3, 70.1, 82.1)
    + (84.1, 90.9, 78.7, 81.9, 86.6),
}
# Every task, in the order its jobs are listed.
TASKS = tuple(dict.fromkeys(t for t, *_ in (*GLUE.values(), *OTHERS.values())))


def get_sweep(arg: str | None = None) -> common.Sweep:
    arg = config_common.parse_arg(
        arg, init="", name="BERT-base (ours)", seeds=1, swag_dir="", skip=""
    )
    if not arg.init:
        raise ValueError(
            "table1.py needs init= (the checkpoint to fine-tune: a Hugging Face dir, a Google TF "
            "checkpoint or a bert-jax pre-training workdir)."
        )
    if arg.name in PAPER_ROWS or "|" in arg.name or not arg.name:
        raise ValueError(
            f"name={arg.name!r}: give our row a label that is not empty, has no '|' and is not "
            f"one of the paper's rows {PAPER_ROWS}."
        )
    if arg.seeds < 1:
        raise ValueError(f"seeds={arg.seeds}; give at least 1.")
    skip = set(filter(None, arg.skip.split("+")))
    if skip - set(TASKS):
        raise ValueError(f"skip={arg.skip!r}: {sorted(skip - set(TASKS))} not among {TASKS}.")
    left_out = [t for t in TASKS if t in skip]
    if not arg.swag_dir and "swag" not in skip:
        left_out.append("swag")
    row = arg.name
    cells: dict[str, list[tuple[str, str, float]]] = {}  # task -> its (column, metric, scale)
    for column, (task, metric) in GLUE.items():
        cells.setdefault(task, []).append((column, metric, 100.0))
    for column, (task, metric, scale) in OTHERS.items():
        cells.setdefault(task, []).append((column, metric, scale))
    jobs = []
    for task in TASKS:
        if task in left_out:
            continue
        for seed in range(arg.seeds):
            # Only each run's selected model (best/) is kept: BERT-base's train state is ~1.3 GB.
            overrides = {
                "init_checkpoint": arg.init,
                "train.seed": seed,
                "train.keep_train_state": False,
            }
            if finetune.TASKS[task][0] == "glue":
                overrides.update(common.PAPER_GLUE)  # lr chosen on dev, a grid inside the job
            if task == "swag":
                overrides["task.train_file"] = f"{arg.swag_dir}/train.csv"
                overrides["task.dev_file"] = f"{arg.swag_dir}/val.csv"
            jobs.append(
                common.Job(
                    f"{task}_seed{seed}",
                    f"configs/finetune.py:task={task}",
                    overrides,
                    cells=tuple(common.Cell(row, c, m, seed, s) for c, m, s in cells[task]),
                )
            )
    table = common.Table(
        name="table1",
        title="Tables 1-4: GLUE, SQuAD 1.1, SQuAD 2.0 and SWAG (ours: dev)",
        row_header="System",
        rows=(row, *PAPER_ROWS),
        columns=COLUMNS,
        paper={
            (r, c): v
            for r, values in PAPER.items()
            for c, v in zip(COLUMNS, values, strict=True)
            if v is not None
        },
        notes=notes(arg.init, left_out, skip),
        averages={AVERAGE: tuple(GLUE)},
        paper_rows=PAPER_ROWS,
    )
    return common.Sweep("table1", table, tuple(jobs))


def _recipe(task: str) -> str:
    _, _, _, batch, lr, epochs = finetune.TASKS[task]
    return f"lr {lr:g}, batch {batch}, {epochs} epochs".replace("e-05", "e-5")


def notes(init: str, left_out: list[str], skip: set[str]) -> tuple[str, ...]:
    out = [
        f"Ours: {init} fine-tuned on each task, scored on its dev set. The paper's GLUE "
        "numbers (Table 1) are GLUE test (the leaderboard's), so those columns set our dev "
        "beside its test (QQP most of all: its test F1 runs far below its dev F1). For test "
        "numbers, submit ours: each GLUE job writes the leaderboard's files (CoLA.tsv, "
        "MNLI-m.tsv, MNLI-mm.tsv, AX.tsv, ...; glue.write_test_predictions) to "
        "<task>_seed<k>/<point>/seed<k>/predictions/ of the sweep's root, the learning rate "
        "chosen on dev being summary.json's best_point; the leaderboard also wants WNLI.tsv, "
        "which no job here writes (the paper leaves WNLI out).",
        common.PAPER_GLUE_NOTE,
        f"SQuAD 1.1 ({_recipe('squad1')}), SQuAD 2.0 ({_recipe('squad2')}) and SWAG "
        f"({_recipe('swag')}): configs/finetune.py's defaults, the paper's recipes; dev, as the "
        "paper's Tables 2-4 are. SQuAD 2.0 EM and F1 at the no-answer threshold tuned on dev, "
        "each at its own best (evaluate-v2.0.py's best_exact, best_f1; the paper tunes one "
        "threshold for F1, so our EM may be a little higher than at that threshold).",
        "The paper reports SQuAD 2.0 for BERT-large only; for BERT-large it picked the best "
        "of several restarts on dev for the small GLUE tasks (paper_tables.py --aggregate=best "
        "with seeds > 1).",
    ]
    if left_out:
        no_swag = "no swag_dir=, a folder with SWAG's train.csv and val.csv"
        listed = "; ".join(f"{t} ({'skip=' if t in skip else no_swag})" for t in left_out)
        out.append(f"Not run: {listed}; their columns stay blank.")
    return tuple(out)
