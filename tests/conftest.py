"""Suite-wide settings. OpenMP's spin-waiting threads stall every op when another process holds a core
(see spatialboost/cli/__init__.py); set the passive policy before any test imports torch."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
