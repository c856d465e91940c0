"""Losses and track metrics: one definition for training, evaluate, predict -t and the demo.

Two correlations are reported per target, both on log2(x + 1):

- ``pearson``: over every bin of the target. It is dominated by what all targets share (a bin
  is open or closed in every cell type alike), so it says little about cell-type specificity.
- ``specific``: the cell-type-specific part. Each bin's values are centred across targets
  (log2(x + 1) minus its mean over the targets at that bin), and the centred prediction is
  correlated with the centred observation over the *active* bins only: bins where some target's
  observed value is at least ``specific_min`` (default :data:`SPECIFIC_MIN`) and no target is
  NaN. Identical predicted tracks score 0; predicted tracks that differ exactly as the observed
  ones do score 1. It needs two targets or more (NaN otherwise).

Both come from sums that add across batches and processes, so they cover every bin of a split.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SPECIFIC_MIN = 0.5
LOSSES = ("poisson", "poisson_multinomial")
SPECIFICITY_STARTED = 0.1     # a validation cell-type-specific R from which a run has begun to learn it
SPECIFICITY_GRACE = 2         # epochs a run gets before it is said not to have begun
SPECIFIC_PEAK = 1.0           # log2(x+1) above the bin's mean over targets that makes a peak cell-type-specific


def poisson_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element Poisson NLL (``log_input=False``) and the mask of targets that are not NaN."""
    mask = ~torch.isnan(target)
    safe = torch.where(mask, target, torch.zeros_like(target))
    loss = F.poisson_nll_loss(pred, safe, log_input=False, full=False, reduction="none")
    return loss, mask


def multinomial_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over bins of the multinomial NLL of the across-target profile: at each bin of
    (batch, targets, bins) tensors, −Σₜ yₜ · log(pₜ / Σ p), with NaN targets left out of both sums.
    A bin's weight is its observed total, so strong elements teach which target opens them."""
    mask = ~torch.isnan(target)
    safe_target = torch.where(mask, target, torch.zeros_like(target)).clamp_min(0)
    safe_pred = torch.where(mask, pred.clamp_min(0) + 1e-6, torch.ones_like(pred))
    total = torch.where(mask, safe_pred, torch.zeros_like(pred)).sum(1, keepdim=True).clamp_min(1e-6)
    return -(safe_target * (torch.log(safe_pred) - torch.log(total))).sum(1).mean()


