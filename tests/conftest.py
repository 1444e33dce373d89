import os
import sys

import numpy as np
import pytest
import torch

# tests/zoo.py, the shared matrix catalogue, is `import zoo` from every test folder (also under --import-mode=importlib)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Pin threads: on the 2-core CI machine torch's multi-threaded kernels can stall under load.
torch.set_num_threads(int(os.environ.get("SLA_TEST_THREADS", "1")))

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
