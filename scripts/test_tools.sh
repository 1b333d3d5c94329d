#!/usr/bin/env bash
# Tools the tests drive, installed when missing: Debian's chromium and chromium-driver for the
# browser test of the serve page (apt-get: as root, or sudo without a password), and MLflow in
# the project venv for the tracking tests (a real `mlflow server` is started by the tests);
# the inference protocols' own clients (Triton's tritonclient, KServe's SDK) in a venv of their
# own, .venv/clients (both bring protobuf and pinned web stacks that mlflow's need not match);
# a real Label Studio server (and its Python, for the end-to-end client) in .venv/label-studio.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
  SUDO=
  if [[ $(id -u) -ne 0 ]]; then
    SUDO="sudo -n"
  fi
  echo "test-tools: installing chromium and chromium-driver (Debian packages) for the browser test" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }
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
