"""The training loop of ``realsr train``: run-folder handling, resume, the step/validation schedule under a time
budget, checkpoints. The recipe is described in :mod:`realsr_tools.train`."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping


from ..errors import ConfigError, OutputExistsError
from .config import (BEST_NAME, CONFIG_NAME, CURVE_NAME, LAST_NAME, LOG_NAME, PLAN_MIN_SECONDS, PLAN_MIN_STEPS,
                     RESUME_KEYS, TrainConfig, TrainResult)
from .distributed import DistInfo, barrier, broadcast, init_distributed, max_over_ranks
from .runlog import RunLog, plot_curve
from .step import Prefetcher, TrainStep, learning_rate, to_device
from .validate import BicubicBaseline, validation_psnr


# --------------------------------------------------------------------------------------------- pure helpers


# --------------------------------------------------------------------------------------------- the step


# --------------------------------------------------------------------------------------------- the stage


def _atomic_save(obj: Any, path: Path) -> None:
    import torch

    from ..imaging import atomic_output

    with atomic_output(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError:  # torch reports a full disk as "unexpected pos ..."; say what it is
            from ..pipeline.output import check_space

            check_space(path.parent, path)
            raise


def _load_split(config: TrainConfig):
    """Open the sources, split off validation pairs and decode everything: (scale, train, val, info)."""
    from .data import load_pair, split_validation
    from ..pipeline.pairs import infer_scale, open_pairs

    source = open_pairs(config.source, scale=config.scale)
    if not source.pairs:
        raise ConfigError(f"{config.source}: no usable pairs" + (f" at x{config.scale}" if config.scale else ""))
    scale = config.scale or source.one_scale()
    if scale is None:
        from ..imaging import read_pixels

        first = source.pairs[0]
        scale = infer_scale(read_pixels(first.hr).shape, read_pixels(first.lr).shape, hr=first.hr, lr=first.lr)
        if scale not in (2, 3, 4):
            raise ConfigError(f"{first.hr}: the pairs are x{scale}; realsr trains x2, x3 and x4 models")
    if config.val is None:
        train_ids, val_ids = split_validation([p.id for p in source.pairs], fraction=config.val_fraction)
        by_id = {p.id: p for p in source.pairs}
        train_refs, val_refs = [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]
    else:
        train_refs = source.pairs
        val_refs = open_pairs(config.val, scale=scale).pairs
        if not val_refs:
            raise ConfigError(f"{config.val}: no usable validation pairs at x{scale}")
    train = [load_pair(p, scale=scale) for p in train_refs]
    val = [load_pair(p, scale=scale) for p in val_refs]
    info = {"source_kind": source.kind, "train_ids": [p.id for p in train], "val_ids": [p.id for p in val],
            "cached_mb": round(sum(p.nbytes for p in train + val) / 2**20, 1)}
    if source.manifest is not None:
        from ..pipeline.manifest import file_sha256

        info["upstream_manifest_sha256"] = file_sha256(source.manifest.path)
    return scale, train, val, info


def _prepare_run_dir(config: TrainConfig) -> None:
    out = config.out
    ours = [out / n for n in (CONFIG_NAME, LOG_NAME, LAST_NAME, BEST_NAME, CURVE_NAME)]
    checkpoints = [out / LAST_NAME, out / BEST_NAME]
    if config.resume:
        if not (out / LAST_NAME).is_file():
            started = any(p.exists() for p in ours)
            raise ConfigError(f"{out}: no {LAST_NAME} to resume from" + (
                " (the run there stopped before its first checkpoint)" if started else "")
                + "; start the run without --resume")
        return
    if not any(p.exists() for p in checkpoints):
        # A run killed during start-up left only its config and log: nothing to lose, start it over.
        for p in ours:
            p.unlink(missing_ok=True)
    if any(p.exists() for p in ours):
        if not config.overwrite:
            raise OutputExistsError(f"{out}: already holds a training run; pass --resume to continue it or "
                                    "--overwrite to start over")
        for p in ours:
            p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _check_resume_config(config: TrainConfig, saved: Mapping[str, Any]) -> None:
    current = config.to_dict()
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

    def same(key: str) -> bool:
        if key in ("source", "val") and current[key] is not None and saved.get(key) is not None:
            return os.path.realpath(current[key]) == os.path.realpath(saved[key])  # ./data, data/, /abs/data
        # an option added after the run was saved counts with its default (what that run used)
        return json.loads(json.dumps(current[key])) == saved.get(key, defaults.get(key))

    changed = [f"{k} ({saved.get(k)!r} -> {current[k]!r})" for k in RESUME_KEYS if not same(k)]
    if changed:
        raise ConfigError(f"{config.out / LAST_NAME}: --resume needs the options of the run it continues; changed: "
                          f"{', '.join(changed)}")


def run_training(config: TrainConfig, *, show_progress: bool = True,
                 say: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``config.model`` on ``config.source`` into ``config.out`` (see the module docstring).

    Launched by ``torchrun`` (``WORLD_SIZE > 1``), every process calls this with the same config; rank 0 validates,
    logs and writes files. Raises :class:`~realsr_tools.errors.RealsrError` subclasses for unusable input.
    ``say`` receives one line per start-up phase (reading the pairs, the first validation, timing, the plan).
    """
    import torch

    started = time.monotonic()
    deadline = started + config.max_minutes * 60 if config.max_minutes else None
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but PyTorch sees no CUDA device; use --device cpu")
    dist_info = init_distributed(use_cuda)
    threads = torch.get_num_threads()  # a CPU run may drop to one thread (_pick_threads); the caller gets it back
    from contextlib import nullcontext

    from ..pipeline.output import output_lock

    try:
        with output_lock(config.out) if dist_info.main else nullcontext():  # rank 0 alone writes the run folder
            return _train(config, dist_info, use_cuda, started, deadline, show_progress,
                          _Phases(say if dist_info.main else None, started))
    finally:
        torch.set_num_threads(threads)
        if dist_info.initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


