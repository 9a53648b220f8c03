// Session timeouts (RFC 5321 §4.5.3.2) without a timer per connection.
//
// Node's socket.setTimeout makes a Timeout object (and a bound callback)
// each time it is called, and a session switches between the command and
// data timeouts several times per message. With thousands of sessions that
// is memory held by every idle connection and work on every message. Here
// each session only stores a deadline (a number); one interval walks the
// sessions and closes the late ones. Its tick is a quarter of the shortest
// timeout (at most a second), so a session is closed between its timeout and
// its timeout plus a quarter: far inside what §4.5.3.2 cares about (minutes).
//
// A deadline is what the session makes it: a session does not push it back
// on every byte (a slowloris client would hold the connection for ever with
// a byte a minute); see Session.deadline for what moves it.

export interface Timed {
  /** Milliseconds since the epoch after which the session has run out of time; Infinity = no timeout. */
  deadline: number;
  onIdleTimeout(): void;
}

export class IdleSweeper {
  readonly #items = new Set<Timed>();
  readonly #tickMs: number;
  #timer: NodeJS.Timeout | null = null;
  /** A clock read once per tick: cheap enough to stamp every read with. */
  now = Date.now();

  constructor(shortestTimeoutMs: number) {
    this.#tickMs = Math.max(10, Math.min(1000, Math.floor(shortestTimeoutMs / 4)));
  }

  add(t: Timed): void {
    this.#items.add(t);
    if (!this.#timer) {
      this.now = Date.now();
      this.#timer = setInterval(() => this.#sweep(), this.#tickMs);
      this.#timer.unref();
    }
  }

  delete(t: Timed): void {
    this.#items.delete(t);
    if (this.#items.size === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
  }

  /** A deadline at least `ms` from now (the clock may be a tick old); 0 = none. */
  deadline(ms: number): number {
    return ms > 0 ? this.now + ms + this.#tickMs : Infinity;
  }

  #sweep(): void {
    this.now = Date.now();
    for (const t of this.#items) {
      if (t.deadline <= this.now) {
        this.#items.delete(t);
        t.onIdleTimeout();
      }
    }
  }
}
