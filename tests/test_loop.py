"""The training loop on real (small) pre-training data: resume, logs, the command line."""

import itertools
import json
import os
import pathlib
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from bert_jax import inputs, train
from bert_jax.data import corpus, prepare, samples
from configs import pretrain

SEQ, PRED = 32, 5


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Instances from the first 12 articles of the real Wikipedia sample (a few seconds)."""
    root = tmp_path_factory.mktemp("pretraining_data")
    docs = corpus.read_wikipedia_xml(samples.fetch("enwiki"))[:12]
    text = corpus.write_text(docs, root / "corpus.txt")
    out = root / "prepared"
    prepare.prepare(
        str(text),
        str(out),
        vocab_size=1000,
        max_seq_length=SEQ,
        max_predictions_per_seq=PRED,
        dupe_factor=2,
        eval_fraction=0.2,
    )
    return str(out)


def small_config(data_dir, **train_kw):
    config = pretrain.get_config("size=tiny,demo")
    config.data.corpus = ""
    config.data.dir = data_dir
    config.data.max_seq_length = SEQ
    config.data.max_predictions_per_seq = PRED
    config.data.shuffle_buffer = 100
    config.model.hidden_size = 32
    config.model.num_attention_heads = 2
    config.model.intermediate_size = 64
    config.model.max_position_embeddings = SEQ
    config.train.update(
        batch_size=8,
        eval_batch_size=8,
        num_train_steps=8,
        log_every=2,
        eval_every=100,
        eval_batches=2,
        checkpoint_every=4,
        parallel="jit",
    )
    config.train.update(train_kw)
    config.optimizer.warmup_steps = 2
    return config


def _leaves(state):
    return jax.tree_util.tree_leaves(jax.device_get(state))


def test_resume_equals_uninterrupted_run(data_dir, tmp_path):
    full = train.train_and_evaluate(small_config(data_dir), str(tmp_path / "a"), log=lambda s: None)
    # Same schedule, but the first invocation stops at step 4 (as if the job were killed after
    # its checkpoint); rerunning the same command continues from the workdir.
    part = small_config(data_dir, stop_at_step=4)
    first = train.train_and_evaluate(part, str(tmp_path / "b"), log=lambda s: None)
    assert first["step"] == 4
    lines = []
    second = train.train_and_evaluate(small_config(data_dir), str(tmp_path / "b"), log=lines.append)
    assert any("resumed at step 4" in line for line in lines), lines
    assert second["step"] == full["step"] == 8
    a, b = _leaves(full["state"]), _leaves(second["state"])
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)  # bitwise
    # Dropout is on (0.1): this would fail if the resumed run replayed other rngs or batches.
    assert small_config(data_dir).model.hidden_dropout_prob > 0


def test_workdir_holds_logs_checkpoints_results(data_dir, tmp_path):
    workdir = tmp_path / "run"
    res = train.train_and_evaluate(small_config(data_dir), str(workdir), log=lambda s: None)
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8]
    for key in ("loss", "mlm_accuracy", "nsp_accuracy", "grad_norm", "seqs_per_sec"):
        assert np.isfinite(train_rows[-1][key])
    assert [r["step"] for r in rows if r["split"] == "eval"] == [0, 8]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tensorboard"))
    assert sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()) == [4, 8]
    results = json.loads((workdir / "results.json").read_text())
    assert set(results) >= {"start", "end", "step"}
    assert results["end"] == res["end"]
    assert json.loads((workdir / "config.json").read_text())["train"]["num_train_steps"] == 8


def test_pmap_loop_runs_on_8_devices(data_dir, tmp_path):
    res = train.train_and_evaluate(
        small_config(data_dir, parallel="pmap", num_train_steps=2, log_every=1),
        str(tmp_path / "pmap"),
        log=lambda s: None,
    )
    assert res["step"] == 2 and np.isfinite(res["end"]["loss"])
    # log_every=1: every step has its line, the first one too (its throughput left out, as it
    # includes the compilation).
    rows = [json.loads(x) for x in (tmp_path / "pmap" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert "seqs_per_sec" not in train_rows[0] and np.isfinite(train_rows[1]["seqs_per_sec"])


def test_command_line_with_overrides(data_dir, tmp_path):
    workdir = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "bert_jax.main",
        "--config=configs/pretrain.py:size=tiny",
        f"--workdir={workdir}",
        f"--config.data.dir={data_dir}",
        f"--config.data.max_seq_length={SEQ}",
        f"--config.data.max_predictions_per_seq={PRED}",
        "--config.train.batch_size=8",
        "--config.train.eval_batch_size=8",
        "--config.train.num_train_steps=3",
        "--config.train.log_every=1",
        "--config.train.eval_batches=1",
        "--config.model.num_hidden_layers=1",
        "--config.train.parallel=jit",
    ]
    root = os.path.dirname(os.path.dirname(__file__))
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert all(f"step {i}/3  loss" in out.stdout for i in (1, 2, 3)), out.stdout[-3000:]
    assert json.loads((workdir / "results.json").read_text())["step"] == 3
    bad = subprocess.run(
        [*cmd, "--config.train.batch_sise=8"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert bad.returncode != 0 and "batch_sise" in bad.stderr


def test_init_checkpoint_continues_from_another_run(data_dir, tmp_path):
    first = train.train_and_evaluate(
        small_config(data_dir, num_train_steps=4), str(tmp_path / "a"), log=lambda s: None
    )
    config = small_config(data_dir, num_train_steps=2)
    config.init_checkpoint = str(tmp_path / "a")
    config.model.hidden_size = 64  # ignored: the architecture is the checkpoint's
    lines = []
    second = train.train_and_evaluate(config, str(tmp_path / "b"), log=lines.append)
    assert any("init_checkpoint" in line and "initialised fresh: none" in line for line in lines)
    # Starting from the trained weights, the step-0 eval equals the first run's final eval.
    np.testing.assert_allclose(second["start"]["loss"], first["end"]["loss"], rtol=1e-6)
    assert second["state"]["params"]["bert"]["pooler"]["dense"]["kernel"].shape == (32, 32)
    # A scan_layers run stacks the checkpoint's per-layer weights and starts from the same model.
    config.model.scan_layers = True
    third = train.train_and_evaluate(config, str(tmp_path / "c"), log=lambda s: None)
    np.testing.assert_allclose(third["start"]["loss"], first["end"]["loss"], rtol=1e-5)
    assert "layers" in third["state"]["params"]["bert"]["encoder"]


def test_two_phases_with_dynamic_masking_from_a_corpus(data_dir, tmp_path):
    """data.corpus + dynamic masking + a switch to longer sequences at a step, then resume."""
    config = small_config(data_dir, num_train_steps=6, log_every=1, checkpoint_every=2)
    config.data.corpus = os.path.join(os.path.dirname(data_dir), "corpus.txt")
    config.data.dir = str(tmp_path / "p1")
    config.data.vocab_size = 1000
    config.data.dupe_factor = 1
    config.data.dynamic_masking = True
    config.data.phase2_step = 4
    config.data.phase2_dir = str(tmp_path / "p2")
    config.data.phase2_max_seq_length = 2 * SEQ
    config.data.phase2_max_predictions_per_seq = 2 * PRED
    config.model.max_position_embeddings = 2 * SEQ
    full = train.train_and_evaluate(config, str(tmp_path / "a"), log=lambda s: None)
    assert full["step"] == 6 and np.isfinite(full["end"]["loss"])
    stats = json.loads((tmp_path / "p2" / "stats.json").read_text())
    assert stats["args"]["max_seq_length"] == 2 * SEQ and stats["args"]["dynamic_masking"]
    # Resuming inside phase 2 gives the same result as the uninterrupted run.
    config.train.stop_at_step = 5
    train.train_and_evaluate(config, str(tmp_path / "b"), log=lambda s: None)
    config.train.stop_at_step = 0
    resumed = train.train_and_evaluate(config, str(tmp_path / "b"), log=lambda s: None)
    for x, y in zip(_leaves(full["state"]), _leaves(resumed["state"]), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.max_predictions_per_seq": 40}, "max_predictions_per_seq=40 exceeds"),
        ({"data.max_seq_length": 64}, "max_position_embeddings=32"),
        ({"data.phase2_step": 4, "data.phase2_max_seq_length": 64}, "phase2_max_seq_length=64"),
        (
            {
                "data.phase2_step": 4,
                "data.phase2_max_seq_length": 16,
                "data.phase2_max_predictions_per_seq": 20,
            },
            "phase2_max_predictions_per_seq=20 exceeds",
        ),  # fmt: skip
        (
            {
                "data.phase2_step": 8,
                "data.phase2_max_seq_length": 32,
                "data.phase2_max_predictions_per_seq": 5,
            },
            "phase 2 would never start",
        ),  # fmt: skip
        ({"train.batch_size": 9}, "batch_size=9 is not divisible by the 8 devices"),
        ({"data.pack_sequences": 3, "model.causal": True}, "pack_sequences=3 packs"),
        ({"optimizer.grad_accum_steps": 3}, "num_train_steps=8 is not a multiple of optimizer"),
        ({"optimizer.grad_accum_steps": 4, "train.log_every": 6}, "log_every=6 is not a multiple"),
        (
            {
                "model.attention": "cudnn",
                "model.dtype": "bfloat16",
                "model.attention_probs_dropout_prob": 0.0,
            },
            "attention='cudnn' runs on a GPU",
        ),  # fmt: skip
    ],
)
def test_config_errors_name_the_field(data_dir, overrides, message):
    config = small_config(data_dir)
    config.data.train_files = "x"
    for dotted, value in overrides.items():
        section, field = dotted.split(".")
        config[section][field] = value
    with pytest.raises(ValueError, match=message):
        train.check_config(config, n_devices=8)


def test_prefetch_keeps_order_raises_in_place_and_stops_its_thread():
    seen = []

    def prepare(x):
        seen.append(x)
        if x == 5:
            raise ValueError("bad batch 5")
        return x * 10

    got = []
    with pytest.raises(ValueError, match="bad batch 5"):
        for y in inputs.prefetch(iter(range(8)), 2, prepare):
            got.append(y)
    assert got == [0, 10, 20, 30, 40]  # everything before the bad batch, in order
    assert list(inputs.prefetch(iter(range(4)), 0, lambda x: -x)) == [0, -1, -2, -3]

    def endless():
        yield from itertools.count()

    gen = inputs.prefetch(endless(), 3, lambda x: x)
    assert [next(gen) for _ in range(4)] == [0, 1, 2, 3]
    gen.close()
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())


def test_a_bad_batch_stops_the_run_at_its_step_keeping_checkpoints(data_dir, tmp_path, monkeypatch):
    real = inputs.train_batches

    def with_bad_step_5(config, start_step):
        for step, batch in zip(itertools.count(start_step), real(config, start_step)):
            yield {**batch, "input_ids": batch["input_ids"] + 10_000} if step == 5 else batch

    monkeypatch.setattr(inputs, "train_batches", with_bad_step_5)
    config = small_config(data_dir, num_train_steps=8, checkpoint_every=2)
    with pytest.raises(ValueError, match=r"training batch of step 5: input_ids\["):
        train.train_and_evaluate(config, str(tmp_path), log=lambda s: None)
    saved = sorted(os.listdir(tmp_path / "checkpoints"))
    assert saved[-1] == "4", saved


def test_packed_training_rows_from_the_config(data_dir, tmp_path):
    # 128-token rows, mostly with shorter targets (short_seq_prob 0.8): rows with room to share.
    data = tmp_path / "data"
    prepare.prepare(
        str(pathlib.Path(data_dir).parent / "corpus.txt"),
        str(data),
        vocab_file=os.path.join(data_dir, "vocab.txt"),
        max_seq_length=128,
        max_predictions_per_seq=20,
        short_seq_prob=0.8,
        dupe_factor=1,
        eval_fraction=0.2,
    )

    def config_128(**kw):
        config = small_config(str(data), **kw)
        config.data.update(max_seq_length=128, max_predictions_per_seq=20)
        config.model.max_position_embeddings = 128
        return config

    plain = train.train_and_evaluate(
        config_128(stop_at_step=1), str(tmp_path / "plain"), log=lambda s: None
    )
    config = config_128(num_train_steps=4)
    config.data.pack_sequences = 3
    res = train.train_and_evaluate(config, str(tmp_path / "packed"), log=lambda s: None)
    stats = json.loads((data / "packed3" / "stats.json").read_text())
    assert stats["rows"] < stats["instances"], stats  # (the recipe's rows are mostly full)
    assert stats["token_fill_packed"] > stats["token_fill_unpacked"]
    # Held-out data stays unpacked: same init, same numbers at step 0.
    assert res["start"] == plain["start"]
    assert res["step"] == 4 and np.isfinite(res["end"]["loss"])
    saved = json.loads((tmp_path / "packed" / "config.json").read_text())["data"]
    assert saved["train_files"] == str(data / "packed3" / "train-*.tfrecord")
