import { createHash } from 'node:crypto';
import { appendFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS } from '../helpers/backends.js';
import { caseArb as grpcCaseArb, GrpcSender, judge as judgeGrpc, loadProto, STATUS_NAME, type GrpcCase, type Proto } from './grpc-fuzz.js';
import { frameCaseArb, judgeFrames, sendFrames, type FrameCase } from './grpc-frames.js';
import { clip } from './hostile.js';
import { BROKEN_HTTP } from './broken-http.js';
import { Violations } from './report.js';
import { caseArb as restCaseArb, errorShapeProblem, judge as judgeRest, operationsOf, registerPaths, type Op, type RestCase } from './rest-fuzz.js';
import { diffFingerprints, fingerprint, seed as seedWorld, ServiceProcess, type Exit, type World } from './server.js';
import { HttpSender, sendRaw, type Answer } from './transport.js';

/**
 * Fuzzes the real service process over REST and gRPC with malformed requests, on every backend.
 * Replay a run with FUZZ_SEED=<seed> (printed at the start); FUZZ_REST_REQUESTS and
 * FUZZ_GRPC_CALLS change the volume. Every violation is collected, then reported grouped by
 * route, status and error code; the full list goes to a JSON file in the temp directory.
 */

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const REST_REQUESTS = Number(process.env.FUZZ_REST_REQUESTS ?? 2400);
const GRPC_CALLS = Number(process.env.FUZZ_GRPC_CALLS ?? 440);
/** Raw HTTP/2 calls with broken gRPC framing (on top of GRPC_CALLS). */
const GRPC_FRAMES = Number(process.env.FUZZ_GRPC_FRAMES ?? 48);
const REST_CONCURRENCY = 8;
const GRPC_CONCURRENCY = 4;
/** Restarts after crashes per backend before the remaining work is reported as not run. */
const MAX_RESTARTS = 2;

console.log(`[fuzz] seed ${SEED}; replay: FUZZ_SEED=${SEED} npx vitest run test/fuzz`);

/** A per-route seed, so adding a route does not change the requests of the others. */
function subSeed(label: string): number {
  return (SEED ^ createHash('sha256').update(label).digest().readUInt32LE(0)) >>> 0;
}

/** Round-robin over the routes so every stretch of the run mixes them. */
function interleave<T>(lists: T[][]): T[] {
  const out: T[] = [];
  for (let i = 0; lists.some((l) => i < l.length); i++) for (const l of lists) if (i < l.length) out.push(l[i]);
  return out;
}

async function pool<T>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i], i);
      }
    }),
  );
}

/** The line of a crash's output that says what happened. */
function crashReason(exit: Exit): string {
  const lines = exit.tail.split('\n').filter(Boolean);
  const interesting = lines.find((l) => /Error|error|uncaught|throw/.test(l) && !l.startsWith('    at '));
  return clip(interesting ?? lines.at(-1) ?? '', 200);
}

/** Watches the process: a crash is a violation (with the requests in flight), then the service restarts on the same data. */
class CrashGuard {
  epoch = 0;
  restarts = 0;
  dead = false;
  phase = 'setup';
  readonly inFlight = new Map<number, { summary: string; classes: string[] }>();
  private restarting: Promise<void> | null = null;
  private listeners: Array<() => void> = [];

  constructor(
    private readonly service: ServiceProcess,
    private readonly violations: () => Violations,
  ) {
    service.onExit((exit) => this.crashed(exit));
  }

  onRestart(listener: () => void): void {
    this.listeners.push(listener);
  }

  private crashed(exit: Exit): void {
    this.epoch++;
    const inFlight = [...this.inFlight.values()];
    this.violations().add({
      transport: 'process',
      route: this.phase,
      rule: 'crash',
      status: `exit ${exit.code ?? exit.signal}`,
      code: '-',
      classes: [...new Set(inFlight.flatMap((f) => f.classes))],
      request: `in flight: ${inFlight.map((f) => f.summary).join(' || ') || '(none)'}`,
      answer: crashReason(exit),
    });
    if (this.restarts >= MAX_RESTARTS) {
      this.dead = true;
      return;
    }
    this.restarts++;
    this.restarting = this.service.restart().then(
      () => {
        this.restarting = null;
        for (const l of this.listeners) l();
      },
      (error: unknown) => {
        this.restarting = null;
        this.dead = true;
        this.violations().add({ transport: 'process', route: this.phase, rule: 'restart failed', status: '-', code: '-', classes: [], request: '-', answer: clip(String(error), 200) });
      },
    );
  }

