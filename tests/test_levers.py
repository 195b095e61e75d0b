"""Speed and memory levers compute the same function: fused QKV, jax.nn.dot_product_attention,
nn.scan over layers (with stack/unstack of the checkpoint layout) and rematerialisation give the
default model's loss and gradients; bfloat16 compute stays close; bf16_matmul's hand-written
gradients are exactly those of its rounded operands (dense layers and attention alike)."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import bf16_matmul, losses, vocab_xent
from bert_jax.heads import BertForPreTraining
from bert_jax.model import (
    BertConfig,
    BertModel,
    TransformerLayer,
    batch_slices,
    stack_layers,
    unstack_layers,
)
from tests.test_train import CFG, fake_batch

BASE = dataclasses.replace(CFG, num_hidden_layers=3)
INPUTS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions")


def _init(config, batch):
    args = [batch[k] for k in INPUTS]
    return BertForPreTraining(config).init(jax.random.PRNGKey(0), *args)["params"]


def _leaves(*trees):
    return zip(*(jax.tree_util.tree_leaves(t) for t in trees), strict=True)


def _metrics_and_grads(config, params, batch, fused_mlm_loss=False):
    """(metrics, gradient of the loss); the MLM head scores logits, or with `fused_mlm_loss`
    its answers (heads.Predictions -> vocab_xent.py)."""
    model = BertForPreTraining(config)
    kwargs = {"masked_lm_ids": batch["masked_lm_ids"]} if fused_mlm_loss else {}

    def loss_fn(p):
        out = model.apply({"params": p}, *(batch[k] for k in INPUTS), **kwargs)
        metrics = losses.pretraining_metrics(losses.pretraining_sums(out, batch))
        return metrics["loss"], metrics

    (_, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    return metrics, grads


def _loss_and_grads(config, params, batch):
    metrics, grads = _metrics_and_grads(config, params, batch)
    return metrics["loss"], grads


@pytest.fixture(scope="module")
def reference():
    batch = fake_batch(batch=8)
    params = _init(BASE, batch)
    return batch, params, _loss_and_grads(BASE, params, batch)


@pytest.mark.parametrize(
    "options",
    [
        {"fused_qkv": True},
        {"attention": "dot"},
        {"scan_layers": True},
        {"remat": "full"},
        {"remat": "dots", "scan_layers": True, "fused_qkv": True, "attention": "dot"},
        {"encoder_chunks": 2, "attention_chunks": 2},
        {"encoder_chunks": 3, "attention_chunks": 4, "scan_layers": True},  # uneven slices
        {"encoder_chunks": 2, "attention_chunks": 3, "attention": "dot"},
    ],
    ids=str,
)
def test_levers_compute_the_same_loss_and_gradients(options, reference):
    batch, params, (loss, grads) = reference
    config = dataclasses.replace(BASE, **options)
    mine = stack_layers(params, BASE.num_hidden_layers) if config.scan_layers else params
    # Same parameter names and shapes as the checkpoint layout (after unstacking).
    shapes = jax.tree_util.tree_map(lambda x: x.shape, unstack_layers(_init(config, batch)))
    assert shapes == jax.tree_util.tree_map(lambda x: x.shape, params)
    loss2, grads2 = _loss_and_grads(config, mine, batch)
    np.testing.assert_allclose(loss2, loss, rtol=1e-5)
    grads2 = unstack_layers(grads2)
    for a, b in _leaves(grads2, grads):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_dot_attention_of_a_causal_model_equals_einsum():
    """Causal + padding: 'dot' passes the lengths with is_causal, 'einsum' one [B, 1, S, S] bias."""
    batch = fake_batch(batch=8)
    causal = dataclasses.replace(BASE, causal=True)
    params = _init(causal, batch)
    loss, grads = _loss_and_grads(causal, params, batch)
    loss2, grads2 = _loss_and_grads(dataclasses.replace(causal, attention="dot"), params, batch)
    np.testing.assert_allclose(loss2, loss, rtol=1e-5)
    for a, b in _leaves(grads2, grads):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def pose_as_gpu(monkeypatch, cudnn_works: bool = True) -> list:
    """This CPU posing as a GPU: jax.default_backend() says "gpu", and jax.nn.dot_product_attention
    computes cuDNN's implementation with XLA's (or raises, without `cudnn_works`). Returns the list
    where each call's (bias, keyword arguments) is recorded."""
    calls, real = [], jax.nn.dot_product_attention

    def attention(q, k, v, bias=None, **kw):
        calls.append((bias, kw))
        if kw.get("implementation") == "cudnn" and not cudnn_works:
            raise RuntimeError("no cuDNN here")
        return real(q, k, v, bias, **{**kw, "implementation": "xla"})

    monkeypatch.setattr(jax.nn, "dot_product_attention", attention)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    return calls


