from __future__ import annotations

import cv2
import numpy as np
import pytest

from realsr_tools.train.data import (SHARPNESS_SIGMA, CachedPair, PatchSampler, dihedral, load_pair, sharpen_patch,
                                     split_validation)
from realsr_tools.errors import ConfigError
from realsr_tools.imaging import read_pixels
from realsr_tools.pipeline.pairs import PairRef


@pytest.fixture(scope="module")
def area_pairs(data_dir):
    """Real HR photos with LR made by 4x4 block averaging: a known ground truth for patch alignment."""
    pairs = []
    for name in ("pypi_scikit-image_coffee.png", "kodak_kodim03.png"):
        hr = read_pixels(data_dir / "photos" / name)
        h, w = hr.shape[0] // 4 * 4, hr.shape[1] // 4 * 4
        hr = np.ascontiguousarray(hr[:h, :w])
        lr = cv2.resize(hr, (w // 4, h // 4), interpolation=cv2.INTER_AREA)  # exact 4x4 means, rounded
        pairs.append(CachedPair(name, lr, hr))
    return pairs


def test_split_is_deterministic_order_free_and_sized():
    ids = [f"pair_{i:03d}" for i in range(93)]
    train, val = split_validation(ids, fraction=0.1)
    assert len(val) == 9 and len(train) == 84 and not set(train) & set(val)
    assert split_validation(ids[::-1], fraction=0.1)[1] == sorted(val, key=ids[::-1].index)
    # adding pairs keeps most of the old validation pairs where they were
    assert len(set(split_validation(ids + [f"new_{i}" for i in range(10)], fraction=0.1)[1]) & set(val)) >= 7
    assert [len(part) for part in split_validation(["a", "b"], fraction=0.01)] == [1, 1]
    assert [len(part) for part in split_validation(["a", "b", "c"], fraction=0.99)] == [1, 2]
    with pytest.raises(ConfigError, match="--val SOURCE"):
        split_validation(["a"], fraction=0.5)
    with pytest.raises(ConfigError, match="unique"):
        split_validation(["a", "a", "b"], fraction=0.5)


def test_dihedral_is_the_group_of_eight():
    image = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    views = [dihedral(image, k) for k in range(8)]
    assert len({(v.shape, v.tobytes()) for v in map(np.ascontiguousarray, views)}) == 8
    assert np.array_equal(dihedral(image, 1), np.rot90(image))
    assert np.array_equal(dihedral(image, 4), image[:, ::-1])


def test_patches_stay_aligned_under_every_transform(area_pairs):
    sampler = PatchSampler(area_pairs, scale=4, patch=12)
    seen = set()
    for step in range(3):
        batch = sampler.batch(seed=1, step=step, size=32)
        assert batch.lr.shape == (32, 3, 12, 12) and batch.hr.shape == (32, 3, 48, 48)
        assert batch.lr.dtype == np.uint8
        for lr, hr in zip(batch.lr, batch.hr):
            means = hr.reshape(3, 12, 4, 12, 4).astype(np.float64).mean(axis=(2, 4))
            assert np.abs(means - lr).max() <= 0.5 + 1e-9  # LR pixel = rounded mean of its 4x4 HR block
            seen.add(lr.tobytes())
    assert len(seen) == 96  # no two draws identical


def test_batches_are_pure_in_seed_and_step_and_split_over_ranks(area_pairs):
    sampler = PatchSampler(area_pairs, scale=4, patch=16)
    a = sampler.batch(seed=3, step=7, size=8)
    b = sampler.batch(seed=3, step=7, size=8)
    assert np.array_equal(a.lr, b.lr) and np.array_equal(a.hr, b.hr)
    assert not np.array_equal(a.lr, sampler.batch(seed=3, step=8, size=8).lr)
    assert not np.array_equal(a.lr, sampler.batch(seed=4, step=7, size=8).lr)
    halves = [sampler.batch(seed=3, step=7, size=8, rank=r, world=2) for r in (0, 1)]
    assert np.array_equal(np.concatenate([h.lr for h in halves]), a.lr)
    assert np.array_equal(np.concatenate([h.hr for h in halves]), a.hr)
    # without augmentation every patch is an upright crop at its place
    plain = PatchSampler(area_pairs[:1], scale=4, patch=16, augment=False).batch(seed=0, step=0, size=4)
    lr_image = area_pairs[0].lr.transpose(2, 0, 1)
    for patch in plain.lr:
        hits = [(y, x) for y in range(lr_image.shape[1] - 15) for x in range(lr_image.shape[2] - 15)
                if np.array_equal(lr_image[:, y:y + 16, x:x + 16], patch)]
        assert hits


def _detail(patch: np.ndarray) -> float:
    """Mean absolute difference between a patch and its sigma-1 blur (its high-frequency energy), interior only."""
    x = patch.astype(np.float32)
    return float(np.abs(x - cv2.GaussianBlur(x, (0, 0), SHARPNESS_SIGMA))[3:-3, 3:-3].mean())


def test_sharpen_patch_is_an_unsharp_mask_with_image_context(area_pairs):
    image = area_pairs[1].lr  # a real photo (kodim03), uint8
    y, x, p = 40, 50, 24
    window = image[y:y + p, x:x + p]
    assert np.array_equal(sharpen_patch(image, y, x, p, 0.0), window)
    sharper, softer = sharpen_patch(image, y, x, p, 0.8), sharpen_patch(image, y, x, p, -0.8)
    assert sharper.dtype == np.uint8 and sharper.shape == window.shape
    assert _detail(sharper) > 1.3 * _detail(window) and _detail(softer) < 0.7 * _detail(window)
    # computed on the image around the window, not on the window alone: equal to filtering the whole image
    whole = image.astype(np.float32)
    expected = whole + 0.8 * (whole - cv2.GaussianBlur(whole, (0, 0), SHARPNESS_SIGMA,
                                                         borderType=cv2.BORDER_REFLECT_101))
    expected = np.clip(np.rint(expected), 0, 255)[y:y + p, x:x + p]
    assert np.abs(sharper.astype(np.float64) - expected).max() <= 1  # a 4-pixel margin, not the whole image
    # at the image corner the reflection stands in for the missing context
    assert sharpen_patch(image, 0, 0, p, 0.8).shape == (p, p, 3)


def test_sharpness_jitter_changes_only_the_lr_and_only_when_asked(area_pairs):
    plain = PatchSampler(area_pairs, scale=4, patch=16)
    jittered = PatchSampler(area_pairs, scale=4, patch=16, sharpness=0.5)
    off = PatchSampler(area_pairs, scale=4, patch=16, sharpness=0.0)
    a, b = plain.batch(seed=2, step=5, size=16), jittered.batch(seed=2, step=5, size=16)
    assert np.array_equal(off.batch(seed=2, step=5, size=16).lr, a.lr)  # off: the batches of earlier versions
    assert np.array_equal(a.hr, b.hr)  # same places, same transforms, the HR untouched
    changed = [not np.array_equal(x, y) for x, y in zip(a.lr, b.lr)]
    assert sum(changed) >= 12  # most patches moved (a draw near 0 may leave one unchanged)
    assert np.abs(a.lr.astype(int) - b.lr.astype(int)).max() <= 255 and b.lr.dtype == np.uint8
    again = jittered.batch(seed=2, step=5, size=16)
    assert np.array_equal(again.lr, b.lr)  # still a pure function of (seed, step)
    halves = [jittered.batch(seed=2, step=5, size=16, rank=r, world=2) for r in (0, 1)]
    assert np.array_equal(np.concatenate([h.lr for h in halves]), b.lr)
    # both directions occur: some patches lose detail, some gain it
    ratios = [_detail(y.transpose(1, 2, 0)) / max(_detail(x.transpose(1, 2, 0)), 1e-6) for x, y in zip(a.lr, b.lr)]
    assert min(ratios) < 0.95 and max(ratios) > 1.05
    with pytest.raises(ConfigError, match="--lr-sharpness"):
        PatchSampler(area_pairs, scale=4, patch=16, sharpness=-0.1)


def test_invalid_inputs(area_pairs, data_dir, tmp_path):
    with pytest.raises(ConfigError, match="smaller --patch"):
        PatchSampler(area_pairs, scale=4, patch=500)
    wide = CachedPair("wide", area_pairs[0].lr.astype(np.uint16), area_pairs[0].hr.astype(np.uint16))
    with pytest.raises(ConfigError, match="bit depths"):
        PatchSampler([area_pairs[0], wide], scale=4, patch=16)
    with pytest.raises(ConfigError, match="split evenly"):
        PatchSampler(area_pairs, scale=4, patch=16).batch(seed=0, step=0, size=5, world=2)
    pairs = data_dir / "pairs" / "drealsr_x4"
    name = sorted((pairs / "HR").iterdir())[0].name
    ref = PairRef(id="x", lr=pairs / "LR" / name, hr=pairs / "HR" / name)
    loaded = load_pair(ref, scale=4)
    assert loaded.hr.shape[:2] == (4 * loaded.lr.shape[0], 4 * loaded.lr.shape[1])
    with pytest.raises(ConfigError, match="at scale 3 needs"):
        load_pair(ref, scale=3)
