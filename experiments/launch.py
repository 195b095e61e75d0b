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
it depends on are done; a root moved or reached through a symlink is the same sweep. Stopped
(Ctrl-C, SIGTERM), the launcher lets its jobs save a checkpoint; stopped again, it kills them; it
records them either way. ROOT/sweep.json holds the sweep for experiments/paper_tables.py (a root
holds one sweep: another table is refused, unless --replace_sweep); the jobs share a JAX
compilation cache in ROOT/.xla_cache.
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
import threading
import time
from collections.abc import Callable

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster_scripts import emit_slurm, emit_tpu  # noqa: E402

from configs.sweeps.common import Job, Sweep, to_dict  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """Defined only when run as a script, so that tests can import this module."""
    flags.DEFINE_string(
        "sweep",
        None,
        "A sweep file and its argument, e.g. configs/sweeps/table8.py:profile=mini (a bare "
        "file name is one of configs/sweeps/: table8.py:profile=mini).",
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
    flags.DEFINE_bool(
        "replace_sweep",
        False,
        "Let --sweep replace ROOT/sweep.json when that holds another table's sweep or jobs that "
        "ran in ROOT which --sweep lacks (experiments/paper_tables.py then leaves those out).",
    )


# --------------------------------------------------------------------------- the sweep


SWEEPS = REPO / "configs" / "sweeps"


def load_sweep(spec: str) -> Sweep:
    """`path/to/sweep.py:arg` -> the Sweep its get_sweep(arg) returns. The path is taken from
    here, then from the repository, then in configs/sweeps/ (`table8.py:profile=mini`)."""
    path, _, arg = spec.partition(":")
    file = next((f for f in (pathlib.Path(path), REPO / path, SWEEPS / path) if f.is_file()), None)
    if file is None:
        known = sorted(p.name for p in SWEEPS.glob("*.py") if p.stem not in ("__init__", "common"))
        raise FileNotFoundError(
            f"sweep file {path!r} not found (from here, from {REPO} or in {SWEEPS}); the sweeps "
            f"there are {known}: e.g. --sweep=table8.py:profile=mini."
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


def read_json(path: pathlib.Path, fix: str) -> dict:
    """The JSON object in `path` ({} when there is none); an error naming it, and `fix`, when
    it holds something else (a file cut short, an edit gone wrong)."""
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object; {fix}")
    return value


def read_launch(root: pathlib.Path, job: Job) -> dict:
    workdir = root / job.name
    return read_json(
        workdir / "launch.json",
        f"delete {workdir} to run the job afresh (without its launch.json a rerun would resume "
        "its checkpoints unchecked: they may be of another command).",
    )


def recorded_root(recorded: list[str], job: Job) -> pathlib.Path | None:
    """The root that a recorded command of `job` ran under (its --workdir less the job's name):
    the root may have moved, or been reached through a symlink, since."""
    for arg in recorded:
        workdir = arg.removeprefix("--workdir=")
        if workdir != arg and workdir.endswith("/" + job.name):
            return pathlib.Path(workdir.removesuffix("/" + job.name))
    return None


def is_done(root: pathlib.Path, job: Job) -> bool:
    """Done = finished with status "done". A workdir that holds a run of another command (done,
    failed or interrupted) is an error: a failed run is resumed from its checkpoints, which
    must not mix two configurations in one run. The root's own path is no part of a command:
    the recorded one is compared with the sweep's under the root it ran in."""
    record = read_launch(root, job)
    recorded = record.get("command")
    if not recorded:
        return record.get("status") == "done"
    # [0] is the python binary; --multihost says how, not what, it ran.
    ran_in = recorded_root(recorded, job) or root
    now = command(job, ran_in, "--multihost" in recorded)
    if recorded[1:] != now[1:]:
        ran = [a for a in recorded[1:] if a not in now] or ["(nothing more)"]
        gives = [a for a in now[1:] if a not in recorded] or ["(nothing more)"]
        if ran == gives:  # the same arguments, in another order
            ran, gives = recorded[1:], now[1:]
        raise ValueError(
            f"job {job.name!r} has a run ({record.get('status', 'unknown')}) in "
            f"{root / job.name} with another command than the sweep now gives: it ran with "
            f"{shlex.join(ran)}, the sweep gives {shlex.join(gives)}; a rerun would resume it "
            "from its checkpoints. Delete that workdir or use another --root."
        )
    return record.get("status") == "done"


def running_pid(root: pathlib.Path, job: Job) -> int | None:
    """The process id of `job` when its record says it runs on this host and that process still
    does: a launcher killed outright (SIGKILL, the OOM killer) leaves its jobs running, recorded
    "running". Read from /proc (Linux); elsewhere, as for another host's jobs, None."""
    record = read_launch(root, job)
    pid = record.get("pid")
    if record.get("status") != "running" or not pid or record.get("host") != socket.gethostname():
        return None
    try:
        argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    except OSError:  # gone
        return None
    # The same command, not another process that took the id since.
    return pid if argv == [os.fsencode(a) for a in record.get("command", [])] else None


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


def check_sweep_json(root: pathlib.Path, spec: str, sweep: Sweep) -> None:
    """Refuses a sweep whose sweep.json would replace ROOT/sweep.json of another table, or one
    that lists jobs run in ROOT which `sweep` lacks: experiments/paper_tables.py finds the
    results through sweep.json, and theirs would drop out of the tables unseen."""
    path = root / "sweep.json"
    old = read_json(path, "delete it, or pass --replace_sweep to let --sweep replace it.")
    if not old:
        return
    table = old.get("table", {}).get("name")
    names = {j.name for j in sweep.jobs}
    dropped = [
        j["name"]
        for j in old.get("jobs", [])
        if j["name"] not in names and (root / j["name"] / "launch.json").exists()
    ]
    why = []
    if table != sweep.table.name:
        why.append(f"its table is {table!r}, that of --sweep={spec} is {sweep.table.name!r}")
    if dropped:
        listed = ", ".join(dropped[:3]) + (", ..." if len(dropped) > 3 else "")
        why.append(f"{len(dropped)} of its jobs ran here and are not in --sweep={spec} ({listed})")
    if why:
        raise ValueError(
            f"{path} holds the sweep {old.get('sweep')!r}: {'; '.join(why)}. Replacing it would "
            "leave the results of its jobs out of experiments/paper_tables.py's tables. Use "
            "another --root for this sweep (or --replace_sweep to replace it anyway)."
        )


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


def placement(job: Job, multihost: bool) -> tuple[bool, bool]:
    """(whether this process runs `job`, whether with --multihost). Pre-training runs on every
    host of a multi-host job; fine-tuning runs in one process (bert_jax.finetune refuses
    several): the first host runs it on its own devices, the others have nothing to do."""
    if multihost and job.is_finetuning:
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
        log = open(root / job.name / "log.txt", "a")  # noqa: SIM115 (closed in finish())
        self.log = log
        self.proc = subprocess.Popen(
            self.cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=job_env(root, parallel)
        )
        self.record["pid"] = self.proc.pid  # a rerun refuses to start a second copy beside it
        if self.writer:
            _record(root, job, self.record)

    def finish(self) -> bool:
        """Waits for the job and records how it ended (again: the same record)."""
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
    and no job runs on unrecorded beside a second copy of itself. Stopped again meanwhile, it
    kills them (a rerun resumes from their last checkpoint) and records them all the same."""
    status: dict[str, str] = {}
    waiting = [j for j in jobs if placement(j, multihost)[0]]  # the others run on host 0
    running: list[Running] = []
    try:
        _run_jobs(root, waiting, running, status=status, done=done, parallel=parallel, log=log,
                  multihost=multihost)  # fmt: skip
    except BaseException:
        _stop(running, log)
        raise
    return status


def _stop(running: list[Running], log: Callable[[str], None]) -> None:
    """SIGTERM to the jobs, then waits for them; a second Ctrl-C or SIGTERM kills them instead.
    Either way every one is recorded: a job left "running" would be started again by a rerun,
    beside itself if it still ran."""
    again: list[int] = []
    handlers = _on_signals(lambda signum, frame: again.append(signum))  # none interrupts now
    try:
        for r in running:
            r.proc.send_signal(signal.SIGTERM)
        if running:
            log(f"[stopping] {len(running)} jobs save a checkpoint (stop again to kill them)")
        while not again and any(r.proc.poll() is None for r in running):
            time.sleep(0.2)
        for r in running:
            if r.proc.poll() is None:
                r.proc.kill()
            r.finish()
            log(f"[stopped] {r.job.name} (exit {r.proc.returncode}; a rerun resumes it)")
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _on_signals(handler: Callable) -> dict:
    """`handler` for SIGINT and SIGTERM; returns the handlers to restore (none off the main
    thread, which alone receives signals)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}


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
            ok = r.finish()  # before leaving `running`: a stop now still records it
            running.remove(r)
            status[r.job.name] = "done" if ok else "failed"
            if ok:
                done.add(r.job.name)
            tail = "" if ok else f" (exit {r.proc.returncode}; see {root / r.job.name / 'log.txt'})"
            log(f"[{status[r.job.name]}] {r.job.name} in {r.record['wall_seconds']:.0f}s{tail}")


# --------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.sweep or not FLAGS.root:
        raise app.UsageError("--sweep and --root are required.")
    root = pathlib.Path(FLAGS.root).absolute()
    sweep = load_sweep(FLAGS.sweep)
    jobs = list(sweep.jobs)
    # SIGTERM (a scheduler's stop) unwinds like Ctrl-C: run_jobs stops the jobs and records them.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if FLAGS["job"].present:  # one job, as the cluster scripts run it
        job = next((j for j in jobs if j.name == FLAGS.job), None)
        if job is None:
            raise app.UsageError(f"--job={FLAGS.job!r} is not a job of the sweep.")
        waiting = [d for d in job.after if not is_done(root, next(j for j in jobs if j.name == d))]
        if waiting:
            raise RuntimeError(f"job {job.name!r} needs {waiting} done first (in {root}).")
        if not is_done(root, job):
            status = run_jobs(root, [job], set(job.after), multihost=FLAGS.multihost)
            sys.exit(0 if status.get(job.name, "done") == "done" else 1)  # {}: another host's
        return
    # Everything is checked first: a refused sweep writes nothing.
    if not FLAGS.replace_sweep:
        check_sweep_json(root, FLAGS.sweep, sweep)
    done = {j.name for j in jobs if is_done(root, j)}
    todo = [j for j in jobs if j.name not in done and re.fullmatch(FLAGS.only or ".*", j.name)]
    alive = {j.name: pid for j in todo if (pid := running_pid(root, j))}
    if alive:
        raise RuntimeError(
            f"jobs still run here (name: process id): {alive}, started by another launcher or "
            "left by one killed outright. Wait for them, or stop them (kill PID: they save a "
            "checkpoint), then rerun: a second copy would share their workdirs."
        )
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
    status = run_jobs(root, todo, done, FLAGS.parallel, multihost=FLAGS.multihost)
    failed = sorted(n for n, s in status.items() if s != "done")
    print(f"{sum(s == 'done' for s in status.values())} done, {len(failed)} not: {failed}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
