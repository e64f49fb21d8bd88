# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: run_cost
short_description: What a training run's instances cost, and what they would have cost on demand
version_added: 0.2.0
description:
  - Read-only. For each instance, the seconds it ran during the run (from the later of its launch time and
    O(start) to O(end)), times its hourly price, plus its root volume for the same time.
  - On-demand prices come from the collection's shipped, dated price table (its source and date are in each
    result); spot instances are priced from the spot price history of their zone (the price in effect at O(end)),
    and their on-demand equivalent is given too. A type or region the table lacks gives null figures, not a guess.
  - EC2 bills Linux instances per whole second, at least 60 per start; so does this.
options:
  instance_ids:
    description: The run's instances.
    type: list
    elements: str
    required: true
  start:
    description: When the run started, seconds since the epoch (UTC); an instance already running is counted from here.
    type: float
    required: true
  end:
    description: When the run's instances were stopped or terminated, seconds since the epoch (UTC).
    type: float
    required: true
  root_volume_size:
    description: Root volume size in GiB.
    type: int
    default: 0
  root_volume_type:
    description: Root volume type.
    type: str
    default: gp3
extends_documentation_fragment:
  - amazon.aws.boto3
  - amazon.aws.common.plugins
  - amazon.aws.region.plugins
"""

EXAMPLES = r"""
- name: Cost of the run
  ansible.builtin.set_fact:
    run_cost: >-
      {{ lookup('cloudtrain.ec2.run_cost', instance_ids=['i-0123456789abcdef0'], region='us-east-1',
                start=1767225600.0, end=1767226200.0, root_volume_size=100) }}
"""

RETURN = r"""
_raw:
  description: One dictionary.
  type: list
  elements: dict
  contains:
    instances:
      description: >-
        Per instance C(instance_id), C(instance_type), C(market), C(seconds), C(usd_per_hour), C(instance_usd),
        C(volume_usd), C(total_usd), C(on_demand_usd), C(price_source).
      type: list
      elements: dict
    total_usd:
      description: The run's cost in USD (null when a price is unknown).
      type: float
    on_demand_usd:
      description: What the same run would have cost on demand (null when a price is unknown).
      type: float
"""

from datetime import datetime, timezone

try:
    import botocore
except ImportError:
    pass  # Handled by AWSLookupBase

from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.plugin_utils.lookup import AWSLookupBase
from ansible_collections.cloudtrain.ec2.plugins.module_utils import _prices as prices


def _sum(values):
    return None if any(v is None for v in values) else round(sum(values), 6)


class LookupModule(AWSLookupBase):
    def run(self, terms, variables, **kwargs):
        super().run(terms, variables, **kwargs)
        try:
            return [self._cost()]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise AnsibleLookupError("run_cost: AWS call failed: %s" % to_native(exc)) from exc

    def _cost(self):
        opt = self.get_option
        ids = opt("instance_ids")
        if not ids:
            return {"instances": [], "total_usd": 0.0, "on_demand_usd": 0.0}
        ec2 = self.client("ec2", AWSRetry.jittered_backoff())
        start, end = opt("start"), opt("end")
        found = [i for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
        costs = []
        for inst in sorted(found, key=lambda i: i["InstanceId"]):
            began = max(inst["LaunchTime"].timestamp(), start)
            spot = None
            if inst.get("InstanceLifecycle") == "spot":
                spot = self._spot_price(ec2, inst["InstanceType"], inst["Placement"]["AvailabilityZone"], end)
            cost = prices.run_cost(inst["InstanceType"], self.region, max(end - began, 0), opt("root_volume_size"),
                                   opt("root_volume_type"), spot_price=spot)
            costs.append(dict(cost, instance_id=inst["InstanceId"], instance_type=inst["InstanceType"]))
        return {"instances": costs, "total_usd": _sum([c["total_usd"] for c in costs]),
                "on_demand_usd": _sum([c["on_demand_usd"] for c in costs])}

    @staticmethod
    def _spot_price(ec2, instance_type, zone, end):
        history = ec2.describe_spot_price_history(
            InstanceTypes=[instance_type], AvailabilityZone=zone, ProductDescriptions=["Linux/UNIX"],
            EndTime=datetime.fromtimestamp(end, tz=timezone.utc), MaxResults=20)["SpotPriceHistory"]
        history = [h for h in history if h["AvailabilityZone"] == zone]
        if not history:
            return None
        return float(max(history, key=lambda h: h["Timestamp"])["SpotPrice"])
