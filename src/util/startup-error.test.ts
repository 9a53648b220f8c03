// The one-line start-up messages for failures a root test run cannot cause
// for real (a port below 1024 without the capability, a missing address).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeStartupError, listenError } from './startup-error.ts';

const errno = (code: string, extra: Record<string, unknown> = {}): NodeJS.ErrnoException => Object.assign(new Error(`listen ${code}`), { code, ...extra });

test('port 25 without privilege: the listener and the capability to grant', () => {
  const e = listenError({ role: 'smtp', address: '0.0.0.0', port: 25 }, 0, errno('EACCES'));
  assert.equal(describeStartupError(e), 'listener smtp 0.0.0.0:25 (listeners[0]): permission denied — ports below 1024 need root: run as root, or grant CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep on the node binary, or systemd AmbientCapabilities=CAP_NET_BIND_SERVICE)');
});

test('an address this machine does not have, and an IPv6 listener in use', () => {
  assert.match(describeStartupError(listenError({ role: 'submission', address: '192.0.2.7', port: 587 }, 1, errno('EADDRNOTAVAIL'))),
    /^listener submission 192\.0\.2\.7:587 \(listeners\[1\]\): this machine has no address 192\.0\.2\.7 — fix listeners\[1\]\.address/);
  assert.match(describeStartupError(listenError({ role: 'smtp', address: '::', port: 25 }, 2, errno('EADDRINUSE'))),
    /^listener smtp \[::\]:25 \(listeners\[2\]\): address already in use — another server \(Postfix\? another Tern\?\) holds it/);
});

test('file system errors name the path; anything else is one line without a stack', () => {
  const uid = process.getuid?.() ?? '?';
  assert.equal(describeStartupError(errno('EACCES', { syscall: 'mkdir', path: '/var/lib/tern/spool' })),
    `cannot create /var/lib/tern/spool: permission denied — give the user running Tern (uid ${uid}) write access (chown or chmod), or choose another dataDir`);
  const odd = new Error('first\n  second');
  assert.equal(describeStartupError(odd), 'could not start: first; second');
});
