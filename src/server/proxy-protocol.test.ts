import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  ProxyHeaderParser, V1_MAX_LENGTH, V2_SIGNATURE, encodeV1, encodeV2, parse, type ProxyParse,
} from './proxy-protocol.ts';

const SMTP = Buffer.from('EHLO client.test\r\n');

/** Feed `input` in the given pieces; the first final answer wins (as the listener does). */
function feed(pieces: Buffer[]): ProxyParse {
  const p = new ProxyHeaderParser();
  let r: ProxyParse = { kind: 'more' };
  for (let i = 0; i < pieces.length; i++) {
    r = p.push(pieces[i]!);
    // What follows the header goes on to SMTP together with the later pieces.
    if (r.kind === 'header') return { ...r, rest: Buffer.concat([r.rest, ...pieces.slice(i + 1)]) };
    if (r.kind === 'error') return r;
  }
  return r;
}

/** Same answer whole, split at every offset into two, and one octet at a time. */
function parseEverySplit(input: Buffer): ProxyParse {
  const whole = feed([input]);
  for (let i = 0; i <= input.length; i++) {
    const r = feed([input.subarray(0, i), input.subarray(i)]);
    assert.deepEqual(norm(r), norm(whole), `split at ${i}`);
  }
  const bytes = feed([...input].map((b) => Buffer.from([b])));
  assert.deepEqual(norm(bytes), norm(whole), 'one octet at a time');
  return whole;
}

/** Compare rests by content (one is a view of a concatenation, one of the original). */
function norm(r: ProxyParse): unknown {
  if (r.kind === 'error') return { kind: 'error' }; // the message may be more specific with more input
  return r.kind === 'header' ? { ...r, rest: r.rest.toString('latin1') } : r;
}

