import pytest

from transferlab.data import DataOptions
from transferlab.runs import RunConfig, prepare
from transferlab.training.config import TrainConfig
from transferlab.training.checkpoint import load_checkpoint
from transferlab.training.trainer import LAST, Trainer


def build(model: str, data: str, strategy: str, epochs: int = 2, max_train: int = 200, image_size: int = 32,
          **train_kwargs):
    config = RunConfig(model=model, data=data, strategy=strategy,
                       train=TrainConfig(epochs=epochs, batch_size=32, **train_kwargs),
                       data_options=DataOptions(max_train=max_train, image_size=image_size, max_length=32))
    data_bundle, net, strat = prepare(config)
    return config, data_bundle, net, strat


@pytest.fixture
def trained(tmp_path):
    """Train in-process; returns (model, state before, state after, trainer)."""

    def run(model, data, strategy, epochs=2, callbacks=None, **kw):
        config, data_bundle, net, strat = build(model, data, strategy, epochs=epochs, **kw)
        before = {k: v.detach().clone() for k, v in net.state_dict().items()}
        trainer = Trainer(net, strat, data_bundle, config.train, tmp_path / "run", callbacks=callbacks)
        trainer.fit()
        # fit() leaves the best epoch's weights loaded; compare the last epoch's weights instead
        after = load_checkpoint(trainer.ckpt_dir / LAST)[0]
        return net, before, after, trainer

    return run
