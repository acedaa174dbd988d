"""realsr: build real-world super-resolution datasets from DSLR zoom captures.

Array convention, used by every module: images are ``H x W x C`` RGB ``float32`` arrays with values in
``[0, 1]`` inside algorithms; torch tensors are ``N x C x H x W``. Conversion happens only at the edges
(:mod:`realsr_tools.imaging` on the way in and out, the dataset code for tensors).

Submodules are imported on demand so that a broken optional import (torch, rawpy) cannot break the rest.
"""

__version__ = "0.1.0"
