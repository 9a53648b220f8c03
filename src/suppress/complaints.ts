// ARF complaints (RFC 5965) that reach Tern: a feedback loop sends one to
// our complaint address when a recipient marks our mail as spam, and the
// recipient goes on the suppression list, with a 'complained' event.
//
// Where: local delivery. A ComplaintTransport wraps the local transports
// (Maildir, discard) in the router, so the session and intake know nothing
// of it, and the report is read from the spool like any delivery reads its
// message. A complaint address that is also a mailbox (or an alias, or
// taken by a catch-all) still gets the report; one that nobody has is a
// sink (Directory.setSinks): RCPT accepts it and the report is consumed
// here. A message to a sink that is not a feedback report bounces (550
// 5.1.1): a person writing to abuse@ must learn that nobody reads it.
//
// Whom to believe (RFC 5965 §8: reports are as easy to forge as any mail,
// and a forged one would stop our mail to whomever it names). A report
// changes the list only when both hold:
// 1. it reached us from a verified sender: mail from outside whose
//    reverse-path intake verified (SPF pass for the MAIL FROM domain, or an
//    aligned DKIM pass: src/bounce/backscatter.ts, the same rule that
//    decides who gets DSNs), or mail from inside (authenticated submission,
//    a trusted network, the API);
// 2. it is about mail we sent to that recipient: the returned message's
//    Message-ID is one the API sent to it, or the events store has a
//    delivery to that address (within events.retention).
// Anyone with a domain can pass (1); (2) limits them to addresses we mail,
// and every complaint suppression names its reporter in its detail, so a
// bad one is found and lifted (DELETE) as easily as it came. With
// events.enabled false, (2) can only match the API's Message-IDs.

import type { Readable } from 'node:stream';
import type { EventStream } from '../events/events.ts';
import type { DeliveryJob, DeliveryResult, Transport } from '../delivery/types.ts';
import { reply } from '../delivery/reply.ts';
import type { Directory } from '../policy/directory.ts';
import { RECIPIENT_DELIMITER } from '../policy/directory.ts';
import type { Envelope, QueuedMessage } from '../spool/types.ts';
import type { EventStore } from '../store/store.ts';
import type { SuppressionStore } from '../store/suppressions.ts';
import type { Logger } from '../util/log.ts';
import { parseArf, type FeedbackReport } from './arf.ts';
import type { SuppressionList } from './list.ts';

/** Octets of a report read from the spool: the feedback part and the returned header section come first; the rest may be a large original. */
export const MAX_REPORT_BYTES = 1024 * 1024;
/** RFC 5965 §7.3's types, each a recipient's report about a message. auth-failure (RFC 6591) and not-spam (RFC 6430) are not complaints. */
export const COMPLAINT_TYPES: readonly string[] = ['abuse', 'fraud', 'virus', 'other'];
/** The local parts that receive reports when `suppression.complaintAddresses` is empty (RFC 2142 §4: abuse; fbl by convention). */
export const DEFAULT_COMPLAINT_LOCAL_PARTS: readonly string[] = ['abuse', 'fbl'];
/** Report ids remembered as read, so a retry of the same delivery does not complain twice. */
const READ_MAX = 10_000;

export interface ComplaintReaderOptions {
  list: SuppressionList;
  events: EventStream;
  store: Pick<EventStore, 'messageEvents' | 'queryEvents'> & { suppressions: Pick<SuppressionStore, 'sentMessage'> };
  directory: Directory;
  /** suppression.complaintAddresses; []: abuse@ and fbl@ of every local domain. */
  addresses: string[];
  log: Logger;
}

/** What became of one report. */
export type ReadOutcome =
  | { kind: 'not-a-report'; problem: string }
  | { kind: 'report'; report: FeedbackReport; suppressed: string[]; ignored: { address: string; reason: string }[] };

export class ComplaintReader {
  readonly #o: ComplaintReaderOptions;
  readonly #explicit: Set<string>;
  readonly #read = new Set<string>();

  constructor(o: ComplaintReaderOptions) {
    this.#o = o;
    this.#explicit = new Set(o.addresses.map((a) => a.toLowerCase()));
  }

