"""Several processes through accelerate: DDP, each rank training on its slice of every step.

``accelerate launch --multi_gpu --num_processes N -m training.ml COMMAND ...`` starts N
processes (torchrun underneath; ``WORLD_SIZE`` > 1 in each). Every rank builds the same
step plan from the same seed and takes its contiguous slice of each step's global batch;
DDP (``accelerate.Accelerator.prepare_model``) averages the gradients in backward, so a
trainer scales its rank's loss by the world size over the GLOBAL normaliser of the step and
the averaged gradient equals the one-process gradient. Rank 0 alone writes artifacts,
metrics and progress. Precision stays ours (``training.ml.precision``): accelerate runs
with ``mixed_precision="no"``.

A process started without a launcher (``WORLD_SIZE`` unset or 1) gets ``SINGLE``: no
accelerate state, no process group, every helper the identity.

Only DDP is run. A launcher asking for FSDP, DeepSpeed or Megatron-LM, or one whose
processes would not form one group (``--multi_gpu`` without a GPU unless ``--device cpu``),
raises ``DistributedError`` instead of training N independent copies.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")
GRAD_BUCKET_NUMEL = 2**25  # elements per gradient all-reduce of ``sum_gradients`` (128 MiB fp32)

# accelerate launch exports these for the engines it starts (accelerate.utils.launch)
ENGINE_FLAGS = {
    "ACCELERATE_USE_FSDP": "FSDP",
    "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
    "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM",
}


class DistributedError(Exception):
    """The launcher asks for an engine or a set-up the trainers cannot run."""


@dataclass(frozen=True)
class Distributed:
    """This process's place among ``world_size`` ranks (``accelerator`` None when alone)."""

    world_size: int = 1
    rank: int = 0
    accelerator: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def device(self) -> torch.device | None:
        """The device of this rank (``cuda:LOCAL_RANK`` or cpu); None when alone."""
        return self.accelerator.device if self.enabled else None

    def check_global_batch(self, batch_size: int, flag: str = "--batch-size") -> None:
        """A step's global batch must split evenly over the ranks."""
        if batch_size % self.world_size:
            raise ValueError(
                f"{flag} {batch_size} is the global batch and must be divisible by the "
                f"{self.world_size} processes"
            )

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous slice of ``items``: sizes differ by at most one, the first
        ``len % world_size`` ranks taking one more (a short last step may leave a rank none)."""
        size, extra = divmod(len(items), self.world_size)
        start = self.rank * size + min(self.rank, extra)
        return list(items[start : start + size + (self.rank < extra)])

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The model to run forward/backward through: DDP-wrapped when several ranks."""
        return self.accelerator.prepare_model(model) if self.enabled else model

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module, skip: bool) -> Iterator[None]:
        """Backward inside does not all-reduce when ``skip`` (all but a step's last backward),
        so every rank syncs exactly once a step however many micro-batches it has."""
        if self.enabled and skip:
            with model.no_sync():  # type: ignore[operator]
                yield
        else:
            yield

    def sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed over the ranks (float64; the values themselves when alone)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]

    def sum_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """Sum ``params``' gradients over the ranks in place (a missing gradient counts as
        zeros and comes back as the sum), in flat buckets of one dtype and at most
        ``GRAD_BUCKET_NUMEL`` elements, one all-reduce each: for trainers that all-reduce
        by hand instead of wrapping their models in DDP. A no-op when alone."""
        if not self.enabled:
            return
        buckets: dict[torch.dtype, list[list[torch.Tensor]]] = {}
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            groups = buckets.setdefault(param.grad.dtype, [[]])
            if groups[-1] and sum(g.numel() for g in groups[-1]) >= GRAD_BUCKET_NUMEL:
                groups.append([])
            groups[-1].append(param.grad)
        for grads in (bucket for groups in buckets.values() for bucket in groups):
            flat = torch.cat([g.reshape(-1) for g in grads])
            torch.distributed.all_reduce(flat)
            for grad, summed in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
                grad.copy_(summed.view_as(grad))

    def broadcast(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's (a no-op when alone): every rank
        starts from the same weights, as DDP's constructor ensures."""
        if self.enabled:
            with torch.no_grad():
                for tensor in tensors:
                    torch.distributed.broadcast(tensor, src=0)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any (a stop must be taken together)."""
        return self.sum([float(flag)])[0] > 0 if self.enabled else flag

    def wait(self) -> None:
        """A barrier: every rank waits for the others (a no-op when alone)."""
        if self.enabled:
            self.accelerator.wait_for_everyone()


SINGLE = Distributed()
_current: Distributed | None = None


def launched_world_size() -> int:
    """The process count the launcher announced (``WORLD_SIZE``; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_distributed(*, cpu: bool) -> Distributed:
    """This process's ``Distributed``, created once; ``cpu`` runs the ranks on CPU (gloo).

    Raises ``DistributedError`` for an engine other than DDP, for accelerate's own mixed
    precision (``--dtype`` sets ours) and when the ranks would not form one group.
    """
    global _current
    if _current is not None:
        return _current
    engines = [name for var, name in ENGINE_FLAGS.items() if _flag(os.environ.get(var))]
    if engines:
        raise DistributedError(
            f"the launcher asks for {engines[0]}, which the trainers do not run yet; "
            "launch with training/ml/accelerate/ddp.yaml (DDP)"
        )
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if precision != "no":
        raise DistributedError(
            f"accelerate's --mixed_precision {precision} is not used: pass --dtype "
            f"{precision} to the command (fp32 master weights + autocast) and launch with 'no'"
        )
    world = launched_world_size()
    if world <= 1:
        _current = SINGLE
        return _current
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    accelerator = Accelerator(cpu=cpu, mixed_precision="no")
    kinds = (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
    if accelerator.distributed_type not in kinds or accelerator.num_processes != world:
        raise DistributedError(
            f"{world} processes were launched but accelerate set up "
            f"{accelerator.distributed_type.value} over {accelerator.num_processes}: "
            "without GPUs pass --device cpu"
        )
    _current = Distributed(
        world_size=accelerator.num_processes,
        rank=accelerator.process_index,
        accelerator=accelerator,
    )
    return _current


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}
