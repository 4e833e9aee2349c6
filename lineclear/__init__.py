"""lineclear: anomaly detection for the checking step of line clearance."""

__version__ = "0.1.0"
