"""Our BERT tokenizer gives exactly the ids of Hugging Face's on thousands of real sentences.

References (transformers is a test-only dependency):
- `BertTokenizerFast` (the Rust `tokenizers` pipeline; in transformers 5 it is `BertTokenizer`);
- the pure-Python `BasicTokenizer` + `WordpieceTokenizer` (`BertTokenizerLegacy` in transformers
  5, `BertTokenizer` in 4.x), a line-by-line port of Google's tokenization.py: the reference for
  basic tokenization and for the original pair truncation.
"""

import re
import shutil

import pytest

from bert_jax.data import corpus, samples
from bert_jax.pretrained import BertTokenizer, truncated_lengths

transformers = pytest.importorskip("transformers", reason="transformers is a test-only extra")

MIN_ENGLISH = 2000
MIN_CHINESE = 500
PAIR_MAX_LENGTH = 32  # short, so most real sentence pairs get truncated


def _fetch(name):
    try:
        return samples.fetch(name)
    except RuntimeError as e:
        pytest.skip(f"sample {name!r} could not be fetched: {e}")


def _python_reference_class():
    """The pure-Python BERT tokenizer class of the installed transformers (4.x or 5.x)."""
    try:  # transformers 5 moved the Python tokenizer to `*_legacy`
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

        return BertTokenizerLegacy
    except ImportError:
        from transformers.models.bert.tokenization_bert import BertTokenizer as Slow

        return Slow


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    vocab = _fetch("minilm") / "vocab.txt"
    # A folder holding only vocab.txt, so HF builds its tokenizer from the vocab alone, not from
    # the model's tokenizer.json. (transformers 5's `BertTokenizerFast(vocab_file=...)` ignores
    # the file silently and gives [UNK] for every word, hence from_pretrained.)
    only_vocab = tmp_path_factory.mktemp("vocab_only")
    shutil.copy(vocab, only_vocab / "vocab.txt")
    fast = transformers.BertTokenizerFast.from_pretrained(str(only_vocab), do_lower_case=True)
    slow = _python_reference_class()(str(vocab), do_lower_case=True)
    return BertTokenizer.from_vocab(vocab, lowercase=True), fast, slow


@pytest.fixture(scope="module")
def english():
    docs = corpus.read_wikipedia_xml(_fetch("enwiki"))
    sentences = [s for d in docs for s in d]
    assert len(sentences) >= MIN_ENGLISH, len(sentences)
    return sentences


def _strip_pos_tags(line: str) -> str:
    # "[中央/n  人民/n  广播/vn  电台/n]nt" -> "中央人民广播电台": words joined as running text.
    return "".join(w.rsplit("/", 1)[0].lstrip("[") for w in line.split())


@pytest.fixture(scope="module")
def chinese():
    with open(_fetch("peoples_daily"), encoding="utf-8") as f:
        news = [_strip_pos_tags(line) for line in f if line.strip()]
    reviews = []
    for name in ("chnsenti_pos", "chnsenti_neg"):
        with open(_fetch(name), encoding="utf-8") as f:
            reviews += [line.strip() for line in f if line.strip()][:1000]
    texts = [t for t in news[:2000] if t] + reviews
    assert len(texts) >= MIN_CHINESE, len(texts)
    assert re.search(r"[\u4e00-\u9fff]", texts[0]), texts[0]
    return texts


def _mismatches(ours, theirs, texts):
    return [(t, a, b) for t, a, b in zip(texts, ours, theirs, strict=True) if a != b]


def _check_singles(tokenizers, texts):
    ours_tok, fast, slow = tokenizers
    ours = [row[m == 1].tolist() for row, m in _ids_and_mask(ours_tok, texts)]
    for name, ref in (("BertTokenizerFast", fast), ("Python BertTokenizer", slow)):
        theirs = ref(texts, truncation=True, max_length=512)["input_ids"]
        bad = _mismatches(ours, theirs, texts)
        assert not bad, f"{len(bad)}/{len(texts)} differ from {name}; first: {bad[:2]}"


def _ids_and_mask(tok, texts, chunk=512):
    for i in range(0, len(texts), chunk):
        enc = tok(texts[i : i + chunk], max_length=512)
        yield from zip(enc["input_ids"], enc["input_mask"], strict=True)


def test_english_wikipedia_sentences_match(tokenizers, english):
    _check_singles(tokenizers, english)


def test_chinese_news_and_reviews_match(tokenizers, chinese):
    _check_singles(tokenizers, chinese)