@pytest.mark.parametrize("attention", ["dot", "cudnn"])
def test_dot_attention_takes_the_padding_as_lengths(attention, monkeypatch):
    """What reaches jax.nn.dot_product_attention: each row's length, no bias, and the named
    implementation (cuDNN's is replaced by XLA's here, on a CPU posing as a GPU)."""
    calls = pose_as_gpu(monkeypatch)
    batch = fake_batch(batch=4)
    batch["input_mask"][0] = 0  # a filler row: cuDNN gets length 1 (its softmax needs a key)
    config = dataclasses.replace(BASE, attention=attention, dtype="bfloat16")
    model = BertModel(config)
    args = [batch[k] for k in INPUTS[:3]]
    params = model.init(jax.random.PRNGKey(0), *args)["params"]
    calls.clear()
    out = model.apply({"params": params}, *args)["sequence_output"]
    assert len(calls) == BASE.num_hidden_layers
    for bias, kw in calls:
        assert bias is None and kw["is_causal"] is False
        assert kw["implementation"] == ("cudnn" if attention == "cudnn" else "xla")
        lengths = batch["input_mask"].sum(1)
        lengths[0] = 1 if attention == "cudnn" else 0
        np.testing.assert_array_equal(kw["key_value_seq_lengths"], lengths)
    assert np.isfinite(np.asarray(out, np.float32)).all()
    einsum = dataclasses.replace(config, attention="einsum")
    expected = BertModel(einsum).apply({"params": params}, *args)["sequence_output"]
    np.testing.assert_allclose(
        np.asarray(out[1:], np.float32), np.asarray(expected[1:], np.float32), atol=0.05
    )


def test_cudnn_attention_is_refused_where_it_cannot_run():
    with pytest.raises(ValueError, match="attention='cudnn' .* set dtype='bfloat16'"):
        dataclasses.replace(BASE, attention="cudnn")
    config = dataclasses.replace(BASE, attention="cudnn", dtype="bfloat16")
    batch = fake_batch(batch=2)
    if jax.default_backend() != "gpu":
        with pytest.raises(ValueError, match="attention='cudnn' runs on a GPU .* attention='dot'"):
            BertModel(config).init(jax.random.PRNGKey(0), batch["input_ids"])


