// DKIM: key generation, streaming signatures checked by two verifiers that
// share no code with each other (mailauth over our resolver and the test DNS
// server; Debian's dkimpy over dnspython and the same server), and the CLI.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { DkimKeys, DkimSigner, generateKey, RECHECK_MS, SIGNED_HEADERS, type DkimKey } from './dkim.ts';
import { runDkim } from '../cli/dkim.ts';
import { loadConfig } from '../config/load.ts';
import { startDnsServer, type DnsServer } from '../../test/helpers/dns-server.ts';
import { ROOT, writeConfig } from '../../test/helpers/server.ts';
import { dkimpyDkim, dkimpyMissing, mailauthDkim } from '../../test/helpers/dkim-verify.ts';


let dataDir: string;
let dns: DnsServer;
let keys: DkimKey[];

const made: string[] = [];
const tmp = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-dkim-'));
  made.push(dir);
  return dir;
};

before(async () => {
  dataDir = tmp();
  const rsa = await generateKey(dataDir, 'example.test', { selector: 'sel', algorithm: 'rsa' });
  const ed = await generateKey(dataDir, 'example.test', { algorithm: 'ed25519' });
  dns = await startDnsServer({
    [rsa.dnsName]: { TXT: [rsa.dnsRecord] },
    [ed.dnsName]: { TXT: [ed.dnsRecord] },
  });
  keys = new DkimKeys(dataDir).forDomain('example.test');
});
after(async () => {
  await dns.close();
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

test('keygen: rsa and ed25519 keys stored 0600, with the right TXT records', async () => {
  const dir = tmp();
  const rsa = await generateKey(dir, 'Example.TEST', { algorithm: 'rsa' });
  const ed = await generateKey(dir, 'example.test', { algorithm: 'ed25519' });
  assert.notEqual(rsa.key.selector, ed.key.selector, 'default selectors of different algorithms differ');
  for (const r of [rsa, ed]) {
    for (const ext of ['key', 'json']) {
      const st = fs.statSync(path.join(dir, 'dkim', 'example.test', `${r.key.selector}.${ext}`));
      assert.equal(st.mode & 0o777, 0o600, ext);
    }
    assert.equal(r.dnsName, `${r.key.selector}._domainkey.example.test`);
    assert.ok(r.zoneLine.startsWith(`${r.dnsName}. IN TXT "v=DKIM1; `), r.zoneLine);
    // The zone line's character-strings (≤255 octets each) put together are the record.
    const strings = [...r.zoneLine.matchAll(/"([^"]*)"/g)].map((m) => m[1]!);
    assert.ok(strings.every((s) => s.length <= 255));
    assert.equal(strings.join(''), r.dnsRecord);
  }
  assert.match(rsa.dnsRecord, /^v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]+$/);
  const rsaPub = crypto.createPublicKey({ key: Buffer.from(rsa.dnsRecord.split('p=')[1]!, 'base64'), format: 'der', type: 'spki' });
  assert.equal(rsaPub.asymmetricKeyDetails?.modulusLength, 2048);
  assert.equal(rsa.key.algorithm, 'rsa-sha256');
  // RFC 8463 §4.2: the raw 32-byte key, not a SubjectPublicKeyInfo.
  assert.match(ed.dnsRecord, /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/=]+$/);
  assert.equal(Buffer.from(ed.dnsRecord.split('p=')[1]!, 'base64').length, 32);
  assert.equal(ed.key.algorithm, 'ed25519-sha256');
  await assert.rejects(generateKey(dir, 'example.test', { selector: rsa.key.selector }), /already has a key/);
  await assert.rejects(generateKey(dir, '../etc', {}), /not a domain/);
});

