"""Reports: the versioned `report.json`, its Markdown and plot, resumable writing, and `compare`.

Importing this package stays light (no torch, no matplotlib) so `cliprank compare` starts fast in CI.
"""

from cliprank.report.schema import (
    GMACS_CONVENTION,
    SCHEMA_VERSION,
    Environment,
    RankingAgreement,
    Record,
    Report,
    Throughput,
    load_report,
    record_key,
    save_report,
    validate_record,
    validate_report,
)
from cliprank.report.store import ReportWriter

__all__ = [
    "GMACS_CONVENTION",
    "SCHEMA_VERSION",
    "Environment",
    "RankingAgreement",
    "Record",
    "Report",
    "ReportWriter",
    "Throughput",
    "load_report",
    "record_key",
    "save_report",
    "validate_record",
    "validate_report",
]
