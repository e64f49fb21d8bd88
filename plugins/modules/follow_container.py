# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The work happens in the action plugin of the same name (plugins/action/follow_container.py),
# which runs on the controller so that it can print progress while the task is still running.
from __future__ import annotations

DOCUMENTATION = r"""
module: follow_container
short_description: Follow a detached container until it exits, printing its progress lines
version_added: 0.1.0
description:
  - Polls a container on the target through the task's own connection (SSH, or the docker connection), one command per poll
    that waits on the target for the container to exit (C(docker wait), at most O(poll_interval) seconds), then reads its
    state and the log lines written since the last poll. The exit is seen when it happens, not up to a poll later.
  - Every log line that starts with O(progress_prefix) and carries one JSON object is displayed as it arrives, so a long
    training is not silent.
  - The container is never started, stopped or attached to. When the controller goes away the training carries on, and the
    next run follows it again. On timeout the task fails and the container keeps running.
  - Fails with the exit code and the last log lines when the container exits with a code other than 0.
  - Stops, failing with RV(status=controller-gone), when the C(ansible-playbook) process that started it is gone, so a
    controller that dies leaves no worker polling an orphaned run.
author:
  - cloudtrain.ec2 contributors (@cloudtrain)
options:
  name:
    description: Name or ID of the container to follow.
    type: str
    required: true
  timeout:
    description:
      - Seconds to wait for the container to exit. V(0) looks once and returns.
    type: int
    default: 86400
  poll_interval:
    description:
      - Seconds between two polls, and so between two progress updates. A poll waits on the target for the exit for at
        most this long, so a longer interval means fewer round trips without a later result.
    type: float
    default: 10.0
  progress_prefix:
    description: Log lines starting with this text carry one JSON object each, shown as progress.
    type: str
    default: "PROGRESS "
  tail_lines:
    description: How many of the last log lines a failure message quotes.
    type: int
    default: 20
  save_log:
    description:
      - Path on the target. After the exit, the full log of the container is written there; on timeout, the log so far.
      - The task reports changed only when that file's content changed.
    type: path
  show_log:
    description: Print every log line as it arrives (C(docker logs -f)), instead of only the progress records.
    type: bool
    default: false
    version_added: 0.2.0
  docker:
    description: The docker CLI on the target.
    type: str
    default: docker
attributes:
  action:
    support: full
    description: The work runs in an action plugin on the controller.
  check_mode:
    support: full
    description: In check mode the container is looked at once and no log is written.
  diff_mode:
    support: none
    description: Nothing on the target is compared.
  platform:
    support: full
    platforms: posix
    description: Any target with a POSIX shell and the Docker CLI.
notes:
  - The connection user must be allowed to run C(docker), for example through the C(docker) group that the
    role C(cloudtrain.ec2.docker) sets up.
"""

EXAMPLES = r"""
- name: Follow the training container and keep its log
  cloudtrain.ec2.follow_container:
    name: mnist-1
    timeout: 7200
    poll_interval: 15
    save_log: /home/ec2-user/cloudtrain/mnist-1/output/train.log
  register: training
"""

RETURN = r"""
status:
  description:
    - The container's state at the end (V(exited), V(running) on timeout, V(missing)), or V(controller-gone) when
      C(ansible-playbook) died while following.
  returned: always
  type: str
  sample: exited
exit_code:
  description: The container's exit code.
  returned: when the container exited
  type: int
  sample: 0
exit_meaning:
  description:
    - What the exit code means, where it has a known one (75 checkpointed and stopped, 137 killed or out of
      memory, 139 crashed, ...); null for 0 and for codes without one.
  returned: when the container exited
  type: str
  sample: "killed (SIGKILL): out of memory, or stopped by force"
oom_killed:
  description: Whether the kernel killed the container for lack of memory.
  returned: when the container exists
  type: bool
started_at:
  description: When the container started, as Docker reports it.
  returned: when the container started
  type: str
  sample: "2026-11-30T06:20:01.123456789Z"
finished_at:
  description: When the container exited, as Docker reports it.
  returned: when the container exited
  type: str
run_seconds:
  description: Seconds the container ran.
  returned: when the container started
  type: float
  sample: 61.9
progress:
  description: The progress records seen during this task, parsed.
  returned: always
  type: list
  elements: dict
last_progress:
  description: The last progress record seen.
  returned: when one was seen
  type: dict
  sample: {"epoch": 2, "epochs": 2, "accuracy": 0.9775}
log_tail:
  description: The last O(tail_lines) lines of the log.
  returned: always
  type: list
  elements: str
"""
