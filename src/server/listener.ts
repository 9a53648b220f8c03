// Listeners: one TCP server per configured address/port and role.
// Connection limits are enforced here, before any session state exists
// (when the table is full, a stalled session is evicted first: see
// ConnectionCounter.evictStalled);
// implicit TLS (port 465, RFC 8314 §3.3) is a TLS socket wrapped around the
// accepted TCP socket, so the same limits apply before the handshake.
//
// Behind a load balancer a listener may take the PROXY protocol (HAProxy's
// proxy-protocol.txt): the header comes first, before any limit is applied,
// and only from the configured proxies; the client it names is then the
// connection's address for everything (limits, policy, Received).

import net from 'node:net';
import tls from 'node:tls';
import { Session, ignoreSocketError, type SessionDeps } from './session.ts';
import { ProxyHeaderParser } from './proxy-protocol.ts';
import { normalizeIp } from '../policy/policy.ts';
import type { SmtpListenerConfig } from '../config/types.ts';
import { CounterFamily, type Count } from '../metrics/counter.ts';

/**
 * How long a refused connection may take to read our 421 and close. A peer
 * that ignores our FIN would otherwise keep the socket (an fd outside every
 * connection limit) forever, and hold up server.close() at shutdown.
 */
const REFUSED_LINGER_MS = 5000;

export interface ListenerDeps extends SessionDeps {
  /** Shared across listeners: total and per-IP connection counts. */
  counter: ConnectionCounter;
  maxConnections: number;
  maxPerIp: number;
  /** Who may send a PROXY protocol header (edge.proxyFrom); nobody when absent. */
  proxyFrom?: ((ip: string) => boolean) | undefined;
  /** How long a proxy has to send its header (ms). */
  proxyTimeout?: number | undefined;
}

/**
 * Labelled by the listener's role, not its address and port: roles are a
 * fixed set (smtp, submission, submissions) that dashboards compare, while
 * two listeners of one role (say, on IPv4 and IPv6) are one service.
 */
const connections = new CounterFamily({
  name: 'tern_smtp_connections_total',
  help: 'SMTP connections accepted (past the connection limits, before any TLS handshake), by listener role: smtp, submission, submissions.',
  labelNames: ['listener'],
});
for (const role of ['smtp', 'submission', 'submissions']) connections.child({ listener: role });

/** When proxyTimeout is not given. */
const DEFAULT_PROXY_TIMEOUT_MS = 5000;

/** An implicit-TLS connection still in its handshake: it holds a slot but has no session yet. */
interface Handshake {
  ip: string;
  since: number;
  /** Destroys the socket and frees its slot now (not at its 'close' event). */
  drop: () => void;
}

export class ConnectionCounter {
  total = 0;
  readonly perIp = new Map<string, number>();
  readonly sessions = new Set<Session>();
  readonly handshakes = new Set<Handshake>();
  add(ip: string): void {
    this.total++;
    this.perIp.set(ip, (this.perIp.get(ip) ?? 0) + 1);
  }
  remove(ip: string): void {
    this.total--;
    const n = (this.perIp.get(ip) ?? 1) - 1;
    if (n <= 0) this.perIp.delete(ip);
    else this.perIp.set(ip, n);
  }

  /**
   * Make room for a new client from `ip` (undefined: not known yet, behind
   * a PROXY header): close the connection that has gone longest without
   * progress, if that is at least `idleMs` ago and its client holds more
   * connections than the new one does. True when one was closed; its slot
   * is free on return.
   *
   * A slowloris attack fills the table with connections that each send a
   * byte now and then and never finish anything: those are the ones without
   * progress, and a working client (every command of it is progress) keeps
   * its place. The "more connections" rule stops the attack from evicting
   * itself: its new connections, from addresses that already hold many,
   * cannot push out its old ones, which would keep all of them younger than
   * `idleMs` and so safe from eviction; a client with few connections (a
   * legitimate one) can. A linear scan, only while the table is full: at
   * most limits.connections sessions, and nothing kept per connection.
   */
  evictStalled(idleMs: number, ip: string | undefined): boolean {
    const mine = ip === undefined ? 0 : (this.perIp.get(ip) ?? 0);
    let oldest = Date.now() - idleMs;
    let victim: Session | Handshake | null = null;
    for (const s of this.sessions) {
      const since = s.stalledSince();
      if (since <= oldest && (this.perIp.get(s.info.remoteAddress) ?? 0) > mine) {
        oldest = since;
        victim = s;
      }
    }
    for (const h of this.handshakes) {
      if (h.since <= oldest && (this.perIp.get(h.ip) ?? 0) > mine) {
        oldest = h.since;
        victim = h;
      }
    }
    if (!victim) return false;
    if (victim instanceof Session) victim.evict();
    else victim.drop();
    return true;
  }
}

