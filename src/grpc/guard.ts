import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { AdmissionLimiter, Release } from '../service/admission.js';
import { authenticate, type Principal } from '../service/auth.js';
import type { ServiceContext } from '../service/context.js';
import { ServiceError, type DatabaseAvailability } from '../service/errors.js';
import { DATABASE_ERROR, toGrpcError } from './errors.js';

/**
 * Per-caller request budget: a fixed one-minute window per API key (per client address when auth
 * is disabled). A streaming call counts once. `limitPerMinute` 0 turns the limit off. The count is
 * the service's one `RequestBudget` (service/rate-budget.ts), which the REST API spends too and, on
 * the native backend, every replica on the database shares.
 */
export class RateLimiter {
  constructor(private readonly limitPerMinute: number) {}

  /** Counts one request of `key`; throws overloaded (RATE_LIMITED, retryAfterMs) past the budget. */
  async take(ctx: ServiceContext, key: string): Promise<void> {
    if (this.limitPerMinute <= 0) return;
    const charge = await ctx.requestBudgets.forLimit(this.limitPerMinute).charge(key);
    if (charge.allowed) return;
    throw new ServiceError('overloaded', 'RATE_LIMITED', `rate limit of ${this.limitPerMinute} requests per minute exceeded; retry in ${Math.ceil(charge.resetMs / 1000)} s`, {
      limitPerMinute: this.limitPerMinute,
      retryAfterMs: charge.resetMs,
    });
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
  // The same keys as REST's, so both transports spend one budget.
  await limiter.take(ctx, principal.keyId !== null ? `key:${principal.keyId}` : `ip:${peerAddress(peer)}`);
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

export interface AdmissionGate {
  limiter: AdmissionLimiter;
  /** Told about calls that failed for want of a database (their status carries DATABASE_ERROR). */
  availability?: DatabaseAvailability;
  logger: Logger;
  /**
   * Long-lived calls (WatchJob) pass the gate — refused like any call when the server is saturated
   * — but do not hold a slot while they last: their polls are light and spread out.
   */
  passThrough?: ReadonlySet<string>;
}

function once(release: Release): Release {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    release();
  };
}

/**
 * The gRPC edge of the admission limit (the same AdmissionLimiter as REST): every Protoprune call
 * takes a slot before it is authenticated (which reads the database) and keeps it until it is
 * answered — unary and client-streaming calls at their callback (or the client cancelling a
 * stream), server-streaming ones when the stream finishes, fails or is cancelled. A call refused
 * is answered at once UNAVAILABLE SERVER_BUSY with `retry-after-ms` / `retry-after` trailers. The
 * health and reflection services are not wrapped (exempt). Handlers are unchanged.
 */
export function admitted(service: grpc.ServiceDefinition, handlers: grpc.UntypedServiceImplementation, gate: AdmissionGate): grpc.UntypedServiceImplementation {
  const { limiter, availability, logger } = gate;
  const observe = (status: unknown) => {
    const source = (status as { [DATABASE_ERROR]?: ServiceError } | null | undefined)?.[DATABASE_ERROR];
    if (source) availability?.failed(source);
  };
  const out: grpc.UntypedServiceImplementation = {};
  for (const [method, handler] of Object.entries(handlers)) {
    const definition = service[method];
    if (!definition) {
      out[method] = handler;
      continue;
    }
    const hold = !gate.passThrough?.has(method);
    const take = (call: { once(event: 'cancelled', listener: () => void): unknown }) => {
      const abort = new AbortController();
      call.once('cancelled', () => abort.abort(new ServiceError('unavailable', 'CLIENT_CLOSED', 'the call was cancelled before it was served')));
      return limiter.acquire(abort.signal).then((release) => {
        if (!hold) {
          release();
          return () => undefined;
        }
        return once(release);
      });
    };
    if (!definition.responseStream) {
      // Unary and client-streaming: answered through the callback.
      const h = handler as (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => void;
      out[method] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        take(call).then(
          (release) => {
            // A client-streaming handler whose client cancels may never call back.
            if (definition.requestStream) call.once('cancelled', release);
            h(call, ((error, value, trailer, flags) => {
              release();
              if (error) observe(error);
              callback(error, value, trailer, flags);
            }) as grpc.sendUnaryData<unknown>);
          },
          (error: unknown) => {
            if (!call.cancelled) callback(toGrpcError(error, logger, method));
          },
        );
      }) as grpc.UntypedHandleCall;
    } else {
      const h = handler as (call: grpc.ServerWritableStream<unknown, unknown>) => void;
      out[method] = ((call: grpc.ServerWritableStream<unknown, unknown>) => {
        take(call).then(
          (release) => {
            call.once('finish', release);
            call.once('cancelled', release);
            call.once('close', release);
            call.on('error', (status: unknown) => {
              release();
              observe(status);
            });
            h(call);
          },
          (error: unknown) => {
            if (!call.cancelled) call.emit('error', toGrpcError(error, logger, method));
          },
        );
      }) as grpc.UntypedHandleCall;
    }
  }
  return out;
}
