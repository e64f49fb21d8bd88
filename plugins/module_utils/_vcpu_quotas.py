# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""EC2's running-instance vCPU quotas: which Service Quotas code limits a type, and how much room is left.

EC2 limits running instances per *family class* in vCPUs, separately for on-demand and spot: a new
account's G and VT class is 0 vCPUs, so a g4dn.xlarge launch fails after everything else was created.
The codes are Service Quotas' (service code ``ec2``); the class comes from the family's leading letters.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

try:
    import botocore.exceptions
except ImportError:  # pragma: no cover - the lookup reports a missing SDK itself
    pass

from ansible_collections.cloudtrain.ec2.plugins.module_utils.instance_types import parse_instance_type

# class: (quota name, on-demand code, spot code). The spot names are "All <class> Spot Instance Requests".
QUOTA_CLASSES = {
    "standard": ("Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", "L-1216C47A", "L-34B43A08"),
    "g": ("Running On-Demand G and VT instances", "L-DB2E81BA", "L-3819A6DF"),
    "p": ("Running On-Demand P instances", "L-417A185B", "L-7212CCBC"),
    "f": ("Running On-Demand F instances", "L-74FC7D96", "L-88CF9481"),
    "inf": ("Running On-Demand Inf instances", "L-1945791B", "L-B5D1601B"),
    "x": ("Running On-Demand X instances", "L-7295265B", "L-E3A00192"),
    "trn": ("Running On-Demand Trn instances", "L-2C3B7624", "L-6B0D517C"),
    "dl": ("Running On-Demand DL instances", "L-6E869C2A", "L-85EED4F7"),
}
SPOT_NAMES = {
    "standard": "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
    "g": "All G and VT Spot Instance Requests", "p": "All P Spot Instance Requests",
    "f": "All F Spot Instance Requests", "inf": "All Inf Spot Instance Requests", "x": "All X Spot Instance Requests",
    "trn": "All Trn Spot Instance Requests", "dl": "All DL Spot Instance Requests",
}
# The family's leading letters (the "series" of parse_instance_type) -> class.
SERIES_CLASS = {s: "standard" for s in ("a", "c", "d", "h", "i", "m", "r", "t", "z", "im", "is")}
SERIES_CLASS.update({"g": "g", "vt": "g", "gr": "g", "p": "p", "f": "f", "inf": "inf", "x": "x", "trn": "trn", "dl": "dl"})
# Service Quotas answers a caller it will not serve with these: the quota is then unknown, not zero.
UNKNOWN_CODES = {"AccessDenied", "AccessDeniedException", "NoSuchResourceException", "ServiceException",
                 "UnrecognizedClientException", "TooManyRequestsException"}


def quota_class(instance_type: str) -> Optional[str]:
    """The quota class of a type (standard, g, p, ...); None when EC2 counts it elsewhere (u-, mac, hpc)."""
    return SERIES_CLASS.get(parse_instance_type(instance_type)["series"])


def quota_for(instance_type: str, market: str) -> Optional[Dict[str, str]]:
    klass = quota_class(instance_type)
    if klass is None:
        return None
    name, on_demand, spot = QUOTA_CLASSES[klass]
    if market == "spot":
        return {"class": klass, "code": spot, "name": SPOT_NAMES[klass]}
    return {"class": klass, "code": on_demand, "name": name}


def _error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def quota_value(service_quotas, code: str) -> Dict[str, Any]:
    """The quota's applied value, or {'unknown': reason} when Service Quotas will not tell this caller."""
    try:
        quota = service_quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]
    except botocore.exceptions.ClientError as exc:
        if _error_code(exc) not in UNKNOWN_CODES:
            raise
        return {"unknown": _error_code(exc)}
    return {"value": float(quota["Value"]), "name": quota.get("QuotaName") or ""}


def running_vcpus(instances: Iterable[Dict[str, Any]], vcpus: Dict[str, int], klass: str, market: str) -> int:
    """vCPUs of the pending/running instances that count against the class's quota of that market."""
    total = 0
    for inst in instances:
        spot = inst.get("InstanceLifecycle") == "spot"
        if inst["State"]["Name"] not in ("pending", "running") or spot != (market == "spot"):
            continue
        try:
            if quota_class(inst["InstanceType"]) != klass:
                continue
        except ValueError:
            continue
        total += vcpus.get(inst["InstanceType"], 0)
    return total


def type_vcpus(ec2, instance_types: List[str]) -> Dict[str, int]:
    found = {}
    wanted = sorted(set(instance_types))
    for start in range(0, len(wanted), 100):
        for info in ec2.describe_instance_types(InstanceTypes=wanted[start:start + 100])["InstanceTypes"]:
            found[info["InstanceType"]] = int(info["VCpuInfo"]["DefaultVCpus"])
    return found


def check_quota(instance_type: str, count: int, market: str, region: str, vcpus: Dict[str, int],
                quota: Dict[str, Any], in_use: int) -> Optional[str]:
    """None when the launch fits, else the message that says which quota, the numbers and what to do."""
    needed = vcpus[instance_type] * count
    free = quota["value"] - in_use
    if needed <= free:
        return None
    return ("%d x %s needs %d vCPUs but the '%s' quota (%s) of this account in %s is %g vCPUs with %d in use, "
            "so %g are free; accepted: ask for at least %g in the Service Quotas console "
            "(https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas/%s), "
            "or choose a type of another family"
            % (count, instance_type, needed, quota["name"], quota["code"], region, quota["value"], in_use,
               max(free, 0), in_use + needed, quota["code"]))
