"""Filter: holds a group to one domain (``key=value``). Not in the registry: the plan search
(``search.py``) adds it when it retries a group with required affinity to itself in each of
its roomiest domains."""

from __future__ import annotations

from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter


def reason(key: str, value: str) -> str:
    return f"outside {key}={value} (repair attempt)"


class PinFilter(Filter):
    name = "pin"

    def __init__(self, key: str, value: str) -> None:
        self.key, self.value = key, value

    def check(self, g: Group, detail: bool) -> Checks:
        col = g.snap.column(self.key)
        code = col.code(self.value)
        return [(reason(self.key, self.value), (col.codes == code) & (col.codes > 0))]
