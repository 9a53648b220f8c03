// The HTTP/1.1 client: the parser fed every split of scripted answers, then
// the client against real sockets on 127.0.0.1 — node:http servers, and raw
// net servers that write exact bytes (framings node:http would not produce,
// closes at chosen moments, answers that never come).

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { makeSelfSigned } from '../server/tls.ts';
import { DONE, ERROR, MAX_BODY_BYTES, MORE, ResponseParser } from './http1.ts';
import { postTarget, WebhookPoster } from './post.ts';

const closers: Array<() => void> = [];
after(() => {
  for (const c of closers) c();
});

/** Feeds `parts` in order; the result of the last execute() that did not return MORE, or MORE. */
function feed(p: ResponseParser, parts: Buffer[]): number {
  for (const part of parts) {
    const r = p.execute(part);
    if (r !== MORE) return r;
  }
  return MORE;
}

const CL = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world';
const CHUNKED =
  'HTTP/1.1 202 Accepted\r\nTransfer-Encoding: gzip, chunked\r\n\r\n' +
  '5;name="value"\r\nhello\r\n' +
  'A\r\n0123456789\r\n' +
  '0;last\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n';
const INTERIM = 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX: y\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok';

describe('ResponseParser', () => {
  for (const [name, text, status, keepAlive] of [
    ['content-length', CL, 200, true],
    ['chunked with extensions and trailers', CHUNKED, 202, true],
    ['1xx then a final answer', INTERIM, 201, true],
    ['204 (a Content-Length there is ignored)', 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n', 204, true],
    ['HTTP/1.0 with keep-alive', 'HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n', 200, true],
    ['Connection: close', 'HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok', 200, false],
  ] as const) {
    it(`${name}, split at every offset`, () => {
      const bytes = Buffer.from(text, 'latin1');
      for (let at = 0; at <= bytes.length; at++) {
        const p = new ResponseParser();
        const r = feed(p, [bytes.subarray(0, at), bytes.subarray(at)]);
        assert.equal(r, DONE, `split at ${at}`);
        assert.equal(p.status, status, `split at ${at}`);
        assert.equal(p.keepAlive, keepAlive, `split at ${at}`);
      }
      // And one byte at a time, on a parser reused after reset().
      const p = new ResponseParser();
      p.execute(Buffer.from('HTTP/1.1 500 x\r\n\r\n'));
      p.reset();
      const bytesOneByOne = Array.from(bytes, (b) => Buffer.from([b]));
      assert.equal(feed(p, bytesOneByOne), DONE);
      assert.equal(p.status, status);
      // Not DONE a byte early.
      const q = new ResponseParser();
      assert.equal(q.execute(bytes.subarray(0, bytes.length - 1)), MORE);
    });
  }

  it('reads until close when there is neither Content-Length nor Transfer-Encoding', () => {
    const p = new ResponseParser();
    assert.equal(p.execute(Buffer.from('HTTP/1.1 200 OK\r\n\r\nsome')), MORE);
    assert.equal(p.execute(Buffer.from(' body')), MORE);
    assert.equal(p.atEof(), DONE);
    assert.equal(p.status, 200);
    assert.equal(p.keepAlive, false);
  });

  it('an answer cut off before its end is an error', () => {
    const p = new ResponseParser();
    assert.equal(p.execute(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc')), MORE);
    assert.equal(p.atEof(), ERROR);
  });

  it('HTTP/1.0 without keep-alive, and Transfer-Encoding with Content-Length, end the connection', () => {
    const a = new ResponseParser();
    assert.equal(a.execute(Buffer.from('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n')), DONE);
    assert.equal(a.keepAlive, false);
    const b = new ResponseParser();
    assert.equal(b.execute(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')), DONE);
    assert.equal(b.keepAlive, false);
  });

  it('bytes after a complete answer mean the connection is out of step', () => {
    const p = new ResponseParser();
    assert.equal(p.execute(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1')), DONE);
    assert.equal(p.keepAlive, false);
  });

  it('refuses garbage, a bad Content-Length, a bad chunk, a header section over 16 KiB', () => {
    for (const text of [
      'SMTP/1.1 200 OK\r\n\r\n',
      'HTTP/2 200 OK\r\n\r\n',
      'HTTP/1.1 2x0 OK\r\n\r\n',
      'HTTP/1.1 101 Switching Protocols\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n',
      'HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX',
      `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(17 * 1024)}`,
      `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`,
    ]) {
      const p = new ResponseParser();
      assert.equal(p.execute(Buffer.from(text)), ERROR, text.slice(0, 60));
      assert.ok(p.error !== '');
    }
    const same = new ResponseParser();
    assert.equal(same.execute(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok')), DONE);
  });

  it('stops reading a body past 64 KiB, keeping the status and dropping the connection', () => {
    const p = new ResponseParser();
    assert.equal(p.execute(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n')), MORE);
    let r = MORE;
    for (let i = 0; i < 100 && r === MORE; i++) r = p.execute(Buffer.alloc(4096));
    assert.equal(r, DONE);
    assert.equal(p.status, 200);
    assert.equal(p.keepAlive, false);
  });
});

/**
 * A raw server: `onRequest(socket, request, connection index, request index on that connection)`
 * is called once per complete request and scripts the answer.
 */
async function rawServer(onRequest: (socket: net.Socket, request: string, conn: number, n: number) => void): Promise<{ port: number; connections: () => number }> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    const index = connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let seen = '';
    let handled = 0;
    socket.on('data', (b) => {
      seen += b.toString('latin1');
      for (const request of requests(seen).slice(handled)) onRequest(socket, request, index, handled++);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { port: (server.address() as net.AddressInfo).port, connections: () => connections };
}

/** The complete requests in `seen` (our POSTs always carry Content-Length). */
function requests(seen: string): string[] {
  const all: string[] = [];
  let at = 0;
  for (;;) {
    const end = seen.indexOf('\r\n\r\n', at);
    if (end === -1) return all;
    const length = Number(/content-length: (\d+)/i.exec(seen.slice(at, end))?.[1] ?? 0);
    if (seen.length < end + 4 + length) return all;
    all.push(seen.slice(at, end + 4 + length));
    at = end + 4 + length;
  }
}

const BODY = Buffer.from('{"type":"message.delivered"}');
const HEADERS = (): Record<string, string> => ({ 'content-type': 'application/json', 'webhook-id': 'msg_1' });

describe('WebhookPoster over Http1Client', () => {
  it('POSTs the head and body node:http sees, and reuses one connection', async () => {
    const seen: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: string }> = [];
    const sockets = new Set<net.Socket>();
    const server = http.createServer((req, res) => {
      sockets.add(req.socket);
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push({ method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString() });
        if (seen.length % 3 === 0) res.writeHead(200).end('x'.repeat(5000)); // Content-Length
        else if (seen.length % 3 === 1) res.writeHead(204).end();
        else {
          res.writeHead(202);
          res.write('part one');
          res.end('part two'); // chunked
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => server.close());
    const port = (server.address() as net.AddressInfo).port;
    const poster = new WebhookPoster({ timeoutMs: 5000, maxSockets: 4 });
    closers.push(() => poster.close());
    const target = postTarget(new URL(`http://user:p%40ss@127.0.0.1:${port}/hook?a=1`));
    const statuses: Array<number | null> = [];
    for (let i = 0; i < 30; i++) statuses.push((await poster.post(target, HEADERS(), BODY)).status);
    assert.deepEqual(statuses.slice(0, 3), [204, 202, 200]);
    assert.equal(statuses.filter((s) => s === null).length, 0);
    assert.equal(sockets.size, 1, 'one connection for sequential requests');
    assert.equal(seen[0]!.method, 'POST');
    assert.equal(seen[0]!.url, '/hook?a=1');
    assert.equal(seen[0]!.headers.host, `127.0.0.1:${port}`);
    assert.equal(seen[0]!.headers.authorization, `Basic ${Buffer.from('user:p@ss').toString('base64')}`);
    assert.equal(seen[0]!.headers['content-length'], String(BODY.length));
    assert.equal(seen[0]!.headers['webhook-id'], 'msg_1');
    assert.equal(seen[0]!.body, BODY.toString());
    // Concurrent requests: at most maxSockets connections.
    const results = await Promise.all(Array.from({ length: 20 }, () => poster.post(target, HEADERS(), BODY)));
    assert.ok(results.every((r) => r.status !== null));
    assert.ok(sockets.size <= 4, `${sockets.size} connections`);
    server.closeAllConnections();
  });

  it('does not reuse a connection after Connection: close, or after a body read until close', async () => {
    const srv = await rawServer((socket, _request, conn) => {
      if (conn % 2 === 0) socket.write('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.end('HTTP/1.1 201 Created\r\n\r\nuntil the close');
    });
    const poster = new WebhookPoster({ timeoutMs: 5000, maxSockets: 2 });
    closers.push(() => poster.close());
    const target = postTarget(new URL(`http://127.0.0.1:${srv.port}/`));
    assert.equal((await poster.post(target, HEADERS(), BODY)).status, 200);
    assert.equal((await poster.post(target, HEADERS(), BODY)).status, 201);
    assert.equal((await poster.post(target, HEADERS(), BODY)).status, 200);
    assert.equal(srv.connections(), 3);
  });

  it('skips 100 Continue, reports oversize headers as an error, and a status despite a body over 64 KiB', async () => {
    const srv = await rawServer((socket, request) => {
      const path = request.split(' ')[1];
      if (path === '/continue') socket.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
      else if (path === '/big-head') socket.write(`HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
      else {
        socket.write('HTTP/1.1 413 Too Large\r\nContent-Length: 10000000\r\n\r\n');
        const block = Buffer.alloc(16 * 1024, 'z');
        const more = (): void => {
          while (!socket.destroyed && socket.write(block));
          if (!socket.destroyed) socket.once('drain', more);
        };
        more();
      }
    });
    const poster = new WebhookPoster({ timeoutMs: 5000, maxSockets: 2 });
    closers.push(() => poster.close());
    const url = (p: string) => postTarget(new URL(`http://127.0.0.1:${srv.port}${p}`));
    assert.equal((await poster.post(url('/continue'), HEADERS(), BODY)).status, 200);
    const big = await poster.post(url('/big-head'), HEADERS(), BODY);
    assert.equal(big.status, null);
    assert.match(big.error!, /header section over 16384 bytes/);
    const huge = await poster.post(url('/huge'), HEADERS(), BODY);
    assert.equal(huge.status, 413);
    assert.ok(MAX_BODY_BYTES === 64 * 1024);
  });

  it('sends again on a new connection when a kept one was closed by the server', async () => {
    // Connection 0 answers its first request, then closes on the second without a word (as a
    // server does whose idle timer fired just as the request left); later connections answer.
    const srv = await rawServer((socket, _request, conn, n) => {
      if (conn === 0 && n === 1) socket.destroy();
      else socket.write('HTTP/1.1 204 No Content\r\n\r\n');
    });
    const poster = new WebhookPoster({ timeoutMs: 5000, maxSockets: 1 });
    closers.push(() => poster.close());
    const target = postTarget(new URL(`http://127.0.0.1:${srv.port}/`));
    assert.equal((await poster.post(target, HEADERS(), BODY)).status, 204);
    assert.equal((await poster.post(target, HEADERS(), BODY)).status, 204);
    assert.equal(srv.connections(), 2);
    // And a server that closes an idle connection before the next request: a new connection.
    const idle = await rawServer((socket) => {
      socket.write('HTTP/1.1 204 No Content\r\n\r\n');
      setTimeout(() => socket.end(), 20);
    });
    const t2 = postTarget(new URL(`http://127.0.0.1:${idle.port}/`));
    assert.equal((await poster.post(t2, HEADERS(), BODY)).status, 204);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await poster.post(t2, HEADERS(), BODY)).status, 204);
    assert.equal(idle.connections(), 2);
  });

  it('does not send again when the server closes a new connection, or after answer bytes', async () => {
    const srv = await rawServer((socket, request) => {
      if (request.startsWith('POST /partial')) socket.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab');
      else socket.destroy();
    });
    const poster = new WebhookPoster({ timeoutMs: 5000, maxSockets: 1 });
    closers.push(() => poster.close());
    const a = await poster.post(postTarget(new URL(`http://127.0.0.1:${srv.port}/`)), HEADERS(), BODY);
    assert.equal(a.status, null);
    const b = await poster.post(postTarget(new URL(`http://127.0.0.1:${srv.port}/partial`)), HEADERS(), BODY);
    assert.equal(b.status, null);
    assert.match(b.error!, /cut off/);
    assert.equal(srv.connections(), 2);
  });

  it('times out on a server that never answers, and close() ends requests in flight', async () => {
    const srv = await rawServer(() => {});
    const poster = new WebhookPoster({ timeoutMs: 150, maxSockets: 1 });
    closers.push(() => poster.close());
    const target = postTarget(new URL(`http://127.0.0.1:${srv.port}/`));
    const started = Date.now();
    // The second waits for the one connection, and times out in the queue.
    const [r, queued] = await Promise.all([poster.post(target, HEADERS(), BODY), poster.post(target, HEADERS(), BODY)]);
    assert.deepEqual([r.status, r.error], [null, 'timed out after 150 ms']);
    assert.deepEqual([queued.status, queued.error], [null, 'timed out after 150 ms']);
    assert.ok(Date.now() - started < 1000);
    const slow = new WebhookPoster({ timeoutMs: 10_000, maxSockets: 1 });
    const pending = [slow.post(target, HEADERS(), BODY), slow.post(target, HEADERS(), BODY)];
    await new Promise((res) => setTimeout(res, 50));
    slow.close();
    for (const p of await Promise.all(pending)) assert.deepEqual([p.status, p.error], [null, 'shutting down']);
    assert.equal((await slow.post(target, HEADERS(), BODY)).error, 'shutting down');
  });

  it('reports a refused connection', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const poster = new WebhookPoster({ timeoutMs: 5000, maxSockets: 1 });
    closers.push(() => poster.close());
    const r = await poster.post(postTarget(new URL(`http://127.0.0.1:${port}/`)), HEADERS(), BODY);
    assert.equal(r.status, null);
    assert.match(r.error!, /^ECONNREFUSED/);
  });

  it('postEvent sends the Standard Webhooks fields node:http reads back, and refuses an id that could split the request', async () => {
    let seen: { headers: http.IncomingHttpHeaders; body: string } | undefined;
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen = { headers: req.headers, body: Buffer.concat(chunks).toString() };
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => {
      server.closeAllConnections();
      server.close();
    });
    const poster = new WebhookPoster({ timeoutMs: 5000, maxSockets: 1 });
    closers.push(() => poster.close());
    const target = postTarget(new URL(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/in`));
    const body = Buffer.from('{"type":"delivered","data":{"recipient":"zoë@example.test"}}');
    assert.equal((await poster.postEvent(target, '01m97mm9fn000025k36d', 1_796_626_589, 'v1,abc=', body)).status, 204);
    assert.equal(seen!.body, body.toString());
    assert.equal(seen!.headers['content-length'], String(body.length));
    assert.equal(seen!.headers['content-type'], 'application/json');
    assert.match(seen!.headers['user-agent']!, /^Tern\/\S+ \(webhooks\)$/);
    assert.equal(seen!.headers['webhook-id'], '01m97mm9fn000025k36d');
    assert.equal(seen!.headers['webhook-timestamp'], '1796626589');
    assert.equal(seen!.headers['webhook-signature'], 'v1,abc=');
    const bad = await poster.postEvent(target, 'a\r\nx-c: d', 1, 'v1,x', body);
    assert.equal(bad.status, null);
    assert.match(bad.error!, /invalid webhook-id/);
  });

  it('refuses a header value that would split the request', async () => {
    const poster = new WebhookPoster({ timeoutMs: 5000, maxSockets: 1 });
    closers.push(() => poster.close());
    const r = await poster.post(postTarget(new URL('http://127.0.0.1:9/')), { 'x-a': 'b\r\nx-c: d' }, BODY);
    assert.equal(r.status, null);
  });

  it('speaks TLS, verifying the certificate (by IP and by name with SNI)', async () => {
    const { cert, key } = await makeSelfSigned('localhost');
    let servernames: Array<string | false | null> = [];
    let connections = 0;
    const server = https.createServer({ cert, key }, (_req, res) => res.writeHead(204).end());
    server.on('secureConnection', (s: import('node:tls').TLSSocket) => {
      connections++;
      servernames.push(s.servername);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    closers.push(() => {
      server.closeAllConnections();
      server.close();
    });
    const port = (server.address() as net.AddressInfo).port;
    const poster = new WebhookPoster({ timeoutMs: 5000, maxSockets: 1, tlsOptions: { ca: cert } });
    closers.push(() => poster.close());
    const byIp = postTarget(new URL(`https://127.0.0.1:${port}/`));
    for (let i = 0; i < 3; i++) assert.equal((await poster.post(byIp, HEADERS(), BODY)).status, 204);
    assert.equal(connections, 1);
    assert.deepEqual(servernames, [false]);
    servernames = [];
    // localhost may resolve to ::1 first, where nothing listens; the client falls back to 127.0.0.1.
    const r = await poster.post(postTarget(new URL(`https://localhost:${port}/`)), HEADERS(), BODY);
    assert.equal(r.status, 204, r.error ?? '');
    assert.deepEqual(servernames, ['localhost']);
    // Without the CA, the certificate is refused.
    const strict = new WebhookPoster({ timeoutMs: 5000, maxSockets: 1 });
    closers.push(() => strict.close());
    const refused = await strict.post(byIp, HEADERS(), BODY);
    assert.equal(refused.status, null);
    assert.match(refused.error!, /self[- ]signed|certificate/i);
  });
});
