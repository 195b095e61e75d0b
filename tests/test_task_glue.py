"""GLUE tasks: the local GLUE layouts (checked against TFDS's own GLUE parser), TFDS through
mock data, featurize, evaluate, leaderboard files and error messages."""

import json
import logging
import pathlib
import shutil
import types

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
import tensorflow as tf
import tensorflow_datasets as tfds

from bert_jax.data import samples
from bert_jax.data.tasks import common, glue, registry
from bert_jax.pretrained import BertTokenizer

DATA = pathlib.Path(__file__).parent / "data" / "glue"


@pytest.fixture(autouse=True)
def _quiet():
    tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def tok():
    return BertTokenizer.from_vocab(samples.fetch("minilm") / "vocab.txt", lowercase=True)


def _ex(split, i, a, b=None, label=None):
    return glue.PairExample(f"{split}-{i}", a, b, label, i)


# ---------------------------------------------------------------------------------------------
# The task table.


def test_tasks_match_the_tfds_builder_configs():
    configs = {c.name: c for c in tfds.text.glue.Glue.BUILDER_CONFIGS}
    assert list(glue.TASKS) == [
        "cola",
        "sst2",
        "mrpc",
        "stsb",
        "qqp",
        "mnli",
        "qnli",
        "rte",
        "wnli",
    ]
    for name, task in glue.TASKS.items():
        config = configs[name]
        assert task.tfds_name == f"glue/{name}"
        assert task.text_keys == tuple(config.text_features), name
        assert task.label_names == tuple(config.label_classes or ()), name
        assert task.head == ("regression" if name == "stsb" else "classification")
    assert tuple(configs["ax"].text_features) == glue.TASKS["mnli"].text_keys
    files = {f for t in glue.TASKS.values() for f in t.submission_files.values()}
    assert files == {
        "CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv",
        "MNLI-mm.tsv", "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv",
    }  # fmt: skip
    metrics = {n: t.metric for n, t in glue.TASKS.items()}
    assert metrics["cola"] == "matthews_corr" and metrics["stsb"] == "spearman"
    assert metrics["mrpc"] == metrics["qqp"] == "f1" and metrics["mnli"] == "accuracy"


def test_task_names_and_splits():
    assert glue.get_task("SST-2") is glue.get_task("glue/sst2") is glue.TASKS["sst2"]
    assert glue.get_task(glue.TASKS["rte"]) is glue.TASKS["rte"]
    with pytest.raises(ValueError, match=r"'sst5'.*cola, sst2, mrpc, stsb, qqp, mnli, qnli"):
        glue.load("sst5", "dev")
    with pytest.raises(ValueError, match=r"no split 'validation'.*'dev_matched'"):
        glue.load("mnli", "validation", str(DATA))
    # MNLI's "dev"/"test" are the matched sets, as in BERT's run_classifier.
    assert glue.load("mnli", "dev", str(DATA)) == glue.load("mnli", "dev_matched", str(DATA))


# ---------------------------------------------------------------------------------------------
# Local GLUE files: each task's real layout, by hand and against TFDS's own GLUE parser.


