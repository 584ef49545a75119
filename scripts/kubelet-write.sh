#!/usr/bin/env bash
# Write stdin as DIR/proxy.yaml the way the kubelet updates a ConfigMap volume
# (its atomic writer): a new ..TIMESTAMP directory, one rename of the ..data
# symlink over the old one, proxy.yaml -> ..data/proxy.yaml, the old directory
# removed. Used by scripts/zero-downtime.sh and the Rust tests (tests/utils).
#   bash scripts/kubelet-write.sh DIR < proxy.yaml
set -euo pipefail
cfg=${1:?usage: kubelet-write.sh DIR < proxy.yaml}
version="..$(date +%Y_%m_%d_%H_%M_%S.%N).$$"
mkdir "$cfg/$version"
cat >"$cfg/$version/proxy.yaml"
old=$(readlink "$cfg/..data" || true)
ln -s "$version" "$cfg/..data_tmp"
mv -T "$cfg/..data_tmp" "$cfg/..data"
[ -e "$cfg/proxy.yaml" ] || ln -s ..data/proxy.yaml "$cfg/proxy.yaml"
if [ -n "$old" ]; then rm -rf "${cfg:?}/$old"; fi
