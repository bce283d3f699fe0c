#!/bin/sh
# Print deploy/nginx/defender-portal.conf with its @NAME@ placeholders replaced by these
# variables (defaults in brackets); refuses to print a site with a value missing.
#
#   SERVER_NAME            host name(s) of the portal, e.g. portal.example.org (required)
#   TLS_CERTIFICATE        PEM certificate chain (required)
#   TLS_CERTIFICATE_KEY    its private key (required)
#   HTTPS_LISTEN           [443]
#   HTTP_LISTEN            [80]
#   PORTAL_UPSTREAM        gunicorn's host:port [127.0.0.1:8000]
#   STORE_ROOT             PORTAL_STORE_ROOT [/srv/defender-portal/store]
#   STATIC_ROOT            <PORTAL_VAR_DIR>/static [/var/lib/defender-portal/static]
#
# SERVER_NAME=portal.example.org TLS_CERTIFICATE=/etc/ssl/certs/portal.pem \
#   TLS_CERTIFICATE_KEY=/etc/ssl/private/portal.key \
#   deploy/nginx/render.sh > /etc/nginx/sites-available/defender-portal.conf
set -eu
template="$(dirname "$0")/defender-portal.conf"

: "${HTTPS_LISTEN:=443}" "${HTTP_LISTEN:=80}" "${PORTAL_UPSTREAM:=127.0.0.1:8000}"
: "${STORE_ROOT:=/srv/defender-portal/store}" "${STATIC_ROOT:=/var/lib/defender-portal/static}"

set --
for name in SERVER_NAME TLS_CERTIFICATE TLS_CERTIFICATE_KEY HTTPS_LISTEN HTTP_LISTEN PORTAL_UPSTREAM STORE_ROOT STATIC_ROOT; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
        echo "render.sh: set $name (see the top of this script)" >&2
        exit 2
    fi
    case "$value" in
        *'|'* | *'&'* | *'\'* | *'
'*)
            echo "render.sh: $name=$value: |, &, \\ and newlines cannot be substituted" >&2
            exit 2 ;;
    esac
    set -- "$@" -e "s|@$name@|$value|g"
done

site="$(sed "$@" "$template")"
if printf '%s\n' "$site" | grep -n '@[A-Z][A-Z_]*@' >&2; then
    echo "render.sh: placeholders left in $template (above)" >&2
    exit 2
fi
printf '%s\n' "$site"
