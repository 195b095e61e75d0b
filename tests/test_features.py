"""Feature extraction and the from_pretrained API.

Most tests use a tiny random model with a hand-written vocab (no download). The end-to-end ones
need bert_jax.convert (to read checkpoints) and are skipped, saying why, while it is unusable.
"""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from bert_jax import extract_features as ef
from bert_jax import tokenization
from bert_jax.model import BertConfig, BertModel
from bert_jax.pretrained import BertTokenizer

WORDS = "the dog cat is cute sat on mat hello my and of to in it was".split()
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
VOCAB = [*tokenization.SPECIAL_TOKENS, *".,!?'", *LETTERS, *("##" + c for c in LETTERS), *WORDS]
# Features reach |2.5| here (initializer_range 0.5), and the same token computed in another
# padded shape or batch (another XLA reduction order) differs by up to ~1.2e-5 in float32 (seen
# once in CI); a vector taken from the wrong window differs by more than 1e-2 (checked below).
TOL = 5e-5
DIRECT_LENGTH = 32


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny(vocab_file):
    # initializer_range=0.5 (not 0.02) so that context visibly changes a token's vector and the
    # window tests below would notice a vector taken from the wrong window.
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.5,
    )
    model = BertModel(config)
    ids = np.zeros((1, 8), np.int32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), ids, ids, ids)  # jit: 5x faster
    return BertTokenizer.from_vocab(vocab_file, model_max_length=128), model, variables


@pytest.fixture(scope="module")
def apply(tiny):
    """The reference forward pass: one jitted model.apply on inputs padded to DIRECT_LENGTH."""
    _, model, variables = tiny
    jitted = jax.jit(model.apply)

    def run(enc):
        # One padded shape for every reference call: one compilation, and padding is inert.
        pad = DIRECT_LENGTH - enc["input_ids"].shape[1]
        padded = {k: np.pad(v, ((0, 0), (0, pad))) for k, v in enc.items()}
        return jitted(variables, **padded)

    return run


def _extract(tiny, texts, **kwargs):
    tok, model, variables = tiny  # from_pretrained's order; extract takes the model first
    return ef.extract(model, variables, tok, texts, **kwargs)


TEXTS = ["Hello, my dog is cute", "the cat sat on the mat", "xyz", ""]


def test_layers_equal_hidden_states_of_a_direct_call(tiny, apply):
    tok = tiny[0]
    feats = _extract(tiny, TEXTS, layers=(-1, -2, 0, 3), include_embeddings=True)
    assert len(feats) == len(TEXTS)
    for text, feat in zip(TEXTS, feats, strict=True):
        enc = tok([text])
        out = apply(enc)
        n = int(enc["input_mask"].sum())
        assert feat["tokens"] == tok.convert_ids_to_tokens(enc["input_ids"][0, :n])
        assert feat["tokens"][0] == "[CLS]" and feat["tokens"][-1] == "[SEP]"
        assert set(feat["layers"]) == {-1, -2, 0, 3, "embeddings"}
        hidden = out["hidden_states"]
        for key, index in ((-1, 3), (-2, 2), (0, 0), (3, 3), ("embeddings", 0)):
            assert feat["layers"][key].shape == (n, 32)
            np.testing.assert_allclose(feat["layers"][key], hidden[index][0, :n], atol=TOL)
        np.testing.assert_allclose(feat["pooled_output"], out["pooled_output"][0], atol=TOL)
        assert feat["num_windows"] == 1


def test_padding_and_batching_do_not_change_vectors(tiny):
    text = "the dog sat"
    alone = _extract(tiny, [text], batch_size=1)[0]
    longer = ["hello my cat " * 8, "a dog is on the mat and it was cute " * 3]
    mixed = _extract(tiny, [longer[0], text, longer[1]], batch_size=4, max_seq_length=64)[1]
    assert mixed["tokens"] == alone["tokens"]
    for key, values in alone["layers"].items():
        np.testing.assert_allclose(mixed["layers"][key], values, atol=TOL)
    np.testing.assert_allclose(mixed["pooled_output"], alone["pooled_output"], atol=TOL)


def _reference_spans(n, capacity, stride):
    spans, start = [], 0
    while start < n:
        length = min(n - start, capacity)
        spans.append((start, length))
        if start + length == n:
            break
        start += min(length, stride)
    return spans or [(0, 0)]


