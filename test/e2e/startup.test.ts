// `tern serve` that cannot start says why in one line on stderr and exits
// non-zero: no stack trace (issue 11, break 8). Config problems come from
// the same check as `tern config check`; the rest (a port in use, a data
// directory that turns out unusable) from the start itself.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { ROOT, spawnServer, writeConfig } from '../helpers/server.ts';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A config with one smtp listener (port 0 unless given) and `extra` merged over it. */
function config(extra: Record<string, unknown> = {}): { file: string; dir: string; dataDir: string } {
  const c = writeConfig({ listeners: [{ role: 'smtp', address: '127.0.0.1', port: 0 }], ...extra });
  dirs.push(c.dir);
  return c;
}

/** Runs `tern serve`; fails the test if the server starts instead of refusing to. */
function serve(file: string): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const child = spawn(process.execPath, [path.join(ROOT, 'src/cli/main.ts'), 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    if (stdout.includes('"tern started"')) child.kill('SIGKILL');
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  return new Promise((resolve) => {
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, stdout });
    });
  });
}

/** Exit 1 and exactly one line on stderr, matching `expected`, with no stack frame anywhere. */
function assertOneLine(r: { code: number | null; stderr: string; stdout: string }, expected: RegExp): void {
  assert.ok(!r.stdout.includes('"tern started"'), `the server started: ${r.stdout}`);
  assert.doesNotMatch(r.stderr + r.stdout, /^\s+at /m, `a stack trace: ${r.stderr}`);
  assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  assert.match(lines[0]!, expected);
}

test('a certificate that is not PEM: the config line, before anything starts', { timeout: 30_000 }, async () => {
  const c = config();
  const cert = path.join(c.dir, 'cert.der');
  const key = path.join(c.dir, 'key.pem');
  fs.writeFileSync(cert, Buffer.from([0x30, 0x82, 0x01, 0x0a, 0x02, 0x82]));
  fs.writeFileSync(key, 'not a key either\n');
  const { file } = config({ dataDir: c.dataDir, tls: { cert, key } });
  // Two problems: one line each, both naming their key and file.
  const r = await serve(file);
  assert.doesNotMatch(r.stderr, /^\s+at /m);
  assert.equal(r.code, 1);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 2, r.stderr);
  assert.match(lines[0]!, /: tls\.cert: .*cert\.der is not a PEM certificate/);
  assert.match(lines[1]!, /: tls\.key: .*key\.pem is not a PEM private key/);
});

test('a port another server holds: which listener, which address, who may hold it', { timeout: 30_000 }, async () => {
  const squatter = net.createServer();
  await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', r));
  try {
    const port = (squatter.address() as net.AddressInfo).port;
    const { file } = config({ listeners: [{ role: 'smtp', address: '127.0.0.1', port: 0 }, { role: 'submission', address: '127.0.0.1', port }] });
    assertOneLine(await serve(file), new RegExp(`^tern: listener submission 127\\.0\\.0\\.1:${port} \\(listeners\\[1\\]\\): address already in use — another server \\(Postfix\\? another Tern\\?\\) holds it`));
  } finally {
    await new Promise((r) => squatter.close(r));
  }
});

test('a dataDir under a regular file (ENOTDIR stops root too): config check catches it', { timeout: 30_000 }, async () => {
  const c = config();
  const blocker = path.join(c.dir, 'a-file');
  fs.writeFileSync(blocker, '');
  const { file } = config({ dataDir: path.join(blocker, 'data') });
  assertOneLine(await serve(file), new RegExp(`: dataDir: cannot create ${blocker}/data: ${blocker} is not a directory$`));
});

test('a dataDir that passes the check but not the start (its spool is a file): the path and what to do', { timeout: 30_000 }, async () => {
  const c = config();
  fs.mkdirSync(c.dataDir);
  fs.writeFileSync(path.join(c.dataDir, 'spool'), '');
  assertOneLine(await serve(c.file), new RegExp(`^tern: cannot create ${c.dataDir}/spool/\\w+: a part of the path is a file, not a directory — fix dataDir$`));
});

test('an alias loop: refused at start, so no RCPT ever meets it', { timeout: 30_000 }, async () => {
  const { file } = config({ domains: [{ name: 'tern.test', mailboxes: ['alice'], aliases: { a: 'b', b: 'a' } }] });
  assertOneLine(await serve(file), /: domains\[0\]\.aliases: a -> b -> a is a loop/);
});

test('a second server on a running one\'s data directory: refused before it touches the spool', { timeout: 60_000 }, async () => {
  const first = config();
  const running = await spawnServer(first.file);
  try {
    // A partly received message of the running server: a second one's recovery would delete it.
    const partial = path.join(first.dataDir, 'spool', 'tmp', 'PARTIAL');
    fs.writeFileSync(partial, 'Subject: still arriving\r\n');
    const { file } = config({ dataDir: first.dataDir });
    assertOneLine(await serve(file), new RegExp(`^tern: could not start: another Tern is running with this data directory \\(${first.dataDir}/control\\.sock answers\\): stop it first, or give this one another dataDir$`));
    assert.ok(fs.existsSync(partial), 'the running server\'s files are untouched');
  } finally {
    running.child.kill('SIGTERM');
    await new Promise((r) => (running.child.exitCode !== null ? r(null) : running.child.once('exit', r)));
  }
});
