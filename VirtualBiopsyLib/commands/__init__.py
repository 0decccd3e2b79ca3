"""Sub-commands of the ``virtual-biopsy`` command line, one module each.

Each module defines ``register(subparsers)`` that adds its parser and sets
``func=run`` where ``run(args) -> int`` returns the exit code. Modules import only
light things at file scope; torch and friends are imported inside ``run``.
"""

COMMAND_MODULES: tuple[str, ...] = ("inspect", "phantom", "predict", "demo", "worker")
