# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: instance_accelerator
short_description: Whether an EC2 instance type has an NVIDIA GPU
version_added: 0.1.0
description:
  - Returns C(gpu) for instance types with NVIDIA GPUs (g4dn, g5, g6, p4d, p5, ...) and C(cpu) otherwise.
  - The companion filter C(cloudtrain.ec2.instance_architecture) returns C(arm64) for Graviton types and C(x86_64) otherwise.
options:
  _input:
    description: An EC2 instance type such as C(g4dn.xlarge).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Decide on --gpus all
  ansible.builtin.set_fact:
    use_gpu: "{{ 'g4dn.xlarge' | cloudtrain.ec2.instance_accelerator == 'gpu' }}"
"""

RETURN = r"""
_value:
  description: C(gpu) or C(cpu) (instance_accelerator); C(arm64) or C(x86_64) (instance_architecture).
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.cloudtrain.ec2.plugins.module_utils.instance_types import (
    instance_accelerator,
    instance_architecture,
)


def _wrap(func):
    def _filter(instance_type):
        try:
            return func(instance_type)
        except ValueError as exc:
            raise AnsibleFilterError(str(exc)) from exc
    return _filter


class FilterModule:
    def filters(self):
        return {
            "instance_accelerator": _wrap(instance_accelerator),
            "instance_architecture": _wrap(instance_architecture),
        }
