"""pipeline("image-text-to-text") against transformers' pipeline (torch) on the same tiny Qwen2-VL folder: ours
loads its processor itself (without torch); transformers' gets its Qwen2VLProcessor passed in (its AutoProcessor
needs torchvision for the video side). The records must be equal: chats (new reply, continued assistant message),
text with an image, `return_full_text=False`, `return_tensors=True`."""
import numpy as np
import pytest

from tests.models.qwen2_vl_fixtures import (CHAT_TEMPLATE, hf_model, image, make_processor_checkpoint,
                                            tolerant_processor_class_check)


def _chat(seed=0, reply=None):
    messages = [{"role": "user", "content": [{"type": "image", "image": image(seed)},
                                             {"type": "text", "text": "Describe."}]}]
    if reply is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
    return messages


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    import transformers

    from mindformers_hf import pipeline

    folder = make_processor_checkpoint(tmp_path_factory.mktemp("qwen2_vl_pipeline"))
    with tolerant_processor_class_check():
        processor = transformers.Qwen2VLProcessor(
            image_processor=transformers.Qwen2VLImageProcessorPil.from_pretrained(folder),
            tokenizer=transformers.AutoTokenizer.from_pretrained(folder), chat_template=CHAT_TEMPLATE)
        theirs = transformers.pipeline("image-text-to-text", model=hf_model(folder), processor=processor)
    return pipeline("image-text-to-text", model=folder), theirs


@pytest.mark.parametrize("call", [
    dict(text=_chat(), max_new_tokens=5),
    dict(text=_chat(1, reply="It is"), max_new_tokens=4),                        # continues the assistant message
    dict(text=[_chat(0), _chat(2)], max_new_tokens=3, return_full_text=False),   # a list of chats
    dict(images=image(3), text="<|vision_start|><|image_pad|><|vision_end|>What?", max_new_tokens=4),
    dict(text=_chat(), generate_kwargs={"max_new_tokens": 3}, return_tensors=True),
])
def test_records_equal_transformers(pipes, call):
    ours, theirs = pipes
    got, expected = ours(**call), theirs(**call)
    flat = lambda records: records if isinstance(records[0], dict) else [r for rs in records for r in rs]  # noqa: E731
    got, expected = flat(got), flat(expected)
    assert len(got) == len(expected)
    for mine, ref in zip(got, expected):
        assert set(mine) == set(ref)
        assert mine["input_text"] == ref["input_text"]
        if "generated_token_ids" in ref:
            np.testing.assert_array_equal(np.asarray(mine["generated_token_ids"]), ref["generated_token_ids"].numpy())
        else:
            assert mine["generated_text"] == ref["generated_text"]
