#!/usr/bin/env bash
# Issue 9's GPU figures in one call of a lent machine (~6 minutes): the pre-training step of
# BERT-base, seq 128, bfloat16, on one GPU, with the levers that matter there, each run a JSON
# line in $OUT/gpu.jsonl and all of them a table in $OUT/gpu.md (MFU against the bf16 matmul
# peak measured in the same run, and against the chip's nominal dense bf16 peak).
#
# The device image has JAX with CUDA but not ml_collections; carry its wheel. Here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl ml_collections==1.1.0
# then run `bash experiments/gpu_check.sh` there with carry=[".whl"] and a 540 s limit.
# Off a GPU it runs the same runs with attention=dot (cuDNN needs a GPU); to check the script
# itself on a CPU: SIZE=tiny BATCH=8 STEPS=2 bash experiments/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null
# Versions, devices, and this repo's modules imported: an incompatibility shows in seconds.
python3 -c "import jax, flax, optax, orbax.checkpoint as o, ml_collections
from bert_jax import train, finetune
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
      'orbax', o.__version__, jax.devices())" || exit 1
attention=$(python3 -c "import jax; print('cudnn' if jax.default_backend() == 'gpu' else 'dot')")
size=${SIZE:-base}
batch=${BATCH:-256}
steps=${STEPS:-20}
fast="attention=$attention,attention_probs_dropout_prob=0,dropout_rng=rbg"

run() {  # one benchmark process: its arguments are added to the common ones
  echo "== $*"
  timeout "${PER_RUN:-150}" python3 experiments/benchmark.py --size="$size" --seq=128 \
    --batch="$batch" --steps="$steps" --rounds=1 --dtype=bfloat16 --noreference \
    --output="$out/gpu.jsonl" "$@" 2>&1 | grep -v "^[IW][0-9]\{4\} " | tail -4
}

run --set="$fast"                          # cuDNN attention, no attention dropout
run --set="$fast,fused_qkv=true"           # + one QKV matmul
run --set="$fast" --batch=$((batch * 2))   # a larger batch
run --set=dropout_rng=rbg                  # the paper's model: attention dropout, einsum
run --set="$fast,scan_layers=true"         # nn.scan over the layers
python3 - "$out" <<'EOF'
import json, pathlib, sys
sys.path.insert(0, "experiments")
import benchmark

out = pathlib.Path(sys.argv[1])
rows = [json.loads(line) for line in (out / "gpu.jsonl").read_text().splitlines() if line]
nominal = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # dense bf16 TFLOP/s (SXM)
for r in rows:
    chip = next((k for k in nominal if k in r["device"]), None)
    if chip:
        flops = r["ours_model_gflop_per_step"] * 1e9 / r["batch"] * r["ours_seqs_per_s"]
        r["ours_mfu_nominal_peak"] = round(flops / (nominal[chip] * 1e12), 4)
    print(json.dumps(r))
table = benchmark.markdown_table(rows)
extra = [f"{r['ours_seqs_per_s']} seq/s: MFU {r['ours_mfu']} of the measured peak, "
         f"{r.get('ours_mfu_nominal_peak', '-')} of the nominal" for r in rows]
(out / "gpu.md").write_text(table + "\n\n" + "\n".join(f"- {x}" for x in extra) + "\n")
print(table)
print("\n".join(extra))
EOF