@pytest.mark.parametrize("rows,chunks", [(8, 1), (8, 2), (8, 3), (32, 4), (2, 4), (1, 3)])
def test_batch_slices_cover_the_rows_evenly(rows, chunks):
    slices = batch_slices(rows, chunks)
    assert len(slices) == min(rows, chunks)
    assert np.concatenate([np.arange(rows)[r] for r in slices]).tolist() == list(range(rows))
    sizes = [r.stop - r.start for r in slices]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    "options",
    [
        {"encoder_chunks": 2, "hidden_dropout_prob": 0.3},
        {"attention_chunks": 2, "attention_probs_dropout_prob": 0.3},
        {"encoder_chunks": 2, "scan_layers": True, "hidden_dropout_prob": 0.3},
        {
            "encoder_chunks": 2,
            "attention_chunks": 2,
            "dropout_rng": "hash",
            "hidden_dropout_prob": 0.3,
            "attention_probs_dropout_prob": 0.3,
        },  # fmt: skip
    ],
    ids=str,
)
def test_batch_chunks_draw_their_own_dropout_masks(options):
    """Two identical rows in two slices: the same output without dropout, different with it (a
    slice reusing another's masks would give the same)."""
    config = dataclasses.replace(BASE, **options)
    batch = fake_batch(batch=1)
    ids, mask, seg = (np.repeat(batch[k], 2, axis=0) for k in INPUTS[:3])
    model = BertModel(config)
    params = model.init(jax.random.PRNGKey(0), ids, mask, seg)["params"]
    out = model.apply({"params": params}, ids, mask, seg)["sequence_output"]
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)
    out = model.apply(
        {"params": params}, ids, mask, seg, False, rngs={"dropout": jax.random.PRNGKey(1)}
    )["sequence_output"]
    assert np.abs(np.asarray(out[0] - out[1])).max() > 1e-3


def test_attention_chunks_take_a_bias_shared_by_the_batch():
    """A [1, 1, 1, S] bias (broadcast over the batch) works in slices too."""
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 16, BASE.hidden_size))
    bias = jnp.where(jnp.arange(16) < 12, 0.0, -1e9)[None, None, None, :]
    params = TransformerLayer(BASE).init(jax.random.PRNGKey(1), x, bias, True)
    outs = [
        TransformerLayer(dataclasses.replace(BASE, attention_chunks=k)).apply(params, x, bias, True)
        for k in (1, 3)
    ]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["encoder_chunks", "attention_chunks"])
@pytest.mark.parametrize("value", [0, -2, 1.5])
def test_batch_chunks_must_be_positive_whole_numbers(name, value):
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        BertConfig(**{name: value})


def _flat(tree):
    return np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(tree)])


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16_matmul"])
def test_fused_mlm_loss_is_the_logits_route(bf16, reference):
    """The MLM head scoring its answers (vocab_xent.py) gives the metrics and gradients of
    losses.py on materialised logits: equal in float32; with bf16 matmuls the same metrics
    and gradients closer to float32's than the logits route's (whose label term, softmax - 1,
    is rounded to bfloat16; here it is applied in float32 after the matmuls)."""
    batch, params, (_, grads) = reference
    config = dataclasses.replace(BASE, bf16_matmul=bf16)
    logits_metrics, logits_grads = _metrics_and_grads(config, params, batch)
    metrics, fused_grads = _metrics_and_grads(config, params, batch, fused_mlm_loss=True)
    for k, v in logits_metrics.items():
        np.testing.assert_allclose(metrics[k], v, rtol=1e-6, err_msg=k)
    if not bf16:
        for a, b in _leaves(fused_grads, logits_grads):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
        return
    ref = _flat(grads)
    err = {name: np.linalg.norm(_flat(g) - ref) / np.linalg.norm(ref)
           for name, g in (("fused", fused_grads), ("logits", logits_grads))}  # fmt: skip
    assert err["fused"] < err["logits"] < 1e-2, err


