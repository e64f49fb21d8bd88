# -*- coding: utf-8 -*-
# Copyright: cloudtrain.ec2 contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: dlc_image
short_description: The URI of an AWS Deep Learning Containers PyTorch training image
version_added: 0.1.0
author:
  - cloudtrain.ec2 contributors (@cloudtrain)
description:
  - Turns a framework version, CPU or GPU (or an instance type), Python and CUDA versions, a region and the
    registry (private ECR or ECR Public) into the URI of a Deep Learning Containers image for EC2, like
    SageMaker's C(image_uris.retrieve) does.
  - Works offline from facts shipped with the collection (generated from the Deep Learning Containers
    documentation); the registry account of every region, including China's C(.amazonaws.com.cn) registries.
  - Criteria left out are free. Without O(framework_version) the newest B(supported) image wins, that is
    the newest one not past its end of patching on today's date (the controller's clock); only where every
    matching image is past it (today the arm64 GPU image), the newest of them, with a warning.
  - An O(instance_type) with no image for its accelerator and architecture (a Graviton CPU type such as
    C(m7g.large)) fails with the kinds of instance type that have one. When nothing else matches it fails
    and lists the nearest valid images.
  - Warns when the chosen image is past its end of support.
options:
  _terms:
    description: Optional single term, the framework version (same as O(framework_version)).
    required: false
  framework_version:
    description:
      - PyTorch version, a series (V(2.6), V(2.13)) or a release (V(2.6.0), V(2.12.1)).
      - Default (or an empty string) the newest supported version that meets the other criteria.
    type: str
  accelerator:
    description:
      - V(cpu) or V(gpu) (CUDA) image. Default from O(instance_type); one of the two is required.
      - Every criterion given as an empty string counts as not given (handy for role defaults).
    type: str
  instance_type:
    description:
      - EC2 instance type the image will run on. Decides V(cpu) or V(gpu) (NVIDIA GPU families) and
        the architecture (Graviton types get the C(pytorch-training-arm64) image).
    type: str
  python_version:
    description: Python version inside the image, V(3.12) or V(py312).
    type: str
  cuda_version:
    description: CUDA version of a GPU image, V(12.4) or V(cu124).
    type: str
  os:
    description: Base operating system of the image, V(ubuntu22.04) or V(amzn2023).
    type: str
  repository:
    description:
      - The image repository. V(pytorch-training) are the classic Ubuntu images
        (C(2.6.0-gpu-py312-cu126-ubuntu22.04-ec2)), V(pytorch) the newer Amazon Linux 2023 ones
        (C(2.13.0-cu133-amzn2023)), V(pytorch-training-arm64) the Graviton GPU image. Default all of them.
    type: str
  region:
    description:
      - AWS region whose registry serves the image. Required for O(registry=private).
    type: str
    env:
      - name: AWS_REGION
      - name: AWS_DEFAULT_REGION
  registry:
    description:
      - V(private) is the region's ECR registry (needs a login, see M(cloudtrain.ec2.ecr_login));
        V(public) is C(public.ecr.aws/deep-learning-containers), no login.
    type: str
    choices: [private, public]
    default: private
  image:
    description:
      - An image given as a full reference. Nothing is resolved; with O(details=true) its facts are returned in
        the same shape, read off the reference (C(account) and C(region) of an ECR image, C(login_required)).
    type: str
    version_added: 0.2.0
  details:
    description:
      - Return a dictionary with the URI and the image's facts (registry, account, region, repository, tag,
        version, accelerator, python, cuda, os, end_of_support, ...) instead of the URI alone.
    type: bool
    default: false
seealso:
  - module: cloudtrain.ec2.ecr_login
  - name: Deep Learning Containers images
    description: The list of available images.
    link: https://github.com/aws/deep-learning-containers/blob/master/available_images.md
"""

EXAMPLES = r"""
- name: The blog's GPU image, one call instead of a table
  ansible.builtin.debug:
    msg: "{{ lookup('cloudtrain.ec2.dlc_image', '2.4.0', accelerator='gpu', region='us-east-1') }}"
  # 763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.4.0-gpu-py311-cu124-ubuntu22.04-ec2

- name: The newest image for the instance type, from ECR Public (no login)
  ansible.builtin.set_fact:
    train_image: "{{ lookup('cloudtrain.ec2.dlc_image', instance_type=instance_type, registry='public') }}"

- name: What the train role needs, from the instance type alone (newest supported image)
  ansible.builtin.set_fact:
    train_dlc: "{{ lookup('cloudtrain.ec2.dlc_image', instance_type='g4dn.xlarge', region='us-east-1', details=true) }}"
  # train_dlc.uri, train_dlc.account and train_dlc.region for cloudtrain.ec2.ecr_login

- name: Facts for the login and the pull
  ansible.builtin.set_fact:
    dlc: "{{ lookup('cloudtrain.ec2.dlc_image', framework_version='2.6', instance_type='g5.xlarge',
             region='eu-west-1', details=true) }}"
  # dlc.uri, dlc.registry_id (for cloudtrain.ec2.ecr_login registry_ids), dlc.registry
"""

RETURN = r"""
_raw:
  description:
    - The image URI, C(<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>) or
      C(public.ecr.aws/deep-learning-containers/<repository>:<tag>).
    - With O(details=true) a dictionary with keys C(uri), C(registry), C(registry_id) (also as C(account),
      the registry's AWS account; both C(null) for ECR Public), C(region),
      C(login_required), C(repository), C(tag), C(version), C(accelerator), C(architecture), C(python),
      C(cuda), C(os), C(end_of_support), C(past_end_of_support).
  type: list
  elements: raw
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible.utils.display import Display

from ansible_collections.cloudtrain.ec2.plugins.module_utils._dlc_images import DLCError, describe_reference, resolve

display = Display()


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        if len(terms) > 1:
            raise AnsibleLookupError("dlc_image takes at most one term (the framework version), got %d" % len(terms))
        framework_version = self.get_option("framework_version")
        if terms:
            if framework_version and str(terms[0]) != str(framework_version):
                raise AnsibleLookupError("the term '%s' and framework_version '%s' disagree" % (terms[0], framework_version))
            framework_version = terms[0]
        if self.get_option("image"):
            image = describe_reference(self.get_option("image"))
            return [image if self.get_option("details") else image["uri"]]
        accelerator = self.get_option("accelerator") or None
        instance_type = self.get_option("instance_type") or None
        if not accelerator and not instance_type:
            raise AnsibleLookupError("dlc_image needs accelerator (cpu or gpu) or instance_type")
        registry = self.get_option("registry")
        try:
            image = resolve(
                framework_version=framework_version,
                accelerator=accelerator,
                instance_type=instance_type,
                python_version=self.get_option("python_version") or None,
                cuda_version=self.get_option("cuda_version") or None,
                os_name=self.get_option("os") or None,
                repository=self.get_option("repository") or None,
                region=self.get_option("region") if registry == "private" else None,
                registry=registry,
            )
        except DLCError as exc:
            raise AnsibleLookupError(str(exc))
        if image["past_end_of_support"]:
            display.warning("%s is past its end of support (%s): it gets no security fixes"
                            % (image["uri"], image["end_of_support"] or "date not published"))
        return [image if self.get_option("details") else image["uri"]]
