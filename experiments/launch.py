r"""Launches the jobs of a sweep (configs/sweeps/*.py): here, on SLURM, or on a TPU pod.

    # Every job of the mini profile of Table 8, one at a time, on this machine:
    python experiments/launch.py --sweep=configs/sweeps/table8.py:profile=mini \
        --root=runs/sweeps/table8_mini
    # Two at a time; only the jobs whose names match a regex; print the commands only:
    python experiments/launch.py --sweep=... --root=... --parallel=2 --only='pretrain_.*' --dry_run
    # Scripts for a cluster (each job then runs `launch.py --job=NAME`, which records it):
    python experiments/launch.py --sweep=... --root=/shared/runs/table6 --emit=slurm
    python experiments/launch.py --sweep=... --root=/nfs/runs/table6 --emit=tpu

ROOT must be a local or network file system path (NFS) that the hosts share: the launcher
writes its records there. A job runs
`python -m bert_jax.main --config=... --workdir=ROOT/NAME --config.K=V ...` and records
ROOT/NAME/launch.json (command, git commit, host, start, end, wall time, status) and its output
in ROOT/NAME/log.txt. A rerun skips the jobs that are done, reruns the failed and interrupted
ones (bert_jax.main resumes them from their checkpoints), and starts a job only when the jobs
it depends on are done. ROOT/sweep.json holds the sweep for experiments/paper_tables.py; the
jobs share a JAX compilation cache in ROOT/.xla_cache.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import pathlib
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from configs.sweeps.common import Job, Sweep, to_dict  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defined only when run as a script, so that tests can import this module."""
    flags.DEFINE_string(
        "sweep", None, "configs/sweeps/<name>.py:<arg>, e.g. table8.py:profile=mini."
    )
    flags.DEFINE_string("root", None, "Directory of the sweep: one workdir per job, sweep.json.")
    flags.DEFINE_integer("parallel", 1, "Jobs run at once on this machine.")
    flags.DEFINE_string(
        "only",
        "",
        "Run only the jobs whose names match this regex (and not their "
        "dependencies: those must be done already).",
    )
    flags.DEFINE_bool("dry_run", False, "Print the commands of the jobs to run; run nothing.")
    flags.DEFINE_enum("emit", "", ["", "slurm", "tpu"], "Write cluster scripts instead of running.")
    flags.DEFINE_string("job", "", "Run this one job (what the cluster scripts call).")
    flags.DEFINE_bool("multihost", False, "Pass --multihost to bert_jax.main (pods, multi-node).")
    flags.DEFINE_string(
        "slurm_args",
        "--gres=gpu:8 --nodes=1 --ntasks-per-node=1 --time=24:00:00",
        "#SBATCH options of each job.",
    )


# --------------------------------------------------------------------------- the sweep


