import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from './log.ts';

test('one JSON object per line: time, level, msg, then the fields; Errors become their message', () => {
  const lines: string[] = [];
  const log = createLogger('info', (l) => lines.push(l));
  log.info('message', { id: 'ABC', size: 12, e: new Error('boom'), skip: undefined, quote: 'a"b' });
  log.debug('not at info');
  log.warn('bare');
  log.error('reserved', { msg: 'not this', t: 0, level: 'x', ok: true });
  assert.equal(lines.length, 3);
  assert.ok(lines.every((l) => l.endsWith('}\n') && !l.slice(0, -1).includes('\n')));
  const [a, b, c] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.match(String(a!.t), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual({ ...a, t: undefined }, { t: undefined, level: 'info', msg: 'message', id: 'ABC', size: 12, e: 'boom', quote: 'a"b' });
  assert.deepEqual(Object.keys(b!), ['t', 'level', 'msg']);
  assert.deepEqual({ ...c, t: undefined }, { t: undefined, level: 'error', msg: 'reserved', ok: true }, 'fields cannot overwrite the fixed keys');
});
