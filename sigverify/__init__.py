"""sigverify: writer-independent offline signature verification with PyTorch Lightning."""

__version__ = "0.1.0"
