"""SQuAD: reading, windows, answer positions, decoding, and the official EM/F1 scoring."""

import json
import logging
import pathlib
import re

import numpy as np
import pytest

from bert_jax.data import samples
from bert_jax.data.tasks import squad, squad_eval
from bert_jax.pretrained import BertTokenizer

SAMPLE = pathlib.Path(__file__).parent / "data" / "squad" / "sample-v2.0.json"


@pytest.fixture(scope="module")
def tok():
    return BertTokenizer.from_vocab(samples.fetch("minilm") / "vocab.txt", lowercase=True)


@pytest.fixture(scope="module")
def examples():
    return squad.read_squad_json(SAMPLE)


def _piece_span(ex):
    """The character span the training answer's pieces cover, as run_squad.py finds it."""
    if ex.qas_id == "bk-6":  # "Japan" inside "Japanese": the piece span is the whole word
        return ex.answer_start, ex.answer_start + len("Japanese")
    return ex.answer_start, ex.answer_start + len(ex.answers[0])


def _doc_pieces(features, row):
    cols = np.flatnonzero(features["token_to_orig"][row] >= 0)
    return cols, features["input_ids"][row, cols]


def _long_example(qas_id="long", answer=None, items=120):
    context = " ".join(f"item {i}." for i in range(items))  # 3 pieces each: "item", "<i>", "."
    start = context.index(answer) if answer else -1
    return squad.SquadExample(qas_id, "Which item?", context, [answer] if answer else [], start)


# --------------------------------------------------------------------------- reading


def test_read_squad_json(examples):
    assert len(examples) == 20
    by_id = {ex.qas_id: ex for ex in examples}
    sb1 = by_id["sb-1"]
    assert sb1.answers == ["Denver Broncos", "Denver Broncos", "Broncos"]
    assert sb1.context[sb1.answer_start :].startswith("Denver Broncos")
    assert by_id["sb-4"].is_impossible and by_id["sb-4"].answers == []
    assert by_id["sb-4"].answer_start == -1
    assert by_id["tk-3"].answers == ["about   14 million"]
    assert sum(ex.is_impossible for ex in examples) == 3


@pytest.mark.parametrize(
    ("qa", "match"),
    [
        (
            {"id": "q1", "question": "?", "answers": [{"text": "cat", "answer_start": "2"}]},
            "'q1'.*'answer_start'",
        ),
        (
            {"id": "q1", "question": "?", "answers": [{"text": 3, "answer_start": 0}]},
            "'q1'.*'text'",
        ),
        (
            {
                "id": "q1",
                "question": "?",
                "answers": [{"text": "A", "answer_start": 0}],
                "is_impossible": True,
            },
            "plausible_answers",
        ),
        ({"id": "q1", "answers": []}, "'question'"),
    ],
)
def test_read_squad_json_errors(tmp_path, qa, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "A cat.", "qas": [qa]}]}]}))
    with pytest.raises(ValueError, match=f"bad.json.*{match}"):
        squad.read_squad_json(path)


def test_misplaced_answer_start_loads_for_evaluation_and_is_skipped_in_training(
    tmp_path, tok, caplog
):
    def qa(qas_id, start):
        return {
            "id": qas_id,
            "question": "Who?",
            "answers": [{"text": "Bob", "answer_start": start}],
        }

    qas = [qa("ok", 8), qa("moved", 0), qa("far", 50), qa("ok2", 8)]  # "Ann met Bob."
    qas[3]["answers"].append({"text": "Bob", "answer_start": -1})  # a second answer misplaced
    path = tmp_path / "dev.json"
    path.write_text(
        json.dumps({"data": [{"paragraphs": [{"context": "Ann met Bob.", "qas": qas}]}]})
    )
    with caplog.at_level(logging.WARNING):
        examples = squad.read_squad_json(path)
    assert [(ex.qas_id, ex.answers, ex.answer_start) for ex in examples] == [
        ("ok", ["Bob"], 8),
        ("moved", ["Bob"], 0),
        ("far", ["Bob"], 50),
        ("ok2", ["Bob", "Bob"], 8),
    ]
    assert caplog.text.count("not at its answer_start") == 1  # one warning for the file
    assert "3 question(s)" in caplog.text and "first: 'moved'" in caplog.text
    # Scoring needs only the texts.
    preds = {ex.qas_id: "Bob" for ex in examples}
    assert squad_eval.evaluate(examples, preds)["exact_match"] == 100.0
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        f = squad.featurize(examples, tok, 32, 16, 16, training=True)
    assert sorted(examples[i].qas_id for i in f["example_index"]) == ["ok", "ok2"]
    assert "skipped 2 of 4 training examples" in caplog.text and "moved" in caplog.text