const MESSAGE = Buffer.from(
  'Received: from client (client [192.0.2.1]) by mx.example.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n' +
    'From: Alice Example <alice@example.test>\r\n' +
    'To: bob@remote.test,\r\n\tcarol@remote.test\r\n' +
    'Subject:   Folded   and\r\n  spaced   subject\r\n' +
    'Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n' +
    'Message-ID: <1@example.test>\r\n' +
    'MIME-Version: 1.0\r\n' +
    'Content-Type: text/plain; charset=utf-8\r\n' +
    'X-Not-Signed: whatever\r\n' +
    '\r\n' +
    'Hello Bob,  \r\n' +
    'a line with trailing tabs\t\t\r\n' +
    'x'.repeat(70_000) + '\r\n' +
    'Grüße\r\n' +
    '\r\n\r\n\r\n',
  'utf8',
);

/** Feed the message in odd sizes (1, 2, 3, … octets, then bigger), as a socket would. */
async function sign(message: Buffer, k: DkimKey[] = keys): Promise<Buffer> {
  const signer = new DkimSigner(k);
  for (let at = 0, n = 1; at < message.length; at += n, n = n < 64 ? n + 1 : n * 3 + 1) signer.write(message.subarray(at, at + n));
  const fields = await signer.finish();
  assert.deepEqual(signer.errors, []);
  return Buffer.concat([Buffer.from(fields, 'latin1'), message]);
}

async function mailauthResults(message: Buffer): Promise<string[]> {
  return (await mailauthDkim(message, dns.address)).map(([algo, , result]) => `${algo} ${result}`).sort();
}

async function dkimpyResults(message: Buffer): Promise<{ ok: boolean; lines: string[] }> {
  const { ok, fields } = await dkimpyDkim(message, dns.address);
  return { ok, lines: fields.map((f) => `${f[0]} ${f.at(-1)}`).sort() };
}

const BOTH_PASS = ['ed25519-sha256 pass', 'rsa-sha256 pass'];

test('signs with rsa and ed25519 at once; both verifiers pass both', { skip: dkimpyMissing() }, async () => {
  assert.deepEqual(keys.map((k) => k.algorithm).sort(), ['ed25519-sha256', 'rsa-sha256']);
  const signed = await sign(MESSAGE);
  const fields = signed.toString('latin1').split(/\r\n(?![ \t])/).filter((f) => /^DKIM-Signature:/i.test(f));
  assert.equal(fields.length, 2);
  for (const f of fields) {
    const tags = new Map(f.replace(/^DKIM-Signature:/i, '').replace(/\s+/g, '').split(';').filter(Boolean).map((t) => [t.slice(0, t.indexOf('=')), t.slice(t.indexOf('=') + 1)] as const));
    assert.equal(tags.get('c'), 'relaxed/relaxed');
    assert.equal(tags.get('d'), 'example.test');
    assert.ok(Math.abs(Number(tags.get('t')) - Date.now() / 1000) < 60, 't= is now');
    assert.ok(!tags.has('x'), 'no expiry');
    const h = tags.get('h')!.toLowerCase().split(':');
    // From over-signed: listed once more than present (RFC 6376 §8.15).
    assert.equal(h.filter((n) => n === 'from').length, 2, tags.get('h'));
    assert.ok(!h.includes('received') && !h.includes('x-not-signed'));
    assert.ok(h.every((n) => SIGNED_HEADERS.includes(n)));
  }
  assert.deepEqual(await mailauthResults(signed), BOTH_PASS);
  assert.deepEqual(await dkimpyResults(signed), { ok: true, lines: BOTH_PASS });
});

test('a tampered body, or a second From added, fails in both verifiers; an unsigned field added does not', { skip: dkimpyMissing() }, async () => {
  const signed = await sign(MESSAGE);
  const tampered = Buffer.from(signed.toString('latin1').replace('Hello Bob', 'Hello Eve'), 'latin1');
  assert.deepEqual(await mailauthResults(tampered), ['ed25519-sha256 fail', 'rsa-sha256 fail']);
  assert.deepEqual(await dkimpyResults(tampered), { ok: false, lines: ['ed25519-sha256 fail', 'rsa-sha256 fail'] });

  const secondFrom = Buffer.concat([Buffer.from('From: Mallory <m@evil.test>\r\n'), signed]);
  assert.deepEqual(await mailauthResults(secondFrom), ['ed25519-sha256 fail', 'rsa-sha256 fail']);
  assert.equal((await dkimpyResults(secondFrom)).ok, false);

  // A mailing list may add List-Id (signed when present, not over-signed when absent).
  const listed = Buffer.concat([Buffer.from('List-Id: <list.example.test>\r\nX-Other: 1\r\n'), signed]);
  assert.deepEqual(await mailauthResults(listed), BOTH_PASS);
  assert.deepEqual(await dkimpyResults(listed), { ok: true, lines: BOTH_PASS });
});

