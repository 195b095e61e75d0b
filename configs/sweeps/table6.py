r"""BERT Table 6: model size (layers L, hidden H, heads A) against held-out masked-LM perplexity
and fine-tuning accuracy.

  python experiments/launch.py --sweep=configs/sweeps/table6.py:profile=mini \
      --root=runs/sweeps/table6_mini
  python experiments/paper_tables.py --root=runs/sweeps/table6_mini --out=docs/results/table6_mini

Profiles (`arg` keys: profile, scale, seeds, corpus, steps):
  mini   the six sizes shrunk by `scale` (default 8: H/8, L/3 rounded up, A kept, so the head
         widths keep the paper's ratios), pre-trained 1,600 steps of 32 x 64 tokens with a
         2,048-piece WordPiece vocabulary and no dropout on the Wikipedia sample; SST-2 ->
         Rotten Tomatoes.
  paper  the paper's sizes, 1M steps of 256 at length 128 on `corpus=`; MNLI-m, MRPC and SST-2
         from TFDS (scale=1).
"""

from __future__ import annotations

from configs import common as config_common
from configs.sweeps import common

# The paper's rows: (L, H, A) -> LM perplexity, MNLI-m, MRPC, SST-2 (dev accuracy).
PAPER = {
    (3, 768, 12): (5.84, 77.9, 79.8, 88.4),
    (6, 768, 3): (5.24, 80.6, 82.2, 90.7),
    (6, 768, 12): (4.68, 81.9, 84.8, 91.3),
    (12, 768, 12): (3.99, 84.4, 86.7, 92.9),
    (12, 1024, 16): (3.54, 85.7, 86.9, 93.3),
    (24, 1024, 16): (3.23, 86.6, 87.8, 93.7),
}
COLUMNS = ("LM (ppl)", "MNLI-m", "MRPC", "SST-2")


def size(lha: tuple[int, int, int], scale: int) -> tuple[int, int, int]:
    """The row's (L, H, A) shrunk by `scale`: hidden / scale, layers / 3 rounded up (for
    scale > 1), heads as they are (H / scale must stay divisible by A)."""
    layers, hidden, heads = lha
    if scale == 1:
        return lha
    if hidden % scale or (hidden // scale) % heads:
        raise ValueError(f"scale={scale} does not divide hidden={hidden} into {heads} heads.")
    return -(-layers // 3), hidden // scale, heads


def row_name(lha: tuple[int, int, int]) -> str:
    return "/".join(map(str, lha))


def get_sweep(arg: str | None = None) -> common.Sweep:
    arg = config_common.parse_arg(arg, profile="mini", scale=0, seeds=1, corpus="", steps=0)
    if arg.profile not in ("mini", "paper"):
        raise ValueError(f"profile={arg.profile!r}; use 'mini' or 'paper'.")
    mini = arg.profile == "mini"
    scale = arg.scale or (8 if mini else 1)
    jobs, row_x = [], {}
    for lha in PAPER:
        layers, hidden, heads = size(lha, scale)
        row, pre = row_name(lha), f"pretrain_L{layers}_H{hidden}_A{heads}"
        model = {
            "model.num_hidden_layers": layers,
            "model.hidden_size": hidden,
            "model.num_attention_heads": heads,
            "model.intermediate_size": 4 * hidden,
        }
        row_x[row] = float(layers * 12 * hidden**2)  # transformer parameters (not embeddings)
        jobs.append(
            common.Job(
                pre,
                *pretraining(arg, model),
                cells=(common.Cell(row, "LM (ppl)", "end.mlm_perplexity", scale=1.0),),
            )
        )
        tasks = (
            (("sst2", "rotten_tomatoes", "SST-2"),)
            if mini
            else (("mnli", "mnli", "MNLI-m"), ("mrpc", "mrpc", "MRPC"), ("sst2", "sst2", "SST-2"))
        )
        for seed in range(arg.seeds):
            for name, task, column in tasks:
                overrides = {"train.seed": seed}
                if mini:
                    overrides.update(common.MINI_SENTIMENT)
                cell = common.Cell(row, column, "dev.accuracy", seed)
                jobs.append(common.finetune_job(pre, f"{name}_seed{seed}", task, overrides, cell))
    table = common.Table(
        name="table6",
        title="Table 6: model size (held-out MLM perplexity; dev accuracy)",
        row_header="L/H/A",
        rows=tuple(row_name(lha) for lha in PAPER),
        columns=COLUMNS,
        paper=common.paper_cells({row_name(k): v for k, v in PAPER.items()}, COLUMNS),
        lower_is_better=("LM (ppl)",),
        decimals={"LM (ppl)": 2},
        notes=notes(arg.profile, scale),
        row_x=row_x,
        row_x_label="transformer parameters (12 L H^2, at the sizes run)",
    )
    return common.Sweep(f"table6_{arg.profile}", table, tuple(jobs))


# The mini profile's recipe: short sequences, a small vocabulary, twice the other tables' steps
# and no dropout. With 8,192 pieces and 128 tokens every size stayed on the unigram plateau of the
# 2.5 MB corpus after 800 steps (held-out perplexity 828.62, 835.92, 833.63 for the first three
# rows). With 2,048 pieces and 64 tokens but dropout 0.1, 800 steps left the deeper 96-wide sizes
# above 1/96/12 and 8/128/16 far above all (622.20 vs 409.47); dropout off, 8/128/16 ended at
# 402 and 1/96/12 at 403 after 800 steps: tiny models that see each token a few times
# underfit, so dropout only slows them (as in Geiping & Goldstein's "Cramming", 2022).
MINI_STEPS = 2000
MINI_RECIPE = {
    "data.vocab_size": 2048,
    "data.max_seq_length": 32,
    "data.masked_lm_prob": 0.4,
    "data.max_predictions_per_seq": 13,
    "data.next_sentence": False,
    "train.batch_size": 64,
    "model.hidden_dropout_prob": 0.0,
    "model.attention_probs_dropout_prob": 0.0,
}


def pretraining(arg, model: dict) -> tuple[str, dict]:
    if arg.profile == "mini":
        return "configs/pretrain.py:size=tiny,demo,seq=32", {
            **model,
            **common.mini_pretraining("{root}/data", arg.steps or MINI_STEPS),
            **MINI_RECIPE,
        }
    return common.paper_pretraining(arg.corpus, "{root}/data", arg.steps, model)


def notes(profile: str, scale: int) -> tuple[str, ...]:
    if profile == "paper":
        return ("Paper profile: the paper's sizes; MNLI-m, MRPC, SST-2 dev accuracy.",)
    sizes = ", ".join(f"{row_name(k)} -> {row_name(size(k, scale))}" for k in PAPER)
    return (
        f"Sizes shrunk by scale={scale} (rows keep the paper's names): {sizes}. Pre-training "
        f"here runs {MINI_STEPS:,} steps of 64 tokens (not {common.MINI_STEPS} of 128 as below) "
        "with a 2,048-piece WordPiece vocabulary and no dropout. Perplexity on the held-out 5% "
        "of the sample's documents.",
        common.MINI_NOTE,
    )
