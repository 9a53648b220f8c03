// Loading the one declarative config file.
//
// Three passes, each collecting every problem instead of stopping at the
// first, so one `tern config check` run shows everything to fix:
//   1. YAML syntax (yaml's parseDocument keeps node ranges for line numbers),
//   2. shape (an ajv JSON schema, `additionalProperties: false` everywhere so a
//      misspelt key is an error, not silently ignored),
//   3. meaning (ports, addresses, CIDRs, domain names, alias targets, durations,
//      readable TLS files), while resolving defaults, units and paths.
// Each problem names its key path and the 1-based line it is on.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isIP } from 'node:net';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { Ajv, type ErrorObject } from 'ajv';
import { LineCounter, isAlias, isMap, isNode, isScalar, isSeq, parseDocument, type Document } from 'yaml';
import {
  DEFAULT_DNS, DEFAULT_LIMITS, DEFAULT_LISTENERS, DEFAULT_LOG, DEFAULT_QUEUE, MIN_COMMAND_LINE_LENGTH, MIN_LINE_LENGTH,
  DEFAULT_SUBMISSION, DEFAULT_EDGE, defaultConfig, defaultDomains, defaultInbound, defaultOutbound,
} from './defaults.ts';
import { MAX_ALIAS_DEPTH, RECIPIENT_DELIMITER } from '../policy/directory.ts';
import type { ConfigUser, DomainConfig, EdgeConfig, InboundConfig, InboundDomainPolicy, ListenerConfig, ListenerRole, LogLevel, OutboundConfig, TernConfig } from './types.ts';

export interface ConfigProblem {
  /** Key path, e.g. "limits.messageSize" or "listeners[1].port"; "" for the whole file. */
  path: string;
  /** 1-based line in the file, when known. */
  line?: number;
  message: string;
}

/** `FILE:LINE: path: message`, leaving out the parts that are unknown. */
export function formatProblem(file: string, p: ConfigProblem): string {
  return `${file}${p.line === undefined ? '' : `:${p.line}`}: ${p.path === '' ? '' : `${p.path}: `}${p.message}`;
}

export class ConfigError extends Error {
  readonly file: string;
  readonly problems: ConfigProblem[];
  constructor(file: string, problems: ConfigProblem[]) {
    super(problems.map((p) => formatProblem(file, p)).join('\n'));
    this.name = 'ConfigError';
    this.file = file;
    this.problems = problems;
  }
}

/** The embedded defaults without a file; otherwise the file, or a ConfigError listing every problem. */
export function loadConfig(file?: string): TernConfig {
  if (file === undefined) return defaultConfig();
  const { config, problems } = checkConfig(file);
  if (config === undefined) throw new ConfigError(file, problems);
  return config;
}

/** Validates a file; `config` is set only when there are no problems. */
export function checkConfig(file: string): { config?: TernConfig; problems: ConfigProblem[] } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    return { problems: [{ path: '', message: `cannot read file: ${(e as Error).message}` }] };
  }
  const lineCounter = new LineCounter();
  // prettyErrors off: we want the bare message, the line comes from the LineCounter.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  if (doc.errors.length > 0) {
    // The tree after a syntax error is a guess; checking its shape would only add noise.
    return { problems: doc.errors.map((e) => ({ path: '', line: lineCounter.linePos(e.pos[0]).line, message: e.message })) };
  }
  let raw: unknown;
  try {
    raw = doc.toJS() ?? {}; // an empty file means "all defaults"
  } catch (e) {
    return { problems: [{ path: '', message: (e as Error).message }] }; // e.g. an alias bomb
  }

  const problems: ConfigProblem[] = [];
  const report = (segs: Seg[], message: string): void => {
    problems.push({ path: formatPath(segs), line: lineOf(doc, lineCounter, segs), message });
  };
  if (!validate(raw)) {
    for (const e of validate.errors ?? []) {
      const segs = pointerToSegs(e.instancePath, raw);
      if (e.keyword === 'additionalProperties') segs.push(String(e.params.additionalProperty));
      if (e.keyword === 'required') segs.push(String(e.params.missingProperty));
      report(segs, schemaMessage(e));
    }
  }
  // Semantic checks run even after schema errors (every accessor below tolerates
  // wrong types), so all problems come out together.
  const config = resolve(isObject(raw) ? raw : {}, path.dirname(path.resolve(file)), report);
  config.source = path.resolve(file);
  problems.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
  return problems.length > 0 ? { problems } : { config, problems };
}

// ---------------------------------------------------------------------------
// Units

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/**
 * Milliseconds from `500ms`, `30s`, `5m`, `4h`, `5d`, `1w`, or combinations
 * such as `1h30m`; a bare number (or numeric string) means seconds.
 */
export function parseDuration(s: string | number): number {
  const bad = (): Error => new Error(`invalid duration ${JSON.stringify(s)} (use e.g. 500ms, 30s, 5m, 4h, 5d, 1w; a bare number is seconds)`);
  if (typeof s === 'number') {
    if (!Number.isFinite(s) || s < 0) throw bad();
    return Math.round(s * 1000);
  }
  const t = s.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Math.round(Number(t) * 1000);
  let total = 0;
  let consumed = 0;
  // Sticky: tokens must follow each other with nothing in between.
  for (const m of t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy)) {
    total += Number(m[1]) * (DURATION_UNITS[m[2]!] ?? NaN);
    consumed += m[0].length;
  }
  if (t === '' || consumed !== t.length || !Number.isFinite(total)) throw bad();
  return Math.round(total);
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** Bytes from an integer or `512K`, `25M`, `1G` (binary multiples; `KB`, `KiB` also accepted). */
export function parseSize(s: string | number): number {
  const bad = (): Error => new Error(`invalid size ${JSON.stringify(s)} (use bytes or e.g. 512K, 25M, 1G)`);
  if (typeof s === 'number') {
    if (!Number.isSafeInteger(s) || s < 0) throw bad();
    return s;
  }
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(s.trim());
  if (m === null) throw bad();
  const n = Math.floor(Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!);
  if (!Number.isSafeInteger(n)) throw bad();
  return n;
}