test('a message without a body, and a message without From (not signed, error reported)', async () => {
  const headerOnly = Buffer.from('From: a@example.test\r\nSubject: no body\r\n');
  assert.deepEqual(await mailauthResults(await sign(headerOnly)), BOTH_PASS);

  const signer = new DkimSigner(keys);
  signer.write(Buffer.from('Subject: who?\r\n\r\nbody\r\n'));
  assert.equal(await signer.finish(), '');
  assert.equal(signer.errors.length, 2);
});

test("mailauth's key parsing is cached: each PEM becomes one KeyObject, reused by every signature (and signatures still verify)", async () => {
  const tools = createRequire(import.meta.url)('mailauth/lib/tools.js') as { getPrivateKey: (pem: string) => crypto.KeyObject };
  const rsa = keys.find((k) => k.algorithm === 'rsa-sha256')!;
  const first = tools.getPrivateKey(rsa.privateKey);
  assert.equal(tools.getPrivateKey(rsa.privateKey), first, 'the same KeyObject for the same PEM');
  assert.notEqual(tools.getPrivateKey(keys.find((k) => k.algorithm === 'ed25519-sha256')!.privateKey), first);
  // The signer in use is the one loaded after the wrap: signing parses nothing more.
  let parses = 0;
  const real = crypto.createPrivateKey;
  (crypto as { createPrivateKey: typeof crypto.createPrivateKey }).createPrivateKey = ((k: Parameters<typeof real>[0]) => {
    parses++;
    return real(k);
  }) as typeof real;
  try {
    for (let i = 0; i < 3; i++) assert.deepEqual(await mailauthResults(await sign(Buffer.from(`From: a@example.test\r\nSubject: ${i}\r\n\r\nbody ${i}\r\n`))), BOTH_PASS);
  } finally {
    (crypto as { createPrivateKey: typeof crypto.createPrivateKey }).createPrivateKey = real;
  }
  assert.equal(parses, 0, 'no key parsed while signing three messages');
});

test('DkimKeys notices a key added later, without a new instance, at the next look (RECHECK_MS)', async () => {
  const dir = tmp();
  let now = Date.now();
  const store = new DkimKeys(dir, () => now);
  assert.deepEqual(store.forDomain('late.test'), []);
  await generateKey(dir, 'late.test', { algorithm: 'ed25519' });
  // Within RECHECK_MS the directory is not looked at: the answer is the one remembered.
  assert.deepEqual(store.forDomain('late.test'), []);
  now += RECHECK_MS;
  assert.deepEqual(store.forDomain('late.test').map((k) => k.algorithm), ['ed25519-sha256']);
  await generateKey(dir, 'late.test', { algorithm: 'rsa' });
  now += RECHECK_MS;
  assert.deepEqual(store.forDomain('LATE.test.').map((k) => k.algorithm).sort(), ['ed25519-sha256', 'rsa-sha256']);
  assert.deepEqual(store.forDomain('../late.test'), []);
  // Cached while the directory is unchanged (and no longer fresh).
  const past = new Date(Date.now() - 60_000);
  fs.utimesSync(path.join(dir, 'dkim', 'late.test'), past, past);
  now += RECHECK_MS;
  const first = store.forDomain('late.test');
  now += RECHECK_MS;
  assert.equal(store.forDomain('late.test'), first);
  // A domain whose keys are removed stops signing at the next look.
  fs.rmSync(path.join(dir, 'dkim', 'late.test'), { recursive: true });
  assert.equal(store.forDomain('late.test'), first);
  now += RECHECK_MS;
  assert.deepEqual(store.forDomain('late.test'), []);
});

