"""The transfer curve two exposures of a real photograph agree on, where their files state none
(:mod:`realsr_tools.registration.curves`)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from realsr_tools.geometry import scaling, translation
from realsr_tools.registration.curves import (MIN_BEND, MIN_SAMPLES, CurveEstimate, curve_from_exposures,
                                             camera_curve, exposure_curve, overturning_curve, scene_curve)

# Encodings written out here (not realsr's): IEC 61966-2-1 sRGB, ITU-R BT.709 and pure powers.
ENCODE = {
    "srgb": lambda light: np.where(light <= 0.0031308, 12.92 * light, 1.055 * light ** (1 / 2.4) - 0.055),
    "bt709": lambda light: np.where(light < 0.018, 4.5 * light, 1.099 * light ** 0.45 - 0.099),
    "power:2.2": lambda light: light ** (1 / 2.2),
    "power:1.8": lambda light: light ** (1 / 1.8),
}


def srgb_decode(code):
    return np.where(code <= 0.04045, code / 12.92, ((code + 0.055) / 1.055) ** 2.4)


def two_exposures(data_dir, encoding: str, gain: float, white_balance=(1.0, 1.0, 1.0)):
    """A real photograph as an HR capture and, area-reduced 2x in light, as an LR capture ``gain`` times brighter
    with its own white balance and 20 % vignetting; both 16-bit values written with ``encoding``."""
    photo = cv2.imread(str(data_dir / "photos" / "kodak_kodim03.png"))[..., ::-1].astype(np.float64) / 255
    hr_light = 0.8 * srgb_decode(photo)
    lr_light = cv2.resize(hr_light, (hr_light.shape[1] // 2, hr_light.shape[0] // 2), interpolation=cv2.INTER_AREA)
    h, w = lr_light.shape[:2]
    v, u = np.mgrid[0:h, 0:w]
    radius2 = ((u - w / 2) ** 2 + (v - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    lr_light = lr_light * gain * np.asarray(white_balance) * (1 - 0.2 * radius2)[..., None]
    return [np.round(ENCODE[encoding](np.clip(light, 0, 1)) * 65535).astype(np.uint16)
            for light in (lr_light, hr_light)]


def as_assumed(lr, hr):
    """Both captures decoded as sRGB (the assumption), the HR averaged onto the LR's grid in that light."""
    lr_light, hr_light = (srgb_decode(image / 65535.0).astype(np.float32) for image in (lr, hr))
    return lr_light, cv2.resize(hr_light, (lr.shape[1], lr.shape[0]), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("encoding,found", [("power:2.2", "power:2.2"), ("bt709", "bt709"), ("srgb", None),
                                            ("power:1.8", "power:2.2")])
def test_two_exposures_tell_the_curve_their_files_do_not_state(data_dir, encoding, found):
    """Two captures 0.9 EV apart with different white balance: decoded with their own curve their light is a gain
    apart at every brightness, with another it bends towards black. sRGB stands where it is right; a pure power of
    another exponent is found as the 2.2 power, since exposures cannot tell exponents apart."""
    lr, hr = two_exposures(data_dir, encoding, 2 ** -0.9, (1.1, 1.0, 0.9))
    estimate = curve_from_exposures(*as_assumed(lr, hr))
    assert estimate.curve == found, estimate
    assert estimate.samples >= MIN_SAMPLES
    own = "power:2.2" if encoding.startswith("power") else encoding
    assert estimate.bend[own] < 0.01 and max(estimate.bend.values()) > 0.02, estimate


def test_the_exposures_are_asked_where_a_coarse_match_puts_them(data_dir):
    """From the captures themselves (their colour thumbnails, the HR warped by the mapping): the true mapping and
    one 1.5 LR px and 1 % off (what a coarse match leaves) find the same curve; a mapping onto the wrong part of
    the frame finds none."""
    lr, hr = two_exposures(data_dir, "power:2.2", 2 ** -0.9, (1.1, 1.0, 0.9))
    true = scaling(2.0)  # LR pixel centres onto the HR's (the LR is the HR area-reduced 2x)
    off = true @ translation(1.5, -1.0) @ scaling(1.01)
    for lr_to_hr in (true, off):
        assert exposure_curve(lr, hr, lr_to_hr, ratio=2.0).curve == "power:2.2"
    elsewhere = true @ translation(lr.shape[1] / 3, 0)
    assert exposure_curve(lr, hr, elsewhere, ratio=2.0).curve is None


def test_two_captures_of_one_exposure_leave_the_assumed_srgb(data_dir):
    """Same exposure, same white balance: every curve leaves them a gain apart (but the vignetting), so nothing
    overturns the assumption, whatever the files were encoded with; nor does a window too small to hold the
    evidence (20,000 values), even 0.9 EV apart."""
    estimate = curve_from_exposures(*as_assumed(*two_exposures(data_dir, "power:2.2", 1.0)))
    assert estimate.curve is None, estimate
    assert estimate.bend["srgb"] < 0.02, estimate
    lr_light, hr_light = as_assumed(*two_exposures(data_dir, "power:2.2", 2 ** -0.9))
    assert curve_from_exposures(lr_light[:60, :100], hr_light[:60, :100]).curve is None
    assert curve_from_exposures(lr_light[:1, :1], hr_light[:1, :1]).samples == 0


def _estimate(curve, srgb, power, bt709=0.03):
    return CurveEstimate(curve, {"srgb": srgb, "bt709": bt709, "power:2.2": power}, MIN_SAMPLES)


def test_a_scene_s_undecided_pairs_take_the_curve_its_decided_pairs_agree_on():
    """Bends measured on generator hard seed 9's 720-px photograph (x4 decided, x3 0.06 EV from its HR) and seed 65's
    scene 1 (an undecided pair that power 2.2 bends more than sRGB does, by more than MIN_BEND: it keeps sRGB)."""
    x4, x3 = _estimate("power:2.2", 0.0356, 0.0068), _estimate(None, 0.0067, 0.0064)
    contradicting = _estimate(None, 0.0256, 0.0276)
    stated = None  # a pair whose files state their curve: nothing was asked
    assert scene_curve([stated, x3, x4, contradicting]) == ("power:2.2", [1])
    assert contradicting.bend["power:2.2"] >= MIN_BEND
    # an undecided pair whose exposures measured nothing takes it too
    assert scene_curve([x4, _estimate(None, None, None)]) == ("power:2.2", [1])
    # nothing decided, or decided pairs that disagree: every pair keeps what it found
    assert scene_curve([x3, contradicting, stated]) == (None, [])
    assert scene_curve([x4, x3, _estimate("bt709", 0.0247, 0.0377, bt709=0.012)]) == (None, [])
    assert scene_curve([x4, _estimate("power:2.2", 0.03, 0.004)]) == ("power:2.2", [])


def test_a_scene_none_of_whose_pairs_decided_takes_its_camera_s_curve():
    """Bends (sRGB, BT.709, power 2.2) measured on generator BT.709 files: hard 111's camera-1 pentax x2 / x3
    decided BT.709; its nikon_d90 chart's three pairs did not, each bending BT.709 a little less than sRGB; hard
    115's nikon_d90 chart x2 bends it more (0.005 against 0.0032) and keeps its scene on the assumed curve."""
    pentax = [_estimate("bt709", 0.0182, 0.0513, bt709=0.0036), _estimate("bt709", 0.0139, 0.0409, bt709=0.0022)]
    chart = [_estimate(None, 0.003, 0.0034, bt709=0.0027), _estimate(None, 0.005, 0.0073, bt709=0.0038),
             _estimate(None, 0.0025, 0.0116, bt709=0.0022)]
    unmeasured, stated = _estimate(None, None, None, bt709=None), None
    leaning = _estimate(None, 0.0032, 0.0209, bt709=0.005)
    assert camera_curve([pentax, chart]) == ("bt709", [(1, 0), (1, 1), (1, 2)])
    # a pair whose exposures measured nothing takes it with its scene; one whose files state a curve is not asked
    assert camera_curve([pentax, [unmeasured, stated]]) == ("bt709", [(1, 0)])
    # a scene with a pair whose own exposures lean the other way keeps the assumed curve, every pair of it
    assert camera_curve([pentax, chart[:2] + [leaning], chart]) == ("bt709", [(2, 0), (2, 1), (2, 2)])
    # a scene with a pair that decided is its own scene's business (scene_curve), even where the rest did not
    assert camera_curve([pentax, [pentax[0], chart[0]]]) == ("bt709", [])
    # pairs that decided differently anywhere leave every scene as it is; no decision, nothing to take
    assert camera_curve([pentax, [_estimate("power:2.2", 0.03, 0.004)], chart]) == (None, [])
    assert camera_curve([chart, [leaning]]) == (None, [])


def test_a_cameras_lone_decision_reaches_only_scenes_whose_own_exposures_lean_its_way():
    """One deciding pair in a camera reaches an undecided scene only where one of that scene's pairs bends its curve
    less than sRGB and none more. Bends (sRGB, BT.709, power 2.2) measured: generator hard 118 (BT.709 files), camera
    0's sony_slta57 x3 decided BT.709; its canon_5dmk3 and nikon_d3100 chart scenes each had one measured pair, both
    leaning to BT.709 (written 0.21 and 0.22 / 0.35 LR px off as sRGB). Hard 114 (2.2 power files): camera 2's
    2880-px canon_5dmk3 x4 found BT.709, wrongly (its camera's power decisions kept the rule out there); undecided
    pairs of the same camera's files, its 720-px canon_5dmk3 x2 and nikon_d90 chart x3 / x4, bend BT.709 more than
    sRGB: were that decision its camera's only one, they would keep their scenes out."""
    sony = _estimate("bt709", 0.0255, 0.0864, bt709=0.012)
    canon = [_estimate(None, 0.0087, 0.0222, bt709=0.0018), _estimate(None, None, None, bt709=None)]
    chart = [_estimate(None, 0.0113, 0.0377, bt709=0.0091), _estimate(None, None, None, bt709=None)]
    assert camera_curve([[sony], canon, chart]) == ("bt709", [(1, 0), (1, 1), (2, 0), (2, 1)])
    # a scene with nothing measured takes two agreeing decisions' curve, not a lone one's
    unmeasured = [_estimate(None, None, None, bt709=None)]
    assert camera_curve([[sony], unmeasured]) == ("bt709", [])
    assert camera_curve([[sony, sony], unmeasured]) == ("bt709", [(1, 0)])
    wrong = _estimate("bt709", 0.0321, 0.0492, bt709=0.0127)
    canon_720 = [_estimate(None, 0.0053, 0.0028, bt709=0.0083)]
    d90 = [_estimate(None, 0.0144, 0.0164, bt709=0.0248), _estimate(None, 0.0169, 0.0121, bt709=0.0259)]
    assert camera_curve([[wrong], canon_720, d90]) == ("bt709", [])


# Bends (sRGB, BT.709, power 2.2) measured on generator pairs whose files' curve is known, and what decides.
MEASURED_BENDS = [
    # a bend under 0.02 with the files' curve near the floor (session 43): normal 101's nikon_d90 chart x3 (power
    # files), hard 105's pentax x3 (BT.709 files)
    ((0.0174, 0.0249, 0.0019), "power:2.2"),
    ((0.0158, 0.0007, 0.0171), "bt709"),
    # sRGB files (session 42): another candidate less bent, but not near the floor; the largest own bend
    ((0.0112, 0.0204, 0.0069), None),
    ((0.0074, 0.0096, 0.0022), None),
    ((0.0245, 0.0452, 0.0230), None),
    ((0.0529, 0.0542, 0.0508), None),  # session 43's hard 106, sRGB files
    # a large bend overturns at half (hard 105's BT.709 files, x3); the same pair bent 0.004 tells nothing
    ((0.0367, 0.0010, 0.0976), "bt709"),
    ((0.0040, 0.0005, 0.0030), None),
]


@pytest.mark.parametrize("bends,found", MEASURED_BENDS)
def test_a_small_bend_overturns_srgb_only_where_the_candidate_is_near_the_floor(bends, found):
    """Between SMALL_BEND and MIN_BEND sRGB files' own curve bends their exposures too (0.0245 on a generator
    set, 0.053 on another), so there the candidate must be five times flatter, not two: the power / BT.709 files' pairs
    decide, the sRGB files' pairs, whose best other candidate was 0.3-0.9 times as bent, do not."""
    bend = dict(zip(("srgb", "bt709", "power:2.2"), bends))
    assert overturning_curve(bend) == found
    assert overturning_curve({**bend, "srgb": None}) is None


@pytest.mark.parametrize("encoding", ["power:2.2", "bt709", "srgb"])
def test_a_zoom_pairs_hr_vignetting_leaves_its_own_curve_a_gain_apart(data_dir, encoding):
    """A zoom pair as the curve test sees it: the HR's frame is the window, so its vignetting (35 %) spans the whole
    window, while the LR's (30 % over a frame twice as large) barely varies there; the real photograph sits in a
    dark frame, as a chart does, 0.7 EV and +-15 % white balance apart. Fitted as the photometric correction maps
    them (HR from LR), their ratio is a quadratic surface and the files' own curve is a gain apart; fitted the other
    way round (1 / quadratic) a power-2.2 pair bent 0.011, over half of MIN_BEND (session 41)."""
    photo = cv2.imread(str(data_dir / "photos" / "kodak_kodim03.png"))[..., ::-1].astype(np.float64) / 255
    light = cv2.resize(0.8 * srgb_decode(photo), (photo.shape[1] // 2, photo.shape[0] // 2),
                       interpolation=cv2.INTER_AREA)
    light = cv2.copyMakeBorder(light, 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=(0.01, 0.01, 0.01))
    h, w = light.shape[:2]
    v, u = np.mgrid[0:h, 0:w]
    radius2 = (((u - (w - 1) / 2) ** 2 + (v - (h - 1) / 2) ** 2) / (((w - 1) / 2) ** 2 + ((h - 1) / 2) ** 2))[..., None]
    hr_light = light * (1 - 0.35 * radius2)
    lr_light = light * 2 ** -0.7 * np.array([1.15, 1.0, 0.87]) * (1 - 0.3 * radius2 / 4)

    def as_srgb(light):  # written as 16-bit with ``encoding``, read back as sRGB (the assumption)
        code = np.round(ENCODE[encoding](np.clip(light, 0, 1)) * 65535) / 65535
        return srgb_decode(code).astype(np.float32)

    estimate = curve_from_exposures(as_srgb(lr_light), as_srgb(hr_light))
    assert estimate.curve == (None if encoding == "srgb" else encoding), estimate
    assert estimate.bend[encoding] < 0.005 and max(estimate.bend.values()) > MIN_BEND, estimate
