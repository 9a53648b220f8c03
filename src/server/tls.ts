// TLS material: the configured certificate, or a self-signed one made on
// first start and kept in <dataDir>/tls/ so restarts present the same key.
// ServerTls holds the context every new handshake uses; a reload or a
// renewal on disk swaps it whole, and established sessions keep theirs.

import { constants, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { generate } from 'selfsigned';
import type { TernConfig, TlsConfig } from '../config/types.ts';
import type { Logger } from '../util/log.ts';

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

/**
 * The cipher suites Tern offers, best first (issue 15: "AEAD only").
 * TLS 1.3's three suites are all AEAD (RFC 8446 §9.1 makes AES-128-GCM
 * mandatory). For TLS 1.2 only ECDHE key exchange (forward secrecy) with
 * AES-GCM or ChaCha20-Poly1305 (RFC 7905): no CBC (Lucky 13 and the padding
 * oracles, RFC 7457 §2.3), no static RSA key exchange (no forward secrecy,
 * ROBOT), no SHA-1 MACs. This is Mozilla's "intermediate" profile, which
 * every TLS 1.2 mail server and client of the last decade speaks; ECDSA and
 * RSA certificates both work. Node takes the TLS_* names as the TLS 1.3
 * suites: leaving them out would turn TLS 1.3 off.
 */
export const SERVER_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/**
 * Every option of the server's TLS offer, in one place: the SMTP listeners'
 * context (secureContext below) and the HTTPS listener (src/api/server.ts,
 * spread into its https options so clients without SNI get the same offer)
 * use these, so the two cannot drift apart.
 */
export const SERVER_TLS_OPTIONS = {
  minVersion: MIN_VERSION,
  ciphers: SERVER_CIPHERS,
  /** Our order, not the client's: an AEAD suite with ECDHE is then what any client gets. */
  honorCipherOrder: true,
  secureOptions: SERVER_SECURE_OPTIONS,
} as const satisfies tls.SecureContextOptions;

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
  return { cert, key, context: secureContext(cert, key), selfSigned };
}

/**
 * How long the certificate watch waits after the last file event before it
 * reads the files: an ACME client writes the certificate and the key (and
 * swaps symlinks) in several steps, and we want the pair it ends with.
 */
export const CERT_WATCH_DEBOUNCE_MS = 300;

/**
 * The server's TLS context as new handshakes see it. Listeners (implicit TLS)
 * and STARTTLS read `context` at each handshake, so a swap takes effect for
 * the next one and never disturbs a session already encrypted.
 *
 * The configured files are watched (watch()): certbot and lego renew by
 * writing new files and swapping the symlinks in `live/`, i.e. renames in
 * the directory, which a watch on the file itself (an inode) would miss.
 * So the directories are watched: the configured paths' and, for symlinks,
 * their targets' (an in-place rewrite of a target shows up only there).
 */
export class ServerTls {
  #material: TlsMaterial;
  #files: TlsConfig | undefined;
  #log: Logger;
  #watchers: fs.FSWatcher[] = [];
  #debounce: NodeJS.Timeout | undefined;
  /** watch() was called: the files a reload names are watched from then on (even if the start was self-signed). */
  #watching = false;
  #closed = false;

  private constructor(material: TlsMaterial, files: TlsConfig | undefined, log: Logger) {
    this.#material = material;
    this.#files = files;
    this.#log = log;
  }

  static async load(config: TernConfig, log: Logger): Promise<ServerTls> {
    return new ServerTls(await loadTls(config), config.tls, log);
  }

  get context(): tls.SecureContext {
    return this.#material.context;
  }

  /** The PEM pair in force (the HTTPS listener needs it for clients that send no SNI). */
  get material(): TlsMaterial {
    return this.#material;
  }

  get selfSigned(): boolean {
    return this.#material.selfSigned;
  }

  /** Puts material loaded (and so checked) by loadTls in force, for `config`'s files; the watch follows them. */
  use(material: TlsMaterial, config: TernConfig): void {
    const changed = material.cert !== this.#material.cert || material.key !== this.#material.key;
    this.#material = material;
    const before = JSON.stringify(this.#files);
    this.#files = config.tls;
    if (changed) this.#log.info('tls reloaded', describe(material));
    if (this.#watching && before !== JSON.stringify(this.#files)) this.watch();
  }

  /** Watch the configured files (nothing to watch for the self-signed pair, which only Tern writes). */
  watch(): void {
    this.#unwatch();
    this.#watching = true;
    const files = this.#files;
    if (!files || this.#closed) return;
    const dirs = new Set<string>();
    for (const f of [files.cert, files.key]) {
      dirs.add(path.dirname(f));
      try {
        dirs.add(path.dirname(fs.realpathSync(f)));
      } catch {
        // Gone for a moment (mid-renewal): the configured path's directory still tells us when it is back.
      }
    }
    for (const dir of dirs) {
      try {
        // Not persistent: a watch must not keep a stopping server alive.
        const w = fs.watch(dir, { persistent: false }, () => this.#changed());
        w.on('error', (e) => this.#log.warn('certificate watch failed', { dir, error: e }));
        this.#watchers.push(w);
      } catch (e) {
        this.#log.warn('certificate watch failed', { dir, error: e });
      }
    }
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#debounce);
    this.#unwatch();
  }

  #unwatch(): void {
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
  }

  #changed(): void {
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => this.#reread(), CERT_WATCH_DEBOUNCE_MS);
    this.#debounce.unref();
  }

  /**
   * Something changed in a watched directory: read the pair again and use it
   * if it differs and makes a context. A pair caught half-renewed (the new
   * certificate, the old key) fails here and the old context stays; the
   * renewal's next write brings us back.
   */
  #reread(): void {
    const files = this.#files;
    if (!files || this.#closed) return;
    try {
      const cert = fs.readFileSync(files.cert, 'utf8');
      const key = fs.readFileSync(files.key, 'utf8');
      if (cert === this.#material.cert && key === this.#material.key) return;
      this.#material = { cert, key, context: secureContext(cert, key), selfSigned: false };
      this.#log.info('tls reloaded', { ...describe(this.#material), trigger: 'file change' });
    } catch (e) {
      this.#log.warn('tls reload failed, the previous certificate stays in use', { cert: files.cert, key: files.key, error: e });
    }
    // Symlink targets may have moved (certbot's archive/certN.pem): follow them.
    this.watch();
  }
}

function secureContext(cert: string, key: string): tls.SecureContext {
  return tls.createSecureContext({ cert, key, ...SERVER_TLS_OPTIONS });
}

/** What an operator wants to see after a renewal: which certificate is now served, and until when. */
function describe(m: TlsMaterial): Record<string, unknown> {
  try {
    const x = new X509Certificate(m.cert);
    return { subject: x.subject, validTo: x.validTo, fingerprint256: x.fingerprint256 };
  } catch {
    return {};
  }
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
