#!/usr/bin/env bash
# Installs the system packages Sonde's build, tests and demo need, on Debian 12, when missing.
# Idempotent and quiet when everything is there; run as root (CI is) or with sudo available.
set -euo pipefail

packages=(libcurl4-openssl-dev zlib1g-dev libbrotli-dev libzstd-dev zstd brotli libyaml-dev libssl-dev libsqlite3-dev pkg-config python3 curl iproute2 procps dpkg-dev binutils passwd prometheus libfaketime libpcre2-dev openssl socat nginx-light dnsmasq-base python3-venv chromium prometheus-alertmanager postgresql haproxy)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# httpbin and aiosmtpd (PyPI) for the probe-format tests (HTTP, and SMTP with STARTTLS for tcp
# dialogues), in a venv of their own (SONDE_HTTPBIN_VENV overrides).
venv="${SONDE_HTTPBIN_VENV:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache/sonde/httpbin-venv}"
if [ ! -x "$venv/bin/gunicorn" ] || ! "$venv/bin/python" -c "import httpbin, aiosmtpd" >/dev/null 2>&1; then
  echo "install-deps: installing httpbin, gunicorn and aiosmtpd into $venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q httpbin gunicorn aiosmtpd
fi

if ! command -v swift >/dev/null 2>&1; then
  if [ -x /opt/swift/usr/bin/swift ]; then
    echo "install-deps: swift is at /opt/swift/usr/bin; add it to PATH" >&2
  else
    echo "install-deps: no Swift toolchain found; install Swift 6.1 or newer from swift.org" >&2
    exit 1
  fi
fi
