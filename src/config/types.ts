// The resolved configuration: what the rest of Tern sees after load.ts has
// validated the file and filled in defaults. Durations are milliseconds,
// sizes are bytes, paths are absolute, names are normalized.

export type ListenerRole = 'smtp' | 'submission' | 'submissions';

export interface ListenerConfig {
  role: ListenerRole;
  address: string;
  /** 0 asks the OS for an ephemeral port (tests). */
  port: number;
  /** Every connection starts with a PROXY protocol v1/v2 header, accepted only from `edge.proxyFrom`. */
  proxyProtocol?: boolean | undefined;
}

export interface DomainConfig {
  /** Lower-cased, no trailing dot. */
  name: string;
  /** Lower-cased local parts; '*' (also when the key is omitted) = every local part is a mailbox. */
  mailboxes: string[] | '*';
  /** Keys lower-cased; targets are local parts of this domain or full addresses. */
  aliases: Record<string, string[]>;
  catchAll?: string | undefined;
  /**
   * What local delivery does: write to the Maildir (default), or discard
   * after the message was durably queued, like Postfix's discard(8)
   * transport (sinkhole domains, benchmarks).
   */
  delivery?: 'maildir' | 'discard' | undefined;
}

export interface TimeoutsConfig {
  /**
   * Deadline for the next command line to arrive whole, counted from our
   * previous reply (RFC 5321 §4.5.3.2.7 says at least 5 minutes). Bytes of
   * an unfinished line do not extend it: a trickle cannot hold a session.
   */
  command: number;
  /**
   * DATA/BDAT content: the longest the transfer may fall behind
   * `limits.minDataRate` (counted from the 354 / the BDAT command, each
   * octet earning 1/minDataRate s); the whole transfer is also capped at
   * data + messageSize / minDataRate.
   */
  data: number;
  /** Delay before the greeting; 0 = none. */
  greeting: number;
  /**
   * When the connection table (limits.connections, or connectionsPerIp for
   * the new client's IP) is full, a session that has made no progress for
   * this long is closed (421 4.4.2), least recent progress first, to make
   * room before a new client is refused.
   */
  evictAfter: number;
}

export interface LimitsConfig {
  messageSize: number;
  recipients: number;
  connections: number;
  connectionsPerIp: number;
  /** Text line length including CRLF. */
  lineLength: number;
  /** Command line length including CRLF. */
  commandLineLength: number;
  /** Bad commands before 421 and disconnect. */
  errors: number;
  /** Received headers allowed in a message before it is refused as a loop (554 5.4.6). */
  maxReceived: number;
  /** Octets per second that DATA/BDAT content must average to keep its deadline moving (see timeouts.data); at least 1. */
  minDataRate: number;
  timeouts: TimeoutsConfig;
}

export interface QueueConfig {
  /** Delays between attempts; the last one repeats. */
  retrySchedule: number[];
  maxLifetime: number;
  /** 0 = no delay warnings. */
  delayWarning: number;
}

export interface TlsConfig {
  cert: string;
  key: string;
}

export interface DnsConfig {
  /** In `dns.Resolver#setServers` syntax: "ip", "ip:port", "[ipv6]:port"; [] = system resolver. */
  servers: string[];
  timeout: number;
}

export interface SmarthostConfig {
  host: string;
  port: number;
  /** starttls (required), implicit (port 465 style) or none. */
  tls: 'starttls' | 'implicit' | 'none';
  auth?: { user: string; password: string } | undefined;
  /** Route only these recipient domains through it; undefined = all remote mail. */
  domains?: string[] | undefined;
}

export interface OutboundTimeouts {
  connect: number;
  /** Greeting, EHLO, MAIL, RCPT, RSET replies (RFC 5321 §4.5.3.2: 5 minutes). */
  command: number;
  /** Each data block sent (§4.5.3.2.5: 3 minutes). */
  dataBlock: number;
  /** The reply after the final dot (§4.5.3.2.6: 10 minutes). */
  dataEnd: number;
}

export interface OutboundConfig {
  /** Remote SMTP port; 25 in production. */
  port: number;
  /** Our EHLO name; defaults to hostname. */
  heloName: string;
  /** Remote deliveries in flight at once, in all. */
  concurrency: number;
  /** Remote deliveries in flight at once to one destination. */
  perDestination: number;
  /** MX hosts tried per attempt (RFC 5321 §5.1 lets a sender cap the list). */
  maxMxHosts: number;
  /** STARTTLS policy: opportunistic (use when offered), required, none. */
  tls: 'opportunistic' | 'required' | 'none';
  /** Opportunistic only: after a failed TLS handshake, retry the host in plaintext. */
  plaintextFallback: boolean;
  timeouts: OutboundTimeouts;
  /** How long an idle connection is kept for reuse. */
  connectionReuse: number;
  smarthost?: SmarthostConfig | undefined;
}

