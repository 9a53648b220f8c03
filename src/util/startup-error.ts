// Start-up failures said in one line: what failed (which listener, which
// path), why, and what to do. `tern serve` prints this instead of a stack
// trace (issue 11, break 8): an operator at a terminal or reading a unit's
// journal needs the fix, not the frames.

import type { ListenerConfig } from '../config/types.ts';

/** An error whose message is already the whole story, for the operator. */
export class StartupError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StartupError';
  }
}

/** Ports below this need root or CAP_NET_BIND_SERVICE on Linux (net.ipv4.ip_unprivileged_port_start). */
const FIRST_UNPRIVILEGED_PORT = 1024;

/** Why listeners[index] could not bind, and what to do about it. */
export function listenError(l: ListenerConfig, index: number, e: unknown): StartupError {
  const code = (e as NodeJS.ErrnoException).code;
  const host = l.address.includes(':') ? `[${l.address}]` : l.address;
  const where = `listener ${l.role} ${host}:${l.port} (listeners[${index}])`;
  let why: string;
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      why = l.port < FIRST_UNPRIVILEGED_PORT
        ? `permission denied — ports below ${FIRST_UNPRIVILEGED_PORT} need root: run as root, or grant CAP_NET_BIND_SERVICE (setcap cap_net_bind_service=+ep on the node binary, or systemd AmbientCapabilities=CAP_NET_BIND_SERVICE)`
        : 'permission denied — a security policy (SELinux, AppArmor, a container) forbids binding it';
      break;
    case 'EADDRINUSE':
      why = `address already in use — another server (Postfix? another Tern?) holds it: stop that one (\`ss -ltnp 'sport = :${l.port}'\` shows which) or change listeners[${index}].port`;
      break;
    case 'EADDRNOTAVAIL':
      why = `this machine has no address ${l.address} — fix listeners[${index}].address (0.0.0.0 or :: listens on all)`;
      break;
    default:
      why = `cannot listen: ${errorText(e)}`;
  }
  return new StartupError(`${where}: ${why}`, { cause: e });
}

const FS_HINTS: Record<string, string> = {
  EACCES: 'permission denied — give the user running Tern (uid UID) write access (chown or chmod), or choose another dataDir',
  EPERM: 'operation not permitted — give the user running Tern (uid UID) write access, or choose another dataDir',
  ENOTDIR: 'a part of the path is a file, not a directory — fix dataDir',
  ENOENT: 'no such file or directory',
  EROFS: 'the file system is read-only — choose a dataDir on a writable one',
  ENOSPC: 'no space left on the device — free some, or choose a dataDir elsewhere',
  EDQUOT: 'disk quota exceeded — free some, or choose a dataDir elsewhere',
  EEXIST: 'it exists and is not what Tern expects there',
};

/** The one line `tern serve` prints for any error thrown while starting. */
export function describeStartupError(e: unknown): string {
  if (e instanceof StartupError) return e.message;
  const err = e as NodeJS.ErrnoException;
  if (typeof err?.code === 'string' && typeof err.path === 'string') {
    const uid = typeof process.getuid === 'function' ? String(process.getuid()) : '?';
    const hint = (FS_HINTS[err.code] ?? err.code).replace('UID', uid);
    const what = err.syscall === 'mkdir' ? 'cannot create' : err.syscall === 'open' ? 'cannot open' : `cannot ${err.syscall ?? 'use'}`;
    return `${what} ${err.path}: ${hint}`;
  }
  return `could not start: ${errorText(e)}`;
}

/** An error's message on one line (never its stack). */
function errorText(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.split('\n').map((s) => s.trim()).filter(Boolean).join('; ');
}
