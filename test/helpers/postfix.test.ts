// Self-test of the Postfix test peer: a real Postfix receives a message over
// STARTTLS from swaks, delivers it to its Maildir, and leaves nothing behind.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { generate } from 'selfsigned';
import { postfixAvailable, postfixProcesses, startPostfix } from './postfix.ts';
import { requirePerlModule, requirePostfix, requireTool } from './tools.ts';

function swaks(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('swaks', args, { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, out: stdout + stderr + (err && typeof err.code !== 'number' ? String(err) : '') });
    });
  });
}

function refused(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: address, port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(false);
    });
    sock.once('error', () => resolve(true));
  });
}

test('a real Postfix receives over STARTTLS, delivers to its Maildir and stops cleanly', { skip: requirePostfix(postfixAvailable) || requireTool('swaks', 'swaks') || requirePerlModule('Net::SSLeay', 'libnet-ssleay-perl') }, async (t) => {
  const pems = await generate([{ name: 'commonName', value: 'mx.remote.test' }], { keySize: 2048, algorithm: 'sha256' });
  const peer = await startPostfix({ address: '127.0.0.2', domain: 'remote.test', tls: { cert: pems.cert, key: pems.private } });
  t.after(() => peer.stop());
  assert.equal(peer.address, '127.0.0.2');
  assert.equal(peer.domain, 'remote.test');
  assert.ok(peer.port > 0);

  const sent = await swaks(['--server', '127.0.0.2', '--port', String(peer.port), '--to', 'bob@remote.test', '--from', 'a@x.test', '-tls']);
  assert.equal(sent.code, 0, sent.out);
  assert.match(sent.out, /TLS started with cipher/);

  const [message, ...more] = await peer.waitForMessages('bob');
  assert.equal(more.length, 0);
  assert.match(message!, /^Delivered-To: bob@remote\.test$/m);
  assert.match(message!, /^Return-Path: <a@x\.test>$/m);
  assert.match(message!, /^From: a@x\.test$/m);
  assert.match(message!, /\(using TLSv1\.[23] with cipher /);
  assert.match(message!, /This is a test mailing/);
  assert.deepEqual(peer.messages('BOB'), [message]);
  assert.deepEqual(peer.messages('alice'), []);

  const log = peer.log();
  assert.match(log, /postfix\/smtpd\[\d+\]: Anonymous TLS connection established from unknown\[127\.0\.0\.1\]: TLSv1\.[23]/);
  assert.match(log, /status=sent \(delivered to maildir\)/);
  // The readiness probe's session is not in log(): one "connect from" per client connection.
  assert.equal(log.match(/: connect from /g)?.length, 1, log);

  // It relays nowhere.
  const relay = await swaks(['--server', '127.0.0.2', '--port', String(peer.port), '--to', 'carol@elsewhere.test', '--from', 'a@x.test']);
  assert.notEqual(relay.code, 0);
  assert.match(relay.out, /554 5\.7\.1 .*Relay access denied/);
  assert.equal(peer.log().match(/: connect from /g)?.length, 2);

  assert.ok(postfixProcesses(peer).length >= 3, 'master and its daemons run');
  await peer.stop();
  assert.deepEqual(postfixProcesses(peer), []);
  assert.equal(fs.existsSync(peer.dir), false);
  assert.ok(await refused('127.0.0.2', peer.port));
  await peer.stop(); // idempotent
});
