"""A run's names and tags, defined once, and why a run name is refused."""
from __future__ import annotations

import pytest

from ansible_collections.cloudtrain.ec2.plugins.module_utils.ec2_run_facts import MANAGED_BY, RUN_TAG
from ansible_collections.cloudtrain.ec2.plugins.module_utils.run_identity import identity, name_problem


def test_names_and_tags_of_a_run():
    run = identity("mnist-1")
    assert run["resource_name"] == run["key_name"] == "cloudtrain-mnist-1"
    assert run["tags"] == {"Name": "mnist-1", RUN_TAG: "mnist-1", "managed-by": MANAGED_BY}
    assert run["instance_filters"] == {"tag:cloudtrain:run": "mnist-1"}
    assert run["name_problem"] == ""
    # No run name: the filter that finds every run of the collection.
    assert identity("")["instance_filters"] == {"tag:managed-by": "cloudtrain.ec2"}


@pytest.mark.parametrize("name, why", [
    ("mnist_1", "the characters '_' are not accepted"),
    ("my run/2", "the characters ' ' '/' are not accepted"),
    ("é-run", "the characters 'é' are not accepted"),
    ("-run", "it starts with '-'"),
    ("x" * 51, "it is 51 characters long"),
    ("", "it is empty"),
])
def test_a_refused_name_says_why(name, why):
    message = name_problem(name)
    assert message.startswith("run_name '%s' is refused: %s;" % (name, why)), message
    assert "accepted: 1-50 letters, digits and '-'" in message


@pytest.mark.parametrize("name", ["a", "mnist-1", "Ada-m7i-large-1202-011500", "x" * 50])
def test_accepted_names(name):
    assert name_problem(name) == ""