@pytest.mark.parametrize("p", [16, 6], ids=["rows%8==0", "rows%8!=0"])
def test_vocab_cross_entropy_by_hand(p):
    """nll, hit and the gradients of sum(w * nll) in h, E and b, against float64 numpy:
    d/dz = w * (softmax - onehot), with a repeated label (its rows of dE add up)."""
    r = np.random.default_rng(2)
    h, table, bias = r.normal(size=(p, 8)), r.normal(size=(11, 8)), r.normal(size=11)
    w = r.uniform(size=p)
    z = h @ table.T + bias
    labels = r.integers(0, 11, p)
    labels[:3] = [z[0].argmax(), 4, 4]  # one sure hit; two positions with the same answer
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    dz = (np.exp(z - lse[:, None]) - np.eye(11)[labels]) * w[:, None]

    def f(h, table, bias):
        nll, hit = vocab_xent.vocab_cross_entropy(h, table, bias, jnp.asarray(labels), "float32")
        return jnp.sum(nll * w), (nll, hit)

    args = [jnp.asarray(x, jnp.float32) for x in (h, table, bias)]
    (_, (nll, hit)), (dh, dtable, dbias) = jax.jit(jax.value_and_grad(f, (0, 1, 2), True))(*args)
    np.testing.assert_allclose(nll, lse - z[np.arange(p), labels], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(hit, z.argmax(1) == labels)
    assert hit[0] == 1 and hit.sum() < p
    np.testing.assert_allclose(dh, dz @ table, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dtable, dz.T @ h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dbias, dz.sum(0), rtol=1e-5, atol=1e-6)


def test_fused_qkv_initialises_like_separate_projections(reference):
    batch, params, _ = reference
    for a, b in _leaves(_init(dataclasses.replace(BASE, fused_qkv=True), batch), params):
        np.testing.assert_array_equal(a, b)


def test_stack_unstack_round_trip(reference):
    _, params, _ = reference
    stacked = stack_layers(params, BASE.num_hidden_layers)
    assert stacked["bert"]["encoder"]["layers"]["layer"]["attention"]["self"]["query"][
        "kernel"
    ].shape == (3, 32, 32)
    back = unstack_layers(stacked)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    for a, b in _leaves(back, params):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_compute_stays_close(reference):
    batch, params, (loss, _) = reference
    loss16, _ = _loss_and_grads(dataclasses.replace(BASE, dtype="bfloat16"), params, batch)
    assert loss16.dtype == jnp.float32
    np.testing.assert_allclose(loss16, loss, rtol=2e-2)


def test_scan_layers_under_bfloat16_equals_the_layer_loop(reference):
    """The scan's carry is float32 (what a layer returns) even when its input is bfloat16."""
    batch, params, _ = reference
    bf16 = dataclasses.replace(BASE, dtype="bfloat16")
    loss, grads = _loss_and_grads(bf16, params, batch)
    scanned = dataclasses.replace(bf16, scan_layers=True)
    loss2, grads2 = _loss_and_grads(scanned, stack_layers(params, BASE.num_hidden_layers), batch)
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)
    for a, b in _leaves(unstack_layers(grads2), grads):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)


def test_bfloat16_dot_attention_is_finite_on_an_all_padding_row(reference):
    batch, params, _ = reference
    mask = np.array(batch["input_mask"])
    mask[0] = 0  # row 0: nothing to attend to
    batch = {**batch, "input_mask": mask}
    outs = {}
    for attention in ("einsum", "dot"):
        config = dataclasses.replace(
            BASE, dtype="bfloat16", attention=attention, attention_probs_dropout_prob=0.0
        )
        outs[attention] = BertForPreTraining(config).apply(
            {"params": params}, *(batch[k] for k in INPUTS)
        )["mlm_logits"]
    assert np.isfinite(np.asarray(outs["dot"], np.float32)).all()
    np.testing.assert_allclose(outs["dot"], outs["einsum"], atol=0.1)


def _bf16(x):
    return np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


