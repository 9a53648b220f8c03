// TLS material: the configured certificate, or a self-signed one made on
// first start and kept in <dataDir>/tls/ so restarts present the same key.

import { constants } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { generate } from 'selfsigned';
import type { TernConfig } from '../config/types.ts';

export interface TlsMaterial {
  cert: string;
  key: string;
  context: tls.SecureContext;
  selfSigned: boolean;
}

/** Mail servers talk to old peers too; TLS 1.2 is the floor (RFC 8996 retired 1.0/1.1). */
const MIN_VERSION = 'TLSv1.2';

/**
 * No client-initiated renegotiation (TLS 1.2; TLS 1.3 has none, RFC 8446
 * §4.1.2). Each one costs us a full handshake for a few bytes from the
 * client, so unlimited renegotiation is a CPU amplifier; RFC 5746 lets a
 * server decline, and OpenSSL then answers with a no_renegotiation alert.
 * Node's own limit (tls.CLIENT_RENEG_LIMIT) only guards sockets made by
 * tls.Server, not the TLSSocket we wrap around an accepted or STARTTLS socket;
 * this option is in the one context both listeners and STARTTLS use, and
 * OpenSSL refuses before any handshake work is done (socket.disableRenegotiation()
 * would only act after the renegotiation completed).
 */
export const SERVER_SECURE_OPTIONS = constants.SSL_OP_NO_RENEGOTIATION;

export async function loadTls(config: TernConfig): Promise<TlsMaterial> {
  let cert: string;
  let key: string;
  let selfSigned = false;
  if (config.tls) {
    cert = fs.readFileSync(config.tls.cert, 'utf8');
    key = fs.readFileSync(config.tls.key, 'utf8');
  } else {
    const dir = path.join(config.dataDir, 'tls');
    const certFile = path.join(dir, 'selfsigned.crt');
    const keyFile = path.join(dir, 'selfsigned.key');
    selfSigned = true;
    if (fs.existsSync(certFile) && fs.existsSync(keyFile)) {
      cert = fs.readFileSync(certFile, 'utf8');
      key = fs.readFileSync(keyFile, 'utf8');
    } else {
      ({ cert, key } = await makeSelfSigned(config.hostname));
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      // Key first, written privately; the pair is only used once both exist.
      fs.writeFileSync(keyFile, key, { mode: 0o600 });
      fs.writeFileSync(certFile, cert, { mode: 0o644 });
    }
  }
  const context = tls.createSecureContext({ cert, key, minVersion: MIN_VERSION, secureOptions: SERVER_SECURE_OPTIONS });
  return { cert, key, context, selfSigned };
}

export async function makeSelfSigned(hostname: string): Promise<{ cert: string; key: string }> {
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(notBefore.getTime() + 10 * 365 * 24 * 3600 * 1000);
  const pems = await generate([{ name: 'commonName', value: hostname }], {
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate: notBefore,
    notAfterDate: notAfter,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: [{ type: 2, value: hostname }, { type: 7, ip: '127.0.0.1' }] },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}
