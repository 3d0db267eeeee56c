import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { adminQuery } from '../helpers/backends.js';
import { alive, ARTIFACTS_DIR, replicaLogs, sleep, type Cluster, type Replica } from './cluster.js';
import { logSince, logSize, parseDeadlocks, postgresLogPath } from './pglog.js';
import { Traffic, type Corpus } from './traffic.js';

/** Violations of one scenario, collected rather than thrown at the first, plus the numbers seen. */
export class Findings {
  readonly violations: Array<{ invariant: string; detail: string }> = [];
  readonly facts: Record<string, unknown> = {};

  constructor(readonly scenario: string) {}

  fail(invariant: string, detail: string): void {
    this.violations.push({ invariant, detail });
  }

  check(ok: boolean, invariant: string, detail: string): void {
    if (!ok) this.fail(invariant, detail);
  }

  note(key: string, value: unknown): void {
    this.facts[key] = value;
  }

  /** One line per violation, each detail clipped: what a failing CI log should show. */
  summary(): string {
    const lines = this.violations.map((v) => `  - [${this.scenario}] ${v.invariant}: ${v.detail.length > 700 ? `${v.detail.slice(0, 700)}…` : v.detail}`);
    return `${this.violations.length} invariant violation(s) in scenario ${this.scenario}:\n${lines.join('\n')}`;
  }

  save(extra: Record<string, unknown> = {}): string {
    const dir = path.join(ARTIFACTS_DIR, this.scenario);
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'findings.json');
    writeFileSync(file, JSON.stringify({ scenario: this.scenario, violations: this.violations, facts: this.facts, ...extra }, null, 2));
    return file;
  }
}

export interface Baseline {
  deadlocks: number;
  logFile: string | null;
  logOffset: number;
  startedAt: number;
}

async function databaseDeadlocks(): Promise<number> {
  const { rows } = await adminQuery('SELECT deadlocks::int8::text AS n FROM pg_stat_database WHERE datname = current_database()');
  return Number((rows[0] as { n: string }).n);
}

export async function takeBaseline(): Promise<Baseline> {
  const logFile = postgresLogPath();
  return { deadlocks: await databaseDeadlocks(), logFile, logOffset: logSize(logFile), startedAt: Date.now() };
}

function grouped<T>(list: T[], key: (t: T) => string): string {
  const counts = new Map<string, number>();
  for (const t of list) counts.set(key(t), (counts.get(key(t)) ?? 0) + 1);
  return [...counts].map(([k, n]) => `${n}× ${k}`).join('; ');
}

export interface InvariantContext {
  cluster: Cluster;
  traffic: Traffic;
  findings: Findings;
  dataset: string;
  corpus: Corpus;
  baseline: Baseline;
  /** How long the background indexer may take to drain ann_pending once writes stopped. */
  drainMs?: number;
}

/**
 * The invariants every scenario ends with, on a quiet cluster (writes stopped):
 * prototypes, scores, selection, ANN index, deadlocks, client-visible errors, processes.
 */
