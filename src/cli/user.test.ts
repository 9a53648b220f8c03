// `tern user …` end to end: the real bin, the password on stdin, the store
// on disk; plus the no-echo prompt path with a fake terminal.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { spawnSync } from 'node:child_process';
import { ROOT, writeConfig } from '../../test/helpers/server.ts';
import { loadConfig } from '../config/load.ts';
import { openStore } from '../store/store.ts';
import { verifyPassword } from '../store/passwords.ts';
import { runUser } from './user.ts';

const { dir, file, dataDir } = writeConfig();
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const SECRETS = ['hunter2-Sekrit', 'n3w-Passphrase', 'carol-Passw0rd', 'sh0rt-pw'];

function tern(input: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const argv = [path.join(ROOT, 'bin/tern.js'), 'user', ...args, '--config', file];
  for (const s of SECRETS) assert.ok(!argv.some((a) => a.includes(s)), 'a password in argv');
  const r = spawnSync(process.execPath, argv, { input, encoding: 'utf8' });
  for (const s of SECRETS) assert.ok(!r.stdout.includes(s) && !r.stderr.includes(s), `a password in the output: ${r.stdout}${r.stderr}`);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function verifies(address: string, pw: string): Promise<boolean> {
  const store = openStore(dataDir);
  try {
    const u = store.getUser(address);
    return u !== null && (await verifyPassword(pw, u.passwordHash));
  } finally {
    store.close();
  }
}

test('tern user add / list / passwd / del', { timeout: 60_000 }, async () => {
  let r = tern('hunter2-Sekrit\n', 'add', 'Alice@Tern.test', '--send-as=@tern.test,Bob@Example.TEST');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'alice@tern.test: added\n');
  assert.equal(await verifies('alice@tern.test', 'hunter2-Sekrit'), true);

  r = tern('carol-Passw0rd\r\nsecond line ignored\n', 'add', 'carol@elsewhere.test', '--send-as', 'c@x.test', '--messages-per-hour', '50', '--admin');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'carol@elsewhere.test: added (dashboard admin)\n');
  assert.equal(openStoreAndGet('carol@elsewhere.test')?.admin, true);
  assert.equal(openStoreAndGet('alice@tern.test')?.admin, undefined, 'no --admin: no dashboard login');
  assert.match(r.stderr, /elsewhere\.test is not one of the configured domains/);
  assert.equal(await verifies('carol@elsewhere.test', 'carol-Passw0rd'), true);

  // Refusals: an existing user, a bad address, an empty password, a bad --send-as.
  r = tern('x\n', 'add', 'alice@tern.test');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /already exists/);
  for (const bad of ['not-an-address', 'a@[192.0.2.1]', '"q u"@tern.test', 'a@b@tern.test']) {
    r = tern('x\n', 'add', bad);
    assert.equal(r.status, 1, bad);
    assert.match(r.stderr, /invalid address/);
  }
  r = tern('', 'add', 'dave@tern.test');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /empty password/);
  r = tern('\n', 'add', 'dave@tern.test');
  assert.equal(r.status, 1);
  // Shorter than submission.minPasswordLength (12 by default): the message names the minimum.
  r = tern('sh0rt-pw\n', 'add', 'dave@tern.test');
  assert.equal(r.status, 1);
  assert.equal(r.stderr, 'tern user: the password is too short: 8 characters, at least 12 needed (submission.minPasswordLength)\n');
  assert.equal(openStoreAndGet('dave@tern.test'), null);
  r = tern('sh0rt-pw\n', 'passwd', 'carol@elsewhere.test');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /at least 12 needed/);
  assert.equal(await verifies('carol@elsewhere.test', 'carol-Passw0rd'), true, 'the old password stays');
  r = tern('pw\n', 'add', 'dave@tern.test', '--send-as=@bad..domain');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--send-as/);
  r = tern('pw\n', 'add', 'dave@tern.test', 'extra');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /Usage:/);
  // --admin belongs to add only.
  r = tern('', 'del', 'dave@tern.test', '--admin');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /Usage:/);

  r = tern('', 'list');
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^ADDRESS\s+ADMIN\s+SEND-AS\s+LIMITS\s+CREATED\n/);
  assert.match(r.stdout, /alice@tern\.test\s+-\s+@tern\.test,bob@example\.test\s+-/);
  assert.match(r.stdout, /carol@elsewhere\.test\s+yes\s+c@x\.test\s+50 msg\/h/);
  assert.match(r.stdout, /2 users\n$/);
  r = tern('', 'list', '--json');
  const list = JSON.parse(r.stdout) as Record<string, unknown>[];
  assert.deepEqual(list.map((u) => [u.address, u.sendAs, u.admin]), [['alice@tern.test', ['@tern.test', 'bob@example.test'], false], ['carol@elsewhere.test', ['c@x.test'], true]]);
  assert.ok(list.every((u) => !('passwordHash' in u)) && !r.stdout.includes('$scrypt$'));

  r = tern('n3w-Passphrase\n', 'passwd', 'ALICE@tern.test');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(await verifies('alice@tern.test', 'n3w-Passphrase'), true);
  assert.equal(await verifies('alice@tern.test', 'hunter2-Sekrit'), false);
  assert.deepEqual(openStoreAndGet('alice@tern.test')?.sendAs, ['@tern.test', 'bob@example.test']);
  r = tern('x\n', 'passwd', 'nobody@tern.test');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no user nobody@tern\.test/);

  r = tern('', 'del', 'alice@tern.test');
  assert.equal(r.status, 0);
  r = tern('', 'del', 'alice@tern.test');
  assert.equal(r.status, 1);
  r = tern('', 'list', '--json');
  assert.deepEqual((JSON.parse(r.stdout) as { address: string }[]).map((u) => u.address), ['carol@elsewhere.test']);
});

