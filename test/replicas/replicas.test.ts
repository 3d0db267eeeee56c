import { afterEach, describe, expect, it } from 'vitest';
import { NATIVE_URL } from '../helpers/backends.js';
import {
  alive,
  JOB_STALE_MS,
  jobLogs,
  killReplica,
  LIVE_CLUSTERS,
  pauseReplica,
  replicaLogs,
  resumeReplica,
  sleep,
  startCluster,
  waitFor,
  type Cluster,
  type Replica,
} from './cluster.js';
import { checkInvariants, describeReplicas, Findings, takeBaseline } from './invariants.js';
import { parseDeadlocks } from './pglog.js';
import { Corpus, ingestBatch, ingestLoad, readerLoad, Traffic } from './traffic.js';

/**
 * Three real service processes (`node --import tsx src/main.ts`) on one fresh schema of the native
 * test database per scenario, driven over REST by concurrent clients through a round-robin
 * "load balancer":
 *
 *   a. concurrent ingest (20 clients × batches of 100, 30 % re-sends with new vectors; a small
 *      admission limit, so there is backpressure), then one refit requested through all three at
 *      once → exactly one job, which succeeds; then more ingest while a reader pages selections;
 *   b. kill -9 of the replica running a refit, mid-fit → another replica finishes it (attempt 2);
 *   c. SIGSTOP of the runner for longer than JOB_STALE_MS under concurrent ingest → another replica
 *      takes the job over and finishes it; after SIGCONT the paused one writes nothing;
 *   d. the background ANN indexer of all three under replaced-item ingest for
 *      REPLICAS_INDEXER_SECONDS (default 20 s; 60 s for a soak).
 *
 * Every scenario ends with the same invariants (see invariants.ts): active version exists, one
 * score row per item, selection total = item count on every replica (and a paged walk across
 * replicas yields each item once), item_ann agrees with items once ann_pending drained, no
 * deadlocks (pg_stat_database and the server log), no 5xx except 503 + Retry-After, no crash.
 * Violations are collected and reported together; logs and numbers are kept under
 * $TMPDIR/protoprune-replicas/<scenario>/.
 *
 * Native only: without TEST_DATABASE_URL just the harness's own checks below run.
 *
 *   TEST_DATABASE_URL=postgres://… npx vitest run test/replicas        (about 2–3 min)
 *   REPLICAS_INDEXER_SECONDS=60   scenario d's soak length (default 20)
 *   REPLICAS_KEEP_SCHEMA=1        keep each scenario's schema for inspection
 *   REPLICAS_PG_LOG=/path         the server log (default: newest /var/log/postgresql/postgresql-*-main.log)
 */

const DIM = 32;
const INDEXER_SECONDS = Number(process.env.REPLICAS_INDEXER_SECONDS ?? 20);
const SCENARIO_TIMEOUT_MS = 170_000 + INDEXER_SECONDS * 1000;
/**
 * Scenario a runs its replicas with a small admission limit, so 20 clients meet backpressure:
 * refusals must be 503 with Retry-After (clients then wait and retry). A server without admission
 * control ignores these variables.
 */
const BACKPRESSURE_ENV = { ADMISSION_MAX_IN_FLIGHT: '4', ADMISSION_MAX_QUEUED: '2', ADMISSION_QUEUE_TIMEOUT_MS: '1000' };

interface Run {
  cluster: Cluster;
  traffic: Traffic;
  findings: Findings;
  dataset: string;
  corpus: Corpus;
}

interface JobRowView {
  id: string;
  state: string;
  phase: string | null;
  attempts: number;
  done: number;
  result: Record<string, unknown> | null;
  error: string | null;
}

async function jobRow(cluster: Cluster, id: string): Promise<JobRowView> {
  const [row] = await cluster.sql<JobRowView>(
    'SELECT id, state::text AS state, phase, attempts, progress_done::float8 AS done, result, error FROM jobs WHERE id = $1',
    [id],
  );
  return row;
}

