"""Joining a multi-host job: jax.distributed.initialize() with the arguments the environment
(SLURM, Open MPI) and main's flags give, which local GPUs a process takes (one process per host
takes all of them, one per GPU its local rank's), and errors that name the coordinator address
instead of a silent wait and a C++ abort."""

import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, NoReturn


def _processes_on_this_host(environ: Mapping[str, str]) -> int | None:
    """How many processes of the job run on this host (Open MPI, SLURM), None if unknown."""
    env = environ.get
    if env("OMPI_COMM_WORLD_LOCAL_SIZE"):
        return int(env("OMPI_COMM_WORLD_LOCAL_SIZE"))
    if env("SLURM_LOCALID") is None:
        return None
    # srun's "8(x3),2": 8 tasks on each of the step's first three nodes, 2 on the fourth.
    if spec := env("SLURM_STEP_TASKS_PER_NODE") or env("SLURM_TASKS_PER_NODE"):
        counts = []
        for item in spec.split(","):
            count, _, repeat = item.partition("(x")
            counts += [int(count)] * int(repeat.rstrip(")") or 1)
        node = int(env("SLURM_NODEID", "0"))
        return counts[node] if node < len(counts) else None
    if env("SLURM_NTASKS_PER_NODE"):
        return int(env("SLURM_NTASKS_PER_NODE"))
    nodes = env("SLURM_STEP_NUM_NODES") or env("SLURM_NNODES") or "1"
    return 1 if env("SLURM_NTASKS") in ("1", nodes) else None  # srun puts a task on every node


_VISIBLE_DEVICE_VARS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")


def local_device_ids(spec: str, environ: Mapping[str, str]) -> list[int] | None:
    """jax.distributed.initialize's local_device_ids for --local_devices=spec.

    None leaves the choice to jax: on SLURM and Open MPI it keeps only the GPU at the local rank
    (one GPU per process), elsewhere all. An empty list restricts nothing (jax restricts only
    when the list is non-empty): the process uses every GPU CUDA shows it, with no counting of
    GPUs before the backend starts (tests/test_distributed_launch.py checks that jax still
    reads [] this way).
    """
    if spec not in ("auto", "all"):
        try:
            return [int(i) for i in spec.split(",")]
        except ValueError:
            raise ValueError(
                f"--local_devices={spec}: expected auto, all or ids such as 0,1,2,3"
            ) from None
    if spec == "auto" and "JAX_LOCAL_DEVICE_IDS" in environ:
        return None  # the user's choice; jax reads it
    try:
        processes = _processes_on_this_host(environ)
    except ValueError:  # a malformed variable: jax's default
        processes = None
    visible = next((environ[v] for v in _VISIBLE_DEVICE_VARS if v in environ), None)
    # Alone on its host, a process owns every GPU there (jax would keep only GPU 0 of 8). Fewer
    # GPUs visible than processes on the host: SLURM bound GPUs to tasks (--gpus-per-task), and
    # the local rank (up to processes - 1) is no index into them.
    alone = processes == 1
    bound = processes is not None and visible is not None and len(visible.split(",")) < processes
    return [] if spec == "all" or alone or bound else None


