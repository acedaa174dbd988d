from __future__ import annotations

import pytest
import torch

from realsr_tools.errors import ConfigError
from realsr_tools.models import checkpoint_dict, create_model, list_models, load_checkpoint


def test_registry_and_defaults():
    assert {"edsr", "edsr_small", "edsr_ca", "edsr_large"} <= set(list_models())
    model = create_model("edsr", 4, channels=None)  # None keeps the default
    assert 1.3e6 < sum(p.numel() for p in model.parameters()) < 1.7e6
    with pytest.raises(ConfigError, match="known models: .*edsr"):
        create_model("srcnn", 4)
    with pytest.raises(ConfigError, match="no option"):
        create_model("edsr", 4, depth=3)
    with pytest.raises(ConfigError, match="scale"):
        create_model("edsr", 5)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_is_scale_times_input_and_starts_near_bicubic(scale):
    torch.manual_seed(0)
    model = create_model("edsr_small", scale).eval()
    lr = torch.rand(2, 3, 10, 14)
    with torch.no_grad():
        sr = model(lr)
    assert sr.shape == (2, 3, 10 * scale, 14 * scale)
    # An untrained model is the bicubic upscale of its input (its last convolution starts at zero): compared with
    # OpenCV's INTER_CUBIC (the same a = -0.75 kernel, an implementation realsr does not call), every pixel.
    import cv2
    import numpy as np

    reference = np.stack([cv2.resize(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), (14 * scale, 10 * scale),
                                     interpolation=cv2.INTER_CUBIC) for image in lr])
    np.testing.assert_allclose(sr.permute(0, 2, 3, 1).numpy(), reference, rtol=0, atol=1e-5)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = create_model("edsr_small", 3)
    path = tmp_path / "m.pt"
    torch.save(checkpoint_dict(model, name="edsr_small", scale=3, options={}, meta={"step": 7}), path)
    loaded = load_checkpoint(path, scale=3)
    assert loaded.name == "edsr_small" and loaded.meta == {"step": 7}
    for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="x3, but x4"):
        load_checkpoint(path, scale=4)
    with pytest.raises(ConfigError, match="not 'edsr'"):
        load_checkpoint(path, name="edsr")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