  /** A new phase gets its own restart budget (and a service that died for good in the last one is started again). */
  async newPhase(): Promise<void> {
    if (this.restarting) await this.restarting;
    this.restarts = 0;
    if (this.dead || !this.service.alive()) {
      await this.service.restart();
      this.dead = false;
      for (const l of this.listeners) l();
    }
  }

  /** Waits for a restart in progress; false when the service is gone for good. */
  async ready(): Promise<boolean> {
    if (this.restarting) await this.restarting;
    return !this.dead && this.service.alive();
  }
}

/**
 * Bounds a phase: past its time budget, or once the service stops answering (a run of hangs), the
 * rest is not sent and is reported as not run, so a wedged service still ends in a report.
 */
class PhaseBudget {
  stopped: string | null = null;
  private hangsInARow = 0;
  private readonly started = Date.now();

  constructor(private readonly ms: number) {}

  go(): boolean {
    if (!this.stopped && Date.now() - this.started > this.ms) this.stopped = `the phase ran over its ${this.ms / 1000} s budget`;
    return this.stopped === null;
  }

  record(hung: boolean): void {
    this.hangsInARow = hung ? this.hangsInARow + 1 : 0;
    if (this.hangsInARow >= 12 && !this.stopped) this.stopped = '12 requests in a row got no answer (the service looks wedged)';
  }
}
const PHASE_BUDGET_MS = Number(process.env.FUZZ_PHASE_BUDGET_MS ?? 100_000);

const UNHANDLED = /unhandled|uncaught/i;
/** FUZZ_TRACE=<file>: every request and its answer as JSON lines (for refining the generators). */
const TRACE = process.env.FUZZ_TRACE;
/** FUZZ_SERVICE_LOG=<file>: the service's whole log, written to <file>.<backend> after the run. */
const SERVICE_LOG = process.env.FUZZ_SERVICE_LOG;
function trace(entry: Record<string, unknown>): void {
  if (TRACE) appendFileSync(TRACE, `${JSON.stringify(entry)}\n`);
}

