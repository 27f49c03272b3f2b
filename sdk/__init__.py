"""edgesentry: edge inference SDK for anomaly and event detectors.

    >>> import edgesentry
    >>> det = edgesentry.load("rx")                  # global RX, no weights needed
    >>> result = det.predict(cube)                   # (H, W, B) hyperspectral cube
    >>> result.anomaly_map, result.score

The public surface is this module: ``load``, ``Detector``, ``Result``, the errors and
``metrics``. Families: ``rx``, ``fers``, ``isstad``, ``mavd``, ``mdmf``.
"""

from __future__ import annotations

import os as _os

from edgesentry._version import __version__ as __version__

# The compiled kernels use libgomp, whose idle threads spin for ~300k iterations after every
# parallel region. Next to ONNX Runtime's thread pool that spin held the cores the next graph
# call needed (2 cores: ISSTAD predict 15 -> 32 ms with a row-parallel fusion). A short spin
# keeps back-to-back regions fast and lets idle threads sleep. libgomp reads it once, when the
# first compiled kernel loads; a value the user set wins.
_os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from edgesentry import metrics as metrics  # noqa: E402
from edgesentry.api import convert as convert, load as load  # noqa: E402
from edgesentry.detector import Detector as Detector  # noqa: E402
from edgesentry.errors import (  # noqa: E402
    BackendUnavailableError as BackendUnavailableError,
    BundleError as BundleError,
    CallOrderError as CallOrderError,
    ChecksumError as ChecksumError,
    ConfigError as ConfigError,
    EdgesentryError as EdgesentryError,
    InputError as InputError,
    KernelUnavailableError as KernelUnavailableError,
    SignatureError as SignatureError,
    WeightsError as WeightsError,
)
from edgesentry.result import Result as Result  # noqa: E402
from edgesentry.stream import stream as stream  # noqa: E402
