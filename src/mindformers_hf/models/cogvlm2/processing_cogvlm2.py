"""CogVLM2's prompt building and image preprocessing (the published `build_conversation_input_ids`), in numpy and PIL:
no torch, no torchvision. CogVLM2 ships no HF processor; the repo's model method is the API.

As published:
  - the text is the template's: "base" is the query itself; "chat" / "vqa" write each (query, response) of the history
    as "Question: {q} Answer: {r}\\n" ("Short answer:" for vqa), then "Question: {query} Answer:";
  - input_ids are [bos], then with an image (image_size / patch_size / 2)^2 + 2 vision tokens of id 128002 (token
    type 1; their embeddings are replaced by the image features), then the text's ids without special tokens (then
    the answer's and eos, with `answer`); token_type_ids 0 for every other token; labels -100 but on the answer;
  - an image is resized to image_size x image_size (PIL bicubic: what torchvision's Resize does to a PIL image),
    scaled to [0, 1] and normalized with CLIP's mean and std, channels first. At most one image.
Differences: the published method also sets `tokenizer.pad_token_id = 128002` on the caller's tokenizer; this one
leaves the tokenizer alone. Arrays are numpy (return_tensors="np") or MindSpore ("ms").
"""
import numpy as np

LANGUAGE_TOKEN_TYPE = 0
VISION_TOKEN_TYPE = 1
VISION_PAD_ID = 128002  # the published "llama3 adapt for cogvlm" id of the vision tokens
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def history_to_prompt(template_version, history, query):
    if template_version == "base":
        return query
    if template_version == "vqa":
        answer_format = "Short answer:"
    elif template_version == "chat":
        answer_format = "Answer:"
    else:
        raise ValueError(f"Unknown template_version {template_version!r} (base, chat or vqa)")
    prompt = ""
    for old_query, response in history or []:
        prompt += f"Question: {old_query} {answer_format} {response}\n"
    return prompt + f"Question: {query} {answer_format}"


class CogVLM2ImageProcessor:
    """PIL image -> float32 [3, image_size, image_size]: bicubic resize, / 255, CLIP mean / std."""

    def __init__(self, image_size, mean=CLIP_MEAN, std=CLIP_STD):
        self.image_size = int(image_size)
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    def __call__(self, image):
        from PIL import Image

        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        if image.mode != "RGB":
            raise ValueError(f"CogVLM2 images are RGB; got a PIL image of mode {image.mode!r} (use .convert('RGB'), "
                             "as the published demos do)")
        resized = image.resize((self.image_size, self.image_size), Image.BICUBIC)
        pixels = np.asarray(resized, np.uint8).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        return (pixels - self.mean) / self.std


def build_conversation_input_ids(config, tokenizer, *, query, history=None, images=None, template_version=None,
                                 answer=None, return_tensors="np"):
    """The published method's dict: input_ids, token_type_ids, attention_mask (1D), images (a list of at most one
    [3, S, S] array) and labels (None without `answer`)."""
    vision = config.vision_config
    image_size, patch_size = vision["image_size"], vision["patch_size"]
    template_version = template_version or config.template_version
    if images is not None and len(images) > 1:
        raise NotImplementedError("build_conversation_input_ids: more than one image (the published method supports "
                                  "one)")
    text = history_to_prompt(template_version, history, query)
    input_ids = [tokenizer.bos_token_id]
    token_type_ids = [LANGUAGE_TOKEN_TYPE]
    pixel_values = []
    if images:
        pixel_values = [CogVLM2ImageProcessor(image_size)(images[0])]
        vision_tokens = (image_size // patch_size // 2) ** 2 + 2
        input_ids += [VISION_PAD_ID] * vision_tokens
        token_type_ids += [VISION_TOKEN_TYPE] * vision_tokens
    text_ids = tokenizer.encode(text, add_special_tokens=False)
    answer_ids = []
    if answer is not None:
        answer_ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
        text_ids = text_ids + answer_ids
    input_ids += text_ids
    token_type_ids += [LANGUAGE_TOKEN_TYPE] * len(text_ids)
    labels = None
    if answer is not None:
        labels = [-100] * (len(input_ids) - len(answer_ids)) + answer_ids
    out = {"input_ids": np.asarray(input_ids, np.int64), "token_type_ids": np.asarray(token_type_ids, np.int64),
           "attention_mask": np.ones(len(input_ids), np.int64), "images": pixel_values,
           "labels": None if labels is None else np.asarray(labels, np.int64)}
    if return_tensors in ("ms", "mindspore"):
        import mindspore as ms

        out = {k: (ms.Tensor(v) if isinstance(v, np.ndarray) else [ms.Tensor(x) for x in v] if k == "images" else v)
               for k, v in out.items()}
    elif return_tensors != "np":
        raise ValueError(f"return_tensors must be 'np' or 'ms', got {return_tensors!r}")
    return out
