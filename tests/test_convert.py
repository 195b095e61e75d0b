"""Checkpoint conversion: parity with transformers (PyTorch), real weights, TF and Orbax round
trips, and refusal of bad files. Tiny models; the text is real (the Wikipedia sample)."""

import dataclasses
import json
import os
import shutil
import struct
import subprocess
import sys
import types
import warnings

import jax
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from bert_jax import convert, heads, weights_io
from bert_jax.data import corpus, samples
from bert_jax.model import BertConfig, BertModel

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-5  # float32 logits, random tiny models
TOL_MINILM = 1e-4  # hidden states of the real MiniLM


def _fetch(name):
    try:
        return samples.fetch(name)
    except RuntimeError as e:
        pytest.skip(f"sample {name!r} could not be fetched (no network?): {e}")


@pytest.fixture(scope="module")
def minilm_dir():
    return _fetch("minilm")


@pytest.fixture(scope="module")
def sentences():
    """Real English sentences of moderate length from the first articles of the Wikipedia sample."""
    out = []
    for _, wikitext in corpus.iter_wikipedia_pages(_fetch("enwiki")):
        for paragraph in corpus.wikitext_to_paragraphs(wikitext):
            out += [s for s in corpus.split_sentences(paragraph) if 6 <= len(s.split()) <= 30]
        if len(out) >= 40:
            return out[:40]
    return out


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    return transformers.BertTokenizerFast.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def pair_batch(tokenizer, sentences):
    """Sentence pairs with segment ids, padded (attention mask) to the longest pair."""
    enc = tokenizer(sentences[:4], sentences[4:8], padding=True, return_tensors="np")
    assert (enc["attention_mask"] == 0).any() and (enc["token_type_ids"] == 1).any()
    return enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]


SIZES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def _random_hf(cls, seed=0, **kw):
    """A tiny transformers model with every parameter random (LayerNorm and biases too)."""
    torch.manual_seed(seed)
    # vocab_size: the minilm (bert-base-uncased) vocab.txt that tokenizes the test text.
    config = transformers.BertConfig(vocab_size=30522, max_position_embeddings=128, **SIZES, **kw)
    model = cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                torch.nn.init.normal_(p, 1.0, 0.2)
            else:
                torch.nn.init.normal_(p, 0.0, 0.05)
    return model


def _hf_outputs(model, batch):
    ids, mask, seg = (torch.from_numpy(np.asarray(x, np.int64)) for x in batch)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, token_type_ids=seg)


def _max_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b.detach().numpy(), np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def _init(module, batch):
    ids = np.asarray(batch[0], np.int32)
    return module.init(jax.random.PRNGKey(0), ids, ids, ids)["params"]


@pytest.fixture(scope="module")
def pretraining_dir(tmp_path_factory, minilm_dir):
    model = _random_hf(transformers.BertForPreTraining)
    out = tmp_path_factory.mktemp("hf_pretraining")
    model.save_pretrained(out)
    (out / "vocab.txt").write_bytes((minilm_dir / "vocab.txt").read_bytes())
    return model, out


def test_pretraining_parity_and_export(pretraining_dir, pair_batch, tmp_path):
    hf_model, src = pretraining_dir
    loaded = convert.load_pretrained(src)
    assert loaded.heads == ["pretraining"] and loaded.report["unused"] == []
    ids, mask, seg = (np.asarray(x, np.int32) for x in pair_batch)
    model = heads.BertForPreTraining(loaded.config)
    ours = model.apply({"params": loaded.params}, ids, mask, seg, masked_lm_positions=None)
    ref = _hf_outputs(hf_model, pair_batch)
    d_mlm = _max_diff(ours["mlm_logits"], ref.prediction_logits)
    d_nsp = _max_diff(ours["nsp_logits"], ref.seq_relationship_logits)
    print(f"\nBertForPreTraining import: max |MLM diff| {d_mlm:.2e}, max |NSP diff| {d_nsp:.2e}")
    assert d_mlm < TOL and d_nsp < TOL

    out = convert.save_hf(loaded.params, loaded.config, tmp_path / "hf", loaded.vocab_file)
    back, info = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    again = _hf_outputs(back.eval(), pair_batch)
    d_mlm = _max_diff(ours["mlm_logits"], again.prediction_logits)
    d_nsp = _max_diff(ours["nsp_logits"], again.seq_relationship_logits)
    print(f"BertForPreTraining export -> transformers: MLM {d_mlm:.2e}, NSP {d_nsp:.2e}")
    assert d_mlm < TOL and d_nsp < TOL
    tok = transformers.BertTokenizerFast.from_pretrained(out)
    assert tok("Hello World")["input_ids"] == [101, 7592, 2088, 102]