@pytest.mark.parametrize("rows", [(4, 8), (2, 5)], ids=["rows%8==0", "rows%8!=0"])
@pytest.mark.parametrize("nt", [False, True], ids=["x@w", "x@w^T"])
@pytest.mark.parametrize("k,n", [(16, 24), (48, 8)], ids=["x transposed", "g transposed"])
def test_bf16_matmul_is_the_rounded_operands_product_forward_and_backward(rows, nt, k, n):
    """y = bf16(x) bf16(w); dx = bf16(g) bf16(w)^T; dw = bf16(x)^T bf16(g): in float64 by hand.
    (The weight gradient transposes x or g, whichever is smaller: both ways are checked.)"""
    r = np.random.default_rng(0)
    x = r.normal(size=(*rows, k)).astype(np.float32)
    w = r.normal(size=(k, n)).astype(np.float32)
    g = r.normal(size=(*rows, n)).astype(np.float32)
    fn, w_in = (bf16_matmul.matmul_nt, w.T.copy()) if nt else (bf16_matmul.matmul, w)
    y, vjp = jax.vjp(jax.jit(fn), x, w_in)
    dx, dw = vjp(jnp.asarray(g))
    xb, wb, gb = _bf16(x).reshape(-1, k), _bf16(w), _bf16(g).reshape(-1, n)
    assert y.dtype == dx.dtype == dw.dtype == jnp.float32
    np.testing.assert_allclose(y, (xb @ wb).reshape(*rows, n), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, (gb @ wb.T).reshape(*rows, k), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, (gb.T @ xb) if nt else (xb.T @ gb), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m", [8, 5], ids=["rows%8==0", "rows%8!=0"])
@pytest.mark.parametrize("nt", [False, True], ids=["a@b", "a@b^T"])
def test_bf16_batched_matmul_is_the_rounded_operands_product(m, nt):
    """The attention's batched products [B, N, M, K] @ [B, N, K, P] (or [B, N, P, K]^T), forward
    and both gradients, against float64 products of the bfloat16-rounded operands."""
    r = np.random.default_rng(1)
    a = r.normal(size=(2, 3, m, 16)).astype(np.float32)
    b = r.normal(size=(2, 3, 16, 12)).astype(np.float32)
    g = r.normal(size=(2, 3, m, 12)).astype(np.float32)
    fn, b_in = (bf16_matmul.batched_matmul_nt, np.swapaxes(b, -1, -2).copy()) if nt else (
        bf16_matmul.batched_matmul, b)  # fmt: skip
    y, vjp = jax.vjp(jax.jit(fn), a, b_in)
    da, db = vjp(jnp.asarray(g))
    ab, bb, gb = _bf16(a), _bf16(b), _bf16(g)
    assert y.dtype == da.dtype == db.dtype == jnp.float32
    np.testing.assert_allclose(y, ab @ bb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(da, gb @ np.swapaxes(bb, -1, -2), rtol=1e-5, atol=1e-5)
    db_want = np.swapaxes(ab, -1, -2) @ gb
    np.testing.assert_allclose(db, np.swapaxes(db_want, -1, -2) if nt else db_want, rtol=1e-5,
                               atol=1e-5)  # fmt: skip


def test_bf16_matmul_transposes_physically():
    for m in (1, 6, 7, 16):
        x = jnp.arange(m * 3, dtype=jnp.float32).reshape(m, 3)
        np.testing.assert_array_equal(bf16_matmul.transposed(x), x.T)
    x = jnp.arange(2 * 7 * 3, dtype=jnp.float32).reshape(2, 7, 3)  # a batch of matrices
    np.testing.assert_array_equal(bf16_matmul.transposed(x), jnp.swapaxes(x, 1, 2))


def test_bf16_matmul_dot_general_rejects_other_contractions():
    x, w = jnp.ones((4, 8)), jnp.ones((4, 8))
    with pytest.raises(ValueError, match=r"x\[\.\.\., K\] @ w\[K, N\]; got dimension numbers"):
        bf16_matmul.dot_general(x, w, (((0,), (0,)), ((), ())))


def test_bf16_matmul_model_stays_close(reference):
    batch, params, (loss, grads) = reference
    options = [{"fused_qkv": False}, {"fused_qkv": True}, {"bf16_attention": True},
               {"bf16_attention": True, "bf16_matmul": False},
               {"bf16_attention": True, "scan_layers": True, "remat": "full"}]  # fmt: skip
    for option in options:
        config = dataclasses.replace(BASE, **{"bf16_matmul": True, **option})
        mine = stack_layers(params, BASE.num_hidden_layers) if config.scan_layers else params
        loss2, grads2 = _loss_and_grads(config, mine, batch)
        grads2 = unstack_layers(grads2) if config.scan_layers else grads2
        np.testing.assert_allclose(loss2, loss, rtol=5e-3)
        flat = [np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(t)]) for t in
                (grads, grads2)]  # fmt: skip
        cosine = flat[0] @ flat[1] / np.linalg.norm(flat[0]) / np.linalg.norm(flat[1])
        assert cosine > 0.999, cosine


