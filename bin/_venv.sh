# Sourced by bin/run and bin/test: create or reuse the virtualenv and install the requirement files
# named in $REQUIREMENT_FILES (bin/run: requirements.txt; bin/test: requirements.txt and
# requirements-dev.txt) with --require-hashes, whenever one of them changed since it was last
# installed. Each file has its own stamp in the venv, so bin/run after bin/test installs nothing
# and bin/test after bin/run installs only what the dev file adds. Needs only Python 3.11+.
set -eu
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
REQUIREMENT_FILES="${REQUIREMENT_FILES:-requirements.txt}"

if [ ! -x "$VENV/bin/python" ]; then
    PYTHON="${PYTHON:-}"
    if [ -z "$PYTHON" ]; then
        for candidate in python3.11 python3.12 python3.13 python3; do
            if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
        done
    fi
    if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    echo "Creating the virtualenv in $VENV with $PYTHON…"
    "$PYTHON" -m venv "$VENV"
fi

_sha256() {
    "$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
}

_stale=""
_install_args=""
for _file in $REQUIREMENT_FILES; do
    _install_args="$_install_args -r $_file"
    _stamp="$VENV/.$_file.sha256"
    if [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$(_sha256 "$_file")" ]; then
        _stale="$_stale $_file"
    fi
done
if [ -n "$_stale" ]; then
    echo "Installing$_stale into $VENV…"
    # pip itself is not pinned (hashes cover what it installs); then every file of the set at once,
    # so pip resolves them together.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    # shellcheck disable=SC2086  # one word per argument, by design
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes $_install_args
    for _file in $REQUIREMENT_FILES; do
        _sha256 "$_file" > "$VENV/.$_file.sha256"
    done
    rm -f "$VENV/.requirements.sha256"  # the single stamp of before requirements-dev.txt
fi
unset _stale _install_args _file _stamp
PATH="$(cd "$VENV" && pwd)/bin:$PATH"
export PATH
