# Sourced by scripts/run and scripts/test: creates .venv and installs the project (idempotent, fast when
# nothing changed). Everything a fresh machine needs is installed here, nowhere else.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
VENV="${RISK_MONITOR_VENV:-.venv}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: risk-monitor needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi

# install_python EXTRAS: install the project with the given extras into $VENV unless already done.
install_python() {
    local extras="$1"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    local stamp="$VENV/.installed-${extras:-base}"
    local digest
    digest="$(cat pyproject.toml | sha256sum | cut -c1-16)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}" >&2
        echo "$digest" > "$stamp"
    fi
}

# install_debian PACKAGE...: install Debian packages when missing and we may (root or passwordless sudo).
install_debian() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    echo "installing Debian packages: ${missing[*]}" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
