// One SMTP server session: the RFC 5321 state machine for one connection.
// It speaks SMTP and decides nothing else: every command that passes its
// syntax, sequence and protocol-limit checks goes to the backend
// (src/policy/backend.ts), whose answer is a go-ahead or an SmtpError. A
// backend fault (anything else thrown) is answered 451 4.3.0 like any other
// reply, so the dialogue stays in step.
//
// Input flows through three readers in turn: the CommandReader for command
// lines, the DataReader for DATA/BDAT content, and (during STARTTLS) nobody.
// Commands are handled strictly in order; while one is being decided (a
// policy lookup, a spool commit) further pipelined input waits in the
// CommandReader. Replies are collected and written in one socket write once
// the session has nothing more to process (RFC 2920 §3.2 lets a server
// batch pipelined replies), so a multi-line reply is never split.

import type net from 'node:net';
import tls from 'node:tls';
import { CommandReader, type CommandLine } from '../smtp/command-reader.ts';
import { DataReader, type DataError } from '../smtp/data-reader.ts';
import { SmtpError, formatReply } from '../smtp/reply.ts';
import { parsePath, type Address } from '../smtp/address.ts';
import { parseMailParams, parseRcptParams, type MailParams } from '../smtp/params.ts';
import { isHeloArgument } from '../smtp/helo.ts';
import type { SessionInfo } from '../policy/policy.ts';
import type { Backend, BackendSession, MessageSink } from '../policy/backend.ts';
import type { LimitsConfig } from '../config/types.ts';
import type { Logger } from '../util/log.ts';
import { createMechanism, MECHANISMS, type SaslMechanism, type SaslStep } from './sasl.ts';
import type { IdleSweeper, Timed } from './idle-sweeper.ts';
import { countTlsSession } from '../metrics/tls.ts';

export interface SessionDeps {
  hostname: string;
  limits: LimitsConfig;
  /** Everything that is not SMTP: the checks, AUTH, the message's way into the spool. */
  backend: Backend;
  log: Logger;
  /** For STARTTLS; absent means STARTTLS is not offered. */
  secureContext?: tls.SecureContext | undefined;
  /** Enforces the command/data timeouts of every session (one interval, not a timer per socket). */
  sweeper: IdleSweeper;
}

/** RFC 4954 §4: an AUTH command line (and each SASL response) may be up to 12288 octets. */
export const MAX_AUTH_LINE = 12288;

type Mode = 'command' | 'data' | 'bdat' | 'tls' | 'closed';

/** The protocol's view of a transaction; what it carries lives in the backend. */
interface Transaction {
  params: MailParams;
  /** Number of RCPT commands accepted (limit counts these, not expansions). */
  rcptCount: number;
  /** Where the content goes, once it started. */
  sink?: MessageSink | undefined;
  reader?: DataReader | undefined;
  /** BDAT: an earlier chunk failed; the rest of the chunks are read and refused. */
  failed?: SmtpError | undefined;
  /** Set once BDAT was used: DATA is then out of sequence (RFC 3030 §2). */
  chunking?: boolean;
}

/** Replies to content errors found while reading DATA/BDAT. */
const DATA_ERRORS: Record<DataError, SmtpError> = {
  // RFC 5321 §2.3.8 / §4.1.1.4: only CRLF ends a line; anything else is how
  // SMTP smuggling starts, so the whole message is refused.
  'bare-lf': new SmtpError(550, '5.6.11', 'Bare LF in message content is not allowed; lines must end with CRLF'),
  'bare-cr': new SmtpError(550, '5.6.11', 'Bare CR in message content is not allowed; lines must end with CRLF'),
  nul: new SmtpError(550, '5.6.0', 'NUL character in message content is not allowed'),
  'line-too-long': new SmtpError(550, '5.6.0', 'Message line too long'),
  'too-big': new SmtpError(552, '5.3.4', 'Message size exceeds fixed maximum message size'),
};

/** First commands that mean the peer is not speaking SMTP at all (e.g. a browser sent here). */
const FOREIGN_PROTOCOL = /^(GET|POST|HEAD|PUT|CONNECT|USER) /i;

let sessionCounter = 0;

/** For sockets not yet owned by a session (the listener's): one shared function, not a closure each. */
export function ignoreSocketError(): void {}

const SESSION = Symbol('tern.session');
type SessionSocket = net.Socket & { [SESSION]?: Session };
let sessionHandlers: {
  data: (s: Session, chunk: Buffer) => void;
  error: (s: Session, e: Error) => void;
  close: (s: Session) => void;
  end: (s: Session) => void;
};
function onSocketData(this: SessionSocket, chunk: Buffer): void {
  const s = this[SESSION];
  if (s) sessionHandlers.data(s, chunk);
}
function onSocketError(this: SessionSocket, e: Error): void {
  const s = this[SESSION];
  if (s) sessionHandlers.error(s, e);
}
function onSocketClose(this: SessionSocket): void {
  const s = this[SESSION];
  if (s) sessionHandlers.close(s);
}
function onSocketEnd(this: SessionSocket): void {
  const s = this[SESSION];
  if (s) sessionHandlers.end(s);
}

