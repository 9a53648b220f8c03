import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HeaderScanner, MAX_ORIGINATOR_BYTES } from './headers.ts';

const MSG =
  'Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n' +
  'received: from c\r\n\tby d; Mon, 1 Jan 2024 00:00:00 +0000\r\n' +
  'Subject: Received: not a field\r\n' +
  'X-Long-' + 'x'.repeat(200) + ': v\r\n' +
  'Message-ID: <1@x>\r\n' +
  '\r\n' +
  'Received: in the body does not count\r\n';

function scan(parts: Buffer[]): HeaderScanner {
  const s = new HeaderScanner();
  for (const p of parts) s.push(p);
  return s;
}

test('counts Received fields and notes field names, in the header section only', () => {
  const s = scan([Buffer.from(MSG)]);
  assert.equal(s.received, 2);
  assert.equal(s.done, true);
  assert.ok(s.fields.has('message-id'));
  assert.ok(s.fields.has('subject'));
  assert.ok(!s.fields.has('\tby d; mon, 1 jan 2024 00'));
});

test('the same result for the message split at every offset and byte by byte', () => {
  const buf = Buffer.from(MSG);
  for (let i = 0; i <= buf.length; i++) {
    const s = scan([buf.subarray(0, i), buf.subarray(i)]);
    assert.equal(s.received, 2, `split at ${i}`);
    assert.equal(s.done, true);
    assert.deepEqual([...s.fields].sort(), ['message-id', 'received', 'subject'], `split at ${i}`);
  }
  const bytes = scan([...buf].map((b) => Buffer.from([b])));
  assert.equal(bytes.received, 2);
});

test('a message without a body or blank line', () => {
  const s = scan([Buffer.from('Received: x\r\nReceived: y\r\n')]);
  assert.equal(s.received, 2);
  assert.equal(s.done, false);
});

test('From is captured unfolded, at any split', () => {
  const msg = 'Subject: x\r\nFrom: "Alice Example"\r\n <alice@tern.test>\r\nTo: b@x.test\r\n\r\nFrom: body@x.test\r\n';
  const buf = Buffer.from(msg);
  for (let i = 0; i <= buf.length; i++) {
    const s = scan([buf.subarray(0, i), buf.subarray(i)]);
    assert.deepEqual(s.get('from'), ['"Alice Example" <alice@tern.test>'], `split at ${i}`);
  }
  const two = scan([Buffer.from('From: a@x.test\r\nFrom: b@y.test\r\n\r\n')]);
  assert.deepEqual(two.get('from'), ['a@x.test', 'b@y.test']);
});

// Issue 11: the four originator fields, whole, however they are written.
const ORIGINATORS =
  'From: Alice <alice@tern.test>,\r\n\tBob <bob@x.test>\r\n' +
  'X-Mailer: x\r\n' +
  'SENDER: s@x.test\r\n' +
  'Resent-From: rf@x.test\r\n' +
  'Resent-Sender\t \t: rs@x.test\r\n' +
  'From' + ' '.repeat(100) + ': padded@x.test\r\n' +
  'Not a field\r\n' +
  ' not@from.test\r\n' +
  'X-' + 'y'.repeat(100) + ': v\r\n' +
  '\r\n' +
  'Sender: body@x.test\r\n';

test('From, Sender, Resent-From, Resent-Sender: every field whole, obs white space before the colon included, at every split', () => {
  const buf = Buffer.from(ORIGINATORS);
  const check = (s: HeaderScanner, at: string): void => {
    assert.equal(s.done, true, at);
    assert.deepEqual(s.get('from'), ['Alice <alice@tern.test>,\tBob <bob@x.test>', 'padded@x.test'], at);
    assert.deepEqual(s.get('sender'), ['s@x.test'], at);
    assert.deepEqual(s.get('resent-from'), ['rf@x.test'], at);
    assert.deepEqual(s.get('resent-sender'), ['rs@x.test'], at);
    // A continuation after a line that is no field belongs to no field; a name over 64 octets is not recorded.
    assert.deepEqual([...s.fields].sort(), ['from', 'resent-from', 'resent-sender', 'sender', 'x-mailer'], at);
    assert.equal(s.truncated, false, at);
  };
  for (let i = 0; i <= buf.length; i++) check(scan([buf.subarray(0, i), buf.subarray(i)]), `split at ${i}`);
  check(scan([...buf].map((b) => Buffer.from([b]))), 'byte by byte');
});

test('a From: far past the old 4,096-octet cut is kept whole; past MAX_ORIGINATOR_BYTES the scanner says it cut', () => {
  const padded = 'k0@tern.test' + ',\r\n '.repeat(2100) + 'Bob <bob@evil.test>';
  const s = scan([Buffer.from(`From: ${padded}\r\nSubject: x\r\n\r\nbody\r\n`)]);
  assert.equal(s.get('from')[0], padded.replace(/\r\n/g, ''));
  assert.equal(s.truncated, false);
  // All originator fields together count; memory stays bounded whatever the message.
  const half = 'a'.repeat(MAX_ORIGINATOR_BYTES / 2);
  const over = scan([Buffer.from(`From: ${half}\r\nSender: ${half}\r\nResent-From: x@y.test\r\n\r\n`)]);
  assert.equal(over.truncated, true);
  const kept = [...over.values.values()].flat().reduce((n, v) => n + v.length, 0);
  assert.ok(kept <= MAX_ORIGINATOR_BYTES, `kept ${kept}`);
  // Exactly at the limit is not cut.
  const at = scan([Buffer.from(`From:${'a'.repeat(MAX_ORIGINATOR_BYTES - 2)}\r\n\r\n`)]);
  assert.equal(at.truncated, false);
  assert.equal(at.get('from')[0]!.length, MAX_ORIGINATOR_BYTES - 2);
});

test('values are read as UTF-8 (RFC 6532); bytes after the header section are never captured', () => {
  const s = scan([Buffer.from('From: Jörg <jörg@bücher.test>\r\n\r\nFrom: x@y.test\r\nSender: z@y.test\r\n')]);
  assert.deepEqual(s.get('from'), ['Jörg <jörg@bücher.test>']);
  assert.deepEqual(s.get('sender'), []);
});
