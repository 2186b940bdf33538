"""Pre-trained models: a registry of named models, all exposing the TransferModel contract."""
from transferlab.models._config import PretrainedCfg
from transferlab.models._factory import create_model, model_cfg
from transferlab.models._registry import list_models, pretrained_cfg, register_model
from transferlab.models.heads import Head, build_head, list_heads, register_head
from transferlab.models.transfer_model import DepthGroup, TransferModel

# (The factory imports the builders, which registers them.)

__all__ = ["PretrainedCfg", "DepthGroup", "TransferModel", "create_model", "model_cfg", "list_models", "pretrained_cfg",
           "register_model", "Head", "build_head", "list_heads", "register_head"]
