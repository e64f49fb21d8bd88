# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The torchrun command line of one node of a multi-node training job (the train role's filter).

Static rendezvous, not c10d: with c10d torchrun ignores --node_rank and ranks the nodes by the
sorted addresses they join from, so rank 0 (the one that writes the results) could be any node;
static keeps --node_rank, so node 0 of the play is rank 0 and hosts the store on the endpoint.
"""
from __future__ import annotations

import ipaddress
import re

# torchrun accepts a run id of letters, digits, '-' and '_' (it names the store's keys).
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _endpoint(host, port):
    """'host:port', IPv6 addresses in brackets ('[fd00::1]:29400')."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return "[%s]:%d" % (host, port)
    except ValueError:
        pass
    return "%s:%d" % (host, port)


def torchrun_argv(command, nnodes, node_rank, rdzv_host, run_id, nproc_per_node=1, rdzv_port=29400,
                  local_addr="", rdzv_timeout=600, torchrun="torchrun"):
    """The argv that runs `command` (a list) on this node under torchrun.

    --no-python: the command is run as given (python train.py ..., /bin/sh -c '...'), so a user's
    command and the collection's trainer go through the same path. --max_restarts 0: a node that
    fails ends the job on every node instead of restarting the workers. --local-addr: the address
    the other nodes reach this one by (empty: torchrun's own guess, the host name).
    """
    command = [str(c) for c in command or []]
    nnodes, node_rank, rdzv_port, rdzv_timeout = int(nnodes), int(node_rank), int(rdzv_port), int(rdzv_timeout)
    nproc = str(nproc_per_node).strip()
    problems = []
    if not command:
        problems.append("command: empty")
    if nnodes < 1:
        problems.append("nnodes: %d; accepted: 1 or more" % nnodes)
    if not 0 <= node_rank < max(nnodes, 1):
        problems.append("node_rank: %d; accepted: 0 to %d" % (node_rank, nnodes - 1))
    if not (nproc in ("gpu", "cpu", "auto") or (nproc.isdigit() and int(nproc) >= 1)):
        problems.append("nproc_per_node: %r; accepted: a number of 1 or more, gpu, cpu or auto" % nproc_per_node)
    if not str(rdzv_host or "").strip():
        problems.append("rdzv_host: empty; accepted: the address of node 0")
    if not 0 < rdzv_port < 65536:
        problems.append("rdzv_port: %d; accepted: 1 to 65535" % rdzv_port)
    if not _RUN_ID.match(str(run_id)):
        problems.append("run_id: %r; accepted: letters, digits, '-' and '_'" % run_id)
    if rdzv_timeout < 1:
        problems.append("rdzv_timeout: %d; accepted: seconds, 1 or more" % rdzv_timeout)
    if problems:
        raise ValueError("torchrun_argv: " + "; ".join(problems))
    argv = [torchrun, "--nnodes", str(nnodes), "--node_rank", str(node_rank), "--nproc_per_node", nproc,
            "--rdzv_backend", "static", "--rdzv_endpoint", _endpoint(str(rdzv_host).strip(), rdzv_port),
            "--rdzv_id", str(run_id), "--rdzv_conf", "timeout=%d" % rdzv_timeout, "--max_restarts", "0"]
    if str(local_addr or "").strip():
        argv += ["--local-addr", str(local_addr).strip()]
    return argv + ["--no-python"] + command
