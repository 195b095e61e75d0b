"""Tests for bert_jax/data/tasks/classify.py: file reading, built-in samples, features, windows,
pooling, metrics and prediction files."""

import bz2
import gzip
import json

import numpy as np
import pytest
from sklearn import metrics as skm

from bert_jax.data import samples
from bert_jax.data.tasks import classify, metrics
from bert_jax.data.tasks.classify import TextExample
from bert_jax.pretrained import BertTokenizer


@pytest.fixture(scope="module")
def tok():
    return BertTokenizer.from_vocab(samples.fetch("minilm") / "vocab.txt", lowercase=True)


def _write(path, text, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


# ---------------------------------------------------------------------------------------------
# read_table


def test_read_csv_string_labels_quoting_and_guids(tmp_path):
    path = _write(
        tmp_path / "train.csv",
        'text,label\n"Great, really great.",pos\n"Two\nlines",neg\nmeh,neutral\nfine,pos\n',
    )
    examples, names = classify.read_table(path)
    assert names == ["neg", "neutral", "pos"]  # sorted unique names
    assert [e.label for e in examples] == [2, 0, 1, 2]
    assert examples[0].text_a == "Great, really great."
    assert examples[1].text_a == "Two\nlines"
    assert examples[0].text_b is None
    assert [e.guid for e in examples] == [
        "train.csv:2",
        "train.csv:4",
        "train.csv:5",
        "train.csv:6",
    ]


def test_read_tsv_gz_pair_keeps_integer_labels(tmp_path):
    # No quoting in TSV: the quote characters are text.
    text = 'id\tq1\tq2\tis_dup\n1\tHow "big" is it?\tHow large?\t2\n2\tA\tB\t0\n'
    path = _write(tmp_path / "pairs.tsv.gz", text, gzip.open)
    examples, names = classify.read_table(path, text_a="q1", text_b="q2", label="is_dup")
    assert names == ["0", "1", "2"]  # integers kept: 2 stays 2 although 1 never occurs
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ('How "big" is it?', "How large?", 2),
        ("A", "B", 0),
    ]


def test_read_label_names_given_and_unlabelled(tmp_path):
    path = _write(tmp_path / "dev.csv.bz2", "text,label\nx,pos\ny,pos\n", bz2.open)
    examples, names = classify.read_table(path, label_names=["neg", "pos"])
    assert names == ["neg", "pos"] and [e.label for e in examples] == [1, 1]
    examples, _ = classify.read_table(path, label=None)
    assert [e.label for e in examples] == [None, None]
    with pytest.raises(ValueError, match=r"dev\.csv\.bz2:2: label 'pos' is not one of"):
        classify.read_table(path, label_names=["neg", "neutral"])