def training_loss(pred: torch.Tensor, target: torch.Tensor, loss: str = "poisson",
                  multinomial_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The training objective and its Poisson part: the Poisson NLL averaged over non-NaN
    elements, plus with ``poisson_multinomial`` ``multinomial_weight`` times
    :func:`multinomial_loss` per target (the per-target Poisson terms fix each track's scale, the
    multinomial term its share of each bin)."""
    elementwise, mask = poisson_loss(pred, target)
    poisson = (elementwise * mask).sum() / mask.sum().clamp_min(1)
    if loss == "poisson_multinomial":
        return poisson + multinomial_weight * multinomial_loss(pred, target) / max(1, target.shape[1]), poisson
    return poisson, poisson


class TrackMetrics:
    """Per-target Poisson loss, Pearson R of log2(x + 1) over every bin, and the cell-type-specific
    R (see the module's description), from sums that can be added across batches and ranks."""

    FIELDS = ("bins", "loss", "p", "t", "pp", "tt", "pt", "nan",
              "s_bins", "s_p", "s_t", "s_pp", "s_tt", "s_pt")

    def __init__(self, n_targets: int, device: torch.device | str = "cpu",
                 specific_min: float = SPECIFIC_MIN) -> None:
        self.specific_min = specific_min
        self.sums = torch.zeros(len(self.FIELDS), n_targets, dtype=torch.float64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predictions and observations, (batch, targets, bins) each."""
        pred, target = pred.to(self.sums.device), target.to(self.sums.device)
        loss, mask = poisson_loss(pred.float(), target.float())
        m, observed = mask.double(), torch.where(mask, target, torch.zeros_like(target)).double()
        p = torch.log2(pred.double().clamp_min(0) + 1) * m
        t = torch.log2(observed.clamp_min(0) + 1) * m
        dims = (0, 2)
        active = mask.all(1) & (observed >= self.specific_min).any(1)
        a = active.double().unsqueeze(1)                                 # (batch, 1, bins)
        cp = (p - p.mean(1, keepdim=True)) * a
        ct = (t - t.mean(1, keepdim=True)) * a
        self.sums += torch.stack([m.sum(dims), (loss.double() * m).sum(dims), p.sum(dims), t.sum(dims),
                                  (p * p).sum(dims), (t * t).sum(dims), (p * t).sum(dims),
                                  (~mask).double().sum(dims),
                                  a.expand_as(cp).sum(dims), cp.sum(dims), ct.sum(dims),
                                  (cp * cp).sum(dims), (ct * ct).sum(dims), (cp * ct).sum(dims)])

    def compute(self, ctx=None) -> dict[str, list[float]]:
        """``loss``, ``pearson``, ``specific`` (per target), ``bins``, ``nan_bins`` and
        ``specific_bins`` (the active bins); sums are first added over ``ctx``'s ranks."""
        from epiformer.parallel import torchrun as dist_utils

        sums = self.sums.clone()
        if ctx is not None:
            dist_utils.all_reduce_sum(sums, ctx)
        n, loss, p, t, pp, tt, pt, nan, sn, sp, st, spp, stt, spt = sums
        specific = _pearson(sn, sp, st, spp, stt, spt)
        if sums.shape[1] < 2:
            specific = torch.full_like(specific, math.nan)
        return {"loss": (loss / n.clamp_min(1)).tolist(), "pearson": _pearson(n, p, t, pp, tt, pt).tolist(),
                "specific": specific.tolist(), "bins": n.long().tolist(), "nan_bins": nan.long().tolist(),
                "specific_bins": sn.long().tolist()}


def _pearson(n, p, t, pp, tt, pt) -> torch.Tensor:
    """Pearson R from sums (0 where either side does not vary)."""
    n_safe = n.clamp_min(1)
    cov = pt / n_safe - (p / n_safe) * (t / n_safe)
    var_p = (pp / n_safe - (p / n_safe) ** 2).clamp_min(0)
    var_t = (tt / n_safe - (t / n_safe) ** 2).clamp_min(0)
    return cov / torch.sqrt(var_p * var_t).clamp_min(1e-12)


def specificity_not_started(history: list[dict]) -> str | None:
    """A warning when a run has trained ``SPECIFICITY_GRACE`` epochs or more and its validation
    cell-type-specific R (``valid_specific_mean`` of each epoch's record) has never reached
    ``SPECIFICITY_STARTED``: it predicts about the same track for every cell type. None otherwise,
    and for runs with one target (no specific R)."""
    values = [h.get("valid_specific_mean", math.nan) for h in history]
    if len(values) < SPECIFICITY_GRACE or all(math.isnan(v) for v in values):
        return None
    best = max(v for v in values if not math.isnan(v))
    if best >= SPECIFICITY_STARTED:
        return None
    return (f"cell-type specificity not learned yet: the validation cell-type-specific R has stayed below "
            f"{SPECIFICITY_STARTED:g} for {len(values)} epochs (best {best:.3f}), so the cell types' predicted "
            "tracks barely differ")


def window_is_specific(targets, specific_min: float = SPECIFIC_MIN) -> bool:
    """Whether a window's (targets, bins) observations hold a cell-type-specific peak: an active
    bin (some target at least ``specific_min``, none NaN) where one target's log2(x+1) is at least
    :data:`SPECIFIC_PEAK` above the bin's mean over the targets. Never with one target."""
    import numpy as np

    targets = np.asarray(targets, np.float64)
    if targets.shape[0] < 2:
        return False
    active = (targets.max(0) >= specific_min) & ~np.isnan(targets).any(0)
    logged = np.log2(np.clip(targets[:, active], 0, None) + 1)
    return bool(((logged - logged.mean(0)).max(0, initial=-np.inf) >= SPECIFIC_PEAK).any())


def nan_mean(values: list[float]) -> float:
    """Mean of the values that are not NaN (NaN when none is)."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def spearman(a, b) -> float:
    """Spearman's rank correlation (ties share their mean rank); NaN with fewer than 3 pairs."""
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 3:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x):
    import numpy as np

    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.arange(x.size, dtype=np.float64)
    values, inverse = np.unique(x, return_inverse=True)
    return (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
