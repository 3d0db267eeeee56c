import { describe, expect, it } from 'vitest';
import { AdmissionLimiter, admissionConfig, SERVER_BUSY } from '../../src/service/admission.js';
import { ServiceError } from '../../src/service/errors.js';

const tick = () => new Promise((r) => setImmediate(r));

async function busyOf(promise: Promise<unknown>): Promise<ServiceError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ServiceError);
  return error as ServiceError;
}

describe('AdmissionLimiter', () => {
  it('admits up to maxInFlight at once, queues up to maxQueued in arrival order, refuses the rest at once', async () => {
    const limiter = new AdmissionLimiter({ maxInFlight: 2, maxQueued: 2, queueTimeoutMs: 10_000 });
    const a = await limiter.acquire();
    const b = await limiter.acquire();
    const order: string[] = [];
    const c = limiter.acquire().then((r) => (order.push('c'), r));
    const d = limiter.acquire().then((r) => (order.push('d'), r));
    const refused = await busyOf(limiter.acquire());
    expect(refused.kind).toBe('unavailable');
    expect(refused.code).toBe(SERVER_BUSY);
    expect(refused.details).toMatchObject({ reason: 'queue_full', retryAfterMs: 1000, maxInFlight: 2, maxQueued: 2 });
    expect(limiter.stats()).toMatchObject({ inFlight: 2, queued: 2, refused: 1 });

    a();
    a(); // a second release of the same slot changes nothing
    const releaseC = await c;
    await tick();
    expect(order).toEqual(['c']);
    expect(limiter.stats()).toMatchObject({ inFlight: 2, queued: 1 });
    b();
    const releaseD = await d;
    expect(order).toEqual(['c', 'd']);
    releaseC();
    releaseD();
    expect(limiter.stats()).toMatchObject({ inFlight: 0, queued: 0 });
  });

  it('a newcomer does not overtake requests already waiting', async () => {
    const limiter = new AdmissionLimiter({ maxInFlight: 1, maxQueued: 5, queueTimeoutMs: 10_000 });
    const first = await limiter.acquire();
    const order: string[] = [];
    const waiting = limiter.acquire().then((r) => (order.push('waiting'), r));
    first();
    // A slot is free now, but one request waits: the newcomer queues behind it.
    const newcomer = limiter.acquire().then((r) => (order.push('newcomer'), r));
    (await waiting)();
    (await newcomer)();
    expect(order).toEqual(['waiting', 'newcomer']);
  });

  it('refuses a request that waited queueTimeoutMs, and nothing waits when it is 0', async () => {
    const limiter = new AdmissionLimiter({ maxInFlight: 1, maxQueued: 5, queueTimeoutMs: 50 });
    const held = await limiter.acquire();
    const started = Date.now();
    const refused = await busyOf(limiter.acquire());
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    expect(refused.details.reason).toBe('queue_timeout');
    expect(limiter.stats().queued).toBe(0);
    held();

    const noWait = new AdmissionLimiter({ maxInFlight: 1, maxQueued: 5, queueTimeoutMs: 0 });
    const only = await noWait.acquire();
    expect((await busyOf(noWait.acquire())).details.reason).toBe('queue_full');
    only();
    (await noWait.acquire())();
  });

  it('a caller that gives up leaves the queue and never holds a slot', async () => {
    const limiter = new AdmissionLimiter({ maxInFlight: 1, maxQueued: 5, queueTimeoutMs: 10_000 });
    const held = await limiter.acquire();
    const abort = new AbortController();
    const gaveUp = limiter.acquire(abort.signal);
    const reason = new Error('client gone');
    abort.abort(reason);
    await expect(gaveUp).rejects.toBe(reason);
    expect(limiter.stats()).toMatchObject({ inFlight: 1, queued: 0 });
    held();
    expect(limiter.stats().inFlight).toBe(0);
    await expect(limiter.acquire(abort.signal)).rejects.toBe(reason);
  });

  it('sizes itself from the pool when the settings say 0', () => {
    expect(admissionConfig({ maxInFlight: 0, maxQueued: 0, queueTimeoutMs: 2000 }, { backend: 'native', poolMax: 10 })).toEqual({ maxInFlight: 20, maxQueued: 80, queueTimeoutMs: 2000 });
    expect(admissionConfig({ maxInFlight: 0, maxQueued: 0, queueTimeoutMs: 2000 }, { backend: 'embedded' })).toEqual({ maxInFlight: 8, maxQueued: 32, queueTimeoutMs: 2000 });
    expect(admissionConfig({ maxInFlight: 3, maxQueued: 7, queueTimeoutMs: 0 }, { backend: 'native', poolMax: 10 })).toEqual({ maxInFlight: 3, maxQueued: 7, queueTimeoutMs: 0 });
  });
});

describe('AdmissionLimiter re-admission', () => {
  it('a request re-taking its slot goes ahead of first-time requests (behind earlier re-admissions)', async () => {
    const limiter = new AdmissionLimiter({ maxInFlight: 1, maxQueued: 5, queueTimeoutMs: 10_000 });
    const held = await limiter.acquire();
    const order: string[] = [];
    const track = (name: string, p: Promise<() => void>) => p.then((release) => (order.push(name), release));
    const first = track('new-1', limiter.acquire());
    const again1 = track('again-1', limiter.acquire(undefined, { front: true }));
    const again2 = track('again-2', limiter.acquire(undefined, { front: true }));
    const second = track('new-2', limiter.acquire());
    held();
    for (const p of [again1, again2, first, second]) (await p)();
    expect(order).toEqual(['again-1', 'again-2', 'new-1', 'new-2']);
  });
});
