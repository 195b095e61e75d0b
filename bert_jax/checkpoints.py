"""A thin Orbax wrapper: periodic async saves, keep the newest few, verified exact restore.

The saved item is the whole train state: {"step", "params", "opt_state", "rng"}. Each save also
stores a fingerprint of every array (in the step's own metadata, so it is committed atomically
with the arrays). Restoring checks, newest step first:
- that the checkpoint holds the same tree, shapes and dtypes as the model being restored (a
  mismatch is the user's error, raised at once: Orbax would cast dtypes silently);
- that it can be read and that its arrays have the saved fingerprint (Orbax restores flipped
  bytes in a compressed chunk silently; an empty or truncated step fails to read).
A step that fails the second check is moved to `<dir>_corrupt/` (kept for inspection), said
so, and the next older step is tried. A resumed run therefore continues bit for bit from the
newest good step, or starts afresh (loudly) when none is good; never from a wrong one.

What is set aside must be the step's fault, not the machine's. Errors of the machine (out of
memory on the device, a storage service unavailable, a permission) are raised at once. A step
whose arrays fail to read for another reason is set aside only once an older step has read
and verified: when no step reads, the error is raised with every checkpoint left in place. On
several hosts the hosts agree on each step (the worst outcome on any host decides).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint.checkpoint_managers import preservation_policy as ocp_keep
from orbax.checkpoint.checkpoint_managers import save_decision_policy as ocp_save


class CheckpointMismatchError(ValueError):
    """The checkpoint in the workdir is of another model (tree, shape or dtype)."""


class CheckpointReadError(RuntimeError):
    """No checkpoint in the workdir could be read, for a reason that may not be the files'."""


# Errors of the machine, not of the checkpoint: raised, never a reason to set a step aside.
_NOT_CORRUPTION = (
    PermissionError, TimeoutError, ConnectionError, MemoryError, jax.errors.JaxRuntimeError,
)  # fmt: skip
# ... and the status codes with which TensorStore (under Orbax) and XLA report them.
_MACHINE_STATUS = ("RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "PERMISSION_DENIED",
                   "UNAUTHENTICATED", "CANCELLED", "Out of memory", "out of memory")  # fmt: skip

# Outcomes of reading one step, ordered: on several hosts the largest one decides.
_GOOD, _UNREADABLE, _CORRUPT, _MACHINE = 0, 1, 2, 3


def is_machine_error(e: BaseException) -> bool:
    """Whether `e` (or an exception it was raised from) is the machine's, not the files'."""
    while e is not None:
        if isinstance(e, _NOT_CORRUPTION) or any(c in str(e) for c in _MACHINE_STATUS):
            return True
        e = e.__cause__ or e.__context__
    return False


def is_remote(path: str) -> bool:
    """An object-store path (gs://, s3://, ...): no local file-system checks apply."""
    return "://" in path


