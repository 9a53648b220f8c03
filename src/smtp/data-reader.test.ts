import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { DataReader } from './data-reader.ts';
import type { DataError, DataReaderOptions } from './data-reader.ts';

interface Outcome {
  out: string;
  done: boolean;
  /** Bytes of the input the reader consumed in total. */
  consumed: number;
  error: DataError | null;
  size: number;
  endsWithLineBreak: boolean;
}

const DATA: DataReaderOptions = { maxSize: 1000, maxLineLength: 100, dotStuffed: true };
const BDAT: DataReaderOptions = { maxSize: 1000, maxLineLength: 100, dotStuffed: false };

// latin1 keeps every octet as one character, so NUL, CR and 0xff survive.
const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

/** Fresh (non-pooled) buffer holding `b`, so `.buffer` identifies it. */
function own(b: Buffer): Buffer {
  const c = Buffer.alloc(b.length);
  b.copy(c);
  return c;
}

/**
 * Feed `input` cut at `cuts` (sorted offsets). Feeding stops once the reader
 * reports done, like the session does: the rest belongs to the next command.
 */
function run(opts: DataReaderOptions, input: Buffer, cuts: number[] = [], finish = false): Outcome {
  const reader = new DataReader(opts);
  const parts: Buffer[] = [];
  let consumed = 0;
  const bounds = [0, ...cuts, input.length];
  for (let k = 0; k + 1 < bounds.length && !reader.done; k++) {
    const chunk = own(input.subarray(bounds[k]!, bounds[k + 1]!));
    const used = reader.push(chunk, (p) => parts.push(p));
    assert.ok(used >= 0 && used <= chunk.length);
    if (!reader.done) assert.equal(used, chunk.length, 'consumes all unless done');
    consumed += used;
  }
  if (finish) reader.finish();
  return {
    out: Buffer.concat(parts).toString('latin1'),
    done: reader.done,
    consumed,
    error: reader.error,
    size: reader.size,
    endsWithLineBreak: reader.endsWithLineBreak,
  };
}

interface Case {
  name: string;
  input: string;
  out: string;
  done: boolean;
  /** Defaults to the whole input. */
  consumed?: number;
  error: DataError | null;
  opts?: Partial<DataReaderOptions>;
}

