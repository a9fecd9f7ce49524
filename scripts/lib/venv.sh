# Sourced by scripts/*: create or update .venv with the project installed.
# usage: ensure_venv [EXTRAS]   (EXTRAS such as "test"; empty for a plain install)
# Re-installs only when pyproject.toml or the extras changed, so reruns are fast.

ensure_venv() {
    local extras="${1:-}"
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    local venv="$root/.venv"
    local python="${ARTKEEP_PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "artkeep needs Python 3.11 or newer as '$python' (set ARTKEEP_PYTHON to choose another)" >&2
        return 1
    fi
    if [ ! -x "$venv/bin/python" ]; then
        echo "creating $venv" >&2
        "$python" -m venv "$venv"
    fi
    local spec="$root"
    [ -n "$extras" ] && spec="$root[$extras]"
    local stamp="$venv/.artkeep-installed"
    local want
    want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1) $extras"
    if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
        echo "installing artkeep${extras:+ with [$extras]} into $venv" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
        echo "$want" >"$stamp"
    fi
}
