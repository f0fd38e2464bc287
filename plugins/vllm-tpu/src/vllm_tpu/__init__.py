"""vllm-tpu: a TPU platform for vllm-core on torch-xla.

Every step is padded to a fixed step shape (token and request buckets, a fixed block-table
width), every shape is compiled at start-up, and a guard (``VLLM_XLA_CHECK_RECOMPILATION=1``)
fails loudly if serving compiles anything afterwards. Verified on XLA's CPU backend
(``PJRT_DEVICE=CPU VLLM_TPU_ALLOW_CPU=1``); see the README for what a real TPU adds.
"""
