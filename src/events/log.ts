// The JSON log as a subscriber of the event stream: one `"msg":"delivery"`
// line per delivery attempt and recipient (README "Logs"): `relay` is the
// host that answered ("mx.example.org [192.0.2.1]"), else the transport
// (`maildir`, `discard`, or `mx`/`smarthost` when no host answered); one
// `"msg":"expired"` line per recipient given up.

import type { Logger } from '../util/log.ts';
import type { EventStream, MessageEvent } from './events.ts';
import type { QueuedMessage } from '../spool/types.ts';
import type { TlsUsed } from '../delivery/types.ts';

const RESULT = { delivered: 'ok', deferred: 'tempfail', bounced: 'permfail' } as const;

export function logDeliveries(events: EventStream, log: Logger, now: () => number = Date.now): () => void {
  return events.subscribe((e: MessageEvent, msg: QueuedMessage, index: number) => {
    const { data } = e;
    if (e.type === 'delivered' || e.type === 'deferred' || e.type === 'bounced') {
      const rcpt = msg.envelope.recipients[index]!;
      log[e.type === 'delivered' ? 'info' : 'warn']('delivery', {
        id: e.queueId,
        to: e.recipient,
        orig: rcpt.original !== rcpt.address ? rcpt.original : undefined,
        result: RESULT[e.type],
        reply: data.reply,
        relay: data.relay ? `${data.relay.host} [${data.relay.ip}]` : data.transport,
        tls: data.tls ? tlsText(data.tls) : undefined,
        delay: (now() - msg.envelope.receivedAt) / 1000,
        attempt: data.attempt,
      });
    } else if (e.type === 'expired') {
      log.warn('expired', { id: e.queueId, to: e.recipient, reply: data.reply, attempt: data.attempt });
    }
  });
}

/** "TLSv1.3 TLS_AES_256_GCM_SHA384 (unverified CN=mx.example)": the certificate is recorded, verified or not (RFC 7435). */
function tlsText(t: TlsUsed): string {
  return `${t.version} ${t.cipher} (${t.verified ? 'verified' : 'unverified'}${t.peer ? ` CN=${t.peer}` : ''})`;
}