const dataCases: Case[] = [
  { name: 'plain message', input: 'Subject: hi\r\n\r\nbody\r\n.\r\n', out: 'Subject: hi\r\n\r\nbody\r\n', done: true, error: null },
  { name: 'empty message', input: '.\r\n', out: '', done: true, error: null },
  { name: 'one empty line', input: '\r\n.\r\n', out: '\r\n', done: true, error: null },
  { name: 'dot-stuffed lines', input: '..x\r\n..\r\n.\r\n', out: '.x\r\n.\r\n', done: true, error: null },
  { name: 'more stuffing', input: 'a\r\n..b\r\n...\r\n. c\r\n.\r\n', out: 'a\r\n.b\r\n..\r\n c\r\n', done: true, error: null },
  { name: 'dots inside lines are content', input: 'a.b.\r\nc..\r\n.\r\n', out: 'a.b.\r\nc..\r\n', done: true, error: null },
  {
    name: 'pipelined next command is not consumed',
    input: 'hi\r\n.\r\nQUIT\r\n',
    out: 'hi\r\n',
    done: true,
    consumed: 7,
    error: null,
  },
  {
    name: 'empty message then pipelined command',
    input: '.\r\nMAIL FROM:<a@b.example>\r\n',
    out: '',
    done: true,
    consumed: 3,
    error: null,
  },
  { name: 'no end yet', input: 'line\r\nmore', out: 'line\r\nmore', done: false, error: null },
  { name: 'held dot at the end', input: 'line\r\n.', out: 'line\r\n', done: false, error: null },
  { name: 'held dot-CR at the end', input: 'line\r\n.\r', out: 'line\r\n', done: false, error: null },

  // SMTP smuggling: none of these may end the message.
  { name: 'LF.LF', input: 'a\n.\nb\r\n', out: 'a', done: false, error: 'bare-lf' },
  { name: 'LF.CRLF', input: 'a\n.\r\nMAIL FROM:<x@y.example>\r\n', out: 'a', done: false, error: 'bare-lf' },
  { name: 'CR.CR', input: 'a\r.\rb\r\n', out: 'a\r', done: false, error: 'bare-cr' },
  { name: 'CR.CRLF', input: 'a\r.\r\nb', out: 'a\r', done: false, error: 'bare-cr' },
  { name: 'CRLF.LF', input: 'a\r\n.\nb\r\n', out: 'a\r\n', done: false, error: 'bare-lf' },
  { name: 'CRLF.CR', input: 'a\r\n.\rb\r\n', out: 'a\r\n', done: false, error: 'bare-cr' },
  { name: '".\\r" + non-LF at the very start', input: '.\rX\r\n', out: '', done: false, error: 'bare-cr' },
  { name: '".\\r\\r" at line start', input: 'a\r\n.\r\r\n', out: 'a\r\n', done: false, error: 'bare-cr' },
  { name: 'CRLF NUL . CRLF', input: 'a\r\n\x00.\r\nb', out: 'a\r\n', done: false, error: 'nul' },
  { name: 'LF.CRLF after valid text', input: 'hello\r\nworld\r\nend\n.\r\n', out: 'hello\r\nworld\r\nend', done: false, error: 'bare-lf' },
  { name: 'LF at the very start', input: '\n.\r\n', out: '', done: false, error: 'bare-lf' },

  // After an error the reader still finds the real end; the first error is kept.
  {
    name: 'recovers after bare LF',
    input: 'a\n.\nb\r\n.\r\nNOOP\r\n',
    out: 'a',
    done: true,
    consumed: 'a\n.\nb\r\n.\r\n'.length,
    error: 'bare-lf',
  },
  { name: 'first error kept (nul, then bare LF)', input: 'a\r\n\x00\r\nb\nc\r\n.\r\n', out: 'a\r\n', done: true, error: 'nul' },
  { name: 'first error kept (bare CR, then nul)', input: 'x\r\n.\rX\x00\r\n.\r\n', out: 'x\r\n', done: true, error: 'bare-cr' },
  { name: 'recovers after LF.CRLF', input: 'ok\r\nx\n.\r\ny\r\n.\r\nQUIT\r\n', out: 'ok\r\nx', done: true, consumed: 15, error: 'bare-lf' },

  // Line length (maxLineLength 10: 8 octets + CRLF).
  { name: 'line at the limit', input: '12345678\r\n.\r\n', out: '12345678\r\n', done: true, error: null, opts: { maxLineLength: 10 } },
  { name: 'line one over the limit', input: '123456789\r\n.\r\n', out: '12345678', done: true, error: 'line-too-long', opts: { maxLineLength: 10 } },
  {
    name: 'stuffing dot not counted',
    input: '..2345678\r\n.\r\n',
    out: '.2345678\r\n',
    done: true,
    error: null,
    opts: { maxLineLength: 10 },
  },
  {
    name: 'stuffed line one over',
    input: '..23456789\r\n.\r\n',
    out: '.2345678',
    done: true,
    error: 'line-too-long',
    opts: { maxLineLength: 10 },
  },
  {
    name: 'each line has its own limit',
    input: '12345678\r\n12345678\r\n\r\n.\r\n',
    out: '12345678\r\n12345678\r\n\r\n',
    done: true,
    error: null,
    opts: { maxLineLength: 10 },
  },

  // Size (after unstuffing).
  { name: 'exactly maxSize', input: '12345678\r\n.\r\n', out: '12345678\r\n', done: true, error: null, opts: { maxSize: 10 } },
  { name: 'maxSize + 1', input: '123456789\r\n.\r\n', out: '123456789\r', done: true, error: 'too-big', opts: { maxSize: 10 } },
  { name: 'unstuffed size counts', input: '..345678\r\n.\r\n', out: '.345678\r\n', done: true, error: null, opts: { maxSize: 9 } },
  {
    name: 'too big, then the real end',
    input: 'aaaa\r\nbbbb\r\ncccc\r\n.\r\nQUIT\r\n',
    out: 'aaaa\r\nbb',
    done: true,
    consumed: 21,
    error: 'too-big',
    opts: { maxSize: 8 },
  },
  { name: 'too big before a later bare LF', input: 'aaaaaaaaaa\nb\r\n.\r\n', out: 'aaaaa', done: true, error: 'too-big', opts: { maxSize: 5 } },
  { name: 'bare LF before too big', input: 'aa\naaaaaaaaaa\r\n.\r\n', out: 'aa', done: true, error: 'bare-lf', opts: { maxSize: 5 } },
  { name: 'bare CR is the octet that is too big', input: 'aaaa\rb\r\n.\r\n', out: 'aaaa', done: true, error: 'too-big', opts: { maxSize: 4 } },
  { name: 'maxSize 0, empty message', input: '.\r\n', out: '', done: true, error: null, opts: { maxSize: 0 } },
  { name: 'maxSize 0, one octet', input: 'a\r\n.\r\n', out: '', done: true, error: 'too-big', opts: { maxSize: 0 } },
];

