"""Sweeps (configs/sweeps/) expand to valid configs; the launcher skips finished jobs, reruns
failed and interrupted ones, respects dependencies, writes cluster scripts; a real two-job sweep
(pre-training, then fine-tuning from it) runs end to end into a paper table."""

import dataclasses
import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from bert_jax import finetune, train
from configs.sweeps import common, table8

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import cluster_scripts  # noqa: E402
import launch  # noqa: E402
import paper_tables  # noqa: E402

SWEEPS = [
    "table5.py:profile=mini",
    "table5.py:profile=paper,corpus=wiki.xml.bz2",
    "table6.py:profile=mini",
    "table6.py:profile=paper,corpus=wiki.xml.bz2",
    "table7.py:profile=mini",
    "table7.py:profile=paper,init=/ckpt/bert-base-uncased",
    "table8.py:profile=mini,seeds=2",
    "table8.py:profile=paper,corpus=wiki.xml.bz2",
    "finetune_grid.py:task=rte,seeds=3",
    "finetune_grid.py:task=rotten_tomatoes,mini",
    "table1.py:init=/ckpt/bert-base-uncased,swag_dir=/data/swag",
    "table1.py:init=/ckpt/bert-base-uncased,seeds=2,skip=squad2",
]


def _config(job: common.Job, root: pathlib.Path):
    """The job's config as bert_jax.main would build it: the file's get_config(arg), then every
    override set with ml_collections' type checks (a typo or a wrong type raises)."""
    path, _, arg = job.config.partition(":")
    spec = importlib.util.spec_from_file_location("cfg", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    for cmd_arg in launch.command(job, root)[5:]:
        key, _, text = cmd_arg.removeprefix("--config.").partition("=")
        *sections, field = key.split(".")
        node = config
        for s in sections:
            node = node[s]
        assert field in node, f"{job.name}: no field {key}"
        old = node[field]
        value = _parse(text, old)
        node[field] = value  # ConfigDict refuses a value of another type
    return config


def _parse(text: str, like):
    if isinstance(like, bool):
        return {"true": True, "false": False}[text]
    if isinstance(like, tuple):
        return tuple(eval(text))  # what ml_collections does for tuples: a literal
    return type(like)(text)


@pytest.mark.parametrize("spec", SWEEPS)
def test_every_sweep_expands_to_valid_configs(spec, tmp_path):
    sweep = launch.load_sweep(f"configs/sweeps/{spec}")
    assert sweep.jobs and sweep.table.rows and sweep.table.columns
    filled = set()
    for job in sweep.jobs:
        config = _config(job, tmp_path)
        if "task" in config:  # fine-tuning: the head options build
            finetune.head_input(config)
            if job.after:  # starts from the pre-training job's workdir
                assert config.init_checkpoint == str(tmp_path / job.after[0])
        else:  # pre-training: the model builds and the config passes the loop's checks
            fields = {k: v for k, v in config.model.items() if k != "size"}
            train.BertConfig.from_dict({**fields, "vocab_size": fields["vocab_size"] or 30522})
            config.data.train_files = config.data.train_files or "train-*.tfrecord"
            train.check_config(config, 1)
        filled |= {(c.row, c.column) for c in job.cells}
    # Every row of the table gets at least one of our numbers, but the paper's own rows.
    assert {r for r, _ in filled} == set(sweep.table.rows) - set(sweep.table.paper_rows)
    json.dumps(common.to_dict(sweep))  # sweep.json is writable


def test_table_sizes_follow_the_paper():
    sweep = launch.load_sweep("configs/sweeps/table6.py:profile=mini")
    sizes = [
        (
            j.overrides["model.num_hidden_layers"],
            j.overrides["model.hidden_size"],
            j.overrides["model.num_attention_heads"],
        )
        for j in sweep.jobs
        if j.name.startswith("pretrain_") and "/" not in j.name
    ]
    assert sizes == [(1, 96, 3), (2, 96, 1), (2, 96, 3), (4, 96, 3), (4, 128, 4), (8, 128, 4)]
    # Each size at its best fine-tuning learning rate on dev (a grid inside each job).
    grids = {j.overrides["sweep.learning_rate"] for j in sweep.jobs if "/" in j.name}
    assert grids == {(1e-3, 3e-4)}
    paper = launch.load_sweep("configs/sweeps/table6.py:profile=paper,corpus=x")
    assert paper.jobs[0].overrides["model.hidden_size"] == 768
    # The paper's two phases: 90% of the steps at length 128, then 512 (SQuAD fine-tunes at 384).
    first = paper.jobs[0].overrides
    assert first["train.num_train_steps"] == 1_000_000 and first["data.phase2_step"] == 900_000
    assert first["data.phase2_dir"] == first["data.dir"] + "_512"
    with pytest.raises(ValueError, match="profile=paper needs corpus="):
        launch.load_sweep("configs/sweeps/table8.py:profile=paper")
    with pytest.raises(ValueError, match="unknown config arg 'sed'"):
        launch.load_sweep("configs/sweeps/table8.py:sed=1")


@pytest.mark.parametrize("table", ["table5", "table6", "table8"])
def test_mini_tables_share_one_pretraining_recipe(table, tmp_path):
    """Tables 5, 6 and 8 mini pre-train with common.MINI_RECIPE (32-token rows, the recipe that
    leaves the unigram plateau) and fine-tune at that length; each varies only its own factor."""
    sweep = launch.load_sweep(f"configs/sweeps/{table}.py:profile=mini")
    pre = [j for j in sweep.jobs if "/" not in j.name]
    fine = [j for j in sweep.jobs if "/" in j.name]
    varied = {"table5": {"data.next_sentence"}, "table6": set(), "table8": set()}[table]
    for job in pre:
        config = _config(job, tmp_path)
        for key, value in common.MINI_RECIPE.items():
            section, field = key.split(".")
            if key not in varied:
                assert config[section][field] == value, (job.name, key)
    if table == "table5":
        nsp = {j.name: _config(j, tmp_path).data.next_sentence for j in pre}
        assert nsp == {"pretrain_mlm_nsp": True, "pretrain_mlm": False, "pretrain_ltr": False}
    if table == "table8":
        mixes = tuple(_config(j, tmp_path).data.masking_split for j in pre)
        assert mixes == table8.MIXES
    assert {_config(j, tmp_path).task.max_seq_length for j in fine} == {32}


@pytest.mark.parametrize("table", ["table5", "table6", "table8"])
def test_mini_tables_matmul_precision_is_one_argument(table, tmp_path):
    """Every job of a mini table, pre-training and fine-tuning, runs with bf16 matmuls by default
    and with float32 ones under `matmul=float32`; the table's notes say which."""
    for matmul, on in (("", True), (",matmul=float32", False)):
        sweep = launch.load_sweep(f"configs/sweeps/{table}.py:profile=mini{matmul}")
        assert {_config(j, tmp_path).model.bf16_matmul for j in sweep.jobs} == {on}
        assert ("bfloat16" in sweep.table.notes[-1]) == on
    with pytest.raises(ValueError, match="matmul='fp16'; use 'bf16' or 'float32'"):
        launch.load_sweep(f"configs/sweeps/{table}.py:profile=mini,matmul=fp16")


def test_sweep_refuses_unknown_dependencies():
    table = common.Table("t", "T", "r", ("a",), ("c",), {})
    with pytest.raises(ValueError, match="without waiting"):
        common.Sweep(
            "s", table, (common.Job("x", "c.py"), common.Job("y", "c.py", {"i": "{job:x}"}))
        )
    with pytest.raises(ValueError, match="unknown jobs"):
        common.Sweep("s", table, (common.Job("y", "c.py", after=("x",)),))
    with pytest.raises(ValueError, match="not a cell"):
        common.Sweep("s", table, (common.Job("y", "c.py", cells=(common.Cell("b", "c", "m"),)),))


# --------------------------------------------------------------------------- the launcher


def _fake_jobs():
    return [
        common.Job("a", "configs/pretrain.py", {"train.seed": 1}),
        common.Job("b", "configs/pretrain.py", {"train.seed": 2}),
        common.Job("c", "configs/finetune.py", {"init_checkpoint": "{job:b}"}, after=("b",)),
    ]


def test_launcher_skips_done_reruns_failed_and_blocks_dependents(tmp_path, monkeypatch):
    """Jobs are stand-in scripts: they count their runs, and "b" fails the first time."""
    real = launch.command

    def fake(job, root, multihost=False):
        script = (
            "import pathlib, sys; p = pathlib.Path(sys.argv[1]) / 'runs'; "
            "n = int(p.read_text()) + 1 if p.exists() else 1; p.write_text(str(n)); "
            "sys.exit(1 if sys.argv[2] == 'b' and n == 1 else 0)"
        )
        return [sys.executable, "-c", script, str(root / job.name), job.name, *real(job, root)[3:]]

    monkeypatch.setattr(launch, "command", fake)
    jobs, log = _fake_jobs(), []
    status = launch.run_jobs(tmp_path, jobs, set(), parallel=2, log=log.append)
    assert status == {"a": "done", "b": "failed", "c": "blocked"}
    record = json.loads((tmp_path / "b" / "launch.json").read_text())
    assert record["status"] == "failed" and record["returncode"] == 1
    assert record["git_commit"] and record["wall_seconds"] is not None

    # Rerun: "a" is done (skipped), "b" is rerun, then "c" runs once "b" is done.
    done = {j.name for j in jobs if launch.is_done(tmp_path, j)}
    assert done == {"a"}
    todo = [j for j in jobs if j.name not in done]
    status = launch.run_jobs(tmp_path, todo, done, parallel=1, log=log.append)
    assert status == {"b": "done", "c": "done"}
    runs = {n: int((tmp_path / n / "runs").read_text()) for n in "abc"}
    assert runs == {"a": 1, "b": 2, "c": 1}
    # A job left "running" by a killed launcher is not done: it is rerun (and resumes).
    (tmp_path / "a" / "launch.json").write_text(json.dumps({"status": "running"}))
    assert not launch.is_done(tmp_path, jobs[0])
    # A job whose command the sweep has since changed is an error, not a silent skip; nor, if
    # it failed or was interrupted, a rerun that would resume its checkpoints under another
    # configuration.
    changed = common.Job("a", "configs/pretrain.py", {"train.seed": 9})
    monkeypatch.setattr(launch, "command", real)
    for state in ("done", "failed", "running"):
        (tmp_path / "a" / "launch.json").write_text(
            json.dumps({"status": state, "command": real(jobs[0], tmp_path)})
        )
        with pytest.raises(ValueError, match=rf"has a run \({state}\) .* another command"):
            launch.is_done(tmp_path, changed)


def test_a_stopped_launcher_stops_its_jobs_and_records_them(tmp_path, monkeypatch):
    """SIGTERM or Ctrl-C to the launcher reaches the running jobs (which save and exit) and
    leaves them recorded failed, not "running" with the job still alive."""
    started = tmp_path / "started"

    def fake(job, root, multihost=False):
        script = (
            "import pathlib, signal, sys, time; pathlib.Path(sys.argv[1]).touch(); "
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143)); time.sleep(60)"
        )
        return [sys.executable, "-c", script, str(started)]

    monkeypatch.setattr(launch, "command", fake)
    real_poll, log, interrupted = subprocess.Popen.poll, [], []

    def poll(self):  # the launcher is interrupted (once) when the job is up
        if started.exists() and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        return real_poll(self)

    monkeypatch.setattr(subprocess.Popen, "poll", poll)
    with pytest.raises(KeyboardInterrupt):
        launch.run_jobs(tmp_path, _fake_jobs()[:1], set(), log=log.append)
    record = json.loads((tmp_path / "a" / "launch.json").read_text())
    assert record["status"] == "failed" and record["returncode"] == 143, record
    assert any("[stopped] a" in m for m in log), log


