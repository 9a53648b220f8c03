// Reload without a restart (issue 18, item 3): `tern serve` as a child
// process, SIGHUP after the config or certificate changed, and the
// certificate watch that picks up an ACME renewal (certbot's symlink swap)
// by itself. Established sessions must survive every one of them.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type tls from 'node:tls';
import { parse, stringify } from 'yaml';
import { RawClient, spawnServer, writeConfig } from '../helpers/server.ts';
import { makeSelfSigned } from '../../src/server/tls.ts';

let dir: string;
let file: string;
let child: ChildProcess;
let log: string[];
let smtpPort: number;

/** certbot's layout: live/ holds symlinks into archive/, and a renewal swaps them by rename. */
let live: { cert: string; key: string };
let archive: string;
let generation = 0;

interface Pair {
  cert: string;
  key: string;
  fingerprint: string;
}

async function newPair(): Promise<Pair> {
  const { cert, key } = await makeSelfSigned('mx.tern.test');
  return { cert, key, fingerprint: new X509Certificate(cert).fingerprint256 };
}

/** What certbot does on renewal: new files in archive/, then each live/ symlink replaced by a rename. */
function renewLikeCertbot(pair: Pair): void {
  generation++;
  for (const kind of ['cert', 'key'] as const) {
    const target = path.join(archive, `${kind}${generation}.pem`);
    fs.writeFileSync(target, pair[kind], { mode: 0o600 });
    const tmp = `${live[kind]}.tmp`;
    fs.symlinkSync(path.relative(path.dirname(live[kind]), target), tmp);
    fs.renameSync(tmp, live[kind]);
  }
}

function editConfig(change: (c: Record<string, unknown>) => void): void {
  const config = parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  change(config);
  fs.writeFileSync(file, stringify(config));
}

/** Log records (JSON lines) whose msg is `msg`, from line `from` on. */
function records(msg: string, from = 0): Record<string, unknown>[] {
  return log.slice(from).flatMap((l) => {
    try {
      const r = JSON.parse(l) as Record<string, unknown>;
      return r.msg === msg ? [r] : [];
    } catch {
      return [];
    }
  });
}