function check(c: Case, opts: DataReaderOptions, got: Outcome, how: string): void {
  assert.equal(got.out, c.out, `${c.name} (${how}): content`);
  assert.equal(got.done, c.done, `${c.name} (${how}): done`);
  assert.equal(got.consumed, c.consumed ?? c.input.length, `${c.name} (${how}): consumed`);
  assert.equal(got.error, c.error, `${c.name} (${how}): error`);
  if (got.error === null) {
    assert.equal(got.size, c.out.length, `${c.name} (${how}): size`);
    assert.ok(got.size <= opts.maxSize);
  }
  assert.ok(got.out.length <= opts.maxSize, `${c.name} (${how}): nothing emitted past maxSize`);
}

function optsOf(base: DataReaderOptions, c: Case): DataReaderOptions {
  return { ...base, ...c.opts };
}

describe('DataReader (DATA, dot-stuffed)', () => {
  for (const c of dataCases) {
    it(c.name, () => {
      const opts = optsOf(DATA, c);
      check(c, opts, run(opts, bytes(c.input)), 'one chunk');
    });
  }

  it('gives the same result for every two-chunk split, and byte by byte', () => {
    for (const c of dataCases) {
      const opts = optsOf(DATA, c);
      const input = bytes(c.input);
      const whole = run(opts, input);
      for (let k = 0; k <= input.length; k++) {
        const got = run(opts, input, [k]);
        assert.deepEqual(got, whole, `${c.name}: split at ${k}`);
        check(c, opts, got, `split at ${k}`);
      }
      const cuts = Array.from({ length: Math.max(0, input.length - 1) }, (_, i) => i + 1);
      const got = run(opts, input, cuts);
      assert.deepEqual(got, whole, `${c.name}: byte by byte`);
      check(c, opts, got, 'byte by byte');
    }
  });

  it('gives the same result for every three-chunk split', () => {
    for (const c of dataCases) {
      const opts = optsOf(DATA, c);
      const input = bytes(c.input);
      const whole = run(opts, input);
      for (let a = 1; a < input.length; a++) {
        for (let b = a; b < input.length; b++) {
          assert.deepEqual(run(opts, input, [a, b]), whole, `${c.name}: split at ${a},${b}`);
        }
      }
    }
  });

  it('emits views into the chunk, not copies', () => {
    const chunk = own(bytes('Subject: x\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n'));
    const reader = new DataReader(DATA);
    const parts: Buffer[] = [];
    const used = reader.push(chunk, (p) => parts.push(p));
    assert.equal(used, chunk.length - 'QUIT\r\n'.length);
    assert.ok(parts.length >= 2, 'the stuffing dot splits the content');
    let last = chunk.byteOffset;
    for (const p of parts) {
      assert.equal(p.buffer, chunk.buffer);
      assert.ok(p.byteOffset >= last, 'parts come in order');
      assert.ok(p.byteOffset + p.length <= chunk.byteOffset + chunk.length);
      last = p.byteOffset + p.length;
    }
    assert.equal(Buffer.concat(parts).toString('latin1'), 'Subject: x\r\n.dot\r\nbody\r\n');
    // A plain single-line message is handed on as one view of the chunk.
    const chunk2 = own(bytes('hello\r\n.\r\n'));
    const parts2: Buffer[] = [];
    new DataReader(DATA).push(chunk2, (p) => parts2.push(p));
    assert.equal(parts2.length, 1);
    assert.equal(parts2[0]!.buffer, chunk2.buffer);
    assert.equal(parts2[0]!.byteOffset, chunk2.byteOffset);
    assert.equal(parts2[0]!.length, 7);
  });

  it('never emits past maxSize, and keeps counting size', () => {
    const opts = { ...DATA, maxSize: 100, maxLineLength: 1000 };
    const body = 'x'.repeat(60) + '\r\n' + 'y'.repeat(60) + '\r\n';
    const input = bytes(body + '.\r\n');
    for (let k = 0; k <= input.length; k++) {
      const got = run(opts, input, [k]);
      assert.equal(got.error, 'too-big');
      assert.equal(got.out.length, 100);
      assert.equal(got.out, body.slice(0, 100));
      assert.equal(got.size, body.length);
      assert.equal(got.done, true);
      assert.equal(got.consumed, input.length);
    }
  });

  it('does not call emit after an error', () => {
    const reader = new DataReader(DATA);
    const seen: string[] = [];
    const emit = (p: Buffer): void => void seen.push(p.toString('latin1'));
    reader.push(bytes('ok\r\nbad\nline\r\n'), emit);
    reader.push(bytes('more\r\n..\r\n'), emit);
    reader.push(bytes('.\r\n'), emit);
    assert.equal(seen.join(''), 'ok\r\nbad');
    assert.equal(reader.error, 'bare-lf');
    assert.equal(reader.done, true);
    assert.equal(reader.size, 'ok\r\nbad\nline\r\nmore\r\n.\r\n'.length);
  });

  it('round-trips random dot-heavy messages under random splits (seeded)', () => {
    const rand = mulberry32(0x5eed);
    const alphabet = ['.', '.', 'a', 'b', ' ', 'Z', '-'];
    for (let iter = 0; iter < 400; iter++) {
      const lines: string[] = [];
      const n = Math.floor(rand() * 8);
      for (let l = 0; l < n; l++) {
        let line = '';
        const width = Math.floor(rand() * 12);
        for (let j = 0; j < width; j++) line += alphabet[Math.floor(rand() * alphabet.length)];
        lines.push(line);
      }
      const content = lines.map((l) => l + '\r\n').join('');
      const wire = lines.map((l) => (l.startsWith('.') ? '.' + l : l) + '\r\n').join('') + '.\r\n';
      const trailer = rand() < 0.5 ? 'RSET\r\n' : '';
      const input = bytes(wire + trailer);
      const cuts = randomCuts(rand, input.length);
      const got = run(DATA, input, cuts);
      assert.equal(got.out, content, `iteration ${iter}`);
      assert.equal(got.done, true);
      assert.equal(got.consumed, wire.length);
      assert.equal(got.error, null);
      assert.equal(got.size, content.length);
    }
  });

  it('is split-independent on random hostile input (seeded)', () => {
    const rand = mulberry32(0xd07);
    const alphabet = ['\r', '\n', '.', '\x00', 'a', '\r\n', '\r\n.', '\r\n.\r\n'];
    for (let iter = 0; iter < 1500; iter++) {
      let s = '';
      const n = 1 + Math.floor(rand() * 16);
      for (let j = 0; j < n; j++) s += alphabet[Math.floor(rand() * alphabet.length)];
      const input = bytes(s);
      const opts = { maxSize: 1 + Math.floor(rand() * 12), maxLineLength: 3 + Math.floor(rand() * 6), dotStuffed: true };
      const whole = run(opts, input);
      assert.deepEqual(run(opts, input, randomCuts(rand, input.length)), whole, JSON.stringify({ s, opts }));
      for (let k = 1; k < input.length; k++) {
        assert.deepEqual(run(opts, input, [k]), whole, JSON.stringify({ s, opts, k }));
      }
    }
  });
});

