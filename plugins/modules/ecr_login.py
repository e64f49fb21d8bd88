#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: ecr_login
short_description: Log Docker in to Amazon ECR registries without the AWS CLI
version_added: 0.1.0
author:
  - cloudtrain.ec2 contributors (@cloudtrain)
description:
  - Gets an authorization token from Amazon ECR (C(GetAuthorizationToken)) with boto3, using whatever
    credentials boto3 finds on the host (the instance profile on EC2, a profile or environment variables
    elsewhere), and logs the Docker client in with it, like
    C(aws ecr get-login-password | docker login --username AWS --password-stdin <registry>).
  - By default it logs in to the AWS Deep Learning Containers registry of the region.
  - Idempotent. The token's expiry and a SHA-256 of the credential are kept in C(cloudtrain-ecr-login.json)
    next to the Docker config (mode 0600). While the stored login stays valid for at least O(min_validity)
    seconds the module reports no change and does not call ECR. A new token that equals the stored
    credential is no change either.
  - The password goes to C(docker login) on stdin (or straight into the config file); it never appears on
    a command line, in the result or in the log.
options:
  registry_ids:
    description:
      - AWS account IDs of the registries to log in to.
      - Default the account that serves the AWS Deep Learning Containers in O(region) (C(763104351884) in
        most regions).
    type: list
    elements: str
  docker_config:
    description:
      - Path of the Docker client config file to write.
      - Default C(~/.docker/config.json) of O(docker_config_owner), or else of the user the module runs as
        (C($DOCKER_CONFIG/config.json) when that is set).
    type: path
  docker_config_owner:
    description:
      - User who runs C(docker) and owns the config. Under C(become) set this to the login user, or the
        login lands in root's config; the file, its folder and the login record are then given to this user.
    type: str
  login_method:
    description:
      - V(cli) runs C(docker login --password-stdin), which also has the daemon check the credential
        against the registry and uses a configured credential store. Needs a running Docker daemon.
      - V(config) writes C(auths) in the config file the way C(docker login) does, without a daemon.
        When the config names a credential store (C(credsStore), C(credHelpers)) it uses the CLI anyway.
    type: str
    choices: [cli, config]
    default: cli
  docker_cli:
    description: The docker CLI, a name looked up in C(PATH) or an absolute path.
    type: str
    default: docker
  reauthorize:
    description: Get a new token and log in again even when the stored login is still valid.
    type: bool
    default: false
  min_validity:
    description:
      - Seconds the stored login must stay valid for to be kept. ECR tokens last 12 hours.
    type: int
    default: 3600
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
    description: Asks ECR for a token (a read) to tell whether the login would change; writes nothing.
  diff_mode:
    support: none
    description: No diff; the result lists per registry whether the login changed.
  idempotent:
    support: full
    description: A second run reports no change while the stored login is valid or the token is unchanged.
