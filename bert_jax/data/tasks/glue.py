"""GLUE: the nine sentence and sentence-pair tasks, from TFDS or the official GLUE download.

    examples = glue.load("mrpc", "dev")                          # TFDS glue/mrpc
    examples = glue.load("mrpc", "dev", source="glue_data")      # glue_data/MRPC/dev.tsv
    features = glue.featurize("mrpc", examples, tokenizer, max_seq_length=128)
    ... logits [N, 2] from the model ...
    glue.evaluate("mrpc", examples, logits)                      # {"f1", "accuracy", "combined"}
    glue.write_test_predictions("mrpc", test_examples, test_logits, "submission/")

Examples look the same whatever the source: labels are indices into `GlueTask.label_names` (a
float score for STS-B) and None for unlabelled test rows, and `index` is the row's id in the GLUE
file (TFDS's `idx`), which the leaderboard files need.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import pathlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from bert_jax.data.tasks import common

# Texts are tokenized in chunks so the Rust encodings of a 400k-example task never coexist.
_CHUNK = 4096
# CoLA's train and dev files are the only GLUE files without a header row; these are their columns
# (the third is the original author's acceptability mark).
_COLA_HEADERLESS = ("source", "label", "original_label", "sentence")


@dataclasses.dataclass(frozen=True)
class SplitSource:
    """Where one split lives: its TFDS split name and its file in the GLUE download."""

    tfds_split: str
    file: str
    # Only MNLI's diagnostic set (AX) lives elsewhere: TFDS config glue/ax, folder diagnostic/.
    tfds_name: str | None = None
    folder: str | None = None


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """One GLUE task: its TFDS names, its GLUE file layout, its head and metrics."""

    name: str
    tfds_name: str
    # TFDS feature names of the text(s): text_a, then text_b for pair tasks.
    text_keys: tuple[str, ...]
    # TFDS ClassLabel order; () for the regression task (STS-B).
    label_names: tuple[str, ...]
    head: str
    # The dev metric used for model selection (as reported in the BERT paper).
    metric: str
    splits: Mapping[str, SplitSource]
    # The task's folder in the GLUE download, and the column names its files use for the texts,
    # the label and the row id (matched to text_keys / "label" / "idx").
    glue_dir: str
    file_text_columns: tuple[str, ...]
    file_label_column: str
    file_index_column: str | None = "index"
    # Test split -> leaderboard file name.
    submission_files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Whether GLUE's files (and the leaderboard) write labels as names rather than 0/1.
    string_labels: bool = False
    # Other names accepted for a split (MNLI's "dev" is dev_matched, as in BERT's run_classifier).
    split_aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PairExample:
    """One GLUE example; `label` is None for test rows, `index` the GLUE row id."""

    guid: str
    text_a: str
    text_b: str | None
    label: int | float | None
    index: int


def _standard_splits(train: bool = True) -> dict[str, SplitSource]:
    splits = {
        "train": SplitSource("train", "train.tsv"),
        "dev": SplitSource("validation", "dev.tsv"),
        "test": SplitSource("test", "test.tsv"),
    }
    return splits if train else {k: v for k, v in splits.items() if k != "train"}


def _task(name: str, glue_dir: str, **kwargs: Any) -> GlueTask:
    kwargs.setdefault("splits", _standard_splits())
    kwargs.setdefault("submission_files", {"test": f"{glue_dir}.tsv"})
    kwargs.setdefault("head", "classification")
    return GlueTask(name=name, tfds_name=f"glue/{name}", glue_dir=glue_dir, **kwargs)


_NLI_LABELS = ("entailment", "neutral", "contradiction")
_PAIR = ("sentence1", "sentence2")

TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in [
        _task(
            "cola",
            "CoLA",
            text_keys=("sentence",),
            label_names=("unacceptable", "acceptable"),
            metric="matthews_corr",
            file_text_columns=("sentence",),
            file_label_column="label",
        ),
        _task(
            "sst2",
            "SST-2",
            text_keys=("sentence",),
            label_names=("negative", "positive"),
            metric="accuracy",
            file_text_columns=("sentence",),
            file_label_column="label",
        ),
        _task(
            "mrpc",
            "MRPC",
            text_keys=_PAIR,
            label_names=("not_equivalent", "equivalent"),
            metric="f1",
            file_text_columns=("#1 String", "#2 String"),
            file_label_column="Quality",
        ),
        _task(
            "stsb",
            "STS-B",
            text_keys=_PAIR,
            label_names=(),
            head="regression",
            metric="spearman",
            file_text_columns=_PAIR,
            file_label_column="score",
        ),
        _task(
            "qqp",
            "QQP",
            text_keys=("question1", "question2"),
            label_names=("not_duplicate", "duplicate"),
            metric="f1",
            file_text_columns=("question1", "question2"),
            file_label_column="is_duplicate",
            # QQP's "id" is Quora's pair id in train/dev (the row number only in test), so rows
            # are numbered by position, as TFDS does.
            file_index_column=None,
        ),
        _task(
            "mnli",
            "MNLI",
            text_keys=("premise", "hypothesis"),
            label_names=_NLI_LABELS,
            metric="accuracy",
            splits={
                "train": SplitSource("train", "train.tsv"),
                "dev_matched": SplitSource("validation_matched", "dev_matched.tsv"),
                "dev_mismatched": SplitSource("validation_mismatched", "dev_mismatched.tsv"),
                "test_matched": SplitSource("test_matched", "test_matched.tsv"),
                "test_mismatched": SplitSource("test_mismatched", "test_mismatched.tsv"),
                # The diagnostic set (AX) is scored with the MNLI model.
                "diagnostic": SplitSource(
                    "test", "diagnostic.tsv", tfds_name="glue/ax", folder="diagnostic"
                ),
            },
            file_text_columns=_PAIR,
            file_label_column="gold_label",
            submission_files={
                "test_matched": "MNLI-m.tsv",
                "test_mismatched": "MNLI-mm.tsv",
                "diagnostic": "AX.tsv",
            },
            string_labels=True,
            split_aliases={"dev": "dev_matched", "test": "test_matched"},
        ),
        _task(
            "qnli",
            "QNLI",
            text_keys=("question", "sentence"),
            label_names=("entailment", "not_entailment"),
            metric="accuracy",
            file_text_columns=("question", "sentence"),
            file_label_column="label",
            string_labels=True,
        ),
        _task(
            "rte",
            "RTE",
            text_keys=_PAIR,
            label_names=("entailment", "not_entailment"),
            metric="accuracy",
            file_text_columns=_PAIR,
            file_label_column="label",
            string_labels=True,
        ),
        _task(
            "wnli",
            "WNLI",
            text_keys=_PAIR,
            # TFDS order: WNLI's files write 1 for entailment.
            label_names=("not_entailment", "entailment"),
            metric="accuracy",
            file_text_columns=_PAIR,
            file_label_column="label",
        ),
    ]
}


def get_task(task: str | GlueTask) -> GlueTask:
    """The task named `task` ("sst2", "SST-2", "glue/sst2" all work), or `task` itself."""
    if isinstance(task, GlueTask):
        return task
    name = str(task).lower().removeprefix("glue/").replace("-", "")
    if name not in TASKS:
        raise ValueError(f"Unknown GLUE task {task!r}; use one of {', '.join(TASKS)}.")
    return TASKS[name]


def _resolve_split(task: GlueTask, split: str) -> str:
    split = task.split_aliases.get(split, split)
    if split not in task.splits:
        valid = [*task.splits, *task.split_aliases]
        raise ValueError(f"GLUE {task.name} has no split {split!r}; use one of {valid}.")
    return split


def _split_of(task: GlueTask, example: PairExample) -> str:
    """The split an example came from, read back from its guid ("<split>-<index>")."""
    split = example.guid.rsplit("-", 1)[0]
    if split not in task.splits:
        raise ValueError(
            f"example guid {example.guid!r} does not start with a split of GLUE {task.name} "
            f"({list(task.splits)}); use examples from glue.load."
        )
    return split


# ---------------------------------------------------------------------------------------------
# Loading.


def load(
    task: str | GlueTask,
    split: str,
    source: str | os.PathLike = "tfds",
    data_dir: str | None = None,
    *,
    bad_rows: str = "raise",
) -> list[PairExample]:
    """The examples of one split.

    `source`: "tfds" (TFDS `task.tfds_name`, prepared under `data_dir` / TFDS_DATA_DIR); a folder
    of the official GLUE download (glue_data/ or glue_data/MRPC/); or one .tsv/.csv/.jsonl file
    whose columns are the TFDS feature names (sentence, premise, question1, ..., label, idx) or
    the GLUE file's own names. `bad_rows="skip"` drops malformed lines of a local file with a
    warning instead of raising (the default).
    """
    task = get_task(task)
    split = _resolve_split(task, split)
    if bad_rows not in ("raise", "skip"):
        raise ValueError(f"bad_rows={bad_rows!r}; use 'raise' or 'skip'.")
    if str(source) == "tfds":
        return _load_tfds(task, split, data_dir)
    path = pathlib.Path(source).expanduser()
    if path.is_dir():
        path = _find_glue_file(task, split, path)
    elif not path.is_file():
        raise FileNotFoundError(
            f"source={source!r} is neither 'tfds' nor an existing folder or file; pass 'tfds', "
            "the GLUE download folder (glue_data/), or a .tsv/.csv/.jsonl file."
        )
    return _load_file(task, split, path, bad_rows == "skip")


def _load_tfds(task: GlueTask, split: str, data_dir: str | None) -> list[PairExample]:
    where = task.splits[split]
    name = where.tfds_name or task.tfds_name
    examples = []
    for row in common.tfds_examples(name, where.tfds_split, data_dir):
        texts = [common.text(row[k]) for k in task.text_keys]
        index = int(row["idx"])
        where_row = f"{name} {where.tfds_split} idx {index}"
        examples.append(_example(task, split, texts, row.get("label"), index, where=where_row))
    return examples


def _find_glue_file(task: GlueTask, split: str, root: pathlib.Path) -> pathlib.Path:
    where = task.splits[split]
    folder = where.folder or task.glue_dir
    # The root may be glue_data/ or the task's own folder (glue_data/MNLI/ for MNLI's AX too).
    candidates = [root / where.file, root / folder / where.file, root.parent / folder / where.file]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"GLUE {task.name} {split}: none of {[str(c) for c in candidates]} exists; pass the "
        "folder of the GLUE download (download_glue_data.py's glue_data/) or the file itself."
    )


def _load_file(task: GlueTask, split: str, path: pathlib.Path, skip: bool) -> list[PairExample]:
    examples, problems = [], []
    for n, (where, row) in enumerate(_read_rows(task, path)):
        try:
            if isinstance(row, str):
                raise ValueError(row)
            texts, label, index = row
            examples.append(
                _example(task, split, texts, label, n if index is None else index, where=where)
            )
        except ValueError as e:
            if not skip:
                raise ValueError(f"{e} (pass bad_rows='skip' to drop such lines)") from None
            problems.append(str(e))
    if problems:
        warnings.warn(
            f"{path}: skipped {len(problems)} malformed line(s), e.g. {problems[0]}", stacklevel=3
        )
    return examples


def _read_rows(task: GlueTask, path: pathlib.Path) -> Iterator[tuple[str, Any]]:
    """(file:line, (texts, raw label or None, index or None)) per data row of a local file.

    A malformed row gives (file:line, message) instead, so `bad_rows` decides what happens.
    """
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(task, path)
        return
    if suffix not in (".tsv", ".csv", ".txt"):
        raise ValueError(f"{path}: unknown file type {suffix!r}; use .tsv, .csv or .jsonl.")
    # utf-8-sig: MRPC's msr_paraphrase_*.txt start with a byte-order mark.
    with open(path, encoding="utf-8-sig", newline="") as f:
        if suffix == ".csv":
            reader = csv.reader(f)
        else:
            # GLUE's TSVs carry bare quotes inside sentences; quoting would merge lines.
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        first = next(reader, None)
        if first is None:
            raise ValueError(f"{path} is empty; expected a header row and data rows.")
        header: Sequence[str] = first
        rows: Iterator[list[str]] = reader
        if task.name == "cola" and len(first) == 4 and "sentence" not in first:
            # CoLA's train/dev layout: the first line is already data.
            header, rows = _COLA_HEADERLESS, itertools.chain([first], reader)
        width = len(header)
        text_cols, label_col, index_col = _columns(task, header, path)
        for fields in rows:
            where = f"{path}:{reader.line_num}"
            if not fields:  # a blank line (csv.DictReader, hence TFDS, skips them too)
                continue
            if len(fields) != width:
                names = ", ".join(header)
                yield where, f"{where}: {len(fields)} fields, expected {width} ({names})"
                continue
            index = None
            if index_col is not None:
                try:
                    index = int(fields[index_col])
                except ValueError:
                    yield where, f"{where}: row id {fields[index_col]!r} is not an integer"
                    continue
            label = None if label_col is None else fields[label_col]
            yield where, ([fields[c] for c in text_cols], label, index)


def _columns(
    task: GlueTask, header: Sequence[str], path: pathlib.Path
) -> tuple[list[int], int | None, int | None]:
    """Positions of the text, label and id columns: TFDS feature names or GLUE file names."""
    position = {name.strip(): i for i, name in enumerate(header)}

    def find(*names: str) -> int | None:
        return next((position[n] for n in names if n in position), None)

    texts = [find(k, c) for k, c in zip(task.text_keys, task.file_text_columns, strict=True)]
    if None in texts:
        wanted = " and ".join(
            f"{k!r} (or {c!r})" for k, c in zip(task.text_keys, task.file_text_columns, strict=True)
        )
        raise ValueError(
            f"{path}:1: header {list(header)} lacks the text column(s) of GLUE {task.name}; "
            f"expected {wanted}."
        )
    index_names = ("idx", task.file_index_column) if task.file_index_column else ("idx",)
    return texts, find("label", task.file_label_column), find(*index_names)


def _read_jsonl(task: GlueTask, path: pathlib.Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            where = f"{path}:{line_no}"
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield where, f"{where}: not a JSON object ({e.msg})"
                continue
            keys = list(zip(task.text_keys, task.file_text_columns, strict=True))
            texts = [row.get(k, row.get(c)) if isinstance(row, dict) else None for k, c in keys]
            if any(not isinstance(t, str) for t in texts):
                yield where, f"{where}: expected string fields {list(task.text_keys)}"
                continue
            label = row.get("label", row.get(task.file_label_column))
            index = row.get("idx", row.get(task.file_index_column or "idx"))
            if index is not None and not isinstance(index, int):
                yield where, f"{where}: row id {index!r} is not an integer"
                continue
            yield where, (texts, label, index)


def _example(
    task: GlueTask, split: str, texts: list[str], label: Any, index: int, *, where: str
) -> PairExample:
    """The one normaliser both sources go through, so they give identical examples."""
    return PairExample(
        guid=f"{split}-{index}",
        text_a=texts[0],
        text_b=texts[1] if len(texts) > 1 else None,
        label=_label(task, label, where),
        index=index,
    )


def _label(task: GlueTask, value: Any, where: str) -> int | float | None:
    """A raw label (TFDS int/float, a file's string) as a label index, a score, or None."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise ValueError(f"{where}: empty label; expected one of {_label_hint(task)}")
        if value in task.label_names:
            return task.label_names.index(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: label {value!r} is not one of {_label_hint(task)}") from None
    if number == -1:  # TFDS marks unlabelled test rows with -1
        return None
    if task.head == "regression":
        if not np.isfinite(number):
            raise ValueError(f"{where}: label {value!r} is not {_label_hint(task)}")
        return number
    if number != int(number) or not 0 <= number < len(task.label_names):
        raise ValueError(f"{where}: label {value!r} is not one of {_label_hint(task)}")
    return int(number)


def _label_hint(task: GlueTask) -> str:
    if task.head == "regression":
        return "a similarity score in [0, 5]"
    names = ", ".join(f"{i}/{n}" for i, n in enumerate(task.label_names))
    return f"the label ids or names {names}"


# ---------------------------------------------------------------------------------------------
# Features, metrics, leaderboard files.


def featurize(
    task: str | GlueTask, examples: Sequence[PairExample], tokenizer: Any, max_seq_length: int
) -> dict[str, np.ndarray]:
    """Model inputs [N, S], `label` [N] and `example_index` [N] (see common.py).

    Pairs are cut with BERT's rule (the longer text loses a token at a time); unlabelled rows get
    label 0 so test features keep the training shapes.
    """
    task = get_task(task)
    if not examples:
        raise ValueError(f"no GLUE {task.name} examples to featurize; check the loaded split.")
    is_pair = len(task.text_keys) == 2
    if is_pair and any(e.text_b is None for e in examples):
        raise ValueError(f"GLUE {task.name} is a pair task but some examples have text_b=None.")
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(examples), _CHUNK):
        chunk = examples[start : start + _CHUNK]
        parts.append(
            tokenizer(
                [e.text_a for e in chunk],
                [e.text_b for e in chunk] if is_pair else None,
                max_length=max_seq_length,
                padding="max_length",
            )
        )
    features = {k: np.concatenate([p[k] for p in parts]) for k in common.MODEL_INPUTS}
    labels = [0 if e.label is None else e.label for e in examples]
    dtype = np.float32 if task.head == "regression" else np.int32
    features["label"] = np.asarray(labels, dtype)
    features["example_index"] = np.arange(len(examples), dtype=np.int32)
    return features


def _predictions(task: GlueTask, examples: Sequence[PairExample], logits: Any) -> np.ndarray:
    logits = np.asarray(logits, np.float32)
    width = 1 if task.head == "regression" else len(task.label_names)
    if logits.shape != (len(examples), width):
        raise ValueError(
            f"logits have shape {logits.shape}; GLUE {task.name} needs [{len(examples)}, {width}] "
            "(one row per example, in the examples' order)."
        )
    return logits[:, 0] if task.head == "regression" else logits.argmax(axis=-1)


def evaluate(
    task: str | GlueTask, examples: Sequence[PairExample], logits: Any
) -> dict[str, float]:
    """GLUE metrics of `logits` [N, C] ([N, 1] for STS-B) on labelled examples of one split."""
    from bert_jax.data.tasks import metrics

    task = get_task(task)
    splits = sorted({_split_of(task, e) for e in examples})
    if len(splits) != 1:
        raise ValueError(
            f"evaluate got examples from splits {splits}; evaluate each split on its own."
        )
    if any(e.label is None for e in examples):
        raise ValueError(
            f"GLUE {task.name} {splits[0]} examples have no labels (a test split?); use "
            "write_test_predictions for test splits."
        )
    predictions = _predictions(task, examples, logits)
    metric_task = task.name
    if task.name == "mnli":
        metric_task = "ax" if splits[0] == "diagnostic" else "mnli_matched"
        metric_task = "mnli_mismatched" if "mismatched" in splits[0] else metric_task
    labels = np.asarray([e.label for e in examples])
    return {k: float(v) for k, v in metrics.glue_metrics(metric_task, labels, predictions).items()}


def write_test_predictions(
    task: str | GlueTask,
    examples: Sequence[PairExample],
    logits: Any,
    out_dir: str | os.PathLike,
) -> list[pathlib.Path]:
    """GLUE leaderboard files (CoLA.tsv, MNLI-m.tsv, AX.tsv, ...) for the test examples given.

    Examples of several test splits (MNLI's test_matched, test_mismatched, diagnostic) may be
    passed together; each split gets its file, with header `index<TAB>prediction`.
    """
    task = get_task(task)
    predictions = _predictions(task, examples, logits)
    rows: dict[str, list[str]] = {}
    for example, prediction in zip(examples, predictions, strict=True):
        split = _split_of(task, example)
        if split not in task.submission_files:
            raise ValueError(
                f"example {example.guid!r} is from GLUE {task.name} {split}, which the "
                f"leaderboard does not score; pass examples of {list(task.submission_files)}."
            )
        if task.head == "regression":
            value = f"{float(np.clip(prediction, 0.0, 5.0)):.3f}"  # STS-B scores lie in [0, 5]
        elif task.string_labels:
            value = task.label_names[int(prediction)]
        else:
            value = str(int(prediction))
        rows.setdefault(split, []).append(f"{example.index}\t{value}\n")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, lines in rows.items():
        path = out / task.submission_files[split]
        with open(path, "w", encoding="utf-8") as f:
            f.write("index\tprediction\n")
            f.writelines(lines)
        paths.append(path)
    return paths
