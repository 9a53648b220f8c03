// The seam between the SMTP session and everything that decides or keeps
// mail (go-smtp's Backend/Session; docs/architecture.md "The session speaks SMTP;
// policy decides"). The session (src/server/session.ts) parses commands,
// keeps the protocol's state and limits, and calls this interface once per
// command; each call resolves (go on) or throws an SmtpError (the reply).
// Anything else thrown is a fault, which the session answers 451 4.3.0
// without losing its place in the dialogue.
//
// TernBackend is the implementation: the stage checks (policy.ts) for each
// command, AUTH through the Authenticator, and the message into intake with
// the data stage (data.ts) run at commit.

import { SmtpError } from '../smtp/reply.ts';
import { formatAddress, type Address } from '../smtp/address.ts';
import type { MailParams, RcptParams } from '../smtp/params.ts';
import type { Recipient } from '../spool/types.ts';
import type { DataOutcome, Intake, IncomingMessage } from '../intake/intake.ts';
import type { Logger } from '../util/log.ts';
import type { Account, Authenticator } from './auth.ts';
import type { Policy, SessionInfo, Transaction } from './policy.ts';
import { MessageView } from './data.ts';

/** The session's side of a message's Received field (RFC 5321 §4.4, RFC 3848). */
export interface MessageTrace {
  /** SMTP, ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS… */
  protocol: string;
  /** The TLS version and cipher, when the session is encrypted. */
  tls?: string | undefined;
}

/** A queued message, as the session reports it. */
export interface Queued {
  id: string;
  sender: string;
  recipients: number;
  size: number;
  /** The Message-ID field's value: the message's own, or the one intake added (RFC 6409 §8.3); absent for relayed mail without one. */
  messageId?: string | undefined;
}

export interface Backend {
  /**
   * A connection opened (before the greeting). Throws SmtpError to refuse
   * it: the reply replaces the greeting and the connection is closed.
   * `info` belongs to the session, which updates it (helo, tls, user); the
   * backend reads it.
   */
  connect(info: SessionInfo): Promise<BackendSession>;
}

/**
 * One connection's calls, strictly in order (the session never has two in
 * flight). Syntax, command sequence and the protocol's own limits (sizes,
 * recipients per message, RFC 5321 §4.5.3.1) are checked by the session
 * before it calls; everything else is decided here.
 */
export interface BackendSession {
  /** AUTH may be offered on this connection (the session advertises it only under TLS, RFC 4954 §4). */
  readonly authAvailable: boolean;
  helo(name: string): Promise<void>;
  /** Checks credentials; resolves with the authenticated address. Throws SmtpError 535 5.7.8, 454 4.7.0. */
  auth(user: string, password: string): Promise<string>;
  /** Starts a transaction (RFC 5321 §4.1.1.2). */
  mail(from: Address | null, params: MailParams): Promise<void>;
  /** Adds a recipient; 'postmaster' is the bare "<Postmaster>" of RFC 5321 §4.1.1.3, which must be accepted. */
  rcpt(to: Address | 'postmaster', params: RcptParams): Promise<void>;
  /**
   * The content starts (after DATA's 354, or with the first BDAT chunk):
   * where its octets go, dot-unstuffed. Once per transaction.
   */
  data(trace: MessageTrace): MessageSink;
  /**
   * The transaction is over, whatever happened: after the message's reply,
   * RSET, EHLO/HELO, the connection closing. An uncommitted message is
   * dropped; a commit in flight finishes first and keeps its outcome.
   */
  reset(): void;
}

/**
 * A message on its way in. The session owns it: it writes the octets in
 * order, then calls commit() or abort() once, or ends the transaction with
 * BackendSession.reset(), which aborts a message that is not committed and
 * lets a commit in flight finish (abort() during a commit likewise waits
 * for it and changes nothing).
 */
export interface MessageSink {
  /** False: stop reading the client until onDrain's callback (the disk is behind). */
  write(chunk: Buffer): boolean;
  onDrain(cb: () => void): void;
  /**
   * The data stage, then the commit. Resolves only once the message is
   * durable. Rejects with an SmtpError: the data stage's verdict (a 5xx
   * refusal, a 4xx) or a failure underneath (452 4.3.1 for a full disk,
   * 451 4.3.0 otherwise). `endsWithLineBreak` false (BDAT) adds the final CRLF.
   */
  commit(endsWithLineBreak: boolean): Promise<Queued>;
  abort(): Promise<void>;
}

