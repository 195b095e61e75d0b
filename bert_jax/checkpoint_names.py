"""The naming table: every BERT tensor under our name, its Hugging Face name and its original
Google TF name, with the layout change between them; and the config files' fields. Checkpoint
conversion is this table.

Layout rules the table encodes:
- Dense: our kernel is [in, out] like TF's; HF (torch.nn.Linear) stores `weight` as [out, in].
- LayerNorm: ours `scale`/`bias`, HF `weight`/`bias` (old saves: `gamma`/`beta`), TF `gamma`/`beta`.
- Embeddings: [rows, H] everywhere; ours ends in `/embedding`, HF in `.weight`, TF in nothing.
- NSP `output_weights` is [2, H] in all three; the TF classifier and SQuAD heads store theirs
  as [labels, H] too, i.e. transposed relative to our `classifier`/`qa_outputs` kernels.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable

import numpy as np

from bert_jax.model import BertConfig

# Shape symbols -> the config field that sizes them ("L" comes from the classifier's bias).
SYMBOLS = {
    "V": "vocab_size",
    "H": "hidden_size",
    "F": "intermediate_size",
    "P": "max_position_embeddings",
    "T": "type_vocab_size",
    "L": "num_labels",
}


@dataclasses.dataclass(frozen=True)
class Name:
    """One tensor: our `/`-joined param path, HF state-dict key, original TF variable name."""

    ours: str
    hf: str
    tf: str
    shape: tuple[str, ...]  # our layout, in SYMBOLS (or a literal number)
    part: str  # encoder | pooler | masked_lm | next_sentence | classifier | qa
    hf_transposed: bool = False  # the HF tensor is ours.T
    tf_transposed: bool = False  # the TF tensor is ours.T


def _embedding(scope: str, hf_scope: str, rows: str) -> list[Name]:
    return [Name(f"{scope}/embedding", f"{hf_scope}.weight", scope, (rows, "H"), "encoder")]


def _dense(scope: str, hf_scope: str, n_in: str, n_out: str, part: str = "encoder") -> list[Name]:
    # Our dense and LayerNorm scopes are the TF scopes (model.py mirrors the original names).
    return [
        Name(f"{scope}/kernel", f"{hf_scope}.weight", f"{scope}/kernel", (n_in, n_out), part, True),
        Name(f"{scope}/bias", f"{hf_scope}.bias", f"{scope}/bias", (n_out,), part),
    ]


def _norm(scope: str, hf_scope: str, part: str = "encoder") -> list[Name]:
    return [
        Name(f"{scope}/scale", f"{hf_scope}.weight", f"{scope}/gamma", ("H",), part),
        Name(f"{scope}/bias", f"{hf_scope}.bias", f"{scope}/beta", ("H",), part),
    ]


def naming_table(config: BertConfig) -> list[Name]:
    """Every tensor a BERT checkpoint may hold; the layer rows repeat for each layer."""
    e, he = "bert/embeddings", "bert.embeddings"
    rows = [
        *_embedding(f"{e}/word_embeddings", f"{he}.word_embeddings", "V"),
        *_embedding(f"{e}/token_type_embeddings", f"{he}.token_type_embeddings", "T"),
        *_norm(f"{e}/LayerNorm", f"{he}.LayerNorm"),
    ]
    if config.position_embedding_type == "learned":  # sinusoidal positions are not parameters
        rows += _embedding(f"{e}/position_embeddings", f"{he}.position_embeddings", "P")
    for i in range(config.num_hidden_layers):
        o, h = f"bert/encoder/layer_{i}", f"bert.encoder.layer.{i}"
        rows += [
            *_dense(f"{o}/attention/self/query", f"{h}.attention.self.query", "H", "H"),
            *_dense(f"{o}/attention/self/key", f"{h}.attention.self.key", "H", "H"),
            *_dense(f"{o}/attention/self/value", f"{h}.attention.self.value", "H", "H"),
            *_dense(f"{o}/attention/output/dense", f"{h}.attention.output.dense", "H", "H"),
            *_norm(f"{o}/attention/output/LayerNorm", f"{h}.attention.output.LayerNorm"),
            *_dense(f"{o}/intermediate/dense", f"{h}.intermediate.dense", "H", "F"),
            *_dense(f"{o}/output/dense", f"{h}.output.dense", "F", "H"),
            *_norm(f"{o}/output/LayerNorm", f"{h}.output.LayerNorm"),
        ]
    p, hp = "cls/predictions", "cls.predictions"
    s, hs = "cls/seq_relationship", "cls.seq_relationship"
    rows += [
        *_dense("bert/pooler/dense", "bert.pooler.dense", "H", "H", "pooler"),
        *_dense(f"{p}/transform/dense", f"{hp}.transform.dense", "H", "H", "masked_lm"),
        *_norm(f"{p}/transform/LayerNorm", f"{hp}.transform.LayerNorm", "masked_lm"),
        Name(f"{p}/output_bias", f"{hp}.bias", f"{p}/output_bias", ("V",), "masked_lm"),
        Name(
            f"{s}/output_weights",
            f"{hs}.weight",
            f"{s}/output_weights",
            ("2", "H"),
            "next_sentence",
        ),
        Name(f"{s}/output_bias", f"{hs}.bias", f"{s}/output_bias", ("2",), "next_sentence"),
        # run_classifier.py keeps its head at the top level: output_weights is [num_labels, H].
        Name(
            "classifier/kernel",
            "classifier.weight",
            "output_weights",
            ("H", "L"),
            "classifier",
            hf_transposed=True,
            tf_transposed=True,
        ),
        Name("classifier/bias", "classifier.bias", "output_bias", ("L",), "classifier"),
        # run_squad.py: cls/squad/output_weights is [2, H] (start, end).
        Name(
            "qa_outputs/kernel",
            "qa_outputs.weight",
            "cls/squad/output_weights",
            ("H", "2"),
            "qa",
            hf_transposed=True,
            tf_transposed=True,
        ),
        Name("qa_outputs/bias", "qa_outputs.bias", "cls/squad/output_bias", ("2",), "qa"),
    ]
    return rows


# HF tensors that are not separate weights of ours.
HF_BUFFERS = {
    "bert.embeddings.position_ids": "buffer of position indices 0..P-1, not a weight",
    "bert.embeddings.token_type_ids": "buffer of zeros, not a weight",
}
# The MLM decoder of HF is tied: its weight is the word embeddings, its bias cls.predictions.bias.
HF_TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
_HF_BARE = ("embeddings.", "encoder.", "pooler.")  # a BertModel saved alone has no "bert." prefix

# TF variables that training adds next to the weights: optimizer slots and bookkeeping.
_TF_SLOTS = {"adam_m", "adam_v", "Adam", "Adam_1", "LAMB", "LAMB_1", "Momentum"}
_TF_BOOKKEEPING = {
    "global_step",
    "beta1_power",
    "beta2_power",
    "loss_scale",
    "current_loss_scale",
    "good_steps",
    "bad_steps",
    "_CHECKPOINTABLE_OBJECT_GRAPH",
}


def tf_skip_reason(name: str) -> str | None:
    """Why a TF variable is skipped (an optimizer slot, a step counter), or None to map it."""
    last = name.rsplit("/", 1)[-1]
    if name in _TF_BOOKKEEPING or last in _TF_BOOKKEEPING:
        return "training bookkeeping, not a weight"
    if last in _TF_SLOTS:
        return f"optimizer slot ({last})"
    return None


def _normalise_hf(tensors: dict[str, np.ndarray], source: str) -> tuple[dict, list[str], Callable]:
    """Adds the `bert.` prefix to a bare BertModel's keys and renames old LayerNorm gamma/beta.

    Also returns `shown(name)`: a unified name as the file spells it, for reports and errors.
    """
    notes = []
    bare = any(k.startswith(_HF_BARE) for k in tensors)
    if bare and any(k.startswith("bert.") for k in tensors):
        raise ValueError(f"{source}: mixes keys with and without the 'bert.' prefix.")
    if bare:
        notes.append("encoder keys have no 'bert.' prefix (a BertModel save)")
    out, original = {}, {}
    for key, v in tensors.items():
        name = "bert." + key if bare and key.startswith(_HF_BARE) else key
        name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
        name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
        if name in out:
            raise ValueError(f"{source}: {key!r} duplicates another tensor once names are unified.")
        out[name], original[name] = v, key

    def shown(name: str) -> str:
        if name in original:
            return original[name]
        return name.removeprefix("bert.") if bare and name.startswith("bert.") else name

    return out, notes, shown


def _unknown_message(unknown: list[str], config: BertConfig, source: str) -> str:
    msg = f"{source}: {len(unknown)} tensors are not in the naming table: {unknown[:8]}"
    layers = [int(m.group(1)) for k in unknown if (m := re.search(r"layer[._](\d+)[./]", k))]
    if layers and max(layers) >= config.num_hidden_layers:
        msg += (
            f". The file has layer {max(layers)} but the config says num_hidden_layers="
            f"{config.num_hidden_layers}: use the config that came with these weights"
        )
    return msg + ". To load the rest and list these as unused, pass strict=False (--nostrict)."


def tensors_to_params(
    tensors: dict[str, np.ndarray],
    fmt: str,
    config: BertConfig,
    source: str,
    *,
    strict: bool = True,
    config_file: str = "the config",
) -> tuple[dict, dict]:
    """Maps a flat dict of `fmt` ("hf", "tf" or "ours") names onto our nested params.

    Checks every shape against `config`, requires the whole encoder and every tensor of each head
    that is present, casts other float dtypes to float32 (reported), and returns the params and a
    report: mapped count, skipped/tied/cast/unused tensors, absent optional parts, notes.
    """
    report: dict = {
        "format": fmt,
        "mapped": 0,
        "skipped": {},
        "tied": {},
        "cast": {},
        "unused": [],
        "absent": [],
        "notes": [],
    }
    shown = str
    if fmt == "hf":
        tensors, report["notes"], shown = _normalise_hf(tensors, source)
    table = naming_table(config)
    by_src = {getattr(n, fmt): n for n in table}
    if fmt == "hf":
        report["skipped"] = {shown(k): why for k, why in HF_BUFFERS.items() if k in tensors}
        if "cls.predictions.bias" not in tensors and "cls.predictions.decoder.bias" in tensors:
            by_src["cls.predictions.decoder.bias"] = by_src.pop("cls.predictions.bias")
    tied = {k: v for k, v in HF_TIED.items() if fmt == "hf" and k in tensors and k not in by_src}
    buffers = set(HF_BUFFERS) if fmt == "hf" else set()
    unknown = [shown(k) for k in sorted(set(tensors) - set(by_src) - buffers - set(tied))]
    if unknown and strict:
        raise ValueError(_unknown_message(unknown, config, source))
    report["unused"] = unknown

    dims = {k: getattr(config, f) for k, f in SYMBOLS.items() if k != "L"}
    label_bias = next((k for k, n in by_src.items() if n.ours == "classifier/bias"), None)
    if label_bias in tensors:
        dims["L"] = int(tensors[label_bias].shape[0]) if tensors[label_bias].ndim == 1 else -1
    flat: dict[str, np.ndarray] = {}
    for src in sorted(set(tensors) & set(by_src)):
        n, arr = by_src[src], np.asarray(tensors[src])
        if not np.issubdtype(arr.dtype, np.floating) and arr.dtype.name != "bfloat16":
            raise ValueError(
                f"{source}: {shown(src)} has dtype {arr.dtype}; a float weight is expected."
            )
        transposed = n.hf_transposed if fmt == "hf" else n.tf_transposed if fmt == "tf" else False
        want = tuple(dims[s] if s in dims else int(s) for s in n.shape)
        want = want[::-1] if transposed else want
        if arr.shape != want:
            sizes = ", ".join(
                f"{s}={SYMBOLS[s]}={dims[s]}" for s in dict.fromkeys(n.shape) if s in SYMBOLS
            )
            raise ValueError(
                f"{source}: {shown(src)} has shape {list(arr.shape)} but {config_file} implies "
                f"{list(want)} ({sizes}); the weights and the config disagree: use the config "
                "that came with these weights."
            )
        if arr.dtype != np.float32:
            report["cast"][shown(src)] = f"{arr.dtype} -> float32"
            arr = arr.astype(np.float32)
        flat[n.ours] = np.ascontiguousarray(arr.T) if transposed else arr

    parts = {by_src[k].part for k in tensors if k in by_src}
    missing = [
        shown(getattr(n, fmt))
        for n in table
        if n.ours not in flat and (n.part == "encoder" or n.part in parts)
    ]
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} required tensors are missing: {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}. The checkpoint is incomplete or was saved "
            f"for another model; nothing is initialised silently."
        )
    if "pooler" not in parts:
        report["absent"].append(
            "bert/pooler (not in the file, e.g. a token-classification or QA save; "
            "merge_params initialises it fresh)"
        )
    for name, twin in tied.items():
        if not np.array_equal(tensors[name], tensors.get(twin)):
            raise ValueError(
                f"{source}: {shown(name)} differs from {shown(twin)}; our MLM head ties its "
                f"decoder to {shown(twin)}, so an untied decoder cannot be converted exactly."
            )
        report["tied"][shown(name)] = f"equal to {shown(twin)}"
    report["mapped"] = len(flat)
    params: dict = {}
    for path, v in flat.items():
        *scopes, leaf = path.split("/")
        node = params
        for k in scopes:
            node = node.setdefault(k, {})
        node[leaf] = v
    return params, report


def heads_of(params: dict) -> list[str]:
    """The heads present in our params: pretraining, masked_lm, next_sentence, classifier, qa."""
    cls = params.get("cls", {})
    mlm, nsp = "predictions" in cls, "seq_relationship" in cls
    heads = ["pretraining"] if mlm and nsp else ["masked_lm"] if mlm else []
    heads += ["next_sentence"] if nsp and not mlm else []
    heads += ["classifier"] if "classifier" in params else []
    return heads + (["qa"] if "qa_outputs" in params else [])


# --------------------------------------------------------------------------- configs

_HF_FIELDS = {
    "vocab_size": None,
    "hidden_size": None,
    "num_hidden_layers": None,
    "num_attention_heads": None,
    "intermediate_size": None,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
}
# Original bert_config.json keys that describe nothing our model has (multilingual releases).
_TF_INFORMATIONAL = {
    "directionality",
    "pooler_fc_size",
    "pooler_num_attention_heads",
    "pooler_num_fc_layers",
    "pooler_size_per_head",
    "pooler_type",
}
_ARCHITECTURES = {
    "pretraining": "BertForPreTraining",
    "masked_lm": "BertForMaskedLM",
    "next_sentence": "BertForNextSentencePrediction",
    "qa": "BertForQuestionAnswering",
}
# A `classifier` head is [H, labels] in every one of these, so the tensors cannot tell them
# apart: the source's config has to (HF `architectures`, a fine-tuning run's task).
CLASSIFIER_ARCHITECTURES = (
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "BertForMultipleChoice",
)
# A fine-tuning run's task head (`bert_jax.finetune.make_model`) -> the Hugging Face class.
FINETUNE_ARCHITECTURES = {
    "classification": "BertForSequenceClassification",
    "regression": "BertForSequenceClassification",
    "multilabel": "BertForSequenceClassification",
    "token": "BertForTokenClassification",
    "choice": "BertForMultipleChoice",
    "span": "BertForQuestionAnswering",
}
# ... and the `problem_type` of its HF config (the loss transformers trains it with, and the
# sigmoid or softmax its text-classification pipeline applies).
FINETUNE_PROBLEM_TYPES = {
    "classification": "single_label_classification",
    "regression": "regression",
    "multilabel": "multi_label_classification",
}


def config_from_hf(d: dict, source: str) -> BertConfig:
    """BertConfig from a Hugging Face config.json; refuses what our model does not compute."""
    refuse = {
        "model_type": (d.get("model_type", "bert"), "bert"),
        "hidden_act": (d.get("hidden_act", "gelu"), "gelu"),  # HF "gelu" is the exact erf GELU
        "position_embedding_type": (d.get("position_embedding_type", "absolute"), "absolute"),
        "is_decoder": (d.get("is_decoder", False), False),
        "add_cross_attention": (d.get("add_cross_attention", False), False),
    }
    for key, (got, want) in refuse.items():
        if got != want:
            raise ValueError(
                f"{source}: {key}={got!r}, but bert_jax's BERT supports only {key}={want!r} "
                "(the original BERT architecture); this checkpoint cannot be converted exactly."
            )
    fields = {}
    for key, default in _HF_FIELDS.items():
        if d.get(key, default) is None:
            raise ValueError(f"{source}: required field {key!r} is missing.")
        fields[key] = d.get(key, default)
    return make_config(fields, source)


def config_from_tf(d: dict, source: str) -> tuple[BertConfig, list[str]]:
    """BertConfig from an original bert_config.json, and the keys that were ignored."""
    if d.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{source}: hidden_act={d['hidden_act']!r}; only 'gelu' is supported.")
    # The original modeling.py computes "gelu" with the tanh approximation; like transformers,
    # we use the exact erf form, which differs from it by at most 4.8e-4 per activation.
    fields = {k: d[k] for k in _HF_FIELDS if k in d}
    missing = sorted(k for k, v in _HF_FIELDS.items() if v is None and k not in d)
    if missing:
        raise ValueError(f"{source}: required fields {missing} are missing.")
    ignored = sorted(set(d) - set(fields) - {"hidden_act"} - _TF_INFORMATIONAL)
    return make_config(fields, source), ignored


def make_config(fields: dict, source: str) -> BertConfig:
    """BertConfig.from_dict, with errors that name the file the fields came from."""
    try:
        return BertConfig.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {e}") from e


def _refuse_causal(config: BertConfig) -> None:
    if config.causal:
        raise ValueError(
            "causal=True (a left-to-right model): BERT checkpoints are bidirectional and pool "
            "[CLS], so this model has no faithful export; use --format=ours."
        )


def hf_architectures(heads: list[str], classifier: str | None = None) -> list[str]:
    """The Hugging Face classes of `heads`; `classifier` names the class of a classifier head."""
    if "classifier" in heads and classifier not in CLASSIFIER_ARCHITECTURES:
        raise ValueError(
            f"the params have a classifier head and architecture={classifier!r} does not say "
            "which kind: the same [H, labels] tensors serve sequence, token and multiple-choice "
            f"classification. Pass architecture= (--architecture), one of "
            f"{list(CLASSIFIER_ARCHITECTURES)}."
        )
    if classifier is not None and "classifier" not in heads:
        raise ValueError(
            f"architecture={classifier!r} names a classifier head, but the params have none "
            f"(heads: {heads or 'none'}); leave it out."
        )
    names = [classifier if h == "classifier" else _ARCHITECTURES[h] for h in heads]
    return names or ["BertModel"]


def config_to_hf(
    config: BertConfig,
    architectures: list[str],
    num_labels: int = 0,
    label_names: list[str] | None = None,
    problem_type: str | None = None,
) -> dict:
    """HF config.json of `config`: id2label from `label_names` (LABEL_i without them), and
    `problem_type` where given."""
    _refuse_causal(config)
    if label_names is not None and len(label_names) != num_labels:
        raise ValueError(
            f"{len(label_names)} label names {label_names[:5]} for a classifier with "
            f"{num_labels} outputs; they must match one to one."
        )
    if config.position_embedding_type != "learned":
        raise ValueError(
            f"position_embedding_type={config.position_embedding_type!r}: Hugging Face's BERT "
            "has only learned ('absolute') positions, so this model cannot be exported."
        )
    out = {
        "architectures": architectures,
        "model_type": "bert",
        "hidden_act": "gelu",
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        **{k: getattr(config, k) for k in _HF_FIELDS},
    }
    if num_labels:
        names = label_names or [f"LABEL_{i}" for i in range(num_labels)]
        out["id2label"] = {str(i): name for i, name in enumerate(names)}
        out["label2id"] = {name: i for i, name in enumerate(names)}
        if problem_type is not None:
            out["problem_type"] = problem_type
    return out


def labels_from_hf(d: dict) -> tuple[list[str] | None, str | None]:
    """(label names in id order, problem_type) of a HF config.json; names None where it has
    no id2label or only transformers' defaults (LABEL_0, ...)."""
    id2label = d.get("id2label") or {}
    try:
        names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    except ValueError:  # non-integer ids: not a config transformers writes
        names = []
    if names != [str(id2label.get(str(i))) for i in range(len(names))]:
        names = []  # ids not 0..n-1
    default = names == [f"LABEL_{i}" for i in range(len(names))]
    return (names if names and not default else None), d.get("problem_type")


def config_to_tf(config: BertConfig) -> dict:
    _refuse_causal(config)
    if config.position_embedding_type != "learned":
        raise ValueError("sinusoidal positions have no original-BERT equivalent; cannot export.")
    out = {k: getattr(config, k) for k in _HF_FIELDS if k != "layer_norm_eps"}
    out["hidden_act"] = "gelu"
    # The original code hard-codes 1e-12; the key is written only when it differs, for readers
    # that honour it (ours, transformers' TF loader), but modeling.py ignores it.
    if config.layer_norm_eps != 1e-12:
        out["layer_norm_eps"] = config.layer_norm_eps
        warnings.warn(
            f"layer_norm_eps={config.layer_norm_eps} is written to bert_config.json, but the "
            "original BERT's modeling.py ignores that key and uses 1e-12: run there, every "
            "LayerNorm of this model normalises with another epsilon and the outputs differ "
            "(most where a row's variance is small). Load it with bert_jax or transformers.",
            stacklevel=3,
        )
    return out
