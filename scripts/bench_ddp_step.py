# torchrun --nproc_per_node 2 scripts/bench_ddp_step.py runs/judge_mid/seed100/m0/model --rows 16 --length 60
"""What a training step costs under several CPU processes, and how much of it is DDP: plain
PyTorch (no Trainer), a model folder's causal LM, one torch thread a process, each process a batch
of ``--rows`` random token rows of ``--length`` tokens; forward, backward, fused AdamW. Modes, run
one after another in the same launch (so in the same state of the machine), each ``--steps``
steps after ``--warmup``:

- ``alone``: each process trains its own copy, no communication (the compute, with the other
  process on the other core);
- ``sync``: the same plus an all-reduce of one number a step (what a synchronisation costs);
- ``by_hand``: the gradients flattened, all-reduced and copied back after the backward;
- ``ddp``: DistributedDataParallel as the Trainer builds it (PyTorch's 25 MB buckets, buffers
  broadcast before each forward);
- ``ddp_one_bucket``: DDP with one 100 MB bucket (the loop's ``training.ddp_bucket_cap_mb=100``);
- ``ddp_bucket_views``: the same with the gradients kept in the bucket (``gradient_as_bucket_view``,
  no copies into and out of it);
- ``ddp_shared_memory``: the same with the bucket summed through shared memory instead of gloo
  (:class:`selfreward.distributed.SharedMemoryAllReduce`; the loop's ``training.ddp_shared_memory``).

Prints each mode's milliseconds a step (the slowest process's). ``--rounds`` repeats the modes in
turn; compare modes within a round (the machine's speed drifts).

    torchrun --nproc_per_node 2 scripts/bench_ddp_step.py MODEL_DIR [--rows 16] [--length 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import time

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from selfreward.distributed import SharedMemoryAllReduce

MODES = ("alone", "sync", "by_hand", "ddp", "ddp_one_bucket", "ddp_bucket_views", "ddp_shared_memory")


def step_ms(model_dir: str, mode: str, rows: int, length: int, steps: int, warmup: int) -> float:
    torch.manual_seed(dist.get_rank())
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    net = model
    if mode == "ddp":
        net = torch.nn.parallel.DistributedDataParallel(model)
    elif mode == "ddp_one_bucket":
        net = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=100)
    elif mode in ("ddp_bucket_views", "ddp_shared_memory"):
        net = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=100, gradient_as_bucket_view=True)
        if mode == "ddp_shared_memory":
            net.register_comm_hook(None, SharedMemoryAllReduce().hook)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    batch = torch.randint(0, model.config.vocab_size, (rows, length))
    grads = None

    def step():
        nonlocal grads
        net(input_ids=batch, labels=batch).loss.backward()
        if mode == "sync":
            dist.all_reduce(torch.zeros(1))
        elif mode == "by_hand":
            grads = grads or [p.grad for p in model.parameters()]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            torch._foreach_copy_(grads, [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)])
        optimizer.step()
        optimizer.zero_grad(set_to_none=mode != "by_hand")

    for _ in range(warmup):
        step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    mine = (time.perf_counter() - start) / steps * 1000
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    del net, model, optimizer, step
    gc.collect()  # a DDP wrapper left to the end of the process aborts gloo's teardown
    dist.barrier()
    return max(everyone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--rows", type=int, default=16, help="rows a process per step")
    parser.add_argument("--length", type=int, default=60, help="tokens a row")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        for r in range(args.rounds):
            for mode in args.modes:
                ms = step_ms(args.model_dir, mode, args.rows, args.length, args.steps, args.warmup)
                if dist.get_rank() == 0:
                    print(f"round {r + 1} {mode:15s} {ms:7.1f} ms a step ({dist.get_world_size()} processes, "
                          f"{args.rows} rows of {args.length} tokens each)", flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
