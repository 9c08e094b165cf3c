"""``CertExpiry``: when each certificate a component holds stops being valid.

Read from the PEM files at scrape time (a handful of small files), so a renewal done by
another task shows on the next scrape. A file that is missing or unreadable is left out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from cryptography import x509
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class CertExpiry(Collector):
    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = dict(files)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fam = GaugeMetricFamily(
            "cloudless_certificate_expiry_timestamp_seconds",
            "When each certificate this component holds expires (Unix time); for a bundle, "
            "its first certificate.",
            labels=["cert"],
        )
        for name, path in sorted(self.files.items()):
            try:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError):
                continue
            fam.add_metric([name], cert.not_valid_after_utc.timestamp())
        yield fam

    def describe(self) -> list[GaugeMetricFamily]:
        return []
