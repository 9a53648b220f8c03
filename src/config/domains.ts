// The checks of `domains:` that look at several keys at once: alias names
// against mailboxes, alias and catch-all targets against every configured
// domain, and alias chains (loops, depth) as the Directory will walk them.
// schema.ts declares the keys; these run as their `finish`.

import { MAX_ALIAS_DEPTH, RECIPIENT_DELIMITER } from '../policy/directory.ts';
import { domainProblem, localPartProblem, normDomain } from './checks.ts';
import type { Seg } from './declare.ts';

type Report = (at: Seg[], message: string) => void;

/** One `domains[]` entry as its keys resolve on their own: alias names and targets still as written. */
interface DeclaredDomain {
  name: string;
  mailboxes: string[] | '*';
  /** A single target as a string, several as a list, as written (problems are reported where the user wrote them). */
  aliases: Record<string, string | string[]>;
  catchAll?: string | undefined;
  /** maildir, discard, or an LMTP target (checked by deliveryProblem). */
  delivery: string;
}

/** `domains[].delivery` once checked (deliveryProblem). */
export type DeliveryMode = 'maildir' | 'discard' | `lmtp:${string}`;

/** What the alias-chain walk needs of a resolved domain. */
interface LinkedDomain { name: string; mailboxes: string[] | '*'; aliases: Record<string, string[]>; catchAll?: string | undefined }

/** Alias names: valid local parts, each once, none also a mailbox. */
export function aliasNameProblems<D extends DeclaredDomain>(d: D, at: Seg[], report: Report): D {
  if (d.name === '') return d; // no name (reported): its aliases would only add noise
  const aliases = new Set<string>();
  for (const k of Object.keys(d.aliases)) {
    const key = k.trim().toLowerCase();
    const problem = localPartProblem(key)
      ?? (aliases.has(key) ? `duplicate alias "${key}"` : undefined)
      ?? (d.mailboxes !== '*' && d.mailboxes.includes(key) ? `"${key}" is both a mailbox and an alias` : undefined);
    if (problem !== undefined) report([...at, 'aliases', k], problem);
    aliases.add(key);
  }
  return d;
}

interface DomainNames { mailboxes: Set<string> | '*'; aliases: Set<string> }

/**
 * Every domain once; alias and catch-all targets resolved against all of
 * them (a local-part target lives in its own domain; a full address at one
 * of our domains must exist there too, unless that domain takes every local
 * part); then loops and chains too deep. `maildir`, the default delivery,
 * is left out.
 */
export function linkDomains(declared: DeclaredDomain[], at: Seg[], report: Report) {
  const known = new Map<string, DomainNames>();
  const pending: { at: Seg[]; d: DeclaredDomain }[] = [];
  declared.forEach((d, i) => {
    const here = [...at, i];
    if (d.name === '') return; // reported already (missing or empty)
    if (known.has(d.name)) return report([...here, 'name'], `duplicate domain ${d.name}`);
    known.set(d.name, { mailboxes: d.mailboxes === '*' ? '*' : new Set(d.mailboxes), aliases: new Set(Object.keys(d.aliases).map((k) => k.trim().toLowerCase())) });
    pending.push({ at: here, d });
  });

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

  const resolved = pending.map(({ at, d }) => {
    const aliases = Object.fromEntries(Object.entries(d.aliases).map(([k, targets]) => {
      const segs: Seg[] = [...at, 'aliases', k];
      return [k.trim().toLowerCase(), typeof targets === 'string' ? [target(targets, d.name, segs)] : targets.map((x, j) => target(x, d.name, [...segs, j]))];
    }));
    const catchAll = d.catchAll === undefined ? undefined : target(d.catchAll, d.name, [...at, 'catchAll']);
    // The default (maildir) is left out; code may still name it explicitly.
    const delivery = d.delivery === 'maildir' ? undefined : (d.delivery as DeliveryMode); // checked by deliveryProblem
    return { name: d.name, mailboxes: d.mailboxes, aliases, ...(catchAll === undefined ? {} : { catchAll }), ...(delivery === undefined ? {} : { delivery }) };
  });
  for (const p of aliasChainProblems(resolved)) report([...pending[p.domain]!.at, p.key], p.message);
  return resolved;
}

/** `localhost` and the host's own name, like Postfix's default mydestination. */
export function defaultDomains(hostname: string): ReturnType<typeof linkDomains> {
  const own = normDomain(hostname);
  const names = own === 'localhost' || own === '' ? ['localhost'] : ['localhost', own];
  return linkDomains(names.map((name) => ({ name, mailboxes: '*', aliases: {}, delivery: 'maildir' })), [], () => {});
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
function aliasChainProblems(domains: LinkedDomain[]): { domain: number; key: 'aliases' | 'catchAll'; message: string }[] {
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

// ---------------------------------------------------------------------------
// `domains[].delivery`: maildir, discard, or an LMTP target (RFC 2033).

/** Where an LMTP agent listens: TCP (host, port, and credentials when it wants AUTH) or a unix socket (path). */
export type LmtpTarget = { host: string; port: number; auth?: { user: string; password: string } | undefined } | { path: string };

/** RFC 2033 has no assigned port; 24 is the one commonly used (Dovecot's examples, /etc/services "lmtp"). */
export const LMTP_DEFAULT_PORT = 24;

/**
 * `lmtp://HOST:PORT` (HOST an IP address or a name; `[v6]` for IPv6; PORT
 * defaults to 24), or `lmtp:/absolute/path` (a unix socket). Returns the
 * target, or a problem for `tern config check`.
 */
export function parseLmtpTarget(spec: string): LmtpTarget | { problem: string } {
  const usage = 'must be maildir, discard, lmtp://HOST:PORT or lmtp:/path/to/socket';
  if (spec.startsWith('lmtp://')) {
    // Credentials as URL userinfo (RFC 3986 §3.2.1, percent-encoded), for an agent that wants AUTH (RFC 4954) over TCP.
    const m = /^lmtp:\/\/(?:([^\s:@/]+):([^\s@/]*)@)?(\[[0-9a-fA-F:.]+\]|[^\s:/[\]@]+)(?::(\d{1,5}))?\/?$/.exec(spec);
    if (!m) return { problem: `"${redact(spec)}" ${usage}` };
    const port = m[4] === undefined ? LMTP_DEFAULT_PORT : Number(m[4]);
    if (port < 1 || port > 65535) return { problem: `"${redact(spec)}": port must be 1-65535` };
    const host = m[3]!.replace(/^\[|\]$/g, '');
    if (m[1] === undefined) return { host, port };
    try {
      return { host, port, auth: { user: decodeURIComponent(m[1]), password: decodeURIComponent(m[2]!) } };
    } catch {
      return { problem: `"${redact(spec)}": bad percent-encoding in the credentials` };
    }
  }
  if (spec.startsWith('lmtp:/')) {
    const p = spec.slice('lmtp:'.length);
    if (/[\0\s]/.test(p)) return { problem: `"${spec}": the socket path has white space` };
    return { path: p };
  }
  return { problem: `"${spec}" ${usage}` };
}

/** The spec without its password, for messages. */
function redact(spec: string): string {
  return spec.replace(/^(lmtp:\/\/[^:@/]*:)[^@/]*@/, '$1***@');
}

/** The problem with a `domains[].delivery` value, or undefined. */
export function deliveryProblem(v: string): string | undefined {
  if (v === 'maildir' || v === 'discard') return undefined;
  const t = parseLmtpTarget(v);
  return 'problem' in t ? t.problem : undefined;
}
