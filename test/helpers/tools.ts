// The system programs some tests drive (swaks, Python, dkimpy, the OpenSPF
// suite, Postfix, Chromium). Where one is missing, those tests skip with a reason
// that names the Debian package, instead of failing with an obscure error;
// `sudo scripts/install-test-deps.sh` installs them all.
//
// Under CI (CI set, and not "false" or "0") a missing tool is an error, not a
// skip: .ci/run installs everything, so a skip there means a test silently
// stopped running. Each guard throws when it is evaluated (at the top of a
// test file or in its test options), which fails the test file.
//
// Use: test('…', { skip: requireTool('swaks', 'swaks') }, …). Each helper
// returns the skip reason, or false when the tool is there (node:test runs
// the test when `skip` is false).

import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

const INSTALL = 'sudo scripts/install-test-deps.sh';

/** True under CI, where a missing tool must fail rather than skip. */
export function skipsForbidden(env: NodeJS.ProcessEnv = process.env): boolean {
  const ci = (env.CI ?? '').trim().toLowerCase();
  return ci !== '' && ci !== 'false' && ci !== '0';
}

/** The skip reason, or (under CI) an error; false when nothing is missing. */
function missing(what: string, pkg: string): string {
  const reason = `${what} missing (Debian package ${pkg}; ${INSTALL} installs every test dependency)`;
  if (skipsForbidden()) throw new Error(`${reason}; CI is set, where a skipped test is a failure`);
  return reason;
}

const cache = new Map<string, string | false>();
function cached(key: string, check: () => string | false): string | false {
  let v = cache.get(key);
  if (v === undefined) cache.set(key, (v = check()));
  return v;
}

/** An executable: an absolute path, or a name looked up in PATH (as spawn does). */
export function findExecutable(command: string, pathVar = process.env.PATH ?? ''): string | null {
  const candidates = command.includes('/') ? [command] : pathVar.split(path.delimiter).filter(Boolean).map((d) => path.join(d, command));
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (fs.statSync(c).isFile()) return c;
    } catch {
      // not here: the next directory of PATH
    }
  }
  return null;
}

/** `command` runnable (in PATH or at an absolute path); `pkg` provides it. */
export function requireTool(command: string, pkg: string): string | false {
  return cached(`tool ${command}`, () => (findExecutable(command) ? false : missing(command, pkg)));
}

/** A data file some package installs (e.g. the OpenSPF suite of python3-spf). */
export function requireFile(file: string, pkg: string): string | false {
  return cached(`file ${file}`, () => (fs.existsSync(file) ? false : missing(file, pkg)));
}

/** A Perl module (swaks's TLS needs Net::SSLeay). */
export function requirePerlModule(module: string, pkg: string): string | false {
  return cached(`perl ${module}`, () => {
    const perl = requireTool('perl', 'perl');
    if (perl) return perl;
    return spawnSync('perl', [`-M${module}`, '-e', '1'], { stdio: 'ignore' }).status === 0 ? false : missing(`Perl module ${module}`, pkg);
  });
}

/**
 * A module of Python 3 (`python` is the interpreter: Debian's python3-* packages
 * belong to /usr/bin/python3, not to a python3 earlier in PATH such as pyenv's).
 */
export function requirePythonModule(python: string, module: string, pkg: string): string | false {
  return cached(`python ${python} ${module}`, () => {
    const interpreter = requireTool(python, 'python3');
    if (interpreter) return interpreter;
    return spawnSync(python, ['-c', `import ${module}`], { stdio: 'ignore' }).status === 0 ? false : missing(`Python module ${module} (for ${python})`, pkg);
  });
}

/**
 * Postfix as a peer: the Debian binaries and the postfix user, and root (its
 * master must start as root). Not being root is not a missing tool, but under
 * CI (which runs as root) it still fails: the Postfix tests must run there.
 */
export function requirePostfix(available: () => boolean): string | false {
  return cached('postfix', () => {
    if (available()) return false;
    if (process.getuid?.() !== 0) {
      const reason = 'needs root (Postfix\'s master starts as root) and the Debian package postfix';
      if (skipsForbidden()) throw new Error(`${reason}; CI is set, where a skipped test is a failure`);
      return reason;
    }
    return missing('Postfix (/usr/lib/postfix/sbin and the postfix user)', 'postfix');
  });
}

/** Debian's Chromium, which the dashboard's browser tests drive (puppeteer-core brings no browser). */
export const CHROMIUM = '/usr/bin/chromium';

/** Chromium at CHROMIUM, for test/browser/. */
export function requireChromium(): string | false {
  return requireTool(CHROMIUM, 'chromium');
}

/** Debian's Dovecot: the master and its LMTP service (dovecot-core, dovecot-lmtpd). */
export const DOVECOT = '/usr/sbin/dovecot';
export const DOVECOT_LMTP = '/usr/lib/dovecot/lmtp';

/**
 * Dovecot as an LMTP server, for the LMTP delivery test: both binaries, and
 * root (its master starts as root and drops to its service users). Like
 * Postfix, not being root skips locally and fails under CI.
 */
export function requireDovecot(): string | false {
  return cached('dovecot', () => {
    const core = requireTool(DOVECOT, 'dovecot-core');
    if (core) return core;
    const lmtp = requireTool(DOVECOT_LMTP, 'dovecot-lmtpd');
    if (lmtp) return lmtp;
    if (process.getuid?.() !== 0) {
      const reason = 'needs root (Dovecot\'s master starts as root)';
      if (skipsForbidden()) throw new Error(`${reason}; CI is set, where a skipped test is a failure`);
      return reason;
    }
    return false;
  });
}
