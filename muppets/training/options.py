"""Options every recipe shares, declared once; they become the loop's TrainConfig here."""

from __future__ import annotations

from muppets.training.budget import parse_duration
from muppets.training.loop import TrainConfig


def recipe_train_config(recipe, accumulation: int) -> TrainConfig:
    """The loop's TrainConfig from a recipe config's optimisation fields (BERT and ELMo alike)."""
    budget = None if recipe.time_budget is None else parse_duration(recipe.time_budget)
    return TrainConfig(
        max_steps=recipe.max_steps,
        learning_rate=recipe.learning_rate,
        schedule=recipe.schedule,
        warmup_steps=recipe.warmup_steps,
        warmup_ratio=recipe.warmup_ratio,
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm,
        gradient_accumulation_steps=accumulation,
        log_every=recipe.log_every,
        eval_every=recipe.eval_every,
        save_every=recipe.save_every,
        time_budget_seconds=budget,
        seed=recipe.seed,
    )
