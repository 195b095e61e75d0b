"""Reading and writing weight files: safetensors, PyTorch .bin, TF checkpoints, our Orbax layout.

Everything here deals in flat {tensor name: numpy array} dicts (or, for Orbax, our nested params)
and knows nothing about BERT; `convert.py` maps the names. Every error names the file at fault.
Heavy frameworks (torch, tensorflow, orbax) are imported only by the functions that need them.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import pickle
import struct
import warnings

import numpy as np

Tensors = dict[str, np.ndarray]

# Bytes per element of the safetensors dtypes (the names its JSON header uses).
_ST_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


# --------------------------------------------------------------------------- safetensors


def safetensors_header(path: str | os.PathLike) -> dict:
    """The validated JSON header of a .safetensors file.

    Checked before any tensor is trusted: the 8-byte length field fits in the file, the header is
    JSON, and every tensor's byte range lies inside the data section and matches its shape and
    dtype (a truncated download fails here, naming the first tensor that is cut off).
    """
    path = pathlib.Path(path)
    size = path.stat().st_size
    if size < 8:
        raise ValueError(
            f"{path}: {size} bytes, too short for a safetensors file (8-byte header length, "
            "then a JSON header); the file is truncated: fetch or save it again."
        )
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8:
            raise ValueError(
                f"{path}: the header length field says {header_len} bytes but only {size - 8} "
                "follow it; the file is truncated or is not safetensors: fetch or save it again."
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path}: the safetensors header is not valid JSON ({e}); the file is damaged: "
            "fetch or save it again."
        ) from e
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header is not a JSON object.")
    data_size = size - 8 - header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            itemsize = _ST_ITEMSIZE[info["dtype"]]
            numel = math.prod(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{path}: tensor {name!r} has a malformed header entry {info!r}."
            ) from e
        if not 0 <= begin <= end <= data_size:
            raise ValueError(
                f"{path}: tensor {name!r} occupies bytes [{begin}, {end}) of the data section, "
                f"which holds only {data_size} bytes; the file is truncated: fetch or save it "
                "again."
            )
        if end - begin != numel * itemsize:
            raise ValueError(
                f"{path}: tensor {name!r} ({info['dtype']}, shape {info['shape']}) needs "
                f"{numel * itemsize} bytes but its header gives {end - begin}; the file is damaged."
            )
    return header


def read_safetensors(path: str | os.PathLike) -> Tensors:
    """All tensors of a validated .safetensors file as numpy arrays (bfloat16 via ml_dtypes)."""
    from safetensors import SafetensorError, safe_open

    path = pathlib.Path(path)
    header = safetensors_header(path)
    out: Tensors = {}
    bf16 = [k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "BF16"]
    try:
        with safe_open(str(path), framework="numpy") as f:
            for name in f.keys():
                if name not in bf16:
                    out[name] = f.get_tensor(name)
    except SafetensorError as e:
        raise ValueError(f"{path}: safetensors could not read the file: {e}") from e
    if bf16:
        # numpy has no bfloat16, so safetensors' numpy API refuses it; the byte ranges were
        # validated above, so they are read directly as ml_dtypes.bfloat16.
        import ml_dtypes

        with open(path, "rb") as f:
            base = 8 + struct.unpack("<Q", f.read(8))[0]
            for name in bf16:
                begin, end = header[name]["data_offsets"]
                f.seek(base + begin)
                buf = f.read(end - begin)
                out[name] = np.frombuffer(buf, ml_dtypes.bfloat16).reshape(header[name]["shape"])
    return out


def write_safetensors(tensors: Tensors, path: str | os.PathLike) -> None:
    from safetensors.numpy import save_file

    # transformers refuses a safetensors file whose metadata does not name its framework.
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), {"format": "pt"})


# --------------------------------------------------------------------------- PyTorch .bin


def read_torch_bin(path: str | os.PathLike) -> Tensors:
    """A PyTorch state dict, loaded only with `weights_only=True` (no code in the file runs)."""
    path = pathlib.Path(path)
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"{path} is a PyTorch pickle and reading it needs torch (pip install torch); or "
            "convert it to model.safetensors where torch is installed."
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{path}: refused: the pickle holds Python objects other than tensors ({reason}). "
            "Unpickling it fully could run code from the file, so it is not loaded. Use the "
            "model's model.safetensors instead, or re-save the state dict from a trusted source."
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{path}: not a readable PyTorch state dict ({e}).") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors.")
    out: Tensors = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor.")
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            # torch cannot hand numpy a bfloat16 array; reinterpret the bits as ml_dtypes'.
            import ml_dtypes

            out[name] = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[name] = t.numpy()
    return out


# --------------------------------------------------------------------------- HF directories

HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def read_hf_weights(model_dir: str | os.PathLike) -> tuple[Tensors, list[pathlib.Path]]:
    """The state dict of a Hugging Face model directory, and the files it came from.

    Safetensors is preferred over a .bin when both exist; sharded checkpoints are read through
    their index.json, whose weight map must agree with the shards.
    """
    model_dir = pathlib.Path(model_dir)
    for name in HF_WEIGHT_FILES:
        path = model_dir / name
        if not path.exists():
            continue
        read = read_safetensors if ".safetensors" in name else read_torch_bin
        if not name.endswith(".index.json"):
            return read(path), [path]
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path}: not a sharded-checkpoint index (no 'weight_map').") from e
        tensors: Tensors = {}
        shards = sorted({model_dir / f for f in weight_map.values()})
        for shard in shards:
            if not shard.exists():
                raise FileNotFoundError(f"{path} lists the shard {shard.name}, which is missing.")
            for k, v in read(shard).items():
                if weight_map.get(k) != shard.name:
                    raise ValueError(f"{shard}: holds {k!r}, which {path.name} does not map to it.")
                tensors[k] = v
        lost = sorted(set(weight_map) - set(tensors))
        if lost:
            raise ValueError(f"{path}: tensors {lost[:5]} (of {len(lost)}) are in no shard.")
        return tensors, [path, *shards]
    raise FileNotFoundError(
        f"{model_dir}: no weights found; expected one of {', '.join(HF_WEIGHT_FILES)}."
    )


# --------------------------------------------------------------------------- TF checkpoints


def find_tf_checkpoint(path: str | os.PathLike) -> str | None:
    """The checkpoint prefix that `path` names (a prefix, an .index file or a directory)."""
    path = os.fspath(path)
    if path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    if os.path.isfile(path + ".index"):
        return path
    if not os.path.isdir(path):
        return None
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(path)  # follows a `checkpoint` state file if present
    if latest:
        # The state file may hold an absolute path from where the checkpoint was written (a
        # copied or moved directory): the checkpoint inside the directory named here wins.
        local = os.path.join(path, os.path.basename(latest))
        if os.path.isfile(local + ".index"):
            return local
    prefixes = sorted(p.name[: -len(".index")] for p in pathlib.Path(path).glob("*.index"))
    if len(prefixes) > 1:
        raise ValueError(
            f"{path} holds several TF checkpoints {prefixes}; pass one prefix, e.g. "
            f"{os.path.join(path, prefixes[-1])}."
        )
    return os.path.join(path, prefixes[0]) if prefixes else None


def tf_checkpoint_shapes(prefix: str) -> dict[str, tuple[int, ...]]:
    """Variable name -> shape, read from the checkpoint index (no graph is built or run)."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        return {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()}
    except (tf.errors.OpError, ValueError) as e:
        raise ValueError(f"{prefix}: not a readable TF checkpoint ({e}).") from e


