"""A distributed job for test_device_backends' resume test, run by torchrun: `python -m torch.distributed.run
--standalone --nproc-per-node 2 _rng_job.py OUT WEIGHTS`. Each rank trains a 2-epoch run in OUT/run, stops it
after epoch 1's checkpoint, resumes it in the same process and writes OUT/rank<R>.pt: its CPU generator's state
right after each checkpoint and right after the resume's restore."""
import os
import sys
from pathlib import Path

import torch

from transferlab.runs import finetune
from transferlab.training import distributed
from transferlab.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _equivalence import run_config  # noqa: E402


class Stop(Exception):
    """The run cut after its first checkpoint (every rank; rank 0 has written the checkpoint)."""


def main(out: str, weights: str) -> None:
    rank = int(os.environ["RANK"])
    saved, restored = [], []
    save_last, restore = Trainer._save_last, Trainer._restore

    def spy_save(self):
        save_last(self)
        saved.append(torch.get_rng_state())  # what rank_rng_states gathered (gathering draws nothing)
        if len(saved) == 1 and not restored:
            raise Stop()

    def spy_restore(self, path):
        restore(self, path)
        restored.append(torch.get_rng_state())

    Trainer._save_last, Trainer._restore = spy_save, spy_restore
    config = run_config("full", weights, epochs=2, per_process=True)
    try:
        finetune(config, Path(out) / "run")
    except Stop:
        pass
    finetune(config, Path(out) / "run", resume=True)
    torch.save({"saved": saved, "restored": restored}, Path(out) / f"rank{rank}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
