import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { DotStuffer } from './dot-stuff.ts';
import { DataReader } from './data-reader.ts';

/** Encode `input` cut at `cuts`; returns the output and the emitted parts. */
function encode(input: Buffer, cuts: number[]): { out: Buffer; parts: Buffer[] } {
  const enc = new DotStuffer();
  const parts: Buffer[] = [];
  const bounds = [0, ...cuts, input.length];
  for (let k = 0; k + 1 < bounds.length; k++) enc.push(input.subarray(bounds[k]!, bounds[k + 1]!), (p) => parts.push(p));
  const end = enc.end();
  return { out: Buffer.concat([...parts, end]), parts };
}

const cases: [name: string, input: string, output: string][] = [
  ['empty message', '', '.\r\n'],
  ['one line', 'a\r\n', 'a\r\n.\r\n'],
  ['no final CRLF', 'a', 'a\r\n.\r\n'],
  ['ends in a lone CR', 'a\r', 'a\r\n.\r\n'],
  ['dot first', '.a\r\n', '..a\r\n.\r\n'],
  ['a line that is a dot', 'x\r\n.\r\ny\r\n', 'x\r\n..\r\ny\r\n.\r\n'],
  ['only a dot, no CRLF', '.', '..\r\n.\r\n'],
  ['two dots', '..\r\n', '...\r\n.\r\n'],
  ['dots mid-line stay', 'a.b\r\nc. .\r\n', 'a.b\r\nc. .\r\n.\r\n'],
  ['every line', '.\r\n.\r\n.\r\n', '..\r\n..\r\n..\r\n.\r\n'],
  ['empty lines', '\r\n\r\n.\r\n', '\r\n\r\n..\r\n.\r\n'],
  ['bare LF is a line start too', 'a\n.b\r\n', 'a\n..b\r\n.\r\n'],
  ['bare CR is not', 'a\r.b\r\n', 'a\r.b\r\n.\r\n'],
];

describe('DotStuffer', () => {
  for (const [name, input, output] of cases) {
    it(`${name} (split at every offset, every pair of offsets)`, () => {
      const buf = Buffer.from(input, 'latin1');
      const splits: number[][] = [[]];
      for (let a = 1; a < buf.length; a++) {
        splits.push([a]);
        for (let b = a + 1; b < buf.length; b++) splits.push([a, b]);
      }
      for (const cuts of splits) {
        const { out, parts } = encode(buf, cuts);
        assert.equal(out.toString('latin1'), output, `cuts ${JSON.stringify(cuts)}`);
        // No copies: every part is a view of the input or the shared one-octet ".".
        for (const p of parts) assert.ok(p.buffer === buf.buffer || (p.length === 1 && p[0] === 0x2e), 'part is a view of the input');
      }
    });
  }

  it('shares one "." buffer and emits untouched chunks as they are', () => {
    const enc = new DotStuffer();
    const parts: Buffer[] = [];
    const a = Buffer.from('.x\r\n');
    const b = Buffer.from('.y\r\n');
    const c = Buffer.from('plain\r\n');
    for (const chunk of [a, b, c]) enc.push(chunk, (p) => parts.push(p));
    assert.equal(parts.length, 5);
    assert.equal(parts[0], parts[2], 'the same "." buffer');
    assert.equal(parts[4], c, 'a chunk with nothing to stuff goes out as is');
  });

  it('round-trips through our server’s DATA reader', () => {
    const lines: string[] = [];
    for (let i = 0; i < 300; i++) lines.push(['.', '..', '.x', 'x.', '', 'From: a', '. .'][i % 7]! + 'ä'.repeat(i % 5));
    const msg = Buffer.from(lines.join('\r\n') + '\r\n');
    for (const step of [1, 7, 64, 1000, msg.length]) {
      const cuts: number[] = [];
      for (let i = step; i < msg.length; i += step) cuts.push(i);
      const wire = encode(msg, cuts).out;
      const reader = new DataReader({ maxSize: 1e6, maxLineLength: 1000, dotStuffed: true });
      const got: Buffer[] = [];
      const used = reader.push(Buffer.concat([wire, Buffer.from('NEXT')]), (p) => got.push(Buffer.from(p)));
      assert.equal(reader.done, true);
      assert.equal(reader.error, null);
      assert.equal(used, wire.length, 'the end of data is exactly where the encoder put it');
      assert.deepEqual(Buffer.concat(got), msg);
    }
  });
});
