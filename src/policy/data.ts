// The data stage's view of one message (policy.ts: Check.body, Check.data,
// DataStep). It is made when the content starts and lives until the
// message is committed or refused: what the checks decide (header fields
// to add, recipients to quarantine) is collected here, and intake applies
// it at commit (intake.ts: DataOutcome). Intake only gives the facts
// (ReadMessage); every decision about them is taken in policy.

import type { AuthOutcome } from '../intake/authenticate.ts';
import type { DataOutcome, ReadMessage } from '../intake/intake.ts';
import type { Envelope } from '../spool/types.ts';
import { JUNK_FOLDER } from './inbound.ts';

/** One header field as received: the name as written, the value unfolded (RFC 5322 §2.2.3), read as UTF-8 and trimmed. */
export interface HeaderField {
  name: string;
  value: string;
}

/** What a check sees of a message at the data stage (docs/plugins.md). */
export interface DataMessage {
  /** The queue id, as in the logs and the "250 … queued as" reply. */
  readonly id: string;
  /** Octets of the message received so far (in `data`: all of them), as stored, without our Received field. */
  readonly size: number;
  /** Mail from our own users (authenticated, or from a trusted network): signed, and held to the sender check. */
  readonly submission: boolean;
  /**
   * The header section as received, field by field, in order; empty in
   * `body` (it is read as the content arrives). Forged
   * Authentication-Results fields are already removed; our Received field,
   * and the fields added at commit, are not there.
   */
  readonly headers: readonly HeaderField[];
  /** The values of every field called `name` (any case), in order. */
  header(name: string): string[];
  /**
   * False when the header section was larger than intake keeps
   * (MAX_HEADER_SECTION): `headers` then holds only the fields before the
   * cut. A check that must see every field should refuse the message.
   */
  readonly headersComplete: boolean;
  /** Sender authentication of mail from outside (SPF, DKIM, DMARC, ARC, iprev); undefined for other mail or with the checks off. */
  readonly auth: AuthOutcome | undefined;
  /**
   * Add a header field, prepended to the message (above our
   * Authentication-Results) when it is committed. `value` is one line of
   * printable ASCII (encode other text per RFC 2047). Fields that a message
   * may carry only once (RFC 5322 §3.6: From, Subject, Message-ID, …)
   * cannot be added.
   */
  addHeader(name: string, value: string): void;
  /**
   * Deliver to the Junk folder instead of the inbox: every local recipient,
   * or those at `recipients` (indices into the transaction's recipients).
   * Remote recipients are not affected.
   */
  quarantine(recipients?: readonly number[]): void;
}

/**
 * RFC 5322 §3.6 fields with a maximum of one occurrence: a second one would
 * make the message invalid, and readers disagree on which one they show.
 */
const SINGLE_FIELDS = new Set([
  'orig-date',
  'date',
  'from',
  'sender',
  'reply-to',
  'to',
  'cc',
  'bcc',
  'message-id',
  'in-reply-to',
  'references',
  'subject',
]);
/** RFC 5322 §2.1.1: a line is at most 998 characters without its CRLF. */
const MAX_LINE = 998;
/** ftext (RFC 5322 §3.6.8), and a name short enough to be sane. */
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]{1,76}$/;
/** Printable ASCII and HTAB: no line break, no control character, nothing that needs an encoding. */
const FIELD_VALUE = /^[\x20-\x7e\t]*$/;

/** The DataMessage of one message, with what only Tern's own data checks read. */
export class MessageView implements DataMessage {
  readonly #read: ReadMessage;
  readonly submission: boolean;
  #headers: HeaderField[] | null = null;
  #added = '';
  readonly #junk = new Set<number>();

  constructor(read: ReadMessage, submission: boolean) {
    this.#read = read;
    this.submission = submission;
  }

  get id(): string {
    return this.#read.id;
  }
  get size(): number {
    return this.#read.size;
  }
  get headers(): readonly HeaderField[] {
    if (!this.#read.headerDone) return [];
    return (this.#headers ??= this.#read.headerFields());
  }
  header(name: string): string[] {
    const n = name.toLowerCase();
    return this.headers.filter((f) => f.name.toLowerCase() === n).map((f) => f.value);
  }
  get headersComplete(): boolean {
    return this.#read.headerComplete;
  }
  get auth(): AuthOutcome | undefined {
    return this.#read.auth;
  }

  /** The envelope as intake holds it (the sender verification of mail from outside, the client). */
  get envelope(): Readonly<Envelope> {
    return this.#read.envelope;
  }
  /** The originator fields (From, Sender, Resent-From, Resent-Sender) as the sender check reads them: whole up to intake's limit. */
  originators(field: string): string[] {
    return this.#read.originators(field);
  }
  /** Originator field values went over intake's limit and were cut: they cannot be checked whole. */
  get originatorsTruncated(): boolean {
    return this.#read.originatorsTruncated;
  }

  addHeader(name: string, value: string): void {
    if (!FIELD_NAME.test(name)) throw new Error(`addHeader: ${JSON.stringify(name)} is not a header field name`);
    if (SINGLE_FIELDS.has(name.toLowerCase())) throw new Error(`addHeader: a message has at most one ${name} field (RFC 5322 §3.6)`);
    if (!FIELD_VALUE.test(value)) throw new Error(`addHeader: the value of ${name} must be printable ASCII on one line`);
    const field = `${name}: ${value.trim()}`;
    if (field.length > MAX_LINE) throw new Error(`addHeader: ${name} is longer than ${MAX_LINE} characters`);
    this.#added += `${field}\r\n`;
  }

  quarantine(recipients?: readonly number[]): void {
    const all = this.#read.envelope.recipients;
    for (const i of recipients ?? all.keys()) {
      if (Number.isInteger(i) && all[i]?.mailbox) this.#junk.add(i);
    }
  }

  /** What the data stage decided, for intake to apply. */
  outcome(): DataOutcome {
    return { fields: this.#added, folders: [...this.#junk].sort((a, b) => a - b).map((i) => [i, JUNK_FOLDER] as const) };
  }
}
