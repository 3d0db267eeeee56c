import type * as grpc from '@grpc/grpc-js';
import { authenticate, type Principal } from '../service/auth.js';
import type { ServiceContext } from '../service/context.js';
import { ServiceError } from '../service/errors.js';

const WINDOW_MS = 60_000;

/**
 * Per-caller request budget: a fixed one-minute window per API key (per client address when auth
 * is disabled). A streaming call counts once. `limitPerMinute` 0 turns the limit off.
 */
export class RateLimiter {
  private windows = new Map<string, { start: number; count: number }>();

  constructor(
    private readonly limitPerMinute: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counts one request of `key`; throws overloaded (RATE_LIMITED, retryAfterMs) past the budget. */
  take(key: string): void {
    if (this.limitPerMinute <= 0) return;
    const now = this.now();
    let window = this.windows.get(key);
    if (!window || now - window.start >= WINDOW_MS) {
      if (this.windows.size > 10_000) this.sweep(now);
      window = { start: now, count: 0 };
      this.windows.set(key, window);
    }
    if (window.count >= this.limitPerMinute) {
      const retryAfterMs = window.start + WINDOW_MS - now;
      throw new ServiceError('overloaded', 'RATE_LIMITED', `rate limit of ${this.limitPerMinute} requests per minute exceeded; retry in ${Math.ceil(retryAfterMs / 1000)} s`, {
        limitPerMinute: this.limitPerMinute,
        retryAfterMs,
      });
    }
    window.count++;
  }

  private sweep(now: number): void {
    for (const [key, w] of this.windows) if (now - w.start >= WINDOW_MS) this.windows.delete(key);
  }
}

/** The secret of `authorization: Bearer <key>` call metadata, if any. */
export function bearerSecret(metadata: grpc.Metadata): string | undefined {
  const [value] = metadata.get('authorization');
  if (typeof value !== 'string') return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(value.trim());
  return match ? match[1] : undefined;
}

/** Authenticates the call's key, then charges its rate budget. */
export async function admit(ctx: ServiceContext, limiter: RateLimiter, metadata: grpc.Metadata, peer: string): Promise<Principal> {
  const principal = await authenticate(ctx, bearerSecret(metadata));
  limiter.take(principal.keyId !== null ? `key:${principal.keyId}` : `peer:${peerAddress(peer)}`);
  return principal;
}

/** The client address of a grpc-js peer string ("ipv4:1.2.3.4:5678", "[::1]:5678", "1.2.3.4:5678"). */
function peerAddress(peer: string): string {
  const bare = peer.replace(/^ipv[46]:/, '');
  const bracket = /^\[([^\]]+)\]/.exec(bare);
  if (bracket) return bracket[1];
  const colon = bare.lastIndexOf(':');
  return colon > 0 && bare.indexOf(':') === colon ? bare.slice(0, colon) : bare;
}
