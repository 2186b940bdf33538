"""A distributed job for test_ddp_domain.py, run by torchrun: `_domain_job.py OUT WEIGHTS SPEC...`, each SPEC one
run with --target-data digits:2-3 in OUT/<index>/, per-process batches of half the global batch."""
import sys
from pathlib import Path

from transferlab.runs import finetune
from transferlab.training import distributed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _equivalence import run_config  # noqa: E402

MAX_TRAIN = 96  # six global batches of 16, 8 rows per rank: the ranks' mean losses average to the global mean


def config(strategy: str, weights: str, per_process: bool):
    cfg = run_config(strategy, weights, per_process=per_process)
    cfg.data_options.max_train = MAX_TRAIN
    cfg.strategy_options = {"target_data": "digits:2-3"}
    return cfg


if __name__ == "__main__":
    out, weights, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
    for index, spec in enumerate(specs):
        finetune(config(spec, weights, per_process=True), Path(out) / str(index))
    distributed.shutdown()
