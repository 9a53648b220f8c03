// A scripted SMTP server for client tests: a real TCP listener on
// 127.0.0.1:0 that speaks just enough SMTP (EHLO/HELO, MAIL, RCPT, DATA with
// dot-unstuffing, BDAT, RSET, NOOP, QUIT, STARTTLS, AUTH PLAIN/LOGIN), says
// yes to everything by default, and lets a test replace any reply, drop
// the connection or stall. It records what it received byte-exact.
//
//   const peer = await ScriptedPeer.start({ extensions: ['PIPELINING'], on: (c) => c.verb === 'RCPT' && c.arg.includes('bad') ? '550 5.1.1 No such user' : undefined });
//   ... peer.last.commands, peer.last.messages[0].data ...
//   await peer.close();

import net from 'node:net';
import tls from 'node:tls';

/**
 * What to do instead of the default reply:
 * - a string: that reply (several lines joined with "\r\n", CRLF added);
 * - { reply?, close: true }: that reply (if any), then close;
 * - { reply?, freeze: true }: that reply (if any), then stop reading (TCP backpressure builds up);
 * - 'drop': close at once, no reply;
 * - 'stall': never reply again (input is still read, and ignored).
 */
export type PeerAction = string | { reply?: string; close: true } | { reply?: string; freeze: true } | 'drop' | 'stall';

export interface PeerCommand {
  /** Upper-case verb; 'EOM' is the end of a message (the final dot, or BDAT … LAST once its chunk is in). */
  verb: string;
  /** The rest of the line after the verb and a space (for 'BDAT' and 'EOM' after BDAT: the BDAT arguments). */
  arg: string;
  line: string;
  session: PeerSession;
}

export interface PeerOptions {
  /** Default '220 peer.test ESMTP scripted'. */
  greeting?: string;
  /** EHLO keywords (with parameters); STARTTLS is added when `tls` is given. */
  extensions?: string[];
  /** false: EHLO gets 502, so the client must fall back to HELO. */
  ehlo?: boolean;
  /** Certificate and key: STARTTLS is offered (or, with implicitTls, TLS from the first byte). */
  tls?: { cert: string; key: string };
  implicitTls?: boolean;
  /** AUTH succeeds only with these; without them any credentials pass. */
  credentials?: { user: string; password: string };
  /** Consulted for every command (and 'EOM') before the default reply. */
  on?: (cmd: PeerCommand) => PeerAction | undefined;
  /** Where to listen; default 127.0.0.1 and an ephemeral port. */
  host?: string;
  port?: number;
}

export interface PeerMessage {
  /** The content, after dot-unstuffing (DATA) or as the chunks carried it (BDAT). */
  data: Buffer;
  bdat: boolean;
  /** BDAT: the chunk sizes, in order. */
  chunks: number[];
}

export interface PeerSession {
  /** Every command line received (also AUTH continuation lines), without CRLF, decoded as UTF-8. */
  commands: string[];
  messages: PeerMessage[];
  auth: { mechanism: string; user: string; password: string }[];
  tls: boolean;
  /** Every 'data' event's bytes, in order (decrypted after TLS): shows how the client grouped its writes. */
  reads: Buffer[];
  closed: boolean;
}

export const DEFAULT_EXTENSIONS = ['PIPELINING', 'SIZE 10485760', '8BITMIME', 'ENHANCEDSTATUSCODES', 'CHUNKING', 'DSN', 'SMTPUTF8'];

type Mode = 'command' | 'data' | 'bdat' | 'auth-plain' | 'auth-user' | 'auth-pass' | 'stalled' | 'closed';

class PeerConnection {
  readonly session: PeerSession = { commands: [], messages: [], auth: [], tls: false, reads: [], closed: false };
  #socket: net.Socket;
  readonly #opts: PeerOptions;
  #buf = Buffer.alloc(0);
  #mode: Mode = 'command';
  #parts: Buffer[] = [];
  #chunks: number[] = [];
  #bdatLeft = 0;
  #bdatLast = false;
  #bdatArg = '';
  #user = '';

  constructor(socket: net.Socket, opts: PeerOptions, implicit: boolean) {
    this.#socket = socket;
    this.#opts = opts;
    socket.setNoDelay(true); // replies written one by one must not wait for Nagle
    this.session.tls = implicit;
    this.#attach(socket);
    this.#send(opts.greeting ?? '220 peer.test ESMTP scripted');
  }

