import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import request from 'supertest';
import sharp from 'sharp';
import { INITIAL_ADMIN_KEY_FILE } from '../../src/server.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectItems } from '../../src/service/selection.js';
import { BACKENDS } from '../helpers/backends.js';
import { plantedClusters } from '../helpers/planted.js';
import { jpeg, sceneRaw } from '../embedding/images.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';

const DIM = 16;
const N = 240;

function base64Of(values: number[]): string {
  return Buffer.from(Float32Array.from(values).buffer).toString('base64');
}

describe.each(BACKENDS)('REST /v1 on the $name backend', (backend) => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  const data = plantedClusters({ seed: 3, clusters: 4, perCluster: N / 4, dim: DIM, noise: 0.3 });
  const vector = (i: number) => Array.from(data.points.subarray(i * DIM, (i + 1) * DIM));
  const id = (i: number) => `item-${String(i).padStart(4, '0')}`;

  async function waitJob(jobId: string) {
    for (let attempt = 0; attempt < 400; attempt++) {
      const res = await http.get(`/v1/jobs/${jobId}`).set('authorization', bearer(h.keys.reader)).expect(200);
      if (res.body.state === 'succeeded' || res.body.state === 'failed') return res.body;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`job ${jobId} did not finish`);
  }

  beforeAll(async () => {
    h = await startApi(backend, { MAX_ITEMS_PER_REQUEST: '300' });
    http = request(h.service.http.server);
  });
  afterAll(async () => {
    await h?.close();
  });

  describe('authentication and authorisation', () => {
    it('mints one admin key at first boot into DATA_DIR/initial-admin-key (mode 0600)', async () => {
      const file = path.join(h.dataDir, INITIAL_ADMIN_KEY_FILE);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const secret = (await readFile(file, 'utf8')).trim();
      await http.post('/v1/datasets').set('authorization', bearer(secret)).send({ name: 'initial-key-check', dimension: 2 }).expect(201);
      await http.delete('/v1/datasets/initial-key-check').set('authorization', bearer(secret)).expect(204);
    });

    it('refuses a missing key, an unknown key, and a malformed header with 401', async () => {
      const missing = await http.get('/v1/datasets').expect(401);
      expect(missing.body.error.code).toBe('MISSING_API_KEY');
      const wrong = await http.get('/v1/datasets').set('authorization', bearer('pp_not-a-key')).expect(401);
      expect(wrong.body.error.code).toBe('INVALID_API_KEY');
      const basic = await http.get('/v1/datasets').set('authorization', 'Basic abc').expect(401);
      expect(basic.body.error.code).toBe('MISSING_API_KEY');
    });

    it('refuses a scope the key lacks and a dataset the key is not limited to, with 403', async () => {
      const create = await http.post('/v1/datasets').set('authorization', bearer(h.keys.writer)).send({ name: 'nope', dimension: 4 }).expect(403);
      expect(create.body.error.code).toBe('INSUFFICIENT_SCOPE');
      await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'guarded', dimension: 4 }).expect(201);
      const ingest = await http
        .post('/v1/datasets/guarded/items')
        .set('authorization', bearer(h.keys.reader))
        .send({ items: [{ externalId: 'a', embedding: [1, 0, 0, 0] }] })
        .expect(403);
      expect(ingest.body.error.code).toBe('INSUFFICIENT_SCOPE');
      const other = await http.get('/v1/datasets/guarded').set('authorization', bearer(h.keys.otherOnly)).expect(403);
      expect(other.body.error.code).toBe('DATASET_FORBIDDEN');
      const createElsewhere = await http.post('/v1/datasets').set('authorization', bearer(h.keys.otherOnly)).send({ name: 'elsewhere', dimension: 4 }).expect(403);
      expect(createElsewhere.body.error.code).toBe('DATASET_FORBIDDEN');
      await http.post('/v1/datasets').set('authorization', bearer(h.keys.otherOnly)).send({ name: 'other', dimension: 4 }).expect(201);
      const listed = await http.get('/v1/datasets').set('authorization', bearer(h.keys.otherOnly)).expect(200);
      expect(listed.body.datasets.map((d: { name: string }) => d.name)).toEqual(['other']);
    });

    it('mints, lists and revokes keys (admin only); a revoked key stops working', async () => {
      const minted = await http.post('/v1/keys').set('authorization', bearer(h.keys.admin)).send({ name: 'trainer', scopes: ['read'] }).expect(201);
      expect(minted.body.secret).toMatch(/^pp_/);
      await http.get('/v1/datasets').set('authorization', bearer(minted.body.secret)).expect(200);
      const list = await http.get('/v1/keys').set('authorization', bearer(h.keys.admin)).expect(200);
      expect(list.body.keys.map((k: { name: string }) => k.name)).toContain('trainer');
      expect(JSON.stringify(list.body)).not.toContain(minted.body.secret);
      await http.get('/v1/keys').set('authorization', bearer(h.keys.writer)).expect(403);
      await http.delete(`/v1/keys/${minted.body.id}`).set('authorization', bearer(h.keys.admin)).expect(200);
      const revoked = await http.get('/v1/datasets').set('authorization', bearer(minted.body.secret)).expect(401);
      expect(revoked.body.error.code).toBe('INVALID_API_KEY');
      await http.post('/v1/keys').set('authorization', bearer(h.keys.admin)).send({ name: 'bad', scopes: ['root'] }).expect(400);
    });
  });

  describe('datasets, ingest, selection, scoring', () => {
    let version: number;

    it('creates an embedding dataset and refuses a duplicate name, a bad name and wrong types', async () => {
      const created = await http
        .post('/v1/datasets')
        .set('authorization', bearer(h.keys.admin))
        .send({ name: 'emb', dimension: DIM, k: 4, settings: { minItemsForFit: 200, seed: 1 } })
        .expect(201);
      expect(created.body).toMatchObject({ name: 'emb', dimension: DIM, k: 4, model: null, activeVersion: null });
      const again = await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'emb', dimension: DIM }).expect(409);
      expect(again.body.error.code).toBe('DATASET_EXISTS');
      const badName = await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: '../x', dimension: 3 }).expect(400);
      expect(badName.body.error.details.field).toBe('body/name');
      const badType = await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'x', dimension: 'three' }).expect(400);
      expect(badType.body.error).toMatchObject({ code: 'VALIDATION_FAILED', details: { field: 'body/dimension' } });
      const unknown = await http.get('/v1/datasets/missing').set('authorization', bearer(h.keys.reader)).expect(404);
      expect(unknown.body.error.code).toBe('DATASET_NOT_FOUND');
    });

    it('ingests JSON items: a bad one fails alone, base64 and JSON vectors are stored alike, re-sending updates', async () => {
      const items = Array.from({ length: N }, (_, i) => ({ externalId: id(i), embedding: i % 2 === 0 ? vector(i) : base64Of(vector(i)), metadata: { label: data.labels[i] } }));
      items.push({ externalId: 'short', embedding: [1, 2, 3], metadata: { label: -1 } });
      items.push({ externalId: 'bad-base64', embedding: '***', metadata: { label: -1 } });
      const res = await http.post('/v1/datasets/emb/items').set('authorization', bearer(h.keys.writer)).send({ items }).expect(200);
      expect(res.body.counts).toEqual({ stored: N, updated: 0, failed: 2 });
      expect(res.body.items[N]).toMatchObject({ externalId: 'short', status: 'error', code: 'DIMENSION_MISMATCH' });
      expect(res.body.items[N + 1]).toMatchObject({ externalId: 'bad-base64', status: 'error', code: 'INVALID_ENCODING' });
      expect(res.body.scheduledJobId).toEqual(expect.any(String));
      const job = await waitJob(res.body.scheduledJobId);
      expect(job.state).toBe('succeeded');
      version = job.result.version;

      const again = await http
        .post('/v1/datasets/emb/items')
        .set('authorization', bearer(h.keys.writer))
        .send({ items: [{ externalId: id(1), embedding: vector(1), metadata: { label: data.labels[1], resent: true } }] })
        .expect(200);
      expect(again.body.items[0]).toMatchObject({ status: 'updated', cluster: expect.any(Number) });
      const item = await http.get(`/v1/datasets/emb/items/${id(1)}`).set('authorization', bearer(h.keys.reader)).expect(200);
      expect(item.body).toMatchObject({ externalId: id(1), metadata: { resent: true }, prototypeVersion: version });
      expect(item.body.score).toBeGreaterThanOrEqual(0);
    });

    it('refuses too many items with 413 and malformed bodies with 400 naming the field', async () => {
      const many = Array.from({ length: 301 }, (_, i) => ({ externalId: `m${i}`, embedding: vector(0) }));
      const tooMany = await http.post('/v1/datasets/emb/items').set('authorization', bearer(h.keys.writer)).send({ items: many }).expect(413);
      expect(tooMany.body.error.code).toBe('TOO_MANY_ITEMS');
      const wrongType = await http.post('/v1/datasets/emb/items').set('authorization', bearer(h.keys.writer)).send({ items: [{ externalId: { id: 5 } }] }).expect(400);
      expect(wrongType.body.error.details.field).toBe('body/items/0/externalId');
      const notJson = await http.post('/v1/datasets/emb/items').set('authorization', bearer(h.keys.writer)).set('content-type', 'application/json').send('{"items": [').expect(400);
      expect(notJson.body.error.code).toEqual(expect.any(String));
      expect(JSON.stringify(notJson.body)).not.toMatch(/at .*\.js:\d+/);
    });

    it('pages a selection with cursors: the pages concatenate to the service’s selection', async () => {
      const expected = await selectItems(h.service.services.ctx, 'emb', { order: 'hardest', fraction: 0.3, balance: 'cluster' });
      const got: string[] = [];
      let cursor: string | null = null;
      do {
        const res: request.Response = await http
          .get('/v1/datasets/emb/selection')
          .query({ fraction: 0.3, order: 'hardest', balance: 'cluster', limit: 25, ...(cursor ? { cursor } : {}) })
          .set('authorization', bearer(h.keys.reader))
          .expect(200);
        expect(res.body.prototypeVersion).toBe(version);
        expect(res.headers['x-prototype-version']).toBe(String(version));
        expect(res.body.size).toBe(expected.externalIds.length);
        got.push(...res.body.externalIds);
        cursor = res.body.nextCursor;
      } while (cursor);
      expect(got).toEqual(expected.externalIds);
      expect(got.length).toBe(Math.round(0.3 * N));
    });

    it('streams the same selection as NDJSON and CSV, by Accept or format=', async () => {
      const expected = await selectItems(h.service.services.ctx, 'emb', { order: 'stratified', count: 100, seed: 4 });
      const ndjson = await http
        .get('/v1/datasets/emb/selection')
        .query({ order: 'stratified', count: 100, seed: 4 })
        .set('accept', 'application/x-ndjson')
        .set('authorization', bearer(h.keys.reader))
        .buffer(true)
        .parse((res, done) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => done(null, text));
        })
        .expect(200);
      expect(ndjson.headers['content-type']).toContain('application/x-ndjson');
      expect(ndjson.headers['x-prototype-version']).toBe(String(version));
      const lines = (ndjson.body as string).trim().split('\n').map((l) => JSON.parse(l).externalId);
      expect(lines).toEqual(expected.externalIds);
      const csv = await http.get('/v1/datasets/emb/selection').query({ order: 'stratified', count: 100, seed: 4, format: 'csv' }).set('authorization', bearer(h.keys.reader)).expect(200);
      expect(csv.headers['content-type']).toContain('text/csv');
      expect(csv.text.trim().split('\n')).toEqual(['external_id', ...expected.externalIds]);
    });

    it('refuses bad selection parameters with 400 and an unknown dataset with 404', async () => {
      for (const fraction of [0, 1.5, -1]) {
        const res = await http.get('/v1/datasets/emb/selection').query({ fraction }).set('authorization', bearer(h.keys.reader)).expect(400);
        expect(res.body.error.details.field).toBe('fraction');
      }
      const both = await http.get('/v1/datasets/emb/selection').query({ fraction: 0.5, count: 3 }).set('authorization', bearer(h.keys.reader)).expect(400);
      expect(both.body.error.code).toBe('INVALID_SELECTION');
      const order = await http.get('/v1/datasets/emb/selection').query({ fraction: 0.5, order: 'best' }).set('authorization', bearer(h.keys.reader)).expect(400);
      expect(order.body.error.details.field).toBe('querystring/order');
      await http.get('/v1/datasets/nope/selection').query({ fraction: 0.5 }).set('authorization', bearer(h.keys.reader)).expect(404);
      const cursor = await http.get('/v1/datasets/emb/selection').query({ fraction: 0.5, cursor: 'garbage' }).set('authorization', bearer(h.keys.reader)).expect(400);
      expect(cursor.body.error.code).toBe('INVALID_CURSOR');
    });

    it('scores new embeddings without storing them: duplicates are flagged, decisions follow the policy', async () => {
      const hardest = await selectItems(h.service.services.ctx, 'emb', { order: 'hardest', fraction: 0.3 });
      const hardId = hardest.externalIds[0];
      const easyId = hardest.externalIds.length > 0 ? (await selectItems(h.service.services.ctx, 'emb', { order: 'easiest', count: 1 })).externalIds[0] : '';
      const copyOf = (externalId: string) => vector(Number(externalId.slice(5)));
      const far = vector(0).map((v, j) => (j === 0 ? -1 : 0));
      const res = await http
        .post('/v1/datasets/emb/score')
        .set('authorization', bearer(h.keys.reader))
        .send({
          items: [
            { externalId: 'copy-of-hard', embedding: copyOf(hardId) },
            { externalId: 'near-easy', embedding: copyOf(easyId).map((v) => v * 0.999 + 0.0005) },
            { externalId: 'far', embedding: far },
            { externalId: 'wrong-dim', embedding: [1, 2] },
          ],
          policy: { order: 'hardest', fraction: 0.3, epsilon: 1e-6 },
        })
        .expect(200);
      const [copy, nearEasy, farAway, wrong] = res.body.items;
      expect(res.body.prototypeVersion).toBe(version);
      expect(copy).toMatchObject({ status: 'scored', duplicate: true, decision: 'skip', reason: 'near-duplicate', nearest: { externalId: hardId } });
      expect(copy.nearest.similarity).toBeGreaterThan(0.9999);
      expect(copy.percentile).toBeGreaterThan(0.95);
      expect(nearEasy.percentile).toBeLessThan(0.05);
      expect(nearEasy.duplicate).toBe(false);
      expect(nearEasy).toMatchObject({ decision: 'skip', reason: 'policy-prune' });
      expect(farAway).toMatchObject({ status: 'scored', decision: 'keep', reason: 'policy-keep' });
      expect(wrong).toMatchObject({ status: 'error', code: 'DIMENSION_MISMATCH' });
      const stats = await http.get('/v1/datasets/emb/stats').set('authorization', bearer(h.keys.reader)).expect(200);
      expect(stats.body.itemCount).toBe(N);
    });

    it('reports prototypes, runs a requested refit as a job, finds duplicates and serves stats', async () => {
      const protos = await http.get('/v1/datasets/emb/prototypes').set('authorization', bearer(h.keys.reader)).expect(200);
      expect(protos.body).toMatchObject({ version, k: 4 });
      expect(protos.body.clusterSizes.reduce((a: number, b: number) => a + b, 0)).toBe(N);
      await http.post('/v1/datasets/emb/prototypes/refit').set('authorization', bearer(h.keys.reader)).expect(403);
      const refit = await http.post('/v1/datasets/emb/prototypes/refit').set('authorization', bearer(h.keys.writer)).expect(202);
      expect(refit.body).toMatchObject({ kind: 'refit', dataset: 'emb' });
      const done = await waitJob(refit.body.id);
      expect(done).toMatchObject({ state: 'succeeded', progress: { fraction: 1 } });
      expect(done.result.version).toBe(version + 1);
      await http.get(`/v1/jobs/${refit.body.id}`).set('authorization', bearer(h.keys.otherOnly)).expect(403);
      await http.get('/v1/jobs/00000000-0000-0000-0000-000000000000').set('authorization', bearer(h.keys.reader)).expect(404);

      // Exact copies make near-duplicate groups, found by a dedup job and served once it succeeded.
      const twins = [0, 1, 2].map((i) => ({ externalId: i === 2 ? 'twin, "quoted"' : `twin-of-${i}`, embedding: vector(i) }));
      await http.post('/v1/datasets/emb/items').set('authorization', bearer(h.keys.writer)).send({ items: twins }).expect(200);
      const notRun = await http.get('/v1/datasets/emb/duplicates').query({ epsilon: 0.0001 }).set('authorization', bearer(h.keys.reader)).expect(409);
      expect(notRun.body.error).toMatchObject({ code: 'DEDUP_NOT_RUN', details: { epsilon: 0.0001, jobId: null } });
      await http.post('/v1/datasets/emb/duplicates/jobs').set('authorization', bearer(h.keys.reader)).send({ epsilon: 0.0001 }).expect(403);
      await http.post('/v1/datasets/emb/duplicates/jobs').set('authorization', bearer(h.keys.writer)).send({ epsilon: 3 }).expect(400);
      const dedup = await http.post('/v1/datasets/emb/duplicates/jobs').set('authorization', bearer(h.keys.writer)).send({ epsilon: 0.0001 }).expect(202);
      expect(dedup.body).toMatchObject({ kind: 'dedup', dataset: 'emb' });
      const dedupDone = await waitJob(dedup.body.id);
      expect(dedupDone).toMatchObject({ state: 'succeeded', result: { epsilon: 0.0001, duplicates: 3, groups: 3, items: N + 3 } });
      const dups = await http.get('/v1/datasets/emb/duplicates').query({ epsilon: 0.0001 }).set('authorization', bearer(h.keys.reader)).expect(200);
      expect(dups.body).toMatchObject({ jobId: dedup.body.id, epsilon: 0.0001, groupCount: 3, duplicateCount: 3, nextCursor: null });
      for (const [i, twin] of twins.entries()) {
        const group = dups.body.groups.find((g: { kept: string; duplicates: string[] }) => [g.kept, ...g.duplicates].includes(twin.externalId));
        expect([group.kept, ...group.duplicates].sort()).toEqual([id(i), twin.externalId].sort());
        expect(group.similarities[0]).toBeGreaterThan(0.9999);
      }
      // Paged: the same groups one at a time.
      const paged = [];
      let cursor: string | undefined;
      do {
        const page = await http.get('/v1/datasets/emb/duplicates').query({ epsilon: 0.0001, limit: 1, ...(cursor ? { cursor } : {}) }).set('authorization', bearer(h.keys.reader)).expect(200);
        paged.push(...page.body.groups);
        cursor = page.body.nextCursor ?? undefined;
      } while (cursor);
      expect(paged).toEqual(dups.body.groups);
      // Streamed: NDJSON groups and CSV pairs.
      const ndjson = await http.get('/v1/datasets/emb/duplicates').query({ epsilon: 0.0001 }).set('accept', 'application/x-ndjson').set('authorization', bearer(h.keys.reader)).expect(200);
      expect(ndjson.headers['x-dedup-job']).toBe(dedup.body.id);
      expect(ndjson.text.trim().split('\n').map((line) => JSON.parse(line))).toEqual(dups.body.groups);
      const csv = await http.get('/v1/datasets/emb/duplicates').query({ epsilon: 0.0001, format: 'csv' }).set('authorization', bearer(h.keys.reader)).expect(200);
      const csvLines = csv.text.trim().split('\n');
      expect(csvLines[0]).toBe('kept_id,duplicate_id,similarity');
      expect(csvLines).toHaveLength(4);
      expect(csv.text).toContain('"twin, ""quoted"""');
      // Bad requests answer 4xx in the error shape.
      await http.get('/v1/datasets/emb/duplicates').query({ epsilon: 3 }).set('authorization', bearer(h.keys.reader)).expect(400);
      const badCursor = await http.get('/v1/datasets/emb/duplicates').query({ cursor: 'nope' }).set('authorization', bearer(h.keys.reader)).expect(400);
      expect(badCursor.body.error.code).toBe('INVALID_CURSOR');
      const beyondInt8 = await http.get('/v1/datasets/emb/duplicates').query({ cursor: `${dedup.body.id}.9999999999999999999` }).set('authorization', bearer(h.keys.reader)).expect(400);
      expect(beyondInt8.body.error.code).toBe('INVALID_CURSOR');
      const unknownRun = await http.get('/v1/datasets/emb/duplicates').query({ job: '00000000-0000-4000-8000-000000000000' }).set('authorization', bearer(h.keys.reader)).expect(404);
      expect(unknownRun.body.error.code).toBe('DEDUP_RUN_NOT_FOUND');

      const stats = await http.get('/v1/datasets/emb/stats').set('authorization', bearer(h.keys.reader)).expect(200);
      expect(stats.body.itemCount).toBe(N + 3);
      expect(stats.body.prototypeVersion).toBe(version + 1);
      expect(stats.body.histogram.counts.reduce((a: number, b: number) => a + b, 0)).toBe(N + 3);
      expect(stats.body.clusterSizes.reduce((a: number, b: number) => a + b, 0)).toBe(N + 3);
      expect(stats.body.ingest.last24Hours).toBe(N + 3);
      expect(stats.body.lastRefit.version).toBe(version + 1);
    });

    it('deletes an item and then answers 404 for it', async () => {
      await http.delete('/v1/datasets/emb/items/twin-of-0').set('authorization', bearer(h.keys.reader)).expect(403);
      await http.delete('/v1/datasets/emb/items/twin-of-0').set('authorization', bearer(h.keys.writer)).expect(204);
      const gone = await http.get('/v1/datasets/emb/items/twin-of-0').set('authorization', bearer(h.keys.reader)).expect(404);
      expect(gone.body.error.code).toBe('ITEM_NOT_FOUND');
      const stats = await http.get('/v1/datasets/emb/stats').set('authorization', bearer(h.keys.reader)).expect(200);
      expect(stats.body.itemCount).toBe(N + 2);
      expect(stats.body.histogram.counts.reduce((a: number, b: number) => a + b, 0)).toBe(N + 2);
      // The dedup run no longer lists the deleted item: its only pair went with it.
      const dups = await http.get('/v1/datasets/emb/duplicates').query({ epsilon: 0.0001 }).set('authorization', bearer(h.keys.reader)).expect(200);
      expect(dups.body.groups.flatMap((g: { kept: string; duplicates: string[] }) => [g.kept, ...g.duplicates])).not.toContain('twin-of-0');
      expect(dups.body.groups).toHaveLength(2);
    });
  });

  describe('images', () => {
    it('ingests images by multipart (field or file name is the id) and base64 JSON; a corrupt file fails alone', async () => {
      const created = await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'photos' }).expect(201);
      expect(created.body.dimension).toBe(1792);
      expect(created.body.model.sha256).toMatch(/^[0-9a-f]{64}$/);
      const [a, b, c] = await Promise.all([1, 2, 3].map((seed) => jpeg(64, 48, sceneRaw(64, 48, seed))));
      const res = await http
        .post('/v1/datasets/photos/items')
        .set('authorization', bearer(h.keys.writer))
        .attach('cat-1', a, 'whatever.jpg')
        .attach('file', b, 'dog-2.jpg')
        .attach('broken', Buffer.from('not an image'), 'broken.jpg')
        .field('metadata', JSON.stringify({ 'cat-1': { label: 'cat' } }))
        .expect(200);
      expect(res.body.items.map((i: { externalId: string; status: string; code?: string }) => [i.externalId, i.code ?? i.status])).toEqual([
        ['cat-1', 'stored'],
        ['dog-2.jpg', 'stored'],
        ['broken', 'UNSUPPORTED_FORMAT'],
      ]);
      const item = await http.get('/v1/datasets/photos/items/cat-1').set('authorization', bearer(h.keys.reader)).expect(200);
      expect(item.body.metadata).toEqual({ label: 'cat' });
      const thumb = await http.get('/v1/datasets/photos/items/cat-1/thumbnail').set('authorization', bearer(h.keys.reader)).expect(200);
      expect(thumb.headers['content-type']).toBe('image/jpeg');
      const meta = await sharp(thumb.body as Buffer).metadata();
      expect([meta.format, meta.width, meta.height]).toEqual(['jpeg', 64, 64]);
      const none = await http.get('/v1/datasets/photos/items/broken/thumbnail').set('authorization', bearer(h.keys.reader)).expect(404);
      expect(none.body.error.code).toBe('THUMBNAIL_NOT_FOUND');
      await http.get('/v1/datasets/photos/items/cat-1/thumbnail').set('authorization', bearer(h.keys.otherOnly)).expect(403);
      const json = await http
        .post('/v1/datasets/photos/items')
        .set('authorization', bearer(h.keys.writer))
        .send({ items: [{ externalId: 'c', image: c.toString('base64') }, { externalId: 'not-b64', image: '%%%' }] })
        .expect(200);
      expect(json.body.items.map((i: { code?: string; status: string }) => i.code ?? i.status)).toEqual(['stored', 'INVALID_BASE64']);
      const mismatch = await http
        .post('/v1/datasets/emb/items')
        .set('authorization', bearer(h.keys.writer))
        .send({ items: [{ externalId: 'img', image: c.toString('base64') }] })
        .expect(409);
      expect(mismatch.body.error.code).toBe('MODEL_MISMATCH');
    });
  });
});

