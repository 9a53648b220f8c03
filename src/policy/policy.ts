// Policy: ordered stage checks that the backend consults (docs/architecture.md).
// Each check may throw an SmtpError (reject: 5xx, tempfail: 4xx), return
// 'accept' to end the chain early, or return nothing to continue — the
// CONT / OK / DENY / DENYSOFT contract of Haraka without the callbacks.
// The built-in recipient check (local users, relay control) runs last at
// RCPT; at DATA the built-in data checks (the sender check of our users'
// mail, the inbound policy of mail from outside) run before the plugins'.
//
// Stages: connect, helo, mail, rcpt (one call per command), and data: a
// check's `body` hook sees the message octets as they arrive, its `data`
// hook decides once the message is read in full and before it is committed
// (data.ts holds what it sees: DataMessage).

import net from 'node:net';
import { SmtpError } from '../smtp/reply.ts';
import type { Address } from '../smtp/address.ts';
import { formatAddress } from '../smtp/address.ts';
import type { MailParams, RcptParams } from '../smtp/params.ts';
import type { Recipient } from '../spool/types.ts';
import type { Directory, Target } from './directory.ts';
import type { Account } from './auth.ts';
import type { DataMessage, MessageView } from './data.ts';

export interface SessionInfo {
  /** The connection id, as in the logs. */
  id: string;
  /** The client's IP address (IPv4-mapped IPv6 reduced to IPv4); behind a PROXY-protocol proxy, the real client's. */
  remoteAddress: string;
  remotePort: number;
  localPort: number;
  /** 'http': a message from the HTTP API (src/api/send.ts), run through the same stages as submission's. */
  role: 'smtp' | 'submission' | 'submissions' | 'http';
  tls: boolean;
  helo?: string | undefined;
  /** The authenticated user, once AUTH succeeded. */
  user?: string | undefined;
  /** The proxy's own address when the connection came through the PROXY protocol. */
  proxy?: string | undefined;
}

/**
 * One mail transaction as the checks see it: from MAIL FROM to its end
 * (a queued message, RSET, a new EHLO, the connection closing). Read-only
 * for checks, except onAbandon.
 */
export interface Transaction {
  /** The reverse-path; null for the null sender <>. */
  readonly from: Address | null;
  readonly params: MailParams;
  /** The recipients accepted so far, after alias expansion (a check at RCPT sees those before this one). */
  readonly recipients: readonly Recipient[];
  /** RCPT commands accepted so far (an alias that expands to several recipients counts once). */
  readonly rcptCount: number;
  /** The authenticated account (its send-as list and limits); null without AUTH. */
  readonly account: Account | null;
  /**
   * Runs `undo` if the transaction ends without a queued message: a refused
   * MAIL, RSET, a refused or failed message, the client leaving. For work a
   * check did that only a queued message should keep (a rate count).
   */
  onAbandon(undo: () => void): void;
}

export type CheckResult = 'accept' | void;
/** 'quarantine': local recipients get the message in their Junk folder; the chain goes on. */
export type DataResult = 'accept' | 'quarantine' | void;
/** Fed each piece of a message's octets as it arrives, in order. */
export type BodyFeed = (chunk: Buffer) => void;

export interface Check {
  readonly name: string;
  connect?(s: SessionInfo): CheckResult | Promise<CheckResult>;
  helo?(s: SessionInfo, name: string): CheckResult | Promise<CheckResult>;
  mail?(s: SessionInfo, from: Address | null, params: MailParams, t: Transaction): CheckResult | Promise<CheckResult>;
  /** `from` is the transaction's sender (null for the null sender <>). */
  rcpt?(s: SessionInfo, to: Address, params: RcptParams, from: Address | null, t: Transaction): CheckResult | Promise<CheckResult>;
  /**
   * The message content starts (after DATA's 354, or with the first BDAT
   * chunk). Return a function to be fed the message octets as they arrive
   * (header section included), or nothing. It runs inside the session's
   * read loop: it must be quick and must not throw for bad content; keep
   * what you need and decide in `data`.
   */
  body?(s: SessionInfo, msg: DataMessage, t: Transaction): BodyFeed | void;
  /** The message is read in full and not yet committed: accept, quarantine, reject (throw 5xx) or tempfail (throw 4xx). */
  data?(s: SessionInfo, msg: DataMessage, t: Transaction): DataResult | Promise<DataResult>;
}

/**
 * A built-in data check: like Check.data, but it reads what only Tern's own
 * checks need (the originator fields as the sender check reads them, the
 * envelope's sender verification). Runs before every Check's data hook.
 */
export interface DataStep {
  readonly name: string;
  data(s: SessionInfo, msg: MessageView, t: Transaction): void | Promise<void>;
}

type Stage = 'connect' | 'helo' | 'mail' | 'rcpt' | 'data';

