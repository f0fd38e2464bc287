"""Pipeline parallelism: which layers a stage holds, and the tensors that cross stages.

Stage ``s`` of ``p`` holds decoder layers ``[s * n // p, (s + 1) * n // p)``; the first stage
also embeds the tokens, the last also normalises and computes the logits. Between stages go the
hidden states and the residual of every token of the step, one ``[2, T, hidden]`` tensor sent by
each rank to the rank of the same tensor index in the next stage. ``T`` (the step's padded
token count) is known on every stage, since each prepares the same inputs from the same
``SchedulerOutput``; nothing but the tensor crosses.
"""

from __future__ import annotations

import torch

from vllm_core.distributed.communicator import Communicator


def stage_layers(num_layers: int, pp_rank: int, pp_size: int) -> range:
    """The decoder layers of stage ``pp_rank`` (every stage gets at least one)."""
    if num_layers < pp_size:
        from vllm_core.errors import ModelLoadError

        raise ModelLoadError(
            f"pipeline_parallel_size={pp_size} is larger than the model's {num_layers} layers; "
            f"use at most {num_layers} stages"
        )
    return range(pp_rank * num_layers // pp_size, (pp_rank + 1) * num_layers // pp_size)


def send_intermediate(pp: Communicator, hidden: torch.Tensor, residual: torch.Tensor) -> None:
    """Hand this stage's hidden states and residual [T, hidden] to the next stage."""
    pp.send(torch.stack((hidden, residual)), pp.rank_in_group + 1)


def recv_intermediate(
    pp: Communicator, num_tokens: int, hidden_size: int, dtype: torch.dtype, device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous stage's (hidden states, residual), each [T, hidden]."""
    both = pp.recv((2, num_tokens, hidden_size), dtype, device, pp.rank_in_group - 1)
    return both[0], both[1]
