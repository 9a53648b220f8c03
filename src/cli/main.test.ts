// The command line's own behaviour: help where it was asked for, and an
// early-closing reader (`| head`) that is not an error.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';

const BIN = path.resolve(import.meta.dirname, '../../bin/tern.js');

test('--help, -h and help: usage on stdout, exit 0; no command: usage on stderr, exit 2', () => {
  for (const args of [['--help'], ['-h'], ['help']]) {
    const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 0, args.join(' '));
    assert.match(r.stdout, /^Usage:\n {2}tern serve/);
    assert.equal(r.stderr, '');
  }
  const r = spawnSync(process.execPath, [BIN], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^Usage:/);
});

test('a reader that closes early ends tern quietly, with its own exit code', async () => {
  const child = spawn(process.execPath, [BIN, '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
  // Closing our end before tern writes: its write gets EPIPE.
  child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise((resolve) => child.on('close', resolve));
  assert.equal(stderr, '', 'no stack, no complaint');
  assert.equal(code, 0);
});

test('--help and -h after any command, and `help COMMAND`: that command\'s usage on stdout, exit 0', () => {
  const cases: [string[], RegExp][] = [
    [['queue', '--help'], /^Usage:\n {2}tern queue list/],
    [['queue', 'retry', '-h'], /^Usage:\n {2}tern queue list/],
    [['user', 'add', '--help'], /^Usage:\n {2}tern user add ADDRESS/],
    [['user', 'passwd', 'a@b.test', '-h'], /^Usage:\n {2}tern user add ADDRESS/],
    [['dkim', 'keygen', '--help'], /^Usage:\n {2}tern dkim keygen DOMAIN/],
    [['config', 'check', '--help'], /^Usage:\n {2}tern config check FILE/],
    [['serve', '--help'], /^Usage:\n {2}tern serve/],
    [['help', 'queue'], /^Usage:\n {2}tern queue list/],
  ];
  for (const [args, usage] of cases) {
    const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, TERN_CONFIG: '' } });
    assert.equal(r.status, 0, args.join(' '));
    assert.match(r.stdout, usage, args.join(' '));
    assert.match(r.stdout, /--config FILE/, 'the common option too');
    assert.equal(r.stderr, '', args.join(' '));
  }
});

test('tern queue names the data directory it talks to and how it was chosen, and fails clearly with no server there', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tern-cli-'));
  try {
    const dataDir = path.join(dir, 'elsewhere');
    fs.mkdirSync(dataDir);
    const file = path.join(dir, 'tern.yaml');
    fs.writeFileSync(file, `dataDir: ${dataDir}\n`);
    const run = (args: string[], env: Record<string, string>) => spawnSync(process.execPath, [BIN, 'queue', 'list', ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, TERN_CONFIG: '', ...env } });

    const byDefault = run([], {});
    assert.equal(byDefault.status, 1);
    assert.equal(byDefault.stdout, '', 'never "The queue is empty."');
    assert.match(byDefault.stderr, new RegExp(`^tern: server at ${path.join(dir, 'data')} \\(control.sock; the default ./data: no --config FILE or TERN_CONFIG given\\)\n`));
    assert.match(byDefault.stderr, new RegExp(`no Tern server is running with data directory ${path.join(dir, 'data')} `));
    assert.match(byDefault.stderr, /--config FILE or TERN_CONFIG/);

    const byFlag = run(['--config', file], {});
    assert.equal(byFlag.status, 1);
    assert.match(byFlag.stderr, new RegExp(`no Tern server is running with data directory ${dataDir} \\(the dataDir of ${file}, given by --config\\)`));

    const byEnv = run([], { TERN_CONFIG: file });
    assert.equal(byEnv.status, 1);
    assert.match(byEnv.stderr, new RegExp(`^tern: server at ${dataDir} \\(control.sock; the dataDir of ${file}, from TERN_CONFIG\\)\n`));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