export class Session implements Timed {
  readonly info: SessionInfo;
  /**
   * When the current deadline (command or data) expires. A command line must
   * arrive whole by it; bytes of an unfinished line do not move it (slowloris).
   * During DATA/BDAT content it moves only as fast as the content earns
   * (limits.minDataRate), up to a cap for the whole transfer (#dataCap).
   */
  deadline = Infinity;
  /**
   * Time (ms) of the session's last progress: connect, a command that moved
   * the dialogue on (EHLO/HELO, AUTH, STARTTLS, MAIL, RCPT, DATA, BDAT, a
   * queued message; not NOOP, RSET, VRFY, HELP or errors), and during
   * content the time its octets have paid for at limits.minDataRate (never
   * ahead of now). When the connection table is full, the session longest
   * without progress is evicted first (see stalledSince).
   */
  #progress = Date.now();
  /** DATA/BDAT: the latest the current transfer may end, however fast its content came. */
  #dataCap = Infinity;
  #socket: net.Socket;
  readonly #deps: SessionDeps;
  readonly #reader: CommandReader;
  #mode: Mode = 'command';
  #busy = false;
  #out = '';
  #esmtp = false;
  #txn: Transaction | null = null;
  #errors = 0;
  #bdatRemaining = 0;
  #bdatLast = false;
  #pausedBusy = false;
  #pausedDisk = false;
  /**
   * A message is being committed to the spool. Pipelined commands behind it
   * (e.g. "BDAT 0 LAST\r\nMAIL FROM:…", RFC 3030 §4.2 / RFC 2920 §3.1) must
   * wait: they belong to the next transaction and their replies come after
   * the 250/4xx for the message.
   */
  #committing = false;
  #closing = false;
  #peerEnded = false;
  #messages = 0;
  readonly #started = Date.now();
  #closeReason = 'client';
  #tlsInfo: string | undefined;
  /** The backend's side of this connection, once the connect stage let it in. */
  #backend: BackendSession | null = null;
  /** A SASL exchange in progress: the next line is a response, not a command. */
  #sasl: SaslMechanism | null = null;
  /** Called once when the connection is gone. */
  onClose: ((session: Session) => void) | null = null;

  /** `localPort`: the listener's port, when known (saves a getsockname per connection). */
  constructor(socket: net.Socket, role: SessionInfo['role'], deps: SessionDeps, implicitTls = false, localPort?: number) {
    this.#socket = socket;
    this.#deps = deps;
    // The reader takes AUTH-sized lines; other commands are held to the §4.5.3.1.4 limit in #handle.
    this.#reader = new CommandReader(Math.max(deps.limits.commandLineLength, MAX_AUTH_LINE));
    this.info = {
      id: `${process.pid.toString(36)}${(++sessionCounter).toString(36)}`,
      remoteAddress: socket.remoteAddress ?? '',
      remotePort: socket.remotePort ?? 0,
      localPort: localPort ?? socket.localPort ?? 0,
      role,
      tls: implicitTls,
    };
    if (implicitTls) {
      // The listener starts a session only once the handshake has succeeded (RFC 8314 §3.3).
      this.#tlsInfo = describeTls(socket as tls.TLSSocket);
      countTlsSession('inbound', (socket as tls.TLSSocket).getProtocol?.());
    }
  }

  /** Begin: run connect checks, then greet (RFC 5321 §4.3.1: 220, or 554 to refuse). */
  async start(): Promise<void> {
    this.#attach(this.#socket);
    this.#busy = true;
    try {
      this.#backend = await this.#deps.backend.connect(this.info);
      const pause = this.#deps.limits.timeouts.greeting;
      if (pause > 0) {
        // A greeting pause: RFC 5321 §4.3.1 clients wait for the 220, so a
        // client that talks first is a bulk sender that does not read replies.
        await new Promise((r) => setTimeout(r, pause));
        if (this.#mode === 'closed') return;
        if (this.#reader.buffered > 0 || this.#peerEnded) {
          this.#write(`554 5.5.0 ${this.#deps.hostname} Protocol error: client sent data before the greeting\r\n`);
          this.#close('early talker');
          return;
        }
      }
      this.#write(`220 ${this.#deps.hostname} ESMTP Tern\r\n`);
    } catch (e) {
      // A connect-stage refusal (DNSBL 554, rate 421, a plugin) replaces the
      // greeting (RFC 5321 §3.1), with its enhanced code as every other reply.
      const err = SmtpError.from(e);
      if (!(e instanceof SmtpError)) this.#deps.log.error('connect check failed', { conn: this.info.id, error: e });
      this.#write(formatReply(err.toReply()));
      this.#close('refused at connect');
      return;
    } finally {
      this.#busy = false;
    }
    this.#process();
  }

  /** Graceful shutdown: idle sessions get 421 now, busy ones after their current reply. */
  shutdown(): void {
    this.#closing = true;
    if (this.#mode === 'command' && !this.#busy) this.#goodbye();
  }

  /** Immediate close (drain timeout expired). */
  destroy(): void {
    this.#close('shutdown');
  }

  #goodbye(): void {
    this.#reply(421, '4.3.2', `${this.#deps.hostname} Service shutting down, try again later`);
    this.#flush();
    this.#close('shutdown');
  }

  #attach(socket: net.Socket): void {
    // Listeners are shared functions that find their session on the socket:
    // an idle connection holds no closures of its own (memory per connection).
    (socket as SessionSocket)[SESSION] = this;
    socket.removeListener('error', ignoreSocketError);
    socket.on('data', onSocketData);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
    socket.on('end', onSocketEnd);
    this.#deps.sweeper.add(this);
    this.#setTimeout(this.#deps.limits.timeouts.command);
  }

