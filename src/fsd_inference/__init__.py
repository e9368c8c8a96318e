"""fsd-inference: fully serverless distributed inference of sparse DNNs."""

__version__ = "0.1.0"
