"""experiments/benchmark.py: the FLOP formula of DESIGN.md, the results table, and one real run
of a tiny model end to end (speed itself is measured by the script, never asserted here);
experiments/compare_curves.py on fixture metrics; experiments/scaling.py's ratios by hand and one
tiny run."""

import json
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
import benchmark  # noqa: E402
import compare_curves  # noqa: E402
import gpu_check  # noqa: E402
import scaling  # noqa: E402

from bert_jax import losses  # noqa: E402
from bert_jax.model import BertConfig  # noqa: E402


def test_flops_formula_by_hand():
    # L=1, d=2, d_ff=4, V=10, S=3, P=1 -> forward 2*3*1*(16+16) + 4*1*2*9 + 2*1*(4+20) = 312
    c = BertConfig(vocab_size=10, hidden_size=2, num_hidden_layers=1, num_attention_heads=1,
                   intermediate_size=4)  # fmt: skip
    assert benchmark.flops_per_sequence(c, seq=3, predictions=1) == 3 * 312


def test_finetune_flops_by_hand():
    # Encoder forward as above without the MLM head: 2*3*1*(16+16) + 4*1*2*9 = 264; the
    # classification head (pooler 2x2, classifier 2x2 labels) 2*(4+4) = 16; a token head with 5
    # labels 2*3*2*5 = 60 (every position).
    c = BertConfig(vocab_size=10, hidden_size=2, num_hidden_layers=1, num_attention_heads=1,
                   intermediate_size=4)  # fmt: skip
    assert benchmark.finetune_flops_per_sequence(c, 3, "classification", 2) == 3 * (264 + 16)
    assert benchmark.finetune_flops_per_sequence(c, 3, "token", 5) == 3 * (264 + 60)


@pytest.mark.parametrize("head", ["classification", "token", "span"])
def test_hugging_face_finetune_loss_is_ours(head):
    """The loss the benchmark gives Hugging Face's model is losses.task_sums' mean."""
    rng = np.random.default_rng(0)
    b = benchmark.finetune_batch(rng, vocab=100, seq=16, batch=4, head=head, labels=3)
    if head == "span":
        assert (b["start_position"] <= b["end_position"]).all() and b["end_position"].max() < 16
        outputs = {k: rng.normal(size=(4, 16)).astype(np.float32)
                   for k in ("start_logits", "end_logits")}  # fmt: skip
    else:
        outputs = {"logits": rng.normal(size=b["label"].shape + (3,)).astype(np.float32)}
    if head == "token":
        b["label_weights"][0, 8:] = 0  # padding tokens are not scored
    sums = losses.task_sums(head, outputs, b)
    hf_loss = benchmark._hf_finetune_loss(head)(types.SimpleNamespace(**outputs), b)
    np.testing.assert_allclose(hf_loss, sums["loss"] / sums["weight"], rtol=1e-6)


def test_hugging_face_step_gets_the_same_batch():
    rng = np.random.default_rng(0)
    ours = benchmark.random_batch(rng, vocab=500, seq=16, batch=3, predictions=4)
    hf = benchmark.hf_batch(ours)
    rows = np.arange(3)[:, None]
    np.testing.assert_array_equal(hf["labels"][rows, ours["masked_lm_positions"]],
                                  ours["masked_lm_ids"])  # fmt: skip
    assert hf["label_mask"].sum() == 12
    assert (hf["label_mask"][rows, ours["masked_lm_positions"]] == 1).all()
    assert hf["next_sentence_label"] is ours["next_sentence_labels"]


def test_alternate_times_the_steps_in_turns():
    """Each stepper gets `steps` timed steps in `rounds` blocks, A B A B ..., and its median."""
    order = []

    class Fake:
        def __init__(self, name, seconds):
            self.name, self.seconds = name, seconds

        def times(self, n):
            order.extend([self.name] * n)
            return [self.seconds + 0.001 * len(order)] * n

        summary = benchmark.Stepper.summary
        compile_s = memory_mb = None

    timings = benchmark.alternate({"a": Fake("a", 1.0), "b": Fake("b", 2.0)}, steps=7, rounds=3)
    assert order == list("aabbaabbaaabbb")  # blocks of 2, 2 and 3 steps
    assert timings["a"]["step_s"] == 1.0 + 0.001 * 6  # the median of a's 7 steps
    assert set(timings["b"]) == {"compile_s", "step_s", "device_memory_mb"}