def test_read_squad_json_file_errors(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        squad.read_squad_json(path)
    path.write_text(json.dumps({"version": "1.1"}))
    with pytest.raises(ValueError, match="broken.json.*official SQuAD format"):
        squad.read_squad_json(path)
    qa = {"id": "dup", "question": "?", "answers": []}
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "x", "qas": [qa, qa]}]}]}))
    with pytest.raises(ValueError, match="'dup' appears twice"):
        squad.read_squad_json(path)


# --------------------------------------------------------------------------- features


def test_pieces_equal_word_by_word_tokenization(tok, examples):
    # run_squad.py tokenizes each whitespace word alone; featurize tokenizes whole contexts.
    odd = "a\u00a0b\tc\u202fd  e\u200bf \x00g h\u3000i (x)y, naïve\r\nEnd"
    for context in {ex.context for ex in examples} | {odd}:
        doc = squad._docs([context], tok)[context]
        assert doc.words == [w for w in re.split("[ \t\r\n\u202f]+", context) if w]
        for w, word in enumerate(doc.words):
            ids = [doc.piece_ids[p] for p in np.flatnonzero(doc.piece_word == w)]
            assert ids == tok.encode_pieces([word])[0].ids, word


@pytest.mark.parametrize(("max_seq_length", "doc_stride"), [(128, 32), (40, 8)])
def test_training_positions_recover_the_answer(tok, examples, max_seq_length, doc_stride):
    assert tok.tokenize("Japanese") == ["japanese"]  # else run_squad.py would find "japan"
    f = squad.featurize(examples, tok, max_seq_length, doc_stride, 16, training=True)
    assert f["input_ids"].shape == (len(f["example_index"]), max_seq_length)
    assert set(f["example_index"]) == set(range(len(examples)))  # nothing skipped
    found = set()
    for row, i in enumerate(f["example_index"]):
        ex, s, e = examples[i], f["start_position"][row], f["end_position"][row]
        if ex.is_impossible:
            assert s == e == 0
            continue
        first, last = _piece_span(ex)
        offsets = f["token_offsets"][row][f["token_to_orig"][row] >= 0]
        inside = offsets[0, 0] <= first and last <= offsets[-1, 1]
        assert (s > 0) == inside, (ex.qas_id, row)
        if not inside:
            assert s == e == 0
            continue
        found.add(ex.qas_id)
        assert f["segment_ids"][row, s] == f["segment_ids"][row, e] == 1
        assert (
            ex.context[f["token_offsets"][row, s, 0] : f["token_offsets"][row, e, 1]]
            == (ex.context[first:last])
        )
        pieces = tok.convert_ids_to_tokens(f["input_ids"][row, s : e + 1])
        assert pieces == tok.tokenize(ex.context[first:last])
    assert found == {ex.qas_id for ex in examples if not ex.is_impossible}


