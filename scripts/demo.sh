#!/usr/bin/env bash
# The end-to-end demo. Grows with the system: see README.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release
"$bin/sonde-agent" --help || true
