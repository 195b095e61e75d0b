"""SQuAD v1.1 / v2.0 extractive question answering, as google-research/bert's run_squad.py does it.

    examples = read_squad_json("dev-v2.0.json")          # or tfds_squad("squad/v2.0", "validation")
    features = featurize(examples, tok, training=False)  # [CLS] question [SEP] window [SEP] rows
    preds, nbest, null_odds = postprocess(examples, features, start_NxS, end_NxS, version_2=True)
    squad_eval.evaluate(examples, preds)                 # the official EM / F1

A context is split into words on whitespace (`char_to_word`), the words into WordPieces, and the
pieces into overlapping windows `doc_stride` apart. A piece seen by several windows is scored only
in the window where it has the most context on both sides ("max context"). Decoding rebuilds the
best span's text from the context characters behind its pieces' offsets, then keeps the part of
its whole words that they cover (`_final_text`, run_squad.py's get_final_text). One deliberate
difference: run_squad.py rebuilds the span from the piece strings, so a span containing an [UNK]
piece cannot be aligned and falls back to the whole words ("(x☃y)." for "x☃y"); here the offsets
give the exact original text.
Scoring (squad_eval.py) reproduces the official evaluate-v1.1.py / evaluate-v2.0.py scripts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from bert_jax.data.tasks import common

TFDS_NAMES = ("squad/v1.1", "squad/v2.0")
# run_squad.py's whitespace for splitting a context into words (not str.isspace: a no-break
# space stays inside a word there, and the WordPiece tokenizer splits on it later).
_WORD_SEPARATORS = np.array([ord(c) for c in " \t\r\n\u202f"], np.uint32)
# null_odds of a question with no valid span: abstain at any threshold (finite: strict JSON).
NO_SPAN_ODDS = 1e9


@dataclasses.dataclass
class SquadExample:
    """One question on one context.

    `answers` holds every gold answer text (dev sets have several; train has one; [] when the
    question is impossible or unlabeled); `answer_start` is the character offset of answers[0]
    in `context` as the data gives it (-1 when there is none); only training uses it, and
    `featurize` skips a training example whose answer is not found there.
    """

    qas_id: str
    question: str
    context: str
    answers: list[str]
    answer_start: int
    is_impossible: bool = False


# --------------------------------------------------------------------------- reading


def read_squad_json(path: str | os.PathLike) -> list[SquadExample]:
    """Examples from an official SQuAD v1.1 / v2.0 JSON file (data > paragraphs > qas)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: not valid JSON ({e}); expected the official SQuAD format."
        ) from e
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f'{path}: expected {{"data": [articles]}} (the official SQuAD format).')
    examples: list[SquadExample] = []
    seen: set[str] = set()
    misplaced: list[str] = []  # ids with an answer that is not at its answer_start
    for a, article in enumerate(data["data"]):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, f"{path}: data[{a}]")):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, where)
            for q, qa in enumerate(_field(paragraph, "qas", list, where)):
                qas_id = str(_field(qa, "id", (str, int), f"{where}.qas[{q}]"))
                where_qa = f"{path}: question {qas_id!r}"
                if qas_id in seen:
                    raise ValueError(f"{where_qa} appears twice; question ids must be unique.")
                seen.add(qas_id)
                example, all_in_place = _read_qa(qa, qas_id, context, where_qa)
                if not all_in_place:
                    misplaced.append(qas_id)
                examples.append(example)
    if misplaced:
        # Scoring uses only the answer texts, so such a file still evaluates; training
        # (featurize) skips an example whose answer cannot be found, as run_squad.py does.
        logging.warning(
            "%s: %d question(s) have an answer that is not at its answer_start (first: %r); "
            "evaluation uses the answer texts, training skips the ones it cannot locate.",
            path,
            len(misplaced),
            misplaced[0],
        )
    return examples


