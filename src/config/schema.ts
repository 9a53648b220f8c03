// Every configuration key, declared once: its shape, its resolved type, its
// default (in the file's own syntax, with the reason for the number), and
// its meaning checks. The file's JSON schema, the TypeScript types
// (types.ts), the embedded defaults (defaults.ts) and the README test are
// all derived from this one value; declare.ts explains the vocabulary.
//
// Keys resolve in the order declared here, which is also the order
// `tern config check` lists when a key is unknown. A default or check that
// reads another key (heloName reads hostname) must come after it.

import os from 'node:os';
import path from 'node:path';
import { isIP } from 'node:net';
import { bool, computed, duration, int, list, oneOf, optional, record, section, size, str, stringOrList, type Ctx, type Seg } from './declare.ts';
import { cidrProblem, dataDirProblem, dnsServerProblem, domainProblem, fileProblem, localPartProblem, normDomain, tlsPairProblems } from './checks.ts';
import { aliasNameProblems, defaultDomains, deliveryProblem, linkDomains } from './domains.ts';

// The words a key may take, each list named once.
export const LISTENER_ROLES = ['smtp', 'submission', 'submissions', 'http'] as const;
/**
 * Local delivery: write to the Maildir, or discard once durably queued, like Postfix's discard(8) (sinkhole domains,
 * benchmarks); `domains[].delivery` also takes an LMTP target, `lmtp://HOST:PORT` or `lmtp:/path/to/socket` (RFC 2033).
 */
export const DELIVERY_MODES = ['maildir', 'discard'] as const;
/** STARTTLS to remote MX hosts: opportunistic (use when offered, RFC 7435), required, none. */
export const OUTBOUND_TLS_MODES = ['opportunistic', 'required', 'none'] as const;
/** The smarthost: starttls (required), implicit (port 465 style) or none. */
export const SMARTHOST_TLS_MODES = ['starttls', 'implicit', 'none'] as const;
/** What an SPF `fail` (RFC 7208 §8.4) of the MAIL FROM identity does: record it only, deliver to Junk, or 550 5.7.23. */
export const SPF_FAIL_ACTIONS = ['mark', 'quarantine', 'reject'] as const;
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
/** RFC 8461 §3.2 policy modes. */
export const MTA_STS_MODES = ['enforce', 'testing', 'none'] as const;
/** RFC 8461 §3.2: max_age is at most 31557600 seconds. */
export const MTA_STS_MAX_AGE_MS = 31_557_600_000;

/** RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF; servers must accept that much. */
export const MIN_LINE_LENGTH = 1000;
/** RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF. */
export const MIN_COMMAND_LINE_LENGTH = 512;

// What several keys share.
const hostnameOf = (ctx: Ctx): string => ctx.root.hostname as string;
const hostName = (s: string): string => s.trim().replace(/\.$/, '');
const isDomainName = (s: string): string | undefined => domainProblem(s.toLowerCase());
const lowerCase = (s: string): string => s.toLowerCase();
/** An MTA-STS mx pattern: a host name, or `*.` and a domain (RFC 8461 §4.1). */
const mxPatternProblem = (s: string): string | undefined => domainProblem(s.startsWith('*.') ? s.slice(2) : s);
const fromFileDir = (s: string, ctx: Ctx): string => path.resolve(ctx.dir, s);
const cidr = str({ map: (s) => s.trim(), check: cidrProblem });
const ipPort = { min: 1, max: 65535 };
/** A domain's list of mailboxes: '*' (every local part), or local parts, lower-cased, each once. */
const mailboxList = (v: string | unknown[], at: Seg[], ctx: Ctx): string[] | '*' => {
  if (typeof v === 'string') {
    if (v !== '*') ctx.report(at, `must be '*' or a list of local parts`);
    return '*';
  }
  const boxes: string[] = [];
  v.forEach((m, j) => {
    if (typeof m !== 'string') return;
    const lp = m.trim().toLowerCase();
    const problem = localPartProblem(lp) ?? (boxes.includes(lp) ? `duplicate mailbox "${lp}"` : undefined);
    if (problem !== undefined) ctx.report([...at, j], problem);
    else boxes.push(lp);
  });
  return boxes;
};

