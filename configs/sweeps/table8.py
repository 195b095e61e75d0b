r"""BERT Table 8: masking strategies (MASK/SAME/RND shares of the 15% predicted tokens).

Each mix is one pre-training run, then fine-tuning on MNLI and NER and a feature-based NER run
(frozen encoder, last four layers concatenated, 2-layer BiLSTM: the paper's Table 8 set-up).

  python experiments/launch.py --sweep=configs/sweeps/table8.py:profile=mini \
      --root=runs/sweeps/table8_mini
  python experiments/paper_tables.py --root=runs/sweeps/table8_mini --out=docs/results/table8_mini

Profiles (`arg` keys: profile, seeds, corpus, steps, matmul):
  mini   BERT-tiny (L2/H128), 2,000 steps of 64 x 32 tokens on the Wikipedia sample with 40%
         of the tokens predicted, each mix applied to those (common.MINI_RECIPE); MNLI -> Rotten
         Tomatoes sentiment, CoNLL-2003 -> WNUT-16 (the built-in real data).
         matmul=bf16 (default; common.MINI_MATMUL) or float32 (a CPU without bfloat16 units).
  paper  BERT-base, 1M steps of 256 on `corpus=` (a Wikipedia dump), 90% at length 128 and
         the rest at 512 as in the paper; MNLI and CoNLL-2003 from TFDS; MNLI with the
         paper's GLUE recipe (common.PAPER_GLUE), the feature-based column with Table 7's
         (common.FEATURE_BASED).
"""

from __future__ import annotations

from configs import common as config_common
from configs.sweeps import common

MIXES = ("80/10/10", "100/0/0", "80/0/20", "80/20/0", "0/20/80", "0/0/100")
COLUMNS = ("MNLI", "NER fine-tune", "NER feature-based")
PAPER = {
    "80/10/10": (84.2, 95.4, 94.9),
    "100/0/0": (84.3, 94.9, 94.0),
    "80/0/20": (84.1, 95.2, 94.6),
    "80/20/0": (84.4, 95.2, 94.7),
    "0/20/80": (83.7, 94.8, 94.6),
    "0/0/100": (83.6, 94.9, 94.6),
}
# The feature-based column: the last four layers concatenated, with Table 7's recipe (frozen
# encoder, 2-layer BiLSTM of 768 units, its own learning rate and epochs: common.FEATURE_BASED).
FEATURE_BASED = {"head.layers": "concat_last_four", **common.FEATURE_BASED}
# The mini BiLSTM on frozen BERT-tiny features tags every token O after 6 epochs at lr 1e-3
# (F1 0.0); at 3e-3 it needs 12 (F1 0.2532 on the 80/10/10 model; 0.0291 after 6). Its size is
# the encoder's hidden size (0: 128), as the paper's 768 is BERT-base's.
MINI_FEATURE_BASED = {
    "optimizer.learning_rate": 3e-3,
    "train.num_epochs": 12,
    "head.bilstm_size": 0,
}


def get_sweep(arg: str | None = None) -> common.Sweep:
    arg = config_common.parse_arg(arg, profile="mini", seeds=1, corpus="", steps=0, matmul="bf16")
    if arg.profile not in ("mini", "paper"):
        raise ValueError(f"profile={arg.profile!r}; use 'mini' or 'paper'.")
    mini = arg.profile == "mini"
    jobs = []
    for mix in MIXES:
        slug = mix.replace("/", "_")
        pre = f"pretrain_{slug}"
        jobs.append(common.Job(pre, *pretraining(arg, mix, f"{{root}}/data/{slug}")))
        for seed in range(arg.seeds):
            tasks = (
                ("mnli", "rotten_tomatoes" if mini else "mnli", {}, "MNLI", "dev.accuracy"),
                ("ner", "wnut16" if mini else "conll2003", {}, "NER fine-tune", "dev.f1"),
                (
                    "ner_features",
                    "wnut16" if mini else "conll2003",
                    {**FEATURE_BASED, **(MINI_FEATURE_BASED if mini else {})},
                    "NER feature-based",
                    "dev.f1",
                ),
            )
            for name, task, extra, column, metric in tasks:
                overrides = {"train.seed": seed, **finetuning(mini, task), **extra}
                cell = common.Cell(mix, column, metric, seed)
                jobs.append(common.finetune_job(pre, f"{name}_seed{seed}", task, overrides, cell))
    table = common.Table(
        name="table8",
        title="Table 8: masking strategies during MLM pre-training (dev)",
        row_header="MASK/SAME/RND",
        rows=MIXES,
        columns=COLUMNS,
        paper=common.paper_cells(PAPER, COLUMNS),
        notes=NOTES[arg.profile],
    )
    sweep = common.Sweep(f"table8_{arg.profile}", table, tuple(jobs))
    return common.with_matmul(sweep, arg.matmul) if mini else sweep


def pretraining(arg, mix: str, data_dir: str) -> tuple[str, dict]:
    """(config, overrides) of the pre-training run of one mix; static masks as in the paper."""
    if arg.profile == "mini":
        overrides = {**common.mini_pretraining(data_dir, arg.steps), "data.masking_split": mix}
        return common.MINI_CONFIG, overrides
    return common.paper_pretraining(arg.corpus, data_dir, arg.steps, {"data.masking_split": mix})


def finetuning(mini: bool, task: str) -> dict:
    """The fine-tuning run's overrides: the mini profile's short runs; in the paper profile the
    paper's GLUE recipe for MNLI (lr chosen on dev) and conll2003's defaults for NER (lr 5e-5,
    batch 32, 3 epochs; PAPER.md gives no NER recipe)."""
    if not mini:
        return common.PAPER_GLUE if task == "mnli" else {}
    return common.MINI_SENTIMENT if task == "rotten_tomatoes" else common.MINI_NER


NOTES = {
    "mini": (
        "BERT-tiny (2 layers, hidden 128), one pre-training run per mix (static masks). "
        + common.MINI_NOTE,
        "Feature-based: with 2 layers, 'the last four hidden layers concatenated' are the "
        "embeddings and both layers (384 wide); the paper's four exclude the embeddings.",
    ),
    "paper": (
        "Paper profile: BERT-base, MNLI-m and CoNLL-2003 dev; NER fine-tuning at lr 5e-5, batch "
        "32, 3 epochs (configs/finetune.py's conll2003 defaults).",
        common.PAPER_GLUE_NOTE.replace("GLUE columns", "MNLI"),
        common.FEATURE_BASED_NOTE,
    ),
}
