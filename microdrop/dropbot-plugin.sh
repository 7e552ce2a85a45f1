#!/bin/sh
# MicroDrop 3's launcher (yac) runs this folder's package.json `main` in this folder, after
# `source activate ./yac_environment`. Starts the dropbot-plugin binary on MicroDrop's broker.
#
# The binary is looked up in this order:
#   $DROPBOT_PLUGIN_BIN
#   ./bin/dropbot-plugin                  (cargo install --path <source> --root <this folder>)
#   ./yac_environment/bin/dropbot-plugin  (cargo install ... --root yac_environment)
#   dropbot-plugin on PATH
# $DROPBOT_PLUGIN_BROKER (default 127.0.0.1:1884, MicroDrop's broker) and $DROPBOT_PLUGIN_ARGS
# (more `run` options, e.g. `--port uuid:...` or `--simulate`) adjust the command.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${DROPBOT_PLUGIN_BIN:-}
for candidate in "$here/bin/dropbot-plugin" "$here/yac_environment/bin/dropbot-plugin"; do
    if [ -z "$bin" ] && [ -x "$candidate" ]; then
        bin=$candidate
    fi
done
if [ -z "$bin" ]; then
    bin=$(command -v dropbot-plugin || true)
fi
if [ -z "$bin" ]; then
    echo "dropbot-plugin: binary not found; install it with" \
        "\`cargo install --path <dropbot-plugin source> --root $here\`" \
        "or set DROPBOT_PLUGIN_BIN" >&2
    exit 1
fi
# exec: the launcher's process id is the plugin's, so stopping it stops the plugin.
# shellcheck disable=SC2086
exec "$bin" run --broker "${DROPBOT_PLUGIN_BROKER:-127.0.0.1:1884}" ${DROPBOT_PLUGIN_ARGS:-} "$@"
