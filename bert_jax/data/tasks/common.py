"""What every fine-tuning task module provides, and the helpers they share.

A task module (glue.py, classify.py, ner.py, swag.py, squad.py) turns a data source into
examples, examples into features, and the model's outputs on those features into metrics and
prediction files. The fine-tuning loop (bert_jax/finetune.py) only sees these contracts.

Features: a dict of numpy arrays, one row per model input (a long text may give several rows):
- model inputs, int32: `input_ids`, `input_mask`, `segment_ids`, [N, S] ([N, C, S] for multiple
  choice);
- targets, by head:
    classification  `label` int32 [N]
    regression      `label` float32 [N]
    multilabel      `label` float32 [N, L] (multi-hot)
    token           `label` int32 [N, S], `label_weights` float32 [N, S] (1 where scored: the
                    first word piece of each word; 0 elsewhere, incl. specials and padding)
    span            `start_position`, `end_position` int32 [N] (0, i.e. [CLS], when the answer is
                    not inside the row's window or there is none)
    choice          `label` int32 [N]
- anything else (e.g. `example_index` int32 [N], the row's example) is metadata: kept on the host
  for evaluation, never fed to the model.
Test sets without labels still carry the target keys (filled with 0) so shapes stay uniform.

Outputs handed back to a task's evaluate function: numpy arrays, rows aligned with the features:
`logits` float32 [N, C] (classification, choice), [N, 1] (regression), [N, L] (multilabel),
[N, S, C] (token); `start_logits`, `end_logits` [N, S] (span).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

HEADS = ("classification", "regression", "multilabel", "token", "span", "choice")
MODEL_INPUTS = ("input_ids", "input_mask", "segment_ids")


def tfds_examples(name: str, split: str, data_dir: str | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a public TFDS dataset as numpy dicts (bytes for text), e.g. ("glue/sst2", "train").

    Reads a prepared copy from `data_dir` / TFDS_DATA_DIR; otherwise downloads through TFDS,
    failing within seconds with a clear message when the network is unreachable.
    `tfds.testing.mock_data` replaces the reading in tests.
    """
    import tensorflow_datasets as tfds

    from bert_jax.data import tfds_corpus

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
    data_dir = os.path.expanduser(data_dir) if data_dir else None
    try:
        ds = tfds.load(name, split=split, data_dir=data_dir, download=False, shuffle_files=False)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as e:
        if isinstance(e, tfds.core.registered.DatasetNotFoundError):
            raise ValueError(f"{name!r} is not a TFDS dataset name ({e}).") from e
        problem = tfds_corpus.reachability_problem()
        if problem:
            raise ConnectionError(
                f"TFDS dataset {name!r} is not prepared in {data_dir or '~/tensorflow_datasets'} "
                f"and the network is unreachable ({problem}). On a machine with internet run "
                f"`tfds build {name} --data_dir=<dir>` and copy <dir> here (set TFDS_DATA_DIR), "
                "or point the config at local files instead."
            ) from e
        ds = tfds.load(name, split=split, data_dir=data_dir, download=True, shuffle_files=False)
    yield from tfds.as_numpy(ds)


def text(value: Any) -> str:
    """A TFDS text field (bytes) or a plain string as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, dev indices): a seeded random `fraction` of range(n) held out as dev.

    For corpora that ship without a dev split (e.g. the Rotten Tomatoes sample). The same
    (n, fraction, seed) always gives the same split, whatever the fine-tuning seed.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"dev_fraction={fraction}; use a value in (0, 1), e.g. 0.2.")
    order = np.random.default_rng(seed).permutation(n)
    n_dev = max(1, int(round(n * fraction)))
    return np.sort(order[n_dev:]), np.sort(order[:n_dev])
