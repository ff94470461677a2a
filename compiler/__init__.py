"""rollout: a compiler from progressive-delivery specs to GitOps-ready files."""

__version__ = "0.2.0"
