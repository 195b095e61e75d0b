"""Official metrics of the fine-tuning suite, in numpy (no scikit-learn or seqeval at runtime).

Each function matches a reference implementation, checked in tests/test_task_metrics.py:
- accuracy, f1_binary, matthews_corrcoef, multilabel_f1: scikit-learn with its default
  `zero_division="warn"`, which scores an undefined precision/recall/F1 as 0.0;
- pearson, spearman: scipy.stats.pearsonr / spearmanr (as GLUE's evaluation does), including
  their NaN for a constant input, where the correlation is undefined;
- entity_scores: seqeval's default (conlleval) mode for BIO / IOB1 tags and seqeval's strict
  IOBES mode for IOBES tags.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Tags are strings like "B-PER": a one-letter prefix, then an entity type after "-".
SCHEMES = ("BIO", "IOB1", "IOBES")
# Tasks of the GLUE benchmark and the metrics reported for each (as in the GLUE paper).
GLUE_TASK_METRICS = {
    "cola": ("matthews_corr",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy", "combined"),
    "qqp": ("f1", "accuracy", "combined"),
    "stsb": ("pearson", "spearman", "combined"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "ax": ("matthews_corr",),
}


def _pair(labels, predictions, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as numpy arrays of one shape, with at least one row."""
    y, p = np.asarray(labels), np.asarray(predictions)
    if y.shape != p.shape:
        raise ValueError(f"{name}: labels have shape {y.shape} but predictions {p.shape}.")
    if y.size == 0:
        raise ValueError(f"{name}: got no examples to score.")
    return y, p


def _f1(tp, fp, fn):
    """F1 = 2tp / (2tp + fp + fn) elementwise, 0.0 where nothing was true or predicted."""
    tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


# ---------------------------------------------------------------------------------------------
# Classification and regression.


def accuracy(labels, predictions) -> float:
    """Fraction of predictions equal to their labels."""
    y, p = _pair(labels, predictions, "accuracy")
    return float(np.mean(y == p))


def f1_binary(labels, predictions, positive=1) -> float:
    """F1 of the class `positive` against all others (0.0 with no true or predicted positive)."""
    y, p = _pair(labels, predictions, "f1_binary")
    y, p = y == positive, p == positive
    return float(_f1(np.sum(y & p), np.sum(~y & p), np.sum(y & ~p)))


def matthews_corrcoef(labels, predictions) -> float:
    """Matthews correlation, multi-class form (Gorodkin's R_K); 0.0 where it is undefined."""
    y, p = _pair(labels, predictions, "matthews_corrcoef")
    classes, index = np.unique(np.concatenate([y.ravel(), p.ravel()]), return_inverse=True)
    k, n = len(classes), y.size
    confusion = np.zeros((k, k), np.float64)  # float: n^2 products overflow int64 early
    np.add.at(confusion, (index[:n], index[n:]), 1)
    true_counts, pred_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    cov_true_pred = np.trace(confusion) * n - true_counts @ pred_counts
    cov_pred = n * n - pred_counts @ pred_counts
    cov_true = n * n - true_counts @ true_counts
    if cov_pred * cov_true == 0:  # one side predicts or holds a single class
        return 0.0
    return float(cov_true_pred / np.sqrt(cov_true * cov_pred))


def pearson(x, y) -> float:
    """Pearson correlation; NaN when either input is constant or holds a NaN (as scipy)."""
    x, y = _pair(x, y, "pearson")
    if x.size < 2:
        raise ValueError(f"pearson: needs at least 2 values, got {x.size}.")
    x = x.ravel().astype(np.float64)
    y = y.ravel().astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt(np.sum(x * x) * np.sum(y * y))
    if not norm > 0:  # constant input (or NaN): undefined, as scipy.stats.pearsonr says
        return float("nan")
    return float(np.clip(np.sum(x * y) / norm, -1.0, 1.0))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1
    return (first_rank + (counts - 1) / 2.0)[inverse.ravel()]


def spearman(x, y) -> float:
    """Spearman rank correlation with average ranks for ties; NaN when undefined (as scipy)."""
    x, y = _pair(x, y, "spearman")
    x = x.ravel().astype(np.float64)
    y = y.ravel().astype(np.float64)
    if np.isnan(x).any() or np.isnan(y).any():  # scipy's default nan_policy="propagate"
        return float("nan")
    return pearson(_average_ranks(x), _average_ranks(y))


