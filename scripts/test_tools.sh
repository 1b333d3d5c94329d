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
# Python tools are installed under scripts/constraints/*.txt, the versions the tests last passed
# with (every dependency pinned: an upstream release must not break a fresh clone); a stamp
# named after the constraints' hash reinstalls a venv when its constraints change.
stamp_for() { echo "$1/.done-$2-$(sha256sum "scripts/constraints/$2.txt" | cut -c1-12)"; }
# tool_venv NAME WHY PACKAGE...: a venv .venv/NAME of its own with the packages, installed under
# scripts/constraints/NAME.txt.
tool_venv() {
  local name=$1 why=$2; shift 2
  local stamp; stamp=$(stamp_for ".venv/$name" "$name")
  [[ -f $stamp ]] && return
  echo "test-tools: installing $* into .venv/$name for $why" >&2
  rm -rf ".venv/$name"
  python3 -m venv ".venv/$name"
  ".venv/$name/bin/python" -m pip install -q --disable-pip-version-check \
    -c "scripts/constraints/$name.txt" "$@"
  touch "$stamp"
}
MLFLOW_STAMP=$(stamp_for .venv mlflow)
if [[ ! -x .venv/bin/mlflow || ! -f $MLFLOW_STAMP ]]; then
  echo "test-tools: installing mlflow into .venv for the tracking tests" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints/mlflow.txt mlflow
  rm -f .venv/.done-mlflow-*
  touch "$MLFLOW_STAMP"
fi
tool_venv clients "the protocol tests" 'tritonclient[http,grpc]==2.73.0' 'kserve==0.21.0'
tool_venv label-studio "the Label Studio tests" 'label-studio==1.23.2'
tool_venv dvc "the pipeline test" 'dvc==3.67.1'
