"""The example role and policy in examples/access stay valid."""

from __future__ import annotations

from pathlib import Path

import yaml

from cloudless.policy.admission import parse_policy
from cloudless.policy.rbac import parse_role

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "access"


def test_examples_parse() -> None:
    role = parse_role(yaml.safe_load((EXAMPLES / "deployer-role.yaml").read_text()))
    assert role.name == "deployer" and len(role.rules) == 2
    policy = parse_policy(yaml.safe_load((EXAMPLES / "registries-policy.yaml").read_text()))
    assert [v.message for v in policy.validations][1] == "every workload needs a team label"