  /** A deadline `ms` from now (0 = none); input does not move it. */
  #setTimeout(ms: number): void {
    this.deadline = this.#deps.sweeper.deadline(ms);
  }

  /**
   * DATA/BDAT content starts (after the 354, or with a BDAT command).
   * RFC 5321 §4.5.3.2 times each data block (3 minutes) and the whole
   * dialogue is open-ended; a trickle of one byte per block would hold the
   * session for ever. So, like Postfix's smtpd_per_request_deadline with
   * smtpd_min_data_rate: the deadline starts `timeouts.data` away and moves
   * on only by what the content earns at `limits.minDataRate` (and never
   * further than `timeouts.data` past now); the whole transfer is capped at
   * timeouts.data + messageSize / minDataRate, so a message of the largest
   * size on the slowest allowed link still fits.
   */
  #startTransfer(): void {
    const l = this.#deps.limits;
    const now = Date.now();
    this.#progress = now;
    this.#dataCap = l.timeouts.data > 0 ? now + l.timeouts.data + (l.messageSize * 1000) / l.minDataRate : Infinity;
    this.#setTimeout(l.timeouts.data);
  }

  /** `n` content octets arrived: they move progress (and the deadline) on by n / minDataRate seconds. */
  #transferred(n: number): void {
    const l = this.#deps.limits;
    this.#progress = Math.min(Date.now(), this.#progress + (n * 1000) / l.minDataRate);
    if (l.timeouts.data > 0) this.deadline = Math.min(this.#progress + l.timeouts.data, this.#dataCap);
  }

  /** The dialogue moved on (see #progress). */
  #progressed(): void {
    this.#progress = Date.now();
  }

  /**
   * For eviction when the connection table is full: the time of this
   * session's last progress, or Infinity while it may not be evicted (we are
   * working for it: a policy check, a commit, a disk that is catching up).
   */
  stalledSince(): number {
    if (this.#busy || this.#committing || this.#pausedDisk || this.#mode === 'closed') return Infinity;
    return this.#progress;
  }

  /** Close a stalled session to make room for a new client (RFC 5321 §3.8: 421 any time). */
  evict(): void {
    if (this.#mode === 'closed') return;
    // Mid-handshake (STARTTLS) there is no channel to write a reply on.
    if (this.#mode !== 'tls') {
      this.#reply(421, '4.4.2', `${this.#deps.hostname} Server busy and this connection idle; closing, try again later`);
      this.#flush();
    }
    this.#close('evicted');
  }

  onIdleTimeout(): void {
    if (this.#mode === 'closed') {
      // The lingering close below ran out: the peer never read our last reply.
      this.#socket.destroy();
      return;
    }
    // RFC 5321 §4.5.3.2: the server may close after its timeout, with 421.
    this.#reply(421, '4.4.2', `${this.#deps.hostname} Timeout, closing connection`);
    this.#flush();
    this.#close('timeout');
  }

  static {
    // Static blocks see private members: the shared socket listeners call in here.
    sessionHandlers = {
      data: (s, chunk) => s.#onData(chunk),
      error: (s, e) => {
        s.#deps.log.debug('socket error', { conn: s.info.id, error: e });
        s.#close('error');
      },
      close: (s) => {
        s.#deps.sweeper.delete(s);
        s.#close(s.#closeReason);
      },
      end: (s) => {
        // The client half-closed its side. Commands it sent before that still
        // run and get their replies (a script may send everything, then
        // shut down writing); the session ends once nothing is left to do.
        s.#peerEnded = true;
        if (!s.#busy && s.#mode !== 'tls') s.#close('client closed');
      },
    };
  }

  #onData(chunk: Buffer): void {
    // No deadline is refreshed here: see `deadline` (a byte is not progress).
    switch (this.#mode) {
      case 'command':
        this.#reader.push(chunk);
        if (this.#busy) {
          // Keep memory bounded while a slow command runs.
          if (this.#reader.buffered > 64 * 1024 && !this.#pausedBusy) {
            this.#pausedBusy = true;
            this.#socket.pause();
          }
          return;
        }
        this.#process();
        return;
      case 'data':
        this.#feedData(chunk);
        return;
      case 'bdat':
        this.#feedBdat(chunk);
        return;
      default:
        return; // 'tls' (bytes before the handshake are never read as commands) or 'closed'
    }
  }

  /** Run pipelined commands in order until input runs out or the mode changes. */
  #process(): void {
    if (this.#busy || this.#mode !== 'command') return;
    this.#busy = true;
    void this.#loop();
  }

  async #loop(): Promise<void> {
    try {
      // Stop at a commit (BDAT … LAST handled inside this loop): #finishMessage
      // resumes processing once the message's reply is known.
      const commandTimeout = this.#deps.limits.timeouts.command;
      while (this.#mode === 'command' && !this.#committing) {
        const line = this.#reader.next();
        if (!line) break;
        // A fresh deadline for our work on the line, and another for the
        // client's next line once this one is answered.
        this.#setTimeout(commandTimeout);
        await this.#handle(line);
        if (this.#mode === 'command' && !this.#committing) this.#setTimeout(commandTimeout);
      }
    } catch (e) {
      this.#deps.log.error('session failure', { conn: this.info.id, error: e });
      this.#reply(421, '4.3.0', `${this.#deps.hostname} Local error, closing connection`);
      this.#flush();
      this.#close('internal error');
      return;
    } finally {
      // While committing, the session stays busy so new input only queues up.
      if (!this.#committing) this.#busy = false;
    }
    if (this.#mode === 'closed' || this.#committing) return;
    if (this.#peerEnded) {
      this.#flush();
      return this.#close('client closed');
    }
    if (this.#pausedBusy) {
      this.#pausedBusy = false;
      this.#resume();
    }
    if (this.#closing && this.#mode === 'command') {
      this.#goodbye();
      return;
    }
    this.#flush();
    if (this.#mode === 'data' || this.#mode === 'bdat') {
      // Content pipelined right behind the command (BDAT; or an eager DATA client).
      const rest = this.#reader.takeRest();
      if (rest.length) this.#onData(rest);
    }
  }

  #resume(): void {
    if (!this.#pausedBusy && !this.#pausedDisk && this.#mode !== 'closed') this.#socket.resume();
  }

  #write(s: string): void {
    if (this.#mode !== 'closed' && this.#socket.writable) this.#socket.write(s);
  }

  #reply(code: number, enhanced: string | undefined, ...lines: string[]): void {
    this.#out += formatReply({ code, enhanced, lines });
  }

  #replyError(err: SmtpError): void {
    this.#reply(err.code, err.enhanced, err.text);
  }

  #flush(): void {
    if (this.#out) {
      this.#write(this.#out);
      this.#out = '';
    }
  }

  #close(reason: string): void {
    if (this.#mode === 'closed') return;
    this.#mode = 'closed';
    this.#closeReason = reason;
    this.#resetTransaction();
    this.#socket.end();
    this.#socket.destroySoon?.();
    // A peer that never reads could hold the socket open: destroy it after 5 s.
    if (!this.#socket.destroyed) {
      this.deadline = this.#deps.sweeper.deadline(5000);
      this.#deps.sweeper.add(this);
    } else this.#deps.sweeper.delete(this);
    this.#deps.log.info('connection', {
      conn: this.info.id,
      ip: this.info.remoteAddress,
      proxy: this.info.proxy,
      role: this.info.role,
      tls: this.#tlsInfo,
      helo: this.info.helo,
      messages: this.#messages,
      errors: this.#errors,
      duration: (Date.now() - this.#started) / 1000,
      end: reason,
    });
    this.onClose?.(this);
    this.onClose = null;
  }

  /** A 5xx for a client mistake; too many of them and the client is dropped (RFC 5321 §4.3.2 allows 421). */
  #clientError(err: SmtpError): void {
    this.#replyError(err);
    if (++this.#errors >= this.#deps.limits.errors) {
      this.#reply(421, '4.7.0', `${this.#deps.hostname} Too many errors, closing connection`);
      this.#flush();
      this.#close('too many errors');
    }
  }

  async #handle(line: CommandLine): Promise<void> {
    if (line.kind === 'error') {
      const text = {
        'bare-lf': 'Bare LF in command; lines must end with CRLF',
        'bare-cr': 'Bare CR in command; lines must end with CRLF',
        'too-long': `Command line too long (limit ${this.#deps.limits.commandLineLength} octets)`,
        'bad-utf8': 'Command is not valid UTF-8',
      }[line.error];
      this.#clientError(new SmtpError(500, '5.5.2', text));
      return;
    }
    const text = line.text;
    if (this.#sasl) return this.#saslResponse(text);
    const space = text.indexOf(' ');
    const verb = (space < 0 ? text : text.slice(0, space)).toUpperCase();
    const arg = space < 0 ? '' : text.slice(space + 1);
    if (verb !== 'AUTH' && Buffer.byteLength(text) + 2 > this.#deps.limits.commandLineLength) {
      this.#clientError(new SmtpError(500, '5.5.2', `Command line too long (limit ${this.#deps.limits.commandLineLength} octets)`));
      return;
    }
    try {
      switch (verb) {
        case 'EHLO':
        case 'HELO':
          return await this.#helo(verb, arg);
        case 'MAIL':
          return await this.#mail(arg);
        case 'RCPT':
          return await this.#rcpt(arg);
        case 'DATA':
          return this.#data(arg);
        case 'BDAT':
          return this.#bdat(arg);
        case 'RSET':
          if (arg.trim()) throw new SmtpError(501, '5.5.4', 'RSET takes no arguments');
          this.#resetTransaction();
          return this.#reply(250, '2.0.0', 'Flushed');
        case 'NOOP':
          return this.#reply(250, '2.0.0', 'OK');
        case 'QUIT':
          this.#reply(221, '2.0.0', `${this.#deps.hostname} Bye`);
          this.#flush();
          return this.#close('quit');
        case 'VRFY':
          if (!arg.trim()) throw new SmtpError(501, '5.5.4', 'VRFY needs an argument');
          // RFC 5321 §3.5.3: 252 instead of disclosing who exists.
          return this.#reply(252, '2.5.0', 'Cannot VRFY user, but will accept message and attempt delivery');
        case 'EXPN':
          throw new SmtpError(502, '5.5.1', 'EXPN not available');
        case 'HELP':
          return this.#reply(214, '2.0.0', 'Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS', 'See RFC 5321');
        case 'STARTTLS':
          return this.#starttls(arg);
        case 'AUTH':
          return await this.#auth(arg);
        default:
          if (FOREIGN_PROTOCOL.test(text) && this.info.helo === undefined) {
            this.#flush();
            return this.#close('foreign protocol');
          }
          throw new SmtpError(500, '5.5.2', 'Command not recognized');
      }
    } catch (e) {
      if (e instanceof SmtpError) {
        if (e.code >= 500) this.#clientError(e);
        else this.#replyError(e);
        return;
      }
      this.#deps.log.error('command failed', { conn: this.info.id, verb, error: e });
      this.#replyError(SmtpError.from(e));
    }
  }

  async #helo(verb: 'EHLO' | 'HELO', arg: string): Promise<void> {
    // Only SP/HTAB around the name are forgiven; String#trim would also eat
    // \v, \f and other controls. The name itself must be a domain or an
    // address literal (§4.1.1.1): it is echoed below and goes into Received:.
    const name = arg.replace(/^[ \t]+|[ \t]+$/g, '');
    if (!isHeloArgument(name)) throw new SmtpError(501, '5.5.4', `Syntax: ${verb} domain (or address literal)`);
    await this.#backend!.helo(name);
    // §4.1.4: EHLO/HELO resets any transaction and state from before.
    this.#resetTransaction();
    // Only the first greeting is progress: an EHLO loop is not.
    if (this.info.helo === undefined) this.#progressed();
    this.info.helo = name;
    this.#esmtp = verb === 'EHLO';
    const host = this.#deps.hostname;
    if (verb === 'HELO') return this.#reply(250, undefined, host);
    const lines = [
      `${host} Hello ${name} [${this.info.remoteAddress}]`,
      'PIPELINING',
      `SIZE ${this.#deps.limits.messageSize}`,
      '8BITMIME',
      'SMTPUTF8',
      'ENHANCEDSTATUSCODES',
      'CHUNKING',
      'DSN',
    ];
    if (this.#deps.secureContext && !this.info.tls) lines.push('STARTTLS');
    // RFC 8689 §2: REQUIRETLS is offered only inside TLS.
    else if (this.info.tls) lines.push('REQUIRETLS');
    // RFC 4954 §4 + RFC 8314: mechanisms that send passwords only over TLS,
    // so AUTH is not even advertised before it.
    if (this.#authOffered() && this.info.tls) lines.push(`AUTH ${MECHANISMS.join(' ')}`);
    lines.push('HELP');
    this.#reply(250, undefined, ...lines);
  }

  async #mail(arg: string): Promise<void> {
    if (this.info.helo === undefined) throw new SmtpError(503, '5.5.1', 'Send EHLO or HELO first');
    if (this.#txn) throw new SmtpError(503, '5.5.1', 'Nested MAIL command');
    const m = /^FROM: ?/i.exec(arg);
    if (!m) throw new SmtpError(501, '5.5.4', 'Syntax: MAIL FROM:<address>');
    const { address, rest } = parsePath(arg.slice(m[0].length), true);
    const params = parseMailParams(rest, { esmtp: this.#esmtp });
    // RFC 8689 §4.1: REQUIRETLS only in a TLS session (it is not even offered outside one).
    if (params.requireTls && !this.info.tls) throw new SmtpError(530, '5.7.10', 'REQUIRETLS needs a TLS session: STARTTLS first');
    // RFC 6531 §3.4: UTF-8 addresses only in SMTPUTF8 transactions.
    if (address?.utf8 && !params.smtputf8) throw new SmtpError(553, '5.6.7', 'Non-ASCII address requires SMTPUTF8');
    // RFC 1870 §6.2: refuse a declared size over the limit up front.
    if (params.size !== undefined && params.size > this.#deps.limits.messageSize) {
      throw new SmtpError(552, '5.3.4', 'Message size exceeds fixed maximum message size');
    }
    await this.#backend!.mail(address, params);
    this.#txn = { params, rcptCount: 0 };
    this.#progressed();
    this.#reply(250, '2.1.0', 'Sender OK');
  }

  async #rcpt(arg: string): Promise<void> {
    const txn = this.#txn;
    if (!txn) throw new SmtpError(503, '5.5.1', 'Need MAIL before RCPT');
    const m = /^TO: ?/i.exec(arg);
    if (!m) throw new SmtpError(501, '5.5.4', 'Syntax: RCPT TO:<address>');
    const pathText = arg.slice(m[0].length);
    let to: Address | 'postmaster';
    let rest: string;
    // RFC 5321 §4.1.1.3: "<Postmaster>" without a domain must be accepted.
    const pm = /^<postmaster>/i.exec(pathText);
    if (pm) {
      to = 'postmaster';
      rest = pathText.slice(pm[0].length);
      if (rest.length > 0 && !rest.startsWith(' ')) throw new SmtpError(501, '5.5.4', 'Syntax error after address');
      rest = rest.trim();
    } else {
      const parsed = parsePath(pathText, false);
      to = parsed.address!;
      rest = parsed.rest;
    }
    const params = parseRcptParams(rest, { esmtp: this.#esmtp });
    if (to !== 'postmaster' && to.utf8 && !txn.params.smtputf8) throw new SmtpError(553, '5.6.7', 'Non-ASCII address requires SMTPUTF8');
    // RFC 5321 §4.5.3.1.8: 452 (not 5xx) so the client sends the rest later.
    if (txn.rcptCount >= this.#deps.limits.recipients) throw new SmtpError(452, '4.5.3', 'Too many recipients');
    await this.#backend!.rcpt(to, params);
    txn.rcptCount++;
    this.#progressed();
    this.#reply(250, '2.1.5', 'Recipient OK');
  }

  /** The content starts: the backend's sink for it. */
  #beginMessage(txn: Transaction): MessageSink {
    const tlsOn = this.info.tls;
    const auth = this.info.user !== undefined;
    const base = txn.params.smtputf8 ? 'UTF8SMTP' : this.#esmtp ? 'ESMTP' : 'SMTP';
    // RFC 3848 / RFC 6531 §3.7.3: S for TLS, A for authenticated.
    const protocol = base === 'SMTP' ? 'SMTP' : `${base}${tlsOn ? 'S' : ''}${auth ? 'A' : ''}`;
    return this.#backend!.data({ protocol, tls: this.#tlsInfo });
  }

  #data(arg: string): void {
    const txn = this.#txn;
    if (arg.trim()) throw new SmtpError(501, '5.5.4', 'DATA takes no arguments');
    if (!txn) throw new SmtpError(503, '5.5.1', 'Need MAIL before DATA');
    if (txn.chunking) throw new SmtpError(503, '5.5.1', 'DATA not allowed after BDAT');
    // RFC 5321 §3.3 / RFC 2920 §3.1: DATA without a valid recipient fails.
    if (txn.rcptCount === 0) throw new SmtpError(554, '5.5.1', 'No valid recipients');
    txn.sink = this.#beginMessage(txn);
    txn.reader = this.#newReader(true);
    this.#mode = 'data';
    this.#startTransfer();
    this.#reply(354, undefined, 'End data with <CR><LF>.<CR><LF>');
  }

  #newReader(dotStuffed: boolean): DataReader {
    return new DataReader({ maxSize: this.#deps.limits.messageSize, maxLineLength: this.#deps.limits.lineLength, dotStuffed });
  }

  /** Made on the first message: an idle session holds no closure for it. */
  #emitFn: ((part: Buffer) => void) | null = null;
  get #emit(): (part: Buffer) => void {
    return (this.#emitFn ??= (part) => this.#emitPart(part));
  }

  /** Content bytes go to the spool as they arrive; the socket pauses while the disk catches up. */
  #emitPart(part: Buffer): void {
    const sink = this.#txn?.sink;
    if (sink && !sink.write(part) && !this.#pausedDisk) {
      this.#pausedDisk = true;
      this.#socket.pause();
      sink.onDrain(() => {
        this.#pausedDisk = false;
        if (this.#mode === 'data' || this.#mode === 'bdat') {
          // The wait was ours, not the client's: its content clock restarts now.
          this.#progress = Date.now();
          this.#transferred(0);
        }
        this.#resume();
      });
    }
  }

  #feedData(chunk: Buffer): void {
    const txn = this.#txn!;
    const reader = txn.reader!;
    const used = reader.push(chunk, this.#emit);
    this.#transferred(used);
    if (!reader.done) return;
    this.#mode = 'command';
    this.#setTimeout(this.#deps.limits.timeouts.command);
    if (used < chunk.length) this.#reader.push(chunk.subarray(used));
    this.#finishMessage(txn, reader.error ? DATA_ERRORS[reader.error] : null, true);
  }

  /** Commit (or refuse) the message; replies 250 with the queue id only once it is durable. */
  #finishMessage(txn: Transaction, error: SmtpError | null, endsWithLineBreak: boolean): void {
    this.#busy = true;
    this.#committing = true;
    // The client is waiting on us now: a slow disk must not time it out into
    // a 421 for a message that was in fact queued (and would be sent twice).
    this.#setTimeout(0);
    const sink = txn.sink;
    const done = async (): Promise<void> => {
      if (error || !sink) {
        await sink?.abort();
        const reason = error ?? new SmtpError(451, '4.3.0', 'Local error in processing, try again later');
        this.#deps.log.info('message refused', { conn: this.info.id, reason: reason.text, size: txn.reader?.size });
        return this.#replyError(reason);
      }
      try {
        const msg = await sink.commit(endsWithLineBreak);
        this.#messages++;
        this.#progressed();
        this.#deps.log.info('message', { conn: this.info.id, id: msg.id, from: msg.sender, rcpts: msg.recipients, size: msg.size });
        this.#reply(250, '2.0.0', `OK queued as ${msg.id}`);
      } catch (e) {
        // The data stage's verdict, or a failure the backend already turned into a reply (a full disk: 452).
        if (e instanceof SmtpError) this.#deps.log.info('message refused', { conn: this.info.id, reason: e.text });
        else this.#deps.log.error('message commit failed', { conn: this.info.id, error: e });
        // Not counted toward limits.errors: that limit is for commands that
        // fail, and a refused message cost its client the whole transfer (a
        // submission client may get many refusals in one session).
        this.#replyError(SmtpError.from(e));
      }
    };
    void done().finally(() => {
      this.#resetTransaction();
      this.#committing = false;
      this.#busy = false;
      if (this.#mode === 'closed') return;
      this.#setTimeout(this.#deps.limits.timeouts.command);
      this.#flush();
      if (this.#closing) return this.#goodbye();
      this.#process();
    });
  }

  #bdat(arg: string): void {
    // RFC 3030 §2: BDAT <chunk-size> [LAST]
    const m = /^(\d{1,15})( +LAST)? *$/i.exec(arg);
    if (!m) {
      // Without a size we cannot find the next command: the stream is lost.
      this.#reply(501, '5.5.4', 'Syntax: BDAT <size> [LAST]; closing connection');
      this.#flush();
      this.#close('bad BDAT');
      return;
    }
    this.#bdatRemaining = Number(m[1]);
    this.#bdatLast = m[2] !== undefined;
    const txn = this.#txn;
    // Sequence errors still swallow the chunk, so the dialogue stays in sync.
    if (!this.#esmtp) this.#bdatError = new SmtpError(503, '5.5.1', 'BDAT requires EHLO');
    else if (!txn) this.#bdatError = new SmtpError(503, '5.5.1', 'Need MAIL before BDAT');
    else if (txn.rcptCount === 0) this.#bdatError = new SmtpError(554, '5.5.1', 'No valid recipients');
    else {
      this.#bdatError = null;
      if (!txn.chunking) {
        txn.chunking = true;
        txn.reader = this.#newReader(false);
        try {
          txn.sink = this.#beginMessage(txn);
        } catch (e) {
          // The chunk is on its way regardless: it is read and refused, and so is every later one.
          if (!(e instanceof SmtpError)) this.#deps.log.error('command failed', { conn: this.info.id, verb: 'BDAT', error: e });
          txn.failed = SmtpError.from(e);
        }
      }
    }
    this.#mode = 'bdat';
    this.#startTransfer();
    if (this.#bdatRemaining === 0) this.#endBdatChunk();
  }

  #bdatError: SmtpError | null = null;

  #feedBdat(chunk: Buffer): void {
    const take = Math.min(this.#bdatRemaining, chunk.length);
    const part = take === chunk.length ? chunk : chunk.subarray(0, take);
    this.#bdatRemaining -= take;
    this.#transferred(take);
    if (!this.#bdatError) this.#txn!.reader!.push(part, this.#emit);
    if (take < chunk.length) this.#reader.push(chunk.subarray(take));
    if (this.#bdatRemaining === 0) this.#endBdatChunk();
  }

  #endBdatChunk(): void {
    this.#mode = 'command';
    this.#setTimeout(this.#deps.limits.timeouts.command);
    const txn = this.#txn;
    if (this.#bdatError || !txn) {
      this.#clientError(this.#bdatError ?? new SmtpError(503, '5.5.1', 'Need MAIL before BDAT'));
      this.#bdatError = null;
      return this.#afterChunk();
    }
    const reader = txn.reader!;
    const error = txn.failed ?? (reader.error ? DATA_ERRORS[reader.error] : null);
    if (this.#bdatLast) {
      reader.finish();
      const finalError = error ?? (reader.error ? DATA_ERRORS[reader.error] : null);
      return this.#finishMessage(txn, finalError, reader.endsWithLineBreak);
    }
    if (error) {
      // Refuse this chunk and every later one of the transaction (RFC 3030 §2: the
      // client must still send them, or RSET).
      txn.failed = error;
      this.#replyError(error);
    } else {
      this.#reply(250, '2.0.0', `${reader.size} octets received`);
    }
    this.#afterChunk();
  }

  #afterChunk(): void {
    if (this.#mode === 'closed') return;
    // Called from a socket event (or from #loop for BDAT 0): continue with pipelined commands.
    if (!this.#busy) {
      this.#flush();
      this.#process();
    }
  }

  #authOffered(): boolean {
    return this.#backend?.authAvailable ?? false;
  }

  /** AUTH mechanism [initial-response] (RFC 4954 §4). */
  async #auth(arg: string): Promise<void> {
    if (!this.#authOffered()) throw new SmtpError(502, '5.5.1', 'AUTH not available on this service');
    if (!this.#esmtp) throw new SmtpError(503, '5.5.1', 'Send EHLO first');
    // RFC 4954 §4 / RFC 3207: never take a password in the clear.
    if (!this.info.tls) throw new SmtpError(538, '5.7.11', 'Encryption required for requested authentication mechanism');
    if (this.info.user !== undefined) throw new SmtpError(503, '5.5.1', 'Already authenticated');
    if (this.#txn) throw new SmtpError(503, '5.5.1', 'AUTH not allowed during a mail transaction');
    const [name = '', initial, extra] = arg.trim().split(/ +/);
    if (!name || extra !== undefined) throw new SmtpError(501, '5.5.4', 'Syntax: AUTH mechanism [initial-response]');
    const mech = createMechanism(name.toUpperCase());
    if (!mech) throw new SmtpError(504, '5.5.4', 'Unrecognized authentication type');
    await this.#saslStep(mech, mech.start(initial));
  }

  async #saslResponse(text: string): Promise<void> {
    const mech = this.#sasl!;
    this.#sasl = null;
    await this.#saslStep(mech, mech.step(text));
  }

  async #saslStep(mech: SaslMechanism, step: SaslStep): Promise<void> {
    switch (step.kind) {
      case 'challenge':
        this.#sasl = mech;
        return this.#reply(334, undefined, step.challenge);
      case 'error':
        return this.#clientError(new SmtpError(step.code, step.enhanced, step.text));
      case 'credentials':
        try {
          this.info.user = await this.#backend!.auth(step.user, step.password);
          this.#progressed();
          this.#reply(235, '2.7.0', 'Authentication successful');
        } catch (e) {
          const err = SmtpError.from(e);
          if (err.code >= 500) this.#clientError(err);
          else this.#replyError(err);
        }
    }
  }

  #starttls(arg: string): void {
    if (arg.trim()) throw new SmtpError(501, '5.5.4', 'STARTTLS takes no arguments');
    if (this.info.tls) throw new SmtpError(503, '5.5.1', 'Already using TLS');
    const ctx = this.#deps.secureContext;
    if (!ctx) throw new SmtpError(502, '5.5.1', 'STARTTLS not available');
    if (this.#txn) throw new SmtpError(503, '5.5.1', 'STARTTLS not allowed during a mail transaction');
    this.#reply(220, '2.0.0', 'Ready to start TLS');
    this.#flush();
    this.#progressed(); // the handshake has its own timer; eviction may still take a stalled one
    // RFC 3207 §4.2 and CVE-2011-0411: anything the client pipelined after
    // STARTTLS arrived in plaintext and is thrown away, never executed.
    this.#reader.takeRest();
    this.#mode = 'tls';
    const raw = this.#socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('end');
    raw.removeAllListeners('close');
    raw.removeAllListeners('error');
    this.#setTimeout(0); // the handshake has its own timer below
    raw.on('error', () => this.#close('error'));
    const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: ctx });
    this.#socket = secure;
    const timer = setTimeout(() => this.#close('tls handshake timeout'), this.#deps.limits.timeouts.command);
    // A peer that hangs up before the handshake completes causes no 'error',
    // only 'end' (and 'close' not until we end our side); without this the
    // session and its connection-limit slot lingered until the handshake timer.
    const onEarlyClose = (): void => {
      clearTimeout(timer);
      this.#close('closed during tls handshake');
    };
    secure.once('end', onEarlyClose);
    secure.once('close', onEarlyClose);
    secure.once('secure', () => {
      clearTimeout(timer);
      // A session closed meanwhile (evicted, or an error on the raw socket)
      // has released its connection slot and aborted its work: a handshake
      // finishing late must not bring it back to life on this socket.
      if (this.#mode === 'closed') return void secure.destroy();
      // From now on #attach's handlers own the socket.
      secure.off('end', onEarlyClose);
      secure.off('close', onEarlyClose);
      // §4.2: the server MUST discard any knowledge obtained from the client before TLS.
      this.info.tls = true;
      this.info.helo = undefined;
      this.#esmtp = false;
      this.#resetTransaction();
      this.#tlsInfo = describeTls(secure);
      countTlsSession('inbound', secure.getProtocol());
      this.#mode = 'command';
      this.#progressed();
      this.#attach(secure);
      this.#process();
    });
    secure.on('error', (e) => {
      clearTimeout(timer);
      this.#deps.log.info('tls handshake failed', { conn: this.info.id, error: e });
      this.#close('tls error');
    });
  }

  /** The transaction is over (the backend drops an uncommitted message, and lets a commit in flight finish). */
  #resetTransaction(): void {
    this.#txn = null;
    this.#backend?.reset();
  }
}

export function describeTls(s: tls.TLSSocket): string {
  const cipher = s.getCipher?.();
  return `${s.getProtocol?.() ?? 'TLS'} ${cipher?.standardName ?? cipher?.name ?? ''}`.trim();
}
