#!/bin/sh
# mde-offline-agent: tells the offline update portal how Microsoft Defender for Endpoint is
# doing on this machine, and (optionally) installs the managed configuration of its group.
#
# Usage: mde-offline-agent [--once | --enroll-only | --config-dry-run | --restore-config | --help]
#   --once         (the default) enroll if this machine has no token yet, post one health
#                  report (`mdatp health` and `mdatp health --details definitions`, as JSON,
#                  or as text when JSON fails), then, with INSTALL_CONFIG=yes, merge the
#                  group's keys into the managed configuration (see below)
#   --enroll-only  enroll if this machine has no token yet, nothing else
#   --config-dry-run  show on stdout, as a unified diff, what merging the group's keys would
#                  change in the managed configuration; change nothing, send no report
#   --restore-config  put the newest backup of the managed configuration back (atomically)
#   --help         this text
#
# The managed configuration (Linux): mdatp_managed.json holds all of this machine's managed
# settings, so the agent never replaces it. It posts the file as it is to the portal, which
# answers it with only the group's keys set (cloudService.automaticDefinitionUpdateEnabled,
# cloudService.definitionUpdatesInterval, antivirusEngine.offlineDefinitionUpdateUrl,
# antivirusEngine.offlineDefinitionUpdate, antivirusEngine.offlineDefinitionUpdateFallbackToCloud,
# features.offlineDefinitionUpdateVerifySig, and antivirusEngine.enforcementLevel when the group
# sets one); every other key and value is kept. When that differs from the file, the file is
# copied to mdatp_managed.json.bak-YYYYmmddTHHMMSSZ beside it (same mode; the last 5 kept) and
# replaced atomically; the keys set are logged. A file the portal cannot read (not JSON, a key
# twice...) is left untouched: the portal's reason is logged, shown on the endpoint's page, and
# the run exits 8. On macOS the agent installs nothing: it sends the managed preferences of
# com.microsoft.wdav and saves the group's profile in STATE_DIR for your MDM, unless an MDM
# profile already sets that domain without the group's keys (reported to the portal, exit 8).
#
# Needs only sh, curl, mdatp and standard utilities (mktemp, mv, cp, chmod, sed, tr, wc, cmp,
# date; diff for --config-dry-run, which prints the whole merged file when diff is missing).
# Runs as root (the token file and the managed configuration are root's). Log lines go to
# stderr, each prefixed with a UTC timestamp; nothing is printed on stdout but --help
# and --config-dry-run's diff.
#
# Configuration: KEY=value lines in /etc/mde-offline-agent/agent.conf (another file with
# MDE_AGENT_CONF=/path); '#' starts a comment line; values may be quoted; the file is read,
# never executed. An environment variable of the same name wins over the file.
#   PORTAL_URL           the portal, e.g. https://portal.example.org (required)
#   ENROLL_SECRET_FILE   a root-only file holding the group's enrollment secret (mde_enr_...);
#                        read only to enroll  [/etc/mde-offline-agent/enroll-secret]
#   STATE_DIR            the token (mode 600) and what the agent remembers (mode 700)
#                        [/var/lib/mde-offline-agent]
#   INSTALL_CONFIG       yes: keep the group's managed configuration installed  [no]
#   MANAGED_CONFIG_PATH  where Linux's mdatp reads it
#                        [/etc/opt/microsoft/mdatp/managed/mdatp_managed.json]
#   MANAGED_PREFERENCES_DIR  where macOS puts what MDM profiles set
#                        [/Library/Managed Preferences]
#   CURL_OPTS            more curl options, split on spaces, e.g. --cacert /etc/ssl/portal.pem
#   MDATP                the mdatp command  [mdatp]
#   PLATFORM, ARCH       normally detected (uname -s: linux or mac; uname -m: x86_64 or arm64)
#
# Exit codes:
#   0  done (an unchanged managed configuration is not an error)
#   1  internal error: the state directory or a temporary file cannot be written
#   2  usage or configuration error (no PORTAL_URL, unreadable secret file, unknown key...)
#   3  mdatp failed (daemon down?): no machine id or no health output
#   4  the portal cannot be reached (DNS, TLS, timeout): curl's error is logged
#   5  enrollment refused (a wrong, expired or revoked secret; a platform the group lacks)
#   6  the token was refused (401: endpoint decommissioned, or taken over by an enrollment claim
#      an operator accepted): the token is deleted; the next run asks to enroll again once, which
#      the portal holds as an enrollment claim (exit 9) for an operator
#   7  the report was refused (400, 403, 413, 429, 5xx): the portal's reason is logged
#   8  the managed configuration could not be merged, backed up, written or restored (a file
#      the portal cannot read, an MDM profile conflict): the reason is logged
#   9  waiting for an operator: this machine id is already enrolled (or was decommissioned), so
#      the portal holds its enrollment as a claim; the token kept works once an operator accepts
#      it. The agent never enrolls again by itself while it waits: delete the token file to
#      make a new claim
# With several failures in one run the first one's code is returned.

