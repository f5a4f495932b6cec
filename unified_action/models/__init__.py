"""The action-conditioned video world model: a pixel-space diffusion transformer over frame changes (world_model.py)."""

from unified_action.models.world_model import MODEL_SIZES, ModelConfig, WorldModel, count_parameters, model_config

__all__ = ["MODEL_SIZES", "ModelConfig", "WorldModel", "count_parameters", "model_config"]