def test_local_layouts_by_hand():
    cola = glue.load("cola", "train", str(DATA))  # no header; label in column 2
    assert [(e.label, e.index) for e in cola] == [(1, 0), (0, 1), (1, 2)]
    assert cola[1].text_a == "They drank the pub." and cola[1].text_b is None
    assert cola[2].text_a == '"Which book?" she asked, and the more "you" eat.'  # QUOTE_NONE
    assert glue.load("cola", "test", str(DATA))[1].text_a == "The car honked its way down the road."

    sst = glue.load("sst2", "dev", str(DATA))
    assert [(e.text_a, e.label) for e in sst] == [
        ("it 's a charming and often affecting journey . ", 1),
        ("unflinchingly bleak and desperate ", 0),
    ]
    mrpc = glue.load("mrpc", "train", str(DATA))
    assert mrpc[0].text_a.startswith('Amrozi accused his brother , whom he called " the witness "')
    assert mrpc[0].text_b.endswith("distorting his evidence .") and mrpc[0].label == 1
    assert [e.label for e in mrpc] == [1, 0]

    stsb = glue.load("stsb", "dev", str(DATA))
    assert [e.label for e in stsb] == [5.0, 4.75, 0.0]
    assert (stsb[1].text_a, stsb[1].text_b) == (
        "A young child is riding a horse.",
        "A child is riding a horse.",
    )
    qqp = glue.load("qqp", "dev", str(DATA))  # Quora ids are not GLUE row ids
    assert [(e.index, e.label) for e in qqp] == [(0, 0), (1, 1)]
    assert qqp[1].text_b == "How can I get a job at Google?"

    mnli_train = glue.load("mnli", "train", str(DATA))  # 12 columns
    mnli_dev = glue.load("mnli", "dev_mismatched", str(DATA))  # 16 columns
    assert [e.label for e in mnli_train] == [1, 0]  # neutral, entailment
    assert mnli_dev[0].label == 2 and mnli_dev[0].guid == "dev_mismatched-0"
    assert mnli_train[0].text_b == "Product and geography are what make cream skimming work. "

    qnli = glue.load("qnli", "dev", str(DATA))
    assert [e.label for e in qnli] == [0, 1]  # entailment, not_entailment
    assert qnli[0].text_a == "What came into force after the new constitution was herald?"
    assert [e.label for e in glue.load("rte", "dev", str(DATA))] == [1, 0, 0]
    assert [e.label for e in glue.load("wnli", "train", str(DATA))] == [1, 0]  # 1 = entailment


@pytest.mark.parametrize(
    "task, split, file_split, file",
    [
        ("cola", "train", "train", "CoLA/train.tsv"),
        ("cola", "test", "test", "CoLA/test.tsv"),
        ("sst2", "dev", "dev", "SST-2/dev.tsv"),
        ("sst2", "test", "test", "SST-2/test.tsv"),
        ("mrpc", "test", "test", "MRPC/test.tsv"),
        ("stsb", "dev", "dev", "STS-B/dev.tsv"),
        ("stsb", "test", "test", "STS-B/test.tsv"),
        ("qqp", "dev", "dev", "QQP/dev.tsv"),
        ("qqp", "test", "test", "QQP/test.tsv"),
        ("mnli", "train", "train", "MNLI/train.tsv"),
        ("mnli", "dev_matched", "dev", "MNLI/dev_matched.tsv"),
        ("mnli", "test_mismatched", "test", "MNLI/test_mismatched.tsv"),
        ("mnli", "diagnostic", "test", "diagnostic/diagnostic.tsv"),
        ("qnli", "dev", "dev", "QNLI/dev.tsv"),
        ("rte", "dev", "dev", "RTE/dev.tsv"),
        ("rte", "test", "test", "RTE/test.tsv"),
        ("wnli", "train", "train", "WNLI/train.tsv"),
    ],
)
def test_local_files_equal_tfds_on_the_same_files(task, split, file_split, file):
    """TFDS's own GLUE builder parses the fixture; both sources must give identical examples."""
    path = str(DATA / file)
    glue_task = glue.TASKS[task]
    name = glue_task.splits[split].tfds_name or glue_task.tfds_name
    rows = []

    def as_dataset(self, **kwargs):
        return tf.data.Dataset.from_tensor_slices({k: [r[k] for r in rows] for k in rows[0]})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        builder = tfds.builder(name)
        generated = builder._generate_examples(path, file_split, mrpc_files={"test": path})
        rows += [builder.info.features.encode_example(ex) for _, ex in generated]
        from_tfds = glue.load(task, split)
    from_files = glue.load(task, split, str(DATA))
    assert from_files == from_tfds
    assert len(from_files) == len(rows)


def test_mrpc_msr_file_with_byte_order_mark_equals_tfds(tmp_path):
    # msr_paraphrase_train.txt starts with a UTF-8 BOM, which TFDS skips with f.seek(3).
    msr = tmp_path / "msr_paraphrase_train.txt"
    msr.write_bytes(b"\xef\xbb\xbf" + (DATA / "MRPC" / "train.tsv").read_bytes())
    (tmp_path / "dev_ids.tsv").write_text("")
    files = {"train": str(msr), "dev_ids": str(tmp_path / "dev_ids.tsv")}
    rows = []

    def as_dataset(self, **kwargs):
        return tf.data.Dataset.from_tensor_slices({k: [r[k] for r in rows] for k in rows[0]})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        builder = tfds.builder("glue/mrpc")
        generated = builder._generate_examples(None, "train", mrpc_files=files)
        rows += [builder.info.features.encode_example(ex) for _, ex in generated]
        from_tfds = glue.load("mrpc", "train")
    assert glue.load("mrpc", "train", str(msr)) == from_tfds == glue.load("mrpc", "train", DATA)


