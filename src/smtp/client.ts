// The SMTP client (RFC 5321, client side): one connection to one server,
// used by remote and smarthost delivery. It owns the dialogue only: which
// host to try, whether to fall back to plaintext and what a reply means for
// retries are the caller's decisions.
//
// Shape: every reply is read through a ReplyParser; the client counts the
// replies it is owed, so a reply nobody asked for (a server speaking out of
// turn, or data injected after STARTTLS) is a protocol error, and a 421 at
// any point ends the connection (§3.8). Commands of one group (a pipelined
// MAIL/RCPT/DATA, a BDAT header and its chunk) go out in one socket write.
// Message data streams from the caller's stream with socket backpressure;
// at most one BDAT chunk (≥ 64 KB) is held in memory.
//
// Errors: connection-level trouble (no connection, a refused greeting, EHLO,
// TLS or AUTH, a timeout, a dropped connection, a protocol violation) is a
// ClientError shared by every recipient of the attempt, and leaves the
// client unusable. Replies to MAIL, RCPT and the message are returned per
// recipient. We never downgrade: a message the peer cannot take as it is
// (too big, 8-bit to a 7-bit peer, UTF-8 addresses without SMTPUTF8) is
// refused locally, with no bytes sent. Converting 8-bit MIME to 7-bit (RFC
// 6152 §3 allows it) would break DKIM signatures and is rarely needed now.
//
// LMTP (RFC 2033), for local delivery agents such as Dovecot: the same
// dialogue with LHLO for EHLO (no HELO fallback, §4.1), DATA rather than
// BDAT, and after the final dot one reply per accepted recipient, in RCPT
// order (§4.2); `path` reaches a server on a unix socket.

import net from 'node:net';
import tls from 'node:tls';
import { ReplyParser } from './reply-parser.ts';
import { DotStuffer } from './dot-stuff.ts';
import { encodeXtext } from './params.ts';

export interface ClientReply {
  code: number;
  enhanced?: string | undefined;
  lines: string[];
}

export type ClientPhase = 'connect' | 'greeting' | 'ehlo' | 'starttls' | 'auth' | 'mail' | 'data' | 'timeout' | 'protocol';

/** Connection-level trouble: all recipients of this attempt share it. */
export class ClientError extends Error {
  readonly temporary: boolean;
  /** 'starttls' also covers the handshake of implicit TLS. */
  readonly phase: ClientPhase;
  /** The server's reply, when there was one (a 421 always has it). */
  readonly reply?: ClientReply | undefined;
  /** Why TLS was not good enough, in RFC 8460 §4.3 terms, when that is what failed (for TLS-RPT). */
  readonly tlsFailure?: string | undefined;
  /** Our side's address, when the connection got that far (TLS-RPT's sending-mta-ip). */
  localAddress?: string | undefined;
  constructor(phase: ClientPhase, temporary: boolean, message: string, reply?: ClientReply, options?: { cause?: unknown; tlsFailure?: string }) {
    super(message, options);
    this.name = 'ClientError';
    this.phase = phase;
    this.temporary = temporary;
    this.reply = reply;
    this.tlsFailure = options?.tlsFailure;
  }
}

export interface ClientOptions {
  /** IP address to connect to (with `path`: only a name for messages). */
  host: string;
  port: number;
  /** A unix socket to connect to instead of host and port (LMTP). */
  path?: string | undefined;
  /** Speak LMTP (RFC 2033): LHLO, and one reply per accepted recipient after the message. */
  lmtp?: boolean | undefined;
  /** MX host name: SNI (when not an IP) and messages. */
  servername?: string | undefined;
  heloName: string;
  /** implicit = TLS from the first byte (port 465, RFC 8314). */
  tls: 'opportunistic' | 'required' | 'none' | 'implicit';
  /**
   * Merged over our defaults. Opportunistic TLS does not verify the
   * certificate by default (RFC 7435) but records whether it verified;
   * required and implicit TLS verify unless told otherwise here.
   */
  tlsOptions?: tls.ConnectionOptions | undefined;
  /** AUTH PLAIN or LOGIN (RFC 4954), only ever over TLS. */
  auth?: { user: string; password: string } | undefined;
  /** RFC 5321 §4.5.3.2. */
  timeouts: { connect: number; command: number; dataBlock: number; dataEnd: number };
  localAddress?: string | undefined;
  /**
   * Judges the TLS session before anything is sent over it (MTA-STS, DANE):
   * null to go on, or why not, with the RFC 8460 §4.3 result type. When set,
   * the handshake itself does not reject a certificate (this decides), so the
   * reason can be precise.
   */
  verifyTls?: ((socket: tls.TLSSocket) => { failure: string; reason: string } | null) | undefined;
  /** EHLO keywords to treat as not offered (like Postfix's smtp_discard_ehlo_keywords): interop workarounds and tests. */
  discardExtensions?: string[] | undefined;
}

