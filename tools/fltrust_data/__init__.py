"""Readers for the real data sets that the demo and the benchmark use.

Each reader parses and cleans one data set and returns its rows as numpy
arrays with 0/1 labels and timestamps. The demo lab (``fltrust_lab.datasets``)
writes CSV files for the edge nodes from them, and the benchmark
(``fltrust_bench.data``) builds per-node features from them.

The readers take the folder that contains ``nab-realKnownCause/``, ``skab/``
and ``ton_iot/``, laid out as the upstream projects publish them. They need
only the standard library and numpy, and run on Python 3.11 and newer.
"""

from ._files import DataMissingError
from .nab import NAB_FOLDER, NabSeries, read_nab, read_nab_file, read_nab_windows
from .skab import SKAB_COLUMNS, SKAB_FOLDER, SkabExperiment, read_skab
from .ton_iot import TON_IOT_DEVICES, TON_IOT_FOLDER, TonIotData, TonIotDevice, read_ton_iot

__all__ = [
    "NAB_FOLDER",
    "SKAB_COLUMNS",
    "SKAB_FOLDER",
    "TON_IOT_DEVICES",
    "TON_IOT_FOLDER",
    "DataMissingError",
    "NabSeries",
    "SkabExperiment",
    "TonIotData",
    "TonIotDevice",
    "read_nab",
    "read_nab_file",
    "read_nab_windows",
    "read_skab",
    "read_ton_iot",
]