def test_table_rows_and_markers(tmp_path):
    results = tmp_path / "r.jsonl"
    rows = [
        {"size": "tiny", "seq": 128, "batch": 8, "dtype": "float32", "options": {},
         "ours_seqs_per_s": 50.0, "ours_mfu": 0.4, "hf_seqs_per_s": 10.0, "speedup_vs_hf": 5.0},
        {"size": "mini", "seq": 512, "batch": 4, "dtype": "bfloat16",
         "options": {"scan_layers": True}, "ours_seqs_per_s": 3.5},
    ]  # fmt: skip
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = tmp_path / "bench.md"
    doc.write_text(
        f"# Speed\n\nintro\n\n{benchmark.TABLE_BEGIN}\nold\n{benchmark.TABLE_END}\nafter\n"
    )
    benchmark.write_table(str(results), str(doc))
    text = doc.read_text()
    assert text.startswith("# Speed\n\nintro\n\n") and text.endswith("after\n")
    assert "old" not in text
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + len(rows)
    assert lines[2].split(" | ")[:5] == ["| tiny", "128", "8", "float32", "default"]
    assert "| 50.0 | 10.0 | 5.0 | 0.4 |" in lines[2]
    assert "scan_layers=True" in lines[3] and "| 3.5 | - | - |" in lines[3]


def test_host_cpu_names_the_model_and_the_extensions_that_matter(tmp_path):
    entry = "processor\t: {}\nmodel name\t: Intel(R) Xeon(R) Platinum\nflags\t\t: fpu avx2 {}\n"
    info = tmp_path / "cpuinfo"
    info.write_text(entry.format(0, "avx512f amx_bf16 amx_tile") + "\n" + entry.format(1, ""))
    assert benchmark.host_cpu(str(info)) == "Intel(R) Xeon(R) Platinum (avx2, avx512f, amx_bf16)"
    info.write_text(entry.format(0, "fma"))
    assert benchmark.host_cpu(str(info)) == "Intel(R) Xeon(R) Platinum (avx2)"
    assert benchmark.host_cpu(str(tmp_path / "absent")) == ""


@pytest.mark.parametrize("cudnn_works", [True, False])
def test_gpu_check_takes_cudnn_only_when_it_agrees_with_xla(cudnn_works, monkeypatch):
    """On a CPU posing as a GPU, 'cudnn' computed by XLA agrees with 'dot'; a cuDNN failure
    (or off a GPU) gives 'dot'."""
    from tests.test_levers import pose_as_gpu  # noqa: PLC0415

    assert gpu_check.choose_attention() == "dot"  # (this is a CPU)
    pose_as_gpu(monkeypatch, cudnn_works)
    assert gpu_check.choose_attention() == ("cudnn" if cudnn_works else "dot")


def test_gpu_check_summary_adds_the_nominal_mfu(tmp_path):
    row = {"size": "base", "seq": 128, "batch": 256, "dtype": "bfloat16", "options": {},
           "device": "NVIDIA H100 80GB HBM3", "ours_seqs_per_s": 4000.0, "ours_mfu": 0.5,
           "ours_model_gflop_per_step": 256 * 70.0}  # fmt: skip
    pcie = {**row, "device": "NVIDIA H100 PCIe"}
    (tmp_path / "gpu.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(pcie) + "\n")
    gpu_check.summary(str(tmp_path))
    text = (tmp_path / "gpu.md").read_text()
    # 70 GFLOP per sequence x 4000 seq/s = 280 TFLOP/s = 0.283 of 989.4; none for the PCIe card.
    assert "0.283 of the nominal" in text and "- of the nominal" in text
    assert text.count("| base | 128 | 256 |") == 2


def test_runs_end_to_end(tmp_path):
    out, doc = tmp_path / "r.jsonl", tmp_path / "b.md"
    cmd = [sys.executable, str(EXPERIMENTS / "benchmark.py"), "--size=tiny", "--seq=32",
           "--batch=4", "--vocab=512", "--steps=2", "--reference=false",
           f"--output={out}", f"--table={doc}", "--set=fused_qkv=true"]  # fmt: skip
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["size"] == "tiny" and result["options"] == {"fused_qkv": True}
    assert result["ours_seqs_per_s"] > 0 and 0 < result["ours_mfu"] < 1.5
    assert result["ours_model_gflop_per_step"] > 0 and "hf_seqs_per_s" not in result
    assert "fused_qkv=True" in doc.read_text()


def test_runs_a_finetuning_step_end_to_end(tmp_path):
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, str(EXPERIMENTS / "benchmark.py"), "--size=tiny", "--seq=32",
           "--batch=4", "--vocab=512", "--steps=2", "--reference=false", "--head=span",
           f"--output={out}"]  # fmt: skip
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["head"] == "span" and result["ours_seqs_per_s"] > 0
    c = BertConfig(vocab_size=512, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=512)  # fmt: skip
    flops = benchmark.finetune_flops_per_sequence(c, 32, "span", 2) * 4
    assert result["ours_model_gflop_per_step"] == round(flops / 1e9, 2)
    assert "head=span" in benchmark.markdown_table([result])


