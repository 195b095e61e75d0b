r"""The paper's fine-tuning grid as launcher jobs (one per point and seed): batch {16, 32} x
learning rate {5e-5, 3e-5, 2e-5} x epochs {2, 3, 4}, best point by the mean dev metric.

  python experiments/launch.py --parallel=2 \
      --sweep=configs/sweeps/finetune_grid.py:task=rte,init=/path/to/bert-base-uncased,seeds=3 \
      --root=runs/sweeps/rte_grid
  python experiments/paper_tables.py --root=runs/sweeps/rte_grid --out=docs/results/rte_grid

(`python -m bert_jax.main --config=configs/finetune.py:task=rte,grid` runs the same grid in one
process; this sweep spreads it over processes or cluster jobs.) `arg` keys: task, init (default
sample:minilm), seeds, and mini (a 1 x 2 x 1 grid at length 64 for a CPU check).
"""

from __future__ import annotations

from configs import common as config_common
from configs import finetune
from configs.sweeps import common

GRID = {"batch_size": (16, 32), "learning_rate": (5e-5, 3e-5, 2e-5), "num_epochs": (2, 3, 4)}
MINI_GRID = {"batch_size": (32,), "learning_rate": (1e-4, 5e-5), "num_epochs": (1,)}


def point_name(bs: int, lr: float, epochs: int) -> str:
    return f"bs{bs}_lr{lr:g}_ep{epochs}"


def get_sweep(arg: str | None = None) -> common.Sweep:
    arg = config_common.parse_arg(
        arg, task="rotten_tomatoes", init="sample:minilm", seeds=3, mini=False
    )
    if arg.task not in finetune.TASKS:
        raise ValueError(f"task={arg.task!r} is not one of {sorted(finetune.TASKS)}.")
    grid = MINI_GRID if arg.mini else GRID
    rows, jobs = [], []
    for bs in grid["batch_size"]:
        for lr in grid["learning_rate"]:
            for epochs in grid["num_epochs"]:
                row = point_name(bs, lr, epochs)
                rows.append(row)
                for seed in range(arg.seeds):
                    overrides = {
                        "init_checkpoint": arg.init,
                        "train.batch_size": bs,
                        "optimizer.learning_rate": lr,
                        "train.num_epochs": epochs,
                        "train.seed": seed,
                        "train.keep_train_state": False,
                        **({"task.max_seq_length": 64} if arg.mini else {}),
                    }
                    jobs.append(
                        common.Job(
                            f"{row}/seed{seed}",
                            f"configs/finetune.py:task={arg.task}",
                            overrides,
                            cells=(
                                common.Cell(
                                    row, "dev", "dev.{metric}", seed, common.cell_scale(arg.task)
                                ),
                            ),
                        )
                    )
    table = common.Table(
        name=f"grid_{arg.task}",
        title=f"Fine-tuning grid on {arg.task} (dev, mean +- std over {arg.seeds} seeds)",
        row_header="point",
        rows=tuple(rows),
        columns=("dev",),
        paper={},
        notes=(f"Encoder: {arg.init}. The metric is the task's model-selection metric.",),
    )
    return common.Sweep(f"grid_{arg.task}", table, tuple(jobs))
