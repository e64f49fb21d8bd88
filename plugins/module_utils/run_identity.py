# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A run's identity, defined once: the tags that mark what it owns and the names it gives.

The provision and teardown roles, the run commands (status, logs, results, stop) and the
ec2_run_facts lookup all read it from here, through the ``cloudtrain.ec2.run_identity`` filter
or by import, so a run is found the same way by every piece.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List

MANAGED_BY = "cloudtrain.ec2"
RUN_TAG = "cloudtrain:run"
RESOURCE_PREFIX = "cloudtrain-"
# Tag, resource and container names all take it: EC2 key pairs, IAM names, Docker names.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,49}$")
ACCEPTED = "1-50 letters, digits and '-', starting with a letter or digit"


def name_problem(run_name: str) -> str:
    """Why a run name is refused, naming the refused characters; '' when it is accepted."""
    if NAME_PATTERN.match(run_name or ""):
        return ""
    refused = sorted({c for c in run_name or "" if not (c.isascii() and (c.isalnum() or c == "-"))})
    if refused:
        why = "the characters %s are not accepted" % " ".join(repr(c) for c in refused)
    elif not run_name:
        why = "it is empty"
    elif len(run_name) > 50:
        why = "it is %d characters long" % len(run_name)
    else:
        why = "it starts with '-'"
    return "run_name '%s' is refused: %s; accepted: %s" % (run_name, why, ACCEPTED)


def identity(run_name: str) -> Dict[str, Any]:
    """Names and tags of one run."""
    resource = RESOURCE_PREFIX + run_name
    return {
        "run_name": run_name,
        "resource_name": resource,
        "key_name": resource,
        "tags": {"Name": run_name, RUN_TAG: run_name, "managed-by": MANAGED_BY},
        "instance_filters": {"tag:" + RUN_TAG: run_name} if run_name else {"tag:managed-by": MANAGED_BY},
        "name_problem": name_problem(run_name),
    }


def runs_of(instances: List[Dict[str, Any]]) -> List[str]:
    """The run names carried by a list of instances (their run tag), sorted."""
    return sorted({i.get("tags", {}).get(RUN_TAG) for i in instances} - {None})