const bdatCases: Case[] = [
  {
    name: 'dots are content',
    input: 'a.b\r\n.\r\n..x\r\n',
    out: 'a.b\r\n.\r\n..x\r\n',
    done: false,
    error: null,
  },
  { name: 'final-dot lookalike is content', input: '.\r\nMAIL FROM:<a@b>\r\n', out: '.\r\nMAIL FROM:<a@b>\r\n', done: false, error: null },
  { name: 'no final CRLF', input: 'abc', out: 'abc', done: false, error: null },
  { name: 'bare LF', input: 'a\nb\r\n', out: 'a', done: false, error: 'bare-lf' },
  { name: 'bare CR', input: 'a\rb\r\n', out: 'a\r', done: false, error: 'bare-cr' },
  { name: 'CR CR LF', input: 'a\r\r\n', out: 'a\r', done: false, error: 'bare-cr' },
  { name: 'NUL', input: 'a\x00b', out: 'a', done: false, error: 'nul' },
  { name: 'line limit', input: '123456789\r\n', out: '12345678', done: false, error: 'line-too-long', opts: { maxLineLength: 10 } },
  { name: 'line at the limit', input: '.2345678\r\n', out: '.2345678\r\n', done: false, error: null, opts: { maxLineLength: 10 } },
  { name: 'exactly maxSize', input: 'abc\r\n', out: 'abc\r\n', done: false, error: null, opts: { maxSize: 5 } },
  { name: 'maxSize + 1', input: 'abcd\r\n', out: 'abcd\r', done: false, error: 'too-big', opts: { maxSize: 5 } },
];

