r"""The cluster scripts of a sweep (experiments/launch.py --emit=slurm|tpu): SLURM job arrays, one
per dependency stage, and a TPU pod script. Each script's jobs run `launch.py --job=NAME`, which
records them as the launcher does on one machine."""

from __future__ import annotations

import pathlib
import shlex

from configs.sweeps.common import Job

REPO = pathlib.Path(__file__).resolve().parents[1]


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
    later = [j for j in jobs if j.is_finetuning]
    for group in stages([j for j in jobs if not j.is_finetuning]):
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
