#!/usr/bin/env bash
# Makes a local stand-in for the Dockerfile's runtime base image (gcr.io/distroless/cc-debian12:nonroot)
# out of Debian packages already installed on this machine, and imports it into podman under the exact
# name the Dockerfile's runtime `FROM` uses. For building and running the image where base images
# cannot be pulled; tests/container.rs uses it.
#
#   scripts/make-standin-base.sh [NAME]     NAME defaults to the image of the Dockerfile's last FROM
#
# What it holds, as distroless/cc-debian12 does: glibc (Debian package libc6), libgcc_s (libgcc-s1),
# the CA bundle /etc/ssl/certs/ca-certificates.crt (ca-certificates), /etc/passwd and /etc/group with
# root and nonroot (65532), /home/nonroot, /tmp, a minimal /etc/nsswitch.conf; no shell, no package
# manager. Its config: USER 65532, WORKDIR /home/nonroot, distroless's PATH and SSL_CERT_FILE, and the
# label npm-watchdog.stand-in=true, by which it can be told apart from the real image.
#
# If NAME already names an image without that label (the real base, pulled earlier), it is left alone
# and used as it is. Prints the image name on stdout, then `created` or `existing`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LABEL="npm-watchdog.stand-in"

say() { printf 'make-standin-base: %s\n' "$*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

NAME="${1:-$(awk 'toupper($1) == "FROM" { img = $2 } END { print img }' "$ROOT/Dockerfile")}"
[[ -n "$NAME" ]] || die "no image name given and none found in the Dockerfile"
command -v podman >/dev/null 2>&1 || die "podman is not installed (Debian package podman; scripts/install-peers.sh)"
for pkg in libc6 libgcc-s1 ca-certificates; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
        die "Debian package $pkg is not installed"
done
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[[ -s "$CA_BUNDLE" ]] || die "$CA_BUNDLE is missing (run update-ca-certificates)"

if podman image exists "$NAME"; then
    if [[ "$(podman image inspect --format "{{ index .Labels \"$LABEL\" }}" "$NAME")" != "true" ]]; then
        say "$NAME exists and is not a stand-in: using it as it is"
        printf '%s\nexisting\n' "$NAME"
        exit 0
    fi
    say "replacing the earlier stand-in $NAME"
    podman rmi "$NAME" >/dev/null 2>&1 || true
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
R="$WORK/rootfs"
mkdir -p "$R"

# The packages' files (not their docs), each at its real path: Debian 12 has a merged /usr, so
# /lib/x86_64-linux-gnu/libc.so.6 is copied to usr/lib/x86_64-linux-gnu/ and /lib links there below.
dpkg -L libc6 libgcc-s1 | sort -u | while IFS= read -r p; do
    case "$p" in /usr/share/doc/* | /usr/share/lintian/* | /usr/share/man/*) continue ;; esac
    [[ -e "$p" || -L "$p" ]] || continue
    [[ -d "$p" ]] && continue
    printf '%s/%s\n' "$(readlink -f "$(dirname "$p")")" "$(basename "$p")"
done | sort -u | sed 's|^/||' >"$WORK/files"
tar -C / --no-recursion -cf - -T "$WORK/files" | tar -C "$R" -xf -
for link in bin lib lib64 sbin; do
    [[ -e "$R/$link" ]] || ln -s "usr/$link" "$R/$link"
done
mkdir -p "$R/usr/bin" "$R/usr/sbin" "$R/usr/lib64" "$R/etc/ssl/certs" "$R/home/nonroot" "$R/root" \
    "$R/tmp" "$R/var/lib" "$R/run"
cp -L "$CA_BUNDLE" "$R/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$R/etc/ssl/certs/ca-certificates.crt"
cat >"$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$R/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$R/etc/nsswitch.conf"
printf 'PRETTY_NAME="stand-in for %s, made from Debian packages"\n' "$NAME" >"$R/etc/os-release"
chmod 0644 "$R/etc/passwd" "$R/etc/group" "$R/etc/nsswitch.conf" "$R/etc/os-release"
chmod 1777 "$R/tmp"
chmod 0700 "$R/root"
chown 65532:65532 "$R/home/nonroot"
chmod 0700 "$R/home/nonroot"

tar -C "$R" --numeric-owner -cf "$WORK/rootfs.tar" .
podman import --quiet \
    --change "USER 65532" \
    --change "WORKDIR /home/nonroot" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
    --change "LABEL $LABEL=true" \
    "$WORK/rootfs.tar" "$NAME" >/dev/null || die "podman import failed"
say "imported the stand-in as $NAME"
printf '%s\ncreated\n' "$NAME"
