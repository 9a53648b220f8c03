// The command line's own behaviour: help where it was asked for, and an
// early-closing reader (`| head`) that is not an error.

import { test } from 'node:test';
import assert from 'node:assert/strict';
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
