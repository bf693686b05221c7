"""Sparsity control for ReLU-routed MoE layers (DECO §3.3 / ReMoE): the adaptive penalty coefficient.

Each step the trainer adds λ · Σ_layers penalty_l / L to the loss (penalty: router entropy for DECO, the
load-balanced L1 for ReMoE; L = the number of decoder layers, as DECO divides by `num_layers`), then measures the
activation ratio ρ = #active / #routed over all MoE layers (all-reduced over ranks) and updates

    λ ← λ · m            if ρ > target
    λ ← max(λ / m, λ₀)   otherwise

Top-k MoE layers carry a switch load-balancing loss instead, with a fixed coefficient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TOPK_BALANCE_COEF = 0.01  # Switch Transformer / DeepSeek-style auxiliary loss weight


@dataclass
class SparsityController:
    target: float = 0.2
    lambda_init: float = 1e-8
    multiplier: float = 1.002
    lam: float | None = None

    def __post_init__(self):
        if self.lam is None:
            self.lam = self.lambda_init

    def update(self, rho: float) -> float:
        self.lam = (
            self.lam * self.multiplier if rho > self.target else max(self.lam / self.multiplier, self.lambda_init)
        )
        return self.lam

    def state_dict(self) -> dict:
        return {"lam": self.lam}

    def load_state_dict(self, state: dict) -> None:
        self.lam = float(state["lam"])


def moe_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    from ..layers.deco_moe import DecoMoE, TopKMoE

    return [m for m in model.modules() if isinstance(m, (DecoMoE, TopKMoE))]


def controller_for(model: torch.nn.Module) -> SparsityController | None:
    """A controller when the model has ReLU-routed (DECO / ReMoE) layers, else None."""
    from ..layers.deco_moe import DecoMoE

    config = getattr(model, "config", None)
    if config is None or not any(isinstance(m, DecoMoE) for m in model.modules()):
        return None
    return SparsityController(config.moe_target_activation, config.moe_lambda_init, config.moe_lambda_multiplier)


def penalty_loss(model: torch.nn.Module, controller: SparsityController | None) -> torch.Tensor | None:
    """λ · Σ penalty / L for ReLU-routed layers plus the fixed-coefficient balance loss of top-k layers."""
    from ..layers.deco_moe import DecoMoE

    layers = moe_layers(model)
    if not layers:
        return None
    num_layers = model.config.num_hidden_layers
    total = None
    for layer in layers:
        if layer.penalty is None:
            continue
        coef = (controller.lam / num_layers) if isinstance(layer, DecoMoE) else TOPK_BALANCE_COEF / num_layers
        term = coef * layer.penalty
        total = term if total is None else total + term
    return total


def activation_counts(model: torch.nn.Module) -> list[tuple[float, float]]:
    """(active, routed) per MoE layer from the last forward."""
    return [(float(m.num_active), float(m.num_routed)) for m in moe_layers(model)]