export class Listener {
  readonly config: SmtpListenerConfig;
  readonly #deps: ListenerDeps;
  readonly #server: net.Server;
  /** Implicit-TLS sockets still in their handshake: no session owns them yet. */
  readonly #handshaking = new Set<tls.TLSSocket>();
  /** Refused connections that have not closed yet. */
  readonly #refused = new Set<net.Socket>();
  /** Connections whose PROXY header has not arrived yet. */
  readonly #awaitingHeader = new Set<net.Socket>();

  #boundPort: number;
  readonly #accepted: Count;

  constructor(config: SmtpListenerConfig, deps: ListenerDeps) {
    this.#boundPort = config.port;
    this.#accepted = connections.child({ listener: config.role });
    this.config = config;
    this.#deps = deps;
    this.#server = net.createServer({ noDelay: true, allowHalfOpen: true }, (s) => this.#onConnection(s));
    this.#server.on('error', (e) => deps.log.error('listener error', { role: config.role, port: config.port, error: e }));
  }

  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen({ host: this.config.address, port: this.config.port, backlog: 1024 }, () => {
        this.#server.off('error', reject);
        const a = this.#server.address();
        this.#boundPort = typeof a === 'object' && a ? a.port : this.config.port;
        resolve(this.#boundPort);
      });
    });
  }

  /** The bound port (useful when configured as 0). */
  get port(): number {
    return this.#boundPort;
  }

  /**
   * Stop accepting; open sessions are the caller's to drain. Connections still
   * in their TLS handshake, or refused and not yet gone, have no session to
   * drain, and server.close() would wait for them (up to the handshake timeout,
   * or forever for a peer that ignores our FIN), so they are dropped now.
   */
  close(): Promise<void> {
    const closed = new Promise<void>((res) => this.#server.close(() => res()));
    for (const s of this.#handshaking) s.destroy();
    for (const s of this.#refused) s.destroy();
    for (const s of this.#awaitingHeader) s.destroy();
    return closed;
  }

  #onConnection(socket: net.Socket): void {
    const ip = normalizeIp(socket.remoteAddress ?? '');
    socket.on('error', ignoreSocketError); // errors before the session attaches its own handler
    if (this.config.proxyProtocol) this.#readProxyHeader(socket, ip);
    else this.#admit(socket, ip, socket.remotePort ?? 0, undefined, false);
  }

  /**
   * PROXY protocol: the header must be the first thing on the connection,
   * from a configured proxy, whole within the timeout and the spec's size
   * limits; anything else closes the connection without a word (there is
   * no SMTP session yet to reply in). A header from anyone else is never
   * read at all: it would let any client claim any address.
   */
  #readProxyHeader(socket: net.Socket, peer: string): void {
    const d = this.#deps;
    const role = this.config.role;
    if (!d.proxyFrom?.(peer)) {
      d.log.warn('connection refused: not a configured proxy', { ip: peer, role });
      socket.destroy();
      return;
    }
    // Waiting connections count toward the total limit, so a flood of silent
    // ones cannot pile up; the per-IP limit applies to the client, once known.
    if (d.counter.total >= d.maxConnections && !d.counter.evictStalled(d.limits.timeouts.evictAfter, undefined)) {
      d.log.warn('connection refused', { ip: peer, role, reason: 'connection limit' });
      socket.destroy();
      return;
    }
    d.counter.total++;
    this.#awaitingHeader.add(socket);
    const parser = new ProxyHeaderParser();
    let waiting = true;
    const stop = (): void => {
      if (!waiting) return;
      waiting = false;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onGone);
      socket.off('close', onGone);
      this.#awaitingHeader.delete(socket);
      d.counter.total--;
    };
    const drop = (why: string, extra: Record<string, unknown> = {}): void => {
      stop();
      d.log.warn('proxy header refused', { ip: peer, role, reason: why, ...extra });
      socket.destroy();
    };
    const onGone = (): void => drop('closed before the header');
    const timer = setTimeout(() => drop('timeout'), d.proxyTimeout ?? DEFAULT_PROXY_TIMEOUT_MS);
    timer.unref();
    const onData = (chunk: Buffer): void => {
      const r = parser.push(chunk);
      if (r.kind === 'more') return;
      if (r.kind === 'error') return drop('malformed', { error: r.message });
      stop();
      // Whatever followed the header is the client's: SMTP (or a TLS ClientHello).
      socket.pause();
      if (r.rest.length > 0) socket.unshift(r.rest);
      const src = r.header.source;
      const ip = src ? normalizeIp(src.address) : peer;
      d.log.debug('proxy header', { proxy: peer, ip, version: r.header.version, command: r.header.command });
      this.#admit(socket, ip, src ? src.port : (socket.remotePort ?? 0), src ? peer : undefined, true);
    };
    socket.on('data', onData);
    socket.once('end', onGone);
    socket.once('close', onGone);
  }

  /**
   * Apply the connection limits to client `ip` and start its session.
   * `paused`: the socket was paused (after a PROXY header) and holds unread input.
   */
  #admit(socket: net.Socket, ip: string, port: number, proxy: string | undefined, paused: boolean): void {
    const d = this.#deps;
    // A full table first sheds a stalled connection before it turns a new
    // client away (ConnectionCounter.evictStalled). The per-IP limit does
    // not: its connections are the client's own.
    const perIpFull = (d.counter.perIp.get(ip) ?? 0) >= d.maxPerIp;
    if (perIpFull || (d.counter.total >= d.maxConnections && !d.counter.evictStalled(d.limits.timeouts.evictAfter, ip))) {
      // RFC 5321 §3.8: 421 and close. On an implicit-TLS port the peer
      // expects a handshake, so there we just close.
      d.log.warn('connection refused', { ip, role: this.config.role, reason: perIpFull ? 'per-ip limit' : 'connection limit' });
      if (this.config.role !== 'submissions') {
        socket.end(`421 4.7.0 ${d.hostname} Too many connections, try again later\r\n`);
        this.#refused.add(socket);
        socket.once('close', () => this.#refused.delete(socket));
        setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
        if (paused) socket.resume(); // read (and drop) input, so the peer's FIN is seen
      } else socket.destroy();
      return;
    }
    d.counter.add(ip);
    this.#accepted.inc();
    if (this.config.role === 'submissions') {
      if (!d.secureContext) {
        socket.destroy();
        d.counter.remove(ip);
        return;
      }
      // Input read ahead of the handshake (after a PROXY header) is taken over
      // by the TLS socket; the raw socket must stay paused for that.
      const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: d.secureContext });
      const timer = setTimeout(() => secure.destroy(), d.limits.timeouts.command).unref();
      let released = false;
      const release = (): void => {
        if (!released) {
          released = true;
          d.counter.handshakes.delete(handshake);
          d.counter.remove(ip);
        }
      };
      const handshake: Handshake = {
        ip,
        since: Date.now(),
        drop: () => {
          d.log.info('connection evicted', { ip, role: this.config.role, reason: 'tls handshake stalled' });
          secure.destroy();
          release();
        },
      };
      d.counter.handshakes.add(handshake);
      this.#handshaking.add(secure);
      secure.once('secure', () => {
        clearTimeout(timer);
        this.#handshaking.delete(secure);
        d.counter.handshakes.delete(handshake);
        this.#startSession(secure, ip, port, proxy, true, release);
      });
      secure.once('error', () => secure.destroy());
      // A peer that hangs up mid-handshake gives 'end' but no 'error', and
      // 'close' only follows once we end our side too: without this its
      // connection slot stayed taken until the handshake timer fired.
      secure.once('end', () => {
        if (this.#handshaking.has(secure)) secure.destroy();
      });
      secure.once('close', () => {
        clearTimeout(timer);
        this.#handshaking.delete(secure);
        release();
      });
      return;
    }
    this.#startSession(socket, ip, port, proxy, false, null);
    // The session's 'data' handler is attached now; an explicit pause needs an explicit resume.
    if (paused) socket.resume();
  }

  /**
   * `release` frees the connection slot (implicit TLS: shared with the
   * handshake's own cleanup); null: the session's close frees it, through
   * one function shared by all sessions (no closure per connection).
   */
  #startSession(socket: net.Socket, ip: string, port: number, proxy: string | undefined, implicitTls: boolean, release: (() => void) | null): void {
    const session = new Session(socket, this.config.role, this.#deps, implicitTls, this.port);
    session.info.remoteAddress = ip;
    session.info.remotePort = port;
    if (proxy !== undefined) session.info.proxy = proxy;
    this.#deps.counter.sessions.add(session);
    session.onClose = release ? (s) => {
      this.#deps.counter.sessions.delete(s);
      release();
    } : this.#sessionClosed;
    void session.start();
  }

  readonly #sessionClosed = (s: Session): void => {
    this.#deps.counter.sessions.delete(s);
    this.#deps.counter.remove(s.info.remoteAddress);
  };
}
