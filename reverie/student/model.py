"""The student: transformers' LLaVA architecture, tiny-from-config or pretrained by id/path.

The tiny default is saved as an ordinary Hugging Face model folder (model, tokenizer with a
chat template, image processor) that `from_pretrained` loads like any LLaVA checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from ..vocab import IMAGE_TOKEN

SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
# LLaVA-1.5's conversation format, which llava-hf checkpoints also use.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for part in message['content'] %}{{ part['text'] }}{% endfor %}{{ eos_token }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on the generated corpus (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [SPECIALS["pad_token"], SPECIALS["bos_token"], SPECIALS["eos_token"], SPECIALS["unk_token"], IMAGE_TOKEN]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS, extra_special_tokens={"image_token": IMAGE_TOKEN},
                                   padding_side="left", chat_template=CHAT_TEMPLATE)
    return fast


def build_tiny(settings, tokenizer, image_size: int):
    """A LLaVA with a small CLIP-style tower and a small Llama-style LM, randomly initialised."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    if image_size % settings.patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of base.model.patch_size {settings.patch_size}")
    vision = CLIPVisionConfig(hidden_size=settings.vision_hidden, intermediate_size=2 * settings.vision_hidden,
                              num_hidden_layers=settings.vision_layers, num_attention_heads=settings.vision_heads,
                              image_size=image_size, patch_size=settings.patch_size)
    text = LlamaConfig(hidden_size=settings.text_hidden, intermediate_size=settings.intermediate,
                       num_hidden_layers=settings.text_layers, num_attention_heads=settings.text_heads,
                       num_key_value_heads=settings.text_heads, vocab_size=len(tokenizer),
                       max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       tie_word_embeddings=False)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                         vision_feature_layer=-1, vision_feature_select_strategy=settings.feature_select,
                         projector_hidden_act="gelu",
                         image_seq_length=(image_size // settings.patch_size) ** 2 + (settings.feature_select == "full"))
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                                         do_center_crop=True, do_resize=True, resample=3)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=settings.patch_size,
                               vision_feature_select_strategy=settings.feature_select, num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    return model, processor


def load_student(path: str | Path, dtype=None):
    """Loads model and processor from a folder or a hub id (no download when HF_HUB_OFFLINE=1)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = LlavaForConditionalGeneration.from_pretrained(str(path), **kwargs)
    processor = AutoProcessor.from_pretrained(str(path))
    return model, processor


def image_token_count(config) -> int:
    v = config.vision_config
    patches = (v.image_size // v.patch_size) ** 2
    return patches + (1 if config.vision_feature_select_strategy == "full" else 0)


def inference_device():
    """Where a stage answers: the first GPU it may see (the flow places it, CUDA_VISIBLE_DEVICES), else the CPU."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_tuned(model_dir: str | Path, precision: str = "fp32"):
    """A tuned student ready for inference on `inference_device()`, its weights in `precision`:
    LoRA adapters are merged into the base first (in the base's own precision)."""
    from ..tracking import RUN_ID_FILE

    model_dir = Path(model_dir)
    info = json.loads((model_dir / RUN_ID_FILE).read_text())
    if info.get("lora"):
        from peft import PeftModel

        base, processor = load_student(info["base"])
        model = PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload()
    else:
        model, processor = load_student(model_dir)
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return model.to(inference_device(), dtype).eval(), processor, info
