r"""BERT Table 7: feature-based NER. Frozen BERT features (one layer or a combination of layers)
feed a randomly initialised 2-layer BiLSTM and a token classifier; against fine-tuning.

  python experiments/launch.py --sweep=configs/sweeps/table7.py:profile=mini \
      --root=runs/sweeps/table7_mini
  python experiments/paper_tables.py --root=runs/sweeps/table7_mini --out=docs/results/table7_mini

Profiles (`arg` keys: profile, seeds, init):
  mini   the real pre-trained MiniLM-L6-H384 (built-in sample) on WNUT-16 (built-in real data),
         a 2 x 192-unit BiLSTM, 4 epochs at length 48. 21 min on 2 CPU cores (measured).
  paper  `init=` a BERT-base checkpoint (Hugging Face dir or Google TF checkpoint) on TFDS
         conll2003, a 2 x 768-unit BiLSTM.
"""

from __future__ import annotations

from configs import common as config_common
from configs.sweeps import common

# row -> (head.layers, paper dev F1); "fine-tune" trains the whole model without a BiLSTM.
ROWS = {
    "Fine-tuning approach": ("fine-tune", 96.4),
    "Embeddings": ("embeddings", 91.0),
    "Second-to-Last Hidden": ("second_to_last", 95.6),
    "Last Hidden": ("last", 94.9),
    "Weighted Sum Last Four Hidden": ("sum_last_four", 95.9),
    "Concat Last Four Hidden": ("concat_last_four", 96.1),
    "Weighted Sum All 12 Layers": ("sum_all", 95.5),
}
COLUMN = "Dev F1"
# The mini profile's feature-based rows (MiniLM-L6, 384 wide): a BiLSTM of 192 units per
# direction for the profile's 4 epochs, at the shared lr (the settings of docs/results/table7_mini).
MINI_FEATURE_BASED = {"head.bilstm_size": 192, "train.num_epochs": 4}


def get_sweep(arg: str | None = None) -> common.Sweep:
    arg = config_common.parse_arg(arg, profile="mini", seeds=1, init="")
    if arg.profile not in ("mini", "paper"):
        raise ValueError(f"profile={arg.profile!r}; use 'mini' or 'paper'.")
    mini = arg.profile == "mini"
    if mini:
        init, task = arg.init or "sample:minilm", "wnut16"
        base = {"task.max_seq_length": 48, "train.num_epochs": 4, "train.keep_train_state": False}
    else:
        if not arg.init:
            raise ValueError("profile=paper needs init= (a BERT-base checkpoint directory).")
        init, task, base = arg.init, "conll2003", {}
    jobs = []
    for row, (layers, _) in ROWS.items():
        if layers == "fine-tune":
            head = {"optimizer.learning_rate": 1e-4 if mini else 5e-5}
        else:  # the feature-based recipe Table 8 shares (common.FEATURE_BASED)
            head = {
                "head.layers": layers,
                **common.FEATURE_BASED,
                **(MINI_FEATURE_BASED if mini else {}),
            }
        for seed in range(arg.seeds):
            overrides = {"init_checkpoint": init, "train.seed": seed, **base, **head}
            jobs.append(
                common.Job(
                    f"{layers}_seed{seed}",
                    f"configs/finetune.py:task={task}",
                    overrides,
                    cells=(common.Cell(row, COLUMN, "dev.f1", seed),),
                )
            )
    table = common.Table(
        name="table7",
        title="Table 7: CoNLL-2003 NER, fine-tuning vs feature-based (dev F1)",
        row_header="System",
        rows=tuple(ROWS),
        columns=(COLUMN,),
        paper={(row, COLUMN): f1 for row, (_, f1) in ROWS.items()},
        notes=NOTES[arg.profile],
    )
    return common.Sweep(f"table7_{arg.profile}", table, tuple(jobs))


NOTES = {
    "mini": (
        "Mini profile: the pre-trained MiniLM-L6-H384 (6 layers: 'All 12 Layers' is all 6) on "
        "WNUT-16 tweets (entity F1 of a fixed 20% held out), 4 epochs at 48 tokens; feature-based "
        "rows: frozen encoder, 2-layer BiLSTM of 192 units per direction, lr 1e-3. The paper: "
        "BERT-base on CoNLL-2003, whose entities are far easier than WNUT-16's.",
    ),
    "paper": (
        "Paper profile: BERT-base on CoNLL-2003 dev; the fine-tuning row at lr 5e-5, batch 32, "
        "3 epochs (configs/finetune.py's conll2003 defaults).",
        common.FEATURE_BASED_NOTE,
    ),
}
