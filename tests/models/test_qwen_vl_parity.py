"""Qwen-VL (v1: Qwen/Qwen-VL, Qwen/Qwen-VL-Chat) read natively from its published checkpoint format.

No HF transformers class exists for Qwen-VL (the repos ship their own modeling_qwen.py and visual.py, run with
trust_remote_code), so the reference is a torch model written in tests/models/qwen_vl_fixtures.py from the published
structure (vision tower from torch's own Conv2d / bicubic F.interpolate / nn.MultiheadAttention; language model =
transformers' Qwen2 under Qwen v1's names), holding the same random weights as the checkpoint we load.

Tolerances: 1e-4 on image features and logits (fp32, different kernels); greedy tokens equal; the checkpoint saved
back bit for bit; preprocessing equal to PIL's bicubic resize plus ToTensor / Normalize's arithmetic done in torch.
"""
import numpy as np
import pytest

from mindformers_hf.models.qwen.processing_qwen_vl import CLIP_MEAN, CLIP_STD

from .qwen_vl_fixtures import (IMG_START, QUERIES, VISUAL, image_prompt, mae_sincos, qwen_vl_checkpoint,
                               reference_greedy, reference_logits)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(folder, arrays written, torch vision reference, transformers' Qwen2, our model)."""
    from mindformers_hf import AutoModelForCausalLM

    folder, arrays, visual, hf = qwen_vl_checkpoint(tmp_path_factory.mktemp("qwen_vl"))
    return folder, arrays, visual, hf, AutoModelForCausalLM.from_pretrained(folder)


def test_image_features_logits_and_greedy_tokens_equal_reference(checkpoint):
    _, _, visual, hf, ours = checkpoint
    assert type(ours).__name__ == "QWenLMHeadModel"
    ids, mask, pixels = image_prompt()
    ref_features, ref = reference_logits(visual, hf, ids, mask, pixels)
    features = np.asarray(ours.get_image_features(pixels))
    assert features.shape == (2, 256, VISUAL["output_dim"])
    assert np.abs(features - ref_features).max() <= 1e-4
    keep = mask.astype(bool)
    logits = np.asarray(ours(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits)
    assert np.abs(logits[keep] - ref[keep]).max() <= 1e-4
    # each image goes to its own span: the images swapped give other logits
    swapped = np.asarray(ours(input_ids=ids, attention_mask=mask, pixel_values=pixels[::-1].copy()).logits)
    assert np.abs(swapped[keep] - ref[keep]).max() > 1e-2
    tokens = ours.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=4, do_sample=False)
    np.testing.assert_array_equal(np.asarray(tokens), reference_greedy(visual, hf, ids, mask, pixels, 4))


def test_image_spans_without_pixel_values_or_miscounted_raise(checkpoint):
    _, _, _, _, ours = checkpoint
    ids, mask, pixels = image_prompt()
    with pytest.raises(NotImplementedError, match="no pixel_values"):
        ours(input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match="1 images in pixel_values but 2 <img> spans"):
        ours(input_ids=ids, attention_mask=mask, pixel_values=pixels[:1])
    short = np.concatenate([ids[:, :10], ids[:, 20:]], 1)  # a span of 246 tokens
    with pytest.raises(ValueError, match="span holds 246 tokens"):
        ours(input_ids=short, attention_mask=np.ones_like(short), pixel_values=pixels)


def test_published_names_load_and_save_back_bit_for_bit(checkpoint, tmp_path):
    import json

    from tests.models.remote_formats import assert_remote_load

    folder, arrays, _, _, _ = checkpoint
    assert any(k.startswith("transformer.visual.attn_pool.") for k in arrays)
    assert_remote_load(folder, arrays, "QWenLMHeadModel", str(tmp_path / "saved"))
    with open(tmp_path / "saved" / "config.json") as f:
        assert json.load(f)["visual"] == VISUAL


def test_preprocessing_equals_pil_resize_and_the_published_normalisation(tmp_path):
    """torchvision's Resize(BICUBIC) on a PIL image is PIL's resize; ToTensor and Normalize are done here in torch."""
    import torch
    from PIL import Image

    from mindformers_hf import QWenVLImageProcessor
    from mindformers_hf.models.qwen.vision_qwen_vl import sincos_pos_embed

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((37, 50), (120, 90))]
    size = VISUAL["image_size"]
    processor = QWenVLImageProcessor(size, IMG_START)
    got = processor(images)["pixel_values"]
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    for image, pixels in zip(images, got):
        resized = torch.from_numpy(np.array(image.resize((size, size), Image.BICUBIC)))
        want = resized.permute(2, 0, 1).float().div(255).sub(mean).div(std)
        np.testing.assert_array_equal(pixels, want.numpy())
    # the published reading of the paths written in the ids (their UTF-8 bytes); the images they name, opened
    paths = [str(tmp_path / f"img{n}.png") for n in range(2)]
    for path, image in zip(paths, images):
        image.save(path)
    ids = image_prompt(paths=paths)[0]
    assert processor.image_paths(ids) == paths
    np.testing.assert_array_equal(processor.from_input_ids(ids), got)
    # a freshly built Resampler's pos_embed is the published 2D sin-cos table
    np.testing.assert_allclose(sincos_pos_embed(256, 16), mae_sincos(256, 16), atol=1e-6, rtol=0)


