"""bert_jax.main's jax.distributed set-up: which GPUs a process takes under SLURM / Open MPI
(fake environments, no cluster), and what a wrong coordinator or a missing one prints."""

import inspect
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import pytest

from bert_jax import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EIGHT_GPUS = "0,1,2,3,4,5,6,7"
# The variables srun sets for a task (jax's SlurmCluster needs the first five).
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "node[001-004]", "SLURM_PROCID": "0"}


def _slurm(tasks_per_node: str, ntasks: int, localid: int = 0, nodeid: int = 0, **more):
    env = dict(SLURM, SLURM_NTASKS=str(ntasks), SLURM_LOCALID=str(localid),
               SLURM_NODEID=str(nodeid), SLURM_STEP_TASKS_PER_NODE=tasks_per_node)  # fmt: skip
    return env | more


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        # The README's job: 4 nodes x 8 GPUs, one task per node -> all 8 GPUs, not jax's [0].
        (_slurm("1(x4)", 4, nodeid=2, CUDA_VISIBLE_DEVICES=EIGHT_GPUS), []),
        # The reviewer's repro: one task, no tasks-per-node variable.
        ({**SLURM, "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"}, []),
        # One task per GPU sharing the node's 8 GPUs: jax's GPU at SLURM_LOCALID is right.
        (_slurm("8(x4)", 32, localid=3, CUDA_VISIBLE_DEVICES=EIGHT_GPUS), None),
        # ... and when SLURM bound one GPU to each task (--gpus-per-task=1), local rank 3 is no
        # index into the one GPU it sees: take it.
        (_slurm("8(x4)", 32, localid=3, CUDA_VISIBLE_DEVICES="3"), []),
        # Uneven steps: the count of this node (SLURM_NODEID) decides.
        (_slurm("2(x3),1", 7, nodeid=3, CUDA_VISIBLE_DEVICES="0,1"), []),
        (_slurm("2(x3),1", 7, localid=1, nodeid=0, CUDA_VISIBLE_DEVICES="0,1"), None),
        # Without srun's per-node list: --ntasks-per-node, or as many tasks as nodes.
        ({**SLURM, "SLURM_NTASKS": "32", "SLURM_LOCALID": "5", "SLURM_NTASKS_PER_NODE": "8"}, None),
        ({**SLURM, "SLURM_NTASKS": "4", "SLURM_LOCALID": "0", "SLURM_STEP_NUM_NODES": "4"}, []),
        ({**SLURM, "SLURM_NTASKS": "8", "SLURM_LOCALID": "0", "SLURM_STEP_NUM_NODES": "4"}, None),
        # A malformed variable: jax's default, no crash.
        (_slurm("eight", 8, CUDA_VISIBLE_DEVICES=EIGHT_GPUS), None),
        # Open MPI: ranks on this host.
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "0"}, []),
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "2"}, None),
        # The user's JAX_LOCAL_DEVICE_IDS wins (jax reads it when given None).
        (_slurm("1(x4)", 4, JAX_LOCAL_DEVICE_IDS="0,1"), None),
        # No cluster (a TPU pod, explicit flags): jax's default, every local device.
        ({}, None),
    ],
)  # fmt: skip
def test_auto_local_devices_give_a_lone_process_every_gpu(environ, expected):
    assert distributed.local_device_ids("auto", environ) == expected


def test_explicit_local_devices():
    one_per_gpu = _slurm("8(x4)", 32, localid=3, CUDA_VISIBLE_DEVICES=EIGHT_GPUS)
    assert distributed.local_device_ids("all", one_per_gpu) == []
    assert distributed.local_device_ids("0,1,2,3", one_per_gpu) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="--local_devices=0,a: expected auto, all or ids"):
        distributed.local_device_ids("0,a", {})
    for address in ("node001", "node001:", ":1234", "node001:port"):
        with pytest.raises(ValueError, match=f"--coordinator_address={address}: expected HOST"):
            distributed.distributed_kwargs(
                address, 2, 1, local_devices="auto", timeout_s=5, environ={}
            )