// ---------------------------------------------------------------------------
// Schema: shape only; meaning is checked in resolve().

const ROLES: ListenerRole[] = ['smtp', 'submission', 'submissions'];
const LEVELS: LogLevel[] = ['debug', 'info', 'warn', 'error'];

const str = { type: 'string' };
const durationSchema = { type: ['string', 'number'] };
const count = (minimum = 1) => ({ type: 'integer', minimum });
const object = (properties: Record<string, object>, required: string[] = []) =>
  ({ type: 'object', properties, required, additionalProperties: false });

const inboundSpf = object({ onFail: { enum: ['mark', 'quarantine', 'reject'] } });
const inboundDmarc = object({ enforce: { type: 'boolean' } });

const schema = object({
  hostname: str,
  dataDir: { type: 'string', minLength: 1 },
  listeners: {
    type: 'array',
    items: object({ role: { enum: ROLES }, address: str, port: { type: 'integer' }, proxyProtocol: { type: 'boolean' } }, ['role', 'address', 'port']),
  },
  tls: object({ cert: str, key: str }, ['cert', 'key']),
  domains: {
    type: 'array',
    items: object({
      name: str,
      mailboxes: { type: ['string', 'array'], items: str },
      aliases: { type: 'object', additionalProperties: { type: ['string', 'array'], items: str, minItems: 1 } },
      catchAll: str,
      delivery: { enum: ['maildir', 'discard'] },
    }, ['name']),
  },
  trustedNetworks: { type: 'array', items: str },
  limits: object({
    messageSize: { type: ['integer', 'string'] },
    recipients: count(),
    connections: count(),
    connectionsPerIp: count(),
    // Below the RFC minimums a conforming client could not get its mail through.
    lineLength: count(MIN_LINE_LENGTH),
    commandLineLength: count(MIN_COMMAND_LINE_LENGTH),
    errors: count(),
    maxReceived: count(),
    minDataRate: count(),
    timeouts: object({ command: durationSchema, data: durationSchema, greeting: durationSchema, evictAfter: durationSchema }),
  }),
  queue: object({ retrySchedule: { type: 'array', items: durationSchema, minItems: 1 }, maxLifetime: durationSchema, delayWarning: durationSchema }),
  dns: object({ servers: { type: 'array', items: str }, timeout: durationSchema }),
  outbound: object({
    port: { type: 'integer', minimum: 1, maximum: 65535 },
    heloName: str,
    concurrency: count(),
    perDestination: count(),
    maxMxHosts: count(),
    tls: { enum: ['opportunistic', 'required', 'none'] },
    plaintextFallback: { type: 'boolean' },
    timeouts: object({ connect: durationSchema, command: durationSchema, dataBlock: durationSchema, dataEnd: durationSchema }),
    connectionReuse: durationSchema,
    smarthost: object({
      host: str,
      port: { type: 'integer', minimum: 1, maximum: 65535 },
      tls: { enum: ['starttls', 'implicit', 'none'] },
      auth: object({ user: str, password: str }, ['user', 'password']),
      domains: { type: 'array', items: str },
    }, ['host']),
  }),
  users: {
    type: 'array',
    items: object({
      address: str,
      passwordHash: { type: 'string', pattern: '^\\$scrypt\\$' },
      sendAs: { type: 'array', items: str },
      messagesPerHour: count(0),
      recipientsPerMessage: count(),
    }, ['address', 'passwordHash']),
  },
  submission: object({ messagesPerHour: count(0), recipientsPerMessage: count(), authOnSmtp: { type: 'boolean' } }),
  log: object({ level: { enum: LEVELS } }),
  edge: object({
    dnsbl: object({ zones: { type: 'array', items: str }, cacheTtl: durationSchema }),
    greylist: object({ enabled: { type: 'boolean' }, delay: durationSchema, expire: durationSchema, keep: durationSchema }),
    rate: object({ connectionsPerMinute: count(0), messagesPerHour: count(0) }),
    proxyFrom: { type: 'array', items: str },
    proxyTimeout: durationSchema,
  }),
  plugins: { type: 'array', items: { type: 'string', minLength: 1 } },
  inbound: object({
    enabled: { type: 'boolean' },
    authservId: { type: 'string', minLength: 1 },
    timeout: durationSchema,
    spf: inboundSpf,
    dmarc: inboundDmarc,
    trustedForwarders: { type: 'array', items: str },
    domains: { type: 'object', additionalProperties: object({ spf: inboundSpf, dmarc: inboundDmarc }) },
  }),
});

// verbose: errors carry their parentSchema, so an unknown key can list the allowed ones.
const validate = new Ajv({ allErrors: true, allowUnionTypes: true, verbose: true, strict: true }).compile(schema);

const TYPE_NAMES: Record<string, string> = { string: 'a string', integer: 'an integer', number: 'a number', array: 'a list', object: 'a mapping', boolean: 'true or false' };

function describe(v: unknown): string {
  if (v === null) return 'empty';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'number' && !Number.isInteger(v)) return `the number ${v}`;
  return `${typeof v} ${JSON.stringify(v)}`;
}

