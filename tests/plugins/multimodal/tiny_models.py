"""Tiny random LLaVA and Qwen2-VL checkpoints with their HF processors, made in the test
session (SmolLM2's tokenizer plus the models' image tokens), and the transformers oracle."""

from __future__ import annotations

import os
from typing import Any

import torch

IMAGE_TOKENS = ["<image>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]


def tiny_tokenizer() -> Any:
    from vllm_core.model_executor.model_loader.default_model import default_model_path
    from vllm_core.model_executor.model_loader.gguf_loader import GGUFLoader

    tok = GGUFLoader().load_tokenizer(default_model_path(), None)
    tok.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    return tok


def save_tiny_llava(path: str, tok: Any, seed: int = 0) -> tuple[Any, Any]:
    """(HF model, HF LlavaProcessor); image 56x56, patch 14 -> 16 tokens per image."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=56, patch_size=14, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.1)
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                         image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    config.architectures = ["LlavaForConditionalGeneration"]
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # make the image matter: the projector's output is as large as token embeddings
        for p in model.model.multi_modal_projector.parameters():
            p.mul_(4.0)
    model.save_pretrained(path, safe_serialization=True)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    processor.save_pretrained(path)
    tok.save_pretrained(path)
    return model, processor


def draw(width: int, height: int, seed: int) -> Any:
    """A PIL image with random shapes (different sizes and aspect ratios per seed)."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    img = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(1, width), y0 + rng.randrange(1, height)
        d.rectangle([x0, y0, x1, y1], fill=tuple(rng.randrange(256) for _ in range(3)))
    return img


def hf_generate(model: Any, inputs: dict[str, Any], max_new_tokens: int) -> list[int]:
    """transformers' greedy generate on the processor's outputs: the oracle."""
    from transformers import GenerationConfig

    gc = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    try:
        with torch.no_grad():
            out = model.generate(**inputs, generation_config=gc)
    finally:
        model.generation_config.eos_token_id = saved
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def model_dir(tmp: str, name: str) -> str:
    path = os.path.join(tmp, name)
    os.makedirs(path, exist_ok=True)
    return path


def save_tiny_qwen2_vl(path: str, tok: Any, seed: int = 0) -> tuple[Any, Any]:
    """(HF model, HF image processor); patch 4, merge 2: an image of W x H pixels takes about
    W * H / 64 tokens (dynamic resolution). ``qwen2_vl_inputs`` does what ``Qwen2VLProcessor``
    does (that class needs torchvision for its video half)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor

    ids = {t: tok.convert_tokens_to_ids(t) for t in IMAGE_TOKENS}
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         initializer_range=0.1),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=4,
                           spatial_merge_size=2, temporal_patch_size=2, initializer_range=0.1),
        image_token_id=ids["<|image_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], video_token_id=ids["<image>"], tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    config.architectures = ["Qwen2VLForConditionalGeneration"]
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    image_processor = Qwen2VLImageProcessor(patch_size=4, temporal_patch_size=2, merge_size=2,
                                            min_pixels=16 * 16, max_pixels=48 * 48)
    image_processor.save_pretrained(path)
    tok.save_pretrained(path)
    return model, image_processor


def qwen2_vl_inputs(image_processor: Any, tok: Any, text: str, images: list[Any]) -> dict[str, Any]:
    """Qwen2VLProcessor's outputs: each ``<|image_pad|>`` repeated ``t*h*w / 4`` times, then
    tokenized; pixel values, grids and the token types transformers' M-RoPE index reads."""
    inputs: dict[str, Any] = {}
    if images:
        inputs = dict(image_processor(images=images, return_tensors="pt"))
        parts = text.split("<|image_pad|>")
        counts = [int(g.prod()) // 4 for g in inputs["image_grid_thw"]]
        text = parts[0] + "".join("<|image_pad|>" * n + p for n, p in zip(counts, parts[1:]))
    ids = torch.tensor([tok.encode(text)])
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    inputs.update(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=(ids == pad).int())
    return inputs
