#!/bin/sh
# herd/registry's health check: GET /v2/ where the registry listens
# (REGISTRY_HTTP_ADDR, else config.yml's :5000; a wildcard host means
# 127.0.0.1), over TLS when REGISTRY_HTTP_TLS_CERTIFICATE is set (the
# certificate is not checked: this is the registry's own address). Healthy
# is an answer of 200, or 401 when htpasswd auth is on (wget's status 6); a
# 5xx (the registry's storage health check failing: 503), no answer or a
# TLS failure is unhealthy.
set -u
addr=${REGISTRY_HTTP_ADDR:-:5000}
host=${addr%:*}
port=${addr##*:}
case $host in
"" | 0.0.0.0 | "[::]") host=127.0.0.1 ;;
esac
scheme=http
[ -z "${REGISTRY_HTTP_TLS_CERTIFICATE:-}" ] || scheme=https
wget -q -O /dev/null -T 3 -t 1 --no-check-certificate "$scheme://$host:$port/v2/"
rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 6 ] && exit 0
echo "registry-healthcheck: GET $scheme://$host:$port/v2/: wget exit status $rc" >&2
exit 1