def test_chat_with_an_image_follows_the_published_flow(tmp_path):
    """Qwen-VL-Chat's flow end to end: from_list_format -> make_context (image tags recognised, the span rewritten)
    -> the image the prompt names opened and preprocessed -> greedy reply, each step against its reference (tiktoken
    and the published rewrite for the ids, PIL + torch arithmetic for the pixels, the torch model for the tokens)."""
    import torch
    from PIL import Image

    from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
    from mindformers_hf.models.qwen.chat_qwen import make_context
    from tests.models.remote_tokenizer_fixtures import tiktoken_file, train_byte_bpe, write_tokenizer_folder
    from tests.models.test_qwen_tokenizer import PATTERN, SPECIALS, TOKENIZER_CONFIG, VL_TAGS, published_vl_ids

    tiktoken = pytest.importorskip("tiktoken")
    ranks = train_byte_bpe(PATTERN, merges=300)
    start = len(ranks) + 214  # <img>: after the 208 special tokens and <ref> ... </quad>
    folder, _, visual, hf = qwen_vl_checkpoint(tmp_path / "model", vocab=len(ranks) + 217, image_start_id=start)
    write_tokenizer_folder(folder, {"qwen.tiktoken": tiktoken_file(ranks)}, TOKENIZER_CONFIG)
    enc = tiktoken.Encoding("QwenVL", pat_str=PATTERN, mergeable_ranks=ranks,
                            special_tokens={t: len(ranks) + i for i, t in enumerate(SPECIALS + VL_TAGS)})
    path = str(tmp_path / "cat.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)

    tok, ours = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    query = tok.from_list_format([{"image": path}, {"text": "What is it?"}])
    assert query == f"Picture 1: <img>{path}</img>\nWhat is it?"
    ids = lambda s: published_vl_ids(enc, ranks, s, set(VL_TAGS))  # noqa: E731
    nl, im_start, im_end = enc.encode("\n"), [len(ranks) + 1], [len(ranks) + 2]
    want = (im_start + ids("system") + nl + ids("You are a helpful assistant.") + im_end + nl + im_start + ids("user")
            + nl + ids(query) + im_end + nl + im_start + enc.encode("assistant") + nl)
    context = make_context(tok, query, None, system="You are a helpful assistant.")[1]
    assert context == want

    size = VISUAL["image_size"]
    resized = torch.from_numpy(np.array(Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)))
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    pixels = resized.permute(2, 0, 1).float().div(255).sub(mean).div(std).numpy()[None]
    row = np.array([want])
    tokens = reference_greedy(visual, hf, row, np.ones_like(row), pixels, 5, start)[0, len(want):].tolist()
    stops = [len(ranks) + 1, len(ranks) + 2]
    reply = tokens[:min([tokens.index(s) for s in stops if s in tokens] + [len(tokens)])]
    response, history = ours.chat(tok, query, history=None, max_new_tokens=5, do_sample=False)
    assert reply and response == enc.decode(reply).strip() and history == [(query, response)]


