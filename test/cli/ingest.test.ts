import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type ProtopruneClient } from '../../clients/typescript/src/index.js';
import { jpeg, sceneRaw } from '../embedding/images.js';
import { BACKENDS } from '../helpers/backends.js';
import { startApi, type ApiHarness } from '../http/api-harness.js';
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
