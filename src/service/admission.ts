import { ServiceError } from './errors.js';

/**
 * The admission limit at the edge, one budget for REST and gRPC together: at most `maxInFlight`
 * database-using requests are served at once, up to `maxQueued` more wait (first come, first
 * served) for at most `queueTimeoutMs`, and anything beyond is refused at once with 503
 * SERVER_BUSY (gRPC UNAVAILABLE) and a retry hint. Requests are thus shed before they queue behind
 * the database pool, where they would wait out the pool's connect timeout and fail as 500s.
 */
export interface AdmissionConfig {
  maxInFlight: number;
  maxQueued: number;
  /** 0: nothing waits; a request that finds every slot taken is refused at once. */
  queueTimeoutMs: number;
}

/** Frees one admitted request's slot; calling it again does nothing. */
export type Release = () => void;

export const SERVER_BUSY = 'SERVER_BUSY';
/** The hint refused callers get (Retry-After: 1 / retry-after-ms: 1000). */
export const BUSY_RETRY_AFTER_MS = 1000;

interface Waiter {
  front: boolean;
  resolve(release: Release): void;
  reject(error: unknown): void;
  timer: NodeJS.Timeout | undefined;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

export interface AdmissionStats {
  inFlight: number;
  queued: number;
  maxInFlight: number;
  maxQueued: number;
  /** Requests refused since start (queue full or waited too long). */
  refused: number;
}

/** Auto-sizing (0 in the settings): DB-using requests at once per pool connection, and queued per slot. */
export const IN_FLIGHT_PER_CONNECTION = 2;
export const EMBEDDED_IN_FLIGHT = 8;
export const QUEUED_PER_SLOT = 4;

/**
 * The limits from the settings: ADMISSION_MAX_IN_FLIGHT 0 → 2 × DATABASE_POOL_MAX (native; each
 * request alternates between the database and CPU work, so two per connection keep the pool busy
 * while bounding any wait for a connection to about one request's database time) or 8 (embedded:
 * one connection, calls already queue fairly inside); ADMISSION_MAX_QUEUED 0 → 4 × that.
 */
export function admissionConfig(
  settings: { maxInFlight: number; maxQueued: number; queueTimeoutMs: number },
  database: { backend: 'native'; poolMax: number } | { backend: 'embedded' },
): AdmissionConfig {
  const maxInFlight =
    settings.maxInFlight > 0 ? settings.maxInFlight : database.backend === 'native' ? IN_FLIGHT_PER_CONNECTION * database.poolMax : EMBEDDED_IN_FLIGHT;
  const maxQueued = settings.maxQueued > 0 ? settings.maxQueued : QUEUED_PER_SLOT * maxInFlight;
  return { maxInFlight, maxQueued, queueTimeoutMs: settings.queueTimeoutMs };
}

export class AdmissionLimiter {
  private inFlight = 0;
  private readonly waiting: Waiter[] = [];
  private refusedCount = 0;

  constructor(readonly config: AdmissionConfig) {
    if (!(config.maxInFlight >= 1)) throw new RangeError('maxInFlight must be at least 1');
  }

  stats(): AdmissionStats {
    return { inFlight: this.inFlight, queued: this.waiting.length, maxInFlight: this.config.maxInFlight, maxQueued: this.config.maxQueued, refused: this.refusedCount };
  }

  /**
   * Takes a slot: at once when one is free (and nobody waits), else after waiting in line. Rejects
   * with SERVER_BUSY when the line is full or the wait runs out, and with the signal's reason when
   * the caller gives up (its slot, if it got one later, is not taken). `front`: a request that was
   * admitted once already and gave its slot back for a while (its body was arriving) takes the
   * next free slot before the others waiting, so it never waits in line twice.
   */
  acquire(signal?: AbortSignal, options: { front?: boolean } = {}): Promise<Release> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.inFlight < this.config.maxInFlight && (this.waiting.length === 0 || options.front)) {
      this.inFlight++;
      return Promise.resolve(this.releaser());
    }
    if (this.config.queueTimeoutMs <= 0 || this.waiting.length >= this.config.maxQueued) {
      return Promise.reject(this.busy('queue_full'));
    }
    return new Promise<Release>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        front: options.front === true,
        signal,
        timer: undefined,
        onAbort: () => {
          if (this.remove(waiter)) reject(signal!.reason);
        },
      };
      waiter.timer = setTimeout(() => {
        if (this.remove(waiter)) reject(this.busy('queue_timeout'));
      }, this.config.queueTimeoutMs);
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      if (!options.front) this.waiting.push(waiter);
      else {
        // Behind the other re-admissions, ahead of every first-time request.
        const firstNew = this.waiting.findIndex((w) => !w.front);
        this.waiting.splice(firstNew === -1 ? this.waiting.length : firstNew, 0, waiter);
      }
    });
  }

  private busy(reason: 'queue_full' | 'queue_timeout'): ServiceError {
    this.refusedCount++;
    const { maxInFlight, maxQueued, queueTimeoutMs } = this.config;
    const why = reason === 'queue_full' ? `${maxInFlight} requests in flight and ${maxQueued} waiting` : `no slot within ${queueTimeoutMs} ms`;
    return new ServiceError('unavailable', SERVER_BUSY, `the server is at its concurrency limit (${why}); retry in ${BUSY_RETRY_AFTER_MS / 1000} s`, {
      reason,
      maxInFlight,
      maxQueued,
      retryAfterMs: BUSY_RETRY_AFTER_MS,
    });
  }

  private remove(waiter: Waiter): boolean {
    const index = this.waiting.indexOf(waiter);
    if (index === -1) return false;
    this.waiting.splice(index, 1);
    clearTimeout(waiter.timer);
    waiter.signal?.removeEventListener('abort', waiter.onAbort);
    return true;
  }

  private releaser(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inFlight--;
      this.drain();
    };
  }

  private drain(): void {
    while (this.inFlight < this.config.maxInFlight && this.waiting.length > 0) {
      const next = this.waiting.shift()!;
      clearTimeout(next.timer);
      next.signal?.removeEventListener('abort', next.onAbort);
      this.inFlight++;
      next.resolve(this.releaser());
    }
  }
}
