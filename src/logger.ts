import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import type { LogLevel } from './config/index.js';

export const REDACTED = '[REDACTED]';

/** Query parameters whose values are credentials. */
const SECRET_PARAM = /key|token|secret|password|passwd|pwd|auth|credential|signature|session|sig$|cookie/i;
/** Headers (and gRPC metadata keys) that carry credentials; compared lower-case. */
export const SECRET_HEADERS = ['authorization', 'proxy-authorization', 'x-api-key', 'cookie', 'set-cookie'] as const;
/** Property names of an error (or headers-like object inside it) whose values are redacted. */
const SECRET_PROPERTY = /^(authorization|proxy-authorization|x-api-key|api[-_]?key|cookie|set-cookie|password|passwd|secret|token|access[-_]?token|refresh[-_]?token|credentials?)$/i;

function decodeName(name: string): string {
  try {
    return decodeURIComponent(name.replace(/\+/g, ' '));
  } catch {
    return name;
  }
}

/**
 * `url` with the value of every credential-looking query parameter (`api_key`, `token`,
 * `client_secret`, `password`, `X-Amz-Signature`, …) replaced by `[REDACTED]`; the path,
 * other parameters and their order are kept. Pure; accepts a path with a query or a full URL.
 */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const hash = url.indexOf('#', q);
  const end = hash < 0 ? url.length : hash;
  const query = url
    .slice(q + 1, end)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq < 0 ? pair : pair.slice(0, eq);
      return eq >= 0 && SECRET_PARAM.test(decodeName(name)) ? `${name}=${REDACTED}` : pair;
    })
    .join('&');
  return `${url.slice(0, q + 1)}${query}${url.slice(end)}`;
}

const QUERY_PAIR = /([?&;])([^=&#\s"'?;]+)=([^&#\s"';]*)/g;
const BEARER = /\b(Bearer)\s+[A-Za-z0-9._~+/=-]+/gi;
/** protoprune's API key secrets (`pp_` + 32 base64url characters), wherever they appear. */
const API_KEY_SECRET = /\bpp_[A-Za-z0-9_-]{16,}/g;

/** Free text (a message, an error's message or stack) with URLs' credential parameters, bearer credentials and API key secrets redacted. */
export function redactText(text: string): string {
  if (text.length === 0) return text;
  return text
    .replace(QUERY_PAIR, (match, sep: string, name: string) => (SECRET_PARAM.test(decodeName(name)) ? `${sep}${name}=${REDACTED}` : match))
    .replace(BEARER, (_m, scheme: string) => `${scheme} ${REDACTED}`)
    .replace(API_KEY_SECRET, REDACTED);
}

interface MetadataLike {
  getMap(): Record<string, unknown>;
}
const isMetadata = (value: unknown): value is MetadataLike =>
  typeof value === 'object' && value !== null && typeof (value as MetadataLike).getMap === 'function';

/**
 * A copy of `value` safe to log: strings through `redactText`, credential-named properties
 * (headers, gRPC metadata, `password`, …) replaced, gRPC Metadata and Headers turned into plain
 * objects. Bounded depth; cycles become "[Circular]".
 */
export function scrub(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (typeof value === 'string') return redactText(value);
  if (typeof value !== 'object' || value === null) return value;
  if (Buffer.isBuffer(value) || ArrayBuffer.isView(value) || value instanceof Date) return value;
  if (seen.has(value)) return '[Circular]';
  if (depth >= 8) return '[Object]';
  seen.add(value);
  if (isMetadata(value)) return scrub(value.getMap(), depth + 1, seen);
  if (typeof Headers !== 'undefined' && value instanceof Headers) return scrub(Object.fromEntries(value.entries()), depth + 1, seen);
  if (value instanceof Map) return scrub(Object.fromEntries(value), depth + 1, seen);
  if (Array.isArray(value)) return value.map((v) => scrub(v, depth + 1, seen));
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    const v = (value as Record<string, unknown>)[key];
    out[key] = SECRET_PROPERTY.test(key) && v !== undefined && v !== null ? REDACTED : scrub(v, depth + 1, seen);
  }
  return out;
}

interface RequestLike {
  method?: string;
  url?: string;
  originalUrl?: string;
  host?: string;
  hostname?: string;
  ip?: string;
  headers?: Record<string, unknown>;
  socket?: { remoteAddress?: string; remotePort?: number };
}

/**
 * `req`: what fastify's own serializer logs (method, url, version, host, remote address and port),
 * with the URL redacted. Headers are not logged at all.
 */
function serializeRequest(req: RequestLike): Record<string, unknown> {
  if (typeof req !== 'object' || req === null) return req;
  const headers = req.headers ?? {};
  return {
    method: req.method,
    url: typeof req.url === 'string' ? redactUrl(req.url) : req.url,
    version: headers['accept-version'],
    host: req.host ?? headers.host,
    remoteAddress: req.ip ?? req.socket?.remoteAddress,
    remotePort: req.socket?.remotePort,
  };
}

/** `err`: pino's standard error serializer (type, message, stack, causes, own properties), scrubbed. */
function serializeError(err: unknown): unknown {
  return scrub(pino.stdSerializers.err(err as Error));
}

/** Headers wherever they are logged, also nested one level (e.g. `response.headers`). */
const REDACT_PATHS = SECRET_HEADERS.flatMap((h) => [`headers["${h}"]`, `*.headers["${h}"]`, `metadata["${h}"]`, `*.metadata["${h}"]`]);

/** The message pino would take from an Error or `{ err }` logged without one. */
function implicitMessage(first: unknown): string | undefined {
  if (first instanceof Error) return first.message;
  const err = (first as { err?: unknown } | null)?.err;
  return err instanceof Error ? err.message : undefined;
}

/**
 * The logger options that keep secrets out of the log, in one place: serializers for `req`
 * (redacted URL, no headers), `err` (scrubbed), `headers` and `metadata` (credential headers and
 * gRPC metadata keys redacted); `redact` for those headers also one level deep; and a hook that
 * redacts URLs and bearer credentials inside message strings (fastify's "Route GET:/x?token=… not
 * found" and "Reply was already sent" messages, error messages used as the message).
 */
export const SAFE_LOG_OPTIONS: Pick<LoggerOptions, 'serializers' | 'redact' | 'hooks'> = {
  serializers: {
    req: serializeRequest,
    err: serializeError,
    error: serializeError,
    headers: (h: unknown) => scrub(h),
    metadata: (m: unknown) => scrub(m),
  },
  redact: { paths: REDACT_PATHS, censor: REDACTED },
  hooks: {
    logMethod(args, method) {
      const safe = (args as unknown[]).map((a) => (typeof a === 'string' ? redactText(a) : a));
      if (safe.length > 0 && typeof safe[0] === 'object' && typeof safe[1] !== 'string') {
        const message = implicitMessage(safe[0]);
        if (message !== undefined) safe.splice(1, 0, redactText(message));
      }
      return method.apply(this, safe as Parameters<typeof method>);
    },
  },
};

/** JSON lines on stdout (or `destination`); request-scoped children add `reqId`. Secrets are redacted (SAFE_LOG_OPTIONS). */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const options: LoggerOptions = { level, base: { service: 'protoprune' }, timestamp: pino.stdTimeFunctions.isoTime, ...SAFE_LOG_OPTIONS };
  return destination ? pino(options, destination) : pino(options);
}