# Stride 25: windows of equal length tie on some pieces (the earlier wins). Stride 100 is over
# the window length: windows follow without a gap (run_squad.py steps by min(length, stride)).
# 384/200: the short last window loses pieces it has more context for, by 0.01 * length.
@pytest.mark.parametrize(
    ("items", "seq", "doc_stride"), [(120, 64, 24), (120, 64, 25), (120, 64, 100), (400, 384, 200)]
)
def test_windows_cover_the_context_with_stride_and_one_max_context(tok, items, seq, doc_stride):
    ex = _long_example(items=items)
    f = squad.featurize([ex], tok, seq, doc_stride, 16, training=False)
    full = tok.encode_pieces([ex.context])[0].ids
    n, budget = len(full), seq - len(tok.tokenize(ex.question)) - 3
    stride = min(doc_stride, budget)
    assert n >= 3 * items  # a few larger numbers take two pieces
    rows = len(f["example_index"])
    assert rows == -(-(n - budget) // stride) + 1  # windows until one reaches the end
    owners = np.zeros(n, int)
    words = ex.context.split(" ")
    for k in range(rows):
        cols, ids = _doc_pieces(f, k)
        start, length = k * stride, min(budget, n - k * stride)
        np.testing.assert_array_equal(ids, full[start : start + length])
        assert f["input_ids"][k, cols[-1] + 1] == tok.sep_id
        assert f["input_mask"][k].sum() == cols[-1] + 2
        for col, p in zip(cols, range(start, start + length), strict=True):
            # run_squad.py's rule, written out: the window with the largest min(left, right)
            # context + 0.01 * length, the earlier one on a tie.
            scores = [
                min(p - s0, s0 + ln - 1 - p) + 0.01 * ln
                for s0, ln in ((j * stride, min(budget, n - j * stride)) for j in range(rows))
                if s0 <= p < s0 + ln
            ]
            first_windows = [j for j in range(rows) if j * stride <= p]
            best = first_windows[-len(scores) :][int(np.argmax(scores))]
            assert f["token_is_max_context"][k, col] == (best == k)
            owners[p] += f["token_is_max_context"][k, col]
            a, b = f["token_offsets"][k, col]
            assert ex.context[a:b] in words[f["token_to_orig"][k, col]]
    np.testing.assert_array_equal(owners, 1)  # every piece is scored in exactly one window
    assert f["input_ids"][-1, f["input_mask"][-1].sum() :].tolist() == [tok.pad_id] * (
        seq - f["input_mask"][-1].sum()
    )


def test_answers_across_window_boundaries(tok):
    exs = [_long_example(f"q{i}", f"item {i}.") for i in range(0, 120, 7)]
    f = squad.featurize(exs, tok, 64, 24, 16, training=True)
    partial = 0
    for row, i in enumerate(f["example_index"]):
        first = 3 * int(exs[i].qas_id[1:])  # the answer is pieces first..first+2
        cols, _ = _doc_pieces(f, row)
        start = int(np.flatnonzero(f["example_index"] == i).tolist().index(row)) * 24
        held = set(range(start, start + len(cols))) & {first, first + 1, first + 2}
        partial += 0 < len(held) < 3
        if len(held) == 3:
            assert f["start_position"][row] == cols[0] + first - start
            assert f["end_position"][row] == f["start_position"][row] + 2
        else:
            assert f["start_position"][row] == f["end_position"][row] == 0
    assert partial > 0  # some windows cut an answer in two and point at [CLS]


def test_featurize_rejects_bad_lengths(tok, examples):
    with pytest.raises(ValueError, match="max_seq_length=60 must exceed max_query_length=64"):
        squad.featurize(examples, tok, 60, training=False)
    with pytest.raises(ValueError, match="doc_stride=0"):
        squad.featurize(examples, tok, 128, 0, training=False)


def test_unfindable_training_answers_are_skipped_and_counted(tok, caplog):
    good = squad.SquadExample("ok", "Who?", "Ann met Bob.", ["Bob"], 8)
    moved = squad.SquadExample("moved", "Who?", "Ann met Bob.", ["Bob"], 0)  # text is "Ann"
    outside = squad.SquadExample("far", "Who?", "Ann met Bob.", ["Bob"], 50)
    with caplog.at_level(logging.WARNING):
        f = squad.featurize([good, moved, outside], tok, 32, 16, 16, training=True)
    assert f["example_index"].tolist() == [0]
    assert "skipped 2 of 3 training examples" in caplog.text
    assert "moved" in caplog.text and "far" in caplog.text
    f = squad.featurize([good, moved, outside], tok, 32, 16, 16, training=False)
    assert f["example_index"].tolist() == [0, 1, 2]  # evaluation keeps every question
    assert not f["start_position"].any()


# --------------------------------------------------------------------------- decoding


def _logits(features, spans, low=-10.0):
    """start/end logits: `low` everywhere, and (row, start, end, value) spans raised."""
    start = np.full(features["input_ids"].shape, low, np.float32)
    end = start.copy()
    for row, s, e, value in spans:
        start[row, s] = end[row, e] = value
    return start, end


def _gold_logits(examples, features):
    """Logits peaked on each row's training answer, or on [CLS] for impossible questions."""
    spans = []
    for row, i in enumerate(features["example_index"]):
        s, e = features["start_position"][row], features["end_position"][row]
        if s > 0 or examples[i].is_impossible:
            spans.append((row, s, e, 10.0))
    return _logits(features, spans)


def test_postprocess_recovers_each_answer_text(tok, examples):
    f = squad.featurize(examples, tok, 40, 8, 16, training=True)  # several windows each
    preds, nbest, null_odds = squad.postprocess(
        examples, f, *_gold_logits(examples, f), version_2=True
    )
    expected = {ex.qas_id: " ".join(ex.answers[0].split()) if ex.answers else "" for ex in examples}
    expected["bk-6"] = "Japanese"  # "Japan" is inside one word piece: the word is predicted
    assert preds == expected
    assert preds["tk-3"] == "about 14 million"  # words re-joined by single spaces, as run_squad
    assert preds["bk-1"] == "Steve Smith" and preds["bk-4"] == "1895"
    for qid, entries in nbest.items():
        texts = [x["text"] for x in entries]
        assert len(texts) == len(set(texts)) and "" in texts
        assert sum(x["probability"] for x in entries) == pytest.approx(1.0)
        assert entries[0]["text"] == expected[qid]
        # Null score: 10 + 10 (impossible) or -10 - 10; best span: -10 - 10 or 10 + 10.
        assert null_odds[qid] == (40.0 if not expected[qid] else -40.0)

    v1 = [ex for ex in examples if not ex.is_impossible]
    f = squad.featurize(v1, tok, 40, 8, 16, training=True)
    preds, _, null_odds = squad.postprocess(v1, f, *_gold_logits(v1, f))
    assert preds == {ex.qas_id: expected[ex.qas_id] for ex in v1} and null_odds == {}


def test_postprocess_scores_a_span_only_in_its_max_context_window(tok):
    ex = _long_example()
    f = squad.featurize([ex], tok, 64, 24, 16, training=False)
    piece = 3 * 57 + 1  # the piece "57"
    rows = []
    for row in range(len(f["example_index"])):
        cols, _ = _doc_pieces(f, row)
        start = row * 24
        if start <= piece < start + len(cols):
            rows.append((row, cols[0] + piece - start))
    assert len(rows) >= 2  # the piece sits in an overlap
    (own_row, own_col), (other_row, other_col) = sorted(
        rows, key=lambda r: not f["token_is_max_context"][r[0], r[1]]
    )[:2]
    assert f["token_is_max_context"][own_row, own_col]
    assert not f["token_is_max_context"][other_row, other_col]
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, (2, *f["input_ids"].shape)).astype(np.float32)

    start, end = noise.copy()
    start[other_row, other_col] = end[other_row, other_col] = 20.0
    preds, nbest, _ = squad.postprocess([ex], f, start, end)
    assert preds["long"] != "57" and "57" not in [x["text"] for x in nbest["long"]]

    start, end = noise.copy()
    start[own_row, own_col] = end[own_row, own_col] = 5.0
    start[other_row, other_col] = end[other_row, other_col] = 5.0
    preds, nbest, _ = squad.postprocess([ex], f, start, end)
    assert preds["long"] == "57"
    assert [x["text"] for x in nbest["long"]].count("57") == 1


