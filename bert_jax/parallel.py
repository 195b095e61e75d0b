"""The device mesh: axes (data, fsdp, tensor), the logical-axis rules, and sharded state.

One table says how every array is laid out. A parameter's dimensions get logical names from its
path (PARAM_AXES, first match wins), and RULES map logical names to mesh axes:

  logical axis   mesh axis   what it is
  batch          data+fsdp   examples of the global batch (data parallel; FSDP shards them too)
  embed          fsdp        the hidden size H of a weight: FSDP (ZeRO-3) shards weights here
  heads          tensor      attention heads (N * D outputs of query/key/value): Megatron TP
  mlp            tensor      the feed-forward width F
  vocab          tensor      the vocabulary of the embedding table and the MLM output bias

A dimension whose size the mesh axis does not divide stays whole (replicated). The optimizer
state follows its parameter (Adam moments are sharded like the weight they belong to).
`jax.jit` with these shardings is the whole mechanism: XLA inserts the collectives (gradient
all-reduce over data, all-gathers of FSDP weights, TP reductions), so `train.train_step` runs
unchanged on 1 device, a pod slice or many hosts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import flax.jax_utils
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bert_jax.checkpoints import path_name
from bert_jax.model import BATCH_AXES

AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axes.
RULES = {
    "batch": BATCH_AXES,  # (the model keeps its activations split so: model.batch_sharded)
    "embed": "fsdp",
    "heads": "tensor",
    "mlp": "tensor",
    "vocab": "tensor",
}

# Parameter path (dots between names) -> logical axes of its dimensions; first match wins.
PARAM_AXES = [
    (r"word_embeddings\.embedding$", ("vocab", "embed")),
    (r"(position|token_type)_embeddings\.embedding$", (None, "embed")),
    (r"attention\.self\.(query|key|value)\.kernel$", ("embed", "heads")),
    (r"attention\.self\.(query|key|value)\.bias$", ("heads",)),
    (r"attention\.output\.dense\.kernel$", ("heads", "embed")),
    (r"intermediate\.dense\.kernel$", ("embed", "mlp")),
    (r"intermediate\.dense\.bias$", ("mlp",)),
    (r"(layer_\d+|layers\.layer)\.output\.dense\.kernel$", ("mlp", "embed")),
    (r"predictions\.output_bias$", ("vocab",)),
    (r"(pooler|transform)\.dense\.kernel$", ("embed", None)),
    (r"seq_relationship\.output_weights$", (None, "embed")),
]


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices of all processes; -1: what is left."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    if sizes.count(-1) > 1 or known == 0 or len(devices) % known:
        raise ValueError(
            f"mesh data={data} x fsdp={fsdp} x tensor={tensor} does not fit {len(devices)} "
            "devices; give the sizes (at most one -1) whose product is the device count."
        )
    sizes = [len(devices) // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"mesh {dict(zip(AXES, sizes, strict=True))} has {int(np.prod(sizes))} places for "
            f"{len(devices)} devices; the product of the sizes must equal the device count."
        )
    # Auto axes: the shardings given to jit (and XLA's propagation) decide the layout; the
    # model code stays free of sharding annotations.
    auto = (jax.sharding.AxisType.Auto,) * len(AXES)
    return jax.make_mesh(sizes, AXES, axis_types=auto, devices=devices)


def _traced_on(mesh: Mesh, fn: Callable) -> Callable:
    """`fn` traced with `mesh` as the abstract mesh in context, which the model's sharding
    constraints (model.batch_sharded) read."""

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args, **kwargs)

    return traced


def batch_divisor(mode: str, mesh: Mesh | None) -> int:
    """What the global batch must be a multiple of: the devices (pmap), the mesh's batch axes
    (and the processes, each feeding its own rows), or the processes (jit: one)."""
    if mode == "mesh":
        batch_axes, hosts = _axis_size(mesh, RULES["batch"]), jax.process_count()
        if batch_axes % hosts:
            # Each process feeds its own rows; a batch slice replicated over several processes
            # would be given different rows by each (and JAX would take a smaller batch).
            raise ValueError(
                f"the mesh's batch axes (data x fsdp = {batch_axes}) are not a multiple of the "
                f"{hosts} processes; every process feeds its own rows of the batch. Make "
                "train.mesh_data x train.mesh_fsdp a multiple of the process count (keep "
                "train.mesh_tensor within a host)."
            )
        return int(np.lcm(batch_axes, hosts))
    return jax.device_count() if mode == "pmap" else jax.process_count()


def _axis_size(mesh: Mesh, axes) -> int:
    axes = (axes,) if isinstance(axes, str) else axes
    return int(np.prod([mesh.shape[a] for a in axes]))


def logical_to_spec(logical: tuple, shape: tuple[int, ...], mesh: Mesh) -> P:
    """A PartitionSpec from logical axis names; dims the mesh axis does not divide stay whole."""
    out = []
    for name, size in zip(logical, shape, strict=True):
        axes = RULES.get(name) if name else None
        if axes is None or size % _axis_size(mesh, axes) or _axis_size(mesh, axes) == 1:
            out.append(None)
        else:
            out.append(axes)
    return P(*out)


def param_spec(path: str, shape: tuple[int, ...], mesh: Mesh) -> P:
    stacked = ".layers.layer." in path  # scan_layers: a leading layer axis, never split
    for pattern, logical in PARAM_AXES:
        axes = (None, *logical) if stacked else logical
        if re.search(pattern, path) and len(axes) == len(shape):
            return logical_to_spec(axes, shape, mesh)
    return P()  # biases, LayerNorm, heads' small layers: replicated


def state_shardings(abstract_state, mesh: Mesh):
    """NamedShardings for a (possibly abstract) train state {"step", "params", "opt_state", "rng"}:
    params by PARAM_AXES, optimizer leaves like the parameter whose path ends theirs, the rest
    replicated."""
    params = {path_name(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(
        abstract_state["params"])}  # fmt: skip

    def spec(path, x) -> NamedSharding:
        name = path_name(path)
        shape = tuple(getattr(x, "shape", ()))
        if name.startswith("params."):
            return NamedSharding(mesh, param_spec(name, shape, mesh))
        # opt_state.1.0.mu.bert.encoder... -> the parameter bert.encoder... of the same shape
        for param, pshape in params.items():
            if name.endswith("." + param) and pshape == shape:
                return NamedSharding(mesh, param_spec(param, shape, mesh))
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(spec, abstract_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(RULES["batch"]))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's slice of the global batch -> global arrays split over data x fsdp (each
    process holds the rows of its own devices)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def to_host(tree):
    """Values of replicated (or fully addressable) arrays as numpy, on every process."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(jax.device_get(x))

    return jax.tree_util.tree_map(get, tree)