def _reference_best(spans, position):
    """SQuAD's _check_is_max_context, as a plain loop."""
    best, best_score = None, None
    for index, (start, length) in enumerate(spans):
        end = start + length - 1
        if not start <= position <= end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best, best_score = index, score
    return best


def test_long_text_is_split_into_windows_and_merged(tiny, apply):
    tok = tiny[0]
    text = "the quick brown fox jumps over the lazy dog and it was cute " * 2
    pieces = tok.tokenize(text)
    max_len, stride = 16, 5
    spans = _reference_spans(len(pieces), max_len - 2, stride)
    assert len(pieces) > 40 and len(spans) > 4
    feat = _extract(tiny, [text], max_seq_length=max_len, doc_stride=stride, layers=(-1,))[0]
    assert feat["tokens"] == ["[CLS]", *pieces, "[SEP]"]
    assert feat["num_windows"] == len(spans)
    assert feat["layers"][-1].shape == (len(pieces) + 2, 32)
    # Each window run on its own: a wordpiece's vector is that of its max-context window.
    ids = tok.convert_tokens_to_ids(pieces)
    per_window = []
    for start, length in spans:
        row = np.array([[tok.cls_id, *ids[start : start + length], tok.sep_id]], np.int32)
        enc = {"input_ids": row, "input_mask": np.ones_like(row), "segment_ids": 0 * row}
        per_window.append(apply(enc)["sequence_output"][0, : row.shape[1]])
    expected = [per_window[0][0]]
    for j in range(len(pieces)):
        w = _reference_best(spans, j)
        expected.append(per_window[w][1 + j - spans[w][0]])
    expected.append(per_window[-1][-1])
    np.testing.assert_allclose(feat["layers"][-1], np.stack(expected), atol=TOL)
    # One window holding the whole text gives other vectors: the windows really were used.
    whole = _extract(tiny, [text], max_seq_length=128, layers=(-1,))[0]
    assert whole["tokens"] == feat["tokens"] and whole["num_windows"] == 1
    assert np.abs(whole["layers"][-1] - feat["layers"][-1]).max() > 1e-2


def test_max_context_window_matches_squad_rule():
    for n, capacity, stride in [(50, 14, 5), (30, 10, 10), (23, 8, 3), (7, 14, 5), (40, 6, 1)]:
        spans = ef.windows(n, capacity, stride)
        assert spans == _reference_spans(n, capacity, stride)
        best = ef.max_context_window(spans, n)
        assert best.tolist() == [_reference_best(spans, j) for j in range(n)]


def test_sentence_pair_is_truncated_not_windowed(tiny, apply):
    first, second = "hello my dog is cute " * 3, "the cat sat on the mat"
    feat = _extract(tiny, [(first, second)], max_seq_length=20, layers=(-1,))[0]
    tok = tiny[0]
    enc = tok([first], [second], max_length=20)
    out = apply(enc)
    assert feat["tokens"] == tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert feat["segment_ids"].tolist() == enc["segment_ids"][0].tolist()
    np.testing.assert_allclose(feat["layers"][-1], out["sequence_output"][0, :20], atol=TOL)


def test_bad_arguments_are_refused_with_the_value(tiny):
    with pytest.raises(ValueError, match="layer 4"):
        _extract(tiny, ["x"], layers=(4,))
    with pytest.raises(ValueError, match="max_seq_length=129"):
        _extract(tiny, ["x"], max_seq_length=129)
    with pytest.raises(ValueError, match="'top'"):
        ef.parse_layers("-1,top")
    assert ef.parse_layers("-1, -2,embeddings") == ([-1, -2], True)


@pytest.mark.parametrize("suffix", [".jsonl", ".npz"])
def test_writers_round_trip(tiny, tmp_path, suffix):
    texts = ["Hello, my dog is cute", ("the cat", "sat on the mat"), ""]
    feats = _extract(tiny, texts, layers=(-1, -4), include_embeddings=True)
    path = tmp_path / f"features{suffix}"
    with ef.FeatureWriter(path) as writer:
        for i, feat in enumerate(feats):
            writer.write(i, feat)
    back = ef.read_features(path)
    atol = 1e-6 if suffix == ".jsonl" else 0  # JSONL keeps 6 decimals, as the original
    assert len(back) == len(feats)
    for got, want in zip(back, feats, strict=True):
        assert got["tokens"] == want["tokens"]
        assert got["segment_ids"].tolist() == want["segment_ids"].tolist()
        assert list(got["layers"]) == list(want["layers"])
        for key in want["layers"]:
            np.testing.assert_allclose(got["layers"][key], want["layers"][key], atol=atol)
        np.testing.assert_allclose(got["pooled_output"], want["pooled_output"], atol=atol)
    if suffix == ".jsonl":
        first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        assert first["linex_index"] == 0
        assert first["features"][0]["token"] == "[CLS]"
        assert [d["index"] for d in first["features"][0]["layers"]] == [-1, -4, "embeddings"]


