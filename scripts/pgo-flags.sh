#!/usr/bin/env bash
# Prints the RUSTFLAGS edge-proxy's release build is optimised with: the
# profile in proxy/pgo/ (README, "Profile-guided build"), or nothing, with the
# reason on stderr, when it cannot be used:
#   - EDGE_PROXY_PGO=off (an A/B against the plain build);
#   - the compiler's LLVM is older than the one that wrote the profile (it
#     cannot read a newer profile format).
# build-release.sh and Dockerfile.proxy's dependency layer both use it: the
# flags must be the same string for the layer to be reused.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
packed=$root/proxy/pgo/edge-proxy.profdata.xz
profile=$root/target/pgo/edge-proxy.profdata
[ "${EDGE_PROXY_PGO:-on}" = off ] && { echo "edge-proxy: EDGE_PROXY_PGO=off, no profile" >&2; exit 0; }
[ -f "$packed" ] || { echo "edge-proxy: no $packed, no profile" >&2; exit 0; }
wrote=$(cut -d. -f1 "$root/proxy/pgo/llvm-version")
have=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
if [ "${have:-0}" -lt "$wrote" ]; then
    echo "edge-proxy: rustc's LLVM $have is older than the profile's ($wrote): built without it" >&2
    exit 0
fi
# Unpacked where the build reads it, rewritten only when it changed: rustc
# tracks the file, and a new date would rebuild every crate.
mkdir -p "$(dirname "$profile")"
xz -dc "$packed" >"$profile.new"
if cmp -s "$profile.new" "$profile"; then rm "$profile.new"; else mv "$profile.new" "$profile"; fi
# A function changed since the profile was recorded is compiled as if
# unprofiled; LLVM's warning for each such function would be noise in a build.
echo "-Cprofile-use=$profile -Cllvm-args=-no-pgo-warn-mismatch"
