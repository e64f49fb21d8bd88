"""ecr_login's logic with a controlled clock and a fake ECR: expiry, caching, change detection."""
from __future__ import annotations

import base64
import datetime
import importlib
import json
import os
import stat

import pytest

from ansible_collections.cloudtrain.ec2.plugins.module_utils import _docker_config as dockercfg
from ansible_collections.cloudtrain.ec2.plugins.module_utils import _ecr_login as ecr


def _ecr_login():
    # Imported when a test runs, not at collection: ansible.module_utils.basic patches
    # sys.intern, and torch (tests/unit/training) then fails to import in the same pytest process.
    return importlib.import_module("ansible_collections.cloudtrain.ec2.plugins.modules.ecr_login")


T0 = datetime.datetime(2026, 11, 30, 6, 0, tzinfo=datetime.timezone.utc).timestamp()
HOUR = 3600.0
DLC = "763104351884"
ADDRESS = "763104351884.dkr.ecr.us-east-1.amazonaws.com"


class Exit(Exception):
    def __init__(self, result):
        super().__init__(result)
        self.result = result


class Fail(Exception):
    def __init__(self, result):
        super().__init__(result.get("msg"))
        self.result = result


class FakeEcr:
    """GetAuthorizationToken that hands out `password`, valid 12 hours from the clock's now."""

    def __init__(self, clock):
        self.clock = clock
        self.password = "token-1"
        self.calls = 0

    def get_authorization_token(self, registryIds, aws_retry=False):
        self.calls += 1
        return {"authorizationData": [{
            "authorizationToken": base64.b64encode(f"AWS:{self.password}".encode()).decode(),
            "expiresAt": datetime.datetime.fromtimestamp(self.clock.now + 12 * HOUR, datetime.timezone.utc),
            "proxyEndpoint": f"https://{rid}.dkr.ecr.us-east-1.amazonaws.com",
        } for rid in registryIds]}


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class FakeModule:
    def __init__(self, params, client, check_mode=False):
        self.params = dict(registry_ids=None, docker_config=None, docker_config_owner=None, login_method="config",
                           docker_cli="docker", reauthorize=False, min_validity=3600, profile=None)
        self.params.update(params)
        self.region = "us-east-1"
        self.check_mode = check_mode
        self.no_log_values = set()
        self._client = client

    def client(self, service, retry_decorator=None):
        assert service == "ecr"
        return self._client

    def exit_json(self, **result):
        raise Exit(result)

    def fail_json(self, **result):
        raise Fail(result)

    def run_command(self, *args, **kwargs):
        raise AssertionError("login_method=config must not run commands")


@pytest.fixture
def env(tmp_path):
    clock = Clock(T0)
    fake = FakeEcr(clock)
    config = tmp_path / "docker" / "config.json"

    def run(check_mode=False, **params):
        module = FakeModule(dict(docker_config=str(config), **params), fake, check_mode=check_mode)
        with pytest.raises(Exit) as done:
            _ecr_login().EcrLogin(module, clock=clock).run()
        return done.value.result, module

    return clock, fake, config, run


# ---------------------------------------------------------------- expiry logic, clock controlled

@pytest.mark.parametrize("left,expected", [(2 * HOUR, True), (HOUR, True), (HOUR - 1, False), (-HOUR, False)])
def test_still_valid_needs_min_validity_left(left, expected):
    entry = {"expires_at": T0 + left, "fingerprint": "abc"}
    assert ecr.still_valid(entry, "abc", T0, 3600) is expected


def test_still_valid_needs_the_same_stored_credential():
    entry = {"expires_at": T0 + 10 * HOUR, "fingerprint": "abc"}
    assert ecr.still_valid(entry, "other", T0, 3600) is False  # someone logged in with another token
    assert ecr.still_valid(entry, None, T0, 3600) is False  # docker logout
    assert ecr.still_valid(None, "abc", T0, 3600) is False  # never recorded


def test_first_login_then_cache_then_refresh(env):
    clock, fake, config, run = env
    result, module = run()
    assert result["changed"] is True and fake.calls == 1
    assert result["registries"] == [{"registry_id": DLC, "registry": ADDRESS, "changed": True, "source": "ecr",
                                     "expires_at": "2026-11-30T18:00:00+00:00"}]
    assert "token-1" in module.no_log_values
    assert dockercfg.stored_credential(dockercfg.load(str(config)), ADDRESS) == ("AWS", "token-1")

    clock.now = T0 + 10 * HOUR  # 2 hours left: keep, without asking ECR
    result, _module = run()
    assert result["changed"] is False and fake.calls == 1
    assert result["registries"][0]["source"] == "cache"

    clock.now = T0 + 11 * HOUR + 1  # under an hour left: ask again; a new token is a change
    fake.password = "token-2"
    result, _module = run()
    assert result["changed"] is True and fake.calls == 2
    assert dockercfg.stored_credential(dockercfg.load(str(config)), ADDRESS) == ("AWS", "token-2")


