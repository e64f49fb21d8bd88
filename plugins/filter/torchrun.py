# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: torchrun_argv
short_description: The torchrun command line of one node of a multi-node training job
version_added: 0.1.0
description:
  - Wraps a command (a list) in C(torchrun) for node O(node_rank) of O(nnodes), with a static rendezvous on
    node 0's address (C(--rdzv_backend static), the one with which torchrun keeps C(--node_rank), so node 0 is rank 0),
    C(--max_restarts 0) (one failed node ends the job everywhere) and C(--no-python) (the command runs as given).
options:
  _input:
    description: The command to run on every process, e.g. C([python, train.py, --epochs, 5]).
    type: list
    elements: str
    required: true
  nnodes:
    description: Number of nodes.
    type: int
    required: true
  node_rank:
    description: This node's rank, 0 to O(nnodes) - 1.
    type: int
    required: true
  rdzv_host:
    description: Address of node 0, where the rendezvous store listens.
    type: str
    required: true
  run_id:
    description: The job's id (letters, digits, C(-), C(_)).
    type: str
    required: true
  nproc_per_node:
    description: Processes per node, a number or C(gpu) (one per GPU that torch sees).
    type: str
    default: "1"
  rdzv_port:
    description: Port of the rendezvous store on node 0.
    type: int
    default: 29400
  local_addr:
    description: The address other nodes reach this one by; empty - torchrun's guess from the host name.
    type: str
    default: ""
  rdzv_timeout:
    description: Seconds a node waits for the others to join.
    type: int
    default: 600
  torchrun:
    description: The launcher's executable.
    type: str
    default: torchrun
"""

EXAMPLES = r"""
- name: Node 1 of 2, one process per GPU
  ansible.builtin.set_fact:
    command: >-
      {{ ['python', 'train.py'] | cloudtrain.ec2.torchrun_argv(nnodes=2, node_rank=1, rdzv_host='10.0.0.12',
                                                              run_id='mnist-1', nproc_per_node='gpu') }}
"""

RETURN = r"""
_value:
  description: The argv, C(torchrun ... --no-python) followed by the command.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.cloudtrain.ec2.plugins.module_utils.torchrun import torchrun_argv


def _torchrun_argv(command, **kwargs):
    try:
        return torchrun_argv(command, **kwargs)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {"torchrun_argv": _torchrun_argv}