class Checkpointer:
    def __init__(
        self, directory: str, *, save_every: int, keep: int, log: Callable[[str], None] = print
    ):
        options = ocp.CheckpointManagerOptions(
            # Save every `save_every` steps, and at once when the cluster signals preemption.
            save_decision_policy=ocp_save.AnySavePolicy(
                [
                    ocp_save.FixedIntervalPolicy(save_every),
                    ocp_save.PreemptionCheckpointingPolicy(),
                ]
            ),
            # Older steps are deleted only after a newer one is committed, so a save that fails
            # (a full disk) never costs the last good checkpoint.
            preservation_policy=ocp_keep.LatestN(keep),
            enable_async_checkpointing=True,
            # Leftover tmp dirs of a save that was killed mid-way are removed, never restored.
            cleanup_tmp_directories=True,
        )
        self.directory = directory if is_remote(directory) else os.path.abspath(directory)
        self.log = log
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, *, force: bool = False) -> bool:
        """Saves asynchronously if the policy says so (or `force`); returns whether it saved."""
        if not (force or self.manager.should_save(step)):
            return False
        return self.manager.save(
            step,
            args=ocp.args.StandardSave(state),
            force=force,
            custom_metadata={"fingerprint": fingerprint(state)},
        )

    def restore(self, abstract_state, step: int | None = None):
        """The state of the newest good step (or exactly `step`), or None when there is none.

        Raises CheckpointMismatchError if the checkpoints are of another model, the error
        itself if it is the machine's (`is_machine_error`; on the other hosts a RuntimeError
        saying so), and CheckpointReadError if no step can be read (those that failed to read
        are left in place)."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        if step is not None:
            steps = [step]
        unreadable = []  # steps whose arrays failed to read, set aside once an older one reads
        moved = []
        for s in steps:
            try:
                state, problem, outcome = self._try_restore(s, abstract_state)
            except Exception:  # the machine's error, or another model's checkpoint
                _agree(_MACHINE)  # the other hosts stop too, and say why
                raise
            outcome = _agree(outcome)
            if outcome == _MACHINE:
                raise RuntimeError(
                    f"another host failed to restore checkpoint {self.directory}/{s} (its log "
                    "says why); this step was left in place."
                )
            if outcome == _GOOD:
                for bad, why in unreadable:
                    self._quarantine(bad, why)
                return state
            problem = problem or "another host could not read it"
            if outcome == _CORRUPT:
                self._quarantine(s, problem)
                moved.append(s)
            else:
                unreadable.append((s, problem))
        if unreadable:
            listed = "; ".join(f"step {s}: {why}" for s, why in unreadable)
            aside = (
                f"steps {moved} were corrupt and are in {self.directory}_corrupt; " if moved else ""
            )
            raise CheckpointReadError(
                f"no checkpoint in {self.directory} could be read ({listed}); {aside}these were "
                "left in place. If their files are damaged, move them away and the run starts "
                "afresh (or from an older copy you put back); if the cause is the machine "
                "(memory, storage, permissions), fix it and rerun."
            )
        if steps and step is None:
            self.log(
                f"WARNING: no good checkpoint left in {self.directory} (the bad ones are in "
                f"{self.directory}_corrupt); starting from the beginning."
            )
        return None

    def _try_restore(self, step: int, abstract_state):
        """(state, None, _GOOD) if step restores and verifies, else (None, what is wrong,
        _CORRUPT or _UNREADABLE); raises the errors of the machine."""
        try:
            saved = self.manager.item_metadata(step).tree
        except Exception as e:  # noqa: BLE001 (any unreadable metadata: a broken step)
            if is_machine_error(e):
                raise
            return None, f"its metadata cannot be read ({type(e).__name__}: {e})", _CORRUPT
        check_same_tree(saved, abstract_state, f"{self.directory}/{step}")
        try:
            state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        except Exception as e:  # noqa: BLE001 (truncated or missing files)
            if is_machine_error(e):
                raise
            problem = f"its arrays cannot be read ({type(e).__name__}: {_error_text(e)})"
            return None, problem, _UNREADABLE
        expected = (self.manager.metadata(step).custom_metadata or {}).get("fingerprint")
        if expected is None:
            self.log(f"checkpoint {step}: saved without a fingerprint, restored unverified")
            return state, None, _GOOD
        got = fingerprint(state)
        if set(got) != set(expected):  # another tree layout (a code change), not corruption
            self.log(f"checkpoint {step}: its fingerprint names other arrays; restored unverified")
            return state, None, _GOOD
        bad = sorted(k for k in expected if got[k] != expected[k])
        if bad:
            return (
                None,
                f"its arrays differ from what was saved (fingerprint of {bad[:5]})",
                _CORRUPT,
            )
        return state, None, _GOOD

    def _quarantine(self, step: int, problem: str) -> None:
        target = f"{self.directory}_corrupt/{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.log(f"WARNING: checkpoint {self.directory}/{step} is corrupt: {problem}; moved to "
                 f"{target}, falling back to the previous step.")  # fmt: skip
        if jax.process_index() == 0:
            dest = epath.Path(target)
            dest.parent.mkdir(parents=True, exist_ok=True)
            (epath.Path(self.directory) / str(step)).rename(dest)
        if _hosts() > 1:
            from jax.experimental import multihost_utils  # noqa: PLC0415

            multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
        self.manager.reload()

    def close(self):
        """Waits for pending async saves to be committed, then releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def _error_text(e: BaseException) -> str:
    """The first and the innermost message of an error chain (Orbax wraps TensorStore's
    status, e.g. OUT_OF_RANGE for a truncated file, in a generic first line)."""
    inner = e
    while inner.__cause__ or inner.__context__:
        inner = inner.__cause__ or inner.__context__
    text = str(e).splitlines()[0][:160] if str(e) else ""
    if inner is not e:
        text += (
            f" <- {type(inner).__name__}: {str(inner).splitlines()[0][:200] if str(inner) else ''}"
        )
    return text


def _hosts() -> int:
    """jax.process_count(), the one place this module asks (tests pose as several hosts)."""
    return jax.process_count()


def _agree(outcome: int) -> int:
    """The worst outcome of reading a step on any host (all hosts then act alike: restore,
    set aside, or go on to an older step)."""
    if _hosts() == 1:
        return outcome
    from jax.experimental import multihost_utils  # noqa: PLC0415

    every = multihost_utils.process_allgather(np.int32(outcome))
    return int(np.max(every))