async function createDataset(run: Run, body: Record<string, unknown>): Promise<void> {
  const answer = await run.traffic.send('POST', '/v1/datasets', { name: run.dataset, dimension: DIM, ...body });
  if (answer?.status !== 201) throw new Error(`creating dataset ${run.dataset}: ${answer?.status} ${answer?.text.slice(0, 300)}`);
}

async function requestRefit(run: Run, replica?: Replica): Promise<string> {
  const answer = await run.traffic.send('POST', `/v1/datasets/${run.dataset}/prototypes/refit`, undefined, { replica });
  if (answer?.status !== 202) throw new Error(`refit request: ${answer?.status} ${answer?.text.slice(0, 300)}`);
  return (answer.json as { id: string }).id;
}

async function waitJobDone(run: Run, id: string, timeoutMs: number): Promise<JobRowView> {
  return waitFor(`job ${id} to finish`, timeoutMs, async () => {
    const row = await jobRow(run.cluster, id);
    return row.state === 'succeeded' || row.state === 'failed' || row.state === 'cancelled' ? row : undefined;
  });
}

/**
 * The replicas that logged "job succeeded" for the job. The row is marked before the line is
 * logged, and the line crosses a pipe, so a finished row does not mean the line is readable yet.
 */
async function finishersOf(run: Run, id: string): Promise<string[]> {
  const lines = await waitFor(`a replica to log "job succeeded" for ${id}`, 10_000, () => {
    const found = jobLogs(run.cluster.replicas, id, 'job succeeded');
    return found.length > 0 ? found : undefined;
  }).catch(() => []);
  return lines.map((l) => l.replica.name);
}

/** Waits until the refit is iterating (phase fit / fit-warmup, ≥ 1 iteration) and says which replica runs it. */
async function runnerMidFit(run: Run, id: string): Promise<Replica> {
  const row = await waitFor(`job ${id} to be mid-fit`, 60_000, async () => {
    const r = await jobRow(run.cluster, id);
    if (r.state === 'succeeded' || r.state === 'failed') return r;
    return r.state === 'running' && (r.phase === 'fit' || r.phase === 'fit-warmup') && r.done >= 1 ? r : undefined;
  }, 20);
  if (row.state !== 'running') throw new Error(`the refit ended (${row.state}) before it could be interrupted mid-fit: the scenario's fit is too short`);
  const started = await waitFor(`a replica to log "job started" for ${id}`, 10_000, () => jobLogs(run.cluster.replicas, id, 'job started')[0]);
  return started.replica;
}

/** The replica that claimed the job (its "job started" line for attempt `attempt`). */
async function runnerOf(run: Run, id: string, attempt = 1): Promise<Replica> {
  const started = await waitFor(`a replica to log "job started" for ${id} (attempt ${attempt})`, 20_000, () =>
    jobLogs(run.cluster.replicas, id, 'job started').find((l) => l.line.attempt === attempt),
  );
  return started.replica;
}

/** Stops a load and waits for its clients; requests still hanging after `graceMs` are cut (and reported). */
async function finishLoad(traffic: Traffic, load: Promise<unknown>, stop: () => void, graceMs = 20_000): Promise<void> {
  stop();
  const finished = await Promise.race([load.then(() => true), sleep(graceMs).then(() => false)]);
  if (!finished) {
    traffic.abort();
    await load;
  }
}

/** Backends of `replica` inside a transaction that is waiting for its client (a paused process's). */
async function idleInTransaction(cluster: Cluster, replica: Replica): Promise<string[]> {
  const rows = await cluster.sql<{ query: string }>(
    `SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 100) AS query FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'`,
    [`${cluster.tag}-${replica.name}`],
  );
  return rows.map((r) => r.query);
}

function stateOf(job: JobRowView): string {
  return `state=${job.state}, attempts=${job.attempts}, phase=${job.phase}${job.error ? `, error=${job.error}` : ''}`;
}

