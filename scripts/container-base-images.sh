#!/usr/bin/env bash
# Makes local stand-ins for the two base images the Dockerfiles name, for a
# machine that can reach Debian's archive and crates.io but no image registry:
#   docker.io/library/rust:1.95-bookworm   debootstrap of bookworm with what
#       buildpack-deps adds for a Rust build (gcc, make, pkg-config, git, curl),
#       plus this machine's Rust toolchain under /usr/local/{rustup,cargo}, with
#       the official image's RUSTUP_HOME, CARGO_HOME and PATH.
#   gcr.io/distroless/cc-debian12:nonroot  a shell-less root filesystem made of
#       the Debian packages distroless/cc is built from (libc6, libgcc-s1,
#       libssl3, ca-certificates, tzdata, netbase, base-files), user 65532.
# An image that already exists (pulled from a registry, or made before) is kept.
# The Dockerfiles stay the ones users build with Docker against the real images.
#   bash scripts/container-base-images.sh        (root; needs podman, debootstrap)
set -euo pipefail

RUST_IMAGE=docker.io/library/rust:1.95-bookworm
RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
work=$(mktemp -d /var/tmp/base-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Certificates this machine trusts beyond Debian's bundle (an egress proxy's
# CA, say): the build stage fetches crates through the same network.
extra_cas() {
    local dest=$1
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        mkdir -p "$dest/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$dest/usr/local/share/ca-certificates/"
    fi
}

if ! podman image exists "$RUST_IMAGE"; then
    echo "== making $RUST_IMAGE (debootstrap bookworm + this machine's Rust toolchain)"
    root=$work/rust
    debootstrap --variant=minbase \
        --include=ca-certificates,curl,git,gcc,g++,libc6-dev,make,pkg-config,xz-utils \
        bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    extra_cas "$root"
    chroot "$root" update-ca-certificates >/dev/null
    # Debian's security and updates suites, as in the official image.
    cat >"$root/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
    # The toolchain without its documentation (share/doc is most of its size).
    toolchain=$(rustc --print sysroot)
    version=$(rustc --version | cut -d' ' -f2)
    dest=$root/usr/local/rustup/toolchains/$version-x86_64-unknown-linux-gnu
    mkdir -p "$dest" "$root/usr/local/cargo/bin"
    (cd "$toolchain" && tar cf - --exclude=share/doc --exclude=share/zsh . ) | tar xf - -C "$dest"
    for tool in cargo rustc rustdoc rustfmt cargo-clippy clippy-driver; do
        [ -e "$dest/bin/$tool" ] && ln -s "../../rustup/toolchains/$version-x86_64-unknown-linux-gnu/bin/$tool" \
            "$root/usr/local/cargo/bin/$tool"
    done
    chmod -R a+rwX "$root/usr/local/cargo"
    tar -C "$root" -cf - . | podman import \
        --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "ENV RUST_VERSION=$version" \
        --change 'CMD ["bash"]' \
        - "$RUST_IMAGE" >/dev/null
fi

if ! podman image exists "$RUNTIME_IMAGE"; then
    echo "== making $RUNTIME_IMAGE (Debian packages, no shell, user 65532)"
    root=$work/runtime
    mkdir -p "$root" "$work/debs"
    (cd "$work/debs" && apt-get download -qq -o APT::Sandbox::User=root \
        base-files netbase tzdata ca-certificates libc6 libgcc-s1 libgomp1 libstdc++6 libssl3 >/dev/null)
    for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
    # ca-certificates ships PEMs; the bundle is made by its postinst, which
    # cannot run without a shell: take the host's bundle (Debian's, plus any
    # local CA the host trusts).
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/lintian "$root"/bin/sh "$root"/usr/bin/*sh
    # The UsrMerge links debootstrap would make.
    for d in bin sbin lib lib64; do
        [ -e "$root/$d" ] || { [ -d "$root/usr/$d" ] && ln -s "usr/$d" "$root/$d"; } || true
    done
    mkdir -p "$root/home/nonroot" "$root/tmp" "$root/root"
    chmod 1777 "$root/tmp"
    chown 65532:65532 "$root/home/nonroot"
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
    test ! -e "$root/bin/sh" || { echo "runtime stand-in has a shell" >&2; exit 1; }
    tar -C "$root" -cf - . | podman import \
        --change 'USER 65532' \
        --change 'WORKDIR /home/nonroot' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$RUNTIME_IMAGE" >/dev/null
fi
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'rust|distroless'
