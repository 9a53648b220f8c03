import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { CommandReader } from './command-reader.ts';
import type { CommandLine } from './command-reader.ts';

const MAX = 512;

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');
const line = (text: string): CommandLine => ({ kind: 'line', text });
const error = (e: 'bare-lf' | 'bare-cr' | 'too-long' | 'bad-utf8'): CommandLine => ({ kind: 'error', error: e });

function drain(reader: CommandReader): CommandLine[] {
  const out: CommandLine[] = [];
  for (let l = reader.next(); l !== null; l = reader.next()) out.push(l);
  return out;
}

/** Push `input` cut at `cuts`, draining after every chunk like the session does. */
function feed(input: Buffer, cuts: number[] = [], max = MAX): { lines: CommandLine[]; rest: Buffer } {
  const reader = new CommandReader(max);
  const lines: CommandLine[] = [];
  const bounds = [0, ...cuts, input.length];
  for (let k = 0; k + 1 < bounds.length; k++) {
    reader.push(Buffer.from(input.subarray(bounds[k]!, bounds[k + 1]!)));
    lines.push(...drain(reader));
  }
  return { lines, rest: Buffer.from(reader.takeRest()) };
}

interface Case {
  name: string;
  input: string;
  lines: CommandLine[];
  rest?: string;
}

const cases: Case[] = [
  { name: 'one line', input: 'EHLO client.example\r\n', lines: [line('EHLO client.example')] },
  { name: 'empty line', input: '\r\n', lines: [line('')] },
  {
    name: 'pipelined lines',
    input: 'MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n',
    lines: [line('MAIL FROM:<a@b.example>'), line('RCPT TO:<c@d.example>'), line('DATA')],
  },
  { name: 'partial line stays buffered', input: 'NOOP\r\nQUI', lines: [line('NOOP')], rest: 'QUI' },
  { name: 'bare LF, then the next line parses', input: 'NOOP\nRSET\r\n', lines: [error('bare-lf'), line('RSET')] },
  { name: 'lone LF', input: '\nNOOP\r\n', lines: [error('bare-lf'), line('NOOP')] },
  { name: 'bare CR inside a line', input: 'NO\rOP\r\nRSET\r\n', lines: [error('bare-cr'), line('RSET')] },
  { name: 'CR CR LF', input: 'NOOP\r\r\nRSET\r\n', lines: [error('bare-cr'), line('RSET')] },
  { name: 'CR at line start', input: '\rNOOP\r\n', lines: [error('bare-cr')] },
  {
    name: 'UTF-8 line',
    input: Buffer.from('MAIL FROM:<jösé@exämple.org> SMTPUTF8\r\n', 'utf8').toString('latin1'),
    lines: [line('MAIL FROM:<jösé@exämple.org> SMTPUTF8')],
  },
  { name: 'latin1 octet is not UTF-8', input: 'MAIL FROM:<j\xf6@x.example>\r\nNOOP\r\n', lines: [error('bad-utf8'), line('NOOP')] },
  { name: 'truncated UTF-8 sequence', input: 'NOOP \xc3\x28\r\n', lines: [error('bad-utf8')] },
  { name: '0xff', input: '\xff\r\n', lines: [error('bad-utf8')] },
  {
    name: 'line at the limit',
    input: 'A'.repeat(MAX - 2) + '\r\nNOOP\r\n',
    lines: [line('A'.repeat(MAX - 2)), line('NOOP')],
  },
  {
    name: 'line one over the limit',
    input: 'A'.repeat(MAX - 1) + '\r\nNOOP\r\n',
    lines: [error('too-long'), line('NOOP')],
  },
  {
    name: 'very long line',
    input: 'B'.repeat(3000) + '\r\nNOOP\r\n',
    lines: [error('too-long'), line('NOOP')],
  },
  {
    name: 'very long line ended by bare LF',
    input: 'B'.repeat(3000) + '\nNOOP\r\n',
    lines: [error('too-long'), line('NOOP')],
  },
];

