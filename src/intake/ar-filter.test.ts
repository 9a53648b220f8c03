// The forged-Authentication-Results filter: an edge-case table, each input
// also fed split at every offset (and byte by byte), as a socket would.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuthResultsFilter, authservIdOf } from './ar-filter.ts';

const ID = 'mx.tern.test';

function run(input: string, parts: number[] = []): { out: string; removed: number } {
  const f = new AuthResultsFilter(ID);
  const buf = Buffer.from(input, 'latin1');
  const out: Buffer[] = [];
  let at = 0;
  for (const p of [...parts, buf.length]) {
    out.push(...f.push(buf.subarray(at, p)));
    at = p;
  }
  out.push(...f.end());
  return { out: Buffer.concat(out).toString('latin1'), removed: f.removed };
}

const BODY = '\r\nAuthentication-Results: mx.tern.test; in the body stays\r\n';

const CASES: { name: string; input: string; output: string; removed: number }[] = [
  {
    name: 'ours removed, others kept',
    input: 'Received: x\r\nAuthentication-Results: mx.tern.test; spf=pass\r\nAuthentication-Results: other.example; spf=fail\r\nSubject: s\r\n' + BODY,
    output: 'Received: x\r\nAuthentication-Results: other.example; spf=fail\r\nSubject: s\r\n' + BODY,
    removed: 1,
  },
  {
    name: 'folded continuation lines go with the field',
    input: 'Authentication-Results: MX.Tern.Test;\r\n\tdkim=pass header.d=bank.example;\r\n spf=pass\r\nFrom: a@b\r\n' + BODY,
    output: 'From: a@b\r\n' + BODY,
    removed: 1,
  },
  {
    name: 'the id on a continuation line, after a comment',
    input: 'authentication-results :\r\n (forged) mx.tern.test 1; dmarc=pass\r\nX: y\r\n' + BODY,
    output: 'X: y\r\n' + BODY,
    removed: 1,
  },
  {
    name: 'a quoted-string id',
    input: 'Authentication-Results: "mx.tern.test"; none\r\nX: y\r\n' + BODY,
    output: 'X: y\r\n' + BODY,
    removed: 1,
  },
  {
    name: 'a longer name that starts with ours is not ours',
    input: 'Authentication-Results: mx.tern.test.evil.example; spf=pass\r\nAuthentication-Results: mx.tern.tes; spf=pass\r\n' + BODY,
    output: 'Authentication-Results: mx.tern.test.evil.example; spf=pass\r\nAuthentication-Results: mx.tern.tes; spf=pass\r\n' + BODY,
    removed: 0,
  },
  {
    name: 'similar field names are not Authentication-Results',
    input: 'ARC-Authentication-Results: i=1; mx.tern.test; spf=pass\r\nX-Authentication-Results: mx.tern.test; spf=pass\r\n' + BODY,
    output: 'ARC-Authentication-Results: i=1; mx.tern.test; spf=pass\r\nX-Authentication-Results: mx.tern.test; spf=pass\r\n' + BODY,
    removed: 0,
  },
  {
    name: 'several of ours, back to back, at the end of the header section',
    input: 'A: 1\r\nAuthentication-Results: mx.tern.test; a\r\nAuthentication-Results: mx.tern.test;\r\n b\r\n' + BODY,
    output: 'A: 1\r\n' + BODY,
    removed: 2,
  },
  {
    name: 'an empty value claims nothing and stays',
    input: 'Authentication-Results:\r\nX: y\r\n' + BODY,
    output: 'Authentication-Results:\r\nX: y\r\n' + BODY,
    removed: 0,
  },
  {
    name: 'a message that ends inside its header section',
    input: 'X: y\r\nAuthentication-Results: mx.tern.test; spf=pass\r\n',
    output: 'X: y\r\n',
    removed: 1,
  },
  {
    name: 'no header section at all',
    input: '\r\nAuthentication-Results: mx.tern.test; spf=pass\r\n',
    output: '\r\nAuthentication-Results: mx.tern.test; spf=pass\r\n',
    removed: 0,
  },
];

for (const c of CASES) {
  test(`ar-filter: ${c.name}, split at every offset`, () => {
    const whole = run(c.input);
    assert.equal(whole.out, c.output);
    assert.equal(whole.removed, c.removed);
    for (let i = 0; i <= c.input.length; i++) {
      assert.equal(run(c.input, [i]).out, c.output, `split at ${i}`);
      assert.equal(run(c.input, [i, Math.min(i + 7, c.input.length)]).out, c.output, `split at ${i} and ${i + 7}`);
    }
    const bytes = [...Array(c.input.length).keys()];
    assert.equal(run(c.input, bytes).out, c.output, 'byte by byte');
  });
}

test('ar-filter: bounded: a huge field is decided on what is known', () => {
  const long = 'Authentication-Results: other.example; ' + 'x'.repeat(40_000) + '\r\n';
  const out = run(`${long}X: y\r\n\r\nbody\r\n`, [100, 5000]).out;
  assert.equal(out, `${long}X: y\r\n\r\nbody\r\n`);
  // Its id never appears within the bound: dropped rather than held without end.
  const unclear = 'Authentication-Results: (' + 'c'.repeat(40_000) + ') mx.tern.test; spf=pass\r\n';
  assert.equal(run(`${unclear}X: y\r\n\r\n`, [3000]).out, 'X: y\r\n\r\n');
});

test('ar-filter: kept bytes come out as views, merged per chunk', () => {
  const f = new AuthResultsFilter(ID);
  const chunk = Buffer.from('A: 1\r\nB: 2\r\nC: 3\r\n\r\nbody\r\n');
  const out = f.push(chunk);
  assert.equal(out.length, 1);
  assert.equal(out[0]!.buffer, chunk.buffer, 'no copy');
});

test('authservIdOf', () => {
  assert.equal(authservIdOf(' mx.tern.test; spf=pass'), 'mx.tern.test');
  assert.equal(authservIdOf(' mx.tern.test 1; spf=pass'), 'mx.tern.test');
  assert.equal(authservIdOf(' (a (nested) comment) mx.tern.test;'), 'mx.tern.test');
  assert.equal(authservIdOf(' "quoted\\"id";'), 'quoted"id');
  assert.equal(authservIdOf(' mx.tern.test'), undefined, 'not complete: more may follow');
  assert.equal(authservIdOf(' (open comment'), undefined);
  assert.equal(authservIdOf('\r\n'), undefined);
});