set -u
set -f # CURL_OPTS is split on spaces, never globbed

PROG=mde-offline-agent
KEYS="PORTAL_URL ENROLL_SECRET_FILE STATE_DIR INSTALL_CONFIG MANAGED_CONFIG_PATH MANAGED_PREFERENCES_DIR CURL_OPTS MDATP PLATFORM ARCH"
RESULT=0
WORK=""

log() {
    printf '%s %s: %s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$PROG" "$*" >&2
}

die() { # die CODE MESSAGE
    code=$1
    shift
    log "error: $*"
    exit "$code"
}

fail() { # fail CODE MESSAGE: log it, remember the first failure's code and carry on
    [ "$RESULT" -ne 0 ] || RESULT=$1
    shift
    log "error: $*"
}

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p;}' "$0"
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    [ -z "$WORK" ] || rm -rf "$WORK"
}

# --- Small helpers -----------------------------------------------------------------------

trim() { # trim TEXT: without leading and trailing white space (CR included)
    t=$1
    t=${t#"${t%%[![:space:]]*}"}
    t=${t%"${t##*[![:space:]]}"}
    printf '%s' "$t"
}

first_line() { # first_line FILE: its first non-blank line, at most 300 characters
    sed -n '/[^[:space:]]/{s/^[[:space:]]*//;s/[[:space:]]*$//;p;q;}' "$1" 2>/dev/null | cut -c1-300
}

first_char() { # first_char FILE: its first non-blank character
    sed -n '/[^[:space:]]/{s/^[[:space:]]*\(.\).*/\1/;p;q;}' "$1" 2>/dev/null
}

json_string() { # json_string TEXT: a JSON string literal (control characters dropped)
    printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

json_field() { # json_field KEY FILE: a string or number member of the portal's one-line JSON answer
    tr -d '\n\r' < "$2" |
        sed -n -E 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*("(([^"\\]|\\.)*)"|(-?[0-9][0-9.]*)).*/\2\4/p' |
        sed -e 's/\\"/"/g' -e 's/\\\//\//g' -e 's/\\[nrt]/ /g' -e 's/\\\\/\\/g'
}

json_list() { # json_list KEY FILE: a list of strings as "a, b"
    tr -d '\n\r' < "$2" |
        sed -n -E 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*\[([^]]*)\].*/\1/p' |
        sed -e 's/"//g' -e 's/,/, /g'
}

detail_of() { # detail_of FILE: the portal's reason in an error answer (or the start of whatever came)
    d=$(json_field detail "$1")
    [ -n "$d" ] || d=$(first_line "$1")
    printf '%s' "${d:-no explanation in the answer}"
}

mdatp_field() { # mdatp_field NAME: one value of `mdatp health --field NAME`, bare
    out=$("$MDATP" health --field "$1" 2>"$WORK/mdatp.err") || return 1
    value=$(printf '%s\n' "$out" | sed -n '/[^[:space:]]/{s/\[managed\]//;s/^[[:space:]]*//;s/[[:space:]]*$//;s/^"//;s/"$//;p;q;}')
    [ -n "$value" ] || return 1
    printf '%s' "$value"
}

write_file() { # write_file PATH MODE TEXT: atomically (a temporary file next to it, chmod, mv)
    tmp=$(mktemp "$(dirname "$1")/.$(basename "$1").XXXXXX") || return 1
    if printf '%s\n' "$3" > "$tmp" && chmod "$2" "$tmp" && mv -f "$tmp" "$1"; then
        return 0
    fi
    rm -f "$tmp"
    return 1
}

