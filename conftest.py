"""Test-wide settings for tests/ and plugins/*/tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    # The test models are tiny and the CI machine has two shared cores: a second thread
    # per op only adds hand-off waits. Subprocesses (charlm run, torchrun) keep torch's default.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
