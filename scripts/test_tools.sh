#!/usr/bin/env bash
# Tools the tests drive, installed when missing: Debian's chromium and chromium-driver for the
# browser test of the serve page (apt-get: as root, or sudo without a password), and MLflow in
# the project venv for the tracking tests (a real `mlflow server` is started by the tests);
# the inference protocols' own clients (Triton's tritonclient, KServe's SDK) in a venv of their
# own, .venv/clients (both bring protobuf and pinned web stacks that mlflow's need not match);
# a real Label Studio server (and its Python, for the end-to-end client) in .venv/label-studio;
# DVC in .venv/dvc for the pipeline test, and Debian's slurm-wlm and munge for the one-node
# Slurm cluster the batch test starts.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo -n"
fi
# apt_install WHY PACKAGE...: installs the Debian packages, updating the package lists once if
# the first try fails.
apt_install() {
  local why=$1; shift
  echo "test-tools: installing $* (Debian packages) for $why" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "$@" >/dev/null; }
}
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
  apt_install "the browser test" chromium chromium-driver
fi
if [[ ! -x /usr/sbin/slurmctld || ! -x /usr/sbin/slurmd || ! -x /usr/sbin/munged ]]; then
  apt_install "the Slurm batch test" slurm-wlm munge
fi
if [[ ! -x .venv/bin/mlflow ]]; then
  echo "test-tools: installing mlflow into .venv for the tracking tests" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check mlflow
fi
CLIENTS_STAMP=.venv/clients/.done-tritonclient-2.73.0-kserve-0.21.0
if [[ ! -f $CLIENTS_STAMP ]]; then
  echo "test-tools: installing tritonclient[http,grpc] and kserve into .venv/clients for the protocol tests" >&2
  python3 -m venv .venv/clients
  .venv/clients/bin/python -m pip install -q --disable-pip-version-check 'tritonclient[http,grpc]==2.73.0' 'kserve==0.21.0'
  touch "$CLIENTS_STAMP"
fi
LS_STAMP=.venv/label-studio/.done-label-studio-1.23.2
if [[ ! -f $LS_STAMP ]]; then
  echo "test-tools: installing label-studio into .venv/label-studio for the Label Studio tests" >&2
  python3 -m venv .venv/label-studio
  .venv/label-studio/bin/python -m pip install -q --disable-pip-version-check 'label-studio==1.23.2'
  touch "$LS_STAMP"
fi
DVC_STAMP=.venv/dvc/.done-dvc-3.67.1
if [[ ! -f $DVC_STAMP ]]; then
  echo "test-tools: installing dvc into .venv/dvc for the pipeline test" >&2
  python3 -m venv .venv/dvc
  .venv/dvc/bin/python -m pip install -q --disable-pip-version-check 'dvc==3.67.1'
  touch "$DVC_STAMP"
fi
