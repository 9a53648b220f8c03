// Structured logs: one JSON object per line on stdout, so `jq` and log
// shippers read them without a grammar. Fields are flat and stable.

export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/**
 * Lines are batched and written once per event-loop turn: stdout to a file
 * is a synchronous write per call, which under load cost more CPU than the
 * SMTP dialogue itself. A batch is also flushed when it grows large and,
 * synchronously, when the process exits.
 */
function batchedStdout(): (line: string) => void {
  let pending = '';
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    if (!pending) return;
    const out = pending;
    pending = '';
    process.stdout.write(out);
  };
  process.once('exit', flush);
  return (line) => {
    pending += line;
    if (pending.length > 256 * 1024) flush();
    else if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
}

let lastMs = 0;
let lastIso = '';
/** Date#toISOString, made once per millisecond (log lines and event timestamps). */
export function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

export function createLogger(level: Level = 'info', write: (line: string) => void = batchedStdout()): Logger {
  const min = ORDER[level];
  const emit = (lvl: Level, msg: string, fields?: Record<string, unknown>): void => {
    if (ORDER[lvl] < min) return;
    // The three fixed keys are written by hand and the fields appended: no
    // copy of the record per line (this runs several times per message).
    let line = `{"t":"${isoNow()}","level":"${lvl}","msg":${JSON.stringify(msg)}`;
    if (fields) {
      let rec = fields;
      for (const k in fields) {
        if (fields[k] instanceof Error || k === 't' || k === 'level' || k === 'msg') {
          rec = {};
          for (const [key, v] of Object.entries(fields)) {
            if (key !== 't' && key !== 'level' && key !== 'msg') rec[key] = v instanceof Error ? v.message : v;
          }
          break;
        }
      }
      const body = JSON.stringify(rec);
      if (body.length > 2) line += ',' + body.slice(1, -1);
    }
    write(line + '}\n');
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