class _Phases:
    """Start-up messages with the time since the call started (silent when ``say`` is None)."""

    def __init__(self, say: Callable[[str], None] | None, started: float) -> None:
        self.say, self.started = say, started

    def __call__(self, text: str) -> None:
        if self.say is not None:
            self.say(f"[{time.monotonic() - self.started:5.1f} s] {text}")


def _train(config: TrainConfig, dist_info: DistInfo, use_cuda: bool, started: float, deadline: float | None,
           show_progress: bool, phase: _Phases) -> TrainResult:
    import torch

    from .data import PatchSampler
    from ..models import checkpoint_dict, create_model, model_options

    if config.batch % dist_info.world:
        raise ConfigError(f"--batch {config.batch} does not split evenly over {dist_info.world} processes")
    device = torch.device(f"cuda:{dist_info.local_rank}" if use_cuda else "cpu")
    if not use_cuda and dist_info.world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if dist_info.main:
        _prepare_run_dir(config)
    barrier(dist_info)
    resume_state = None
    if config.resume:
        resume_state = torch.load(config.out / LAST_NAME, map_location="cpu", weights_only=True)
        _check_resume_config(config, resume_state["train_state"]["config"])

    phase(f"reading and decoding the pairs of {config.source} ...")
    scale, train_pairs, val_pairs, split_info = _load_split(config)
    phase(f"{len(train_pairs)} training and {len(val_pairs)} validation pairs at x{scale} "
          f"({split_info['cached_mb']:g} MB in memory); building the model on {device} ...")
    sampler = PatchSampler(train_pairs, scale=scale, patch=config.patch, augment=config.augment,
                           sharpness=config.lr_sharpness)
    model_name, options, init_weights = config.model, model_options(config.model, **config.model_options), None
    if resume_state is not None:
        model_name, options = resume_state["model"], resume_state["options"]
    elif config.init is not None:
        from ..models import load_checkpoint

        loaded = load_checkpoint(config.init, scale=scale)  # a scale or format mismatch is one ConfigError line
        model_name, options, init_weights = loaded.name, loaded.options, loaded.model.state_dict()
    torch.manual_seed(config.seed)
    module = create_model(model_name, scale, **options)
    if init_weights is not None:
        module.load_state_dict(init_weights)
    module = module.to(device)
    count = sum(p.numel() for p in module.parameters())
    origin = f", weights from {config.init}" if init_weights is not None else ""
    phase(f"model {model_name} ({count / 1e6:.2f} M parameters{origin}), batch {config.batch}, "
          f"LR patch {config.patch}, peak learning rate {config.lr:g}")
    channels_last = use_cuda
    if use_cuda:
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: let cuDNN pick the fastest kernels
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(module).eval().requires_grad_(False)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr, betas=(0.9, 0.99))
    model = module
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(module, device_ids=[dist_info.local_rank] if use_cuda else None)
    if config.compile:
        model = torch.compile(model)
    step_fn = TrainStep(model, module, ema, optimizer, amp=use_cuda, grad_clip=config.grad_clip,
                        ssim_weight=config.ssim_weight, ema_decay=config.ema_decay)
    batch_args = dict(seed=config.seed, size=config.batch, rank=dist_info.rank, world=dist_info.world)

    step, total, best_psnr, best_step, elapsed_before, val_seconds = 0, None, -math.inf, -1, 0.0, 0.0
    if resume_state is not None:
        state = resume_state["train_state"]
        module.load_state_dict(state["model"])
        ema.load_state_dict(resume_state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, total = int(state["step"]), int(state["total_steps"])
        best_psnr, best_step = float(state["best_psnr"]), int(state["best_step"])
        elapsed_before, val_seconds = float(state["elapsed_s"]), float(state["val_seconds"])
    log = RunLog(config.out / LOG_NAME, enabled=dist_info.main, keep_until=step if resume_state is not None else None)

    def validate() -> tuple[float, float]:
        began = time.monotonic()
        value = validation_psnr(ema, val_pairs, scale=scale, device=str(device), tile=config.val_tile) \
            if dist_info.main else 0.0
        return value, time.monotonic() - began

    phase(f"validating bicubic and the untrained model on {len(val_pairs)} pair(s) ...")
    bicubic_psnr = validation_psnr(BicubicBaseline(scale), val_pairs, scale=scale, device="cpu", tile=config.val_tile) \
        if dist_info.main else 0.0
    if resume_state is None:
        psnr0, val_seconds = validate()
        val_seconds = broadcast(val_seconds, dist_info, device)
        log.write(kind="val", step=0, psnr=psnr0, bicubic_psnr=bicubic_psnr)
        if dist_info.main:
            best_psnr, best_step = psnr0, 0

    if total is None:
        total = config.steps
        if deadline is not None:
            phase("timing a few training steps to plan the schedule ...")
            seconds_per_step = _time_steps(step_fn, sampler, batch_args, device, channels_last, config,
                                           dist_info)
            if _may_pick_threads(use_cuda, dist_info):
                seconds_per_step = _pick_threads(seconds_per_step, phase, lambda: _time_steps(
                    step_fn, sampler, batch_args, device, channels_last, config, dist_info))
            seconds_per_step = max_over_ranks(seconds_per_step, dist_info, device)
            total, val_every = _plan_steps(config, remaining=deadline - time.monotonic(),
                                           seconds_per_step=seconds_per_step, val_seconds=val_seconds)
            total, val_every = int(broadcast(total, dist_info, device)), int(broadcast(val_every, dist_info, device))
        else:
            val_every = config.val_every or max(1, math.ceil(total / 10))
        warmup = config.warmup if config.warmup is not None else min(1000, total // 50)
        phase(f"plan: {total} steps" + (f" ({seconds_per_step:.2f} s each) to end within --max-minutes "
                                        f"{config.max_minutes:g}" if deadline is not None else "") +
              f", validation every {val_every} steps, warm-up {warmup}; training ...")
    else:
        val_every, warmup = int(resume_state["train_state"]["val_every"]), int(resume_state["train_state"]["warmup"])
    if dist_info.main and resume_state is None:
        resolved = {"config": config.to_dict(), "scale": scale, "model": model_name, "model_options": options,
                    "total_steps": total,
                    "warmup": warmup, "val_every": val_every, "world_size": dist_info.world,
                    "torch_threads": torch.get_num_threads(),
                    "device": str(device), "torch": torch.__version__, **split_info}
        from ..pipeline.manifest import atomic_write_text

        atomic_write_text(config.out / CONFIG_NAME, json.dumps(resolved, indent=2) + "\n")

    def save(current_psnr: float, is_best: bool) -> None:
        meta = {"step": step, "total_steps": total, "val_psnr": current_psnr, "bicubic_psnr": bicubic_psnr,
                "model_options": options, "patch": config.patch, "batch": config.batch, "source": str(config.source)}
        ckpt = checkpoint_dict(ema, name=model_name, scale=scale, options=options, meta=meta,
                               state_dict={k: v.detach().cpu() for k, v in ema.state_dict().items()})
        if is_best:
            _atomic_save(ckpt, config.out / BEST_NAME)
        ckpt["train_state"] = {
            "model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
            "optimizer": optimizer.state_dict(), "step": step, "total_steps": total, "val_every": val_every,
            "warmup": warmup, "best_psnr": best_psnr, "best_step": best_step, "val_seconds": val_seconds,
            "torch_rng": torch.get_rng_state(),
            "elapsed_s": elapsed_before + time.monotonic() - started, "config": config.to_dict(),
        }
        _atomic_save(ckpt, config.out / LAST_NAME)

    def record_validation(current_psnr: float) -> None:
        """Log a validation and save last.pt, and best.pt when it improved (files on rank 0 only)."""
        nonlocal best_psnr, best_step
        log.write(kind="val", step=step, psnr=current_psnr, bicubic_psnr=bicubic_psnr)
        if dist_info.main:
            improved = current_psnr > best_psnr
            if improved:
                best_psnr, best_step = current_psnr, step
            save(current_psnr, is_best=improved)

    if dist_info.main and resume_state is None:
        save(best_psnr, is_best=True)
    prefetch = Prefetcher(sampler, start=step, depth=config.prefetch, **batch_args) if use_cuda else None
    progress = _progress(show_progress and dist_info.main, total)
    loss_sum = torch.zeros((), device=device)
    loss_count, last_log, last_log_step, stopped_early = 0, time.monotonic(), step, False
    loop_started, first_step, val_time = time.monotonic(), step, 0.0
    last_psnr = best_psnr
    try:
        task = progress.add_task("train", total=total, completed=step, loss=float("nan"), speed=0.0) \
            if progress else None
        while step < total:
            batch = prefetch.get() if prefetch else sampler.batch(step=step, **batch_args)
            lr_t, hr_t = to_device(batch, device, channels_last=channels_last)
            loss_sum += step_fn(lr_t, hr_t, step=step,
                                learning_rate=learning_rate(step, peak=config.lr, warmup=warmup, total=total))
            loss_count += 1
            step += 1
            stop = False
            if deadline is not None and step < total and (dist_info.world == 1 or step % 10 == 0):
                # re-plan from the measured throughput (validation excluded), so the schedule follows the machine
                now = time.monotonic()
                seconds_per_step = (now - loop_started - val_time) / (step - first_step)
                planned = _replan(config, step=step, total=total, remaining=deadline - now, val_every=val_every,
                                  seconds_per_step=seconds_per_step, val_seconds=val_seconds,
                                  measured_steps=step - first_step)
                total = int(broadcast(planned, dist_info, device))
                stop = step >= total
            if progress:
                progress.update(task, completed=step, total=total)
            if stop or step == 1 or step % config.log_every == 0 or step % val_every == 0 \
                    or step == total:
                if dist_info.world > 1:
                    import torch.distributed as dist

                    dist.all_reduce(loss_sum)
                    loss_sum /= dist_info.world
                mean_loss = float(loss_sum.item()) / loss_count
                now = time.monotonic()
                speed = (step - last_log_step) / max(now - last_log, 1e-9)
                log.write(kind="train", step=step, loss=mean_loss,
                          lr=learning_rate(step - 1, peak=config.lr, warmup=warmup, total=total),
                          steps_per_s=speed, patches_per_s=speed * config.batch,
                          elapsed_s=elapsed_before + now - started)
                if progress:
                    progress.update(task, loss=mean_loss, speed=speed)
                loss_sum.zero_()
                loss_count, last_log, last_log_step = 0, now, step
            if stop:
                stopped_early = True
                break
            if step % val_every == 0 and step < total:
                began = time.monotonic()
                last_psnr, seconds = validate()
                val_seconds = max(val_seconds, broadcast(seconds, dist_info, device))
                record_validation(last_psnr)
                barrier(dist_info)
                last_log = time.monotonic()  # throughput excludes validation and saving
                val_time += last_log - began
    finally:
        if prefetch:
            prefetch.close()
        if progress:
            progress.stop()
    last_psnr, _ = validate()
    record_validation(last_psnr)
    if dist_info.main:
        plot_curve(log.events, config.out / CURVE_NAME)
    barrier(dist_info)
    loop_seconds = time.monotonic() - loop_started
    return TrainResult(
        run_dir=config.out, steps=step, planned_steps=total, best_psnr=best_psnr, best_step=best_step,
        bicubic_psnr=bicubic_psnr, last_psnr=last_psnr, seconds=elapsed_before + time.monotonic() - started,
        patches_per_second=(step - first_step) * config.batch / max(loop_seconds, 1e-9), stopped_early=stopped_early,
        device=str(device), world_size=dist_info.world, rank=dist_info.rank, train_pairs=len(train_pairs),
        val_pairs=len(val_pairs))


def _time_steps(step_fn: TrainStep, sampler, batch_args, device, channels_last: bool, config: TrainConfig,
                dist_info: DistInfo) -> float:
    """Seconds per optimizer step, measured on real batches; the model, EMA and optimizer are restored after.

    One untimed step (allocator, cuDNN autotuning, ``torch.compile``), one step to size the measurement, then
    enough steps for ``PLAN_MIN_SECONDS`` (at least ``PLAN_MIN_STEPS``); every process runs the same count.
    """
    saved = copy.deepcopy((step_fn.module.state_dict(), step_fn.ema.state_dict(), step_fn.optimizer.state_dict()))

    def run(first: int, count: int) -> float:
        began = time.monotonic()
        for i in range(first, first + count):
            lr_t, hr_t = to_device(sampler.batch(step=i, **batch_args), device, channels_last=channels_last)
            loss = step_fn(lr_t, hr_t, step=i, learning_rate=config.lr)
        loss.item()  # waits for the device
        return (time.monotonic() - began) / count

    run(0, 1)
    first = run(1, 1)
    count = int(broadcast(max(PLAN_MIN_STEPS, min(50, math.ceil(PLAN_MIN_SECONDS / first))), dist_info, device))
    seconds = run(2, count)
    module_state, ema_state, optimizer_state = saved
    step_fn.module.load_state_dict(module_state)
    step_fn.ema.load_state_dict(ema_state)
    step_fn.optimizer.load_state_dict(optimizer_state)
    return seconds


def _may_pick_threads(use_cuda: bool, dist_info: DistInfo) -> bool:
    """One CPU process whose thread count nobody set (``OMP_NUM_THREADS``) and that has more than one thread."""
    import torch

    return not use_cuda and dist_info.world == 1 and "OMP_NUM_THREADS" not in os.environ \
        and torch.get_num_threads() > 1


def _pick_threads(seconds: float, phase, measure: Callable[[], float]) -> float:
    """Keep torch's thread count or drop to one, whichever trains faster here and now; returns s/step.

    On a quiet 2-core machine two threads train about twice as fast as one; on a busy one OpenMP's spinning
    threads made a step 4-6x slower than a single thread (0.49-0.55 against 2.3-3.1 s for the CPU default model,
    load average 12). The choice is measured on real steps, not guessed, and said.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    single = measure()
    if single < seconds:
        phase(f"one intra-op thread: {single:.2f} s/step against {seconds:.2f} s with {threads} (a busy machine); "
              "training on one")
        return single
    torch.set_num_threads(threads)
    phase(f"{threads} intra-op threads: {seconds:.2f} s/step against {single:.2f} s with one; keeping {threads}")
    return seconds


def _plan_steps(config: TrainConfig, *, remaining: float, seconds_per_step: float,
                val_seconds: float) -> tuple[int, int]:
    """``(steps, val_every)`` that fit ``remaining`` seconds, steps capped by ``config.steps``.

    The time left after reserving the final validation and a margin (``0.95 * remaining - 2 * t_val``) holds
    ``steps * t_step`` plus the intermediate validations: every ``config.val_every`` steps if set, otherwise as many
    as fit in a tenth of that time (at most 9, so ten with the final one).
    """
    budget = 0.95 * remaining - 2 * val_seconds
    if config.val_every:
        total = budget / (seconds_per_step + val_seconds / config.val_every)
        middle = None
    else:
        middle = int(min(9, 0.1 * budget / val_seconds)) if val_seconds > 0 else 9
        total = (budget - middle * val_seconds) / seconds_per_step
    total = int(min(config.steps, total))
    if total < 1:
        raise ConfigError(f"--max-minutes {config.max_minutes:g} leaves no time to train: a step takes "
                          f"{seconds_per_step:.2f} s and a validation {val_seconds:.1f} s; allow more minutes or "
                          "use a smaller --batch/--patch/model")
    return total, config.val_every or max(1, math.ceil(total / (middle + 1)))


def _replan(config: TrainConfig, *, step: int, total: int, remaining: float, val_every: int,
            seconds_per_step: float, val_seconds: float, measured_steps: int) -> int:
    """The planned step count updated from the loop's own throughput, once ``measured_steps >= 5``.

    The steps still to come and their validations (every ``val_every``) must fit in 97 % of the ``remaining``
    seconds less the final validation and a one-validation margin; a result ``<= step`` ends the run now.
    """
    budget = 0.97 * remaining - 2 * val_seconds
    if budget <= seconds_per_step:
        return step
    if measured_steps < 5:
        return total
    more = int(budget / (seconds_per_step + val_seconds / val_every))
    return max(step, min(config.steps, step + more))


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from ..pipeline.progress import console

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[speed]:.2f} it/s"),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)
    progress.start()
    return progress