def test_postprocess_null_answer_against_threshold(tok):
    ex = _long_example("q", "item 100.")
    f = squad.featurize([ex], tok, 64, 24, 16, training=True)
    row = int(np.flatnonzero(f["start_position"])[0])
    s = f["start_position"][row]

    def run(span_logit, threshold):
        start, end = _logits(f, [(row, s, s + 1, span_logit)])
        start[:, 0], end[:, 0] = 3.0, 3.0  # null score 6 in every row ...
        start[1, 0], end[1, 0] = 1.0, 1.0  # ... but 2 in row 1: the minimum counts
        return squad.postprocess(
            [ex], f, start, end, version_2=True, null_score_diff_threshold=threshold
        )

    preds, nbest, odds = run(4.0, 0.0)
    assert odds["q"] == pytest.approx(2.0 - 8.0) and preds["q"] == "item 100"
    null = [x for x in nbest["q"] if x["text"] == ""]
    assert len(null) == 1 and null[0]["start_logit"] == null[0]["end_logit"] == 1.0
    assert run(4.0, -5.9)[0]["q"] == "item 100"
    assert run(4.0, -6.1)[0]["q"] == ""  # -6 > -6.1: the null answer wins
    preds, _, odds = run(0.5, 0.0)
    assert odds["q"] == pytest.approx(1.0) and preds["q"] == ""
    assert run(0.5, 1.5)[0]["q"] == "item 100"


