/**
 * The one error family of the service layer. Transports map `kind` once: HTTP to a status code,
 * gRPC to a status; `code` is the stable machine-readable identifier clients branch on.
 */
export type ErrorKind =
  | 'invalid'
  | 'not_found'
  | 'conflict'
  | 'unauthenticated'
  | 'forbidden'
  | 'overloaded'
  | 'too_large'
  | 'unavailable';

export class ServiceError extends Error {
  constructor(
    readonly kind: ErrorKind,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ServiceError';
  }
}

export const HTTP_STATUS_BY_KIND: Record<ErrorKind, number> = {
  invalid: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  overloaded: 429,
  unavailable: 503,
};

/** The retry hint of refusals that carry none of their own (Retry-After: 1). */
export const DEFAULT_RETRY_AFTER_MS = 1000;

/**
 * How long a refused caller should wait before retrying, in ms: the error's `details.retryAfterMs`,
 * or DEFAULT_RETRY_AFTER_MS for any other overloaded (429) or unavailable (503) answer — every
 * refusal carries a hint (REST `Retry-After`, gRPC `retry-after-ms` / `retry-after`). Null otherwise.
 */
export function retryAfterMsOf(error: ServiceError): number | null {
  const hint = (error.details as { retryAfterMs?: unknown } | undefined)?.retryAfterMs;
  if (typeof hint === 'number' && Number.isFinite(hint) && hint >= 0) return hint;
  return error.kind === 'overloaded' || error.kind === 'unavailable' ? DEFAULT_RETRY_AFTER_MS : null;
}

/** `Retry-After` in whole seconds (at least 1) for a hint in ms. */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/** Ingest and score requests (REST bodies, gRPC messages) carry at most `max` items (MAX_ITEMS_PER_REQUEST). */
export function checkItemCount(count: number, max: number): void {
  if (count > max) {
    throw new ServiceError('too_large', 'TOO_MANY_ITEMS', `a request may carry at most ${max} items (MAX_ITEMS_PER_REQUEST); got ${count}`, { max, count });
  }
}

/** One item's failure in a batch answer (ingest, scoring). */
export interface ItemFailure {
  externalId: string;
  status: 'error';
  code: string;
  message: string;
}

/**
 * A batch none of whose items could be used is a malformed request, refused as a whole: the code
 * is the items' common one (e.g. NON_FINITE_VALUE) or INVALID_ITEMS when they differ, and
 * `details.items` names each item's problem. A batch with any good item answers item by item.
 */
export function refuseIfNoItemUsable(outcomes: ReadonlyArray<{ status: string } | ItemFailure>): void {
  if (outcomes.length === 0 || outcomes.some((o) => o.status !== 'error')) return;
  const failures = outcomes as readonly ItemFailure[];
  const codes = new Set(failures.map((f) => f.code));
  const [only] = codes;
  const code = codes.size === 1 ? only : 'INVALID_ITEMS';
  const message = codes.size === 1 ? `no item could be used: ${failures[0].message}` : `no item could be used (${[...codes].join(', ')})`;
  throw new ServiceError('invalid', code, message, {
    items: failures.map(({ externalId, code: itemCode, message: itemMessage }, index) => ({ index, externalId, code: itemCode, message: itemMessage })),
  });
}

/** The code of every answer refused because the database could not serve it (503 / gRPC UNAVAILABLE). */
export const DATABASE_UNAVAILABLE = 'DATABASE_UNAVAILABLE';

/**
 * Why the database could not serve a call. `pool_timeout`: every pooled connection stayed busy for
 * the pool's wait (the database itself answers); `closed`: this process closed its connection
 * (shutting down). The others mean the database is unreachable or going away: an outage.
 */
export type DatabaseFailure =
  | 'pool_timeout'
  | 'unreachable'
  | 'connect_timeout'
  | 'connection_lost'
  | 'too_many_connections'
  | 'shutting_down'
  | 'closed';