def _field(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """obj[key], checked to be of `kind`; the error names the place in the file."""
    if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ValueError(f"{where}: expected a field {key!r} of type {names} in {obj!r:.200}.")
    return obj[key]


def _read_qa(
    qa: dict[str, Any], qas_id: str, context: str, where: str
) -> tuple[SquadExample, bool]:
    """The example, and whether every answer's text is at its answer_start."""
    question = _field(qa, "question", str, where)
    is_impossible = bool(qa.get("is_impossible", False))
    answers = qa.get("answers", [])  # absent in unlabeled test files
    if not isinstance(answers, list):
        raise ValueError(f"{where}: 'answers' must be a list, got {answers!r:.200}.")
    if is_impossible and answers:
        raise ValueError(
            f"{where}: is_impossible=true but it has answers; put them in 'plausible_answers'."
        )
    texts, starts = [], []
    for answer in answers:
        texts.append(_field(answer, "text", str, where))
        starts.append(_field(answer, "answer_start", int, where))
    in_place = all(
        0 <= s and context[s : s + len(t)] == t for t, s in zip(texts, starts, strict=True)
    )
    example = SquadExample(
        qas_id=qas_id,
        question=question,
        context=context,
        answers=texts,
        answer_start=starts[0] if starts else -1,
        is_impossible=is_impossible,
    )
    return example, in_place


def tfds_squad(name: str, split: str, data_dir: str | None = None) -> list[SquadExample]:
    """Examples of TFDS "squad/v1.1" or "squad/v2.0" (splits "train", "validation").

    TFDS answer offsets are not checked here: a training example whose answer cannot be found
    is skipped by `featurize`, with a counted warning, as run_squad.py does.
    """
    if name not in TFDS_NAMES:
        raise ValueError(f"name={name!r}; use one of {TFDS_NAMES}.")
    examples = []
    for row in common.tfds_examples(name, split, data_dir):
        impossible = bool(row.get("is_impossible", False))
        texts = [] if impossible else [common.text(t) for t in row["answers"]["text"]]
        starts = [int(s) for s in row["answers"]["answer_start"]]
        examples.append(
            SquadExample(
                qas_id=common.text(row["id"]),
                question=common.text(row["question"]),
                context=common.text(row["context"]),
                answers=texts,
                answer_start=starts[0] if texts and starts else -1,
                is_impossible=impossible,
            )
        )
    return examples


# --------------------------------------------------------------------------- features


def _split_words(context: str) -> tuple[list[str], np.ndarray]:
    """(whitespace words, char_to_word): each character's word; a space maps to the word before."""
    codepoints = np.frombuffer(context.encode("utf-32-le", "surrogatepass"), np.uint32)
    space = np.isin(codepoints, _WORD_SEPARATORS)
    begins = ~space & np.concatenate([[True], space[:-1]])
    ends = ~space & np.concatenate([space[1:], [True]])
    words = [
        context[b:e] for b, e in zip(np.flatnonzero(begins), np.flatnonzero(ends) + 1, strict=True)
    ]
    return words, (np.cumsum(begins) - 1).astype(np.int32)


@dataclasses.dataclass
class _Doc:
    """A context's words and WordPieces, shared by all questions on it."""

    words: list[str]
    char_to_word: np.ndarray  # [chars]
    piece_ids: list[int]
    piece_word: np.ndarray  # [pieces] word of each piece (run_squad's tok_to_orig_index)
    piece_offsets: np.ndarray  # [pieces, 2] character span of each piece in the context
    word_to_piece: np.ndarray  # [words] first piece of each word (orig_to_tok_index)


def _docs(contexts: Sequence[str], tokenizer: Any) -> dict[str, _Doc]:
    unique = list(dict.fromkeys(contexts))
    docs = {}
    # Tokenizing the whole context equals run_squad's word-by-word tokenization: BERT's basic
    # tokenizer splits on every whitespace, so no piece spans two words. The offsets tell the word.
    for context, enc in zip(unique, tokenizer.encode_pieces(unique), strict=True):
        words, char_to_word = _split_words(context)
        offsets = np.asarray(enc.offsets, np.int32).reshape(-1, 2)
        piece_word = char_to_word[offsets[:, 0]] if len(offsets) else np.zeros(0, np.int32)
        docs[context] = _Doc(
            words=words,
            char_to_word=char_to_word,
            piece_ids=list(enc.ids),
            piece_word=piece_word,
            piece_offsets=offsets,
            word_to_piece=np.searchsorted(piece_word, np.arange(len(words)), side="left"),
        )
    return docs


def _answer_pieces(ex: SquadExample, doc: _Doc, answer_ids: list[int]) -> tuple[int, int] | None:
    """First and last piece of the training answer, or None when it cannot be found."""
    text, start = (ex.answers[0], ex.answer_start) if ex.answers else ("", -1)
    end = start + len(text) - 1
    if not text or start < 0 or end >= len(ex.context) or doc.char_to_word[start] < 0:
        return None
    first_word, last_word = int(doc.char_to_word[start]), int(doc.char_to_word[end])
    # run_squad.py keeps an answer only if its whitespace-normalised text is inside its words.
    if " ".join(doc.words[first_word : last_word + 1]).find(" ".join(text.split())) == -1:
        return None
    first = int(doc.word_to_piece[first_word])
    if last_word + 1 < len(doc.words):
        last = int(doc.word_to_piece[last_word + 1]) - 1
    else:
        last = len(doc.piece_ids) - 1
    if last < first:  # the answer's words have no pieces (e.g. only control characters)
        return None
    # _improve_answer_span: the tightest piece span whose pieces are exactly the answer's, e.g.
    # "1895" inside the word "(1895-1943)."; only spans of the answer's length can match.
    n = len(answer_ids)
    for s in range(first, last - n + 2 if n else first):
        if doc.piece_ids[s : s + n] == answer_ids:
            return s, s + n - 1
    return first, last


def _windows(n_pieces: int, max_pieces: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of the sliding windows over a context's pieces, as run_squad.py."""
    spans, start = [], 0
    while start < n_pieces:
        length = min(n_pieces - start, max_pieces)
        spans.append((start, length))
        if start + length == n_pieces:
            break
        start += min(length, doc_stride)
    # An empty context still gets one (empty) window so that every example has a row to score.
    return spans or [(0, 0)]


def _max_context_window(spans: list[tuple[int, int]], n_pieces: int) -> np.ndarray:
    """For each piece, the window where min(left, right context) + 0.01 * length is largest."""
    best = np.full(n_pieces, -np.inf)
    owner = np.zeros(n_pieces, np.int32)
    for i, (start, length) in enumerate(spans):
        pos = np.arange(start, start + length)
        score = np.minimum(pos - start, start + length - 1 - pos) + 0.01 * length
        better = score > best[pos]  # strict: on a tie the earlier window keeps the piece
        best[pos[better]], owner[pos[better]] = score[better], i
    return owner


def featurize(
    examples: Sequence[SquadExample],
    tokenizer: Any,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    *,
    training: bool,
) -> dict[str, np.ndarray]:
    """Rows of [CLS] question [SEP] context window [SEP], several per long context.

    Keys: the span-head contract (see common.py) plus metadata for `postprocess`:
    `example_index` [N]; `token_to_orig` [N, S] (the context word of each piece, -1 outside the
    context); `token_is_max_context` [N, S] bool; `token_offsets` [N, S, 2] (character span of each
    piece in the context, -1 outside). With `training`, an answer that cannot be located in its
    context drops the example (no rows; a warning counts them), as run_squad.py does.
    """
    if max_seq_length <= max_query_length + 3:
        raise ValueError(
            f"max_seq_length={max_seq_length} must exceed max_query_length={max_query_length} + 3 "
            "([CLS] and two [SEP]); raise max_seq_length or lower max_query_length."
        )
    if doc_stride < 1:
        raise ValueError(f"doc_stride={doc_stride}; use a positive number of pieces, e.g. 128.")
    docs = _docs([ex.context for ex in examples], tokenizer)
    queries = [
        e.ids[:max_query_length] for e in tokenizer.encode_pieces([ex.question for ex in examples])
    ]
    answer_texts = [ex.answers[0] if training and ex.answers else "" for ex in examples]
    answer_ids = [list(e.ids) for e in tokenizer.encode_pieces(answer_texts)]

    plans, skipped = [], []  # plans: (example index, query, doc, windows, answer pieces)
    for i, ex in enumerate(examples):
        doc = docs[ex.context]
        answer = None
        if training and not ex.is_impossible:
            answer = _answer_pieces(ex, doc, answer_ids[i])
            if answer is None:
                skipped.append(ex.qas_id)
                continue
        max_pieces = max_seq_length - len(queries[i]) - 3
        plans.append(
            (i, queries[i], doc, _windows(len(doc.piece_ids), max_pieces, doc_stride), answer)
        )
    if skipped:
        logging.warning(
            "SQuAD: skipped %d of %d training examples whose answer could not be found in the "
            "context (e.g. %s).",
            len(skipped),
            len(examples),
            skipped[:5],
        )

    n, s = sum(len(p[3]) for p in plans), max_seq_length
    out = {
        "input_ids": np.full((n, s), tokenizer.pad_id, np.int32),
        "input_mask": np.zeros((n, s), np.int32),
        "segment_ids": np.zeros((n, s), np.int32),
        "start_position": np.zeros(n, np.int32),
        "end_position": np.zeros(n, np.int32),
        "example_index": np.zeros(n, np.int32),
        "token_to_orig": np.full((n, s), -1, np.int32),
        "token_is_max_context": np.zeros((n, s), bool),
        "token_offsets": np.full((n, s, 2), -1, np.int32),
    }
    row = 0
    for i, query, doc, spans, answer in plans:
        owner = _max_context_window(spans, len(doc.piece_ids))
        first = len(query) + 2  # row position of the window's first piece
        for w, (start, length) in enumerate(spans):
            ids = [tokenizer.cls_id, *query, tokenizer.sep_id]
            ids += [*doc.piece_ids[start : start + length], tokenizer.sep_id]
            doc_cols, pieces = slice(first, first + length), slice(start, start + length)
            out["input_ids"][row, : len(ids)] = ids
            out["input_mask"][row, : len(ids)] = 1
            out["segment_ids"][row, first : len(ids)] = 1
            out["example_index"][row] = i
            out["token_to_orig"][row, doc_cols] = doc.piece_word[pieces]
            out["token_is_max_context"][row, doc_cols] = owner[pieces] == w
            out["token_offsets"][row, doc_cols] = doc.piece_offsets[pieces]
            # A window that does not hold the whole answer points at [CLS] (position 0).
            if answer is not None and start <= answer[0] and answer[1] < start + length:
                out["start_position"][row] = answer[0] - start + first
                out["end_position"][row] = answer[1] - start + first
            row += 1
    return out


# --------------------------------------------------------------------------- decoding

_BASIC_TOKENIZERS: dict[bool, Any] = {}


def _basic_tokens(text: str, lowercase: bool) -> list[str]:
    """BERT's BasicTokenizer: clean, split CJK, (lowercase + strip accents), split punctuation."""
    if lowercase not in _BASIC_TOKENIZERS:
        from tokenizers import normalizers, pre_tokenizers

        normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
        )
        _BASIC_TOKENIZERS[lowercase] = (normalizer, pre_tokenizers.BertPreTokenizer())
    normalizer, pre_tokenizer = _BASIC_TOKENIZERS[lowercase]
    return [t for t, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]


def _final_text(pred_text: str, orig_text: str, lowercase: bool) -> str:
    """run_squad.py's get_final_text: the characters of `orig_text` that `pred_text` covers.

    `pred_text` is normalised ("steve smith"); `orig_text` is the whole words it lies in ("Steve
    Smith's"). Characters are aligned one to one after removing spaces; when that is impossible
    (normalisation changed the length) the whole words are returned.
    """
    tok_text = " ".join(_basic_tokens(orig_text, lowercase))
    start = tok_text.find(pred_text)
    if start == -1:
        return orig_text
    end = start + len(pred_text) - 1
    orig_chars = [i for i, c in enumerate(orig_text) if c != " "]
    tok_chars = [i for i, c in enumerate(tok_text) if c != " "]
    if len(orig_chars) != len(tok_chars):
        return orig_text
    tok_rank = {pos: rank for rank, pos in enumerate(tok_chars)}
    if start not in tok_rank or end not in tok_rank:
        return orig_text
    return orig_text[orig_chars[tok_rank[start]] : orig_chars[tok_rank[end]] + 1]


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(x - top) for x in scores]
    total = sum(exps)
    return [x / total for x in exps]