def read_tf_checkpoint(prefix: str, names: list[str]) -> Tensors:
    """The named variables of a TF checkpoint (skipped ones, e.g. Adam slots, are never read)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    out: Tensors = {}
    for name in names:
        try:
            out[name] = np.asarray(reader.get_tensor(name))
        except (tf.errors.OpError, IndexError, ValueError, RuntimeError) as e:
            # A truncated .data file surfaces as IndexError("Read less bytes than requested").
            raise ValueError(
                f"{prefix}: variable {name!r} could not be read ({type(e).__name__}: {e}); the "
                f"checkpoint's .data file is truncated or damaged: fetch it again."
            ) from e
    return out


def write_tf_checkpoint(tensors: Tensors, prefix: str) -> str:
    """Writes tensors under exactly the given variable names (the original BERT ones).

    The v1 Saver with a {name: variable} dict saves each variable under its dict key, so
    `tf.train.list_variables` shows `bert/encoder/layer_0/...` as the original release does;
    tf.train.Checkpoint would add object-graph paths and `/.ATTRIBUTES/VARIABLE_VALUE`.
    """
    import tensorflow as tf

    variables = {k: tf.Variable(v, name=k.replace("/", "_")) for k, v in tensors.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")  # "Saver is deprecated": intended, see the docstring
        try:
            saver = tf.compat.v1.train.Saver(var_list=variables)
            # Like the released checkpoints: no graph (.meta) and no `checkpoint` state file,
            # whose absolute paths would go stale when the directory is moved.
            return saver.save(None, prefix, write_meta_graph=False, write_state=False)
        finally:
            logger.setLevel(level)


# --------------------------------------------------------------------------- Orbax (ours)


def read_orbax_params(checkpoints_dir: str | os.PathLike) -> tuple[int, dict]:
    """The newest step in `checkpoints_dir` (as bert_jax.checkpoints saves) and only its `params`.

    A partial restore: the optimizer state (2x the params for Adam) is never read, and arrays come
    back as numpy, so restoring does not depend on the devices or shardings it was saved from.
    """
    import jax
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(
        os.path.abspath(checkpoints_dir),
        item_handlers=ocp.PyTreeCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    try:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"{checkpoints_dir}: no finished checkpoint step in it.")
        tree = getattr(manager.item_metadata(step), "tree", None)
        if not isinstance(tree, dict) or "params" not in tree:
            raise ValueError(
                f"{checkpoints_dir}/{step}: the saved tree has no 'params' entry; not a "
                "checkpoint written by bert_jax."
            )
        meta = tree["params"]
        item = {"params": jax.tree.map(lambda m: np.empty(m.shape, m.dtype), meta)}
        as_numpy = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), meta)
        args = ocp.args.PyTreeRestore(
            item=item, restore_args={"params": as_numpy}, partial_restore=True
        )
        return step, manager.restore(step, args=args)["params"]
    finally:
        manager.close()


def read_selected_params(directory: str | os.PathLike) -> dict:
    """The params of a fine-tuning run's selected model (`workdir/best`, one Orbax checkpoint of
    the params alone, as `finetune` keeps it), as numpy arrays."""
    import jax
    import orbax.checkpoint as ocp

    path = os.path.abspath(directory)
    with ocp.PyTreeCheckpointer() as loader:
        tree = loader.metadata(path).item_metadata
        tree = dict(getattr(tree, "tree", tree))
        as_numpy = jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return loader.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


def write_orbax_params(params: dict, checkpoints_dir: str | os.PathLike, step: int = 0) -> None:
    """Saves {"params": params} with the same manager (and layout) as pre-training runs."""
    from bert_jax import checkpoints

    ckpt = checkpoints.Checkpointer(os.fspath(checkpoints_dir), save_every=1, keep=1)
    try:
        ckpt.save(step, {"params": params}, force=True)
    finally:
        ckpt.close()
