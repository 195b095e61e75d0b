"""Fine-tuning metrics: hand-computed cases, then random inputs against scikit-learn, scipy and
seqeval (the references are imported here only, never by bert_jax)."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
from seqeval import metrics as seqeval_metrics
from seqeval.scheme import IOBES

from bert_jax.data.tasks import metrics

TYPES = ("PER", "LOC", "ORG")


@pytest.fixture(autouse=True)
def _quiet_references():
    # The references warn on undefined precision / recall and constant correlation inputs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------------
# Hand-computed cases.


def test_classification_by_hand():
    labels = [1, 0, 1, 1, 0, 0]
    predictions = [1, 1, 0, 1, 0, 0]
    assert metrics.accuracy(labels, predictions) == pytest.approx(4 / 6)
    # tp=2, fp=1, fn=1 -> 2*2 / (4 + 1 + 1)
    assert metrics.f1_binary(labels, predictions) == pytest.approx(4 / 6)
    # Class 0 as positive: tp=2, fp=1, fn=1 as well.
    assert metrics.f1_binary(labels, predictions, positive=0) == pytest.approx(4 / 6)
    # Binary MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (4 - 1) / 9.
    assert metrics.matthews_corrcoef(labels, predictions) == pytest.approx(1 / 3)
    # No positive anywhere: F1 and MCC are undefined and reported as 0.0.
    assert metrics.f1_binary([0, 0, 0], [0, 0, 0]) == 0.0
    assert metrics.matthews_corrcoef([1, 1, 1], [1, 0, 1]) == 0.0
    assert metrics.matthews_corrcoef([2, 0, 1], [2, 0, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        metrics.accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="no examples"):
        metrics.accuracy([], [])


def test_correlations_by_hand():
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert metrics.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x - mean = (-1, 0, 1), y - mean = (-1/3, -1/3, 2/3): r = 1 / sqrt(2 * 2/3).
    assert metrics.pearson([1, 2, 3], [1, 1, 2]) == pytest.approx(math.sqrt(3) / 2)
    # Monotone but not linear: Spearman 1, Pearson below 1.
    assert metrics.spearman([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)
    # Ties share the average rank: y ranks (1.5, 1.5, 3), as the last Pearson case.
    assert metrics.spearman([10, 20, 30], [5, 5, 7]) == pytest.approx(math.sqrt(3) / 2)
    # Constant input: undefined, NaN as in scipy (and GLUE's evaluation).
    assert math.isnan(metrics.pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(metrics.spearman([1, 2, 3], [4, 4, 4]))
    assert math.isnan(metrics.spearman([1, 2, float("nan")], [1, 2, 3]))


def test_glue_metrics_by_hand():
    assert metrics.glue_metrics("cola", [1, 0, 1, 1, 0, 0], [1, 1, 0, 1, 0, 0]) == {
        "matthews_corr": pytest.approx(1 / 3)
    }
    assert metrics.glue_metrics("glue/sst2", [1, 0], [1, 1]) == {"accuracy": 0.5}
    # Logits are reduced by argmax.
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 1.0], [2.0, 1.0]])
    mrpc = metrics.glue_metrics("MRPC", [1, 0, 0, 1], logits)
    assert mrpc == pytest.approx({"f1": 0.5, "accuracy": 0.5, "combined": 0.5})
    assert set(metrics.glue_metrics("mnli_mismatched", [0, 2], [0, 1])) == {"accuracy"}
    stsb = metrics.glue_metrics("sts-b", [0.0, 2.5, 5.0], np.array([[1.0], [2.0], [3.0]]))
    assert stsb == pytest.approx({"pearson": 1.0, "spearman": 1.0, "combined": 1.0})
    with pytest.raises(ValueError, match="Unknown GLUE task"):
        metrics.glue_metrics("boolq", [1], [1])


def test_multilabel_by_hand():
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    predictions = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    scores = metrics.multilabel_f1(labels, predictions)
    # Per label (tp, fp, fn): (1, 0, 1) -> 2/3; (1, 0, 0) -> 1; (0, 1, 0) -> 0.
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    # Summed: tp=2, fp=1, fn=1.
    assert scores["micro_f1"] == pytest.approx(4 / 6)
    assert scores["subset_accuracy"] == pytest.approx(2 / 3)
    # A label never true nor predicted counts as F1 0 in the macro mean (scikit-learn default).
    perfect = metrics.multilabel_f1([[1, 0], [1, 0]], [[1, 0], [1, 0]])
    assert perfect == pytest.approx({"micro_f1": 1.0, "macro_f1": 0.5, "subset_accuracy": 1.0})


def test_tune_thresholds_by_hand():
    labels = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 0, 0]])
    probs = np.array([[0.9, 0.1, 0.2], [0.7, 0.3, 0.9], [0.6, 0.2, 0.8], [0.2, 0.4, 0.3]])
    thresholds = metrics.tune_thresholds(labels, probs)
    # Label 0: F1 = 1 for thresholds in (0.6, 0.7]: closest to 0.5 is 0.65.
    # Label 1: no positives, F1 = 0 everywhere: keeps 0.5.
    # Label 2 (true for probs 0.2 and 0.8): thresholds <= 0.2 predict all four, tp=2, fp=2 ->
    # F1 2/3; (0.3, 0.8] -> tp=1, fp=1, fn=1 -> 1/2; so the best, closest to 0.5, is 0.2.
    np.testing.assert_allclose(thresholds, [0.65, 0.5, 0.2])
    predictions = metrics.apply_thresholds(probs, thresholds)
    np.testing.assert_array_equal(predictions[:, 0], labels[:, 0])
    assert predictions.dtype == np.int32
    # Equal F1 at 0.45 and 0.55: the lower one wins.
    assert metrics.tune_thresholds([[1], [0]], [[0.6], [0.4]], grid=[0.45, 0.55])[0] == 0.45
    assert metrics.tune_thresholds([[1], [0]], [[0.6], [0.4]], grid=[0.3, 0.45, 0.9])[0] == 0.45


def test_tune_thresholds_is_best_on_grid():
    rng = np.random.default_rng(0)
    labels = rng.random((200, 6)) < [0.05, 0.2, 0.5, 0.7, 0.3, 0.1]
    probs = np.clip(labels * 0.3 + rng.random((200, 6)) * 0.7, 0, 1)
    thresholds = metrics.tune_thresholds(labels, probs)
    grid = np.linspace(0.05, 0.95, 19)
    for label in range(6):
        best = max(
            sklearn.metrics.f1_score(labels[:, label], probs[:, label] >= t, zero_division=0)
            for t in grid
        )
        chosen = sklearn.metrics.f1_score(
            labels[:, label], probs[:, label] >= thresholds[label], zero_division=0
        )
        assert chosen == pytest.approx(best)


def test_get_entities_bio_by_hand():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "B-PER", "B-PER"]
    assert metrics.get_entities(tags) == [
        ("PER", 0, 1),
        ("LOC", 3, 4),  # I- without B- starts a chunk (conlleval)
        ("LOC", 5, 5),
        ("ORG", 6, 6),  # a type change inside a chunk starts a new one
        ("PER", 7, 7),
        ("PER", 8, 8),
    ]
    # IOB1 (B only between touching chunks of one type) reads with the same rules.
    assert metrics.get_entities(["I-PER", "I-PER", "B-PER", "O"], "IOB1") == [
        ("PER", 0, 1),
        ("PER", 2, 2),
    ]
    with pytest.raises(ValueError, match="'X-PER'"):
        metrics.get_entities(["O", "X-PER"])
    with pytest.raises(ValueError, match="Unknown tag scheme"):
        metrics.get_entities(["O"], "BILOU")


def test_get_entities_iobes_strict_by_hand():
    tags = ["B-PER", "I-PER", "E-PER", "S-LOC", "B-ORG", "O", "I-PER", "E-PER", "B-LOC", "E-ORG"]
    # Only complete chunks count: B-ORG O, I-PER E-PER and B-LOC E-ORG are dropped.
    assert metrics.get_entities(tags, "IOBES") == [("PER", 0, 2), ("LOC", 3, 3)]


def test_entity_scores_by_hand():
    truth = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-LOC"]]
    scores = metrics.entity_scores(truth, pred)
    # True: PER(0-1), LOC(3), ORG; predicted: PER(0-1), ORG(3), ORG, LOC; correct: PER, ORG.
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert scores["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert scores["per_type"]["ORG"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    )
    with pytest.raises(ValueError, match="Sentence 1"):
        metrics.entity_scores(truth, [pred[0], ["O"]])


def test_convert_tags_by_hand():
    bio = ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG"]
    iobes = ["B-PER", "I-PER", "E-PER", "O", "S-LOC", "B-LOC", "E-LOC", "S-ORG"]
    iob1 = ["I-PER", "I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG"]
    assert metrics.convert_tags(bio, "BIO", "IOBES") == iobes
    assert metrics.convert_tags(iobes, "IOBES", "BIO") == bio
    assert metrics.convert_tags(bio, "BIO", "IOB1") == iob1
    assert metrics.convert_tags(iob1, "IOB1", "BIO") == bio
    # Ill-formed BIO is read as conlleval reads it.
    assert metrics.convert_tags(["I-PER", "I-LOC", "O"], "BIO", "IOBES") == ["S-PER", "S-LOC", "O"]


# ---------------------------------------------------------------------------------------------
# Random inputs against the reference libraries.


@pytest.mark.parametrize("seed", range(20))
def test_classification_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, classes = int(rng.integers(1, 60)), int(rng.integers(2, 5))
    labels = rng.integers(0, classes, n)
    # Sometimes near-perfect, sometimes a single predicted class (undefined cases).
    predictions = [rng.integers(0, classes, n), np.where(rng.random(n) < 0.9, labels, 0)][seed % 2]
    if seed % 5 == 0:
        predictions = np.full(n, seed % classes)
    assert metrics.accuracy(labels, predictions) == pytest.approx(
        sklearn.metrics.accuracy_score(labels, predictions)
    )
    assert metrics.matthews_corrcoef(labels, predictions) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, predictions), abs=1e-12
    )
    binary_labels, binary_predictions = labels % 2, predictions % 2
    assert metrics.f1_binary(binary_labels, binary_predictions) == pytest.approx(
        sklearn.metrics.f1_score(binary_labels, binary_predictions, labels=[0, 1])
    )


@pytest.mark.parametrize("seed", range(10))
def test_multilabel_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    # From 2 labels: scikit-learn reads an [N, 1] array as one multi-class column instead.
    n, num_labels = int(rng.integers(1, 40)), int(rng.integers(2, 8))
    # Per-label rates from 0 (labels that never occur) to 0.8.
    labels = rng.random((n, num_labels)) < rng.choice([0.0, 0.1, 0.5, 0.8], num_labels)
    predictions = np.where(rng.random((n, num_labels)) < 0.7, labels, rng.random((n, 1)) < 0.3)
    scores = metrics.multilabel_f1(labels, predictions)
    for average in ("micro", "macro"):
        assert scores[f"{average}_f1"] == pytest.approx(
            sklearn.metrics.f1_score(labels, predictions, average=average)
        )
    assert scores["subset_accuracy"] == pytest.approx(
        sklearn.metrics.accuracy_score(labels, predictions)
    )


@pytest.mark.parametrize("seed", range(20))
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 50))
    x = rng.normal(size=n)
    y = 0.5 * x + rng.normal(size=n)
    if seed % 2:  # STS-B style scores: few distinct values, many ties
        x, y = np.round(x * 2) / 2, np.round(y)
    if seed % 7 == 0:
        y = np.full(n, 3.0)
    for ours, reference in (
        (metrics.pearson, scipy.stats.pearsonr),
        (metrics.spearman, scipy.stats.spearmanr),
    ):
        expected = reference(x, y)[0]
        if math.isnan(expected):
            assert math.isnan(ours(x, y))
        else:
            assert ours(x, y) == pytest.approx(expected, abs=1e-10)


def _random_tags(rng, n: int, prefixes: str) -> list[str]:
    """Tags drawn independently: with several types, ill-formed chunks occur often."""
    tags = []
    for _ in range(n):
        prefix = prefixes[rng.integers(len(prefixes))]
        tags.append("O" if prefix == "O" else f"{prefix}-{TYPES[rng.integers(len(TYPES))]}")
    return tags


def _random_corpus(rng, prefixes: str) -> tuple[list[list[str]], list[list[str]]]:
    lengths = rng.integers(1, 12, int(rng.integers(1, 8)))
    truth = [_random_tags(rng, n, prefixes) for n in lengths]
    # Predictions: the truth with some tags replaced, so many entities match.
    pred = [
        [t if rng.random() < 0.7 else _random_tags(rng, 1, prefixes)[0] for t in seq]
        for seq in truth
    ]
    return truth, pred


def _assert_matches_seqeval(truth, pred, our_scheme: str, **seqeval_mode):
    scores = metrics.entity_scores(truth, pred, our_scheme)
    for name in ("precision", "recall", "f1"):
        reference = getattr(seqeval_metrics, f"{name}_score")(truth, pred, **seqeval_mode)
        assert scores[name] == pytest.approx(reference), name
    assert scores["accuracy"] == pytest.approx(seqeval_metrics.accuracy_score(truth, pred))
    report = seqeval_metrics.classification_report(truth, pred, output_dict=True, **seqeval_mode)
    expected = {
        type_: {
            "precision": row["precision"],
            "recall": row["recall"],
            "f1": row["f1-score"],
            "support": row["support"],
        }
        for type_, row in report.items()
        if not type_.endswith(" avg")
    }
    assert scores["per_type"].keys() == expected.keys()
    for type_, row in expected.items():
        assert scores["per_type"][type_] == pytest.approx(row), type_


@pytest.mark.parametrize("seed", range(40))
def test_bio_matches_seqeval_default_mode(seed):
    rng = np.random.default_rng(seed)
    truth, pred = _random_corpus(rng, "OOBI")
    for seq in truth:
        assert metrics.get_entities(seq) == seqeval_metrics.sequence_labeling.get_entities(seq)
    _assert_matches_seqeval(truth, pred, "BIO")


@pytest.mark.parametrize("seed", range(10))
def test_mixed_prefixes_match_seqeval_default_mode(seed):
    # seqeval's default mode also reads E- and S- tags; so does the lenient BIO reading here.
    rng = np.random.default_rng(100 + seed)
    truth, pred = _random_corpus(rng, "OBIES")
    _assert_matches_seqeval(truth, pred, "BIO")


@pytest.mark.parametrize("seed", range(40))
def test_iobes_matches_seqeval_strict_mode(seed):
    rng = np.random.default_rng(200 + seed)
    truth, pred = _random_corpus(rng, "OBIES")
    _assert_matches_seqeval(truth, pred, "IOBES", mode="strict", scheme=IOBES)


@pytest.mark.parametrize("seed", range(20))
def test_conversion_round_trip_and_scores(seed):
    rng = np.random.default_rng(300 + seed)
    truth, pred = _random_corpus(rng, "OOBI")
    # Well-formed BIO (rewritten once) survives BIO -> IOBES -> BIO and BIO -> IOB1 -> BIO.
    for seq in truth:
        bio = metrics.convert_tags(seq, "BIO", "BIO")
        assert metrics.get_entities(bio) == metrics.get_entities(seq)
        iobes = metrics.convert_tags(bio, "BIO", "IOBES")
        assert metrics.get_entities(iobes, "IOBES") == metrics.get_entities(bio)
        assert metrics.convert_tags(iobes, "IOBES", "BIO") == bio
        assert metrics.convert_tags(metrics.convert_tags(bio, "BIO", "IOB1"), "IOB1", "BIO") == bio
    # Converting gold and predictions leaves the scores unchanged, ill-formed input included.
    as_iobes = [[metrics.convert_tags(s, "BIO", "IOBES") for s in seqs] for seqs in (truth, pred)]
    converted = metrics.entity_scores(*as_iobes, "IOBES")
    original = metrics.entity_scores(truth, pred)
    del converted["accuracy"], original["accuracy"]  # token accuracy depends on the tag set
    assert converted == original
