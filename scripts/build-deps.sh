#!/usr/bin/env bash
# Installs what building edge-proxy needs beyond Rust, where it is missing:
# cmake and a C compiler (pingora builds zlib-ng through libz-ng-sys), and xz
# (its optimisation profile, proxy/pgo/, is packed); and the Debian PACKAGEs
# given (what ci-deps.sh and bench/prepare.sh found missing), in the same
# apt-get run. build-release.sh runs it before building edge-proxy. Safe to
# run twice.
#   bash scripts/build-deps.sh [PACKAGE...]
set -euo pipefail
need=("$@")
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(gcc)
command -v c++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v xz >/dev/null || need+=(xz-utils)
((${#need[@]})) || exit 0
echo "installing: ${need[*]}"
if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
