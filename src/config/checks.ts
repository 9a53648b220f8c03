// Meaning checks of single values: each returns the problem to report, or
// undefined. Shared by the declaration (schema.ts) and the checks that
// look at several keys together (domains.ts).

import fs from 'node:fs';
import path from 'node:path';
import { isIP } from 'node:net';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { createSecureContext } from 'node:tls';

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export const normDomain = (d: string): string => d.trim().toLowerCase().replace(/\.$/, '');

/** RFC 1035 §2.3.1 labels (digits first allowed, RFC 1123 §2.1), at most 255 octets on the wire = 253 characters. */
export function domainProblem(name: string): string | undefined {
  if (name === '') return 'domain name must not be empty';
  if (name.length > 253) return 'domain name is longer than 253 characters';
  if (isIP(name) !== 0) return 'must be a domain name, not an IP address';
  const bad = name.split('.').find((l) => !LABEL.test(l));
  if (bad !== undefined) {
    return `invalid domain name "${name}": label "${bad}" must be 1-63 letters, digits or inner hyphens (IDNs in xn-- form)`;
  }
  return undefined;
}

export function localPartProblem(lp: string): string | undefined {
  if (lp === '') return 'local part must not be empty';
  // RFC 5321 §4.5.3.1.1.
  if (Buffer.byteLength(lp) > 64) return `local part "${lp}" is longer than 64 octets`;
  if (/[\s@<>\x00-\x1f\x7f]/.test(lp)) return `local part "${lp}" must not contain spaces, control characters, "@", "<" or ">"`;
  return undefined;
}

export function cidrProblem(s: string): string | undefined {
  const [addr = '', prefix, extra] = s.split('/');
  const family = isIP(addr);
  if (family === 0 || extra !== undefined) return `"${s}" is not an IP address or CIDR`;
  const max = family === 4 ? 32 : 128;
  if (prefix !== undefined && (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max)) return `"${s}": prefix length must be 0-${max}`;
  return undefined;
}

/** The forms `dns.Resolver#setServers` takes: ip, ipv4:port, [ipv6], [ipv6]:port. */
export function dnsServerProblem(s: string): string | undefined {
  if (isIP(s) !== 0) return undefined;
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  const ok = m !== null && isIP(m[1]!) === (s.startsWith('[') ? 6 : 4) && (m[2] === undefined || (Number(m[2]) >= 1 && Number(m[2]) <= 65535));
  return ok ? undefined : `"${s}" is not "ip" or "ip:port" ("[ipv6]:port" for IPv6)`;
}

export function fileProblem(p: string): string | undefined {
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
export function tlsPairProblems(certFile: string, keyFile: string): { key: 'cert' | 'key'; message: string }[] {
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
export function dataDirProblem(dataDir: string): string | undefined {
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