# the published finetune.py's LoRA modules (c_attn, attn.c_proj, w1, w2), and the vision tower's MLP input and the
# Resampler's kv_proj: the language model and the tower adapted
LORA_TARGETS = ["c_attn", "attn.c_proj", "w1", "w2", "c_fc", "kv_proj"]


def test_lora_files_both_ways_and_merge(checkpoint, tmp_path):
    """PEFT on the published module names, with images: our adapter file in HF peft on the torch reference of the
    published QWenLMHeadModel (qwen_vl_fixtures.published_reference), peft's file in ours, merge_and_unload's
    weights and logits; and peft's default target modules for model_type "qwen" (its table's entry, or its refusal
    when it has none: peft 0.21.2 has none)."""
    import peft
    import torch
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    from mindformers_hf import AutoModelForCausalLM
    from mindformers_hf.peft import LoraConfig, PeftModel, get_peft_model
    from tests.models.matrix_train import _adapter_keys
    from tests.models.qwen_vl_fixtures import published_reference
    from tests.models.remote_formats import read_tensors

    folder = checkpoint[0]
    ids, mask, pixels = image_prompt()
    keep = mask.astype(bool)
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels)

    def torch_logits(model):
        with torch.no_grad():
            return model(torch.tensor(ids), torch.tensor(mask), torch.tensor(pixels))["logits"].numpy()

    base = torch_logits(published_reference(folder))
    assert np.abs(np.asarray(checkpoint[4](**inputs).logits)[keep] - base[keep]).max() <= 1e-4
    if "qwen" in DEFAULTS:
        want = peft.get_peft_model(published_reference(folder), peft.LoraConfig()).targeted_module_names
        got = get_peft_model(AutoModelForCausalLM.from_pretrained(folder), LoraConfig()).targeted_module_names
        assert got == want
    else:
        with pytest.raises(ValueError, match="target_modules"):
            peft.get_peft_model(published_reference(folder), peft.LoraConfig())
        with pytest.raises(ValueError, match="Please specify `target_modules`"):
            get_peft_model(AutoModelForCausalLM.from_pretrained(folder), LoraConfig())

    config = dict(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False)
    ours = get_peft_model(AutoModelForCausalLM.from_pretrained(folder), LoraConfig(**config))
    logits = np.asarray(ours(**inputs).logits)
    ours.save_pretrained(tmp_path / "ours")
    torch.manual_seed(0)
    names = sorted(peft.get_peft_model_state_dict(peft.get_peft_model(published_reference(folder),
                                                                      peft.LoraConfig(**config))))
    assert _adapter_keys(tmp_path / "ours") == names  # the keys peft writes for the published modules
    assert any(".visual." in n for n in names) and any(".attn.c_proj." in n for n in names)
    hf = peft.PeftModel.from_pretrained(published_reference(folder), str(tmp_path / "ours")).eval()
    ref = torch_logits(hf)
    assert np.abs(logits[keep] - base[keep]).max() > 0.1  # the adapter changes the output
    assert np.abs(logits[keep] - ref[keep]).max() <= 1e-4

    torch.manual_seed(1)
    theirs = peft.get_peft_model(published_reference(folder), peft.LoraConfig(**config)).eval()
    theirs.save_pretrained(str(tmp_path / "theirs"))
    ref = torch_logits(theirs)
    assert np.abs(ref[keep] - base[keep]).max() > 0.1
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), str(tmp_path / "theirs"))
    assert np.abs(np.asarray(loaded(**inputs).logits)[keep] - ref[keep]).max() <= 1e-4

    merged, hf_merged = loaded.merge_and_unload(), theirs.merge_and_unload()
    assert np.abs(np.asarray(merged(**inputs).logits)[keep] - torch_logits(hf_merged)[keep]).max() <= 1e-4
    merged.save_pretrained(tmp_path / "merged")
    got, want = read_tensors(tmp_path / "merged"), {k: v.numpy() for k, v in hf_merged.state_dict().items()}
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert np.abs(got[name] - value).max() <= 1e-6, name