const listener = section({
  role: oneOf(LISTENER_ROLES, undefined, { required: true }),
  address: str({ required: true, check: (a) => (isIP(a) === 0 ? `"${a}" is not an IP address` : undefined) }),
  /** 0 asks the OS for an ephemeral port (tests). */
  port: int({ required: true, check: (p) => (p < 0 || p > 65535 ? 'must be 0-65535' : undefined) }),
  /** Every connection starts with a PROXY protocol v1/v2 header, accepted only from `edge.proxyFrom`. */
  proxyProtocol: optional(bool(), { shown: 'false' }),
  /** http only: HTTPS with the server's certificate (the SMTP roles have their own TLS: STARTTLS, or implicit on submissions). */
  tls: optional(bool(), { shown: 'false' }),
}, {
  finish: (l, at, ctx) => {
    if (l.tls === true && l.role !== 'http') ctx.report([...at, 'tls'], 'only http listeners take tls (submission uses STARTTLS, submissions is always TLS)');
    if (l.proxyProtocol === true && l.role === 'http') ctx.report([...at, 'proxyProtocol'], 'not supported on http listeners');
    return l;
  },
});

const domain = section({
  /** Lower-cased, no trailing dot. */
  name: str({ required: true, map: normDomain, check: domainProblem }),
  /** Lower-cased local parts; '*' (also when the key is omitted) = every local part is a mailbox. */
  mailboxes: stringOrList({ default: '*', shown: 'every local part', convert: mailboxList, missing: '*' }),
  /** Alias name to its targets: local parts of this domain or full addresses (lower-cased and checked by linkDomains). */
  aliases: record(stringOrList({
    minItems: 1,
    convert: (v): string | string[] => (typeof v === 'string' ? v : v.filter((x): x is string => typeof x === 'string')),
    missing: [],
  }), { keyName: '<alias>' }),
  catchAll: optional(str()),
  delivery: str({ default: 'maildir', map: (s) => s.trim(), check: deliveryProblem }),
}, { finish: (d, at, ctx) => aliasNameProblems(d, at, ctx.report) });

/** The inbound policy of one recipient domain; the section's own values fill in what a domain leaves out. */
const spfPolicy = section({ onFail: oneOf(SPF_FAIL_ACTIONS, 'mark') });
/** Honour the sender domain's DMARC p=/sp= (reject: 550 5.7.1, quarantine: Junk). */
const dmarcPolicy = section({ enforce: bool(true) });

