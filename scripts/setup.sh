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
#   5. interfaces/mm_perception_msgs built with colcon into build/interfaces_install and made
#      importable from the venv (see build_interfaces); skipped while that build is newer
#      than everything under interfaces/.
#   6. An import check that names the missing piece.
# A stamp file records a hash of the inputs, so a second run with nothing changed only
# re-runs the (fast) interfaces freshness and import checks.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MM_VENV:-$ROOT/.venv}"
STAMP="$VENV/.mm-setup-stamp"
PY_VERSION="3.11"
TORCH_SPEC="torch==2.13.0"
APT_PACKAGES=(libusb-1.0-0 libgomp1 libosmesa6 libgl1 libegl1 libglib2.0-0 cmake g++ make)
IFACE_SRC="$ROOT/interfaces"
IFACE_BUILD="$ROOT/build/interfaces"          # colcon build base
IFACE_PREFIX="$ROOT/build/interfaces_install" # colcon install base (--merge-install)
IFACE_STAMP="$IFACE_PREFIX/.mm-interfaces-stamp"

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
    # Import every piece the stack needs; name the first that is missing. With a sourced
    # system ROS 2 the interfaces' libraries need LD_LIBRARY_PATH (the Makefile exports it).
    local ld="${LD_LIBRARY_PATH:-}"
    if [ -n "${ROS_DISTRO:-}" ]; then ld="$IFACE_PREFIX/lib${ld:+:$ld}"; fi
    LD_LIBRARY_PATH="$ld" "$VENV/bin/python" - <<'PY'
import importlib, os, sys
mods = ["numpy", "scipy", "cv2", "yaml", "jsonschema", "rosbags", "mcap", "torch", "onnx",
        "onnxruntime", "mujoco", "open3d", "matplotlib", "tqdm", "rich", "transformers",
        "motmetrics", "pytest", "hypothesis", "rclpy", "sensor_msgs.msg", "nav_msgs.msg",
        "geometry_msgs.msg", "rosgraph_msgs.msg", "diagnostic_msgs.msg", "lifecycle_msgs.msg",
        "mm_perception", "mm_perception_msgs.msg"]
bad = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as exc:  # noqa: BLE001 - report every failure, whatever it is
        bad.append(f"{m}: {type(exc).__name__}: {exc}")
import torch
if not torch.__version__.startswith("2.13.0"):
    bad.append(f"torch: expected 2.13.0, got {torch.__version__}")
if not bad:
    # the generated type support loads its shared libraries only here
    try:
        from mm_perception_msgs.msg import DetectedObjectArray
        from rclpy.serialization import serialize_message
        serialize_message(DetectedObjectArray())
    except Exception as exc:  # noqa: BLE001
        bad.append(f"mm_perception_msgs type support: {type(exc).__name__}: {exc} "
                   f"(LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH', '')})")
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

# ---------------------------------------------------------------- 5. interfaces package
link_wheel_include_dirs() {
    # The ROS 2 wheels' CMake exports name two include directories of the machine that built
    # them (DESIGN.md, "Environment facts"); point them at this interpreter's Python and
    # numpy headers. A path that exists already (a real directory, or the link of another
    # checkout's venv) is left alone; an absent one, or a dangling link, is (re)made.
    local py_inc np_inc
    py_inc="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    np_inc="$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
    [ -f "$py_inc/Python.h" ] \
        || die "no Python.h in $py_inc: install this interpreter's headers (Debian: python3.11-dev)"
    local pair link target
    for pair in "/opt/python/cp311-cp311/include/python3.11=$py_inc" \
                "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include=$np_inc"; do
        link="${pair%%=*}"
        target="${pair#*=}"
        if [ -e "$link" ]; then
            if [ "$(readlink -f "$link")" != "$(readlink -f "$target")" ]; then
                say "note: $link resolves to $(readlink -f "$link"), not $target; left as it is"
            fi
            continue
        fi
        if ! { mkdir -p "$(dirname "$link")" && ln -sfn "$target" "$link"; } 2>/dev/null; then
            die "the ROS 2 wheels' CMake files need $link; run as root, or: sudo mkdir -p $(dirname "$link") && sudo ln -sfn $target $link"
        fi
        say "linked $link -> $target"
    done
}