def _train_dataset(rows=2):
    """Text, an <img> span of 256 <imgpad> tokens, text; labels on the text (the first row's only after the image)."""
    rng = np.random.default_rng(3)
    size = VISUAL["image_size"]
    out = []
    for row in range(rows):
        span = [IMG_START] + [IMG_START + 2] * QUERIES + [IMG_START + 1]
        ids = [int(i) for i in rng.integers(3, 256, 3)] + span + [int(i) for i in rng.integers(3, 256, 4)]
        labels = [-100 if 3 <= n < 3 + len(span) or (row == 0 and n < 3) else i for n, i in enumerate(ids)]
        out.append({"input_ids": ids, "labels": labels,
                    "pixel_values": rng.standard_normal((3, size, size)).astype(np.float32)})
    return out


def _train_collator(convert):
    def collate(rows):
        ids = np.array([r["input_ids"] for r in rows])
        batch = {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": np.array([r["labels"] for r in rows]),
                 "pixel_values": np.stack([r["pixel_values"] for r in rows])}
        return {k: convert(v) for k, v in batch.items()}
    return collate


def test_training_steps_match_hf_trainer_on_the_reference(checkpoint, tmp_path):
    """Qwen-VL fine-tuned through the Trainer with an image in every example: the loss and grad_norm of two AdamW
    steps and every weight after them (vision tower included) equal transformers' Trainer on the torch reference
    of the published QWenLMHeadModel. Each step takes the whole 2-example dataset as one micro-batch: the published
    loss is a per-batch mean (its forward takes no num_items_in_batch), so only the set of examples must match."""
    import torch
    import transformers

    from mindformers_hf import AutoModelForCausalLM, Trainer, TrainingArguments
    from tests.models.matrix_train import ARGS, GRAD_NORM_RTOL, LOSS_RTOL, WEIGHT_RTOL
    from tests.models.qwen_vl_fixtures import published_reference
    from tests.models.remote_formats import read_tensors

    steps = dict(ARGS, per_device_train_batch_size=2, gradient_accumulation_steps=1, num_train_epochs=2,
                 remove_unused_columns=False)
    folder = checkpoint[0]
    hf = published_reference(folder).train()
    hf_trainer = transformers.Trainer(model=hf, train_dataset=_train_dataset(),
                                      data_collator=_train_collator(torch.tensor),
                                      args=transformers.TrainingArguments(str(tmp_path / "hf"), use_cpu=True, **steps))
    hf_trainer.train()

    ours = AutoModelForCausalLM.from_pretrained(folder)
    trainer = Trainer(model=ours, args=TrainingArguments(str(tmp_path / "ours"), **steps),
                      train_dataset=_train_dataset(), data_collator=_train_collator(lambda v: v))
    trainer.train()

    got_steps, want_steps = ([h for h in t.state.log_history if "loss" in h] for t in (trainer, hf_trainer))
    assert [h["step"] for h in got_steps] == [h["step"] for h in want_steps] == [1, 2]
    for got, want in zip(got_steps, want_steps):
        assert got["loss"] == pytest.approx(want["loss"], rel=LOSS_RTOL), (got, want)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=GRAD_NORM_RTOL), (got, want)
        assert got["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-12)

    ours.save_pretrained(tmp_path / "saved")  # the published names, as the reference's state_dict
    got, start = read_tensors(tmp_path / "saved"), read_tensors(folder)
    want = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    assert sorted(got) == sorted(want)
    moved = [k for k in want if np.abs(want[k] - start[k]).max() > 0]
    assert any(k.startswith("transformer.visual.") for k in moved) and any(".attn.c_attn." in k for k in moved)
    for name, value in want.items():
        rel = np.linalg.norm(got[name] - value) / max(np.linalg.norm(value), 1e-12)
        assert rel <= WEIGHT_RTOL, f"{name}: relative difference {rel:.2e}"