/** The rows a refit writes, to compare before and after a paused replica resumes. */
async function writeSnapshot(cluster: Cluster, datasetId: string, jobId: string): Promise<Record<string, Array<Record<string, unknown>>>> {
  return {
    job: await cluster.sql(
      `SELECT state::text AS state, attempts, phase, progress_done::text AS done, result::text AS result, error, finished_at AS "finishedAt", updated_at AS "updatedAt" FROM jobs WHERE id = $1`,
      [jobId],
    ),
    jobs: await cluster.sql(`SELECT count(*)::int AS n FROM jobs WHERE dataset_id = $1`, [datasetId]),
    dataset: await cluster.sql(`SELECT active_version AS "activeVersion", updated_at AS "updatedAt" FROM datasets WHERE id = $1`, [datasetId]),
    prototypeSets: await cluster.sql(
      `SELECT version, id::text AS id, fit_items::text AS "fitItems", objective, revision, items_since_fit::text AS "sinceFit", updated_at AS "updatedAt" FROM prototype_sets WHERE dataset_id = $1 ORDER BY version`,
      [datasetId],
    ),
    prototypes: await cluster.sql(`SELECT count(*)::int AS n FROM prototypes p JOIN prototype_sets s ON s.id = p.set_id WHERE s.dataset_id = $1`, [datasetId]),
    scores: await cluster.sql(`SELECT version, count(*)::int AS n, round(sum(score)::numeric, 3)::text AS sum FROM item_scores WHERE dataset_id = $1 GROUP BY version ORDER BY version`, [datasetId]),
    items: await cluster.sql(`SELECT count(*)::int AS n, max(updated_at) AS last FROM items WHERE dataset_id = $1`, [datasetId]),
  };
}

/** `table: field a→b` for every value that differs between two snapshots (rows matched by position). */
function snapshotChanges(before: Record<string, Array<Record<string, unknown>>>, after: Record<string, Array<Record<string, unknown>>>): string[] {
  const show = (v: unknown) => {
    const text = v instanceof Date ? v.toISOString() : JSON.stringify(v);
    return text.length > 60 ? `${text.slice(0, 60)}…` : text;
  };
  const changes: string[] = [];
  for (const table of Object.keys(before)) {
    const [a, b] = [before[table], after[table]];
    if (a.length !== b.length) changes.push(`${table}: ${a.length} rows → ${b.length} rows`);
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      for (const field of Object.keys(a[i])) {
        if (show(a[i][field]) !== show(b[i][field])) changes.push(`${table}${a.length > 1 ? `[${i}]` : ''}.${field}: ${show(a[i][field])} → ${show(b[i][field])}`);
      }
    }
    if (b.length > a.length) changes.push(`${table} new rows: ${b.slice(a.length).map((r) => show(r)).join(', ')}`);
  }
  return changes;
}

async function scenario(name: string, dataset: string, corpusSeed: number, body: (run: Run) => Promise<void>, env?: Record<string, string>): Promise<void> {
  const findings = new Findings(name);
  const baseline = await takeBaseline();
  const startedAt = Date.now();
  let cluster: Cluster;
  try {
    cluster = await startCluster({ scenario: name, env });
  } catch (error) {
    findings.fail('three replicas boot', (error as Error).message.slice(0, 2000));
    findings.save();
    throw new Error(findings.summary());
  }
  findings.note('bootMs', Date.now() - startedAt);
  findings.note('initialAdminKeysMinted', cluster.mintedKeys);
  const run: Run = { cluster, traffic: new Traffic(cluster), findings, dataset, corpus: new Corpus(DIM, 16, corpusSeed, `${name}-item`) };
  try {
    try {
      await body(run);
    } catch (error) {
      findings.fail('scenario steps', (error as Error).message);
    }
    try {
      await checkInvariants({ ...run, baseline });
    } catch (error) {
      findings.fail('invariant checks ran', (error as Error).stack ?? String(error));
    }
  } finally {
    findings.note('replicas', describeReplicas(cluster.replicas));
    findings.note('logs', cluster.saveLogs(name));
    findings.note('scenarioMs', Date.now() - startedAt);
    findings.save();
    await cluster.stop();
  }
  if (findings.violations.length > 0) throw new Error(`${findings.summary()}\n  (numbers and replica logs: ${findings.facts.logs})`);
}

