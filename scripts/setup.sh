#!/usr/bin/env bash
# Set up everything mm_perception needs on a fresh machine, idempotently.
#
#   scripts/setup.sh            # create/refresh .venv (called by `make setup` and other targets)
#   FORCE=1 scripts/setup.sh    # re-run every step even if nothing changed
#
# Steps:
#   1. Debian packages the native libraries need (as root, with apt-get), only the missing ones.
#   2. .venv with Python 3.11 (the ROS 2 wheels are built for CPython 3.11). When a system
#      ROS 2 is sourced (ROS_DISTRO set) the venv sees its packages (--system-site-packages)
#      and the ROS wheels are not installed.
#   3. torch==2.13.0 (CPU build) first, so nothing later pulls a CUDA build.
#   4. ROS 2 wheels + Fast DDS RMW (no system ROS only), runtime deps, dev tools, the package.
#   5. An import check that names the missing piece.
# A stamp file records a hash of the inputs, so a second run with nothing changed only
# re-runs the (fast) import check.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MM_VENV:-$ROOT/.venv}"
STAMP="$VENV/.mm-setup-stamp"
PY_VERSION="3.11"
TORCH_SPEC="torch==2.13.0"
APT_PACKAGES=(libusb-1.0-0 libgomp1 libosmesa6 libgl1 libegl1 libglib2.0-0)

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- 1. Debian packages
install_debian_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        say "no dpkg on this system: make sure these libraries are installed: ${APT_PACKAGES[*]}"
        return
    fi
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" -ne 0 ]; then
        die "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install failed for: ${missing[*]}"
}

# ---------------------------------------------------------------- 2. interpreter + venv
find_python() {
    # Without ROS: CPython 3.11, because the ROS 2 wheels are cp311 builds.
    # With a sourced ROS 2: the interpreter that distro was built for (python3 on PATH,
    # 3.10 for Humble, 3.12 for Jazzy...), since its rclpy is a compiled extension.
    local cand
    if [ -n "${ROS_DISTRO:-}" ]; then
        for cand in "${MM_PYTHON:-}" python3; do
            [ -n "$cand" ] || continue
            if command -v "$cand" >/dev/null 2>&1 \
                && "$cand" -c "import sys; sys.exit(sys.version_info < (3, 10))" 2>/dev/null; then
                command -v "$cand"
                return
            fi
        done
        die "ROS_DISTRO=$ROS_DISTRO is set but no python3 >= 3.10 is on PATH"
    fi
    for cand in "${MM_PYTHON:-}" "python${PY_VERSION}" python3; do
        [ -n "$cand" ] || continue
        if command -v "$cand" >/dev/null 2>&1 \
            && "$cand" -c "import sys; sys.exit(sys.version_info[:2] != (3, 11))" 2>/dev/null; then
            command -v "$cand"
            return
        fi
    done
    die "Python ${PY_VERSION} not found (the ROS 2 wheels are cp311); set MM_PYTHON=/path/to/python3.11"
}

inputs_hash() {
    cat "$ROOT"/requirements/*.txt "$ROOT/scripts/setup.sh" "$ROOT/setup.py" \
        <(printf 'ROS_DISTRO=%s\n' "${ROS_DISTRO:-}") | sha256sum | cut -d' ' -f1
}

verify() {
    # Import every piece the stack needs; name the first that is missing.
    "$VENV/bin/python" - <<'PY'
import importlib, os, sys
mods = ["numpy", "scipy", "cv2", "yaml", "jsonschema", "rosbags", "torch", "onnx",
        "onnxruntime", "mujoco", "open3d", "matplotlib", "tqdm", "rich", "transformers",
        "motmetrics", "pytest", "hypothesis", "rclpy", "sensor_msgs.msg", "nav_msgs.msg",
        "geometry_msgs.msg", "rosgraph_msgs.msg", "diagnostic_msgs.msg", "lifecycle_msgs.msg",
        "mm_perception"]
bad = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as exc:  # noqa: BLE001 - report every failure, whatever it is
        bad.append(f"{m}: {type(exc).__name__}: {exc}")
import torch
if not torch.__version__.startswith("2.13.0"):
    bad.append(f"torch: expected 2.13.0, got {torch.__version__}")
if bad:
    print("[setup] ERROR: these imports fail:\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
PY
}

# pip prints a warning per package for this machine's pip.conf find-links that do not exist;
# drop only those lines so real errors stay visible.
pip_quiet() {
    "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" >&2
    return "${PIPESTATUS[0]}"
}

main() {
    install_debian_packages
    local want
    want="$(inputs_hash)"
    if [ -z "${FORCE:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
        verify && return
        say "environment changed since the last set-up; repairing"
    fi

    local py
    py="$(find_python)"
    if [ -x "$VENV/bin/python" ] && [ -n "${ROS_DISTRO:-}" ] \
        && ! grep -q "include-system-site-packages = true" "$VENV/pyvenv.cfg" 2>/dev/null; then
        die "$VENV was made without the system ROS 2 ($ROS_DISTRO) visible; remove it (rm -rf $VENV) and run again"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV with $py"
        if [ -n "${ROS_DISTRO:-}" ]; then
            "$py" -m venv --system-site-packages "$VENV" || die "venv creation failed"
        else
            "$py" -m venv "$VENV" || die "venv creation failed"
        fi
    fi
    local pip=(pip_quiet "$VENV/bin/python" -m pip install --disable-pip-version-check -q)

    if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(not torch.__version__.startswith('2.13.0'))" 2>/dev/null; then
        say "installing $TORCH_SPEC (CPU)"
        "${pip[@]}" "$TORCH_SPEC" || die "could not install $TORCH_SPEC"
    fi
    if [ -n "${ROS_DISTRO:-}" ]; then
        say "using the sourced system ROS 2 ($ROS_DISTRO); skipping the ROS wheels"
        "$VENV/bin/python" -c "import rclpy" 2>/dev/null \
            || die "ROS_DISTRO=$ROS_DISTRO is set but rclpy does not import; source its setup.bash"
    else
        say "installing ROS 2 wheels + Fast DDS RMW"
        "${pip[@]}" -r "$ROOT/requirements/ros-wheels.txt" || die "could not install the ROS 2 wheels (requirements/ros-wheels.txt)"
    fi
    say "installing runtime and dev dependencies"
    "${pip[@]}" -r "$ROOT/requirements/base.txt" -r "$ROOT/requirements/dev.txt" \
        || die "could not install requirements/base.txt + dev.txt"
    say "installing mm_perception (editable)"
    "${pip[@]}" --no-deps -e "$ROOT" || die "could not install the package itself"
    verify || die "set-up finished but imports fail (see above)"
    echo "$want" > "$STAMP"
    say "ready: $VENV"
}

main "$@"
