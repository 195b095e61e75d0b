"""SWAG-style multiple choice: pick the ending that follows a context.

As in the BERT paper's SWAG setup, choice i is the sentence pair
([CLS] context [SEP] start + " " + ending_i [SEP]) and the model scores each pair with one
logit; a softmax over the choices is trained against the gold index.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bert_jax.data.tasks import metrics

# The official SWAG CSVs (github.com/rowanz/swagaf, data/{train,val,test}.csv) start with an
# unnamed index column; test.csv has no label column.
SWAG_COLUMNS = (
    "",
    "video-id",
    "fold-ind",
    "startphrase",
    "sent1",
    "sent2",
    "gold-source",
    "ending0",
    "ending1",
    "ending2",
    "ending3",
)
NUM_SWAG_ENDINGS = 4


@dataclasses.dataclass
class ChoiceExample:
    """A context, the start of the next sentence, its candidate endings, the gold index."""

    guid: str
    context: str
    start: str
    endings: list[str]
    label: int | None

    def choices(self) -> list[str]:
        """The second segment of each pair: start + " " + ending (just the ending if no start)."""
        return [f"{self.start} {ending}".strip() for ending in self.endings]


def _check_label(value: Any, n_choices: int, where: str) -> int:
    """An ending index from a CSV field ("2") or a JSON number (2); anything else is an error."""
    label = -1
    if isinstance(value, str) and value.strip().isdigit():
        label = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        label = value
    if not 0 <= label < n_choices:
        raise ValueError(
            f"{where}: label {value!r} is not an ending index; expected an integer in "
            f"[0, {n_choices})."
        )
    return label


def read_swag_csv(path: str | os.PathLike) -> list[ChoiceExample]:
    """Examples of an official SWAG CSV (train.csv, val.csv, or test.csv without labels)."""
    name = os.fspath(path)
    with open(name, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{name} is empty; expected a SWAG CSV with a header row.")
        has_label = header[-1:] == ["label"]
        expected = [*SWAG_COLUMNS, "label"] if has_label else list(SWAG_COLUMNS)
        if header != expected:
            raise ValueError(
                f"{name}:1: header {header} is not SWAG's; expected "
                f"{','.join(SWAG_COLUMNS)}[,label]."
            )
        column = {key: i for i, key in enumerate(header)}
        examples = []
        for row in reader:
            where = f"{name}:{reader.line_num}"
            if not row:
                continue  # a trailing empty line
            if len(row) != len(header):
                raise ValueError(
                    f"{where}: {len(row)} fields, expected {len(header)} ({','.join(header)}); "
                    "is a field with a comma unquoted?"
                )
            endings = [row[column[f"ending{i}"]] for i in range(NUM_SWAG_ENDINGS)]
            label = (
                _check_label(row[column["label"]], NUM_SWAG_ENDINGS, where) if has_label else None
            )
            guid = f"{os.path.basename(name)}-{row[0] or len(examples)}"
            examples.append(
                ChoiceExample(guid, row[column["sent1"]], row[column["sent2"]], endings, label)
            )
    return examples


def read_choice_jsonl(path: str | os.PathLike) -> list[ChoiceExample]:
    """Examples of a JSON-lines file: {"context", "start" (optional), "endings", "label"}.

    `label` may be missing or null for unlabelled test data; `guid` is used when present.
    """
    name = os.fspath(path)
    examples = []
    with open(name, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{name}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e}).") from e
            endings = record.get("endings") if isinstance(record, dict) else None
            ok = (
                isinstance(endings, list)
                and len(endings) >= 2
                and all(isinstance(x, str) for x in [*endings, record.get("context")])
                and isinstance(record.get("start", ""), str)
            )
            if not ok:
                raise ValueError(
                    f'{where}: expected {{"context": str, "start": str (optional), "endings": '
                    f'[at least 2 str], "label": int or null}}, got {line.strip()[:200]!r}.'
                )
            label = record.get("label")
            if label is not None:
                label = _check_label(label, len(endings), where)
            guid = str(record.get("guid", f"{os.path.basename(name)}-{len(examples)}"))
            examples.append(
                ChoiceExample(guid, record["context"], record.get("start", ""), endings, label)
            )
    return examples


def read_choices(path: str | os.PathLike) -> list[ChoiceExample]:
    """read_swag_csv for .csv files, read_choice_jsonl for .jsonl/.json."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".csv":
        return read_swag_csv(path)
    if suffix in (".jsonl", ".json"):
        return read_choice_jsonl(path)
    raise ValueError(f"{os.fspath(path)!r}: unknown format {suffix!r}; use .csv or .jsonl.")


