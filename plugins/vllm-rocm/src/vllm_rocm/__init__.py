"""vllm-rocm: the AMD GPU platform of vllm-core (vllm-cuda's Triton kernels with AMD launch
configs, HIP graphs, RCCL)."""

__version__ = "0.1.0"