def sharded_init(init: Callable, rng: jax.Array, mesh: Mesh):
    """init(rng) built directly in its shardings: eval_shape -> shardings -> jit(out_shardings),
    so the full state never sits on one device."""
    shardings = state_shardings(jax.eval_shape(init, rng), mesh)
    return jax.jit(init, out_shardings=shardings)(rng), shardings


def describe(shardings) -> dict[str, str]:
    """{parameter path: its PartitionSpec}, for logs and tests."""
    return {path_name(p): str(s.spec) for p, s in jax.tree_util.tree_leaves_with_path(
        shardings["params"])}  # fmt: skip


# --------------------------------------------------------------------------- how steps run


def compiler_options(text: str) -> dict[str, Any]:
    """`train.compiler_options` ("name=value,...": XLA's options, e.g.
    "xla_cpu_prefer_vector_width=512") as `jax.jit`'s compiler_options, values typed (true/false,
    integers, floats, else strings). They are checked by compiling a trivial function with them,
    so a misspelt name or a bad value fails here, naming XLA's reason (pre-training and the
    fine-tuning sweep call this before they read any data)."""
    options = {}
    for item in filter(None, text.split(",")):
        name, eq, value = (part.strip() for part in item.partition("="))
        if not (name and eq and value):
            raise ValueError(
                f"train.compiler_options={text!r}: {item!r} is not name=value "
                "(e.g. xla_cpu_prefer_vector_width=512)."
            )
        options[name] = _typed(value)
    if options:
        try:
            _check(tuple(options.items()))
        except Exception as e:  # noqa: BLE001 (XLA raises its runtime error type)
            raise ValueError(f"train.compiler_options={text!r}: XLA rejects it: {e}") from None
    return options


@functools.cache
def _check(options: tuple[tuple[str, Any], ...]) -> None:
    """Compiles a trivial function with `options` (once per process for the same options: a
    fine-tuning sweep checks them before reading its data and again in every point)."""
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(np.float32(0)).compile()


def _typed(value: str) -> bool | int | float | str:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


