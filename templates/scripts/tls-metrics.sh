#!/bin/bash
# madbase-tls-metrics OUT.prom NAME=CERT.pem ... — when each certificate stops being valid, as a
# node exporter textfile (the alert rules warn weeks before). Run by madbase-tls-metrics.timer as
# root on every node, and by config-refresh after it installed a renewed certificate. The file is
# replaced atomically, so node exporter never reads half of it; a certificate that cannot be read
# says so (readable 0) instead of leaving an old date behind.
set -euo pipefail

usage() {
  echo "usage: madbase-tls-metrics OUT.prom NAME=CERT.pem ..." >&2
  exit 2
}
[ $# -ge 2 ] || usage
out=$1
shift
for pair in "$@"; do
  [[ "$pair" =~ ^[a-z][a-z0-9_]*=/.+ ]] || usage
done

tmp=$(mktemp "${out%/*}/.madbase-tls.XXXXXX")
trap 'rm -f "$tmp"' EXIT
{
  echo "# HELP madbase_tls_certificate_not_after_timestamp_seconds When the certificate stops being valid (its notAfter)."
  echo "# TYPE madbase_tls_certificate_not_after_timestamp_seconds gauge"
  echo "# HELP madbase_tls_certificate_readable Whether the certificate file could be read and parsed."
  echo "# TYPE madbase_tls_certificate_readable gauge"
  for pair in "$@"; do
    name=${pair%%=*}
    file=${pair#*=}
    # `openssl x509 -enddate` prints notAfter=Dec  2 18:50:51 2028 GMT; GNU date reads that form.
    if end=$(openssl x509 -noout -enddate -in "$file" 2>/dev/null) && when=$(date -u -d "${end#notAfter=}" +%s 2>/dev/null); then
      echo "madbase_tls_certificate_not_after_timestamp_seconds{certificate=\"$name\"} $when"
      echo "madbase_tls_certificate_readable{certificate=\"$name\"} 1"
    else
      echo "madbase_tls_certificate_readable{certificate=\"$name\"} 0"
    fi
  done
  echo "# HELP madbase_tls_metrics_timestamp_seconds When this file was written."
  echo "# TYPE madbase_tls_metrics_timestamp_seconds gauge"
  echo "madbase_tls_metrics_timestamp_seconds $(date +%s)"
} >"$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
