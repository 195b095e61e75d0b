"""The Python half of experiments/gpu_check.sh.

    python experiments/gpu_check.py attention      # prints the attention the GPU runs use
    python experiments/gpu_check.py summary DIR    # DIR/gpu.jsonl -> DIR/gpu.md, with nominal MFU

`attention` compares cuDNN's attention with XLA's (`attention=dot`) on a small bf16 model: padded
rows and a row with no tokens (an evaluation batch's filler row), forward and gradient. It prints
"cudnn" when both are finite and agree to bf16 rounding, else "dot" (and why, on stderr); off a
GPU, "dot".
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

# Dense bf16 TFLOP/s of SXM parts by their device_kind (PCIe and NVL cards have less: none given).
NOMINAL_TFLOPS = {"H100 80GB HBM3": 989.4, "H200": 989.4, "A100-SXM4": 312.0}


def choose_attention() -> str:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from bert_jax.model import BertConfig, BertModel  # noqa: PLC0415

    if jax.default_backend() != "gpu":
        return "dot"
    config = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=512,
                        attention_probs_dropout_prob=0.0, dtype="bfloat16")  # fmt: skip
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, (4, 128)).astype(np.int32)
    mask = (np.arange(128)[None] < np.array([[0], [17], [100], [128]])).astype(np.int32)
    params = BertModel(config).init(jax.random.PRNGKey(0), ids, mask)["params"]

    def run(attention):
        model = BertModel(dataclasses.replace(config, attention=attention))

        def loss(p):
            out = model.apply({"params": p}, ids, mask)["sequence_output"].astype(jnp.float32)
            return jnp.sum(out[1:] ** 2), out  # the filler row's outputs are never read

        (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return out, jnp.concatenate([g.ravel() for g in jax.tree_util.tree_leaves(grads)])

    try:
        (out, grads), (ref, ref_grads) = run("cudnn"), run("dot")
    except Exception as e:  # noqa: BLE001 (any failure of cuDNN's path means: use XLA's)
        print(f"cudnn failed: {type(e).__name__}: {str(e)[:800]}", file=sys.stderr)
        return "dot"
    finite = bool(jnp.isfinite(out).all() and jnp.isfinite(grads).all())
    diff = float(jnp.abs(out[1:] - ref[1:]).max())
    cosine = float(grads @ ref_grads / jnp.linalg.norm(grads) / jnp.linalg.norm(ref_grads))
    print(f"cudnn against dot: finite {finite}, max |output difference| {diff:.4f}, gradient "
          f"cosine {cosine:.6f}", file=sys.stderr)  # fmt: skip
    return "cudnn" if finite and diff < 0.1 and cosine > 0.999 else "dot"


def summary(directory: str) -> None:
    import benchmark  # noqa: PLC0415

    out = pathlib.Path(directory)
    results = out / "gpu.jsonl"
    rows = (
        [json.loads(x) for x in results.read_text().splitlines() if x] if results.exists() else []
    )
    lines = []
    for r in rows:
        chip = next((k for k in NOMINAL_TFLOPS if k in r["device"]), None)
        if chip:
            flops = r["ours_model_gflop_per_step"] * 1e9 / r["batch"] * r["ours_seqs_per_s"]
            r["ours_mfu_nominal_peak"] = round(flops / (NOMINAL_TFLOPS[chip] * 1e12), 4)
        print(json.dumps(r))
        lines.append(f"- {r['options']} batch {r['batch']}: {r['ours_seqs_per_s']} seq/s, MFU "
                     f"{r['ours_mfu']} of the measured peak, {r.get('ours_mfu_nominal_peak', '-')} "
                     "of the nominal")  # fmt: skip
    text = benchmark.markdown_table(rows) + "\n\n" + "\n".join(lines) + "\n"
    (out / "gpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    if sys.argv[1:2] == ["attention"]:
        print(choose_attention())
    elif sys.argv[1:2] == ["summary"] and len(sys.argv) == 3:
        summary(sys.argv[2])
    else:
        sys.exit(__doc__)
