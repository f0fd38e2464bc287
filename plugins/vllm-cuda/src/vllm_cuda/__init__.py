"""vllm-cuda: the NVIDIA GPU platform of vllm-core (Triton kernels, CUDA graphs)."""

__version__ = "0.1.0"