class Parallel:
    """How the steps run: "jit" on one device, "pmap" over the local devices (data parallel,
    replicated state), or "mesh": one jit over a `make_mesh` mesh of all devices of all hosts,
    state and batch sharded by the rules above.

    Holds the compiled step functions and the host<->device placement of states, batches and
    metrics. `train_fn(state, batch, axis_name=None)` and `eval_fn(params, batch,
    axis_name=None)` are pure steps; under pmap they get `axis_name` to psum over (under jit and
    mesh the batch is global and XLA does the reductions). `compiler_options` (from
    `compiler_options(text)`) go to XLA when both steps compile (jit and mesh only).
    """

    AXIS = "batch"

    def __init__(
        self,
        mode: str,
        train_fn: Callable,
        eval_fn: Callable,
        *,
        mesh: Mesh | None = None,
        abstract_state: Any = None,
        compiler_options: dict[str, Any] | None = None,
    ):
        self.mode, self.mesh = mode, mesh
        self.n = jax.local_device_count() if mode == "pmap" else 1
        if compiler_options and mode == "pmap":
            raise ValueError(
                f"train.compiler_options={compiler_options} needs train.parallel='jit' or 'mesh' "
                "(jax.pmap takes no compiler options); got pmap."
            )
        jit = functools.partial(jax.jit, compiler_options=compiler_options or None)
        if mode == "jit":
            self.train = jit(train_fn, donate_argnums=0)
            self.eval = jit(eval_fn)
        elif mode == "pmap":
            self.train = jax.pmap(
                functools.partial(train_fn, axis_name=self.AXIS),
                axis_name=self.AXIS,
                donate_argnums=0,
            )
            self.eval = jax.pmap(
                functools.partial(eval_fn, axis_name=self.AXIS), axis_name=self.AXIS
            )
        elif mode == "mesh":
            if mesh is None or abstract_state is None:
                raise ValueError("mode 'mesh' needs the mesh and the (abstract) state.")
            self.state_shardings = state_shardings(abstract_state, mesh)
            batch, rep = batch_sharding(mesh), replicated(mesh)
            train_fn, eval_fn = _traced_on(mesh, train_fn), _traced_on(mesh, eval_fn)
            self.train = jit(
                train_fn,
                in_shardings=(self.state_shardings, batch),
                out_shardings=(self.state_shardings, rep),
                donate_argnums=0,
            )
            self.eval = jit(
                eval_fn, in_shardings=(self.state_shardings["params"], batch), out_shardings=rep
            )
        else:
            raise ValueError(f"train.parallel={mode!r}; use 'auto', 'jit', 'pmap' or 'mesh'.")

    def put_state(self, state):
        if self.mode == "pmap":
            return flax.jax_utils.replicate(state)
        if self.mode == "mesh":
            return jax.device_put(state, self.state_shardings)
        return state

    def get_state(self, state):
        """The state as checkpoints hold it: one copy (pmap: device 0's; mesh: the sharded
        global arrays, which Orbax writes collectively)."""
        if self.mode == "pmap":
            return flax.jax_utils.unreplicate(state)
        return state

    def put_batch(self, batch: dict[str, np.ndarray]):
        """This host's rows of the global batch -> what the step takes."""
        if self.mode == "mesh":
            return global_batch(batch, self.mesh)
        if self.mode == "pmap":

            def split(x):
                if x.shape[0] % self.n:
                    raise ValueError(
                        f"per-host batch {x.shape[0]} is not divisible by {self.n} local devices; "
                        "set train.batch_size to a multiple of the device count."
                    )
                return x.reshape(self.n, x.shape[0] // self.n, *x.shape[1:])

            return jax.tree_util.tree_map(split, batch)
        return batch

    def get_metrics(self, metrics):
        """Metrics as host values (they are psum'ed or replicated: the same on every device)."""
        if self.mode == "pmap":
            return jax.tree_util.tree_map(lambda x: x[0], metrics)
        if self.mode == "mesh":
            return to_host(metrics)
        return metrics


def resolve(mode: str, *, mesh_ok: bool = True) -> str:
    """ "auto": with several processes a mesh over all their devices; in one process pmap on
    several local devices, else jit. `jit` and `pmap` are refused with several processes (each
    process would train a model of its own, or fail to save a pmap state), and so is the mesh
    where it is not offered (`mesh_ok=False`: fine-tuning runs in one process)."""
    if mode not in ("auto", "jit", "pmap", "mesh"):
        raise ValueError(f"train.parallel={mode!r}; use 'auto', 'jit', 'pmap' or 'mesh'.")
    hosts = jax.process_count()
    if not mesh_ok and hosts > 1:
        raise ValueError(
            f"fine-tuning runs in one process (train.parallel={mode!r}: 'jit' or 'pmap' over its "
            f"devices), and this run has {hosts}: start it without --multihost/--num_processes."
        )
    if mode == "auto":
        if hosts == 1:
            return "pmap" if jax.local_device_count() > 1 else "jit"
        return "mesh"
    if mode == "mesh" and not mesh_ok:
        raise ValueError(
            "train.parallel='mesh' is for pre-training; fine-tune with 'jit', 'pmap' or 'auto'."
        )
    if mode in ("jit", "pmap") and hosts > 1:
        raise ValueError(
            f"train.parallel={mode!r} runs within one process: with {hosts} processes each "
            "would train a separate model (jit) or fail to save its checkpoints (pmap). Use "
            "'mesh' or 'auto'."
        )
    return mode