@pytest.mark.parametrize("context", ["", "  \t ", "item 0. item 1."])
def test_postprocess_v2_abstains_without_a_valid_span(tok, context):
    ex = squad.SquadExample("q", "Which item?", context, [], -1, is_impossible=True)
    f = squad.featurize([ex], tok, 32, 16, 16, training=False)
    # The null score (-10) is below the placeholder's 0, and the one start/end kept
    # (n_best_size=1) is a question piece: no span qualifies.
    start, end = _logits(f, [(0, 1, 1, 10.0), (0, 0, 0, -5.0)], low=-20.0)
    for threshold in (0.0, -100.0, 2 * squad.NO_SPAN_ODDS):
        preds, nbest, odds = squad.postprocess(
            [ex], f, start, end, n_best_size=1, version_2=True, null_score_diff_threshold=threshold
        )
        assert preds == {"q": ""} and odds == {"q": squad.NO_SPAN_ODDS}
        assert [x["text"] for x in nbest["q"]] == [""] and nbest["q"][0]["probability"] == 1.0
    preds, _, _ = squad.postprocess([ex], f, start, end, n_best_size=1)
    assert preds == {"q": "empty"}  # version 1 keeps run_squad.py's placeholder


def test_postprocess_limits_span_length_and_order(tok):
    ex = _long_example(items=4)  # "item 0. item 1. item 2. item 3."
    f = squad.featurize([ex], tok, 64, 16, 16, training=False)
    first = int(np.flatnonzero(f["token_to_orig"][0] >= 0)[0])  # the piece "item" of "item 0."
    start, end = _logits(f, [(0, first, first + 5, 10.0)])  # "item 0. item 1." is 6 pieces
    preds, _, _ = squad.postprocess([ex], f, start, end, max_answer_length=6)
    assert preds["long"] == "item 0. item 1."
    preds, _, _ = squad.postprocess([ex], f, start, end, max_answer_length=5)
    assert preds["long"] != "item 0. item 1."
    start, end = _logits(f, [(0, first + 5, first, 10.0)])  # an end before the start
    preds, nbest, _ = squad.postprocess([ex], f, start, end)
    assert max(x["start_logit"] + x["end_logit"] for x in nbest["long"]) == 0.0  # 10 - 10


def test_postprocess_checks_logit_shapes(tok, examples):
    f = squad.featurize(examples[:2], tok, 64, 16, 16, training=False)
    with pytest.raises(ValueError, match="one row of logits per feature row"):
        squad.postprocess(examples[:2], f, np.zeros((1, 64)), np.zeros((1, 64)))
    zeros = np.zeros(f["input_ids"].shape)
    with pytest.raises(ValueError, match="refer to example 1 but only 1 examples"):
        squad.postprocess(examples[:1], f, zeros, zeros)