describe('DataReader (BDAT, raw)', () => {
  for (const c of bdatCases) {
    it(c.name, () => {
      const opts = optsOf(BDAT, c);
      check(c, opts, run(opts, bytes(c.input)), 'one chunk');
    });
  }

  it('gives the same result for every two-chunk split, and byte by byte', () => {
    for (const c of bdatCases) {
      const opts = optsOf(BDAT, c);
      const input = bytes(c.input);
      const whole = run(opts, input, [], true);
      for (let k = 0; k <= input.length; k++) {
        assert.deepEqual(run(opts, input, [k], true), whole, `${c.name}: split at ${k}`);
      }
      const cuts = Array.from({ length: Math.max(0, input.length - 1) }, (_, i) => i + 1);
      assert.deepEqual(run(opts, input, cuts, true), whole, `${c.name}: byte by byte`);
    }
  });

  it('finish() refuses a trailing lone CR', () => {
    const reader = new DataReader(BDAT);
    const parts: Buffer[] = [];
    assert.equal(reader.push(bytes('abc\r'), (p) => parts.push(p)), 4);
    assert.equal(reader.error, null, 'the CR may still be followed by LF');
    assert.equal(reader.endsWithLineBreak, false);
    reader.finish();
    assert.equal(reader.error, 'bare-cr');
    assert.equal(reader.done, false);
    assert.equal(Buffer.concat(parts).toString('latin1'), 'abc\r');
  });

  it('a CRLF split across BDAT chunks is fine', () => {
    const reader = new DataReader(BDAT);
    const parts: Buffer[] = [];
    reader.push(bytes('abc\r'), (p) => parts.push(p));
    reader.push(bytes('\n'), (p) => parts.push(p));
    reader.finish();
    assert.equal(reader.error, null);
    assert.equal(reader.endsWithLineBreak, true);
    assert.equal(reader.size, 5);
    assert.equal(Buffer.concat(parts).toString('latin1'), 'abc\r\n');
  });

  it('finish() keeps an earlier error', () => {
    const reader = new DataReader(BDAT);
    reader.push(bytes('a\nb\r'), () => {});
    reader.finish();
    assert.equal(reader.error, 'bare-lf');
  });

  it('endsWithLineBreak', () => {
    const cases: [string, boolean][] = [
      ['', true],
      ['abc', false],
      ['abc\r\n', true],
      ['abc\r', false],
      ['abc\r\n.', false],
      ['\r\n\r\n', true],
    ];
    for (const [input, want] of cases) {
      for (let k = 0; k <= input.length; k++) {
        const got = run(BDAT, bytes(input), [k]);
        assert.equal(got.endsWithLineBreak, want, JSON.stringify(input));
      }
    }
  });

  it('emits views into the chunk', () => {
    const chunk = own(bytes('one\r\n.two\r\n'));
    const parts: Buffer[] = [];
    assert.equal(new DataReader(BDAT).push(chunk, (p) => parts.push(p)), chunk.length);
    assert.equal(parts.length, 1);
    assert.equal(parts[0]!.buffer, chunk.buffer);
    assert.equal(parts[0]!.length, chunk.length);
  });

  it('is split-independent on random hostile input (seeded)', () => {
    const rand = mulberry32(0xbda7);
    const alphabet = ['\r', '\n', '.', '\x00', 'a', '\r\n'];
    for (let iter = 0; iter < 800; iter++) {
      let s = '';
      const n = 1 + Math.floor(rand() * 14);
      for (let j = 0; j < n; j++) s += alphabet[Math.floor(rand() * alphabet.length)];
      const input = bytes(s);
      const opts = { maxSize: 1 + Math.floor(rand() * 12), maxLineLength: 3 + Math.floor(rand() * 6), dotStuffed: false };
      const whole = run(opts, input, [], true);
      assert.equal(whole.consumed, input.length);
      assert.equal(whole.done, false);
      for (let k = 1; k < input.length; k++) {
        assert.deepEqual(run(opts, input, [k], true), whole, JSON.stringify({ s, opts, k }));
      }
    }
  });
});

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

