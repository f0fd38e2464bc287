"""acme-vllm: an out-of-tree vllm-core platform, the template for a vendor's backend.

``plugin.py`` is what vllm-core loads (hook implementations only); ``platform.py`` holds the
platform and its ops, ``attention.py`` the attention backend. Nothing here imports torch until
a hook asks for a class.
"""

__version__ = "0.1.0"
