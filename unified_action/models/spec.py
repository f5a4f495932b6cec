"""The model spec: what the trainer, the export and fine-tuning need of a model, so none reaches into its modules.

A new backbone is one file and one `register_model(ModelSpec(...))` (torchtitan's model-spec seam); the
trainer builds through `spec.build`, the export reads configs through `spec.config_from_dict`, and the
fine-tuning modes ask the spec which linears take LoRA, which modules carry the conditioning and which
tables hold the action embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from unified_action.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config_from_dict: Callable[[dict], object]  # config.json's "model" -> the config (refuses unknown fields)
    build: Callable[[object], nn.Module]  # config -> a freshly initialised model
    lora_targets: Callable[[nn.Module], list[tuple[nn.Module, str]]]  # (parent, attribute) of every linear LoRA adapts
    conditioning: Callable[[nn.Module], list[nn.Module]]  # what steers every layer from the conditioning (adaLN)
    action_path: Callable[[nn.Module], list[nn.Module]]  # what reads the actions (trains whole in `lora` mode)
    embeddings: Callable[[nn.Module], dict[str, nn.Embedding]]  # token, slot, step and position tables of the actions
    output: Callable[[nn.Module], nn.Module]  # the last layer, initialised to zeros: zeroed, it predicts no change


MODEL_SPECS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in MODEL_SPECS:
        raise ConfigError(f"model spec '{spec.name}' is registered twice")
    MODEL_SPECS[spec.name] = spec
    return spec


def model_spec(name: str = "world_model") -> ModelSpec:
    import unified_action.models.world_model  # noqa: F401  (registers the built-in spec)

    if name not in MODEL_SPECS:
        raise ConfigError(f"model spec '{name}' is not registered{did_you_mean(name, MODEL_SPECS)}")
    return MODEL_SPECS[name]
