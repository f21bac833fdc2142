/**
 * Broker addresses: `jobwire://[token@]host[:port]` URLs, or an options object.
 */

export const DEFAULT_PORT = 7400;
export const DEFAULT_URL = `jobwire://127.0.0.1:${DEFAULT_PORT}`;

/** Where a broker is, and the shared secret to present in `hello`. */
export interface Endpoint {
  host: string;
  port: number;
  token?: string;
  /** `jobwires://`: the same protocol inside TLS. */
  tls?: boolean;
}

/**
 * Parse `jobwire://[token@]host[:port]` or `jobwires://...` (TLS); a bare `host:port` is accepted
 * too. A token that holds `@`, `:` or `/` must be percent-encoded (`encodeURIComponent`).
 *
 * @throws TypeError on another scheme or a bad port.
 */
export function parseUrl(url: string): Endpoint {
  const full = url.includes('://') ? url : `jobwire://${url}`;
  let parsed: URL;
  try {
    parsed = new URL(full);
  } catch {
    throw new TypeError(`bad jobwire URL ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== 'jobwire:' && parsed.protocol !== 'jobwires:') {
    throw new TypeError(`unsupported URL scheme ${JSON.stringify(parsed.protocol)}: use jobwire:// or jobwires://`);
  }
  const port = parsed.port === '' ? DEFAULT_PORT : Number(parsed.port);
  // jobwire://user:token@host: the token is the password part, as in the Python client.
  const raw = parsed.password !== '' ? parsed.password : parsed.username;
  const endpoint: Endpoint = { host: parsed.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1', port };
  if (raw !== '') endpoint.token = decodeURIComponent(raw);
  if (parsed.protocol === 'jobwires:') endpoint.tls = true;
  return endpoint;
}

/** Reconnect delay for attempt `attempt` (0-based): capped doubling, uniform in [d/2, d]. */
export function reconnectDelay(attempt: number, baseMs: number, capMs: number, random = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 32));
  return ceiling * (0.5 + random() / 2);
}
