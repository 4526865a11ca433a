"""Several processes on one stage (``accelerate launch --num_processes N -m selfreward.stages STAGE``).

Every process runs the same stage. Training is TRL's under accelerate (DDP, DeepSpeed ZeRO-3 or
FSDP, from the launch's config: ``conf/accelerate/``). Generation and judging are sharded at the
stage level: :func:`shard` wraps a stage's engine so that each process generates a contiguous
slice of the requests, with a seed of its own derived from the stage's seed, the process and the
number of processes, and the slices are gathered back into the requests' order on every process.
Only the main process (``RANK`` 0) writes: files (:func:`selfreward.rundir.write_text` and the
model folders), ``.done`` markers and W&B.

One process (no launch, or ``--num_processes 1``) is exactly the code path without this module:
:func:`shard` returns the engine itself and every guard lets the single process through.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from typing import Any

_parallel = 0  # > 0 inside a stage that all processes run together (rundir.run_stage)


def world_size() -> int:
    """How many processes run this stage (``WORLD_SIZE``, set by accelerate / torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def is_main() -> bool:
    """Whether this process writes (the only process, or rank 0 of a launch)."""
    return rank() == 0


def init() -> None:
    """Join the launch's process group (gloo on CPU, NCCL on GPUs; each process on its own GPU),
    through accelerate's PartialState, as the Trainer will. Nothing happens in one process."""
    if world_size() < 2:
        return
    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())


