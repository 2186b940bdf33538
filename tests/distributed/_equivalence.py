"""The small runs the distributed tests compare: digits at 32 px on the tiny test_efficientnet, BatchNorm in
inference mode and no augmentation or dropout, so that one process with batch B and two with B/2 each must make
the same updates."""
from transferlab.data import DataOptions
from transferlab.runs import RunConfig
from transferlab.training.config import TrainConfig

GLOBAL_BATCH = 16
WORLD = 2
# 117 training examples: the last global batch (5) splits 3 + 2, so the per-rank loss weights are exercised;
# 61 validation examples split 31 + 30 (each evaluated once).
MAX_TRAIN, MAX_VAL = 117, 61


def write_weights(path) -> str:
    """Fixed random weights with timm's classifier (the "source head" that ewc needs)."""
    import timm
    import torch

    from transferlab.safe_io import save_tensors

    torch.manual_seed(123)
    save_tensors(path, timm.create_model("test_efficientnet", pretrained=False).state_dict())
    return str(path)


def run_config(strategy: str, weights: str, epochs: int = 2, precision: str = "fp32", per_process: bool = False,
               **train) -> RunConfig:
    batch = GLOBAL_BATCH // WORLD if per_process else GLOBAL_BATCH
    return RunConfig(model="test_efficientnet", data="digits", strategy=strategy, weights=weights,
                     train=TrainConfig(epochs=epochs, batch_size=batch, lr=3e-3, bn_stats="frozen",
                                       precision=precision, device="cpu", **train),
                     data_options=DataOptions(max_train=MAX_TRAIN, max_val=MAX_VAL, image_size=32))
