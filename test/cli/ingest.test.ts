import { chmod, mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type ProtopruneClient } from '../../clients/typescript/src/index.js';
import { jpeg, sceneRaw } from '../embedding/images.js';
import { BACKENDS } from '../helpers/backends.js';
import { startApi, type ApiHarness } from '../http/api-harness.js';
import { MAX_IMAGE_BYTES } from '../../src/cli/image-files.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { spawnCli } from './cli-harness.js';

const png = (seed: number) => sharp(sceneRaw(40, 40, seed), { raw: { width: 40, height: 40, channels: 3 } }).png().toBuffer();
const webp = (seed: number) => sharp(sceneRaw(40, 40, seed), { raw: { width: 40, height: 40, channels: 3 } }).webp().toBuffer();

/** The images the folder holds, by external id. */
const IMAGES = ['cats/a.jpg', 'cats/b.jpg', 'cats/kittens/c.png', 'dogs/d.jpg', 'dogs/webp-without-extension'];

describe.each(BACKENDS)('protoprune ingest (child process) on the $name backend', (backend) => {
  let h: ApiHarness;
  let client: ProtopruneClient;
  let env: Record<string, string>;
  let root: string;

  beforeAll(async () => {
    h = await startApi(backend);
    const baseUrl = `http://127.0.0.1:${h.service.httpPort}`;
    client = createClient({ baseUrl, apiKey: h.keys.admin });
    env = { PROTOPRUNE_URL: baseUrl, PROTOPRUNE_API_KEY: h.keys.admin };
    root = await mkdtemp(path.join(tmpdir(), 'protoprune-cli-ingest-'));
    await mkdir(path.join(root, 'cats', 'kittens'), { recursive: true });
    await mkdir(path.join(root, 'dogs'), { recursive: true });
    await writeFile(path.join(root, 'cats', 'a.jpg'), await jpeg(48, 40, sceneRaw(48, 40, 1)));
    await writeFile(path.join(root, 'cats', 'b.jpg'), await jpeg(48, 40, sceneRaw(48, 40, 2)));
    await writeFile(path.join(root, 'cats', 'kittens', 'c.png'), await png(3));
    await writeFile(path.join(root, 'dogs', 'd.jpg'), await jpeg(48, 40, sceneRaw(48, 40, 4)));
    await writeFile(path.join(root, 'dogs', 'webp-without-extension'), await webp(5));
    await writeFile(path.join(root, 'notes.txt'), 'not an image');
    // Named like an image, but its bytes are not one: skipped by magic bytes, not sent.
    await writeFile(path.join(root, 'dogs', 'fake.jpg'), 'plain text');
    // A real JPEG header cut short: recognised as an image, refused by the server.
    await writeFile(path.join(root, 'dogs', 'corrupt.jpg'), (await jpeg(48, 40, sceneRaw(48, 40, 6))).subarray(0, 300));
  });
  afterAll(async () => {
    await h?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('uploads every image of the nested folder by magic bytes, ids = relative paths, and summarises the corrupt one with exit 1', async () => {
    const result = await spawnCli(['ingest', root, '--dataset', 'photos', '--batch', '2', '--concurrency', '3'], env);
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/^ingested into photos in [\d.]+ s: 5 stored, 0 updated, 1 failed; skipped 2 files not an image\n/);
    expect(result.stdout).toContain('1 file failed:\n  dogs/corrupt.jpg  CORRUPT_IMAGE  ');
    // stderr is not a terminal: plain progress lines, the last one at 100%.
    expect(result.stderr).toContain('created image dataset photos');
    expect(result.stderr).toContain('6 images under');
    expect(result.stderr).toMatch(/ingest: 6\/6 images \(100%\), [\d.]+\/s, 1 failed\n$/);
    const dataset = await client.getDataset('photos');
    expect(dataset.model).not.toBeNull();
    const candidates = [...IMAGES, 'dogs/corrupt.jpg', 'dogs/fake.jpg', 'notes.txt'];
    expect(await client.findExistingItems('photos', candidates)).toEqual(IMAGES);
  });

  it('a re-run skips what is stored (one bulk lookup) and retries only the failed file; --json keeps stderr quiet', async () => {
    const result = await spawnCli(['--json', 'ingest', root, '--dataset', 'photos'], env);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe('');
    const summary = JSON.parse(result.stdout) as Record<string, unknown>;
    expect(summary).toMatchObject({ dataset: 'photos', created: false, images: 6, alreadyStored: 5, uploaded: 1, stored: 0, updated: 0, failed: 1 });
    expect(summary.notImages).toEqual(['dogs/fake.jpg', 'notes.txt']);
    expect(summary.failures).toEqual([{ externalId: 'dogs/corrupt.jpg', code: 'CORRUPT_IMAGE', message: expect.stringContaining('jpeg') }]);

    await writeFile(path.join(root, 'dogs', 'corrupt.jpg'), await jpeg(48, 40, sceneRaw(48, 40, 6)));
    const fixed = await spawnCli(['ingest', root, '-d', 'photos'], env);
    expect(fixed.code).toBe(0);
    expect(fixed.stdout).toMatch(/: 1 stored, 0 updated, 0 failed; skipped 5 already stored, 2 files not an image\n$/);
    expect(await client.findExistingItems('photos', ['dogs/corrupt.jpg'])).toEqual(['dogs/corrupt.jpg']);

    const nothingLeft = await spawnCli(['ingest', root, '-d', 'photos'], env);
    expect(nothingLeft.code).toBe(0);
    expect(nothingLeft.stdout).toMatch(/: 0 stored, 0 updated, 0 failed; skipped 6 already stored/);
  });

  it('stops with one error line: --no-create on a missing dataset, a dataset of embeddings, a missing folder, a bad key', async () => {
    const missing = await spawnCli(['ingest', root, '-d', 'nowhere', '--no-create'], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^protoprune: DATASET_NOT_FOUND: .*nowhere.* \(HTTP 404\)\n$/);
    expect((await client.listDatasets()).map((d) => d.name)).not.toContain('nowhere');

    await client.createDataset({ name: 'vectors', dimension: 4 });
    const mismatch = await spawnCli(['ingest', root, '-d', 'vectors'], env);
    expect(mismatch.code).toBe(1);
    expect(mismatch.stderr.trim().split('\n').at(-1)).toMatch(/^protoprune: MODEL_MISMATCH: .* \(HTTP 409\)$/);

    const noFolder = await spawnCli(['ingest', path.join(root, 'absent'), '-d', 'photos'], env);
    expect(noFolder.code).toBe(1);
    expect(noFolder.stderr).toMatch(/^protoprune: cannot read folder .*absent: ENOENT/);

    const badKey = await spawnCli(['ingest', root, '-d', 'photos', '--api-key', 'pp_wrong'], env);
    expect(badKey.code).toBe(1);
    expect(badKey.stderr).toBe('protoprune: INVALID_API_KEY: the API key is unknown or revoked (HTTP 401)\n');
  });
});

describe.each(BACKENDS)('protoprune ingest of a hostile folder (child process) on the $name backend', (backend) => {
  let h: ApiHarness;
  let client: ProtopruneClient;
  let env: Record<string, string>;
  let root: string;
  // 3 × 200 characters of folders: a relative path longer than an external id may be (512).
  const longId = `${'x'.repeat(200)}/${'y'.repeat(200)}/${'z'.repeat(200)}/deep.jpg`;
  const junk = Array.from({ length: 60 }, (_, i) => `junk/${String(i).padStart(2, '0')}.jpg`);

  beforeAll(async () => {
    // A body limit that the batch holding zz-big.jpg (sorted last, so alone) exceeds: 413 for it only.
    h = await startApi(backend, { BODY_LIMIT_BYTES: '30000' });
    const baseUrl = `http://127.0.0.1:${h.service.httpPort}`;
    client = createClient({ baseUrl, apiKey: h.keys.admin });
    env = { PROTOPRUNE_URL: baseUrl, PROTOPRUNE_API_KEY: h.keys.admin };
    root = await mkdtemp(path.join(tmpdir(), 'protoprune-cli-hostile-'));
    await mkdir(path.join(root, path.dirname(longId)), { recursive: true });
    await mkdir(path.join(root, 'junk'));
    await mkdir(path.join(root, 'locked'));
    for (const [i, id] of ['a.jpg', 'b.jpg', 'c.jpg', 'd.jpg', longId, 'locked/hidden.jpg'].entries()) await writeFile(path.join(root, id), await jpeg(40, 40, sceneRaw(40, 40, 20 + i)));
    // JPEG magic bytes and nothing else: each is sent and refused by the server.
    for (const id of junk) await writeFile(path.join(root, id), Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 0]));
    await writeFile(path.join(root, 'zz-big.jpg'), Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(40_000)]));
    // A name that is not UTF-8 (no external id can name it), and a sparse file over MAX_IMAGE_BYTES: neither is sent.
    await writeFile(Buffer.from([...Buffer.from(`${root}/bad-`), 0xff, ...Buffer.from('.jpg')]), await jpeg(40, 40, sceneRaw(40, 40, 30)));
    await writeFile(path.join(root, 'huge.jpg'), Buffer.from([0xff, 0xd8, 0xff, 0xe0]));
    await truncate(path.join(root, 'huge.jpg'), MAX_IMAGE_BYTES + 1);
  });
  afterAll(async () => {
    await h?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('fails the too-long path and the unreadable folder alone, fails a batch over the body limit alone, summarises past 50 failures, uploads the rest concurrently', async () => {
    // A folder this run may not read: as root (CI) the CLI runs as nobody, for whom mode 000 is closed.
    const asRoot = process.getuid?.() === 0;
    await chmod(path.join(root, 'locked'), 0o000);
    if (asRoot) await chmod(root, 0o755);
    let inFlight = 0;
    let mostInFlight = 0;
    const onRequest = (request: IncomingMessage, response: ServerResponse) => {
      if (request.method !== 'POST' || !request.url?.startsWith('/v1/datasets/hostile/items')) return;
      mostInFlight = Math.max(mostInFlight, ++inFlight);
      response.once('close', () => inFlight--);
    };
    h.service.http.server.on('request', onRequest);
    try {
      const result = await spawnCli(['--json', 'ingest', root, '-d', 'hostile', '--batch', '4', '--concurrency', '4'], env, PROJECT_ROOT, asRoot ? 65534 : undefined);
      expect(result.code).toBe(1);
      const summary = JSON.parse(result.stdout) as { stored: number; failed: number; failures: { externalId: string; code: string }[]; failuresOmitted: number };
      expect(summary).toMatchObject({ stored: 4, failed: 65, failuresOmitted: 0 });
      const codes = new Map(summary.failures.map((f) => [f.externalId, f.code]));
      expect(codes.get(longId)).toBe('ID_TOO_LONG');
      expect(codes.get('locked/')).toBe('READ_FAILED');
      expect(codes.get('zz-big.jpg')).toBe('BODY_TOO_LARGE');
      expect(codes.get('bad-\ufffd.jpg')).toBe('INVALID_FILE_NAME');
      expect(codes.get('huge.jpg')).toBe('FILE_TOO_LARGE');
      expect(summary.failures.find((f) => f.externalId === 'zz-big.jpg')).toMatchObject({ message: expect.stringContaining('(try a smaller --batch)') });
      expect(junk.every((id) => codes.get(id) === 'CORRUPT_IMAGE')).toBe(true);
      expect(summary.failures.map((f) => f.externalId)).toEqual([...summary.failures.map((f) => f.externalId)].sort());
      expect(await client.findExistingItems('hostile', ['a.jpg', 'b.jpg', 'c.jpg', 'd.jpg', ...junk])).toEqual(['a.jpg', 'b.jpg', 'c.jpg', 'd.jpg']);
      // 65 images in batches of 4: with 4 requests allowed in flight, more than one was.
      expect(mostInFlight).toBeGreaterThan(1);
      expect(mostInFlight).toBeLessThanOrEqual(4);

      const text = await spawnCli(['ingest', root, '-d', 'hostile'], env, PROJECT_ROOT, asRoot ? 65534 : undefined);
      expect(text.code).toBe(1);
      expect(text.stdout).toContain('65 files failed:\n');
      expect(text.stdout).toContain('  … and 15 more (--json lists the first 10000)\n');
    } finally {
      h.service.http.server.off('request', onRequest);
      await chmod(path.join(root, 'locked'), 0o755);
    }
  });
});
