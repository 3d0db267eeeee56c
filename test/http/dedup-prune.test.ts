import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/core/random.js';
import { budgetSize } from '../../src/core/selection.js';
import { createDataset } from '../../src/service/datasets.js';
import { requestDedup } from '../../src/service/dedup.js';
import { ingestItems } from '../../src/service/ingest.js';
import { requestRefit } from '../../src/service/refit.js';
import { BACKENDS } from '../helpers/backends.js';
import { nearCopy } from '../helpers/halfvec.js';
import { plantedClusters } from '../helpers/planted.js';
import { waitForJob } from '../service/harness.js';
import { ApiClient } from '../grpc/client.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';

const DIM = 16;
const EPSILON = 0.01;
/** Originals that get near-copies: one copy each, two for the first (a group of three). */
const COPIED = [3, 17, 40, 41, 77, 120, 151, 188];

interface Row {
  externalId: string;
  score: number;
  duplicateOf: string | null;
  duplicateGroup: string | null;
  metadata: { quality: number; split: string };
}

const byHardest = (a: Row, b: Row) => b.score - a.score || (a.externalId < b.externalId ? -1 : a.externalId > b.externalId ? 1 : 0);

describe.each(BACKENDS)('dedup, then prune, on the $name backend', (backend) => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  let grpc: ApiClient;
  let rows: Row[];
  /** Near-duplicate groups of the run: root (SemDeDup's kept item) → members, the root included. */
  let groups: Map<string, Row[]>;
  const base = plantedClusters({ seed: 12, clusters: 4, perCluster: 50, dim: DIM, noise: 0.45 });
  const rng = new Rng(5);
  const quality = new Rng(9);
  const vector = (i: number) => base.points.subarray(i * DIM, (i + 1) * DIM);
  const items = [
    ...Array.from({ length: base.n }, (_, i) => ({ externalId: `b-${String(i).padStart(3, '0')}`, embedding: vector(i), metadata: { quality: quality.next(), split: i % 2 ? 'train' : 'val' } })),
    ...COPIED.map((i) => ({ externalId: `c-${i}`, embedding: nearCopy(vector(i), 0.01, rng), metadata: { quality: quality.next(), split: i % 2 ? 'train' : 'val' } })),
    { externalId: 'c-3b', embedding: nearCopy(vector(3), 0.01, rng), metadata: { quality: 2, split: 'train' } },
  ];
  const n = items.length;

  const select = async (query: Record<string, unknown>) => {
    const res = await http
      .get('/v1/datasets/dd/selection')
      .query({ format: 'ndjson', ...Object.fromEntries(Object.entries(query).map(([k, v]) => [k, typeof v === 'object' ? JSON.stringify(v) : String(v)])) })
      .set('authorization', bearer(h.keys.reader));
    return { res, ids: res.status === 200 ? res.text.split('\n').filter(Boolean).map((l) => JSON.parse(l).externalId as string) : [] };
  };
  /** What remains after keeping, per group, the first member by `better`. */
  const remainingAfter = (better: (a: Row, b: Row) => number, among: Row[] = rows) => {
    const inScope = new Set(among.map((r) => r.externalId));
    const dropped = new Set<string>();
    for (const members of groups.values()) {
      const present = members.filter((m) => inScope.has(m.externalId)).sort(better);
      for (const m of present.slice(1)) dropped.add(m.externalId);
    }
    return { dropped, remaining: among.filter((r) => !dropped.has(r.externalId)) };
  };

  beforeAll(async () => {
    h = await startApi(backend, { RATE_LIMIT_PER_MINUTE: '0' });
    http = request(h.service.http.server);
    grpc = new ApiClient(h.service.grpc.port, h.keys.reader);
    const ctx = h.service.services.ctx;
    await createDataset(ctx, { name: 'dd', dimension: DIM, k: 4, settings: { minItemsForFit: 10_000, autoRefit: false } });
    await ingestItems(ctx, 'dd', items);
    expect((await waitForJob(h.service.db, (await requestRefit(ctx, 'dd')).id)).state).toBe('succeeded');
    expect((await waitForJob(h.service.db, (await requestDedup(ctx, 'dd', EPSILON)).id)).state).toBe('succeeded');
    const exported = await http.get('/v1/datasets/dd/scores').query({ epsilon: EPSILON }).set('authorization', bearer(h.keys.reader)).expect(200);
    rows = exported.text.trimEnd().split('\n').map((l) => JSON.parse(l) as Row);
    groups = new Map();
    for (const r of rows) if (r.duplicateGroup !== null) groups.set(r.duplicateGroup, [...(groups.get(r.duplicateGroup) ?? []), r]);
    // Every planted copy is in its original's group.
    expect(groups.size).toBe(COPIED.length);
    expect([...groups.values()].reduce((sum, m) => sum + m.length, 0)).toBe(COPIED.length * 2 + 1);
  }, 300_000);
  afterAll(async () => {
    grpc?.close();
    await h?.close();
  });

  it('drops all but SemDeDup’s kept item of each group, then keeps the hardest 30% of the original count from the rest', async () => {
    const { dropped, remaining } = remainingAfter(byHardest);
    expect(dropped.size).toBe(COPIED.length + 1);
    expect([...dropped].every((id) => rows.find((r) => r.externalId === id)!.duplicateOf !== null)).toBe(true);
    const size = budgetSize({ fraction: 0.3 }, n);
    const { res, ids } = await select({ order: 'hardest', fraction: 0.3, dedup: true, epsilon: EPSILON });
    expect(res.status).toBe(200);
    expect(ids).toEqual([...remaining].sort(byHardest).slice(0, size).map((r) => r.externalId));
    expect(res.headers['x-selection-dedup-dropped']).toBe(String(dropped.size));
    expect(res.headers['x-selection-size']).toBe(String(size));
    expect(res.headers['x-dedup-job']).toMatch(/^[0-9a-f-]{36}$/);

    // JSON pages report each stage, the later page as the first.
    const first = await http.get('/v1/datasets/dd/selection').query({ order: 'hardest', fraction: 0.3, dedup: true, epsilon: EPSILON, limit: 20 }).set('authorization', bearer(h.keys.reader)).expect(200);
    expect(first.body).toMatchObject({ total: n, matched: n, size, dedup: { epsilon: EPSILON, keep: 'farthest', dropped: dropped.size } });
    const second = await http
      .get('/v1/datasets/dd/selection')
      .query({ order: 'hardest', fraction: 0.3, dedup: true, epsilon: EPSILON, limit: 20, cursor: first.body.nextCursor })
      .set('authorization', bearer(h.keys.reader))
      .expect(200);
    expect(second.body.dedup).toEqual(first.body.dedup);
    expect([...first.body.externalIds, ...second.body.externalIds]).toEqual(ids.slice(0, 40));
  });

  it('keeps the member each keep policy names: closest, highest or lowest of a metadata number, seeded random', async () => {
    const policies: [Record<string, unknown>, ((a: Row, b: Row) => number) | null][] = [
      [{ dedupKeep: 'closest' }, (a, b) => a.score - b.score || (a.externalId < b.externalId ? -1 : 1)],
      [{ dedupKeep: 'highest', dedupKeepField: 'quality' }, (a, b) => b.metadata.quality - a.metadata.quality],
      [{ dedupKeep: 'lowest', dedupKeepField: 'quality' }, (a, b) => a.metadata.quality - b.metadata.quality],
      [{ dedupKeep: 'random', seed: 4 }, null],
    ];
    for (const [params, better] of policies) {
      // fraction 1 with order easiest: the whole remaining set, to compare as sets.
      const { res, ids } = await select({ order: 'easiest', fraction: 1, dedup: true, epsilon: EPSILON, ...params });
      expect(res.status, JSON.stringify(params)).toBe(200);
      const kept = new Set(ids);
      for (const members of groups.values()) expect(members.filter((m) => kept.has(m.externalId)), JSON.stringify(params)).toHaveLength(1);
      expect(ids).toHaveLength(n - (COPIED.length + 1));
      if (better) expect([...kept].sort()).toEqual(remainingAfter(better).remaining.map((r) => r.externalId).sort());
    }
    const again = await select({ order: 'easiest', fraction: 1, dedup: true, epsilon: EPSILON, dedupKeep: 'random', seed: 4 });
    const other = await select({ order: 'easiest', fraction: 1, dedup: true, epsilon: EPSILON, dedupKeep: 'random', seed: 5 });
    expect(again.ids).toEqual((await select({ order: 'easiest', fraction: 1, dedup: true, epsilon: EPSILON, dedupKeep: 'random', seed: 4 })).ids);
    // Nine groups, two seeds: the draws differ somewhere (the chance they agree everywhere is 1 in ~2^9·3).
    expect(new Set(other.ids)).not.toEqual(new Set(again.ids));
  });

  it('counts and random orders run over what remains; a count beyond it keeps all that remains; a filter narrows the groups first', async () => {
    const { remaining } = remainingAfter(byHardest);
    const all = await select({ order: 'random', count: n, seed: 1, dedup: true, epsilon: EPSILON });
    expect(all.res.headers['x-selection-size']).toBe(String(remaining.length));
    expect([...all.ids].sort()).toEqual(remaining.map((r) => r.externalId).sort());
    const balanced = await select({ order: 'stratified', fraction: 0.5, dedup: true, epsilon: EPSILON, balance: 'cluster' });
    expect(balanced.ids).toHaveLength(budgetSize({ fraction: 0.5 }, n));
    expect(balanced.ids.every((id) => remaining.some((r) => r.externalId === id))).toBe(true);

    const train = rows.filter((r) => r.metadata.split === 'train');
    const narrowed = remainingAfter(byHardest, train);
    const filtered = await select({ order: 'hardest', fraction: 0.5, dedup: true, epsilon: EPSILON, filter: { contains: { split: 'train' } } });
    expect(filtered.res.headers['x-selection-matched']).toBe(String(train.length));
    expect(filtered.res.headers['x-selection-dedup-dropped']).toBe(String(narrowed.dropped.size));
    expect(filtered.ids).toEqual([...narrowed.remaining].sort(byHardest).slice(0, budgetSize({ fraction: 0.5 }, train.length)).map((r) => r.externalId));

    const viaGrpc = await grpc.stream('Select', {
      dataset: 'dd',
      order: 'SELECTION_ORDER_HARDEST',
      fraction: 0.5,
      filter: { containsJson: '{"split":"train"}' },
      dedup: { epsilon: EPSILON, keep: 'DEDUP_KEEP_FARTHEST' },
    });
    expect(viaGrpc.flatMap((m) => m.externalIds)).toEqual(filtered.ids);
    expect(viaGrpc[0].summary.dedup).toMatchObject({ epsilon: EPSILON, keep: 'DEDUP_KEEP_FARTHEST', dropped: narrowed.dropped.size });
  });

  it('refuses a dedup without a run, a keep policy without its field, and dedup parameters without dedup=true', async () => {
    const none = await select({ order: 'hardest', fraction: 0.3, dedup: true, epsilon: 0.3 });
    expect(none.res.status).toBe(409);
    expect(none.res.body.error.code).toBe('DEDUP_NOT_RUN');
    const job = await select({ order: 'hardest', fraction: 0.3, dedup: true, dedupJob: '00000000-0000-4000-8000-000000000000' });
    expect(job.res.status).toBe(404);
    expect(job.res.body.error.code).toBe('DEDUP_RUN_NOT_FOUND');
    for (const params of [{ dedup: true, dedupKeep: 'highest' }, { dedup: true, dedupKeep: 'farthest', dedupKeepField: 'quality' }, { epsilon: 0.01 }, { dedupKeep: 'closest' }, { dedup: true, dedupKeep: 'best' }]) {
      const bad = await select({ order: 'hardest', fraction: 0.3, ...params });
      expect(bad.res.status, JSON.stringify(params)).toBe(400);
      expect(['INVALID_DEDUP', 'VALIDATION_FAILED']).toContain(bad.res.body.error.code);
    }
    const grpcBad = await grpc.streamFails('Select', { dataset: 'dd', fraction: 0.3, dedup: { keep: 'DEDUP_KEEP_HIGHEST' } });
    expect(grpcBad).toMatchObject({ code: 3, errorCode: 'INVALID_DEDUP' });
  });
});
