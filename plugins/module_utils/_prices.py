# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a run costs: a shipped, dated on-demand price table, and the arithmetic of a run's bill.

The table holds the types this collection's README and tests name, per region: Linux, shared tenancy,
USD per hour. EC2 bills running instances per second (60 s minimum), EBS volumes per GiB-month,
prorated per second (a month counted as 730 hours). Spot prices are not shipped: they move, and the
spot price history API has them (the run_cost lookup asks it).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

PRICE_SOURCE = ("AWS public price pages: https://aws.amazon.com/ec2/pricing/on-demand/ (Linux, shared tenancy) "
                "and https://aws.amazon.com/ebs/pricing/ (gp3 storage)")
# The prices as published at that date; they change rarely, but check the pages for a quote.
PRICE_DATE = "2024-06-01"

ON_DEMAND_USD_PER_HOUR = {
    "us-east-1": {
        "t3.medium": 0.0416, "t3.large": 0.0832,
        "m5.large": 0.096, "m5.xlarge": 0.192, "m6i.large": 0.096, "m6i.xlarge": 0.192,
        "m7i.large": 0.1008, "m7i.xlarge": 0.2016, "m7g.large": 0.0816,
        "c5.xlarge": 0.17, "c6i.xlarge": 0.17, "c7i.xlarge": 0.1785,
        "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g4dn.12xlarge": 3.912,
        "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.12xlarge": 5.672, "g5g.xlarge": 0.42,
        "g6.xlarge": 0.8048, "g6e.xlarge": 1.861, "p3.2xlarge": 3.06,
    },
    "eu-west-1": {
        "t3.medium": 0.0456, "m5.large": 0.107, "m6i.large": 0.107, "c5.xlarge": 0.192,
        "g4dn.xlarge": 0.587, "g5.xlarge": 1.123, "p3.2xlarge": 3.305,
    },
}
# us-west-2 (Oregon) lists the same prices as us-east-1 (N. Virginia) for these types.
ON_DEMAND_USD_PER_HOUR["us-west-2"] = dict(ON_DEMAND_USD_PER_HOUR["us-east-1"])

# gp3 storage, USD per GiB-month (IOPS and throughput at the included baseline cost nothing extra).
VOLUME_USD_PER_GIB_MONTH = {
    "us-east-1": {"gp3": 0.08, "gp2": 0.10},
    "us-west-2": {"gp3": 0.08, "gp2": 0.10},
    "eu-west-1": {"gp3": 0.088, "gp2": 0.11},
}
HOURS_PER_MONTH = 730.0
MINIMUM_SECONDS = 60


def on_demand_price(instance_type: str, region: str) -> Optional[float]:
    return ON_DEMAND_USD_PER_HOUR.get(region, {}).get(instance_type)


def volume_price_per_hour(size_gib: int, volume_type: str, region: str) -> Optional[float]:
    per_month = VOLUME_USD_PER_GIB_MONTH.get(region, {}).get(volume_type)
    return None if per_month is None else per_month * size_gib / HOURS_PER_MONTH


def hourly_ceiling(instance_type: str, region: str, size_gib: int, volume_type: str) -> Optional[float]:
    """The most an hour of one instance and its root volume costs on demand (a spot hour costs less)."""
    instance = on_demand_price(instance_type, region)
    if instance is None:
        return None
    return instance + (volume_price_per_hour(size_gib, volume_type, region) or 0.0)


def hard_limit_seconds(max_hours: float, max_cost: float, hourly: Optional[float], count: int) -> int:
    """Seconds after boot when an instance must be off: the sooner of max_hours and max_cost (0: no limit)."""
    limits = []
    if max_hours > 0:
        limits.append(max_hours * 3600)
    if max_cost > 0 and hourly:
        limits.append(max_cost / (hourly * count) * 3600)
    return int(min(limits)) if limits else 0


def run_cost(instance_type: str, region: str, seconds: float, size_gib: int, volume_type: str,
             spot_price: Optional[float] = None) -> Dict[str, Any]:
    """One instance's bill for `seconds` of running: the instance, its root volume, and on demand."""
    # EC2 bills Linux instances per whole second, 60 at least; the reported seconds are the billed ones,
    # so usd_per_hour * seconds / 3600 gives the reported dollars exactly.
    billed = max(int(math.ceil(float(seconds))), MINIMUM_SECONDS)
    on_demand = on_demand_price(instance_type, region)
    volume_hourly = volume_price_per_hour(size_gib, volume_type, region)
    hourly = spot_price if spot_price is not None else on_demand
    volume_usd = None if volume_hourly is None else volume_hourly * billed / 3600
    instance_usd = None if hourly is None else hourly * billed / 3600
    on_demand_usd = None if on_demand is None else on_demand * billed / 3600
    return {
        "seconds": billed,
        "market": "spot" if spot_price is not None else "on-demand",
        "usd_per_hour": hourly,
        "instance_usd": None if instance_usd is None else round(instance_usd, 6),
        "volume_usd": None if volume_usd is None else round(volume_usd, 6),
        "total_usd": None if instance_usd is None else round(instance_usd + (volume_usd or 0.0), 6),
        "on_demand_usd": None if on_demand_usd is None else round(on_demand_usd + (volume_usd or 0.0), 6),
        "price_source": ("spot price history" if spot_price is not None else "%s, as of %s" % (PRICE_SOURCE, PRICE_DATE)),
    }