# http URL OUT [DATA_FILE CONTENT_TYPE [IF_NONE_MATCH]]: a GET, or a POST of DATA_FILE; prints the HTTP status ("000" and
# a non-zero status when curl fails; its message is in $WORK/curl.err). The answer's body goes to
# OUT, its headers to OUT.headers. The token goes to curl through its configuration on stdin,
# so it never shows in the process list.
http() {
    h_url=$1 h_out=$2 h_data=${3-} h_type=${4-} h_etag=${5-}
    set -- -sS --connect-timeout 20 --max-time 120 -o "$h_out" -D "$h_out.headers" -w '%{http_code}' \
        -H "User-Agent: $PROG/1" -H "Accept: application/json, */*"
    if [ -n "$h_data" ]; then # curl posts when given data
        set -- "$@" -H "Content-Type: $h_type" --data-binary "@$h_data"
    fi
    [ -z "$h_etag" ] || set -- "$@" -H "If-None-Match: $h_etag"
    h_auth=""
    [ -z "${TOKEN-}" ] || h_auth="header = \"Authorization: Bearer $TOKEN\""
    # shellcheck disable=SC2086 # CURL_OPTS is a list of options
    printf '%s\n' "$h_auth" | curl -K - "$@" $CURL_OPTS "$h_url" 2>"$WORK/curl.err"
}

unreachable() { # unreachable WHAT: the line for a curl failure
    printf 'the portal cannot be reached for %s: %s' "$1" "$(first_line "$WORK/curl.err")"
}

# --- Configuration ---------------------------------------------------------------------------

read_conf() {
    file=$1
    [ -e "$file" ] || return 0
    [ -r "$file" ] || die 2 "cannot read the configuration $file"
    n=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        line=$(trim "$line")
        case $line in '' | '#'*) continue ;; esac
        case $line in *=*) ;; *) die 2 "$file line $n: expected KEY=value, got: $line" ;; esac
        key=$(trim "${line%%=*}")
        value=$(trim "${line#*=}")
        case $value in
            \"*\")
                value=${value#\"}
                value=${value%\"}
                ;;
            \'*\')
                value=${value#\'}
                value=${value%\'}
                ;;
        esac
        case " $KEYS " in
            *" $key "*) eval "conf_$key=\$value" ;;
            *) die 2 "$file line $n: unknown key $key (known: $KEYS)" ;;
        esac
    done < "$file"
}

configure() {
    for key in $KEYS; do unset "conf_$key"; done
    read_conf "${MDE_AGENT_CONF:-/etc/mde-offline-agent/agent.conf}"
    for key in $KEYS; do
        eval "value=\${$key:-\${conf_$key:-}}"
        eval "$key=\$value"
    done
    ENROLL_SECRET_FILE=${ENROLL_SECRET_FILE:-/etc/mde-offline-agent/enroll-secret}
    STATE_DIR=${STATE_DIR:-/var/lib/mde-offline-agent}
    MANAGED_CONFIG_PATH=${MANAGED_CONFIG_PATH:-/etc/opt/microsoft/mdatp/managed/mdatp_managed.json}
    MANAGED_PREFERENCES_DIR=${MANAGED_PREFERENCES_DIR:-/Library/Managed Preferences}
    MDATP=${MDATP:-mdatp}

    while :; do
        case $PORTAL_URL in */) PORTAL_URL=${PORTAL_URL%/} ;; *) break ;; esac
    done
    case $PORTAL_URL in
        http://?* | https://?*) ;;
        '') die 2 "PORTAL_URL is not set (in ${MDE_AGENT_CONF:-/etc/mde-offline-agent/agent.conf} or the environment)" ;;
        *) die 2 "PORTAL_URL must be an http(s) URL such as https://portal.example.org, not $PORTAL_URL" ;;
    esac
    case $INSTALL_CONFIG in
        [Yy][Ee][Ss] | [Tt][Rr][Uu][Ee] | 1 | [Oo][Nn]) INSTALL_CONFIG=yes ;;
        '' | [Nn][Oo] | [Ff][Aa][Ll][Ss][Ee] | 0 | [Oo][Ff][Ff]) INSTALL_CONFIG=no ;;
        *) die 2 "INSTALL_CONFIG must be yes or no, not $INSTALL_CONFIG" ;;
    esac
    case ${PLATFORM:-$(uname -s)} in
        Linux | linux) PLATFORM=linux ;;
        Darwin | mac | macos | macOS) PLATFORM=mac ;;
        *) die 2 "unsupported system ${PLATFORM:-$(uname -s)}: Defender offline updates are for Linux and macOS" ;;
    esac
    case ${ARCH:-$(uname -m)} in
        x86_64 | amd64 | x64) ARCH=x86_64 ;;
        aarch64 | arm64) ARCH=arm64 ;;
        *) die 2 "unsupported architecture ${ARCH:-$(uname -m)} (x86_64 or arm64)" ;;
    esac
    command -v curl > /dev/null 2>&1 || die 2 "curl is not installed"

    TOKEN_FILE=$STATE_DIR/token
    ETAG_FILE=$STATE_DIR/managed-config.etag
    API=$PORTAL_URL/api/v1
}

