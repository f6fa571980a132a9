"""Per-device latency look-up tables and latency prediction (CRMEF section IV-A-2).

A network is a composition of profiled units (:class:`nas.ops.Unit`); its predicted latency
is the sum of the table entries of the units it executes.

* :mod:`~nas.latency.trace` -- which units a network runs, with which shapes.
* :mod:`~nas.latency.fingerprint` -- device fingerprints and table names.
* :mod:`~nas.latency.table` -- :class:`LatencyTable`: CSV + YAML sidecar, atomic writes,
  lookup, device check; its row types are in :mod:`~nas.latency.keys`, its file reading
  and writing in :mod:`~nas.latency.table_io`.
* :mod:`~nas.latency.profiler` -- time every distinct unit of a space alone
  (``python -m nas.profile``), and whole networks with the same harness
  (:mod:`~nas.latency.timing`: :func:`time_fn`, thread pinning, load checks).
* :mod:`~nas.latency.predict` -- :func:`predict` for derived nets, the differentiable
  :func:`expected_latency` of a supernet and the normalised :class:`LatencyPenalty`.
* :mod:`~nas.latency.validate` -- predicted vs measured on random derived nets, calibration.

Typical use in a search::

    table = LatencyTable.load()                       # this device's table, or a clear error
    penalty = LatencyPenalty(supernet, table, (128, 128))
    loss = task_loss + eta * penalty()                # 1.0 = uniform-alpha supernet latency
"""

from __future__ import annotations

from nas.latency.fingerprint import (
    device_fingerprint,
    device_info,
    resolve_device,
    table_name,
)
from nas.latency.keys import LatencyEntry, MissingLatencyEntry, TableKey
from nas.latency.predict import (
    LatencyPenalty,
    SlotLatency,
    expected_latency,
    predict,
    slot_latency,
    unit_latencies,
)
from nas.latency.profiler import (
    DEFAULT_CPU_MAX_SECONDS,
    ProfileEstimate,
    ProfileReport,
    ProfileSettings,
    collect_units,
    estimate_profile,
    measure_networks,
    profile_spaces,
    profile_units,
    synthetic_table,
)
from nas.latency.table import (
    Calibration,
    LatencyTable,
    RiggedTable,
    calibration_scope,
    default_table_dir,
    profile_command,
)
from nas.latency.table_io import ForeignTableError, LatencyTableError, LatencyTableNotFound
from nas.latency.timing import TimingStats, time_fn
from nas.latency.trace import UnitCall, UnitKey, outermost_units, trace_units
from nas.latency.validate import (
    ValidationReport,
    accuracy_metrics,
    analyse,
    fit_calibration,
    kendall_tau,
    measure_genotypes,
    sample_genotypes,
    split_genotypes,
    store_report_calibration,
    validate_predictor,
)

__all__ = [
    "DEFAULT_CPU_MAX_SECONDS",
    "Calibration",
    "ForeignTableError",
    "LatencyEntry",
    "LatencyPenalty",
    "LatencyTable",
    "LatencyTableError",
    "LatencyTableNotFound",
    "MissingLatencyEntry",
    "ProfileEstimate",
    "ProfileReport",
    "ProfileSettings",
    "RiggedTable",
    "SlotLatency",
    "TableKey",
    "TimingStats",
    "UnitCall",
    "UnitKey",
    "ValidationReport",
    "accuracy_metrics",
    "analyse",
    "calibration_scope",
    "collect_units",
    "default_table_dir",
    "device_fingerprint",
    "device_info",
    "estimate_profile",
    "expected_latency",
    "fit_calibration",
    "kendall_tau",
    "measure_genotypes",
    "measure_networks",
    "outermost_units",
    "predict",
    "profile_command",
    "profile_spaces",
    "profile_units",
    "resolve_device",
    "sample_genotypes",
    "slot_latency",
    "split_genotypes",
    "store_report_calibration",
    "synthetic_table",
    "table_name",
    "time_fn",
    "trace_units",
    "unit_latencies",
    "validate_predictor",
]