def test_bf16_matmul_needs_float32_activations():
    with pytest.raises(ValueError, match="bf16_matmul=True .* needs dtype='float32'"):
        dataclasses.replace(BASE, bf16_matmul=True, dtype="bfloat16")
    with pytest.raises(ValueError, match="bf16_attention=True .* needs dtype='float32' and "):
        dataclasses.replace(BASE, bf16_attention=True, attention="dot")


def _cpu_has_bf16_units() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


needs_bf16_cpu = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not _cpu_has_bf16_units(),
    reason="the YNNPACK bf16 path is XLA's CPU backend on a CPU with bfloat16 instructions",
)


def _computations(hlo: str) -> list[tuple[str, str, str, bool]]:
    """Every computation of a compiled module: (name, parameter list, body, whether it is a
    YNNPACK fusion)."""
    ynn = set(re.findall(r"calls=(%[\w.]+), [^\n]*__ynn_fusion", hlo))
    return [
        (name, params, body, name in ynn)
        for name, params, body in re.findall(
            r"\n(%[\w.]+) \(([^)]*)\) -> [^\n]*\{\n(.*?)\n\}", hlo, re.S
        )
    ]


def _dots(hlo: str) -> list[tuple[str, str, list[str], bool]]:
    """Every dot of a compiled module: (its computation, that computation's parameter list, the
    dot's operand types, whether the computation is a YNNPACK fusion)."""
    found = []
    for name, params, body, ynn in _computations(hlo):
        types = dict(re.findall(r"([\w.]+): (\w+)\[", params))
        types.update(re.findall(r"%([\w.-]+) = (\w+)\[", body))
        for operands in re.findall(r" dot\(%([\w.-]+), %([\w.-]+)\)", body):
            found.append((name, params, [types[o] for o in operands], ynn))
    return found


def _assert_only_bf16_ynn_dots(hlo: str, count: int) -> None:
    """`hlo` holds `count` dots, each on bf16 operands in a YNNPACK fusion."""
    dots = _dots(hlo)
    for name, _, operand_types, ynn in dots:
        assert ynn, name
        assert operand_types == ["bf16", "bf16"], (name, operand_types)
    assert len(dots) == count == len(re.findall(r" dot\(", hlo))


@needs_bf16_cpu
@pytest.mark.parametrize("k,n", [(128, 512), (512, 128)], ids=["x transposed", "g transposed"])
def test_bf16_matmul_gradient_runs_three_bf16_dots_on_cpu(k, n):
    """The point of the module: forward, input and weight gradient each a bf16 x bf16 -> f32 dot
    (YNNPACK fusions with bf16 parameters), none a float32 dot on converted operands."""
    x, w = jnp.ones((64, 32, k)), jnp.ones((k, n))

    def f(x, w):
        return jnp.sum(jnp.tanh(bf16_matmul.matmul(x, w)))

    hlo = jax.jit(jax.value_and_grad(f, (0, 1))).lower(x, w).compile().as_text()
    ynn_dots = [params for _, params, _, ynn in _dots(hlo) if ynn]
    assert len(ynn_dots) == 3, ynn_dots
    for params in ynn_dots:
        assert re.fullmatch(r"([\w.]+: bf16\[[\d,]*\](, )?)+", params), params
    assert len(re.findall(r" dot\(", hlo)) == 3  # no other dot anywhere