def test_source_folder_file_and_tfds_named_files(tmp_path):
    dev = glue.load("sst2", "dev", str(DATA))
    assert glue.load("sst2", "dev", str(DATA / "SST-2")) == dev
    assert glue.load("sst2", "dev", str(DATA / "SST-2" / "dev.tsv")) == dev
    # MNLI's diagnostic set is found next to the MNLI folder, as in glue_data/.
    assert len(glue.load("mnli", "diagnostic", str(DATA / "MNLI"))) == 3

    csv_path = tmp_path / "sst.csv"
    csv_path.write_text(
        "label,sentence\n"
        '1,"it \'s a charming and often affecting journey . "\n'
        "positive,unflinchingly bleak and desperate \n"
    )
    from_csv = glue.load("sst2", "dev", str(csv_path))
    assert [(e.text_a, e.label) for e in from_csv] == [(dev[0].text_a, 1), (dev[1].text_a, 1)]

    rte = glue.load("rte", "dev", str(DATA))
    jsonl = tmp_path / "rte.jsonl"
    lines = [
        {"sentence1": e.text_a, "sentence2": e.text_b, "label": glue.TASKS["rte"].label_names[i]}
        for i, e in zip([e.label for e in rte], rte, strict=True)
    ]
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert glue.load("rte", "dev", str(jsonl)) == rte
    unlabelled = tmp_path / "mnli.jsonl"
    unlabelled.write_text(json.dumps({"premise": "a", "hypothesis": "b", "idx": 7}) + "\n")
    assert glue.load("mnli", "test", str(unlabelled)) == [
        glue.PairExample("test_matched-7", "a", "b", None, 7)
    ]


# ---------------------------------------------------------------------------------------------
# Errors in local files.


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "dev.tsv"
    shutil.copy(DATA / "RTE" / "dev.tsv", path)
    with open(path, "a") as f:
        f.write("3\tA sentence with a stray\ttab.\tThe hypothesis.\tentailment\n")
        f.write("4\tFine.\tFine too.\tentailment\n")
    with pytest.raises(ValueError, match=rf"{path}:5: 5 fields, expected 4 \(index, sentence1"):
        glue.load("rte", "dev", str(path))
    with pytest.warns(UserWarning, match=r"skipped 1 malformed line.*dev.tsv:5"):
        kept = glue.load("rte", "dev", str(path), bad_rows="skip")
    assert [e.index for e in kept] == [0, 1, 2, 4]