  /** Whether mail to `address` (as RCPT gave it) is a complaint report's; the +tag is ignored. */
  isComplaintAddress(address: string): boolean {
    const at = address.lastIndexOf('@');
    if (at <= 0) return false;
    const domain = address.slice(at + 1).toLowerCase();
    const local = address.slice(0, at).toLowerCase();
    const base = local.split(RECIPIENT_DELIMITER, 1)[0]!;
    if (this.#explicit.size > 0) return this.#explicit.has(`${local}@${domain}`) || this.#explicit.has(`${base}@${domain}`);
    return DEFAULT_COMPLAINT_LOCAL_PARTS.includes(base) && this.#o.directory.isLocalDomain(domain);
  }

  /** The local-part test Directory.setSinks wants. */
  readonly isSink = (localPart: string, domain: string): boolean => this.isComplaintAddress(`${localPart}@${domain}`);

  /** A local transport that reads the reports among its deliveries first. */
  wrap(inner: Transport): Transport {
    return new ComplaintTransport(inner, this, this.#o.directory);
  }

  /**
   * Reads the report `msg` carries (bytes from `open`) and acts on it. Each
   * message is read once per process (a retry of its delivery does not
   * complain again). Throws only when the message cannot be read.
   */
  async read(msg: QueuedMessage, open: () => Readable): Promise<ReadOutcome> {
    const id = msg.envelope.id;
    let bytes: Buffer;
    try {
      bytes = await readPrefix(open(), MAX_REPORT_BYTES);
    } catch (e) {
      // A sink's delivery is retried; a mailbox's may succeed regardless, and then this report is not read again.
      this.#o.log.warn('complaint report unreadable', { id, error: e });
      throw e;
    }
    const parsed = parseArf(bytes);
    if (!parsed.ok) {
      this.#o.log.info('complaint address: not a feedback report', { id, problem: parsed.problem });
      return { kind: 'not-a-report', problem: parsed.problem };
    }
    const { report } = parsed;
    const outcome: ReadOutcome = { kind: 'report', report, suppressed: [], ignored: [] };
    if (this.#read.has(id)) return outcome;
    const complainers = report.originalRcptTo.length > 0 ? report.originalRcptTo : report.returned?.to.length === 1 ? report.returned.to : [];
    const ignore = (address: string, reason: string) => outcome.ignored.push({ address, reason });
    if (!COMPLAINT_TYPES.includes(report.feedbackType)) {
      for (const a of complainers) ignore(a, `Feedback-Type ${report.feedbackType} is not a complaint`);
    } else if (complainers.length === 0) {
      ignore('', 'the report names no recipient (redacted, RFC 6590)');
    } else {
      const trust = reporterTrust(msg.envelope);
      for (const raw of complainers) {
        const address = raw.toLowerCase();
        if (!trust.trusted) {
          ignore(address, trust.reason);
          continue;
        }
        if (this.#o.directory.isLocalDomain(address.slice(address.lastIndexOf('@') + 1))) {
          ignore(address, 'a local address (local mail is never suppressed)');
          continue;
        }
        const original = this.#original(report, address);
        if (!original && !this.#deliveredTo(address)) {
          ignore(address, 'no mail of ours to this address is on record');
          continue;
        }
        const detail = `Feedback-Type: ${report.feedbackType}; reported by ${trust.by}${report.userAgent ? ` (${report.userAgent})` : ''}; report ${id}`;
        this.#o.list.suppress({ address, reason: 'complaint', source: 'complaint', detail, createdAt: Date.now() });
        this.#o.events.emit('complained', original ?? eventMessage(msg.envelope, address), 0);
        outcome.suppressed.push(address);
      }
    }
    // Only once it all went through: a store error on the way makes the delivery a tempfail, and the retry reads it again.
    if (this.#read.size >= READ_MAX) this.#read.clear();
    this.#read.add(id);
    this.#o.log.info('complaint', {
      id,
      feedbackType: report.feedbackType,
      reporter: msg.envelope.sender,
      suppressed: outcome.suppressed,
      ignored: outcome.ignored,
    });
    return outcome;
  }

  /** The message the report returns, as the events store has it, when the API sent it to `address`. */
  #original(report: FeedbackReport, address: string): QueuedMessage | null {
    const messageId = report.returned?.messageId;
    if (!messageId) return null;
    const sent = this.#o.store.suppressions.sentMessage(messageId);
    if (!sent) return null;
    const found = this.#o.store.messageEvents(sent.id, { admin: true });
    if (!found || !found.events.some((e) => e.recipient.toLowerCase() === address)) return null;
    const first = found.events[0]!.data;
    return eventMessage({ id: sent.id, sender: sent.sender, recipients: [], receivedAt: sent.createdAt, smtputf8: false, source: first.source, tags: first.tags ?? undefined }, address);
  }

  #deliveredTo(address: string): boolean {
    return this.#o.store.queryEvents({ after: '', type: 'delivered', recipient: address, limit: 1, scope: { admin: true } }).length > 0;
  }
}

