"""Corpora as TFDS datasets: a versioned builder for local corpora, and public TFDS text datasets.

Build a local corpus (text format, MediaWiki XML dump, or JSON Lines with a "text" field) into a
TFDS dataset of documents, then prepare pre-training data from it:

    python -m bert_jax.data.tfds_build --corpus=sample:enwiki --name=enwiki --data_dir=~/tfds
    TFDS_DATA_DIR=~/tfds python -m bert_jax.data.prepare \\
        --corpus=tfds:bert_text_corpus/enwiki --output_dir=data/enwiki_128

A public dataset is named the same way (`--corpus=tfds:wikipedia/20230601.en`): read from
data_dir when it is already there, else downloaded and prepared by TFDS -- which needs the
network, so a short reachability check runs first and an offline machine gets a clear error in
seconds instead of minutes of retries.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from bert_jax.data import corpus as corpus_lib

BUILDER_NAME = "bert_text_corpus"
_PROBE_URL = "https://storage.googleapis.com/tfds-data/"  # TFDS' own bucket
_PROBE_TIMEOUT_S = 5.0
# Written next to the TFDS files of a built dataset: the corpus it was built from.
_SOURCE_FILE = "corpus_source.json"


class CorpusConfig(tfds.core.BuilderConfig):
    """One local corpus: `path` is any corpus spec `corpus.read_documents` accepts."""

    def __init__(self, *, path: str = "", **kwargs):
        super().__init__(**kwargs)
        self.path = path


class BertTextCorpus(tfds.core.GeneratorBasedBuilder):
    """Documents of a local corpus: `text` holds the document's sentences, one per line."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Documents of sentences from text, Wikipedia XML or JSON Lines."}
    # Configs are made per corpus by `build`; none is predefined.
    BUILDER_CONFIGS: list[CorpusConfig] = []

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="A local corpus as documents, for BERT pre-training data.",
            # Corpus order is kept (eval documents are the last ones, as in `prepare`).
            disable_shuffling=True,
            features=tfds.features.FeaturesDict(
                {"id": tfds.features.Scalar(dtype=np.int64), "text": tfds.features.Text()}
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # a local corpus: nothing to download
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, doc in enumerate(corpus_lib.iter_corpus(self.builder_config.path)):
            yield i, {"id": i, "text": "\n".join(" ".join(s.split()) for s in doc)}


def build(corpus: str, name: str, data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
    """Builds (once) the TFDS dataset `bert_text_corpus/<name>` of a local corpus.

    TFDS knows a dataset by name and version only, so the corpus it was built from is recorded
    next to it: building the same name again reuses it if the corpus is the same, and raises a
    ValueError if not (instead of quietly returning the other corpus' documents).
    """
    corpus = os.fspath(corpus)
    config = CorpusConfig(name=name, path=corpus, description=f"Corpus {corpus}")
    builder = BertTextCorpus(config=config, data_dir=os.fspath(data_dir))
    record = pathlib.Path(builder.data_dir) / _SOURCE_FILE
    source = _source(corpus)
    if record.parent.exists():  # as download_and_prepare decides that it has nothing to do
        _check_source(record, source)
        return builder
    if "path" in source:
        source["sha256"] = _sha256(source["path"])
    builder.download_and_prepare()
    record.write_text(json.dumps(source, indent=1) + "\n")
    return builder


def _source(corpus: str) -> dict:
    """The file a build reads (for a sample its cached text conversion), its size and mtime."""
    kind = corpus_lib.corpus_format(corpus)
    if kind == "tfds":
        return {"corpus": corpus}  # another TFDS dataset: known by its name only
    if kind == "sample":
        path = corpus_lib.sample_text_file(corpus[len("sample:") :]).resolve()
    else:
        path = pathlib.Path(corpus).resolve()
    stat = path.stat()
    return {"corpus": corpus, "path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _same_source(built: dict, source: dict) -> bool:
    if "sha256" not in built or "path" not in source:
        return built["corpus"] == source["corpus"]
    # An unchanged path, size and mtime means the same file (as for make and rsync): reuse stays
    # instant, where hashing a Wikipedia dump of tens of GB would take half a minute.
    if all(built[k] == source[k] for k in ("path", "size", "mtime_ns")):
        return True
    source["sha256"] = _sha256(source["path"])  # moved, copied or touched: compare contents
    return source["sha256"] == built["sha256"]


def _describe(source: dict) -> str:
    if "sha256" not in source:
        return repr(source["corpus"])
    return (
        f"{source['corpus']!r} ({source['path']}, {source['size']:,} bytes, "
        f"sha256 {source['sha256'][:12]}...)"
    )


def _check_source(record: pathlib.Path, source: dict) -> None:
    """Raises if the dataset in `record`'s directory was built from another corpus."""
    if not record.exists():
        logging.warning(
            "Reusing TFDS dataset %s, built without a record of its corpus (by an older "
            "bert_jax): that it holds %r cannot be checked. Delete it to rebuild it.",
            record.parent, source["corpus"],
        )  # fmt: skip
        return
    built = json.loads(record.read_text())
    if not _same_source(built, source):
        raise ValueError(
            f"TFDS dataset {record.parent} was built from {_describe(built)}, not from "
            f"{_describe(source)}, and TFDS would return its old documents. Build under "
            f"another name, or delete {record.parent} to rebuild it from the new corpus."
        )


def reachability_problem(url: str | None = None, timeout: float | None = None) -> str | None:
    """None if `url` answers within `timeout` seconds (any HTTP status), else the reason.

    Runs in a thread so that a hanging DNS lookup cannot exceed the timeout either; urllib
    honours the usual proxy variables.
    """
    url, timeout = url or _PROBE_URL, timeout or _PROBE_TIMEOUT_S
    result: list[str | None] = [f"no answer from {url} within {timeout:g} s: timed out"]

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
            result[0] = None
        except urllib.error.HTTPError:
            result[0] = None  # the server answered
        except (OSError, ValueError) as e:
            result[0] = f"{type(e).__name__}: {e}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return result[0]


def _builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")  # read now, not at import
    data_dir = os.path.expanduser(data_dir) if data_dir else None
    dataset, _, config = name.partition("/")
    if dataset == BUILDER_NAME:
        # Our configs are not predefined, so find the prepared dataset on disk.
        root = pathlib.Path(data_dir or tfds.core.constants.DATA_DIR) / name
        versions = sorted(root.glob("*.*.*"), key=lambda p: tfds.core.Version(p.name))
        if not versions:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not in {root.parent.parent}; build it first with "
                f"`python -m bert_jax.data.tfds_build --corpus=<file> --name={config}"
                f" --data_dir={root.parent.parent}` (or set TFDS_DATA_DIR / data_dir)."
            )
        return tfds.builder_from_directory(os.fspath(versions[-1]))
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"{name!r} is not a TFDS dataset name ({e}).") from e
    if builder.is_prepared():
        return builder
    problem = reachability_problem()
    if problem:
        raise ConnectionError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir} and the network is "
            f"unreachable ({problem}). On a machine with internet run `tfds build {name} "
            f"--data_dir=<dir>` and copy <dir> here (set TFDS_DATA_DIR or data_dir), or build "
            "a local corpus with `python -m bert_jax.data.tfds_build`."
        )
    # Prepared copies of public datasets usually sit on GCS: use them rather than rebuilding.
    builder = tfds.builder(name, data_dir=data_dir, try_gcs=True)
    if not builder.is_prepared():
        builder.download_and_prepare()
    return builder


def iter_tfds_documents(
    spec: str,
    data_dir: str | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
) -> Iterator[list[str]]:
    """Documents of a TFDS text dataset, `name[:split]` (split default "train").

    Our own datasets hold one sentence per line; public ones (e.g. wikipedia) paragraphs, which
    are split into sentences. `shard_index`/`num_shards` read an even part of the split (one per
    host in multi-host runs; see also tfds.split_for_jax_process).
    """
    name, _, split = spec.partition(":")
    builder = _builder(name, data_dir)
    split = split or "train"
    if num_shards > 1:
        split = tfds.even_splits(split, n=num_shards)[shard_index]
    ours = builder.name == BUILDER_NAME
    for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
        text = example["text"].decode("utf-8", "ignore")
        if ours:
            doc = [line for line in text.split("\n") if line]
        else:
            doc = [s for p in text.split("\n") for s in corpus_lib.split_sentences(p)]
        if doc:
            yield doc
