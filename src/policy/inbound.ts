// Inbound policy: what the sender-authentication results of a message from
// outside mean for it, per recipient domain (the domain of the mailbox it
// is delivered to). Decided at the end of DATA, once the results are in.
//
//   DMARC fail, enforced, p=reject      → 550 5.7.1   (RFC 7489 §6.6.4, §10.3)
//   DMARC fail, enforced, p=quarantine  → the mailbox's Junk folder
//   SPF fail of MAIL FROM (RFC 7208 §8.4) → mark (default) | quarantine | 550 5.7.23 (RFC 7372 §3.2)
//   a trusted forwarder                  → never rejected or quarantined for SPF or DMARC
//
// pct (RFC 7489 §6.6.4): a failing message outside the sampled percentage
// gets the next weaker policy (reject → quarantine, quarantine → none).
// One SMTP reply covers all recipients, so a message is refused only when
// every recipient's policy says reject; otherwise those recipients get it
// in Junk, which is the closest honest outcome for them.
// temperror and permerror never reject: a DNS failure on the sender's side
// must not make us refuse mail we cannot judge (RFC 7489 §6.6.2 lets the
// receiver decide; we mark it).

import net from 'node:net';
import { SmtpError } from '../smtp/reply.ts';
import { buildBlockList, normalizeIp, type DataStep, type SessionInfo } from './policy.ts';
import type { MessageView } from './data.ts';
import type { InboundConfig, InboundDomainPolicy } from '../config/types.ts';
import type { Recipient } from '../spool/types.ts';
import type { Logger } from '../util/log.ts';

/** The Maildir folder quarantined mail goes to (Dovecot-style `.Junk/`, the README). */
export const JUNK_FOLDER = 'Junk';

/** The part of the authentication results policy reads. */
export interface AuthFacts {
  spf: { result: string; domain?: string | undefined };
  dmarc: { result: string; domain: string; policy?: string | undefined; pct: number } | null;
}

export type InboundAction = 'accept' | 'quarantine' | 'reject';

export interface InboundDecision {
  /** reject: the whole message (every recipient said so); quarantine: some or all recipients. */
  action: InboundAction;
  /** The reply when action is reject. */
  error?: SmtpError | undefined;
  /** Indices (into the recipients) that go to Junk. */
  quarantine: number[];
  /** Why, for the log: e.g. "dmarc=fail p=reject", "spf=fail". */
  reasons: string[];
}

const WEAKER: Record<string, string> = { reject: 'quarantine', quarantine: 'none', none: 'none' };

export class InboundPolicy {
  readonly #config: InboundConfig;
  readonly #forwarders: net.BlockList;
  readonly #random: () => number;

  /** `random` in [0, 1): the pct sample; injectable so tests are deterministic. */
  constructor(config: InboundConfig, random: () => number = Math.random) {
    this.#config = config;
    this.#forwarders = buildBlockList(config.trustedForwarders);
    this.#random = random;
  }

  get config(): InboundConfig {
    return this.#config;
  }

  isTrustedForwarder(ip: string): boolean {
    const addr = normalizeIp(ip);
    return this.#forwarders.check(addr, net.isIPv6(addr) ? 'ipv6' : 'ipv4');
  }

