"""Independent multi-focal capture generator (written without reading realsr_tools/simulate.py).

A scene is a real photograph placed as a flat print on a flat surround (dark or mid-grey wall) - the "world",
in the photograph's pixel coordinates. Every capture is a pinhole camera looking at it: capture pixel (x, y)
(pixel centres at integers) -> lens distortion -> homography M -> world point. A scene gets one HR capture
(100 mm) and LR captures at 50, 33 and 25 mm (nominal x2, x3, x4 via ``captures.csv``); the *true* magnification of
each LR is its focal ratio times (1 +- 2..5 %), with its own roll (+-1 deg about the HR's), slight perspective,
random sub-pixel offset and, on some lenses only, radial distortion.

Rendering (per capture): the world is Gaussian-prefiltered for the sampling pitch, sampled on a k x k
super-sampled capture grid (cv2.remap INTER_LINEAR on float32 - exact positions, unlike cv2's cubic/Lanczos tables),
blurred by the optics PSF (Gaussian, sigma 0.35-0.6 capture px, so the LR aliases) and camera shake (linear motion
kernel), box-averaged over each pixel, then exposure, white balance, vignetting and Poisson-Gaussian noise in linear
light, encoded with a 1/2.2 power (``--encoding``: or sRGB's or BT.709's curve; no file states it), and written as
8-bit PNG (normal) or compressed 16-bit TIFF (``--hard``: LZW for LR, Deflate for HR; needs ``imagecodecs``).

Normal: PSF 0.35-0.6 px, shake 0-0.6 px, +-0.2 EV, +-3 % white balance, vignetting 0-10 %, distortion on 40 % of
lenses (|k| <= 1 % at the frame corner), noise sigma ~ 0.3-1 % at mid-grey.
Hard: +-0.7 EV, +-15 % white balance (R and B gains), vignetting 15-40 %, radial distortion +-3 % at the corner on
every lens, 2.5 x the shake (0-1.5 px), 2 x the noise, 16-bit compressed TIFF.

Truth: ``truth.json`` beside the scene folders (own format): per capture its size, homography ``M`` (ideal capture
coords -> world), distortion ``{k, centre, radius}`` (ideal = c + (x - c)(1 + k |x - c|^2 / radius^2), x the
observed pixel) and per LR ``true_zoom``; :func:`lr_to_hr` evaluates the exact LR-source -> HR-source mapping.

Photographs: ``HELD_OUT`` (the digicam-corpus JPEGs) must not be used by anyone to tune realsr or this harness;
benchmarks draw from them first. ``TUNING`` (photos/) may be used while developing.

CLI: ``python generator.py OUT --scenes 4 --seed 1 [--hard] [--width 500 1400] [--encoding srgb]``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

cv2.setNumThreads(1)

DATA = Path("/work/shared/data")
HELD_OUT = [
    "exif_jpeg/digicam_corpus/canon_5dmk3_K6A7942_5760.JPG",
    "exif_jpeg/digicam_corpus/canon_5dmk3_K6A7944_2880.JPG",
    "exif_jpeg/digicam_corpus/canon_5dmk3_K6A7945_1920.JPG",
    "exif_jpeg/digicam_corpus/canon_5dmk3_K6A7946_720.JPG",
    "exif_jpeg/digicam_corpus/canon_eosrp_MG_0635.JPG",
    "exif_jpeg/digicam_corpus/canon_g2_IMG_0307.JPG",
    "exif_jpeg/digicam_corpus/nikon_d3100_DSC_0008.JPG",
    "exif_jpeg/digicam_corpus/nikon_d90_DSC_0011.JPG",
    "exif_jpeg/digicam_corpus/olympus_c5050_PB180005.JPG",
    "exif_jpeg/digicam_corpus/pentax_istdl_IMGP6671.JPG",
    "exif_jpeg/digicam_corpus/sony_slta57_DSC8833.JPG",
]
TUNING = [
    "photos/exif_samples_11-tests.jpg", "photos/exif_samples_22-canon_tags.jpg",
    "photos/exif_samples_28-hex_value.jpg", "photos/exif_samples_35-empty.jpg",
    "photos/exif_samples_36-memory_error.jpg", "photos/exif_samples_87_OSError.jpg",
    "photos/exif_samples_HMD_Nokia_8.3_5G.jpg", "photos/kodak_kodim03.png", "photos/pypi_scikit-image_coffee.png",
    "photos/pypi_scikit-image_hubble_deep_field.jpg", "photos/pypi_scikit-image_retina.jpg",
    "photos/skimage_UNIS_EV0.jpg", "photos/skimage_eagle.png",
]
FOCAL = {1: 100, 2: 50, 3: 33, 4: 25}
GAMMA = 2.2


def _srgb(lin):
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(lin, 1 / 2.4) - 0.055)


def _bt709(lin):
    return np.where(lin < 0.018, 4.5 * lin, 1.099 * np.power(lin, 0.45) - 0.099)


# The curve the captures' files are encoded with (none of them says so in the file). The default, a pure 1/2.2 power,
# is what every set before session 42 holds; sRGB (what a camera JPEG or an untagged PNG usually holds) and BT.709
# (LibRaw's and dcraw's default output curve) measure realsr where its sRGB assumption is right, and where its
# exposure curve test must find a toe of another shape. Each written from its standard's formula here.
ENCODINGS = {"power:2.2": lambda lin: np.power(lin, 1 / GAMMA), "srgb": _srgb, "bt709": _bt709}
PAD = 64  # px of surround around the photograph in the world


def read_photo(path: Path) -> np.ndarray:
    """RGB float32 in [0, 1], EXIF orientation applied (cv2.imread default)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read {path}")
    return img[..., ::-1].astype(np.float32) / 255.0