/** Client-facing message and retry hint per failure; no host, port, SQL or driver text. */
const DATABASE_FAILURES: Record<DatabaseFailure, { message: string; retryAfterMs: number }> = {
  pool_timeout: { message: 'every database connection stayed busy; retry shortly', retryAfterMs: 1000 },
  unreachable: { message: 'the database is unreachable; retry shortly', retryAfterMs: 2000 },
  connect_timeout: { message: 'connecting to the database timed out; retry shortly', retryAfterMs: 2000 },
  connection_lost: { message: 'the connection to the database was lost; retry shortly', retryAfterMs: 1000 },
  too_many_connections: { message: 'the database refuses new connections (too many connections); retry shortly', retryAfterMs: 2000 },
  shutting_down: { message: 'the database is restarting or shutting down; retry shortly', retryAfterMs: 2000 },
  closed: { message: 'the database connection is closed (this server is shutting down)', retryAfterMs: 1000 },
};

/** Node socket error codes of a connection that could not be made or was cut. */
const UNREACHABLE_SOCKET_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'EAI_AGAIN', 'ETIMEDOUT']);
const LOST_SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED']);

/** Prisma's own codes (and its driver adapters' error kinds) for the same conditions. */
const PRISMA_CODES: Record<string, DatabaseFailure> = {
  P1001: 'unreachable',
  P1002: 'connect_timeout',
  P1017: 'connection_lost',
  P2024: 'pool_timeout',
  P2037: 'too_many_connections',
};
const ADAPTER_KINDS: Record<string, DatabaseFailure> = {
  DatabaseNotReachable: 'unreachable',
  ConnectionClosed: 'connection_lost',
  SocketTimeout: 'connect_timeout',
  TooManyConnections: 'too_many_connections',
};

