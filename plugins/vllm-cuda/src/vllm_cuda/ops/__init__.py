"""Triton kernels of the NVIDIA platform, one module per op.

Every wrapper has the signature and semantics of the native op of the same name in
``vllm_core.platforms.ops.Ops`` (``vllm_cuda.cuda_ops.CUDAOps`` plugs them in); the conformance
kit checks one against the other. ``paged_attention`` serves ``TritonAttentionBackend``.
Modules are imported on use, so that importing the package does not compile anything.
"""
