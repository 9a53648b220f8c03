// The resolved configuration: what the rest of Tern sees after load.ts has
// validated the file and filled in defaults. Durations are milliseconds,
// sizes are bytes, paths are absolute, names are normalized.
//
// Every type here is inferred from the one declaration in schema.ts (where
// each key's meaning is documented); these are only its names.

import type { Resolved } from './declare.ts';
import type { CONFIG, LISTENER_ROLES, LOG_LEVELS, SPF_FAIL_ACTIONS } from './schema.ts';

export type TernConfig = Resolved<typeof CONFIG> & {
  /** Path of the file this came from, undefined for embedded defaults. */
  source?: string | undefined;
};

export type ListenerRole = (typeof LISTENER_ROLES)[number];
export type ListenerConfig = TernConfig['listeners'][number];
/** A listener that speaks SMTP (src/server/); `http` listeners are served by src/api/. */
export type SmtpListenerConfig = ListenerConfig & { role: Exclude<ListenerConfig['role'], 'http'> };
export type TlsConfig = NonNullable<TernConfig['tls']>;
export type DomainConfig = TernConfig['domains'][number];
export type LimitsConfig = TernConfig['limits'];
export type TimeoutsConfig = LimitsConfig['timeouts'];
export type QueueConfig = TernConfig['queue'];
export type DnsConfig = TernConfig['dns'];
export type OutboundConfig = TernConfig['outbound'];
export type OutboundTimeouts = OutboundConfig['timeouts'];
export type SmarthostConfig = NonNullable<OutboundConfig['smarthost']>;
/** An account declared in the config file (the user database holds the rest). */
export type ConfigUser = TernConfig['users'][number];
export type SubmissionConfig = TernConfig['submission'];
export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogConfig = TernConfig['log'];
export type EdgeConfig = TernConfig['edge'];
export type DnsblConfig = EdgeConfig['dnsbl'];
export type GreylistConfig = EdgeConfig['greylist'];
export type RateConfig = EdgeConfig['rate'];
export type SpfFailAction = (typeof SPF_FAIL_ACTIONS)[number];
export type InboundConfig = TernConfig['inbound'];
/** The inbound policy of one recipient domain, the section's values filled in. */
export type InboundDomainPolicy = InboundConfig['domains'][string];