function openStoreAndGet(address: string): { sendAs: string[]; admin?: boolean | undefined } | null {
  const store = openStore(dataDir);
  try {
    return store.getUser(address);
  } finally {
    store.close();
  }
}

/** A fake terminal: what runUser writes, and whether raw mode was on while reading. */
function fakeTty(typed: string): { stdin: PassThrough & { setRawMode: (raw: boolean) => void }; raw: boolean[]; out: string[] } {
  const raw: boolean[] = [];
  const stdin = Object.assign(new PassThrough(), { setRawMode: (on: boolean) => void raw.push(on) });
  stdin.write(typed);
  return { stdin, raw, out: [] };
}

test('on a terminal: prompted twice without echo; a mismatch is refused', async () => {
  const config = loadConfig(file);
  const t = fakeTty('t3rm-passw0rd\u007fD\rt3rm-passw0rD\r');
  const sink = { write: (s: string) => t.out.push(s) };
  assert.equal(await runUser(config, ['add', 'tty@tern.test'], { stdin: t.stdin, stdout: sink, stderr: sink, isTTY: true }), 0);
  assert.deepEqual(t.raw, [true, false, true, false]);
  assert.equal(t.out.join(''), 'New password for tty@tern.test: \nRetype it: \ntty@tern.test: added\n');
  assert.equal(await verifies('tty@tern.test', 't3rm-passw0rD'), true);

  const m = fakeTty('one-long-passw0rd\rtwo-long-passw0rd\r');
  const out: string[] = [];
  const s2 = { write: (s: string) => out.push(s) };
  assert.equal(await runUser(config, ['passwd', 'tty@tern.test'], { stdin: m.stdin, stdout: s2, stderr: s2, isTTY: true }), 1);
  assert.match(out.join(''), /do not match/);
  assert.equal(await verifies('tty@tern.test', 't3rm-passw0rD'), true);

  const c = fakeTty('abc\u0003');
  assert.equal(await runUser(config, ['passwd', 'tty@tern.test'], { stdin: c.stdin, stdout: s2, stderr: s2, isTTY: true }), 1);
  assert.deepEqual(c.raw, [true, false]);

  // Too short on a terminal: refused at the first prompt, before asking to retype it.
  const short: string[] = [];
  const s3 = { write: (s: string) => short.push(s) };
  const k = fakeTty('sh0rt-pw\r');
  assert.equal(await runUser(config, ['passwd', 'tty@tern.test'], { stdin: k.stdin, stdout: s3, stderr: s3, isTTY: true }), 1);
  assert.equal(short.join(''), 'New password for tty@tern.test: \ntern user: the password is too short: 8 characters, at least 12 needed (submission.minPasswordLength)\n');
  assert.equal(await verifies('tty@tern.test', 't3rm-passw0rD'), true);
});

test('submission.minPasswordLength sets the minimum', async () => {
  const { dir: d2, file: f2 } = writeConfig({ submission: { minPasswordLength: 20 } });
  try {
    const config = loadConfig(f2);
    assert.equal(config.submission.minPasswordLength, 20);
    const out: string[] = [];
    const sink = { write: (s: string) => out.push(s) };
    const stdin = new PassThrough();
    stdin.end('hunter2-Sekrit\n');
    assert.equal(await runUser(config, ['add', 'long@tern.test'], { stdin, stdout: sink, stderr: sink, isTTY: false }), 1);
    assert.match(out.join(''), /too short: 14 characters, at least 20 needed/);
  } finally {
    fs.rmSync(d2, { recursive: true, force: true });
  }
  assert.equal(loadConfig(file).submission.minPasswordLength, 12, 'the default');
});