export async function checkInvariants(ctx: InvariantContext): Promise<void> {
  const { cluster, traffic, findings: f, dataset, corpus, baseline } = ctx;
  // The checks' own requests: not counted with the clients', and not cut by an aborted load.
  const probe = new Traffic(cluster);
  const [ds] = await cluster.sql<{ id: string; active: number | null }>('SELECT id, active_version AS active FROM datasets WHERE name = $1', [dataset]);
  if (!ds) {
    f.fail('dataset exists', `dataset ${dataset} not found`);
    return;
  }

  // --- ANN: let the indexer drain ann_pending first (all replicas run it when idle).
  const drainDeadline = Date.now() + (ctx.drainMs ?? 45_000);
  const drainStarted = Date.now();
  let pending = Number.POSITIVE_INFINITY;
  while (Date.now() < drainDeadline) {
    const [row] = await cluster.sql<{ n: number }>('SELECT count(*)::int AS n FROM ann_pending WHERE dataset_id = $1', [ds.id]);
    pending = row.n;
    if (pending === 0) break;
    await sleep(250);
  }
  f.note('annDrainMs', Date.now() - drainStarted);
  f.check(pending === 0, 'indexer drains ann_pending', `${pending} rows still in ann_pending ${ctx.drainMs ?? 45_000} ms after writes stopped`);

  // --- prototypes
  const [active] = await cluster.sql<{ active: number | null; exists: boolean; versions: number[] }>(
    `SELECT d.active_version AS active,
            EXISTS (SELECT 1 FROM prototype_sets p WHERE p.dataset_id = d.id AND p.version = d.active_version) AS exists,
            ARRAY(SELECT version FROM prototype_sets p WHERE p.dataset_id = d.id ORDER BY version) AS versions
       FROM datasets d WHERE d.id = $1`,
    [ds.id],
  );
  f.note('activeVersion', active.active);
  f.note('prototypeSetVersions', active.versions);
  f.check(active.active !== null && active.exists, 'active_version exists in prototype_sets', `active_version=${active.active}, prototype_sets versions=[${active.versions.join(',')}]`);

  // --- items and scores
  const [counts] = await cluster.sql<{ items: number; missing: number; multiple: number; orphans: number; otherVersions: number }>(
    `SELECT (SELECT count(*)::int FROM items WHERE dataset_id = $1) AS items,
            (SELECT count(*)::int FROM items i WHERE i.dataset_id = $1
                AND NOT EXISTS (SELECT 1 FROM item_scores s WHERE s.dataset_id = $1 AND s.item_id = i.id AND s.version = $2)) AS missing,
            (SELECT count(*)::int FROM (SELECT item_id FROM item_scores WHERE dataset_id = $1 AND version = $2 GROUP BY item_id HAVING count(*) > 1) m) AS multiple,
            (SELECT count(*)::int FROM item_scores s WHERE s.dataset_id = $1 AND s.version = $2
                AND NOT EXISTS (SELECT 1 FROM items i WHERE i.id = s.item_id)) AS orphans,
            (SELECT count(*)::int FROM item_scores s WHERE s.dataset_id = $1 AND s.version IS DISTINCT FROM $2) AS "otherVersions"`,
    [ds.id, active.active ?? -1],
  );
  f.note('items', counts.items);
  f.note('scores', counts);
  f.check(counts.missing === 0 && counts.multiple === 0, 'every item has exactly one item_scores row for the active version', `${counts.items} items: ${counts.missing} without a row, ${counts.multiple} with several`);
  f.check(counts.orphans === 0, 'no active-version score rows for missing items', `${counts.orphans} item_scores rows of version ${active.active} name no item`);
  f.check(counts.otherVersions === 0, 'no score rows left of other versions', `${counts.otherVersions} item_scores rows of versions other than ${active.active} on a quiet dataset`);

  // --- the clients' view of what was written
  const ackedLow = corpus.acked.size;
  const ackedHigh = new Set([...corpus.acked, ...corpus.ambiguous]).size;
  f.note('clientAckedDistinctIds', ackedLow);
  f.note('clientAmbiguousIds', corpus.ambiguous.size);
  f.note('clientWrites', { total: corpus.writes, replaced: corpus.replacedWrites });
  f.check(counts.items >= ackedLow && counts.items <= ackedHigh, 'items = ids the clients had acknowledged (± ambiguous attempts)', `items=${counts.items}, acknowledged=${ackedLow}, acknowledged+ambiguous=${ackedHigh}`);
  f.check(corpus.anomalies.length === 0, 'ingest answers agree with client history', `${corpus.anomalies.length}: ${corpus.anomalies.slice(0, 3).join(' | ')}`);
  f.check(corpus.itemErrors === 0, 'no per-item ingest errors for valid vectors', `${corpus.itemErrors}: ${corpus.itemErrorSamples.join(' | ')}`);

  // --- selection through every live replica
  const live = cluster.replicas.filter((r) => alive(r) && r.state === 'up');
  const path = `/v1/datasets/${encodeURIComponent(dataset)}/selection`;
  const totals: Record<string, number | string> = {};
  for (const r of live) {
    const a = await probe.once(r, 'GET', `${path}?fraction=1&limit=1`);
    if ('error' in a) totals[r.name] = `error ${a.error}`;
    else if (a.status !== 200) totals[r.name] = `HTTP ${a.status} ${a.text.slice(0, 120)}`;
    else {
      const page = a.json as { total: number; size: number; prototypeVersion: number };
      totals[r.name] = page.total;
      f.check(page.prototypeVersion === active.active, 'selection uses the active version', `${r.name} answered prototypeVersion ${page.prototypeVersion}, active is ${active.active}`);
    }
  }
  f.note('selectionTotals', totals);
  const wrongTotals = Object.entries(totals).filter(([, t]) => t !== counts.items);
  f.check(wrongTotals.length === 0, 'selection total = item count on every replica', `items=${counts.items}; ${wrongTotals.map(([r, t]) => `${r}: ${t}`).join(', ')}`);

  const dbIds = new Set((await cluster.sql<{ id: string }>('SELECT external_id AS id FROM items WHERE dataset_id = $1', [ds.id])).map((r) => r.id));
  if (live.length > 0) {
    // NDJSON export (streamed) from one replica
    const exporter = live[0];
    const a = await probe.once(exporter, 'GET', `${path}?fraction=1&format=ndjson`);
    if ('error' in a || a.status !== 200) {
      f.fail('selection export', `${exporter.name}: ${'error' in a ? a.error : `HTTP ${a.status} ${a.text.slice(0, 200)}`}`);
    } else {
      const ids = a.text.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { externalId: string }).externalId);
      const distinct = new Set(ids);
      const missing = [...dbIds].filter((id) => !distinct.has(id)).length;
      f.note('ndjsonLines', ids.length);
      f.check(ids.length === dbIds.size && distinct.size === ids.length && missing === 0, 'NDJSON selection (fraction=1) = the items', `${exporter.name}: ${ids.length} lines, ${distinct.size} distinct, ${missing} items missing, items=${dbIds.size}`);
    }

    // JSON pages, each page from the next replica (a load balancer does not keep cursors sticky)
    const limit = Math.max(1, Math.ceil(dbIds.size / 7));
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    let problem: string | null = null;
    do {
      const r = live[pages % live.length];
      const a = await probe.once(r, 'GET', `${path}?fraction=1&limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      pages++;
      if ('error' in a) problem = `page ${pages} from ${r.name}: ${a.error}`;
      else if (a.status !== 200) problem = `page ${pages} from ${r.name}: HTTP ${a.status} ${a.text.slice(0, 200)}`;
      else {
        const page = a.json as { externalIds: string[]; nextCursor: string | null };
        seen.push(...page.externalIds);
        cursor = page.nextCursor;
      }
    } while (!problem && cursor && pages < 100);
    const distinct = new Set(seen);
    const missing = [...dbIds].filter((id) => !distinct.has(id)).length;
    f.note('pagedWalk', { pages, ids: seen.length, distinct: distinct.size, missing, problem });
    f.check(
      !problem && seen.length === dbIds.size && distinct.size === seen.length && missing === 0,
      'paging the selection across replicas yields every item once',
      `${problem ?? ''}${problem ? '; ' : ''}${pages} pages of ${limit} round-robin over ${live.map((r) => r.name).join(',')}: ${seen.length} ids, ${seen.length - distinct.size} repeated, ${missing} of ${dbIds.size} items missing`,
    );
  }

  // --- ANN index agrees with items (compared in item_ann's own vector type: it may be halfvec)
  const [{ annType }] = await cluster.sql<{ annType: string }>(
    `SELECT t.typname AS "annType" FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
      WHERE a.attrelid = 'item_ann'::regclass AND a.attname = 'embedding'`,
  );
  if (!/^[a-z_]+$/.test(annType)) throw new Error(`unexpected item_ann.embedding type ${annType}`);
  const [ann] = await cluster.sql<{ unindexed: number; stale: number; foreign: number; indexed: number }>(
    `SELECT (SELECT count(*)::int FROM items i WHERE i.dataset_id = $1
               AND NOT EXISTS (SELECT 1 FROM item_ann a WHERE a.item_id = i.id)
               AND NOT EXISTS (SELECT 1 FROM ann_pending p WHERE p.item_id = i.id)) AS unindexed,
            (SELECT count(*)::int FROM item_ann a JOIN items i ON i.id = a.item_id WHERE i.dataset_id = $1
               AND a.embedding::text IS DISTINCT FROM i.embedding::${annType}::text
               AND NOT EXISTS (SELECT 1 FROM ann_pending p WHERE p.item_id = i.id)) AS stale,
            (SELECT count(*)::int FROM item_ann a JOIN items i ON i.id = a.item_id WHERE a.dataset_id <> i.dataset_id) AS foreign,
            (SELECT count(*)::int FROM item_ann a WHERE a.dataset_id = $1) AS indexed`,
    [ds.id],
  );
  f.note('ann', ann);
  f.check(ann.unindexed === 0, 'every item is in item_ann or ann_pending', `${ann.unindexed} of ${counts.items} items are in neither`);
  f.check(ann.stale === 0, 'item_ann.embedding = items.embedding for indexed items', `${ann.stale} of ${ann.indexed} indexed items carry an older vector (and are not pending)`);
  f.check(ann.foreign === 0, 'item_ann rows carry their item’s dataset', `${ann.foreign} rows`);

  // --- deadlocks: the database counter, and the server log written during the scenario
  const deadlocksNow = await databaseDeadlocks();
  const delta = deadlocksNow - baseline.deadlocks;
  const reports = parseDeadlocks(logSince(baseline.logFile, baseline.logOffset));
  const ours = reports.filter((r) => r.involved.some((pid) => cluster.backendPids.has(pid)));
  const unattributed = cluster.backendPids.size === 0 ? reports.filter((r) => r.genuine) : [];
  // Other sessions (other test files on this database) may deadlock — or raise the message on purpose.
  const foreign = reports.filter((r) => !ours.includes(r) && r.genuine).length - unattributed.length;
  f.note('deadlocks', { pgStatDelta: delta, logReports: reports.length, ours: ours.length, foreignGenuine: foreign, backendPidsSeen: cluster.backendPids.size, log: baseline.logFile });
  f.note('deadlockStatements', ours.map((r) => r.statements.map((st) => st.replace(/\s+/g, ' ').slice(0, 120))));
  f.check(
    ours.length + unattributed.length === 0 && delta <= foreign,
    '0 deadlocks',
    `pg_stat_database.deadlocks +${delta}; "deadlock detected" in ${baseline.logFile ?? '(no log found)'}: ${ours.length} from this scenario's backends${foreign ? ` (+${foreign} from other sessions)` : ''}${ours[0] ? `; first between: ${ours[0].statements.map((st) => st.replace(/\s+/g, ' ').slice(0, 110)).join(' ⟷ ')}` : ''}`,
  );
  if (!baseline.logFile) f.note('postgresLog', 'not found: deadlocks judged by pg_stat_database only');

  // --- what the clients saw
  const statuses = Object.fromEntries([...traffic.statuses].sort());
  f.note('httpStatuses', statuses);
  f.note('backpressure503', Object.fromEntries(traffic.backpressure));
  f.check(traffic.bad5xx.length === 0, 'no 5xx except 503 with Retry-After', `${traffic.bad5xx.length}: ${grouped(traffic.bad5xx, (x) => `${x.replica} ${x.status}${x.status === 503 ? ' (no Retry-After)' : ''} ${x.what} ${(x.body ?? '').replace(/\s+/g, ' ').slice(0, 160)}`)}`);
  const unexpectedTransport = traffic.transport.filter((t) => !t.expected);
  f.note('transportErrors', { expected: traffic.transport.length - unexpectedTransport.length, unexpected: unexpectedTransport.length });
  f.check(unexpectedTransport.length === 0, 'no transport errors from live replicas', grouped(unexpectedTransport, (x) => `${x.replica} ${x.what.replace(/\?.*/, '')} ${x.error}`));
  f.check(traffic.abandoned.length === 0, 'no client request left hanging', `${traffic.abandoned.length} requests were still unanswered when the scenario stopped waiting: ${grouped(traffic.abandoned, (x) => `${x.replica} ${x.what}`)}`);
  f.check(traffic.gaveUp.length === 0, 'every client request eventually answered', `${traffic.gaveUp.length} given up: ${grouped(traffic.gaveUp, (x) => `${x.replica} ${x.what.replace(/\?.*/, '')} ${x.status ?? x.error}`)}`);
  f.check(traffic.unexpected.length === 0, 'no unexpected 4xx on valid requests', grouped(traffic.unexpected, (x) => `${x.replica} ${x.what} ${x.status} ${(x.body ?? '').slice(0, 160)}`));

  // --- processes
  for (const r of cluster.replicas) {
    if (r.state === 'killed') continue;
    if (!alive(r)) {
      f.fail('no replica crashed', `${r.name} exited (code ${r.running.child.exitCode}, signal ${r.running.child.signalCode}): ${r.running.stderr().slice(-300)}`);
      continue;
    }
    const ready = await fetch(`${r.base}/readyz`).then((res) => res.status, (e: Error) => e.message);
    f.check(ready === 200, 'every surviving replica is ready', `${r.name} /readyz → ${ready}`);
  }
  const errorLines = cluster.replicas.flatMap((r) =>
    replicaLogs(r)
      .filter((l) => (l.level ?? 0) >= 50)
      .map((l) => ({ replica: r.name, msg: `${l.msg ?? ''}${(l.err as { message?: string } | undefined)?.message ? `: ${(l.err as { message: string }).message}` : ''}` })),
  );
  f.note('errorLogLines', errorLines.length);
  f.check(errorLines.length === 0, 'no error-level log lines', grouped(errorLines, (x) => `${x.replica} ${x.msg.replace(/\s+/g, ' ').slice(0, 160)}`));
}

/** Facts of a replica set for the report: who ran what (from the logs). */
export function describeReplicas(replicas: Replica[]): Record<string, string> {
  return Object.fromEntries(replicas.map((r) => [r.name, `${r.state}${alive(r) ? '' : ' (exited)'}`]));
}
