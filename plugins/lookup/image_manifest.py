# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: image_manifest
short_description: Whether container images exist in their ECR registry, asked from the controller
version_added: 0.2.0
description:
  - Read-only. For each image in an ECR registry (C(<account>.dkr.ecr.<region>.amazonaws.com/...), the AWS Deep
    Learning Containers included) it gets an ECR authorization token for that account in that region, the same
    token C(docker login) gets, and asks the registry for the image's manifest (an HTTP C(HEAD) of
    C(/v2/<repository>/manifests/<tag or digest>)). Nothing is pulled.
  - The answer is C(exists=true) with the manifest's digest, C(exists=false) when the registry says there is no
    such tag or repository, or C(exists=null) with the reason when the controller cannot tell - no token, the
    registry unreachable from here or refusing the controller's token (the instance pulls with its own role), or
    a registry other than ECR, which is not asked.
  - The token is used for the one request and is never returned or logged.
options:
  _terms:
    description: Image references, C(registry/repository:tag) or C(registry/repository@sha256:...).
    type: list
    elements: str
    required: true
  timeout:
    description: Seconds to wait for the registry.
    type: int
    default: 15
extends_documentation_fragment:
  - amazon.aws.boto3
  - amazon.aws.common.plugins
  - amazon.aws.region.plugins
notes:
  - The ECR call goes to the registry's own region, whatever O(region) says.
"""

EXAMPLES = r"""
- name: Refuse a training image its registry does not have
  ansible.builtin.assert:
    that: _manifest.exists is not false
    fail_msg: "{{ _manifest.message }}"
  vars:
    _image: 763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-gpu-py311-cu124-ubuntu22.04-ec2
    _manifest: "{{ lookup('cloudtrain.ec2.image_manifest', _image) }}"
"""

RETURN = r"""
_raw:
  description: One dictionary per image.
  type: list
  elements: dict
  contains:
    image:
      description: The image as given.
      type: str
    registry:
      description: The registry's host name (C(docker.io) for an image without one).
      type: str
    repository:
      description: The repository in the registry.
      type: str
    reference:
      description: The tag or digest asked for (C(latest) when the image names neither).
      type: str
    exists:
      description: True when the registry has the manifest, false when it says it has not, null when not known.
      type: bool
    digest:
      description: The manifest's digest, when it exists.
      type: str
    message:
      description: What was found, in one sentence.
      type: str
"""

import socket
import ssl

try:
    import botocore
except ImportError:
    pass  # Handled by AWSLookupBase

from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.plugin_utils.lookup import AWSLookupBase

from ansible_collections.cloudtrain.ec2.plugins.module_utils import _image_ref


class LookupModule(AWSLookupBase):
    def run(self, terms, variables, **kwargs):
        super().run(terms, variables, **kwargs)
        results = []
        for image in terms:
            try:
                ref = _image_ref.parse(image)
            except ValueError as exc:
                raise AnsibleLookupError("image_manifest: %s" % exc) from exc
            results.append(dict(ref, image=image, **self._look_up(image, ref)))
        return results

    def _look_up(self, image, ref):
        ecr = _image_ref.ecr_registry(ref["registry"])
        if ecr is None:
            return self._unknown("%s is not in an ECR registry: not checked from the controller" % image)
        account, region = ecr
        try:
            token, endpoint = self._token(account, region)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            return self._unknown("%s not checked: no ECR token for account %s in %s from the controller (%s)"
                                 % (image, account, region, to_native(exc)))
        url = "%s/v2/%s/manifests/%s" % (endpoint.rstrip("/"), ref["repository"], ref["reference"])
        try:
            response = open_url(url, method="HEAD", timeout=self.get_option("timeout"),
                                headers={"Authorization": "Basic %s" % token, "Accept": _image_ref.MANIFEST_TYPES})
        except HTTPError as exc:
            if exc.code == 404:
                return {"exists": False, "digest": None,
                        "message": "%s does not exist: repository %s of %s has no image %s"
                                   % (image, ref["repository"], ref["registry"], ref["reference"])}
            return self._unknown("%s not checked: the registry answered the controller's token with HTTP %s"
                                 % (image, exc.code))
        except (URLError, socket.error, ssl.SSLError, ValueError) as exc:
            return self._unknown("%s not checked: %s is not reachable from the controller (%s)"
                                 % (image, ref["registry"], to_native(getattr(exc, "reason", exc))))
        digest = response.headers.get("Docker-Content-Digest")
        response.close()
        return {"exists": True, "digest": digest,
                "message": "%s exists in %s" % (image, ref["registry"])}

    def _token(self, account, region):
        """ECR's base64 'AWS:<password>' (an HTTP Basic credential as it is) and the registry's endpoint."""
        self.set_option("region", region)
        ecr = self.client("ecr", AWSRetry.jittered_backoff())
        [data] = ecr.get_authorization_token(registryIds=[account])["authorizationData"]
        return data["authorizationToken"], data["proxyEndpoint"]

    @staticmethod
    def _unknown(message):
        return {"exists": None, "digest": None, "message": message}
