"""A distributed job for the equivalence tests, run by torchrun: `python -m torch.distributed.run --standalone
--nproc-per-node 2 _ddp_job.py OUT SPEC...`. Each SPEC is one run of runs.finetune in OUT/<index>/; each rank
logs to OUT/rank<R>.log, so a test can see what each process did (EWC's Fisher computed by rank 0 alone)."""
import json
import logging
import os
import sys
from pathlib import Path

from transferlab.runs import finetune
from transferlab.training import distributed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _equivalence import run_config  # noqa: E402


def main(out: str, specs: list[str]) -> None:
    rank = int(os.environ["RANK"])
    logging.basicConfig(filename=str(Path(out) / f"rank{rank}.log"), level=logging.INFO,
                        format="%(name)s: %(message)s")
    for index, spec in enumerate(specs):
        finetune(run_config(**json.loads(spec), per_process=True), Path(out) / str(index))
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