describe('REST limits and configuration', () => {
  it('rate-limits per key with 429, Retry-After and the error shape', async () => {
    const h = await startApi(BACKENDS[0], { RATE_LIMIT_PER_MINUTE: '3' });
    try {
      const http = request(h.service.http.server);
      for (let i = 0; i < 3; i++) await http.get('/v1/datasets').set('authorization', bearer(h.keys.reader)).expect(200);
      const limited = await http.get('/v1/datasets').set('authorization', bearer(h.keys.reader)).expect(429);
      expect(limited.body.error.code).toBe('RATE_LIMITED');
      expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
      // Another key has its own budget; health checks are not limited.
      await http.get('/v1/datasets').set('authorization', bearer(h.keys.admin)).expect(200);
      for (let i = 0; i < 5; i++) await http.get('/healthz').expect(200);
    } finally {
      await h.close();
    }
  });

  it('refuses a body over BODY_LIMIT_BYTES with 413; AUTH_DISABLED serves without keys', async () => {
    const h = await startApi(BACKENDS[0], { BODY_LIMIT_BYTES: '2048', AUTH_DISABLED: 'true' });
    try {
      const http = request(h.service.http.server);
      await http.post('/v1/datasets').send({ name: 'open', dimension: 4 }).expect(201);
      const big = { items: Array.from({ length: 100 }, (_, i) => ({ externalId: `x${i}`, embedding: [1, 2, 3, 4] })) };
      const res = await http.post('/v1/datasets/open/items').send(big).expect(413);
      expect(res.body.error.code).toBe('BODY_TOO_LARGE');
    } finally {
      await h.close();
    }
  });
});
