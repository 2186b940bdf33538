import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: these tests compare runs with each other, and share 2 cores with whatever else runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
