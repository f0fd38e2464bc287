"""``Communicator``: the collectives one process group needs, on the platform's backend.

Tensor parallelism needs all-reduce (row-parallel layers, the vocabulary-parallel embedding) and
all-gather (the logits of the vocabulary-parallel LM head); pipeline parallelism needs send and
recv of the intermediate tensors between neighbouring stages. ``TorchCommunicator`` runs them
through ``torch.distributed`` on ``Platform.dist_backend`` (gloo on CPU, NCCL on CUDA); a platform
returns its own subclass from ``Platform.make_communicator`` (a custom all-reduce, a vendor's
collective library) and nothing else changes.
"""

from __future__ import annotations

from typing import Any

import torch


class Communicator:
    """Collectives over one group of ranks. ``ranks`` are global ranks in group order;
    ``rank_in_group`` is this process's index in ``ranks``. Every rank of the group must call a
    collective, in the same order; ``send`` / ``recv`` take indices in the group."""

    graph_safe: bool = False
    """Whether the collectives may run inside a captured graph (CUDA graphs): the worker captures
    graphs for tensor parallel only then. A group of one is always safe (it runs nothing)."""

    def __init__(self, ranks: list[int], rank_in_group: int) -> None:
        self.ranks = list(ranks)
        self.rank_in_group = rank_in_group
        self.world_size = len(ranks)

    @property
    def is_first(self) -> bool:
        return self.rank_in_group == 0

    @property
    def is_last(self) -> bool:
        return self.rank_in_group == self.world_size - 1

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of ``x`` over the group (every rank gets it)."""
        raise NotImplementedError

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """The ranks' ``x`` concatenated along ``dim``, in group order (every rank gets it)."""
        raise NotImplementedError

    def broadcast(self, x: torch.Tensor, src: int = 0) -> torch.Tensor:
        """``x`` of group rank ``src``, in place on every rank."""
        raise NotImplementedError

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """A picklable object of group rank ``src`` (host-side control data)."""
        raise NotImplementedError

    def send(self, x: torch.Tensor, dst: int) -> None:
        """Send ``x`` to group rank ``dst`` (blocking until it is handed to the backend)."""
        raise NotImplementedError

    def recv(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, src: int) -> torch.Tensor:
        """A tensor of ``shape`` / ``dtype`` from group rank ``src``."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Wait until every rank of the group arrives."""
        raise NotImplementedError


class SingleRankCommunicator(Communicator):
    """A group of one: every collective is the identity, nothing is sent (TP=1 / PP=1 pay nothing)."""

    graph_safe = True

    def __init__(self, rank: int = 0) -> None:
        super().__init__([rank], 0)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        return x

    def broadcast(self, x: torch.Tensor, src: int = 0) -> torch.Tensor:
        return x

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return obj

    def send(self, x: torch.Tensor, dst: int) -> None:
        raise RuntimeError("a group of one rank has nobody to send to")

    def recv(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, src: int) -> torch.Tensor:
        raise RuntimeError("a group of one rank has nobody to receive from")

    def barrier(self) -> None:
        return None


class TorchCommunicator(Communicator):
    """``torch.distributed`` collectives on ``group`` (a ``ProcessGroup`` made with ``new_group``)."""

    def __init__(self, ranks: list[int], rank_in_group: int, group: Any) -> None:
        super().__init__(ranks, rank_in_group)
        self.group = group
        import torch.distributed as dist

        # NCCL collectives on the capturing stream are recorded into CUDA graphs; gloo's run on
        # the host and cannot be (nor be recorded into a CPU plan)
        self.graph_safe = dist.get_backend(group) == "nccl"

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        dist.all_reduce(x, group=self.group)
        return x

    def all_gather(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        import torch.distributed as dist

        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x, group=self.group)
        return torch.cat(parts, dim=dim)

    def broadcast(self, x: torch.Tensor, src: int = 0) -> torch.Tensor:
        import torch.distributed as dist

        dist.broadcast(x, src=self.ranks[src], group=self.group)
        return x

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        import torch.distributed as dist

        box = [obj if self.rank_in_group == src else None]
        dist.broadcast_object_list(box, src=self.ranks[src], group=self.group)
        return box[0]

    def send(self, x: torch.Tensor, dst: int) -> None:
        import torch.distributed as dist

        dist.send(x.contiguous(), dst=self.ranks[dst], group=self.group)

    def recv(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, src: int) -> torch.Tensor:
        import torch.distributed as dist

        out = torch.empty(shape, dtype=dtype, device=device)
        dist.recv(out, src=self.ranks[src], group=self.group)
        return out

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self.group)