def postprocess(
    examples: Sequence[SquadExample],
    features: dict[str, np.ndarray],
    start_logits_NxS: np.ndarray,
    end_logits_NxS: np.ndarray,
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
    lowercase: bool = True,
) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]], dict[str, float]]:
    """(predictions, nbest, null_odds) per qas_id from the rows' start/end logits.

    Candidates are the top `n_best_size` starts x ends of each row, with both ends in the
    context, start <= end, at most `max_answer_length` pieces, and the start piece in its max
    context window. With `version_2`, null_odds[id] = null score (min over rows of
    start[0] + end[0]) - best span score, and the prediction is "" when it exceeds
    `null_score_diff_threshold`; with no valid span at all the prediction is "" and the odds
    NO_SPAN_ODDS (version 1 predicts run_squad.py's placeholder "empty"). `lowercase` must match
    the tokenizer. Examples without rows get no prediction.
    """
    start_logits = np.asarray(start_logits_NxS, np.float64)
    end_logits = np.asarray(end_logits_NxS, np.float64)
    expected = features["input_ids"].shape
    if start_logits.shape != expected or end_logits.shape != expected:
        raise ValueError(
            f"logits shapes {start_logits.shape} and {end_logits.shape} differ from the "
            f"features' {expected}; pass one row of logits per feature row, in order."
        )
    to_orig, max_context = features["token_to_orig"], features["token_is_max_context"]
    offsets = features["token_offsets"]
    if len(features["example_index"]) and features["example_index"].max() >= len(examples):
        raise ValueError(
            f"features refer to example {features['example_index'].max()} but only "
            f"{len(examples)} examples were passed; pass the list the features were built from."
        )
    rows_of: list[list[int]] = [[] for _ in examples]
    for r, i in enumerate(features["example_index"]):
        rows_of[int(i)].append(r)
    words_of: dict[str, list[str]] = {}

    predictions, all_nbest, null_odds = {}, {}, {}
    for ex, rows in zip(examples, rows_of, strict=True):
        if not rows:
            continue
        if ex.context not in words_of:
            words_of[ex.context] = _split_words(ex.context)[0]
        words = words_of[ex.context]
        # Candidates in run_squad.py's order (row, start rank, end rank); the sort is stable.
        cands: list[tuple[int, int, int]] = []
        null_row = min(rows, key=lambda r: start_logits[r, 0] + end_logits[r, 0])
        for r in rows:
            starts = np.argsort(-start_logits[r], kind="stable")[:n_best_size]
            ends = np.argsort(-end_logits[r], kind="stable")[:n_best_size]
            s, e = (a.reshape(-1) for a in np.meshgrid(starts, ends, indexing="ij"))
            ok = (to_orig[r, s] >= 0) & (to_orig[r, e] >= 0) & max_context[r, s]
            ok &= (e >= s) & (e - s + 1 <= max_answer_length)
            cands += [(r, int(a), int(b)) for a, b in zip(s[ok], e[ok], strict=True)]
        if version_2:
            cands.append((null_row, 0, 0))
        scores = [start_logits[r, s] + end_logits[r, e] for r, s, e in cands]
        nbest: list[dict[str, Any]] = []
        seen: set[str] = set()
        for k in np.argsort(-np.asarray(scores), kind="stable"):
            if len(nbest) >= n_best_size:
                break
            r, s, e = cands[k]
            text = ""
            if s > 0:
                piece_text = ex.context[offsets[r, s, 0] : offsets[r, e, 1]]
                orig_text = " ".join(words[to_orig[r, s] : to_orig[r, e] + 1])
                text = _final_text(
                    " ".join(_basic_tokens(piece_text, lowercase)), orig_text, lowercase
                )
                if text in seen:
                    continue
            seen.add(text)
            nbest.append(_entry(text, start_logits[r, s], end_logits[r, e]))
        null_entry = _entry("", start_logits[null_row, 0], end_logits[null_row, 0])
        if version_2 and "" not in seen:
            nbest.append(null_entry)
        best = next((x for x in nbest if x["text"]), None)
        if best is None and not version_2:  # no valid span at all: run_squad.py's placeholder
            best = _entry("empty", 0.0, 0.0)
            nbest.append(best)
        probs = _softmax([x["start_logit"] + x["end_logit"] for x in nbest])
        for x, p in zip(nbest, probs, strict=True):
            x["probability"] = p
        all_nbest[ex.qas_id] = nbest
        if not version_2:
            predictions[ex.qas_id] = nbest[0]["text"]
            continue
        if best is None:
            # No span to answer with (an empty context, or no top position inside it): abstain
            # at any threshold. (run_squad.py fails here; a placeholder would be scored wrong.)
            null_odds[ex.qas_id], predictions[ex.qas_id] = NO_SPAN_ODDS, ""
            continue
        diff = null_entry["start_logit"] + null_entry["end_logit"]
        diff -= best["start_logit"] + best["end_logit"]
        null_odds[ex.qas_id] = diff
        predictions[ex.qas_id] = "" if diff > null_score_diff_threshold else best["text"]
    return predictions, all_nbest, null_odds


def _entry(text: str, start_logit: float, end_logit: float) -> dict[str, Any]:
    return {
        "text": text,
        "probability": 0.0,
        "start_logit": float(start_logit),
        "end_logit": float(end_logit),
    }


def write_predictions(
    out_dir: str | os.PathLike,
    predictions: dict[str, str],
    nbest: dict[str, list[dict[str, Any]]],
    null_odds: dict[str, float],
) -> dict[str, str]:
    """Writes predictions.json, nbest_predictions.json, null_odds.json; returns their paths.

    null_odds.json is what evaluate-v2.0.py takes as --na-prob-file.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name, obj in (
        ("predictions", predictions),
        ("nbest_predictions", nbest),
        ("null_odds", null_odds),
    ):
        paths[name] = os.path.join(os.fspath(out_dir), f"{name}.json")
        with open(paths[name], "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=4, ensure_ascii=False) + "\n")
    return paths
