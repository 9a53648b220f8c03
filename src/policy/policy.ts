// Policy: ordered stage checks that the session consults (DESIGN.md).
// Each check may throw an SmtpError (reject: 5xx, tempfail: 4xx), return
// 'accept' to end the chain early, or return nothing to continue — the
// CONT / OK / DENY / DENYSOFT contract of Haraka without the callbacks.
// The built-in recipient check (local users, relay control) runs last.

import net from 'node:net';
import { SmtpError } from '../smtp/reply.ts';
import type { Address } from '../smtp/address.ts';
import { formatAddress } from '../smtp/address.ts';
import type { MailParams, RcptParams } from '../smtp/params.ts';
import type { Directory, Target } from './directory.ts';

export interface SessionInfo {
  /** The connection id, as in the logs. */
  id: string;
  /** The client's IP address (IPv4-mapped IPv6 reduced to IPv4); behind a PROXY-protocol proxy, the real client's. */
  remoteAddress: string;
  remotePort: number;
  localPort: number;
  role: 'smtp' | 'submission' | 'submissions';
  tls: boolean;
  helo?: string | undefined;
  /** The authenticated user, once AUTH succeeded. */
  user?: string | undefined;
  /** The proxy's own address when the connection came through the PROXY protocol. */
  proxy?: string | undefined;
}

export type CheckResult = 'accept' | void;

export interface Check {
  readonly name: string;
  connect?(s: SessionInfo): CheckResult | Promise<CheckResult>;
  helo?(s: SessionInfo, name: string): CheckResult | Promise<CheckResult>;
  mail?(s: SessionInfo, from: Address | null, params: MailParams): CheckResult | Promise<CheckResult>;
  /** `from` is the transaction's sender (null for the null sender <>). */
  rcpt?(s: SessionInfo, to: Address, params: RcptParams, from: Address | null): CheckResult | Promise<CheckResult>;
}

type Stage = 'connect' | 'helo' | 'mail' | 'rcpt';

export interface PolicyOptions {
  directory: Directory;
  trustedNetworks: string[];
  checks?: Check[];
}

export class Policy {
  readonly directory: Directory;
  readonly #trusted: (ip: string) => boolean;
  readonly #checks: Check[];

  constructor(opts: PolicyOptions) {
    this.directory = opts.directory;
    this.#trusted = ipMatcher(opts.trustedNetworks);
    this.#checks = opts.checks ?? [];
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

  async mail(s: SessionInfo, from: Address | null, params: MailParams): Promise<void> {
    await this.#run('mail', (c) => c.mail?.(s, from, params));
  }

  /** Decide one recipient; returns where it goes. Throws SmtpError to refuse it. */
  async rcpt(s: SessionInfo, to: Address, params: RcptParams, from: Address | null = null): Promise<Target[]> {
    const accepted = await this.#run('rcpt', (c) => c.rcpt?.(s, to, params, from));
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