def glue_metrics(task: str, labels, predictions) -> dict[str, float]:
    """The GLUE metrics of `task` (a key of GLUE_TASK_METRICS; "glue/sst2", "SST-2" work too).

    `predictions` are class ids [N], or logits [N, C] (argmax taken); STS-B takes scores [N] or
    [N, 1]. "combined" is the mean of the task's other metrics, GLUE's single number per task.
    """
    name = task.lower().removeprefix("glue/").replace("-", "")
    if name not in GLUE_TASK_METRICS:
        raise ValueError(f"Unknown GLUE task {task!r}; expected one of {list(GLUE_TASK_METRICS)}.")
    y, p = np.asarray(labels), np.asarray(predictions)
    if name == "stsb":
        y, p = y.reshape(-1), p.reshape(-1)
        result = {"pearson": pearson(y, p), "spearman": spearman(y, p)}
    else:
        if p.ndim == y.ndim + 1:
            p = p.argmax(axis=-1)
        result = {}
        if name in ("cola", "ax"):
            result["matthews_corr"] = matthews_corrcoef(y, p)
        if name in ("mrpc", "qqp"):
            result["f1"] = f1_binary(y, p, positive=1)
        if name not in ("cola", "ax"):
            result["accuracy"] = accuracy(y, p)
    if "combined" in GLUE_TASK_METRICS[name]:
        result["combined"] = float(np.mean(list(result.values())))
    return result


# ---------------------------------------------------------------------------------------------
# Multi-label classification.


def multilabel_f1(labels, predictions) -> dict[str, float]:
    """Micro F1, macro F1 (mean over labels) and subset accuracy of multi-hot [N, L] arrays.

    As scikit-learn's default, a label with neither true nor predicted positives has F1 = 0.0
    in the macro mean (so a perfect prediction scores below 1.0 when a label never occurs).
    """
    y, p = _pair(labels, predictions, "multilabel_f1")
    if y.ndim != 2:
        raise ValueError(f"multilabel_f1: expected [N, L] multi-hot arrays, got shape {y.shape}.")
    y, p = y.astype(bool), p.astype(bool)
    tp, fp, fn = (y & p).sum(axis=0), (~y & p).sum(axis=0), (y & ~p).sum(axis=0)
    return {
        "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
        "macro_f1": float(np.mean(_f1(tp, fp, fn))),
        "subset_accuracy": float(np.mean(np.all(y == p, axis=1))),
    }


def apply_thresholds(probs, thresholds) -> np.ndarray:
    """Multi-hot int32 predictions [N, L]: 1 where probs >= the label's threshold."""
    return (np.asarray(probs) >= np.asarray(thresholds)).astype(np.int32)


def tune_thresholds(labels, probs, grid: Sequence[float] | None = None) -> np.ndarray:
    """Per-label threshold [L] maximising that label's F1 on (dev) `labels` [N, L].

    Candidates are `grid` (default 0.05, 0.10, ..., 0.95); predictions are probs >= threshold
    (see apply_thresholds). Among equally good thresholds the one closest to 0.5 wins, then the
    lower one, so a label without positives in dev keeps 0.5.
    """
    y, p = _pair(labels, probs, "tune_thresholds")
    if y.ndim != 2:
        raise ValueError(f"tune_thresholds: expected [N, L] arrays, got shape {y.shape}.")
    grid = np.linspace(0.05, 0.95, 19) if grid is None else np.asarray(grid, np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"tune_thresholds: grid must be a non-empty list, got {grid!r}.")
    # Rounded distance so 0.45 and 0.55 tie despite float noise; ties then go to the lower.
    preference = np.lexsort((grid, np.round(np.abs(grid - 0.5), 9)))
    y = y.astype(bool)
    thresholds = np.empty(y.shape[1], np.float64)
    for label in range(y.shape[1]):
        truth = y[:, label, None]
        predicted = p[:, label, None] >= grid[None, :]  # [N, G]
        tp = np.sum(truth & predicted, axis=0)
        f1 = _f1(tp, np.sum(predicted, axis=0) - tp, np.sum(truth) - tp)
        # First threshold, in order of preference, within float noise of the best F1.
        thresholds[label] = grid[preference][np.argmax(f1[preference] >= f1.max() - 1e-12)]
    return thresholds


# ---------------------------------------------------------------------------------------------
# Named entities: chunk extraction, tag scheme conversion, entity-level scores.


def _check_scheme(scheme: str) -> str:
    name = scheme.upper().replace("IOB2", "BIO")
    if name not in SCHEMES:
        raise ValueError(f"Unknown tag scheme {scheme!r}; expected one of {SCHEMES} (or IOB2).")
    return name


