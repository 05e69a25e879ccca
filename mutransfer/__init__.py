"""mutransfer: tune small µP proxies, transfer the optimum to a large model."""

__version__ = "0.1.0"