export const CONFIG = section({
  hostname: str({ default: computed('the machine\'s hostname', () => os.hostname()), map: hostName, check: isDomainName }),
  // Relative to the cwd when the file does not say, like the embedded defaults.
  dataDir: str({ minLength: 1, default: computed('./data', () => path.resolve('data'), { checked: true }), map: fromFileDir, check: dataDirProblem }),
  /**
   * Where users, API keys, events, webhooks, suppressions and the other
   * shared state live: the embedded node:sqlite file in dataDir (default), or
   * PostgreSQL shared by several nodes (docs/scale-out.md). Queued mail
   * stays in each node's own spool either way.
   */
  store: section({
    /** A libpq connection URL (postgres://user:password@host:port/db). */
    postgres: optional(str({ minLength: 1, check: (v) => (/^postgres(ql)?:\/\//.test(v) ? undefined : 'must be a postgres:// URL') }), { shown: 'none: the embedded store' }),
  }),
  /** Unprivileged ports on loopback, so `npm start` needs no root and exposes nothing. */
  listeners: list(listener, {
    default: [
      { role: 'smtp', address: '127.0.0.1', port: 2525 },
      { role: 'submission', address: '127.0.0.1', port: 2587 },
      { role: 'submissions', address: '127.0.0.1', port: 2465 },
      { role: 'http', address: '127.0.0.1', port: 8025 },
    ],
    shown: 'the four listeners in the table above',
    finish: (listeners, at, ctx) => {
      const seen = new Map<string, number>();
      listeners.forEach(({ address, port }, i) => {
        // Port 0 is a fresh ephemeral port each time, so it never collides.
        const key = `${address}:${port}`;
        if (port !== 0 && seen.has(key)) ctx.report([...at, i], `duplicate of listeners[${seen.get(key)}] (${key})`);
        else seen.set(key, i);
      });
      return listeners;
    },
  }),
  /** Absent: a self-signed certificate is made elsewhere. */
  tls: optional(section({
    cert: str({ required: true, shown: 'self-signed', map: fromFileDir, check: fileProblem }),
    key: str({ required: true, shown: 'self-signed', map: fromFileDir, check: fileProblem }),
  }, {
    // Parsed as the listeners will use them, so neither a start nor the first STARTTLS fails on them instead.
    finish: (tls, at, ctx) => {
      if (tls.cert !== '' && tls.key !== '' && fileProblem(tls.cert) === undefined && fileProblem(tls.key) === undefined) {
        for (const p of tlsPairProblems(tls.cert, tls.key)) ctx.report([...at, p.key], p.message);
      }
      return tls;
    },
  })),
  /** `localhost` and the host's own name, like Postfix's default mydestination. */
  domains: list(domain, {
    default: computed('localhost and the hostname', (ctx) => defaultDomains(hostnameOf(ctx))),
    finish: (domains, at, ctx) => linkDomains(domains, at, ctx.report),
  }),
  /** CIDRs (IPv4/IPv6) or single IPs whose clients may relay without AUTH. */
  trustedNetworks: list(cidr),
  /** The http listeners' settings beyond the listener itself. */
  http: section({
    /** Who may read /metrics without an API key (Prometheus scrapers); anyone else needs an admin key. */
    metricsFrom: list(cidr, { default: ['127.0.0.0/8', '::1/128'] }),
  }),
  limits: section({
    messageSize: size(25 * 1024 * 1024),
    // RFC 5321 §4.5.3.1.8: at least 100 recipients must be buffered.
    recipients: int({ default: 100, min: 1 }),
    connections: int({ default: 1000, min: 1 }),
    connectionsPerIp: int({ default: 50, min: 1 }),
    // Below the RFC minimums a conforming client could not get its mail through.
    /** Text line length including CRLF. */
    lineLength: int({ default: MIN_LINE_LENGTH, min: MIN_LINE_LENGTH }),
    /** Command line length including CRLF. */
    commandLineLength: int({ default: MIN_COMMAND_LINE_LENGTH, min: MIN_COMMAND_LINE_LENGTH }),
    /** Bad commands before 421 and disconnect: enough for a confused human, few enough to cut off a scanner quickly. */
    errors: int({ default: 10, min: 1 }),
    /** Received headers allowed before a message is refused as a loop (554 5.4.6); RFC 5321 §6.3 suggests a large threshold such as 100. */
    maxReceived: int({ default: 100, min: 1 }),
    /**
     * Octets per second that DATA/BDAT content must average to keep its
     * deadline moving (see timeouts.data). Postfix's smtpd_min_data_rate:
     * 500 octets/s, a 4 kbit/s link, lets a real slow client through and
     * holds a trickle of a byte a second to the data timeout.
     */
    minDataRate: int({ default: 500, min: 1 }),
    timeouts: section({
      /**
       * Deadline for the next command line to arrive whole, counted from our
       * previous reply (RFC 5321 §4.5.3.2.7 says at least 5 minutes). Bytes of
       * an unfinished line do not extend it: a trickle cannot hold a session.
       */
      command: duration('5m'),
      /**
       * DATA/BDAT content: the longest the transfer may fall behind
       * `limits.minDataRate` (counted from the 354 / the BDAT command, each
       * octet earning 1/minDataRate s); the whole transfer is also capped at
       * data + messageSize / minDataRate.
       */
      data: duration('5m'),
      /** Delay before the greeting; 0 = none. */
      greeting: duration(0, { min: 0 }),
      /**
       * When the connection table (limits.connections, or connectionsPerIp for
       * the new client's IP) is full, a session that has made no progress for
       * this long is closed (421 4.4.2), least recent progress first, to make
       * room before a new client is refused. A client waits for our reply,
       * then answers in one packet: five seconds of silence (or of a trickle)
       * is far beyond any working client, and only costs a session anything
       * while the table is full.
       */
      evictAfter: duration('5s'),
    }),
  }),
  queue: section({
    /** Delays between attempts; the last one repeats. */
    retrySchedule: list(duration(undefined), { default: ['1m', '5m', '15m', '30m', '1h'], minItems: 1 }),
    // RFC 5321 §4.5.4.1: give up after at least 4-5 days.
    maxLifetime: duration('5d'),
    /** 0 = no delay warnings. */
    delayWarning: duration('4h', { min: 0 }),
  }),
  dns: section({
    /** In `dns.Resolver#setServers` syntax: "ip", "ip:port", "[ipv6]:port"; [] = system resolver. */
    servers: list(str({ check: dnsServerProblem }), { shown: 'the system resolver' }),
    timeout: duration('5s'),
    /**
     * The configured servers validate DNSSEC: Tern asks them with the DO bit
     * and trusts TLSA records (DANE, RFC 7672) only from answers with the AD
     * bit set. Needs `servers` (a validating resolver such as unbound on
     * 127.0.0.1), because node's own resolver hides the AD bit.
     */
    dnssec: bool(false),
  }, {
    finish: (dns, at, ctx) => {
      if (dns.dnssec && dns.servers.length === 0) ctx.report([...at, 'dnssec'], 'needs dns.servers: the validating resolver Tern asks directly for the AD bit');
      return dns;
    },
  }),
  outbound: section({
    /** Remote SMTP port; 25 in production. */
    port: int({ default: 25, ...ipPort }),
    /** Our EHLO name. */
    heloName: str({ default: computed('hostname', hostnameOf) }),
    /** Remote deliveries in flight at once, in all. */
    concurrency: int({ default: 100, min: 1 }),
    /** Remote deliveries in flight at once to one destination. */
    perDestination: int({ default: 10, min: 1 }),
    /** MX hosts tried per attempt (RFC 5321 §5.1 lets a sender cap the list). */
    maxMxHosts: int({ default: 10, min: 1 }),
    tls: oneOf(OUTBOUND_TLS_MODES, 'opportunistic'),
    /** Opportunistic only: after a failed TLS handshake, retry the host in plaintext. */
    plaintextFallback: bool(true),
    timeouts: section({
      connect: duration('30s'),
      // RFC 5321 §4.5.3.2: 5 minutes for the greeting, MAIL and RCPT; 3 per data block; 10 after the dot.
      /** Greeting, EHLO, MAIL, RCPT, RSET replies. */
      command: duration('5m'),
      /** Each data block sent. */
      dataBlock: duration('3m'),
      /** The reply after the final dot. */
      dataEnd: duration('10m'),
    }),
    /** How long an idle connection is kept for reuse; 0 = no reuse. */
    connectionReuse: duration('5s', { min: 0 }),
    /**
     * Honour recipient domains' MTA-STS policies (RFC 8461): in enforce mode
     * mail goes only to the MX hosts the policy names, over TLS with a valid
     * certificate, or waits. DANE (dns.dnssec) takes precedence where a
     * domain has both.
     */
    mtaSts: bool(true),
    /** The port policies are fetched from (https://mta-sts.DOMAIN:PORT/.well-known/mta-sts.txt); 443 except in tests. */
    mtaStsPort: int({ default: 443, ...ipPort }),
    smarthost: optional(section({
      host: str({ required: true, shown: 'none' }),
      port: int({ ...ipPort, default: computed('587', (_ctx, smarthost) => (smarthost.tls === 'implicit' ? 465 : 587)) }),
      tls: oneOf(SMARTHOST_TLS_MODES, 'starttls'),
      auth: optional(section({ user: str({ required: true }), password: str({ required: true }) })),
      /** Route only these recipient domains through it; undefined = all remote mail. */
      domains: optional(list(str({ map: normDomain })), { shown: 'all remote domains' }),
    }, {
      finish: (smarthost, at, ctx) => {
        if (smarthost.auth !== undefined && smarthost.tls === 'none') {
          ctx.report([...at, 'auth'], 'refusing to send a password without TLS (set tls: starttls or implicit)');
        }
        return smarthost;
      },
    })),
  }),
  /** Accounts declared in the file (the user database holds the rest). */
  users: list(section({
    address: str({ required: true, map: lowerCase }),
    /** A PHC scrypt string as `tern user` stores (never a plain password). */
    passwordHash: str({ required: true, pattern: '^\\$scrypt\\$' }),
    sendAs: list(str({ map: lowerCase })),
    messagesPerHour: optional(int({ min: 0 }), { shown: 'submission.messagesPerHour' }),
    recipientsPerMessage: optional(int({ min: 1 }), { shown: 'submission.recipientsPerMessage' }),
  })),
  submission: section({
    /** Messages one user may send per hour (sliding window); 0 = no limit. */
    messagesPerHour: int({ default: 1000, min: 0 }),
    /** Recipients per message for authenticated users. */
    recipientsPerMessage: int({ default: 100, min: 1 }),
    /** Offer AUTH on the smtp (port 25) listener too. Off by default: port 25 is for MX traffic. */
    authOnSmtp: bool(false),
    /**
     * Characters a password set by `tern user add|passwd` must have at least
     * (NIST SP 800-63B §3.1.1.2 asks for 8 or more; 12 resists offline
     * guessing better). At most 255: PLAIN carries no more (RFC 4616 §2).
     */
    minPasswordLength: int({ default: 12, min: 1, max: 255 }),
  }),
  log: section({ level: oneOf(LOG_LEVELS, 'info') }),
  /** The events store (every event of every message, read through the HTTP API). */
  events: section({
    /** Store events at all: false keeps no timeline (GET /v1/events and /v1/messages/{id} find nothing, webhooks get nothing). */
    enabled: bool(true),
    /** How long events are kept: the managed relays keep 30 days (Postmark 45, SendGrid 30); older ones are deleted in small batches. */
    retention: duration('30d'),
  }),
  /** Webhook deliveries (src/webhooks/): POSTs of events to the URLs API keys registered. */
  webhooks: section({
    /** One POST's limit, connection to last byte of the answer: a slow endpoint costs a retry, never a stuck sender. */
    timeout: duration('10s'),
    /** How long an event is retried (with backoff) before it is given up: Standard Webhooks' and Svix's 3 days. */
    retryFor: duration('3d'),
    /**
     * POSTs in flight at once, over every webhook. What one webhook gets is
     * this many POSTs per round trip of its receiver: 32 keep up with about
     * 600 events a second from a receiver that takes 50 ms (8, the first
     * default, fell behind 80 messages a second).
     */
    concurrency: int({ default: 32, min: 1 }),
  }),
  /** The suppression list (src/suppress/): addresses outbound mail is not sent to. */
  suppression: section({
    /** Add the recipient of a hard bounce (5.1.x, 5.2.1) automatically. */
    hardBounces: bool(true),
    /** Read ARF complaint reports (RFC 5965) sent to complaintAddresses and suppress the complainer. */
    complaints: bool(true),
    /** Where feedback loops send reports; empty: abuse@ and fbl@ of every local domain. */
    complaintAddresses: list(str({ minLength: 3 })),
  }),
  /**
   * Defences at the edge: what port 25 does before a message is accepted.
   * Each is opt-in, like Postfix's (no DNSBL, no greylisting, no anvil rate
   * limits by default): each can refuse real mail when set up wrong, so the
   * operator chooses.
   */
  edge: section({
    /** DNS blocklists checked at connect on the smtp listener (RFC 5782). */
    dnsbl: section({
      zones: list(str({ map: normDomain, check: domainProblem })),
      /** How long an answer (listed or not) is cached. */
      cacheTtl: duration('5m', { min: 0 }),
    }),
    /**
     * Greylisting at RCPT on the smtp listener (RFC 6647), with common
     * practice's timings: postgrey's 5-minute delay and 35-day max-age, a
     * 2-day retry window.
     */
    greylist: section({
      enabled: bool(false),
      /** A retry must come at least this long after the first attempt… */
      delay: duration('5m', { min: 0 }),
      /** …and within this long of it. */
      expire: duration('2d'),
      /** How long a triplet that passed stays known. */
      keep: duration('36d'),
    }, {
      finish: (greylist, at, ctx) => {
        if (greylist.expire <= greylist.delay) ctx.report([...at, 'expire'], 'must be longer than edge.greylist.delay, or no retry could ever pass');
        return greylist;
      },
    }),
    /** Per-client-IP limits on the smtp listener; 0 = no limit. */
    rate: section({ connectionsPerMinute: int({ default: 0, min: 0 }), messagesPerHour: int({ default: 0, min: 0 }) }),
    /** CIDRs allowed to send a PROXY protocol header (listeners with proxyProtocol: true). */
    proxyFrom: list(cidr),
    /** How long a proxy has to send its header: HAProxy sends it at once; a peer that does not is not a proxy. */
    proxyTimeout: duration('5s'),
  }, {
    finish: (edge, _at, ctx) => {
      (ctx.root.listeners as { proxyProtocol?: boolean }[]).forEach((l, i) => {
        // Without trusted proxies every connection would be refused: surely not what was meant.
        if (l.proxyProtocol === true && edge.proxyFrom.length === 0) ctx.report(['listeners', i, 'proxyProtocol'], 'needs the proxies\' addresses in edge.proxyFrom');
      });
      return edge;
    },
  }),
  /**
   * Our own MTA-STS policy (RFC 8461), served by the http listener at
   * https://mta-sts.<each local domain>/.well-known/mta-sts.txt
   * (src/api/mta-sts.ts); `tern dns DOMAIN` prints the records that announce it.
   */
  mtaSts: section({
    /**
     * testing: senders deliver anyway and only report failures (TLS-RPT,
     * RFC 8460), the safe way to start; enforce once the reports are clean.
     * none: withdraw a published policy (RFC 8461 §3.2).
     */
    mode: oneOf(MTA_STS_MODES, 'testing'),
    /** The MX names senders may deliver to (RFC 8461 §4.1: `*.example.net` matches one leftmost label); every MX record should be listed. */
    mx: list(str({ map: (s) => hostName(s).toLowerCase(), check: mxPatternProblem }), { default: computed('[hostname]', (ctx) => [hostName(hostnameOf(ctx)).toLowerCase()]) }),
    /** How long senders keep the policy: RFC 8461 §3.2 allows up to 31557600 s (a year); weeks are usual. */
    maxAge: duration('1w', { min: 1 }),
  }, {
    finish: (mtaSts, at, ctx) => {
      if (mtaSts.maxAge > MTA_STS_MAX_AGE_MS) ctx.report([...at, 'maxAge'], 'must be at most 31557600s (RFC 8461 §3.2)');
      return mtaSts;
    },
  }),
  /**
   * TLS-RPT (RFC 8460): outbound TLS results per recipient domain, sent once a
   * day to the addresses a domain publishes in its `_smtp._tls` TXT record.
   */
  tlsRpt: section({
    /** Record results and send the daily reports. */
    enabled: bool(true),
    /** "organization-name" of our reports. */
    organization: str({ minLength: 1, default: computed('hostname', hostnameOf) }),
    /** "contact-info" of our reports, and the From of those sent by mail. */
    contact: str({ minLength: 3, default: computed('postmaster@hostname', (ctx) => `postmaster@${hostName(hostnameOf(ctx)).toLowerCase()}`) }),
  }),
  /** Plugin modules in the order they run: code, so relative to the config file, and they must exist now rather than at the first connection. */
  plugins: list(str({ minLength: 1, map: fromFileDir, check: fileProblem })),
  /**
   * Sender authentication of mail from outside (smtp listener, not
   * authenticated, not trustedNetworks). On by default: an MX that records
   * SPF/DKIM/DMARC and honours a domain's published DMARC policy is what
   * senders expect (RFC 7489 §6.6.4). SPF alone only marks by default:
   * forwarding breaks SPF, and DMARC already decides for domains that ask
   * for enforcement (RFC 7489 §10.1).
   */
  inbound: section({
    /** Run SPF/DKIM/DMARC/ARC/iprev and add Authentication-Results. */
    enabled: bool(true),
    /** RFC 8601 authserv-id (§2.5: normally the host name); Authentication-Results fields claiming it are removed from every message. */
    authservId: str({ minLength: 1, default: computed('hostname', hostnameOf), map: hostName, check: isDomainName }),
    /**
     * Upper bound on the checks of one message after its end of data; past
     * it, temperror. RFC 7208 §4.6.4 asks for at least 20 seconds for SPF;
     * the client waits up to 10 minutes after its final dot (RFC 5321 §4.5.3.2.6).
     */
    timeout: duration('30s'),
    /** Defaults for every recipient domain. */
    spf: spfPolicy,
    dmarc: dmarcPolicy,
    /** IPs/CIDRs whose mail is never rejected or quarantined for SPF or DMARC (forwarders, mailing lists). */
    trustedForwarders: list(cidr),
    /** Per recipient domain (lower-cased in the result), defaults filled in from the section. */
    domains: record(section({
      spf: section({ onFail: optional(oneOf(SPF_FAIL_ACTIONS), { shown: 'inbound.spf.onFail' }) }),
      dmarc: section({ enforce: optional(bool(), { shown: 'inbound.dmarc.enforce' }) }),
    }), { keyName: '<domain>', shown: 'the section\'s spf and dmarc' }),
  }, {
    finish: (inbound, at, ctx) => {
      const local = new Set((ctx.root.domains as { name: string }[]).map((d) => d.name));
      // fromEntries defines own properties, so no key can reach the prototype.
      const domains = Object.fromEntries(Object.entries(inbound.domains).map(([key, d]) => {
        const name = normDomain(key);
        // An override for a domain we do not receive mail for would never apply: surely a typo.
        const p = domainProblem(name) ?? (local.has(name) ? undefined : `${name} is not one of the configured domains`);
        if (p !== undefined) ctx.report([...at, 'domains', key], p);
        return [name, { spf: { onFail: d.spf.onFail ?? inbound.spf.onFail }, dmarc: { enforce: d.dmarc.enforce ?? inbound.dmarc.enforce } }];
      }));
      return { ...inbound, domains };
    },
  }),
});