describe('CommandReader', () => {
  for (const c of cases) {
    it(c.name, () => {
      const got = feed(bytes(c.input));
      assert.deepEqual(got.lines, c.lines);
      assert.equal(got.rest.toString('latin1'), c.rest ?? '');
    });
  }

  it('gives the same lines for every two-chunk split, and byte by byte', () => {
    for (const c of cases) {
      const input = bytes(c.input);
      for (let k = 0; k <= input.length; k++) {
        const got = feed(input, [k]);
        assert.deepEqual(got.lines, c.lines, `${c.name}: split at ${k}`);
        assert.equal(got.rest.toString('latin1'), c.rest ?? '', `${c.name}: split at ${k}`);
      }
      const cuts = Array.from({ length: Math.max(0, input.length - 1) }, (_, i) => i + 1);
      const got = feed(input, cuts);
      assert.deepEqual(got.lines, c.lines, `${c.name}: byte by byte`);
      assert.equal(got.rest.toString('latin1'), c.rest ?? '', `${c.name}: byte by byte`);
    }
  });

  it('one too-long error for a line arriving in many chunks, with bounded memory', () => {
    for (const size of [1, 7, 100, 511, 512, 513, 4096]) {
      const reader = new CommandReader(MAX);
      const lines: CommandLine[] = [];
      let maxBuffered = 0;
      const huge = 'X'.repeat(20_000);
      for (let i = 0; i < huge.length; i += size) {
        reader.push(bytes(huge.slice(i, i + size)));
        lines.push(...drain(reader));
        maxBuffered = Math.max(maxBuffered, reader.buffered);
      }
      assert.deepEqual(lines, [], `chunk size ${size}: nothing yet`);
      assert.ok(maxBuffered <= MAX + size, `chunk size ${size}: buffered ${maxBuffered}`);
      reader.push(bytes('tail\r\nQUIT\r\n'));
      assert.deepEqual(drain(reader), [error('too-long'), line('QUIT')], `chunk size ${size}`);
      assert.equal(reader.buffered, 0);
    }
  });

  it('forgets an over-long partial line at once', () => {
    const reader = new CommandReader(MAX);
    reader.push(bytes('Y'.repeat(MAX + 1)));
    assert.equal(reader.next(), null);
    assert.equal(reader.buffered, 0);
    // Exactly MAX octets without LF might still be a legal line ending in CR.
    const edge = new CommandReader(MAX);
    edge.push(bytes('Y'.repeat(MAX - 2) + '\r'));
    assert.equal(edge.next(), null);
    assert.equal(edge.buffered, MAX - 1);
    edge.push(bytes('\n'));
    assert.deepEqual(edge.next(), line('Y'.repeat(MAX - 2)));
  });

  it('takeRest returns exactly the unconsumed bytes', () => {
    const reader = new CommandReader(MAX);
    reader.push(bytes('MAIL FROM:<a@b.example>\r\nDATA\r\nSubject: x\r\n'));
    reader.push(bytes('\r\nbody\r\n.\r\n'));
    assert.deepEqual(reader.next(), line('MAIL FROM:<a@b.example>'));
    assert.deepEqual(reader.next(), line('DATA'));
    assert.equal(reader.buffered, 'Subject: x\r\n\r\nbody\r\n.\r\n'.length);
    assert.equal(reader.takeRest().toString('latin1'), 'Subject: x\r\n\r\nbody\r\n.\r\n');
    assert.equal(reader.buffered, 0);
    assert.equal(reader.next(), null);
    assert.equal(reader.takeRest().length, 0);
    // The reader works normally afterwards.
    reader.push(bytes('QUIT\r\n'));
    assert.deepEqual(reader.next(), line('QUIT'));
    assert.equal(reader.takeRest().length, 0);
  });

  it('takeRest before any line is read', () => {
    const reader = new CommandReader(MAX);
    reader.push(bytes('\x16\x03\x01binary'));
    assert.equal(reader.takeRest().toString('latin1'), '\x16\x03\x01binary');
  });

  it('stops at each line: the rest is left for takeRest', () => {
    const reader = new CommandReader(MAX);
    reader.push(bytes('BDAT 5 LAST\r\nabcdeQUIT\r\n'));
    assert.deepEqual(reader.next(), line('BDAT 5 LAST'));
    assert.equal(reader.takeRest().toString('latin1'), 'abcdeQUIT\r\n');
  });

  it('honours a smaller limit', () => {
    assert.deepEqual(feed(bytes('abcd\r\nabcde\r\nab\r\n'), [], 6).lines, [line('abcd'), error('too-long'), line('ab')]);
  });
});