prepare_state() {
    umask 077
    if ! { mkdir -p "$STATE_DIR" && chmod 700 "$STATE_DIR"; }; then
        die 1 "cannot create the state directory $STATE_DIR (run as root?)"
    fi
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$PROG.XXXXXX") || die 1 "cannot create a temporary directory in ${TMPDIR:-/tmp}"
}

# --- Enrollment --------------------------------------------------------------------------------

load_token() {
    TOKEN=""
    [ -f "$TOKEN_FILE" ] || return 1
    TOKEN=$(sed -n '1{s/[[:space:]]//g;p;}' "$TOKEN_FILE")
    case $TOKEN in
        mde_ep_?*) return 0 ;;
    esac
    log "ignoring $TOKEN_FILE: it holds no endpoint token; enrolling again"
    TOKEN=""
    return 1
}

enroll() {
    [ -r "$ENROLL_SECRET_FILE" ] || die 2 "cannot read the enrollment secret file $ENROLL_SECRET_FILE (ENROLL_SECRET_FILE): put the group's secret in it, mode 600"
    if [ -n "$(find "$ENROLL_SECRET_FILE" -prune -perm -004 2>/dev/null)" ]; then
        log "warning: $ENROLL_SECRET_FILE can be read by every user: chmod 600 it"
    fi
    secret=$(first_line "$ENROLL_SECRET_FILE")
    [ -n "$secret" ] || die 2 "the enrollment secret file $ENROLL_SECRET_FILE is empty"
    machine_id=$(mdatp_field machine_guid) ||
        die 3 "cannot read the machine id: \`$MDATP health --field machine_guid\` failed: $(first_line "$WORK/mdatp.err")"
    app_version=$("$MDATP" version 2>/dev/null | sed -n 's/^[[:space:]]*Product version:[[:space:]]*//p' | sed -n '1{s/[[:space:]]*$//;p;}')
    [ -n "$app_version" ] || app_version=$(mdatp_field app_version) || app_version=""
    hostname=$(uname -n)
    printf '{"secret":%s,"machine_id":%s,"hostname":%s,"platform":%s,"arch":%s,"app_version":%s}\n' \
        "$(json_string "$secret")" "$(json_string "$machine_id")" "$(json_string "$hostname")" \
        "$(json_string "$PLATFORM")" "$(json_string "$ARCH")" "$(json_string "$app_version")" > "$WORK/enroll.json" ||
        die 1 "cannot write $WORK/enroll.json"
    TOKEN=""
    status=$(http "$API/enroll" "$WORK/enroll.out" "$WORK/enroll.json" application/json) || die 4 "$(unreachable enrollment)"
    rm -f "$WORK/enroll.json"
    case $status in
        201 | 202) ;;
        *) die 5 "enrollment refused (HTTP $status): $(detail_of "$WORK/enroll.out")" ;;
    esac
    token=$(json_field token "$WORK/enroll.out")
    case $token in
        mde_ep_?*) ;;
        *) die 5 "the portal's answer to the enrollment holds no token: $(first_line "$WORK/enroll.out")" ;;
    esac
    write_file "$TOKEN_FILE" 600 "$token" || die 1 "cannot write the token to $TOKEN_FILE"
    if [ "$status" = 202 ]; then
        # A known machine id without its token (or a decommissioned one): the portal holds the claim for an
        # operator, and this token works only once it is accepted. Kept, so that no later run claims again.
        conflict=$(json_field conflict "$WORK/enroll.out")
        write_file "$STATE_DIR/enrollment" 600 "pending=$conflict
