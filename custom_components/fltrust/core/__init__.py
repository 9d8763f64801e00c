"""Logic shared by the Home Assistant coordinator and the edge node.

Nothing in this package imports Home Assistant. The integration imports it as
``custom_components.fltrust.core`` and the edge node as ``fltrust_core``, so the
modules use relative imports only. ``detectors`` needs scikit-learn and is only
imported on edge nodes; every other module needs NumPy and the standard library.
"""

PROTOCOL_VERSION = 1