register_interfaces() {
    # Make the install usable from the venv without any environment: a .pth file puts its
    # site-packages on sys.path, and with the ROS wheels its libraries are linked into
    # $VENV/lib, which the wheels' start-up hook (ros_wheels_bootstrapper) puts on
    # LD_LIBRARY_PATH before the interpreter starts. rclpy's type support finds
    # lib<pkg>__rosidl_typesupport_*.so through LD_LIBRARY_PATH, so sys.path alone is not
    # enough. With a sourced system ROS 2 the Makefile exports the install's lib instead.
    local site pth
    site="$(cd "$IFACE_PREFIX" && ls -d "$PWD"/lib/python3*/site-packages | head -1)"
    pth="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/mm_perception_msgs.pth"
    [ "$(cat "$pth" 2>/dev/null)" = "$site" ] || echo "$site" > "$pth"
    if [ -n "${ROS_DISTRO:-}" ]; then
        return 0
    fi
    local lib
    for lib in "$VENV"/lib/libmm_perception_msgs__*.so; do  # links to libraries gone
        if [ -L "$lib" ] && [ ! -e "$lib" ]; then rm -f "$lib"; fi
    done
    for lib in "$IFACE_PREFIX"/lib/libmm_perception_msgs__*.so; do
        if [ -e "$lib" ] && [ "$(readlink "$VENV/lib/$(basename "$lib")")" != "$lib" ]; then
            ln -sfn "$lib" "$VENV/lib/$(basename "$lib")"
        fi
    done
    return 0
}

build_interfaces() {
    # colcon build of interfaces/ into $IFACE_PREFIX (merge install), against the venv's ROS 2
    # wheels or the sourced ROS 2. Skipped while the last build is newer than every file under
    # interfaces/ and was made with the same set-up inputs ($1, the inputs hash).
    local want="$1"
    mkdir -p "$ROOT/build"
    (
        if command -v flock >/dev/null 2>&1; then  # two make targets at once build once
            exec 9>"$ROOT/build/.interfaces.lock"
            flock 9
        fi
        if [ -z "${FORCE:-}" ] && [ -f "$IFACE_STAMP" ] && [ "$(cat "$IFACE_STAMP")" = "$want" ] \
            && [ -z "$(find "$IFACE_SRC" -newer "$IFACE_STAMP" -print -quit)" ]; then
            exit 0
        fi
        if [ -z "${ROS_DISTRO:-}" ]; then
            link_wheel_include_dirs
        fi
        local log="$ROOT/build/interfaces_build.log" started=$SECONDS attempt
        say "building interfaces/mm_perception_msgs with colcon (log: $log)"
        export PATH="$VENV/bin:$PATH"
        if [ -z "${ROS_DISTRO:-}" ]; then
            export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
            export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
        fi
        for attempt in incremental clean; do
            if [ "$attempt" = clean ] || [ -n "${FORCE:-}" ]; then
                rm -rf "$IFACE_BUILD" "$IFACE_PREFIX"
            fi
            if (cd "$ROOT" && "$VENV/bin/colcon" --log-base "$ROOT/build/interfaces_log" build \
                    --base-paths "$IFACE_SRC" --build-base "$IFACE_BUILD" \
                    --install-base "$IFACE_PREFIX" --merge-install \
                    --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python") \
                    >"$log" 2>&1; then
                echo "$want" > "$IFACE_STAMP"
                say "built mm_perception_msgs in $((SECONDS - started)) s: $IFACE_PREFIX"
                exit 0
            fi
            if [ "$attempt" = incremental ]; then
                say "incremental build failed; building from scratch"
            fi
        done
        tail -n 40 "$log" >&2
        die "colcon build of interfaces/mm_perception_msgs failed (full log: $log)"
    ) || exit 1
    register_interfaces
}

main() {
    install_debian_packages
    local want
    want="$(inputs_hash)"
    if [ -z "${FORCE:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
        build_interfaces "$want"  # a no-op while the build is newer than interfaces/
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
    build_interfaces "$want"
    verify || die "set-up finished but imports fail (see above)"
    echo "$want" > "$STAMP"
    if [ -n "${ROS_DISTRO:-}" ]; then
        say "outside make, source $IFACE_PREFIX/setup.bash to use mm_perception_msgs"
    fi
    say "ready: $VENV"
}

main "$@"