async function waitUntil<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; log:\n${log.slice(-10).join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** SIGHUP, and wait for the reload's outcome in the log ('reloaded' or 'reload failed'). */
async function sighup(): Promise<Record<string, unknown>> {
  const from = log.length;
  child.kill('SIGHUP');
  return waitUntil('the reload to finish', () => [...records('reloaded', from), ...records('reload failed', from)][0]);
}

async function session(): Promise<RawClient> {
  const c = await RawClient.connect(smtpPort);
  assert.match(await c.reply(), /^220 mx\.tern\.test /);
  assert.match(await c.cmd('EHLO client.test'), /^250-/);
  return c;
}

/** A fresh STARTTLS handshake: the fingerprint of the certificate the server presents. */
async function presentedCert(): Promise<string> {
  const c = await session();
  try {
    assert.match(await c.cmd('STARTTLS'), /^220 /);
    await c.starttls();
    return (c.socket as tls.TLSSocket).getPeerCertificate().fingerprint256;
  } finally {
    c.close();
  }
}

/** The session still speaks: a whole transaction to a local mailbox. */
async function stillWorks(c: RawClient, label: string): Promise<void> {
  assert.match(await c.cmd('EHLO client.test'), /^250-/, label);
  assert.match(await c.cmd('MAIL FROM:<someone@remote.test>'), /^250 /, label);
  assert.match(await c.cmd('RCPT TO:<alice@tern.test>'), /^250 /, label);
  assert.match(await c.cmd('DATA'), /^354 /, label);
  assert.match(await c.cmd('Subject: hi\r\n\r\nstill here\r\n.'), /^250 /, label);
}

let first: Pair;

before(async () => {
  first = await newPair();
  ({ dir, file } = writeConfig());
  archive = path.join(dir, 'letsencrypt', 'archive');
  const liveDir = path.join(dir, 'letsencrypt', 'live');
  fs.mkdirSync(archive, { recursive: true });
  fs.mkdirSync(liveDir, { recursive: true });
  live = { cert: path.join(liveDir, 'fullchain.pem'), key: path.join(liveDir, 'privkey.pem') };
  renewLikeCertbot(first);
  editConfig((c) => {
    c.tls = live;
  });
  const s = await spawnServer(file);
  ({ child, log } = s);
  smtpPort = s.ports.smtp!;
});

after(async () => {
  if (child.exitCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a renewed certificate (certbot symlink swap) is used by new handshakes within about 2 s, without a signal', async () => {
  assert.equal(await presentedCert(), first.fingerprint);
  const established = await session();
  const renewed = await newPair();
  renewLikeCertbot(renewed);
  // The watch waits CERT_WATCH_DEBOUNCE_MS (300 ms) after the last event; the rest is slack for a loaded test machine.
  await waitUntil('the renewed certificate', async () => ((await presentedCert()) === renewed.fingerprint ? true : undefined), 2500);
  assert.equal(records('tls reloaded').at(-1)?.fingerprint256, renewed.fingerprint, 'the log names the certificate now served');
  await stillWorks(established, 'session opened before the renewal');
  established.close();
});

test('SIGHUP re-reads the certificate the config names; an encrypted session goes on', async () => {
  const old = await presentedCert();
  const encrypted = await session();
  assert.match(await encrypted.cmd('STARTTLS'), /^220 /);
  await encrypted.starttls();
  assert.equal((encrypted.socket as tls.TLSSocket).getPeerCertificate().fingerprint256, old);

  // New files elsewhere (not in a watched directory): only the reload can find them.
  const other = path.join(dir, 'other-certs');
  fs.mkdirSync(other);
  const next = await newPair();
  fs.writeFileSync(path.join(other, 'cert.pem'), next.cert);
  fs.writeFileSync(path.join(other, 'key.pem'), next.key, { mode: 0o600 });
  editConfig((c) => {
    c.tls = { cert: path.join(other, 'cert.pem'), key: path.join(other, 'key.pem') };
  });
  assert.equal((await sighup()).msg, 'reloaded');
  assert.equal(await presentedCert(), next.fingerprint, 'a new STARTTLS handshake sees the new certificate');
  await stillWorks(encrypted, 'session encrypted with the old certificate');
  encrypted.close();
});

test('SIGHUP with a new mailbox: RCPT to it is accepted, in new and established sessions', async () => {
  const established = await session();
  assert.match(await established.cmd('MAIL FROM:<someone@remote.test>'), /^250 /);
  assert.match(await established.cmd('RCPT TO:<dave@tern.test>'), /^550 /, 'nobody called dave yet');
  assert.match(await established.cmd('RSET'), /^250 /);
  editConfig((c) => {
    const domains = c.domains as { name: string; mailboxes: string[] }[];
    domains.find((d) => d.name === 'tern.test')!.mailboxes.push('dave');
  });
  const done = await sighup();
  assert.equal(done.msg, 'reloaded');
  assert.deepEqual(done.changed, ['domains']);
  const fresh = await session();
  assert.match(await fresh.cmd('MAIL FROM:<someone@remote.test>'), /^250 /);
  assert.match(await fresh.cmd('RCPT TO:<dave@tern.test>'), /^250 /);
  fresh.close();
  assert.match(await established.cmd('MAIL FROM:<someone@remote.test>'), /^250 /);
  assert.match(await established.cmd('RCPT TO:<dave@tern.test>'), /^250 /, 'the directory is shared: established sessions see it too');
  established.close();
});

test('SIGHUP with a broken config: the server lives, logs reload failed with the problem, the old config stays', async () => {
  const good = fs.readFileSync(file, 'utf8');
  const before = await presentedCert();
  editConfig((c) => {
    // Dave leaves and a key nobody knows appears: the whole file is refused, dave stays.
    const domains = c.domains as { name: string; mailboxes: string[] }[];
    domains.find((d) => d.name === 'tern.test')!.mailboxes = ['alice'];
    c.bogusKey = 1;
  });
  const done = await sighup();
  assert.equal(done.msg, 'reload failed');
  assert.match(String(done.error), /bogusKey/, 'names the problem');
  assert.equal(child.exitCode, null, 'still running');
  const c = await session();
  assert.match(await c.cmd('MAIL FROM:<someone@remote.test>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<dave@tern.test>'), /^250 /, 'the old domains are still in force');
  c.close();
  assert.equal(await presentedCert(), before, 'and the old certificate');

  // A certificate that does not match its key fails the same way.
  const mismatched = await newPair();
  const other = await newPair();
  const bad = path.join(dir, 'bad-certs');
  fs.mkdirSync(bad);
  fs.writeFileSync(path.join(bad, 'cert.pem'), mismatched.cert);
  fs.writeFileSync(path.join(bad, 'key.pem'), other.key, { mode: 0o600 });
  fs.writeFileSync(file, good);
  editConfig((c) => {
    c.tls = { cert: path.join(bad, 'cert.pem'), key: path.join(bad, 'key.pem') };
  });
  assert.equal((await sighup()).msg, 'reload failed');
  assert.equal(await presentedCert(), before);
  fs.writeFileSync(file, good);
});

test('SIGHUP that changes a listener: the rest applies, the log says a restart is needed', async () => {
  const from = log.length;
  editConfig((c) => {
    const listeners = c.listeners as { role: string; port: number }[];
    listeners.find((l) => l.role === 'smtp')!.port = 1; // never bound: listeners change only on restart
    c.trustedNetworks = ['192.0.2.0/24'];
  });
  const done = await sighup();
  assert.equal(done.msg, 'reloaded');
  const warning = await waitUntil('the restart warning', () => records('reload: restart needed', from)[0]);
  assert.deepEqual(warning.keys, ['listeners']);
  const c = await session(); // still on the port it started with
  assert.match(await c.cmd('NOOP'), /^250 /);
  c.close();
});
