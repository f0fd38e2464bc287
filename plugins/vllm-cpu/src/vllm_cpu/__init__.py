"""vllm-cpu: the fast CPU platform for vllm-core (native PyTorch kernels, batched attention).

Installed next to ``vllm-core`` it wins over the reference platform (priority 10 > 0);
``VLLM_CORE_DEVICE=reference`` still forces the oracle.
"""

__version__ = "0.1.0"