describe('replica harness', () => {
  it('attributes "deadlock detected" log lines to the backend pids involved', () => {
    const log = [
      '2026-12-01 10:00:00.000 UTC [111] protoprune@protoprune_test ERROR:  deadlock detected',
      '2026-12-01 10:00:00.000 UTC [111] protoprune@protoprune_test DETAIL:  Process 111 waits for ShareLock on transaction 9; blocked by process 222.',
      '\tProcess 222 waits for ShareLock on transaction 8; blocked by process 111.',
      '\tProcess 111: INSERT INTO item_ann ...',
      '\tProcess 222: WITH batch AS (',
      '\t       DELETE FROM ann_pending)',
      '2026-12-01 10:00:00.000 UTC [111] protoprune@protoprune_test STATEMENT:  INSERT INTO item_ann ...',
      '2026-12-01 10:00:01.000 UTC [333] LOG:  checkpoint starting: time',
    ].join('\n');
    const [report, ...rest] = parseDeadlocks(log);
    expect(rest).toEqual([]);
    expect(report.pid).toBe(111);
    expect(report.involved.sort()).toEqual([111, 222]);
    expect(report.genuine).toBe(true);
    expect(report.statements).toEqual(['INSERT INTO item_ann ...', 'WITH batch AS ( DELETE FROM ann_pending)']);
    expect(report.text).not.toContain('checkpoint');
    expect(parseDeadlocks('2026-12-01 10:00:01.000 UTC [333] LOG:  checkpoint starting: time')).toEqual([]);
    // A client raising the message (as error-mapping tests do) is not a deadlock of the server.
    const raised = parseDeadlocks(
      "2026-12-01 10:00:02.000 UTC [444] protoprune@protoprune_test ERROR:  deadlock detected\n2026-12-01 10:00:02.000 UTC [444] protoprune@protoprune_test STATEMENT:  DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; END $$",
    );
    expect(raised.map((r) => [r.pid, r.genuine])).toEqual([[444, false]]);
  });

  it('re-sends only acknowledged ids, never twice in one batch, and summarises violations compactly', () => {
    const corpus = new Corpus(8, 4, 7);
    const first = corpus.batch(50, 0.9);
    expect(new Set(first.map((i) => i.externalId)).size).toBe(50);
    for (const item of first.slice(0, 20)) {
      corpus.acked.add(item.externalId);
      corpus.ackedList.push(item.externalId);
    }
    const second = corpus.batch(50, 0.5);
    const ids = second.map((i) => i.externalId);
    expect(new Set(ids).size).toBe(50);
    const resent = ids.filter((id) => corpus.acked.has(id));
    expect(resent.length).toBeGreaterThan(0);
    expect(ids.filter((id) => first.some((f) => f.externalId === id) && !corpus.acked.has(id))).toEqual([]);
    for (const item of second) expect(Math.hypot(...item.embedding)).toBeGreaterThan(0.5);

    const findings = new Findings('x');
    findings.check(true, 'fine', 'unused');
    findings.fail('no 5xx', 'x'.repeat(1000));
    expect(findings.violations).toHaveLength(1);
    expect(findings.summary().length).toBeLessThan(800);
  });
});

