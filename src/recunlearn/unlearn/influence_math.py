"""The linear algebra of influence functions: Hessian-vector products by double backward, and two solvers of
(H + λI) x = b that only ever touch H through those products (conjugate gradient, LiSSA).

Vectors are tensors of any shape (here the [k, d] block of restricted E₀ rows); inner products are over all
their entries."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

MatVec = Callable[[torch.Tensor], torch.Tensor]


def hessian_vector_product(loss_of: Callable[[torch.Tensor], torch.Tensor], at: torch.Tensor) -> MatVec:
    """v ↦ ∇²f(at) v for a scalar f = `loss_of`, by double backward.

    The first gradient is built once with its graph kept, so each product is one backward pass through it
    (forward-over-reverse with torch.func would need forward-mode rules for the sparse propagation)."""
    x = at.detach().clone().requires_grad_(True)
    loss = loss_of(x)
    if not loss.requires_grad:                      # f does not depend on x at all: H = 0
        return torch.zeros_like
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    if not grad.requires_grad:                      # f is linear in x: H = 0
        return torch.zeros_like

    def product(v: torch.Tensor) -> torch.Tensor:
        (hv,) = torch.autograd.grad(grad, x, grad_outputs=v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv.detach()
    return product


@dataclass
class Solution:
    """x ≈ (H + λI)⁻¹ b, with how the solver got there."""

    x: torch.Tensor
    iterations: int
    residual: float          # ‖(H + λI) x − b‖ / ‖b‖
    converged: bool
    damping: float
    indefinite: bool = False  # the solver met a direction where H + λI is not positive: λ is too small
    curvature: float | None = None   # then, where known, vᵀHv / vᵀv along that direction (≤ −λ)
    note: str = ""
    products: int = 0         # Hessian-vector products spent, failed attempts included (set by the caller)

    def summary(self) -> dict:
        return {"iterations": self.iterations, "relative_residual": self.residual, "converged": self.converged,
                "damping": self.damping, "hessian_products": self.products, "note": self.note}


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


def _norm(a: torch.Tensor) -> float:
    return float(a.norm())


def conjugate_gradient(hvp: MatVec, b: torch.Tensor, damping: float, iterations: int,
                       tolerance: float) -> Solution:
    """CG on (H + λI) x = b from x = 0, stopping at ‖r‖ ≤ tolerance · ‖b‖.

    H is the Hessian of a non-convex loss: where the damped matrix shows non-positive curvature along a search
    direction, CG has no meaningful step left and stops with the iterate it has (`indefinite`)."""
    x = torch.zeros_like(b)
    r = b.clone()
    b_norm = _norm(b)
    if b_norm == 0:
        return Solution(x, 0, 0.0, True, damping, note="zero right-hand side")
    p, rs = r.clone(), _dot(r, r)
    for k in range(1, iterations + 1):
        hp = hvp(p)
        ap = hp + damping * p
        curvature = _dot(p, ap)
        if curvature <= 0:
            return Solution(x, k - 1, rs ** 0.5 / b_norm, False, damping, True, _dot(p, hp) / _dot(p, p),
                            "non-positive curvature")
        alpha = rs / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rs_next = _dot(r, r)
        if rs_next ** 0.5 <= tolerance * b_norm:
            return Solution(x, k, rs_next ** 0.5 / b_norm, True, damping)
        p = r + (rs_next / rs) * p
        rs = rs_next
    return Solution(x, iterations, rs ** 0.5 / b_norm, False, damping, note="iteration limit")


def lissa(hvp: MatVec, b: torch.Tensor, damping: float, scale: float, iterations: int,
          tolerance: float) -> Solution:
    """LiSSA (Agarwal et al., 2017) with a fixed Hessian: the Neumann series
    h ← b + (I − (H + λI)/scale) h, x = h / scale, which sums to (H + λI)⁻¹ b when every eigenvalue of
    (H + λI)/scale lies in (0, 2).

    The t-th update is (I − (H + λI)/scale)ᵗ b: it stops when that term is at most tolerance · ‖b‖, and
    declares the series divergent (`indefinite`: H + λI is not positive, or `scale` is too small) as soon as
    the term outgrows b, which a convergent series never does."""
    b_norm = _norm(b)
    if b_norm == 0:
        return Solution(torch.zeros_like(b), 0, 0.0, True, damping, note="zero right-hand side")
    h = b.clone()
    for steps in range(1, iterations + 1):
        step = b - (hvp(h) + damping * h) / scale
        if not _norm(step) <= b_norm:     # also catches NaN
            # The growing term is dominated by the eigenvector that breaks the series: report its curvature.
            curvature = _dot(step, hvp(step)) / _dot(step, step) if torch.isfinite(step).all() else None
            return Solution(torch.zeros_like(b), steps, 1.0, False, damping, True, curvature, "diverging series")
        h = h + step
        if _norm(step) <= tolerance * b_norm:
            break
    x = h / scale
    residual = _norm(hvp(x) + damping * x - b) / b_norm
    converged = _norm(step) <= tolerance * b_norm
    return Solution(x, steps, residual, converged, damping, note="" if converged else "iteration limit")


def largest_eigenvalue(hvp: MatVec, like: torch.Tensor, iterations: int, generator: torch.Generator) -> float:
    """|λ|max of H by power iteration (an estimate from below), for LiSSA's default scale."""
    v = torch.randn(like.shape, generator=generator, dtype=like.dtype)
    v = v / v.norm()
    value = 0.0
    for _ in range(iterations):
        w = hvp(v)
        value = _norm(w)
        if value == 0:
            return 0.0
        v = w / value
    return value
