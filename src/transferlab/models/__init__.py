"""Pre-trained models: a registry of named models, all exposing the TransferModel contract.

Any `torch.nn.Module` joins with `register_module(name, build, groups=..., head=...)` (see `own_models`); a new
kind of model name is one `ModelFamily` class (see `_families`)."""
from transferlab.models._config import PretrainedCfg
from transferlab.models._factory import create_model, model_cfg
from transferlab.models._families import ModelFamily, family_of, list_families, register_family, unregister_family
from transferlab.models._registry import list_models, pretrained_cfg, register_model
from transferlab.models.heads import Head, build_head, list_heads, register_head
from transferlab.models.own_models import register_module, unregister_module
from transferlab.models.transfer_model import DepthGroup, TransferModel

# (The factory imports the families' modules, which registers them and the registry's builders.)

__all__ = ["PretrainedCfg", "DepthGroup", "TransferModel", "create_model", "model_cfg", "list_models", "pretrained_cfg",
           "register_model", "register_module", "unregister_module", "ModelFamily", "register_family",
           "unregister_family", "family_of", "list_families", "Head", "build_head", "list_heads", "register_head"]
