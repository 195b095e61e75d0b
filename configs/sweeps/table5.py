r"""BERT Table 5: the pre-training tasks. MLM + NSP (BERT), MLM without NSP, a left-to-right LM
without NSP (causal attention, also at fine-tuning), and that LTR model with a randomly
initialised BiLSTM on top during fine-tuning.

  python experiments/launch.py --sweep=configs/sweeps/table5.py:profile=mini \
      --root=runs/sweeps/table5_mini
  python experiments/paper_tables.py --root=runs/sweeps/table5_mini --out=docs/results/table5_mini

Profiles (`arg` keys: profile, seeds, corpus, steps, matmul):
  mini   BERT-tiny pre-trained 2,000 steps of 64 x 32 tokens on the Wikipedia sample
         (common.MINI_RECIPE, NSP added back for the first row); SST-2 -> Rotten Tomatoes (the
         other columns need the network).
         matmul=bf16 (default; common.MINI_MATMUL) or float32 (a CPU without bfloat16 units).
  paper  BERT-base, 1M steps of 256 (90% at length 128, then 512) on `corpus=`; MNLI-m, QNLI,
         MRPC, SST-2 and SQuAD 1.1 from TFDS; GLUE fine-tuned with the paper's recipe (batch
         32, 3 epochs, lr best on dev of 5e-5/4e-5/3e-5/2e-5: common.PAPER_GLUE).
"""

from __future__ import annotations

from configs import common as config_common
from configs.sweeps import common

ROWS = ("BERT-base", "No NSP", "LTR & No NSP", "+ BiLSTM")
COLUMNS = ("MNLI-m", "QNLI", "MRPC", "SST-2", "SQuAD")
PAPER = {
    "BERT-base": (84.4, 88.4, 86.7, 92.7, 88.5),
    "No NSP": (83.9, 84.9, 86.5, 92.6, 87.9),
    "LTR & No NSP": (82.1, 84.3, 77.5, 92.1, 77.8),
    "+ BiLSTM": (82.1, 84.1, 75.7, 91.6, 84.9),
}
# Pre-training runs: name -> overrides. "+ BiLSTM" fine-tunes the LTR model.
PRETRAINING = {
    "mlm_nsp": {"data.next_sentence": True},
    "mlm": {"data.next_sentence": False},
    "ltr": {"data.next_sentence": False, "model.causal": True},
}
ROW_RUN = {"BERT-base": "mlm_nsp", "No NSP": "mlm", "LTR & No NSP": "ltr", "+ BiLSTM": "ltr"}
# column -> (task, metric) at full scale; the mini profile has SST-2 only (as sentiment).
TASKS = {
    "MNLI-m": ("mnli", "dev.accuracy"),
    "QNLI": ("qnli", "dev.accuracy"),
    "MRPC": ("mrpc", "dev.accuracy"),
    "SST-2": ("sst2", "dev.accuracy"),
    "SQuAD": ("squad1", "dev.f1"),
}
MINI_TASKS = {"SST-2": ("rotten_tomatoes", "dev.accuracy")}
# The paper profile's GLUE tasks fine-tune with the paper's GLUE recipe (common.PAPER_GLUE).
GLUE = ("mnli", "qnli", "mrpc", "sst2")


def get_sweep(arg: str | None = None) -> common.Sweep:
    arg = config_common.parse_arg(arg, profile="mini", seeds=1, corpus="", steps=0, matmul="bf16")
    if arg.profile not in ("mini", "paper"):
        raise ValueError(f"profile={arg.profile!r}; use 'mini' or 'paper'.")
    mini = arg.profile == "mini"
    jobs = [
        common.Job(f"pretrain_{run}", *pretraining(arg, extra))
        for run, extra in PRETRAINING.items()
    ]
    for row in ROWS:
        pre = f"pretrain_{ROW_RUN[row]}"
        head = {"head.bilstm_layers": 1} if row == "+ BiLSTM" else {}
        suffix = "_bilstm" if head else ""
        for column, (task, metric) in (MINI_TASKS if mini else TASKS).items():
            for seed in range(arg.seeds):
                overrides = {"train.seed": seed, **head}
                if mini:
                    overrides.update(common.MINI_SENTIMENT)
                elif task in GLUE:  # SQuAD: its task defaults (lr 5e-5, batch 32, 3 epochs)
                    overrides.update(common.PAPER_GLUE)
                cell = common.Cell(row, column, metric, seed, common.cell_scale(task))
                jobs.append(
                    common.finetune_job(pre, f"{task}{suffix}_seed{seed}", task, overrides, cell)
                )
    table = common.Table(
        name="table5",
        title="Table 5: ablation over the pre-training tasks (dev)",
        row_header="Tasks",
        rows=ROWS,
        columns=COLUMNS,
        paper=common.paper_cells(PAPER, COLUMNS),
        notes=NOTES[arg.profile],
    )
    sweep = common.Sweep(f"table5_{arg.profile}", table, tuple(jobs))
    return common.with_matmul(sweep, arg.matmul) if mini else sweep


def pretraining(arg, extra: dict) -> tuple[str, dict]:
    slug = "nsp" if extra["data.next_sentence"] else "nonsp"
    if arg.profile == "mini":
        overrides = common.mini_pretraining(f"{{root}}/data/{slug}", arg.steps)
        return common.MINI_CONFIG, {**overrides, **extra}
    return common.paper_pretraining(arg.corpus, f"{{root}}/data/{slug}", arg.steps, extra)


NOTES = {
    "mini": (
        "BERT-tiny; only the SST-2 column (as sentiment) runs offline. " + common.MINI_NOTE,
        "LTR: causal attention in pre-training and fine-tuning, next-token loss on the same "
        "instances (their masked tokens put back), the pooler reading the last token; "
        "+ BiLSTM: one BiLSTM layer (H units per direction) between the LTR encoder and the "
        "classifier.",
    ),
    "paper": (
        "Paper profile: BERT-base; SQuAD 1.1 dev F1, the others dev accuracy.",
        common.PAPER_GLUE_NOTE,
        "SQuAD 1.1: lr 5e-5, batch 32, 3 epochs (configs/finetune.py's squad1 defaults, the "
        "paper's section 4.2 recipe).",
    ),
}