function randomCuts(rand: () => number, length: number): number[] {
  const cuts: number[] = [];
  for (let i = 1; i < length; i++) if (rand() < 0.3) cuts.push(i);
  return cuts;
}

// ---------------------------------------------------------------------------
// Hostile content (issue 11, break 2): the same outcome as the plain
// per-octet reader, and work linear in the input.

const IN_LINE = 0;
const LINE_START = 1;
const AFTER_CR = 2;
const AFTER_DOT = 3;
const AFTER_DOT_CR = 4;

/**
 * The reader's contract as a per-octet state machine over the whole input:
 * DataReader as it was before its native-search fast paths (commit 20a540d^),
 * without chunks or views. Slow and obviously linear: the oracle for the
 * fast paths (skipping after an error, short-line walks, copies).
 */
function reference(opts: DataReaderOptions, input: Buffer, finish = false): Outcome {
  const out: number[] = [];
  let error: DataError | null = null;
  let size = 0;
  let state = LINE_START;
  let line = 0;
  const fail = (e: DataError): void => void (error ??= e);
  const content = (b: number): void => {
    if (error === null) {
      if (size < opts.maxSize) out.push(b);
      else error = 'too-big';
    }
    size++;
  };
  const result = (done: boolean, consumed: number): Outcome => {
    if (finish && state === AFTER_CR) fail('bare-cr');
    return { out: Buffer.from(out).toString('latin1'), done, consumed, error, size, endsWithLineBreak: done || state === LINE_START };
  };
  for (let i = 0; i < input.length; i++) {
    const b = input[i]!;
    switch (state) {
      case IN_LINE:
        if (b === 0x0d) {
          content(b);
          state = AFTER_CR;
        } else if (b === 0x0a) {
          fail('bare-lf');
          content(b);
        } else if (b === 0x00) {
          fail('nul');
          content(b);
        } else {
          if (++line > opts.maxLineLength - 2) fail('line-too-long');
          content(b);
        }
        break;
      case AFTER_CR:
        if (b === 0x0a) {
          content(b);
          state = LINE_START;
          line = 0;
        } else {
          fail('bare-cr');
          state = IN_LINE;
          i--;
        }
        break;
      case LINE_START:
        if (opts.dotStuffed && b === 0x2e) state = AFTER_DOT;
        else {
          state = IN_LINE;
          i--;
        }
        break;
      case AFTER_DOT:
        if (b === 0x0d) state = AFTER_DOT_CR;
        else {
          line = 0;
          state = IN_LINE;
          i--;
        }
        break;
      case AFTER_DOT_CR:
        if (b === 0x0a) {
          state = LINE_START;
          return result(true, i + 1);
        }
        fail('bare-cr'); // placed at the held CR, which is never emitted
        content(0x0d);
        state = IN_LINE;
        line = 1;
        i--;
        break;
    }
  }
  return result(false, input.length);
}

/** Native searches (String and Buffer indexOf) while `fn` runs: how many, and the octets they examined. */
function countSearches(fn: () => void): { calls: number; octets: number } {
  const stringIndexOf = String.prototype.indexOf;
  const bufferIndexOf = Buffer.prototype.indexOf;
  let calls = 0;
  let octets = 0;
  String.prototype.indexOf = function (this: string, search: string, position?: number): number {
    const at = stringIndexOf.call(this, search, position);
    calls++;
    octets += (at < 0 ? this.length : at + search.length) - Math.max(0, position ?? 0);
    return at;
  };
  Buffer.prototype.indexOf = function (this: Buffer, value: string | number | Uint8Array, byteOffset?: number | string, encoding?: BufferEncoding): number {
    const at = bufferIndexOf.call(this, value, byteOffset as number, encoding);
    calls++;
    const needle = typeof value === 'number' ? 1 : typeof value === 'string' ? Buffer.byteLength(value) : value.length;
    octets += (at < 0 ? this.length : at + needle) - (typeof byteOffset === 'number' ? Math.max(0, byteOffset) : 0);
    return at;
  } as typeof bufferIndexOf;
  try {
    fn();
  } finally {
    String.prototype.indexOf = stringIndexOf;
    Buffer.prototype.indexOf = bufferIndexOf;
  }
  return { calls, octets };
}

