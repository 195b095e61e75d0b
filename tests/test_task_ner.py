"""NER task: CoNLL reading, first-piece labelling, long-sentence windows, decode, metrics."""

import pathlib

import numpy as np
import pytest
from seqeval.metrics import f1_score

from bert_jax.data import samples
from bert_jax.data.tasks import metrics, ner
from bert_jax.pretrained import BertTokenizer

DATA = pathlib.Path(__file__).parent / "data" / "ner"


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


def _one_hot(features, n_labels):
    """Logits that put all mass on the gold label at every position."""
    return np.eye(n_labels, dtype=np.float32)[features["label"]]


def test_read_conll2003_head():
    examples = ner.read_conll(DATA / "conll2003_head.txt")
    assert [ex.words for ex in examples] == [
        ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        ["Peter", "Blackburn"],
        ["BRUSSELS", "1996-08-22"],
    ]
    assert examples[0].tags == ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]
    assert examples[1].tags == ["B-PER", "I-PER"]
    assert examples[2].tags == ["B-LOC", "O"]
    # The guid points at the sentence's first line.
    assert [ex.guid for ex in examples] == [
        "conll2003_head.txt:3",
        "conll2003_head.txt:13",
        "conll2003_head.txt:16",
    ]
    assert ner.label_list(examples) == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]


def test_read_tab_file(tmp_path):
    # WNUT-16 layout: token<TAB>tag, sentences separated by a line holding a lone tab; a
    # token may contain a space; the file need not end with a separator.
    path = _write(
        tmp_path,
        "tweets.tsv",
        "@paulwalk\tO\nEmpire State\tB-facility\nBuilding\tI-facility\n\t\n\t\nnice\tO\n",
    )
    examples = ner.read_conll(path)
    assert [ex.words for ex in examples] == [["@paulwalk", "Empire State", "Building"], ["nice"]]
    assert [ex.tags for ex in examples] == [["O", "B-facility", "I-facility"], ["O"]]


def test_wnut16_sample():
    try:
        path = samples.fetch("wnut16")
    except RuntimeError as e:
        pytest.skip(f"sample 'wnut16' could not be fetched: {e}")
    examples = ner.read_conll(path)
    assert len(examples) == 2394  # DESIGN: 2,394 tweets
    assert sum(len(ex.words) for ex in examples) == 46469
    assert all(len(ex.words) == len(ex.tags) > 0 for ex in examples)
    entities = [e for ex in examples for e in metrics.get_entities(ex.tags, "BIO")]
    types = sorted({e[0] for e in entities})
    assert types == [
        "company", "facility", "geo-loc", "movie", "musicartist",
        "other", "person", "product", "sportsteam", "tvshow",
    ]  # fmt: skip
    # Every B- opens one entity; the file's I- tags all continue one (well-formed BIO).
    assert len(entities) == sum(t.startswith("B-") for ex in examples for t in ex.tags) == 1496
    assert len(ner.label_list(examples)) == 21


def test_malformed_lines(tmp_path):
    one_column = _write(tmp_path, "a.txt", "EU B-ORG\nrejects\n")
    with pytest.raises(ValueError, match=r"a\.txt:2: expected 'word \.\.\. tag'"):
        ner.read_conll(one_column)
    bad_tag = _write(tmp_path, "b.txt", "EU NNP B-NP B-ORG\n\nPeter NNP B-NP X-PER\n")
    with pytest.raises(ValueError, match=r"b\.txt:3: tag 'X-PER' is not a BIO tag"):
        ner.read_conll(bad_tag)
    no_type = _write(tmp_path, "c.txt", "EU\tB-\n")
    with pytest.raises(ValueError, match=r"c\.txt:1: tag 'B-'"):
        ner.read_conll(no_type)
    iobes = _write(tmp_path, "d.txt", "EU\tS-ORG\n")
    with pytest.raises(ValueError, match=r"d\.txt:1: .*pass scheme='IOBES'"):
        ner.read_conll(iobes)
    with pytest.raises(ValueError, match="scheme='BILOU'"):
        ner.read_conll(iobes, scheme="BILOU")


def test_word_pieces_match_sentence_tokenization(tok):
    # Encoding word by word must give BERT's tokenization of the whole sentence.
    for ex in ner.read_conll(DATA / "conll2003_head.txt"):
        feats = ner.featurize([ex], tok, ner.label_list([ex]), 64)
        n = int(feats["input_mask"][0].sum())
        pieces = tok.convert_ids_to_tokens(feats["input_ids"][0, 1 : n - 1])
        assert pieces == tok.tokenize(" ".join(ex.words))