export interface SendEnvelope {
  /** '' for the null sender. */
  from: string;
  recipients: {
    address: string;
    /** [] = NEVER. */
    notify?: ('SUCCESS' | 'FAILURE' | 'DELAY')[] | undefined;
    orcpt?: { type: string; address: string } | undefined;
  }[];
  /** Message size in octets (SIZE=, RFC 1870). */
  size: number;
  /** The message needs 8BITMIME (RFC 6152). */
  eightBit: boolean;
  /** The envelope needs SMTPUTF8 (RFC 6531). */
  smtputf8: boolean;
  ret?: 'FULL' | 'HDRS' | undefined;
  envid?: string | undefined;
  /** MAIL FROM … REQUIRETLS (RFC 8689 §4.2.1): only over TLS, only to a server that offers it. */
  requireTls?: boolean | undefined;
}

export interface SendResult {
  /** One per envelope recipient, same order: the server's reply to RCPT, or (for accepted ones) to the end of data. */
  recipients: ClientReply[];
}

export interface TlsInfo {
  protocol: string;
  cipher: string;
  /** The certificate verified (chain and name), whether or not that was required. */
  authorized: boolean;
  /** The certificate's subject CN. */
  peer?: string | undefined;
}

/** BDAT chunks are the stream's chunks coalesced to at least this: few round trips, bounded memory. */
const BDAT_CHUNK = 64 * 1024;
/** QUIT is a courtesy: nothing depends on its 221, so a stalled server costs at most this. */
const QUIT_WAIT = 5000;

const ok = (r: ClientReply): boolean => r.code >= 200 && r.code < 300;
const describe = (r: ClientReply): string => `${r.code}${r.enhanced ? ' ' + r.enhanced : ''} ${r.lines.join(' ')}`.trim();
const local = (code: number, enhanced: string, text: string): ClientReply => ({ code, enhanced, lines: [text] });
/** CR, LF or NUL in an address would let it inject commands; intake never lets one through, but we check anyway. */
const unsafe = (s: string): boolean => /[\0\r\n]/.test(s);
const asBuffer = (c: string | Buffer): Buffer => (typeof c === 'string' ? Buffer.from(c) : c);
const noop = (): void => {};

export class SmtpClient {
  readonly #opts: ClientOptions;
  #socket: net.Socket;
  #parser = new ReplyParser();
  /** Replies the server owes us; the greeting is the first. */
  #outstanding = 1;
  /** The pending read, if any. */
  #deliver: ((r: ClientReply) => void) | null = null;
  /** Rejects whatever is being awaited (a reply, a drain) when the connection fails. */
  #abort: ((e: ClientError) => void) | null = null;
  #failure: ClientError | null = null;
  #phase: ClientPhase = 'greeting';
  #ext = new Map<string, string>();
  #tls: TlsInfo | null = null;
  #localAddress: string | undefined;
  #greeting: ClientReply = { code: 0, lines: [] };
  #busy = false;
  /** MAIL was accepted and the transaction not ended: RSET before the next MAIL. */
  #dirty = false;
  /** LMTP: the per-recipient replies after the message are being read (some may already be final). */
  #finalReplies = false;

  private constructor(socket: net.Socket, opts: ClientOptions) {
    this.#opts = opts;
    this.#socket = socket;
    socket.setNoDelay(true);
    this.#attach(socket);
  }

  /** Connect, read the greeting, EHLO (HELO fallback), STARTTLS per opts.tls, AUTH when opts.auth. */
  static async connect(opts: ClientOptions): Promise<SmtpClient> {
    if (opts.auth && opts.tls === 'none') throw new ClientError('auth', false, 'AUTH refused: credentials are never sent without TLS');
    const socket = await dial(opts);
    const localAddress = socket.localAddress;
    const client = new SmtpClient(socket, opts);
    try {
      if (opts.tls === 'implicit') await client.#secure(opts.timeouts.connect);
      await client.#open();
    } catch (e) {
      if (e instanceof ClientError) e.localAddress ??= localAddress;
      client.#fail(e instanceof ClientError ? e : new ClientError('protocol', true, String(e), undefined, { cause: e }));
      throw e;
    }
    client.#localAddress = localAddress;
    return client;
  }