  forDomain(domain: string | undefined): InboundDomainPolicy {
    return (domain ? this.#config.domains[domain.toLowerCase()] : undefined) ?? { spf: this.#config.spf, dmarc: this.#config.dmarc };
  }

  decide(ip: string, facts: AuthFacts, recipients: Recipient[]): InboundDecision {
    const none: InboundDecision = { action: 'accept', quarantine: [], reasons: [] };
    if (this.isTrustedForwarder(ip)) return { ...none, reasons: ['trusted forwarder'] };
    // The DMARC policy after pct sampling (one draw per message, RFC 7489 §6.6.4).
    let dmarcPolicy: string | undefined;
    const d = facts.dmarc;
    if (d?.result === 'fail' && (d.policy === 'reject' || d.policy === 'quarantine')) {
      dmarcPolicy = d.pct >= 100 || this.#random() * 100 < d.pct ? d.policy : WEAKER[d.policy];
    }
    const spfFail = facts.spf.result === 'fail';
    const actions = recipients.map((r) => {
      const p = this.forDomain(r.mailbox?.domain ?? r.address.slice(r.address.lastIndexOf('@') + 1));
      const byDmarc: InboundAction = p.dmarc.enforce && dmarcPolicy === 'reject' ? 'reject' : p.dmarc.enforce && dmarcPolicy === 'quarantine' ? 'quarantine' : 'accept';
      const bySpf: InboundAction = spfFail && p.spf.onFail !== 'mark' ? p.spf.onFail : 'accept';
      const rank = { accept: 0, quarantine: 1, reject: 2 } as const;
      const action = rank[byDmarc] >= rank[bySpf] ? byDmarc : bySpf;
      return { action, dmarc: byDmarc === action && action !== 'accept' };
    });
    const reasons: string[] = [];
    if (actions.some((a) => a.action !== 'accept' && a.dmarc)) reasons.push(`dmarc=fail policy=${dmarcPolicy}${d && d.pct < 100 ? ` pct=${d.pct}` : ''}`);
    if (actions.some((a) => a.action !== 'accept' && !a.dmarc)) reasons.push('spf=fail');
    if (recipients.length > 0 && actions.every((a) => a.action === 'reject')) {
      // DMARC's reason wins when both apply: it is the sender domain's own request.
      const error = actions.some((a) => a.dmarc)
        ? new SmtpError(550, '5.7.1', `Message rejected: it fails the DMARC policy of ${printable(d!.domain)}`)
        : new SmtpError(550, '5.7.23', `SPF validation failed: ${printable(facts.spf.domain ?? '')} does not permit ${normalizeIp(ip)} to send its mail`);
      return { action: 'reject', error, quarantine: [], reasons };
    }
    // Recipients whose policy would reject get the message in Junk instead (see the top of this file).
    const quarantine = actions.flatMap((a, i) => (a.action === 'accept' || !recipients[i]!.mailbox ? [] : [i]));
    return { action: quarantine.length > 0 ? 'quarantine' : 'accept', quarantine, reasons };
  }
}

/**
 * The inbound policy as a data check: mail from outside whose checks ran
 * (DataMessage.auth) is refused, or its recipients' copies go to Junk, as
 * InboundPolicy decides. Logs one 'inbound' line per message with the
 * results and the decision.
 */
export class InboundCheck implements DataStep {
  readonly name = 'inbound';
  readonly #policy: InboundPolicy;
  readonly #log: Logger;

  constructor(policy: InboundPolicy, log: Logger) {
    this.#policy = policy;
    this.#log = log;
  }

  data(_s: SessionInfo, msg: MessageView): void {
    const outcome = msg.auth;
    if (!outcome) return;
    const env = msg.envelope;
    const decision = this.#policy.decide(env.client?.ip ?? '', outcome, env.recipients);
    this.#log.info('inbound', {
      id: msg.id,
      ip: env.client?.ip,
      iprev: `${outcome.iprev.result}${outcome.iprev.names[0] ? ` ${outcome.iprev.names[0]}` : ''}`,
      spf: outcome.spf.result,
      helo: outcome.helo,
      dkim: outcome.dkim.map((d) => `${d.result}:${d.domain ?? '?'}`).join(' ') || 'none',
      dmarc: outcome.dmarc ? `${outcome.dmarc.result}:${outcome.dmarc.domain}${outcome.dmarc.policy ? ` p=${outcome.dmarc.policy}` : ''}` : 'none',
      arc: outcome.arc,
      senderVerified: env.outside?.verified ?? 'no',
      incomplete: outcome.incomplete,
      action: decision.action,
      reasons: decision.reasons.length ? decision.reasons.join(', ') : undefined,
    });
    if (decision.action === 'reject') throw decision.error!;
    msg.quarantine(decision.quarantine);
  }
}

/** Sender-controlled text in a reply: printable ASCII only, bounded. */
function printable(s: string): string {
  return s.replace(/[^\x21-\x7e]/g, '?').slice(0, 253);
}
