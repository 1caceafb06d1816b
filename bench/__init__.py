"""structbench: should this NLP model run on CPU or GPU, in which runtime and precision, and at what cost?"""

__version__ = "0.1.0"