machine_id=$machine_id
portal=$PORTAL_URL" || log "warning: cannot write $STATE_DIR/enrollment"
        die 9 "enrollment held for an operator (HTTP 202): $(detail_of "$WORK/enroll.out"); token kept in $TOKEN_FILE"
    fi
    write_file "$STATE_DIR/enrollment" 600 "endpoint=$(json_field endpoint "$WORK/enroll.out")
group=$(json_field group "$WORK/enroll.out")
machine_id=$machine_id
portal=$PORTAL_URL
definition_url=$(json_field definition_url "$WORK/enroll.out")" || log "warning: cannot write $STATE_DIR/enrollment"
    TOKEN=$token
    log "enrolled as endpoint $(json_field endpoint "$WORK/enroll.out") in group $(json_field group "$WORK/enroll.out") (machine $machine_id, $PLATFORM/$ARCH); token kept in $TOKEN_FILE"
}

pending_claim() { # pending_claim: the enrollment claim this machine's token waits on, if any
    sed -n 's/^pending=//p' "$STATE_DIR/enrollment" 2>/dev/null | sed -n '1p'
}

token_refused() { # token_refused WHAT FILE: a 401
    claim=$(pending_claim)
    if [ -n "$claim" ]; then
        # Never a new claim by itself: a looping agent would bury the operator in claims (and a
        # decommissioned machine must stay out until someone lets it back).
        die 9 "the portal does not accept this machine's token yet for $1 (HTTP 401): enrollment claim $claim waits for an operator (Endpoints › Enrollment claims), or was rejected; not enrolling again: delete $TOKEN_FILE to make a new claim"
    fi
    rm -f "$TOKEN_FILE"
    die 6 "the portal refused this machine's token for $1 (HTTP 401: $(detail_of "$2")): the endpoint was decommissioned, or an operator gave its identity to another claim; $TOKEN_FILE was deleted: the next run asks to enroll again once, and the portal holds that for an operator"
}

claim_accepted() { # claim_accepted: a held token worked, so an operator accepted the claim
    claim=$(pending_claim)
    [ -n "$claim" ] || return 0
    grep -v '^pending=' "$STATE_DIR/enrollment" > "$WORK/enrollment" 2>/dev/null
    write_file "$STATE_DIR/enrollment" 600 "$(cat "$WORK/enrollment")" || log "warning: cannot write $STATE_DIR/enrollment"
    log "enrollment claim $claim was accepted by an operator: this machine's token works"
}

# --- Health report -----------------------------------------------------------------------------

# Plain `mdatp health` has none of the offline-update fields: only `mdatp health --details definitions`
# prints them (defender-docs defender-endpoint/health-status.md, "Component specific health"). A report
# holds both outputs: as JSON {"$type":"mdeOfflineAgentReport","health":...,"definitions":...} when both
# `--output json` calls work, otherwise as text, each output after its echoed command line. An agent too
# old for `--details definitions` sends the general health alone; the portal then says what is missing.

last_char() { # last_char FILE: its last non-blank character
    tr -d ' \t\r\n' < "$1" 2>/dev/null | tail -c 1
}

mdatp_json() { # mdatp_json OUT ARGS...: `mdatp ARGS --output json` into OUT, when it prints one JSON object
    j_out=$1
    shift
    "$MDATP" "$@" --output json > "$j_out" 2>"$WORK/mdatp.err" &&
        [ "$(first_char "$j_out")" = "{" ] && [ "$(last_char "$j_out")" = "}" ]
}

mdatp_text() { # mdatp_text OUT ARGS...: `mdatp ARGS` into OUT, when it prints something
    t_out=$1
    shift
    "$MDATP" "$@" > "$t_out" 2>"$WORK/mdatp.err" && [ -n "$(first_line "$t_out")" ]
}

