"""dlrmx: fast DLRM training on commodity CPUs.

The package imports nothing heavy: `dlrmx.ops` loads the native kernels (and torch),
`dlrmx.preprocess` needs neither.
"""

__version__ = "0.1.0"