def check_writable(workdir: str) -> None:
    """Fails at start, clearly, if files cannot be created in `workdir` (a local or mounted
    path; object stores such as gs:// are left to Orbax)."""
    if is_remote(workdir):
        return
    probe = os.path.join(workdir, f".write_test_{socket.gethostname()}_{os.getpid()}")
    try:
        os.makedirs(workdir, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise PermissionError(
            f"cannot write to the workdir {workdir!r} ({e.strerror}); choose another --workdir "
            "or fix its permissions."
        ) from e


def check_room(directory: str, state) -> None:
    """Fails at start, clearly, if the disk under `directory` cannot take one more checkpoint of
    `state` (older ones are deleted only after a newer one is written). Skipped for gs:// etc."""
    if is_remote(directory):
        return
    need = sum(
        np.dtype(x.dtype).itemsize * int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state)
    )
    free = shutil.disk_usage(
        directory if os.path.exists(directory) else os.path.dirname(directory)
    ).free
    if free < need:
        raise OSError(
            f"only {free / 2**20:.0f} MB are free on the disk of {directory}, and a checkpoint of "
            f"this model takes up to {need / 2**20:.0f} MB; free some space (the existing "
            "checkpoints are kept) or use a workdir on another disk."
        )


def abstract_like(state):
    """ShapeDtypeStructs (with shardings) of a concrete state: the restore target."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)


def check_same_tree(saved, abstract_state, where: str) -> None:
    """Raises CheckpointMismatchError, naming the arrays, if `saved` (checkpoint metadata) and
    `abstract_state` differ in structure, shape or dtype."""

    def flat(tree):
        return {path_name(k): v for k, v in jax.tree_util.tree_leaves_with_path(tree)}

    flat_saved, flat_want = flat(saved), flat(abstract_state)
    diffs = [f"{k}: only in the checkpoint" for k in sorted(set(flat_saved) - set(flat_want))]
    diffs += [f"{k}: not in the checkpoint" for k in sorted(set(flat_want) - set(flat_saved))]
    for k in sorted(set(flat_saved) & set(flat_want)):
        a, b = flat_saved[k], flat_want[k]
        if tuple(a.shape) != tuple(b.shape) or jnp.dtype(a.dtype) != jnp.dtype(b.dtype):
            diffs.append(
                f"{k}: {jnp.dtype(a.dtype).name}{list(a.shape)} in the checkpoint, "
                f"{jnp.dtype(b.dtype).name}{list(b.shape)} in this model"
            )
    if diffs:
        more = f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else ""
        raise CheckpointMismatchError(
            f"{where} holds a checkpoint of another model: {'; '.join(diffs[:8])}{more}. Use "
            "another --workdir, or the model config the checkpoint was made with (note that "
            "model.scan_layers stacks the layers' arrays: resume with the value it had)."
        )


_MIX = np.uint32(2654435761)  # Knuth's multiplicative hash constant


@jax.jit
def _fingerprints(leaves: list[jax.Array]) -> jax.Array:
    def one(x):
        if x.dtype == jnp.bool_:
            u = x.astype(jnp.uint32)
        else:
            width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
            u = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)
        u = u.reshape(-1)
        i = jnp.arange(u.size, dtype=jnp.uint32)
        # The plain sum changes with any flipped bit; the position-weighted sum with any
        # moved value too (all in uint32 arithmetic, wrapping around).
        return jnp.stack(
            [jnp.sum(u, dtype=jnp.uint32), jnp.sum(u * (i * _MIX + 1), dtype=jnp.uint32)]
        )

    return jnp.stack([one(x) for x in leaves]) if leaves else jnp.zeros((0, 2), jnp.uint32)


def path_name(path) -> str:
    """ "opt_state.1.0.mu" for a tree path, the same whether a node is a dict, a named tuple or
    the dict Orbax's metadata makes of it."""
    return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def fingerprint(state) -> dict[str, list[int]]:
    """Two 32-bit checksums of the bits of every array of `state`, by path name (computed where
    the arrays live; only 8 bytes per array come back to the host)."""
    paths_leaves = jax.tree_util.tree_leaves_with_path(state)
    leaves = [jnp.asarray(x) for _, x in paths_leaves]
    sums = _fingerprints(leaves)  # replicated; on many hosts not fully addressable
    sums = np.asarray(sums.addressable_data(0) if not sums.is_fully_addressable else sums)
    return {
        path_name(p): [int(a), int(b)] for (p, _), (a, b) in zip(paths_leaves, sums, strict=True)
    }