section() { # section FILE ARGS...: FILE after the echoed command line `$ mdatp ARGS`
    s_file=$1
    shift
    printf '$ mdatp %s\n' "$*"
    cat "$s_file"
}

gather_report() { # gather_report: the report in $WORK/report; sets FORM and TYPE
    FORM=json
    TYPE=application/json
    if mdatp_json "$WORK/health.json" health; then
        if mdatp_json "$WORK/definitions.json" health --details definitions; then
            {
                printf '{"$type":"mdeOfflineAgentReport","health":'
                cat "$WORK/health.json"
                printf ',"definitions":'
                cat "$WORK/definitions.json"
                printf '}\n'
            } > "$WORK/report" || return 1
            return 0
        fi
        why=$(first_line "$WORK/mdatp.err")
        if ! mdatp_text "$WORK/definitions.txt" health --details definitions; then
            why=$(first_line "$WORK/mdatp.err")
            log "\`$MDATP health --details definitions\` failed (${why:-nothing printed}): sending the general health only (this Defender may be too old for it)"
            cp "$WORK/health.json" "$WORK/report" || return 1
            return 0
        fi
        log "\`$MDATP health --details definitions --output json\` failed (${why:-no JSON printed}): sending the text form"
    else
        why=$(first_line "$WORK/mdatp.err")
        log "\`$MDATP health --output json\` failed (${why:-no JSON printed}): sending the text form"
    fi
    FORM=text
    TYPE="text/plain; charset=utf-8"
    if ! mdatp_text "$WORK/health.txt" health; then
        fail 3 "\`$MDATP health\` failed, no report sent: $(first_line "$WORK/mdatp.err")"
        return 2
    fi
    if [ -f "$WORK/definitions.txt" ] || mdatp_text "$WORK/definitions.txt" health --details definitions; then
        { section "$WORK/health.txt" health && section "$WORK/definitions.txt" health --details definitions; } > "$WORK/report" || return 1
    else
        log "\`$MDATP health --details definitions\` failed ($(first_line "$WORK/mdatp.err")): sending the general health only (this Defender may be too old for it)"
        section "$WORK/health.txt" health > "$WORK/report" || return 1
    fi
}

post_report() {
    gather_report
    case $? in
        0) ;;
        2) return 1 ;;
        *)
            fail 1 "cannot write the report to $WORK/report"
            return 1
            ;;
    esac
    if ! status=$(http "$API/reports" "$WORK/report.out" "$WORK/report" "$TYPE"); then
        fail 4 "$(unreachable "the health report")"
        return 1
    fi
    case $status in
        2??)
            claim_accepted
            findings=$(json_list findings "$WORK/report.out")
            log "report $(json_field report "$WORK/report.out") accepted (HTTP $status, $FORM form): compliance $(json_field compliance "$WORK/report.out")${findings:+; findings: $findings}"
            ;;
        401) token_refused "the health report" "$WORK/report.out" ;;
        *) fail 7 "report refused (HTTP $status): $(detail_of "$WORK/report.out")" ;;
    esac
}

# --- Managed configuration -------------------------------------------------------------------------
# DESIGN §2.3: mdatp_managed.json holds ALL of this machine's managed settings; the portal owns only a
# few keys. The agent never replaces the file with the portal's: it posts the file as it is, the
# portal answers it with the group's keys merged in (every other key kept), and the agent writes that
# back only when it differs, after a backup, atomically.

MAX_CONFIG_BYTES=1048576 # the portal refuses more; a managed configuration is a few KiB
BACKUPS_KEPT=5

file_size() { # file_size FILE: its size in bytes
    wc -c < "$1" | tr -d ' '
}

changed_keys() { # changed_keys: the keys the portal set, from its answer's X-Managed-Config-Changes header
    tr -d '\r' < "$WORK/config.out.headers" | sed -n 's/^[Xx]-[Mm]anaged-[Cc]onfig-[Cc]hanges:[[:space:]]*//p' | sed -n '$p'
}

post_config() { # post_config FILE TYPE: the portal's answer in $WORK/config.out; 0 on a 200
    if ! status=$(http "$API/endpoint/managed-config" "$WORK/config.out" "$1" "$2"); then
        fail 4 "$(unreachable "the managed configuration")"
        return 1
    fi
    case $status in
        200) return 0 ;;
        401) token_refused "the managed configuration" "$WORK/config.out" ;;
        *)
            fail 8 "the portal refused $3 (HTTP $status), left as it is: $(detail_of "$WORK/config.out")"
            return 1
            ;;
    esac
}

