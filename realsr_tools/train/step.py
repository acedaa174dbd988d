"""One optimisation step and its schedule: learning rate, EMA decay, losses, batches onto the device."""

from __future__ import annotations

import math
import queue
import threading

import numpy as np


def learning_rate(step: int, *, peak: float, warmup: int, total: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up to ``peak``, then cosine decay to 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay used after optimizer step ``step``: ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1 + step) / (10 + step))


def ssim_loss(sr, hr):
    """``1 - SSIM`` of NCHW tensors in [0, 1] (11x11 Gaussian, sigma 1.5, per channel, valid region), differentiable."""
    import torch
    import torch.nn.functional as F

    from ..metrics import SSIM_K1, SSIM_K2, SSIM_RADIUS, SSIM_SIGMA

    x = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=sr.dtype, device=sr.device)
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(sr.shape[1], 1, -1, -1)

    def blur(a):
        return F.conv2d(a, window, groups=a.shape[1])

    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_x, mu_y = blur(sr), blur(hr)
    var_x = blur(sr * sr) - mu_x**2
    var_y = blur(hr * hr) - mu_y**2
    cov = blur(sr * hr) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return 1 - ssim_map.mean()


class TrainStep:
    """One optimizer step of the recipe on a batch already on the device; shared by training and the benchmark.

    ``model`` is what runs the forward pass (possibly DDP-wrapped or compiled); ``module`` the plain module whose
    parameters it updates; ``ema`` a copy of ``module`` holding the moving average. ``__call__`` returns the loss as
    a 0-d tensor without synchronising with the device.
    """

    def __init__(self, model, module, ema, optimizer, *, amp: bool, grad_clip: float, ssim_weight: float,
                 ema_decay: float) -> None:
        self.model, self.module, self.ema, self.optimizer = model, module, ema, optimizer
        self.amp, self.grad_clip, self.ssim_weight, self.ema_decay = amp, grad_clip, ssim_weight, ema_decay
        self._params = [p for p in module.parameters()]
        self._ema_params = [p for p in ema.parameters()]

    def __call__(self, lr, hr, *, step: int, learning_rate: float):
        import contextlib

        import torch

        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        with autocast:
            sr = self.model(lr)
        sr = sr.float()
        loss = (sr - hr).abs().mean()
        if self.ssim_weight:
            loss = loss + self.ssim_weight * ssim_loss(sr, hr)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip, foreach=True)
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._ema_params, self._params, 1.0 - ema_decay_at(step, self.ema_decay))
        return loss.detach()


def host_tensors(batch, *, pin: bool):
    """A numpy :class:`~realsr_tools.train.data.Batch` as host tensors ``(lr, hr, peak)``, pinned if ``pin``.

    uint8 stays uint8 (a quarter of the float bytes travel to the device, converted there); uint16, which has few
    torch kernels, becomes float32 here. The NHWC memory of the batch makes the NCHW tensors channels_last.
    """
    import torch

    peak = 255.0 if batch.lr.dtype == np.uint8 else 65535.0
    out = []
    for array in (batch.lr, batch.hr):
        tensor = torch.from_numpy(array.astype(np.float32) if array.dtype == np.uint16 else array)
        out.append(tensor.pin_memory() if pin else tensor)
    return out[0], out[1], peak


def to_device(batch, device, *, channels_last: bool):
    """A batch (numpy :class:`~realsr_tools.train.data.Batch` or :func:`host_tensors` output) as float32 [0, 1]
    tensors on ``device``, copied asynchronously from pinned memory on CUDA."""
    import torch

    lr, hr, peak = host_tensors(batch, pin=False) if hasattr(batch, "lr") else batch
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return tuple(t.to(device, non_blocking=True).float().mul_(1.0 / peak).contiguous(memory_format=memory_format)
                 for t in (lr, hr))


class Prefetcher:
    """Background thread producing the pinned host batches of steps ``start, start + 1, ...`` into a bounded queue."""

    def __init__(self, sampler, *, start: int, depth: int, pin: bool = True, **batch_args) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._pin = pin
        self._thread = threading.Thread(target=self._run, args=(sampler, start, batch_args), daemon=True)
        self._thread.start()

    def _run(self, sampler, step, batch_args) -> None:
        while not self._stop.is_set():
            try:
                item = host_tensors(sampler.batch(step=step, **batch_args), pin=self._pin)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            step += 1

    def get(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
