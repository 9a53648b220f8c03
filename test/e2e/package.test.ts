// The npm package as a user gets it (issue 18, item 1): `npm pack` in the
// checkout (prepack compiles src/ to dist/), `npm install -g` of the tarball
// into a temporary prefix, then the installed `tern` run from a directory
// outside the checkout: --version, config check, and a real `tern serve`
// that takes one message over SMTP into a Maildir and stops on SIGTERM.
//
// Node refuses to strip types under node_modules, so this is the only test
// that runs the compiled JavaScript; everything else runs src/ directly.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { ROOT, mailbox, waitFor } from '../helpers/server.ts';
import { open, sendMail } from './smtp-kit.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-package-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };

/**
 * The environment for npm and the installed bin. The bin's shebang is
 * `#!/usr/bin/env node`, so this Node (the pinned 24) goes first on PATH,
 * as it would for a user who installed Node 24. Under `npm test` the
 * environment also carries the outer npm's package, lifecycle and prefix
 * variables; those would steer the nested npm, so they go. The rest of its
 * configuration (registry, cache, CA file, proxy) stays.
 */
const env: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !/^npm_(package_|lifecycle_|config_(global_|local_)?prefix$)/.test(k)),
);
env.PATH = `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}`;
env.npm_config_update_notifier = 'false';
delete env.TERN_CONFIG;

function npm(args: string[], cwd: string): SpawnSyncReturns<string> {
  const r = spawnSync('npm', args, { cwd, env, encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.error, undefined, `npm ${args.join(' ')}: ${r.error?.message}`);
  assert.equal(r.status, 0, `npm ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

const prefix = path.join(tmp, 'prefix');
const bin = path.join(prefix, 'bin', 'tern');
// Outside the checkout, so nothing is found through it (no src/, no node_modules of ours).
const work = path.join(tmp, 'work');

test('npm pack, npm install -g, then the installed tern: --version, config check, serve and deliver', { timeout: 180_000 }, async (t) => {
  let started = Date.now();
  npm(['pack', '--pack-destination', tmp], ROOT);
  const tarball = fs.readdirSync(tmp).find((f) => f.endsWith('.tgz'));
  assert.equal(tarball, `${pkg.name}-${pkg.version}.tgz`);
  t.diagnostic(`npm pack (with the prepack build): ${Date.now() - started} ms`);

  started = Date.now();
  // --prefer-offline: the dependencies come from the npm cache that `npm ci` filled; the registry only for what is missing.
  npm(['install', '--global', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', path.join(tmp, tarball)], tmp);
  t.diagnostic(`npm install -g: ${Date.now() - started} ms`);

  const installed = path.join(prefix, 'lib', 'node_modules', pkg.name);
  assert.ok(fs.existsSync(path.join(installed, 'dist', 'cli', 'main.js')), 'the compiled CLI is in the package');
  assert.ok(!fs.existsSync(path.join(installed, 'src')), 'no TypeScript sources: the installed copy must run dist/');
  assert.ok(!fs.readdirSync(path.join(installed, 'dist'), { recursive: true }).some((f) => String(f).endsWith('.test.js')), 'no tests in the package');

  fs.mkdirSync(work);
  const version = spawnSync(bin, ['--version'], { cwd: work, env, encoding: 'utf8', timeout: 30_000 });
  assert.equal(version.status, 0, version.stderr);
  assert.equal(version.stdout, `tern ${pkg.version}\n`);

  const dataDir = path.join(work, 'data');
  const config = path.join(work, 'tern.yaml');
  fs.writeFileSync(
    config,
    stringify({
      hostname: 'mx.tern.test',
      dataDir,
      listeners: [{ role: 'smtp', address: '127.0.0.1', port: 0 }, { role: 'http', address: '127.0.0.1', port: 0 }],
      domains: [{ name: 'tern.test', mailboxes: ['alice'] }],
      // SPF/DKIM/DMARC would ask the system resolver about the sender's domain; CI has no DNS for it.
      inbound: { enabled: false },
    }),
  );
  const check = spawnSync(bin, ['config', 'check', config], { cwd: work, env, encoding: 'utf8', timeout: 30_000 });
  assert.equal(check.status, 0, `config check: ${check.stdout}${check.stderr}`);

  const server = spawn(bin, ['serve', '--config', config], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  server.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  server.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => server.on('exit', (code) => resolve(code)));
  try {
    const startedLine = await waitFor(() => stdout.split('\n').find((l) => l.includes('"tern started"')) ?? '', 30_000, '"tern started"').catch((e: Error) => {
      throw new Error(`${e.message}; stderr: ${stderr}`);
    });
    const { listeners } = JSON.parse(startedLine) as { listeners: { role: string; port: number }[] };
    const port = listeners.find((l) => l.role === 'smtp')!.port;

    const c = await open(port);
    await sendMail(c, 'sender@example.net', ['alice@tern.test'], 'From: <sender@example.net>\r\nTo: <alice@tern.test>\r\nSubject: installed\r\n\r\nfrom the packed tern\r\n');
    await c.cmd('QUIT');
    const file = await waitFor(() => mailbox(dataDir, 'tern.test', 'alice')[0], 10_000, 'the message in the Maildir');
    assert.match(fs.readFileSync(file, 'utf8'), /^Subject: installed\r?$[\s\S]*from the packed tern/m);
    // The installed package serves the dashboard (web/ and uPlot shipped in it), the API and /metrics.
    const http = `http://127.0.0.1:${listeners.find((l) => l.role === 'http')!.port}`;
    const page = await fetch(`${http}/`);
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.match(html, /<script[^>]+src="\/assets\//);
    for (const asset of html.match(/\/assets\/[^"]+/g) ?? []) assert.equal((await fetch(http + asset)).status, 200, asset);
    assert.match(await (await fetch(`${http}/metrics`)).text(), /^# HELP tern_messages_received_total /m);
    assert.equal((await fetch(`${http}/v1/openapi.json`)).status, 200);
  } finally {
    server.kill('SIGTERM');
  }
  const killer = setTimeout(() => server.kill('SIGKILL'), 15_000);
  const code = await exited;
  clearTimeout(killer);
  assert.equal(code, 0, `tern serve after SIGTERM; stderr: ${stderr}`);
  assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
});

test('in the checkout, bin/tern.js runs src/ and reports the same version', () => {
  for (const flag of ['--version', '-V']) {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'tern.js'), flag], { cwd: tmp, env, encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `tern ${pkg.version}\n`);
  }
});
