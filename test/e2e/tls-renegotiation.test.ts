// TLS renegotiation (issue 11, break 4). A client-initiated renegotiation
// costs the server a full handshake (an RSA/ECDHE private-key operation) for
// a few bytes from the client: with no limit, one connection can keep a core
// busy. TLS 1.3 has no renegotiation (RFC 8446 §4.1.2 drops it); for TLS 1.2
// the server refuses it (RFC 5746 makes it optional: a server may always
// decline with a no_renegotiation alert). These tests force TLS 1.2 on the
// client and ask for a renegotiation on every TLS entry point: STARTTLS on
// the smtp and submission listeners, and implicit TLS on submissions.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { startServer, type TestServer } from '../helpers/server.ts';
import { open } from './smtp-kit.ts';

/** Read one SMTP reply (possibly multi-line) from a TLS socket. */
function readReply(s: tls.TLSSocket, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const done = (err: Error | null, text?: string): void => {
      clearTimeout(timer);
      s.off('data', onData);
      s.off('close', onClose);
      if (err) reject(err);
      else resolve(text!);
    };
    const onData = (d: Buffer): void => {
      buf += d.toString('latin1');
      const m = /^(?:\d{3}-[^\n]*\n)*\d{3}(?: [^\n]*)?\r\n/.exec(buf);
      if (m) done(null, m[0]);
    };
    const onClose = (): void => done(new Error(`closed; unread ${JSON.stringify(buf)}`));
    const timer = setTimeout(() => done(new Error(`timeout; have ${JSON.stringify(buf)}`)), timeoutMs);
    s.on('data', onData);
    s.once('close', onClose);
  });
}

/** TLS 1.2 over `raw` (STARTTLS) or a fresh connection (implicit TLS). */
function tls12(opts: { socket: net.Socket } | { port: number }): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ ...opts, host: '127.0.0.1', rejectUnauthorized: false, maxVersion: 'TLSv1.2', minVersion: 'TLSv1.2' }, () => resolve(s));
    s.once('error', reject);
  });
}

/**
 * Ask for `tries` renegotiations in a row; resolves with how many the server
 * completed before one failed (or the connection went).
 */
async function renegotiations(s: tls.TLSSocket, tries: number): Promise<number> {
  // OpenSSL reports the server's no_renegotiation alert as a socket error,
  // without calling the renegotiate callback.
  let failed = false;
  let wake = (): void => {};
  const onFail = (): void => {
    failed = true;
    wake();
  };
  s.on('error', onFail);
  s.once('close', onFail);
  try {
    for (let i = 0; i < tries; i++) {
      if (failed || s.destroyed) return i;
      const ok = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 3000);
        wake = () => {
          clearTimeout(timer);
          resolve(false);
        };
        const started = s.renegotiate({ rejectUnauthorized: false }, (err) => {
          clearTimeout(timer);
          resolve(!err);
        });
        if (!started) wake();
      });
      if (!ok) return i;
    }
    return tries;
  } finally {
    s.off('error', onFail);
    s.off('close', onFail);
    s.on('error', () => {});
  }
}

describe('TLS renegotiation is refused', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer();
  });
  after(() => srv.stop());

  async function starttls12(port: number): Promise<tls.TLSSocket> {
    const c = await open(port);
    assert.match(await c.cmd('STARTTLS'), /^220 2\.0\.0 /);
    c.socket.removeAllListeners('data');
    const s = await tls12({ socket: c.socket });
    assert.equal(s.getProtocol(), 'TLSv1.2');
    return s;
  }

  /** After the refusal the server still serves: a new TLS session gets its EHLO answered. */
  async function serverStillServes(): Promise<void> {
    const s = await tls12({ port: srv.port('submissions') });
    try {
      assert.match(await readReply(s), /^220 /);
      s.write('EHLO client.test\r\n');
      assert.match(await readReply(s), /^250 /m);
    } finally {
      s.destroy();
    }
  }

  for (const role of ['smtp', 'submission'] as const) {
    it(`after STARTTLS on ${role}`, async () => {
      const s = await starttls12(srv.port(role));
      try {
        assert.equal(await renegotiations(s, 5), 0, 'not one renegotiation is completed');
      } finally {
        s.destroy();
      }
      await serverStillServes();
    });
  }

  it('on implicit TLS (submissions)', async () => {
    const s = await tls12({ port: srv.port('submissions') });
    try {
      assert.match(await readReply(s), /^220 /);
      assert.equal(await renegotiations(s, 5), 0, 'not one renegotiation is completed');
    } finally {
      s.destroy();
    }
    await serverStillServes();
  });
});
