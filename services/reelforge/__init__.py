"""reelforge: production serving for text-to-video models."""

__version__ = "0.1.0"
