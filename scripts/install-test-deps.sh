#!/usr/bin/env bash
# Installs the real programs the end-to-end tests drive: swaks and python3
# (interop clients), postfix (smtp-source for load, and a real peer MTA) and
# python3-dkim (dkimpy, the independent DKIM verifier of the signing tests and
# dkimsign, the independent signer of the inbound tests) and python3-spf (its
# rfc7208-tests.yml.gz is the OpenSPF RFC 7208 suite the SPF tests run) and
# chromium (the real browser the dashboard's tests in test/browser/ drive
# through puppeteer-core, which brings no browser of its own) and
# dovecot-lmtpd with dovecot-core (a real LMTP server: the LMTP delivery test
# starts a private instance on its own port, test/e2e/lmtp.test.ts) and
# unbound, nsd and ldnsutils (DANE: a zone signed at test time with
# ldns-keygen/ldns-signzone, served by a private nsd, validated by a private
# unbound, test/helpers/dnssec.ts) and testssl.sh (the audit of our TLS offer)
# and postgresql (the shared store of several nodes: the tests run a private
# cluster with initdb/pg_ctl on a loopback port, test/helpers/postgres.ts)
# and curl (the README's HTTP API examples are run as printed,
# test/e2e/readme-api.test.ts).
# swaks only Recommends Net::SSLeay, which --no-install-recommends skips, but
# its -tls and --tls-on-connect need it: libnet-ssleay-perl is named too.
# Idempotent: does nothing, and never touches apt, when all are present.
# Without them the tests that need them skip, naming the package
# (test/helpers/tools.ts); under CI (.ci/run) a missing one fails instead.
set -euo pipefail

have_all() {
  command -v swaks >/dev/null 2>&1 &&
    command -v python3 >/dev/null 2>&1 &&
    perl -MNet::SSLeay -e 1 >/dev/null 2>&1 &&
    [ -x /usr/sbin/smtp-source ] &&
    command -v dkimverify >/dev/null 2>&1 &&
    [ -f /usr/share/doc/python3-spf/rfc7208-tests.yml.gz ] &&
    [ -x /usr/bin/chromium ] &&
    [ -x /usr/sbin/dovecot ] &&
    [ -x /usr/lib/dovecot/lmtp ] &&
    [ -x /usr/sbin/unbound ] &&
    [ -x /usr/sbin/nsd ] &&
    command -v ldns-signzone >/dev/null 2>&1 &&
    command -v testssl >/dev/null 2>&1 &&
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 &&
    command -v curl >/dev/null 2>&1
}

if have_all; then
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
  else
    echo "install-test-deps: not root and no sudo; cannot install swaks/python3/postfix/python3-dkim/python3-spf/chromium/dovecot" >&2
    exit 1
  fi
fi

# Postfix must install without asking questions and without a mail config:
# the tests start it themselves, on their own ports, when they need a peer.
echo "postfix postfix/main_mailer_type select No configuration" | "${SUDO[@]}" debconf-set-selections

# Keep the packages from starting their services (Postfix binding :25, Dovecot
# its IMAP/LMTP listeners) during install,
# unless the machine already has a policy-rc.d of its own.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  added_policy=1
fi
cleanup() {
  if [ "$added_policy" = 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT

"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  swaks libnet-ssleay-perl python3 postfix python3-dkim python3-spf chromium \
  dovecot-core dovecot-lmtpd unbound nsd ldnsutils testssl.sh postgresql curl

# If something started postfix anyway, stop it so that nothing holds port 25.
if pgrep -x master >/dev/null 2>&1 || [ -e /var/spool/postfix/pid/master.pid ]; then
  "${SUDO[@]}" postfix stop >/dev/null 2>&1 || true
fi
if command -v service >/dev/null 2>&1; then
  "${SUDO[@]}" service postfix stop >/dev/null 2>&1 || true
  "${SUDO[@]}" service dovecot stop >/dev/null 2>&1 || true
  "${SUDO[@]}" service unbound stop >/dev/null 2>&1 || true
  "${SUDO[@]}" service nsd stop >/dev/null 2>&1 || true
  "${SUDO[@]}" service postgresql stop >/dev/null 2>&1 || true
fi
# The same for the system's Dovecot (the tests run their own, with their own config).
if [ -e /run/dovecot/master.pid ]; then
  "${SUDO[@]}" doveadm stop >/dev/null 2>&1 || true
fi

if ! have_all; then
  echo "install-test-deps: still missing swaks, Net::SSLeay, python3, /usr/sbin/smtp-source, dkimverify, the python3-spf test suite, chromium or dovecot (with its lmtp) after install" >&2
  exit 1
fi
