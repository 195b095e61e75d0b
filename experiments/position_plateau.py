r"""How long does BERT take to learn to read its neighbours? A synthetic bigram chain.

    python experiments/position_plateau.py --seq=32 --vocab=256 --steps=1600
    python experiments/position_plateau.py --seq=64 --vocab=256 --steps=2400

Each row is a random walk on a fixed table that gives every token `successors` possible next
tokens, so the masked token is predictable from its left neighbour (accuracy about
1/successors, more with the right neighbour too) and barely from the bag of tokens around it.
The project's pre-training step (masked LM, AdamW with warmup and linear decay, fresh rows
every step) trains a model of the given size; the script prints the masked-token accuracy
per window of steps. A model with learned absolute positions sits on a plateau near chance
until attention to the neighbouring position forms; the plateau grows with the row length
(1/96/12, 256 token types, 4 successors: with 32-token rows accuracy is 0.014 at step 600 and
0.237 at step 1,600; with 64-token rows it is still 0.014 at step 2,400).
This is why configs/sweeps/table6.py pre-trains its mini models on 32-token rows.
"""

from __future__ import annotations

import functools
import json
import pathlib
import sys
import time

import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS
FIRST_ID = 5  # ids below are special tokens; 3 stands in for [MASK]
MASK_ID = 3


def _define_flags() -> None:
    flags.DEFINE_integer("layers", 1, "Encoder layers.")
    flags.DEFINE_integer("hidden", 96, "Hidden size (the intermediate size is 4x).")
    flags.DEFINE_integer("heads", 12, "Attention heads.")
    flags.DEFINE_integer("vocab", 256, "Token types of the chain.")
    flags.DEFINE_integer("successors", 4, "Possible next tokens of each token.")
    flags.DEFINE_integer("seq", 32, "Tokens per row.")
    flags.DEFINE_integer("predictions", 10, "Masked positions per row.")
    flags.DEFINE_integer("batch", 32, "Rows per step.")
    flags.DEFINE_integer("steps", 1600, "Training steps (warmup: the first 10%).")
    flags.DEFINE_float("learning_rate", 2e-3, "Peak learning rate.")
    flags.DEFINE_integer("window", 200, "Steps per printed accuracy.")
    flags.DEFINE_integer("seed", 0, "Seed of the chain, the rows and the parameters.")


def successor_table(rng: np.random.Generator, vocab: int, successors: int) -> np.ndarray:
    """[vocab, successors]: the tokens that may follow each token (rows below FIRST_ID unused)."""
    return rng.integers(FIRST_ID, vocab, (vocab, successors))


def chain_batch(rng, table, batch: int, seq: int, predictions: int) -> dict[str, np.ndarray]:
    """A pre-training batch of random walks on `table`, `predictions` positions per row (never
    the first) replaced by MASK_ID. No NSP: next_sentence_labels are all 0."""
    vocab, successors = table.shape
    ids = np.empty((batch, seq), np.int64)
    ids[:, 0] = rng.integers(FIRST_ID, vocab, batch)
    for i in range(1, seq):
        ids[:, i] = table[ids[:, i - 1], rng.integers(0, successors, batch)]
    pos = np.sort(
        np.stack([rng.choice(np.arange(1, seq), predictions, replace=False) for _ in range(batch)]),
        axis=1,
    )
    labels = np.take_along_axis(ids, pos, 1)
    np.put_along_axis(ids, pos, MASK_ID, 1)
    return {
        "input_ids": ids.astype(np.int32),
        "input_mask": np.ones((batch, seq), np.int32),
        "segment_ids": np.zeros((batch, seq), np.int32),
        "masked_lm_positions": pos.astype(np.int32),
        "masked_lm_ids": labels.astype(np.int32),
        "masked_lm_weights": np.ones((batch, predictions), np.float32),
        "next_sentence_labels": np.zeros(batch, np.int32),
    }


def train_curve(
    *, layers, hidden, heads, vocab, successors, seq, predictions, batch, steps, learning_rate,
    window, seed=0, log=print,
) -> list[float]:  # fmt: skip
    """Mean masked-token accuracy of each window of training steps."""
    import jax  # noqa: PLC0415

    from bert_jax import optim, train  # noqa: PLC0415
    from bert_jax.heads import BertForPreTraining  # noqa: PLC0415
    from bert_jax.model import BertConfig  # noqa: PLC0415
    from configs import pretrain  # noqa: PLC0415

    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=seq,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    opt = pretrain.get_config().optimizer  # BERT's AdamW, clipping and linear schedule
    opt.update(learning_rate=learning_rate, warmup_steps=steps // 10)
    model = BertForPreTraining(config)
    tx, _ = optim.make_optimizer(opt, steps)
    state = train.init_state(model, tx, jax.random.PRNGKey(seed), seq, predictions)
    step = jax.jit(functools.partial(train.train_step, model=model, optimizer=tx))
    rng = np.random.default_rng(seed)
    table = successor_table(rng, vocab, successors)
    curve, accuracy, start = [], [], time.time()
    for i in range(steps):
        state, metrics = step(state, chain_batch(rng, table, batch, seq, predictions))
        accuracy.append(float(metrics["mlm_accuracy"]))
        if (i + 1) % window == 0 or i + 1 == steps:
            curve.append(float(np.mean(accuracy)))
            log(
                f"step {i + 1}: masked-token accuracy {curve[-1]:.4f} ({time.time() - start:.0f} s)"
            )
            accuracy = []
    return curve


def main(argv: list[str]) -> None:
    del argv
    names = ("layers", "hidden", "heads", "vocab", "successors", "seq", "predictions", "batch",
             "steps", "learning_rate", "window", "seed")  # fmt: skip
    args = {name: FLAGS[name].value for name in names}
    print(f"chance 1/{args['vocab'] - FIRST_ID}; left neighbour alone about 1/{args['successors']}")
    curve = train_curve(**args)
    print(json.dumps({**args, "accuracy_per_window": [round(a, 4) for a in curve]}))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
