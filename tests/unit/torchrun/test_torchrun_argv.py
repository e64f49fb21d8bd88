"""The torchrun command line of one node (cloudtrain.ec2.torchrun_argv)."""
from __future__ import annotations

import pytest

from ansible_collections.cloudtrain.ec2.plugins.module_utils.torchrun import torchrun_argv

COMMAND = ["python", "train.py", "--epochs", "1"]


def test_node_one_of_two_on_cpu():
    argv = torchrun_argv(COMMAND, nnodes=2, node_rank=1, rdzv_host="10.0.0.12", run_id="mnist-1",
                         local_addr="10.0.0.13")
    assert argv == ["torchrun", "--nnodes", "2", "--node_rank", "1", "--nproc_per_node", "1",
                    "--rdzv_backend", "static", "--rdzv_endpoint", "10.0.0.12:29400", "--rdzv_id", "mnist-1",
                    "--rdzv_conf", "timeout=600", "--max_restarts", "0", "--local-addr", "10.0.0.13",
                    "--no-python", "python", "train.py", "--epochs", "1"]


def test_one_process_per_gpu_and_no_local_address():
    argv = torchrun_argv(["/bin/sh", "-c", "python train.py"], nnodes=4, node_rank=0, rdzv_host="10.0.0.12",
                         run_id="r", nproc_per_node="gpu", rdzv_port=29500, rdzv_timeout=60)
    assert argv[argv.index("--nproc_per_node") + 1] == "gpu"
    assert argv[argv.index("--rdzv_endpoint") + 1] == "10.0.0.12:29500"
    assert "timeout=60" in argv and "--local-addr" not in argv
    # the user's command comes last, untouched
    assert argv[-4:] == ["--no-python", "/bin/sh", "-c", "python train.py"]


def test_ipv6_endpoint_in_brackets():
    argv = torchrun_argv(COMMAND, nnodes=2, node_rank=0, rdzv_host="fd00::5", run_id="r")
    assert argv[argv.index("--rdzv_endpoint") + 1] == "[fd00::5]:29400"


@pytest.mark.parametrize("kwargs, message", [
    ({"nnodes": 0}, "nnodes: 0"),
    ({"node_rank": 2}, "node_rank: 2; accepted: 0 to 1"),
    ({"node_rank": -1}, "node_rank: -1"),
    ({"nproc_per_node": "0"}, "nproc_per_node"),
    ({"nproc_per_node": "many"}, "nproc_per_node"),
    ({"rdzv_host": ""}, "rdzv_host: empty"),
    ({"rdzv_port": 70000}, "rdzv_port: 70000"),
    ({"run_id": "a b"}, "run_id"),
    ({"rdzv_timeout": 0}, "rdzv_timeout: 0"),
])
def test_bad_input_is_named(kwargs, message):
    args = {"nnodes": 2, "node_rank": 0, "rdzv_host": "10.0.0.12", "run_id": "r", **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        torchrun_argv(COMMAND, **args)


def test_empty_command_refused_through_the_filter():
    # Imported here: ansible-core patches sys.intern on import, and torch (imported by the trainer's
    # tests collected later in the same process) refuses to start after that.
    from ansible.errors import AnsibleFilterError
    from ansible_collections.cloudtrain.ec2.plugins.filter.torchrun import FilterModule

    torchrun_filter = FilterModule().filters()["torchrun_argv"]
    with pytest.raises(AnsibleFilterError, match="command: empty"):
        torchrun_filter([], nnodes=2, node_rank=0, rdzv_host="10.0.0.12", run_id="r")
    assert torchrun_filter(COMMAND, nnodes=2, node_rank=0, rdzv_host="h", run_id="r")[0] == "torchrun"
