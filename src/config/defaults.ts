// The embedded defaults: what `npm start` runs with when there is no file,
// and what fills in every key a file leaves out. Named constants so the
// reason for each number sits next to it.

import os from 'node:os';
import path from 'node:path';
import type {
  DnsConfig, DomainConfig, EdgeConfig, InboundConfig, OutboundConfig, OutboundTimeouts, SubmissionConfig, ListenerConfig, LimitsConfig, LogConfig, QueueConfig, TernConfig, TimeoutsConfig,
} from './types.ts';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF; servers must accept that much. */
export const MIN_LINE_LENGTH = 1000;
/** RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF. */
export const MIN_COMMAND_LINE_LENGTH = 512;

export const DEFAULT_TIMEOUTS: Readonly<TimeoutsConfig> = Object.freeze({
  // RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command.
  command: 5 * MINUTE,
  data: 5 * MINUTE,
  greeting: 0,
  // A client waits for our reply, then answers in one packet: five seconds of
  // silence (or of a trickle) is far beyond any working client, and only
  // costs a session anything while the table is full.
  evictAfter: 5 * SECOND,
});

export const DEFAULT_LIMITS: Readonly<LimitsConfig> = Object.freeze({
  messageSize: 25 * 1024 * 1024,
  // RFC 5321 §4.5.3.1.8: at least 100 recipients must be buffered.
  recipients: 100,
  connections: 1000,
  connectionsPerIp: 50,
  lineLength: MIN_LINE_LENGTH,
  commandLineLength: MIN_COMMAND_LINE_LENGTH,
  // Enough for a confused human, few enough to cut off a scanner quickly.
  errors: 10,
  // RFC 5321 §6.3: count Received fields to find loops, with a large threshold such as 100.
  maxReceived: 100,
  // Postfix's smtpd_min_data_rate: 500 octets/s, a 4 kbit/s link, lets a
  // real slow client through and holds a trickle of a byte a second to the
  // data timeout.
  minDataRate: 500,
  timeouts: DEFAULT_TIMEOUTS,
});

export const DEFAULT_QUEUE: Readonly<QueueConfig> = Object.freeze({
  retrySchedule: Object.freeze([1 * MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE, 1 * HOUR]) as number[],
  // RFC 5321 §4.5.4.1: give up after at least 4-5 days.
  maxLifetime: 5 * DAY,
  delayWarning: 4 * HOUR,
});

export const DEFAULT_DNS: Readonly<DnsConfig> = Object.freeze({ servers: Object.freeze([] as string[]) as string[], timeout: 5 * SECOND });

export const DEFAULT_OUTBOUND_TIMEOUTS: Readonly<OutboundTimeouts> = Object.freeze({
  connect: 30 * SECOND,
  // RFC 5321 §4.5.3.2: 5 minutes for the greeting, MAIL and RCPT; 3 per data block; 10 after the dot.
  command: 5 * MINUTE,
  dataBlock: 3 * MINUTE,
  dataEnd: 10 * MINUTE,
});

export function defaultOutbound(hostname: string): OutboundConfig {
  return {
    port: 25,
    heloName: hostname,
    concurrency: 100,
    perDestination: 10,
    maxMxHosts: 10,
    tls: 'opportunistic',
    plaintextFallback: true,
    timeouts: { ...DEFAULT_OUTBOUND_TIMEOUTS },
    connectionReuse: 5 * SECOND,
  };
}

export const DEFAULT_SUBMISSION: Readonly<SubmissionConfig> = Object.freeze({
  messagesPerHour: 1000,
  recipientsPerMessage: 100,
  authOnSmtp: false,
});

export const DEFAULT_LOG: Readonly<LogConfig> = Object.freeze({ level: 'info' });

/**
 * Edge defences are opt-in, like Postfix's (no DNSBL, no greylisting, no
 * anvil rate limits by default): each one can refuse real mail when set up
 * wrong, so the operator chooses. The timings follow common practice:
 * postgrey's 5-minute delay and 35-day max-age, a 2-day retry window.
 */
export const DEFAULT_EDGE: Readonly<EdgeConfig> = Object.freeze({
  dnsbl: Object.freeze({ zones: Object.freeze([] as string[]) as string[], cacheTtl: 5 * MINUTE }),
  greylist: Object.freeze({ enabled: false, delay: 5 * MINUTE, expire: 2 * DAY, keep: 36 * DAY }),
  rate: Object.freeze({ connectionsPerMinute: 0, messagesPerHour: 0 }),
  proxyFrom: Object.freeze([] as string[]) as string[],
  // HAProxy sends the header at once; a peer that does not is not a proxy.
  proxyTimeout: 5 * SECOND,
});

/**
 * Inbound checks are on: an MX that records SPF/DKIM/DMARC and honours a
 * domain's published DMARC policy is what senders expect (RFC 7489 §6.6.4).
 * SPF alone only marks by default: forwarding breaks SPF, and DMARC already
 * decides for domains that ask for enforcement (RFC 7489 §10.1).
 * RFC 7208 §4.6.4 asks for at least 20 seconds for SPF; the client waits up
 * to 10 minutes after its final dot (RFC 5321 §4.5.3.2.6).
 */
export function defaultInbound(hostname: string): InboundConfig {
  return {
    enabled: true,
    authservId: hostname,
    timeout: 30 * SECOND,
    spf: { onFail: 'mark' },
    dmarc: { enforce: true },
    trustedForwarders: [],
    domains: {},
  };
}

/** Unprivileged ports on loopback, so `npm start` needs no root and exposes nothing. */
export const DEFAULT_LISTENERS: readonly Readonly<ListenerConfig>[] = Object.freeze([
  Object.freeze({ role: 'smtp', address: '127.0.0.1', port: 2525 }),
  Object.freeze({ role: 'submission', address: '127.0.0.1', port: 2587 }),
  Object.freeze({ role: 'submissions', address: '127.0.0.1', port: 2465 }),
] as const);

/** `localhost` and the host's own name, like Postfix's default mydestination. */
export function defaultDomains(hostname: string): DomainConfig[] {
  const own = hostname.toLowerCase().replace(/\.$/, '');
  const names = own === 'localhost' || own === '' ? ['localhost'] : ['localhost', own];
  return names.map((name) => ({ name, mailboxes: '*', aliases: {} }));
}

/** A fresh, mutable copy of the embedded defaults (hostname and cwd are read now). */
export function defaultConfig(): TernConfig {
  const hostname = os.hostname();
  return {
    hostname,
    dataDir: path.resolve('data'),
    listeners: DEFAULT_LISTENERS.map((l) => ({ ...l })),
    domains: defaultDomains(hostname),
    trustedNetworks: [],
    limits: structuredClone(DEFAULT_LIMITS),
    queue: structuredClone(DEFAULT_QUEUE),
    dns: structuredClone(DEFAULT_DNS),
    outbound: defaultOutbound(hostname),
    users: [],
    submission: { ...DEFAULT_SUBMISSION },
    log: { ...DEFAULT_LOG },
    edge: structuredClone(DEFAULT_EDGE),
    inbound: defaultInbound(hostname),
    plugins: [],
  };
}
