// Independent DKIM verification for tests: Debian's python3-dkim (dkimpy,
// test/fixtures/dkim_verify.py) and mailauth in strict mode, both asking the
// test DNS server for keys.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import { createResolver } from '../../src/dns/resolver.ts';
import { ROOT } from './server.ts';
import { requirePythonModule } from './tools.ts';

const VERIFY_PY = path.join(ROOT, 'test/fixtures/dkim_verify.py');
/** Debian's python3-dkim belongs to the system Python, not to a python3 earlier on PATH (pyenv). */
const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** The skip reason for tests that run dkimpy (test/fixtures/dkim_verify.py imports dkim and dns.resolver), or false. */
export function dkimpyMissing(): string | false {
  return requirePythonModule(PYTHON, 'dkim, dns.resolver', 'python3-dkim');
}

/** mailauth's verdict per signature: [algo, signing domain, result]. */
export async function mailauthDkim(message: Buffer, dnsAddress: string): Promise<[string, string, string][]> {
  const resolver = createResolver({ servers: [dnsAddress], timeout: 1000 });
  // strict: RFC 6376 to the letter, and a body hash mismatch is "fail" rather than mailauth's lenient "neutral".
  const r = await dkimVerify(message, { resolver: (name: string) => resolver.txt(name), strict: true });
  return r.results.map((x) => [x.algo, x.signingDomain, x.status.result] as [string, string, string]);
}

/**
 * dkimpy's verdict: its output lines split into fields ("<a=> <d=> <s=> pass|fail"),
 * and whether every signature passed. Spawned asynchronously: the test DNS
 * server runs in the calling process and must keep answering.
 */
export async function dkimpyDkim(message: Buffer, dnsAddress: string): Promise<{ ok: boolean; fields: string[][] }> {
  const child = spawn(PYTHON, [VERIFY_PY, dnsAddress], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(message);
  const status = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  assert.doesNotMatch(stderr, /Traceback/, `dkimpy failed (python3-dkim missing? run scripts/install-test-deps.sh)\n${stderr}`);
  return { ok: status === 0, fields: stdout.trim().split('\n').map((l) => l.split(' ')) };
}