def distributed_kwargs(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    *,
    local_devices: str,
    timeout_s: int,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """The arguments of jax.distributed.initialize() for the flags in this environment."""
    host, _, port = (coordinator_address or "").rpartition(":")
    if coordinator_address is not None and not (host and port.isdigit()):
        raise ValueError(f"--coordinator_address={coordinator_address}: expected HOST:PORT, "
                         "process 0's host name or IP address and a free port on it")  # fmt: skip
    return {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
        "local_device_ids": local_device_ids(local_devices, environ),
        "initialization_timeout": timeout_s,
    }


def describe(kwargs: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """What this process will connect as and to, for the messages: the flags' values, else what
    jax will read from the environment (where this function knows where)."""
    env = environ.get
    pid = kwargs["process_id"]
    pid = env("SLURM_PROCID", env("OMPI_COMM_WORLD_RANK")) if pid is None else pid
    count = kwargs["num_processes"] or env("SLURM_NTASKS", env("OMPI_COMM_WORLD_SIZE", "?"))
    address = kwargs["coordinator_address"] or env("JAX_COORDINATOR_ADDRESS")
    nodes = env("SLURM_STEP_NODELIST")
    ids, rank = kwargs["local_device_ids"], env("OMPI_COMM_WORLD_LOCAL_RANK", env("SLURM_LOCALID"))
    if ids:
        local = "local GPUs " + ",".join(map(str, ids))
    elif ids is None and env("JAX_LOCAL_DEVICE_IDS"):
        local = f"local GPUs {env('JAX_LOCAL_DEVICE_IDS')} (JAX_LOCAL_DEVICE_IDS)"
    elif ids is None and rank is not None:
        local = f"local GPU {rank} (its local rank)"
    else:
        local = "all local GPUs"
    return {
        "process": f"process {'?' if pid is None else pid} of {count}",
        "count": count,
        "pid": int(pid) if str(pid).isdigit() else None,
        "address": address,  # None: jax finds it (SLURM, Open MPI, TPU metadata)
        "where": address or (f"the first node of {nodes}" if nodes else "the coordinator"),
        "local": local,
    }


def _wait_for_coordinator(address: str, timeout_s: float) -> str | None:
    """Waits until host:port accepts TCP connections; returns the last error if it never did.
    Process 0 may start later than the others, so a refused connection is retried."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
            return None
        except OSError as e:
            if time.monotonic() >= deadline:
                return str(e) or type(e).__name__
        time.sleep(1)


def exit_with(message: str, code: int) -> NoReturn:
    """`error: message` on stderr, then exit with `code`."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def initialize(
    jax,
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    *,
    local_devices: str,
    timeout_s: int,
) -> None:
    """jax.distributed.initialize() for main's flags. It says first where it connects to, and
    names the address and the fixes when that fails (jax's own failure, a C++ abort after the
    timeout, names neither). Exits (status 2: a usage error, 1: unreachable) with one line."""
    try:
        kwargs = distributed_kwargs(
            coordinator_address, num_processes, process_id,
            local_devices=local_devices, timeout_s=timeout_s, environ=os.environ,
        )  # fmt: skip
    except ValueError as e:
        exit_with(str(e), 2)
    d = describe(kwargs, os.environ)
    if d["address"] or d["pid"] is not None:  # else jax finds them (a TPU pod) or cannot
        print(f"{d['process']} connecting to {d['where']} (timeout {timeout_s} s, {d['local']})",
              flush=True)  # fmt: skip
    fixes = (
        f"check that all {d['count']} processes are running, that {d['where']} (process 0's "
        "host) is reachable from every host (host name, port, firewall, network interface), and "
        "that every process got the same --num_processes and its own --process_id"
    )
    if d["address"] and d["pid"]:  # not process 0, which starts the coordinator itself
        error = _wait_for_coordinator(d["address"], timeout_s)
        if error:
            exit_with(f"{d['process']} could not reach the coordinator at {d['address']} in "
                      f"{timeout_s} s ({error}): {fixes}.", 1)  # fmt: skip
    # Collectives between CPU processes (tests, CPU clusters); GPUs and TPUs use their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # When the timeout passes, jax aborts the process (no exception to catch): say why first.
    joined = threading.Event()
    hint = (
        f"error: {d['process']}: not every process joined {d['where']} in {timeout_s} s: {fixes}."
    )
    threading.Thread(
        target=lambda: (
            joined.wait(max(timeout_s - 2, timeout_s / 2))
            or print(hint, file=sys.stderr, flush=True)
        ),
        daemon=True,
    ).start()
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, TypeError) as e:  # jax's checks of missing or inconsistent arguments
        exit_with(f"jax.distributed.initialize: {e} Outside SLURM, Open MPI, a TPU pod or "
                  "Kubernetes, give every process --coordinator_address=HOST:PORT (process 0's "
                  "host), the same --num_processes=N and its own --process_id=I.", 2)  # fmt: skip
    finally:
        joined.set()
