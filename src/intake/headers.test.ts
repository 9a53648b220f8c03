import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HeaderScanner } from './headers.ts';

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

test('From is captured unfolded, bounded, at any split', () => {
  const msg = 'Subject: x\r\nFrom: "Alice Example"\r\n <alice@tern.test>\r\nTo: b@x.test\r\n\r\nFrom: body@x.test\r\n';
  const buf = Buffer.from(msg);
  for (let i = 0; i <= buf.length; i++) {
    const s = scan([buf.subarray(0, i), buf.subarray(i)]);
    assert.deepEqual(s.get('from'), ['"Alice Example"\n <alice@tern.test>'.replace('\n', '')], `split at ${i}`);
  }
  const long = scan([Buffer.from('From: ' + 'a'.repeat(10000) + '@x.test\r\n\r\n')]);
  assert.equal(long.get('from')[0]!.length <= 4096, true);
  const two = scan([Buffer.from('From: a@x.test\r\nFrom: b@y.test\r\n\r\n')]);
  assert.deepEqual(two.get('from'), ['a@x.test', 'b@y.test']);
});
