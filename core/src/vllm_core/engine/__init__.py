"""The engine: input processing, the core step loop, output processing."""