function schemaMessage(e: ErrorObject): string {
  switch (e.keyword) {
    case 'additionalProperties': {
      const known = Object.keys((e.parentSchema as { properties?: object } | undefined)?.properties ?? {});
      return `unknown key${known.length > 0 ? ` (expected one of: ${known.join(', ')})` : ''}`;
    }
    case 'required': return 'required key is missing';
    case 'type': return `must be ${[e.params.type].flat().map((t: string) => TYPE_NAMES[t] ?? t).join(' or ')}, not ${describe(e.data)}`;
    case 'enum': return `must be one of: ${(e.params.allowedValues as string[]).join(', ')}`;
    case 'minimum': return `must be at least ${e.params.limit}`;
    case 'minItems': return `must have at least ${e.params.limit} item${e.params.limit === 1 ? '' : 's'}`;
    case 'minLength': return 'must not be empty';
    default: return e.message ?? e.keyword;
  }
}

// ---------------------------------------------------------------------------
// Paths and lines

type Seg = string | number;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** ajv's JSON pointer to our segments: numbers where the data is a list. */
function pointerToSegs(pointer: string, data: unknown): Seg[] {
  const segs: Seg[] = [];
  let cur = data;
  for (const part of pointer.split('/').slice(1)) {
    const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
    const seg = Array.isArray(cur) ? Number(key) : key;
    segs.push(seg);
    cur = Array.isArray(cur) ? cur[seg as number] : isObject(cur) ? cur[key] : undefined;
  }
  return segs;
}

