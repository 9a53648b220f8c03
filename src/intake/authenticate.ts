// Sender authentication of mail from outside (Tern as MX): SPF (RFC 7208)
// for MAIL FROM and HELO, every DKIM signature (RFC 6376, RFC 8463), DMARC
// (RFC 7489), the ARC chain (RFC 8617) and the client's reverse DNS (the
// `iprev` method, RFC 8601 §3). The result is ONE Authentication-Results
// field (RFC 8601) under our authserv-id, and the facts policy acts on.
//
// mailauth does the work, its authenticate() step by step
// (mailauth-steps.ts), with our resolver, strict RFC semantics (a body hash
// mismatch is dkim=fail, rsa-sha1 is not a pass) and trustReceived off: the
// client is who the session says, never what a Received field claims. It
// is fed the message as it streams into the spool (a PassThrough: mailauth
// keeps the header section, which intake bounds, and hashes the body as it
// goes), so a large message is never held.
//
// What the verifier sees: the bytes the client sent, unchanged. Our own
// Received field (the first thing intake writes) is not fed to it: no
// signer covered it, and leaving it out keeps the verified message exactly
// the client's. Forged Authentication-Results fields are removed only on
// the way to the spool (ar-filter.ts), so a signature that covered one
// still verifies here as it was sent (a later verifier of the stored copy
// would see it broken: signing a field that claims to be ours is forgery).
//
// SPF of MAIL FROM and of HELO and iprev need nothing from the message:
// they start at DATA and run while the message streams in, and their
// answers are shared by the client's next messages (ClientCheckCache).

import { PassThrough } from 'node:stream';
import type { ARCSealOptions, AuthenticateResult, DNSResolver, SPFResult } from 'mailauth';
import type { DnsResolve } from '../dns/mailauth-resolver.ts';
import { checkIprev, type Iprev } from '../policy/iprev.ts';
import { checkMessage, spfHelo } from './mailauth-steps.ts';
import { checkSpf } from './spf.ts';
import type { Logger } from '../util/log.ts';

export interface VerifierOptions {
  /** RFC 8601 §2.5: the name our results are recorded under (usually the hostname). */
  authservId: string;
  resolve: DnsResolve;
  /** Upper bound (ms) on all checks of one message after its last byte; past it, temperror. */
  timeout: number;
  log: Logger;
}

/** Who handed us the message (from the session, never from the message). */
export interface ClientFacts {
  ip: string;
  helo?: string | undefined;
  /** MAIL FROM; '' for the null reverse-path. */
  sender: string;
}

/** What policy acts on, and what the log records. */
export interface AuthOutcome {
  /** The Authentication-Results field, CRLF-terminated, to prepend. */
  header: string;
  /** SPF of the MAIL FROM identity (of HELO when MAIL FROM is null, RFC 7208 §2.4). */
  spf: { result: string; domain?: string | undefined };
  /** SPF of the HELO identity (RFC 7208 §2.3); undefined when not checked separately. */
  helo?: string | undefined;
  dkim: { result: string; domain?: string | undefined; selector?: string | undefined; algo?: string | undefined }[];
  arc: string;
  /** null: DMARC was not evaluated (no single author domain). */
  dmarc: { result: string; domain: string; policy?: string | undefined; pct: number } | null;
  iprev: Iprev;
  /** The checks did not finish in time (or failed): every result is temperror. */
  incomplete?: string | undefined;
  /**
   * Only when a seal was asked for: the ARC set (ARC-Seal,
   * ARC-Message-Signature, ARC-Authentication-Results; RFC 8617 §4.1) to
   * prepend, CRLF-terminated, or '' when none could be made (the chain
   * already failed or is full, an unusable key; sealError says why).
   */
  arcSet?: string | undefined;
  sealError?: string | undefined;
}

/** The key an ARC set is signed with (RFC 8617 §5.1): one of our DKIM keys. */
export interface ArcSealKey {
  domain: string;
  selector: string;
  /** PKCS#8 PEM. */
  privateKey: string;
}

/** RFC 5322 §2.1.1 recommends lines of at most 78 characters; mailauth folds its rows at 160, so do we. */
const FOLD_AT = 160;