for (const backend of BACKENDS) {
  describe(`fuzzing the service process (${backend.name})`, () => {
    let service: ServiceProcess;
    let world: World;
    let before: Record<string, string>;
    let guard: CrashGuard;
    let current = new Violations();
    const all: Violations[] = [];
    const stats: Record<string, unknown> = { backend: backend.name, seed: SEED };

    beforeAll(async () => {
      const started = Date.now();
      service = await ServiceProcess.start(backend.name);
      stats.bootMs = Date.now() - started;
      guard = new CrashGuard(service, () => current);
      world = await seedWorld(service);
      before = await fingerprint(service, world);
      stats.setupMs = Date.now() - started;
    }, 180_000);

    afterAll(async () => {
      const file = path.join(tmpdir(), `protoprune-fuzz-${backend.name}-${SEED}.json`);
      const merged = new Violations();
      for (const v of all) merged.all.push(...v.all);
      merged.writeJson(file, stats);
      console.log(`[fuzz] ${backend.name}: ${JSON.stringify(stats)}\n[fuzz] full report: ${file}`);
      await service?.stop();
    }, 30_000);

    it(`REST: at least 2,000 malformed requests over every route answer 4xx in the error shape, never 5xx, never accept invalid data`, async () => {
      const violations = (current = new Violations());
      all.push(violations);
      guard.phase = 'REST fuzz';
      const started = Date.now();
      const doc = (await service.api('GET', '/openapi.json')).json as Record<string, unknown>;
      const ops = operationsOf(doc);
      registerPaths(ops);
      expect(ops.filter((o) => !o.hidden).length).toBeGreaterThan(10);

      const perRoute = Math.ceil(REST_REQUESTS / ops.length);
      const cases: RestCase[] = interleave(ops.map((op: Op) => fc.sample(restCaseArb(op, world), { seed: subSeed(op.key), numRuns: perRoute })));
      const http = new HttpSender(() => service.httpPort);
      const counts = { http: 0, raw: 0, lost: 0, notRun: 0 };
      const budget = new PhaseBudget(PHASE_BUDGET_MS);
      const perRouteSent = new Map<string, number>();
      const statuses = new Map<string, number>();
      let id = 0;

      const sendOne = async (route: string, summary: string, classes: string[], send: () => Promise<Answer>, check: (a: Answer) => ReturnType<typeof judgeRest>, transport: 'rest' | 'raw-tcp') => {
        if (!budget.go() || !(await guard.ready())) {
          counts.notRun++;
          return;
        }
        const my = id++;
        const epoch = guard.epoch;
        guard.inFlight.set(my, { summary, classes });
        const answer = await send();
        guard.inFlight.delete(my);
        if (transport === 'rest') counts.http++;
        else counts.raw++;
        perRouteSent.set(route, (perRouteSent.get(route) ?? 0) + 1);
        const key = `${answer.status ?? 'none'}`;
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
        trace({ backend: backend.name, transport, route, classes, summary, status: answer.status, error: answer.error, body: answer.body.toString('utf8').slice(0, 300) });
        if (guard.epoch !== epoch && answer.status === null) {
          counts.lost++;
          return;
        }
        const judged = check(answer);
        budget.record(judged.some((j) => j.rule === 'no-answer'));
        for (const j of judged) violations.add({ transport, route, rule: j.rule, status: j.status, code: j.code, classes, request: summary, answer: j.detail });
      };

      await pool(cases, REST_CONCURRENCY, async (c) => {
        await sendOne(
          c.route,
          c.summary,
          c.classes,
          () => (c.transport === 'http' ? http.send(c.request) : sendRaw(service.httpPort, c.raw!.bytes, { halfClose: c.raw!.halfClose })),
          (a) => judgeRest(c, a),
          c.transport === 'http' ? 'rest' : 'raw-tcp',
        );
      });

      // Broken HTTP syntax no route template can express.
      await pool(BROKEN_HTTP, 4, async (b) => {
        await sendOne(
          'raw-tcp (no route)',
          `${b.name}: ${clip(b.bytes.toString('latin1'), 100)}`,
          [b.name],
          () => sendRaw(service.httpPort, b.bytes, { halfClose: b.halfClose }),
          (a) => {
            if (a.status === null) return b.mayClose ? [] : [{ rule: 'no-answer', status: 'no-answer', code: '-', detail: a.error ?? 'closed' }];
            const out = [];
            if (a.status >= 500) out.push({ rule: '5xx', status: String(a.status), code: '-', detail: clip(a.body.toString('utf8'), 160) });
            if (a.status >= 400 && a.status < 500) {
              const problem = errorShapeProblem(a);
              if (problem) out.push({ rule: `error-shape (${problem})`, status: String(a.status), code: '-', detail: clip(a.body.toString('utf8'), 160) });
            }
            return out;
          },
          'raw-tcp',
        );
      });
      http.close();

      Object.assign(stats, {
        restRequests: counts.http + counts.raw,
        restHttp: counts.http,
        restRawTcp: counts.raw,
        restLostToCrash: counts.lost,
        restNotRun: counts.notRun,
        restRoutes: ops.length,
        restMs: Date.now() - started,
        restStatuses: Object.fromEntries([...statuses.entries()].sort()),
      });
      const missing = ops.filter((o) => (perRouteSent.get(o.key) ?? 0) < 10).map((o) => o.key);
      if (missing.length) violations.add({ transport: 'rest', route: missing.join(', '), rule: 'route not covered', status: '-', code: '-', classes: [], request: '-', answer: '-' });
      if (counts.notRun > 0) violations.add({ transport: 'process', route: 'REST fuzz', rule: `${counts.notRun} request(s) not sent: ${budget.stopped ?? 'the service was down for good'}`, status: '-', code: '-', classes: [], request: '-', answer: '-' });
      if (violations.size > 0) throw new Error(violations.summary(`[${backend.name}] REST fuzz, seed ${SEED}`));
      expect(counts.http + counts.raw + counts.notRun).toBeGreaterThanOrEqual(Math.min(2000, REST_REQUESTS));
    }, 180_000);

    it(`gRPC: at least 200 malformed calls over every method never answer INTERNAL/UNKNOWN/DATA_LOSS and never accept invalid data`, async () => {
      const violations = (current = new Violations());
      all.push(violations);
      guard.phase = 'gRPC fuzz';
      const started = Date.now();
      await guard.newPhase();
      const proto: Proto = loadProto();
      expect(proto.methods.length).toBeGreaterThan(10);
      const perMethod = Math.ceil(GRPC_CALLS / proto.methods.length);
      const generated = interleave(proto.methods.map((m) => fc.sample(grpcCaseArb(m, proto, world), { seed: subSeed(`grpc ${m.name}`), numRuns: perMethod })));
      const cases: GrpcCase[] = generated;
      const byName = new Map(proto.methods.map((m) => [m.name, m]));
      const sender = new GrpcSender(proto, () => service.grpcPort);
      guard.onRestart(() => sender.reconnect());
      const counts = { sent: 0, raw: 0, frames: 0, lost: 0, notRun: 0 };
      const budget = new PhaseBudget(PHASE_BUDGET_MS * 0.7);
      const perMethodSent = new Map<string, number>();
      const statuses = new Map<string, number>();
      let id = 1_000_000;

      const runTyped = (list: GrpcCase[]) => pool(list, GRPC_CONCURRENCY, async (c) => {
        if (!budget.go() || !(await guard.ready())) {
          counts.notRun++;
          return;
        }
        const my = id++;
        const epoch = guard.epoch;
        guard.inFlight.set(my, { summary: c.summary, classes: c.classes });
        const answer = await sender.send(c, byName.get(c.method)!, world);
        guard.inFlight.delete(my);
        counts.sent++;
        if (c.kind === 'raw') counts.raw++;
        perMethodSent.set(c.method, (perMethodSent.get(c.method) ?? 0) + 1);
        const name = answer.code === -1 ? 'CLIENT' : (STATUS_NAME.get(answer.code) ?? String(answer.code));
        statuses.set(name, (statuses.get(name) ?? 0) + 1);
        trace({ backend: backend.name, transport: 'grpc', route: c.method, classes: c.classes, summary: c.summary, expect: c.expect, fatal: c.fatal, status: name, details: answer.details, errorCode: answer.errorCode });
        if (guard.epoch !== epoch && (answer.code === 14 || answer.code === 1 || answer.code === 4)) {
          counts.lost++;
          return;
        }
        const judged = judgeGrpc(c, answer);
        budget.record(judged.some((j) => j.rule.startsWith('hang')));
        for (const j of judged) violations.add({ transport: 'grpc', route: c.method, rule: j.rule, status: j.status, code: j.code, classes: c.classes, request: c.summary, answer: j.detail });
      });
      const frames: FrameCase[] = fc.sample(frameCaseArb(proto, world), { seed: subSeed('grpc frames'), numRuns: GRPC_FRAMES });
      const runFrames = () => pool(frames, GRPC_CONCURRENCY, async (c) => {
        if (!budget.go() || !(await guard.ready())) {
          counts.notRun++;
          return;
        }
        const my = id++;
        const epoch = guard.epoch;
        guard.inFlight.set(my, { summary: c.summary, classes: [c.kind] });
        const answer = await sendFrames(service.grpcPort, c);
        guard.inFlight.delete(my);
        counts.frames++;
        const name = answer.grpcStatus === null ? `http-${answer.httpStatus ?? 'none'}` : (STATUS_NAME.get(answer.grpcStatus) ?? String(answer.grpcStatus));
        statuses.set(`frames:${name}`, (statuses.get(`frames:${name}`) ?? 0) + 1);
        trace({ backend: backend.name, transport: 'grpc-frames', route: c.method, classes: [c.kind], summary: c.summary, status: name, http: answer.httpStatus, rst: answer.rstCode, details: answer.grpcMessage, error: answer.error });
        if (guard.epoch !== epoch) {
          counts.lost++;
          return;
        }
        const judged = judgeFrames(c, answer);
        budget.record(judged.some((j) => j.rule.startsWith('hang')));
        for (const j of judged) violations.add({ transport: 'grpc', route: `${c.method} (raw HTTP/2)`, rule: j.rule, status: j.status, code: '-', classes: [`frame-${c.kind}`], request: c.summary, answer: j.detail });
      });
      // Calls whose text the server may echo into error metadata go last: a crash there must not hide the rest.
      await runTyped(cases.filter((c) => !c.risky));
      await runFrames();
      await runTyped(cases.filter((c) => c.risky));
      sender.close();

      Object.assign(stats, {
        grpcCalls: counts.sent,
        grpcRawCalls: counts.raw,
        grpcFrameCalls: counts.frames,
        grpcLostToCrash: counts.lost,
        grpcNotRun: counts.notRun,
        grpcMethods: proto.methods.length,
        grpcMs: Date.now() - started,
        grpcStatuses: Object.fromEntries([...statuses.entries()].sort()),
      });
      const missing = proto.methods.filter((m) => (perMethodSent.get(m.name) ?? 0) < 5).map((m) => m.name);
      if (missing.length) violations.add({ transport: 'grpc', route: missing.join(', '), rule: 'method not covered', status: '-', code: '-', classes: [], request: '-', answer: '-' });
      if (counts.notRun > 0) violations.add({ transport: 'process', route: 'gRPC fuzz', rule: `${counts.notRun} call(s) not sent: ${budget.stopped ?? `the service crashed ${guard.restarts + 1} time(s)`}`, status: '-', code: '-', classes: [], request: '-', answer: '-' });
      if (violations.size > 0) throw new Error(violations.summary(`[${backend.name}] gRPC fuzz, seed ${SEED}`));
      expect(counts.sent + counts.notRun).toBeGreaterThanOrEqual(Math.min(200, GRPC_CALLS));
    }, 180_000);

    it('afterwards the process is alive and ready, its log has no unhandled/uncaught or error-level lines, and the stored data is unchanged', async () => {
      const violations = (current = new Violations());
      all.push(violations);
      guard.phase = 'after the fuzzing';
      await guard.ready();
      const alive = service.alive();
      const ready = alive ? await service.readyz() : null;
      if (!alive || ready !== 200) {
        violations.add({ transport: 'process', route: '-', rule: 'not alive and ready after the run', status: `alive=${alive} readyz=${ready}`, code: '-', classes: [], request: '-', answer: '-' });
      }
      if (service.exits.length > 0) {
        violations.add({ transport: 'process', route: '-', rule: `crashed ${service.exits.length} time(s) during the run (restarted on the same data)`, status: '-', code: '-', classes: [], request: '-', answer: '-' });
      }
      if (SERVICE_LOG) writeFileSync(`${SERVICE_LOG}.${backend.name}`, `${service.logLines().join('\n')}\n`);
      const seen = new Map<string, { count: number; line: string }>();
      for (const line of service.logLines()) {
        // Unhandled/uncaught anywhere, and any error-level (50+) JSON line: hostile input is the client's error, not the server's.
        let key: string | null = UNHANDLED.test(line) ? clip(line, 120) : null;
        try {
          const entry = JSON.parse(line) as { level?: number; msg?: string; err?: { type?: string; message?: string; code?: string } };
          if (UNHANDLED.test(line) || (entry.level ?? 0) >= 50) key = `${entry.msg} ${entry.err?.type ?? ''} ${clip(entry.err?.message ?? '', 80)}`;
        } catch {
          /* a plain stderr line */
        }
        if (key === null) continue;
        const s = seen.get(key) ?? { count: 0, line };
        s.count++;
        seen.set(key, s);
      }
      for (const [key, s] of seen) violations.add({ transport: 'log', route: key, rule: `log line ×${s.count}`, status: '-', code: '-', classes: [], request: '-', answer: clip(s.line, 200) });
      if (!alive || ready !== 200) await service.restart();
      let after: Record<string, string>;
      try {
        after = await fingerprint(service, world);
      } catch (error) {
        // A wedged service: one restart on the same data, then the stored data is compared.
        violations.add({ transport: 'process', route: '-', rule: 'fingerprint unreadable (restarted)', status: '-', code: '-', classes: [], request: '-', answer: clip(String(error), 160) });
        await service.restart();
        after = await fingerprint(service, world);
      }
      // Every seeded item, whatever its id (spaces, emoji, slashes, 150 characters), must be readable by its URL.
      for (const [key, value] of Object.entries(before)) {
        if (key.startsWith('item ') && !value.startsWith('200 ')) {
          violations.add({ transport: 'rest', route: 'GET /v1/datasets/{dataset}/items/{externalId}', rule: 'stored item not addressable', status: value.split(' ')[0], code: '-', classes: [], request: key, answer: value });
        }
      }
      for (const change of diffFingerprints(before, after)) violations.add({ transport: 'data', route: change.split(':')[0], rule: 'stored data changed', status: '-', code: '-', classes: [], request: '-', answer: clip(change, 200) });
      stats.unhandledLogLines = [...seen.values()].reduce((n, s) => n + s.count, 0);
      stats.fingerprintChanges = diffFingerprints(before, after).length;
      if (violations.size > 0) throw new Error(violations.summary(`[${backend.name}] after the fuzzing, seed ${SEED}`));
    }, 90_000);
  });
}
