import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { readJsonBody, type Done } from './json-body.ts';
import { ApiError } from './problem.ts';

/** Feeds `chunks` through a stream into readJsonBody; resolves with what it handed to the parser, or its error. */
function read(chunks: Buffer[], declared: number, limit = 1 << 20): Promise<{ text?: string; error?: ApiError; fed: number }> {
  return new Promise((resolve) => {
    const payload = new PassThrough();
    let fed = 0;
    const done: Done = (err, body) => resolve(err ? { error: err as ApiError, fed } : { text: body as string, fed });
    readJsonBody(payload, declared, limit, (text, d) => d(null, text), done);
    for (const c of chunks) {
      fed += c.length;
      payload.write(c);
    }
    payload.end();
  });
}

describe('readJsonBody', () => {
  const body = Buffer.from('{"raw":"caf\u00e9 \u{1f600} ok"}', 'utf8');

  it('hands over the same text wherever the body is split, a multi-byte character included', async () => {
    for (let i = 0; i <= body.length; i++) {
      const got = await read([body.subarray(0, i), body.subarray(i)].filter((c) => c.length > 0), body.length);
      assert.equal(got.text, body.toString('utf8'), `split at ${i}`);
    }
    // Chunked: no Content-Length.
    assert.equal((await read([body.subarray(0, 5), body.subarray(5, 9), body.subarray(9)], NaN)).text, body.toString('utf8'));
  });

  it('refuses bytes that are not UTF-8, even when the bad byte stands alone in its chunk', async () => {
    const bad = Buffer.from('{"raw":"caf\xe9"}', 'latin1');
    for (let i = 0; i <= bad.length; i++) {
      const got = await read([bad.subarray(0, i), bad.subarray(i)].filter((c) => c.length > 0), bad.length);
      assert.equal(got.error?.status, 400, `split at ${i}`);
      assert.match(got.error.message, /not valid UTF-8/);
    }
  });

  it('refuses a declared length over the limit before reading anything', async () => {
    let parsed = false;
    const err = await new Promise<Error | null>((resolve) => readJsonBody(new PassThrough(), 2000, 1000, () => (parsed = true), (e) => resolve(e)));
    assert.equal((err as ApiError).status, 413);
    assert.equal(parsed, false);
  });

  it('refuses a chunked body as soon as it passes the limit', async () => {
    const chunk = Buffer.alloc(400, 0x20);
    const got = await read([chunk, chunk, chunk, chunk], NaN, 1000);
    assert.equal(got.error?.status, 413);
  });

  it('takes a body of exactly the limit', async () => {
    const exact = Buffer.from(`"${'a'.repeat(998)}"`);
    assert.equal((await read([exact.subarray(0, 500), exact.subarray(500)], NaN, 1000)).text, exact.toString());
  });

  it('refuses a body that ends short of its Content-Length, and an empty one', async () => {
    assert.equal((await read([body.subarray(0, 10)], body.length)).error?.status, 400);
    const empty = await read([], 0);
    assert.equal(empty.error?.status, 400);
    assert.match(empty.error.message, /empty/);
  });

  it('reports a stream error as a 400', async () => {
    const payload = new PassThrough();
    const err = await new Promise<Error | null>((resolve) => {
      readJsonBody(payload, NaN, 1000, () => assert.fail('parsed'), (e) => resolve(e));
      payload.destroy(new Error('aborted'));
    });
    assert.equal((err as ApiError).status, 400);
  });
});
