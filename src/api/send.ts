// POST /v1/messages: a message from the API goes through intake exactly as
// one from authenticated submission does (Received, Date and Message-ID
// fix-ups, DKIM signing, the send-as check of the originator fields), and
// is answered only once the spool has it durably (the SMTP 250).

import { randomUUID } from 'node:crypto';
import type { Intake } from '../intake/intake.ts';
import { parseHeaderSection } from '../intake/intake.ts';
import type { Directory, Target } from '../policy/directory.ts';
import { mayUseAddress, originatorError } from '../policy/senders.ts';
import { formatAddress, parseMailbox } from '../smtp/address.ts';
import { SmtpError } from '../smtp/reply.ts';
import type { Recipient } from '../spool/types.ts';
import type { ApiKeyRecord, EventStore } from '../store/store.ts';
import { ApiError, fieldError } from './problem.ts';

export interface SendRaw {
  from: string;
  to: string[];
  raw: string;
}

export interface SendResult {
  id: string;
  messageId: string;
  recipients: { address: string; status: 'queued' }[];
}

export interface SenderOptions {
  intake: Intake;
  directory: Directory;
  store: EventStore;
  hostname: string;
  /** limits.messageSize and limits.recipients, read at each send (a reload changes them). */
  limits: () => { messageSize: number; recipients: number };
}

export class Sender {
  readonly #o: SenderOptions;
  constructor(o: SenderOptions) {
    this.#o = o;
  }

  async sendRaw(body: SendRaw, key: ApiKeyRecord, ip: string, tls: boolean): Promise<SendResult> {
    const limits = this.#o.limits();
    const from = mailbox(body.from, '/body/from');
    if (!mayUseAddress(from, key.sendAs)) throw new ApiError(403, `The key "${key.name}" may not send as <${from}>`, [{ path: '/body/from', message: 'outside the key\'s send-as' }]);
    if (body.to.length > limits.recipients) throw fieldError(400, '/body/to', `at most ${limits.recipients} recipients (limits.recipients)`);
    const recipients = this.#recipients(body.to);
    let message = toCrlf(body.raw);
    if (message.length > limits.messageSize) throw new ApiError(413, `The message is ${message.length} octets; the limit is ${limits.messageSize} (limits.messageSize)`);
    const fields = parseHeaderSection(message, false);
    let messageId = fields.find((f) => f.name.toLowerCase() === 'message-id')?.value.trim();
    if (messageId === undefined) {
      // Intake would add one (RFC 6409 §8.3), but the answer must name it: make it here.
      messageId = `<${randomUUID()}@${this.#o.hostname}>`;
      message = Buffer.concat([Buffer.from(`Message-ID: ${messageId}\r\n`, 'latin1'), message]);
    }
    const nonAscii = /[^\x00-\x7f]/.test(body.raw) || /[^\x00-\x7f]/.test(from);
    const incoming = this.#o.intake.begin({
      sender: from,
      recipients,
      params: { smtputf8: nonAscii, body: nonAscii ? '8BITMIME' : undefined },
      // RFC 3848 has no word for HTTP; the Received field says what it was, as the API key's name says who.
      trace: { ip, protocol: tls ? 'HTTPS' : 'HTTP', role: 'http', user: `apikey:${key.name}` },
      submission: { user: `apikey:${key.name}` },
      headerSection: true,
      source: 'api',
    });
    incoming.write(message);
    try {
      const queued = await incoming.commit(message.subarray(-2).toString('latin1') === '\r\n', async (m) => {
        // The same rule as submission's data stage: every originator field must be the key's to use.
        const refused = originatorError((field) => m.originators(field), key.sendAs);
        if (refused) throw refused;
        return { fields: '', folders: [] };
      });
      this.#o.store.setMessageId(queued.envelope.id, messageId);
      return { id: queued.envelope.id, messageId, recipients: queued.envelope.recipients.map((r) => ({ address: r.address, status: 'queued' as const })) };
    } catch (e) {
      throw refusal(e);
    }
  }

  /** RCPT TO's rules: local addresses must exist (aliases expand), anything else is relayed for an authenticated key. */
  #recipients(to: string[]): Recipient[] {
    const out: Recipient[] = [];
    to.forEach((raw, i) => {
      const path = `/body/to/${i}`;
      const address = mailbox(raw, path);
      const parsed = parseMailbox(address);
      let targets: Target[] = [{ kind: 'remote', address }];
      if (!parsed.literal && this.#o.directory.isLocalDomain(parsed.domain)) {
        const found = this.#o.directory.resolve(parsed.local, parsed.domain);
        if (!found || found.length === 0) throw fieldError(400, path, `<${address}>: no such user here`);
        targets = found;
      }
      for (const t of targets) {
        if (out.some((r) => r.address === t.address)) continue;
        out.push({ address: t.address, original: address, mailbox: t.kind === 'local' ? { domain: t.domain, localPart: t.localPart } : undefined });
      }
    });
    return out;
  }
}

function mailbox(s: string, path: string): string {
  try {
    return formatAddress(parseMailbox(s.trim()));
  } catch (e) {
    throw fieldError(400, path, e instanceof SmtpError ? e.text : 'not an address');
  }
}

/** JSON writers end lines with \n: make every line end CRLF (RFC 5322 §2.1); a lone CR is refused, as in SMTP. */
function toCrlf(raw: string): Buffer {
  const text = raw.replace(/\r?\n/g, '\r\n');
  if (/\r(?!\n)/.test(text)) throw fieldError(400, '/body/raw', 'contains a CR not followed by LF');
  return Buffer.from(text, 'utf8');
}

/** Intake's SMTP refusals as HTTP: the sender rules 403, too large 413, the message's own faults 400, anything temporary 503. */
function refusal(e: unknown): unknown {
  if (!(e instanceof SmtpError)) return e;
  const text = `${e.enhanced} ${e.text}`;
  if (e.code >= 400 && e.code < 500) return new ApiError(503, `Temporarily refused: ${text}`);
  if (e.enhanced === '5.7.1') return new ApiError(403, text);
  if (e.enhanced === '5.3.4' || e.code === 552) return new ApiError(413, text);
  return new ApiError(400, text);
}
