"""The jit + mesh path on 8 fake CPU devices: the sharding table, the step on data / fsdp /
tensor meshes equal to the single-device and pmap steps, checkpoints restored on other
topologies, and two real processes (jax.distributed) training like one."""

import dataclasses
import functools
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bert_jax import checkpoints, inputs, optim, parallel, train
from bert_jax.heads import BertForPreTraining
from tests.test_train import CFG, S, fake_batch, opt_config

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 2


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


def _run(mode, mesh=None, config=CFG, steps=STEPS):
    model = BertForPreTraining(config)
    tx, _ = optim.make_optimizer(opt_config(), 100)
    state = train.init_state(model, tx, jax.random.PRNGKey(0), S, 4, mesh=mesh)
    par = parallel.Parallel(
        mode,
        functools.partial(train.train_step, model=model, optimizer=tx),
        functools.partial(train.eval_step, model=model),
        mesh=mesh,
        abstract_state=checkpoints.abstract_like(state),
    )
    state = par.put_state(state)
    losses = []
    for i in range(steps):
        state, m = par.train(state, par.put_batch(fake_batch(batch=16, seed=i)))
        losses.append(float(par.get_metrics(m)["loss"]))
    return par.get_state(state), losses


@pytest.fixture(scope="module")
def references():
    """The single-device (jit) and 8-device pmap runs the mesh runs must equal."""
    return _run("jit"), _run("pmap")