/** Driver messages (pg, pg-pool, PGlite, Prisma) that carry no code. Order matters: specific first. */
const MESSAGES: Array<[RegExp, DatabaseFailure]> = [
  [/timeout exceeded when trying to connect/i, 'pool_timeout'],
  [/Connection terminated due to connection timeout/i, 'connect_timeout'],
  [/Connection terminated/i, 'connection_lost'],
  [/Client has encountered a connection error and is not queryable/i, 'connection_lost'],
  [/Client was closed and is not queryable/i, 'connection_lost'],
  [/Cannot use a pool after calling end on the pool/i, 'closed'],
  [/PGlite is closed/i, 'closed'],
  [/Can't reach database server/i, 'unreachable'],
];

function sqlstateFailure(code: string): DatabaseFailure | null {
  if (!/^[0-9A-Z]{5}$/.test(code)) return null;
  if (code.startsWith('08')) return 'unreachable'; // connection_exception class
  if (code === '57P01' || code === '57P02' || code === '57P03') return 'shutting_down'; // admin/crash shutdown, cannot connect now
  if (code === '53300') return 'too_many_connections';
  return null;
}

function failureOf(error: unknown): DatabaseFailure | null {
  const pending: unknown[] = [error];
  const seen = new Set<unknown>();
  while (pending.length > 0 && seen.size < 16) {
    const e = pending.shift();
    if (e === null || typeof e !== 'object' || seen.has(e)) continue;
    seen.add(e);
    const { code, message, kind, originalCode, cause, meta, errors } = e as Record<string, unknown>;
    for (const c of [code, originalCode]) {
      if (typeof c !== 'string') continue;
      if (UNREACHABLE_SOCKET_CODES.has(c)) return 'unreachable';
      if (LOST_SOCKET_CODES.has(c)) return 'connection_lost';
      const prisma = PRISMA_CODES[c];
      if (prisma) return prisma;
      const sqlstate = sqlstateFailure(c);
      if (sqlstate) return sqlstate;
    }
    if (typeof kind === 'string' && ADAPTER_KINDS[kind]) return ADAPTER_KINDS[kind];
    if (typeof message === 'string') {
      for (const [pattern, failure] of MESSAGES) if (pattern.test(message)) return failure;
    }
    pending.push(cause, (meta as { driverAdapterError?: unknown } | undefined)?.driverAdapterError);
    if (Array.isArray(errors)) pending.push(...errors.slice(0, 4));
  }
  return null;
}

/**
 * The one classifier of database driver errors, used by both transports' error mappers: a pool
 * timeout, an unreachable or lost database (ECONNREFUSED, ECONNRESET, "Connection terminated",
 * SQLSTATE class 08, 57P01/57P02/57P03, 53300 too_many_connections, a closed pool or PGlite —
 * raw from pg or wrapped by Prisma) becomes ServiceError unavailable DATABASE_UNAVAILABLE
 * (503 / gRPC UNAVAILABLE) with `details.reason` and `details.retryAfterMs`; the driver error is
 * kept as `cause` (for logs, never sent). Anything else: null.
 */
export function classifyDatabaseError(error: unknown): ServiceError | null {
  if (error instanceof ServiceError) return error.code === DATABASE_UNAVAILABLE ? error : null;
  const reason = failureOf(error);
  if (reason === null) return null;
  const { message, retryAfterMs } = DATABASE_FAILURES[reason];
  return new ServiceError('unavailable', DATABASE_UNAVAILABLE, message, { reason, retryAfterMs }, { cause: error });
}


/** What DatabaseAvailability logs through (a pino logger fits). */
export interface AvailabilityLog {
  warn(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
}

/** The driver's own text of a classified error, for the log line (first line only, clipped). */
function driverMessage(error: ServiceError): string {
  let e: unknown = error.cause;
  for (let depth = 0; depth < 4 && e instanceof Error; depth++) {
    if (e.message) return e.message.trim().split('\n').pop()!.slice(0, 300);
    e = e.cause;
  }
  return error.message;
}

const POOL_WARNING_INTERVAL_MS = 60_000;

/**
 * Logs database outages once per transition instead of once per failed request: "database
 * unavailable" (warn) at the first failure of an outage, "database reachable again" (info) at the
 * first success after it. Failures are reported by the store (a connection that could not be made
 * or broke) and by the transports' error mappers; successes by the store (a new connection) and the
 * readiness probe. Pool timeouts are not an outage (the database answers; requests outran the pool):
 * they are logged at most once a minute, with how many there were. Log lines carry no stack.
 */
export class DatabaseAvailability {
  private downSince: number | null = null;
  private poolTimeouts = 0;
  private poolWarnedAt = -Infinity;
  /** Driver errors already counted: the store and a transport's error mapper may both report one. */
  private readonly seen = new WeakSet<object>();

  constructor(
    private readonly log: AvailabilityLog,
    private readonly now: () => number = Date.now,
  ) {}

  /** False from the first failure of an outage until the next success. */
  get available(): boolean {
    return this.downSince === null;
  }

  /** Notes a failed database call; returns its classification (null: not a database availability error). */
  failed(error: unknown): ServiceError | null {
    const classified = classifyDatabaseError(error);
    if (!classified) return null;
    const root = classified.cause ?? classified;
    if (typeof root === 'object' && root !== null) {
      if (this.seen.has(root)) return classified;
      this.seen.add(root);
    }
    const reason = classified.details.reason as DatabaseFailure | undefined;
    if (reason === 'closed') return classified;
    if (reason === 'pool_timeout') {
      this.poolTimeouts++;
      const now = this.now();
      if (now - this.poolWarnedAt >= POOL_WARNING_INTERVAL_MS) {
        this.log.warn({ poolTimeouts: this.poolTimeouts }, 'database pool exhausted: requests waited too long for a connection');
        this.poolWarnedAt = now;
        this.poolTimeouts = 0;
      }
      return classified;
    }
    if (this.downSince === null) {
      this.downSince = this.now();
      this.log.warn({ reason, cause: driverMessage(classified) }, 'database unavailable');
    }
    return classified;
  }

  /** Notes that the database answered (a new connection, a successful probe). */
  reachable(): void {
    if (this.downSince === null) return;
    const downMs = this.now() - this.downSince;
    this.downSince = null;
    this.log.info({ downMs }, 'database reachable again');
  }
}