@pytest.mark.parametrize(
    "task, content, message",
    [
        ("rte", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n", r":2: label 'maybe'"),
        (
            "wnli",
            "index\tsentence1\tsentence2\tlabel\n0\ta\tb\t2\n",
            r":2: label '2'.*1/entailment",
        ),
        ("stsb", "sentence1\tsentence2\tscore\na\tb\tfive\n", r":2: label 'five'.*score"),
        ("sst2", "sentence\tlabel\nfine\t\n", r":2: empty label"),
        ("qnli", "index\tquestion\tsentence\tlabel\nx\tq\ts\tentailment\n", r":2: row id 'x'"),
        ("mrpc", "Quality\t#1 String\n1\ta\n", r":1: header .* lacks .*'#2 String'"),
    ],
)
def test_bad_rows_raise(tmp_path, task, content, message):
    path = tmp_path / "dev.tsv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        glue.load(task, "dev", str(path))


def test_missing_sources():
    with pytest.raises(FileNotFoundError, match=r"GLUE stsb train.*STS-B/train.tsv"):
        glue.load("stsb", "train", str(DATA))
    with pytest.raises(FileNotFoundError, match=r"neither 'tfds' nor an existing folder"):
        glue.load("stsb", "train", str(DATA / "nowhere"))


# ---------------------------------------------------------------------------------------------
# TFDS (mock data) through featurize.


def _check_layout(tok, features, n, pair):
    ids, mask, seg = features["input_ids"], features["input_mask"], features["segment_ids"]
    assert ids.shape == mask.shape == seg.shape == (n, 32)
    assert {ids.dtype, mask.dtype, seg.dtype, features["example_index"].dtype} == {
        np.dtype(np.int32)
    }
    np.testing.assert_array_equal(features["example_index"], np.arange(n))
    for row_ids, row_mask, row_seg in zip(ids, mask, seg, strict=True):
        length = int(row_mask.sum())
        assert row_mask[:length].all() and not row_mask[length:].any()
        assert row_ids[0] == tok.cls_id and row_ids[length - 1] == tok.sep_id
        assert (row_ids[length:] == tok.pad_id).all()
        seps = np.flatnonzero(row_ids[:length] == tok.sep_id)
        assert len(seps) == (2 if pair else 1)
        expected_seg = np.zeros(32, np.int32)
        if pair:
            expected_seg[seps[0] + 1 : length] = 1  # text b and its [SEP]
        np.testing.assert_array_equal(row_seg, expected_seg)


def test_mock_tfds_sst2_featurize(tok):
    with tfds.testing.mock_data(num_examples=6):
        examples = glue.load("sst2", "train")
    assert len(examples) == 6 and all(e.text_b is None for e in examples)
    assert all(e.label in (0, 1) and e.guid == f"train-{e.index}" for e in examples)
    features = glue.featurize("sst2", examples, tok, 32)
    _check_layout(tok, features, 6, pair=False)
    assert features["label"].dtype == np.int32
    np.testing.assert_array_equal(features["label"], [e.label for e in examples])
    pieces = tok.encode_pieces([examples[0].text_a])[0].ids[:30]
    np.testing.assert_array_equal(
        features["input_ids"][0, : len(pieces) + 2], [tok.cls_id, *pieces, tok.sep_id]
    )


def test_mock_tfds_stsb_featurize(tok):
    with tfds.testing.mock_data(num_examples=5):
        examples = glue.load("stsb", "dev")
    assert all(isinstance(e.label, float) and e.text_b is not None for e in examples)
    features = glue.featurize("stsb", examples, tok, 32)
    _check_layout(tok, features, 5, pair=True)
    assert features["label"].dtype == np.float32
    np.testing.assert_allclose(features["label"], [e.label for e in examples])


def test_mock_tfds_mnli_dev_matched_featurize(tok):
    with tfds.testing.mock_data(num_examples=4):
        examples = glue.load("mnli", "dev_matched")
    assert all(e.guid.startswith("dev_matched-") and e.label in (0, 1, 2) for e in examples)
    features = glue.featurize("mnli", examples, tok, 32)
    _check_layout(tok, features, 4, pair=True)
    a, b = (tok.encode_pieces([t])[0].ids for t in (examples[1].text_a, examples[1].text_b))
    la, lb = _truncate_seq_pair(len(a), len(b), 32 - 3)
    expected = [tok.cls_id, *a[:la], tok.sep_id, *b[:lb], tok.sep_id]
    np.testing.assert_array_equal(features["input_ids"][1, : len(expected)], expected)


def _offline_tfds(unprepared):
    """A common.tfds_examples where only `unprepared` is missing and the network is down."""

    def tfds_examples(name, split, data_dir=None):
        if name == unprepared:  # what the real one raises, lazily, as a generator
            raise ConnectionError(f"TFDS dataset {name!r} is not prepared (offline)")
        for i in range(2):
            yield {"premise": b"A man sleeps.", "hypothesis": b"He rests.", "label": 0, "idx": i}

    return tfds_examples


def test_mnli_fine_tunes_offline_without_ax_but_not_without_mnli(monkeypatch, caplog):
    cfg = types.SimpleNamespace(name="mnli", source="tfds", data_dir="", max_seq_length=32)
    monkeypatch.setattr(common, "tfds_examples", _offline_tfds("glue/ax"))
    with caplog.at_level(logging.WARNING):
        splits = registry.GlueTask(cfg, tokenizer=None).load()
    assert set(splits) == {"train", "dev", "dev_mismatched", "test_matched", "test_mismatched"}
    assert "'diagnostic'" in caplog.text and "AX.tsv" in caplog.text
    assert "tfds build glue/ax" in caplog.text
    # A labelled split still has to be there.
    monkeypatch.setattr(common, "tfds_examples", _offline_tfds("glue/mnli"))
    with pytest.raises(ConnectionError, match="glue/mnli"):
        registry.GlueTask(cfg, tokenizer=None).load()


def _truncate_seq_pair(len_a, len_b, budget):
    """Lengths after BERT's _truncate_seq_pair, written as the original loop."""
    while len_a + len_b > budget:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return len_a, len_b


def test_featurize_pair_truncation_and_test_labels(tok, monkeypatch):
    words = tok.convert_tokens_to_ids
    examples = [
        _ex("test", 0, "one two three four five six seven eight nine ten", "red green blue"),
        _ex("test", 1, "one two three four", "red green blue black"),
    ]
    features = glue.featurize("rte", examples, tok, 9)
    cls, sep = tok.cls_id, tok.sep_id
    # 10 + 3 word pieces into 6 places: the longer text loses a piece at a time -> 3 + 3.
    row0 = [cls, *words(["one", "two", "three"]), sep, *words(["red", "green", "blue"]), sep]
    np.testing.assert_array_equal(features["input_ids"][0], row0)
    # 4 + 4 into 6: on a tie the second text loses first: 4 + 4 -> 4 + 3 -> 3 + 3.
    row1 = [cls, *words(["one", "two", "three"]), sep, *words(["red", "green", "blue"]), sep]
    np.testing.assert_array_equal(features["input_ids"][1], row1)
    np.testing.assert_array_equal(features["segment_ids"][1], [0] * 5 + [1] * 4)
    tie = glue.featurize("rte", examples[1:], tok, 8)  # budget 5: 4 + 4 -> 3 + 2
    row = [cls, *words(["one", "two", "three"]), sep, *words(["red", "green"]), sep]
    np.testing.assert_array_equal(tie["input_ids"][0], row)
    np.testing.assert_array_equal(features["label"], [0, 0])  # test rows: label 0
    # Chunked tokenization gives the same features.
    monkeypatch.setattr(glue, "_CHUNK", 1)
    chunked = glue.featurize("rte", examples, tok, 9)
    for key, value in features.items():
        np.testing.assert_array_equal(chunked[key], value)
    stsb = glue.featurize("stsb", [_ex("test", 0, "a", "b")], tok, 8)
    assert stsb["label"].dtype == np.float32 and stsb["label"][0] == 0.0
    with pytest.raises(ValueError, match="pair task but some examples have text_b=None"):
        glue.featurize("rte", [_ex("dev", 0, "a")], tok, 8)


# ---------------------------------------------------------------------------------------------
# evaluate and leaderboard files.


def test_evaluate_by_hand():
    cola = [_ex("dev", i, "x", label=y) for i, y in enumerate([1, 1, 0, 0])]
    logits = np.array([[0.0, 2.0], [1.0, 0.0], [3.0, -1.0], [0.5, 0.2]])  # predicts 1, 0, 0, 0
    result = glue.evaluate("cola", cola, logits)
    # TP=1 FN=1 TN=2 FP=0: (1*2 - 0*1) / sqrt(1 * 2 * 2 * 3)
    assert result == {"matthews_corr": pytest.approx(2 / np.sqrt(12))}
    assert result["matthews_corr"] == pytest.approx(
        sklearn.metrics.matthews_corrcoef([1, 1, 0, 0], [1, 0, 0, 0])
    )

    mrpc = [_ex("dev", i, "x", "y", label=y) for i, y in enumerate([1, 0, 1, 1])]
    logits = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 1.0]])  # predicts 1, 1, 0, 1
    result = glue.evaluate("mrpc", mrpc, logits)
    # TP=2 FP=1 FN=1: F1 = 4 / 6; accuracy 2 / 4
    assert result == pytest.approx({"f1": 2 / 3, "accuracy": 0.5, "combined": (2 / 3 + 0.5) / 2})

    labels = [0.0, 1.0, 2.0, 3.0, 5.0]
    scores = np.array([[0.5], [1.0], [2.5], [2.9], [4.0]], np.float32)
    stsb = [_ex("dev", i, "x", "y", label=y) for i, y in enumerate(labels)]
    result = glue.evaluate("stsb", stsb, scores)
    assert result["spearman"] == pytest.approx(1.0)  # same order
    assert result["pearson"] == pytest.approx(scipy.stats.pearsonr(labels, scores[:, 0])[0])

    mnli = glue.load("mnli", "dev_matched", str(DATA))  # neutral, contradiction
    assert glue.evaluate("mnli", mnli, np.array([[0, 1, 0], [1, 0, 0]])) == {"accuracy": 0.5}