def test_distributed_kwargs_are_jax_distributed_initialize_arguments():
    kwargs = distributed.distributed_kwargs(
        "10.0.0.1:1234", 2, 1, local_devices="auto", timeout_s=7, environ={}
    )
    assert kwargs["initialization_timeout"] == 7 and kwargs["local_device_ids"] is None
    params = inspect.signature(jax.distributed.initialize).parameters
    assert set(kwargs) <= set(params), set(kwargs) - set(params)
    d = distributed.describe(kwargs, {})
    assert (d["process"], d["address"], d["local"]) == ("process 1 of 2", "10.0.0.1:1234",
                                                        "all local GPUs")  # fmt: skip
    env = _slurm("8(x4)", 32, localid=3)
    kwargs = distributed.distributed_kwargs(None, None, None, local_devices="auto", timeout_s=7,
                                            environ=env)  # fmt: skip
    d = distributed.describe(kwargs, env)
    assert d["process"] == "process 0 of 32" and d["local"] == "local GPU 3 (its local rank)"
    assert d["address"] is None and d["where"] == "the first node of node[001-004]"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**more) -> dict[str, str]:
    """This environment without any cluster's variables (the tests may run under SLURM)."""
    cluster = ("SLURM_", "OMPI_", "JAX_COORDINATOR", "JAX_LOCAL_DEVICE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(cluster)}
    return env | {"JAX_PLATFORMS": "cpu"} | more


@pytest.mark.parametrize(
    ("environ", "visible"),
    [(_slurm("1(x4)", 1, CUDA_VISIBLE_DEVICES=EIGHT_GPUS), "all"),  # our [] restricts nothing
     (_slurm("8(x4)", 1, localid=3, CUDA_VISIBLE_DEVICES=EIGHT_GPUS), "3")],  # jax's own pick
)  # fmt: skip
def test_jax_reads_the_local_device_ids_as_intended(environ, visible):
    """A real one-process jax.distributed.initialize() in a fake SLURM environment: the GPUs jax
    will open (its jax_cuda_visible_devices) are all of them for a lone task; the installed jax
    still reads an empty local_device_ids as no restriction."""
    code = textwrap.dedent(f"""
        import os, jax
        from jax._src import xla_bridge
        from bert_jax import distributed
        kwargs = distributed.distributed_kwargs("127.0.0.1:{_free_port()}", 1, 0,
                                                local_devices="auto", timeout_s=30,
                                                environ=os.environ)
        jax.distributed.initialize(**kwargs)
        print("visible:", xla_bridge.CUDA_VISIBLE_DEVICES.value)
        jax.distributed.shutdown()
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_clean_env(**environ),
                       capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"visible: {visible}\n" in r.stdout


def _main(*flags: str, timeout: int = 120) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "bert_jax.main", "--config=configs/pretrain.py:size=tiny,demo",
           "--workdir=/nonexistent/never_written", *flags]  # fmt: skip
    start = time.monotonic()
    r = subprocess.run(cmd, cwd=REPO, env=_clean_env(), capture_output=True, text=True,
                       timeout=timeout, check=False)  # fmt: skip
    return r, time.monotonic() - start


def test_an_unreachable_coordinator_is_named_within_the_timeout():
    r, seconds = _main("--coordinator_address=127.0.0.1:1", "--num_processes=2",
                       "--process_id=1", "--distributed_timeout=5")  # fmt: skip
    assert r.stdout.splitlines()[0] == (
        "process 1 of 2 connecting to 127.0.0.1:1 (timeout 5 s, all local GPUs)"
    )
    (line,) = r.stderr.strip().splitlines()
    assert r.returncode == 1 and seconds < 60, (r.returncode, seconds, r.stderr[-3000:])
    assert line.startswith("error: process 1 of 2 could not reach the coordinator at 127.0.0.1:1 "
                           "in 5 s (")  # fmt: skip
    assert "same --num_processes" in line


def test_a_missing_process_is_named_before_jax_aborts():
    """Process 0 of 2 alone: the coordinator runs, nobody joins. jax aborts the process in C++
    when the timeout passes (no exception to catch); the hint comes first."""
    port = _free_port()
    r, seconds = _main(f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                       "--process_id=0", "--distributed_timeout=5")  # fmt: skip
    assert r.returncode != 0 and seconds < 60, (r.returncode, seconds)
    hint = f"error: process 0 of 2: not every process joined 127.0.0.1:{port} in 5 s: check"
    assert r.stderr.startswith(hint), r.stderr[:3000]


def test_multihost_without_a_cluster_is_a_one_line_usage_error():
    r, _ = _main("--multihost")
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr[-3000:])
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: jax.distributed.initialize: coordinator_address should be ")
    assert "--coordinator_address=HOST:PORT" in line
    r, _ = _main("--multihost", "--local_devices=first")
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: --local_devices=first: expected auto, all or ids such as 0,1,2,3"
    )