# ---------------------------------------------------------------------------------------------------------------
# geometry

def capture_matrix(W, H, pitch, roll_deg, centre_world, persp):
    """Homography: ideal capture coords -> world. pitch = world px per capture px."""
    cx, cy = (W - 1) / 2, (H - 1) / 2
    T0 = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    P = np.array([[1, 0, 0], [0, 1, 0], [persp[0], persp[1], 1.0]])
    th = math.radians(roll_deg)
    RS = np.array([[pitch * math.cos(th), -pitch * math.sin(th), 0], [pitch * math.sin(th), pitch * math.cos(th), 0],
                   [0, 0, 1.0]])
    T1 = np.array([[1, 0, centre_world[0]], [0, 1, centre_world[1]], [0, 0, 1.0]])
    return T1 @ RS @ P @ T0


def apply_h(M, x, y):
    X = M[0, 0] * x + M[0, 1] * y + M[0, 2]
    Y = M[1, 0] * x + M[1, 1] * y + M[1, 2]
    Z = M[2, 0] * x + M[2, 1] * y + M[2, 2]
    return X / Z, Y / Z


def undistort(dist, x, y):
    """Observed pixel -> ideal coords."""
    if not dist or dist["k"] == 0:
        return x, y
    cx, cy = dist["centre"]
    dx, dy = x - cx, y - cy
    f = 1 + dist["k"] * (dx * dx + dy * dy) / dist["radius"] ** 2
    return cx + dx * f, cy + dy * f


