// What a transport reports for one recipient (DESIGN.md: three outcomes).
// Transports never decide retries; the scheduler does.

export type DeliveryResult =
  | { kind: 'ok'; reply: string }
  /** Try again later (4xx, network, disk). */
  | { kind: 'tempfail'; reply: string }
  /** Give up on this recipient (5xx); a bounce follows. */
  | { kind: 'permfail'; reply: string };
