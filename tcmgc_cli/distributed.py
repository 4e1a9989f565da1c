"""torchrun's process group: rank, world size, gathering. World 1 (no torchrun) makes every call a no-op."""

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch


def process_rank() -> int:
    """This process's rank under torchrun (0 without it), read before any process group exists."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Dist:
    """The process group as torchrun sets it up (world 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: torch.device) -> "Dist":
        world = world_size()
        if world == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            # Destroyed while Python is still whole: left to interpreter teardown, gloo's threads release the last
            # collective's tensors after the GIL is gone and the process aborts (SIGABRT) after finishing its work.
            atexit.register(_destroy_group)
        return cls(dist.get_rank(), world)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every process's x along dim 0, keeping gradients (they flow back to each owner)."""
        if self.world == 1:
            return x
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x))  # type: ignore[no-untyped-call]

    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DistributedDataParallel around `module` (gradients averaged across processes in buckets, overlapped
        with the backward pass); the module itself in one process."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # find_unused_parameters: configs switch parts off (LSA, SR's ISA weights), so some weights get no gradient
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True, broadcast_buffers=False)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order (pickled; for small results such as reports and score blocks)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def _destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
