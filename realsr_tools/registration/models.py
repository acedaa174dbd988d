"""Geometric models of an LR -> HR mapping, and the choice among them by held-out evidence.

Convention
----------
:mod:`realsr_tools.geometry`'s. A model maps LR source px to HR source px:

- ``translation``: the focal-ratio prior (the HR field centred on the LR centre, magnified by the focal ratio, no
  roll) followed by a shift, ``P @ T(tx, ty)``: 2 parameters;
- ``similarity``: magnification, roll and shift (4);
- ``affine`` (6) and ``homography`` (8);
- ``radial``: the homography with the two radial lens terms of :class:`realsr_tools.geometry.RadialDistortion` (10;
  12 where the evidence then also frees the HR lens term's centre, ``gauss_newton._decentred``).

Each is nested in the next. The evidence for a model is its *leave-one-block-out* cost: the overlap is cut into a
grid of blocks, the model is fitted on all blocks but one and its robust cost is measured on the block left out,
for every block in turn (:func:`cross_validate`, on the Gauss-Newton quadratic model of the cost, so no refit of
the images is needed). A term that only bends the mapping where the data cannot pin it predicts the held-out
blocks worse, not better, so the cost of that flexibility is measured instead of assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import apply_homography, translation

MODELS = ("translation", "similarity", "affine", "homography", "radial")
PARAMETERS = {"translation": 2, "similarity": 4, "affine": 6, "homography": 8, "radial": 10}


@dataclass(frozen=True)
class ModelChoice:
    """Which geometric model a registration used, and the evidence.

    ``evidence``: per candidate model, its leave-one-block-out cost above the best candidate's, in units of the
    robust residual variance per independent sample (0 for the best; a model is chosen when it is the simplest
    within :data:`realsr_tools.registration.gauss_newton.MODEL_TOLERANCE` of the best). ``blocks``: blocks of the
    grid that carried data. ``corner_bend``: LR px by which the chosen mapping at the overlap's corners departs from
    the pure shift (at the focal ratio) closest to it: how much the correction bends the corners. ``radial_terms``:
    for ``radial``, the lenses whose term was fitted (``("lr", "hr")``, or ``("hr",)`` when the LR term came out
    beyond any real lens and is held at 0; the evidence was measured with both). ``centre_evidence``: for ``radial``,
    the held-out cost that freeing the HR lens term's centre removed (same units; ``None``: not tried), and
    ``centre_fitted`` whether it was freed (the evidence above the tolerance, or with the fifth order's above both,
    and the fitted centre a lens's);
    ``fifth_evidence`` and ``fifth_fitted`` the same for the HR lens's fifth order, fitted with the freed centre;
    ``lr_term_held`` whether the freed centre was fitted with the LR lens's term held at the radial fit's (the fit
    that refitted it beside the centre did not stand).
    """

    name: str
    evidence: dict[str, float]
    blocks: int
    corner_bend: float
    t_stats: dict[str, float]  # per other model: paired t statistic of its held-out gain over the chosen one
    radial_terms: tuple[str, ...] = ("lr", "hr")
    centre_evidence: float | None = None
    centre_fitted: bool = False
    fifth_evidence: float | None = None
    fifth_fitted: bool = False
    lr_term_held: bool = False

    @property
    def parameters(self) -> int:
        """Geometric parameters fitted: the homography's 8, each radial term fitted, the HR lens centre's 2 and its
        fifth order where fitted, or the model's own."""
        if self.name != "radial":
            return PARAMETERS[self.name]
        return 8 + len(self.radial_terms) + (2 if self.centre_fitted else 0) + (1 if self.fifth_fitted else 0)

    def to_dict(self) -> dict:
        return {"name": self.name, "parameters": self.parameters,
                "radial_terms": list(self.radial_terms) if self.name == "radial" else None,
                "hr_centre": ({"fitted": self.centre_fitted, "evidence": round(float(self.centre_evidence), 2)}
                              | ({"fifth_order": self.fifth_fitted,
                                  "fifth_order_evidence": round(float(self.fifth_evidence), 2)}
                                 if self.fifth_evidence is not None else {})
                              | ({"lr_term_held": self.lr_term_held} if self.centre_fitted else {})
                              if self.name == "radial" and self.centre_evidence is not None else None),
                "evidence": {k: round(float(v), 2) for k, v in self.evidence.items()}, "blocks": self.blocks,
                "corner_bend": round(float(self.corner_bend), 4),
                "t": {k: round(float(v), 2) for k, v in self.t_stats.items()},
                "measure": "leave-one-block-out robust cost above the best model, per independent sample"}


def model_matrix(name: str, phi: np.ndarray, *, prior: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """LR -> HR homography of a ``translation``, ``similarity`` or ``affine`` model with parameters ``phi``.

    ``prior``: the focal-ratio prior (:func:`realsr_tools.geometry.prior_homography`), the base of ``translation``;
    ``centre``: LR point about which the linear part acts (conditioning only).
    """
    phi = np.asarray(phi, np.float64)
    to_centre = translation(-centre[0], -centre[1])
    if name == "translation":
        return prior @ translation(phi[0], phi[1])
    if name == "similarity":
        a, b, tx, ty = phi
        return np.array([[a, -b, tx], [b, a, ty], [0, 0, 1.0]]) @ to_centre
    if name == "affine":
        return np.array([[phi[0], phi[1], phi[2]], [phi[3], phi[4], phi[5]], [0, 0, 1.0]]) @ to_centre
    raise ValueError(f"no parametric form for model {name!r}; known: translation, similarity, affine")


def fit_model(name: str, points: np.ndarray, mapped: np.ndarray, *, prior: np.ndarray,
              centre: tuple[float, float]) -> np.ndarray:
    """Least-squares parameters of a model that maps LR ``points`` closest to HR ``mapped`` (N x 2 each)."""
    points, mapped = np.asarray(points, np.float64), np.asarray(mapped, np.float64)
    if name == "translation":
        return np.mean(apply_homography(np.linalg.inv(prior), mapped) - points, axis=0)
    p = points - centre
    n = len(p)
    one, zero = np.ones(n), np.zeros(n)
    if name == "similarity":
        design = np.concatenate([np.stack([p[:, 0], -p[:, 1], one, zero], 1),
                                 np.stack([p[:, 1], p[:, 0], zero, one], 1)])
    elif name == "affine":
        design = np.concatenate([np.stack([p[:, 0], p[:, 1], one, zero, zero, zero], 1),
                                 np.stack([zero, zero, zero, p[:, 0], p[:, 1], one], 1)])
    else:
        raise ValueError(f"no parametric form for model {name!r}; known: translation, similarity, affine")
    return np.linalg.lstsq(design, np.concatenate([mapped[:, 0], mapped[:, 1]]), rcond=None)[0]


@dataclass(frozen=True)
class BlockSystems:
    """The Gauss-Newton quadratic model of the robust cost, per block: ``c_b + 2 g_b' theta + theta' H_b theta``
    for a parameter step ``theta``."""

    hessians: np.ndarray  # blocks x P x P
    gradients: np.ndarray  # blocks x P
    costs: np.ndarray  # blocks

    @classmethod
    def from_pixels(cls, jac: np.ndarray, residual: np.ndarray, weights: np.ndarray,
                    labels: np.ndarray, blocks: int) -> "BlockSystems":
        p = jac.shape[1]
        hessians, gradients, costs = np.zeros((blocks, p, p)), np.zeros((blocks, p)), np.zeros(blocks)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(blocks + 1))
        for b in range(blocks):
            rows = order[bounds[b]:bounds[b + 1]]
            if rows.size == 0:
                continue
            j, r, w = jac[rows], residual[rows], weights[rows]
            jw = j * w[:, None]
            hessians[b], gradients[b], costs[b] = jw.T @ j, jw.T @ r, float(np.sum(w * r * r))
        return cls(hessians, gradients, costs)


def cross_validate(systems: BlockSystems, offset: np.ndarray, basis: np.ndarray, prior_hessian: np.ndarray,
                   prior_gradient: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leave-one-block-out cost of a model whose steps are ``theta = offset + basis @ z``.

    ``prior_hessian``, ``prior_gradient``: a quadratic prior ``z' P z + 2 p' z`` (in the cost's units). Returns the
    held-out cost of each block (0 for a block without data), the step ``z`` fitted on all blocks, and
    ``sum_b basis' H_b basis + P`` (whose inverse times the residual variance is the covariance of ``z``).
    """
    hz = np.einsum("pi,bpq,qj->bij", basis, systems.hessians, basis)
    hoff = np.einsum("bpq,q->bp", systems.hessians, offset)
    gz = np.einsum("pi,bp->bi", basis, systems.gradients + hoff)
    cz = systems.costs + 2 * systems.gradients @ offset + hoff @ offset
    total_h, total_g = hz.sum(0) + prior_hessian, gz.sum(0) + prior_gradient
    ridge = 1e-9 * max(float(np.trace(total_h)) / len(total_h), 1e-12) * np.eye(len(total_h))
    held_out = np.zeros(len(cz))
    for b in range(len(cz)):
        if not systems.costs[b]:
            continue
        z = -np.linalg.lstsq(total_h - hz[b] + ridge, total_g - gz[b], rcond=None)[0]
        held_out[b] = float(cz[b] + 2 * gz[b] @ z + z @ hz[b] @ z)
    z_all = -np.linalg.lstsq(total_h + ridge, total_g, rcond=None)[0]
    return held_out, z_all, total_h


def choose_model(held_out: dict[str, np.ndarray], information: np.ndarray, unit: float, *, tolerance: float,
                 min_t: float, min_gain: float) -> tuple[str, dict[str, float], dict[str, float]]:
    """The simplest model that no more flexible one beats on the held-out blocks.

    ``held_out``: per model (simplest first), the held-out cost of every block; ``information``: per block, how much
    it constrains the geometry (trace of the geometric part of its Gauss-Newton matrix); ``unit``: the residual
    variance per independent sample. A more flexible model beats a simpler one when its summed held-out cost is
    lower by more than ``tolerance`` units. To leave ``translation`` (the focal-ratio prior: magnification and
    shape known, only a shift measured) it must also, on the blocks with at least 5 % of the most informative
    block's information,

    - remove a share of each block's held-out cost that is positive consistently (paired t statistic over the
      blocks above ``min_t``): a gain that one or two blocks carry (one textured corner, a moving object) does not
      buy a bent mapping,
    - and remove a median share of at least ``min_gain`` (material): where the residual is dominated by what no
      geometry explains (aliasing, noise, demosaicing), terms that explain a few per cent of it may be fitting that.

    Returns the name, each model's summed cost above the best in ``unit``s, and each other model's t statistic
    against the chosen one (0 where its gain is not significant).
    """
    names = list(held_out)
    totals = {name: float(np.sum(held_out[name])) for name in names}
    best = min(totals.values())
    evidence = {name: (totals[name] - best) / unit for name in names}
    informative = information >= 0.05 * max(float(np.max(information)), 1e-30)

    def beats(better: str, simpler: str) -> tuple[bool, float]:
        """Whether ``better`` beats ``simpler``, and the t statistic of the per-block shares (0: not significant)."""
        base = held_out[simpler][informative]
        share = (base - held_out[better][informative]) / np.maximum(base, 1e-30)
        if share.size < 2 or (totals[simpler] - totals[better]) / unit <= tolerance:
            return False, 0.0
        spread = float(np.std(share, ddof=1))
        t = float(np.mean(share) / (spread / np.sqrt(share.size))) if spread > 0 else float("inf")
        if simpler != "translation":
            return True, t
        return t > min_t and float(np.median(share)) >= min_gain, t

    for i, name in enumerate(names):
        if not any(beats(other, name)[0] for other in names[i + 1:]):
            return name, evidence, {other: beats(other, name)[1] for other in names if other != name}
    return names[-1], evidence, {}