def test_dry_runs_and_refused_sweeps_write_nothing(tmp_path):
    """A preview (--dry_run) or a sweep refused for a changed command leaves sweep.json as it
    was: it labels the tables of the results already there."""
    root = tmp_path / "root"
    spec = "configs/sweeps/table8.py:profile=mini"
    out = subprocess.run(
        [sys.executable, "experiments/launch.py", f"--sweep={spec}", f"--root={root}",
         "--dry_run"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "to run" in out.stdout and not root.exists()
    # A workdir holding a failed run of another command: refused before anything is written.
    first = launch.load_sweep(spec).jobs[0].name
    (root / first).mkdir(parents=True)
    other = {"status": "failed", "command": ["python", "-m", "bert_jax.main", "--config=x.py"]}
    (root / first / "launch.json").write_text(json.dumps(other))
    refused = subprocess.run(
        [sys.executable, "experiments/launch.py", f"--sweep={spec}", f"--root={root}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "another command" in refused.stderr, refused.stderr[-2000:]
    assert sorted(p.name for p in root.iterdir()) == [first.split("/")[0]]  # no sweep.json


def test_cluster_scripts(tmp_path):
    jobs = _fake_jobs()
    paths = cluster_scripts.emit_slurm(
        tmp_path, "configs/sweeps/x.py:a=1", jobs, "--gres=gpu:8 --nodes=2"
    )
    names = {p.name for p in paths}
    assert names == {"stage0.jobs", "stage0.sbatch", "stage1.jobs", "stage1.sbatch", "submit.sh"}
    assert (tmp_path / "slurm" / "stage0.jobs").read_text() == "a\nb\n"
    sbatch = (tmp_path / "slurm" / "stage1.sbatch").read_text()
    assert "#SBATCH --array=0-0" in sbatch and "#SBATCH --nodes=2" in sbatch
    assert "--multihost" in sbatch
    # Array task i runs the stage's job i, named in the script itself (sbatch copies it at
    # submission), and a task without a job stops instead of running the whole sweep.
    stage0 = (tmp_path / "slurm" / "stage0.sbatch").read_text()
    assert "jobs=(a b)" in stage0
    pick = stage0[stage0.index("jobs=(") : stage0.index("srun ")]  # the lines that pick the job
    for task, want in ((0, "a\n"), (1, "b\n"), (2, "")):
        env = {"SLURM_ARRAY_TASK_ID": str(task), "PATH": os.environ["PATH"]}
        run = subprocess.run(["bash", "-euc", pick + 'echo "$job"'], env=env, check=False,
                             capture_output=True, text=True)  # fmt: skip
        assert run.stdout == want and run.returncode == (0 if want else 2), run
    submit = (tmp_path / "slurm" / "submit.sh").read_text()
    assert "--dependency=afterok:$s0" in submit
    (tpu,) = cluster_scripts.emit_tpu(tmp_path, "configs/sweeps/x.py:a=1", jobs)
    lines = [x for x in tpu.read_text().splitlines() if x.startswith("gcloud")]
    assert len(lines) == 2 and all("--worker=all" in x for x in lines)
    # The fine-tuning job runs in one process: left to the launcher on one machine, after.
    assert "--job=c" not in tpu.read_text() and "Then the 1 fine-tuning jobs" in tpu.read_text()
    # What each worker is sent, the script run with a stand-in gcloud: the worker's own shell
    # expands ~ and finds its worker number (only worker 0 records the job).
    stub = f"gcloud() {{ printf '%s\\n' \"$@\"; }}; REPO_DIR='~/bert-jax'; source {tpu}"
    sent = subprocess.run(["bash", "-c", stub], env={"TPU_NAME": "pod", "ZONE": "z", **os.environ},
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "--command=cd ~/bert-jax && TPU_WORKER_ID=$(curl -s -H Metadata-Flavor:Google" in sent


def test_multi_host_jobs_fine_tune_on_the_first_host_alone(monkeypatch):
    """A sweep on a cluster runs each job on every host (--multihost); fine-tuning runs in one
    process, so the first host runs it without --multihost and the others skip it."""
    pre, _, fine = _fake_jobs()
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert launch.placement(pre, True) == (True, True)
    assert launch.placement(fine, True) == (True, False)
    assert launch.placement(fine, False) == (True, False)
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert launch.placement(pre, True) == (True, True)
    assert launch.placement(fine, True) == (False, False)


def test_config_values_round_trip_on_the_command_line():
    assert launch.config_value(True) == "true"
    assert launch.config_value((0, 1, 2)) == "(0, 1, 2, )"
    assert launch.config_value(5e-5) == "5e-05"
    assert launch.config_value("80/10/10") == "80/10/10"


def test_jobs_share_a_compilation_cache_in_the_sweep_unless_one_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("SOMETHING_ELSE", "kept")
    env = launch.job_env(tmp_path)
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / ".xla_cache")
    assert env["SOMETHING_ELSE"] == "kept"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/mine")
    assert launch.job_env(tmp_path)["JAX_COMPILATION_CACHE_DIR"] == "/mine"
    # Jobs side by side share an accelerator's memory (JAX takes 75% per process by default).
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in launch.job_env(tmp_path)
    assert launch.job_env(tmp_path, parallel=3)["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.300"


# --------------------------------------------------------------------------- end to end


SWEEP_FILE = """
from configs.sweeps import common

def get_sweep(arg):
    table = common.Table("t", "Tiny", "run", ("tiny",), ("LM (ppl)", "SST-2"),
                         {("tiny", "SST-2"): 92.7}, lower_is_better=("LM (ppl)",))
    pre = common.Job("pre", "configs/pretrain.py:size=tiny,demo", {
        "data.corpus": "", "data.dir": "DATA", "data.max_seq_length": 32,
        "data.max_predictions_per_seq": 5, "model.hidden_size": 32, "model.num_attention_heads": 2,
        "model.intermediate_size": 64, "model.max_position_embeddings": 32,
        "train.batch_size": 8, "train.eval_batch_size": 8, "train.num_train_steps": 6,
        "train.eval_batches": 2, "train.checkpoint_every": 3, "train.parallel": "jit"},
        cells=(common.Cell("tiny", "LM (ppl)", "end.mlm_perplexity", scale=1.0),))
    ft = common.Job("pre/rt", "configs/finetune.py:task=text", {
        "init_checkpoint": "{job:pre}", "task.train_file": "RT", "task.max_seq_length": 32,
        "train.batch_size": 8, "train.eval_batch_size": 8, "train.num_epochs": 1,
        "train.parallel": "jit"}, after=("pre",),
        cells=(common.Cell("tiny", "SST-2", "dev.accuracy"),))
    return common.Sweep("tiny", table, (pre, ft))
"""


def test_a_real_sweep_resumes_an_interrupted_job_and_fills_its_table(tmp_path):
    from bert_jax.data import corpus, prepare, samples
    from bert_jax.data.tasks import classify

    docs = corpus.read_wikipedia_xml(samples.fetch("enwiki"))[:12]
    text = corpus.write_text(docs, tmp_path / "corpus.txt")
    data = tmp_path / "prepared"
    prepare.prepare(
        str(text),
        str(data),
        vocab_size=1000,
        max_seq_length=32,
        max_predictions_per_seq=5,
        dupe_factor=1,
        eval_fraction=0.2,
    )
    train_ex, _, names = classify.rotten_tomatoes()
    rt = tmp_path / "rt.csv"
    rows = [(e.text_a.replace('"', '""'), names[e.label]) for e in train_ex[:90]]
    rt.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
    sweep_file = tmp_path / "tiny_sweep.py"
    sweep_file.write_text(SWEEP_FILE.replace("DATA", str(data)).replace("RT", str(rt)))
    spec, root = f"{sweep_file}:", tmp_path / "sweep"
    sweep = launch.load_sweep(spec)

    def run(args) -> str:
        out = subprocess.run(
            args, check=False, capture_output=True, text=True, cwd=REPO, timeout=900
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    # An interrupted pre-training job, as a killed launcher leaves it: half its steps
    # checkpointed, launch.json still "running".
    pre_cmd = launch.command(sweep.jobs[0], root)
    run([*pre_cmd, "--config.train.stop_at_step=3"])
    (root / "pre" / "launch.json").write_text(json.dumps({"status": "running", "command": pre_cmd}))

    launcher = [
        sys.executable,
        str(REPO / "experiments" / "launch.py"),
        f"--sweep={spec}",
        f"--root={root}",
    ]
    out = run(launcher)
    assert "2 jobs, 0 done, 2 to run" in out and "2 done, 0 not" in out
    assert "resumed at step 3" in (root / "pre" / "log.txt").read_text()
    for name in ("pre", "pre/rt"):
        record = json.loads((root / name / "launch.json").read_text())
        assert record["status"] == "done" and record["command"][2] == "bert_jax.main"
        assert (root / name / "config.json").exists() and (root / name / "results.json").exists()
    assert "2 jobs, 2 done, 0 to run" in run(launcher)  # finished jobs are skipped

    collected = paper_tables.write(root, tmp_path / "tables")
    cells = collected["cells"]
    ppl = json.loads((root / "pre" / "results.json").read_text())["end"]["mlm_perplexity"]
    assert cells["tiny|LM (ppl)"]["values"] == [pytest.approx(ppl)]
    acc = json.loads((root / "pre" / "rt" / "results.json").read_text())["dev"]["accuracy"]
    assert cells["tiny|SST-2"]["values"] == [pytest.approx(100 * acc)]
    table = (tmp_path / "tables" / "table.md").read_text()
    assert f"{100 * acc:.1f} (92.7)" in table and "2 done" in table


# --------------------------------------------------------------------------- the launcher's records


def _sweep_file(tmp_path: pathlib.Path, table: str, names=("a",)) -> str:
    """A sweep spec: jobs `names` (pre-training commands, never run here) filling table `table`."""
    path = tmp_path / f"{table}_{'_'.join(names)}.py"
    path.write_text(
        "from configs.sweeps import common\n\n"
        "def get_sweep(arg):\n"
        f"    table = common.Table({table!r}, 'Tiny', 'run', ('x',), ('y',), {{}})\n"
        f"    jobs = [common.Job(n, 'configs/pretrain.py', {{'train.seed': 1}})\n"
        f"            for n in {names!r}]\n"
        f"    return common.Sweep({table!r}, table, tuple(jobs))\n"
    )
    return f"{path}:"


def _launcher(*args: str, script: str | pathlib.Path = REPO / "experiments" / "launch.py"):
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_moved_or_symlinked_root_keeps_its_finished_jobs(tmp_path):
    """The commands hold the root's path (--workdir, {job:NAME}); a root copied elsewhere, or
    reached through a symlink, is the same sweep: its finished jobs stay done."""
    jobs, old = _fake_jobs(), tmp_path / "old"
    for job in jobs:
        (old / job.name).mkdir(parents=True)
        record = {"status": "done", "command": launch.command(job, old)}
        (old / job.name / "launch.json").write_text(json.dumps(record))
    moved, link = tmp_path / "moved", tmp_path / "link"
    old.rename(moved)
    link.symlink_to(moved)
    for root in (moved, link):
        assert [launch.is_done(root, j) for j in jobs] == [True, True, True]
    # What the sweep changed is still refused, and named alone.
    changed = common.Job("a", "configs/pretrain.py", {"train.seed": 9})
    with pytest.raises(ValueError, match=r"ran with --config.train.seed=1, the sweep gives "
                       r"--config.train.seed=9; a rerun"):  # fmt: skip
        launch.is_done(link, changed)
    # A run recorded in another workdir than ROOT/NAME is another command, wherever the root.
    (moved / "a" / "launch.json").write_text(
        json.dumps({"status": "done", "command": launch.command(jobs[1], moved)})
    )
    with pytest.raises(ValueError, match="another command"):
        launch.is_done(moved, jobs[0])


def test_a_damaged_launch_json_names_itself_and_the_fix(tmp_path):
    job = _fake_jobs()[0]
    path = tmp_path / "a" / "launch.json"
    path.parent.mkdir()
    for text in ('{"status": "do', "", "[]"):
        path.write_text(text)
        with pytest.raises(ValueError) as err:
            launch.is_done(tmp_path, job)
        assert str(path) in str(err.value) and f"delete {path.parent}" in str(err.value)


def test_a_root_holds_one_sweep(tmp_path):
    """Another table's sweep, or one that leaves out jobs that ran, does not replace sweep.json
    (paper_tables.py finds the results through it) unless --replace_sweep says so."""
    root, first = tmp_path / "root", _sweep_file(tmp_path, "grid_mrpc", ("a", "b"))
    launch.write_sweep_json(root, first, launch.load_sweep(first))
    (root / "a").mkdir()
    (root / "a" / "launch.json").write_text(json.dumps({"status": "done"}))
    written = (root / "sweep.json").read_text()
    other = _sweep_file(tmp_path, "table7")
    for preview in ("--dry_run", "--emit=slurm"):
        refused = _launcher(f"--sweep={other}", f"--root={root}", preview)
        assert refused.returncode != 0, refused.stdout
        for text in (f"{root / 'sweep.json'} holds the sweep {first!r}", "'grid_mrpc'",
                     "'table7'", "another --root", "--replace_sweep"):  # fmt: skip
            assert text in refused.stderr, refused.stderr[-2000:]
        assert (root / "sweep.json").read_text() == written
    # The same table, but job "a", which ran, dropped from it.
    fewer = _sweep_file(tmp_path, "grid_mrpc", ("b",))
    with pytest.raises(ValueError, match=r"1 of its jobs ran here and are not in .* \(a\)"):
        launch.check_sweep_json(root, fewer, launch.load_sweep(fewer))
    launch.check_sweep_json(root, first, launch.load_sweep(first))  # the same sweep: fine
    replaced = _launcher(f"--sweep={other}", f"--root={root}", "--emit=slurm", "--replace_sweep")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert json.loads((root / "sweep.json").read_text())["sweep"] == other
    (root / "sweep.json").write_text('{"sweep": ')
    with pytest.raises(ValueError, match=r"sweep.json is not valid JSON .* --replace_sweep"):
        launch.check_sweep_json(root, first, launch.load_sweep(first))


def test_a_sweep_file_of_configs_sweeps_goes_by_its_name():
    named = launch.load_sweep("table8.py:profile=mini")
    assert named.jobs == launch.load_sweep("configs/sweeps/table8.py:profile=mini").jobs
    with pytest.raises(FileNotFoundError, match=r"'tabel8.py' not found .*'finetune_grid.py'"):
        launch.load_sweep("tabel8.py:profile=mini")


# A job that saves slowly when stopped: it writes its pid, then sleeps; SIGTERM makes it sleep on.
_SLOW_CHILD = (
    "import os, pathlib, signal, sys, time; d = pathlib.Path(sys.argv[1]); "
    "signal.signal(signal.SIGTERM, lambda *a: ((d / 'term').touch(), time.sleep(60))); "
    "(d / 'pid').write_text(str(os.getpid())); time.sleep(60)"
)


def _slow_launcher(tmp_path: pathlib.Path) -> pathlib.Path:
    """launch.py with every job replaced by _SLOW_CHILD."""
    script = tmp_path / "slow_launch.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO / 'experiments')!r})\n"
        "import launch\nfrom absl import app\nreal = launch.command\n"
        "def fake(job, root, multihost=False):\n"
        f"    return [sys.executable, '-c', {_SLOW_CHILD!r}, str(root / job.name),\n"
        "            *real(job, root, multihost)[3:]]\n"
        "launch.command = fake\nlaunch._define_flags()\napp.run(launch.main)\n"
    )
    return script


def _wait_for(condition, what: str, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _kill(pid_file: pathlib.Path) -> None:
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("mode", ["sweep", "job"])
def test_a_launcher_stopped_twice_kills_its_jobs_and_records_them(tmp_path, mode):
    """A second SIGTERM (or Ctrl-C) while the jobs save kills them instead of waiting; the
    launcher still records them (a job left "running" would be started again beside itself).
    The same for one job of the cluster scripts (--job)."""
    spec, root = _sweep_file(tmp_path, "t"), tmp_path / "root"
    args = [f"--sweep={spec}", f"--root={root}", *(["--job=a"] if mode == "job" else [])]
    work = root / "a"
    launcher = subprocess.Popen(
        [sys.executable, str(_slow_launcher(tmp_path)), *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_for((work / "pid").exists, "the job to start")
        launcher.send_signal(signal.SIGTERM)
        _wait_for((work / "term").exists, "the job to be stopped")
        launcher.send_signal(signal.SIGTERM)
        out, _ = launcher.communicate(timeout=30)
    finally:
        launcher.kill()
        _kill(work / "pid")
    assert launcher.returncode != 0, out
    record = json.loads((work / "launch.json").read_text())
    assert record["status"] == "failed" and record["returncode"] == -signal.SIGKILL, (record, out)
    assert "stop again to kill them" in out and "[stopped] a" in out, out


def test_a_rerun_starts_no_second_copy_of_a_job_still_running(tmp_path):
    """A launcher killed outright (SIGKILL) leaves its job running, recorded "running": a rerun
    refuses it while it runs, and reruns it once it has gone."""
    spec, root = _sweep_file(tmp_path, "t"), tmp_path / "root"
    work, script = root / "a", _slow_launcher(tmp_path)
    launcher = subprocess.Popen(
        [sys.executable, str(script), f"--sweep={spec}", f"--root={root}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for((work / "pid").exists, "the job to start")
        pid = int((work / "pid").read_text())
        _wait_for(lambda: launch.read_launch(root, common.Job("a", "x")).get("pid") == pid,
                  "the job's record")  # fmt: skip
        launcher.kill()
        launcher.wait(timeout=30)
        refused = _launcher(f"--sweep={spec}", f"--root={root}", "--dry_run", script=script)
        assert refused.returncode != 0, refused.stdout
        assert f"jobs still run here (name: process id): {{'a': {pid}}}" in refused.stderr, (
            refused.stderr[-2000:]
        )
    finally:
        launcher.kill()
        _kill(work / "pid")
    cmdline = pathlib.Path(f"/proc/{pid}/cmdline")  # empty once it ended (a zombie)
    _wait_for(lambda: not cmdline.exists() or not cmdline.read_bytes(), "the job to end")
    rerun = _launcher(f"--sweep={spec}", f"--root={root}", "--dry_run", script=script)
    assert rerun.returncode == 0 and "1 jobs, 0 done, 1 to run" in rerun.stdout, rerun.stderr


PAPER_SWEEPS = [
    "table5.py:profile=paper,corpus=wiki.xml.bz2",
    "table6.py:profile=paper,corpus=wiki.xml.bz2",
    "table7.py:profile=paper,init=/ckpt/bert-base-uncased",
    "table8.py:profile=paper,corpus=wiki.xml.bz2",
]


def _fine_tuning_configs(spec: str, root: pathlib.Path):
    sweep = launch.load_sweep(f"configs/sweeps/{spec}")
    return [(j, c) for j in sweep.jobs if "task" in (c := _config(j, root))]


@pytest.mark.parametrize("spec", PAPER_SWEEPS)
def test_paper_profiles_fine_tune_with_the_papers_recipes(spec, tmp_path):
    """GLUE: batch 32, 3 epochs, the learning rate chosen on dev from {5e-5, 4e-5, 3e-5, 2e-5}
    (PAPER.md), as a grid inside each job; SQuAD 1.1 and NER fine-tuning: the task defaults
    (lr 5e-5, batch 32, 3 epochs); the frozen-encoder jobs: the feature-based recipe."""
    from bert_jax import finetune_sweep

    jobs = _fine_tuning_configs(spec, tmp_path)
    assert jobs
    for job, config in jobs:
        points = finetune_sweep.points(config)
        if config.task.name in ("mnli", "qnli", "mrpc", "sst2"):
            assert sorted(p["optimizer.learning_rate"] for _, p in points) == [
                2e-5,
                3e-5,
                4e-5,
                5e-5,
            ], job.name
            assert {(p["train.batch_size"], p["train.num_epochs"]) for _, p in points} == {
                (32, 3)
            }, job.name
        elif config.head.freeze_encoder:
            assert [p for _, p in points] == [
                {"train.batch_size": 32, "optimizer.learning_rate": 1e-3, "train.num_epochs": 3}
            ], job.name
            assert (config.head.bilstm_layers, config.head.bilstm_size) == (2, 768), job.name
        else:  # squad1 / conll2003 fine-tuning
            assert config.task.name in ("squad1", "conll2003"), job.name
            assert [p for _, p in points] == [
                {"train.batch_size": 32, "optimizer.learning_rate": 5e-5, "train.num_epochs": 3}
            ], job.name
        assert config.sweep.seeds == (), job.name  # one seed per job: its own table value


def test_tables_7_and_8_share_one_feature_based_recipe(tmp_path):
    """The frozen encoder + 2-layer BiLSTM head trains the same way in both tables (paper
    profile); the mini profiles keep their own measured settings."""

    def recipes(spec):
        return {
            (
                c.head.bilstm_layers,
                c.head.bilstm_size,
                c.optimizer.learning_rate,
                c.train.num_epochs,
                c.train.batch_size,
            )
            for _, c in _fine_tuning_configs(spec, tmp_path)
            if c.head.freeze_encoder
        }

    table7 = recipes("table7.py:profile=paper,init=/ckpt/bert-base-uncased")
    table8 = recipes("table8.py:profile=paper,corpus=wiki.xml.bz2")
    assert table7 == table8 == {(2, 768, 1e-3, 3, 32)}
    assert recipes("table7.py:profile=mini") == {(2, 192, 1e-3, 4, 32)}
    assert recipes("table8.py:profile=mini") == {(2, 0, 3e-3, 12, 32)}


# --------------------------------------------------------------------------- Tables 1-4

TABLE1 = "configs/sweeps/table1.py:init=/ckpt/bert-base-uncased"


def test_table1_fine_tunes_one_checkpoint_with_the_papers_recipes(tmp_path):
    """GLUE: the paper's GLUE recipe (batch 32, 3 epochs, lr on dev from 5e-5..2e-5), MNLI-m and
    -mm from one MNLI job; SQuAD 1.1, SQuAD 2.0 and SWAG: the paper's recipes (the task
    defaults); every job from `init`, one per task and seed, filling our row only."""
    from bert_jax import finetune_sweep
    from bert_jax.data.tasks import glue
    from configs.sweeps import table1

    sweep = launch.load_sweep(f"{TABLE1},swag_dir=/data/swag,seeds=2")
    table = sweep.table
    assert table.rows == ("BERT-base (ours)", "BERT-base (paper)", "BERT-large (paper)")
    assert table.paper_rows == ("BERT-base (paper)", "BERT-large (paper)")
    assert table.columns == (
        "MNLI-m", "MNLI-mm", "QQP (F1)", "QNLI", "SST-2", "CoLA (MCC)", "STS-B (Spearman)",
        "MRPC (F1)", "RTE", "Average", "SQuAD 1.1 EM", "SQuAD 1.1 F1", "SQuAD 2.0 EM",
        "SQuAD 2.0 F1", "SWAG",
    )  # fmt: skip
    assert table.averages == {"Average": table.columns[:9]}
    tasks = ("mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte", "squad1", "squad2")
    assert [j.name for j in sweep.jobs] == [
        f"{t}_seed{s}" for t in (*tasks, "swag") for s in (0, 1)
    ]
    recipes = {}
    for job in sweep.jobs:
        config = _config(job, tmp_path)
        assert config.init_checkpoint == "/ckpt/bert-base-uncased" and not job.after, job.name
        assert config.train.seed == int(job.name[-1]) == {c.seed for c in job.cells}.pop()
        assert {c.row for c in job.cells} == {"BERT-base (ours)"}
        recipes[config.task.name] = sorted(
            (p["train.batch_size"], p["optimizer.learning_rate"], p["train.num_epochs"])
            for _, p in finetune_sweep.points(config)
        )
        if config.task.name in glue.TASKS:  # the cells read the task's own dev metrics
            for cell in job.cells:
                split, metric = cell.metric.split(".")
                assert metric == glue.TASKS[config.task.name].metric and cell.scale == 100
                assert split == ("dev_mismatched" if cell.column == "MNLI-mm" else "dev")
        if config.task.name == "swag":
            assert (config.task.train_file, config.task.dev_file) == (
                "/data/swag/train.csv", "/data/swag/val.csv"
            )  # fmt: skip
    glue_recipe = sorted((32, lr, 3) for lr in (5e-5, 4e-5, 3e-5, 2e-5))
    assert recipes == {
        **{t: glue_recipe for t in tasks[:8]},
        "squad1": [(32, 5e-5, 3)], "squad2": [(48, 5e-5, 2)], "swag": [(16, 2e-5, 3)],
    }  # fmt: skip
    mnli = next(j for j in sweep.jobs if j.name == "mnli_seed0")
    assert {c.column: c.metric for c in mnli.cells} == {
        "MNLI-m": "dev.accuracy", "MNLI-mm": "dev_mismatched.accuracy"
    }  # fmt: skip
    # SQuAD's EM/F1 are percentages already; SQuAD 2.0's at the threshold tuned on dev.
    squad = {
        c.column: (c.metric, c.scale) for j in sweep.jobs for c in j.cells if "SQuAD" in c.column
    }
    assert squad == {
        "SQuAD 1.1 EM": ("dev.exact_match", 1.0), "SQuAD 1.1 F1": ("dev.f1", 1.0),
        "SQuAD 2.0 EM": ("dev.best_exact", 1.0), "SQuAD 2.0 F1": ("dev.best_f1", 1.0),
    }  # fmt: skip
    # The paper's Average is the mean of its nine GLUE numbers (MNLI-m and -mm counted apart).
    for row, printed in (("BERT-base (paper)", 79.6), ("BERT-large (paper)", 82.1)):
        nine = [table.paper[(row, c)] for c in table.averages["Average"]]
        assert round(sum(nine) / 9, 1) == printed == table.paper[(row, "Average")]
        mnli_once = [(nine[0] + nine[1]) / 2, *nine[2:]]
        assert round(sum(mnli_once) / 8, 1) != printed
    assert (table.paper[("BERT-large (paper)", "SQuAD 2.0 F1")], table1.PAPER_ROWS) == (
        81.9, ("BERT-base (paper)", "BERT-large (paper)")
    )  # fmt: skip
    assert ("BERT-base (paper)", "SQuAD 2.0 EM") not in table.paper  # large only in the paper
    notes = " ".join(table.notes)
    assert "GLUE test" in notes and "write_test_predictions" in notes and "Not run" not in notes


def test_table1_leaves_out_what_cannot_be_reached_and_says_so():
    no_swag = launch.load_sweep(TABLE1)
    assert not any(j.name.startswith("swag") for j in no_swag.jobs) and len(no_swag.jobs) == 10
    assert "Not run: swag (no swag_dir=" in no_swag.table.notes[-1]
    skipped = launch.load_sweep(f"{TABLE1},skip=squad2+qqp,name=My BERT,swag_dir=/s")
    assert {j.name for j in skipped.jobs} >= {"swag_seed0", "mnli_seed0"}
    assert not any(j.name.startswith(("squad2", "qqp")) for j in skipped.jobs)
    assert (
        skipped.table.notes[-1] == "Not run: qqp (skip=); squad2 (skip=); their columns stay blank."
    )
    assert skipped.table.rows[0] == "My BERT"
    for arg, message in (
        ("", "table1.py needs init="),
        (",skip=squad3", r"skip='squad3': \['squad3'\] not among"),
        (",name=BERT-large (paper)", "not one of the paper's rows"),
    ):
        spec = (TABLE1 + arg) if arg else "configs/sweeps/table1.py:"
        with pytest.raises(ValueError, match=message):
            launch.load_sweep(spec)
    out = _launcher(
        "--sweep=table1.py:init=/ckpt/b,swag_dir=/s", "--root=/nonexistent/t1", "--dry_run"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "table1: 11 jobs, 0 done, 11 to run" in out.stdout
    assert "--config.task.dev_file=/s/val.csv" in out.stdout


def test_average_columns_and_paper_rows_are_checked():
    """An average names columns of the table, filled by jobs; no job fills an average or a row
    of the paper's numbers."""
    table = common.Table(
        "t", "T", "r", ("ours", "paper"), ("x", "y", "avg"), {("paper", "avg"): 1.0},
        averages={"avg": ("x", "y")}, paper_rows=("paper",),
    )  # fmt: skip
    common.Sweep("s", table, (common.Job("j", "c.py", cells=(common.Cell("ours", "x", "m"),)),))
    for cell, message in ((("ours", "avg"), "is an average"), (("paper", "x"), "paper's numbers")):
        job = common.Job("j", "c.py", cells=(common.Cell(*cell, "m"),))
        with pytest.raises(ValueError, match=message):
            common.Sweep("s", table, (job,))
    with pytest.raises(ValueError, match=r"names columns \['z'\]"):
        common.Table("t", "T", "r", ("a",), ("x", "avg"), {}, averages={"avg": ("x", "z")})
    with pytest.raises(ValueError, match="averages the derived columns"):
        common.Table(
            "t", "T", "r", ("a",), ("x", "a1", "a2"), {}, averages={"a1": ("x",), "a2": ("a1",)}
        )
    with pytest.raises(ValueError, match=r"paper_rows \['b'\]"):
        common.Table("t", "T", "r", ("a",), ("x",), {}, paper_rows=("b",))
    # Through sweep.json and back (a sweep.json written before these fields still loads).
    assert common.table_from_dict(common.to_dict(table)) == table
    old = {k: v for k, v in common.to_dict(table).items() if k not in ("averages", "paper_rows")}
    assert common.table_from_dict(old) == dataclasses.replace(table, averages={}, paper_rows=())


def test_squad_cells_are_not_scaled_twice():
    """SQuAD's EM/F1 are percentages in results.json (80.8): Table 5's SQuAD column and a grid
    on SQuAD printed them x100 (8080.0)."""
    from configs.sweeps import finetune_grid, table5

    sweep = table5.get_sweep("profile=paper,corpus=/tmp/c.txt,steps=1000")
    scales = {c.column: c.scale for j in sweep.jobs for c in j.cells}
    assert scales["SQuAD"] == 1.0 and scales["MNLI-m"] == 100.0
    grid = finetune_grid.get_sweep("task=squad1,init=/tmp/x,seeds=1")
    assert {c.scale for j in grid.jobs for c in j.cells} == {1.0}
    grid = finetune_grid.get_sweep("task=mrpc,init=/tmp/x,seeds=1")
    assert {c.scale for j in grid.jobs for c in j.cells} == {100.0}