@pytest.mark.parametrize(
    "hf_cls, ours_cls, kw",
    [
        ("BertForSequenceClassification", heads.BertForSequenceClassification, {"num_labels": 3}),
        ("BertForTokenClassification", heads.BertForTokenClassification, {"num_labels": 5}),
        ("BertForQuestionAnswering", heads.BertForQuestionAnswering, {}),
    ],
)
def test_finetuned_heads_parity(hf_cls, ours_cls, kw, pair_batch, tmp_path):
    hf_model = _random_hf(getattr(transformers, hf_cls), seed=1, **kw)
    hf_model.save_pretrained(tmp_path)
    loaded = convert.load_pretrained(tmp_path)
    model = ours_cls(loaded.config, **kw)
    # HF's token-classification and QA models have no pooler: merge_params starts it fresh.
    params, report = convert.merge_params(_init(model, pair_batch), loaded.params)
    assert report["unused"] == []
    has_pooler = hf_cls == "BertForSequenceClassification"
    fresh = [] if has_pooler else ["bert/pooler/dense/bias", "bert/pooler/dense/kernel"]
    assert sorted(report["initialised fresh"]) == fresh
    ids, mask, seg = (np.asarray(x, np.int32) for x in pair_batch)
    ours = model.apply({"params": params}, ids, mask, seg)
    ref = _hf_outputs(hf_model, pair_batch)
    if "start_logits" in ours:
        diff = max(
            _max_diff(ours["start_logits"], ref.start_logits),
            _max_diff(ours["end_logits"], ref.end_logits),
        )
    else:
        diff = _max_diff(ours["logits"], ref.logits)
    print(f"\n{hf_cls}: max |logit diff| {diff:.2e}")
    assert diff < TOL


def test_minilm_real_weights(minilm_dir, tokenizer, sentences):
    loaded = convert.load_pretrained(minilm_dir)
    assert loaded.heads == [] and loaded.lowercase and loaded.vocab_file.name == "vocab.txt"
    assert set(loaded.report["skipped"]) == {"embeddings.position_ids"}
    enc = tokenizer(sentences[:16], padding=True, return_tensors="np")
    batch = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    ref_model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    ids, mask, seg = (torch.from_numpy(np.asarray(x, np.int64)) for x in batch)
    with torch.no_grad():
        ref = ref_model(ids, mask, seg, output_hidden_states=True)
    ours = BertModel(loaded.config).apply({"params": loaded.params["bert"]}, *batch)
    assert len(ours["hidden_states"]) == len(ref.hidden_states) == 7
    diffs = [_max_diff(a, b) for a, b in zip(ours["hidden_states"], ref.hidden_states, strict=True)]
    d_pool = _max_diff(ours["pooled_output"], ref.pooler_output)
    print(
        f"\nMiniLM: max |hidden diff| per layer {[f'{d:.1e}' for d in diffs]}, pooled {d_pool:.1e}"
    )
    assert max(diffs) < TOL_MINILM and d_pool < TOL_MINILM


def _random_params(config, seed=0, num_labels=3):
    """Our params with every head (pre-training, classifier, SQuAD), all random."""
    init = heads.BertForPreTraining(config).init
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))["params"]
    h, rng = config.hidden_size, np.random.default_rng(seed)
    shapes["classifier"] = {"kernel": (h, num_labels), "bias": (num_labels,)}
    shapes["qa_outputs"] = {"kernel": (h, 2), "bias": (2,)}
    return jax.tree.map(
        lambda s: rng.normal(size=getattr(s, "shape", s)).astype(np.float32),
        shapes,
        is_leaf=lambda x: isinstance(x, tuple),
    )