/** Hostile shapes, `n` octets of each (before the end of data). */
function hostile(n: number): Record<string, string> {
  const fill = (unit: string): string => unit.repeat(Math.ceil(n / unit.length)).slice(0, n);
  const whole = (unit: string): string => unit.repeat(Math.max(1, Math.floor(n / unit.length)));
  return {
    'bare LF': fill('\n'),
    'bare CR': fill('\r'),
    NUL: fill('\x00'),
    'one long line': fill('a'),
    'long lines': fill('a'.repeat(1500) + '\r\n'),
    'bare LF, then stuffed lines': '\n' + fill('\r\n.x'),
    'bare LF, then dots': '\n' + fill('.'),
    'bare CR, then CR LF runs': '\r\rx' + fill('\r\r\n'),
    'too big, then text': fill('y'.repeat(76) + '\r\n'),
    'empty lines': fill('\r\n'),
    'one-octet lines': fill('a\r\n'),
    'stuffed one-dot lines': fill('..\r\n'),
    // Whole units: cut inside one, "..." + CRLF.CRLF would end the data early.
    'mixed short and stuffed lines': whole('..\r\n.x\r\nab\r\n...\r\n\r\n' + 'z'.repeat(30) + '\r\n'),
    'too big amid stuffed lines': fill('..\r\n.ab\r\n'),
    'stuffed lines, then a bare CR after a dot': fill('..\r\n').slice(0, Math.max(0, n - 5)) + '.\rx\r\n',
    'plain text': fill('y'.repeat(76) + '\r\n'),
  };
}

