"""A workdir and data.dir on an object store (gs:// on a TPU pod), played by TensorFlow's
in-memory ram:// filesystem: the same tf.io.gfile code paths, offline. Nothing may land on the
local disk (os.makedirs('gs://b/run') would make ./gs:/b/run on each worker). Also: an init
checkpoint on a mesh starts its optimizer state sharded like the params."""

import itertools
import json
import os
import tempfile
import types
import uuid

import jax
import numpy as np
import pytest
import tensorflow as tf

from bert_jax import checkpoints, inputs, optim, parallel, train
from bert_jax.data import corpus, prepare, samples
from bert_jax.heads import BertForPreTraining
from bert_jax.writers import MetricWriter
from tests.test_loop import PRED, SEQ, small_config
from tests.test_train import CFG, S, opt_config

gfile = tf.io.gfile


def _ram_root() -> str:
    """A fresh ram:// folder (the filesystem lives as long as the process, across tests)."""
    return f"ram://bert_jax_test_{uuid.uuid4().hex[:8]}"


def _copy_tree(src: str, dst: str) -> None:
    for folder, _, files in gfile.walk(src):
        rel = os.path.relpath(folder, src)
        target = dst if rel == "." else f"{dst}/{rel}"
        gfile.makedirs(target)
        for name in files:
            gfile.copy(os.path.join(folder, name), os.path.join(target, name), overwrite=True)


@pytest.fixture(autouse=True)
def ram_replaces_files(monkeypatch):
    """TF's ram:// filesystem appends to an existing file opened with GFile(path, "w"); local
    files and object stores (gs://) replace it. Make ram:// replace it too."""
    real = gfile.GFile

    class GFile(real):
        def __init__(self, name, mode="r"):
            if "w" in mode and os.fspath(name).startswith("ram://") and gfile.exists(name):
                gfile.remove(name)
            super().__init__(name, mode)

    monkeypatch.setattr(gfile, "GFile", GFile)


@pytest.fixture(scope="module")
def ram_data():
    """Dynamically masked data (so the pipeline reads the vocabulary with the tokenizer)
    prepared locally from 8 Wikipedia articles, then copied to ram://."""
    with tempfile.TemporaryDirectory() as tmp:
        pages = corpus.iter_wikipedia_pages(samples.fetch("enwiki"))  # (the first 8 only)
        docs = list(itertools.islice(filter(None, (corpus.wikitext_to_document(w)
                                                   for _, w in pages)), 8))  # fmt: skip
        pages.close()  # (closes the dump)
        text = corpus.write_text(docs, os.path.join(tmp, "corpus.txt"))
        local = os.path.join(tmp, "prepared")
        prepare.prepare(str(text), local, vocab_size=1000, max_seq_length=SEQ,
                        max_predictions_per_seq=PRED, dupe_factor=2, eval_fraction=0.2,
                        dynamic_masking=True, num_train_files=2)  # fmt: skip
        root = _ram_root()
        _copy_tree(local, root + "/data")
        yield root + "/data"
    gfile.rmtree(root)


@pytest.fixture
def orbax_locally(tmp_path, monkeypatch):
    """Orbax writes through TensorStore, which knows gs:// but not ram://: its checkpoints of a
    ram:// workdir go to a local folder (everything else of the workdir stays on ram://)."""
    real = checkpoints.Checkpointer

    def local(directory, **kw):
        assert directory.startswith("ram://"), directory
        return real(str(tmp_path / "orbax" / directory.removeprefix("ram://")), **kw)

    monkeypatch.setattr(checkpoints, "Checkpointer", local)


def test_run_and_resume_with_workdir_and_data_on_object_store(
    ram_data, orbax_locally, tmp_path, monkeypatch
):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a workdir mistaken for a local path would appear here as ./ram:/
    workdir = _ram_root() + "/run"
    config = small_config(ram_data, num_train_steps=4, checkpoint_every=2, stop_at_step=2)
    config.data.dynamic_masking = True
    first = train.train_and_evaluate(config, workdir, log=lambda s: None)
    assert first["step"] == 2
    for name in ("config.json", "metrics.jsonl", "eval_start.json", "results.json"):
        assert gfile.exists(f"{workdir}/{name}"), name
    assert gfile.glob(f"{workdir}/tensorboard/events.out.tfevents*")
    saved = json.loads(gfile.GFile(f"{workdir}/config.json").read())
    assert saved["data"]["vocab_file"] == f"{ram_data}/vocab.txt"  # not a local copy's path

    config.train.stop_at_step = 0
    lines = []
    second = train.train_and_evaluate(config, workdir, log=lines.append)
    assert any("resumed at step 2" in line for line in lines), lines
    assert second["step"] == 4
    rows = [json.loads(x) for x in gfile.GFile(f"{workdir}/metrics.jsonl").read().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4]
    results = json.loads(gfile.GFile(f"{workdir}/results.json").read())
    assert results["step"] == 4 and results["end"] == second["end"]
    assert "start" in results  # eval_start.json of the first run, read back from ram://
    assert os.listdir(cwd) == []
    gfile.rmtree(workdir.removesuffix("/run"))