def test_failed_write_leaves_no_output(tmp_path):
    path = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), ef.FeatureWriter(path):
        raise RuntimeError("boom")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_read_texts_keeps_lines_and_pairs(tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("one text\n\nfirst ||| second\n", encoding="utf-8")
    assert ef.read_texts(path) == ["one text", "", ("first", "second")]


def test_read_texts_splits_lines_and_pairs_as_the_original(tmp_path):
    # Lines end only at "\n" (a Windows "\r" is stripped); the pair rule is the original's
    # re.match(r"^(.*) \|\|\| (.*)$"): greedy, and only with the spaces.
    odd = "a\u2028b\x0cc\x85d\x1ce\x1df\x1eg"  # str.splitlines breaks at each of these
    lines = [odd, "A|||B", "x ||| y ||| z", "  p ||| q  ", "", "last"]
    path = tmp_path / "in.txt"
    path.write_bytes("\r\n".join(lines).encode("utf-8"))
    assert ef.read_texts(path) == [odd, "A|||B", ("x ||| y", "z"), ("p", "q"), "", "last"]


def test_importing_defines_no_flags():
    code = (
        "from absl import flags; import bert_jax.extract_features, bert_jax.pretrained; "
        "assert 'checkpoint' not in flags.FLAGS, 'flags defined at import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- End to end through bert_jax.convert (checkpoint directories) -----------------------------


def _require_convert():
    """Skips, saying why, while bert_jax.convert (written separately) cannot load checkpoints."""
    try:
        from bert_jax import convert

        return convert.load_pretrained
    except (ImportError, AttributeError) as e:
        pytest.skip(f"bert_jax.convert.load_pretrained is not usable yet: {type(e).__name__}: {e}")


def _hf_hidden_states(hf_model, enc):
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        out = hf_model(
            input_ids=torch.tensor(enc["input_ids"], dtype=torch.long),
            attention_mask=torch.tensor(enc["input_mask"], dtype=torch.long),
            token_type_ids=torch.tensor(enc["segment_ids"], dtype=torch.long),
            output_hidden_states=True,
        )
    return [h.numpy() for h in out.hidden_states], out.pooler_output.numpy()


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory, vocab_file):
    """A tiny random transformers.BertModel saved as a Hugging Face directory."""
    _require_convert()
    transformers = pytest.importorskip("transformers", reason="transformers is test-only")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.2,
    )
    model = transformers.BertModel(config).eval()
    path = tmp_path_factory.mktemp("tiny_hf")
    model.save_pretrained(path)
    (path / "vocab.txt").write_bytes(vocab_file.read_bytes())
    (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return path, model


def test_cli_writes_features_of_a_hf_checkpoint(tiny_hf_dir, tmp_path):
    path, hf_model = tiny_hf_dir
    long_text = "the cat sat on the mat and it was cute " * 4
    lines = ["Hello, my dog is cute", "", "the dog ||| sat on my mat", long_text]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    cmd = [
        sys.executable, "-m", "bert_jax.extract_features", f"--checkpoint={path}",
        f"--input_file={tmp_path / 'in.txt'}", f"--output_file={out}",
        "--layers=-1,-2,embeddings", "--max_seq_length=16", "--doc_stride=6", "--batch_size=4",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    feats = ef.read_features(out)
    assert summary["texts"] == len(feats) == 4 and summary["windows"] > 4
    assert [json.loads(x)["linex_index"] for x in out.read_text().splitlines()] == [0, 1, 2, 3]
    assert feats[1]["tokens"] == ["[CLS]", "[SEP]"]
    assert feats[2]["segment_ids"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    tok = BertTokenizer.from_vocab(path / "vocab.txt")
    assert feats[3]["tokens"] == ["[CLS]", *tok.tokenize(long_text), "[SEP]"]
    # Short texts fit one window: the vectors are transformers' own hidden states.
    for i, (a, b) in ((0, (lines[0], None)), (2, ("the dog", "sat on my mat"))):
        enc = tok([a], None if b is None else [b])
        hidden, pooled = _hf_hidden_states(hf_model, enc)
        np.testing.assert_allclose(feats[i]["layers"][-1], hidden[-1][0], atol=1e-5)
        np.testing.assert_allclose(feats[i]["layers"][-2], hidden[-2][0], atol=1e-5)
        np.testing.assert_allclose(feats[i]["layers"]["embeddings"], hidden[0][0], atol=1e-5)
        np.testing.assert_allclose(feats[i]["pooled_output"], pooled[0], atol=1e-5)
    # The .npz writer, in process, holds the same features (JSONL keeps 6 decimals).
    npz = tmp_path / "out.npz"
    ef.run(
        str(path), str(tmp_path / "in.txt"), str(npz), layers="-1,-2,embeddings",
        max_seq_length=16, doc_stride=6, batch_size=4,
    )  # fmt: skip
    for got, want in zip(ef.read_features(npz), feats, strict=True):
        assert got["tokens"] == want["tokens"]
        for key, values in want["layers"].items():
            np.testing.assert_allclose(got["layers"][key], values, atol=1e-6)


def _real_sentences(n):
    try:
        from bert_jax.data import corpus, samples

        docs = corpus.read_lines_as_documents(samples.fetch("lee_background"), "latin-1")
    except RuntimeError as e:
        pytest.skip(f"sample 'lee_background' could not be fetched: {e}")
    return [doc[0] for doc in docs[:n]]


@pytest.fixture(scope="module")
def minilm():
    _require_convert()
    transformers = pytest.importorskip("transformers", reason="transformers is test-only")
    from bert_jax.data import samples

    try:
        path = samples.fetch("minilm")
    except RuntimeError as e:
        pytest.skip(f"sample 'minilm' could not be fetched: {e}")
    return path, transformers.BertModel.from_pretrained(str(path)).eval()


def test_from_pretrained_snippet_matches_transformers_on_minilm(minilm):
    import bert_jax

    path, hf_model = minilm
    tok, model, params = bert_jax.from_pretrained(path)
    texts = ["Hello, my dog is cute", *_real_sentences(15)]
    out = model.apply(params, **tok(texts))  # the README snippet, on a batch of real text
    assert out["sequence_output"].shape[::2] == (16, 384)
    assert len(out["hidden_states"]) == 7 and out["pooled_output"].shape == (16, 384)

    enc = tok(texts)
    hidden, pooled = _hf_hidden_states(hf_model, enc)
    real = enc["input_mask"][..., None] == 1  # padded positions are not compared
    for ours, theirs in zip(out["hidden_states"], hidden, strict=True):
        assert np.abs(np.where(real, np.asarray(ours) - theirs, 0)).max() < 1e-4
    np.testing.assert_allclose(out["pooled_output"], pooled, atol=1e-4)

    # extract() on the same sentences: each text's vectors are transformers' hidden states.
    feats = ef.extract(model, params, tok, texts, layers=(-1, -2, -3, -4), include_embeddings=True)
    for i, feat in enumerate(feats):
        n = int(enc["input_mask"][i].sum())
        for key, index in ((-1, 6), (-4, 3), ("embeddings", 0)):
            np.testing.assert_allclose(feat["layers"][key], hidden[index][i, :n], atol=1e-4)
        np.testing.assert_allclose(feat["pooled_output"], pooled[i], atol=1e-4)


def test_from_pretrained_without_pooler_warns_and_keeps_the_encoder(tiny_hf_dir, tmp_path):
    """HF token-classification saves have no pooler: the encoder still loads exactly."""
    import bert_jax

    transformers = pytest.importorskip("transformers", reason="transformers is test-only")
    path, hf_model = tiny_hf_dir
    tagger = transformers.BertForTokenClassification(hf_model.config).eval()
    tagger.bert.load_state_dict(hf_model.state_dict(), strict=False)
    tagger.save_pretrained(tmp_path)
    for name in ("vocab.txt", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    with pytest.warns(UserWarning, match="no pooler"):
        tok, model, params = bert_jax.from_pretrained(tmp_path)
    enc = tok(["Hello, my dog is cute", "the cat"])
    out = model.apply(params, **enc)
    hidden, _ = _hf_hidden_states(hf_model, enc)
    real = enc["input_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(out["sequence_output"])[real], hidden[-1][real],
                               atol=1e-5)  # fmt: skip