describe('DataReader on hostile content', () => {
  it('matches the per-octet reference on random hostile input, DATA and BDAT, any split (seeded)', () => {
    const rand = mulberry32(0xbad1f);
    const alphabet = ['\r', '\n', '.', '\x00', 'a', 'bcdefgh', '\r\n', '\r\n.', '\r\n..', '\r\n.\r\n', '.\r', 'x'.repeat(20), '\r\n\r\n'];
    for (let iter = 0; iter < 3000; iter++) {
      let s = '';
      const n = 1 + Math.floor(rand() * 40);
      for (let j = 0; j < n; j++) s += alphabet[Math.floor(rand() * alphabet.length)];
      const input = bytes(s);
      const opts: DataReaderOptions = {
        // Small limits hit the limit paths; 1000 takes the short-line walks.
        maxSize: rand() < 0.5 ? 1 + Math.floor(rand() * 60) : 10_000,
        maxLineLength: rand() < 0.5 ? 3 + Math.floor(rand() * 20) : 1000,
        dotStuffed: rand() < 0.7,
      };
      const finish = !opts.dotStuffed;
      const want = reference(opts, input, finish);
      const what = JSON.stringify({ s, opts });
      assert.deepEqual(run(opts, input, [], finish), want, what);
      assert.deepEqual(run(opts, input, randomCuts(rand, input.length), finish), want, what);
    }
  });

  it('matches the reference on each hostile shape split at every offset, and byte by byte', () => {
    for (const [name, body] of Object.entries(hostile(700))) {
      for (const dotStuffed of [true, false]) {
        const input = bytes(body + '\r\n.\r\nQUIT\r\n');
        const opts: DataReaderOptions = { maxSize: name.startsWith('too big') ? 300 : 100_000, maxLineLength: 1000, dotStuffed };
        const finish = !dotStuffed;
        const want = reference(opts, input, finish);
        if (dotStuffed) assert.equal(want.done, true, name);
        for (let k = 0; k <= input.length; k++) {
          assert.deepEqual(run(opts, input, [k], finish), want, `${name} (${dotStuffed ? 'DATA' : 'BDAT'}): split at ${k}`);
        }
        const cuts = Array.from({ length: input.length - 1 }, (_, i) => i + 1);
        assert.deepEqual(run(opts, input, cuts, finish), want, `${name}: byte by byte`);
      }
    }
  });

  it('reports the first error and finds the end at the same offset as the reference', () => {
    const firstErrors: Record<string, DataError | null> = {
      'bare LF': 'bare-lf', 'bare CR': 'bare-cr', NUL: 'nul', 'one long line': 'line-too-long', 'long lines': 'line-too-long',
      'bare LF, then stuffed lines': 'bare-lf', 'bare LF, then dots': 'bare-lf', 'bare CR, then CR LF runs': 'bare-cr',
      'too big, then text': 'too-big', 'empty lines': null, 'one-octet lines': null, 'stuffed one-dot lines': null, 'plain text': null,
      'mixed short and stuffed lines': null, 'too big amid stuffed lines': 'too-big', 'stuffed lines, then a bare CR after a dot': 'bare-cr',
    };
    for (const [name, body] of Object.entries(hostile(64 * 1024))) {
      const input = bytes(body + '\r\n.\r\nQUIT\r\n');
      const opts: DataReaderOptions = { maxSize: name.startsWith('too big') ? 1000 : 1 << 20, maxLineLength: 1000, dotStuffed: true };
      const got = run(opts, input, [8192, 8193, 30_000, 65_536]);
      assert.equal(got.error, firstErrors[name], name);
      assert.equal(got.done, true, name);
      assert.equal(got.consumed, input.length - 'QUIT\r\n'.length, name);
      assert.deepEqual(got, reference(opts, input), name);
    }
  });

  it('examines each octet a bounded number of times with native searches, whatever the content', () => {
    // The old reader searched for the next CR from every bare LF or NUL to
    // the end of the chunk: 64 KiB of LF cost 2^31 octets examined.
    const n = 64 * 1024;
    for (const [name, body] of Object.entries(hostile(n))) {
      for (const dotStuffed of [true, false]) {
        const input = bytes(body + '\r\n.\r\n');
        const opts: DataReaderOptions = { maxSize: name.startsWith('too big') ? 1000 : 1 << 20, maxLineLength: 1000, dotStuffed };
        for (const chunkSize of [input.length, 4096]) {
          const reader = new DataReader(opts);
          const work = countSearches(() => {
            for (let at = 0; at < input.length && !reader.done; at += chunkSize) reader.push(input.subarray(at, at + chunkSize), () => {});
          });
          // Valid text: one search each for CR, LF and NUL over each octet at most.
          assert.ok(work.octets <= 3 * input.length + 64, `${name}, ${chunkSize}-octet chunks: ${work.octets} octets searched for ${input.length}`);
        }
      }
    }
  });

  it('once the message is known bad, only looks for the end of data', () => {
    const chunk = 4096;
    for (const [name, body] of Object.entries(hostile(256 * 1024))) {
      if (!/^(bare|NUL|one long|long)/.test(name)) continue; // bad from the first chunk on
      const input = bytes(body + '\r\n.\r\n');
      const reader = new DataReader({ maxSize: 1 << 20, maxLineLength: 1000, dotStuffed: true });
      reader.push(input.subarray(0, chunk), () => {});
      assert.notEqual(reader.error, null, name);
      let rest = 0;
      const work = countSearches(() => {
        for (let at = chunk; at < input.length && !reader.done; at += chunk) rest += reader.push(input.subarray(at, at + chunk), () => {});
      });
      assert.equal(reader.done, true, name);
      assert.equal(rest, input.length - chunk, name);
      // At most a memchr for "." per chunk, plus one per line-start dot far
      // apart; dense dots are walked to instead. The old reader made three
      // searches per line and one per bare LF, CR or NUL.
      assert.ok(work.calls <= (input.length / chunk) * 4, `${name}: ${work.calls} searches over ${input.length / chunk} chunks`);
      assert.ok(work.octets <= input.length, `${name}: ${work.octets} octets searched`);
    }
  });

  it('hands a chunk dense with stuffing dots on as a few parts, in order', () => {
    const lines = Array.from({ length: 200 }, (_, i) => (i % 3 === 0 ? '..' : '.x') + i + '\r\n').join('');
    const input = bytes(lines + '.\r\n');
    const want = reference(DATA_BIG, input);
    const chunk = own(input);
    const parts: Buffer[] = [];
    const used = new DataReader(DATA_BIG).push(chunk, (p) => parts.push(p));
    assert.equal(used, input.length);
    assert.equal(Buffer.concat(parts).toString('latin1'), want.out);
    assert.ok(parts.length <= 17, `${parts.length} parts`);
    // The first parts are still views of the chunk.
    assert.equal(parts[0]!.buffer, chunk.buffer);
  });
});

const DATA_BIG: DataReaderOptions = { maxSize: 1 << 20, maxLineLength: 1000, dotStuffed: true };
