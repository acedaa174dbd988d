"""Training throughput of ``realsr train`` in LR patches per second, against an fp32 eager baseline (same process).

Every configuration runs the real training step of :mod:`realsr_tools.train` (forward, L1 loss, backward, gradient
clipping, Adam, EMA update) on batches from the real :class:`realsr_tools.train.data.PatchSampler` (random crops and
dihedral transforms of in-memory uint8 pairs, built by the background prefetch thread on CUDA, copied from pinned
memory), so the figure includes the data pipeline. The pairs are synthetic (smooth random images): throughput does
not depend on content. Needs only torch and numpy besides this repository.

    python benchmarks/bench_train.py --device cuda --seconds 30            # about 3 minutes on one GPU
    python benchmarks/bench_train.py --device cuda --seconds 20 --compile  # adds a torch.compile run
    python benchmarks/bench_train.py --device cpu --seconds 10

The CUDA baseline is fp32 eager, NCHW, with PyTorch's default TF32 convolutions; the contenders add bf16 autocast
and channels_last (the ``realsr train`` defaults on CUDA), a larger batch, and optionally ``torch.compile``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realsr_tools.train.data import CachedPair, PatchSampler  # noqa: E402
from realsr_tools.models import create_model  # noqa: E402
from realsr_tools.train.step import Prefetcher, TrainStep, learning_rate, to_device  # noqa: E402


def synthetic_pairs(count: int, lr_size: int, scale: int, seed: int = 0) -> list[CachedPair]:
    """Smooth random uint8 RGB images (HR) and their block-mean LR."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(count):
        coarse = rng.random((lr_size // 8, lr_size // 8, 3), dtype=np.float32)
        hr = np.kron(coarse, np.ones((8 * scale, 8 * scale, 1), dtype=np.float32))
        hr = (255 * np.clip(hr + 0.05 * rng.standard_normal(hr.shape, dtype=np.float32), 0, 1)).astype(np.uint8)
        lr = hr.reshape(lr_size, scale, lr_size, scale, 3).mean(axis=(1, 3)).round().astype(np.uint8)
        pairs.append(CachedPair(f"synthetic_{i}", lr, hr))
    return pairs


def measure(sampler, *, model_name: str, scale: int, batch: int, device: str, amp: bool, channels_last: bool,
            compile_model: bool, seconds: float, warmup_steps: int = 5) -> float:
    """LR patches per second of the training step over ``seconds`` (after ``warmup_steps`` untimed steps)."""
    torch.manual_seed(0)
    module = create_model(model_name, scale).to(device)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(module).requires_grad_(False)
    optimizer = torch.optim.Adam(module.parameters(), lr=2e-4, betas=(0.9, 0.99))
    model = torch.compile(module) if compile_model else module
    step_fn = TrainStep(model, module, ema, optimizer, amp=amp, grad_clip=1.0, ssim_weight=0.0, ema_decay=0.999)
    cuda = device.startswith("cuda")
    prefetch = Prefetcher(sampler, start=0, depth=4, seed=0, size=batch) if cuda else None
    try:
        def run(step: int):
            data = prefetch.get() if prefetch else sampler.batch(seed=0, step=step, size=batch)
            lr_t, hr_t = to_device(data, device, channels_last=channels_last)
            return step_fn(lr_t, hr_t, step=step, learning_rate=learning_rate(step, peak=2e-4, warmup=100,
                                                                              total=10**6))

        for step in range(warmup_steps):
            loss = run(step)
        loss.item()
        began, step = time.perf_counter(), warmup_steps
        while time.perf_counter() - began < seconds:
            for _ in range(10 if cuda else 1):  # check the clock without synchronising every step
                loss = run(step)
                step += 1
            loss.item()
        elapsed = time.perf_counter() - began
    finally:
        if prefetch:
            prefetch.close()
    if not torch.isfinite(loss):
        raise RuntimeError(f"loss is {loss.item()}")
    return (step - warmup_steps) * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=None, help="timed seconds per configuration "
                        "(default 30 on CUDA, 10 on CPU)")
    parser.add_argument("--model", default="edsr")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--patch", type=int, default=48, help="LR patch side")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="batches for the fast configurations (default 64 128 on CUDA, 16 on CPU)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (adds compile time)")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    seconds = args.seconds or (30.0 if cuda else 10.0)
    batches = args.batch or ([64, 128] if cuda else [16])
    if cuda:
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(args.device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    params = sum(p.numel() for p in create_model(args.model, args.scale).parameters())
    print(f"device: {name}; torch {torch.__version__}; model {args.model} x{args.scale} ({params / 1e6:.2f} M "
          f"parameters); LR patch {args.patch}x{args.patch}; {seconds:g} s per configuration", flush=True)
    sampler = PatchSampler(synthetic_pairs(24, 256, args.scale), scale=args.scale, patch=args.patch)
    baseline_batch = batches[0]
    configs = [("fp32 eager NCHW (baseline)", baseline_batch, False, False, False)]
    if cuda:
        configs += [("bf16 channels_last", b, True, True, False) for b in batches]
        if args.compile:
            configs += [("bf16 channels_last compiled", batches[-1], True, True, True)]
    else:
        configs += [("fp32 channels_last", b, False, True, False) for b in batches]
        if args.compile:
            configs += [("fp32 compiled", batches[-1], False, False, True)]
    baseline = None
    print(f"{'configuration':34s} {'batch':>5s} {'LR patches/s':>13s} {'vs baseline':>11s}", flush=True)
    for label, batch, amp, channels_last, compile_model in configs:
        rate = measure(sampler, model_name=args.model, scale=args.scale, batch=batch, device=args.device, amp=amp,
                       channels_last=channels_last, compile_model=compile_model, seconds=seconds)
        baseline = baseline or rate
        print(f"{label:34s} {batch:5d} {rate:13.1f} {rate / baseline:10.2f}x", flush=True)


if __name__ == "__main__":
    main()