def test_first_piece_labelling(tok):
    ex = ner.NerExample("x", ["The", "Washingtonians", "cheered", "\u200b"], ["O", "B-X", "O", "O"])
    labels = ["O", "B-X"]
    feats = ner.featurize([ex], tok, labels, 12)
    tokens = tok.convert_ids_to_tokens(feats["input_ids"][0, :7])
    # U+200B has no word pieces of its own; it is scored on an [UNK] so it still gets a tag.
    assert tokens == ["[CLS]", "the", "washington", "##ians", "cheered", "[UNK]", "[SEP]"]
    assert feats["input_mask"][0].tolist() == [1] * 7 + [0] * 5
    assert feats["segment_ids"].tolist() == [[0] * 12]
    assert feats["label_weights"][0].tolist() == [0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert feats["label"][0].tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert feats["word_index"][0].tolist() == [-1, 0, 1, -1, 2, 3, -1, -1, -1, -1, -1, -1]
    assert feats["label"].dtype == np.int32 and feats["label_weights"].dtype == np.float32
    with pytest.raises(ValueError, match=r"tags \['B-X'\] missing from labels"):
        ner.featurize([ex], tok, ["O"], 12)
    # Unlabelled text: the same scored positions, labels filled with 0.
    unlabelled = ner.featurize([ner.NerExample("u", ex.words, [])], tok, labels, 12)
    assert (unlabelled["label_weights"] == feats["label_weights"]).all()
    assert (unlabelled["label"] == 0).all()


def test_long_sentences_split_at_word_boundaries(tok):
    words = ("Washingtonians " * 3 + "antidisestablishmentarianism in Brussels . " * 4).split()
    tags = ["B-LOC" if w == "Brussels" else "O" for w in words]
    short = ner.NerExample("short", ["Hi"], ["O"])
    examples = [short, ner.NerExample("long", words, tags), short]
    labels = ner.label_list(examples)
    max_len = 12  # 10 pieces per row; "antidisestablishmentarianism" alone is 8
    feats = ner.featurize(examples, tok, labels, max_len)
    pieces_per_word = [len(tok.tokenize(w)) for w in words]
    rows = np.nonzero(feats["example_index"] == 1)[0]
    assert len(rows) > 2
    assert feats["example_index"].tolist() == [0] + [1] * len(rows) + [2]
    seen = []
    for r in rows:
        scored = feats["word_index"][r][feats["word_index"][r] >= 0].tolist()
        assert scored[0] == feats["word_offset"][r]
        seen += scored
        # The row holds exactly the pieces of its words, [CLS] first and [SEP] last.
        n = int(feats["input_mask"][r].sum())
        assert n - 2 == sum(pieces_per_word[w] for w in scored) <= max_len - 2
        assert feats["input_ids"][r, 0] == tok.cls_id and feats["input_ids"][r, n - 1] == tok.sep_id
    assert seen == list(range(len(words)))  # every word once, in order
    # Greedy packing: the next row's first word would not have fitted.
    for a, b in zip(rows[:-1], rows[1:], strict=True):
        used = int(feats["input_mask"][a].sum()) - 2
        assert used + pieces_per_word[feats["word_offset"][b]] > max_len - 2


def test_word_longer_than_window_keeps_its_label(tok):
    ex = ner.NerExample("x", ["antidisestablishmentarianism", "ok"], ["B-X", "O"])
    feats = ner.featurize([ex], tok, ["O", "B-X"], 5)  # 3 pieces per row
    assert feats["word_offset"].tolist() == [0, 1]
    assert tok.convert_ids_to_tokens(feats["input_ids"][0]) == [
        "[CLS]", "anti", "##dis", "##est", "[SEP]",
    ]  # fmt: skip
    assert feats["label"][:, 1].tolist() == [1, 0]
    assert ner.decode([ex], feats, _one_hot(feats, 2), ["O", "B-X"]) == [ex.tags]


def test_decode_round_trip_and_metrics(tok):
    examples = ner.read_conll(DATA / "conll2003_head.txt")
    labels = ner.label_list(examples)
    feats = ner.featurize(examples, tok, labels, 8)  # splits the first sentence
    assert len(feats["example_index"]) > len(examples)
    logits = _one_hot(feats, len(labels))
    assert ner.decode(examples, feats, logits, labels) == [ex.tags for ex in examples]
    scores = ner.evaluate(examples, feats, logits, labels)
    assert scores["f1"] == scores["precision"] == scores["recall"] == scores["accuracy"] == 1.0

    # Predict O for "German" (a MISC entity) and B-PER for "BRUSSELS": seqeval agrees.
    wrong = logits.copy()
    for word_index, example, tag in [(2, 0, "O"), (0, 2, "B-PER")]:
        r, pos = np.argwhere((feats["word_index"] == word_index) & (
            feats["example_index"][:, None] == example))[0]  # fmt: skip
        wrong[r, pos] = np.eye(len(labels))[labels.index(tag)]
    predicted = ner.decode(examples, feats, wrong, labels)
    assert predicted[0][2] == "O" and predicted[2][0] == "B-PER"
    scores = ner.evaluate(examples, feats, wrong, labels)
    gold = [ex.tags for ex in examples]
    assert scores["f1"] == pytest.approx(f1_score(gold, predicted))
    # 5 gold entities, 4 predicted, 3 right: P = 3/4, R = 3/5.
    assert scores["precision"] == pytest.approx(3 / 4)
    assert scores["recall"] == pytest.approx(3 / 5)
    assert scores["accuracy"] == pytest.approx(11 / 13)

    with pytest.raises(ValueError, match="logits have shape"):
        ner.decode(examples, feats, logits[:, :, :-1], labels)


def test_iobes_in_iobes_out(tok, tmp_path):
    path = _write(
        tmp_path,
        "iobes.txt",
        "New\tB-LOC\nYork\tI-LOC\nCity\tE-LOC\nis\tO\nbig\tO\n\t\nParis\tS-LOC\n",
    )
    examples = ner.read_conll(path, scheme="IOBES")
    labels = ner.label_list(examples)
    assert labels == ["O", "B-LOC", "E-LOC", "I-LOC", "S-LOC"]
    feats = ner.featurize(examples, tok, labels, 16)
    logits = _one_hot(feats, len(labels))
    predicted = ner.decode(examples, feats, logits, labels)
    assert predicted == [["B-LOC", "I-LOC", "E-LOC", "O", "O"], ["S-LOC"]]
    assert ner.evaluate(examples, feats, logits, labels, scheme="IOBES")["f1"] == 1.0
    out = tmp_path / "pred.txt"
    ner.write_predictions(out, examples, predicted)
    assert out.read_text() == (
        "New B-LOC B-LOC\nYork I-LOC I-LOC\nCity E-LOC E-LOC\nis O O\nbig O O\n\n"
        "Paris S-LOC S-LOC\n\n"
    )


def test_write_predictions_unlabelled_and_spaces(tmp_path):
    examples = [ner.NerExample("a", ["Empire State", "rocks"], [])]
    out = tmp_path / "pred.txt"
    ner.write_predictions(out, examples, [["B-facility", "O"]])
    assert out.read_text() == "Empire_State B-facility\nrocks O\n\n"
    with pytest.raises(ValueError, match="1 predicted tags for 2 words"):
        ner.write_predictions(out, examples, [["O"]])


def _mock_conll2003(rows):
    """An `as_dataset_fn` for tfds.testing.mock_data yielding `rows` (tokens, ner ids)."""

    def as_dataset(self, *args, **kwargs):
        import tensorflow as tf

        def generate():
            for tokens, ner_ids in rows:
                n = len(tokens)
                yield {"tokens": tokens, "pos": [0] * n, "chunks": [0] * n, "ner": ner_ids}

        features = self.info.features
        return tf.data.Dataset.from_generator(
            generate, output_types=features.dtype, output_shapes=features.shape
        )

    return as_dataset


def test_tfds_conll2003_mock(tok):
    tfds = pytest.importorskip("tensorflow_datasets")
    info = tfds.builder("conll2003").info
    assert tuple(info.features["ner"].feature.names) == ner.CONLL2003_TAGS
    rows = [(["EU", "rejects", "German", "call"], [3, 0, 7, 0]), (["Peter", "Blackburn"], [1, 2])]
    with tfds.testing.mock_data(as_dataset_fn=_mock_conll2003(rows)):
        examples = ner.tfds_conll2003("dev")
    assert [(ex.words, ex.tags) for ex in examples] == [
        (["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    ]
    labels = list(ner.CONLL2003_TAGS)
    feats = ner.featurize(examples, tok, labels, 32)
    logits = _one_hot(feats, len(labels))
    assert ner.evaluate(examples, feats, logits, labels)["f1"] == 1.0

    # tfds's automatic mock draws tokens and tags of unrelated lengths: a clear error.
    with tfds.testing.mock_data(as_dataset_fn=_mock_conll2003([(["a", "b"], [0])])):
        with pytest.raises(ValueError, match="row 0 has 2 tokens but 1 ner tags"):
            ner.tfds_conll2003("dev")
