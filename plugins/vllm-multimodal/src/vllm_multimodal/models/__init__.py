"""Vision-language models: vision towers and the models that merge them into the core's decoder."""