notes:
  - The host needs boto3; C(docker) only for O(login_method=cli). The IAM action is C(ecr:GetAuthorizationToken)
    (resource C(*)); pulling needs C(ecr:BatchGetImage) and C(ecr:GetDownloadUrlForLayer) on the repository.
  - Works with older boto3/botocore than amazon.aws supports (for example Debian 12's 1.26/1.29), with the
    amazon.aws warning that they are untested.
  - Without O(endpoint_url) the module takes the endpoint from E(AWS_ENDPOINT_URL_ECR) or E(AWS_ENDPOINT_URL)
    as botocore 1.31 and later do, also when the host's botocore is older.
seealso:
  - plugin: cloudtrain.ec2.dlc_image
    plugin_type: lookup
  - name: GetAuthorizationToken
    description: The ECR API the module calls.
    link: https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html
"""

EXAMPLES = r"""
- name: Log the ubuntu user's Docker in to the Deep Learning Containers registry (instance profile credentials)
  cloudtrain.ec2.ecr_login:
    region: us-east-1
    docker_config_owner: ubuntu
  become: true

- name: Log in to the DLC registry and the account's own registry, from the image the resolver chose
  cloudtrain.ec2.ecr_login:
    region: "{{ dlc.region }}"
    registry_ids:
      - "{{ dlc.registry_id }}"
      - "123456789012"
  vars:
    dlc: "{{ lookup('cloudtrain.ec2.dlc_image', instance_type='g5.xlarge', region='eu-west-1', details=true) }}"

- name: Force a fresh token
  cloudtrain.ec2.ecr_login:
    region: us-east-1
    reauthorize: true
"""

RETURN = r"""
registries:
  description: One entry per registry.
  returned: always
  type: list
  elements: dict
  contains:
    registry_id:
      description: The registry's account ID.
      type: str
      sample: "763104351884"
    registry:
      description: The registry address (the token's proxy endpoint without C(https://)).
      type: str
      sample: 763104351884.dkr.ecr.us-east-1.amazonaws.com
    expires_at:
      description: When the stored token expires (ISO 8601, UTC).
      type: str
      sample: "2026-11-30T17:10:00+00:00"
    changed:
      description: Whether the stored login for this registry changed (or would in check mode).
      type: bool
    source:
      description: V(ecr) when a token was fetched, V(cache) when the stored login was still valid.
      type: str
      sample: ecr
docker_config:
  description: The Docker config file written.
  returned: always
  type: str
  sample: /home/ubuntu/.docker/config.json
"""

import os
import pwd
import time

try:
    import botocore.exceptions
except ImportError:
    pass  # AnsibleAWSModule reports the missing library

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.cloudtrain.ec2.plugins.module_utils import _docker_config as dockercfg
from ansible_collections.cloudtrain.ec2.plugins.module_utils import _ecr_login as ecr
from ansible_collections.cloudtrain.ec2.plugins.module_utils._dlc_data import REGION_ACCOUNTS
from ansible_collections.cloudtrain.ec2.plugins.module_utils._dlc_images import registry_host


class EcrLogin:
    """Fetch ECR tokens when the stored login is not good enough, and hand them to Docker."""

    def __init__(self, module, clock=time.time):
        self.module = module
        self.params = module.params
        self.clock = clock
        self.region = module.region
        self.owner = None
        if self.params["docker_config_owner"]:
            try:
                self.owner = pwd.getpwnam(self.params["docker_config_owner"])
            except KeyError:
                module.fail_json(msg="docker_config_owner '%s' is not a user on this host" % self.params["docker_config_owner"])
        self.config_path = self.params["docker_config"] or dockercfg.default_config_path(
            self.params["docker_config_owner"])
        self.record_path = ecr.record_path(self.config_path)
        self._cli = None

    # ------------------------------------------------------------------ inputs

    def registry_ids(self):
        if not self.region:
            self.module.fail_json(msg="ecr_login needs a region: set the region option or AWS_REGION")
        if self.region not in REGION_ACCOUNTS and self.region not in self._botocore_regions():
            self.module.fail_json(msg="unknown region '%s': it is neither an ECR region botocore knows nor one with "
                                  "a Deep Learning Containers registry (%s)" % (self.region, ", ".join(sorted(REGION_ACCOUNTS))),
                                  reason="unknown_region")
        ids = self.params["registry_ids"] or []
        if not ids:
            if self.region not in REGION_ACCOUNTS:
                self.module.fail_json(msg="no Deep Learning Containers registry is known for region '%s': "
                                      "give registry_ids" % self.region)
            ids = [REGION_ACCOUNTS[self.region]]
        bad = [i for i in ids if not (len(i) == 12 and i.isdigit())]
        if bad:
            self.module.fail_json(msg="registry_ids must be 12-digit AWS account IDs: %s" % ", ".join(bad))
        return list(dict.fromkeys(ids))

    @staticmethod
    def _botocore_regions():
        try:
            import boto3
            session = boto3.session.Session()
            return {r for p in session.get_available_partitions() for r in session.get_available_regions("ecr", p)}
        except Exception:  # an old or odd botocore: rely on the shipped table only
            return set()

    def cli(self):
        if self._cli is None:
            try:
                self._cli = dockercfg.DockerCli(self.module.run_command, self.params["docker_cli"])
            except dockercfg.DockerCliError as exc:
                self.module.fail_json(msg=str(exc), reason=exc.kind)
        return self._cli

    # ------------------------------------------------------------------ ECR

    def fetch_tokens(self, registry_ids):
        """GetAuthorizationToken, with clear messages for the failures users meet."""
        retry = AWSRetry.jittered_backoff(retries=8, delay=1, max_delay=20,
                                          catch_extra_error_codes=["ThrottlingException"])
        client = self.module.client("ecr", retry_decorator=retry)
        try:
            reply = client.get_authorization_token(registryIds=registry_ids, aws_retry=True)
        except botocore.exceptions.NoCredentialsError:
            self.module.fail_json(msg=ecr.no_credentials_message(self.region, self.params.get("profile")),
                                  reason="no_credentials")
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            kind, code, message = ecr.classify_client_error(error.get("Code", ""), error.get("Message", str(exc)), status)
            if kind == "access_denied":
                self.module.fail_json(msg=ecr.access_denied_message(self.region, registry_ids, message),
                                      reason="access_denied", error_code=code)
            if kind == "bad_credentials":
                self.module.fail_json(msg="AWS rejected the credentials boto3 found (%s): %s" % (code, message),
                                      reason="bad_credentials", error_code=code)
            self.module.fail_json(msg="ecr:GetAuthorizationToken failed in %s: %s: %s" % (self.region, code, message),
                                  reason="aws_error", error_code=code)
        except botocore.exceptions.EndpointConnectionError as exc:
            self.module.fail_json(msg="cannot reach the ECR endpoint for %s: %s" % (self.region, exc),
                                  reason="endpoint_unreachable")
        except botocore.exceptions.BotoCoreError as exc:
            self.module.fail_json(msg="ecr:GetAuthorizationToken failed in %s: %s" % (self.region, exc), reason="aws_error")
        tokens = []
        for item in reply.get("authorizationData", []):
            # Mask the secret in anything Ansible prints, before it is even decoded.
            self.module.no_log_values.add(item["authorizationToken"])
            username, password = ecr.decode_token(item["authorizationToken"])
            self.module.no_log_values.add(password)
            tokens.append((username, password, ecr.registry_address(item["proxyEndpoint"]),
                           ecr.to_epoch(item["expiresAt"])))
        return tokens

    # ------------------------------------------------------------------ Docker

    def _owner_ids(self):
        return (self.owner.pw_uid, self.owner.pw_gid) if self.owner else (None, None)

    def log_in(self, config, address, username, password):
        uid, gid = self._owner_ids()
        use_cli = self.params["login_method"] == "cli" or dockercfg.credential_store(config, address)
        if not use_cli:
            dockercfg.write_auth(self.config_path, address, username, password, uid, gid)
            return
        cli = self.cli()
        try:
            cli.check_daemon()
            config_dir = os.path.dirname(self.config_path)
            cli.login(config_dir, address, username, password)
        except dockercfg.DockerCliError as exc:
            self.module.fail_json(msg=str(exc), reason=exc.kind)
        if uid is not None:
            dockercfg.fix_owner(self.config_path, uid, gid)

    # ------------------------------------------------------------------ run

    def run(self):
        ids = self.registry_ids()
        if self.params["login_method"] == "cli" and not self.module.check_mode:
            self.cli()  # "docker not installed" before anything else happens
        try:
            config = dockercfg.load(self.config_path)
        except dockercfg.DockerConfigError as exc:
            self.module.fail_json(msg=str(exc))
        record = ecr.load_record(self.record_path)
        new_record = dict(record)
        now = self.clock()
        results = {}

        def stored(address):
            try:
                return dockercfg.stored_credential(config, address)
            except dockercfg.DockerConfigError as exc:
                self.module.fail_json(msg=str(exc))

        to_fetch = []
        for registry_id in ids:
            entry = record.get(ecr.record_key(self.region, registry_id))
            address = entry["registry"] if entry else registry_host(registry_id, self.region)
            if not self.params["reauthorize"] and ecr.still_valid(
                    entry, ecr.fingerprint(stored(address)), now, self.params["min_validity"]):
                results[registry_id] = dict(registry_id=registry_id, registry=address, changed=False,
                                            expires_at=ecr.iso(entry["expires_at"]), source="cache")
            else:
                to_fetch.append(registry_id)

        if to_fetch:
            tokens = self.fetch_tokens(to_fetch)
            # The proxy endpoint starts with the registry ID; fall back on ECR's order (it keeps ours).
            by_id = {t[2].split(".", 1)[0]: t for t in tokens}
            for position, registry_id in enumerate(to_fetch):
                token = by_id.get(registry_id) or (tokens[position] if position < len(tokens) else None)
                if token is None:
                    self.module.fail_json(msg="ECR returned no token for registry %s" % registry_id)
                username, password, address, expires_at = token
                credential_fp = ecr.fingerprint((username, password))
                changed = ecr.fingerprint(stored(address)) != credential_fp
                if changed and not self.module.check_mode:
                    self.log_in(config, address, username, password)
                    config = dockercfg.load(self.config_path)
                new_record[ecr.record_key(self.region, registry_id)] = dict(
                    registry=address, expires_at=expires_at, fingerprint=credential_fp)
                results[registry_id] = dict(registry_id=registry_id, registry=address, changed=changed,
                                            expires_at=ecr.iso(expires_at), source="ecr")

        if new_record != record and not self.module.check_mode:
            # The record is a cache of facts about the login, not the login: refreshing it is no change.
            uid, gid = self._owner_ids()
            dockercfg.write_json_private(self.record_path, ecr.record_document(new_record), uid, gid)

        registries = [results[i] for i in ids if i in results]
        self.module.exit_json(changed=any(r["changed"] for r in registries), registries=registries,
                              docker_config=self.config_path)


def main():
    argument_spec = dict(
        registry_ids=dict(type="list", elements="str"),
        docker_config=dict(type="path"),
        docker_config_owner=dict(type="str"),
        login_method=dict(type="str", choices=["cli", "config"], default="cli"),
        docker_cli=dict(type="str", default="docker"),
        reauthorize=dict(type="bool", default=False),
        min_validity=dict(type="int", default=3600),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    EcrLogin(module).run()


if __name__ == "__main__":
    main()