/** An account declared in the config file (the user database holds the rest). */
export interface ConfigUser {
  address: string;
  /** A PHC scrypt string as `tern user` stores (never a plain password). */
  passwordHash: string;
  sendAs: string[];
  messagesPerHour?: number | undefined;
  recipientsPerMessage?: number | undefined;
}

export interface SubmissionConfig {
  /** Messages one user may send per hour (sliding window); 0 = no limit. */
  messagesPerHour: number;
  /** Recipients per message for authenticated users. */
  recipientsPerMessage: number;
  /** Offer AUTH on the smtp (port 25) listener too. Off by default: port 25 is for MX traffic. */
  authOnSmtp: boolean;
}

/** DNS blocklists checked at connect on the smtp listener (RFC 5782). */
export interface DnsblConfig {
  /** Zones such as zen.spamhaus.org; [] = none. */
  zones: string[];
  /** How long an answer (listed or not) is cached. */
  cacheTtl: number;
}

/** Greylisting at RCPT on the smtp listener (RFC 6647). */
export interface GreylistConfig {
  enabled: boolean;
  /** A retry must come at least this long after the first attempt… */
  delay: number;
  /** …and within this long of it. */
  expire: number;
  /** How long a triplet that passed stays known. */
  keep: number;
}

/** Per-client-IP limits on the smtp listener; 0 = no limit. */
export interface RateConfig {
  connectionsPerMinute: number;
  messagesPerHour: number;
}

/** Defences at the edge: what port 25 does before a message is accepted. */
export interface EdgeConfig {
  dnsbl: DnsblConfig;
  greylist: GreylistConfig;
  rate: RateConfig;
  /** CIDRs allowed to send a PROXY protocol header (listeners with proxyProtocol: true). */
  proxyFrom: string[];
  /** How long a proxy has to send its header. */
  proxyTimeout: number;
}

/** What an SPF `fail` (RFC 7208 §8.4) of the MAIL FROM identity does: record it only, deliver to Junk, or 550 5.7.23. */
export type SpfFailAction = 'mark' | 'quarantine' | 'reject';

/** The inbound policy of one recipient domain. */
export interface InboundDomainPolicy {
  spf: { onFail: SpfFailAction };
  /** Honour the sender domain's DMARC p=/sp= (reject: 550 5.7.1, quarantine: Junk). */
  dmarc: { enforce: boolean };
}

/** Sender authentication of mail from outside (smtp listener, not authenticated, not trustedNetworks). */
export interface InboundConfig {
  /** Run SPF/DKIM/DMARC/ARC/iprev and add Authentication-Results. */
  enabled: boolean;
  /** RFC 8601 authserv-id; Authentication-Results fields claiming it are removed from every message. */
  authservId: string;
  /** Upper bound on the checks of one message after its end of data; past it, temperror. */
  timeout: number;
  /** Defaults for every recipient domain. */
  spf: { onFail: SpfFailAction };
  dmarc: { enforce: boolean };
  /** IPs/CIDRs whose mail is never rejected or quarantined for SPF or DMARC (forwarders, mailing lists). */
  trustedForwarders: string[];
  /** Per recipient domain (lower-cased), defaults filled in. */
  domains: Record<string, InboundDomainPolicy>;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface LogConfig {
  level: LogLevel;
}

export interface TernConfig {
  hostname: string;
  dataDir: string;
  listeners: ListenerConfig[];
  /** Absent: a self-signed certificate is made elsewhere. */
  tls?: TlsConfig | undefined;
  domains: DomainConfig[];
  /** CIDRs (IPv4/IPv6) or single IPs whose clients may relay without AUTH. */
  trustedNetworks: string[];
  limits: LimitsConfig;
  queue: QueueConfig;
  dns: DnsConfig;
  outbound: OutboundConfig;
  users: ConfigUser[];
  submission: SubmissionConfig;
  log: LogConfig;
  edge: EdgeConfig;
  inbound: InboundConfig;
  /** Absolute paths of plugin modules, in the order they run. */
  plugins: string[];
  /** Path of the file this came from, undefined for embedded defaults. */
  source?: string | undefined;
}
