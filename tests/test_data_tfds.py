"""TFDS: the local-corpus builder round trip, prepare from a TFDS name, a fast offline failure."""

import pathlib
import time
import urllib.request
from xml.sax.saxutils import escape as xml_escape

import pytest
import tensorflow_datasets as tfds

from bert_jax.data import corpus, prepare, tfds_corpus

DOCS = [
    ["The first document has a sentence.", "And a second sentence follows it."],
    ["Another document, with one sentence only."],
    ["A third document.", "It has two sentences as well."],
]


@pytest.fixture(autouse=True)
def _quiet():
    tfds.disable_progress_bar()


def _xml(docs):
    page = "<page><title>T{}</title><ns>0</ns><revision><text>{}</text></revision></page>"
    pages = "".join(page.format(i, xml_escape(" ".join(d))) for i, d in enumerate(docs))
    return f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">{pages}</mediawiki>'


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "xml"])
def test_builder_round_trip(tmp_path, fmt):
    path = tmp_path / f"corpus.{fmt}"
    if fmt == "txt":
        corpus.write_text(DOCS, path)
    elif fmt == "jsonl":
        import json

        path.write_text("".join(json.dumps({"text": " ".join(d)}) + "\n" for d in DOCS))
    else:
        path.write_text(_xml(DOCS))
    builder = tfds_corpus.build(str(path), f"mine_{fmt}", tmp_path / "tfds")
    assert builder.version == "1.0.0"  # versioned: data_dir/bert_text_corpus/<name>/1.0.0
    assert (tmp_path / "tfds" / "bert_text_corpus" / f"mine_{fmt}" / "1.0.0").is_dir()
    name = f"bert_text_corpus/mine_{fmt}"
    got = list(tfds_corpus.iter_tfds_documents(name, data_dir=str(tmp_path / "tfds")))
    assert got == DOCS
    halves = [
        list(tfds_corpus.iter_tfds_documents(name, str(tmp_path / "tfds"), i, 2)) for i in (0, 1)
    ]
    assert sorted(halves[0] + halves[1]) == sorted(DOCS) and all(halves)  # one part per host


def test_prepare_reads_a_tfds_corpus(tmp_path, monkeypatch):
    docs = corpus.read_documents("sample:lee_background")[:40]
    corpus.write_text(docs, tmp_path / "lee.txt")
    tfds_corpus.build(str(tmp_path / "lee.txt"), "lee", tmp_path / "tfds")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    stats = prepare.prepare(
        "tfds:bert_text_corpus/lee", tmp_path / "out", vocab_size=600, max_seq_length=64,
        max_predictions_per_seq=10, dupe_factor=1, num_train_files=1, num_workers=1,
    )  # fmt: skip
    assert stats["corpus"]["documents"] == 40
    assert stats["corpus"]["sentences"] == sum(map(len, docs))
    with pytest.raises(FileNotFoundError, match="build it first"):
        list(tfds_corpus.iter_tfds_documents("bert_text_corpus/absent"))


def test_public_dataset_offline_fails_fast_and_clearly(tmp_path, monkeypatch):
    # An unresolvable probe stands in for "offline" (on a connected machine the test must not
    # start downloading Wikipedia).
    monkeypatch.setattr(tfds_corpus, "_PROBE_URL", "https://tfds-probe.invalid/")
    start = time.time()
    with pytest.raises(ConnectionError, match=r"(?s)not prepared.*unreachable.*tfds build"):
        list(tfds_corpus.iter_tfds_documents("wikipedia/20230601.en", data_dir=str(tmp_path)))
    assert time.time() - start < 10
    # A network that hangs instead of refusing is cut off by the probe's timeout.
    monkeypatch.setattr(tfds_corpus, "_PROBE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: time.sleep(60))
    start = time.time()
    with pytest.raises(ConnectionError, match="timed out"):
        list(tfds_corpus.iter_tfds_documents("wikipedia/20230601.en", data_dir=str(tmp_path)))
    assert time.time() - start < 5
    with pytest.raises(ValueError, match="not a TFDS dataset"):
        list(tfds_corpus.iter_tfds_documents("no_such_dataset_xyz"))


def test_build_checks_the_corpus_of_an_existing_dataset(tmp_path, caplog):
    # TFDS knows a build by name and version only: building a name again from another corpus
    # must fail rather than return the first corpus' documents.
    first, other, moved = (tmp_path / f"{n}.txt" for n in ("first", "other", "moved"))
    corpus.write_text(DOCS, first)
    corpus.write_text(DOCS[:1], other)
    data_dir = tmp_path / "tfds"
    tfds_corpus.build(str(first), "mine", data_dir)
    start = time.time()
    builder = tfds_corpus.build(str(first), "mine", data_dir)  # the same corpus: reused
    assert time.time() - start < 1 and builder.info.splits["train"].num_examples == len(DOCS)
    with pytest.raises(
        ValueError, match=r"(?s)from '\S*first.txt'.*not from '\S*other.txt'.*delete"
    ):
        tfds_corpus.build(str(other), "mine", data_dir)
    moved.write_bytes(first.read_bytes())  # the same contents elsewhere: reused
    tfds_corpus.build(str(moved), "mine", data_dir)
    corpus.write_text(DOCS[::-1], first)  # edited in place, the size unchanged
    assert first.stat().st_size == moved.stat().st_size
    with pytest.raises(ValueError, match="another name"):
        tfds_corpus.build(str(first), "mine", data_dir)
    # A dataset built before the record existed is reused, with a warning.
    (pathlib.Path(builder.data_dir) / "corpus_source.json").unlink()
    with caplog.at_level("WARNING"):
        tfds_corpus.build(str(other), "mine", data_dir)
    assert "cannot be checked" in caplog.text
