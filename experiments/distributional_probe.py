r"""Does a pre-training corpus hold anything a text task can use? Word vectors from its
co-occurrence counts, probed on the task, against random vectors for the same words.

    python experiments/distributional_probe.py --corpus=sample:enwiki
    python experiments/distributional_probe.py --corpus=sample:enwiki,task   # + the task's text

Independent of BERT: it counts, over the corpus, which words occur within `--window` words of
each other (same sentence), turns the counts into positive pointwise mutual information
(context distribution smoothed by 0.75) and factorises that matrix by a truncated SVD into
`--dim`-wide word vectors (Levy, Goldberg & Dagan, 2015: as good as word2vec at this size). Each
text of the task is the mean of its words' vectors, scored by the logistic-regression probe of
experiments/linear_probe.py; the same probe on random vectors for the same words is the
baseline. Then the question transfer asks: a bag-of-words logistic regression on the labelled
texts (what the labels teach without any pre-training) against the same regression with the
corpus's mean vectors appended (and with random ones). When the corpus's vectors add nothing
to the bag of words, the labels already hold what the corpus knows about the task, and
pre-training on that corpus has little to transfer (docs/results/README.md, "Does pre-training
on the sample transfer to Rotten Tomatoes?"). `task` as a corpus is the task's own training
texts without their labels (task-adaptive pre-training); `--train_examples` keeps fewer labels.

Words are BERT's basic tokens (lower-cased, accents stripped, punctuation split, each CJK
character a token), so chnsenti works too.
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Iterable, Sequence

import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

from linear_probe import TASKS, probe_accuracy  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_list("corpus", ["sample:enwiki"], "Corpora read together (as bert_jax.data."
                      "prepare names them), or `task`: the task's training texts.")  # fmt: skip
    flags.DEFINE_enum("task", "rotten_tomatoes", TASKS, "Built-in text task (fixed 20% dev).")
    flags.DEFINE_integer("dim", 128, "Width of the word vectors (BERT-tiny's hidden size).")
    flags.DEFINE_integer("window", 5, "Context words on each side.")
    flags.DEFINE_integer("min_count", 2, "Words of the task seen fewer times in training are out.")
    flags.DEFINE_integer("train_examples", 0, "Labelled training texts (a fixed random subset; "
                         "0: all).")  # fmt: skip
    flags.DEFINE_integer("seed", 0, "Seed of the random vectors, the SVD and the subset.")


def basic_tokenizer():
    """text -> BERT's basic (pre-WordPiece) tokens of the uncased models."""
    from tokenizers import normalizers, pre_tokenizers  # noqa: PLC0415

    norm = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    pre = pre_tokenizers.BertPreTokenizer()
    return lambda text: [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text))]


def task_words(texts: Iterable[list[str]], min_count: int) -> list[str]:
    """Words of the task's training texts seen at least `min_count` times, most frequent first."""
    counts: dict[str, int] = {}
    for words in texts:
        for w in words:
            counts[w] = counts.get(w, 0) + 1
    return sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))


def cooccurrence(sentences: Iterable[list[str]], words: Sequence[str], window: int):
    """Sparse [len(words), contexts] counts of `words` seen within `window` of each context
    word, both in the same sentence; and the context vocabulary (every word of the corpus)."""
    from scipy import sparse  # noqa: PLC0415

    index = {w: i for i, w in enumerate(words)}
    contexts: dict[str, int] = {}
    target_ids, context_ids, sentence_ids = [], [], []
    for k, sentence in enumerate(sentences):
        target_ids += [index.get(w, -1) for w in sentence]
        context_ids += [contexts.setdefault(w, len(contexts)) for w in sentence]
        sentence_ids += [k] * len(sentence)
    t, c, s = (np.asarray(a, np.int64) for a in (target_ids, context_ids, sentence_ids))
    rows, cols = [], []
    for d in range(1, window + 1):  # pairs d apart, both directions, within one sentence
        same = s[d:] == s[:-d]
        for a, b in ((t[:-d], c[d:]), (t[d:], c[:-d])):
            keep = same & (a >= 0)
            rows.append(a[keep])
            cols.append(b[keep])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    shape = (len(words), len(contexts))
    counts = sparse.coo_matrix((np.ones(len(rows), np.float64), (rows, cols)), shape=shape)
    return counts.tocsr(), list(contexts)


def ppmi_vectors(counts, dim: int, seed: int = 0, alpha: float = 0.75) -> np.ndarray:
    """[words, dim] vectors U sqrt(S) of the truncated SVD of the smoothed PPMI of `counts`;
    a word without any count gets the zero vector."""
    from scipy import sparse  # noqa: PLC0415
    from scipy.sparse.linalg import svds  # noqa: PLC0415

    counts = sparse.coo_matrix(counts)
    row = np.asarray(counts.sum(1)).ravel()
    col = np.asarray(counts.sum(0)).ravel() ** alpha
    # log P(w, c) / (P(w) P_alpha(c)); the total count cancels.
    pmi = np.log(counts.data * col.sum() / (row[counts.row] * col[counts.col]))
    keep = pmi > 0
    ppmi = sparse.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), counts.shape)
    k = min(dim, min(ppmi.shape) - 1)
    u, s, _ = svds(ppmi, k=k, random_state=seed)
    vectors = np.zeros((counts.shape[0], dim), np.float32)
    vectors[:, :k] = u * np.sqrt(s)
    return vectors


