#!/usr/bin/env bash
# MIT Kerberos for winnode's kerberos extra and its tests: the headers python-gssapi and krb5 build
# against (libkrb5-dev), the KDC programs of the test realm (krb5kdc, kdb5_util: krb5-kdc;
# kadmin.local: krb5-admin-server), and libfaketime, which runs an emulated host with its clock moved
# (operator/winnode/testing/clock.py). Idempotent and quiet; installs only what is missing, as root.
set -euo pipefail
need=()
command -v krb5-config >/dev/null 2>&1 || need+=(libkrb5-dev)
PATH="$PATH:/usr/sbin:/sbin"
command -v krb5kdc >/dev/null 2>&1 || need+=(krb5-kdc)
command -v kadmin.local >/dev/null 2>&1 || need+=(krb5-admin-server)
compgen -G "/usr/lib/*/faketime/libfaketimeMT.so.1" >/dev/null || need+=(libfaketime)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "hack/install-krb5.sh: ${need[*]} missing; install them as root (apt-get install ${need[*]})" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# policy-rc.d or no init system: the packages' own services are not needed (the tests run krb5kdc).
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