def test_read_jsonl_single_and_multilabel(tmp_path):
    rows = [
        {"text": "sports and politics", "labels": ["sports", "politics"], "y": 1},
        {"text": "nothing at all", "labels": [], "y": 0},
        {"text": "just politics", "labels": "politics", "y": 1},
        {"text": "tech", "labels": ["tech", "tech"], "y": 0},
    ]
    path = _write(tmp_path / "docs.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    examples, names = classify.read_table(path, label="y")
    assert names == ["0", "1"] and [e.label for e in examples] == [1, 0, 1, 0]
    examples, names = classify.read_table(path, label="labels", multilabel=True)
    assert names == ["politics", "sports", "tech"]
    assert [e.label for e in examples] == [[0, 1], [], [0], [2]]
    with pytest.raises(ValueError, match=r"docs\.jsonl:1: label .* is a list; pass multilabel"):
        classify.read_table(path, label="labels")


def test_read_csv_multilabel_with_separator(tmp_path):
    path = _write(tmp_path / "m.csv", "text,tags\na,x|y\nb,\nc, y \n")
    examples, names = classify.read_table(path, label="tags", multilabel=True, label_sep="|")
    assert names == ["x", "y"]
    assert [e.label for e in examples] == [[0, 1], [], [1]]


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "message"),
    [
        ("a.csv", "sentence,label\nhi,1\n", {}, r"a\.csv:1: no column \['text'\]"),
        ("a.csv", "text,label\nhi,1\n  ,0\n", {}, r"a\.csv:3: 'text' is empty"),
        ("a.csv", "text,label\nhi,1\nyo,\n", {}, r"a\.csv:3: empty label"),
        ("a.csv", "text,label\nhi,1\nyo,-1\n", {}, r"a\.csv:3: label -1 is negative"),
        ("a.csv", "text,label\nhi,1\nyo,1,2\n", {}, r"a\.csv:3: 3 fields but the header has 2"),
        ("a.csv", "text,label\nhi,1\nyo\n", {}, r"a\.csv:3: 1 fields but the header has 2"),
        ("a.tsv", "text\tlabel\nhi\t1\nyo\t1\t\n", {}, r"a\.tsv:3: 3 fields"),
        ("a.csv", "", {}, r"a\.csv:1: the file is empty"),
        ("a.csv", "text,label\n", {}, r"a\.csv has no data rows"),
        ("a.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 1.5}\n', {}, r":2: label 1"),
        ("a.jsonl", '{"text": "a", "label": 1}\n{"text": "b"\n', {}, r"a\.jsonl:2: not valid JSON"),
        ("a.jsonl", '{"text": 3, "label": 1}\n', {}, r"a\.jsonl:1: 'text' is 3; expected a string"),
        ("a.jsonl", '["a", 1]\n', {}, r"a\.jsonl:1: expected a JSON object"),
        ("a.jsonl", '{"text": "a", "label": true}\n', {}, r"a\.jsonl:1: label True is not"),
        ("a.jsonl", '{"txt": "a", "label": 1}\n', {}, r"a\.jsonl:1: no key \['text'\]"),
        ("a.csv", "text,tags\na,x||y\n", {"label": "tags", "multilabel": True, "label_sep": "|"},
         r"a\.csv:2: empty label"),
        ("a.txt", "text,label\nhi,1\n", {}, r"unknown table format"),
    ],
)  # fmt: skip
def test_read_table_malformed_files_name_file_and_line(tmp_path, name, content, kwargs, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(ValueError, match=message):
        classify.read_table(path, **kwargs)


def test_read_table_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        classify.read_table(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------
# Built-in samples


def test_rotten_tomatoes_sample():
    train, dev, names = classify.rotten_tomatoes()
    assert names == ["rotten", "fresh"]
    n = len(train) + len(dev)
    # 12,808 fresh/rotten rows in the pinned file, 56 of them repeats of an earlier text.
    assert n == 12752 and n > 10_000
    assert abs(len(dev) - 0.2 * n) <= 1
    for part in (train, dev):
        labels = np.array([e.label for e in part])
        assert set(labels) == {0, 1}
        assert 0.35 < labels.mean() < 0.65  # both classes well represented (58% fresh)
        assert all(e.text_a.strip() and e.text_b is None for e in part)
    assert not {e.text_a for e in train} & {e.text_a for e in dev}
    assert len({e.text_a for e in train + dev}) == n  # no repeated texts
    assert len({e.guid for e in train + dev}) == n
    train2, dev2, _ = classify.rotten_tomatoes()
    assert [e.guid for e in train2] == [e.guid for e in train]
    assert [e.guid for e in dev2] == [e.guid for e in dev]
    _, dev3, _ = classify.rotten_tomatoes(seed=1)
    assert [e.guid for e in dev3] != [e.guid for e in dev]


def test_chnsenti_sample():
    train, dev, names = classify.chnsenti()
    assert names == ["negative", "positive"]
    n = len(train) + len(dev)
    # 8,379 distinct positive + 9,078 distinct negative texts, less 47 found in both files.
    assert n == 17363
    assert abs(len(dev) - 0.2 * n) <= 1
    assert not {e.text_a for e in train} & {e.text_a for e in dev}
    labels = np.array([e.label for e in train + dev])
    assert (labels == 1).sum() == 8379 - 47 and (labels == 0).sum() == 9078 - 47
    assert any("\u4e00" <= ch <= "\u9fff" for ch in train[0].text_a)  # Chinese text
    assert [e.guid for e in classify.chnsenti()[1]] == [e.guid for e in dev]


# ---------------------------------------------------------------------------------------------
# Features


def test_featurize_single_and_pair(tok):
    examples = [
        TextExample("a", "the movie was great", None, 1),
        TextExample("b", "awful", None, 0),
        TextExample("c", "unlabelled test text", None, None),
    ]
    f = classify.featurize(examples, tok, max_seq_length=8, num_labels=2)
    expected = tok([e.text_a for e in examples], max_length=8, padding="max_length")
    for key in ("input_ids", "input_mask", "segment_ids"):
        assert f[key].shape == (3, 8) and f[key].dtype == np.int32
        np.testing.assert_array_equal(f[key], expected[key])
    np.testing.assert_array_equal(f["label"], [1, 0, 0])
    assert f["label"].dtype == np.int32
    np.testing.assert_array_equal(f["example_index"], [0, 1, 2])
    ids = tok.convert_ids_to_tokens(f["input_ids"][1][f["input_mask"][1] == 1])
    assert ids == ["[CLS]", "awful", "[SEP]"]

    pairs = [TextExample("p", "is it good", "yes it is", 2)]
    f = classify.featurize(pairs, tok, max_seq_length=16, num_labels=3)
    pieces = tok.convert_ids_to_tokens(f["input_ids"][0][: f["input_mask"][0].sum()])
    assert pieces == ["[CLS]", "is", "it", "good", "[SEP]", "yes", "it", "is", "[SEP]"]
    np.testing.assert_array_equal(f["segment_ids"][0][:9], [0] * 5 + [1] * 4)
    assert f["label"].tolist() == [2]


def test_featurize_multilabel_and_label_errors(tok):
    examples = [TextExample("a", "x", None, [0, 2]), TextExample("b", "y", None, [])]
    f = classify.featurize(examples, tok, max_seq_length=6, num_labels=3, multilabel=True)
    assert f["label"].dtype == np.float32
    np.testing.assert_array_equal(f["label"], [[1, 0, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match="example a has label 2, outside"):
        classify.featurize(examples, tok, 6, num_labels=2, multilabel=True)
    with pytest.raises(ValueError, match="expected one label index"):
        classify.featurize(examples, tok, 6, num_labels=3)
    with pytest.raises(ValueError, match="example z has label 5"):
        classify.featurize([TextExample("z", "x", None, 5)], tok, 6, num_labels=2)
    mixed = [TextExample("a", "x", "y", 0), TextExample("b", "x", None, 0)]
    with pytest.raises(ValueError, match="some examples have text_b"):
        classify.featurize(mixed, tok, 6, num_labels=2)


def test_featurize_windows_cover_every_piece(tok):
    long_text = " ".join(f"word{i} and the number {i}" for i in range(9))
    pieces = tok.encode_pieces([long_text])[0].ids
    n = len(pieces)
    assert n > 40
    examples = [
        TextExample("short", "a short one", None, 1),
        TextExample("long", long_text, None, 0),
    ]
    seq, stride = 12, 4
    window = seq - 2
    f = classify.featurize_windows(examples, tok, seq, stride, num_labels=2)
    rows = np.flatnonzero(f["example_index"] == 1)
    starts = f["window_start"][rows].tolist()
    # Hand-computed: starts advance by the stride until a window reaches the last piece.
    num_windows = 1 + -(-(n - window) // stride)  # 1 + ceil((n - window) / stride)
    assert starts == [stride * k for k in range(num_windows)]
    assert starts[-1] + window >= n and starts[-2] + window < n
    covered = np.zeros(n, int)
    for r, start in zip(rows, starts, strict=True):
        length = int(f["input_mask"][r].sum())
        ids = f["input_ids"][r]
        assert ids[0] == tok.cls_id and ids[length - 1] == tok.sep_id
        assert (ids[length:] == tok.pad_id).all()
        np.testing.assert_array_equal(ids[1 : length - 1], pieces[start : start + length - 2])
        covered[start : start + length - 2] += 1
    assert (covered >= 1).all()  # every piece is in some window
    for a, b in zip(starts, starts[1:], strict=False):
        assert a + window - b == window - stride  # overlap of consecutive windows
    # The short document is one window; labels and segments follow the documents.
    assert f["example_index"].tolist() == [0] + [1] * len(starts)
    assert f["label"].tolist() == [1] + [0] * len(starts)
    assert not f["segment_ids"].any()
    short = tok.convert_ids_to_tokens(f["input_ids"][0][: f["input_mask"][0].sum()])
    assert short == ["[CLS]", "a", "short", "one", "[SEP]"]

    capped = classify.featurize_windows(examples, tok, seq, stride, num_labels=2, max_windows=2)
    assert capped["example_index"].tolist() == [0, 1, 1]
    np.testing.assert_array_equal(capped["input_ids"], f["input_ids"][:3])


def test_featurize_windows_errors_and_multilabel(tok):
    docs = [TextExample("d", "one two three", None, [1])]
    f = classify.featurize_windows(docs, tok, 4, 1, num_labels=2, multilabel=True)
    assert f["input_ids"].shape == (2, 4)  # windows of 2 pieces, starts 0 and 1
    np.testing.assert_array_equal(f["label"], [[0, 1], [0, 1]])
    with pytest.raises(ValueError, match="pairs are not supported"):
        classify.featurize_windows([TextExample("p", "a", "b", 0)], tok, 8, 2, num_labels=2)
    with pytest.raises(ValueError, match="stride=7 with windows of 6"):
        classify.featurize_windows(docs, tok, 8, 7, num_labels=2, multilabel=True)
    with pytest.raises(ValueError, match="stride=0"):
        classify.featurize_windows(docs, tok, 8, 0, num_labels=2, multilabel=True)


def test_pool_windows_mean_and_max():
    logits = np.array([[1.0, 2.0], [3.0, -4.0], [5.0, 0.0], [-1.0, 7.0]])
    index = np.array([0, 0, 2, 1])
    np.testing.assert_allclose(
        classify.pool_windows(logits, index, 3, "mean"), [[2.0, -1.0], [-1.0, 7.0], [5.0, 0.0]]
    )
    np.testing.assert_allclose(
        classify.pool_windows(logits, index, 3, "max"), [[3.0, 2.0], [-1.0, 7.0], [5.0, 0.0]]
    )
    with pytest.raises(ValueError, match=r"examples \[3\] have no window"):
        classify.pool_windows(logits, index, 4)
    with pytest.raises(ValueError, match="how='sum'"):
        classify.pool_windows(logits, index, 3, "sum")
    with pytest.raises(ValueError, match="do not match"):
        classify.pool_windows(logits, index[:3], 3)


# ---------------------------------------------------------------------------------------------
# Evaluation and predictions


def test_evaluate_binary_and_multiclass():
    examples = [TextExample(str(i), "t", None, y) for i, y in enumerate([1, 0, 1, 1, 0])]
    logits = np.array([[0.0, 1.0], [2.0, 1.0], [3.0, 1.0], [0.0, 5.0], [0.0, 0.5]])
    # predictions 1, 0, 0, 1, 1: tp=2, fp=1, fn=1 -> f1 = 4 / 6.
    result = classify.evaluate(examples, logits, ["neg", "pos"])
    assert result == pytest.approx({"accuracy": 0.6, "f1": 2 / 3})
    assert result["f1"] == pytest.approx(skm.f1_score([1, 0, 1, 1, 0], [1, 0, 0, 1, 1]))
    three = [TextExample(str(i), "t", None, y) for i, y in enumerate([2, 0, 1])]
    result = classify.evaluate(three, np.eye(3)[[2, 1, 1]], ["a", "b", "c"])
    assert result == pytest.approx({"accuracy": 2 / 3})
    with pytest.raises(ValueError, match=r"shape \(3, 3\), expected \(3, 2\)"):
        classify.evaluate(three, np.eye(3), ["a", "b"])
    with pytest.raises(ValueError, match="have no label"):
        classify.evaluate([TextExample("u", "t")], np.zeros((1, 2)), ["a", "b"])


def test_evaluate_multilabel_with_tuned_thresholds():
    truth = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    examples = [
        TextExample(str(i), "t", None, np.flatnonzero(r).tolist()) for i, r in enumerate(truth)
    ]
    probs = np.array(
        [[0.32, 0.2, 0.9], [0.1, 0.8, 0.2], [0.35, 0.6, 0.4], [0.2, 0.1, 0.47]]
    )  # label 0's positives sit at 0.32/0.35, under the default 0.5
    logits = np.log(probs / (1 - probs))
    at_half = classify.evaluate_multilabel(examples, logits, 0.5)
    predicted = (probs >= 0.5).astype(int)
    assert at_half == pytest.approx(
        {
            "micro_f1": skm.f1_score(truth, predicted, average="micro"),
            "macro_f1": skm.f1_score(truth, predicted, average="macro"),
            "subset_accuracy": skm.accuracy_score(truth, predicted),
        }
    )
    assert at_half["subset_accuracy"] == pytest.approx(1 / 4)  # only row 1 is fully right
    thresholds = metrics.tune_thresholds(truth, classify.sigmoid(logits))
    assert 0.2 < thresholds[0] <= 0.32 and 0.2 < thresholds[1] <= 0.6
    assert 0.4 < thresholds[2] <= 0.47
    tuned = classify.evaluate_multilabel(examples, logits, thresholds)
    assert tuned == pytest.approx({"micro_f1": 1.0, "macro_f1": 1.0, "subset_accuracy": 1.0})
    with pytest.raises(ValueError, match="thresholds of shape"):
        classify.evaluate_multilabel(examples, logits, np.array([0.5, 0.5]))


def test_write_predictions(tmp_path):
    examples = [TextExample("g1", "t"), TextExample("g2", "t")]
    logits = np.array([[0.0, np.log(3.0)], [2.0, 2.0]])
    path = tmp_path / "out" / "preds.tsv"
    classify.write_predictions(path, examples, logits, ["neg", "pos"])
    lines = path.read_text().splitlines()
    assert lines == [
        "guid\tprediction\tprobabilities",
        "g1\tpos\t0.250000,0.750000",
        "g2\tneg\t0.500000,0.500000",  # a tie goes to the first label, as argmax does
    ]
    ml_logits = np.array([[3.0, -3.0, 0.1], [-1.0, -2.0, -0.1]])
    classify.write_predictions(
        path, examples, ml_logits, ["a", "b", "c"], multilabel=True, thresholds=[0.5, 0.5, 0.45]
    )
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == ["a,c", "c"]
    np.testing.assert_allclose(
        [[float(p) for p in r[2].split(",")] for r in rows], 1 / (1 + np.exp(-ml_logits)), atol=1e-6
    )
    classify.write_predictions(path, examples, ml_logits, ["a", "b", "c"], multilabel=True)
    assert [line.split("\t")[1] for line in path.read_text().splitlines()[1:]] == ["a,c", ""]
