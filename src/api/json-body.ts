// Reads a JSON request body for Fastify (a content-type parser without
// parseAs): the bytes must be UTF-8 (RFC 8259 §8.1), the body limit holds
// while the body streams in, and a body that came in one chunk, as a small
// message does, is decoded where it lies instead of being copied first.
// Fastify's own reader copies every body (Buffer.concat), which cost more
// per API send than any other single step of reading it (docs/api-bench.md).

import { isUtf8 } from 'node:buffer';
import type { Readable } from 'node:stream';
import { ApiError } from './problem.ts';

export type Done = (err: Error | null, body?: unknown) => void;
/** Parses the decoded text: Fastify's JSON parser with its prototype-poisoning guard. */
export type ParseText = (text: string, done: Done) => void;

/**
 * Collects `payload` and hands its text to `parse`. `declared` is the
 * Content-Length (NaN when chunked): over `limit` is refused before a byte
 * is read, and a body that ends short of it is refused too.
 */
export function readJsonBody(payload: Readable, declared: number, limit: number, parse: ParseText, done: Done): void {
  if (declared > limit) {
    done(tooLarge(limit));
    return;
  }
  let first: Buffer | undefined;
  let more: Buffer[] | undefined;
  let length = 0;
  const cleanup = (): void => {
    payload.removeListener('data', onData);
    payload.removeListener('end', onEnd);
    payload.removeListener('error', onEnd);
  };
  function onData(chunk: Buffer): void {
    length += chunk.length;
    if (length > limit) {
      // Fastify answers with Connection: close, so the rest is never read into memory.
      cleanup();
      done(tooLarge(limit));
      return;
    }
    if (first === undefined) first = chunk;
    else (more ??= [first]).push(chunk);
  }
  function onEnd(err?: Error): void {
    cleanup();
    if (err) {
      done(new ApiError(400, `The request body could not be read: ${err.message}`));
      return;
    }
    if (!Number.isNaN(declared) && length !== declared) {
      done(new ApiError(400, `The body is ${length} octets, not the ${declared} of its Content-Length`));
      return;
    }
    if (length === 0) {
      done(new ApiError(400, 'The body is empty; a JSON document is required'));
      return;
    }
    // `first` may be a view of the socket's read buffer: it is decoded here, never kept.
    const bytes = more ? Buffer.concat(more, length) : first!;
    if (!isUtf8(bytes)) {
      done(new ApiError(400, 'The body is not valid UTF-8 (RFC 8259 §8.1)'));
      return;
    }
    parse(bytes.toString('utf8'), done);
  }
  payload.on('data', onData);
  payload.on('end', onEnd);
  payload.on('error', onEnd);
  payload.resume();
}

function tooLarge(limit: number): ApiError {
  return new ApiError(413, `The request body is larger than ${limit} octets`);
}
