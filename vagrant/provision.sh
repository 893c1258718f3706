#!/usr/bin/env bash
# Installs tcpfile on a Debian 12 machine from the static binaries that
# ci/build-static.sh leaves in dist/<arch>/: no compiler on the machine.
#
#   provision.sh server|client [SOURCE]
#
# SOURCE holds dist/<arch>/ (the binaries and their SHA256SUMS) and
# vagrant/systemd/; it defaults to the checkout this script belongs to. The
# Vagrantfile uploads just those and passes their directory.
#
# Both roles get tcpdump and tcpfile-client. The server role also gets the
# three server binaries, a tcpfile system user, sample files in /srv/tcpfile,
# one env file per model in /etc/tcpfile and the tcpfile-server@.service
# template; where systemd runs, it (re)starts the three models and waits until
# each answers the protocol.
#
# Running it again replaces the binaries and the unit and restarts the
# servers; the user, the sample files and the env files, which may have been
# edited, are kept.
set -euo pipefail

MODELS=(iterative parallel preforked evented)
SERVED_DIR=/srv/tcpfile
ENV_DIR=/etc/tcpfile
UNIT=tcpfile-server@.service

die() {
    echo "provision: $*" >&2
    exit 1
}

role=${1:-}
case "$role" in
    server | client) ;;
    *) die "usage: provision.sh server|client [SOURCE]" ;;
esac
source_dir=${2:-$(cd "$(dirname "$0")/.." && pwd)}
[ "$(id -u)" -eq 0 ] || die "must run as root"

arch=$(dpkg --print-architecture)
dist="$source_dir/dist/$arch"
[ -f "$dist/SHA256SUMS" ] || die "$dist/SHA256SUMS is missing: run ci/build-static.sh on the host first"
# A binary cut short on its way here, or left over from another build, must
# not be installed.
(cd "$dist" && sha256sum --check --quiet --strict SHA256SUMS) ||
    die "the binaries in $dist do not match their SHA256SUMS"

if ! command -v tcpdump >/dev/null 2>&1; then
    echo "provision: installing tcpdump"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends tcpdump >/dev/null
fi

# Through a temporary name and a rename, so that a running server's binary is
# replaced, not overwritten in place, and no half-copied file is ever run.
install_file() {
    local mode=$1 source=$2 target=$3
    install -D -m "$mode" "$source" "$target.new"
    mv -f "$target.new" "$target"
}

binaries=(tcpfile-client)
if [ "$role" = server ]; then
    binaries+=("${MODELS[@]/#/tcpfile-server-}")
fi
for binary in "${binaries[@]}"; do
    install_file 0755 "$dist/$binary" "/usr/local/bin/$binary"
done
echo "provision: installed ${binaries[*]} for $arch in /usr/local/bin"

if [ "$role" = client ]; then
    exit 0
fi

if ! getent passwd tcpfile >/dev/null; then
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin tcpfile
fi

# Root owns the files and the server only reads them.
make_sample() {
    local name=$1 bytes=$2
    local path="$SERVED_DIR/$name"
    [ -e "$path" ] && return 0
    head -c "$bytes" /dev/urandom > "$path.new"
    chmod 0644 "$path.new"
    mv "$path.new" "$path"
}
install -d -m 0755 "$SERVED_DIR"
if [ ! -e "$SERVED_DIR/hello.txt" ]; then
    printf 'Hello from the tcpfile server.\n' > "$SERVED_DIR/hello.txt.new"
    chmod 0644 "$SERVED_DIR/hello.txt.new"
    mv "$SERVED_DIR/hello.txt.new" "$SERVED_DIR/hello.txt"
fi
make_sample random-1M.bin $((1024 * 1024))
make_sample random-16M.bin $((16 * 1024 * 1024))

# model port processes: the process count is MAX_CHILDREN for parallel,
# CHILDREN for preforked, WORKERS for evented, and nothing for iterative.
write_env() {
    local model=$1 port=$2 processes=$3
    local path="$ENV_DIR/$model.env"
    [ -e "$path" ] && return 0
    cat > "$path.new" <<EOF
# Read by tcpfile-server@$model.service. Provisioning writes this file only
# when it is missing, so edits here stay; apply them with
#   systemctl restart tcpfile-server@$model
TCPFILE_ADDR=0.0.0.0
TCPFILE_PORT=$port
# Outside /home, /root and /run/user, which the unit's sandbox hides.
TCPFILE_DIR=$SERVED_DIR
# MAX_CHILDREN for parallel, CHILDREN for preforked, WORKERS for evented,
# empty for iterative.
TCPFILE_PROCESSES=$processes
# More options, such as -v to log every header in hex or --timeout SECS. Keep
# --grace under the unit's TimeoutStopSec (15 s).
TCPFILE_OPTIONS=
EOF
    chmod 0644 "$path.new"
    mv "$path.new" "$path"
}
install -d -m 0755 "$ENV_DIR"
write_env iterative 9001 ""
write_env parallel 9002 16
write_env preforked 9003 4
write_env evented 9004 2

install_file 0644 "$source_dir/vagrant/systemd/$UNIT" "/etc/systemd/system/$UNIT"
echo "provision: installed /etc/systemd/system/$UNIT and the env files in $ENV_DIR"

if [ ! -d /run/systemd/system ]; then
    echo "provision: systemd is not running here, so no server was started"
    exit 0
fi

env_value() {
    sed -n "s/^$2=//p" "$ENV_DIR/$1.env" | tail -n 1
}

systemctl daemon-reload
for model in "${MODELS[@]}"; do
    systemctl enable --quiet "tcpfile-server@$model.service"
    systemctl restart "tcpfile-server@$model.service"
done
for model in "${MODELS[@]}"; do
    addr=$(env_value "$model" TCPFILE_ADDR)
    port=$(env_value "$model" TCPFILE_PORT)
    case "$addr" in
        0.0.0.0) addr=127.0.0.1 ;;
        ::) addr=::1 ;;
    esac
    # Any well-formed answer, "file not found" included, shows that the server
    # is up and speaks the protocol.
    if ! tcpfile-client --probe -q --wait 10 "$addr" "$port" provisioning-probe 0; then
        journalctl --no-pager --lines=20 --unit "tcpfile-server@$model.service" >&2 || true
        die "tcpfile-server@$model does not answer on $addr port $port"
    fi
    echo "provision: tcpfile-server@$model answers on $addr port $port"
done