/**
 * Answers that depend only on the client (iprev: its IP; SPF of HELO: its IP
 * and HELO name, RFC 7208 §2.3; SPF of MAIL FROM: those and the address,
 * RFC 7208 §2.4), kept for a minute: a client sending many
 * messages, over one connection or many, is checked once. Temporary errors
 * are not kept. A minute is well inside the TTLs these records have; the
 * DNS answers themselves are cached by the resolver under their own TTLs.
 */
export class ClientCheckCache<T> {
  readonly #entries = new Map<string, { expires: number; value: Promise<T> }>();
  readonly #ttlMs: number;
  readonly #max: number;
  readonly #now: () => number;
  constructor(ttlMs = 60_000, max = 10_000, now: () => number = Date.now) {
    this.#ttlMs = ttlMs;
    this.#max = max;
    this.#now = now;
  }

  get(key: string, make: () => Promise<T>, keep: (v: T) => boolean): Promise<T> {
    const now = this.#now();
    const hit = this.#entries.get(key);
    if (hit && hit.expires > now) return hit.value;
    const entry = { expires: now + this.#ttlMs, value: make() };
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    // Map order is insertion order: the oldest goes first.
    if (this.#entries.size > this.#max) this.#entries.delete(this.#entries.keys().next().value!);
    const drop = (): void => {
      if (this.#entries.get(key) === entry) this.#entries.delete(key);
    };
    entry.value.then((v) => (keep(v) ? undefined : drop()), drop);
    return entry.value;
  }

  get size(): number {
    return this.#entries.size;
  }
}

/** The client checks' caches, one set per InboundVerifier. */
export interface ClientChecks {
  mailFromSpf: ClientCheckCache<SPFResult>;
  heloSpf: ClientCheckCache<SPFResult | undefined>;
  iprev: ClientCheckCache<Iprev>;
}

export class InboundVerifier {
  readonly #opts: VerifierOptions;
  readonly #caches: ClientChecks = { mailFromSpf: new ClientCheckCache(), heloSpf: new ClientCheckCache(), iprev: new ClientCheckCache() };
  constructor(opts: VerifierOptions) {
    this.#opts = opts;
  }
  get authservId(): string {
    return this.#opts.authservId;
  }
  /** `seal`: also ARC-seal the message (RFC 8617) with this key, for a forwarded copy. */
  begin(client: ClientFacts, seal?: ArcSealKey): Verification {
    return new Verification(this.#opts, client, seal, this.#caches);
  }
}

/**
 * One message's checks. Contract: write() the message bytes in order (not
 * our Received field), then exactly one of finish() or abort().
 */
export class Verification {
  readonly #opts: VerifierOptions;
  readonly #client: ClientFacts;
  readonly #input = new PassThrough();
  readonly #auth: Promise<AuthenticateResult>;
  readonly #helo: Promise<SPFResult | undefined>;
  readonly #iprev: Promise<Iprev>;
  readonly #sealing: boolean;

  constructor(opts: VerifierOptions, client: ClientFacts, seal?: ArcSealKey, caches?: ClientChecks) {
    this.#opts = opts;
    this.#client = client;
    const query = { ip: client.ip, helo: client.helo, sender: client.sender, authservId: opts.authservId, resolve: opts.resolve, timeout: opts.timeout };
    // RFC 7208 §4.1: check_host() of MAIL FROM (of HELO when MAIL FROM is null,
    // §2.4) needs only the IP, the HELO name and the address, so it runs while
    // the message streams in. Its macros can expand any of them (%{i}, %{h},
    // %{l}, %{s}, RFC 7208 §7.2), and its comment and smtp.mailfrom repeat the
    // address as given, so it is shared only by messages with all three the same.
    // Its own elapsed-time limit (the same timeout, RFC 7208 §4.6.4) counts from
    // here; finish() still bounds the whole by the timeout after the last byte.
    const mailFrom = { ...query, helo: spfHelo(client.ip, client.helo) };
    const check = () => checkSpf(mailFrom);
    const mailFromSpf = caches
      ? caches.mailFromSpf.get(JSON.stringify([client.ip, client.sender, mailFrom.helo]), check, (r) => r.status.result !== 'temperror')
      : check();
    mailFromSpf.catch(() => {});
    // RFC 8617 §5.1: mailauth seals with the validated chain status as cv= and
    // its own results as ARC-Authentication-Results, unless the chain already failed.
    this.#sealing = seal !== undefined;
    this.#auth = checkMessage(
      this.#input,
      {
        ip: client.ip,
        sender: client.sender || undefined,
        mta: opts.authservId,
        resolver: opts.resolve as DNSResolver,
        // As every SPF check (spf.ts): the RFCs exactly.
        strict: true,
        seal: seal ? ({ signingDomain: seal.domain, selector: seal.selector, privateKey: seal.privateKey } satisfies ARCSealOptions) : undefined,
      },
      mailFromSpf,
    );
    this.#auth.catch(() => {}); // awaited in finish(); never an unhandled rejection after abort()
    // With a null MAIL FROM, the check above is already of HELO (RFC 7208 §2.4); an address literal has no SPF.
    const heloName = client.helo && !client.helo.startsWith('[') ? client.helo : undefined;
    const heloSpf = (name: string) => checkSpf({ ...query, helo: name, sender: '' });
    const iprev = () => checkIprev(client.ip, opts.resolve);
    this.#helo = client.sender && heloName
      ? (caches ? caches.heloSpf.get(`${client.ip} ${heloName.toLowerCase()}`, () => heloSpf(heloName), (r) => r?.status.result !== 'temperror') : heloSpf(heloName))
      : Promise.resolve(undefined);
    this.#helo.catch(() => {});
    this.#iprev = caches ? caches.iprev.get(client.ip, iprev, (r) => r.result !== 'temperror') : iprev();
    this.#iprev.catch(() => {});
  }

  write(chunk: Buffer): void {
    // Hashing is synchronous under mailauth's async wrappers, so the stream
    // empties within the same turn of the event loop (as in DkimSigner).
    this.#input.write(chunk);
  }

  /** The client gave up or the message was refused: stop, and let the checks fail quietly. */
  abort(): void {
    this.#input.destroy(new Error('message aborted'));
  }

  async finish(): Promise<AuthOutcome> {
    this.#input.end();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(resolve, this.#opts.timeout, 'timeout');
    });
    const [auth, helo, iprev] = await Promise.all([
      Promise.race([this.#auth, deadline]).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e)))),
      Promise.race([this.#helo, deadline]).catch(() => undefined),
      Promise.race([this.#iprev, deadline]).catch(() => 'timeout' as const),
    ]).finally(() => clearTimeout(timer));
    const ip = this.#client.ip;
    const iprevResult: Iprev = iprev === 'timeout' ? { result: 'temperror', ip, names: [] } : iprev;
    const first = [fold(iprevRow(iprevResult))];
    const heloSpf = helo === 'timeout' ? undefined : helo;
    const last = heloSpf?.info ? [fold(heloSpf.info)] : [];
    if (auth === 'timeout' || auth instanceof Error) {
      const why = auth === 'timeout' ? 'checks timed out' : 'checks failed';
      if (auth instanceof Error) this.#opts.log.warn('inbound checks failed', { ip, error: auth });
      const rows = ['dkim', 'spf', 'arc', 'dmarc'].map((m) => `${m}=temperror (${why})`);
      return {
        header: field(this.#opts.authservId, [...first, ...rows, ...last]),
        spf: { result: 'temperror' },
        helo: heloSpf?.status.result,
        dkim: [],
        arc: 'temperror',
        dmarc: null,
        iprev: iprevResult,
        incomplete: why,
        ...(this.#sealing ? { arcSet: '', sealError: why } : {}),
      };
    }
    const dkim = auth.dkim.results.map(revoked);
    const dmarc = auth.dmarc;
    // The rows authenticate() puts in its own field, in its order, folded as it does.
    // RFC 7489 §6.6.1 / RFC 9989 §5.3.1: with several author domains DMARC cannot be
    // evaluated, which is a classic spoofing trick; mailauth leaves the row out, we say so.
    const skipped = !dmarc && auth.dmarcSkipReason && auth.dmarcSkipReason !== 'no-author-domain' ? `dmarc=permerror (${auth.dmarcSkipReason})` : undefined;
    const rows = [...dkim.map((r) => r.info), auth.spf ? auth.spf.info : undefined, auth.arc ? auth.arc.info : undefined, dmarc ? dmarc.info : skipped]
      .filter((r): r is string => typeof r === 'string' && r !== '')
      .map(fold);
    return {
      header: field(this.#opts.authservId, [...first, ...rows, ...last]),
      spf: auth.spf ? { result: auth.spf.status.result, domain: auth.spf.domain } : { result: 'none' },
      helo: heloSpf?.status.result,
      dkim: dkim.map((r) => ({ result: r.result, domain: r.domain, selector: r.selector, algo: r.algo })),
      arc: auth.arc ? auth.arc.status.result : 'none',
      dmarc: dmarc
        ? { result: dmarc.status.result, domain: dmarc.status.header?.from ?? dmarc.domain, policy: dmarc.policy, pct: dmarcPct(dmarc.rr) }
        : null,
      iprev: iprevResult,
      ...(this.#sealing ? sealOutcome(auth) : {}),
    };
  }
}

/** The ARC fields mailauth put on top of its headers (the set it made, in its order), and why there are none. */
function sealOutcome(auth: AuthenticateResult): { arcSet: string; sealError?: string | undefined } {
  const set = auth.headers
    .split(/\r\n(?![ \t])/)
    .filter((f) => /^ARC-(?:Seal|Message-Signature|Authentication-Results):/i.test(f));
  if (set.length === 3) return { arcSet: set.join('\r\n') + '\r\n' };
  const errors = auth.arc ? auth.arc.sealErrors : undefined;
  const why = errors?.length ? errors.map((e) => e.err.message).join('; ') : `chain ${auth.arc ? auth.arc.status.result : 'not checked'}`;
  return { arcSet: '', sealError: why };
}

/**
 * RFC 7489 §6.3 pct: the percentage of failing mail the policy applies to;
 * 100 when absent or not an integer 0-100. (RFC 9989 drops pct and mailauth
 * ignores it, so it is read from the record here.)
 */
export function dmarcPct(record: string | undefined): number {
  const m = /(?:^|;)\s*pct\s*=\s*(\d{1,3})\s*(?:;|$)/i.exec(record ?? '');
  const n = m ? Number(m[1]) : 100;
  return n >= 0 && n <= 100 ? n : 100;
}

/**
 * One DKIM result. RFC 6376 §6.1.2 step 7: an empty p= means the key was
 * revoked and the signature fails (PERMFAIL); mailauth reports it as
 * neutral ("invalid public key"), which RFC 8601 §2.7.1 keeps for
 * signatures that could not be processed. Reported as fail here.
 */
function revoked(r: AuthenticateResult['dkim']['results'][number]): { result: string; info?: string | undefined; domain?: string | undefined; selector?: string | undefined; algo?: string | undefined } {
  const out = { result: r.status?.result ?? 'none', info: r.info, domain: r.signingDomain, selector: r.selector, algo: r.algo };
  const rr = (r as { rr?: unknown }).rr;
  if (out.result === 'neutral' && typeof rr === 'string' && /(?:^|;)\s*p\s*=\s*(?:;|$)/i.test(rr)) {
    out.result = 'fail';
    out.info = out.info?.replace(/^dkim=neutral(?: \([^)]*\))?/, 'dkim=fail (key revoked)');
  }
  return out;
}

/** `iprev=pass policy.iprev=192.0.2.1 (mail.example.org)` (RFC 8601 §2.7.3). */
function iprevRow(r: Iprev): string {
  const name = r.names[0];
  // A PTR name is the client's data: only host-name characters go into the comment.
  const comment = name ? ` (${name.replace(/[^A-Za-z0-9._-]/g, '?').slice(0, 253)})` : '';
  const ip = r.ip.includes(':') ? `"${r.ip}"` : r.ip;
  return `iprev=${r.result} policy.iprev=${ip}${comment}`;
}

/** The whole field: "Authentication-Results: id;" then the (already folded) rows, one per line, ';'-separated. */
function field(authservId: string, rows: string[]): string {
  return `Authentication-Results: ${authservId};\r\n ${rows.join(';\r\n ')}\r\n`;
}

/** Folds a one-line row at spaces (RFC 5322 §2.2.3) into lines of at most FOLD_AT characters where it can. */
export function fold(row: string): string {
  if (row.length <= FOLD_AT) return row;
  const out: string[] = [];
  let cur = '';
  for (const word of row.split(' ')) {
    if (cur && cur.length + 1 + word.length > FOLD_AT) {
      out.push(cur);
      cur = word;
    } else cur = cur ? `${cur} ${word}` : word;
  }
  out.push(cur);
  return out.join('\r\n ');
}
