"""lightning_dr2: a PyTorch Lightning experiment framework for DR2 blind face restoration."""

__version__ = "0.1.0"
