"""Built-in tool-call parsers, registered through ``register_tool_parsers`` like any plugin's."""
