// The TLS offer (issue 15, item 7), checked with the real `openssl s_client`
// on every TLS entry point: implicit TLS on submissions, STARTTLS on smtp and
// submission, and the HTTPS of an http listener with `tls: true`. TLS 1.3 and TLS 1.2 with an ECDHE + AEAD suite work; a
// CBC-only or static-RSA cipher list, and TLS 1.1, are refused.
//
// The client is told `@SECLEVEL=0` where it offers something old, so the
// refusal comes from the server and not from the local OpenSSL's own policy.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startServer, type TestServer } from '../helpers/server.ts';

interface Outcome {
  ok: boolean;
  protocol: string | undefined;
  cipher: string | undefined;
  output: string;
}

/** One handshake with `openssl s_client -brief`; `args` chooses versions and ciphers. */
function sClient(port: number, starttls: boolean, args: string[]): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const argv = ['s_client', '-brief', '-connect', `127.0.0.1:${port}`, ...(starttls ? ['-starttls', 'smtp'] : []), ...args];
    const child = spawn('openssl', argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString('latin1')));
    child.stderr.on('data', (d: Buffer) => (output += d.toString('latin1')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      // -brief prints these two lines only after a completed handshake.
      const protocol = /^Protocol version: (\S+)/m.exec(output)?.[1];
      const cipher = /^Ciphersuite: (\S+)/m.exec(output)?.[1];
      resolve({ ok: protocol !== undefined, protocol, cipher, output });
    });
    // Nothing to say after the handshake: EOF makes s_client close.
    child.stdin.end();
  });
}

const TLS12 = ['-tls1_2'];
/**
 * Every CBC suite OpenSSL has for TLS 1.2 (ECDHE-RSA-AES128-SHA256, AES128-SHA,
 * Camellia, …), and only those: everything but the AEAD modes. (OpenSSL's
 * `!AEAD` alias does not remove them, so each mode is named.)
 */
const CBC_ONLY = [...TLS12, '-cipher', 'ALL:!AESGCM:!AESCCM:!CHACHA20:!ARIAGCM:@SECLEVEL=0'];
/** RSA key exchange with AES-GCM: AEAD, but no forward secrecy. */
const RSA_KX = [...TLS12, '-cipher', 'kRSA:@SECLEVEL=0'];
const TLS11 = ['-tls1_1', '-cipher', 'DEFAULT:@SECLEVEL=0'];

describe('the TLS offer (openssl s_client)', () => {
  let srv: TestServer;
  before(async () => {
    srv = await startServer({
      listeners: [
        { role: 'smtp', address: '127.0.0.1', port: 0 },
        { role: 'submission', address: '127.0.0.1', port: 0 },
        { role: 'submissions', address: '127.0.0.1', port: 0 },
        { role: 'http', address: '127.0.0.1', port: 0, tls: true },
      ],
    });
  });
  after(() => srv.stop());

  const entries = [
    { name: 'submissions (implicit TLS)', role: 'submissions', starttls: false },
    { name: 'submission STARTTLS', role: 'submission', starttls: true },
    { name: 'smtp STARTTLS', role: 'smtp', starttls: true },
    // s_client sends no SNI to an IP address: the HTTPS server's own options apply, not the SNI context.
    { name: 'http (HTTPS, no SNI)', role: 'http', starttls: false },
  ] as const;

  for (const e of entries) {
    describe(e.name, () => {
      it('TLS 1.3 works', async () => {
        const r = await sClient(srv.port(e.role), e.starttls, ['-tls1_3']);
        assert.equal(r.protocol, 'TLSv1.3', r.output);
      });

      it('TLS 1.2 with ECDHE and AES-GCM works', async () => {
        const r = await sClient(srv.port(e.role), e.starttls, [...TLS12, '-cipher', 'ECDHE-RSA-AES128-GCM-SHA256']);
        assert.equal(r.protocol, 'TLSv1.2', r.output);
        assert.equal(r.cipher, 'ECDHE-RSA-AES128-GCM-SHA256');
      });

      it('TLS 1.2 with ChaCha20-Poly1305 works', async () => {
        const r = await sClient(srv.port(e.role), e.starttls, [...TLS12, '-cipher', 'ECDHE-RSA-CHACHA20-POLY1305']);
        assert.equal(r.cipher, 'ECDHE-RSA-CHACHA20-POLY1305', r.output);
      });

      it('a TLS 1.2 client offering everything gets an ECDHE AEAD suite (our order)', async () => {
        const r = await sClient(srv.port(e.role), e.starttls, [...TLS12, '-cipher', 'ALL:@SECLEVEL=0']);
        assert.equal(r.protocol, 'TLSv1.2', r.output);
        assert.match(r.cipher ?? '', /^ECDHE-(RSA|ECDSA)-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)$/);
      });

      it('a CBC-only TLS 1.2 cipher list is refused', async () => {
        const r = await sClient(srv.port(e.role), e.starttls, CBC_ONLY);
        assert.equal(r.ok, false, r.output);
        assert.match(r.output, /handshake failure|no shared cipher|alert/i);
      });

      it('RSA key exchange is refused', async () => {
        const r = await sClient(srv.port(e.role), e.starttls, RSA_KX);
        assert.equal(r.ok, false, r.output);
      });

      it('TLS 1.1 is refused', async () => {
        const r = await sClient(srv.port(e.role), e.starttls, TLS11);
        assert.equal(r.ok, false, r.output);
        assert.match(r.output, /protocol version|unsupported protocol|alert/i);
      });
    });
  }
});