@pytest.mark.parametrize("shape", [(8, 1, 1), (4, 2, 1), (2, 1, 4)], ids=str)
def test_mesh_step_equals_single_device_and_pmap(shape, references):
    (ref_state, ref_losses), (pmap_state, pmap_losses) = references
    state, losses = _run("mesh", parallel.make_mesh(*shape))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    np.testing.assert_allclose(pmap_losses, ref_losses, rtol=1e-5)
    for a, b, c in zip(_leaves(state["params"]), _leaves(ref_state["params"]),
                       _leaves(pmap_state["params"]), strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        np.testing.assert_allclose(c, b, atol=1e-5, rtol=0)
    # The layout is the table's: a query kernel is split over fsdp and tensor where they exist.
    q = state["params"]["bert"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]
    want = P("fsdp" if shape[1] > 1 else None, "tensor" if shape[2] > 1 else None)
    assert q.sharding.spec == want


def test_mesh_with_dropout_equals_single_device():
    """Random bits do not depend on the sharding (threefry is partitionable)."""
    config = dataclasses.replace(CFG, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.1)
    ref_state, ref_losses = _run("jit", config=config)
    state, losses = _run("mesh", parallel.make_mesh(4, 2, 1), config=config)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for a, b in zip(_leaves(state), _leaves(ref_state), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_several_processes_never_run_jit_alone_nor_a_mesh_that_splits_a_batch_slice(monkeypatch):
    """With several processes, 'auto' is the mesh even on one device each ('jit' would train
    one model per process, a pmap state cannot be saved by several), 'jit' and 'pmap' are
    refused, fine-tuning (no mesh) is refused, and so is a mesh whose batch axes are not a
    multiple of the processes (each process feeds its own rows)."""
    assert parallel.resolve("auto") == "pmap"  # 8 fake devices here
    with pytest.raises(ValueError, match="'mesh' is for pre-training"):
        parallel.resolve("mesh", mesh_ok=False)
    monkeypatch.setattr(jax, "local_device_count", lambda: 1)
    assert parallel.resolve("auto") == "jit" and parallel.resolve("jit") == "jit"
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert parallel.resolve("auto") == "mesh" and parallel.resolve("mesh") == "mesh"
    for mode in ("jit", "pmap"):
        with pytest.raises(ValueError, match="each would train a separate model"):
            parallel.resolve(mode)
    for mode in ("auto", "jit"):
        with pytest.raises(ValueError, match=rf"parallel='{mode}'.*this run has 2: start it"):
            parallel.resolve(mode, mesh_ok=False)
    assert parallel.batch_divisor("mesh", parallel.make_mesh(4, 1, 2)) == 4
    with pytest.raises(ValueError, match=r"data x fsdp = 1\) are not a multiple of the 2"):
        parallel.batch_divisor("mesh", parallel.make_mesh(1, 1, 8))


def test_sharding_table():
    mesh = parallel.make_mesh(2, 2, 2)
    model = BertForPreTraining(CFG)
    tx, _ = optim.make_optimizer(opt_config(), 100)
    state = jax.eval_shape(lambda: train.init_state(model, tx, jax.random.PRNGKey(0), S, 4))
    specs = parallel.describe(parallel.state_shardings(state, mesh))
    layer = "bert.encoder.layer_0."
    assert specs[layer + "attention.self.query.kernel"] == str(P("fsdp", "tensor"))
    assert specs[layer + "attention.self.query.bias"] == str(P("tensor"))
    assert specs[layer + "attention.output.dense.kernel"] == str(P("tensor", "fsdp"))
    assert specs[layer + "intermediate.dense.kernel"] == str(P("fsdp", "tensor"))
    assert specs[layer + "output.dense.kernel"] == str(P("tensor", "fsdp"))
    assert specs[layer + "output.LayerNorm.scale"] == str(P())
    assert specs["bert.embeddings.word_embeddings.embedding"] == str(P("tensor", "fsdp"))
    assert specs["cls.predictions.output_bias"] == str(P("tensor"))
    # Adam moments follow their weight; the step counter is replicated.
    sh = parallel.state_shardings(state, mesh)
    mu = sh["opt_state"][1][0].mu["bert"]["encoder"]["layer_0"]["attention"]["self"]["query"]
    assert mu["kernel"].spec == P("fsdp", "tensor")
    assert sh["step"].spec == P()
    # scan_layers stacks the layers: the leading layer axis is never split.
    stacked = "bert.encoder.layers.layer."
    assert parallel.param_spec(stacked + "attention.self.query.kernel", (2, 32, 32), mesh) == P(
        None, "fsdp", "tensor"
    )
    assert parallel.param_spec(stacked + "output.dense.kernel", (2, 64, 32), mesh) == P(
        None, "tensor", "fsdp"
    )
    # A dimension the axis does not divide stays whole: vocab 64 on tensor=3 is not split.
    odd = parallel.make_mesh(2, 1, 4, devices=jax.devices()[:8])
    assert parallel.param_spec("bert.embeddings.word_embeddings.embedding", (66, 32), odd) == P(
        None, None
    )
    with pytest.raises(ValueError, match="does not fit 8 devices"):
        parallel.make_mesh(3, 1, 1)


def test_checkpoint_saved_on_the_mesh_restores_on_1_2_4_devices_and_pmap(tmp_path):
    state, _ = _run("mesh", parallel.make_mesh(4, 2, 1), steps=1)
    ckpt = checkpoints.Checkpointer(str(tmp_path / "ckpt"), save_every=1, keep=1)
    ckpt.save(1, state, force=True)
    ckpt.close()
    saved = _leaves(state)
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    layouts = {
        "1 device": jax.tree_util.tree_map(lambda _: one, state),
        "2 devices": parallel.state_shardings(
            state, parallel.make_mesh(1, 2, 1, devices=jax.devices()[:2])
        ),
        "4 devices": parallel.state_shardings(
            state, parallel.make_mesh(2, 1, 2, devices=jax.devices()[:4])
        ),
        "8 devices, fsdp x tensor": parallel.state_shardings(state, parallel.make_mesh(1, 4, 2)),
    }
    for name, shardings in layouts.items():
        target = jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
        )
        ckpt = checkpoints.Checkpointer(str(tmp_path / "ckpt"), save_every=1, keep=1)
        restored = ckpt.restore(target)
        ckpt.close()
        devices = {len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(restored)}
        assert max(devices) == {"1 device": 1, "2 devices": 2, "4 devices": 4}.get(name, 8), name
        for a, b in zip(_leaves(restored), saved, strict=True):
            np.testing.assert_array_equal(a, b)
    # The pmap path checkpoints one unreplicated copy: the same restore target as "1 device".
    pmap_par = parallel.Parallel("pmap", lambda s, b, axis_name=None: (s, {}), lambda p, b: p)
    replicated = pmap_par.put_state(restored)
    for a, b in zip(_leaves(pmap_par.get_state(replicated)), saved, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("parallel", "devices", "expect"),
    [("mesh", 2, "mesh on 4 device(s) of 2 process(es), mesh {'data': 4, 'fsdp': 1, 'tensor': 1}"),
     ("auto", 1, "mesh on 2 device(s) of 2 process(es), mesh {'data': 2, 'fsdp': 1, 'tensor': 1}")],
)  # fmt: skip
def test_two_processes_train_like_one(tmp_path, parallel, devices, expect):
    """Two jax.distributed processes on this machine (gloo collectives): mesh data=4 on 2 CPU
    devices each, and the default parallel='auto' on one device each (which must not train two
    separate models with jit: it resolves to the mesh). Each reads its own half of the files;
    the final params equal one process's steps on the two halves put together."""
    from bert_jax.data import corpus, prepare, samples
    from tests.test_loop import small_config  # a tiny config on real prepared data

    docs = corpus.read_wikipedia_xml(samples.fetch("enwiki"))[:12]
    text = corpus.write_text(docs, tmp_path / "corpus.txt")
    data = tmp_path / "data"
    prepare.prepare(str(text), str(data), vocab_size=1000, max_seq_length=32,
                    max_predictions_per_seq=5, dupe_factor=2, eval_fraction=0.2,
                    num_train_files=4)  # fmt: skip
    steps = 4
    overrides = {
        "data.corpus": "", "data.dir": str(data), "data.max_seq_length": 32,
        "data.max_predictions_per_seq": 5, "data.shuffle_buffer": 100, "model.hidden_size": 32,
        "model.num_attention_heads": 2, "model.intermediate_size": 64,
        "model.max_position_embeddings": 32, "train.batch_size": 8, "train.eval_batch_size": 8,
        "train.num_train_steps": steps, "train.log_every": 2, "train.eval_every": 100,
        "train.eval_batches": 1, "train.checkpoint_every": 100, "train.parallel": parallel,
        "optimizer.warmup_steps": 2,
    }  # fmt: skip
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bert_jax.main", "--config=configs/pretrain.py:size=tiny,demo",
             f"--workdir={tmp_path / 'run'}", f"--coordinator_address=127.0.0.1:{port}",
             "--num_processes=2", f"--process_id={i}",
             *[f"--config.{k}={v}" for k, v in overrides.items()]],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    assert expect in outs[0], outs[0][-3000:]
    assert "step 4/4" in outs[0] and "step 4/4" not in outs[1]  # only process 0 logs

    # One process, the same global batches: each host's rows (its own files), host 0 first.
    from bert_jax import inputs

    config = small_config(str(data))
    for k, v in overrides.items():
        section, field = k.split(".")
        config[section][field] = v
    config = inputs.resolve_data(config)
    halves = [inputs.train_batches(config, 0, shard=(i, 2)) for i in range(2)]
    batches = [
        {k: np.concatenate([a[k], b[k]]) for k in a}
        for a, b in zip(*[[next(h) for _ in range(steps)] for h in halves], strict=True)
    ]
    seen = [set(map(bytes, b["input_ids"][:4])) for b in batches] + [
        set(map(bytes, b["input_ids"][4:])) for b in batches
    ]
    assert not seen[0] & seen[steps]  # the two hosts' rows differ
    model_cfg = train.model_config(config, config.data.vocab_file)
    model = BertForPreTraining(model_cfg)
    tx, _ = optim.make_optimizer(config.optimizer, steps)
    state = train.init_state(model, tx, jax.random.PRNGKey(0), 32, 5)
    step = jax.jit(functools.partial(train.train_step, model=model, optimizer=tx))
    for b in batches:
        state, _ = step(state, b)
    ckpt = checkpoints.Checkpointer(str(tmp_path / "run" / "checkpoints"), save_every=1, keep=1)
    restored = ckpt.restore(checkpoints.abstract_like(state))
    ckpt.close()
    assert int(restored["step"]) == steps
    for a, b in zip(_leaves(restored["params"]), _leaves(state["params"]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["step"] == steps


def test_hosts_with_fewer_eval_batches_pad_in_lockstep():
    """Three simulated hosts with 3, 1 and 0 eval batches each run 3 evaluation steps: every
    host takes part in every collective step, the short ones with filler batches."""
    counts, filler = (3, 1, 0), {"example_weights": np.zeros(2)}
    barrier, flags, lock = threading.Barrier(len(counts)), [], threading.Lock()

    def any_host(flag):  # an all-gather: every host calls it, each sees all flags
        with lock:
            flags.append(flag)
        barrier.wait()
        seen = list(flags[-len(counts) :])
        barrier.wait()
        return any(seen)

    got = [None] * len(counts)

    def host(i):
        batches = [{"example_weights": np.ones(2), "i": (i, j)} for j in range(counts[i])]
        got[i] = list(inputs.in_lockstep(batches, filler, any_host))

    threads = [threading.Thread(target=host, args=(i,)) for i in range(len(counts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert [len(g) for g in got] == [3, 3, 3]
    assert [b.get("i") for b in got[0]] == [(0, 0), (0, 1), (0, 2)]
    assert got[1][0]["i"] == (1, 0) and got[1][1] is filler and got[1][2] is filler
    assert all(b is filler for b in got[2])


def test_fsdp_keeps_the_activations_split_by_example():
    """FSDP shards weights; the activations must stay split over the batch. Left to XLA, a
    (1, 8, 1) mesh split layer outputs along the hidden size and held the whole global batch's
    activations on every device: 39.9 MB of temporaries per device here, against 12.5 MB for
    data parallelism (BERT-base, batch 128: 9.7 GB against 2.9)."""
    import jax.numpy as jnp

    from bert_jax.model import BertConfig

    config = BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=64)  # fmt: skip
    model = BertForPreTraining(config)
    tx, _ = optim.make_optimizer(opt_config(), 100)
    seq, pred, batch = 64, 8, 64
    state = jax.eval_shape(lambda: train.init_state(model, tx, jax.random.PRNGKey(0), seq, pred))

    def spec(*shape, dtype=jnp.int32):
        return jax.ShapeDtypeStruct(shape, dtype)

    rows = {"input_ids": spec(batch, seq), "input_mask": spec(batch, seq),
            "segment_ids": spec(batch, seq), "masked_lm_positions": spec(batch, pred),
            "masked_lm_ids": spec(batch, pred), "next_sentence_labels": spec(batch),
            "masked_lm_weights": spec(batch, pred, dtype=jnp.float32)}  # fmt: skip
    temp = {}
    for shape in [(8, 1, 1), (1, 8, 1)]:
        par = parallel.Parallel(
            "mesh",
            functools.partial(train.train_step, model=model, optimizer=tx),
            functools.partial(train.eval_step, model=model),
            mesh=parallel.make_mesh(*shape),
            abstract_state=state,
        )
        temp[shape] = par.train.lower(state, rows).compile().memory_analysis().temp_size_in_bytes
    data, fsdp = temp[8, 1, 1] / 1e6, temp[1, 8, 1] / 1e6
    print(f"\ntemporaries per device: data parallel {data:.2f} MB, fsdp {fsdp:.2f} MB")
    assert temp[1, 8, 1] < 1.25 * temp[8, 1, 1]