@pytest.mark.parametrize("where", ["local", "ram"])
def test_metrics_rewrite_on_resume(where, tmp_path):
    """Restarting at step 3 keeps lines 1..3 (and drops a torn last line), locally and remote."""
    workdir = str(tmp_path / "w") if where == "local" else _ram_root()
    gfile.makedirs(workdir)
    lines = [json.dumps({"step": s, "split": "train", "loss": 1.0 / (s + 1)}) + "\n"
             for s in range(7)]  # fmt: skip
    with gfile.GFile(f"{workdir}/metrics.jsonl", "w") as f:
        f.write("".join(lines) + '{"step": 7, "spl')
    writer = MetricWriter(workdir, start_step=3)
    writer.write(4, "train", {"loss": 0.5})
    writer.close()
    text = gfile.GFile(f"{workdir}/metrics.jsonl").read()
    assert text == "".join(lines[1:4]) + '{"step": 4, "split": "train", "loss": 0.5}\n'
    assert not gfile.exists(f"{workdir}/metrics.jsonl.tmp")
    if where == "ram":
        gfile.rmtree(workdir)


def test_data_checks_read_an_object_store(ram_data):
    """stats.json is read on ram:// as locally: a changed option and a short file are refused."""
    assert inputs.count_vocab(f"{ram_data}/vocab.txt") == len(
        gfile.GFile(f"{ram_data}/vocab.txt").read().splitlines()
    )
    d = small_config(ram_data).data
    d.lowercase = False  # prepared lowercased
    with pytest.raises(ValueError, match="lowercase"):
        prepare.check_built_options(ram_data, d)
    copy = _ram_root()
    _copy_tree(ram_data, copy)
    prepare.check_file_sizes(copy)
    name = sorted(os.path.basename(f) for f in gfile.glob(f"{copy}/train-*.tfrecord"))[0]
    with gfile.GFile(f"{copy}/{name}", "rb") as f:
        data = f.read()
    with gfile.GFile(f"{copy}/{name}", "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"/{name} has {len(data) // 2} bytes"):
        prepare.check_file_sizes(copy)
    gfile.rmtree(copy)


def test_init_checkpoint_optimizer_state_is_sharded_like_params():
    """On a (1, 4, 2) mesh the fresh optimizer state of an init checkpoint is built in the
    params' shardings, never whole on one device."""
    mesh = parallel.make_mesh(1, 4, 2)
    model = BertForPreTraining(CFG)
    tx, _ = optim.make_optimizer(opt_config(), 100)
    state = train.init_state(model, tx, jax.random.PRNGKey(0), S, 4, mesh=mesh)
    init = types.SimpleNamespace(params=jax.device_get(state["params"]))  # as if loaded
    new = train._from_init_checkpoint(state, init, tx, "fake", log=lambda s: None)
    want = parallel.state_shardings(checkpoints.abstract_like(state), mesh)["opt_state"]
    split = 0
    for x, w in zip(jax.tree_util.tree_leaves(new["opt_state"]), jax.tree_util.tree_leaves(want),
                    strict=True):  # fmt: skip
        assert x.sharding.is_equivalent_to(w, x.ndim), (x.sharding, w)
        split += not x.sharding.is_fully_replicated
    assert split > 0  # e.g. mu of the query kernels, split over fsdp and tensor
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(new["opt_state"])),
                    jax.tree_util.tree_leaves(jax.device_get(state["opt_state"])),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)  # a fresh state: the same values as init_state's


def test_paths_that_would_land_on_the_local_disk_are_refused(tmp_path):
    """Fine-tuning and prepare write with local file operations: a gs:// workdir or data.dir
    would have become a local ./gs:/... directory."""
    from bert_jax import finetune_sweep, inputs
    from configs import finetune as finetune_config
    from configs import pretrain

    config = pretrain.get_config("size=tiny")
    config.data.update(corpus="sample:enwiki", dir="gs://bucket/enwiki_128")
    with pytest.raises(ValueError, match=r"data.corpus prepares into a local data.dir, not gs://"):
        inputs.resolve_data(config)
    ft = finetune_config.get_config("task=rotten_tomatoes,minilm")
    with pytest.raises(ValueError, match=r"workdir=gs://bucket/rt: fine-tuning writes"):
        finetune_sweep.run(ft, "gs://bucket/rt", log=lambda s: None)
    assert not (tmp_path / "gs:").exists() and not os.path.exists("gs:")
