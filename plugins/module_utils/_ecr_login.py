# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure helpers of cloudtrain.ec2.ecr_login: tokens, expiry, the login record, error texts.

The login record is a small JSON file next to the Docker config (mode 0600) that remembers,
per region and registry, when the stored ECR token expires and a SHA-256 of the credential
(never the credential). It lets a run skip ECR while the stored login is valid for long
enough, and notice when someone replaced or removed the login in between.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re

RECORD_NAME = "cloudtrain-ecr-login.json"
RECORD_VERSION = 1

ACCESS_DENIED_CODES = ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation")
BAD_CREDENTIAL_CODES = ("UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
                        "ExpiredTokenException", "ExpiredToken", "AuthFailure", "SignatureDoesNotMatch")


def decode_token(authorization_token):
    """ECR's base64 'AWS:<password>' -> ('AWS', '<password>')."""
    username, sep, password = base64.b64decode(authorization_token).decode("utf-8").partition(":")
    if not sep or not password:
        raise ValueError("ECR returned an authorization token that is not 'user:password'")
    return username, password


def registry_address(proxy_endpoint):
    """'https://123.dkr.ecr.us-east-1.amazonaws.com' -> '123.dkr.ecr.us-east-1.amazonaws.com'."""
    address = proxy_endpoint
    for scheme in ("https://", "http://"):
        if address.startswith(scheme):
            address = address[len(scheme):]
    return address.rstrip("/")


def fingerprint(credential):
    """SHA-256 of 'user:password', or None for no credential (the record never holds the secret)."""
    if not credential or not credential[1]:
        return None
    return hashlib.sha256(("%s:%s" % credential).encode("utf-8")).hexdigest()


def to_epoch(value):
    """A datetime (boto3) or epoch number -> epoch seconds (float)."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    return float(value)


def iso(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat()


def record_key(region, registry_id):
    return "%s/%s" % (region, registry_id)


def still_valid(entry, stored_fingerprint, now, min_validity):
    """True when the recorded login needs no new token.

    The record must exist, the Docker config must still hold the very credential it describes,
    and the token must stay valid for at least min_validity seconds after now.
    """
    if not entry or not stored_fingerprint:
        return False
    if entry.get("fingerprint") != stored_fingerprint:
        return False
    return float(entry.get("expires_at", 0)) - now >= min_validity


def record_path(docker_config_path):
    return os.path.join(os.path.dirname(docker_config_path), RECORD_NAME)


def load_record(path):
    """The record's registries ({} when missing or unreadable: a cache, never an error)."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        return {}
    registries = data.get("registries")
    return registries if isinstance(registries, dict) else {}


def record_document(registries):
    return {"version": RECORD_VERSION, "registries": registries}


def classify_client_error(code, message, http_status):
    """'access_denied', 'bad_credentials' or 'other' for a ClientError, plus a readable message.

    Some endpoints (AWS-compatible ones, some proxies) answer a JSON-protocol call with an
    XML <ErrorResponse> and a bare HTTP 403: botocore then reports Code '403' and the XML as the
    message. The inner <Code>/<Message> are read back out of it so the user sees AWS's words.
    """
    inner = re.search(r"<Code>([^<]+)</Code>", message or "")
    text = re.search(r"<Message>([^<]+)</Message>", message or "")
    if inner:
        code = inner.group(1)
    if text:
        message = text.group(1)
    if code in ACCESS_DENIED_CODES or (http_status == 403 and "not authorized" in (message or "")):
        return "access_denied", code, message
    if code in BAD_CREDENTIAL_CODES:
        return "bad_credentials", code, message
    return "other", code, message


def no_credentials_message(region, profile=None, environ=None, home=None):
    """Where boto3 looked for credentials, in its own order, for the 'no credentials' failure."""
    environ = os.environ if environ is None else environ
    home = home or os.path.expanduser("~")
    credentials_file = environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials")
    config_file = environ.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config")

    def state(path):
        return "present" if os.path.exists(path) else "missing"

    imds = "disabled by AWS_EC2_METADATA_DISABLED" if str(environ.get("AWS_EC2_METADATA_DISABLED", "")).lower() == "true" \
        else "no instance profile answered"
    looked = [
        "the module options access_key/secret_key/session_token (not set)",
        "environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (%s)"
        % ("set" if environ.get("AWS_ACCESS_KEY_ID") else "not set"),
        "profile %s in shared credentials file %s (%s) and config file %s (%s)"
        % (profile or environ.get("AWS_PROFILE") or "default", credentials_file, state(credentials_file),
           config_file, state(config_file)),
        "web identity / SSO / credential_process settings of that profile",
        "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI %s)"
        % ("set" if environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
           else "not set"),
        "the EC2 instance metadata service (%s)" % imds,
    ]
    return ("No AWS credentials found for ECR in %s. boto3 looked at, in order: %s. On EC2 attach an instance "
            "profile whose role allows ecr:GetAuthorizationToken; elsewhere set a profile or environment variables."
            % (region, "; ".join(looked)))


def access_denied_message(region, registry_ids, aws_message):
    return ("AccessDenied: these AWS credentials may not call ecr:GetAuthorizationToken in %s (registries %s). "
            "Allow the IAM action ecr:GetAuthorizationToken (Resource \"*\") to the instance role or user, and "
            "ecr:BatchGetImage / ecr:GetDownloadUrlForLayer on the repositories to pull. AWS said: %s"
            % (region, ", ".join(registry_ids), aws_message))
