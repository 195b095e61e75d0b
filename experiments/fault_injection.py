r"""Fault injection on a tiny pre-training run: kill -9, SIGTERM, corrupt checkpoints, bad input.

    python experiments/fault_injection.py                       # 3 seeds x 3 kills (~10 min)
    python experiments/fault_injection.py --seeds=1 --kills=2   # what the test runs

1. kill -9 at random moments (one kill per run lands while a checkpoint is being written), then
   the same command again, `kills` times per run, for each seed; the final params, optimizer
   state, step and RNG must be bitwise equal to an uninterrupted run of the same seed.
2. SIGTERM once the run is under way: it must save at the next step and exit with status 143;
   rerunning resumes from that step and ends bitwise equal to the uninterrupted run.
3. Corrupt the newest checkpoint of a finished run (a leftover temp dir, an empty step dir, a
   truncated array file, flipped bytes in an array chunk): restoring must detect it and fall back
   to the previous good step; resuming from there must end bitwise equal again.
4. Bad input records (token id >= vocab, a negative id, a masked position past the sequence, an
   NSP label 2, records longer than the config's length): rejected with an error naming them.
Prints one line per check and a summary; exits 1 if any check failed.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags, logging

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS
SEQ, PRED, STEPS = 32, 5, 40
CHECKS = ("kill", "sigterm", "corrupt", "bad_input")


def _define_flags() -> None:
    flags.DEFINE_integer("seeds", 3, "Runs (train.seed 0..seeds-1) for the kill test.")
    flags.DEFINE_integer("kills", 3, "kill -9 per run.")
    flags.DEFINE_string("workdir", "", "Where to work (default: a temporary folder, removed).")
    flags.DEFINE_list("checks", list(CHECKS), f"Which checks to run, of {CHECKS}.")


def prepare_data(root: pathlib.Path) -> pathlib.Path:
    """Pre-training records from the first 12 articles of the Wikipedia sample (seconds)."""
    from bert_jax.data import corpus, prepare, samples  # noqa: PLC0415

    out = root / "data"
    if not (out / "stats.json").exists():
        docs = corpus.read_wikipedia_xml(samples.fetch("enwiki"))[:12]
        text = corpus.write_text(docs, root / "corpus.txt")
        prepare.prepare(str(text), str(out), vocab_size=1000, max_seq_length=SEQ,
                        max_predictions_per_seq=PRED, dupe_factor=2, eval_fraction=0.2)  # fmt: skip
    return out


def overrides(data: pathlib.Path, seed: int) -> list[str]:
    """A tiny model with dropout on, saving every 5 of 40 steps."""
    values = {
        "data.corpus": "", "data.dir": str(data), "data.max_seq_length": SEQ,
        "data.max_predictions_per_seq": PRED, "data.shuffle_buffer": 100,
        "model.hidden_size": 32, "model.num_attention_heads": 2, "model.intermediate_size": 64,
        "model.max_position_embeddings": SEQ, "train.batch_size": 8, "train.eval_batch_size": 8,
        "train.num_train_steps": STEPS, "train.log_every": 5, "train.eval_every": 1000,
        "train.eval_batches": 1, "train.checkpoint_every": 5, "train.keep_checkpoints": 3,
        "train.parallel": "jit", "train.seed": seed, "optimizer.warmup_steps": 4,
    }  # fmt: skip
    return [f"--config.{k}={v}" for k, v in values.items()]


def command(workdir: pathlib.Path, data: pathlib.Path, seed: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bert_jax.main", "--config=configs/pretrain.py:size=tiny,demo",
            f"--workdir={workdir}", *overrides(data, seed), *extra]  # fmt: skip


class Run:
    """A training process whose output lines are collected as they come."""

    def __init__(self, cmd: list[str]):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 300) -> bool:
        end = time.time() + timeout
        while time.time() < end and self.proc.poll() is None:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.01)
        return any(text in line for line in self.lines)

    def finish(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code


def final_state(workdir: pathlib.Path):
    """The newest checkpoint's whole train state, as numpy."""
    import jax  # noqa: PLC0415

    from bert_jax import checkpoints  # noqa: PLC0415

    ckpt = checkpoints.Checkpointer(str(workdir / "checkpoints"), save_every=1, keep=100,
                                    log=lambda s: None)  # fmt: skip
    try:
        step = ckpt.latest_step()
        meta = ckpt.manager.item_metadata(step).tree
        abstract = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), meta)
        return step, jax.device_get(ckpt.restore(abstract))
    finally:
        ckpt.close()


