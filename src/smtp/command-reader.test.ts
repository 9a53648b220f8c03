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

  it('gives the same lines and rest when chunks pile up before they are read (a busy session), any split (seeded)', () => {
    const rand = mulberry32(0xc0de);
    const alphabet = ['NOOP\r\n', 'RSET\r\n', '\r\n', '\n', '\r', 'A'.repeat(40), 'B'.repeat(300), '\xc3\xa9', '\xff', 'MAIL FROM:<a@b.example>\r\n'];
    for (let iter = 0; iter < 1500; iter++) {
      let s = '';
      const n = 1 + Math.floor(rand() * 12);
      for (let j = 0; j < n; j++) s += alphabet[Math.floor(rand() * alphabet.length)];
      const input = bytes(s);
      const max = 6 + Math.floor(rand() * 600);
      const whole = feed(input, [], max);
      const reader = new CommandReader(max);
      const lines: CommandLine[] = [];
      let at = 0;
      while (at < input.length) {
        const size = 1 + Math.floor(rand() * 20);
        reader.push(Buffer.from(input.subarray(at, at + size)));
        at += size;
        if (rand() < 0.3) lines.push(...drain(reader)); // otherwise the session is busy
      }
      lines.push(...drain(reader));
      assert.deepEqual(lines, whole.lines, JSON.stringify({ s, max }));
      assert.equal(reader.takeRest().toString('latin1'), whole.rest.toString('latin1'), JSON.stringify({ s, max }));
    }
  });

  it('takeRest hands over queued chunks and a partial line, in order', () => {
    const reader = new CommandReader(MAX);
    reader.push(bytes('NOOP\r\nDA'));
    assert.deepEqual(reader.next(), line('NOOP'));
    assert.equal(reader.next(), null); // "DA" is now a partial line
    reader.push(bytes('TA\r\nSubj'));
    reader.push(bytes('ect: x\r\n'));
    assert.equal(reader.buffered, 'DATA\r\nSubject: x\r\n'.length);
    assert.deepEqual(reader.next(), line('DATA'));
    assert.equal(reader.takeRest().toString('latin1'), 'Subject: x\r\n');
    assert.equal(reader.buffered, 0);
  });

  it('searches and copies each octet a bounded number of times, however the input is cut', () => {
    // A line trickled one octet per packet, read after each (the old reader
    // re-copied and re-searched the whole partial line every time), and
    // pipelined commands one octet per packet while the session is busy (the
    // old reader appended each packet to everything buffered).
    const trickled = bytes('A'.repeat(MAX - 2) + '\r\n');
    const piled = bytes('NOOP\r\n'.repeat(16 * 1024 / 6));
    for (const [name, input, readEach] of [['trickled line', trickled, true], ['piled-up commands', piled, false]] as const) {
      const reader = new CommandReader(MAX);
      const lines: CommandLine[] = [];
      const chunks = Array.from(input, (b) => Buffer.from([b]));
      const work = countWork(() => {
        for (const c of chunks) {
          reader.push(c);
          if (readEach) lines.push(...drain(reader));
        }
        lines.push(...drain(reader));
      });
      assert.equal(lines.length, name === 'trickled line' ? 1 : piled.length / 6, name);
      assert.ok(lines.every((l) => l.kind === 'line'), name);
      // Searched for LF once; a whole line once more for a bare CR.
      assert.ok(work.searched <= 2 * input.length + 64, `${name}: ${work.searched} octets searched for ${input.length}`);
      assert.ok(work.copied <= 2 * input.length + 64, `${name}: ${work.copied} octets copied for ${input.length}`);
    }
  });
});

/** Octets examined by Buffer#indexOf and copied by Buffer.concat / Buffer.from(buffer) while `fn` runs. */
function countWork(fn: () => void): { searched: number; copied: number } {
  const indexOf = Buffer.prototype.indexOf;
  const concat = Buffer.concat;
  const from = Buffer.from;
  let searched = 0;
  let copied = 0;
  Buffer.prototype.indexOf = function (this: Buffer, value: string | number | Uint8Array, byteOffset?: number | string, encoding?: BufferEncoding): number {
    const at = indexOf.call(this, value, byteOffset as number, encoding);
    const needle = typeof value === 'number' ? 1 : typeof value === 'string' ? Buffer.byteLength(value) : value.length;
    searched += (at < 0 ? this.length : at + needle) - (typeof byteOffset === 'number' ? Math.max(0, byteOffset) : 0);
    return at;
  } as typeof indexOf;
  Buffer.concat = function (list: readonly Uint8Array[], totalLength?: number): Buffer {
    const out = concat.call(Buffer, list, totalLength);
    copied += out.length;
    return out;
  } as typeof concat;
  Buffer.from = function (this: typeof Buffer, ...args: unknown[]): Buffer {
    const out = (from as (...a: unknown[]) => Buffer).apply(Buffer, args);
    if (args[0] instanceof Uint8Array) copied += out.length;
    return out;
  } as typeof from;
  try {
    fn();
  } finally {
    Buffer.prototype.indexOf = indexOf;
    Buffer.concat = concat;
    Buffer.from = from;
  }
  return { searched, copied };
}

/** Small seeded PRNG (mulberry32) so failures reproduce. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
