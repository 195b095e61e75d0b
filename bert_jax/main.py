r"""Entry point: pre-train or fine-tune BERT with a config file.

  python -m bert_jax.main --config=configs/pretrain.py:size=tiny,demo --workdir=runs/demo
  python -m bert_jax.main --config=configs/finetune.py:task=rte --workdir=runs/rte \
      --config.init_checkpoint=runs/demo

Rerunning the same command with the same --workdir resumes from its newest checkpoint.
Several hosts: add --multihost (SLURM, Open MPI, TPU pods and Kubernetes are detected from the
environment) or give --coordinator_address, --num_processes and --process_id. One process per
host uses every accelerator of its host; one process per GPU, the GPU of its local rank
(--local_devices).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from bert_jax import config_overrides, distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "Config file and its argument: configs/pretrain.py:size=tiny|mini|small|medium|base|large,"
    "seq=128|512,demo or configs/finetune.py:task=NAME,size=...,minilm,grid (tasks: "
    "configs/finetune.py's TASKS). Override any field with --config.SECTION.FIELD=VALUE.",
)  # fmt: skip
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False,
    "Call jax.distributed.initialize(): the coordinator, process count and index come from the "
    "environment (SLURM, Open MPI, TPU pods, Kubernetes) unless given by the flags below.",
)  # fmt: skip
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (implies --multihost)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_LOCAL_DEVICES = flags.DEFINE_string(
    "local_devices", "auto",
    "With --multihost: the GPUs of this host that this process uses. 'auto': all it sees when it "
    "is the only process on its host (srun --ntasks-per-node=1, one MPI rank per node) or when "
    "SLURM gave each task its own GPUs (--gpus-per-task); otherwise (several processes sharing "
    "a host's GPUs) the one at its local rank (SLURM_LOCALID), as jax.distributed does. 'all': "
    "every GPU it sees (CUDA_VISIBLE_DEVICES). Or ids such as 0,1,2,3.",
)  # fmt: skip
_DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 300,
    "Seconds to wait for the coordinator to accept connections, then for every process to join "
    "(jax.distributed.initialize's initialization_timeout).",
)  # fmt: skip
_KEEP_FREED_MEMORY = flags.DEFINE_bool(
    "keep_freed_memory", True,
    "Let glibc reuse freed host memory instead of unmapping it (bert_jax/host_memory.py): spares "
    "CPU steps the page faults of a fresh temporary buffer each step.",
)  # fmt: skip
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        # Orbax and TF log every checkpoint step at INFO; the progress lines are printed instead.
        logging.set_verbosity(logging.WARNING)
    if _KEEP_FREED_MEMORY.value:
        from bert_jax import host_memory  # noqa: PLC0415

        host_memory.keep_freed_memory()  # before JAX starts its threads
    import jax  # noqa: PLC0415

    if not (_MULTIHOST.value or _COORDINATOR.value) and (
        _NUM_PROCESSES.value is not None or _PROCESS_ID.value is not None
    ):
        message = (
            "--num_processes/--process_id need --coordinator_address=HOST:PORT (process 0's "
            "address) or --multihost; without them this process would train alone."
        )
        distributed.exit_with(message, 2)
    if _MULTIHOST.value or _COORDINATOR.value:
        distributed.initialize(
            jax, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
            local_devices=_LOCAL_DEVICES.value, timeout_s=_DISTRIBUTED_TIMEOUT.value,
        )  # fmt: skip
    log = print if jax.process_index() == 0 else (lambda line: None)
    if "task" in _CONFIG.value:  # configs/finetune.py
        from bert_jax import finetune_sweep  # noqa: PLC0415

        finetune_sweep.run(_CONFIG.value, _WORKDIR.value, log=log)
    else:
        from bert_jax import train  # noqa: PLC0415

        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value, log=log)


if __name__ == "__main__":
    config_overrides.exit_on_error(sys.argv)  # one line for a config typo, not a traceback
    app.run(main)
