"""Pretrained configs: where a model's weights come from and how its inputs must look."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

# What a model takes: image tensors, texts (with its tokenizer), or numeric vectors (F,) (transferlab.data:
# sklearn:NAME, .npz files). A run whose data is of another modality is refused (data._load).
MODALITIES = ("image", "text", "vector")


@dataclass(frozen=True)
class PretrainedCfg:
    """What the loader and the data pipeline need to know about a pre-trained model.

    Image fields are ignored for text models and vice versa; vector models use neither.
    """

    name: str
    modality: str  # one of MODALITIES: "image", "text" or "vector"
    architecture: str = ""  # timm architecture name or Hugging Face model type
    weights: str = "random init"  # where the pre-trained weights come from
    license: str = "unknown"
    source_task: str = ""  # e.g. "ImageNet-1k classification"
    num_source_classes: int = 0  # classes of the source head, 0 when there is none
    source_classes: tuple[str, ...] = ()  # the source head's class names, in its order, when known (pretrain)
    # image inputs
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    # text inputs
    pooling: str = "mean"  # "mean" or "cls": how the new head reads the token states
    max_length: int = 128
    # which modules are the stem and the source classifier (names in the backbone library's model)
    stem: str = ""
    classifier: str = ""
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainedCfg":
        """The inverse of to_dict (lists back to tuples); unknown keys are a TypeError."""
        d = dict(d)
        for key in ("mean", "std", "source_classes"):
            if key in d and isinstance(d[key], list):
                d[key] = tuple(d[key])
        return cls(**d)