backups() { # backups TARGET: its backups, oldest first (their UTC stamps sort as they were taken)
    set +f
    for b in "$1".bak-*; do
        [ -f "$b" ] && printf '%s\n' "$b"
    done
    set -f
}

replace_file() { # replace_file SOURCE TARGET: atomically, keeping TARGET's mode and owner (644 for a new file)
    dir=$(dirname "$2")
    (umask 022 && mkdir -p "$dir") || return 1
    tmp=$(mktemp "$dir/.$(basename "$2").XXXXXX") || return 1
    if [ -f "$2" ]; then
        cp -p "$2" "$tmp" || { rm -f "$tmp"; return 1; }
    else
        chmod 644 "$tmp" || { rm -f "$tmp"; return 1; }
    fi
    if cat "$1" > "$tmp" && mv -f "$tmp" "$2"; then
        return 0
    fi
    rm -f "$tmp"
    return 1
}

back_up() { # back_up TARGET: a copy next to it, mode and owner kept; prints its name; the last BACKUPS_KEPT kept
    backup=$1.bak-$(date -u '+%Y%m%dT%H%M%SZ')
    n=1
    while [ -e "$backup" ]; do # two changes in one second: never overwrite a backup
        backup=$1.bak-$(date -u '+%Y%m%dT%H%M%SZ').$n
        n=$((n + 1))
    done
    cp -p "$1" "$backup" || return 1
    count=$(backups "$1" | wc -l)
    if [ "$count" -gt "$BACKUPS_KEPT" ]; then
        backups "$1" | sed -n "1,$((count - BACKUPS_KEPT))p" | while IFS= read -r old; do rm -f "$old"; done
    fi
    printf '%s' "$backup"
}

show_diff() { # show_diff OLD NEW: a unified diff on stdout (the whole new file when diff is missing)
    if command -v diff > /dev/null 2>&1; then
        diff -u "$1" "$2"
        [ $? -le 1 ] || log "warning: diff failed"
    else
        log "diff is not installed: the merged file follows in full instead of a diff"
        cat "$2"
    fi
}

update_config() {
    rm -f "$ETAG_FILE" # left by agents that fetched the whole file with GET
    if [ "$PLATFORM" = mac ]; then
        update_mac_profile
        return
    fi
    target=$MANAGED_CONFIG_PATH
    : > "$WORK/config.current" || die 1 "cannot write $WORK/config.current"
    if [ -e "$target" ]; then
        [ -f "$target" ] && [ -r "$target" ] || {
            fail 8 "$target is not a readable file; left as it is"
            return 1
        }
        size=$(file_size "$target")
        if [ "$size" -gt "$MAX_CONFIG_BYTES" ]; then
            fail 8 "$target is $size bytes, more than a managed configuration ($MAX_CONFIG_BYTES); left as it is"
            return 1
        fi
        cat "$target" > "$WORK/config.current" || die 1 "cannot copy $target to $WORK"
    fi
    post_config "$WORK/config.current" application/json "$target" || return 1
    if [ "$(first_char "$WORK/config.out")" != "{" ]; then
        fail 8 "the portal's answer is not JSON; $target left as it is: $(first_line "$WORK/config.out")"
        return 1
    fi
    keys=$(changed_keys)
    if [ -f "$target" ] && cmp -s "$WORK/config.out" "$target"; then
        log "managed configuration unchanged: $target already holds the group's keys"
        return 0
    fi
    if [ "$MODE" = config-dry-run ]; then
        log "dry run: $target would get ${keys:-the same keys, written out again}; nothing changed"
        if [ -f "$target" ]; then
            show_diff "$target" "$WORK/config.out"
        else
            show_diff /dev/null "$WORK/config.out"
        fi
        return 0
    fi
    backup=""
    if [ -f "$target" ]; then
        backup=$(back_up "$target") || {
            fail 8 "cannot back up $target next to it; left as it is (run as root? a read-only /etc?)"
            return 1
        }
    fi
    if replace_file "$WORK/config.out" "$target"; then
        log "managed configuration merged into $target: ${keys:-no key changed, written out again}${backup:+; the previous file is $backup}"
    else
        fail 8 "cannot write $target (run as root? a read-only /etc under systemd's ProtectSystem=?)"
        return 1
    fi
}

