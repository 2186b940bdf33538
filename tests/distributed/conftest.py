import os
import subprocess
import sys


def transferlab(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """The real command line in a child process (a launcher of processes, or one of them), 1 thread each."""
    return subprocess.run([sys.executable, "-m", "transferlab", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})
