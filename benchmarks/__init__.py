"""lineclear benchmarks: speed and detection quality, run by ``make bench``."""
