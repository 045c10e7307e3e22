"""SmolLM3 parity against HF transformers on tiny random checkpoints HF itself wrote: NoPE layers (no rotary)
beside rotary ones, and sliding-window layers."""
import pytest

from tests.conftest import make_hf_checkpoint
from tests.models.family_parity import assert_family_parity

VARIANTS = {  # the default (layer 1 NoPE, a small rotary base) is the family matrix's row
    # NoPE first; the rotary layer slides over a window of 4 under the 11-token prompt
    "sliding": dict(no_rope_layers=[0, 1], use_sliding_window=True, sliding_window=4,
                    layer_types=["full_attention", "sliding_attention"]),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_smollm3_matches_hf(tmp_path, variant):
    folder = make_hf_checkpoint(tmp_path / "hf", "SmolLM3Config", "SmolLM3ForCausalLM", **VARIANTS[variant])
    ours = assert_family_parity(folder, tmp_path / "ours", "SmolLM3ForCausalLM")
    assert [layer.self_attn.rope for layer in ours.model.layers] == [bool(x) for x in ours.config.no_rope_layers]
    assert ours.model.compiles_layers()