export interface PolicyOptions {
  directory: Directory;
  trustedNetworks: string[];
  /** Every stage's checks, in order (built-in ones first, then plugins). */
  checks?: Check[];
  /** The built-in data checks, in order; before the checks' data hooks. */
  dataSteps?: DataStep[];
}

export class Policy {
  readonly directory: Directory;
  readonly #trusted: (ip: string) => boolean;
  readonly #checks: Check[];
  readonly #dataSteps: DataStep[];

  constructor(opts: PolicyOptions) {
    this.directory = opts.directory;
    this.#trusted = ipMatcher(opts.trustedNetworks);
    this.#checks = opts.checks ?? [];
    this.#dataSteps = opts.dataSteps ?? [];
  }

  async #run(stage: Stage, call: (c: Check) => CheckResult | Promise<CheckResult> | undefined): Promise<boolean> {
    for (const check of this.#checks) {
      if (!check[stage]) continue;
      if ((await call(check)) === 'accept') return true;
    }
    return false;
  }

  async connect(s: SessionInfo): Promise<void> {
    await this.#run('connect', (c) => c.connect?.(s));
  }

  async helo(s: SessionInfo, name: string): Promise<void> {
    await this.#run('helo', (c) => c.helo?.(s, name));
  }

  async mail(s: SessionInfo, from: Address | null, params: MailParams, t: Transaction): Promise<void> {
    await this.#run('mail', (c) => c.mail?.(s, from, params, t));
  }

  /** Decide one recipient; returns where it goes. Throws SmtpError to refuse it. */
  async rcpt(s: SessionInfo, to: Address, params: RcptParams, t: Transaction): Promise<Target[]> {
    const accepted = await this.#run('rcpt', (c) => c.rcpt?.(s, to, params, t.from, t));
    if (!to.literal && this.directory.isLocalDomain(to.domain)) {
      let targets: Target[] | null;
      try {
        targets = this.directory.resolve(to.local, to.domain);
      } catch (e) {
        throw new SmtpError(451, '4.3.0', 'Alias expansion failed; try again later', { cause: e });
      }
      // §3.3: 550 for "no such user"; 5.1.1 is "bad destination mailbox" (RFC 3463).
      if (!targets || targets.length === 0) throw new SmtpError(550, '5.1.1', `<${formatAddress(to)}>: no such user here`);
      return targets;
    }
    // Not ours: relaying, which only trusted clients get (never an open relay).
    if (accepted || this.mayRelay(s)) return [{ kind: 'remote', address: formatAddress(to) }];
    throw new SmtpError(554, '5.7.1', `<${formatAddress(to)}>: Relay access denied`);
  }

  /** The body feeds of the checks that want the message octets (called when the content starts). */
  bodyFeeds(s: SessionInfo, msg: MessageView, t: Transaction): BodyFeed[] {
    const feeds: BodyFeed[] = [];
    for (const c of this.#checks) {
      const feed = c.body?.(s, msg, t);
      if (feed) feeds.push(feed);
    }
    return feeds;
  }

  /** Whether any check reads the header section at DATA (then intake keeps it for them). */
  get readsHeaders(): boolean {
    return this.#checks.some((c) => c.data !== undefined);
  }

  /**
   * The data stage: the built-in data checks, then every check's data hook,
   * in order. Throws SmtpError to refuse the message; what it decides
   * otherwise (quarantine, added fields) is left on `msg`.
   */
  async data(s: SessionInfo, msg: MessageView, t: Transaction): Promise<void> {
    for (const step of this.#dataSteps) await step.data(s, msg, t);
    await this.#run('data', async (c) => {
      const result = await c.data?.(s, msg, t);
      if (result === 'quarantine') msg.quarantine();
      else return result;
    });
  }

  mayRelay(s: SessionInfo): boolean {
    return s.user !== undefined || this.isTrusted(s.remoteAddress);
  }

  isTrusted(ip: string): boolean {
    return this.#trusted(ip);
  }
}

/** A test for "is this IP in one of these CIDRs (or single IPs)?"; IPv4-mapped addresses count as IPv4. */
export function ipMatcher(cidrs: string[]): (ip: string) => boolean {
  if (cidrs.length === 0) return () => false;
  const list = buildBlockList(cidrs);
  return (ip) => {
    const addr = normalizeIp(ip);
    const family = net.isIPv6(addr) ? 'ipv6' : net.isIPv4(addr) ? 'ipv4' : undefined;
    return family !== undefined && list.check(addr, family);
  };
}

/** "::ffff:127.0.0.1" (dual-stack sockets) → "127.0.0.1". */
export function normalizeIp(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1]! : ip;
}

export function buildBlockList(cidrs: string[]): net.BlockList {
  const list = new net.BlockList();
  for (const entry of cidrs) {
    const [ip, bits] = entry.split('/') as [string, string | undefined];
    const family = net.isIPv6(ip) ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(ip, family);
    else list.addSubnet(ip, Number(bits), family);
  }
  return list;
}

