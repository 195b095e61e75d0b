"""bert-jax: BERT pre-training and fine-tuning in JAX/Flax."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the import waits for first use
    from bert_jax.pretrained import from_pretrained

__all__ = ["from_pretrained"]


def __getattr__(name: str):
    # Lazy (PEP 562) so that `import bert_jax` stays light: no JAX or tokenizers until needed.
    if name == "from_pretrained":
        from bert_jax.pretrained import from_pretrained

        return from_pretrained
    raise AttributeError(f"module 'bert_jax' has no attribute {name!r}")
