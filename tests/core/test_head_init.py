"""--head-init source: the new head starts from the related source classifier rows (Co-Tuning)."""
import torch
from safetensors.torch import save_file

from transferlab.data import DataOptions
from transferlab.runs import RunConfig, prepare
from transferlab.training.config import TrainConfig
from transferlab.training.head_init import init_head_from_source, source_relationship
from transferlab.training.trainer import Trainer


def test_head_rows_are_the_relationship_weighted_source_rows(tmp_path):
    import timm

    torch.manual_seed(0)
    source = timm.create_model("test_efficientnet", num_classes=10)
    save_file(source.state_dict(), tmp_path / "src.safetensors")
    config = RunConfig(model="test_efficientnet", data="digits:0-2", weights=str(tmp_path / "src.safetensors"),
                       train=TrainConfig(epochs=1, head_init="source"),
                       data_options=DataOptions(max_train=60, image_size=32))
    data, net, strategy = prepare(config)
    trainer = Trainer(net, strategy, data, config.train, tmp_path / "run")
    loader = trainer.eval_loader(data.train)
    relation = source_relationship(net, loader, "cpu")
    assert relation.shape == (3, 10) and torch.allclose(relation.sum(1), torch.ones(3), atol=1e-5)
    init_head_from_source(net, loader, "cpu")
    assert torch.allclose(net.head.weight, relation @ source.get_classifier().weight, atol=1e-6)
    assert torch.allclose(net.head.bias, relation @ source.get_classifier().bias, atol=1e-6)