  /** Our side's address of the connection (undefined over a unix socket). */
  get localAddress(): string | undefined {
    return this.#localAddress;
  }

  /** Upper-case EHLO keyword → its parameters ('' if none); empty after HELO. */
  get extensions(): ReadonlyMap<string, string> {
    return this.#ext;
  }

  get tls(): TlsInfo | null {
    return this.#tls;
  }

  get greeting(): ClientReply {
    return this.#greeting;
  }

  /** Connected, not failed, not in a call: can take another send(). */
  get usable(): boolean {
    return this.#failure === null && !this.#busy && !this.#socket.destroyed;
  }

  /**
   * One transaction. `open` is called only once the server will take the
   * message, and the stream is read to its end (or destroyed on failure).
   * A transaction left open by an earlier send (no recipient accepted, a
   * failed BDAT) is reset first, in the same write when pipelining.
   * Resolves with one reply per recipient, also after a 421 (which ends the
   * connection); rejects with a ClientError for connection-level trouble.
   */
  async send(env: SendEnvelope, open: () => NodeJS.ReadableStream): Promise<SendResult> {
    const out: (ClientReply | undefined)[] = env.recipients.map(() => undefined);
    await this.#run(async () => {
      const refusal = this.#refuse(env);
      if (refusal) return void out.fill(refusal);
      this.#finalReplies = false;
      try {
        await this.#transaction(env, open, out);
      } catch (e) {
        if (!(e instanceof ClientError)) throw e;
        if (e.reply?.code === 421) {
          // §3.8: a 421 closes the connection; it is the answer for every recipient not yet answered.
          for (let i = 0; i < out.length; i++) out[i] ??= e.reply;
          return;
        }
        // LMTP, RFC 2033 §4.2: once the per-recipient replies after the
        // message have begun, the ones already read stand (those recipients
        // have their mail); only the rest are left in doubt, and retried.
        if (!this.#finalReplies) throw e;
        this.#fail(e);
        const lost = local(451, '4.4.2', `no reply after the message: ${e.message}`);
        for (let i = 0; i < out.length; i++) out[i] ??= lost;
      }
    });
    return { recipients: out as ClientReply[] };
  }

  /** RSET (§4.1.1.5), to start clean on a reused connection. */
  async reset(): Promise<void> {
    await this.#run(async () => {
      this.#phase = 'mail';
      this.#command('RSET\r\n', 1);
      const r = await this.#read(this.#opts.timeouts.command, 'RSET');
      if (r.code !== 250) throw new ClientError('mail', r.code < 500, `RSET refused: ${describe(r)}`, r);
      this.#dirty = false;
    });
  }

  /** QUIT, wait briefly for the 221 (§4.1.1.10), close. Never throws. */
  async quit(): Promise<void> {
    if (this.usable) {
      this.#busy = true;
      try {
        this.#command('QUIT\r\n', 1);
        await this.#read(Math.min(this.#opts.timeouts.command, QUIT_WAIT), 'QUIT');
      } catch {
        // Nothing depends on it.
      }
    }
    this.close();
  }

  /** Close at once. */
  close(): void {
    this.#fail(new ClientError('protocol', true, 'connection closed by the client'));
  }

  // ------------------------------------------------------------ connection

  #onData = (chunk: Buffer): void => {
    try {
      this.#parser.push(chunk);
    } catch (e) {
      return this.#fail(new ClientError('protocol', true, `bad reply from ${this.#name}: ${(e as Error).message}`));
    }
    const deliver = this.#deliver;
    if (deliver) {
      const r = this.#next();
      if (r) {
        this.#deliver = null;
        deliver(r);
      }
    }
    if (this.#parser.count > this.#outstanding) {
      // A reply to nothing: a server talking out of turn (RFC 2920 §3.1
      // keeps even pipelined replies in step with commands), or injected.
      let r: ClientReply | null = null;
      for (let x = this.#next(); x; x = this.#next()) r = x;
      const why = r!.code === 421 ? 'closing the connection' : 'sent an unexpected reply';
      this.#fail(new ClientError(this.#phase, true, `${this.#name} ${why}: ${describe(r!)}`, r!));
    }
  };

  #onError = (e: Error): void => {
    this.#fail(new ClientError(this.#phase, true, `connection to ${this.#name} failed: ${e.message}`, undefined, { cause: e }));
  };

  #onClose = (): void => {
    this.#fail(new ClientError(this.#phase, true, `connection closed by ${this.#name}`));
  };

  #attach(s: net.Socket): void {
    s.on('data', this.#onData).on('error', this.#onError).on('close', this.#onClose);
  }

  get #name(): string {
    return this.#opts.servername ? `${this.#opts.servername} [${this.#opts.host}]` : `[${this.#opts.host}]`;
  }

  #fail(err: ClientError): void {
    if (!this.#failure) this.#failure = err;
    this.#socket.destroy();
    this.#deliver = null;
    const abort = this.#abort;
    this.#abort = null;
    abort?.(this.#failure);
  }

  /** Run one public operation: one at a time, and any ClientError leaves the client failed. */
  async #run(fn: () => Promise<void>): Promise<void> {
    if (this.#busy) throw new Error('SmtpClient: one operation at a time');
    if (this.#failure) throw this.#failure;
    this.#busy = true;
    try {
      await fn();
    } catch (e) {
      const err =
        e instanceof ClientError ? e : new ClientError(this.#phase, true, `reading the message failed: ${(e as Error).message}`, undefined, { cause: e });
      // The connection is in an unknown state (e.g. DATA half sent): it goes.
      this.#fail(err);
      throw err;
    } finally {
      this.#busy = false;
    }
  }

  /** Await something with a timeout; a timeout fails the connection (§4.5.3.2). */
  #wait<T>(ms: number, what: string, arm: (done: (v: T) => void) => void): Promise<T> {
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => this.#fail(new ClientError('timeout', true, `${this.#name}: timed out after ${ms} ms ${what}`)), ms);
      this.#abort = (e) => {
        clearTimeout(timer);
        reject(e);
      };
      arm((v) => {
        clearTimeout(timer);
        this.#abort = null;
        resolve(v);
      });
    });
  }

  /** Take a parsed reply: it pays off one of the replies we are owed. */
  #next(): ClientReply | null {
    const r = this.#parser.next();
    if (r) this.#outstanding--;
    return r;
  }

  /** The next reply; a 421 fails the connection (§3.8) and is thrown, reply attached. */
  async #read(ms: number, what: string): Promise<ClientReply> {
    const r = (!this.#failure && this.#next()) || (await this.#wait<ClientReply>(ms, `waiting for the reply to ${what}`, (d) => (this.#deliver = d)));
    return this.#closing(r);
  }

  /** A reply that has already arrived, without waiting. */
  #poll(): ClientReply | null {
    const r = this.#next();
    return r && this.#closing(r);
  }

  #closing(r: ClientReply): ClientReply {
    if (r.code === 421) {
      const e = new ClientError(this.#phase, true, `${this.#name} is closing the connection: ${describe(r)}`, r);
      this.#fail(e);
      throw e;
    }
    return r;
  }

  /** Write a group of commands in one write; `replies` is how many replies they earn. */
  #command(text: string, replies: number): void {
    this.#check();
    this.#outstanding += replies;
    this.#socket.write(text);
  }

  /** After writing data: wait while the socket's buffer is full, at most dataBlock (§4.5.3.2.5). */
  async #flowed(): Promise<void> {
    this.#check();
    if (!this.#socket.writableNeedDrain) return;
    const s = this.#socket;
    await this.#wait<void>(this.#opts.timeouts.dataBlock, 'sending message data', (done) => s.once('drain', () => done()));
  }

  #check(): void {
    if (this.#failure) throw this.#failure;
  }

  // ------------------------------------------------------------ opening

  async #open(): Promise<void> {
    const cmd = this.#opts.timeouts.command;
    this.#phase = 'greeting';
    const g = await this.#read(cmd, 'the greeting');
    this.#greeting = g;
    // §4.3.1: 220, or 554 (and 421) to refuse.
    if (g.code !== 220) throw new ClientError('greeting', g.code < 500, `${this.#name} refused the connection: ${describe(g)}`, g);
    await this.#hello();
    const mode = this.#opts.tls;
    if (mode === 'opportunistic' || mode === 'required') {
      if (this.#ext.has('STARTTLS')) await this.#starttls();
      else if (mode === 'required') throw new ClientError('starttls', true, `${this.#name} does not offer STARTTLS, and TLS is required`, undefined, { tlsFailure: 'starttls-not-supported' });
    }
    if (this.#opts.auth) await this.#auth(this.#opts.auth);
    this.#phase = 'mail';
  }

  async #hello(): Promise<void> {
    const cmd = this.#opts.timeouts.command;
    const name = this.#opts.heloName;
    const lmtp = this.#opts.lmtp === true;
    this.#phase = 'ehlo';
    this.#ext = new Map();
    let verb = lmtp ? 'LHLO' : 'EHLO';
    this.#command(`${verb} ${name}\r\n`, 1);
    let r = await this.#read(cmd, verb);
    if (r.code === 250) {
      // §4.1.1.1: the first line is the server's name, then one keyword (and parameters) per line.
      const discard = new Set(this.#opts.discardExtensions?.map((k) => k.toUpperCase()));
      for (const line of r.lines.slice(1)) {
        const sp = line.indexOf(' ');
        const key = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
        if (/^[A-Z0-9][A-Z0-9-]*$/.test(key) && !discard.has(key)) this.#ext.set(key, sp < 0 ? '' : line.slice(sp + 1).trim());
      }
      return;
    }
    // §3.2: a server that does not know EHLO says 500 or 502; then HELO (and no extensions). LMTP has no HELO.
    if (!lmtp && (r.code === 500 || r.code === 502)) {
      verb = 'HELO';
      this.#command(`HELO ${name}\r\n`, 1);
      r = await this.#read(cmd, verb);
      if (r.code === 250) return;
    }
    throw new ClientError('ehlo', r.code < 500, `${this.#name} refused ${verb}: ${describe(r)}`, r);
  }

  async #starttls(): Promise<void> {
    this.#phase = 'starttls';
    this.#command('STARTTLS\r\n', 1);
    const r = await this.#read(this.#opts.timeouts.command, 'STARTTLS');
    if (r.code !== 220) throw new ClientError('starttls', true, `${this.#name} refused STARTTLS: ${describe(r)}`, r);
    // RFC 3207 §4.2 (forget what came before TLS) and the response
    // injection bugs many clients had (Poddebniak et al. 2021, "Why TLS is
    // better without STARTTLS"): nothing may follow the 220 in plaintext.
    // A complete extra reply already failed in #onData; a partial one is
    // caught here.
    if (!this.#parser.idle) {
      const e = new ClientError('protocol', true, `${this.#name} sent data after its STARTTLS reply`);
      this.#fail(e);
      throw e;
    }
    await this.#secure(this.#opts.timeouts.command);
    // §4.2: forget everything learnt before TLS, and ask again.
    await this.#hello();
  }

  /** Switch the connection to TLS (STARTTLS, or implicit TLS before the greeting). */
  async #secure(ms: number): Promise<void> {
    this.#check(); // e.g. an injected reply arrived with the 220
    const raw = this.#socket;
    raw.off('data', this.#onData).off('error', this.#onError).off('close', this.#onClose);
    raw.on('error', noop); // the TLS socket reports trouble; the raw one must not crash the process
    const name = this.#opts.servername;
    const s = tls.connect({
      socket: raw,
      // Over an existing socket, Node checks the certificate against `host`
      // (default "localhost"): give it the name (or IP) we meant to reach.
      host: name || this.#opts.host,
      servername: name && !net.isIP(name) ? name : undefined,
      rejectUnauthorized: this.#opts.tls !== 'opportunistic' && !this.#opts.verifyTls,
      ...this.#opts.tlsOptions,
      ...(this.#opts.verifyTls ? { rejectUnauthorized: false } : {}),
    });
    this.#socket = s;
    const prev = this.#phase;
    this.#phase = 'starttls';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => done(new ClientError('timeout', true, `${this.#name}: TLS handshake timed out after ${ms} ms`)), ms);
      const onError = (e: Error): void => done(new ClientError('starttls', true, `TLS handshake with ${this.#name} failed: ${e.message}`, undefined, { cause: e }));
      const onClose = (): void => done(new ClientError('starttls', true, `${this.#name} closed the connection during the TLS handshake`));
      const done = (e?: ClientError): void => {
        clearTimeout(timer);
        s.off('error', onError).off('close', onClose).off('secureConnect', onSecure);
        if (!e) return resolve();
        this.#fail(e);
        reject(this.#failure);
      };
      const onSecure = (): void => done();
      s.once('secureConnect', onSecure).once('error', onError).once('close', onClose);
    });
    const verdict = this.#opts.verifyTls?.(s) ?? null;
    if (verdict) {
      // Nothing at all goes over a session the policy refuses (RFC 8461 §5, RFC 7672 §2.2).
      const e = new ClientError('starttls', true, `TLS with ${this.#name} refused: ${verdict.reason}`, undefined, { tlsFailure: verdict.failure });
      s.destroy();
      this.#fail(e);
      throw e;
    }
    this.#phase = prev;
    this.#attach(s);
    this.#parser = new ReplyParser();
    const cipher = s.getCipher();
    const cn: unknown = s.getPeerCertificate()?.subject?.CN; // a string, or an array when the subject has several
    const peer = Array.isArray(cn) ? cn.join(', ') : typeof cn === 'string' && cn ? cn : undefined;
    this.#tls = { protocol: s.getProtocol() ?? 'TLS', cipher: cipher?.standardName ?? cipher?.name ?? '', authorized: s.authorized, peer };
  }

  async #auth(auth: { user: string; password: string }): Promise<void> {
    this.#phase = 'auth';
    const cmd = this.#opts.timeouts.command;
    // RFC 4954 §4 ("SHOULD NOT" in plaintext for PLAIN/LOGIN): the password only ever goes over TLS.
    if (!this.#tls) throw new ClientError('auth', true, `AUTH refused: the connection to ${this.#name} is not encrypted`);
    const offered = (this.#ext.get('AUTH') ?? '').toUpperCase().split(/\s+/);
    const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
    let r: ClientReply;
    if (offered.includes('PLAIN')) {
      // RFC 4616: authzid (empty), NUL, user, NUL, password; sent as the initial response (one round trip).
      this.#command(`AUTH PLAIN ${b64(`\0${auth.user}\0${auth.password}`)}\r\n`, 1);
      r = await this.#read(cmd, 'AUTH');
    } else if (offered.includes('LOGIN')) {
      this.#command('AUTH LOGIN\r\n', 1);
      r = await this.#read(cmd, 'AUTH');
      for (const answer of [auth.user, auth.password]) {
        if (r.code !== 334) break;
        this.#command(`${b64(answer)}\r\n`, 1);
        r = await this.#read(cmd, 'AUTH');
      }
    } else {
      throw new ClientError('auth', true, `${this.#name} offers no AUTH mechanism we use (PLAIN, LOGIN)`);
    }
    // 235 success; 535 bad credentials and other 5xx are permanent; 4xx (454) temporary.
    if (r.code !== 235) throw new ClientError('auth', r.code < 500, `authentication to ${this.#name} failed: ${describe(r)}`, r);
  }

  // ------------------------------------------------------------ transaction

  /** A reason to refuse the message without sending anything, or null. */
  #refuse(env: SendEnvelope): ClientReply | null {
    const ext = this.#ext;
    // RFC 1870 §4: "SIZE" with no number (or 0) means no fixed limit.
    const limit = Number(ext.get('SIZE') || 0);
    // RFC 1870 §6: over the peer's declared limit is a permanent failure.
    if (limit > 0 && env.size > limit) return local(552, '5.3.4', `Message size ${env.size} exceeds the ${limit} octets ${this.#name} accepts`);
    if (env.eightBit && !ext.has('8BITMIME')) return local(554, '5.6.3', `Conversion required and not supported: ${this.#name} does not accept 8-bit data`);
    if (env.smtputf8 && !ext.has('SMTPUTF8')) return local(553, '5.6.7', `${this.#name} does not support SMTPUTF8 (non-ASCII addresses)`);
    // RFC 8689 §4.2.1: a REQUIRETLS message goes only over TLS to a server that offers REQUIRETLS; 5.7.30 otherwise (§5).
    if (env.requireTls && (!this.#tls || !ext.has('REQUIRETLS'))) return local(550, '5.7.30', `REQUIRETLS not supported by ${this.#name}`);
    if (unsafe(env.from)) return local(501, '5.1.7', 'Bad sender address syntax');
    return null;
  }

  async #transaction(env: SendEnvelope, open: () => NodeJS.ReadableStream, out: (ClientReply | undefined)[]): Promise<void> {
    const ext = this.#ext;
    const cmd = this.#opts.timeouts.command;
    const pipelining = ext.has('PIPELINING');
    // LMTP with BDAT (RFC 2033 §4.2 via RFC 3030 §2) is left out: DATA's per-recipient replies are enough.
    const chunking = ext.has('CHUNKING') && this.#opts.lmtp !== true;
    const dsn = ext.has('DSN');
    let mail = `MAIL FROM:<${env.from}>`;
    if (ext.has('SIZE')) mail += ` SIZE=${env.size}`;
    if (env.eightBit) mail += ' BODY=8BITMIME';
    if (env.smtputf8) mail += ' SMTPUTF8';
    if (env.requireTls) mail += ' REQUIRETLS';
    // RFC 3461 §4: DSN parameters only to a server that offers DSN.
    if (dsn && env.ret) mail += ` RET=${env.ret}`;
    if (dsn && env.envid !== undefined) mail += ` ENVID=${encodeXtext(env.envid)}`;
    mail += '\r\n';
    const todo: number[] = [];
    const rcpts: string[] = [];
    for (const [i, rc] of env.recipients.entries()) {
      if (unsafe(rc.address)) {
        out[i] = local(501, '5.1.3', 'Bad recipient address syntax');
        continue;
      }
      let line = `RCPT TO:<${rc.address}>`;
      if (dsn && rc.notify) line += ` NOTIFY=${rc.notify.length ? rc.notify.join(',') : 'NEVER'}`;
      if (dsn && rc.orcpt) line += ` ORCPT=${rc.orcpt.type};${encodeXtext(rc.orcpt.address)}`;
      todo.push(i);
      rcpts.push(line + '\r\n');
    }
    if (todo.length === 0) return;

    this.#phase = 'mail';
    const reset = this.#dirty;
    const data = !chunking;
    if (pipelining) {
      // RFC 2920 §3.1: MAIL, every RCPT and DATA go in one write; the replies come back in order.
      // (With CHUNKING the message waits for the RCPT replies, so nothing is sent in vain.)
      const group = (reset ? 'RSET\r\n' : '') + mail + rcpts.join('') + (data ? 'DATA\r\n' : '');
      this.#command(group, (reset ? 1 : 0) + 1 + todo.length + (data ? 1 : 0));
    }
    if (reset) {
      if (!pipelining) this.#command('RSET\r\n', 1);
      await this.#read(cmd, 'RSET');
      this.#dirty = false;
    }
    if (!pipelining) this.#command(mail, 1);
    const m = this.#final(await this.#read(cmd, 'MAIL'), 'MAIL');
    const mailOk = ok(m);
    if (mailOk) this.#dirty = true;
    else for (const i of todo) out[i] = m; // the sender was refused: that is every recipient's answer
    const accepted: number[] = [];
    for (let k = 0; k < todo.length; k++) {
      if (!pipelining) {
        if (!mailOk) break;
        this.#command(rcpts[k]!, 1);
      }
      const r = this.#final(await this.#read(cmd, 'RCPT'), 'RCPT');
      if (!mailOk) continue; // pipelined RCPTs after a refused MAIL: read to stay in step
      if (ok(r)) accepted.push(todo[k]!);
      else out[todo[k]!] = r;
    }

    this.#phase = 'data';
    if (data) {
      if (!pipelining) {
        if (accepted.length === 0) return;
        this.#command('DATA\r\n', 1);
      }
      const d = await this.#read(cmd, 'DATA');
      // A 2xx to DATA would make an unsent message look delivered.
      if (ok(d)) throw new ClientError('protocol', true, `${this.#name} answered DATA with ${describe(d)}`, d);
      if (d.code !== 354) {
        for (const i of accepted) out[i] = d;
        return;
      }
      const lmtp = this.#opts.lmtp === true;
      if (accepted.length === 0) {
        // RFC 2920 §3.1: DATA was pipelined, no recipient was accepted and the
        // server still said 354. An empty message ends the transaction cleanly
        // (LMTP answers it with one reply per accepted recipient: none).
        this.#command('.\r\n', lmtp ? 0 : 1);
        if (!lmtp) await this.#read(this.#opts.timeouts.dataEnd, 'the end of data');
        this.#dirty = false;
        return;
      }
      await this.#sendData(open(), lmtp ? accepted.length : 1);
      if (lmtp) {
        // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order. A
        // 421 among them ends the connection: send() gives it to the rest.
        this.#finalReplies = true;
        for (const i of accepted) out[i] = this.#final(await this.#read(this.#opts.timeouts.dataEnd, 'the end of data'), 'the end of data');
        this.#dirty = false;
        return;
      }
      const e = this.#final(await this.#read(this.#opts.timeouts.dataEnd, 'the end of data'), 'the end of data');
      this.#dirty = false;
      for (const i of accepted) out[i] = e;
      return;
    }
    if (accepted.length === 0) return;
    const { reply, ended } = await this.#sendChunks(open(), pipelining);
    this.#dirty = !ended;
    for (const i of accepted) out[i] = reply;
  }

  /** Replies to MAIL, RCPT and the message are 2xx, 4xx or 5xx; anything else is out of step. */
  #final(r: ClientReply, what: string): ClientReply {
    if (r.code < 300 || r.code >= 400) return r;
    throw new ClientError('protocol', true, `${this.#name} answered ${what} with ${describe(r)}`, r);
  }

  /** DATA content (§4.5.2): dot-stuffed, one write per input chunk, paced by the socket. */
  async #sendData(stream: NodeJS.ReadableStream, replies: number): Promise<void> {
    const s = this.#socket;
    const enc = new DotStuffer();
    const write = (part: Buffer): void => void s.write(part);
    for await (const chunk of stream) {
      this.#check();
      s.cork();
      enc.push(asBuffer(chunk), write);
      s.uncork();
      await this.#flowed();
    }
    this.#check();
    this.#outstanding += replies;
    s.write(enc.end());
  }

  /**
   * BDAT (RFC 3030): the message as it is, in chunks of at least BDAT_CHUNK,
   * the last one "BDAT n LAST". Without PIPELINING each chunk waits for its
   * reply (§4.1); with it, replies are read as they arrive. After a failed
   * chunk no more are sent (§2) and the transaction stays open (`ended`
   * false) until RSET.
   */
  async #sendChunks(stream: NodeJS.ReadableStream, pipelining: boolean): Promise<{ reply: ClientReply; ended: boolean }> {
    const s = this.#socket;
    const cmd = this.#opts.timeouts.command;
    let parts: Buffer[] = [];
    let size = 0;
    let unread = 0;
    let failed: ClientReply | undefined;
    let last: ClientReply | undefined;
    const take = (r: ClientReply): void => {
      unread--;
      last = this.#final(r, 'BDAT');
      if (!ok(r)) failed ??= r;
    };
    const bdat = async (final: boolean): Promise<void> => {
      this.#check();
      s.cork();
      s.write(`BDAT ${size}${final ? ' LAST' : ''}\r\n`);
      for (const p of parts) s.write(p);
      s.uncork();
      this.#outstanding++;
      unread++;
      parts = [];
      size = 0;
      await this.#flowed();
    };
    for await (const chunk of stream) {
      const b = asBuffer(chunk);
      parts.push(b);
      size += b.length;
      if (size < BDAT_CHUNK) continue;
      await bdat(false);
      if (!pipelining) take(await this.#read(cmd, 'BDAT'));
      else
        for (let r: ClientReply | null; unread > 0 && (r = this.#poll()); ) take(r);
      if (failed) break;
    }
    const ended = !failed;
    if (ended) await bdat(true);
    while (unread > 0) take(await this.#read(unread === 1 && ended ? this.#opts.timeouts.dataEnd : cmd, 'BDAT'));
    return { reply: failed ?? last!, ended };
  }
}

/** TCP connection within the connect timeout. */
function dial(opts: ClientOptions): Promise<net.Socket> {
  const where = opts.path !== undefined ? opts.path : `${opts.servername ? opts.servername + ' ' : ''}[${opts.host}]:${opts.port}`;
  return new Promise((resolve, reject) => {
    const s = opts.path !== undefined ? net.connect({ path: opts.path }) : net.connect({ host: opts.host, port: opts.port, localAddress: opts.localAddress });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new ClientError('timeout', true, `connecting to ${where} timed out after ${opts.timeouts.connect} ms`));
    }, opts.timeouts.connect);
    const onError = (e: Error): void => {
      clearTimeout(timer);
      reject(new ClientError('connect', true, `cannot connect to ${where}: ${e.message}`, undefined, { cause: e }));
    };
    s.once('error', onError);
    s.once('connect', () => {
      clearTimeout(timer);
      s.off('error', onError);
      resolve(s);
    });
  });
}