describe('PROXY protocol v1', () => {
  it('TCP4: source, destination, and the bytes after it', () => {
    const r = parseEverySplit(Buffer.concat([Buffer.from('PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n'), SMTP]));
    assert.equal(r.kind, 'header');
    if (r.kind !== 'header') return;
    assert.deepEqual(r.header, {
      version: 1, command: 'proxy', source: { address: '192.0.2.7', port: 56324 }, destination: { address: '198.51.100.1', port: 25 }, length: 44,
    });
    assert.equal(r.rest.toString(), SMTP.toString());
  });

  it('TCP6 and UNKNOWN', () => {
    const r = parseEverySplit(Buffer.from('PROXY TCP6 2001:db8::7 2001:db8::1 1234 2525\r\n'));
    assert.equal(r.kind === 'header' && r.header.source?.address, '2001:db8::7');
    const u = parseEverySplit(Buffer.from('PROXY UNKNOWN\r\nQUIT\r\n'));
    assert.equal(u.kind, 'header');
    if (u.kind === 'header') {
      assert.equal(u.header.command, 'local');
      assert.equal(u.header.source, undefined);
      assert.equal(u.rest.toString(), 'QUIT\r\n');
    }
    const u2 = parse(Buffer.from('PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\n'));
    assert.equal(u2.kind === 'header' && u2.header.command, 'local');
  });

  it('the longest header (107 octets) is accepted, one more octet is not', () => {
    const max = encodeV1({ address: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', port: 65535 }, { address: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', port: 65535 });
    assert.equal(max.length, 104); // the spec's worst case is UNKNOWN with full addresses: 107
    const unknownMax = Buffer.from(`PROXY UNKNOWN ${'x'.repeat(V1_MAX_LENGTH - 'PROXY UNKNOWN \r\n'.length)}\r\n`);
    assert.equal(unknownMax.length, V1_MAX_LENGTH);
    assert.equal(parseEverySplit(unknownMax).kind, 'header');
    const tooLong = Buffer.from(`PROXY UNKNOWN ${'x'.repeat(V1_MAX_LENGTH - 'PROXY UNKNOWN \r\n'.length + 1)}\r\n`);
    assert.equal(parseEverySplit(tooLong).kind, 'error');
    // No line end at all: refused once 107 octets have come, not buffered forever.
    assert.equal(feed([Buffer.from('PROXY TCP4 ' + '1'.repeat(200))]).kind, 'error');
    assert.equal(feed([Buffer.from('PROXY TCP4 ' + '1'.repeat(V1_MAX_LENGTH - 12))]).kind, 'more');
  });

  const bad: [string, string][] = [
    ['not a header at all', 'EHLO client.test\r\n'],
    ['lower case', 'proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n'],
    ['unknown protocol', 'PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n'],
    ['double space', 'PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n'],
    ['missing field', 'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n'],
    ['extra field', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n'],
    ['IPv6 address under TCP4', 'PROXY TCP4 ::1 5.6.7.8 1 2\r\n'],
    ['IPv4 address under TCP6', 'PROXY TCP6 1.2.3.4 ::1 1 2\r\n'],
    ['bad address', 'PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n'],
    ['port too big', 'PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n'],
    ['port with leading zero', 'PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n'],
    ['negative port', 'PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n'],
    ['bare LF', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n'],
    ['CR without LF', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX'],
    ['NUL inside', 'PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n'],
  ];
  for (const [name, text] of bad) {
    it(`refuses: ${name}`, () => {
      const r = parseEverySplit(Buffer.from(text, 'latin1'));
      assert.equal(r.kind, 'error', JSON.stringify(r));
    });
  }

  it('answers "error" as soon as the prefix cannot be a header', () => {
    assert.equal(parse(Buffer.from('P')).kind, 'more');
    assert.equal(parse(Buffer.from('PROXX')).kind, 'error');
    assert.equal(parse(Buffer.from('E')).kind, 'error');
  });
});

describe('PROXY protocol v2', () => {
  const src4 = { address: '203.0.113.9', port: 40000 };
  const dst4 = { address: '198.51.100.1', port: 25 };

  it('PROXY over TCP/IPv4, with bytes after it', () => {
    const r = parseEverySplit(Buffer.concat([encodeV2(src4, dst4), SMTP]));
    assert.equal(r.kind, 'header');
    if (r.kind !== 'header') return;
    assert.deepEqual(r.header, { version: 2, command: 'proxy', source: src4, destination: dst4, length: 28 });
    assert.equal(r.rest.toString(), SMTP.toString());
  });

  it('PROXY over TCP/IPv6, TLVs skipped', () => {
    const tlv = Buffer.from([0x04, 0x00, 0x03, 0x61, 0x62, 0x63]); // PP2_TYPE_NOOP with 3 octets
    const r = parseEverySplit(Buffer.concat([encodeV2({ address: '2001:db8::9', port: 1 }, { address: '2001:db8::1', port: 2 }, tlv), SMTP]));
    assert.equal(r.kind, 'header');
    if (r.kind !== 'header') return;
    assert.deepEqual(r.header.source, { address: '2001:db8::9', port: 1 });
    assert.equal(r.header.length, 16 + 36 + tlv.length);
    assert.equal(r.rest.toString(), SMTP.toString());
  });

  it('LOCAL: use the connection itself', () => {
    const r = parseEverySplit(Buffer.concat([encodeV2(null), SMTP]));
    assert.equal(r.kind, 'header');
    if (r.kind !== 'header') return;
    assert.equal(r.header.command, 'local');
    assert.equal(r.header.source, undefined);
    assert.equal(r.rest.toString(), SMTP.toString());
  });

  it('AF_UNSPEC and AF_UNIX under PROXY: the connection\'s own endpoints', () => {
    for (const fam of [0x00, 0x31]) {
      const h = encodeV2(src4, dst4);
      h[13] = fam;
      const r = parse(h);
      assert.equal(r.kind === 'header' && r.header.command, 'local');
    }
  });

  const v2 = (mutate: (b: Buffer) => Buffer | void): Buffer => {
    const b = encodeV2(src4, dst4);
    return mutate(b) ?? b;
  };
  const bad: [string, Buffer][] = [
    ['version 1 in the version nibble', v2((b) => void (b[12] = 0x11))],
    ['unknown command', v2((b) => void (b[12] = 0x22))],
    ['UDP', v2((b) => void (b[13] = 0x12))],
    ['IPv4 block too short', v2((b) => { b.writeUInt16BE(8, 14); return b.subarray(0, 24); })],
    ['IPv6 block too short', v2((b) => void (b[13] = 0x21))],
    ['signature broken in the middle', v2((b) => void (b[5] = 0x01))],
  ];
  for (const [name, input] of bad) {
    it(`refuses: ${name}`, () => {
      assert.equal(parseEverySplit(input).kind, 'error');
    });
  }

  it('waits for the whole declared length (16 + len), and no more', () => {
    const h = encodeV2(src4, dst4);
    assert.equal(parse(h.subarray(0, h.length - 1)).kind, 'more');
    assert.equal(parse(V2_SIGNATURE).kind, 'more');
  });

  it('parser keeps its final answer', () => {
    const p = new ProxyHeaderParser();
    const r = p.push(encodeV1(src4, dst4));
    assert.equal(r.kind, 'header');
    assert.equal(p.push(Buffer.from('more')), r);
    const e = new ProxyHeaderParser();
    const bad = e.push(Buffer.from('HELO x\r\n'));
    assert.equal(bad.kind, 'error');
    assert.equal(e.push(encodeV1(src4, dst4)), bad);
  });
});
