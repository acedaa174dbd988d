"""``realsr demo``: the whole pipeline on the bundled sample photographs, in a few minutes on a laptop CPU.

The bundled photographs (``realsr_tools/sample_data``, CC0 / public domain) become simulated multi-focal capture
scenes with known ground truth (:mod:`realsr_tools.simulate`). Four scenes are the training set and one scene,
never seen in training, is the test set. The demo then runs every stage exactly as a user would: inspect, align,
crop, wash, train (a short CPU schedule), and scores the model against bicubic on the test scene.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from ..pipeline.output import holds_output

DEMO_SCALE = 2
TEST_PHOTO = "coffee.jpg"  # the held-out scene
# The demo's own record in --out: which folders it writes there. ``--overwrite`` deletes only the folders an earlier
# demo's record lists, never anything else in --out.
DEMO_RECORD = "realsr-demo.json"
OUTPUTS = ("captures", "test_captures", "aligned", "test_aligned", "patches", "washed", "run", "scores",
           "bicubic_scores")


@dataclass(frozen=True)
class DemoResult:
    out_dir: Path
    outputs: dict[str, Path]
    model_psnr: float
    bicubic_psnr: float
    model_ssim: float
    bicubic_ssim: float
    seconds: float
    refused: tuple[tuple[str, str], ...] = ()  # (pair id, reason) of pairs align refused on purpose


def sample_photos() -> list[Path]:
    """The bundled sample photographs (see ``sample_data/README.md`` for sources and licences)."""
    folder = Path(str(resources.files("realsr_tools") / "sample_data" / "photos"))
    return sorted(folder.glob("*.jpg"))


@holds_output()
def run_demo(out_dir: Path | str, *, minutes: float = 2.0, steps: int | None = None, overwrite: bool = False,
             show_progress: bool = True, say: Callable[[str], None] = print) -> DemoResult:
    """Run inspect, align, crop, wash, train (``minutes`` of training) and score into ``out_dir``.

    ``steps`` trains exactly that many steps instead of for ``minutes`` (a budget that does not depend on the
    machine's speed). Files in ``out_dir`` that the demo did not write are never touched; ``overwrite`` replaces only
    the folders an earlier demo's record (:data:`DEMO_RECORD`) lists. The run holds ``out_dir``'s lock, so a second
    demo cannot replace the folders of one still running.
    """
    from .align import run_align
    from ..captures import discover
    from .crop import run_crop
    from .score import run_score
    from ..simulate import make_capture_folder
    from ..train import TrainConfig, run_training
    from .wash import run_wash

    from ..errors import ConfigError

    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {steps}")
    if not minutes > 0:
        raise ConfigError(f"--minutes must be positive, got {minutes}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    _prepare_demo_folder(out_dir, overwrite)
    photos = sample_photos()
    train_photos = [p for p in photos if p.name != TEST_PHOTO]
    test_photos = [p for p in photos if p.name == TEST_PHOTO]
    out = {name: out_dir / name for name in OUTPUTS}

    say(f"1/7 simulating multi-focal captures of {len(photos)} bundled photographs (x2 and x4) ...")
    make_capture_folder(train_photos, out["captures"], scales=(2, 4), seed=0)
    make_capture_folder(test_photos, out["test_captures"], scales=(DEMO_SCALE,), seed=1)
    found = discover(out["captures"])
    say(f"2/7 inspect: {len(found.scenes)} scenes, {len(found.pairs)} LR/HR pairs, {len(found.problems)} problems")

    say("3/7 align: registering every LR capture to its HR capture ...")
    aligned = run_align(out["captures"], out["aligned"], scales=(2, 4), workers=2, preview=True,
                        show_progress=show_progress)
    run_align(out["test_captures"], out["test_aligned"], scales=(DEMO_SCALE,), show_progress=show_progress)
    say(f"    aligned {aligned.ok} of {aligned.ok + aligned.failed}")
    if aligned.failures:
        say(f"    {aligned.failed} pair(s) refused, as intended: realsr refuses a pair whose alignment it cannot "
            "verify (for example a scene with too little texture to fix the geometry) instead of writing a pair "
            "that may be misaligned. The install is fine; these are recorded in the manifest with the reason:")
    for pair_id, reason in aligned.failures:
        say(f"    - {pair_id}: {reason}")

    say(f"4/7 crop: x{DEMO_SCALE} patches ...")
    cropped = run_crop(out["aligned"], out["patches"], scale=DEMO_SCALE, size=64, workers=2,
                       show_progress=show_progress)
    say(f"    {cropped.patches} patches")

    say("5/7 wash: dropping misaligned or damaged patches (PSNR against the fitted degradation >= 29 dB) ...")
    washed = run_wash(out["patches"], out["washed"], min_psnr=29.0, show_progress=show_progress)
    say(f"    kept {washed.kept} of {washed.pairs}")

    budget = f"{steps} steps" if steps is not None else f"{minutes:g} minute(s)"
    say(f"6/7 train: edsr_small x{DEMO_SCALE} for {budget} on the CPU ...")
    schedule = dict(steps=steps) if steps is not None else dict(max_minutes=minutes)
    result = run_training(TrainConfig(source=out["washed"], out=out["run"], scale=DEMO_SCALE, model="edsr_small",
                                      batch=16, patch=48, lr=5e-4, device="cpu", **schedule),
                          show_progress=show_progress)
    say(f"    {result.steps} steps, best validation PSNR {result.best_psnr:.2f} dB (bicubic "
        f"{result.bicubic_psnr:.2f} dB)")

    say("7/7 score: the model and bicubic on the held-out scene ...")
    model_report = run_score(checkpoint=result.best_checkpoint, data=out["test_aligned"], out_dir=out["scores"],
                             device="cpu", show_progress=show_progress)
    bicubic_report = run_score(bicubic=True, data=out["test_aligned"], out_dir=out["bicubic_scores"],
                               show_progress=show_progress)
    return DemoResult(out_dir, out, model_report.psnr, bicubic_report.psnr, model_report.ssim, bicubic_report.ssim,
                      time.perf_counter() - start, tuple(aligned.failures))


def _prepare_demo_folder(out_dir: Path, overwrite: bool) -> None:
    """Make room for the demo in ``out_dir``, deleting only what an earlier demo recorded there, then record ours.

    Other files in ``out_dir`` stay. A demo folder name that exists without an earlier demo's record (someone else's
    ``aligned/``) is refused even with ``overwrite``.
    """
    import json
    import shutil

    from ..errors import OutputExistsError
    from ..pipeline.manifest import atomic_write_text
    from ..pipeline.output import prepare_output

    prepare_output(out_dir)
    record_path = out_dir / DEMO_RECORD
    recorded: set[str] = set()
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            recorded = {name for name in record.get("outputs", []) if name in OUTPUTS}
        except (ValueError, AttributeError, TypeError, UnicodeDecodeError):
            raise OutputExistsError(f"{record_path}: not a realsr demo record; remove it or choose another "
                                    "--out") from None
    present = [name for name in OUTPUTS if (out_dir / name).exists() or (out_dir / name).is_symlink()]
    if present:
        foreign = [name for name in present if name not in recorded]
        if foreign:
            raise OutputExistsError(f"{out_dir}: {', '.join(foreign)} already exist(s) but no realsr demo recorded "
                                    f"writing them ({DEMO_RECORD}); move them away or choose another --out")
        if not overwrite:
            raise OutputExistsError(f"{out_dir}: holds an earlier demo ({', '.join(present)}); pass --overwrite to "
                                    "replace it, or choose another --out")
        for name in present:
            path = out_dir / name
            if path.is_symlink() or not path.is_dir():
                path.unlink()
            else:
                shutil.rmtree(path)
    atomic_write_text(record_path, json.dumps({"tool": "realsr", "stage": "demo", "outputs": list(OUTPUTS)},
                                              indent=2) + "\n")
