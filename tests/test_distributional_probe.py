"""experiments/distributional_probe.py: co-occurrence counts, PPMI-SVD vectors, the probes."""

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))
import distributional_probe as dp  # noqa: E402


def test_basic_tokens_are_berts_uncased_words():
    tokenize = dp.basic_tokenizer()
    assert tokenize("Café's GREAT, isn't it?") == [
        "cafe", "'", "s", "great", ",", "isn", "'", "t", "it", "?",
    ]  # fmt: skip
    assert tokenize("我爱北京") == ["我", "爱", "北", "京"]


def test_task_words_keep_frequent_words_most_frequent_first():
    texts = [["b", "a", "a"], ["c", "a", "b"], ["d"]]
    assert dp.task_words(texts, min_count=2) == ["a", "b"]
    assert dp.task_words(texts, min_count=1) == ["a", "b", "c", "d"]


def test_cooccurrence_counts_by_hand_within_sentences_only():
    sentences = [["a", "b", "c"], ["a", "c"]]
    counts, contexts = dp.cooccurrence(sentences, ["a", "c"], window=1)
    assert contexts == ["a", "b", "c"]
    # a: b (sentence 1), c (sentence 2); c: b (sentence 1), a (sentence 2). The last word of
    # sentence 1 and the first of sentence 2 are not neighbours.
    np.testing.assert_array_equal(counts.toarray(), [[0, 1, 1], [1, 1, 0]])
    counts, _ = dp.cooccurrence(sentences, ["a", "c"], window=2)
    np.testing.assert_array_equal(counts.toarray(), [[0, 1, 2], [2, 1, 0]])


def test_ppmi_vectors_put_words_of_one_topic_together():
    rng = np.random.default_rng(0)
    topics = [[f"{t}{i}" for i in range(8)] for t in "xyz"]
    sentences = [list(rng.choice(topics[k % 3], 6)) for k in range(600)]
    words = [w for topic in topics for w in topic]
    counts, _ = dp.cooccurrence(sentences, words, window=3)
    vectors = dp.ppmi_vectors(counts, dim=4)  # three topics and one dimension of noise
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = unit @ unit.T
    same = np.kron(np.eye(3), np.ones((8, 8))).astype(bool) & ~np.eye(24, dtype=bool)
    other = ~np.kron(np.eye(3), np.ones((8, 8))).astype(bool)
    assert cos[same].min() > 0.7 and cos[other].max() < 0.1


def test_ppmi_vectors_give_unseen_words_zero_and_mean_vectors_skip_them():
    counts, _ = dp.cooccurrence([["a", "b", "a", "b"]], ["a", "b", "never"], window=1)
    vectors = dp.ppmi_vectors(counts, dim=3)
    assert vectors.shape == (3, 3)
    np.testing.assert_array_equal(vectors[2], 0.0)
    index = {"a": 0, "b": 1, "never": 2}
    means = dp.mean_vectors([["a", "never"], ["unknown"]], index, vectors)
    np.testing.assert_allclose(means[0], vectors[0])  # "never" has no vector: not averaged in
    np.testing.assert_array_equal(means[1], 0.0)


def test_bag_of_words_probe_uses_the_words_and_the_appended_features():
    rng = np.random.default_rng(0)
    index = {w: i for i, w in enumerate(["good", "bad", "the", "film"])}
    y = rng.integers(0, 2, 400)
    texts = [["the", "film", "good" if label else "bad"] for label in y]
    assert dp.bag_of_words_accuracy(texts[:300], y[:300], texts[300:], y[300:], index) == 1.0
    # Words that say nothing, then a dense feature that carries the label.
    blank = [["the", "film"] for _ in y]
    noise = dp.bag_of_words_accuracy(blank[:300], y[:300], blank[300:], y[300:], index)
    dense = (2 * y - 1)[:, None] + 0.1 * rng.normal(size=(400, 2))
    appended = (dense[:300], dense[300:])
    signal = dp.bag_of_words_accuracy(blank[:300], y[:300], blank[300:], y[300:], index,
                                      dense=appended)  # fmt: skip
    assert noise < 0.65 and signal > 0.95