/**
 * Wraps a local transport: recipients whose RCPT was a complaint address
 * have the report read first; sinks (nobody lives there) end here, the
 * rest are delivered by the inner transport as usual.
 */
export class ComplaintTransport implements Transport {
  readonly #inner: Transport;
  readonly #reader: ComplaintReader;
  readonly #directory: Directory;

  constructor(inner: Transport, reader: ComplaintReader, directory: Directory) {
    this.#inner = inner;
    this.#reader = reader;
    this.#directory = directory;
  }

  get name(): string {
    return this.#inner.name;
  }

  async deliver(job: DeliveryJob): Promise<DeliveryResult[]> {
    const { recipients } = job.msg.envelope;
    const reports = job.indices.filter((i) => this.#reader.isComplaintAddress(recipients[i]!.original));
    if (reports.length === 0) return this.#inner.deliver(job);
    let outcome: ReadOutcome | Error;
    try {
      outcome = await this.#reader.read(job.msg, job.open);
    } catch (e) {
      outcome = e instanceof Error ? e : new Error(String(e));
    }
    const sinks = new Set(reports.filter((i) => {
      const box = recipients[i]!.mailbox;
      return box !== undefined && this.#directory.isSinkOnly(box.localPart, box.domain);
    }));
    const rest = job.indices.filter((i) => !sinks.has(i));
    const delivered = rest.length > 0 ? await this.#inner.deliver({ ...job, indices: rest }) : [];
    const byIndex = new Map(rest.map((i, k) => [i, delivered[k]!]));
    return job.indices.map((i) => byIndex.get(i) ?? sinkResult(outcome, recipients[i]!.original));
  }
}

/** What a sink answers for a message it consumed. */
function sinkResult(outcome: ReadOutcome | Error, address: string): DeliveryResult {
  const base = { relay: null, tls: null } as const;
  // A transport never throws: an unreadable message is tried again later.
  if (outcome instanceof Error) return { ...base, status: 'tempfail', reply: reply(451, '4.3.0', `could not read the report: ${outcome.message}`), successDsn: 'none' };
  if (outcome.kind === 'not-a-report') {
    return { ...base, status: 'permfail', reply: reply(550, '5.1.1', `<${address}>: nobody reads mail here; only feedback reports (RFC 5965) are accepted`), successDsn: 'none' };
  }
  return { ...base, status: 'ok', reply: reply(250, '2.0.0', 'feedback report read'), successDsn: 'delivered' };
}

/**
 * Who the reporter is, or why it is not believed (see the top of this file):
 * inside mail (no `outside` record) is our users' or our own; mail from
 * outside counts only with a verified reverse-path.
 */
export function reporterTrust(env: Envelope): { trusted: true; by: string } | { trusted: false; reason: string } {
  const o = env.outside;
  if (!o) return { trusted: true, by: `<${env.sender}> (our own user or network)` };
  if (o.verified === null) return { trusted: false, reason: `the reporter is not verified (${o.detail})` };
  return { trusted: true, by: `${o.domain ?? env.sender} (${o.verified}=pass)` };
}

/** A one-recipient message for an event: the event's queue id, sender (for scoping), source and tags are the envelope's. */
function eventMessage(envelope: Envelope, address: string): QueuedMessage {
  return {
    envelope: { ...envelope, recipients: [{ address, original: address }] },
    state: { attempts: 0, nextAttempt: 0, status: ['delivered'], lastReply: [null] },
    bodyLength: 0,
    size: 0,
    recovered: false,
  };
}

async function readPrefix(stream: Readable, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of stream) {
      const b = chunk as Buffer;
      chunks.push(b);
      n += b.length;
      if (n >= max) break;
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks).subarray(0, max);
}
