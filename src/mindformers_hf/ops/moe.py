"""Mixture-of-experts ops: token routing, expert compute, and the router's load-balancing loss.

Formulas follow transformers' Mixtral / Qwen2-MoE / DeepSeek-V2/V3 routers and `load_balancing_loss_func`.
Experts are stacked as HF 5 stores them: gate_up [E, 2 * I, H] (gate rows first, then up), down [E, H, I].

`moe_experts` has two implementations, chosen by the ops registry:
  - "reference": loops over every expert and runs it on every token, weighting the tokens that were not
    routed to it by zero. Obviously right, and E / top_k times the work it needs to do.
  - "grouped": sorts the (token, slot) pairs by expert, runs each expert that was hit once on its
    contiguous block of tokens, and un-sorts. The index bookkeeping is a few numpy calls on the host
    (no per-token Python loop), so it cannot run under `ms.jit`; measured in benchmarks/moe.py.
  - "cpu": the CPU kernel csrc/moe_experts.cc -- the same dispatch (count, gather by expert, one gate_up GEMM
    -> SwiGLU -> down GEMM per expert block, weighted scatter) in one op whose routing indices stay inputs of
    the graph, so it also runs inside `ms.jit`. Its gradient (`_cpu_bprop`) is a composite: grouped eagerly,
    under `ms.jit` the reference's math (every expert on every token), exact but E / top_k times the work.
"""
import numpy as np
import mindspore as ms
from mindspore import ops

from . import registry
from .cpu_build import CustomKernel

_mm_t = ops.MatMul(transpose_b=True)
_NEG = -1e30  # masks a group's experts out of top-k; below any softmax or sigmoid score


def _mm_weight(x, weight):
    """x [N, in] @ weight [out, in]^T; a bf16 expert weight with float32 rows (CPU) through the bf16_linear op."""
    if weight.dtype == x.dtype:
        return _mm_t(x, weight)
    return registry.select("bf16_linear")(x, weight)


def _silu_mul(gate, up):
    return registry.select("silu_mul")(gate, up)