@pytest.mark.parametrize(
    ("pred", "orig", "lowercase", "want"),
    [
        ("steve smith", "Steve Smith's", True, "Steve Smith"),
        ("frederic", "Frédéric", True, "Frédéric"),
        ("1895", "(1895-1943).", True, "1895"),
        ("東 京", "東京", True, "東京"),
        ("Steve", "Steve's", False, "Steve"),
        ("paris", "London", True, "London"),  # not found: the whole words
        ("cafe", "Cafe\u0301", True, "Cafe\u0301"),  # lengths differ: the whole words
    ],
)
def test_final_text(pred, orig, lowercase, want):
    assert squad._final_text(pred, orig, lowercase) == want


def test_write_predictions(tmp_path):
    preds, nbest, odds = {"a": "x"}, {"a": [{"text": "x", "probability": 1.0}]}, {"a": -1.5}
    paths = squad.write_predictions(tmp_path / "out", preds, nbest, odds)
    assert json.loads(pathlib.Path(paths["predictions"]).read_text()) == preds
    assert json.loads((tmp_path / "out" / "nbest_predictions.json").read_text()) == nbest
    assert json.loads((tmp_path / "out" / "null_odds.json").read_text()) == odds


# --------------------------------------------------------------------------- official scoring


def test_normalize_exact_match_and_f1():
    assert squad_eval.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert squad_eval.normalize_answer("An apple, a day; theater.") == "apple day theater"
    assert squad_eval.exact_match("the Eiffel Tower", ["Eiffel tower"]) == 1.0
    assert squad_eval.exact_match("Eiffel", ["Eiffel tower", "Tower"]) == 0.0
    # "cat sat" vs "cat": precision 1/2, recall 1 -> 2/3.
    assert squad_eval.f1_score("a cat sat", ["cat"]) == pytest.approx(2 / 3)
    # [cat sat on mat] vs [dog sat on mat]: 3 shared -> 0.75; vs [cat]: 0.4; the best counts.
    assert squad_eval.f1_score("the cat sat on the mat", ["a dog sat on a mat", "cat"]) == 0.75
    assert squad_eval.f1_score("x x y", ["x y y"]) == pytest.approx(2 / 3)  # counts are clipped
    assert squad_eval.f1_score("red", ["blue"]) == 0.0


def test_v1_and_v2_differ_on_empty_answers():
    assert squad_eval.exact_match("the", ["The"]) == 1.0  # both normalise to ""
    assert squad_eval.f1_score("the", ["The"]) == 0.0  # v1.1: no shared token
    assert (
        squad_eval.f1_score("the", ["The"], version_2=True) == 1.0
    )  # v2.0: no answer == no answer
    assert squad_eval.exact_match("", [], version_2=True) == 1.0  # impossible: gold is [""]
    assert squad_eval.f1_score("Paris", [], version_2=True) == 0.0
    with pytest.raises(ValueError, match="gold_answers is empty"):
        squad_eval.f1_score("Paris", [])


def _hand_case():
    ex = [
        squad.SquadExample("q1", "?", "Paris", ["Paris"], 0),
        squad.SquadExample("q2", "?", "blue", ["blue"], 0),
        squad.SquadExample("q3", "?", "x", [], -1, is_impossible=True),
        squad.SquadExample("q4", "?", "y", [], -1, is_impossible=True),
    ]
    preds = {"q1": "Paris", "q2": "dark blue", "q3": "x", "q4": "y"}
    odds = {"q1": -5.0, "q2": -3.0, "q3": 2.0, "q4": -1.0}
    return ex, preds, odds