def _split_tag(tag: str, allowed: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER"; ("O", "_") for "O". A tag without a type gets type "_"."""
    if not tag or tag[0] not in allowed:
        raise ValueError(
            f"Tag {tag!r} does not start with one of {list(allowed)}; expected tags like "
            "'B-PER', 'I-PER', 'O' (IOBES also 'E-PER', 'S-PER')."
        )
    return tag[0], tag[1:].split("-", 1)[-1] or "_"


def _conlleval_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Chunks by conlleval's rules (seqeval's default mode): lenient with ill-formed input.

    An I- after O or after another type starts a chunk; a type change ends one. E-/S- tags are
    understood too. "." is conlleval's neutral tag: it neither starts nor ends a chunk.
    """
    chunks = []
    prev_prefix, prev_type, start = "O", "_", 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, type_ = _split_tag(tag, "BIOES.")
        ends = (
            prev_prefix in "ES"
            or (prev_prefix in "BI" and prefix in "BSO")
            or (prev_prefix not in "O." and prev_type != type_)
        )
        starts = (
            prefix in "BS"
            or (prev_prefix in "ESO" and prefix in "EI")
            or (prefix not in "O." and prev_type != type_)
        )
        if ends:
            chunks.append((prev_type, start, i - 1))
        if starts:
            start = i
        prev_prefix, prev_type = prefix, type_
    return chunks


def _strict_iobes_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Chunks by seqeval's strict IOBES mode: only a complete S or B (I)* E of one type counts."""
    chunks = []
    start = None  # index of the open chunk's B, while its I-s and E keep the same type
    open_type = ""
    for i, tag in enumerate(tags):
        prefix, type_ = _split_tag(tag, "BIOES")
        if prefix == "S":
            chunks.append((type_, i, i))
            start = None
        elif prefix == "B":
            start, open_type = i, type_
        elif start is not None and type_ == open_type and prefix in "IE":
            if prefix == "E":
                chunks.append((type_, start, i))
                start = None
        else:  # O, or an I/E that does not continue an open chunk: drops that chunk
            start = None
    return chunks


def get_entities(tags: Sequence[str], scheme: str = "BIO") -> list[tuple[str, int, int]]:
    """Entities of one tag sequence as (type, start, end inclusive), in order.

    "BIO" (also "IOB2") and "IOB1" use conlleval's lenient rules (seqeval's default), which read
    both schemes; "IOBES" is seqeval's strict mode, where an incomplete chunk is no entity.
    """
    if _check_scheme(scheme) == "IOBES":
        return _strict_iobes_entities(tags)
    return _conlleval_entities(tags)


def convert_tags(tags: Sequence[str], src: str, dst: str) -> list[str]:
    """`tags` rewritten from scheme `src` into `dst` (BIO, IOB1 or IOBES).

    Goes through get_entities(tags, src), so the result is well formed and scores exactly as
    the input: an ill-formed BIO chunk is read as conlleval reads it, an incomplete IOBES chunk
    (strict mode) becomes O.
    """
    dst = _check_scheme(dst)
    out = ["O"] * len(tags)
    previous_end, previous_type = -2, ""
    for type_, start, end in get_entities(tags, src):
        if dst == "IOBES" and start == end:
            out[start] = f"S-{type_}"
            continue
        out[start : end + 1] = [f"I-{type_}"] * (end - start + 1)
        if dst in ("BIO", "IOBES"):
            out[start] = f"B-{type_}"
        elif previous_end == start - 1 and previous_type == type_:
            out[start] = f"B-{type_}"  # IOB1 marks B only where two chunks of a type touch
        if dst == "IOBES":
            out[end] = f"E-{type_}"
        previous_end, previous_type = end, type_
    return out


def entity_scores(
    true_seqs: Sequence[Sequence[str]], pred_seqs: Sequence[Sequence[str]], scheme: str = "BIO"
) -> dict:
    """Entity-level precision / recall / F1 (micro over types), token accuracy, and per type.

    An entity counts as correct when type, start and end all match. Returns {"precision",
    "recall", "f1", "accuracy", "per_type": {type: {"precision", "recall", "f1", "support"}}},
    support being the number of true entities; a type that is only predicted has support 0.
    Matches seqeval's precision_score / recall_score / f1_score / accuracy_score and
    classification_report (default mode for BIO/IOB1, mode="strict" for IOBES).
    """
    if len(true_seqs) != len(pred_seqs):
        raise ValueError(f"Got {len(true_seqs)} true tag sequences but {len(pred_seqs)} predicted.")
    true_set, pred_set = set(), set()
    correct_tokens = total_tokens = 0
    for sentence, (truth, pred) in enumerate(zip(true_seqs, pred_seqs, strict=True)):
        if len(truth) != len(pred):
            raise ValueError(
                f"Sentence {sentence}: {len(truth)} true tags but {len(pred)} predicted; "
                "predict one tag per word."
            )
        true_set.update((sentence, *e) for e in get_entities(truth, scheme))
        pred_set.update((sentence, *e) for e in get_entities(pred, scheme))
        correct_tokens += sum(t == p for t, p in zip(truth, pred, strict=True))
        total_tokens += len(truth)

    def prf(n_true: int, n_pred: int, n_correct: int) -> dict[str, float]:
        return {
            "precision": _ratio(n_correct, n_pred),
            "recall": _ratio(n_correct, n_true),
            "f1": float(_f1(n_correct, n_pred - n_correct, n_true - n_correct)),
        }

    correct = true_set & pred_set
    per_type = {}
    for type_ in sorted({e[1] for e in true_set | pred_set}):
        n_true = sum(e[1] == type_ for e in true_set)
        n_pred = sum(e[1] == type_ for e in pred_set)
        n_correct = sum(e[1] == type_ for e in correct)
        per_type[type_] = {**prf(n_true, n_pred, n_correct), "support": n_true}
    return {
        **prf(len(true_set), len(pred_set), len(correct)),
        "accuracy": _ratio(correct_tokens, total_tokens),
        "per_type": per_type,
    }
