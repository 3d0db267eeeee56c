import * as grpc from '@grpc/grpc-js';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/core/random.js';
import { vectorLiteral } from '../../src/store/database.js';
import { annIndexName } from '../../src/store/datasets.js';
import { BACKENDS } from '../helpers/backends.js';
import { cosine64, halfvecMisorderedPair, nearCopy, storedForm } from '../helpers/halfvec.js';
import { plantedClusters } from '../helpers/planted.js';
import { ApiClient } from '../grpc/client.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';

const DIM = 2048; // SwAV ResNet-50, the README's encoder: above pgvector's 2,000-d HNSW limit for vector
const EPSILON = 0.01;

function base64Of(values: Float32Array): string {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('base64');
}

describe.each(BACKENDS)('REST with 2,048-d embeddings on the $name backend', (backend) => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  let grpcAdmin: ApiClient;
  const rng = new Rng(2048);
  const base = plantedClusters({ seed: 8, clusters: 4, perCluster: 40, dim: DIM, noise: 0.5 });
  const baseRow = (i: number) => base.points.subarray(i * DIM, (i + 1) * DIM);
  const TWINS = [3, 58, 131];
  const pair = halfvecMisorderedPair(DIM);
  const items = [
    ...Array.from({ length: base.n }, (_, i) => ({ externalId: `img-${i}`, vector: baseRow(i) })),
    ...TWINS.map((i) => ({ externalId: `twin-of-img-${i}`, vector: nearCopy(baseRow(i), 0.03, rng) })),
    { externalId: 'halfvec-nearest', vector: pair.halfvecNearest },
    { externalId: 'exact-nearest', vector: pair.exactNearest },
  ];
  const probes = [
    ...TWINS.map((i) => ({ externalId: `probe-${i}`, vector: nearCopy(baseRow(i), 0.02, rng) })),
    { externalId: 'probe-pair', vector: pair.probe },
  ];
  let datasetId: string;

  beforeAll(async () => {
    h = await startApi(backend, { RATE_LIMIT_PER_MINUTE: '0' });
    http = request(h.service.http.server);
    grpcAdmin = new ApiClient(h.service.grpc.port, h.keys.admin);
  });
  afterAll(async () => {
    grpcAdmin?.close();
    await h?.close();
  });

  const admin = () => bearer(h.keys.admin);

  it('refuses dimension 4,001 and above with 400 VALIDATION_FAILED naming body/dimension; 4,000 is accepted', async () => {
    for (const dimension of [4001, 16000]) {
      const res = await http.post('/v1/datasets').set('authorization', admin()).send({ name: `big-${dimension}`, dimension }).expect(400);
      expect(res.body.error).toMatchObject({ code: 'VALIDATION_FAILED', details: { field: 'body/dimension' } });
      expect(res.body.error.message).toMatch(/4000/);
    }
    const largest = await http.post('/v1/datasets').set('authorization', admin()).send({ name: 'largest', dimension: 4000 }).expect(201);
    expect(largest.body.dimension).toBe(4000);
    await http.delete('/v1/datasets/largest').set('authorization', admin()).expect(204);
    const listed = await http.get('/v1/datasets').set('authorization', admin()).expect(200);
    expect(listed.body.datasets.map((d: { name: string }) => d.name).filter((n: string) => n.startsWith('big-'))).toEqual([]);
  });

  it('gRPC CreateDataset goes through the same service check: INVALID_ARGUMENT, DIMENSION_TOO_LARGE', async () => {
    const failure = await grpcAdmin.fails('CreateDataset', { name: 'big-grpc', dimension: 4001 });
    expect(failure).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, errorCode: 'DIMENSION_TOO_LARGE', errorDetails: { field: 'dimension', max: 4000 } });
    expect(failure.details).toMatch(/4,000/);
    expect(failure.details).toMatch(/halfvec/);
  });

  it('creates a 2,048-d dataset with a halfvec HNSW index, ingests base64 embeddings and fits prototypes', async () => {
    const created = await http
      .post('/v1/datasets')
      .set('authorization', admin())
      .send({ name: 'swav', dimension: DIM, k: 4, settings: { minItemsForFit: items.length, seed: 2, duplicateEpsilon: EPSILON } })
      .expect(201);
    expect(created.body).toMatchObject({ name: 'swav', dimension: DIM });
    const res = await http
      .post('/v1/datasets/swav/items')
      .set('authorization', bearer(h.keys.writer))
      .send({ items: items.map((it) => ({ externalId: it.externalId, embedding: base64Of(it.vector) })) })
      .expect(200);
    expect(res.body.counts).toEqual({ stored: items.length, updated: 0, failed: 0 });
    expect(res.body.scheduledJobId).toEqual(expect.any(String));
    for (let attempt = 0; ; attempt++) {
      const job = await http.get(`/v1/jobs/${res.body.scheduledJobId}`).set('authorization', bearer(h.keys.reader)).expect(200);
      if (job.body.state === 'succeeded') break;
      expect(job.body.state).not.toBe('failed');
      expect(attempt).toBeLessThan(1200);
      await new Promise((r) => setTimeout(r, 50));
    }
    [{ id: datasetId }] = await h.service.db.query<{ id: string }>("SELECT id FROM datasets WHERE name = 'swav'");
    const [index] = await h.service.db.query<{ indexdef: string }>('SELECT indexdef FROM pg_indexes WHERE indexname = $1', [annIndexName(datasetId)]);
    expect(index.indexdef).toMatch(/halfvec\(2048\)\)? halfvec_cosine_ops/);
  });

  it('after background indexing, POST /score finds the planted near-duplicates with exact similarities', async () => {
    const pending = async () => (await h.service.db.query<{ n: number }>('SELECT count(*)::int AS n FROM ann_pending WHERE dataset_id = $1', [datasetId]))[0].n;
    const deadline = Date.now() + 120_000;
    while ((await pending()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(await pending()).toBe(0);
    const [{ n: indexed }] = await h.service.db.query<{ n: number }>('SELECT count(*)::int AS n FROM item_ann WHERE dataset_id = $1', [datasetId]);
    expect(indexed).toBe(items.length);

    const rows = await h.service.db.query<{ external_id: string; embedding: number[] }>('SELECT external_id, embedding FROM items WHERE dataset_id = $1', [datasetId]);
    const stored = new Map(rows.map((r) => [r.external_id, Float32Array.from(r.embedding)]));
    const res = await http
      .post('/v1/datasets/swav/score')
      .set('authorization', bearer(h.keys.reader))
      .send({ items: probes.map((p) => ({ externalId: p.externalId, embedding: base64Of(p.vector) })), policy: { epsilon: EPSILON } })
      .expect(200);
    expect(res.body.items).toHaveLength(probes.length);
    for (const [j, probe] of probes.entries()) {
      const sent = storedForm(probe.vector);
      let best = { externalId: '', similarity: -Infinity };
      for (const [externalId, v] of stored) {
        const similarity = cosine64(v, sent);
        if (similarity > best.similarity) best = { externalId, similarity };
      }
      const got = res.body.items[j];
      expect(got).toMatchObject({ externalId: probe.externalId, status: 'scored', duplicate: true, decision: 'skip', reason: 'near-duplicate' });
      expect(got.nearest.externalId).toBe(best.externalId);
      expect(Math.abs(got.nearest.similarity - best.similarity)).toBeLessThan(2e-6);
      // Exactly pgvector's float32 distance, not the halfvec one the index orders by.
      const [d] = await h.service.db.query<{ exact: number; halfvec: number }>(
        `SELECT embedding <=> $2::vector AS exact, embedding::halfvec(${DIM}) <=> $2::halfvec(${DIM}) AS halfvec FROM items WHERE dataset_id = $1 AND external_id = $3`,
        [datasetId, vectorLiteral(sent), best.externalId],
      );
      expect(got.nearest.similarity).toBe(1 - Number(d.exact));
      expect(got.nearest.similarity).not.toBe(1 - Number(d.halfvec));
    }
    // halfvec alone ranks the other planted item first; the re-rank reports the exact nearest.
    expect(res.body.items[TWINS.length].nearest.externalId).toBe('exact-nearest');
  });

  it('GET /duplicates groups each stored twin with its original', async () => {
    const job = await http.post('/v1/datasets/swav/duplicates/jobs').send({ epsilon: EPSILON }).set('authorization', bearer(h.keys.writer)).expect(202);
    const done = await grpcAdmin.stream("WatchJob", { id: job.body.id });
    expect(done.at(-1)!.state).toBe('JOB_STATE_SUCCEEDED');
    const res = await http.get('/v1/datasets/swav/duplicates').query({ epsilon: EPSILON }).set('authorization', bearer(h.keys.reader)).expect(200);
    const groups = res.body.groups.map((g: { kept: string; duplicates: string[] }) => [g.kept, ...g.duplicates].sort()).sort();
    expect(groups).toEqual([...TWINS.map((i) => [`img-${i}`, `twin-of-img-${i}`].sort()), ['exact-nearest', 'halfvec-nearest']].sort());
    expect(res.body.duplicateCount).toBe(TWINS.length + 1);
  });
});
