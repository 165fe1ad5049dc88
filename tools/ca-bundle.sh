#!/usr/bin/env bash
# ca-bundle.sh OUT [RDS_BUNDLE] - the CA bundle shipped next to bootstrap, which
# PGSSLROOTCERT names for sslmode=verify-full.
#
# An RDS or Aurora endpoint presents a certificate from RDS's own CAs (RDS's
# global bundle, RDS_BUNDLE); an RDS Proxy endpoint presents one from Amazon
# Trust Services, whose roots are not in RDS's bundle.  OUT is RDS's bundle
# (when given) followed by those five roots: Amazon Root CA 1 to 4 and
# Starfield Services Root Certificate Authority - G2.
#
# The roots are taken from the build machine's trust store, selected by their
# SHA-256 fingerprints (pinned below), so a store that lacks one or holds a
# different certificate under the same name fails the build instead of
# shipping something else.  Searched: $CA_ROOTS (a PEM bundle or a directory
# of .crt/.pem files), else Debian's ca-certificates
# (/usr/share/ca-certificates/mozilla), else the system bundles of Debian
# and Amazon Linux.
set -euo pipefail

out=${1:?usage: ca-bundle.sh OUT [RDS_BUNDLE]}
rds=${2:-}

# name|SHA-256 of the certificate's DER (`openssl x509 -noout -fingerprint -sha256`, in
# lower case without colons).
roots=(
  "Amazon Root CA 1|8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e"
  "Amazon Root CA 2|1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4"
  "Amazon Root CA 3|18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4"
  "Amazon Root CA 4|e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092"
  "Starfield Services Root Certificate Authority - G2|568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5"
)

src=${CA_ROOTS:-}
if [[ -z $src ]]; then
  for c in /usr/share/ca-certificates/mozilla /etc/ssl/certs/ca-certificates.crt \
    /etc/pki/tls/certs/ca-bundle.crt; do
    [[ -e $c ]] && { src=$c; break; }
  done
fi
[[ -n $src && -e $src ]] || {
  echo "ca-bundle: no trust store to take the Amazon Trust Services roots from" \
    "(install ca-certificates, or set CA_ROOTS)" >&2
  exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Every certificate of the source, one file each.
if [[ -d $src ]]; then
  files=("$src"/*.crt "$src"/*.pem)
else
  files=("$src")
fi
n=0
for f in "${files[@]}"; do
  [[ -f $f ]] || continue
  awk -v dir="$work" -v base="$n" '
    /-----BEGIN CERTIFICATE-----/ { k++; name = sprintf("%s/%s-%d.pem", dir, base, k) }
    name { print > name }
    /-----END CERTIFICATE-----/ { close(name); name = "" }' "$f"
  n=$((n + 1))
done
declare -A by_fp=()
for c in "$work"/*.pem; do
  [[ -f $c ]] || continue
  # The DER is the base64 between the PEM armour lines.
  fp=$(sed '1d;$d' "$c" | base64 -d 2>/dev/null | sha256sum | cut -d' ' -f1) || continue
  by_fp[$fp]=$c
done

tmp=$out.tmp
: >"$tmp"
if [[ -n $rds ]]; then
  grep -q -- '-----BEGIN CERTIFICATE-----' "$rds" || {
    echo "ca-bundle: $rds holds no certificate" >&2
    rm -f "$tmp"
    exit 1
  }
  cat "$rds" >>"$tmp"
  [[ -z $(tail -c1 "$rds") ]] || echo >>"$tmp"
fi
for r in "${roots[@]}"; do
  name=${r%%|*} fp=${r#*|}
  c=${by_fp[$fp]:-}
  [[ -n $c ]] || {
    echo "ca-bundle: $name (SHA-256 $fp) is not in $src" >&2
    rm -f "$tmp"
    exit 1
  }
  printf '# %s (Amazon Trust Services, for RDS Proxy)\n' "$name" >>"$tmp"
  openssl x509 -in "$c" >>"$tmp"
done
mv "$tmp" "$out"
