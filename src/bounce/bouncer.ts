// Turns the scheduler's notices into DSNs and queues them through intake
// (docs/architecture.md: bounces are new mail, from the null sender, so they get the
// same durability and delivery as everything else). Mail from outside whose
// sender was not verified gets no DSN at all (backscatter.ts): the notice is
// logged and recorded on the message's state instead. A delay warning
// that was queued is an event (`delayed`, src/events/).

import type { Notice } from '../queue/scheduler.ts';
import type { Intake } from '../intake/intake.ts';
import type { Directory } from '../policy/directory.ts';
import type { Spool } from '../spool/spool.ts';
import type { Recipient } from '../spool/types.ts';
import type { Logger } from '../util/log.ts';
import { buildDsn, wantsNotice, type DsnAction, type DsnRecipient } from './dsn.ts';
import { dsnPermission } from './backscatter.ts';
import type { EventStream } from '../events/events.ts';

export interface BouncerOptions {
  hostname: string;
  intake: Intake;
  directory: Directory;
  spool: Spool;
  log: Logger;
  events?: EventStream | undefined;
}

export class Bouncer {
  readonly #o: BouncerOptions;
  constructor(opts: BouncerOptions) {
    this.#o = opts;
  }

  async notify(n: Notice): Promise<void> {
    const { envelope } = n.msg;
    const action: DsnAction = n.kind;
    const wanted = n.recipients.filter((r) => wantsNotice(envelope.recipients[r.index]!, action));
    const recipients: DsnRecipient[] = wanted.map((r) => ({
        recipient: envelope.recipients[r.index]!,
        action,
        reply: r.reply,
        remoteMta: r.relay?.host,
        lastAttempt: new Date(),
        willRetryUntil: n.kind === 'delayed' && n.willRetryUntil ? new Date(n.willRetryUntil) : undefined,
      }));
    if (recipients.length === 0 || envelope.sender === '') return;
    const may = dsnPermission(envelope);
    if (!may.send) {
      // The scheduler writes the state after notifying whenever the message stays queued.
      const record = { kind: n.kind, at: Date.now(), recipients: recipients.map((r) => r.recipient.address), reason: may.reason };
      (n.msg.state.dsnSuppressed ??= []).push(record);
      this.#o.log.info('dsn suppressed', { id: envelope.id, kind: n.kind, sender: envelope.sender, recipients: record.recipients.length, reason: may.reason });
      return;
    }
    const dsn = await buildDsn({
      reportingMta: this.#o.hostname,
      envelope,
      recipients,
      original: () => this.#o.spool.openMessage(n.msg),
      // RFC 8689 §5: the content of a REQUIRETLS message must not travel where TLS is not assured: headers only.
      returnFull: envelope.requireTls ? false : may.returnFull,
    });
    if (!dsn) return; // null sender: never bounce a bounce (RFC 5321 §6.1)
    const to = this.#route(dsn.to);
    if (!to) {
      this.#o.log.warn('DSN dropped: the sender is a local address that does not exist', { id: envelope.id, to: dsn.to });
      return;
    }
    const queued = await this.#o.intake.submit(
      // The notice about a REQUIRETLS message is itself sent with REQUIRETLS (RFC 8689 §5): it quotes the header section.
      { sender: '', recipients: to, params: { smtputf8: dsn.smtputf8, body: dsn.body, requireTls: envelope.requireTls || undefined }, trace: { ip: '127.0.0.1', helo: 'localhost', protocol: 'local' } },
      dsn.message,
    );
    this.#o.log.info('dsn', { id: queued.envelope.id, about: envelope.id, kind: n.kind, to: dsn.to, recipients: recipients.length });
    if (n.kind === 'delayed' && this.#o.events) {
      for (const r of wanted) this.#o.events.emit('delayed', n.msg, r.index, n.msg.state.attempts, { reply: r.reply, relay: r.relay, tls: null });
    }
  }

  /** Where the DSN goes: the original sender, resolved like any RCPT. */
  #route(address: string): Recipient[] | null {
    return this.#o.directory.recipientsFor(address);
  }
}
