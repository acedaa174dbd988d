"""``realsr train``: train a bundled super-resolution model on LR/HR pairs and keep the best checkpoint.

Recipe (BasicSR-style, for EDSR-baseline): random LR patches with their HR patches (:mod:`realsr_tools.train.data`),
dihedral augmentation, L1 loss (plus an optional ``1 - SSIM`` term), Adam (betas 0.9, 0.99), a linear warm-up then
a cosine decay of the learning rate to zero, gradient-norm clipping, and an exponential moving average (EMA) of the
weights that is what gets validated and saved. On CUDA: bf16 autocast, channels_last tensors, batches built by a
background thread into pinned memory and copied asynchronously, optional ``torch.compile``.

Distributed training uses ``torch.distributed`` (DDP) when launched by ``torchrun``: NCCL on CUDA, gloo on CPU.
``batch`` is the global batch, split evenly over the processes; every batch is a pure function of ``(seed, step)``
(see :mod:`realsr_tools.train.data`), so N processes take the same steps on the same patches as one process.

Run folder
----------
``config.json`` (resolved configuration, split, planned schedule), ``log.jsonl`` (one JSON object per log or
validation event), ``last.pt`` (EMA weights plus the full training state under ``"train_state"``), ``best.pt`` (EMA
weights with the best validation PSNR), ``curve.png`` (training loss and validation PSNR). Both checkpoints are
:func:`realsr_tools.models.checkpoint_dict` files that :func:`realsr_tools.models.load_checkpoint` reads with
``weights_only=True``; they are written atomically, so a killed run leaves the previous one intact.

Validation protocol (as BasicSR and ``realsr score``): full-image (or tiled) fp32 inference, output clipped and
rounded to the HR's integer type, PSNR over RGB with ``crop_border = scale``, averaged over validation pairs.
"""

from __future__ import annotations

from .config import TrainConfig, TrainResult
from .loop import run_training
from .step import ema_decay_at, learning_rate
from .validate import upscale, validation_psnr

__all__ = ["TrainConfig", "TrainResult", "ema_decay_at", "learning_rate", "run_training", "upscale",
           "validation_psnr"]
