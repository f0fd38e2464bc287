"""vllm-multimodal: image inputs for vllm-core (LLaVA-1.5, Qwen2-VL).

Processors (``register_multimodal_processors``) run in the front end: the model's own Hugging
Face image processor, placeholder expansion, M-RoPE positions. Models (``register_models``)
reuse the core's decoder with ``inputs_embeds``. The runner extension ``multimodal`` runs the
vision encoder for the images a step schedules, keeps its outputs in an encoder cache and
merges them into the step's embeddings.
"""