def load_sweep(spec: str) -> Sweep:
    """`path/to/sweep.py:arg` -> the Sweep its get_sweep(arg) returns."""
    path, _, arg = spec.partition(":")
    file = pathlib.Path(path)
    if not file.exists() and (REPO / path).exists():
        file = REPO / path
    if not file.exists():
        known = sorted(p.name for p in (REPO / "configs" / "sweeps").glob("table*.py"))
        raise FileNotFoundError(
            f"sweep file {path!r} not found; the sweeps are {known} and more in configs/sweeps/."
        )
    module_spec = importlib.util.spec_from_file_location(f"sweep_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_sweep(arg)


def config_value(value) -> str:
    """A Python value as `--config.K=V` text that ml_collections parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "(" + "".join(f"{config_value(v)}, " for v in value) + ")"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def command(job: Job, root: pathlib.Path, multihost: bool = False) -> list[str]:
    """The bert_jax.main command line of `job` ({job:NAME} -> that job's workdir, {root} -> the
    sweep's directory)."""
    args = [
        sys.executable,
        "-m",
        "bert_jax.main",
        f"--config={job.config}",
        f"--workdir={root / job.name}",
    ]
    for key, value in job.overrides.items():
        if isinstance(value, str):
            text = re.sub(r"\{job:([^}]+)\}", lambda m: str(root / m.group(1)), value)
            args.append(f"--config.{key}={text.replace('{root}', str(root))}")
        else:
            args.append(f"--config.{key}={config_value(value)}")
    if multihost:
        args.append("--multihost")
    return args


def read_launch(root: pathlib.Path, job: Job) -> dict:
    path = root / job.name / "launch.json"
    return json.loads(path.read_text()) if path.exists() else {}


def is_done(root: pathlib.Path, job: Job) -> bool:
    """Done = finished with status "done". A workdir that holds a run of another command (done,
    failed or interrupted) is an error: a failed run is resumed from its checkpoints, which
    must not mix two configurations in one run."""
    record = read_launch(root, job)
    # [0] is the python binary; --multihost says how, not what, it ran.
    recorded = record.get("command")
    if recorded and recorded[1:] != command(job, root, "--multihost" in recorded)[1:]:
        raise ValueError(
            f"job {job.name!r} has a run ({record.get('status', 'unknown')}) in "
            f"{root / job.name} with another command ({shlex.join(recorded[3:])}) than the "
            f"sweep now gives ({shlex.join(command(job, root)[3:])}); a rerun would resume it "
            "from its checkpoints. Delete that workdir or use another --root."
        )
    return record.get("status") == "done"


def git_commit() -> str:
    """HEAD of this checkout, "-dirty" when tracked files have uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_sweep_json(root: pathlib.Path, spec: str, sweep: Sweep) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / "sweep.json.tmp"
    tmp.write_text(
        json.dumps(
            {"sweep": spec, "table": to_dict(sweep.table), "jobs": to_dict(list(sweep.jobs))},
            indent=2,
        )
    )
    os.replace(tmp, root / "sweep.json")


# --------------------------------------------------------------------------- running jobs


def _record(root: pathlib.Path, job: Job, record: dict) -> None:
    path = root / job.name / "launch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{socket.gethostname()}.{os.getpid()}.tmp")  # one per process
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)


def _is_writer() -> bool:
    """Process 0 of a multi-host job records; the others only run bert_jax.main."""
    for var in ("SLURM_PROCID", "TPU_WORKER_ID", "JAX_PROCESS_ID"):
        if (os.environ.get(var) or "0") != "0":
            return False
    return True


def is_finetuning(job: Job) -> bool:
    """Whether `job` fine-tunes (configs/finetune.py), which runs in one process."""
    return job.config.split(":")[0].endswith("finetune.py")


def placement(job: Job, multihost: bool) -> tuple[bool, bool]:
    """(whether this process runs `job`, whether with --multihost). Pre-training runs on every
    host of a multi-host job; fine-tuning runs in one process (bert_jax.finetune refuses
    several): the first host runs it on its own devices, the others have nothing to do."""
    if multihost and is_finetuning(job):
        return _is_writer(), False
    return True, multihost


def job_env(root: pathlib.Path, parallel: int = 1) -> dict[str, str]:
    """The environment of a job: this one, plus a JAX compilation cache shared by the sweep's
    jobs (ROOT/.xla_cache, unless JAX_COMPILATION_CACHE_DIR is set). Jobs of one sweep compile
    the same programs over and over (the same model on other data, the same fine-tuning on
    another pre-trained model); a cache hit saves 7 of a 30 s mini fine-tuning job.

    With `parallel` jobs at once each may take 0.9 / parallel of an accelerator's memory (JAX
    takes 75% per process by default, and the second job would run out), unless
    XLA_PYTHON_CLIENT_MEM_FRACTION is set."""
    env = dict(os.environ)
    if parallel > 1:
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / parallel:.3f}")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(root / ".xla_cache"))
    # Cache every program, however fast it compiled (JAX's default skips those under 1 s).
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    return env


class Running:
    """One job in a child process, recorded in its launch.json."""

    def __init__(self, root: pathlib.Path, job: Job, multihost: bool = False, parallel: int = 1):
        self.root, self.job, self.start = root, job, time.time()
        self.cmd = command(job, root, multihost)
        self.writer = _is_writer()
        self.record = {
            "command": self.cmd,
            "git_commit": git_commit(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "finished": None,
            "wall_seconds": None,
            "returncode": None,
            "status": "running",
        }
        (root / job.name).mkdir(parents=True, exist_ok=True)
        if self.writer:
            _record(root, job, self.record)
        log = open(root / job.name / "log.txt", "a")  # noqa: SIM115 (closed in finish())
        self.log = log
        self.proc = subprocess.Popen(
            self.cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=job_env(root, parallel)
        )

    def finish(self) -> bool:
        code = self.proc.wait()
        self.log.close()
        self.record.update(
            finished=datetime.datetime.now().isoformat(timespec="seconds"),
            wall_seconds=round(time.time() - self.start, 1),
            returncode=code,
            status="done" if code == 0 else "failed",
        )
        if self.writer:
            _record(self.root, self.job, self.record)
        return code == 0


def run_jobs(
    root: pathlib.Path,
    jobs: list[Job],
    done: set[str],
    parallel: int = 1,
    *,
    log: Callable[[str], None] = print,
    multihost: bool = False,
) -> dict[str, str]:
    """Runs `jobs` (none of them done), `parallel` at a time, each once its dependencies are
    done. Returns {name: "done" | "failed" | "blocked"} (blocked: a dependency failed).

    Stopped itself (Ctrl-C, SIGTERM), it passes SIGTERM on to the running jobs (bert_jax.main
    saves a checkpoint and exits), waits for them and records them failed: a rerun resumes them,
    and no job runs on unrecorded beside a second copy of itself."""
    status: dict[str, str] = {}
    waiting = [j for j in jobs if placement(j, multihost)[0]]  # the others run on host 0
    running: list[Running] = []
    try:
        _run_jobs(root, waiting, running, status=status, done=done, parallel=parallel, log=log,
                  multihost=multihost)  # fmt: skip
    except BaseException:
        for r in running:
            r.proc.send_signal(signal.SIGTERM)
        for r in running:
            r.finish()
            log(f"[stopped] {r.job.name} (exit {r.proc.returncode}; a rerun resumes it)")
        raise
    return status


def _run_jobs(root, waiting, running, *, status, done, parallel, log, multihost) -> None:
    while waiting or running:
        for job in list(waiting):
            if any(status.get(d) in ("failed", "blocked") for d in job.after):
                waiting.remove(job)
                status[job.name] = "blocked"
                log(f"[blocked] {job.name}: a job it needs failed")
            elif len(running) < parallel and all(d in done for d in job.after):
                waiting.remove(job)
                log(f"[start] {job.name}")
                running.append(Running(root, job, placement(job, multihost)[1], parallel))
        if not running:
            if waiting:  # dependencies neither done nor in this run (--only)
                for job in waiting:
                    status[job.name] = "blocked"
                    log(f"[blocked] {job.name}: needs {[d for d in job.after if d not in done]}")
            break
        while not any(r.proc.poll() is not None for r in running):
            time.sleep(0.5)
        for r in [r for r in running if r.proc.poll() is not None]:
            running.remove(r)
            ok = r.finish()
            status[r.job.name] = "done" if ok else "failed"
            if ok:
                done.add(r.job.name)
            tail = "" if ok else f" (exit {r.proc.returncode}; see {root / r.job.name / 'log.txt'})"
            log(f"[{status[r.job.name]}] {r.job.name} in {r.record['wall_seconds']:.0f}s{tail}")


# --------------------------------------------------------------------------- cluster scripts


def stages(jobs: list[Job]) -> list[list[Job]]:
    """Jobs grouped by dependency depth: a job's stage comes after all of its dependencies'."""
    depth: dict[str, int] = {}
    by_name = {j.name: j for j in jobs}

    def d(name: str) -> int:
        if name not in depth:
            depth[name] = 1 + max((d(a) for a in by_name[name].after if a in by_name), default=-1)
        return depth[name]

    out: list[list[Job]] = []
    for job in jobs:
        k = d(job.name)
        out.extend([] for _ in range(k + 1 - len(out)))
        out[k].append(job)
    return out


def emit_slurm(
    root: pathlib.Path, spec: str, jobs: list[Job], slurm_args: str
) -> list[pathlib.Path]:
    """One job array per stage, each stage submitted after the previous one succeeded."""
    out = root / "slurm"
    out.mkdir(parents=True, exist_ok=True)
    written, submit = [], ["#!/bin/bash", "set -euo pipefail", f"cd {shlex.quote(str(REPO))}"]
    prev = ""
    for k, group in enumerate(stages(jobs)):
        # The names live in the script, which sbatch copies at submission: emitting again
        # cannot change what a pending array task runs. (stageK.jobs is a listing to read.)
        names = out / f"stage{k}.jobs"
        names.write_text("".join(j.name + "\n" for j in group))
        listed = " ".join(shlex.quote(j.name) for j in group)
        script = out / f"stage{k}.sbatch"
        opts = "\n".join(f"#SBATCH {o}" for o in shlex.split(slurm_args) if o)
        script.write_text(f"""#!/bin/bash
#SBATCH --job-name=bert_jax_s{k}
#SBATCH --array=0-{len(group) - 1}
#SBATCH --output={root}/slurm/stage{k}_%a.out
{opts}
set -euo pipefail
cd {shlex.quote(str(REPO))}
jobs=({listed})
job=${{jobs[$SLURM_ARRAY_TASK_ID]:-}}
[[ -n "$job" ]] || {{ echo "no job for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2; }}
srun python experiments/launch.py --sweep={shlex.quote(spec)} --root={shlex.quote(str(root))} \\
    --job="$job" --multihost
""")
        dep = f"--dependency=afterok:{prev} " if prev else ""
        submit.append(f"s{k}=$(sbatch --parsable {dep}{script})")
        prev = f"$s{k}"
        written += [names, script]
    submit.append('echo "submitted: ' + " ".join(f"$s{k}" for k in range(len(written) // 2)) + '"')
    (out / "submit.sh").write_text("\n".join(submit) + "\n")
    return [*written, out / "submit.sh"]


_WORKER_URL = (
    "-H Metadata-Flavor:Google "
    "http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number"
)


def emit_tpu(root: pathlib.Path, spec: str, jobs: list[Job]) -> list[pathlib.Path]:
    """A script that runs each pre-training job on every worker of a TPU pod slice, one job
    after another. Fine-tuning runs in one process, which a pod slice's workers (one TPU
    system) do not run alone: its jobs are listed, commented, to run on one machine (a
    single-host TPU VM, a GPU box) once the pre-training jobs are done, by the launcher."""
    out = root / "tpu"
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "#!/bin/bash",
        "# Usage: TPU_NAME=my-pod ZONE=us-central2-b REPO_DIR='~/bert-jax' bash launch_tpu.sh",
        "set -euo pipefail",
    ]
    later = [j for j in jobs if is_finetuning(j)]
    for group in stages([j for j in jobs if not is_finetuning(j)]):
        for job in group:
            # The worker's number (TPU VMs set no variable for it; JAX reads the same
            # metadata): only worker 0 records the job. \$ leaves $(...) to the worker's shell.
            remote = (
                f"cd $REPO_DIR && TPU_WORKER_ID=\\$(curl -s {_WORKER_URL}) "
                f"python3 experiments/launch.py --sweep={shlex.quote(spec)} "
                f"--root={shlex.quote(str(root))} --job={shlex.quote(job.name)} --multihost"
            )
            lines.append(
                f'gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all '
                f'--command="{remote}"'
            )
    if later:
        lines += [
            f"# Then the {len(later)} fine-tuning jobs, on one machine that sees the root (one "
            "process each; the launcher skips the jobs done above):",
            f"#   python experiments/launch.py --sweep={shlex.quote(spec)} "
            f"--root={shlex.quote(str(root))}",
        ]
    path = out / "launch_tpu.sh"
    path.write_text("\n".join(lines) + "\n")
    return [path]


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.sweep or not FLAGS.root:
        raise app.UsageError("--sweep and --root are required.")
    root = pathlib.Path(FLAGS.root).absolute()
    sweep = load_sweep(FLAGS.sweep)
    jobs = list(sweep.jobs)
    if FLAGS["job"].present:  # one job, as the cluster scripts run it
        job = next((j for j in jobs if j.name == FLAGS.job), None)
        if job is None:
            raise app.UsageError(f"--job={FLAGS.job!r} is not a job of the sweep.")
        waiting = [d for d in job.after if not is_done(root, next(j for j in jobs if j.name == d))]
        if waiting:
            raise RuntimeError(f"job {job.name!r} needs {waiting} done first (in {root}).")
        run_here, multihost = placement(job, FLAGS.multihost)
        if run_here and not is_done(root, job):
            sys.exit(0 if Running(root, job, multihost).finish() else 1)
        return
    # Every workdir's recorded command is checked first: a refused sweep writes nothing.
    done = {j.name for j in jobs if is_done(root, j)}
    todo = [j for j in jobs if j.name not in done and re.fullmatch(FLAGS.only or ".*", j.name)]
    print(f"{sweep.name}: {len(jobs)} jobs, {len(done)} done, {len(todo)} to run -> {root}")
    if FLAGS.dry_run:  # a preview: nothing written (sweep.json labels the results' tables)
        for job in todo:
            print(shlex.join(command(job, root)))
        return
    write_sweep_json(root, FLAGS.sweep, sweep)
    if FLAGS.emit == "slurm":
        for path in emit_slurm(root, FLAGS.sweep, todo, FLAGS.slurm_args):
            print(path)
        return
    if FLAGS.emit == "tpu":
        for path in emit_tpu(root, FLAGS.sweep, todo):
            print(path)
        return
    # SIGTERM (a scheduler's stop) unwinds like Ctrl-C: run_jobs stops the jobs and records them.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    status = run_jobs(root, todo, done, FLAGS.parallel, multihost=FLAGS.multihost)
    failed = sorted(n for n, s in status.items() if s != "done")
    print(f"{sum(s == 'done' for s in status.values())} done, {len(failed)} not: {failed}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
