r"""How well do simple counts predict the masked tokens of held-out data? A floor for MLM accuracy.

    python experiments/mlm_baselines.py --data=runs/sweeps/table6_mini/data

Reads the training instances of a `prepare` directory (their original tokens: masked_lm_ids
put back), counts tokens, (left neighbour, token) pairs and (left, right neighbour, token)
triples (never with [CLS], [SEP], [PAD] or [MASK] as the token: no target is one), and scores
the masked positions of eval.tfrecord with three predictors:
  unigram       always the most frequent token (and the add-one unigram perplexity)
  left_bigram   the most frequent token after the left neighbour (else unigram)
  neighbours    the most frequent token between the left and right neighbours (else
                left_bigram); the neighbours are read as the model sees them, [MASK] included
Each is scored two ways. `<name>_accuracy`: over all predictions, copying the visible token
where it is not [MASK] (BERT keeps 10% of the targets unchanged, so copying alone is worth
about 0.1): read it against a run's mlm_accuracy. `hidden_<name>_accuracy`: over the
predictions whose answer is not visible ([MASK] or a random token): read it against
mlm_hidden_accuracy. A model whose mlm_hidden_accuracy is at `hidden_unigram` uses no context
at all, whatever its mlm_accuracy.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import sys
from collections.abc import Collection

import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS
# Never a masked-LM target: the recipe masks neither [CLS]/[SEP] nor padding, and [MASK] stands
# in for targets. ([UNK] stays: it is a text token, and the recipe masks it like any other.)
NEVER_PREDICTED = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")


def _define_flags() -> None:
    flags.DEFINE_string("data", None, "A directory written by bert_jax.data.prepare.")
    flags.DEFINE_integer("max_instances", 0, "Training instances counted (0: all).")
    flags.mark_flag_as_required("data")


def original_tokens(features: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Each instance's real tokens with the masked ones put back."""
    ids = features["input_ids"].copy()
    rows = np.arange(len(ids))[:, None]
    real = features["masked_lm_weights"] > 0
    positions = np.where(real, features["masked_lm_positions"], 0)
    ids[rows, positions] = np.where(real, features["masked_lm_ids"], ids[rows, positions])
    return [row[: int(n)] for row, n in zip(ids, features["input_mask"].sum(1), strict=True)]


def count(instances: list[np.ndarray], never_predicted: Collection[int]) -> tuple:
    """Counts of tokens, (left neighbour, token) and (left, right neighbour, token) pairs.

    Ids in `never_predicted` count as neighbours but never as the token: BERT's recipe never
    masks [CLS], [SEP] or padding (bert_jax.data.masking) and no text holds [MASK], so a guess
    of one is always wrong (with NSP, [SEP] is the most frequent token of 32-token rows)."""
    skip = set(never_predicted)
    unigram = collections.Counter()
    left = collections.defaultdict(collections.Counter)
    both = collections.defaultdict(collections.Counter)
    for ids in instances:
        t = ids.tolist()
        unigram.update(x for x in t if x not in skip)
        for a, b in zip(t[:-1], t[1:], strict=True):
            if b not in skip:
                left[a][b] += 1
        for a, b, c in zip(t[:-2], t[1:-1], t[2:], strict=True):
            if b not in skip:
                both[a, c][b] += 1
    return unigram, left, both


def score(
    counts: tuple, features: dict[str, np.ndarray], vocab_size: int, mask_id: int
) -> dict[str, float]:
    """Each predictor's held-out accuracy two ways: `<name>_accuracy` over every prediction,
    copying the visible token where it is not [MASK] (the kept 10% are right, the random 10%
    wrong: what a model that has learnt to copy scores, comparable to mlm_accuracy), and
    `hidden_<name>_accuracy` over the predictions whose answer is not visible (comparable to
    mlm_hidden_accuracy)."""
    unigram, left, both = counts
    top = unigram.most_common(1)[0][0]
    total = sum(unigram.values())
    best_left = {a: c.most_common(1)[0][0] for a, c in left.items()}
    best_both = {k: c.most_common(1)[0][0] for k, c in both.items()}
    names = ("unigram", "left_bigram", "neighbours")
    hits, hidden_hits = collections.Counter(), collections.Counter()
    nll, n, hidden = 0.0, 0, 0
    for ids, mask, positions, targets, weights in zip(
        features["input_ids"], features["input_mask"], features["masked_lm_positions"],
        features["masked_lm_ids"], features["masked_lm_weights"], strict=True,
    ):  # fmt: skip
        length = int(mask.sum())
        for p, t in zip(positions[weights > 0], targets[weights > 0], strict=True):
            a = int(ids[p - 1]) if p > 0 else None
            c = int(ids[p + 1]) if p + 1 < length else None
            guess_left = best_left.get(a, top)
            guess_both = best_both.get((a, c), guess_left)
            guesses = dict(zip(names, (top, guess_left, guess_both), strict=True))
            seen = int(ids[p])
            for name, guess in guesses.items():
                hits[name] += t == (guess if seen == mask_id else seen)
                hidden_hits[name] += seen != t and t == guess
            hidden += int(seen != t)
            nll -= np.log((unigram[int(t)] + 1) / (total + vocab_size))
            n += 1
    out = {f"{k}_accuracy": round(hits[k] / n, 4) for k in names}
    out.update({f"hidden_{k}_accuracy": round(hidden_hits[k] / max(hidden, 1), 4) for k in names})
    out["unigram_perplexity"] = round(float(np.exp(nll / n)), 2)
    out["predictions"], out["hidden_predictions"] = n, hidden
    return out


def main(argv: list[str]) -> None:
    del argv
    from bert_jax import tokenization  # noqa: PLC0415
    from bert_jax.data import packing, pipeline  # noqa: PLC0415

    train = {}
    for path in pipeline.list_files(os.path.join(FLAGS.data, "train-*.tfrecord")):
        for k, v in packing.read_records(path).items():
            train.setdefault(k, []).append(v)
    train = {k: np.concatenate(v) for k, v in train.items()}
    if FLAGS.max_instances:
        train = {k: v[: FLAGS.max_instances] for k, v in train.items()}
    vocab = tokenization.read_vocab(os.path.join(FLAGS.data, "vocab.txt"))
    never = [vocab[t] for t in NEVER_PREDICTED]
    counts = count(original_tokens(train), never)
    held_out = packing.read_records(os.path.join(FLAGS.data, "eval.tfrecord"))
    result = {"data": FLAGS.data, "train_instances": len(train["input_ids"])}
    # The add-one perplexity spreads over the tokens that can be a target.
    scores = score(counts, held_out, len(vocab) - len(never), vocab[tokenization.MASK])
    print(json.dumps({**result, **scores}))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