// Declared only with a native database (as test/helpers/backends.ts BACKENDS does), so a run
// without one lists no skipped tests.
if (NATIVE_URL) describe('three replicas on one database (native)', () => {
  // A scenario that timed out still has its processes running: stop them before the next one.
  afterEach(async () => {
    for (const cluster of [...LIVE_CLUSTERS]) await cluster.stop();
  });

  it(
    'a: concurrent ingest through all three, then one refit requested through all three at once',
    () =>
      scenario('a', 'replicas-a', 1, async (run) => {
        const { cluster, traffic, findings } = run;
        await createDataset(run, { k: 32, settings: { minItemsForFit: 1_000_000_000, autoRefit: false } });
        let t = Date.now();
        await ingestLoad(traffic, run.dataset, run.corpus, { clients: 20, batchSize: 100, resend: 0.3, batches: 3 });
        findings.note('ingestPhase1', { ms: Date.now() - t, writes: run.corpus.writes, distinctIds: run.corpus.acked.size });

        // The same refit asked for through every replica at the same instant.
        const answers = await Promise.all(cluster.replicas.map((r) => traffic.send('POST', `/v1/datasets/${run.dataset}/prototypes/refit`, undefined, { replica: r })));
        const ids = new Set<string>();
        answers.forEach((a, i) => {
          if (a?.status !== 202) findings.fail('refit request answered 202', `via ${cluster.replicas[i].name}: ${a ? `${a.status} ${a.text.slice(0, 200)}` : 'no answer'}`);
          else ids.add((a.json as { id: string }).id);
        });
        const [{ n: refitJobs }] = await cluster.sql<{ n: number }>(
          `SELECT count(*)::int AS n FROM jobs j JOIN datasets d ON d.id = j.dataset_id WHERE d.name = $1 AND j.kind = 'refit'`,
          [run.dataset],
        );
        findings.note('refitJobIds', [...ids]);
        findings.check(ids.size === 1 && refitJobs === 1, 'three simultaneous refit requests → exactly one refit job', `answers named ${ids.size} job ids; ${refitJobs} refit rows in jobs`);
        const jobId = [...ids][0];
        if (!jobId) throw new Error('no refit job id');
        t = Date.now();
        const done = await waitJobDone(run, jobId, 90_000);
        findings.note('refitMs', Date.now() - t);
        findings.check(done.state === 'succeeded' && done.attempts === 1, 'the refit succeeds at its first attempt', stateOf(done));
        const starts = jobLogs(cluster.replicas, jobId, 'job started');
        findings.note('refitRunners', starts.map((s) => s.replica.name));
        findings.check(starts.length === 1, 'the refit ran on exactly one replica', `"job started" logged ${starts.length}× (${starts.map((s) => s.replica.name).join(',')})`);

        // Writes after the switch (scored under the new version) while a reader pages selections.
        let stop = false;
        const reader = readerLoad(traffic, run.dataset, () => stop);
        t = Date.now();
        await ingestLoad(traffic, run.dataset, run.corpus, { clients: 10, batchSize: 100, resend: 0.5, batches: 2 });
        stop = true;
        findings.note('ingestPhase2', { ms: Date.now() - t, readerRequests: await reader });
      }, BACKPRESSURE_ENV),
    SCENARIO_TIMEOUT_MS,
  );

  it(
    'b: kill -9 of the replica running a refit, mid-fit: another replica finishes it',
    () =>
      scenario('b', 'replicas-b', 2, async (run) => {
        const { cluster, traffic, findings, corpus } = run;
        // k and the iteration count (tolerance 0: no early stop) make the fit last a few seconds.
        await createDataset(run, { k: 64, settings: { minItemsForFit: 1_000_000_000, autoRefit: false, maxIterations: 150, tolerance: 0 } });
        await ingestLoad(traffic, run.dataset, corpus, { clients: 4, batchSize: 1000, resend: 0, batches: 2 });
        let stop = false;
        const writes = ingestLoad(traffic, run.dataset, corpus, { clients: 3, batchSize: 100, resend: 0.5, stop: () => stop, pauseMs: 50 });
        let done: JobRowView;
        let runner: Replica;
        let killedAt: number;
        try {
          const jobId = await requestRefit(run);
          runner = await runnerMidFit(run, jobId);
          killReplica(runner);
          killedAt = Date.now();
          findings.note('killed', { replica: runner.name, job: stateOf(await jobRow(cluster, jobId)) });
          done = await waitJobDone(run, jobId, JOB_STALE_MS + 60_000);
        } finally {
          await finishLoad(traffic, writes, () => (stop = true));
        }
        findings.note('killToDoneMs', Date.now() - killedAt);
        findings.check(done.state === 'succeeded', 'the interrupted refit succeeds', stateOf(done));
        findings.check(done.attempts === 2, 'it succeeded at attempt 2', stateOf(done));
        const finishers = await finishersOf(run, done.id);
        findings.note('finishers', finishers);
        findings.check(finishers.length === 1 && finishers[0] !== runner.name, 'another replica finished it', `"job succeeded" logged by [${finishers.join(',')}], killed ${runner.name}`);
        const [ds] = await cluster.sql<{ active: number }>('SELECT active_version AS active FROM datasets WHERE name = $1', [run.dataset]);
        findings.check(done.result?.version === ds.active, "the job's version is the active one", `job result version ${String(done.result?.version)}, active ${ds.active}`);
      }),
    SCENARIO_TIMEOUT_MS,
  );

  it(
    'c: SIGSTOP of the refit runner beyond JOB_STALE_MS under ingest: another replica finishes; after SIGCONT the paused one writes nothing',
    () =>
      scenario('c', 'replicas-c', 3, async (run) => {
        const { cluster, traffic, findings, corpus } = run;
        // A longer fit than b's: the pause must land inside it, where the runner holds no transaction.
        await createDataset(run, { k: 64, settings: { minItemsForFit: 1_000_000_000, autoRefit: false, maxIterations: 600, tolerance: 0 } });
        await ingestLoad(traffic, run.dataset, corpus, { clients: 4, batchSize: 1000, resend: 0, batches: 2 });
        const [{ id: datasetId }] = await cluster.sql<{ id: string }>('SELECT id FROM datasets WHERE name = $1', [run.dataset]);
        let stop = false;
        const writes = ingestLoad(traffic, run.dataset, corpus, { clients: 3, batchSize: 100, resend: 0.5, stop: () => stop, pauseMs: 50 });
        let runner: Replica;
        let jobId: string;
        try {
          jobId = await requestRefit(run);
          // As soon as it is known, the runner is drained as a load balancer would drain it: a paused
          // process inside an ingest transaction would hold the dataset's row lock and stall every
          // replica, leases or not (that case is not what this scenario is about).
          runner = await runnerOf(run, jobId);
          runner.routable = false;
          await traffic.drained(runner);
          await runnerMidFit(run, jobId);
          pauseReplica(runner);
          findings.note('paused', { replica: runner.name, job: stateOf(await jobRow(cluster, jobId)) });
          await sleep(200);
          const open = await idleInTransaction(cluster, runner);
          if (open.length > 0) {
            resumeReplica(runner);
            throw new Error(`the pause landed inside a transaction of ${runner.name} (${open.join(' | ')}); resumed at once: the fit was too short to pause inside`);
          }
          const stolen = await waitFor('another replica to take the job over', JOB_STALE_MS + 20_000, async () => {
            const row = await jobRow(cluster, jobId);
            // 'queued' is the step between the requeue of the stale run and another replica's claim.
            return row.attempts >= 2 || (row.state !== 'running' && row.state !== 'queued') ? row : undefined;
          });
          findings.note('takeoverMs', Date.now() - runner.pausedAt!);
          findings.check(stolen.attempts === 2, 'the stale job is taken over (attempt 2)', stateOf(stolen));
          const done = await waitJobDone(run, jobId, 60_000);
          findings.note('fitMs', (done.result?.timings as { fitMs?: number } | undefined)?.fitMs);
          findings.check(done.state === 'succeeded' && done.attempts === 2, 'the taken-over refit succeeds at attempt 2', stateOf(done));
          const finishers = await finishersOf(run, jobId);
          findings.check(finishers.length === 1 && finishers[0] !== runner.name, 'another replica finished it', `"job succeeded" by [${finishers.join(',')}], paused ${runner.name}`);
          const stillPaused = runner.state === 'paused';
          findings.check(stillPaused, 'the runner stayed paused until the job was finished elsewhere', `${runner.name} state ${runner.state}`);
        } finally {
          await finishLoad(traffic, writes, () => (stop = true));
        }
        if (runner.state !== 'paused') return;
        findings.note('pausedMs', Date.now() - runner.pausedAt!);

        // Each ingest leaves its centroid deltas for a replica to fold into the prototype set just
        // after it answered: once every one is folded (the fold deletes them in the transaction that
        // writes the set), it is quiet, and whatever changes from here on was written by the resumed replica.
        await waitFor('the ingests’ centroid deltas to be folded', 30_000, async () => {
          const [{ n }] = await cluster.sql<{ n: number }>('SELECT count(*)::int AS n FROM centroid_deltas WHERE dataset_id = $1', [datasetId]);
          return n === 0;
        });
        const before = await writeSnapshot(cluster, datasetId, jobId);
        resumeReplica(runner);
        runner.routable = false;
        const resumedAt = runner.resumedAt!;
        const ended = await waitFor('the resumed replica to end its run of the job', 25_000, () =>
          replicaLogs(runner).find((l) => l.jobId === jobId && l.msg !== 'job started' && Date.parse(String(l.time)) >= resumedAt - 50),
        ).catch(() => undefined);
        await sleep(1500);
        findings.note('resumedRunEnded', ended ? `${ended.msg} after ${Date.parse(String(ended.time)) - resumedAt} ms` : 'no log line within 25 s');
        const after = await writeSnapshot(cluster, datasetId, jobId);
        const changes = snapshotChanges(before, after);
        findings.note('changedAfterResume', changes);
        findings.check(changes.length === 0, 'the resumed replica writes nothing', `${changes.length} changes after SIGCONT: ${changes.join('; ')}`);
        const claimed = replicaLogs(runner).filter((l) => l.jobId === jobId && l.msg === 'job succeeded');
        findings.check(claimed.length === 0, 'the resumed replica does not report the job succeeded', `${runner.name} logged "job succeeded" for its stale run`);
        findings.check(alive(runner), 'the resumed replica keeps running', `${runner.name} exited`);
        runner.routable = true;
      }),
    SCENARIO_TIMEOUT_MS,
  );

  it(
    `d: the ANN indexer of all three replicas under replaced-item ingest for ${INDEXER_SECONDS} s`,
    () =>
      scenario('d', 'replicas-d', 4, async (run) => {
        const { traffic, findings, corpus } = run;
        await createDataset(run, { k: 32, settings: { minItemsForFit: 1_000_000_000, autoRefit: false } });
        await ingestLoad(traffic, run.dataset, corpus, { clients: 3, batchSize: 1000, resend: 0, batches: 1 });
        const done = await waitJobDone(run, await requestRefit(run), 60_000);
        if (done.state !== 'succeeded') throw new Error(`seed refit: ${stateOf(done)}`);
        const until = Date.now() + INDEXER_SECONDS * 1000;
        const over = () => Date.now() >= until;
        let scoreCalls = 0;
        const scorer = (async () => {
          while (!over()) {
            const answer = await traffic.send('POST', `/v1/datasets/${run.dataset}/score`, { items: Array.from({ length: 20 }, (_, i) => ({ externalId: `probe-${i}`, embedding: corpus.vector() })) });
            if (answer && answer.status !== 200) traffic.unexpected.push({ replica: answer.replica.name, what: 'POST score', status: answer.status, body: answer.text.slice(0, 300) });
            scoreCalls++;
            await sleep(200);
          }
        })();
        const reader = readerLoad(traffic, run.dataset, over, 300);
        // Mostly replaced items: each one moves its row out of item_ann and back into ann_pending.
        await ingestLoad(traffic, run.dataset, corpus, { clients: 12, batchSize: 100, resend: 0.8, stop: over });
        await scorer;
        findings.note('load', { seconds: INDEXER_SECONDS, writes: corpus.writes, replaced: corpus.replacedWrites, scoreCalls, readerRequests: await reader });
        // A last batch after the load, so the drain check starts from known pending work.
        await ingestBatch(traffic, run.dataset, corpus, corpus.batch(100, 1));
      }),
    SCENARIO_TIMEOUT_MS,
  );
});
