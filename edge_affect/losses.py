"""Masked per-task losses and their uncertainty-weighted combination.

Per task (each masked by the ABAW missing codes, so a sample missing one task still trains the others):

- VA:   L_va   = Σ_{d∈{V,A}} (1 − CCC_d) / 2  [+ ``va_mse`` · MSE], CCC over the batch's labelled rows
- EXPR: L_expr = cross-entropy on rows with expression ≠ −1 (optional class weights, label smoothing);
        with soft targets (``batch["expr_soft"]``, e.g. FER+ vote distributions) the cross-entropy is taken
        against the distribution q: −Σ_k q_k log softmax(z)_k (the FER+ paper's best mode), a row's class
        weight being Σ_k q_k w_k
- AU:   L_au   = mean binary cross-entropy with logits over the AU entries ≠ −1 (optional pos_weight)

Combination (``weighting="uncertainty"``; Kendall, Gal & Cipolla 2018, the form used by the paper):

    L = Σ_t  exp(−s_t) · L_t  +  s_t,     s_t = learnable log-variance of task t, initialised to 0

so the effective weight of task t is w_t = exp(−s_t) (logged every epoch), and the ``+ s_t`` term stops
s_t from growing without bound; at the optimum w_t = 1 / L_t. ``weighting="fixed"`` uses
L = Σ_t λ_t · L_t with constant λ_t (ablation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge_affect.config import LossConfig
from edge_affect.schema import MISSING_AU, MISSING_EXPR, MISSING_VA, TASKS


def masked_ccc(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """CCC of 1-D ``pred`` vs ``target`` over rows where ``mask`` is 1 (0 when fewer than 2 rows)."""
    m = mask.to(pred.dtype)
    n = m.sum()
    safe_n = n.clamp_min(1.0)
    mp = (pred * m).sum() / safe_n
    mt = (target * m).sum() / safe_n
    dp, dt = (pred - mp) * m, (target - mt) * m
    cov = (dp * dt).sum() / safe_n
    vp, vt = (dp * dp).sum() / safe_n, (dt * dt).sum() / safe_n
    value = 2 * cov / (vp + vt + (mp - mt) ** 2 + eps)
    return torch.where(n >= 2, value, torch.zeros_like(value))


class MultiTaskLoss(nn.Module):
    """Returns ``(total, {task: loss}, {task: weight})``; holds the learnable log-variances."""

    def __init__(self, cfg: LossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LossConfig()
        self.log_vars = nn.Parameter(torch.zeros(len(TASKS)))
        if self.cfg.weighting == "fixed":
            self.log_vars.requires_grad_(False)
        cw = self.cfg.expr_class_weights
        pw = self.cfg.au_pos_weight
        self.register_buffer("expr_class_weights", torch.tensor(cw, dtype=torch.float32) if cw else None)
        self.register_buffer("au_pos_weight", torch.tensor(pw, dtype=torch.float32) if pw else None)

    def task_losses(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        va_t, expr_t, au_t = batch["va"].float(), batch["expr"].long(), batch["au"].float()
        va_p, expr_p, au_p = out["va"].float(), out["expr"].float(), out["au"].float()
        # VA: 1 − CCC per dimension, averaged over the two dimensions.
        va_mask = va_t != MISSING_VA
        l_va = sum(1.0 - masked_ccc(va_p[:, d], va_t[:, d], va_mask[:, d]) for d in range(2)) / 2
        if self.cfg.va_mse > 0:
            m = va_mask.float()
            l_va = l_va + self.cfg.va_mse * (((va_p - va_t) ** 2) * m).sum() / m.sum().clamp_min(1.0)
        # Expression: CE over labelled rows, against the hard label or the soft target distribution.
        e_mask = expr_t != MISSING_EXPR
        soft = batch.get("expr_soft")
        if soft is None:
            soft = F.one_hot(expr_t.clamp_min(0), expr_p.shape[1]).to(expr_p.dtype)
        else:
            soft = soft.float()
        eps = self.cfg.label_smoothing
        target = soft * (1 - eps) + eps / expr_p.shape[1] if eps > 0 else soft
        ce = -(target * F.log_softmax(expr_p, dim=1)).sum(1)
        if self.expr_class_weights is not None:
            row_w = soft @ self.expr_class_weights
            ce = ce * row_w
            denom = (row_w * e_mask).sum().clamp_min(1e-8)
        else:
            denom = e_mask.sum().clamp_min(1).float()
        l_expr = (ce * e_mask).sum() / denom
        # AU: BCE over labelled entries.
        a_mask = (au_t != MISSING_AU).float()
        bce = F.binary_cross_entropy_with_logits(
            au_p, au_t.clamp_min(0), pos_weight=self.au_pos_weight, reduction="none"
        )
        l_au = (bce * a_mask).sum() / a_mask.sum().clamp_min(1.0)
        return {"va": l_va, "expr": l_expr, "au": l_au}

    def weights(self) -> dict[str, float]:
        """Current effective task weights (exp(−s_t), or the fixed λ_t)."""
        if self.cfg.weighting == "fixed":
            return {t: float(self.cfg.fixed_weights.get(t, 1.0)) for t in TASKS}
        return {t: float(torch.exp(-s)) for t, s in zip(TASKS, self.log_vars.detach().cpu(), strict=True)}

    def forward(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]):
        losses = self.task_losses(out, batch)
        if self.cfg.weighting == "fixed":
            total = sum(self.cfg.fixed_weights.get(t, 1.0) * losses[t] for t in TASKS)
        else:
            total = sum(torch.exp(-self.log_vars[i]) * losses[t] + self.log_vars[i] for i, t in enumerate(TASKS))
        return total, losses, self.weights()


def consistency_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Mean KL(p_a ‖ p_b) between the expression distributions of two views of the same faces (stability
    training, Zheng et al. 2016), gradients through both: the prediction should not move when only the
    alignment does. N×C logits each; 0 when the two agree."""
    log_a = F.log_softmax(logits_a.float(), dim=-1)
    log_b = F.log_softmax(logits_b.float(), dim=-1)
    return (log_a.exp() * (log_a - log_b)).sum(-1).mean()
