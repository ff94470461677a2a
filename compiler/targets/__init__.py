"""targets: one module per output kind (see :mod:`compiler.targets.base` and :mod:`compiler.targets.registry`)."""
