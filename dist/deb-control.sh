#!/bin/sh
# The DEBIAN/control of the pilotfish package: Depends lists the package of
# every shared library the binary links (dpkg -S over ldd), at least the
# version installed here.
# usage: deb-control.sh BINARY VERSION ARCH STAGING_ROOT
set -eu
bin=$1 version=$2 arch=$3 root=$4
deps=""
for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'); do
    real=$(readlink -f "$lib")
    pkg=$(dpkg -S "$real" 2>/dev/null || dpkg -S "$lib")
    pkg=${pkg%%:*}
    ver=$(dpkg-query -W -f='${Version}' "$pkg" | sed 's/-[^-]*$//')
    case " $deps " in *" $pkg "*) ;; *) deps="$deps $pkg (>= $ver),";; esac
done
deps=$(echo "$deps" | sed 's/^ //; s/,$//')
size=$(du -sk "$root" | cut -f1)
cat <<CONTROL
Package: pilotfish
Version: $version
Architecture: $arch
Maintainer: pilotfish developers <pilotfish@localhost>
Installed-Size: $size
Depends: $deps
Section: httpd
Priority: optional
Description: HTTP/1.1 sidecar reverse proxy
 pilotfish runs next to one application, in a Kubernetes pod or on a host in
 front of a legacy service: routing, balancing, retries, rate limits, gzip,
 an HTTP cache, graceful drain and Prometheus metrics. The package installs
 the binary, the systemd unit (Type=notify), the man pages and an example
 configuration in /etc/pilotfish/pilotfish.yaml.
CONTROL
