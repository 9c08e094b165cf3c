"""Restart counts that outlive the agent process when no container carries them.

A replica's container is labelled with the restart count it was made with
(``assignment.RESTARTS_LABEL``), and a restarted agent adopting it counts on from there. Between
a failed start and the next attempt there is no container (it was removed, or never made: a
pull that failed), so the supervisor also writes each new count here: one small JSON file in
the agent's data directory, ``{replica id: [spec version, restarts]}``, rewritten atomically at
each restart (restarts are rare) and read once at start. A count is for one spec version: a
replica rolled to another version starts from 0, as its container does.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("cloudless.agent.supervisor")

FILE = "restarts.json"


class RestartLedger:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE
        self._counts: dict[str, tuple[int, int]] = {}
        try:
            raw = json.loads(self.path.read_text())
            self._counts = {
                str(rid): (int(v[0]), int(v[1])) for rid, v in raw.items() if len(v) == 2
            }
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.warning("ignoring %s: %s", self.path, e)

    def get(self, replica_id: str, spec_version: int) -> int:
        """The restarts recorded for this replica at this spec version (0: none)."""
        version, n = self._counts.get(replica_id, (spec_version, 0))
        return n if version == spec_version else 0

    def record(self, replica_id: str, spec_version: int, restarts: int) -> None:
        self._counts[replica_id] = (spec_version, restarts)
        self._save()

    def forget(self, replica_id: str) -> None:
        if self._counts.pop(replica_id, None) is not None:
            self._save()

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({k: list(v) for k, v in sorted(self._counts.items())}))
            os.replace(tmp, self.path)
        except OSError as e:  # a full disk must not stop the replica; the label still counts
            log.warning("cannot save restart counts to %s: %s", self.path, e)
