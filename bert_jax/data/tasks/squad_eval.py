"""SQuAD scoring exactly as the official evaluate-v1.1.py / evaluate-v2.0.py scripts do it:
answer normalisation, exact match, token F1 (max over gold answers), the v2 HasAns/NoAns
breakdown and the best null-odds threshold (find_best_thresh)."""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence
from typing import TYPE_CHECKING

from absl import logging

if TYPE_CHECKING:
    from bert_jax.data.tasks.squad import SquadExample

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace (official scripts)."""
    s = "".join(c for c in s.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _gold(answers: Sequence[str], version_2: bool) -> list[str]:
    if version_2:  # evaluate-v2.0.py: answers that normalise to nothing do not count
        return [a for a in answers if normalize_answer(a)] or [""]
    return list(answers)


def _f1(prediction: str, truth: str, version_2: bool) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if version_2 and (not pred or not gold):  # v2: no answer is right only against no answer
        return float(pred == gold)
    same = sum((collections.Counter(pred) & collections.Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold_answers: Sequence[str], version_2: bool = False) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    gold = _gold(gold_answers, version_2)
    if not gold:
        raise ValueError("gold_answers is empty; a v1.1 question needs at least one answer.")
    return float(max(normalize_answer(prediction) == normalize_answer(g) for g in gold))


def f1_score(prediction: str, gold_answers: Sequence[str], version_2: bool = False) -> float:
    """Best token-overlap F1 (0..1) of the prediction against the gold answers."""
    gold = _gold(gold_answers, version_2)
    if not gold:
        raise ValueError("gold_answers is empty; a v1.1 question needs at least one answer.")
    return max(_f1(prediction, g, version_2) for g in gold)


def _raw_scores(
    examples: Sequence[SquadExample], predictions: dict[str, str], version_2: bool
) -> tuple[dict[str, float], dict[str, float]]:
    missing = [ex.qas_id for ex in examples if ex.qas_id not in predictions]
    if missing:
        logging.warning(
            "SQuAD: %d of %d questions have no prediction and score 0 (e.g. %s).",
            len(missing),
            len(examples),
            missing[:5],
        )
    exact, f1 = {}, {}
    for ex in examples:
        pred = predictions.get(ex.qas_id)
        if ex.answers == [] and not version_2:
            raise ValueError(
                f"question {ex.qas_id!r} has no gold answer; v1.1 scoring needs one "
                "(for SQuAD 2.0 data pass version_2=True)."
            )
        exact[ex.qas_id] = 0.0 if pred is None else exact_match(pred, ex.answers, version_2)
        f1[ex.qas_id] = 0.0 if pred is None else f1_score(pred, ex.answers, version_2)
    return exact, f1


def evaluate(
    examples: Sequence[SquadExample], predictions: dict[str, str], version_2: bool | None = None
) -> dict[str, float]:
    """Official EM and F1 in percent; for v2 also HasAns_*/NoAns_* and totals.

    `version_2=None` scores with evaluate-v2.0.py when any example is impossible. As
    evaluate-v1.1.py does, a missing prediction scores 0. This equals running the v2 script
    without --na-prob-file (see `best_threshold` for the threshold search).
    """
    if version_2 is None:
        version_2 = any(ex.is_impossible for ex in examples)
    if not examples:
        raise ValueError("no examples to evaluate.")
    exact, f1 = _raw_scores(examples, predictions, version_2)
    out = {
        "exact_match": 100.0 * sum(exact.values()) / len(exact),
        "f1": 100.0 * sum(f1.values()) / len(f1),
    }
    if version_2:
        out["total"] = float(len(exact))
        for prefix, has_answer in (("HasAns", True), ("NoAns", False)):
            ids = [ex.qas_id for ex in examples if bool(ex.answers) == has_answer]
            if ids:
                out[f"{prefix}_exact"] = 100.0 * sum(exact[i] for i in ids) / len(ids)
                out[f"{prefix}_f1"] = 100.0 * sum(f1[i] for i in ids) / len(ids)
                out[f"{prefix}_total"] = float(len(ids))
    return out


def best_threshold(
    examples: Sequence[SquadExample], predictions: dict[str, str], null_odds: dict[str, float]
) -> dict[str, float]:
    """evaluate-v2.0.py's find_best_thresh for EM and F1 (with null_odds as --na-prob-file).

    Sweeps the threshold over the null odds: questions above it answer "", the others keep
    their prediction. Pass the non-null predictions (postprocess with
    null_score_diff_threshold=inf) to search over every threshold; the script is usually run on
    the thresholded predictions.json, which this also accepts. Thresholds are in null-odds units,
    ready for `null_score_diff_threshold`.
    """
    scored = [ex for ex in examples if ex.qas_id in predictions]
    exact, f1 = _raw_scores(scored, predictions, version_2=True)
    has_answer = {ex.qas_id: bool(ex.answers) for ex in examples}
    out = {}
    # Abstaining on every question is the starting point; its threshold must lie below every
    # null odds. (The script starts at 0.0, right for its probabilities in [0, 1], where 0
    # abstains on nearly all; null odds are unbounded, and 0.0 would answer every question
    # whose odds are negative, not reproducing the score it reports.)
    abstain_all = min(null_odds.values(), default=1.0) - 1.0
    for name, scores in (("exact", exact), ("f1", f1)):
        score = best = float(sum(not h for h in has_answer.values()))
        thresh = abstain_all
        for qid in sorted(null_odds, key=lambda k: null_odds[k]):
            if qid not in scores:
                continue
            # Answering this question (instead of abstaining) gains its score if it has an
            # answer; if it has none, a non-empty prediction loses the abstention point.
            score += scores[qid] if has_answer[qid] else (-1.0 if predictions[qid] else 0.0)
            if score > best:
                best, thresh = score, null_odds[qid]
        out[f"best_{name}"] = 100.0 * best / max(len(scores), 1)
        out[f"best_{name}_thresh"] = float(thresh)
    return out
