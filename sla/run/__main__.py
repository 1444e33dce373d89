"""``python -m sla.run``: the Hydra runner (see :mod:`sla.run`)."""

from . import main

main()