def test_compare_curves_table_and_largest_difference(tmp_path):
    for name, values in (("a", [4.0, 2.0]), ("b", [4.1, 2.0])):
        (tmp_path / name).mkdir()
        rows = [
            {"step": s, "split": "train", "loss": v} for s, v in zip((10, 20), values, strict=True)
        ]
        rows.append({"step": 20, "split": "eval", "loss": 9.0})
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)))
    a, b = (compare_curves.curve(str(tmp_path / n), "train", "loss") for n in "ab")
    assert a == {10: 4.0, 20: 2.0}
    text = compare_curves.compare([a, b], ["a", "b"], "loss")
    assert "| 10 | 4.0000 | 4.1000 |" in text
    assert "max |b - a| over 2 steps: 0.1000 (2.50% of the reference)" in text


def test_scaling_ratios_by_hand():
    points = [
        {"size": "tiny", "seq": 128, "gflop_per_step": 10.0, "step_s": 1.0},
        {"size": "tiny", "seq": 512, "gflop_per_step": 20.0, "step_s": 3.0},
        {"size": "mini", "seq": 128, "gflop_per_step": 40.0, "step_s": 2.0},
    ]
    tiny512, mini128 = scaling.with_ratios(points)[1:]
    # 3x the time for 2x the FLOPs of tiny at 128: 1.5; mini 2x the time for 4x the FLOPs: 0.5.
    assert (tiny512["vs_shorter"], tiny512["vs_smaller"]) == (1.5, 1.0)
    assert (mini128["vs_shorter"], mini128["vs_smaller"]) == (1.0, 0.5)


def test_scaling_runs_end_to_end(tmp_path):
    out, doc, fig = tmp_path / "s.jsonl", tmp_path / "s.md", tmp_path / "s.png"
    doc.write_text("# Speed\n")
    cmd = [sys.executable, str(EXPERIMENTS / "scaling.py"), "--sizes=tiny", "--seqs=16,32",
           "--tokens=64", "--vocab=512", "--steps=1", f"--output={out}", f"--table={doc}",
           f"--plot={fig}"]  # fmt: skip
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    points = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(p["seq"], p["batch"]) for p in points] == [(16, 4), (32, 2)]
    assert all(p["step_s"] > 0 and p["gflop_per_step"] > 0 for p in points)
    text = doc.read_text()
    assert text.startswith("# Speed\n") and scaling.TABLE_BEGIN in text
    assert len([line for line in text.splitlines() if line.startswith("| tiny |")]) == 2
    assert fig.stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seqs=128", "--tokens=100"], "--tokens=100 is not a multiple of --seqs 128"),
        (["--sizes=mini,huge"], "size='huge' is not one of"),
        (["--set=fused_qvk=true"], "unknown config arg 'fused_qvk'"),
    ],
)
def test_scaling_rejects_bad_flags_before_measuring(args, message):
    cmd = [sys.executable, str(EXPERIMENTS / "scaling.py"), *args]
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and message in run.stderr
    assert '"step_s"' not in run.stdout


def test_compare_curves_reports_non_finite_steps_and_zero_references(tmp_path):
    """A NaN past the first shared step was hidden (max skips NaN comparisons); a reference that
    is 0 at every step crashed the relative difference."""
    runs = {"a": [4.0, 3.0, 2.0, 1.0], "b": [4.1, 3.0, float("nan"), 1.0]}
    runs |= {"zero": [0.0] * 4, "acc": [0.0, 0.5, 0.0, 0.25]}
    curves = {}
    for name, values in runs.items():
        (tmp_path / name).mkdir()
        rows = [{"step": s, "split": "train", "loss": v} for s, v in enumerate(values, 1)]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)))
        curves[name] = compare_curves.curve(str(tmp_path / name), "train", "loss")
    text = compare_curves.compare([curves["a"], curves["b"]], ["a", "b"], "loss")
    assert "NON-FINITE loss of b at steps 3 (nan)." in text
    assert (
        "max |b - a| over 3 steps (of 4; the others are not finite): 0.1000 "
        "(2.50% of the reference)"
    ) in text
    text = compare_curves.compare([curves["zero"], curves["acc"]], ["zero", "acc"], "loss")
    assert "max |acc - zero| over 4 steps: 0.5000 (zero is 0 at each of them" in text
    text = compare_curves.compare([curves["acc"], curves["a"]], ["acc", "a"], "loss")
    assert "(500.00% of the reference where it is not 0)" in text
    text = compare_curves.compare([curves["b"], curves["b"]], ["b", "b2"], "loss")
    assert "over 3 steps (of 4; the others are not finite): 0.0000" in text
