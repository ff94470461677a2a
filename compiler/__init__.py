"""rollout: a compiler from progressive-delivery specs to GitOps-ready files."""

from compiler import native

__version__ = "0.2.0"
native.activate()  # the compiled modules, where a build matches the sources (compiler/native.py)
