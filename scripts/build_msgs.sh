#!/usr/bin/env bash
# Build the interface package msgs/ (trustworthy_perception_msgs) with colcon against the ROS 2 wheels
# in VENV and install it into VENV itself (libraries in VENV/lib, which the wheels' bootstrapper puts on
# LD_LIBRARY_PATH; Python package in VENV's site-packages), so `VENV/bin/python -c "import
# trustworthy_perception_msgs"` works with no sourcing. Idempotent: quick when nothing changed.
# Usage: scripts/build_msgs.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${1:-.venv}" && pwd)
PY="$VENV/bin/python"
PKG=trustworthy_perception_msgs
STAMP="$VENV/share/$PKG/.build-fingerprint"

log() { echo "[msgs] $*"; }

# Snag: the wheels' exported CMake files hard-code the include paths of the machine that built them.
py_include=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
np_include=$("$PY" -c "import numpy; print(numpy.get_include())")
mapfile -t stale < <(grep -rl --include='*.cmake' '/opt/python/cp3' "$VENV/share" 2>/dev/null || true)
if [ "${#stale[@]}" -gt 0 ]; then
  log "rewriting hard-coded Python/numpy include paths in ${#stale[@]} exported .cmake files"
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${np_include}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_include}#g" \
    "${stale[@]}"
fi

# Everything that decides the build output: the interface files, this script, the interpreter, the source
# checkout (a CMake cache stays tied to the source folder it was configured from, so each checkout that
# builds into this venv gets its own build tree and a change of checkout rebuilds).
fingerprint=$( (cat msgs/CMakeLists.txt msgs/package.xml msgs/msg/*.msg "$0"; "$PY" -VV; echo "$VENV"; pwd) | sha256sum | cut -d' ' -f1)
BUILD_BASE="$VENV/var/colcon/build-$(pwd | sha256sum | cut -c1-12)"
check_import() {
  # A fresh environment, no sourcing: what a user gets from the venv's python.
  env -i HOME="${HOME:-/tmp}" PATH=/usr/bin:/bin "$PY" -c "
from rclpy.serialization import deserialize_message, serialize_message
from trustworthy_perception_msgs.msg import Detection3DArray, Detection3D
from tf2_msgs.msg import TFMessage
m = Detection3DArray(detections=[Detection3D(label='Car')], degraded_reasons=['camera_missing'])
assert deserialize_message(serialize_message(m), Detection3DArray) == m
"
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$fingerprint" ] && check_import 2>/dev/null; then
  log "$PKG up to date"
  exit 0
fi

log "building $PKG with colcon (install prefix $VENV)"
start=$SECONDS
paths=(msgs)
# No tf2_msgs wheel exists on PyPI, yet the bag player must publish /tf_static. Where the venv lacks it,
# build the one-message tf2_msgs (same definition, so the same DDS type and hash as the real package)
# from a generated source tree outside the repo, so a vehicle's colcon never sees it.
if ! env -i PATH=/usr/bin:/bin "$PY" -c "import tf2_msgs.msg" 2>/dev/null; then
  tf2_src="$VENV/var/colcon/src/tf2_msgs"
  mkdir -p "$tf2_src/msg"
  echo "geometry_msgs/TransformStamped[] transforms" >"$tf2_src/msg/TFMessage.msg"
  cat >"$tf2_src/package.xml" <<'XML'
<?xml version="1.0"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>0.0.0</version>
  <description>Stand-in for tf2_msgs (TFMessage only), built by trustworthy_perception for PyPI venvs.</description>
  <maintainer email="dev@trustworthy-perception.local">trustworthy_perception developers</maintainer>
  <license>BSD-3-Clause</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
XML
  cat >"$tf2_src/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(tf2_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME} "msg/TFMessage.msg" DEPENDENCIES geometry_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
CMAKE
  paths+=("$tf2_src")
  log "also building the TFMessage-only tf2_msgs (no wheel on PyPI)"
fi
# Snags: ament_cmake/rosidl are found only with the venv on both prefix paths during the build.
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
export MAKEFLAGS="-j${MSGS_JOBS:-2}"
mkdir -p "$VENV/var/colcon"
# Build tree inside the venv so a new venv never reuses a CMake cache that points at an old one.
"$VENV/bin/colcon" --log-base "$VENV/var/colcon/log" build \
  --paths "${paths[@]}" \
  --build-base "$BUILD_BASE" --install-base "$VENV" --merge-install \
  --cmake-args -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release "-DPython3_EXECUTABLE=$PY" \
  >"$VENV/var/colcon/last_build.log" 2>&1 || { cat "$VENV/var/colcon/last_build.log"; log "colcon build FAILED"; exit 1; }

if ! check_import; then
  log "built, but '$PY -c \"from $PKG.msg import Detection3DArray\"' fails in a fresh environment"
  exit 1
fi
echo "$fingerprint" >"$STAMP"
log "$PKG built and importable in $((SECONDS - start)) s"
