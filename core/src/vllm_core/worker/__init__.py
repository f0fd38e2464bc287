"""Model execution: input preparation, the model runner, KV cache allocation."""
