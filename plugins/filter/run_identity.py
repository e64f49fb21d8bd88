# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: run_identity
short_description: The tags and resource names of a training run, defined once
version_added: 0.2.0
description:
  - Returns what every role and run command of the collection uses to name and find a run's resources, so that
    they all agree. An empty run name gives the filter that finds every run of the collection.
options:
  _input:
    description: The run name.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Tag a resource as the run's
  ansible.builtin.set_fact:
    run_tags: "{{ ('mnist-1' | cloudtrain.ec2.run_identity).tags }}"
"""

RETURN = r"""
_value:
  description:
    - C(run_name), C(resource_name) (key pair, security group, IAM role and profile, launch template), C(key_name),
      C(tags) (C(Name), C(cloudtrain:run), C(managed-by)), C(instance_filters) (for M(amazon.aws.ec2_instance_info)),
      and C(name_problem) (why the name is refused, naming the refused characters; empty when accepted).
  type: dict
"""

from ansible_collections.cloudtrain.ec2.plugins.module_utils.run_identity import identity


class FilterModule:
    def filters(self):
        return {"run_identity": lambda run_name: identity(str(run_name or ""))}