def mean_vectors(texts: Sequence[list[str]], index: dict[str, int], vectors: np.ndarray):
    """[texts, dim]: each text's mean over its words that have a nonzero vector."""
    known = np.abs(vectors).sum(1) > 0
    out = np.zeros((len(texts), vectors.shape[1]), np.float32)
    for i, words in enumerate(texts):
        ids = [index[w] for w in words if w in index and known[index[w]]]
        if ids:
            out[i] = vectors[ids].mean(0)
    return out


def bag_of_words_accuracy(train, y_train, dev, y_dev, index: dict[str, int], *,
                          dense: tuple[np.ndarray, np.ndarray] | None = None) -> float:  # fmt: skip
    """Logistic regression on binary word-presence features (what the labelled texts alone
    give), with `dense` = (train, dev) features standardised and appended when given."""
    from scipy import sparse  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    def features(texts, extra):
        pairs = {(i, index[w]) for i, words in enumerate(texts) for w in words if w in index}
        rows, cols = zip(*pairs, strict=True) if pairs else ((), ())
        bow = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), (len(texts), len(index)))
        if extra is None:
            return bow
        # Scaled so that the dense block weighs about as much as a text's few word features.
        return sparse.hstack([bow, sparse.csr_matrix(0.3 * (extra - mean) / std)]).tocsr()

    mean, std = (dense[0].mean(0), dense[0].std(0) + 1e-6) if dense else (0.0, 1.0)
    train_extra, dev_extra = dense or (None, None)
    clf = LogisticRegression(C=0.5, max_iter=3000).fit(features(train, train_extra), y_train)
    return float(clf.score(features(dev, dev_extra), y_dev))


def run(corpora: Sequence[str], task: str, *, dim: int = 128, window: int = 5,
        min_count: int = 2, train_examples: int = 0, seed: int = 0) -> dict:  # fmt: skip
    from bert_jax.data import corpus as corpus_lib  # noqa: PLC0415
    from bert_jax.data.tasks import classify  # noqa: PLC0415

    tokenize = basic_tokenizer()
    train, dev, _ = getattr(classify, task)()
    x_train = [tokenize(e.text_a) for e in train]
    x_dev = [tokenize(e.text_a) for e in dev]
    y_train = np.array([e.label for e in train])
    y_dev = np.array([e.label for e in dev])
    # The word list (and `task` as a corpus) come from all training texts, the labels only
    # from the subset: unlabelled text is cheap, labels are not.
    words = task_words(x_train, min_count)
    index = {w: i for i, w in enumerate(words)}

    sentences: list[list[str]] = []
    for spec in corpora:
        if spec == "task":
            sentences += x_train
        else:
            sentences += [tokenize(s) for doc in corpus_lib.read_documents(spec) for s in doc]
    counts, contexts = cooccurrence(sentences, words, window)
    vectors = ppmi_vectors(counts, dim, seed)
    random = np.random.default_rng(seed).normal(size=(len(words), dim)).astype(np.float32)
    seen = np.abs(vectors).sum(1) > 0
    task_tokens = [w for ws in x_dev for w in ws if w in index]

    labelled = np.arange(len(x_train))
    if train_examples:
        labelled = np.sort(np.random.default_rng(seed).permutation(len(x_train))[:train_examples])
    x_labelled = [x_train[i] for i in labelled]
    y_labelled = y_train[labelled]

    def probe(v):
        return round(probe_accuracy(mean_vectors(x_labelled, index, v), y_labelled,
                                    mean_vectors(x_dev, index, v), y_dev), 4)  # fmt: skip

    def bag_of_words(v=None):
        dense = None if v is None else (mean_vectors(x_labelled, index, v),
                                        mean_vectors(x_dev, index, v))  # fmt: skip
        return round(
            bag_of_words_accuracy(x_labelled, y_labelled, x_dev, y_dev, index, dense=dense), 4
        )

    return {
        "corpus": ",".join(corpora),
        "task": task,
        "corpus_words": sum(map(len, sentences)),
        "corpus_types": len(contexts),
        "task_words_with_vectors": f"{int(seen.sum())}/{len(words)}",
        # Share of the dev texts' (known) word tokens that the corpus gave a vector.
        "dev_token_coverage": round(float(np.mean([seen[index[w]] for w in task_tokens])), 4),
        "labelled_examples": len(labelled),
        "majority_class": round(float(max(y_dev.mean(), 1 - y_dev.mean())), 4),
        # Frozen mean vectors; random ones only for the words the corpus covers (its fair twin).
        "random_vectors": probe(random * seen[:, None]),
        "corpus_vectors": probe(vectors),
        # Does the corpus add to what the labels teach? Word presence alone, then with each.
        "bag_of_words": bag_of_words(),
        "bag_of_words_plus_random_vectors": bag_of_words(random * seen[:, None]),
        "bag_of_words_plus_corpus_vectors": bag_of_words(vectors),
    }


def main(argv) -> None:
    del argv
    result = run(FLAGS.corpus, FLAGS.task, dim=FLAGS.dim, window=FLAGS.window,
                 min_count=FLAGS.min_count, train_examples=FLAGS.train_examples,
                 seed=FLAGS.seed)  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
