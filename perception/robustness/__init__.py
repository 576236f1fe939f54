"""Robustness checks: a MultiCorrupt-style corruption suite of frames (:mod:`.corruptions`), the suite runner
with resistance ability (RA), calibration and monitor flags per corruption (:mod:`.suite`), and its report."""

from perception.robustness.corruptions import (
    AUGMENTABLE,
    CORRUPTIONS,
    SEVERITIES,
    Corruption,
    NotApplicable,
    check_severity,
    corrupt,
    get_corruption,
)

__all__ = ["AUGMENTABLE", "CORRUPTIONS", "SEVERITIES", "Corruption", "NotApplicable", "check_severity", "corrupt",
           "get_corruption"]
