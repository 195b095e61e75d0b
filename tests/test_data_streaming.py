"""Streaming prepare(): bad input, interruption and resume, chunking, memory, phases."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import tokenization
from bert_jax.data import corpus, pipeline, prepare, streaming
from configs import pretrain


@pytest.fixture(scope="module")
def enwiki_text():
    return corpus.sample_text_file("enwiki")


@pytest.fixture(scope="module")
def small_vocab(enwiki_text, tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    docs = corpus.read_text(enwiki_text)[:20]
    return str(tokenization.train_wordpiece(docs, 2000, path))


def _lines(path):
    return path.read_bytes().split(b"\n")


def test_bad_input_is_counted_not_fatal(enwiki_text, small_vocab, tmp_path):
    good = corpus.read_text(enwiki_text)[:12]
    raw = b"\n\n".join("\n".join(doc).encode() for doc in good)
    bad = [
        b"\n\n\n   \n\t\n",  # runs of blank and whitespace-only lines: no empty documents
        b"A lone sentence that is a whole document.",  # one-sentence document
        b"\n\nCaf\xe9 au lait \xff\xfe is not UTF-8. Still a fine sentence.\nSecond line.",
        b"\n\nControl\x00 chars\x07 and \x1b[31m escapes.\nAnother line\x7f here.",
        b"\n\n" + b"word " * 210_000 + b"end.",  # a 1 MB line without sentence breaks
        b"\n\n\x00\x01\x02",  # a document of nothing but control characters
        b"\n\nWindows line ends.\r\nSecond line.\r\n",
    ]
    path = tmp_path / "bad.txt"
    path.write_bytes(raw + b"\n\n" + b"".join(bad) + b"\n\n" + raw)
    stats = prepare.prepare(
        str(path), tmp_path / "out", vocab_file=small_vocab, max_seq_length=64,
        max_predictions_per_seq=10, dupe_factor=1, eval_fraction=0, num_train_files=2,
        num_workers=1,
    )  # fmt: skip
    c = stats["corpus"]
    assert c["invalid_utf8_lines"] == 1 and c["control_char_lines"] == 3
    assert c["long_lines"] == 1 and c["empty_documents"] == 1
    assert c["one_sentence_documents"] >= 1
    assert c["documents"] == 24 + 5  # the control-only document is empty and dropped
    ds = pipeline.pretraining_dataset(
        str(tmp_path / "out" / "train-*"), batch_size=100_000, max_seq_length=64,
        max_predictions_per_seq=10, training=False,
    )  # fmt: skip
    n = sum(len(b["input_ids"]) for b in pipeline.as_numpy(ds))
    assert n == stats["train"]["instances"] > 100


def test_control_characters_are_deleted_as_the_bert_normalizer_does(small_vocab):
    tokenizer = tokenization.load_tokenizer(small_vocab)
    raw = "Con\x00trol\x07 chars\x0b and\x1b escapes\x7f."
    counts = streaming.new_read_counts()
    (cleaned,) = streaming._clean_line(raw.encode(), counts)
    assert cleaned == "Control chars and escapes." and counts["control_char_lines"] == 1
    # The tokenizer drops the same characters itself: cleaning changes no token.
    assert tokenizer.encode(cleaned).ids == tokenizer.encode(raw).ids


def test_interrupted_prepare_keeps_finished_shards_and_resumes(enwiki_text, small_vocab, tmp_path):
    text = corpus.write_text(corpus.read_text(enwiki_text)[:16], tmp_path / "c.txt")
    kwargs = dict(vocab_file=small_vocab, max_seq_length=64, max_predictions_per_seq=10,
                  dupe_factor=2, num_train_files=3, num_workers=1)  # fmt: skip
    real = streaming.run_shard
    calls = []

    def crash_on_second(job):
        calls.append(job.output)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        return real(job)

    streaming.run_shard = crash_on_second
    try:
        with pytest.raises(KeyboardInterrupt):
            prepare.prepare(str(text), tmp_path / "out", **kwargs)
    finally:
        streaming.run_shard = real
    work = tmp_path / ".out.partial"
    done = sorted(p.name for p in work.glob("*.done.json"))
    assert len(done) == 1 and not (tmp_path / "out").exists()
    finished = work / done[0].removesuffix(".done.json")
    mtime = finished.stat().st_mtime_ns
    stats = prepare.prepare(str(text), tmp_path / "out", **kwargs)  # the same command resumes
    assert (tmp_path / "out" / finished.name).stat().st_mtime_ns == mtime  # not redone
    fresh = prepare.prepare(str(text), tmp_path / "fresh", **kwargs)
    timing = {"worker_seconds"}
    assert {k: v for k, v in stats["train"].items() if k not in timing} == {
        k: v for k, v in fresh["train"].items() if k not in timing
    }
    for name in stats["train_files"] + ["eval.tfrecord"]:
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


def test_a_process_waiting_for_prepare_finds_the_output_whole(
    enwiki_text, small_vocab, tmp_path, monkeypatch
):
    """Two prepare() runs on one output_dir (a sweep's jobs): the second waits for the first's
    lock and then finds the output built, even when the first is slow to rename it into place
    (the lock used to be released before the rename; the waiter then wrote into the directory
    being renamed)."""
    import threading
    import time

    text = corpus.write_text(corpus.read_text(enwiki_text)[:8], tmp_path / "c.txt")
    kwargs = dict(vocab_file=small_vocab, max_seq_length=64, max_predictions_per_seq=10,
                  dupe_factor=1, num_train_files=2, num_workers=1)  # fmt: skip
    building, real_build, real_replace = threading.Event(), prepare._build, os.replace

    def slow_build(*args, **kw):
        building.set()
        time.sleep(0.5)  # the second run starts and waits meanwhile
        return real_build(*args, **kw)

    def slow_replace(src, dst):
        time.sleep(1.0)  # the gap between the build and the rename, widened
        return real_replace(src, dst)

    monkeypatch.setattr(prepare, "_build", slow_build)
    monkeypatch.setattr(prepare.os, "replace", slow_replace)
    results = {}

    def run(name):
        try:
            results[name] = prepare.prepare(str(text), tmp_path / "out", **kwargs)
        except Exception as e:  # noqa: BLE001 (reported by the assertion below)
            results[name] = e

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert building.wait(60)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    first.join(120)
    second.join(120)
    assert results["first"] == results["second"], results  # the second found the first's output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["stats.json", "vocab.txt", "eval.tfrecord", *results["first"]["train_files"]]
    )
    assert not (tmp_path / ".out.partial").exists() and not (tmp_path / ".out.lock").exists()


def test_chunk_chars_changes_the_data_and_is_recorded(enwiki_text, small_vocab, tmp_path):
    text = corpus.write_text(corpus.read_text(enwiki_text)[:12], tmp_path / "c.txt")
    kwargs = dict(vocab_file=small_vocab, max_seq_length=64, max_predictions_per_seq=10,
                  dupe_factor=1, num_train_files=1, num_workers=1)  # fmt: skip
    default = prepare.prepare(str(text), tmp_path / "default", **kwargs)
    small = prepare.prepare(str(text), tmp_path / "small", chunk_chars=2_000, **kwargs)
    assert "chunk_chars" not in default["args"] and small["args"]["chunk_chars"] == 2_000
    name = default["train_files"][0]
    assert (tmp_path / "default" / name).read_bytes() != (tmp_path / "small" / name).read_bytes()
    with pytest.raises(
        ValueError, match=r"'chunk_chars': \(2000, None\)"
    ):  # not "already prepared"
        prepare.prepare(str(text), tmp_path / "small", **kwargs)


def test_small_chunks_and_dynamic_masking_records(enwiki_text, small_vocab, tmp_path):
    text = corpus.write_text(corpus.read_text(enwiki_text)[:30], tmp_path / "c.txt")
    stats = prepare.prepare(
        str(text), tmp_path / "out", vocab_file=small_vocab, max_seq_length=64,
        max_predictions_per_seq=10, dupe_factor=2, num_train_files=2, num_workers=1,
        chunk_chars=50_000, dynamic_masking=True, whole_word_mask="wordpiece",
    )  # fmt: skip
    assert all(s["chunks"] > 2 for s in stats["shards"])  # streamed in several chunks
    assert stats["train"]["predictions"] == 0  # unmasked: the pipeline masks
    found = pipeline.record_features(str(tmp_path / "out" / stats["train_files"][0]))
    assert sorted(found) == sorted(
        ["input_ids", "input_mask", "segment_ids", "next_sentence_labels", "word_starts"]
    )
    config = pretrain.get_config("size=tiny")
    config.data.whole_word_mask = "wordpiece"
    from bert_jax.data import masking

    ds = pipeline.pretraining_dataset(
        str(tmp_path / "out" / "train-*"), batch_size=64, max_seq_length=64,
        max_predictions_per_seq=10, training=True, dynamic_masking=masking.masking_config(
            config.data), vocab_file=str(tmp_path / "out" / "vocab.txt"),
    )  # fmt: skip
    batch = next(pipeline.as_numpy(ds))
    assert batch["masked_lm_weights"].sum() > 64 * 5


def _peak_rss_mb(text, vocab, chunk_chars, tmp):
    """Peak RSS of one shard in a fresh process (MB)."""
    code = (
        "import resource, sys\n"
        "from bert_jax.data import streaming, pretraining, masking\n"
        "t, v, c, o = sys.argv[1:]\n"
        "end = int(streaming.document_offsets(t)[-1])\n"
        "job = streaming.ShardJob(text_file=t, start=0, end=end, output=o, shard=0, seed=1,\n"
        "    vocab_file=v, lowercase=True, recipe=pretraining.RecipeConfig(dupe_factor=2),\n"
        "    masking=masking.MaskingConfig(), chunk_chars=int(c))\n"
        "n = streaming.run_shard(job)['instances']\n"
        "print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(text), vocab, str(chunk_chars), str(tmp)],
        capture_output=True, text=True, check=True, env={**os.environ, "RAYON_NUM_THREADS": "1"},
    )  # fmt: skip
    n, rss = out.stdout.split()
    return int(n), float(rss)


def test_memory_does_not_grow_with_the_corpus(enwiki_text, small_vocab, tmp_path):
    big = tmp_path / "x4.txt"
    data = enwiki_text.read_bytes().rstrip(b"\n")
    big.write_bytes(b"\n\n".join([data] * 4) + b"\n")
    n1, rss1 = _peak_rss_mb(enwiki_text, small_vocab, 300_000, tmp_path / "a")
    n4, rss4 = _peak_rss_mb(big, small_vocab, 300_000, tmp_path / "b")
    assert n4 > 3.5 * n1
    assert rss4 < rss1 * 1.15 + 10, (rss1, rss4)


def test_phases_switch_at_the_configured_step():
    config = pretrain.get_config("size=tiny")
    d = config.data
    d.train_files, d.eval_files = "p1/train-*", "p1/eval"
    assert [p.max_seq_length for p in pipeline.phases(d)] == [128]
    d.phase2_step, d.phase2_dir = 10, "p2"
    phases = pipeline.phases(d)
    assert phases[1] == pipeline.Phase(10, "p2/train-*.tfrecord", "p2/eval.tfrecord", 512, 80)
    assert pipeline.phase_at(phases, 9).max_seq_length == 128
    assert pipeline.phase_at(phases, 10).max_seq_length == 512

    def make(phase, skip):
        return ((phase.max_seq_length, i) for i in range(skip, 1000))

    got = list(pipeline.phased_batches(phases, 7, make))[:6]
    assert got == [(128, 7), (128, 8), (128, 9), (512, 0), (512, 1), (512, 2)]
    assert next(pipeline.phased_batches(phases, 15, make)) == (512, 5)  # resumed inside phase 2
    d.phase2_dir = ""
    with pytest.raises(ValueError, match="phase2_dir"):
        pipeline.phases(d)
    kwargs = prepare.options_from_config(d)
    assert kwargs["masking_split"] == "80/10/10" and kwargs["next_sentence"] is True
    assert json.dumps(kwargs)  # plain values, fit for stats.json args
    assert np.isclose(kwargs["masked_lm_prob"], 0.15)


def test_a_big_first_document_is_chunked_with_another():
    # A document alone holding chunk_chars characters must not form a one-document chunk (it
    # was yielded alone and skipped: none of its sentences made an instance).
    docs = [["x" * 50], ["a"], ["b"], ["c"]]
    out = [[len(d[0]) for d in chunk] for chunk in streaming.chunks(iter(docs), 10)]
    assert out == [[50, 1], [1, 1]]
    assert [len(c) for c in streaming.chunks(iter([["x" * 50]]), 10)] == [1]  # the whole input


def test_unicode_whitespace_lines_end_documents(tmp_path):
    # Python's str.strip() (the original reader's rule) sees NBSP / ideographic-space lines as
    # blank; bytes.strip() did not, and merged the two documents.
    path = tmp_path / "c.txt"
    path.write_text(
        "Doc one.\nMore one.\n\u3000\u3000\nDoc two.\n\u00a0\nDoc three.\n", encoding="utf-8"
    )
    expected = [["Doc one.", "More one."], ["Doc two."], ["Doc three."]]
    assert corpus.read_text(path) == expected
    offsets = streaming.document_offsets(path)
    counts = streaming.new_read_counts()
    docs = [
        d
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
        for d in streaming.iter_documents(path, int(a), int(b), counts)
    ]
    assert len(offsets) == 4 and docs == expected


def test_an_empty_training_file_is_refused_not_waited_on(enwiki_text, small_vocab, tmp_path):
    """Shards are planned on raw documents; one whose documents all clean away used to be
    written empty, and a host reading only it waited forever for its first batch."""
    good = corpus.read_text(enwiki_text)[:3]
    text = "\n\n".join("\n".join(doc) for doc in good) + "\n\n\x01\x02\x03\n\x04\n"
    (tmp_path / "corpus.txt").write_text(text)
    args = dict(vocab_file=small_vocab, max_seq_length=64, max_predictions_per_seq=10,
                dupe_factor=1, eval_fraction=0, num_workers=1)  # fmt: skip
    with pytest.raises(ValueError, match=r"1 of 2 training files came out empty .*at most 1 here"):
        prepare.prepare(str(tmp_path / "corpus.txt"), tmp_path / "two", num_train_files=2, **args)
    assert not (tmp_path / "two").exists()  # nothing published
    prepare.prepare(str(tmp_path / "corpus.txt"), tmp_path / "one", num_train_files=1, **args)

    # Files made elsewhere (or by an older prepare): the reading host says so and stops.
    (tmp_path / "one" / "train-00001-of-00002.tfrecord").write_bytes(b"")
    files = sorted(str(p) for p in (tmp_path / "one").glob("train-*"))
    kwargs = dict(batch_size=4, max_seq_length=64, max_predictions_per_seq=10, training=True)
    pipeline.pretraining_dataset(files, shard_index=0, num_shards=2, **kwargs)
    with pytest.raises(ValueError, match=r"host 1 of 2: its training files .* hold no records"):
        pipeline.pretraining_dataset(files, shard_index=1, num_shards=2, **kwargs)


def test_a_file_cut_short_is_named(enwiki_text, small_vocab, tmp_path):
    """A copy cut at a record boundary reads short with no error from TFRecord, one cut inside a
    record failed with a DataLossError that named no file: runs check stats.json's sizes."""
    from bert_jax import inputs

    text = corpus.write_text(corpus.read_text(enwiki_text)[:6], tmp_path / "corpus.txt")
    out = tmp_path / "data"
    stats = prepare.prepare(str(text), out, vocab_file=small_vocab, max_seq_length=64,
                            max_predictions_per_seq=10, dupe_factor=1, eval_fraction=0.4,
                            num_train_files=1, num_workers=1)  # fmt: skip
    train = out / "train-00000-of-00001.tfrecord"
    sizes = {p.name: p.stat().st_size for p in (train, out / "eval.tfrecord")}
    assert stats["file_bytes"] == sizes
    config = pretrain.get_config("size=tiny")
    config.data.update(dir=str(out), max_seq_length=64, max_predictions_per_seq=10)
    inputs.resolve_data(config)
    whole = train.read_bytes()
    train.write_bytes(whole[: len(whole) // 2 + 7])
    with pytest.raises(ValueError, match=rf"{train.name} has \d+ bytes, but prepare wrote"):
        inputs.resolve_data(config)
    ds = pipeline.pretraining_dataset(str(train), batch_size=8, max_seq_length=64,
                                      max_predictions_per_seq=10, training=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"A record file of .*train-\* is damaged \(.*truncated"):
        list(pipeline.as_numpy(ds, str(out / "train-*")))