def distort(dist, xu, yu):
    """Ideal coords -> observed pixel (Newton on the radius)."""
    if not dist or dist["k"] == 0:
        return xu, yu
    cx, cy = dist["centre"]
    R, k = dist["radius"], dist["k"]
    dx, dy = xu - cx, yu - cy
    ru = np.hypot(dx, dy) / R
    rd = ru.copy()
    for _ in range(20):
        f = rd + k * rd ** 3 - ru
        rd = rd - f / (1 + 3 * k * rd ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(ru > 0, rd / np.where(ru > 0, ru, 1), 1.0)
    return cx + dx * g, cy + dy * g


def lr_to_hr(truth: dict, lr_key: str, x, y):
    """Exact mapping of LR *source* pixel coords (observed) to HR source pixel coords (observed)."""
    lr = truth["captures"][lr_key]
    hr = truth["captures"][truth["hr"]]
    xu, yu = undistort(lr["distortion"], np.asarray(x, float), np.asarray(y, float))
    wx, wy = apply_h(np.array(lr["M"]), xu, yu)
    hx, hy = apply_h(np.linalg.inv(np.array(hr["M"])), wx, wy)
    return distort(hr["distortion"], hx, hy)


# ---------------------------------------------------------------------------------------------------------------
# rendering

def motion_kernel(length, angle, k):
    L = max(length * k, 0.0)
    size = int(math.ceil(L)) * 2 + 3
    ker = np.zeros((size, size), np.float32)
    c = size // 2
    n = max(int(math.ceil(L * 4)), 1)
    for t in np.linspace(-L / 2, L / 2, n + 1):
        x, y = c + t * math.cos(angle), c + t * math.sin(angle)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        ker[y0, x0] += (1 - fx) * (1 - fy); ker[y0, x0 + 1] += fx * (1 - fy)
        ker[y0 + 1, x0] += (1 - fx) * fy; ker[y0 + 1, x0 + 1] += fx * fy
    return ker / ker.sum()


def make_world(photo_lin, surround):
    """The world a scene's captures look at: the photograph (linear light) on its surround, :data:`PAD` px around."""
    return cv2.copyMakeBorder(photo_lin, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT,
                              value=tuple(float(v) for v in surround))


def supersampling(width):
    """Sub-samples per capture pixel along each axis when rendering a capture ``width`` px wide."""
    return 3 if width <= 2000 else 2


def render(world_lin, surround, cap, rng, k):
    """Render one capture (dict with W, H, M, distortion, psf, shake, photometric, noise) -> linear float RGB."""
    W, H = cap["W"], cap["H"]
    M = np.array(cap["M"])
    pitch = cap["pitch"]
    sub = pitch / k  # world px per sub-sample
    src = world_lin
    if sub > 1:
        src = cv2.GaussianBlur(world_lin, (0, 0), 0.5 * math.sqrt(sub * sub - 1), borderType=cv2.BORDER_REFLECT)
    xs = (np.arange(W * k, dtype=np.float64) + 0.5) / k - 0.5
    out = np.empty((H * k, W * k, 3), np.float32)
    rows = max(1, (4_000_000 // (W * k)))
    for r0 in range(0, H * k, rows):
        ys = (np.arange(r0, min(r0 + rows, H * k), dtype=np.float64) + 0.5) / k - 0.5
        gx, gy = np.meshgrid(xs, ys)
        ux, uy = undistort(cap["distortion"], gx, gy)
        wx, wy = apply_h(M, ux, uy)
        out[r0:r0 + len(ys)] = cv2.remap(src, wx.astype(np.float32), wy.astype(np.float32), cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in surround))
    out = cv2.GaussianBlur(out, (0, 0), cap["psf"] * k)
    if cap["shake"][0] > 0.05:
        out = cv2.filter2D(out, -1, motion_kernel(cap["shake"][0], cap["shake"][1], k), borderType=cv2.BORDER_REFLECT)
    img = out.reshape(H, k, W, k, 3).mean(axis=(1, 3))
    ph = cap["photometric"]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r2 = ((xx - (W - 1) / 2) ** 2 + (yy - (H - 1) / 2) ** 2) / (((W - 1) / 2) ** 2 + ((H - 1) / 2) ** 2)
    vig = (1 - ph["vignetting"] * r2)[..., None]
    img = img * vig * (2 ** ph["ev"]) * np.array(ph["wb"], np.float32)
    a, b = cap["noise"]
    img = img + rng.normal(size=img.shape).astype(np.float32) * np.sqrt(np.maximum(a * img + b, 0))
    return np.clip(img, 0, 1)


def write_capture(path: Path, lin: np.ndarray, tiff: bool, compression="zlib", encoding="power:2.2"):
    enc = ENCODINGS[encoding](np.clip(lin, 0, 1))
    if tiff:
        import tifffile
        tifffile.imwrite(str(path), np.round(enc * 65535).astype(np.uint16), compression=compression,
                         photometric="rgb")
    else:
        cv2.imwrite(str(path), np.round(enc[..., ::-1] * 255).astype(np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 1])


# ---------------------------------------------------------------------------------------------------------------
# scenes

def draw_scene(rng, photo_hw, hard, width_range, scales=(2, 3, 4), neutral_photometry=False):
    ph, pw = photo_hw
    W = int(rng.uniform(*width_range)) // 4 * 4
    aspect = rng.choice([0.75, 2 / 3])
    # HR pitch: the x4 LR field covers 80-130 % of the photograph's width
    pitch_hr = pw * rng.uniform(0.8, 1.3) / (4 * W)
    H = int(round(W * aspect)) // 4 * 4
    photo_c = np.array([PAD + (pw - 1) / 2, PAD + (ph - 1) / 2])
    hr_half = np.array([W, H]) * pitch_hr / 2
    room = np.maximum(np.array([pw, ph]) / 2 - hr_half * 1.1, 0)
    c_hr = photo_c + rng.uniform(-1, 1, 2) * room * 0.5
    roll_hr = rng.uniform(-2, 2)

    def lens(p_some):
        if hard:
            k = rng.uniform(-0.03, 0.03)
        elif rng.random() < p_some:
            k = rng.uniform(-0.01, 0.01)
        else:
            k = 0.0
        return k

    def photometric():
        if hard:
            return dict(ev=rng.uniform(-0.7, 0.7), wb=[rng.uniform(0.85, 1.15), 1.0, rng.uniform(0.85, 1.15)],
                        vignetting=rng.uniform(0.15, 0.4))
        return dict(ev=rng.uniform(-0.2, 0.2), wb=[rng.uniform(0.97, 1.03), 1.0, rng.uniform(0.97, 1.03)],
                    vignetting=rng.uniform(0.0, 0.1))

    def noise():
        f = 2.0 if hard else 1.0
        return [float((f ** 2) * rng.uniform(2e-5, 2e-4)), float((f * rng.uniform(0.001, 0.003)) ** 2)]

    def persp(W):
        return list(rng.uniform(-1, 1, 2) * 0.01 / W)

    def shake():
        return [float(rng.uniform(0, 1.5 if hard else 0.6)), float(rng.uniform(0, math.pi))]

    caps = {}
    rad = math.hypot((W - 1) / 2, (H - 1) / 2)

    def dist(k):
        return dict(k=float(k), centre=[(W - 1) / 2 + rng.uniform(-0.02, 0.02) * W,
                                        (H - 1) / 2 + rng.uniform(-0.02, 0.02) * H], radius=rad) if k else None

    caps["hr"] = dict(scale=1, W=W, H=H, pitch=pitch_hr, roll=roll_hr, centre=c_hr.tolist(), persp=persp(W),
                      distortion=dist(lens(0.4)), psf=float(rng.uniform(0.35, 0.6)), shake=shake(),
                      photometric=photometric(), noise=noise())
    for s in scales:
        e = rng.uniform(0.02, 0.05) * rng.choice([-1, 1])
        zoom = FOCAL[1] / FOCAL[s] * (1 + e)  # 2-5 % off the focal ratio (100/33 = 3.03 for x3)
        pitch = pitch_hr * zoom
        lr_half = np.array([W, H]) * pitch / 2
        slack = np.maximum(lr_half - hr_half * 1.15, 0)
        c = c_hr + rng.uniform(-1, 1, 2) * slack * 0.5 + rng.uniform(-0.5, 0.5, 2) * pitch
        caps[f"x{s}"] = dict(scale=s, true_zoom=float(zoom), W=W, H=H, pitch=pitch,
                             roll=roll_hr + float(rng.uniform(-1, 1)), centre=c.tolist(), persp=persp(W),
                             distortion=dist(lens(0.4)), psf=float(rng.uniform(0.35, 0.6)), shake=shake(),
                             photometric=photometric(), noise=noise())
    if neutral_photometry:  # diagnosis: same draws (same geometry and noise), no exposure/WB/vignetting change
        for cap in caps.values():
            cap["photometric"] = dict(ev=0.0, wb=[1.0, 1.0, 1.0], vignetting=0.0)
    for cap in caps.values():
        cap["M"] = capture_matrix(cap["W"], cap["H"], cap["pitch"], cap["roll"], cap["centre"], cap["persp"]).tolist()
    return caps


def choose_photos(n, rng, held_out_only=False):
    ho = list(HELD_OUT)
    rng.shuffle(ho)
    pool = ho + ([] if held_out_only else [p for p in rng.permutation(TUNING)])
    out = []
    while len(out) < n:
        out += pool
    return out[:n]


def generate(out: Path, n_scenes=12, seed=1, hard=False, width=(500, 1400), scales=(2, 3, 4), photos=None,
             verbose=True, neutral_photometry=False, encoding="power:2.2"):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = photos or choose_photos(n_scenes, rng)
    truth = dict(format="independent-generator truth v1", seed=seed, hard=hard, width=list(width), scenes={},
                 neutral_photometry=neutral_photometry, encoding=encoding,
                 convention="pixel centres at integer coords; lr_to_hr maps observed LR source px to observed HR "
                            "source px; distortion: ideal = c + (x - c)(1 + k |x - c|^2 / radius^2)")
    rows = []
    ext = ".tif" if hard else ".png"
    for i, rel in enumerate(photos):
        photo = read_photo(DATA / rel)
        caps = draw_scene(rng, photo.shape[:2], hard, width, scales, neutral_photometry)
        lin = photo ** GAMMA
        surround = (rng.uniform(0.002, 0.02) if rng.random() < 0.5 else rng.uniform(0.05, 0.25)) * \
            np.array([1.0, rng.uniform(0.95, 1.05), rng.uniform(0.9, 1.1)], np.float32)
        world = make_world(lin, surround)
        name = f"scene_{i:02d}"
        (out / name).mkdir(exist_ok=True)
        camera = f"IndepSim cam{i % 3}"
        scene = dict(photo=rel, held_out=rel in HELD_OUT, surround=surround.tolist(), captures={}, hr=None)
        for key, cap in caps.items():
            img = render(world, surround, cap, rng, supersampling(cap["W"]))
            fname = f"{name}/{'hr' if key == 'hr' else 'lr_' + key}{ext}"
            write_capture(out / fname, img, hard, compression="zlib" if key == "hr" else "lzw", encoding=encoding)
            cap = dict(cap, file=fname)
            scene["captures"][fname] = cap
            if key == "hr":
                scene["hr"] = fname
            rows.append((fname, FOCAL[cap["scale"]], camera))
        truth["scenes"][name] = scene
        if verbose:
            print(f"{name}: {rel} W={caps['hr']['W']} "
                  + " ".join(f"{k}:zoom {c.get('true_zoom', 1):.3f} k={c['distortion']['k'] if c['distortion'] else 0:+.3f}"
                             for k, c in caps.items()), flush=True)
    with open(out / "captures.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "focal_mm", "camera"])
        w.writerows(rows)
    truth_path = out.parent / (out.name + ".truth.json")
    truth_path.write_text(json.dumps(truth, indent=1))
    return truth_path


def scene_truth(truth: dict, scene: str) -> dict:
    return truth["scenes"][scene]


def main(argv=None):
    ap = argparse.ArgumentParser(description="independent multi-focal capture generator")
    ap.add_argument("out")
    ap.add_argument("--scenes", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hard", action="store_true")
    ap.add_argument("--width", type=int, nargs=2, default=(500, 1400), metavar=("MIN", "MAX"),
                    help="capture width range in px (up to 6000)")
    ap.add_argument("--neutral-photometry", action="store_true",
                    help="diagnosis: same scenes, but no exposure / white-balance / vignetting differences")
    ap.add_argument("--encoding", choices=sorted(ENCODINGS), default="power:2.2",
                    help="the curve the files are encoded with (none states it)")
    a = ap.parse_args(argv)
    if max(a.width) > 6000:
        ap.error("--width at most 6000")
    p = generate(Path(a.out), a.scenes, a.seed, a.hard, tuple(a.width), neutral_photometry=a.neutral_photometry,
                 encoding=a.encoding)
    print("truth:", p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
