"""gpt-oss's sparse MLP, as transformers' GptOssMLP: `mlp.router` (weight [E, H] and bias [E]; the top-k
logits' softmax weighs the chosen experts) and `mlp.experts` with stacked, transposed weights and biases:
gate_up_proj [E, H, 2 * I] whose even columns are the gate and odd ones the up projection, gate_up_proj_bias
[E, 2 * I], down_proj [E, I, H], down_proj_bias [E, H]. An expert is a clamped SwiGLU:
(clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g), g = clamp(gate, max=limit).

The router records its logits as Mixtral's does (models/mixtral/modeling_mixtral.py `_RouterRecording`), so
`output_router_logits` and the load-balancing loss come from the Mixtral classes the family's are built on.
"""
import mindspore as ms
from mindspore import nn, ops

from ...layers import new_parameter
from ...ops import moe as moe_ops
from ..mixtral.modeling_mixtral import num_experts

_MATMUL = ops.MatMul()


class GptOssTopKRouter(nn.Cell):
    records_router_logits = True

    def __init__(self, config, dtype=ms.float32):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        std = config.initializer_range
        self.weight = new_parameter((num_experts(config), config.hidden_size), dtype, "normal", std)
        self.bias = new_parameter((num_experts(config),), dtype, "normal", std)
        self._matmul = ops.MatMul(transpose_b=True)
        self.recording = False
        self.router_logits = None

    def construct(self, x):
        """x [T, H] -> (weights [T, k] float32, indices [T, k] int32): softmax over the k largest logits (the same
        as the softmax over all experts renormalised over the chosen k)."""
        logits = self._matmul(x, self.weight) + self.bias                               # [T, E]
        if self.recording:
            self.router_logits = logits
        return moe_ops.route_tokens(logits, self.top_k, "softmax", True)


class GptOssExperts(nn.Cell):
    # tensor parallel (parallel/ style "stacked_experts"): each parameter's dimension of the expert width and its
    # entries per channel (gate/up interleaved: 2); None: the down bias, added once after the partial sums
    tp_param_dims = {"gate_up_proj": (2, 2), "gate_up_proj_bias": (1, 2), "down_proj": (1, 1), "down_proj_bias": None}

    def __init__(self, config, dtype=ms.float32):
        super().__init__()
        experts, hidden, inter = num_experts(config), config.hidden_size, config.intermediate_size
        std = config.initializer_range
        self.gate_up_proj = new_parameter((experts, hidden, 2 * inter), dtype, "normal", std)
        self.gate_up_proj_bias = new_parameter((experts, 2 * inter), dtype, "zeros")
        self.down_proj = new_parameter((experts, inter, hidden), dtype, "normal", std)
        self.down_proj_bias = new_parameter((experts, hidden), dtype, "zeros")
        self.alpha, self.limit = float(config.swiglu_alpha), float(config.swiglu_limit)

    def expert(self, params, rows, e):
        """Expert `e` on rows [N, H] -> [N, H], with `params` (this cell's, or a tensor-parallel rank's slices)."""
        h = _MATMUL(rows, params["gate_up_proj"][e]) + params["gate_up_proj_bias"][e]  # [N, 2 * I]
        h = h.reshape(h.shape[0], -1, 2)                                                # [N, I, (gate, up)]
        gate = ops.clamp(h[..., 0], max=self.limit)
        up = ops.clamp(h[..., 1], -self.limit, self.limit)
        glu = gate * ops.sigmoid(gate * self.alpha)
        return _MATMUL((up + 1) * glu, params["down_proj"][e]) + params["down_proj_bias"][e]

    def construct(self, x, indices, weights):
        params = {"gate_up_proj": self.gate_up_proj, "gate_up_proj_bias": self.gate_up_proj_bias,
                  "down_proj": self.down_proj, "down_proj_bias": self.down_proj_bias}
        return self.construct_with(params, x, indices, weights)

    def construct_with(self, params, x, indices, weights):
        return moe_ops.grouped_experts(x, indices, weights, params["gate_up_proj"].shape[0],
                                       lambda rows, e: self.expert(params, rows, e))


class GptOssMLP(nn.Cell):
    """Router + experts; the decoder layer's `mlp` (built per layer by the family's DecoderVariant.mlp). Tensor
    parallel: the router replicated, every expert's width split (biases included)."""
    _tp_plan = {"experts": ("stacked_experts", "intermediate_size")}

    def __init__(self, config, layer_idx=None, dtype=ms.float32):
        super().__init__()
        self.tp_units = {"intermediate_size": (config.intermediate_size, 1, False)}
        self.router = GptOssTopKRouter(config, dtype)
        self.experts = GptOssExperts(config, dtype)

    def construct(self, hidden_states):
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])                                        # [T, H]
        weights, indices = self.router(x)
        return self.experts(x, indices, weights).reshape(shape)
