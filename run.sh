#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine, as root:
#   ./run.sh demo    install what is needed, then run the local mesh demo on the lab
#   ./run.sh test    install what is needed, then run the whole test suite
# Both are idempotent: packages and the virtualenv are only installed when missing.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(python3-venv python3-dev gcc iproute2 nftables conntrack iperf3
              wireguard-go wireguard-tools procps systemd openssh-server nix-bin
              mptcpize miniupnpd miniupnpd-nftables nebula
              debootstrap systemd-container)

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "run.sh: must run as root (network namespaces, TUN devices, apt)" >&2
        exit 2
    fi
}

install_packages() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "run.sh: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || true
        # Packages must not start their daemons (sshd) on this machine: the lab
        # starts its own, inside namespaces. policy-rc.d 101 = "action forbidden".
        local policy=/usr/sbin/policy-rc.d made_policy=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
        fi
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || { [ $made_policy = 1 ] && rm -f "$policy"
                 echo "run.sh: apt-get install ${missing[*]} failed" >&2; exit 1; }
        if [ $made_policy = 1 ]; then rm -f "$policy"; fi
    fi
}

install_venv() {
    # Debian's own Python, so the venv works on a fresh machine without pyenv.
    if [ ! -x .venv/bin/python ]; then
        /usr/bin/python3 -m venv .venv
    fi
    local stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
    if [ ! -e "$stamp" ]; then
        echo "run.sh: installing whalescale and its Python dependencies into .venv/" >&2
        if ! { .venv/bin/pip install --upgrade pip && .venv/bin/pip install -e '.[test,plots]'; } \
                > .venv/install.log 2>&1; then
            tail -n 30 .venv/install.log >&2
            echo "run.sh: pip install failed; the whole log is in .venv/install.log" >&2
            exit 1
        fi
        rm -f .venv/.installed-* && touch "$stamp"
    fi
}

cmd=${1:-}
case "$cmd" in
    demo)
        need_root; install_packages; install_venv
        shift; exec .venv/bin/whalescale lab demo "$@" ;;
    test)
        need_root; install_packages; install_venv
        shift
        .venv/bin/ruff check whalescale tests
        exec .venv/bin/python -m pytest -q "$@" ;;
    install)
        need_root; install_packages; install_venv ;;
    *)
        echo "usage: $0 demo|test|install [args...]" >&2; exit 2 ;;
esac