  #attach(s: net.Socket): void {
    s.on('data', (d: Buffer) => {
      this.session.reads.push(d);
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#process();
    });
    s.on('error', () => {});
    s.on('close', () => {
      this.session.closed = true;
      this.#mode = 'closed';
    });
  }

  #send(text: string): void {
    if (this.#mode !== 'closed' && !this.#socket.destroyed) this.#socket.write(text + '\r\n');
  }

  /** Apply the hook's action if any; returns true when it took over. */
  #hook(verb: string, arg: string, line: string): boolean {
    const action = this.#opts.on?.({ verb, arg, line, session: this.session });
    if (action === undefined) return false;
    if (action === 'drop') {
      this.#mode = 'closed';
      this.#socket.destroy();
    } else if (action === 'stall') {
      this.#mode = 'stalled';
    } else if (typeof action === 'string') {
      this.#send(action);
      if (verb === 'DATA' && action.startsWith('354')) this.#mode = 'data';
    } else if ('freeze' in action) {
      if (action.reply) this.#send(action.reply);
      this.#mode = 'stalled';
      this.#socket.pause();
    } else {
      if (action.reply) this.#send(action.reply);
      this.#mode = 'closed';
      this.#socket.end();
    }
    return true;
  }

  #line(): string | null {
    const i = this.#buf.indexOf('\r\n');
    if (i < 0) return null;
    const line = this.#buf.subarray(0, i).toString('latin1');
    this.#buf = this.#buf.subarray(i + 2);
    return line;
  }

  #process(): void {
    for (;;) {
      switch (this.#mode) {
        case 'stalled':
        case 'closed':
          this.#buf = Buffer.alloc(0);
          return;
        case 'bdat': {
          const n = Math.min(this.#bdatLeft, this.#buf.length);
          this.#parts.push(this.#buf.subarray(0, n));
          this.#buf = this.#buf.subarray(n);
          this.#bdatLeft -= n;
          if (this.#bdatLeft > 0) return;
          this.#mode = 'command';
          if (this.#bdatLast) this.#endMessage(true);
          else if (!this.#hook('BDAT', this.#bdatArg, `BDAT ${this.#bdatArg}`)) this.#send(`250 2.0.0 ${this.#chunks.at(-1)} octets received`);
          continue;
        }
        case 'data': {
          const line = this.#line();
          if (line === null) return;
          if (line === '.') {
            this.#mode = 'command';
            this.#bdatArg = '';
          this.#endMessage(false);
            continue;
          }
          // RFC 5321 §4.5.2: drop the stuffed dot.
          this.#parts.push(Buffer.from((line.startsWith('.') ? line.slice(1) : line) + '\r\n', 'latin1'));
          continue;
        }
        default: {
          const raw = this.#line();
          if (raw === null) return;
          const line = Buffer.from(raw, 'latin1').toString('utf8');
          this.session.commands.push(line);
          this.#command(line);
        }
      }
    }
  }

  #endMessage(bdat: boolean): void {
    this.session.messages.push({ data: Buffer.concat(this.#parts), bdat, chunks: this.#chunks });
    this.#parts = [];
    this.#chunks = [];
    if (!this.#hook('EOM', this.#bdatArg, '')) this.#send(`250 2.0.0 OK queued as M${this.session.messages.length}`);
  }

  #command(line: string): void {
    const mode = this.#mode;
    if (mode === 'auth-plain' || mode === 'auth-user' || mode === 'auth-pass') return this.#authStep(line);
    const sp = line.indexOf(' ');
    const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? '' : line.slice(sp + 1);
    if (verb === 'BDAT') {
      // The chunk follows at once; the hook sees it once the chunk is in ('BDAT' or 'EOM').
      const m = /^(\d+)( LAST)?$/i.exec(arg);
      if (!m) return this.#send('501 5.5.4 Syntax: BDAT size [LAST]');
      this.#bdatLeft = Number(m[1]);
      this.#bdatLast = m[2] !== undefined;
      this.#bdatArg = arg;
      this.#chunks.push(this.#bdatLeft);
      this.#mode = 'bdat';
      return;
    }
    if (this.#hook(verb, arg, line)) return;
    switch (verb) {
      case 'EHLO': {
        if (this.#opts.ehlo === false) return this.#send('502 5.5.1 Command not implemented');
        const ext = [...(this.#opts.extensions ?? DEFAULT_EXTENSIONS)];
        if (this.#opts.tls && !this.session.tls) ext.push('STARTTLS');
        const lines = ['peer.test Hello', ...ext];
        return this.#send(lines.map((l, i) => `250${i === lines.length - 1 ? ' ' : '-'}${l}`).join('\r\n'));
      }
      case 'HELO':
        return this.#send('250 peer.test');
      case 'MAIL':
        return this.#send('250 2.1.0 Sender OK');
      case 'RCPT':
        return this.#send('250 2.1.5 Recipient OK');
      case 'DATA':
        this.#mode = 'data';
        return this.#send('354 End data with <CR><LF>.<CR><LF>');
      case 'RSET':
        this.#parts = [];
        this.#chunks = [];
        return this.#send('250 2.0.0 Flushed');
      case 'NOOP':
        return this.#send('250 2.0.0 OK');
      case 'QUIT':
        this.#send('221 2.0.0 Bye');
        this.#mode = 'closed';
        this.#socket.end();
        return;
      case 'STARTTLS':
        return this.#starttls();
      case 'AUTH': {
        const [mech = '', initial] = arg.split(' ');
        if (mech.toUpperCase() === 'PLAIN') {
          if (initial === undefined) {
            this.#mode = 'auth-plain';
            return this.#send('334 ');
          }
          return this.#plain(initial);
        }
        if (mech.toUpperCase() === 'LOGIN') {
          this.#mode = 'auth-user';
          return this.#send('334 VXNlcm5hbWU6');
        }
        return this.#send('504 5.5.4 Unrecognized authentication type');
      }
      default:
        return this.#send('500 5.5.2 Command not recognized');
    }
  }

  #authStep(line: string): void {
    const mode = this.#mode;
    this.#mode = 'command';
    if (mode === 'auth-plain') return this.#plain(line);
    const text = Buffer.from(line, 'base64').toString('utf8');
    if (mode === 'auth-user') {
      this.#user = text;
      this.#mode = 'auth-pass';
      return this.#send('334 UGFzc3dvcmQ6');
    }
    this.#check('LOGIN', this.#user, text);
  }

  #plain(b64: string): void {
    const [, user = '', password = ''] = Buffer.from(b64, 'base64').toString('utf8').split('\0');
    this.#check('PLAIN', user, password);
  }

  #check(mechanism: string, user: string, password: string): void {
    this.session.auth.push({ mechanism, user, password });
    const want = this.#opts.credentials;
    if (want && (want.user !== user || want.password !== password)) return this.#send('535 5.7.8 Authentication credentials invalid');
    this.#send('235 2.7.0 Authentication successful');
  }

  #starttls(): void {
    const ctx = this.#opts.tls;
    if (!ctx || this.session.tls) return this.#send('454 4.7.0 TLS not available');
    this.#send('220 2.0.0 Ready to start TLS');
    const raw = this.#socket;
    raw.removeAllListeners('data');
    this.#buf = Buffer.alloc(0); // RFC 3207 §4.2: nothing pipelined before TLS is kept
    const s = new tls.TLSSocket(raw, { isServer: true, cert: ctx.cert, key: ctx.key });
    this.#socket = s;
    s.once('secure', () => {
      this.session.tls = true;
    });
    this.#attach(s);
  }
}

export class ScriptedPeer {
  readonly sessions: PeerSession[] = [];
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();

  private constructor(server: net.Server) {
    this.#server = server;
  }

  static async start(opts: PeerOptions = {}): Promise<ScriptedPeer> {
    const implicit = opts.implicitTls === true;
    const onConnection = (socket: net.Socket): void => {
      peer.#sockets.add(socket);
      socket.on('close', () => peer.#sockets.delete(socket));
      peer.sessions.push(new PeerConnection(socket, opts, implicit).session);
    };
    const server = implicit ? tls.createServer({ cert: opts.tls!.cert, key: opts.tls!.key }, onConnection) : net.createServer(onConnection);
    const peer = new ScriptedPeer(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', resolve);
    });
    return peer;
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  /** The most recent connection. */
  get last(): PeerSession {
    const s = this.sessions.at(-1);
    if (!s) throw new Error('no connection yet');
    return s;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
