#!/usr/bin/env bash
# System packages the Python dependencies build against (mysqlclient, of the `mysql` extra that `make install`
# installs with every other extra, needs the MariaDB/MySQL client headers, pkg-config and a compiler), and Debian's Chromium for the browser test (tests/e2e/test_trigger_form_browser.py;
# Playwright drives /usr/bin/chromium and never downloads a browser). Installs them with apt when missing;
# does nothing when present.
set -euo pipefail
missing=()
pkg-config --exists mariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null || missing+=(libmariadb-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v gcc >/dev/null || missing+=(gcc)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "installing system packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