def bitwise_equal(a, b) -> bool:
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def run_to_end(workdir: pathlib.Path, data: pathlib.Path, seed: int) -> Run:
    run = Run(command(workdir, data, seed))
    code = run.finish()
    if code != 0:
        raise RuntimeError(f"run in {workdir} failed ({code}):\n" + "\n".join(run.lines[-20:]))
    return run


def kill_test(root, data, reference, log, *, seeds: int, kills: int) -> tuple[int, int, int]:
    """(kills done, runs bitwise equal, runs)."""
    done_kills, equal = 0, 0
    rng = random.Random(0)
    for seed in range(seeds):
        workdir = root / f"kill_seed{seed}"
        shutil.rmtree(workdir, ignore_errors=True)
        for k in range(kills):
            run = Run(command(workdir, data, seed))
            if not run.wait_for("first step"):
                break  # finished (or failed) before training started: nothing left to kill
            if k == 0:  # while a checkpoint is being written
                pattern = str(workdir / "checkpoints" / "*.orbax-checkpoint-tmp*")
                end = time.time() + 60
                while not glob.glob(pattern) and time.time() < end and run.proc.poll() is None:
                    time.sleep(0.002)
                moment = "during a checkpoint save" if glob.glob(pattern) else "at random"
            else:
                time.sleep(rng.uniform(0.0, 2.0))
                moment = "at random"
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGKILL)
                run.finish()
                done_kills += 1
                steps = [ln for ln in run.lines if ln.startswith("step ")]
                log(f"  seed {seed}: kill -9 {moment} (last progress: "
                    f"{steps[-1].split()[1] if steps else 'none'})")  # fmt: skip
        run_to_end(workdir, data, seed)
        step, state = final_state(workdir)
        same = step == STEPS and bitwise_equal(state, reference[seed])
        equal += same
        log(f"  seed {seed}: resumed to step {step}, bitwise equal: {same}")
    return done_kills, equal, seeds


def sigterm_test(root, data, reference, log) -> bool:
    workdir = root / "sigterm"
    shutil.rmtree(workdir, ignore_errors=True)
    run = Run(command(workdir, data, 0))
    run.wait_for("step 10/")
    run.proc.send_signal(signal.SIGTERM)
    code = run.finish()
    saved = [ln for ln in run.lines if ln.startswith("SIGTERM: saved step")]
    last_step = max((int(ln.split()[1].split("/")[0]) for ln in run.lines
                     if ln.startswith("step ")), default=0)  # fmt: skip
    ok = code == 143 and bool(saved)
    saved_step = int(saved[0].split()[3].rstrip(";")) if saved else -1
    ok = ok and saved_step >= last_step  # nothing reported done was lost
    resumed = Run(command(workdir, data, 0))
    ok = resumed.finish() == 0 and ok
    ok = ok and any(f"resumed at step {saved_step}" in ln for ln in resumed.lines)
    step, state = final_state(workdir)
    same = step == STEPS and bitwise_equal(state, reference[0])
    log(f"  SIGTERM: exit status {code}, saved step {saved_step} (last logged {last_step}); "
        f"resumed from it: {ok}; bitwise equal at the end: {same}")  # fmt: skip
    return ok and same


CORRUPTIONS = ("leftover temp dir", "empty step dir", "truncated file", "flipped bytes")