TINY = BertConfig(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
    layer_norm_eps=1e-6,
)


def _assert_same_params(a, b):
    fa, fb = flatten_dict(a), flatten_dict(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        assert np.array_equal(np.asarray(fa[k]), np.asarray(fb[k])), k


@pytest.mark.filterwarnings("ignore:layer_norm_eps=1e-06")  # TINY's; the next test checks it
def test_tf_checkpoint_round_trip(tmp_path):
    import tensorflow as tf

    params = _random_params(TINY)
    prefix = convert.save_tf(params, TINY, tmp_path / "bert_model.ckpt")
    names = dict(tf.train.list_variables(prefix))
    assert names["bert/encoder/layer_0/attention/self/query/kernel"] == [32, 32]
    assert names["bert/embeddings/LayerNorm/gamma"] == [32]
    assert names["bert/embeddings/word_embeddings"] == [99, 32]
    assert names["cls/predictions/output_bias"] == [99]
    assert names["cls/seq_relationship/output_weights"] == [2, 32]
    assert names["output_weights"] == [3, 32]  # run_classifier.py's layout
    assert names["cls/squad/output_weights"] == [2, 32]  # run_squad.py's layout
    assert len(names) == len(jax.tree.leaves(params))
    for path in (prefix, tmp_path):  # the prefix, or the directory holding it
        loaded = convert.load_pretrained(path)
        assert loaded.config == TINY
        assert loaded.heads == ["pretraining", "classifier", "qa"]
        _assert_same_params(loaded.params, params)
    data = next(tmp_path.glob("bert_model.ckpt.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"bert_model\.ckpt: variable .* truncated"):
        convert.load_pretrained(prefix)


@pytest.mark.filterwarnings("ignore:layer_norm_eps=1e-06")
def test_tf_checkpoint_with_optimizer_slots(tmp_path):
    params = _random_params(TINY)
    tensors = convert.export_tensors(params, TINY, "tf")
    slots = {f"{k}/{s}": np.zeros_like(v) for k, v in tensors.items() for s in ("adam_m", "adam_v")}
    weights_io.write_tf_checkpoint(
        {**tensors, **slots, "global_step": np.array(7, np.int64)}, str(tmp_path / "model.ckpt-7")
    )
    (tmp_path / "bert_config.json").write_text(json.dumps(convert.config_to_tf(TINY)))
    loaded = convert.load_pretrained(tmp_path)
    skipped = loaded.report["skipped"]
    assert set(skipped) == set(slots) | {"global_step"}
    assert skipped["bert/pooler/dense/kernel/adam_m"] == "optimizer slot (adam_m)"
    assert "global_step" in convert.format_report(loaded.report)
    _assert_same_params(loaded.params, params)


def test_tf_export_warns_that_the_original_code_ignores_layer_norm_eps(tmp_path):
    with pytest.warns(UserWarning, match=r"layer_norm_eps=1e-06 .* modeling\.py ignores"):
        convert.save_tf(_random_params(TINY), TINY, tmp_path / "a" / "bert_model.ckpt")
    usual = dataclasses.replace(TINY, layer_norm_eps=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert.save_tf(_random_params(usual), usual, tmp_path / "b" / "bert_model.ckpt")


def test_hf_legacy_names_tied_decoder_and_buffers(pretraining_dir, tmp_path):
    """Older saves: LayerNorm gamma/beta, the tied decoder stored, the position_ids buffer."""
    _, src = pretraining_dir
    reference = convert.load_pretrained(src).params
    tensors = weights_io.read_safetensors(src / "model.safetensors")
    legacy = {"LayerNorm.weight": "LayerNorm.gamma", "LayerNorm.bias": "LayerNorm.beta"}
    old = {}
    for name, v in tensors.items():
        for new_suffix, old_suffix in legacy.items():
            name = name.replace(new_suffix, old_suffix)  # noqa: PLW2901
        old[name] = v
    old["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    old["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"]
    old["bert.embeddings.position_ids"] = np.arange(128)[None]
    (tmp_path / "config.json").write_bytes((src / "config.json").read_bytes())
    weights_io.write_safetensors(old, tmp_path / "model.safetensors")
    loaded = convert.load_pretrained(tmp_path)
    _assert_same_params(loaded.params, reference)
    assert set(loaded.report["tied"]) == {
        "cls.predictions.decoder.weight",
        "cls.predictions.decoder.bias",
    }
    assert set(loaded.report["skipped"]) == {"bert.embeddings.position_ids"}

    old["cls.predictions.decoder.weight"] = old["cls.predictions.decoder.weight"] + 1
    weights_io.write_safetensors(old, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"cls\.predictions\.decoder\.weight differs from"):
        convert.load_pretrained(tmp_path)


def test_hf_sharded_bfloat16_checkpoint(pretraining_dir, tmp_path):
    """Two bfloat16 shards behind model.safetensors.index.json; every cast is reported."""
    from safetensors.torch import save_file

    _, src = pretraining_dir
    tensors = weights_io.read_safetensors(src / "model.safetensors")
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[:20],
        "model-00002-of-00002.safetensors": names[20:],
    }
    for file, keys in shards.items():
        bf16 = {k: torch.from_numpy(tensors[k]).to(torch.bfloat16) for k in keys}
        save_file(bf16, str(tmp_path / file), metadata={"format": "pt"})
    weight_map = {k: f for f, keys in shards.items() for k in keys}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_bytes((src / "config.json").read_bytes())
    loaded = convert.load_pretrained(tmp_path)
    assert len(loaded.report["cast"]) == len(names) == loaded.report["mapped"]
    assert loaded.report["cast"][names[0]] == "bfloat16 -> float32"
    word = loaded.params["bert"]["embeddings"]["word_embeddings"]["embedding"]
    rounded = torch.from_numpy(tensors["bert.embeddings.word_embeddings.weight"]).bfloat16()
    np.testing.assert_array_equal(word, rounded.float().numpy())


# --------------------------------------------------------------------------- bad inputs


@pytest.fixture
def hf_dir(tmp_path):
    """A tiny random BertForSequenceClassification saved by transformers."""
    _random_hf(transformers.BertForSequenceClassification, num_labels=2).save_pretrained(tmp_path)
    return tmp_path


def _resave(directory, edit):
    path = directory / "model.safetensors"
    tensors = weights_io.read_safetensors(path)
    edit(tensors)
    weights_io.write_safetensors(tensors, path)


def _edit_config(directory, **changes):
    cfg = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(cfg | changes))


def test_refuses_vocab_size_mismatch(hf_dir):
    _edit_config(hf_dir, vocab_size=30000)
    with pytest.raises(ValueError, match=r"word_embeddings\.weight has shape \[30522, 64\].*30000"):
        convert.load_pretrained(hf_dir)


def test_refuses_missing_tensor(hf_dir):
    name = "bert.encoder.layer.1.output.dense.weight"
    _resave(hf_dir, lambda t: t.pop(name))
    with pytest.raises(ValueError, match=rf"1 required tensors are missing: \['{name}'\]"):
        convert.load_pretrained(hf_dir)


def test_refuses_wrong_shape(hf_dir):
    name = "bert.encoder.layer.0.attention.self.query.weight"
    _resave(hf_dir, lambda t: t.update({name: np.zeros((64, 32), np.float32)}))
    with pytest.raises(ValueError, match=rf"{name} has shape \[64, 32\].*\[64, 64\]"):
        convert.load_pretrained(hf_dir)


def test_refuses_unknown_tensor_unless_not_strict(hf_dir):
    _resave(hf_dir, lambda t: t.update({"extra_head.weight": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match=r"not in the naming table: \['extra_head.weight'\]"):
        convert.load_pretrained(hf_dir)
    assert convert.load_pretrained(hf_dir, strict=False).report["unused"] == ["extra_head.weight"]


class _Payload:
    """Unpickling this would run a shell command; weights_only loading must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pytorch_bin_loads_tensors_and_refuses_pickle_payload(hf_dir):
    reference = convert.load_pretrained(hf_dir).params
    state = weights_io.read_safetensors(hf_dir / "model.safetensors")
    (hf_dir / "model.safetensors").unlink()
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, hf_dir / "pytorch_model.bin")
    _assert_same_params(convert.load_pretrained(hf_dir).params, reference)

    marker = hf_dir / "payload_ran"
    torch.save({"w": torch.zeros(2), "x": _Payload(marker)}, hf_dir / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: refused"):
        convert.load_pretrained(hf_dir)
    assert not marker.exists()


def test_refuses_truncated_safetensors(hf_dir):
    path = hf_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor .* truncated"):
        convert.load_pretrained(hf_dir)


def test_refuses_header_length_past_the_end(hf_dir):
    path = hf_dir / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(data)) + data[8:])
    with pytest.raises(ValueError, match=r"model\.safetensors: the header length field says"):
        convert.load_pretrained(hf_dir)


def test_refuses_unsupported_activation(hf_dir):
    _edit_config(hf_dir, hidden_act="gelu_new")
    with pytest.raises(ValueError, match=r"config\.json: hidden_act='gelu_new'"):
        convert.load_pretrained(hf_dir)


# --------------------------------------------------------------------------- merge_params


def test_merge_params_reports_fresh_and_unused_and_refuses_mismatches():
    loaded = _random_params(TINY)
    del loaded["classifier"]
    model = heads.BertForSequenceClassification(TINY, num_labels=4)
    template = model.init(jax.random.PRNGKey(1), np.zeros((1, 8), np.int32))["params"]
    merged, report = convert.merge_params(template, loaded)
    assert sorted(report["initialised fresh"]) == ["classifier/bias", "classifier/kernel"]
    assert "cls/predictions/output_bias" in report["unused"]
    assert "bert/pooler/dense/kernel" in report["loaded"]
    np.testing.assert_array_equal(
        merged["bert"]["pooler"]["dense"]["kernel"], loaded["bert"]["pooler"]["dense"]["kernel"]
    )
    np.testing.assert_array_equal(merged["classifier"]["kernel"], template["classifier"]["kernel"])
    convert.check_same_architecture(TINY, dataclasses.replace(TINY, hidden_dropout_prob=0.3))
    with pytest.raises(ValueError, match=r"num_attention_heads: model 4 vs checkpoint 2"):
        convert.check_same_architecture(TINY, dataclasses.replace(TINY, num_attention_heads=2))

    wrong = {"classifier": {"kernel": np.zeros((32, 3), np.float32)}}
    with pytest.raises(ValueError, match=r"classifier/kernel is float32\[32, 3\].*\[32, 4\]"):
        convert.merge_params(template, wrong)
    half = {"classifier": {"bias": np.zeros(4, np.float16)}}
    with pytest.raises(ValueError, match=r"classifier/bias is float16\[4\].*float32\[4\]"):
        convert.merge_params(template, half)


def test_merge_params_stacks_layers_for_a_scan_layers_model():
    loaded = _random_params(TINY)  # per-layer, as every checkpoint holds them
    del loaded["classifier"]
    scan = dataclasses.replace(TINY, scan_layers=True)
    model = heads.BertForSequenceClassification(scan, num_labels=4)
    template = model.init(jax.random.PRNGKey(1), np.zeros((1, 8), np.int32))["params"]
    merged, report = convert.merge_params(template, loaded)
    assert not [name for name in report["unused"] if name.startswith("bert/")]
    assert sorted(report["initialised fresh"]) == ["classifier/bias", "classifier/kernel"]
    stacked = merged["bert"]["encoder"]["layers"]["layer"]["attention"]["self"]["query"]["kernel"]
    for i in range(TINY.num_hidden_layers):
        np.testing.assert_array_equal(
            stacked[i],
            loaded["bert"]["encoder"][f"layer_{i}"]["attention"]["self"]["query"]["kernel"],
        )


# --------------------------------------------------------------------------- our format, CLI


def test_ours_format_round_trip(pretraining_dir, tmp_path):
    _, src = pretraining_dir
    loaded = convert.load_pretrained(src)
    out = convert.save_ours(loaded.params, loaded.config, tmp_path / "ours", loaded.vocab_file)
    again = convert.load_pretrained(out)
    assert again.config == loaded.config and again.heads == ["pretraining"]
    assert again.vocab_file == out / "vocab.txt" and again.lowercase
    _assert_same_params(again.params, loaded.params)


def test_token_classification_workdir_exports_as_such(minilm_dir, pair_batch, tmp_path):
    """The classifier tensors of sequence, token and multiple-choice models are alike; the
    fine-tuning run's task says which it is."""
    from bert_jax import checkpoints, finetune
    from configs import finetune as finetune_config

    config = BertConfig(vocab_size=30522, max_position_embeddings=128, **SIZES)
    model = heads.BertForTokenClassification(config, num_labels=5)
    params = jax.tree.map(lambda x: x + 0.1, _init(model, pair_batch))  # biases nonzero
    run = tmp_path / "run"
    run.mkdir()
    ft = finetune_config.get_config("task=wnut16,size=tiny")  # NER: the token head
    vocab = str(minilm_dir / "vocab.txt")
    # The config.json of a fine-tuning run, written by the code that writes it.
    tags = ["O", "B-loc", "B-per", "I-loc", "I-per"]
    task = types.SimpleNamespace(class_names=tags)  # what NerTask.load read from the data
    ready = finetune.Setup(task, {}, {}, config, None, None, vocab, True, strip_accents=False)
    finetune._write_config(ft, ready, str(run))
    ckpt = checkpoints.Checkpointer(str(run / "checkpoints"), save_every=1, keep=1)
    last = jax.tree.map(lambda x: x - 1.0, params)  # the last step; the selected model differs
    ckpt.save(9, {"step": 9, "params": last, "opt_state": {"mu": last}}, force=True)
    ckpt.close()
    # The run keeps its selected epoch's model in best/: that is the model a user exports (the
    # last step's was exported before, whatever train.select chose).
    finetune._save_params(str(run / "best"), params, {"epoch": 1, "step": 3})

    convert.convert(run, tmp_path / "hf", "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForTokenClassification"]
    assert cfg["id2label"] == {str(i): t for i, t in enumerate(tags)}
    assert "problem_type" not in cfg  # transformers' token classifier has no such choice
    tok_cfg = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert tok_cfg["strip_accents"] is False  # the run's tokenizer, not the lowercasing default
    back, info = transformers.AutoModelForTokenClassification.from_pretrained(
        tmp_path / "hf", output_loading_info=True
    )
    assert type(back).__name__ == "BertForTokenClassification"
    assert back.config.id2label == dict(enumerate(tags))
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids, mask, seg = (np.asarray(x, np.int32) for x in pair_batch)
    ours = model.apply({"params": params}, ids, mask, seg)["logits"]
    diff = _max_diff(ours, _hf_outputs(back.eval(), pair_batch).logits)
    print(f"\ntoken-classification workdir -> transformers: max |logit diff| {diff:.2e}")
    assert diff < TOL

    # Without the train state (train.keep_train_state=False removes checkpoints/) as well.
    shutil.rmtree(run / "checkpoints")
    loaded = convert.load_pretrained(run)
    jax.tree.map(np.testing.assert_array_equal, loaded.params, params)

    # Where nothing says which kind the classifier is, the export asks instead of guessing.
    with pytest.raises(ValueError, match=r"architecture=None does not say which kind"):
        convert.save_hf(params, config, tmp_path / "unknown")
    convert.save_hf(params, config, tmp_path / "mc", architecture="BertForMultipleChoice")
    cfg = json.loads((tmp_path / "mc" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForMultipleChoice"]


def test_cli_converts_a_hf_directory(hf_dir, tmp_path):
    out = tmp_path / "exported"
    args = [f"--from={hf_dir}", f"--to={out}", "--format=hf"]
    cmd = [sys.executable, "-m", "bert_jax.convert", *args]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mapped 41 tensors" in done.stdout and "heads: ['classifier']" in done.stdout
    _assert_same_params(convert.load_pretrained(out).params, convert.load_pretrained(hf_dir).params)


def test_label_names_and_problem_type_survive_conversion(hf_dir, tmp_path):
    """A fine-tuned HF classifier's id2label and problem_type (what its pipeline prints and
    whether it applies a sigmoid) come through ours and back; they used to become LABEL_i."""
    _edit_config(
        hf_dir,
        id2label={"0": "toxic", "1": "insult"},
        label2id={"toxic": 0, "insult": 1},
        problem_type="multi_label_classification",
    )
    convert.convert(hf_dir, tmp_path / "ours", "ours")
    loaded = convert.load_pretrained(tmp_path / "ours")
    assert loaded.label_names == ["toxic", "insult"]
    assert loaded.problem_type == "multi_label_classification"
    convert.convert(tmp_path / "ours", tmp_path / "hf", "hf")
    back = transformers.AutoConfig.from_pretrained(tmp_path / "hf")
    assert back.id2label == {0: "toxic", 1: "insult"} and back.label2id == {"toxic": 0, "insult": 1}
    assert back.problem_type == "multi_label_classification"

    # transformers' defaults stay defaults; a name list of the wrong length is refused.
    _edit_config(hf_dir, id2label={"0": "LABEL_0", "1": "LABEL_1"}, problem_type=None)
    plain = convert.load_pretrained(hf_dir)
    assert plain.label_names is None and plain.problem_type is None
    with pytest.raises(ValueError, match=r"3 label names .* 2 outputs"):
        convert.save_hf(
            plain.params,
            plain.config,
            tmp_path / "bad",
            architecture="BertForSequenceClassification",
            label_names=["a", "b", "c"],
        )


def test_a_workdir_with_a_feature_based_head_loads_its_encoder(minilm_dir, tmp_path):
    """A run whose head mixes layers through a BiLSTM (config.head) could not be loaded at all
    (its head_input/* tensors are in no format): the encoder loads, the head is reported."""
    from bert_jax import finetune
    from bert_jax.heads import HeadInput
    from configs import finetune as finetune_config

    config = BertConfig(vocab_size=30522, max_position_embeddings=128, **SIZES)
    spec = HeadInput(layers="sum_last_four", freeze_encoder=True, bilstm_layers=1, bilstm_size=8)
    model = finetune.make_model("token", config, 5, spec)
    ids = np.ones((1, 8), np.int32)
    params = model.init(jax.random.PRNGKey(0), ids, ids)["params"]
    ft = finetune_config.get_config("task=wnut16,size=tiny")
    ft.head.update(layers="sum_last_four", freeze_encoder=True, bilstm_layers=1, bilstm_size=8)
    ready = finetune.Setup(None, {}, {}, config, None, None, str(minilm_dir / "vocab.txt"), True)
    (tmp_path / "run").mkdir()
    finetune._write_config(ft, ready, str(tmp_path / "run"))
    finetune._save_params(str(tmp_path / "run" / "best"), params, {"epoch": 1, "step": 3})

    loaded = convert.load_pretrained(tmp_path / "run")
    assert loaded.heads == [] and set(loaded.params) == {"bert"}
    jax.tree.map(np.testing.assert_array_equal, loaded.params["bert"], params["bert"])
    assert "head_input/scalar_mix/weights" in loaded.report["skipped"]
    assert "classifier/kernel" in loaded.report["skipped"]
    convert.convert(tmp_path / "run", tmp_path / "hf", "hf")  # the encoder, as BertModel
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [
        "BertModel"
    ]