restore_config() { # --restore-config: the newest backup back in place, atomically
    [ "$PLATFORM" = linux ] || die 2 "--restore-config: on macOS the agent installs no configuration (the MDM does)"
    target=$MANAGED_CONFIG_PATH
    newest=$(backups "$target" | sed -n '$p')
    [ -n "$newest" ] || die 8 "no backup of $target to restore (none named $(basename "$target").bak-*)"
    replace_file "$newest" "$target" || die 8 "cannot write $target (run as root?)"
    log "restored $target from $newest; the next run merges the group's keys in again unless INSTALL_CONFIG=no"
}

# macOS: Microsoft's way is a configuration profile for the preference domain com.microsoft.wdav,
# deployed by the organisation's MDM (defender-docs mac-preferences.md), which Defender reads from
# /Library/Managed Preferences/com.microsoft.wdav.plist (mac-install-with-other-mdm.md). The agent
# never installs a profile: it sends those managed preferences, and the portal answers the group's
# profile to hand to the MDM, or 409 when an MDM profile already sets the domain without the
# group's keys (a second profile would conflict with it).
update_mac_profile() {
    target=$STATE_DIR/managed-config.mobileconfig
    prefs=$MANAGED_PREFERENCES_DIR/com.microsoft.wdav.plist
    : > "$WORK/prefs" || die 1 "cannot write $WORK/prefs"
    if [ -f "$prefs" ]; then
        size=$(file_size "$prefs")
        if [ "$size" -gt "$MAX_CONFIG_BYTES" ]; then
            fail 8 "$prefs is $size bytes, more than managed preferences can be ($MAX_CONFIG_BYTES)"
            return 1
        fi
        cat "$prefs" > "$WORK/prefs" || die 1 "cannot copy $prefs to $WORK"
    fi
    if ! post_config "$WORK/prefs" application/x-plist "the managed preferences $prefs"; then
        if [ "${status-}" = 409 ] && [ -f "$target" ]; then
            rm -f "$target" && log "removed the group's profile saved earlier ($target): deploy the keys in the MDM's own profile"
        fi
        return 1
    fi
    if [ -f "$target" ] && cmp -s "$WORK/config.out" "$target"; then
        log "the group's profile is unchanged: $target left as it is"
    elif [ "$MODE" = config-dry-run ]; then
        log "dry run: the group's profile would be saved to $target; nothing changed"
        if [ -f "$target" ]; then show_diff "$target" "$WORK/config.out"; else show_diff /dev/null "$WORK/config.out"; fi
    elif replace_file "$WORK/config.out" "$target"; then
        log "the group's profile saved to $target: install it through your MDM (the agent does not install profiles)"
    else
        fail 8 "cannot save the group's profile to $target"
        return 1
    fi
}

# --- Main -----------------------------------------------------------------------------------------------

MODE=once
while [ $# -gt 0 ]; do
    case $1 in
        --once) MODE=once ;;
        --enroll-only) MODE=enroll ;;
        --config-dry-run) MODE=config-dry-run ;;
        --restore-config) MODE=restore-config ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die 2 "unknown argument: $1"
            ;;
    esac
    shift
done

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

configure
prepare_state

if [ "$MODE" = restore-config ]; then
    restore_config
    exit 0
fi
if load_token; then
    [ "$MODE" != enroll ] || log "already enrolled (token in $TOKEN_FILE); delete it to enroll again"
elif [ "$MODE" = config-dry-run ]; then
    die 2 "--config-dry-run: this machine is not enrolled yet (no token in $TOKEN_FILE): run the agent once first"
else
    enroll
fi
if [ "$MODE" = config-dry-run ]; then
    update_config
    exit "$RESULT"
fi
[ "$MODE" = once ] || exit 0

post_report
if [ "$INSTALL_CONFIG" = yes ]; then
    if [ "$RESULT" -eq 4 ]; then
        log "managed configuration not checked: the portal cannot be reached"
    else
        update_config
    fi
fi
exit "$RESULT"
