r"""How much of a text-classification task do an encoder's frozen features already hold?

    python experiments/linear_probe.py --checkpoint=runs/demo
    python experiments/linear_probe.py --checkpoint=runs/demo --random_init   # the baseline

For every layer (the embedding output, then each transformer layer) it averages the frozen
features over each text's real tokens ([CLS] and [SEP] included, padding not), standardises
them on the training split, fits a logistic regression (scikit-learn, L2, C=1) on the training
split of a built-in task and prints its dev accuracy. `--random_init` scores the same
architecture with freshly initialised weights: what pre-training added is the difference.
A pre-trained encoder whose probe is no better than its random twin's has learnt nothing the
task can use without fine-tuning (docs/results/README.md, "Does pre-training on the sample
transfer to Rotten Tomatoes?").
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
from absl import app, flags, logging

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS
TASKS = ("rotten_tomatoes", "chnsenti")


def _define_flags() -> None:
    flags.DEFINE_string("checkpoint", None, "Anything bert_jax.from_pretrained reads.")
    flags.DEFINE_enum("task", "rotten_tomatoes", TASKS, "Built-in text task (fixed 20% dev).")
    flags.DEFINE_integer("max_seq_length", 64, "Tokens per text, [CLS]/[SEP] included.")
    flags.DEFINE_bool("random_init", False, "Probe a fresh init of the same architecture.")
    flags.DEFINE_integer("seed", 0, "Seed of --random_init.")
    flags.DEFINE_integer("batch_size", 256, "Texts per forward pass.")
    flags.mark_flag_as_required("checkpoint")


def mean_features(model, variables, tok, texts, *, max_length: int, batch_size: int = 256):
    """[layers + 1, N, H] float32: each layer's features averaged over each text's real tokens."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    @jax.jit
    def pooled(variables, batch):
        out = model.apply(variables, **batch)
        mask = batch["input_mask"][..., None].astype(jnp.float32)
        return jnp.stack([(h * mask).sum(1) / mask.sum(1) for h in out["hidden_states"]])

    chunks = []
    for i in range(0, len(texts), batch_size):
        batch = tok(texts[i : i + batch_size], max_length=max_length, padding="max_length")
        chunks.append(np.asarray(pooled(variables, batch)))
    return np.concatenate(chunks, axis=1)


def probe_accuracy(x_train, y_train, x_dev, y_dev) -> float:
    """Dev accuracy of a logistic regression on features standardised with train statistics."""
    try:
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    except ImportError as e:  # a test-only dependency of the package
        raise SystemExit("linear_probe needs scikit-learn: pip install -e '.[test]'") from e
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    clf = LogisticRegression(C=1.0, max_iter=2000)
    clf.fit((x_train - mean) / std, y_train)
    return float(clf.score((x_dev - mean) / std, y_dev))


def run(checkpoint: str, task: str, *, max_length: int, random_init: bool, seed: int,
        batch_size: int = 256) -> dict:  # fmt: skip
    import jax  # noqa: PLC0415

    import bert_jax  # noqa: PLC0415
    from bert_jax.data.tasks import classify  # noqa: PLC0415

    tok, model, variables = bert_jax.from_pretrained(checkpoint)
    train, dev, _ = getattr(classify, task)()
    if random_init:
        example = tok([train[0].text_a], max_length=max_length, padding="max_length")
        variables = model.init(jax.random.PRNGKey(seed), **example)
    # Both splits in one call: one compilation of the forward pass.
    texts = [e.text_a for e in (*train, *dev)]
    feats = mean_features(model, variables, tok, texts, max_length=max_length,
                          batch_size=batch_size)  # fmt: skip
    x_train, x_dev = feats[:, : len(train)], feats[:, len(train) :]
    y_train = np.array([e.label for e in train])
    y_dev = np.array([e.label for e in dev])
    layers = {}
    for layer in range(feats.shape[0]):
        name = "embeddings" if layer == 0 else f"layer_{layer}"
        layers[name] = round(probe_accuracy(x_train[layer], y_train, x_dev[layer], y_dev), 4)
    majority = max(np.mean(y_dev), 1 - np.mean(y_dev))
    return {
        "checkpoint": checkpoint,
        "random_init": random_init,
        "task": task,
        "train": len(train),
        "dev": len(dev),
        "majority_class": round(float(majority), 4),
        "dev_accuracy": layers,
    }


def main(argv) -> None:
    del argv
    if not FLAGS["verbosity"].present:  # Orbax logs each restore at INFO; the result is printed
        logging.set_verbosity(logging.WARNING)
    result = run(
        FLAGS.checkpoint,
        FLAGS.task,
        max_length=FLAGS.max_seq_length,
        random_init=FLAGS.random_init,
        seed=FLAGS.seed,
        batch_size=FLAGS.batch_size,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