def tfds_swag(split: str, data_dir: str | None = None) -> list[ChoiceExample]:
    """Not available: TFDS has no SWAG dataset. Kept so that the error says what to do."""
    del split, data_dir
    # Checked against tensorflow_datasets 4.9.10: list_builders() has "hellaswag" (a later,
    # different benchmark with its own contexts and labels) but no "swag".
    raise NotImplementedError(
        "TFDS has no 'swag' dataset ('hellaswag' is a different benchmark). Download train.csv, "
        "val.csv and test.csv from https://github.com/rowanz/swagaf/tree/master/data and read "
        "them with swag.read_swag_csv (or point the config at those files)."
    )


def featurize(
    examples: Sequence[ChoiceExample], tokenizer: Any, max_seq_length: int
) -> dict[str, np.ndarray]:
    """Multiple-choice features (common.py's "choice" head): inputs [N, C, S], `label` [N].

    Each pair is truncated with BERT's pair rule (the longer side loses tokens first), as the
    reference SWAG code does. Unlabelled examples get label 0. Metadata: `example_index` [N].
    """
    if not examples:
        raise ValueError("no examples to featurize.")
    n_choices = len(examples[0].endings)
    for ex in examples:
        if len(ex.endings) != n_choices:
            raise ValueError(
                f"example {ex.guid!r} has {len(ex.endings)} endings but {examples[0].guid!r} has "
                f"{n_choices}; every example needs the same number so the batch is [N, C, S]."
            )
    contexts = [ex.context for ex in examples for _ in range(n_choices)]
    choices = [choice for ex in examples for choice in ex.choices()]
    encoded = tokenizer(contexts, choices, max_length=max_seq_length, padding="max_length")
    shape = (len(examples), n_choices, max_seq_length)
    out = {key: np.asarray(encoded[key], np.int32).reshape(shape) for key in encoded}
    out["label"] = np.array([ex.label or 0 for ex in examples], np.int32)
    out["example_index"] = np.arange(len(examples), dtype=np.int32)
    return out


def _check_logits(examples: Sequence[ChoiceExample], logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != len(examples):
        raise ValueError(
            f"logits have shape {logits.shape}; expected [{len(examples)} examples, choices]."
        )
    return logits


def evaluate(examples: Sequence[ChoiceExample], logits: np.ndarray) -> dict[str, float]:
    """{"accuracy"}: the fraction of examples whose highest-scoring ending is the gold one."""
    logits = _check_logits(examples, logits)
    unlabelled = [ex.guid for ex in examples if ex.label is None]
    if unlabelled:
        raise ValueError(f"examples {unlabelled[:3]} have no label; they cannot be scored.")
    return {"accuracy": metrics.accuracy([ex.label for ex in examples], logits.argmax(-1))}


def write_predictions(
    path: str | os.PathLike, examples: Sequence[ChoiceExample], logits: np.ndarray
) -> None:
    """CSV with a header: guid, predicted ending index, gold label (empty when unknown)."""
    predicted = _check_logits(examples, logits).argmax(-1)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["guid", "prediction", "label"])
        for ex, p in zip(examples, predicted, strict=True):
            writer.writerow([ex.guid, int(p), "" if ex.label is None else ex.label])
