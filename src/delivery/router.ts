// Which transport takes a recipient. Local recipients (intake resolved them
// to a mailbox) go the way their domain's `domains[].delivery` says:
// Maildir, discard, or an LMTP server (one destination per LMTP target, so
// recipients of several domains served by one agent share a transaction).
// Remote ones go to the smarthost when it takes their domain, else by MX,
// one destination per domain. Destinations are made once and reused: this
// runs for every recipient of every delivery round. While a drain is on
// (`tern queue drain`, drain.ts), every recipient goes to the drain target.

import type { Envelope } from '../spool/types.ts';
import type { Destination, Router, Transport } from './types.ts';

/** What local delivery does for a domain (`domains[].delivery`). */
export type LocalDelivery = 'maildir' | 'discard' | `lmtp:${string}`;

/** Jobs in flight at once to one LMTP server: its delivery processes, not ours, are the limit. */
export const LMTP_CONCURRENCY = 10;

/** An LMTP target's transport (src/delivery/lmtp.ts), and how to close its idle connections. */
export interface LmtpDestination {
  transport: Transport;
  close(): Promise<void>;
}

/** Maildir writes in flight at once: the disk, not the network, is the limit. */
export const LOCAL_CONCURRENCY = 20;

/** The remote side a router needs: RemoteDelivery, or a fake in tests. */
export interface RemoteTransports {
  mx: Transport;
  smarthost: Transport;
  viaSmarthost(domain: string): boolean;
  close(): Promise<void>;
}

export interface DeliveryRouterOptions {
  maildir: Transport;
  discard: Transport;
  /** The local delivery of a local domain (lower case, as the directory resolves it); absent: Maildir for all. */
  localDelivery?: ((domain: string) => LocalDelivery) | undefined;
  /** Makes the transport of an LMTP target (`lmtp://HOST:PORT`, `lmtp:/path`), once per target; absent: such domains get Maildir. */
  lmtp?: ((spec: `lmtp:${string}`) => LmtpDestination) | undefined;
  /** Absent: remote recipients stay queued until there is a way to deliver them. */
  remote?: RemoteTransports | undefined;
  /** Jobs in flight at once to one remote destination (a domain, or the smarthost). */
  perDestination: number;
}

export class DeliveryRouter implements Router {
  readonly #o: DeliveryRouterOptions;
  readonly #maildir: Destination;
  readonly #discard: Destination;
  readonly #smarthost: Destination | null;
  readonly #mx = new Map<string, Destination>();
  readonly #lmtp = new Map<string, { d: Destination; close(): Promise<void> }>();
  #drain: { d: Destination; close(): Promise<void> } | null = null;

  constructor(opts: DeliveryRouterOptions) {
    this.#o = opts;
    this.#maildir = { key: 'local', limit: LOCAL_CONCURRENCY, transport: opts.maildir };
    this.#discard = { key: 'discard', limit: LOCAL_CONCURRENCY, transport: opts.discard };
    this.#smarthost = opts.remote ? { key: 'smarthost', limit: opts.perDestination, transport: opts.remote.smarthost } : null;
  }

  /**
   * Sends every recipient, local or remote, to `transport` from now on (null:
   * back to normal routing). The previous drain transport is closed.
   */
  drain(drain: { transport: Transport; close(): Promise<void>; limit: number } | null): void {
    const old = this.#drain;
    this.#drain = drain ? { d: { key: `drain:${drain.transport.name}`, limit: drain.limit, transport: drain.transport }, close: () => drain.close() } : null;
    void old?.close();
  }

  get draining(): boolean {
    return this.#drain !== null;
  }

  route(envelope: Envelope, index: number): Destination | null {
    if (this.#drain) return this.#drain.d;
    const r = envelope.recipients[index]!;
    if (r.mailbox) {
      const how = this.#o.localDelivery?.(r.mailbox.domain);
      if (how === 'discard') return this.#discard;
      if (how?.startsWith('lmtp:') && this.#o.lmtp) return this.#lmtpDestination(how as `lmtp:${string}`, this.#o.lmtp);
      return this.#maildir;
    }
    const remote = this.#o.remote;
    if (!remote) return null;
    const domain = r.address.slice(r.address.lastIndexOf('@') + 1).toLowerCase();
    if (remote.viaSmarthost(domain)) return this.#smarthost;
    let d = this.#mx.get(domain);
    if (!d) {
      // Bounded by the domains mail goes to; a busy server meets a few thousand.
      if (this.#mx.size > 10_000) this.#mx.clear();
      d = { key: `mx:${domain}`, limit: this.#o.perDestination, transport: remote.mx };
      this.#mx.set(domain, d);
    }
    return d;
  }

  /** Bounded by the LMTP targets in the config (a reload that changes one adds one). */
  #lmtpDestination(spec: `lmtp:${string}`, make: (spec: `lmtp:${string}`) => LmtpDestination): Destination {
    let e = this.#lmtp.get(spec);
    if (!e) {
      const made = make(spec);
      e = { d: { key: spec, limit: LMTP_CONCURRENCY, transport: made.transport }, close: () => made.close() };
      this.#lmtp.set(spec, e);
    }
    return e.d;
  }

  async close(): Promise<void> {
    await Promise.all([this.#o.remote?.close(), this.#drain?.close(), ...[...this.#lmtp.values()].map((e) => e.close())]);
  }
}
