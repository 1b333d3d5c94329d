#!/usr/bin/env bash
# Tools the tests drive, installed when missing: Debian's chromium and chromium-driver for the
# browser test of the serve page (needs apt-get; as root, or sudo without a password).
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi
SUDO=
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo -n"
fi
echo "test-tools: installing chromium and chromium-driver (Debian packages) for the browser test" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }
