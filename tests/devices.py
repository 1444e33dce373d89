"""Device parametrisation shared by the tests: the CPU always, CUDA where a GPU is present.

Imported as ``from devices import DEVICES, cuda`` (``tests/`` is on ``sys.path``, see ``conftest.py``).
"""

import pytest
import torch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
"""Skip marker for tests that need a CUDA GPU (CI has none; they run on the GPU machine)."""

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, cuda])]
"""``@pytest.mark.parametrize("device", DEVICES)``: one test body on the CPU and on CUDA."""
