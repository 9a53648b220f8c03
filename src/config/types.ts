// The resolved configuration: what the rest of Tern sees after load.ts has
// validated the file and filled in defaults. Durations are milliseconds,
// sizes are bytes, paths are absolute, names are normalized.

export type ListenerRole = 'smtp' | 'submission' | 'submissions';

export interface ListenerConfig {
  role: ListenerRole;
  address: string;
  /** 0 asks the OS for an ephemeral port (tests). */
  port: number;
}

export interface DomainConfig {
  /** Lower-cased, no trailing dot. */
  name: string;
  /** Lower-cased local parts; '*' (also when the key is omitted) = every local part is a mailbox. */
  mailboxes: string[] | '*';
  /** Keys lower-cased; targets are local parts of this domain or full addresses. */
  aliases: Record<string, string[]>;
  catchAll?: string | undefined;
}

export interface TimeoutsConfig {
  /** Awaiting the next command (RFC 5321 §4.5.3.2.7 says at least 5 minutes). */
  command: number;
  /** Awaiting more DATA/BDAT input; the same §4.5.3.2.7 server timeout applies. */
  data: number;
  /** Delay before the greeting; 0 = none. */
  greeting: number;
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
  log: LogConfig;
  /** Path of the file this came from, undefined for embedded defaults. */
  source?: string | undefined;
}
