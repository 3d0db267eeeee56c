import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requeueRunningJobs } from '../../src/store/jobs.js';
import { BACKENDS } from '../helpers/backends.js';
import { jpeg, sceneRaw } from '../embedding/images.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';

const DIM = 8;
const N = 150;

describe.each(BACKENDS)('background ingest (?async=true) on the $name backend', (backend) => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;

  beforeAll(async () => {
    h = await startApi(backend);
    http = request(h.service.http.server);
    await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'big', dimension: DIM }).expect(201);
    await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'pics' }).expect(201);
  });
  afterAll(async () => {
    await h?.close();
  });

  async function follow(jobId: string) {
    const seen: { done: number; total: number }[] = [];
    for (let attempt = 0; attempt < 1200; attempt++) {
      const res = await http.get(`/v1/jobs/${jobId}`).set('authorization', bearer(h.keys.reader)).expect(200);
      seen.push({ done: res.body.progress.done, total: res.body.progress.total });
      if (res.body.state === 'succeeded' || res.body.state === 'failed') return { job: res.body, seen };
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`job ${jobId} did not finish`);
  }

  it('answers 202 with an ingest job that reports progress and ends with the counts; a bad item fails alone', async () => {
    const items = Array.from({ length: N }, (_, i) => ({
      externalId: `x${i}`,
      embedding: Array.from({ length: DIM }, (_, j) => Math.sin(i * 7 + j) + (j === i % DIM ? 2 : 0)),
    }));
    items[77] = { externalId: 'x77', embedding: new Array(DIM).fill(0) };
    items.push({ externalId: 'short', embedding: [1, 2] });
    const res = await http.post('/v1/datasets/big/items?async=true').set('authorization', bearer(h.keys.writer)).send({ items }).expect(202);
    expect(res.body).toMatchObject({ kind: 'ingest', dataset: 'big', state: 'running', progress: { total: N + 1 } });
    const { job, seen } = await follow(res.body.id);
    expect(job.error).toBeNull();
    expect(job.state).toBe('succeeded');
    expect(job.progress).toMatchObject({ done: N + 1, total: N + 1, fraction: 1 });
    expect(seen.every((p) => p.total === N + 1)).toBe(true);
    expect(job.result.counts).toEqual({ stored: N - 1, updated: 0, failed: 2 });
    expect(job.result.errors).toEqual([
      expect.objectContaining({ externalId: 'x77', index: 77, code: 'ZERO_VECTOR' }),
      expect.objectContaining({ externalId: 'short', index: N, code: 'DIMENSION_MISMATCH' }),
    ]);
    const stats = await http.get('/v1/datasets/big/stats').set('authorization', bearer(h.keys.reader)).expect(200);
    expect(stats.body.itemCount).toBe(N - 1);
    await http.get('/v1/datasets/big/items/x149').set('authorization', bearer(h.keys.reader)).expect(200);
    await http.get('/v1/datasets/big/items/x77').set('authorization', bearer(h.keys.reader)).expect(404);

    // Re-sending replaces; a repeated id is stored once, from its last occurrence, as in one request.
    const again = await http
      .post('/v1/datasets/big/items?async=true')
      .set('authorization', bearer(h.keys.writer))
      .send({ items: [items[0], items[1], items[0]] })
      .expect(202);
    const second = (await follow(again.body.id)).job;
    expect(second.result.counts).toEqual({ stored: 0, updated: 2, failed: 1 });
    expect(second.result.errors).toEqual([expect.objectContaining({ index: 0, code: 'DUPLICATE_EXTERNAL_ID' })]);
  });

  it('takes multipart uploads of images in the background too', async () => {
    const images = await Promise.all([1, 2].map((seed) => jpeg(64, 48, sceneRaw(64, 48, seed))));
    const res = await http
      .post('/v1/datasets/pics/items?async=true')
      .set('authorization', bearer(h.keys.writer))
      .attach('p1', images[0], 'p1.jpg')
      .attach('p2', images[1], 'p2.jpg')
      .attach('broken', Buffer.from('not an image'), 'broken.jpg')
      .expect(202);
    const { job } = await follow(res.body.id);
    expect(job.state).toBe('succeeded');
    expect(job.result.counts).toEqual({ stored: 2, updated: 0, failed: 1 });
    expect(job.result.errors[0]).toMatchObject({ externalId: 'broken', code: 'UNSUPPORTED_FORMAT' });
  });

  it('refuses an unknown dataset, a key without write scope and images for an embedding dataset before creating a job', async () => {
    const items = [{ externalId: 'a', embedding: new Array(DIM).fill(1) }];
    await http.post('/v1/datasets/nope/items?async=true').set('authorization', bearer(h.keys.writer)).send({ items }).expect(404);
    await http.post('/v1/datasets/big/items?async=true').set('authorization', bearer(h.keys.reader)).send({ items }).expect(403);
    const image = await jpeg(32, 32, sceneRaw(32, 32, 3));
    const jobCount = async () => (await h.service.db.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs'))[0].n;
    const jobsBefore = await jobCount();
    const refused = await http.post('/v1/datasets/big/items?async=true').set('authorization', bearer(h.keys.writer)).attach('p1', image, 'p1.jpg').expect(409);
    expect(refused.body.error.code).toBe('MODEL_MISMATCH');
    expect(await jobCount()).toBe(jobsBefore);
  });

  it('fails an ingest job whose process died (the expired-lease requeue hands it to the runner) with a clear error', async () => {
    const [dataset] = await h.service.db.query<{ id: string }>(`SELECT id FROM datasets WHERE name = 'big'`);
    const [row] = await h.service.db.query<{ id: string }>(
      `INSERT INTO jobs (id, dataset_id, kind, state, params, phase, progress_done, progress_total, attempts, started_at, updated_at, lease_expires_at, result)
       VALUES (gen_random_uuid(), $1, 'ingest', 'running', '{}', 'ingest', 64, 500, 1, now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour', $2)
       RETURNING id`,
      [dataset.id, JSON.stringify({ counts: { stored: 64, updated: 0, failed: 0 }, errors: [] })],
    );
    // The embedded database has no other process: what a dead one left is re-queued at the next boot.
    if (backend.name === 'embedded') await requeueRunningJobs(h.service.db);
    const { job } = await follow(row.id);
    expect(job.state).toBe('failed');
    expect(job.error).toMatch(/ingest interrupted after 64 of 500 items/);
    expect(job.result.counts).toEqual({ stored: 64, updated: 0, failed: 0 });
  });
});
