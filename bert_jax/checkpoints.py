"""A thin Orbax wrapper: periodic async saves, keep the newest few, exact restore.

The saved item is the whole train state: {"step", "params", "opt_state", "rng"}; restoring it into
an abstract state of the same structure gives back identical arrays (dtype and shape checked by
Orbax), so a resumed run continues bit for bit.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as ocp_keep
from orbax.checkpoint.checkpoint_managers import save_decision_policy as ocp_save


class Checkpointer:
    def __init__(self, directory: str, *, save_every: int, keep: int):
        options = ocp.CheckpointManagerOptions(
            # Save every `save_every` steps, and at once when the cluster signals preemption.
            save_decision_policy=ocp_save.AnySavePolicy(
                [
                    ocp_save.FixedIntervalPolicy(save_every),
                    ocp_save.PreemptionCheckpointingPolicy(),
                ]
            ),
            preservation_policy=ocp_keep.LatestN(keep),
            enable_async_checkpointing=True,
            # Leftover tmp dirs of a save that was killed mid-way are removed, never restored.
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, abstract_state, step: int | None = None):
        """The state saved at `step` (default: newest), or None when there is no checkpoint."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def save(self, step: int, state, *, force: bool = False) -> bool:
        """Saves asynchronously if the policy says so (or `force`); returns whether it saved."""
        return self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def close(self):
        """Waits for pending async saves to be committed, then releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state):
    """ShapeDtypeStructs (with shardings) of a concrete state: the restore target."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
