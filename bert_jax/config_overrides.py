"""Checks `--config.a.b=value` overrides against the config before absl parses them.

A misspelt field, or a field in the wrong section (`train.learning_rate` for
`optimizer.learning_rate`), is one line naming the fix instead of ml_collections' traceback.
"""

from __future__ import annotations

import difflib
import importlib.util
import sys
from collections.abc import Sequence

import ml_collections


def load(spec: str) -> ml_collections.ConfigDict:
    """The config of `--config=path.py:arg`, built as config_flags builds it."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_bert_jax_config", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"--config={spec}: {path!r} is not a Python config file.")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def _fields(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        out.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            out.extend(_fields(value, f"{prefix}{key}."))
    return out


def _suggest(path: str, fields: list[str]) -> str:
    section, _, leaf = path.rpartition(".")
    by_leaf: dict[str, list[str]] = {}
    for f in fields:
        by_leaf.setdefault(f.rpartition(".")[2], []).append(f)
    # The right name in another section first, then a misspelt name (its own section first).
    close = by_leaf.get(leaf) or [
        f
        for name in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.75)
        for f in sorted(by_leaf[name], key=lambda f: f.rpartition(".")[0] != section)
    ]
    return " or ".join(f"--config.{f}" for f in close[:3])


def unknown_override(argv: Sequence[str]) -> str | None:
    """An error message for the first `--config.<field>` that the config lacks, else None."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    names = [
        a.split("=", 1)[0].split(".", 1)[1]
        for a in argv
        if a.startswith(("--config.", "--noconfig."))
    ]
    if spec is None:
        return None
    fields = set(_fields(load(spec)))  # a bad config string raises here
    for name in names:
        if name == "model.size":  # it only records the argument that set the sizes
            return (
                "--config.model.size: the size is the config argument "
                f"(--config={spec.partition(':')[0]}:size=base); model.size only records it. "
                "For other sizes override model.num_hidden_layers, model.hidden_size, ..."
            )
        if name not in fields:
            hint = _suggest(name, sorted(fields))
            return (
                f"--config.{name}: no such field in {spec}."
                + (f" Did you mean {hint}?" if hint else "")
                + " The fields and their comments are in the config file."
            )
    return None


def exit_on_error(argv: Sequence[str]) -> None:
    """Exits with status 2 and one line on stderr for a bad config argument or override."""
    try:
        message = unknown_override(argv)
    except (ValueError, OSError) as e:  # an unknown key in the config string, a missing file
        message = str(e)
    if message:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
