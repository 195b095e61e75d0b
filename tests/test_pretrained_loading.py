"""Loading checkpoints for use (`bert_jax.from_pretrained`, `convert.load_pretrained`): workdirs
as training writes them, transformers 5 saves (tokenizer.json, no vocab.txt), and the tokenizer
options of tokenizer_config.json, each checked against transformers' own tokenizer."""

import dataclasses
import json

import jax
import numpy as np
import pytest

import bert_jax
from bert_jax import checkpoints, convert, heads
from bert_jax.data import samples
from bert_jax.model import BertConfig, BertModel, stack_layers

transformers = pytest.importorskip("transformers")

# Accented words that the uncased vocab has only without their accents, and a cased one.
TEXTS = ["Café résumé naïve Zürich", "the café on the façade", "Hello World, déjà vu"]


@pytest.fixture(scope="module")
def minilm_dir():
    try:
        return samples.fetch("minilm")
    except RuntimeError as e:
        pytest.skip(f"sample 'minilm' could not be fetched (no network?): {e}")


def _pretraining_workdir(workdir, vocab_file, vocab_size, **model):
    """A workdir as bert_jax.train writes it: its ml-collections config.json and the whole train
    state at step 3 (layers stacked for scan_layers). Returns the config and per-layer params."""
    import ml_collections

    from configs import common

    cfg = ml_collections.ConfigDict({"model": common.model_config("tiny"), "data": {}})
    cfg.model.max_position_embeddings = 32
    cfg.model.update(model)
    cfg.data.vocab_file = str(vocab_file)
    workdir.mkdir(exist_ok=True)
    (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    fields = {k: v for k, v in cfg.model.items() if k != "size"} | {"vocab_size": vocab_size}
    config = BertConfig.from_dict(fields)
    plain = dataclasses.replace(config, scan_layers=False)
    init = heads.BertForPreTraining(plain).init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))
    rng = np.random.default_rng(0)  # off the init values, so that LayerNorm biases matter too
    params = jax.tree.map(lambda x: x + rng.normal(0, 0.1, x.shape).astype(np.float32), init)
    params = params["params"]
    saved = stack_layers(params) if config.scan_layers else params
    # Adam-like moments stand in for the optimizer state: loading must read only `params`.
    state = {"step": 3, "params": saved, "opt_state": {"mu": saved, "nu": saved}, "rng": 0}
    ckpt = checkpoints.Checkpointer(str(workdir / "checkpoints"), save_every=1, keep=2)
    ckpt.save(3, state, force=True)
    ckpt.close()
    return config, params


def test_pretraining_workdir_is_loadable(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(f"tok{i}" for i in range(50)) + "\n")
    config, params = _pretraining_workdir(tmp_path / "run", vocab, 50)
    loaded = convert.load_pretrained(tmp_path / "run")
    assert loaded.config == config and loaded.vocab_file == vocab
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(loaded.params), jax.tree.leaves(params), strict=True
    ):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_workdir_trained_with_compute_levers_loads_as_plain_float32(minilm_dir, tmp_path):
    """scan_layers, bf16 matmuls, ... describe the run, not the weights: from_pretrained must
    give a model the (per-layer, float32) params run on, computing in float32."""
    levers = dict(scan_layers=True, bf16_matmul=True, fused_qkv=True, encoder_chunks=2)
    config, params = _pretraining_workdir(tmp_path, minilm_dir / "vocab.txt", 30522, **levers)
    plain = dataclasses.replace(config, **{k: getattr(BertConfig, k) for k in levers})
    tok, model, variables = bert_jax.from_pretrained(tmp_path)
    assert model.config == plain
    enc = tok(TEXTS, ["a second sentence"] * 3)
    got = model.apply(variables, **enc)["sequence_output"]
    want = BertModel(plain).apply({"params": params["bert"]}, **enc)["sequence_output"]
    np.testing.assert_array_equal(got, want)
    notes = " ".join(convert.load_pretrained(tmp_path).report["notes"])
    assert "'scan_layers': True" in notes and "'bf16_matmul': True" in notes


def _hf_ids(directory, texts):
    ref = transformers.AutoTokenizer.from_pretrained(directory)
    return ref(texts, padding=True, return_tensors="np")["input_ids"]


def test_transformers_save_without_vocab_txt(minilm_dir, tmp_path, monkeypatch):
    """transformers 5 saves tokenizer.json and no vocab.txt: the vocab comes from the former."""
    monkeypatch.setenv("BERT_JAX_CACHE", str(tmp_path / "cache"))  # where the vocab is written
    src = tmp_path / "resaved"
    transformers.BertModel.from_pretrained(minilm_dir).save_pretrained(src)
    transformers.AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(src)
    (src / "vocab.txt").unlink(missing_ok=True)  # transformers 4 writes one; 5 does not
    assert (src / "tokenizer.json").is_file()
    tok, _, _ = bert_jax.from_pretrained(src)
    np.testing.assert_array_equal(tok(TEXTS)["input_ids"], _hf_ids(src, TEXTS))
    loaded = convert.load_pretrained(src)
    assert loaded.vocab_file.read_bytes() == (minilm_dir / "vocab.txt").read_bytes()
    assert loaded.vocab_file.is_relative_to(tmp_path / "cache")
    convert.convert(src, tmp_path / "hf", "hf")
    assert (tmp_path / "hf" / "vocab.txt").read_bytes() == loaded.vocab_file.read_bytes()


def _minilm_with_tokenizer_config(minilm_dir, directory, **options):
    directory.mkdir()
    for name in ("config.json", "vocab.txt"):
        (directory / name).write_bytes((minilm_dir / name).read_bytes())
    (directory / "model.safetensors").symlink_to(minilm_dir / "model.safetensors")
    tok_config = {"tokenizer_class": "BertTokenizer", "model_max_length": 512, **options}
    (directory / "tokenizer_config.json").write_text(json.dumps(tok_config))
    return directory


@pytest.mark.parametrize("lowercase, strip_accents", [(True, False), (False, True)])
def test_strip_accents_of_tokenizer_config(minilm_dir, tmp_path, lowercase, strip_accents):
    src = _minilm_with_tokenizer_config(
        minilm_dir, tmp_path / "src", do_lower_case=lowercase, strip_accents=strip_accents
    )
    want = _hf_ids(src, TEXTS)
    default = transformers.BertTokenizerFast(str(src / "vocab.txt"), do_lower_case=lowercase)
    assert not np.array_equal(want, default(TEXTS, padding=True, return_tensors="np")["input_ids"])
    tok, _, _ = bert_jax.from_pretrained(src)
    np.testing.assert_array_equal(tok(TEXTS)["input_ids"], want)
    # Our exports keep the options: transformers reads the HF one, we read all three (a TF
    # export carries them in a tokenizer_config.json beside the checkpoint).
    for fmt in ("hf", "ours", "tf"):
        convert.convert(src, tmp_path / fmt, fmt)
        tok, _, _ = bert_jax.from_pretrained(tmp_path / fmt)
        np.testing.assert_array_equal(tok(TEXTS)["input_ids"], want)
    np.testing.assert_array_equal(_hf_ids(tmp_path / "hf", TEXTS), want)


def test_refuses_tokenize_chinese_chars_false(minilm_dir, tmp_path):
    src = _minilm_with_tokenizer_config(
        minilm_dir, tmp_path / "src", do_lower_case=True, tokenize_chinese_chars=False
    )
    with pytest.raises(ValueError, match=r"tokenize_chinese_chars is false .* always splits"):
        bert_jax.from_pretrained(src)