def active() -> bool:
    """Whether collectives run: several processes, a process group."""
    if world_size() < 2:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list:
    """Every process's ``obj``, in rank order, on every process."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@contextmanager
def parallel():
    """The block is run by every process together: engines wrapped by :func:`shard` split their work."""
    global _parallel
    _parallel += 1
    try:
        yield
    finally:
        _parallel -= 1


def sharding() -> bool:
    return _parallel > 0 and active()


def shard_seed(seed: int, rank: int, world: int) -> int:
    """Process ``rank``'s seed for its slice: the stage's seed itself for one process, else a
    hash of (seed, rank, world); the same launch gives the same files again."""
    if world == 1:
        return seed
    digest = hashlib.sha256(f"{seed}/rank{rank}/of{world}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31)


def slices(count: int, world: int) -> list[range]:
    """``count`` items in ``world`` contiguous slices whose sizes differ by at most one."""
    base, extra = divmod(count, world)
    bounds = [0]
    for r in range(world):
        bounds.append(bounds[-1] + base + (r < extra))
    return [range(bounds[r], bounds[r + 1]) for r in range(world)]


class ShardedEngine:
    """An :class:`~selfreward.generation.Engine` whose calls, inside :func:`parallel`, are split
    across the processes: each generates its contiguous slice of the requests (with
    :func:`shard_seed`) and all of them get every result, in the requests' order. Outside a
    parallel block (or with one process) it is the wrapped engine."""

    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def _split(self, items: list) -> tuple[range, list]:
        mine = slices(len(items), world_size())[rank()]
        return mine, [items[i] for i in mine]

    def generate(self, messages, sampling, *, n=1, seed=0, desc="generate", prefixes=None):
        # Passed on only when given, so that an engine without prefixes keeps working.
        extra = {} if prefixes is None else {"prefixes": prefixes}
        if not sharding():
            return self.engine.generate(messages, sampling, n=n, seed=seed, desc=desc, **extra)
        indices, mine = self._split(list(messages))
        if prefixes is not None:
            extra = {"prefixes": [prefixes[i] for i in indices]}
        out = self.engine.generate(mine, sampling, n=n, seed=shard_seed(seed, rank(), world_size()),
                                   desc=f"{desc} [{rank() + 1}/{world_size()}]", **extra) if mine else []
        return [row for part in gather(out) for row in part]

    def continuation_logprobs(self, messages, prefixes, continuations):
        if not sharding():
            return self.engine.continuation_logprobs(messages, prefixes, continuations)
        mine, part = self._split(list(messages))
        prefixes = [prefixes[i] for i in mine]
        out = self.engine.continuation_logprobs(part, prefixes, continuations) if part else []
        return [row for part in gather(out) for row in part]


def shard(engine):
    """``engine`` wrapped by :class:`ShardedEngine` under a launch of several processes; the
    engine itself otherwise."""
    if world_size() < 2 or isinstance(engine, ShardedEngine):
        return engine
    return ShardedEngine(engine)


def batch_args(batch_size: int, what: str) -> dict:
    """The Trainer's batch arguments for ``training.*.batch_size``, the batch of one optimizer step
    (before gradient accumulation) over all processes, so that a run's results do not depend on
    how it is launched. Under N processes accelerate splits each batch of ``batch_size`` examples,
    drawn as one process draws it, into N parts of batch_size / N (``split_batches``): every step
    sees the examples one process would, the last, smaller batch included."""
    world = world_size()
    if world == 1:
        return {"per_device_train_batch_size": batch_size}
    if batch_size % world:
        from selfreward.config import ConfigError

        raise ConfigError(f"invalid config: {what}={batch_size} cannot be split over {world} processes; allowed: "
                          f"a multiple of the number of processes (it is the batch of all of them together)")
    return {"per_device_train_batch_size": batch_size, "accelerator_config": {"split_batches": True}}


class SharedMemoryAllReduce:
    """A DDP communication hook for processes on one machine: each process copies its gradient
    bucket into its slot of a memory-mapped file, the processes meet at one barrier, and each sums
    the slots in rank order. Gloo, PyTorch's CPU backend, all-reduces through TCP on the loopback
    device; on two busy CPU cores that and DDP's copies of the gradients into and out of its
    buckets cost the built-in model about a tenth of a training step (``scripts/bench_ddp_step.py``).
    The result is the mean that DDP's own all-reduce gives (each bucket divided by the number of
    processes, then summed; for two processes the same floats to the last bit, since a two-term
    sum does not depend on its order). Two sets of slots are used in turn, so that one barrier a
    bucket is enough: a process writes a set again only after every process has passed the
    barrier of the other set, which each reaches after reading this one. The file is as large as
    the largest bucket times the processes, twice; it is made on the first bucket (and again for a
    larger one) by all processes together, as DDP calls the hook for the same buckets in the same
    order on every process, and unlinked once mapped, so nothing is left behind after a crash.
    No library offers this: PyTorch's gloo has no shared-memory transport, and DDP's built-in
    hooks compress gradients, they do not move them another way.

    Pass :meth:`hook` to ``DistributedDataParallel.register_comm_hook`` (with ``state=None``).
    """

    def __init__(self):
        import torch.distributed as dist

        self.world, self.rank = dist.get_world_size(), dist.get_rank()
        self.slots = None  # (2, world, capacity) float32, shared
        self.calls = 0

    def _map(self, capacity: int) -> None:
        import tempfile

        import torch
        import torch.distributed as dist

        path = None
        if self.rank == 0:
            fd, path = tempfile.mkstemp(prefix="selfreward-ddp-", suffix=".f32",
                                        dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
            os.ftruncate(fd, 2 * self.world * capacity * 4)
            os.close(fd)
        path = broadcast(path)
        try:
            self.slots = torch.from_file(path, shared=True, size=2 * self.world * capacity,
                                         dtype=torch.float32).view(2, self.world, capacity)
            dist.barrier()  # every process has mapped it
        finally:
            if self.rank == 0:
                os.unlink(path)

    def hook(self, state, bucket):
        """DDP's hook for one bucket: the mean over the processes of ``bucket.buffer()``, in place."""
        import torch
        import torch.distributed as dist

        grads = bucket.buffer()
        if grads.dtype != torch.float32 or grads.device.type != "cpu":
            raise RuntimeError(f"SharedMemoryAllReduce sums float32 CPU gradients, not {grads.dtype} on "
                               f"{grads.device.type}: set training.ddp_shared_memory=false")
        n = grads.numel()
        if self.slots is None or n > self.slots.shape[2]:
            self._map(n)
        slots = self.slots[self.calls % 2]
        self.calls += 1
        grads.div_(self.world)
        slots[self.rank, :n].copy_(grads)
        dist.barrier()
        grads.copy_(slots[0, :n])
        for r in range(1, self.world):
            grads.add_(slots[r, :n])
        future = torch.futures.Future()
        future.set_result(grads)
        return future