def test_same_token_with_past_expiry_is_no_change(env):
    """moto's case: the same token every time, expiring in the past."""
    clock, fake, config, run = env
    run()
    clock.now = T0 + 13 * HOUR  # the stored token has expired
    result, _module = run()
    assert fake.calls == 2 and result["changed"] is False
    assert result["registries"][0]["source"] == "ecr"


def test_min_validity_and_reauthorize(env):
    clock, fake, config, run = env
    run()
    clock.now = T0 + 6 * HOUR
    assert run(min_validity=7 * 3600)[0]["registries"][0]["source"] == "ecr"
    assert run(reauthorize=True)[0]["registries"][0]["source"] == "ecr"
    assert fake.calls == 3


def test_logout_in_between_is_noticed(env):
    clock, fake, config, run = env
    run()
    data = json.loads(config.read_text())
    del data["auths"][ADDRESS]
    config.write_text(json.dumps(data))
    clock.now = T0 + HOUR
    result, _module = run()
    assert result["changed"] is True and fake.calls == 2


def test_check_mode_writes_nothing(env):
    clock, fake, config, run = env
    result, _module = run(check_mode=True)
    assert result["changed"] is True
    assert not config.exists() and not config.parent.exists()


def test_files_are_private_and_other_settings_kept(env):
    clock, fake, config, run = env
    config.parent.mkdir(mode=0o755)
    config.write_text(json.dumps({"auths": {"other.example": {"auth": "eDp5"}}, "detachKeys": "ctrl-q"}))
    os.chmod(config, 0o644)
    run()
    data = json.loads(config.read_text())
    assert data["detachKeys"] == "ctrl-q" and "other.example" in data["auths"] and ADDRESS in data["auths"]
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    record = config.parent / ecr.RECORD_NAME
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert "token-1" not in record.read_text()  # a fingerprint, never the credential
    assert config.read_text().startswith("{\n\t\"auths\"")  # the CLI's tab-indented layout


def test_registry_ids_default_to_the_regions_dlc_account_and_are_checked(env):
    clock, fake, config, run = env
    result, _module = run(registry_ids=["123456789012", DLC])
    assert [r["registry_id"] for r in result["registries"]] == ["123456789012", DLC]
    with pytest.raises(Fail) as err:
        run(registry_ids=["12345"])
    assert "12-digit" in str(err.value)


# ---------------------------------------------------------------- small pure helpers

def test_decode_token_and_address():
    token = base64.b64encode(b"AWS:secret:with:colons").decode()
    assert ecr.decode_token(token) == ("AWS", "secret:with:colons")
    assert ecr.registry_address("https://1.dkr.ecr.us-east-1.amazonaws.com/") == "1.dkr.ecr.us-east-1.amazonaws.com"
    with pytest.raises(ValueError):
        ecr.decode_token(base64.b64encode(b"no-colon").decode())


def test_moto_xml_403_is_read_as_access_denied():
    xml = ('<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error><Code>AccessDenied</Code>'
           '<Message>User: arn:aws:iam::123456789012:user/x is not authorized to perform: ecr:GetAuthorizationToken'
           '</Message><Type>Sender</Type></Error></Errors></ErrorResponse>')
    kind, code, message = ecr.classify_client_error("403", xml, 403)
    assert (kind, code) == ("access_denied", "AccessDenied")
    assert message.endswith("not authorized to perform: ecr:GetAuthorizationToken")
    assert ecr.classify_client_error("AccessDeniedException", "nope", 400)[0] == "access_denied"
    assert ecr.classify_client_error("UnrecognizedClientException", "bad key", 400)[0] == "bad_credentials"
    assert ecr.classify_client_error("ServerException", "boom", 500)[0] == "other"


@pytest.mark.parametrize("stderr,kind", [
    ("Cannot connect to the Docker daemon at unix:///tmp/x.sock. Is the docker daemon running?", "daemon"),
    ("error during connect: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.24/version\": dial unix", "daemon"),
    ("permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock", "permission"),
    ("Error response from daemon: Get \"https://r/v2/\": unauthorized: authentication required", "rejected"),
    ("Error response from daemon: Get \"https://r/v2/\": x509: certificate signed by unknown authority", "tls"),
    ("Error response from daemon: Get \"https://r/v2/\": net/http: TLS handshake timeout", "failed"),
])
def test_docker_errors_are_told_apart(stderr, kind):
    assert dockercfg.classify(stderr) == kind


def test_no_credentials_message_says_where_boto3_looked(tmp_path):
    text = ecr.no_credentials_message("us-east-1", environ={"AWS_EC2_METADATA_DISABLED": "true"}, home=str(tmp_path))
    assert "No AWS credentials found for ECR in us-east-1" in text
    assert f"{tmp_path}/.aws/credentials (missing)" in text
    assert "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (not set)" in text
    assert "instance metadata service (disabled by AWS_EC2_METADATA_DISABLED)" in text


def test_default_config_path_follows_owner_and_docker_config():
    assert dockercfg.default_config_path(environ={"DOCKER_CONFIG": "/x"}) == "/x/config.json"
    assert dockercfg.default_config_path(owner="root", environ={}) == "/root/.docker/config.json"
