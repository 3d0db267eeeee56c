import { Writable } from 'node:stream';
import { pino } from 'pino';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataset } from '../../src/service/datasets.js';
import { requestDedup } from '../../src/service/dedup.js';
import { ingestItems } from '../../src/service/ingest.js';
import { requestRefit } from '../../src/service/refit.js';
import { BACKENDS } from '../helpers/backends.js';
import { plantedClusters } from '../helpers/planted.js';
import { waitForJob } from '../service/harness.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';

const DIM = 8;

/**
 * HEAD on every streamed answer: the headers of the GET, no body, and nothing started — before
 * this was handled, fastify read the whole stream for a HEAD and logged the snapshot's cancelled
 * COPY as an error.
 */
describe.each(BACKENDS)('HEAD on streamed answers on the $name backend', (backend) => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  let manifestId: string;
  const logged: Array<{ level: number; msg: string }> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) logged.push(JSON.parse(line));
      done();
    },
  });

  beforeAll(async () => {
    h = await startApi(backend, { RATE_LIMIT_PER_MINUTE: '0' }, pino({ level: 'error' }, sink));
    http = request(h.service.http.server);
    const ctx = h.service.services.ctx;
    const data = plantedClusters({ seed: 3, clusters: 3, perCluster: 40, dim: DIM, noise: 0.4 });
    await createDataset(ctx, { name: 'heads', dimension: DIM, k: 3, settings: { minItemsForFit: 10_000, autoRefit: false } });
    await ingestItems(ctx, 'heads', Array.from({ length: data.n }, (_, i) => ({ externalId: `img-${i}`, embedding: data.points.subarray(i * DIM, (i + 1) * DIM) })));
    expect((await waitForJob(h.service.db, (await requestRefit(ctx, 'heads')).id)).state).toBe('succeeded');
    expect((await waitForJob(h.service.db, (await requestDedup(ctx, 'heads', 0.05)).id)).state).toBe('succeeded');
    const manifest = await http.post('/v1/datasets/heads/manifests').set('authorization', bearer(h.keys.writer)).send({ selection: { order: 'hardest', fraction: 0.5 } }).expect(201);
    manifestId = manifest.body.id;
  }, 300_000);
  afterAll(async () => {
    await h?.close();
  });

  const streamed = [
    { path: '/v1/datasets/heads/scores', query: { format: 'ndjson' }, headers: ['x-prototype-version', 'x-export-total', 'x-export-matched'] },
    { path: '/v1/datasets/heads/scores', query: { format: 'csv' }, headers: ['x-export-total'] },
    { path: '/v1/datasets/heads/scores', query: { format: 'parquet' }, headers: ['x-export-total'] },
    { path: '/v1/datasets/heads/selection', query: { format: 'ndjson', order: 'hardest', fraction: '0.5' }, headers: ['x-selection-total', 'x-selection-size', 'x-selection-policy'] },
    { path: '/v1/datasets/heads/duplicates', query: { format: 'csv', epsilon: '0.05' }, headers: ['x-dedup-job', 'x-duplicate-count'] },
    { path: () => `/v1/manifests/${manifestId}`, query: { format: 'ndjson' }, headers: ['x-manifest-count', 'x-manifest-sha256'] },
  ];

  it.each(streamed)('HEAD $path ($query.format) answers the GET’s status and headers with no body', async ({ path, query, headers }) => {
    const url = typeof path === 'function' ? path() : path;
    const get = await http.get(url).query(query).set('authorization', bearer(h.keys.reader)).expect(200);
    expect(get.headers['content-length'] ?? '').not.toBe('0');
    for (let i = 0; i < 3; i++) {
      const head = await http.head(url).query(query).set('authorization', bearer(h.keys.reader)).expect(200);
      expect(head.headers['content-type']).toBe(get.headers['content-type']);
      for (const name of headers) expect(head.headers[name], name).toBe(get.headers[name]);
    }
    // Nothing the HEADs opened outlives them: every connection of the service's pool is back and idle
    // (polled: a snapshot ends just after its answer, and the job poller borrows one now and then).
    const busy = () => {
      const stats = h.service.db.poolStats();
      return stats.total - stats.idle + stats.waiting;
    };
    const deadline = Date.now() + 5000;
    while (busy() > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(busy()).toBe(0);
    expect(logged).toEqual([]);
  });

  it('HEAD still answers the errors of the GET', async () => {
    await http.head('/v1/datasets/missing/scores').set('authorization', bearer(h.keys.reader)).expect(404);
    await http.head('/v1/datasets/heads/scores').expect(401);
    await http.head('/v1/datasets/heads/selection').query({ format: 'ndjson', fraction: '7' }).set('authorization', bearer(h.keys.reader)).expect(400);
  });
});
