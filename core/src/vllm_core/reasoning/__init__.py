"""Built-in reasoning parsers, registered through ``register_reasoning_parsers``."""
