import { tableFromIPC } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/core/random.js';
import { createDataset, getDataset } from '../../src/service/datasets.js';
import { requestDedup } from '../../src/service/dedup.js';
import { ingestItems } from '../../src/service/ingest.js';
import { requestRefit } from '../../src/service/refit.js';
import { BACKENDS } from '../helpers/backends.js';
import { nearCopy } from '../helpers/halfvec.js';
import { plantedClusters } from '../helpers/planted.js';
import { waitForJob } from '../service/harness.js';
import { ApiClient } from '../grpc/client.js';
import { binary, parseCsv } from '../helpers/http-formats.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';

const DIM = 16;
const TWINS = [5, 77, 140];

interface Row {
  externalId: string;
  score: number;
  cluster: number;
  percentile: number;
  prototypeVersion: number;
  duplicateOf: string | null;
  duplicateSimilarity: number | null;
  duplicateGroup: string | null;
  metadata: unknown;
}


describe.each(BACKENDS)('score export on the $name backend', (backend) => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  const base = plantedClusters({ seed: 4, clusters: 4, perCluster: 50, dim: DIM, noise: 0.4 });
  const rng = new Rng(17);
  const items = [
    ...Array.from({ length: base.n }, (_, i) => ({ externalId: i === 9 ? 'img,"9"' : `img-${i}`, embedding: base.points.subarray(i * DIM, (i + 1) * DIM), metadata: { split: i % 3 === 0 ? 'val' : 'train', i } })),
    ...TWINS.map((i) => ({ externalId: `twin-${i}`, embedding: nearCopy(base.points.subarray(i * DIM, (i + 1) * DIM), 0.01, rng), metadata: {} })),
  ];
  let rows: Row[];

  beforeAll(async () => {
    h = await startApi(backend, { RATE_LIMIT_PER_MINUTE: '0' });
    http = request(h.service.http.server);
    const ctx = h.service.services.ctx;
    await createDataset(ctx, { name: 'ex', dimension: DIM, k: 4, settings: { minItemsForFit: 10_000, autoRefit: false } });
    await createDataset(ctx, { name: 'unfitted', dimension: DIM, k: 4 });
    await ingestItems(ctx, 'ex', items);
    expect((await waitForJob(h.service.db, (await requestRefit(ctx, 'ex')).id)).state).toBe('succeeded');
    expect((await waitForJob(h.service.db, (await requestDedup(ctx, 'ex', 0.01)).id)).state).toBe('succeeded');
    const ndjson = await http.get('/v1/datasets/ex/scores').query({ epsilon: 0.01 }).set('authorization', bearer(h.keys.reader)).expect(200);
    rows = ndjson.text.trimEnd().split('\n').map((line) => JSON.parse(line) as Row);
  }, 300_000);
  afterAll(async () => {
    await h?.close();
  });

  it('NDJSON: one row per item in score order, each score, cluster and percentile as stored, duplicates from the run', async () => {
    const res = await http.get('/v1/datasets/ex/scores').query({ epsilon: 0.01 }).set('authorization', bearer(h.keys.reader)).expect(200);
    expect(res.headers['content-type']).toContain('application/x-ndjson');
    const dataset = await getDataset(h.service.services.ctx, 'ex');
    expect(res.headers['x-prototype-version']).toBe(String(dataset.activeVersion));
    expect(res.headers['x-export-total']).toBe(String(items.length));
    expect(res.headers['x-dedup-job']).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.text.trimEnd().split('\n').map((line) => JSON.parse(line) as Row)).toEqual(rows);
    expect(rows).toHaveLength(items.length);

    const stored = await h.service.db.query<{ external_id: string; score: number; cluster: number; metadata: unknown }>(
      'SELECT i.external_id, s.score, s.cluster, i.metadata FROM item_scores s JOIN items i ON i.id = s.item_id WHERE s.dataset_id = $1 AND s.version = $2',
      [dataset.id, dataset.activeVersion],
    );
    const byId = new Map(stored.map((r) => [r.external_id, r]));
    const scores = stored.map((r) => Math.fround(r.score));
    for (const [j, row] of rows.entries()) {
      const truth = byId.get(row.externalId)!;
      expect(row.score).toBe(Math.fround(truth.score)); // the exact float32 the database stores
      expect(row.cluster).toBe(truth.cluster);
      expect(row.metadata).toEqual(truth.metadata);
      expect(row.prototypeVersion).toBe(dataset.activeVersion);
      const lower = scores.filter((s) => s < row.score).length;
      expect(row.percentile).toBeCloseTo((100 * lower) / (items.length - 1), 9);
      if (j > 0) expect(row.score).toBeGreaterThanOrEqual(rows[j - 1].score);
    }
    expect(rows[0].percentile).toBe(0);

    // Each twin and its original form a group: one is kept (its group is itself), the other points at it.
    for (const i of TWINS) {
      const pair = rows.filter((r) => r.externalId === `twin-${i}` || r.externalId === `img-${i}`);
      const duplicate = pair.find((r) => r.duplicateOf !== null)!;
      const kept = pair.find((r) => r !== duplicate)!;
      expect(duplicate.duplicateOf).toBe(kept.externalId);
      expect(duplicate.duplicateGroup).toBe(kept.externalId);
      expect(duplicate.duplicateSimilarity).toBeGreaterThan(0.99);
      expect(kept).toMatchObject({ duplicateOf: null, duplicateSimilarity: null, duplicateGroup: kept.externalId });
    }
    expect(rows.filter((r) => r.duplicateGroup !== null)).toHaveLength(2 * TWINS.length);
  });

  it('CSV carries the same rows, quoted where a field needs it', async () => {
    const res = await http.get('/v1/datasets/ex/scores').query({ format: 'csv', epsilon: 0.01 }).set('authorization', bearer(h.keys.reader)).expect(200);
    expect(res.headers['content-type']).toContain('text/csv');
    const [header, ...records] = parseCsv(res.text);
    expect(header).toEqual(['external_id', 'score', 'cluster', 'percentile', 'prototype_version', 'duplicate_of', 'duplicate_similarity', 'duplicate_group', 'metadata']);
    expect(records.map((r) => r[0])).toEqual(rows.map((r) => r.externalId));
    expect(records.map((r) => [Number(r[1]), Number(r[2]), Number(r[3]), r[5] || null, r[7] || null, JSON.parse(r[8])])).toEqual(
      rows.map((r) => [r.score, r.cluster, r.percentile, r.duplicateOf, r.duplicateGroup, r.metadata]),
    );
  });

  it('Parquet read back by an independent reader (parquet-wasm, Rust arrow-rs) matches every row', async () => {
    const res = await http
      .get('/v1/datasets/ex/scores')
      .set('accept', 'application/vnd.apache.parquet')
      .query({ epsilon: 0.01 })
      .set('authorization', bearer(h.keys.reader))
      .buffer(true)
      .parse(binary)
      .expect(200);
    expect(res.headers['content-type']).toBe('application/vnd.apache.parquet');
    const table = tableFromIPC(readParquet(new Uint8Array(res.body as Buffer)).intoIPCStream());
    expect(table.numRows).toBe(rows.length);
    const read = table.toArray().map((r) => r.toJSON() as Record<string, unknown>);
    expect(
      read.map((r) => ({
        externalId: r.external_id,
        score: r.score,
        cluster: r.cluster,
        percentile: r.percentile,
        prototypeVersion: r.prototype_version,
        duplicateOf: r.duplicate_of,
        duplicateSimilarity: r.duplicate_similarity,
        duplicateGroup: r.duplicate_group,
        metadata: JSON.parse(r.metadata as string),
      })),
    ).toEqual(rows);
  });

  it('gRPC ExportScores streams the same rows in chunks, the summary first, and the same refusals', async () => {
    const grpc = new ApiClient(h.service.grpc.port, h.keys.reader);
    try {
      const messages = await grpc.stream('ExportScores', { dataset: 'ex', epsilon: 0.01, chunkSize: 37 });
      // At most chunk_size rows per message (a message ends where a COPY batch does).
      expect(messages.every((m) => m.items.length >= 1 && m.items.length <= 37)).toBe(true);
      expect(messages.length).toBeGreaterThanOrEqual(Math.ceil(items.length / 37));
      const dataset = await getDataset(h.service.services.ctx, 'ex');
      expect(messages[0].summary).toMatchObject({ prototypeVersion: dataset.activeVersion, total: items.length });
      expect(messages[0].summary.dedupJobId).toMatch(/^[0-9a-f-]{36}$/);
      expect(messages.slice(1).every((m) => m.summary === null || m.summary === undefined)).toBe(true);
      const streamed = messages.flatMap((m) => m.items as Record<string, unknown>[]);
      expect(
        streamed.map((r) => ({
          externalId: r.externalId,
          score: r.score,
          cluster: r.cluster,
          percentile: r.percentile,
          prototypeVersion: dataset.activeVersion,
          duplicateOf: r.duplicateOf ?? null,
          duplicateSimilarity: r.duplicateSimilarity ?? null,
          duplicateGroup: r.duplicateGroup ?? null,
          metadata: JSON.parse(r.metadataJson as string),
        })),
      ).toEqual(rows);

      const none = await grpc.streamFails('ExportScores', { dataset: 'unfitted' });
      expect(none).toMatchObject({ code: 9, errorCode: 'NO_PROTOTYPES' });
      const eps = await grpc.streamFails('ExportScores', { dataset: 'ex', epsilon: 0.2 });
      expect(eps).toMatchObject({ code: 9, errorCode: 'DEDUP_NOT_RUN' });
      const chunk = await grpc.streamFails('ExportScores', { dataset: 'ex', chunkSize: 0 });
      expect(chunk).toMatchObject({ code: 3, errorCode: 'INVALID_CHUNK_SIZE' });
      const denied = await grpc.withKey(undefined).streamFails('ExportScores', { dataset: 'ex' });
      expect(denied.code).toBe(16);
    } finally {
      grpc.close();
    }
  });

  it('answers 409 NO_PROTOTYPES before a fit, 409 DEDUP_NOT_RUN at an ε never run, 400 for an unknown format, no duplicate columns without a run', async () => {
    const none = await http.get('/v1/datasets/unfitted/scores').set('authorization', bearer(h.keys.reader)).expect(409);
    expect(none.body.error.code).toBe('NO_PROTOTYPES');
    const eps = await http.get('/v1/datasets/ex/scores').query({ epsilon: 0.2 }).set('authorization', bearer(h.keys.reader)).expect(409);
    expect(eps.body.error.code).toBe('DEDUP_NOT_RUN');
    const job = await http.get('/v1/datasets/ex/scores').query({ job: 'not-a-job' }).set('authorization', bearer(h.keys.reader)).expect(404);
    expect(job.body.error.code).toBe('DEDUP_RUN_NOT_FOUND');
    const bad = await http.get('/v1/datasets/ex/scores').query({ format: 'xlsx' }).set('authorization', bearer(h.keys.reader)).expect(400);
    expect(bad.body.error.code).toBe('VALIDATION_FAILED');
    await http.get('/v1/datasets/ex/scores').expect(401);
    // The dataset's own ε (the default) was never run: the duplicate columns stay empty.
    const plain = await http.get('/v1/datasets/ex/scores').set('authorization', bearer(h.keys.reader)).expect(200);
    expect(plain.headers['x-dedup-job']).toBeUndefined();
    expect(plain.text.trimEnd().split('\n').every((line) => (JSON.parse(line) as Row).duplicateGroup === null)).toBe(true);
  });
});
