"""Image classifier that trains and serves inside one SageMaker container."""

__version__ = "0.1.0"