export interface TernBackendOptions {
  hostname: string;
  policy: Policy;
  intake: Pick<Intake, 'begin'>;
  /** Absent: AUTH is offered nowhere. */
  auth?: Authenticator | undefined;
  /** AUTH on the smtp (MX) listener too (submission.authOnSmtp); always on the submission listeners. */
  authOnSmtp: boolean;
  log: Logger;
}

export class TernBackend implements Backend {
  readonly #o: TernBackendOptions;

  constructor(opts: TernBackendOptions) {
    this.#o = opts;
  }

  async connect(info: SessionInfo): Promise<BackendSession> {
    await this.#o.policy.connect(info);
    return new TernSession(this.#o, info);
  }

  /**
   * One message from the HTTP API, as a session already authenticated as
   * `account` (the API key): the same mail, rcpt and data stages as
   * submission's (send-as, the hourly limit, recipients, the sender fields,
   * the plugins), and the same intake. The connect and helo stages have no
   * meaning for a request and are not run.
   */
  apiSession(info: SessionInfo & { role: 'http' }, account: Account, extra: ApiExtra): ApiSession {
    return new TernSession(this.#o, info, { account, ...extra });
  }
}

/** What an API message adds to what a session knows. */
export interface ApiExtra {
  /** The Received field's protocol word (HTTP, HTTPS). */
  protocol: string;
  tags?: Record<string, string> | undefined;
}

/** A BackendSession for one API message, which can also tell where its recipients went. */
export interface ApiSession extends BackendSession {
  /** The transaction's recipients after alias expansion, as intake queued them. */
  recipients(): readonly Recipient[];
}

/** A transaction as the checks see it (policy.ts: Transaction), and what the backend keeps of it. */
class Txn implements Transaction {
  readonly from: Address | null;
  readonly params: MailParams;
  readonly account: Account | null;
  readonly recipients: Recipient[] = [];
  rcptCount = 0;
  /** The message, once its content started. */
  sink: Sink | null = null;
  #undo: (() => void)[] = [];

  constructor(from: Address | null, params: MailParams, account: Account | null) {
    this.from = from;
    this.params = params;
    this.account = account;
  }

  onAbandon(undo: () => void): void {
    this.#undo.push(undo);
  }

  /** The transaction is over: unless its message was queued, undo what the checks asked to. Once. */
  end(): void {
    const undo = this.#undo;
    this.#undo = [];
    if (this.sink?.queued) return;
    for (const fn of undo) fn();
  }
}

class TernSession implements ApiSession {
  readonly authAvailable: boolean;
  readonly #o: TernBackendOptions;
  readonly #info: SessionInfo;
  readonly #api: (ApiExtra & { account: Account }) | undefined;
  #account: Account | null = null;
  #txn: Txn | null = null;

  constructor(o: TernBackendOptions, info: SessionInfo, api?: ApiExtra & { account: Account }) {
    this.#o = o;
    this.#info = info;
    this.#api = api;
    this.#account = api?.account ?? null;
    this.authAvailable = !api && o.auth !== undefined && (info.role !== 'smtp' || o.authOnSmtp);
  }

  recipients(): readonly Recipient[] {
    return this.#txn?.recipients ?? [];
  }

  async helo(name: string): Promise<void> {
    await this.#o.policy.helo(this.#info, name);
  }

  async auth(user: string, password: string): Promise<string> {
    if (!this.authAvailable || !this.#o.auth) throw new SmtpError(502, '5.5.1', 'AUTH not available on this service');
    const info = this.#info;
    this.#account = await this.#o.auth.authenticate(info.remoteAddress, user, password, info.id);
    return this.#account.address;
  }

  async mail(from: Address | null, params: MailParams): Promise<void> {
    if (this.#txn) throw new SmtpError(503, '5.5.1', 'Nested MAIL command');
    const t = new Txn(from, params, this.#account);
    try {
      await this.#o.policy.mail(this.#info, from, params, t);
    } catch (e) {
      t.end();
      throw e;
    }
    this.#txn = t;
  }

  async rcpt(to: Address | 'postmaster', params: RcptParams): Promise<void> {
    const t = this.#txn;
    if (!t) throw new SmtpError(503, '5.5.1', 'Need MAIL before RCPT');
    const address = to === 'postmaster' ? { local: 'postmaster', domain: this.#postmasterDomain(), literal: false, utf8: false } : to;
    const targets = await this.#o.policy.rcpt(this.#info, address, params, t);
    const original = formatAddress(address);
    for (const target of targets) {
      if (t.recipients.some((r) => r.address === target.address)) continue;
      t.recipients.push({
        address: target.address,
        original,
        orcpt: params.orcpt,
        notify: params.notify,
        mailbox: target.kind === 'local' ? { domain: target.domain, localPart: target.localPart } : undefined,
      });
    }
    t.rcptCount++;
  }

  /** Where a bare <Postmaster> goes: our hostname if it is a local domain, else the first local domain. */
  #postmasterDomain(): string {
    const host = this.#o.hostname.toLowerCase();
    const directory = this.#o.policy.directory;
    return directory.isLocalDomain(host) ? host : (directory.domains[0] ?? host);
  }

  data(trace: MessageTrace): MessageSink {
    const t = this.#txn;
    if (!t) throw new SmtpError(503, '5.5.1', 'Need MAIL first');
    if (t.recipients.length === 0) throw new SmtpError(554, '5.5.1', 'No valid recipients');
    if (t.sink) throw new Error('BackendSession.data: called twice in one transaction');
    const info = this.#info;
    const policy = this.#o.policy;
    // Our users' mail (authenticated, or from a trusted network) is fixed up
    // and signed; everything else arriving as MX is mail from outside, and
    // gets the inbound checks (SPF/DKIM/DMARC/ARC) for the data stage.
    const submission = this.#account ? { user: this.#account.address } : policy.isTrusted(info.remoteAddress) ? {} : undefined;
    const api = this.#api;
    const incoming = this.#o.intake.begin({
      sender: formatAddress(t.from),
      recipients: t.recipients,
      params: t.params,
      trace: { ip: info.remoteAddress, helo: info.helo, tls: trace.tls, protocol: trace.protocol, role: info.role, user: this.#account?.address },
      submission,
      authenticate: info.role === 'smtp' && submission === undefined,
      // The API's sender check (send.ts) reads the header section whatever the plugins want.
      headerSection: policy.readsHeaders || api !== undefined,
      source: api ? 'api' : undefined,
      tags: api?.tags,
    });
    const view = new MessageView(incoming, submission !== undefined);
    let feeds: ((chunk: Buffer) => void)[];
    try {
      feeds = policy.bodyFeeds(info, view, t);
    } catch (e) {
      void incoming.abort();
      throw e;
    }
    if (feeds.length === 1) incoming.watch(feeds[0]!);
    else if (feeds.length > 1) incoming.watch((chunk) => feeds.forEach((feed) => feed(chunk)));
    t.sink = new Sink(incoming, () => policy.data(info, view, t).then(() => view.outcome()));
    return t.sink;
  }

  reset(): void {
    const t = this.#txn;
    this.#txn = null;
    if (!t) return;
    const sink = t.sink;
    if (sink?.committing && !sink.settled) {
      // The message's outcome decides whether the transaction is undone.
      void sink.committing.then(() => t.end());
      return;
    }
    t.end();
    if (sink && !sink.committing) void sink.abort();
  }
}

class Sink implements MessageSink {
  readonly #incoming: IncomingMessage;
  readonly #stage: () => Promise<DataOutcome>;
  /** Settles (never rejects) when a commit in flight is over, `settled` and `queued` set by then. */
  committing: Promise<void> | null = null;
  settled = false;
  queued = false;

  constructor(incoming: IncomingMessage, stage: () => Promise<DataOutcome>) {
    this.#incoming = incoming;
    this.#stage = stage;
  }

  write(chunk: Buffer): boolean {
    return this.#incoming.write(chunk);
  }

  onDrain(cb: () => void): void {
    this.#incoming.onDrain(cb);
  }

  async commit(endsWithLineBreak: boolean): Promise<Queued> {
    const commit = this.#incoming.commit(endsWithLineBreak, () => this.#stage());
    this.committing = commit.then(
      () => void (this.settled = this.queued = true),
      () => void (this.settled = true),
    );
    const msg = await commit;
    return { id: msg.envelope.id, sender: msg.envelope.sender, recipients: msg.envelope.recipients.length, size: msg.size, messageId: msg.envelope.messageId };
  }

  abort(): Promise<void> {
    return this.#incoming.abort();
  }
}