# Hand-picked edge cases of BERT's basic tokenizer: accents (composed and decomposed), control
# and format characters, CJK ideographs outside the basic block, fullwidth forms, other scripts.
TRICKY = [
    "Crème brûlée, naïve façade, Ångström, Straße",
    "cafe\u0301 e\u0300 A\u030a",  # decomposed accents
    "tab\there\u00a0nbsp\u200bzero-width\u200dzwj\ufeffbom\x07bell\x00nul",
    "\U00020000\U0002a700\U0002b740 \u3400\uf900\u2f800 \u4e00\u9fff",  # CJK extensions
    "ＦＵＬＬＷＩＤＴＨ １２３ 。，！",
    "Ελληνικά русский العربية हिन्दी 한국어 ひらがな カタカナ",
    "emoji 😀👍🏽 and symbols ™ © ° ± § ¶ … — – «quotes»",
    "x" * 101 + " " + "y" * 100,
    "",
    "   ",
]


def test_tricky_strings_match(tokenizers):
    _check_singles(tokenizers, TRICKY)


def test_sentence_pairs_truncate_the_bert_way(tokenizers, english):
    """Consecutive Wikipedia sentences as pairs, cut to 32 tokens, longest side first.

    The Python reference pops from the longer side and from the second on a tie, as Google's
    `_truncate_seq_pair` does: ids must be equal. The Rust tokenizer gives the first side the
    smaller half when both sides are long (it splits the odd token the other way), so against it
    only that one-token shift is allowed.
    """
    ours_tok, fast, slow = tokenizers
    a, b = english[0:2000:2], english[1:2000:2]
    enc = ours_tok(a, b, max_length=PAIR_MAX_LENGTH)
    ids = {"return_token_type_ids": True}
    truncated = 0
    for i, (first, second) in enumerate(zip(a, b, strict=True)):
        mask = enc["input_mask"][i] == 1
        ours = enc["input_ids"][i][mask].tolist()
        ours_seg = enc["segment_ids"][i][mask].tolist()
        ref = slow(first, second, truncation="longest_first", max_length=PAIR_MAX_LENGTH, **ids)
        assert (ours, ours_seg) == (ref["input_ids"], ref["token_type_ids"]), (first, second)
        rust = fast(first, second, truncation="longest_first", max_length=PAIR_MAX_LENGTH, **ids)
        if rust["input_ids"] != ours:
            len_a, len_b = ours_seg.count(0) - 2, ours_seg.count(1) - 1
            rust_a = rust["token_type_ids"].count(0) - 2
            assert rust_a == len_a - 1 and len(rust["input_ids"]) == len(ours), (first, second)
            assert ours[1 : 1 + rust_a] == rust["input_ids"][1 : 1 + rust_a]
            assert len_b >= 1
        truncated += len(ours) == PAIR_MAX_LENGTH
    assert truncated > 500  # the test really exercises truncation


@pytest.mark.parametrize(
    ("len_a", "len_b", "budget"),
    [(10, 3, 5), (3, 10, 5), (6, 6, 5), (7, 6, 5), (6, 7, 5), (2, 2, 10), (0, 9, 4), (9, 0, 4)],
)
def test_truncated_lengths_equal_the_original_loop(len_a, len_b, budget):
    a, b = len_a, len_b
    while a + b > budget:  # Google's _truncate_seq_pair, verbatim in spirit
        if a > b:
            a -= 1
        else:
            b -= 1
    assert truncated_lengths(len_a, len_b, budget) == (a, b)


def test_tokenizer_api(tokenizers):
    tok = tokenizers[0]
    enc = tok(["Hello, my dog is cute", "Hi"], padding="max_length", max_length=12)
    assert set(enc) == {"input_ids", "input_mask", "segment_ids"}
    assert enc["input_ids"].shape == (2, 12) and enc["input_ids"].dtype.name == "int32"
    assert tok.convert_ids_to_tokens(enc["input_ids"][1][:3]) == ["[CLS]", "hi", "[SEP]"]
    assert tok.decode(enc["input_ids"][0]) == "hello, my dog is cute"
    assert tok.tokenize("unaffable") == ["una", "##ffa", "##ble"]
    with_offsets = tok("Hello, dog", "cute", return_offsets=True)
    assert with_offsets["offsets"][0][:4].tolist() == [[0, 0], [0, 5], [5, 6], [7, 10]]
    assert with_offsets["word_ids"][0].tolist() == [-1, 0, 1, 2, -1, 0, -1]
    assert with_offsets["segment_ids"][0].tolist() == [0, 0, 0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="max_length=8"):
        tok("one two three four five six seven", max_length=8, truncation=False)
    with pytest.raises(ValueError, match="padding='left'"):
        tok("x", padding="left")
