import { describe, it } from 'node:test';
import assert from 'node:assert/strict';

import { ReplyParser, ReplyError, type ParsedReply } from './reply-parser.ts';

const r = (code: number, enhanced: string | undefined, ...lines: string[]): ParsedReply => (enhanced === undefined ? { code, lines } : { code, enhanced, lines });

/** Feed `input` cut at `cuts`, taking replies after every chunk like the client does. */
function feed(input: Buffer, cuts: number[], opts?: ConstructorParameters<typeof ReplyParser>[0]): { replies: ParsedReply[]; error?: string; idle: boolean } {
  const p = new ReplyParser(opts);
  const replies: ParsedReply[] = [];
  const bounds = [0, ...cuts, input.length];
  try {
    for (let k = 0; k + 1 < bounds.length; k++) {
      p.push(Buffer.from(input.subarray(bounds[k]!, bounds[k + 1]!)));
      for (let x = p.next(); x; x = p.next()) replies.push(x);
    }
  } catch (e) {
    assert.ok(e instanceof ReplyError);
    for (let x = p.next(); x; x = p.next()) replies.push(x); // complete before the error
    return { replies, error: e.message, idle: p.idle };
  }
  return { replies, idle: p.idle };
}

interface Case {
  name: string;
  input: string;
  replies: ParsedReply[];
  /** A substring of the protocol error, when one is expected (after `replies`). */
  error?: string;
  /** Bytes of an unfinished reply are left. */
  partial?: boolean;
}

const cases: Case[] = [
  { name: 'greeting', input: '220 mx.example ESMTP\r\n', replies: [r(220, undefined, 'mx.example ESMTP')] },
  { name: 'enhanced code', input: '250 2.1.0 Sender OK\r\n', replies: [r(250, '2.1.0', 'Sender OK')] },
  { name: 'enhanced code alone', input: '250 2.0.0\r\n', replies: [r(250, '2.0.0', '')] },
  { name: 'three-digit parts', input: '550 5.123.456 odd\r\n', replies: [r(550, '5.123.456', 'odd')] },
  { name: 'enhanced class must match', input: '550 4.1.1 no\r\n', replies: [r(550, undefined, '4.1.1 no')] },
  { name: 'not an enhanced code', input: '250 2.1.0x\r\n', replies: [r(250, undefined, '2.1.0x')] },
  { name: 'four-digit part is text', input: '250 2.1000.0 x\r\n', replies: [r(250, undefined, '2.1000.0 x')] },
  { name: 'code only', input: '250\r\n', replies: [r(250, undefined, '')] },
  { name: 'code and space', input: '250 \r\n', replies: [r(250, undefined, '')] },
  {
    name: 'multi-line EHLO',
    input: '250-mx.example Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n',
    replies: [r(250, undefined, 'mx.example Hello', 'PIPELINING', 'SIZE 1000', '8BITMIME')],
  },
  {
    name: 'multi-line with enhanced codes',
    input: '550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n',
    replies: [r(550, '5.7.1', 'first', 'second', 'third')],
  },
  { name: 'empty continuation line', input: '250-\r\n250 x\r\n', replies: [r(250, undefined, '', 'x')] },
  {
    name: 'pipelined replies',
    input: '250 2.1.0 OK\r\n550 5.1.1 unknown\r\n250 2.1.5 OK\r\n354 go ahead\r\n',
    replies: [r(250, '2.1.0', 'OK'), r(550, '5.1.1', 'unknown'), r(250, '2.1.5', 'OK'), r(354, undefined, 'go ahead')],
  },
  { name: 'bare LF is accepted', input: '250-a\n250 b\n220 c\r\n', replies: [r(250, undefined, 'a', 'b'), r(220, undefined, 'c')] },
  { name: 'UTF-8 text', input: Buffer.from('550 5.1.1 jösé unknown\r\n').toString('latin1'), replies: [r(550, '5.1.1', 'jösé unknown')] },
  { name: 'unfinished line stays', input: '250 OK\r\n221 By', replies: [r(250, undefined, 'OK')], partial: true },
  { name: 'unfinished reply stays', input: '250-a\r\n', replies: [], partial: true },
  { name: 'mismatched codes', input: '250-a\r\n251 b\r\n', replies: [], error: 'inside a multi-line' },
  { name: 'code 1yz', input: '150 x\r\n', replies: [], error: 'malformed' },
  { name: 'code 6yz', input: '600 x\r\n', replies: [], error: 'malformed' },
  { name: 'short code', input: '25\r\n', replies: [], error: 'malformed' },
  { name: 'bad separator', input: '250x\r\n', replies: [], error: 'malformed' },
  { name: 'text line', input: 'hello\r\n', replies: [], error: 'malformed' },
  { name: 'empty line', input: '\r\n', replies: [], error: 'malformed' },
  { name: 'bare CR inside', input: '250 a\rb\r\n', replies: [], error: 'bare CR' },
  { name: 'NUL inside', input: '250 a\0b\r\n', replies: [], error: 'NUL' },
  { name: 'good reply, then garbage', input: '250 ok\r\nxyz\r\n', replies: [r(250, undefined, 'ok')], error: 'malformed' },
];