def test_evaluate_v1_and_v2_by_hand():
    ex, preds, _ = _hand_case()
    got = squad_eval.evaluate(ex[:2], preds)
    assert got == pytest.approx({"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2})
    got = squad_eval.evaluate(ex, preds)  # v2 inferred from the impossible questions
    assert got == pytest.approx(
        {
            "exact_match": 25.0,
            "f1": 100 * (1 + 2 / 3) / 4,
            "total": 4,
            "HasAns_exact": 50.0,
            "HasAns_f1": 100 * (1 + 2 / 3) / 2,
            "HasAns_total": 2,
            "NoAns_exact": 0.0,
            "NoAns_f1": 0.0,
            "NoAns_total": 2,
        }
    )
    got = squad_eval.evaluate(ex, {**preds, "q3": "", "q4": ""})
    assert got["exact_match"] == 75.0 and got["NoAns_exact"] == 100.0
    with pytest.raises(ValueError, match="'q3' has no gold answer.*version_2=True"):
        squad_eval.evaluate(ex, preds, version_2=False)


def test_evaluate_counts_a_missing_prediction_as_zero(caplog):
    ex, preds, _ = _hand_case()
    with caplog.at_level(logging.WARNING):
        got = squad_eval.evaluate(ex[:2], {"q1": "Paris"})
    assert got["exact_match"] == 50.0 and "1 of 2 questions have no prediction" in caplog.text


def test_best_threshold_by_hand():
    ex, preds, odds = _hand_case()
    # Start from 2 (both impossible questions abstain); by rising odds: q1 +1 -> 3 (best at -5),
    # q2 +0 exact / +2/3 F1 (F1 best 3.67 at -3), q4 -1 (non-empty answer), q3 -1.
    assert squad_eval.best_threshold(ex, preds, odds) == pytest.approx(
        {
            "best_exact": 75.0,
            "best_exact_thresh": -5.0,
            "best_f1": 100 * (3 + 2 / 3) / 4,
            "best_f1_thresh": -3.0,
        }
    )
    # Nothing helps: the best is to abstain everywhere, at a threshold below every null odds
    # (the script's 0.0 is for probabilities; on these odds it would answer all four).
    bad = {"q1": "Rome", "q2": "red", "q3": "x", "q4": "y"}
    got = squad_eval.best_threshold(ex, bad, odds)
    assert got["best_exact"] == got["best_f1"] == 50.0
    assert got["best_f1_thresh"] == min(odds.values()) - 1.0
    abstained = {q: "" if odds[q] > got["best_f1_thresh"] else p for q, p in bad.items()}
    assert squad_eval.evaluate(ex, abstained, version_2=True)["f1"] == got["best_f1"]


# --------------------------------------------------------------------------- TFDS


@pytest.mark.parametrize("name", squad.TFDS_NAMES)
def test_tfds_mock_through_featurize_and_postprocess(tok, name, caplog):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        train = squad.tfds_squad(name, "train")
        dev = squad.tfds_squad(name, "validation")
    assert len(train) == len(dev) == 6
    assert all(isinstance(ex.context, str) and isinstance(ex.qas_id, str) for ex in dev)
    assert all(ex.answers == [] for ex in train if ex.is_impossible)
    with caplog.at_level(logging.WARNING):
        f = squad.featurize(train, tok, 48, 16, 16, training=True)
    kept = len(set(f["example_index"].tolist()))
    if kept < len(train):  # random mock text rarely holds its answer
        assert f"skipped {len(train) - kept} of {len(train)}" in caplog.text
    assert f["input_ids"].shape == (len(f["start_position"]), 48)
    f = squad.featurize(dev, tok, 48, 16, 16, training=False)
    assert set(f["example_index"].tolist()) == set(range(len(dev)))
    rng = np.random.default_rng(0)
    start, end = rng.normal(size=(2, *f["input_ids"].shape))
    v2 = name.endswith("v2.0")
    preds, nbest, odds = squad.postprocess(dev, f, start, end, version_2=v2)
    assert set(preds) == set(nbest) == {ex.qas_id for ex in dev}
    assert set(odds) == (set(preds) if v2 else set())
    scored = [ex for ex in dev if ex.answers or v2]
    assert 0.0 <= squad_eval.evaluate(scored, preds, version_2=v2)["f1"] <= 100.0


def test_tfds_squad_rejects_other_names():
    with pytest.raises(ValueError, match="squad/v1.1"):
        squad.tfds_squad("squad", "train")