def test_evaluate_errors():
    test = glue.load("rte", "test", str(DATA))
    with pytest.raises(ValueError, match="rte test examples have no labels"):
        glue.evaluate("rte", test, np.zeros((2, 2)))
    both = glue.load("mnli", "dev_matched", str(DATA)) + glue.load(
        "mnli", "dev_mismatched", str(DATA)
    )
    with pytest.raises(ValueError, match=r"splits \['dev_matched', 'dev_mismatched'\]"):
        glue.evaluate("mnli", both, np.zeros((3, 3)))
    dev = glue.load("rte", "dev", str(DATA))
    with pytest.raises(ValueError, match=r"shape \(3, 3\); GLUE rte needs \[3, 2\]"):
        glue.evaluate("rte", dev, np.zeros((3, 3)))


HEADER = ["index", "prediction"]


def _read_tsv(path):
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_write_test_predictions(tmp_path):
    mnli = [
        *glue.load("mnli", "test_matched", str(DATA)),
        *glue.load("mnli", "test_mismatched", str(DATA)),
        *glue.load("mnli", "diagnostic", str(DATA)),
    ]
    logits = np.eye(3)[[0, 2, 1, 2, 2, 0]]
    paths = glue.write_test_predictions("mnli", mnli, logits, tmp_path / "sub")
    assert [p.name for p in paths] == ["MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv"]
    assert _read_tsv(paths[0]) == [HEADER, ["0", "entailment"], ["1", "contradiction"]]
    assert _read_tsv(paths[1]) == [HEADER, ["0", "neutral"]]
    assert _read_tsv(paths[2]) == [
        HEADER, ["0", "contradiction"], ["1", "contradiction"], ["2", "entailment"]
    ]  # fmt: skip

    stsb = [_ex("test", i, "a", "b") for i in range(3)]
    (path,) = glue.write_test_predictions("stsb", stsb, [[-0.3], [3.14159], [7.2]], tmp_path)
    assert path.name == "STS-B.tsv"
    assert _read_tsv(path) == [HEADER, ["0", "0.000"], ["1", "3.142"], ["2", "5.000"]]

    cola = glue.load("cola", "test", str(DATA))
    (path,) = glue.write_test_predictions("cola", cola, [[0.1, 0.9], [2.0, 1.0]], tmp_path)
    assert path.name == "CoLA.tsv" and _read_tsv(path)[1:] == [["0", "1"], ["1", "0"]]
    rte = glue.load("rte", "test", str(DATA))
    (path,) = glue.write_test_predictions("rte", rte, [[0.1, 0.9], [2.0, 1.0]], tmp_path)
    assert _read_tsv(path)[1:] == [["0", "not_entailment"], ["1", "entailment"]]
    wnli = glue.load("wnli", "test", str(DATA))
    (path,) = glue.write_test_predictions("wnli", wnli, [[0.1, 0.9]], tmp_path)
    assert path.name == "WNLI.tsv" and _read_tsv(path)[1:] == [["0", "1"]]
    qqp = glue.load("qqp", "test", str(DATA))
    (path,) = glue.write_test_predictions("qqp", qqp, [[0.1, 0.9], [2.0, 1.0]], tmp_path)
    assert path.name == "QQP.tsv" and len(_read_tsv(path)) == 3

    with pytest.raises(ValueError, match=r"rte dev, which the leaderboard does not score"):
        glue.write_test_predictions(
            "rte", glue.load("rte", "dev", str(DATA)), np.eye(3, 2), tmp_path
        )
