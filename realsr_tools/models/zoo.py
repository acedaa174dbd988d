"""The bundled model variants: three-line factories registered by name."""

from __future__ import annotations

from . import register_model
from .edsr import EDSR


@register_model("edsr", channels=64, blocks=16, res_scale=1.0, attention=False, skip="bicubic")
def edsr(scale: int, **options) -> EDSR:
    """EDSR-baseline (about 1.5 M parameters at x4): the default reference model."""
    return EDSR(scale, **options)


@register_model("edsr_small", channels=32, blocks=8, res_scale=1.0, attention=False, skip="bicubic")
def edsr_small(scale: int, **options) -> EDSR:
    """A quarter-width EDSR for CPU demos and tests (about 0.2 M parameters)."""
    return EDSR(scale, **options)


@register_model("edsr_ca", channels=64, blocks=16, res_scale=1.0, attention=True, skip="bicubic")
def edsr_ca(scale: int, **options) -> EDSR:
    """EDSR-baseline with RCAN channel attention in every block."""
    return EDSR(scale, **options)


@register_model("edsr_large", channels=128, blocks=24, res_scale=0.1, attention=True, skip="bicubic")
def edsr_large(scale: int, **options) -> EDSR:
    """A wide channel-attention variant for GPU training (about 8 M parameters)."""
    return EDSR(scale, **options)


@register_model("basicsr_edsr", num_feat=64, num_block=16, res_scale=1.0)
def basicsr_edsr(scale: int, **options):
    """EDSR with BasicSR's layer names (EDSR-M defaults); loads BasicSR checkpoints (``realsr score --model``)."""
    from .basicsr import BasicSREDSR

    return BasicSREDSR(scale, **options)


@register_model("basicsr_rcan", num_feat=64, num_group=10, num_block=16, squeeze_factor=16, res_scale=1.0)
def basicsr_rcan(scale: int, **options):
    """RCAN with BasicSR's layer names (the paper's defaults, about 15.6 M parameters at x4)."""
    from .basicsr import BasicSRRCAN

    return BasicSRRCAN(scale, **options)