def corrupt(checkpoints_dir: pathlib.Path, kind: str, step: int | None = None) -> int:
    """Damages the newest checkpoint (or adds a newer bad one; or damages `step`'s files);
    returns the step hit."""
    steps = sorted(int(p.name) for p in checkpoints_dir.iterdir() if p.name.isdigit())
    newest = steps[-1] if step is None else step
    if kind == "leftover temp dir":
        (checkpoints_dir / f"{newest + 5}.orbax-checkpoint-tmp-1234").mkdir()
        return newest + 5
    if kind == "empty step dir":
        (checkpoints_dir / str(newest + 5)).mkdir()
        return newest + 5
    chunks = sorted(glob.glob(str(checkpoints_dir / str(newest) / "**" / "d" / "*"),
                              recursive=True), key=os.path.getsize)  # fmt: skip
    biggest = chunks[-1]
    data = bytearray(pathlib.Path(biggest).read_bytes())
    if kind == "truncated file":
        pathlib.Path(biggest).write_bytes(bytes(data[: len(data) // 3]))
    else:
        for i in range(len(data) // 3, len(data) // 3 + 4):
            data[i] ^= 0xFF
        pathlib.Path(biggest).write_bytes(bytes(data))
    return newest


def corruption_test(root, data, reference, log) -> tuple[int, int]:
    """(corruptions detected and survived bitwise, corruptions)."""
    import jax  # noqa: PLC0415

    from bert_jax import checkpoints  # noqa: PLC0415

    good = 0
    for kind in CORRUPTIONS:
        workdir = root / f"corrupt_{kind.replace(' ', '_')}"
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(root / "reference_seed0", workdir)
        hit = corrupt(workdir / "checkpoints", kind)
        messages = []
        ckpt = checkpoints.Checkpointer(str(workdir / "checkpoints"), save_every=5, keep=3,
                                        log=messages.append)  # fmt: skip
        step = ckpt.latest_step()
        meta = ckpt.manager.item_metadata(ckpt.manager.all_steps()[0]).tree
        abstract = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), meta)
        state = ckpt.restore(abstract)
        ckpt.close()
        restored = int(state["step"]) if state is not None else None
        if kind == "leftover temp dir":  # Orbax removes it; it is never listed as a step
            detected = not glob.glob(str(workdir / "checkpoints" / "*.orbax-checkpoint-tmp*"))
        else:
            detected = any("is corrupt" in m for m in messages)
        # The newest good step: the last one saved, or the one before it if that was damaged.
        newest_good = STEPS if kind in ("leftover temp dir", "empty step dir") else STEPS - 5
        fell_back = restored == newest_good
        # Resume from what is left: the run must end exactly as the uninterrupted one.
        run_to_end(workdir, data, 0)
        end_step, end_state = final_state(workdir)
        same = end_step == STEPS and bitwise_equal(end_state, reference[0])
        ok = detected and fell_back and same
        good += ok
        log(f"  {kind} at step {hit} (latest listed: {step}): detected {detected}, restored step "
            f"{restored}, resumed bitwise equal {same}")  # fmt: skip
    return good, len(CORRUPTIONS)


def bad_input_test(root, data, log) -> tuple[int, int]:
    """(bad inputs rejected with an error naming them, bad inputs)."""
    import numpy as np  # noqa: PLC0415

    from bert_jax import inputs, train  # noqa: PLC0415
    from bert_jax.data import records  # noqa: PLC0415
    from configs import pretrain  # noqa: PLC0415

    vocab = inputs.count_vocab(data / "vocab.txt")
    rng = np.random.default_rng(0)

    def batch(seq: int = SEQ, n: int = 16) -> dict:
        return {
            "input_ids": rng.integers(5, vocab, (n, seq)), "input_mask": np.ones((n, seq), int),
            "segment_ids": np.zeros((n, seq), int),
            "masked_lm_positions": np.tile(np.arange(1, PRED + 1), (n, 1)),
            "masked_lm_ids": rng.integers(5, vocab, (n, PRED)),
            "masked_lm_weights": np.ones((n, PRED), np.float32),
            "next_sentence_labels": np.zeros((n, 1), int),
        }  # fmt: skip

    def put(b, name, index, value):
        b[name][index] = value  # every row: whichever rows the first batch draws, it is there
        return b

    # (what, records, text the error must contain); records go through the whole loop.
    cases = [
        (
            f"token id {vocab} (= vocab size)",
            put(batch(), "input_ids", np.s_[:, 7], vocab),
            f"= {vocab} is outside",
        ),
        (
            f"masked position {SEQ}",
            put(batch(), "masked_lm_positions", np.s_[:, 2], SEQ),
            f"= {SEQ} is outside",
        ),
        ("NSP label 2", put(batch(), "next_sentence_labels", np.s_[:, 0], 2), "= 2 is outside"),
        (f"records of length {2 * SEQ}", batch(seq=2 * SEQ), f"length {2 * SEQ}"),
    ]
    rejected = 0
    for i, (name, bad, expect) in enumerate(cases):
        bad_dir = root / f"bad_input_{i}"
        shutil.rmtree(bad_dir, ignore_errors=True)
        bad_dir.mkdir(parents=True)
        shutil.copy(data / "vocab.txt", bad_dir / "vocab.txt")
        shutil.copy(data / "eval.tfrecord", bad_dir / "eval.tfrecord")
        with records.RecordWriter(bad_dir / "train-00000-of-00001.tfrecord") as w:
            w.write_batch(bad)
        config = pretrain.get_config("size=tiny,demo")
        config.data.update(corpus="", dir=str(bad_dir), max_seq_length=SEQ,
                           max_predictions_per_seq=PRED)  # fmt: skip
        config.model.update(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=SEQ)  # fmt: skip
        config.train.update(batch_size=8, eval_batch_size=8, eval_batches=1, num_train_steps=2,
                            parallel="jit")  # fmt: skip
        try:
            train.train_and_evaluate(config, str(bad_dir / "run"), log=lambda s: None)
            log(f"  {name}: NOT rejected")
        except Exception as e:  # noqa: BLE001 (any error naming the value counts; shown)
            message = " ".join(str(e).split())[:300]
            rejected += expect in message
            log(f"  {name}: {type(e).__name__}: {message}")
    # A negative id cannot be written as a record (varints are unsigned): checked on a batch.
    try:
        inputs.check_batch(put(batch(), "input_ids", np.s_[:, 4], -1), vocab, "a batch")
        log("  negative token id: NOT rejected")
    except ValueError as e:
        rejected += "-1" in str(e)
        log(f"  negative token id: ValueError: {e}")
    return rejected, len(cases) + 1


def run_checks(root: pathlib.Path, checks, seeds: int, kills: int, log=print) -> dict:
    """Runs the chosen checks in `root`; returns the summary (with "ok": all passed)."""
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {CHECKS}.")
    started = time.time()
    data = prepare_data(root)
    reference = {}
    for seed in range(max(seeds, 1) if {"kill", "sigterm", "corrupt"} & set(checks) else 0):
        workdir = root / f"reference_seed{seed}"
        shutil.rmtree(workdir, ignore_errors=True)
        run_to_end(workdir, data, seed)
        reference[seed] = final_state(workdir)[1]
    summary, ok = {}, True
    if "kill" in checks:
        log("1. kill -9 and restart")
        done, equal, runs = kill_test(root, data, reference, log, seeds=seeds, kills=kills)
        summary.update(kills_survived=done, resumes_bitwise_equal=f"{equal} of {runs}")
        ok &= equal == runs
    if "sigterm" in checks:
        log("2. SIGTERM")
        summary["sigterm_saved_and_resumed_bitwise"] = sigterm_test(root, data, reference, log)
        ok &= summary["sigterm_saved_and_resumed_bitwise"]
    if "corrupt" in checks:
        log("3. corrupt checkpoints")
        detected, n = corruption_test(root, data, reference, log)
        summary["corrupt_checkpoints_detected"] = f"{detected} of {n}"
        ok &= detected == n
    if "bad_input" in checks:
        log("4. bad inputs")
        rejected, n = bad_input_test(root, data, log)
        summary["bad_inputs_rejected"] = f"{rejected} of {n}"
        ok &= rejected == n
    return {**summary, "seconds": round(time.time() - started), "ok": bool(ok)}


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save and restore at INFO
    root = pathlib.Path(FLAGS.workdir or tempfile.mkdtemp(prefix="bert_jax_faults_"))
    root.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO)
    try:
        summary = run_checks(root, FLAGS.checks, FLAGS.seeds, FLAGS.kills)
        print(json.dumps(summary))
        if not summary["ok"]:
            sys.exit(1)
    finally:
        if not FLAGS.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
