"""Make docs/figures/align_preview.jpg: what ``realsr align --preview`` draws, for an aligned pair and a rolled one.

Run by hand (not by pytest)::

    python benchmarks/figure_align_preview.py [--out docs/figures/align_preview.jpg]

A capture scene is simulated (:func:`realsr_tools.simulate.make_capture_folder`, seed 3) from the bundled CC0
photograph ``realsr_tools/sample_data/photos/unis_ev0.jpg`` and aligned at x2 with ``--preview``: the top row is
the preview align wrote. The bottom row is the same written pair with its HR turned 0.2 deg about the window's
centre before the verifier measures it (in linear light, as align does): right at the centre, about 0.6 LR px off at
the corners, which align refuses. Written as JPEG (small enough to keep in the repository); a derivative of a CC0
photograph.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from realsr_tools.imaging import read_image, write_image  # noqa: E402
from realsr_tools.pipeline.manifest import read_manifest  # noqa: E402
from realsr_tools.previews import preview_image  # noqa: E402
from realsr_tools.registration.luma import linear  # noqa: E402
from realsr_tools.simulate import make_capture_folder  # noqa: E402
from realsr_tools.stages.align import run_align  # noqa: E402
from realsr_tools.stages.align_pair import FIELD_P95_FACTOR, FIELD_SIGMAS, MAX_FIELD_DISPLACEMENT  # noqa: E402
from realsr_tools.verification import measure_tiles, summarise  # noqa: E402

PHOTO = PROJECT / "realsr_tools" / "sample_data" / "photos" / "unis_ev0.jpg"
ROLL_DEG = 0.2


def caption(image: np.ndarray, text: str) -> np.ndarray:
    band = np.full((26, image.shape[1], 3), 217, np.uint8)
    cv2.putText(band, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band.astype(np.float32) / 255, image], axis=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT / "docs" / "figures" / "align_preview.jpg")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        captures, aligned = Path(work) / "captures", Path(work) / "aligned"
        make_capture_folder([PHOTO], captures, scales=(2,), seed=3, lr_size=(640, 480))
        run_align(captures, aligned, scales=(2,), preview=True, show_progress=False)
        record = read_manifest(aligned, stage="align").records[0]
        written = read_image(aligned / record["preview"])
        lr, hr = read_image(aligned / record["lr"]), read_image(aligned / record["hr"])
    h, w = lr.shape[:2]
    turn = cv2.getRotationMatrix2D((2 * w / 2 - 0.5, 2 * h / 2 - 0.5), ROLL_DEG, 1.0)
    rolled = cv2.warpAffine(hr, turn, hr.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    lr_light = linear(lr)
    on_lr = cv2.resize(linear(rolled), (w, h), interpolation=cv2.INTER_AREA)
    tiles, tile, blur = measure_tiles(lr_light, on_lr, linear_light=True)
    verdict = summarise(tiles, tile, (h, w), limit=MAX_FIELD_DISPLACEMENT, sigmas=FIELD_SIGMAS,
                        p95_factor=FIELD_P95_FACTOR, blur=blur)
    on_lr_encoded = cv2.resize(rolled, (w, h), interpolation=cv2.INTER_AREA)
    bad = preview_image(lr, on_lr_encoded, tiles=tiles, verification=verdict)
    rows = [caption(written, f"{record['id']}: aligned and written by realsr align (status {record['status']})"),
            caption(bad, f"the same pair with its HR turned {ROLL_DEG} deg: {verdict.verdict}")]
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=1.0) for r in rows]
    write_image(args.out, np.concatenate(rows, axis=0), bit_depth=8)
    print(f"{args.out}: {verdict.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