describe('ReplyParser', () => {
  for (const c of cases) {
    it(`${c.name} (split at every offset, and byte by byte)`, () => {
      const input = Buffer.from(c.input, 'latin1');
      const splits: number[][] = [[], Array.from({ length: Math.max(0, input.length - 1) }, (_, i) => i + 1)];
      for (let cut = 1; cut < input.length; cut++) splits.push([cut]);
      for (const cuts of splits) {
        const got = feed(input, cuts);
        const where = `cuts ${JSON.stringify(cuts)}`;
        assert.deepEqual(got.replies, c.replies, where);
        if (c.error) assert.match(got.error ?? '(none)', new RegExp(c.error), where);
        else assert.equal(got.error, undefined, where);
        if (!c.error) assert.equal(got.idle, !c.partial, where);
      }
    });
  }

  it('bounds a line: at the limit it parses, one more octet fails, also before its LF arrives', () => {
    const line = (n: number): Buffer => Buffer.from('250 ' + 'x'.repeat(n - 6) + '\r\n');
    assert.deepEqual(feed(line(64), [], { maxLineLength: 64 }).replies.length, 1);
    assert.match(feed(line(65), [], { maxLineLength: 64 }).error!, /longer than 64/);
    // A line that never ends is refused once it reaches the limit, without waiting for LF.
    const p = new ReplyParser({ maxLineLength: 64 });
    p.push(Buffer.from('250 ' + 'x'.repeat(59)));
    assert.throws(() => p.push(Buffer.from('x')), /longer than 64/);
    // Dead after an error.
    assert.throws(() => p.push(Buffer.from('250 ok\r\n')), ReplyError);
  });

  it('bounds the lines of one reply', () => {
    const lines = (n: number): Buffer => Buffer.from('250-x\r\n'.repeat(n - 1) + '250 x\r\n');
    assert.equal(feed(lines(10), [], { maxLines: 10 }).replies[0]!.lines.length, 10);
    assert.match(feed(lines(11), [], { maxLines: 10 }).error!, /longer than 10 lines/);
  });

  it('counts queued replies', () => {
    const p = new ReplyParser();
    p.push(Buffer.from('250 a\r\n250 b\r\n250'));
    assert.equal(p.count, 2);
    assert.equal(p.idle, false);
    p.next();
    p.next();
    assert.equal(p.count, 0);
    assert.equal(p.idle, false, 'an unfinished line is still held');
    p.push(Buffer.from('\r\n'));
    assert.deepEqual(p.next(), r(250, undefined, ''));
    assert.equal(p.idle, true);
  });
});