function formatPath(segs: Seg[]): string {
  let out = '';
  for (const s of segs) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (/^[A-Za-z_][\w-]*$/.test(s)) out += out === '' ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`; // e.g. an alias named "first.last"
  }
  return out;
}

/**
 * The line of the node at `segs`: the key's line for mapping entries (a block
 * value starts on the next line, but the key is what the user looks for), the
 * item's line in lists. Where the path does not exist (a missing key) the
 * deepest existing ancestor's line is used.
 */
function lineOf(doc: Document, lc: LineCounter, segs: Seg[]): number | undefined {
  const at = (n: unknown): number | undefined => (isNode(n) && n.range ? lc.linePos(n.range[0]).line : undefined);
  let node: unknown = doc.contents;
  let line = at(node);
  for (const seg of segs) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (pair === undefined) break;
      line = at(pair.key) ?? at(pair.value) ?? line;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number' && node.items[seg] !== undefined) {
      node = node.items[seg];
      line = at(node) ?? line;
    } else break;
  }
  return line;
}

// ---------------------------------------------------------------------------
// Meaning: resolve defaults, units and paths; report what makes no sense.

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

const normDomain = (d: string): string => d.trim().toLowerCase().replace(/\.$/, '');

/** RFC 1035 §2.3.1 labels (digits first allowed, RFC 1123 §2.1), at most 255 octets on the wire = 253 characters. */
function domainProblem(name: string): string | undefined {
  if (name === '') return 'domain name must not be empty';
  if (name.length > 253) return 'domain name is longer than 253 characters';
  if (isIP(name) !== 0) return 'must be a domain name, not an IP address';
  const bad = name.split('.').find((l) => !LABEL.test(l));
  if (bad !== undefined) {
    return `invalid domain name "${name}": label "${bad}" must be 1-63 letters, digits or inner hyphens (IDNs in xn-- form)`;
  }
  return undefined;
}

function localPartProblem(lp: string): string | undefined {
  if (lp === '') return 'local part must not be empty';
  // RFC 5321 §4.5.3.1.1.
  if (Buffer.byteLength(lp) > 64) return `local part "${lp}" is longer than 64 octets`;
  if (/[\s@<>\x00-\x1f\x7f]/.test(lp)) return `local part "${lp}" must not contain spaces, control characters, "@", "<" or ">"`;
  return undefined;
}

function cidrProblem(s: string): string | undefined {
  const [addr = '', prefix, extra] = s.split('/');
  const family = isIP(addr);
  if (family === 0 || extra !== undefined) return `"${s}" is not an IP address or CIDR`;
  const max = family === 4 ? 32 : 128;
  if (prefix !== undefined && (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max)) return `"${s}": prefix length must be 0-${max}`;
  return undefined;
}

/** The forms `dns.Resolver#setServers` takes: ip, ipv4:port, [ipv6], [ipv6]:port. */
function dnsServerProblem(s: string): string | undefined {
  if (isIP(s) !== 0) return undefined;
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  const ok = m !== null && isIP(m[1]!) === (s.startsWith('[') ? 6 : 4) && (m[2] === undefined || (Number(m[2]) >= 1 && Number(m[2]) <= 65535));
  return ok ? undefined : `"${s}" is not "ip" or "ip:port" ("[ipv6]:port" for IPv6)`;
}

function fileProblem(p: string): string | undefined {
  try {
    if (!fs.statSync(p).isFile()) return `${p} is not a regular file`;
    fs.accessSync(p, fs.constants.R_OK);
    return undefined;
  } catch (e) {
    return `cannot read ${p}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
  }
}

/**
 * The configured certificate and key, read and parsed as the server will
 * use them: PEM (what tls.createSecureContext takes), a key without a
 * passphrase, and the key belonging to the certificate. Caught here, none
 * of these can stop a start or fail the first STARTTLS instead.
 */
function tlsPairProblems(certFile: string, keyFile: string): { key: 'cert' | 'key'; message: string }[] {
  const problems: { key: 'cert' | 'key'; message: string }[] = [];
  let certText: string;
  let keyText: string;
  try {
    certText = fs.readFileSync(certFile, 'utf8');
    keyText = fs.readFileSync(keyFile, 'utf8');
  } catch (e) {
    return [{ key: 'cert', message: `cannot read the TLS files: ${(e as Error).message}` }];
  }
  let cert: X509Certificate | undefined;
  if (!certText.includes('-----BEGIN CERTIFICATE-----')) {
    problems.push({ key: 'cert', message: `${certFile} is not a PEM certificate (no "-----BEGIN CERTIFICATE-----" line); a DER file converts with: openssl x509 -inform der -in ${certFile} -out cert.pem` });
  } else {
    try {
      cert = new X509Certificate(certText);
    } catch (e) {
      problems.push({ key: 'cert', message: `${certFile} is not a valid certificate: ${(e as Error).message}` });
    }
  }
  let key: KeyObject | undefined;
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(keyText)) {
    problems.push({ key: 'key', message: `${keyFile} is not a PEM private key (no "-----BEGIN … PRIVATE KEY-----" line)` });
  } else if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(keyText)) {
    problems.push({ key: 'key', message: `${keyFile} is protected by a passphrase, which Tern cannot enter; remove it with: openssl pkey -in ${keyFile} -out key.pem` });
  } else {
    try {
      key = createPrivateKey(keyText);
    } catch (e) {
      problems.push({ key: 'key', message: `${keyFile} is not a valid private key: ${(e as Error).message}` });
    }
  }
  if (cert === undefined || key === undefined) return problems;
  if (!cert.checkPrivateKey(key)) {
    problems.push({ key: 'key', message: `${keyFile} is not the private key of the certificate in ${certFile} (subject ${cert.subject.replace(/\n/g, ', ')})` });
    return problems;
  }
  try {
    // What the listeners will do with the pair; anything the parsers above let through shows here.
    createSecureContext({ cert: certText, key: keyText });
  } catch (e) {
    problems.push({ key: 'cert', message: `${certFile} and ${keyFile} are not usable for TLS: ${(e as Error).message}` });
  }
  return problems;
}

/**
 * The data directory must exist or be creatable, and be writable, by the
 * user running this. Nothing is created here (`config check` must not
 * change the system): a missing directory is judged by its nearest
 * existing parent, where the server would create it.
 */
function dataDirProblem(dataDir: string): string | undefined {
  const uid = typeof process.getuid === 'function' ? ` (uid ${process.getuid()})` : '';
  let at = dataDir;
  for (;;) {
    let st: fs.Stats;
    try {
      st = fs.statSync(at);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const parent = path.dirname(at);
      // ENOTDIR: something on the way is a file; the walk up finds and names it.
      if ((code === 'ENOENT' || code === 'ENOTDIR') && parent !== at) {
        at = parent;
        continue;
      }
      return `cannot use ${dataDir}: ${code ?? (e as Error).message} on ${at}`;
    }
    const which = at === dataDir ? '' : `cannot create ${dataDir}: `;
    if (!st.isDirectory()) return `${which}${at} is not a directory`;
    try {
      fs.accessSync(at, fs.constants.W_OK | fs.constants.X_OK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const fix = code === 'EROFS' ? 'it is on a read-only file system' : `give this user${uid} write access (chown or chmod), or choose another dataDir`;
      return `${which}${at} is not writable: ${code}; ${fix}`;
    }
    return undefined;
  }
}

type Report = (segs: Seg[], message: string) => void;

function resolve(raw: Record<string, unknown>, dir: string, report: Report): TernConfig {
  const obj = (v: unknown): Record<string, unknown> => (isObject(v) ? v : {});
  const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
  const int = (v: unknown, fallback: number): number => (typeof v === 'number' ? v : fallback);
  // Wrong types were already reported by the schema, so they quietly fall back here.
  const duration = (v: unknown, segs: Seg[], fallback: number, min = 1): number => {
    if (typeof v !== 'string' && typeof v !== 'number') return fallback;
    try {
      const ms = parseDuration(v);
      if (ms < min) report(segs, 'must be longer than 0');
      return ms;
    } catch (e) {
      report(segs, (e as Error).message);
      return fallback;
    }
  };

  let hostname = os.hostname();
  if (typeof raw.hostname === 'string') {
    hostname = raw.hostname.trim().replace(/\.$/, '');
    const p = domainProblem(hostname.toLowerCase());
    if (p !== undefined) report(['hostname'], p);
  }
  const dataDir = typeof raw.dataDir === 'string' ? path.resolve(dir, raw.dataDir) : path.resolve('data');
  const dataDirError = dataDirProblem(dataDir);
  if (dataDirError !== undefined) report(['dataDir'], dataDirError);

  let listeners: ListenerConfig[] = DEFAULT_LISTENERS.map((l) => ({ ...l }));
  if (raw.listeners !== undefined) {
    const seen = new Map<string, number>();
    listeners = list(raw.listeners).map((v, i) => {
      const l = obj(v);
      const address = typeof l.address === 'string' ? l.address : '';
      const port = int(l.port, 0);
      if (typeof l.address === 'string' && isIP(address) === 0) report(['listeners', i, 'address'], `"${address}" is not an IP address`);
      if (Number.isInteger(l.port) && (port < 0 || port > 65535)) report(['listeners', i, 'port'], 'must be 0-65535');
      // Port 0 is a fresh ephemeral port each time, so it never collides.
      const key = `${address}:${port}`;
      if (port !== 0 && seen.has(key)) report(['listeners', i], `duplicate of listeners[${seen.get(key)}] (${key})`);
      else seen.set(key, i);
      return { role: l.role as ListenerRole, address, port, ...(typeof l.proxyProtocol === 'boolean' ? { proxyProtocol: l.proxyProtocol } : {}) };
    });
  }

  let tls: TernConfig['tls'];
  if (isObject(raw.tls)) {
    const t = raw.tls;
    const cert = typeof t.cert === 'string' ? path.resolve(dir, t.cert) : '';
    const key = typeof t.key === 'string' ? path.resolve(dir, t.key) : '';
    let readable = cert !== '' && key !== '';
    for (const [name, p] of [['cert', cert], ['key', key]] as const) {
      const problem = p === '' ? undefined : fileProblem(p);
      if (problem !== undefined) report(['tls', name], problem);
      readable &&= problem === undefined;
    }
    if (readable) for (const p of tlsPairProblems(cert, key)) report(['tls', p.key], p.message);
    tls = { cert, key };
  }

  const domains = raw.domains === undefined ? defaultDomains(hostname) : resolveDomains(list(raw.domains), report);

  const trustedNetworks = list(raw.trustedNetworks).flatMap((v, i) => {
    if (typeof v !== 'string') return [];
    const p = cidrProblem(v.trim());
    if (p !== undefined) report(['trustedNetworks', i], p);
    return [v.trim()];
  });

  const l = obj(raw.limits);
  const t = obj(l.timeouts);
  const dt = DEFAULT_LIMITS.timeouts;
  let messageSize = DEFAULT_LIMITS.messageSize;
  if (typeof l.messageSize === 'string' || typeof l.messageSize === 'number') {
    try {
      messageSize = parseSize(l.messageSize);
      if (messageSize < 1) report(['limits', 'messageSize'], 'must be at least 1 byte');
    } catch (e) {
      report(['limits', 'messageSize'], (e as Error).message);
    }
  }
  const limits = {
    messageSize,
    recipients: int(l.recipients, DEFAULT_LIMITS.recipients),
    connections: int(l.connections, DEFAULT_LIMITS.connections),
    connectionsPerIp: int(l.connectionsPerIp, DEFAULT_LIMITS.connectionsPerIp),
    lineLength: int(l.lineLength, DEFAULT_LIMITS.lineLength),
    commandLineLength: int(l.commandLineLength, DEFAULT_LIMITS.commandLineLength),
    errors: int(l.errors, DEFAULT_LIMITS.errors),
    maxReceived: int(l.maxReceived, DEFAULT_LIMITS.maxReceived),
    minDataRate: int(l.minDataRate, DEFAULT_LIMITS.minDataRate),
    timeouts: {
      command: duration(t.command, ['limits', 'timeouts', 'command'], dt.command),
      data: duration(t.data, ['limits', 'timeouts', 'data'], dt.data),
      greeting: duration(t.greeting, ['limits', 'timeouts', 'greeting'], dt.greeting, 0),
      evictAfter: duration(t.evictAfter, ['limits', 'timeouts', 'evictAfter'], dt.evictAfter),
    },
  };

  const q = obj(raw.queue);
  const queue = {
    retrySchedule: q.retrySchedule === undefined
      ? [...DEFAULT_QUEUE.retrySchedule]
      : list(q.retrySchedule).map((v, i) => duration(v, ['queue', 'retrySchedule', i], 0)),
    maxLifetime: duration(q.maxLifetime, ['queue', 'maxLifetime'], DEFAULT_QUEUE.maxLifetime),
    delayWarning: duration(q.delayWarning, ['queue', 'delayWarning'], DEFAULT_QUEUE.delayWarning, 0),
  };

  const d = obj(raw.dns);
  const servers = list(d.servers).flatMap((v, i) => {
    if (typeof v !== 'string') return [];
    const p = dnsServerProblem(v);
    if (p !== undefined) report(['dns', 'servers', i], p);
    return [v];
  });
  const dns = { servers, timeout: duration(d.timeout, ['dns', 'timeout'], DEFAULT_DNS.timeout) };

  const o = obj(raw.outbound);
  const od = defaultOutbound(hostname);
  const ot = obj(o.timeouts);
  const sh = o.smarthost === undefined ? undefined : obj(o.smarthost);
  const shAuth = sh?.auth === undefined ? undefined : obj(sh.auth);
  const outbound: OutboundConfig = {
    port: int(o.port, od.port),
    heloName: typeof o.heloName === 'string' ? o.heloName : od.heloName,
    concurrency: int(o.concurrency, od.concurrency),
    perDestination: int(o.perDestination, od.perDestination),
    maxMxHosts: int(o.maxMxHosts, od.maxMxHosts),
    tls: (['opportunistic', 'required', 'none'] as const).find((v) => v === o.tls) ?? od.tls,
    plaintextFallback: typeof o.plaintextFallback === 'boolean' ? o.plaintextFallback : od.plaintextFallback,
    timeouts: {
      connect: duration(ot.connect, ['outbound', 'timeouts', 'connect'], od.timeouts.connect),
      command: duration(ot.command, ['outbound', 'timeouts', 'command'], od.timeouts.command),
      dataBlock: duration(ot.dataBlock, ['outbound', 'timeouts', 'dataBlock'], od.timeouts.dataBlock),
      dataEnd: duration(ot.dataEnd, ['outbound', 'timeouts', 'dataEnd'], od.timeouts.dataEnd),
    },
    connectionReuse: duration(o.connectionReuse, ['outbound', 'connectionReuse'], od.connectionReuse, 0),
    smarthost: sh && typeof sh.host === 'string'
      ? {
          host: sh.host,
          port: int(sh.port, sh.tls === 'implicit' ? 465 : 587),
          tls: (['starttls', 'implicit', 'none'] as const).find((v) => v === sh.tls) ?? 'starttls',
          auth: shAuth && typeof shAuth.user === 'string' && typeof shAuth.password === 'string' ? { user: shAuth.user, password: shAuth.password } : undefined,
          domains: sh.domains === undefined ? undefined : list(sh.domains).filter((v): v is string => typeof v === 'string').map(normDomain),
        }
      : undefined,
  };
  if (outbound.smarthost?.auth && outbound.smarthost.tls === 'none') {
    report(['outbound', 'smarthost', 'auth'], 'refusing to send a password without TLS (set tls: starttls or implicit)');
  }

  const users: ConfigUser[] = list(raw.users).flatMap((u) => {
    const r = obj(u);
    if (typeof r.address !== 'string' || typeof r.passwordHash !== 'string') return [];
    return [{
      address: r.address.toLowerCase(),
      passwordHash: r.passwordHash,
      sendAs: list(r.sendAs).filter((v): v is string => typeof v === 'string').map((v) => v.toLowerCase()),
      messagesPerHour: typeof r.messagesPerHour === 'number' ? r.messagesPerHour : undefined,
      recipientsPerMessage: typeof r.recipientsPerMessage === 'number' ? r.recipientsPerMessage : undefined,
    }];
  });
  const sub = obj(raw.submission);
  const submission = {
    messagesPerHour: int(sub.messagesPerHour, DEFAULT_SUBMISSION.messagesPerHour),
    recipientsPerMessage: int(sub.recipientsPerMessage, DEFAULT_SUBMISSION.recipientsPerMessage),
    authOnSmtp: typeof sub.authOnSmtp === 'boolean' ? sub.authOnSmtp : DEFAULT_SUBMISSION.authOnSmtp,
  };

  const edge = resolveEdge(obj(raw.edge), listeners, duration, report);
  // Plugins are code: relative to the config file, and they must exist now rather than at the first connection.
  const plugins = list(raw.plugins).flatMap((v, i) => {
    if (typeof v !== 'string' || v === '') return [];
    const file = path.resolve(dir, v);
    const problem = fileProblem(file);
    if (problem !== undefined) report(['plugins', i], problem);
    return [file];
  });

  const level = obj(raw.log).level;
  const log = { level: LEVELS.includes(level as LogLevel) ? (level as LogLevel) : DEFAULT_LOG.level };

  const inbound = resolveInbound(obj(raw.inbound), hostname, domains, duration, report);

  return { hostname, dataDir, listeners, ...(tls === undefined ? {} : { tls }), domains, trustedNetworks, limits, queue, dns, outbound, users, submission, log, edge, plugins, inbound };
}

function resolveInbound(
  r: Record<string, unknown>,
  hostname: string,
  domains: DomainConfig[],
  duration: (v: unknown, segs: Seg[], fallback: number, min?: number) => number,
  report: Report,
): InboundConfig {
  const obj = (v: unknown): Record<string, unknown> => (isObject(v) ? v : {});
  const d = defaultInbound(hostname);
  const onFail = (v: unknown, fallback: InboundDomainPolicy['spf']['onFail']) => (['mark', 'quarantine', 'reject'] as const).find((x) => x === v) ?? fallback;
  const enforce = (v: unknown, fallback: boolean) => (typeof v === 'boolean' ? v : fallback);
  let authservId = d.authservId;
  if (typeof r.authservId === 'string') {
    // RFC 8601 §2.5: normally the host name; a name keeps it a token our filter can compare.
    authservId = r.authservId.trim().replace(/\.$/, '');
    const p = domainProblem(authservId.toLowerCase());
    if (p !== undefined) report(['inbound', 'authservId'], p);
  }
  const spf = { onFail: onFail(obj(r.spf).onFail, d.spf.onFail) };
  const dmarc = { enforce: enforce(obj(r.dmarc).enforce, d.dmarc.enforce) };
  const trustedForwarders = (Array.isArray(r.trustedForwarders) ? r.trustedForwarders : []).flatMap((v, i) => {
    if (typeof v !== 'string') return [];
    const p = cidrProblem(v.trim());
    if (p !== undefined) report(['inbound', 'trustedForwarders', i], p);
    return [v.trim()];
  });
  const local = new Set(domains.map((x) => x.name));
  // fromEntries defines own properties, so no key can reach the prototype.
  const perDomain: Record<string, InboundDomainPolicy> = Object.fromEntries(Object.entries(obj(r.domains)).map(([key, v]) => {
    const name = normDomain(key);
    // An override for a domain we do not receive mail for would never apply: surely a typo.
    const p = domainProblem(name) ?? (local.has(name) ? undefined : `${name} is not one of the configured domains`);
    if (p !== undefined) report(['inbound', 'domains', key], p);
    return [name, { spf: { onFail: onFail(obj(obj(v).spf).onFail, spf.onFail) }, dmarc: { enforce: enforce(obj(obj(v).dmarc).enforce, dmarc.enforce) } }];
  }));
  return {
    enabled: typeof r.enabled === 'boolean' ? r.enabled : d.enabled,
    authservId,
    timeout: duration(r.timeout, ['inbound', 'timeout'], d.timeout),
    spf,
    dmarc,
    trustedForwarders,
    domains: perDomain,
  };
}

type Duration = (v: unknown, segs: Seg[], fallback: number, min?: number) => number;

function resolveEdge(e: Record<string, unknown>, listeners: ListenerConfig[], duration: Duration, report: Report): EdgeConfig {
  const obj = (v: unknown): Record<string, unknown> => (isObject(v) ? v : {});
  const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
  const int = (v: unknown, fallback: number): number => (typeof v === 'number' ? v : fallback);
  const d = DEFAULT_EDGE;
  const bl = obj(e.dnsbl);
  const zones = list(bl.zones).flatMap((v, i) => {
    if (typeof v !== 'string') return [];
    const zone = normDomain(v);
    const p = domainProblem(zone);
    if (p !== undefined) report(['edge', 'dnsbl', 'zones', i], p);
    return [zone];
  });
  const gl = obj(e.greylist);
  const greylist = {
    enabled: typeof gl.enabled === 'boolean' ? gl.enabled : d.greylist.enabled,
    delay: duration(gl.delay, ['edge', 'greylist', 'delay'], d.greylist.delay, 0),
    expire: duration(gl.expire, ['edge', 'greylist', 'expire'], d.greylist.expire),
    keep: duration(gl.keep, ['edge', 'greylist', 'keep'], d.greylist.keep),
  };
  if (greylist.expire <= greylist.delay) report(['edge', 'greylist', 'expire'], 'must be longer than edge.greylist.delay, or no retry could ever pass');
  const rate = obj(e.rate);
  const proxyFrom = list(e.proxyFrom).flatMap((v, i) => {
    if (typeof v !== 'string') return [];
    const p = cidrProblem(v.trim());
    if (p !== undefined) report(['edge', 'proxyFrom', i], p);
    return [v.trim()];
  });
  listeners.forEach((l, i) => {
    // Without trusted proxies every connection would be refused: surely not what was meant.
    if (l.proxyProtocol && proxyFrom.length === 0) report(['listeners', i, 'proxyProtocol'], 'needs the proxies\' addresses in edge.proxyFrom');
  });
  return {
    dnsbl: { zones, cacheTtl: duration(bl.cacheTtl, ['edge', 'dnsbl', 'cacheTtl'], d.dnsbl.cacheTtl, 0) },
    greylist,
    rate: {
      connectionsPerMinute: int(rate.connectionsPerMinute, d.rate.connectionsPerMinute),
      messagesPerHour: int(rate.messagesPerHour, d.rate.messagesPerHour),
    },
    proxyFrom,
    proxyTimeout: duration(e.proxyTimeout, ['edge', 'proxyTimeout'], d.proxyTimeout),
  };
}

interface DomainNames { mailboxes: Set<string> | '*'; aliases: Set<string> }

/**
 * Two passes: first every domain's mailboxes and alias names, then the alias
 * and catch-all targets, which may point at another configured domain.
 */
function resolveDomains(raw: unknown[], report: Report): DomainConfig[] {
  const known = new Map<string, DomainNames>();
  const pending: { at: Seg[]; d: Record<string, unknown>; name: string; mailboxes: string[] | '*' }[] = [];

  raw.forEach((v, i) => {
    const at: Seg[] = ['domains', i];
    const d = isObject(v) ? v : {};
    if (typeof d.name !== 'string') return;
    const name = normDomain(d.name);
    const p = domainProblem(name);
    if (p !== undefined) report([...at, 'name'], p);
    if (known.has(name)) return report([...at, 'name'], `duplicate domain ${name}`);

    let mailboxes: string[] | '*' = '*';
    if (typeof d.mailboxes === 'string' && d.mailboxes !== '*') report([...at, 'mailboxes'], `must be '*' or a list of local parts`);
    if (Array.isArray(d.mailboxes)) {
      const boxes: string[] = [];
      d.mailboxes.forEach((m, j) => {
        if (typeof m !== 'string') return;
        const lp = m.trim().toLowerCase();
        const problem = localPartProblem(lp) ?? (boxes.includes(lp) ? `duplicate mailbox "${lp}"` : undefined);
        if (problem !== undefined) report([...at, 'mailboxes', j], problem);
        else boxes.push(lp);
      });
      mailboxes = boxes;
    }
    const aliases = new Set<string>();
    for (const k of Object.keys(isObject(d.aliases) ? d.aliases : {})) {
      const key = k.trim().toLowerCase();
      const problem = localPartProblem(key)
        ?? (aliases.has(key) ? `duplicate alias "${key}"` : undefined)
        ?? (mailboxes !== '*' && mailboxes.includes(key) ? `"${key}" is both a mailbox and an alias` : undefined);
      if (problem !== undefined) report([...at, 'aliases', k], problem);
      aliases.add(key);
    }
    known.set(name, { mailboxes: mailboxes === '*' ? '*' : new Set(mailboxes), aliases });
    pending.push({ at, d, name, mailboxes });
  });

  // A local-part target lives in its own domain; a full address at one of our
  // domains must exist there too (unless that domain takes every local part).
  const target = (t: string, own: string, segs: Seg[]): string => {
    const s = t.trim();
    const at = s.lastIndexOf('@');
    const domain = at < 0 ? own : normDomain(s.slice(at + 1));
    const local = known.get(domain);
    const lp = at < 0 || local !== undefined ? s.slice(0, at < 0 ? undefined : at).toLowerCase() : s.slice(0, at);
    const problem = localPartProblem(lp)
      ?? (at < 0 ? undefined : domainProblem(domain))
      ?? (local !== undefined && local.mailboxes !== '*' && !local.mailboxes.has(lp) && !local.aliases.has(lp)
        ? `"${lp}" is not a mailbox or alias of ${domain}`
        : undefined);
    if (problem !== undefined) report(segs, problem);
    return at < 0 ? lp : `${lp}@${domain}`;
  };

  const resolved = pending.map(({ at, d, name, mailboxes }) => {
    // fromEntries defines own properties, so even an alias named "__proto__" is safe.
    const aliases = Object.fromEntries(Object.entries(isObject(d.aliases) ? d.aliases : {}).map(([k, v]) => {
      const segs: Seg[] = [...at, 'aliases', k];
      const targets = typeof v === 'string' ? [target(v, name, segs)]
        : Array.isArray(v) ? v.flatMap((x, j) => (typeof x === 'string' ? [target(x, name, [...segs, j])] : [])) : [];
      return [k.trim().toLowerCase(), targets];
    }));
    const catchAll = typeof d.catchAll === 'string' ? target(d.catchAll, name, [...at, 'catchAll']) : undefined;
    return { name, mailboxes, aliases, ...(catchAll === undefined ? {} : { catchAll }), ...(d.delivery === 'discard' ? { delivery: 'discard' as const } : {}) };
  });
  for (const p of aliasChainProblems(resolved)) report([...pending[p.domain]!.at, p.key], p.message);
  return resolved;
}

/**
 * Alias loops and chains too deep to expand, found here so that no RCPT
 * ever meets them (the Directory would answer 451 to every one). The walk
 * follows targets as Directory#resolve does: an alias name first (also
 * "name+tag", then "name"), then a mailbox; an address outside our domains
 * ends a chain. A target that names nobody (and so would fall to the
 * catch-all) is reported above already, so it ends the walk too; a
 * catch-all is walked as a chain of its own, one level deeper. Depth is counted as the
 * Directory counts it, against the same MAX_ALIAS_DEPTH: the RCPT's own
 * name is level 0, each alias or catch-all target one level further, and
 * only local names are checked.
 */
function aliasChainProblems(domains: DomainConfig[]): { domain: number; key: 'aliases' | 'catchAll'; message: string }[] {
  const byName = new Map(domains.map((d, i) => [d.name, { d, i }]));
  // A node is "local@domain" for an alias, "*@domain" for a catch-all.
  const targetsOf = (node: string): string[] => {
    const at = node.lastIndexOf('@');
    const d = byName.get(node.slice(at + 1))!.d;
    const local = node.slice(0, at);
    const targets = local === '*' ? [d.catchAll!] : Object.hasOwn(d.aliases, local) ? d.aliases[local]! : [];
    return targets.map((t) => (t.includes('@') ? t : `${t}@${d.name}`));
  };
  /** Where an address leads: an alias or catch-all (expansion goes on), a local mailbox, or a remote address. */
  const nodeOf = (address: string): string | 'local' | 'remote' => {
    const at = address.lastIndexOf('@');
    const domain = byName.get(address.slice(at + 1).toLowerCase())?.d;
    if (domain === undefined) return 'remote';
    const local = address.slice(0, at).toLowerCase();
    const plus = local.indexOf(RECIPIENT_DELIMITER);
    for (const candidate of plus > 0 ? [local, local.slice(0, plus)] : [local]) {
      if (Object.hasOwn(domain.aliases, candidate)) return `${candidate}@${domain.name}`;
      if (domain.mailboxes !== '*' && domain.mailboxes.includes(candidate)) return 'local';
    }
    return 'local';
  };

  const problems: { domain: number; key: 'aliases' | 'catchAll'; message: string }[] = [];
  /** The deepest level a node's expansion reaches, the node being level 0; Infinity on a loop. */
  const levels = new Map<string, number>();
  const stack: string[] = [];
  const show = (node: string, own: string): string => {
    const at = node.lastIndexOf('@');
    const [local, domain] = [node.slice(0, at), node.slice(at + 1)];
    const name = local === '*' ? `catchAll of ${domain}` : local;
    return domain === own ? name : `${name}@${domain}`;
  };
  const levelOf = (next: string): number => (next === 'remote' ? 0 : next === 'local' ? 1 : 1 + visit(next));
  const visit = (node: string): number => {
    const known = levels.get(node);
    if (known !== undefined) return known;
    const onStack = stack.indexOf(node);
    if (onStack >= 0) {
      const cycle = [...stack.slice(onStack), node];
      const own = node.slice(node.lastIndexOf('@') + 1);
      problems.push({
        domain: byName.get(own)!.i,
        key: 'aliases',
        message: `${cycle.map((n) => show(n, own)).join(' -> ')} is a loop: mail to it could never be delivered; point one of them at a mailbox`,
      });
      return Infinity;
    }
    stack.push(node);
    const deepest = Math.max(0, ...targetsOf(node).map((t) => levelOf(nodeOf(t))));
    stack.pop();
    // Settled even when on a loop (Infinity), so each loop is reported once.
    levels.set(node, deepest);
    return deepest;
  };
  const nodes = domains.flatMap(({ name, aliases, catchAll }) => [...Object.keys(aliases).map((a) => `${a}@${name}`), ...(catchAll === undefined ? [] : [`*@${name}`])]);
  for (const node of nodes) visit(node);
  const tooDeep = nodes.filter((n) => levels.get(n)! !== Infinity && levels.get(n)! > MAX_ALIAS_DEPTH);
  // One report per chain, at its head: a node another too-deep node leads to is part of that one's chain.
  const inner = new Set(tooDeep.flatMap((n) => targetsOf(n).map(nodeOf)));
  for (const node of tooDeep.filter((n) => !inner.has(n))) {
    const chain = [node];
    for (let at = node; ;) {
      const next = targetsOf(at).map(nodeOf).find((n) => n !== 'local' && n !== 'remote' && levels.get(n) === levels.get(at)! - 1);
      if (next === undefined) break;
      chain.push(next);
      at = next;
    }
    const own = node.slice(node.lastIndexOf('@') + 1);
    problems.push({
      domain: byName.get(own)!.i,
      key: node.startsWith('*@') ? 'catchAll' : 'aliases',
      message: `${chain.map((n) => show(n, own)).join(' -> ')} expands ${levels.get(node)} levels deep, more than the ${MAX_ALIAS_DEPTH} allowed; point the first of them nearer the mailbox`,
    });
  }
  return problems;
}