test('DkimKeys: a second change within the clock tick of the first is still read (the directory stays fresh longer than a look lasts)', async () => {
  const dir = tmp();
  let now = Date.now();
  const store = new DkimKeys(dir, () => now);
  await generateKey(dir, 'tick.test', { algorithm: 'ed25519', selector: 'a' });
  const dirPath = path.join(dir, 'dkim', 'tick.test');
  const tick = new Date(Math.floor(now));
  fs.utimesSync(dirPath, tick, tick);
  assert.equal(store.forDomain('tick.test').length, 1);
  await generateKey(dir, 'tick.test', { algorithm: 'ed25519', selector: 'b' });
  fs.utimesSync(dirPath, tick, tick); // as if both renames fell in one tick of the file system's clock
  now = Math.max(now, tick.getTime()) + RECHECK_MS;
  assert.deepEqual(store.forDomain('tick.test').map((k) => k.selector), ['a', 'b']);
});

function capture(): { out: { write(s: string): void }; err: { write(s: string): void }; text: () => string } {
  let s = '';
  const w = { write: (t: string) => void (s += t) };
  return { out: w, err: w, text: () => s };
}

test('runDkim: keygen, refusal of an existing selector, list', async () => {
  const { file, dataDir: dd } = writeConfig();
  const config = loadConfig(file);
  let io = capture();
  assert.equal(await runDkim(config, ['keygen', 'cli.test', '--algo=ed25519', '--selector', 's1', '--config', file], io), 0, io.text());
  assert.match(io.text(), /^s1\._domainkey\.cli\.test\. IN TXT "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/=]{44}"$/m);
  const keyFile = path.join(dd, 'dkim', 'cli.test', 's1.key');
  const before = fs.readFileSync(keyFile, 'utf8');
  io = capture();
  assert.equal(await runDkim(config, ['keygen', 'cli.test', '--selector', 's1'], io), 1);
  assert.match(io.text(), /already has a key/);
  assert.equal(fs.readFileSync(keyFile, 'utf8'), before);
  io = capture();
  assert.equal(await runDkim(config, ['keygen', 'cli.test', '--algo', 'dsa'], io), 2);
  io = capture();
  assert.equal(await runDkim(config, ['list', '--json'], io), 0);
  const rows = JSON.parse(io.text()) as { domain: string; selector: string; algorithm: string; dnsRecord: string }[];
  assert.deepEqual(rows.map((r) => [r.domain, r.selector, r.algorithm]), [['cli.test', 's1', 'ed25519-sha256']]);
  assert.match(rows[0]!.dnsRecord, /^v=DKIM1; k=ed25519; p=/);
});

test('tern dkim keygen (the bin): prints the zone line; the same selector again fails without overwriting', () => {
  const { file, dataDir: dd } = writeConfig();
  const tern = (...args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'bin/tern.js'), 'dkim', ...args, '--config', file], { encoding: 'utf8' });
  const first = tern('keygen', 'example.test', '--algo', 'ed25519');
  assert.equal(first.status, 0, first.stderr);
  const line = /^(\S+)\._domainkey\.example\.test\. IN TXT "v=DKIM1; k=ed25519; p=[^"]+"$/m.exec(first.stdout);
  assert.ok(line, first.stdout);
  const keyFile = path.join(dd, 'dkim', 'example.test', `${line[1]}.key`);
  const key = fs.readFileSync(keyFile, 'utf8');
  const again = tern('keygen', 'example.test', '--algo', 'ed25519', '--selector', line[1]!);
  assert.equal(again.status, 1);
  assert.match(again.stderr, /already has a key/);
  assert.equal(fs.readFileSync(keyFile, 'utf8'), key);
  const list = tern('list');
  assert.equal(list.status, 0);
  assert.ok(list.stdout.includes(line[0]), list.stdout);
});
