"""The examples in the docstrings run and print what they claim (doctest over the package)."""

import doctest
import importlib
import pkgutil

import pytest

import sla

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(sla.__path__, "sla.") if not m.name.startswith(("sla.run", "sla.viz"))
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional dependency of that module is missing
        pytest.skip(f"{name} needs an optional package: {exc}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest failure(s) in {name}"
