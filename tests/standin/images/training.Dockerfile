# Stand-in for the AWS Deep Learning Containers PyTorch training image (CPU): Debian's own
# PyTorch 1.13 / torchvision 0.14 builds. python-is-python3 because the DLC image answers to
# both `python` and `python3`. python3-munkres satisfies python3-fonttools' "scipy | munkres"
# (fonttools comes with matplotlib): without it apt takes scipy, which drags in pythran, boost
# and a C++ compiler (about 500 MB).
FROM {base}
RUN apt-get update \
 && apt-get install -y python3-torch python3-torchvision python3-numpy python3-matplotlib python3-munkres python-is-python3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && python3 -c 'import torch, torchvision, matplotlib'
ENV PYTHONUNBUFFERED=1 MPLBACKEND=Agg
WORKDIR /opt/ml/code
CMD ["python3"]