def route_tokens(router_logits, top_k, scoring="softmax", norm_topk_prob=False, topk_method="greedy",
                 n_group=None, topk_group=None, routed_scaling_factor=1.0, correction_bias=None):
    """router_logits [T, E] -> (weights [T, k] float32, expert indices [T, k] int32).

    scoring "softmax" (Mixtral, Qwen2-MoE, DeepSeek-V2) or "sigmoid" (DeepSeek-V3, which adds the
    `e_score_correction_bias` for the choice only, never to the weights). topk_method "group_limited_greedy"
    (DeepSeek-V2) keeps the `topk_group` of `n_group` expert groups with the highest best score; "noaux_tc"
    (DeepSeek-V3) ranks groups by the sum of their two best scores.
    """
    logits = router_logits.astype(ms.float32)
    scores = ops.softmax(logits, -1) if scoring == "softmax" else ops.sigmoid(logits)
    choice = scores if correction_bias is None else scores + correction_bias.astype(ms.float32)
    if topk_method in ("group_limited_greedy", "noaux_tc"):
        tokens, experts = choice.shape
        grouped = choice.reshape(tokens, n_group, experts // n_group)            # [T, G, E/G]
        if topk_method == "group_limited_greedy":
            group_scores = ops.amax(grouped, -1)                                 # [T, G]
        else:
            group_scores = ops.topk(grouped, 2, dim=-1)[0].sum(-1)
        group_idx = ops.topk(group_scores, topk_group, dim=-1)[1]                # [T, topk_group]
        keep = ops.one_hot(group_idx, n_group, ms.Tensor(1.0, ms.float32), ms.Tensor(0.0, ms.float32)).sum(1)
        keep = ops.broadcast_to(keep.expand_dims(-1), grouped.shape).reshape(tokens, experts)
        choice = ops.select(keep > 0, choice, ops.full_like(choice, _NEG))
    elif topk_method not in (None, "greedy"):
        raise NotImplementedError(f"MoE topk_method {topk_method!r} is not supported "
                                  "(supported: greedy, group_limited_greedy, noaux_tc)")
    indices = ops.topk(choice, top_k, dim=-1)[1].astype(ms.int32)                # [T, k]
    weights = ops.gather_elements(scores, 1, indices)                            # [T, k]
    if norm_topk_prob:
        denominator = weights.sum(-1, keepdims=True)
        weights = weights / (denominator + 1e-20 if scoring == "sigmoid" else denominator)
    if routed_scaling_factor != 1.0:
        weights = weights * routed_scaling_factor
    return weights, indices


def _expert(x, gate_up, down, e):
    """SwiGLU expert `e` on rows x [N, H] -> [N, H]."""
    inter = down.shape[2]
    h = _mm_weight(x, gate_up[e])                                                # [N, 2 * I]
    # ops.narrow: Tensor __getitem__ costs ~15x more per call in PyNative
    return _mm_weight(_silu_mul(ops.narrow(h, 1, 0, inter), ops.narrow(h, 1, inter, inter)), down[e])


def moe_experts_reference(x, indices, weights, gate_up, down):
    """sum over routed experts e of weight(t, e) * expert_e(x_t): x [T, H], indices/weights [T, k] -> [T, H]."""
    out = ops.zeros(x.shape, x.dtype)
    for e in range(gate_up.shape[0]):
        weight_e = (weights * (indices == e).astype(weights.dtype)).sum(-1, keepdims=True)   # [T, 1], 0 if unrouted
        out = out + _expert(x, gate_up, down, e) * weight_e.astype(x.dtype)
    return out


def moe_experts_grouped(x, indices, weights, gate_up, down):
    """Same result as the reference: each hit expert runs once on the tokens routed to it."""
    return grouped_experts(x, indices, weights, gate_up.shape[0], lambda rows, e: _expert(rows, gate_up, down, e))


def grouped_experts(x, indices, weights, num_experts, expert):
    """sum over routed experts e of weight(t, e) * expert(x_t, e), running `expert(rows [N, H], e) -> [N, H]` once
    per hit expert on the tokens routed to it (the "grouped" dispatch; gpt-oss passes its own expert)."""
    tokens, top_k = indices.shape
    flat = indices.asnumpy().reshape(-1)                                         # [T * k], pair p = t * k + slot
    order = np.argsort(flat, kind="stable").astype(np.int32)                     # pairs sorted by expert
    counts = np.bincount(flat, minlength=num_experts)
    rows = ops.gather(x, ms.Tensor(order // top_k), 0)                           # [T * k, H], sorted
    pieces, start = [], 0
    for e in np.flatnonzero(counts):
        pieces.append(expert(ops.narrow(rows, 0, start, int(counts[e])), int(e)))
        start += int(counts[e])
    out = ops.cat(pieces, 0) if len(pieces) > 1 else pieces[0]                   # [T * k, H], sorted
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size, dtype=np.int32)
    out = ops.gather(out, ms.Tensor(inverse), 0).reshape(tokens, top_k, -1)      # [T, k, H], pair order
    return (out * weights.astype(out.dtype).expand_dims(-1)).sum(1)


def _expert_grads(rows, drows, weight, gate_up, down):
    """One expert on rows [N, H] with output gradient drows [N, H] and routing weights [N, 1] (float32):
    (d rows, d weight [N, 1], d gate_up [2I, H], d down [H, I])."""
    inter = down.shape[1]
    h = _mm_t(rows, gate_up)                                                     # [N, 2I]
    gate, up = ops.narrow(h, 1, 0, inter), ops.narrow(h, 1, inter, inter)
    sig = ops.sigmoid(gate)
    act = gate * sig * up                                                        # [N, I]
    dweight = (drows * _mm_t(act, down)).sum(-1, keepdims=True)
    dy = drows * weight
    dact = _mm(dy, down)                                                         # [N, I]
    dh = ops.cat((dact * up * sig * (1 + gate * (1 - sig)), dact * gate * sig), 1)   # [N, 2I]
    return _mm(dh, gate_up), dweight, _mm_ta(dh, rows), _mm_ta(dy, act)


def _cpu_bprop(x, indices, weights, gate_up, down, out, dout):
    """Gradients of the kernel's forward, a composite of MindSpore ops. Eagerly (PyNative) the grouped
    dispatch: each hit expert on the tokens routed to it (host-side sort, as "grouped"); under ms.jit, where
    the indices cannot be read, the reference's math: every expert on every token, unrouted ones weighted 0."""
    experts = gate_up.shape[0]
    x32, dout, weights32 = x.astype(ms.float32), dout.astype(ms.float32), weights.astype(ms.float32)
    gate_ups = [gate_up[e].astype(ms.float32) for e in range(experts)]
    downs = [down[e].astype(ms.float32) for e in range(experts)]
    dgate_up = [ops.zeros(g.shape, ms.float32) for g in gate_ups]
    ddown = [ops.zeros(d.shape, ms.float32) for d in downs]
    if registry.eager(dout):
        tokens, top_k = indices.shape
        flat = indices.asnumpy().reshape(-1)
        order = np.argsort(flat, kind="stable").astype(np.int32)
        counts = np.bincount(flat, minlength=experts)
        token_of = ms.Tensor(order // top_k)
        rows, drows = ops.gather(x32, token_of, 0), ops.gather(dout, token_of, 0)
        pair_weights = ops.gather(weights32.reshape(-1), ms.Tensor(order), 0).expand_dims(-1)
        drow_pieces, dweight_pieces, start = [], [], 0
        for e in np.flatnonzero(counts):
            n, e = int(counts[e]), int(e)
            grads = _expert_grads(ops.narrow(rows, 0, start, n), ops.narrow(drows, 0, start, n),
                                  ops.narrow(pair_weights, 0, start, n), gate_ups[e], downs[e])
            drow_pieces.append(grads[0])
            dweight_pieces.append(grads[1])
            dgate_up[e], ddown[e] = grads[2], grads[3]
            start += n
        dx = ops.unsorted_segment_sum(ops.cat(drow_pieces, 0), token_of, tokens)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size, dtype=np.int32)
        dweights = ops.gather(ops.cat(dweight_pieces, 0).reshape(-1), ms.Tensor(inverse), 0).reshape(tokens, top_k)
    else:
        dx = ops.zeros(x32.shape, ms.float32)
        dweights = ops.zeros(weights32.shape, ms.float32)
        for e in range(experts):
            routed = (indices == e).astype(ms.float32)                           # [T, k]
            grads = _expert_grads(x32, dout, (weights32 * routed).sum(-1, keepdims=True), gate_ups[e], downs[e])
            dx = dx + grads[0]
            dweights = dweights + grads[1] * routed
            dgate_up[e], ddown[e] = grads[2], grads[3]
    return (dx.astype(x.dtype), ops.zeros_like(indices), dweights.astype(weights.dtype),
            ops.stack(dgate_up).astype(gate_up.dtype), ops.stack(ddown).astype(down.dtype))


_mm = ops.MatMul()
_mm_ta = ops.MatMul(transpose_a=True)
_cpu_fwd = CustomKernel("moe_experts", "moe_experts_fwd", lambda x, i, w, gu, dn: x,
                        lambda x, i, w, gu, dn: ms.float32, _cpu_bprop)


def moe_experts_cpu(x, indices, weights, gate_up, down):
    """The CPU kernel: float32 activations (others are cast in and out), float32 or bfloat16 expert weights."""
    if gate_up.dtype != down.dtype or gate_up.dtype not in (ms.float32, ms.bfloat16):
        return moe_experts_reference(x, indices, weights, gate_up, down)
    x32 = x if x.dtype == ms.float32 else x.astype(ms.float32)
    w32 = weights if weights.dtype == ms.float32 else weights.astype(ms.float32)
    out = _cpu_fwd.op(x32, indices, w32, gate_up, down)
    return out if x.dtype == ms.float32 else out.astype(x.dtype)


def moe_experts(x, indices, weights, gate_up, down):
    """Weighted sum of the routed SwiGLU experts for x [T, H]; the registry picks the implementation."""
    return registry.select("moe_experts")(x, indices, weights, gate_up, down)


def load_balancing_loss(router_logits, num_experts, top_k, attention_mask=None):
    """transformers' `load_balancing_loss_func` (Switch Transformer eqs. 4-6) over the MoE layers' logits.

    router_logits: sequence of [B * S, E]; attention_mask [B, S] (1 token, 0 padding) excludes padding.
    Returns a float32 scalar, or 0 when there are no router logits.
    """
    if not router_logits:
        return 0
    tokens_per_expert = ops.zeros((num_experts,), ms.float32)
    prob_per_expert = ops.zeros((num_experts,), ms.float32)
    total = 0.0
    flat_mask = None
    if attention_mask is not None:
        rows = router_logits[0].shape[0]
        flat_mask = attention_mask.astype(ms.float32).reshape(-1)
        if flat_mask.shape[0] != rows:  # a mask over past + new tokens: the logits are for the new ones
            flat_mask = attention_mask[:, -(rows // attention_mask.shape[0]):].astype(ms.float32).reshape(-1)
        flat_mask = flat_mask.expand_dims(-1)                                    # [B * S, 1]
    one, zero = ms.Tensor(1.0, ms.float32), ms.Tensor(0.0, ms.float32)
    for logits in router_logits:
        probs = ops.softmax(logits.astype(ms.float32), -1)                       # [B * S, E]
        selected = ops.topk(probs, top_k, dim=-1)[1]
        assigned = ops.one_hot(selected, num_experts, one, zero).sum(1)          # [B * S, E] top-k counts
        if flat_mask is None:
            tokens_per_expert = tokens_per_expert + assigned.sum(0)
            prob_per_expert = prob_per_expert + probs.sum(0)
            total = total + probs.shape[0]
        else:
            tokens_per_expert = tokens_per_expert + (assigned * flat_mask).sum(0)
            prob_per_expert = prob_per_expert + (probs * flat_mask).sum(0)
            total = total + flat_mask.sum()
    return (tokens_per_expert / total * (prob_per_expert / total)).sum() * num_experts


registry.register("moe_experts", registry.REFERENCE, moe_experts_reference)
# cpu first: "auto" takes the first default that is available, so grouped runs where the kernel cannot be built
registry.register("moe_experts", "cpu", moe_experts_cpu, "CPU", default=True, available=_cpu_fwd.available)
registry.register("moe_experts", "grouped", moe_experts_grouped, "CPU", default=True)
# Not measured on Ascend (no device here); picked there too because it does top_k / E of the reference's work.
registry.register("moe_experts", "grouped_ascend", moe_experts_grouped, "Ascend", default=True)
