"""Independent estimator of the residual displacement between an LR image and its HR (no realsr code).

Convention (same as realsr's docs, re-implemented here): points (x, y), pixel centres at integer coordinates.
The HR is exactly ``s`` x the LR; HR pixel block ``[s*i, s*i+s)`` covers LR pixel ``i`` (pixel-area aligned), so
the HR is brought onto the LR grid by a plain **area (box) average of s x s blocks** (`area_down`).

The displacement field ``d(x)`` (LR px) is defined by ``LR(x) ~ HRd(x + d(x))``: the content the LR shows at
``x`` sits at ``x + d`` in the area-downscaled HR.

Method (per pair):

1. Luma (BT.601) of both; HR area-downscaled; both band-passed and locally contrast-normalised (difference of
   Gaussians sigma 0.7 / 6 LR px divided by the local RMS, sigma 10) so exposure, white balance and vignetting do
   not matter.
2. **Measurability** per tile (overlapping tiles, 64 px with step 32; 32/16 on frames under 400 px): structure tensor
   of the LR luma (Gaussian-smoothed gradients, sigma 1) summed over the tile. A tile is *measurable* only if its
   smaller eigenvalue is above a floor set by the LR's own noise (Immerkaer's estimate) and an absolute floor, and
   the eigenvalue ratio min/max >= 0.08 (one-dimensional structure - an edge, stripes - cannot fix a 2-D shift).
   Flat and 1-D tiles are never "aligned": they simply do not count.
3. **Iterated band-limited phase correlation** per measurable tile: the first step is the peak of the phase
   correlation surface (normalised cross-power, frequencies above 0.35 cycles/px cut, 3x3 parabolic sub-pixel fit);
   then up to 6 steps re-sample the HR tile at ``x + d`` (bicubic) and estimate the residual by a weighted
   least-squares fit of a plane to the cross-power phase over the band |f| < 0.25 cycles/px (weights |A||B|). The
   iteration makes the window's bias vanish (at the fixed point the two tiles coincide). A tile that does not
   converge, moves more than a quarter tile, or whose normalised correlation after alignment is < 0.3 is dropped.
4. **Farneback dense flow** (cv2.calcOpticalFlowFarneback, on the normalised images, second pass seeded with the
   first) gives a per-pixel field; its median over each tile's centre is compared with the tile's phase
   correlation: tiles where they disagree by more than max(0.25, 0.25 |d|) px are ambiguous (repeated pattern,
   occlusion, moving object) and dropped.
5. **Affine fit** of the field over the measurable tiles (Huber IRLS): ``d(x) = A [x, y, 1]``; its displacement at
   the four frame corners is reported.

Verdict: *measurable* when at least max(4, 5 %) of the tiles pass and their centres span two dimensions; otherwise
*unmeasurable* (nothing is claimed about such a pair).

CLI: ``python estimator.py LR.png HR.png [--scale S]`` prints the JSON report;
``python estimator.py --validate [--n N]`` runs the known-shift validation on the real pairs.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

cv2.setNumThreads(1)

# ---------------------------------------------------------------------------------------------------------------
# images

def load_rgb(path) -> np.ndarray:
    """Any 8/16-bit PNG/TIFF/JPEG -> float32 RGB in [0, 1]."""
    path = str(path)
    img = None
    if path.lower().endswith((".tif", ".tiff")):
        import tifffile
        img = tifffile.imread(path)
        if img.ndim == 3 and img.shape[2] > 3:
            img = img[..., :3]
        scale = 65535.0 if img.dtype == np.uint16 else (255.0 if img.dtype == np.uint8 else 1.0)
        img = img.astype(np.float32) / scale
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        return img
    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if raw is None:
        raise OSError(f"cannot read {path}")
    if raw.ndim == 2:
        raw = np.repeat(raw[..., None], 3, axis=2)
    if raw.shape[2] == 4:
        raw = raw[..., :3]
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    return (raw[..., ::-1].astype(np.float32) / scale).copy()


def luma(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img.astype(np.float32)
    return (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]).astype(np.float32)


def area_down(img: np.ndarray, s: int) -> np.ndarray:
    """Mean of s x s blocks (pixel-area aligned). The image is cropped to a multiple of s."""
    if s == 1:
        return img.astype(np.float32)
    h, w = img.shape[0] // s * s, img.shape[1] // s * s
    a = img[:h, :w].astype(np.float32)
    if a.ndim == 2:
        return a.reshape(h // s, s, w // s, s).mean(axis=(1, 3))
    return a.reshape(h // s, s, w // s, s, a.shape[2]).mean(axis=(1, 3))


def normalise(g: np.ndarray) -> np.ndarray:
    """Band-pass (DoG 0.7 / 6) divided by the local RMS (sigma 10): photometry-invariant."""
    lo = cv2.GaussianBlur(g, (0, 0), 6.0, borderType=cv2.BORDER_REFLECT)
    hi = cv2.GaussianBlur(g, (0, 0), 0.7, borderType=cv2.BORDER_REFLECT)
    b = hi - lo
    rms = np.sqrt(cv2.GaussianBlur(b * b, (0, 0), 10.0, borderType=cv2.BORDER_REFLECT))
    floor = 0.002 + 0.05 * float(np.median(rms))
    return (b / (rms + floor)).astype(np.float32)


def noise_sigma(g: np.ndarray) -> float:
    """Immerkaer's fast noise estimate (robust version: median absolute Laplacian)."""
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    r = cv2.filter2D(g, cv2.CV_32F, k, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    return float(np.median(np.abs(r)) * 1.4826 / 6.0)


# ---------------------------------------------------------------------------------------------------------------
# tiles

def tile_size_for(h: int, w: int) -> tuple[int, int]:
    return (64, 32) if min(h, w) >= 400 else (32, 16)


def tile_origins(h: int, w: int, T: int, step: int):
    ys = list(range(0, max(h - T, 0) + 1, step))
    xs = list(range(0, max(w - T, 0) + 1, step))
    if ys and ys[-1] != h - T and h >= T:
        ys.append(h - T)
    if xs and xs[-1] != w - T and w >= T:
        xs.append(w - T)
    return [(x, y) for y in ys for x in xs]


def structure_tensor_tiles(g: np.ndarray, origins, T: int):
    gs = cv2.GaussianBlur(g, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
    gx = cv2.Sobel(gs, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
    gy = cv2.Sobel(gs, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
    # integral images for fast tile sums
    out = []
    ii = [cv2.integral(a.astype(np.float64)) for a in (gx * gx, gy * gy, gx * gy)]
    for x, y in origins:
        s = [I[y + T, x + T] - I[y, x + T] - I[y + T, x] + I[y, x] for I in ii]
        n = T * T
        a, c, b = s[0] / n, s[1] / n, s[2] / n
        tr, det = a + c, a * c - b * b
        disc = math.sqrt(max(tr * tr / 4 - det, 0.0))
        out.append((tr / 2 + disc, max(tr / 2 - disc, 0.0)))
    return np.array(out, np.float64).reshape(-1, 2)


_WIN_CACHE: dict = {}


def _window_and_freqs(T: int):
    if T not in _WIN_CACHE:
        hann = np.hanning(T + 2)[1:-1]
        win = np.outer(hann, hann).astype(np.float64)
        fy = np.fft.fftfreq(T)[:, None] * np.ones((1, T))
        fx = np.fft.fftfreq(T)[None, :] * np.ones((T, 1))
        _WIN_CACHE[T] = (win, fx, fy)
    return _WIN_CACHE[T]


def _sample(img: np.ndarray, x0: float, y0: float, T: int, dx: float, dy: float) -> np.ndarray:
    """T x T tile of img whose top-left pixel centre is (x0 + dx, y0 + dy): cubic B-spline (scipy), exact positions.

    (cv2.remap's INTER_CUBIC (a = -0.75) does not reproduce a linear ramp and quantises positions to 1/32 px: it
    moves content by up to 0.05 px depending on the fractional position, so it is never used for measurement.)
    """
    from scipy import ndimage
    H, W = img.shape
    m = int(math.ceil(max(abs(dx), abs(dy)))) + 6
    xa, ya = max(int(x0) - m, 0), max(int(y0) - m, 0)
    xb, yb = min(int(x0) + T + m, W), min(int(y0) + T + m, H)
    crop = img[ya:yb, xa:xb].astype(np.float64)
    ys, xs = np.mgrid[0:T, 0:T].astype(np.float64)
    coords = [ys + y0 + dy - ya, xs + x0 + dx - xa]
    return ndimage.map_coordinates(crop, coords, order=3, mode="mirror")


def remap_exact(img: np.ndarray, mx: np.ndarray, my: np.ndarray, order: int = 3) -> np.ndarray:
    """img sampled at (mx, my) (pixel centres at integers) with scipy's cubic B-spline, per channel, mirror edges."""
    from scipy import ndimage
    if img.ndim == 2:
        return ndimage.map_coordinates(img.astype(np.float32), [my, mx], order=order, mode="mirror").astype(np.float32)
    return np.stack([remap_exact(img[..., c], mx, my, order) for c in range(img.shape[2])], -1)


def phase_corr_tile(a_img, b_img, x0, y0, T, iters=6, tol=0.002):
    """Shift d with a(x) ~ b(x + d) for the tile at (x0, y0). Returns (dx, dy, ncc, converged)."""
    win, fx, fy = _window_and_freqs(T)
    a = a_img[y0:y0 + T, x0:x0 + T].astype(np.float64)
    a = (a - a.mean()) * win
    A = np.fft.fft2(a)
    fr = np.hypot(fx, fy)
    # step 1: band-limited phase correlation peak
    b = b_img[y0:y0 + T, x0:x0 + T].astype(np.float64)
    b = (b - b.mean()) * win
    B = np.fft.fft2(b)
    R = B * np.conj(A)
    R = R / (np.abs(R) + 1e-12) * (fr < 0.35)
    c = np.real(np.fft.ifft2(R))
    iy, ix = np.unravel_index(int(np.argmax(c)), c.shape)

    def par(m, z, p):
        den = m - 2 * z + p
        return 0.0 if abs(den) < 1e-12 else 0.5 * (m - p) / den

    sx = par(c[iy, (ix - 1) % T], c[iy, ix], c[iy, (ix + 1) % T])
    sy = par(c[(iy - 1) % T, ix], c[iy, ix], c[(iy + 1) % T, ix])
    dx = (ix if ix < T // 2 else ix - T) + sx
    dy = (iy if iy < T // 2 else iy - T) + sy
    band = (fr > 2.5 / T) & (fr < 0.25)
    fxb, fyb = fx[band], fy[band]
    converged = False
    bt = None
    for _ in range(iters):
        if abs(dx) > T / 4 or abs(dy) > T / 4:
            return dx, dy, 0.0, False
        bt = _sample(b_img, x0, y0, T, dx, dy).astype(np.float64)
        bw = (bt - bt.mean()) * win
        Bt = np.fft.fft2(bw)
        X = (Bt * np.conj(A))[band]
        w = np.abs(X)
        ph = np.angle(X)  # = -2 pi f . r  for bt(x) = a(x - r)
        M = np.stack([fxb, fyb], 1) * (-2 * np.pi)
        Mw = M * w[:, None]
        try:
            r = np.linalg.solve(Mw.T @ M + 1e-9 * np.eye(2), Mw.T @ ph)
        except np.linalg.LinAlgError:
            return dx, dy, 0.0, False
        dx += float(r[0])
        dy += float(r[1])
        if math.hypot(r[0], r[1]) < tol:
            converged = True
            break
    bt = _sample(b_img, x0, y0, T, dx, dy).astype(np.float64)
    aw = a
    bw = (bt - bt.mean()) * win
    ncc = float((aw * bw).sum() / (np.sqrt((aw * aw).sum() * (bw * bw).sum()) + 1e-12))
    return dx, dy, ncc, converged


def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow F with a(x) ~ b(x + F(x)), on normalised float images."""
    def to8(z):
        return np.clip(z * 40 + 128, 0, 255).astype(np.uint8)
    a8, b8 = to8(a), to8(b)
    flow = cv2.calcOpticalFlowFarneback(a8, b8, None, 0.5, 3, 15, 5, 7, 1.5, cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
    flow = cv2.calcOpticalFlowFarneback(a8, b8, flow, 0.5, 1, 11, 5, 7, 1.5,
                                        cv2.OPTFLOW_USE_INITIAL_FLOW | cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
    return flow


def fit_affine(pts: np.ndarray, d: np.ndarray, iters=10):
    """Huber IRLS fit of d = A [x y 1]; returns 2x3 A."""
    X = np.column_stack([pts, np.ones(len(pts))])
    w = np.ones(len(pts))
    A = np.zeros((2, 3))
    for _ in range(iters):
        W = X * w[:, None]
        A = np.linalg.lstsq(W.T @ X + 1e-9 * np.eye(3), W.T @ d, rcond=None)[0].T
        r = np.linalg.norm(d - X @ A.T, axis=1)
        s = 1.4826 * np.median(r) + 1e-4
        k = 1.345 * s
        w = np.where(r <= k, 1.0, k / np.maximum(r, 1e-12))
    return A


def fit_poly(pts, d, shape, order=2, iters=10):
    """Huber IRLS polynomial field fit in normalised coordinates; returns a function (x, y) -> (dx, dy)."""
    def basis(x, y):
        return poly_basis(x, y, shape, order)

    X = basis(pts[:, 0], pts[:, 1])
    wts = np.ones(len(pts))
    C = np.zeros((X.shape[1], 2))
    for _ in range(iters):
        W = X * wts[:, None]
        C = np.linalg.lstsq(W.T @ X + 1e-9 * np.eye(X.shape[1]), W.T @ d, rcond=None)[0]
        r = np.linalg.norm(d - X @ C, axis=1)
        s = 1.4826 * np.median(r) + 1e-4
        k = 1.345 * s
        wts = np.where(r <= k, 1.0, k / np.maximum(r, 1e-12))
    return lambda x, y: basis(x, y) @ C


def poly_basis(x, y, shape, order):
    h, w = shape
    cx, cy, sc = (w - 1) / 2, (h - 1) / 2, max(w, h) / 2
    u, v = (np.asarray(x, float) - cx) / sc, (np.asarray(y, float) - cy) / sc
    cols = [np.ones_like(u)]
    for o in range(1, order + 1):
        for i in range(o + 1):
            cols.append(u ** (o - i) * v ** i)
    return np.stack(cols, -1)


def parametric_field(a: np.ndarray, b: np.ndarray, order=2, init=None, iters=30, max_px=1_000_000, sigma=1.0):
    """Same-modality dense registration: polynomial field d(x) (per component, given order) minimising
    sum_x rho(a(x) - b(x + d(x))) over every pixel (Gauss-Newton, Huber weights, cubic-spline sampling of b).

    Uses every gradient pixel, so edges in two orientations (a colour chart) fix the field even where no single tile
    is 2-D textured. ``init``: function (x, y) -> (N, 2) initial field. Returns (coeffs (P, 2), fn, info).
    """
    from scipy import ndimage
    a = cv2.GaussianBlur(a.astype(np.float32), (0, 0), sigma)
    b = cv2.GaussianBlur(b.astype(np.float32), (0, 0), sigma)
    h, w = a.shape
    step = max(1, int(math.ceil(math.sqrt(h * w / max_px))))
    m = 6
    ys, xs = np.mgrid[m:h - m:step, m:w - m:step]
    xs, ys = xs.ravel().astype(float), ys.ravel().astype(float)
    X = poly_basis(xs, ys, (h, w), order)
    P = X.shape[1]
    av = a[ys.astype(int), xs.astype(int)].astype(np.float64)
    if init is not None:
        C = np.linalg.lstsq(X, init(xs, ys), rcond=None)[0]
    else:
        C = np.zeros((P, 2))
    bs = ndimage.spline_filter(b.astype(np.float64), order=3, mode="mirror")
    info = dict(converged=False, iterations=0)
    for it in range(iters):
        d = X @ C
        px, py = xs + d[:, 0], ys + d[:, 1]
        bw = ndimage.map_coordinates(bs, [py, px], order=3, mode="mirror", prefilter=False)
        gx = (ndimage.map_coordinates(bs, [py, px + 0.5], order=3, mode="mirror", prefilter=False)
              - ndimage.map_coordinates(bs, [py, px - 0.5], order=3, mode="mirror", prefilter=False))
        gy = (ndimage.map_coordinates(bs, [py + 0.5, px], order=3, mode="mirror", prefilter=False)
              - ndimage.map_coordinates(bs, [py - 0.5, px], order=3, mode="mirror", prefilter=False))
        # photometric: a ~ g * bw + o (joint, linear)
        A2 = np.column_stack([bw, np.ones_like(bw)])
        go = np.linalg.lstsq(A2, av, rcond=None)[0]
        r = av - (go[0] * bw + go[1])
        sd = 1.4826 * np.median(np.abs(r)) + 1e-6
        wts = np.where(np.abs(r) <= 1.345 * sd, 1.0, 1.345 * sd / np.maximum(np.abs(r), 1e-12))
        J = np.column_stack([X * (go[0] * gx)[:, None], X * (go[0] * gy)[:, None]])
        JW = J * wts[:, None]
        H_ = JW.T @ J + 1e-9 * np.eye(2 * P)
        delta = np.linalg.solve(H_, JW.T @ r)
        C = C + np.column_stack([delta[:P], delta[P:]])
        info["iterations"] = it + 1
        dd = X @ np.column_stack([delta[:P], delta[P:]])
        if np.abs(dd).max() < 1e-4:
            info["converged"] = True
            break
    try:
        cov = np.linalg.inv(H_) * (sd ** 2)
        info["param_sd"] = float(np.sqrt(np.diag(cov)).max())
    except np.linalg.LinAlgError:
        info["param_sd"] = float("inf")
    info["residual_sd"] = float(sd)

    def fn(x, y):
        return poly_basis(x, y, (h, w), order) @ C
    return C, fn, info


# ---------------------------------------------------------------------------------------------------------------
# the estimator

ABS_GRAD_FLOOR = 0.004     # sqrt(lambda_min) floor, luma units per px (1 grey level of 8 bits)
NOISE_GRAD_FACTOR = 0.6    # sqrt(lambda_min) must exceed this x the LR noise sigma
MIN_EIG_RATIO = 0.08       # lambda_min / lambda_max: below = one-dimensional structure
MIN_NCC = 0.3


def displacement_field(lr_grey: np.ndarray, ref_grey: np.ndarray, *, tile=None, use_flow=True):
    """Tile displacement field d with lr(x) ~ ref(x + d). Both on the same grid (same shape).

    Returns dict with per-tile arrays: centres (N,2), d (N,2), measurable (N,) bool, reasons, flow_d, T, shape.
    """
    h, w = lr_grey.shape
    T, step = tile or tile_size_for(h, w)
    origins = tile_origins(h, w, T, step)
    a = normalise(lr_grey)
    b = normalise(ref_grey)
    eig = structure_tensor_tiles(lr_grey, origins, T)
    sig = noise_sigma(lr_grey)
    floor = max(ABS_GRAD_FLOOR, NOISE_GRAD_FACTOR * sig)
    flow = farneback(a, b) if use_flow else None
    centres, ds, meas, why, fds, nccs = [], [], [], [], [], []
    for (x0, y0), (lmax, lmin) in zip(origins, eig):
        c = (x0 + (T - 1) / 2, y0 + (T - 1) / 2)
        centres.append(c)
        fd = (np.nan, np.nan)
        if flow is not None:
            q = T // 4
            fblk = flow[y0 + q:y0 + T - q, x0 + q:x0 + T - q].reshape(-1, 2)
            fd = tuple(np.median(fblk, axis=0))
        fds.append(fd)
        if math.sqrt(lmin) < floor:
            ds.append((np.nan, np.nan)); meas.append(False); why.append("flat"); nccs.append(np.nan)
            continue
        if lmin / max(lmax, 1e-20) < MIN_EIG_RATIO:
            ds.append((np.nan, np.nan)); meas.append(False); why.append("1-D"); nccs.append(np.nan)
            continue
        dx, dy, ncc, conv = phase_corr_tile(a, b, x0, y0, T)
        ds.append((dx, dy)); nccs.append(ncc)
        # the tile's estimate belongs to its texture-weighted centroid, not its geometric centre (matters where the
        # field varies inside the tile: roll, scale, distortion)
        win = _window_and_freqs(T)[0]
        at = a[y0:y0 + T, x0:x0 + T]
        gyt, gxt = np.gradient(at)
        e = (gxt * gxt + gyt * gyt) * win * win
        se = float(e.sum())
        if se > 0:
            yy, xx = np.mgrid[0:T, 0:T]
            centres[-1] = (x0 + float((e * xx).sum()) / se, y0 + float((e * yy).sum()) / se)
        if not conv:
            meas.append(False); why.append("no convergence"); continue
        if ncc < MIN_NCC:
            meas.append(False); why.append("low correlation"); continue
        if flow is not None:
            dis = math.hypot(dx - fd[0], dy - fd[1])
            if dis > max(0.25, 0.25 * math.hypot(dx, dy)):
                meas.append(False); why.append("phase/flow disagree"); continue
        meas.append(True); why.append("")
    return dict(centres=np.array(centres, float).reshape(-1, 2), d=np.array(ds, float).reshape(-1, 2),
                measurable=np.array(meas, bool), reasons=why, flow_d=np.array(fds, float).reshape(-1, 2),
                ncc=np.array(nccs, float), T=T, step=step, shape=(h, w), noise=sig, flow=flow)


def verdict_of(field) -> tuple[bool, str]:
    m = field["measurable"]
    n, N = int(m.sum()), len(m)
    if n < max(4, math.ceil(0.05 * N)):
        return False, f"{n} of {N} tiles measurable"
    P = field["centres"][m]
    ev = np.linalg.eigvalsh(np.cov(P.T))
    if math.sqrt(max(ev[0], 0)) < field["T"] / 2:
        return False, "measurable tiles are collinear"
    return True, ""


def summarise(field) -> dict:
    m = field["measurable"]
    h, w = field["shape"]
    ok, why = verdict_of(field)
    rep = dict(measurable_tiles=int(m.sum()), tiles=int(len(m)), measurable_fraction=float(m.mean()) if len(m) else 0.0,
               verdict="measurable" if ok else "unmeasurable", unmeasurable_reason=why, tile=field["T"],
               noise_sigma=field["noise"])
    counts = {}
    for r in field["reasons"]:
        if r:
            counts[r] = counts.get(r, 0) + 1
    rep["dropped_tiles"] = counts
    if m.sum() == 0:
        return rep
    d = field["d"][m]
    mag = np.hypot(d[:, 0], d[:, 1])
    rep.update(median=float(np.median(mag)), p95=float(np.percentile(mag, 95)), max=float(mag.max()),
               mean_vector=[float(np.median(d[:, 0])), float(np.median(d[:, 1]))])
    fd = field["flow_d"][m]
    fmag = np.hypot(fd[:, 0], fd[:, 1])
    rep["flow_median"] = float(np.median(fmag))
    if ok:
        A = fit_affine(field["centres"][m], d)
        corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float)
        cd = np.column_stack([corners, np.ones(4)]) @ A.T
        rep["affine"] = A.tolist()
        rep["affine_corners"] = cd.tolist()
        rep["affine_corner_max"] = float(np.hypot(cd[:, 0], cd[:, 1]).max())
        res = d - np.column_stack([field["centres"][m], np.ones(int(m.sum()))]) @ A.T
        rep["affine_residual_rms"] = float(np.sqrt((res ** 2).sum(1).mean()))
    return rep


def estimate_pair(lr: np.ndarray, hr: np.ndarray, scale: int | None = None, *, return_field=False):
    """LR and HR images (float RGB or grey). HR must be scale x LR (scale inferred when None)."""
    lg, hg = luma(lr), luma(hr)
    if scale is None:
        scale = int(round(hg.shape[1] / lg.shape[1]))
    hd = area_down(hg, scale)
    h, w = min(lg.shape[0], hd.shape[0]), min(lg.shape[1], hd.shape[1])
    field = displacement_field(lg[:h, :w], hd[:h, :w])
    rep = summarise(field)
    rep["scale"] = scale
    return (rep, field) if return_field else rep


def estimate_files(lr_path, hr_path, scale=None, **kw):
    return estimate_pair(load_rgb(lr_path), load_rgb(hr_path), scale, **kw)


# ---------------------------------------------------------------------------------------------------------------
# known-displacement validation on real pairs

def warp_hr_known(hr: np.ndarray, s: int, shift=(0.0, 0.0), roll_deg=0.0, scale=1.0):
    """Resample the HR so that content moves by t(x) - x (LR px) where t = about-centre similarity + shift.

    Returns (hr2, g) where g(x) (LR coords) is the known displacement added to the field: if LR(x) ~ HRd(x + d0),
    then LR(x) ~ HRd2(x + d0 + g(x + d0)) with HRd2(t(z)) = HRd(z), i.e. g(z) = t(z) - z.
    """
    H, W = hr.shape[:2]
    # LR coordinates of the frame centre
    lw, lh = W / s, H / s
    cx, cy = (lw - 1) / 2, (lh - 1) / 2
    th = math.radians(roll_deg)
    R = scale * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    tvec = np.array([cx, cy]) + np.array(shift) - R @ np.array([cx, cy])

    def t(z):
        return z @ R.T + tvec

    Ri = np.linalg.inv(R)
    # HR2 at HR pixel q: LR coord x = (q + 0.5)/s - 0.5 ; source LR z = t^-1(x) ; HR q' = s (z + 0.5) - 0.5
    qx, qy = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    x = np.stack([(qx + 0.5) / s - 0.5, (qy + 0.5) / s - 0.5], -1)
    z = (x - tvec) @ Ri.T
    mx = s * (z[..., 0] + 0.5) - 0.5
    my = s * (z[..., 1] + 0.5) - 0.5
    hr2 = np.clip(remap_exact(hr, mx, my), 0, 1)

    def g(p):
        p = np.asarray(p, float)
        return t(p) - p
    return hr2, g


def validate(n_pairs=24, seed=0, verbose=True):
    """Differential validation: field(LR, HR2) - field(LR, HR) vs the known added displacement, on real pairs."""
    root = Path(__file__).resolve().parents[3] / "shared" / "data" / "pairs"
    if not root.exists():
        root = Path("/work/shared/data/pairs")
    files = []
    for ds in ("realsr_x4", "drealsr_x4"):
        names = sorted(p.name for p in (root / ds / "HR").iterdir())
        files += [(root / ds / "LR" / n, root / ds / "HR" / n) for n in names]
    rng = np.random.default_rng(seed)
    idx = np.linspace(0, len(files) - 1, n_pairs).round().astype(int)
    cases = []
    for k, i in enumerate(idx):
        mag = [0.1, 0.25, 0.5, 1.0][k % 4]
        ang = rng.uniform(0, 2 * np.pi)
        cases.append(dict(i=int(i), shift=(mag * math.cos(ang), mag * math.sin(ang)), roll=0.0, scale=1.0,
                          kind=f"shift {mag}"))
        cases.append(dict(i=int(i), shift=(0.0, 0.0), roll=0.3 * rng.choice([-1, 1]), scale=1.0, kind="roll 0.3deg"))
        cases.append(dict(i=int(i), shift=(0.0, 0.0), roll=0.0, scale=1 + 0.005 * rng.choice([-1, 1]),
                          kind="scale 0.5%"))
    base = {}
    rows = []
    for c in cases:
        lrp, hrp = files[c["i"]]
        lr, hr = load_rgb(lrp), load_rgb(hrp)
        s = hr.shape[1] // lr.shape[1]
        if c["i"] not in base:
            base[c["i"]] = estimate_pair(lr, hr, s, return_field=True)[1]
        f0 = base[c["i"]]
        hr2, g = warp_hr_known(hr, s, c["shift"], c["roll"], c["scale"])
        _, f1 = estimate_pair(lr, hr2, s, return_field=True)
        m = f0["measurable"] & f1["measurable"]
        if m.sum() < 4:
            rows.append(dict(pair=lrp.name, kind=c["kind"], measurable=False))
            continue
        z = f0["centres"][m] + f0["d"][m]
        expect = g(z)
        got = f1["d"][m] - f0["d"][m]
        err = np.hypot(*(got - expect).T)
        mag_true = np.hypot(*expect.T)
        # pair-level quantity: the affine field's displacement at the frame corners (difference of the two fits)
        h, w = f0["shape"]
        corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float)
        A0 = fit_affine(f0["centres"][m], f0["d"][m])
        A1 = fit_affine(f1["centres"][m], f1["d"][m])
        C1 = np.column_stack([corners, np.ones(4)])
        corner_err = float(np.hypot(*((C1 @ (A1 - A0).T) - g(corners)).T).max())
        # whole-pair statistic error: median magnitude of the added field
        rows.append(dict(pair=f"{lrp.parent.parent.parent.name}/{lrp.name}", kind=c["kind"], measurable=True,
                         tiles=int(m.sum()), true_median=float(np.median(mag_true)),
                         err_median=float(np.median(err)), err_rms=float(np.sqrt((err ** 2).mean())),
                         err_p95=float(np.percentile(err, 95)), affine_corner_err=corner_err))
        if verbose:
            r = rows[-1]
            print(f"{r['pair']:40s} {r['kind']:14s} tiles {r['tiles']:3d} true {r['true_median']:.3f} "
                  f"err median {r['err_median']:.4f} rms {r['err_rms']:.4f} p95 {r['err_p95']:.4f} "
                  f"affine corner {r['affine_corner_err']:.4f}", flush=True)
    return rows


def _selftest_synthetic(verbose=True):
    """Absolute validation: LR := area-downscaled real HR (so d0 = 0 exactly) + noise; known shifts."""
    root = Path("/work/shared/data/pairs")
    rows = []
    rng = np.random.default_rng(1)
    for ds in ("realsr_x4", "drealsr_x4"):
        names = sorted(p.name for p in (root / ds / "HR").iterdir())[::12]
        for n in names:
            hr = load_rgb(root / ds / "HR" / n)
            lr = area_down(hr, 4)
            lr = np.clip(lr + rng.normal(0, 0.005, lr.shape).astype(np.float32), 0, 1)
            for mag in (0.1, 0.3, 0.7):
                ang = rng.uniform(0, 2 * np.pi)
                sh = (mag * math.cos(ang), mag * math.sin(ang))
                hr2, g = warp_hr_known(hr, 4, sh, 0.0, 1.0)
                rep, f = estimate_pair(lr, hr2, 4, return_field=True)
                m = f["measurable"]
                if m.sum() == 0:
                    continue
                err = np.hypot(*(f["d"][m] - g(f["centres"][m])).T)
                rows.append(dict(pair=f"{ds}/{n}", shift=mag, tiles=int(m.sum()), err_median=float(np.median(err)),
                                 err_rms=float(np.sqrt((err ** 2).mean())), verdict=rep["verdict"]))
                if verbose:
                    print(rows[-1], flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lr", nargs="?")
    ap.add_argument("hr", nargs="?")
    ap.add_argument("--scale", type=int)
    ap.add_argument("--validate", action="store_true", help="known displacements on real pairs")
    ap.add_argument("--n", type=int, default=24, help="pairs for --validate (x3 cases each)")
    ap.add_argument("--out", help="write validation rows as JSON here")
    a = ap.parse_args(argv)
    if a.validate:
        rows = validate(a.n)
        syn = _selftest_synthetic()
        summary = {}
        for kind in sorted({r["kind"] for r in rows}):
            rr = [r for r in rows if r["kind"] == kind and r["measurable"]]
            if rr:
                e = np.array([r["err_median"] for r in rr]); e2 = np.array([r["err_rms"] for r in rr])
                summary[kind] = dict(n=len(rr), unmeasurable=sum(1 for r in rows if r["kind"] == kind and not r["measurable"]),
                                     median_of_tile_median_err=float(np.median(e)), worst_tile_median_err=float(e.max()),
                                     median_tile_rms_err=float(np.median(e2)),
                                     median_affine_corner_err=float(np.median([r["affine_corner_err"] for r in rr])),
                                     worst_affine_corner_err=float(np.max([r["affine_corner_err"] for r in rr])))
        for mag in (0.1, 0.3, 0.7):
            rr = [r for r in syn if r["shift"] == mag]
            if rr:
                e = np.array([r["err_median"] for r in rr])
                summary[f"synthetic shift {mag}"] = dict(n=len(rr), median_of_tile_median_err=float(np.median(e)),
                                                         worst_tile_median_err=float(e.max()))
        print(json.dumps(summary, indent=1))
        if a.out:
            Path(a.out).write_text(json.dumps(dict(summary=summary, differential=rows, synthetic=syn), indent=1))
        return 0
    if not (a.lr and a.hr):
        ap.error("LR and HR paths required")
    print(json.dumps(estimate_files(a.lr, a.hr, a.scale), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
