"""Named-entity recognition (token classification) on CoNLL-style files and TFDS conll2003.

Tags stay in the scheme of the source (BIO, IOB1 or IOBES): the label set, the predictions and the
entity metrics all use that one scheme, so a file read as IOBES is written back as IOBES.

Each word is scored once, on its first word piece (as in the BERT paper's CoNLL-2003 setup);
later pieces, [CLS]/[SEP] and padding carry label weight 0. A sentence longer than the model's
window is split into several rows at word boundaries; `word_index` maps every scored position
back to its word, so `decode` gives exactly one tag per word.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bert_jax.data.tasks import common, metrics

# IOB1 (the original CoNLL-2003 release: I- opens an entity unless it touches one of its type)
# uses BIO's prefixes; only the metric's chunk rules tell them apart.
SCHEMES = ("BIO", "IOB1", "IOBES")
_PREFIXES = {"BIO": ("B", "I"), "IOB1": ("B", "I"), "IOBES": ("B", "I", "E", "S")}

# The class names of TFDS conll2003's `ner` feature, in index order (tensorflow_datasets
# core/dataset_builders/conll/conll_dataset_builder_utils.py NER_TAGS; the tests check them
# against the builder's info).
CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


@dataclasses.dataclass
class NerExample:
    """One sentence: its words and one tag per word (empty `tags` for unlabelled text)."""

    guid: str
    words: list[str]
    tags: list[str]


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}; use one of {SCHEMES}.")


def _is_tag(tag: str, scheme: str) -> bool:
    if tag == "O":
        return True
    prefix, dash, entity_type = tag.partition("-")
    return bool(dash and entity_type) and prefix in _PREFIXES[scheme]


def read_conll(path: str | os.PathLike, scheme: str = "BIO") -> list[NerExample]:
    """Sentences of a CoNLL file: one word per line, word first and tag last, blank between.

    Columns are split on tabs when the line has one (two-column token<TAB>tag files such as
    WNUT-16, where a lone tab separates sentences), else on whitespace (CoNLL-2003's
    "word POS chunk tag"). -DOCSTART- lines end a sentence and are skipped. `scheme` is the
    file's tagging scheme; a tag outside it is an error, as is a line with fewer than 2 columns.
    """
    _check_scheme(scheme)
    name = os.fspath(path)
    examples: list[NerExample] = []
    words: list[str] = []
    tags: list[str] = []
    first_line = 0

    def flush() -> None:
        if words:
            guid = f"{os.path.basename(name)}:{first_line}"
            examples.append(NerExample(guid, list(words), list(tags)))
            words.clear()
            tags.clear()

    prefixes = "/".join(f"{p}-TYPE" for p in _PREFIXES[scheme])
    with open(name, encoding="utf-8-sig") as f:
        for line_no, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                flush()
                continue
            columns = line.split("\t") if "\t" in line else line.split()
            word, tag = columns[0].strip(), columns[-1].strip()
            if word == "-DOCSTART-":
                flush()
                continue
            if len(columns) < 2 or not word:
                raise ValueError(
                    f"{name}:{line_no}: expected 'word ... tag' (word first, NER tag last, "
                    f"separated by spaces or a tab), got {line!r}."
                )
            if not _is_tag(tag, scheme):
                hint = (
                    " The file looks IOBES-tagged: pass scheme='IOBES'."
                    if scheme != "IOBES" and _is_tag(tag, "IOBES")
                    else ""
                )
                raise ValueError(
                    f"{name}:{line_no}: tag {tag!r} is not a {scheme} tag (expected 'O' or "
                    f"{prefixes}).{hint}"
                )
            if not words:
                first_line = line_no
            words.append(word)
            tags.append(tag)
    flush()
    return examples


def tfds_conll2003(split: str, data_dir: str | None = None) -> list[NerExample]:
    """TFDS conll2003 sentences (splits "train", "dev", "test"), tags as BIO strings."""
    examples = []
    for i, row in enumerate(common.tfds_examples("conll2003", split, data_dir)):
        words = [common.text(t) for t in row["tokens"]]
        tags = [CONLL2003_TAGS[int(k)] for k in row["ner"]]
        if len(words) != len(tags):
            raise ValueError(
                f"conll2003 {split!r} row {i} has {len(words)} tokens but {len(tags)} ner tags; "
                "the prepared dataset is corrupt, rebuild it with `tfds build conll2003`."
            )
        examples.append(NerExample(f"conll2003-{split}-{i}", words, tags))
    return examples


def label_list(examples: Sequence[NerExample]) -> list[str]:
    """The tags seen in `examples`, "O" first then sorted: the same set always gives one order."""
    seen = {tag for ex in examples for tag in ex.tags}
    return ["O", *sorted(seen - {"O"})]


def _windows(n_pieces: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """[start, end) word ranges, greedy and in order, each holding at most `budget` pieces.

    A single word longer than the budget gets a row of its own (its tail pieces are cut later;
    only its first piece is scored, so its label survives).
    """
    windows: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, n in enumerate(n_pieces):
        if i > start and used + n > budget:
            windows.append((start, i))
            start, used = i, 0
        used += n
    windows.append((start, len(n_pieces)))  # also gives an empty sentence its (empty) row
    return windows


def featurize(
    examples: Sequence[NerExample], tokenizer: Any, labels: Sequence[str], max_seq_length: int
) -> dict[str, np.ndarray]:
    """Token-classification features (common.py's "token" head), one row per window.

    Metadata: `example_index` [N], `word_offset` [N] (the row's first word), `word_index`
    [N, S] (the word, within its example, whose first piece sits there; -1 elsewhere).
    """
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for a word; use >= 3.")
    label_ids = {tag: i for i, tag in enumerate(labels)}
    for ex in examples:
        if ex.tags and len(ex.tags) != len(ex.words):
            raise ValueError(
                f"example {ex.guid!r} has {len(ex.words)} words but {len(ex.tags)} tags; "
                "give one tag per word (or none for unlabelled text)."
            )
        unknown = sorted(set(ex.tags) - label_ids.keys())
        if unknown:
            raise ValueError(
                f"example {ex.guid!r} has tags {unknown} missing from labels {list(labels)}; "
                "build the labels with label_list over every split."
            )
    # Each word is encoded on its own: BERT's basic tokenizer splits on whitespace and
    # punctuation, so a word's pieces do not depend on its neighbours and this equals
    # tokenizing the sentence. One batched call keeps it fast.
    flat = [w for ex in examples for w in ex.words]
    encodings = tokenizer.encode_pieces(flat) if flat else []
    # A word of only ignored characters (e.g. a lone control character) has no pieces; give it
    # [UNK] so it still gets a position and a predicted tag.
    pieces = [enc.ids or [tokenizer.unk_id] for enc in encodings]

    budget = max_seq_length - 2
    rows = []  # (example index, first word, [(piece id, word index or -1)])
    cursor = 0
    for e, ex in enumerate(examples):
        word_pieces = pieces[cursor : cursor + len(ex.words)]
        cursor += len(ex.words)
        for start, end in _windows([len(p) for p in word_pieces], budget):
            row = [
                (pid, w if j == 0 else -1)
                for w in range(start, end)
                for j, pid in enumerate(word_pieces[w])
            ]
            rows.append((e, start, row[:budget]))

    n, s = len(rows), max_seq_length
    out = {
        "input_ids": np.full((n, s), tokenizer.pad_id, np.int32),
        "input_mask": np.zeros((n, s), np.int32),
        "segment_ids": np.zeros((n, s), np.int32),
        "label": np.zeros((n, s), np.int32),
        "label_weights": np.zeros((n, s), np.float32),
        "example_index": np.zeros((n,), np.int32),
        "word_offset": np.zeros((n,), np.int32),
        "word_index": np.full((n, s), -1, np.int32),
    }
    for r, (e, start, row) in enumerate(rows):
        ids = [tokenizer.cls_id, *(pid for pid, _ in row), tokenizer.sep_id]
        out["input_ids"][r, : len(ids)] = ids
        out["input_mask"][r, : len(ids)] = 1
        out["example_index"][r] = e
        out["word_offset"][r] = start
        tags = examples[e].tags
        for pos, (_, w) in enumerate(row, start=1):  # position 0 is [CLS]
            if w >= 0:
                out["word_index"][r, pos] = w
                out["label_weights"][r, pos] = 1.0
                # Unlabelled text keeps label 0 (common.py: targets present, filled with 0).
                out["label"][r, pos] = label_ids[tags[w]] if tags else 0
    return out


def decode(
    examples: Sequence[NerExample],
    features: dict[str, np.ndarray],
    logits: np.ndarray,
    labels: Sequence[str],
) -> list[list[str]]:
    """Predicted tags, one per word of each example: the argmax at the word's first piece.

    Tags are returned as predicted; an I- after O is left for the metric's scheme rules.
    """
    logits = np.asarray(logits)
    word_index = np.asarray(features["word_index"])
    expected = (*word_index.shape, len(labels))
    if logits.shape != expected:
        raise ValueError(
            f"logits have shape {logits.shape} but the features and labels need {expected} "
            "(rows, sequence length, number of labels)."
        )
    predicted = logits.argmax(-1)
    tags: list[list[str | None]] = [[None] * len(ex.words) for ex in examples]
    for r, pos in zip(*np.nonzero(word_index >= 0), strict=True):
        e, w = int(features["example_index"][r]), int(word_index[r, pos])
        if tags[e][w] is not None:
            raise ValueError(f"word {w} of example {e} is scored twice; features do not match.")
        tags[e][w] = labels[predicted[r, pos]]
    for e, example_tags in enumerate(tags):
        if None in example_tags:
            raise ValueError(
                f"example {e} ({examples[e].guid!r}) has words with no scored position; "
                "these features were not made from these examples."
            )
    return tags  # type: ignore[return-value]  # every None was replaced above


def evaluate(
    examples: Sequence[NerExample],
    features: dict[str, np.ndarray],
    logits: np.ndarray,
    labels: Sequence[str],
    scheme: str = "BIO",
) -> dict[str, Any]:
    """Entity precision/recall/F1 (exact span and type match) and word accuracy.

    Returns metrics.entity_scores's dict: "precision", "recall", "f1", "accuracy", "per_type".
    """
    _check_scheme(scheme)
    unlabelled = [ex.guid for ex in examples if len(ex.tags) != len(ex.words)]
    if unlabelled:
        raise ValueError(f"examples {unlabelled[:3]} have no gold tags; they cannot be scored.")
    predicted = decode(examples, features, logits, labels)
    return metrics.entity_scores([ex.tags for ex in examples], predicted, scheme=scheme)


def write_predictions(
    path: str | os.PathLike, examples: Sequence[NerExample], pred_tags: Sequence[Sequence[str]]
) -> None:
    """conlleval input: "word gold predicted" per line ("word predicted" when unlabelled),
    a blank line after each sentence."""
    if len(pred_tags) != len(examples):
        raise ValueError(f"{len(pred_tags)} predictions for {len(examples)} examples.")
    with open(path, "w", encoding="utf-8") as f:
        for ex, predicted in zip(examples, pred_tags, strict=True):
            if len(predicted) != len(ex.words):
                raise ValueError(
                    f"example {ex.guid!r}: {len(predicted)} predicted tags for "
                    f"{len(ex.words)} words."
                )
            gold = ex.tags or [None] * len(ex.words)
            for word, g, p in zip(ex.words, gold, predicted, strict=True):
                # conlleval splits columns on whitespace, so a word may not contain any.
                column = "_".join(word.split())
                f.write(f"{column} {p}\n" if g is None else f"{column} {g} {p}\n")
            f.write("\n")
