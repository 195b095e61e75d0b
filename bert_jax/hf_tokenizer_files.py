"""What a Hugging Face directory's tokenizer files say: casing options and, when transformers 5
saved no vocab.txt, the WordPiece vocab held in tokenizer.json."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib


def read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}).") from e


def casing(directory: pathlib.Path, tokenizer_json: dict) -> tuple[bool, bool | None, str]:
    """(lowercase, strip_accents, why): tokenizer_config.json's do_lower_case and strip_accents,
    else tokenizer.json's normalizer, else lowercase guessed from the release's name."""
    config_file = directory / "tokenizer_config.json"
    conf = read_json(config_file) if config_file.is_file() else {}
    norm = tokenizer_json.get("normalizer") or {}
    norm = norm if norm.get("type") == "BertNormalizer" else {}
    # transformers lays tokenizer_config.json's options over tokenizer.json's normalizer.
    if not conf.get("tokenize_chinese_chars", norm.get("handle_chinese_chars", True)):
        raise ValueError(
            f"{directory}: tokenize_chinese_chars is false (CJK characters stay inside words), "
            "but bert_jax's tokenizer always splits them off, as BERT's does, so token ids "
            "would differ from this checkpoint's. If that is acceptable, remove the setting "
            f"from {config_file.name} (and tokenizer.json's handle_chinese_chars)."
        )
    strip_accents = conf.get("strip_accents", norm.get("strip_accents"))
    if "do_lower_case" in conf:
        return bool(conf["do_lower_case"]), strip_accents, f"do_lower_case in {config_file.name}"
    if "lowercase" in norm:
        return bool(norm["lowercase"]), strip_accents, "lowercase in tokenizer.json"
    name = directory.resolve().name.lower()
    if "uncased" in name:
        return True, strip_accents, "'uncased' in the directory name"
    if "cased" in name:
        return False, strip_accents, "'cased' in the directory name"
    return True, strip_accents, "default (no tokenizer_config.json)"


def vocab_from_tokenizer_json(
    directory: pathlib.Path, d: dict, report: dict
) -> pathlib.Path | None:
    """vocab.txt made from tokenizer.json's WordPiece vocab (transformers 5 saves no vocab.txt),
    kept in the sample cache under its hash so that a run's config can name it; None if the
    file holds no BERT WordPiece model."""
    model = d.get("model") or {}
    if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix", "##") != "##":
        if d:
            report["notes"].append("tokenizer.json holds no BERT WordPiece model, so no vocab")
        return None
    by_id = sorted(model["vocab"].items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ValueError(
            f"{directory / 'tokenizer.json'}: the WordPiece ids are not 0..{len(by_id) - 1}, so "
            "they cannot be written as a vocab.txt (id = line number)."
        )
    text = "".join(token + "\n" for token, _ in by_id)
    from bert_jax.data import samples  # noqa: PLC0415

    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    out = samples.cache_root() / "vocab_from_tokenizer_json" / digest / "vocab.txt"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"vocab.txt.{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)  # a concurrent reader sees the whole file or none
    report["notes"].append(f"no vocab.txt: the vocab is tokenizer.json's WordPiece vocab ({out})")
    added = [t["content"] for t in d.get("added_tokens", []) if t["content"] not in model["vocab"]]
    if added:
        report["notes"].append(f"tokenizer.json's added tokens {added[:5]} are not in the vocab")
    return out
