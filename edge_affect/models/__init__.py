"""Models: the task-token transformer, its registry and self-describing checkpoints (torch)."""

from edge_affect.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint, save_safetensors
from edge_affect.models.registry import create_model, get_config, list_models, register_model
from edge_affect.models.task_token import TaskTokenTransformer, count_macs, count_params

__all__ = [
    "TaskTokenTransformer",
    "count_macs",
    "count_params",
    "create_model",
    "get_config",
    "list_models",
    "load_checkpoint",
    "read_checkpoint",
    "register_model",
    "save_checkpoint",
    "save_safetensors",
]
