"""Sub-pixel registration of multi-focal captures: pure functions on grey images.

Convention
----------
The coordinate convention is :mod:`realsr_tools.geometry`'s. Images inside the algorithms are float32; grey images
are BT.601 luma in [0, 1] (:mod:`.grey`).

Pipeline per pair (:func:`register` on grey images, :func:`register_captures` on RGB captures):

1. *Prior*: the HR field sits at the LR centre, magnified by the focal ratio.
2. *Coarse*, two independent estimates checked against each other:
   a. a pyramid search: the HR image, area-downscaled to the LR's scale, is matched over the whole LR image by
      normalised cross-correlation (``cv2.matchTemplate``) for a grid of magnifications (+-12 % around the focal
      ratio) and rolls (+-4 deg); the HR frame's central 85 % is one template, so repetitive patterns (colour
      charts, windows) and weak texture do not mislead it, and where the whole frame at the match's magnification
      and roll puts it elsewhere and fits better, the grid is searched again with the whole frame;
   b. SIFT features on the pre-zoomed images with a ratio test and RANSAC homography.
   When both succeed and disagree, both are refined and the one with the better final fit wins.
   c. (:func:`register_captures`, on RGB captures) the pyramid search again on colour thumbnails, grey and chroma,
      near a's magnification and roll: where a took one chart patch for another of the same luma, its estimate is
      refined too, and wins only at another match that fits better (:func:`refine_starts`).
   d. (:func:`register_captures`) where the refinement of every start diverges, the grey pyramid search again
      with the whole HR frame as its template from the start, and its estimate refined alone.
   e. (:func:`register_captures` with ``ask_exposures``: two captures whose files state no transfer curve) where
      the first estimate puts them, the two exposures are asked which curve makes them a gain apart
      (:mod:`.curves`); where they clearly say another than the assumed sRGB, the greys are decoded with it.
3. *Colour balance* (:func:`register_captures`, on RGB captures): where the two captures' white balance differs,
   the HR's channels are scaled to the LR's (:func:`.luma.channel_balance`, measured where the first grey coarse
   estimate puts the overlap, and for a colour estimate where it puts it) and its grey formed again, so that the
   luma ratio of the two captures does not depend on each object's colour.
4. *Refinement*: forward-compositional Gauss-Newton on an image pyramid (coarse to fine, up to full LR
   resolution) of a full 8-parameter homography together with a photometric model re-estimated in every step
   (a quadratic gain surface and an offset on the luma: exposure, white balance as seen in luma, vignetting; and
   a Laplacian term for the captures' blur difference), with Huber weights (scale from the MAD) so that moving
   objects do not pull the fit, and saturated pixels (and those their smoothing reaches) excluded. The LR is the
   fixed template (never resampled); the HR is area-downscaled to the LR's scale at each level and warped.
   At the finest level the geometric model is chosen by its leave-one-block-out cost (:mod:`.models`):
   translation at the focal ratio, similarity, affine, homography, or homography with radial lens terms; only
   what the overlap supports is fitted, and the choice with its evidence is recorded (:class:`ModelChoice`).
5. *Checks* (:class:`RegistrationError` with the reason): no coarse estimate, magnification more than
   :data:`MAX_ZOOM_ERROR` from the focal ratio, too little overlap, low correlation after refinement, residual
   tile misalignment too large. A radial pattern of residual tile shifts (lens distortion that a homography cannot
   absorb) is measured and reported by :func:`distortion_check`.

Per scene (:mod:`.consistency`): the scene's LR captures registered to each other must put each pair's window where
its own mapping does; align refuses a pair every other capture contradicts.
"""

from __future__ import annotations

from ..errors import RegistrationError
from .coarse import feature_coarse, search_coarse
from .luma import grey, registration_grey
from .gauss_newton import refine
from .estimate import (CoarseStarts, DistortionCheck, Registration, check_registration, coarse_starts,
                       distortion_check, refine_starts, register, register_captures)
from .models import ModelChoice

__all__ = ["CoarseStarts", "DistortionCheck", "ModelChoice", "Registration", "RegistrationError", "check_registration",
           "coarse_starts", "distortion_check", "feature_coarse", "grey", "refine", "refine_starts", "register",
           "register_captures", "registration_grey", "search_coarse"]
