#!/bin/sh
# The system packages the tests need that pip cannot provide: Debian's Chromium and its driver, for
# the dashboard's browser test (tests/integration/test_dashboard.py drives /usr/bin/chromium
# through /usr/bin/chromedriver). Installs them when it can (root with apt-get); otherwise stops
# with the exact command to run, before any test runs.
set -eu

PACKAGES="chromium chromium-driver"
INSTALL="apt-get update -qq && apt-get install -y -qq $PACKAGES"

present() {
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]
}

present && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing $PACKAGES (the dashboard's browser test): $INSTALL"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq $PACKAGES >/dev/null
  if present; then exit 0; fi
  echo "apt-get installed $PACKAGES but /usr/bin/chromium or /usr/bin/chromedriver is missing" >&2
  exit 1
fi

{
  echo "The tests need Chromium and its driver (/usr/bin/chromium, /usr/bin/chromedriver)."
  if command -v apt-get >/dev/null 2>&1; then
    echo "Install them as root, then run the tests again:"
  else
    echo "This machine has no apt-get. On Debian, install them as root:"
  fi
  echo "  $INSTALL"
  echo "(with sudo: sudo sh -c '$INSTALL')"
} >&2
exit 1
