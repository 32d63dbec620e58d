#!/usr/bin/env bash
# Install the system packages the tests and benchmarks use: the third-party STIR/SHAKEN peers
# (secsipidx/libsecsipid, Kamailio with secsipid, sipp), wrk, tcpdump and chromium, from Debian's registry.
# Idempotent: does nothing when everything is already there. Needs root (or sudo).
set -euo pipefail
need=()
command -v secsipidx >/dev/null || need+=(secsipidx)
[ -e /usr/lib/x86_64-linux-gnu/libsecsipid.so.1 ] || ls /usr/lib/*/libsecsipid.so.1 >/dev/null 2>&1 || need+=(libsecsipid1)
command -v kamailio >/dev/null || need+=(kamailio)
ls /usr/lib/*/kamailio/modules/secsipid.so >/dev/null 2>&1 || need+=(kamailio-secsipid-modules)
command -v sipp >/dev/null || need+=(sip-tester)
command -v wrk >/dev/null || need+=(wrk)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v ss >/dev/null || need+=(iproute2)
command -v tcpdump >/dev/null || need+=(tcpdump)  # audit tests capture sipp calls on lo
command -v chromium >/dev/null || need+=(chromium)  # the web inspector test renders the page headless
command -v systemd-analyze >/dev/null || need+=(systemd)  # verifies packaging/stirshaken.service
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's kamailio package ships a unit; keep the packaged daemon off where systemd runs.
  if pidof systemd >/dev/null 2>&1; then $SUDO systemctl disable --now kamailio 2>/dev/null || true; fi
fi
echo "peers: secsipidx $(command -v secsipidx), kamailio $(command -v kamailio), sipp $(command -v sipp), wrk $(command -v wrk)"