@needs_bf16_cpu
def test_bf16_attention_gradient_runs_six_bf16_dots_on_cpu():
    """Scores and context, forward and both gradients each: six dots, all YNNPACK fusions whose
    dot multiplies bf16 operands (a fusion may convert or compute them inside)."""
    q = jnp.ones((8, 4, 128, 64))

    def f(q, k, v):
        p = jax.nn.softmax(bf16_matmul.batched_matmul_nt(q, k), -1)
        return jnp.sum(jnp.tanh(bf16_matmul.batched_matmul(p, v)))

    hlo = jax.jit(jax.value_and_grad(f, (0, 1, 2))).lower(q, q, q).compile().as_text()
    _assert_only_bf16_ynn_dots(hlo, 6)


@pytest.mark.parametrize("n", [1, 2, 5, 128, 129])
def test_softmax_is_jax_softmax(n):
    """bf16_matmul.row_max (maxima of halves, an odd element carried) is the maximum, and
    bf16_matmul.softmax gives jax.nn.softmax's values exactly and its gradients up to rounding,
    masked entries included."""
    x = 4.0 * jax.random.normal(jax.random.PRNGKey(n), (3, 2, n))
    x = x.at[0, 0, 0].set(-1e9).at[1, :, n // 2].set(-jnp.inf)
    if n > 1:
        x = x.at[2, 1, n - 1].set(40.0)  # the maximum last, where an odd length carries it
    g = jax.random.normal(jax.random.PRNGKey(0), x.shape)
    np.testing.assert_array_equal(bf16_matmul.row_max(x), jnp.max(x, -1, keepdims=True))
    np.testing.assert_array_equal(bf16_matmul.softmax(x), jax.nn.softmax(x, axis=-1))

    def grad(softmax):
        return jax.grad(lambda x: jnp.sum(softmax(x) * g))(x)

    np.testing.assert_allclose(
        grad(bf16_matmul.softmax), grad(functools.partial(jax.nn.softmax, axis=-1)), atol=1e-6
    )


@needs_bf16_cpu
def test_fused_mlm_loss_runs_three_bf16_dots_on_cpu():
    """vocab_xent.py's logits, input gradient and table gradient (which also yields the bias
    gradient): three bf16 YNNPACK dots, and no other dot."""
    h, table, bias = jnp.ones((40, 64)), jnp.ones((1000, 64)), jnp.zeros(1000)

    def f(h, table, bias):
        nll, _ = vocab_xent.vocab_cross_entropy(h, table, bias, jnp.arange(40), jnp.bfloat16)
        return jnp.sum(nll)

    hlo = jax.jit(jax.grad(f, (0, 1, 2))).lower(h, table, bias).compile().as_text()
    _assert_only_bf16_ynn_dots(hlo, 3)


@needs_bf16_cpu
def test_bf16_layer_runs_every_dot_in_bf16_on_cpu():
    """In the model the attention's operands come from the heads' transposes: each of a layer's
    24 dots (6 dense layers and 2 attention products, each forward and both gradients)
    multiplies bf16 operands in a YNNPACK fusion. (XLA upcasts a bf16 dot whose operand is a
    transposed view, not row-major, to a float32 dot.)"""
    config = dataclasses.replace(BASE, bf16_matmul=True, bf16_attention=True)
    layer = TransformerLayer(config)
    x, bias = jnp.ones((4, 32, config.hidden_size)), jnp.zeros((4, 1, 1, 32))
    params = layer.init(jax.random.PRNGKey(0), x, bias, True)

    def f(params, x):
        return jnp.sum(jnp.tanh(layer.apply(params, x, bias, True)))

    hlo = jax.jit(jax.grad(f, (0, 1))).lower(params, x).compile().as_text()
    _assert_only_bf16_ynn_dots(hlo, 24)
    # The softmax's exponentials run in XLA's loops, not in YNNPACK's fusion of the scores' dot
    # (bf16_matmul.softmax): no YNNPACK fusion computes one.
    assert "exponential(" in hlo
    assert not [name for name, _, body, ynn in _computations(hlo) if ynn and "exponential(" in body]
