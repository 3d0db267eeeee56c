import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type ProtopruneClient } from '../../clients/typescript/src/index.js';
import { jpeg, sceneRaw } from '../embedding/images.js';
import { BACKENDS } from '../helpers/backends.js';
import { plantedClusters } from '../helpers/planted.js';
import { freePort } from '../helpers/process.js';
import { startApi, type ApiHarness } from '../http/api-harness.js';
import { run } from '../../src/cli/program.js';
import { capture, runCli, spawnCli } from './cli-harness.js';

const DIM = 8;
const N = 240;

describe.each(BACKENDS)('protoprune commands on the $name backend', (backend) => {
  let h: ApiHarness;
  let client: ProtopruneClient;
  let env: Record<string, string>;
  let dir: string;
  const data = plantedClusters({ seed: 21, clusters: 4, perCluster: N / 4, dim: DIM, noise: 0.3 });
  const row = (i: number) => Array.from(data.points.subarray(i * DIM, (i + 1) * DIM));
  const id = (i: number) => `e-${String(i).padStart(3, '0')}`;
  const cli = (...args: string[]) => runCli(args, env);
  const lines = (text: string) => text.split('\n').filter(Boolean);

  beforeAll(async () => {
    h = await startApi(backend);
    const baseUrl = `http://127.0.0.1:${h.service.httpPort}`;
    client = createClient({ baseUrl, apiKey: h.keys.admin });
    env = { PROTOPRUNE_URL: baseUrl, PROTOPRUNE_API_KEY: h.keys.admin };
    dir = await mkdtemp(path.join(tmpdir(), 'protoprune-cli-commands-'));
    const created = await cli('datasets', 'create', 'emb', '--dimension', String(DIM), '--settings', '{"minItemsForFit": 100000}');
    expect(created).toMatchObject({ code: 0, stdout: 'created emb  8-d embeddings  prototype version none  k auto\n' });
    const rows = Array.from({ length: N }, (_, i) => JSON.stringify({ id: id(i), embedding: row(i), metadata: { split: i % 3 === 0 ? 'test' : 'train' } }));
    await writeFile(path.join(dir, 'emb.ndjson'), rows.join('\n'));
    expect((await cli('ingest-embeddings', path.join(dir, 'emb.ndjson'), '-d', 'emb')).code).toBe(0);
  });
  afterAll(async () => {
    await h?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('datasets list | get | create | delete', async () => {
    const listed = await cli('datasets', 'list');
    expect(listed).toEqual({ code: 0, stdout: 'emb  8-d embeddings  prototype version none  k auto\n', stderr: '' });
    const asJson = JSON.parse((await cli('--json', 'datasets', 'get', 'emb')).stdout) as { name: string; settings: { minItemsForFit: number } };
    expect(asJson).toMatchObject({ name: 'emb', dimension: DIM, settings: { minItemsForFit: 100000 } });
    expect((await cli('datasets', 'create', 'tmp', '--dimension', '3', '--k', '2')).stdout).toBe('created tmp  3-d embeddings  prototype version none  k 2\n');
    expect(await cli('datasets', 'delete', 'tmp')).toEqual({ code: 0, stdout: 'deleted tmp\n', stderr: '' });
    expect((await client.listDatasets()).map((d) => d.name)).toEqual(['emb']);
  });

  it('refit --wait follows the job and reports the new prototypes; jobs get | wait', async () => {
    const refit = await cli('refit', '-d', 'emb', '--wait');
    expect(refit.code).toBe(0);
    expect(refit.stdout).toMatch(/^job [0-9a-f-]{36} \(refit of emb\) succeeded: prototype version 1, k \d+, objective \d\.\d{4}\n$/);
    // Not a terminal: the progress is a plain line on stderr.
    expect(refit.stderr).toMatch(/^refit: \d+\/\d+ steps \(100%\)/m);
    const prototypes = await client.prototypes('emb');
    expect(prototypes.version).toBe(1);

    const queued = JSON.parse((await cli('--json', 'refit', '-d', 'emb')).stdout) as { id: string; kind: string };
    expect(queued.kind).toBe('refit');
    const waited = await cli('jobs', 'wait', queued.id);
    expect(waited.code).toBe(0);
    expect(waited.stdout).toBe(`job ${queued.id} (refit of emb) succeeded\n`);
    const got = JSON.parse((await cli('--json', 'jobs', 'get', queued.id)).stdout) as { state: string; result: { version: number } };
    expect(got).toMatchObject({ state: 'succeeded', result: { version: 2 } });
  });

  it('select streams ids as lines, NDJSON or CSV, to stdout or a file', async () => {
    const expected = (await client.selectPage('emb', { order: 'hardest', count: 10 })).externalIds;
    const plain = await cli('select', '-d', 'emb', '--order', 'hardest', '--count', '10');
    expect(plain.code).toBe(0);
    expect(lines(plain.stdout)).toEqual(expected);
    expect(plain.stderr).toBe('selected 10 of 240 items (policy hardest, prototype version 2)\n');
    const ndjson = await cli('--json', 'select', '-d', 'emb', '--order', 'hardest', '--count', '10');
    expect(lines(ndjson.stdout).map((l) => (JSON.parse(l) as { externalId: string }).externalId)).toEqual(expected);
    expect(ndjson.stderr).toBe('');
    const csv = await cli('select', '-d', 'emb', '--order', 'hardest', '--count', '10', '--format', 'csv');
    expect(lines(csv.stdout)).toEqual(['external_id', ...expected]);

    const file = path.join(dir, 'train.txt');
    const filtered = await cli('--json', 'select', '-d', 'emb', '--fraction', '0.1', '--balance', 'cluster', '--filter', '{"contains":{"split":"train"}}', '-o', file);
    expect(JSON.parse(filtered.stdout)).toMatchObject({ output: file, format: 'ndjson', total: 240, matched: 160, size: 16, policy: expect.stringMatching(/\+cluster$/) });
    const kept = lines(await readFile(file, 'utf8')).map((l) => (JSON.parse(l) as { externalId: string }).externalId);
    expect(kept).toHaveLength(16);
    expect(kept.every((k) => Number(k.slice(2)) % 3 !== 0)).toBe(true);

    const empty = await cli('select', '-d', 'emb', '--fraction', '0.5', '--filter', '{"contains":{"split":"validation"}}');
    expect(empty).toEqual({ code: 0, stdout: '', stderr: expect.stringMatching(/^selected 0 of 0 items/) });

    const child = await spawnCli(['select', '-d', 'emb', '--order', 'hardest', '--count', '10'], env);
    expect(child.code).toBe(0);
    expect(lines(child.stdout)).toEqual(expected);
  });

  it('export writes the score export as NDJSON, CSV or Parquet (by --format or the file extension)', async () => {
    const ndjson = await cli('export', '-d', 'emb');
    const rows = lines(ndjson.stdout).map((l) => JSON.parse(l) as { externalId: string; score: number; metadata: { split: string } });
    expect(rows).toHaveLength(N);
    expect(rows.every((r, i) => i === 0 || r.score >= rows[i - 1].score)).toBe(true);
    expect(ndjson.stderr).toBe('exported 240 of 240 items (prototype version 2, ndjson)\n');

    const csvFile = path.join(dir, 'scores.csv');
    expect((await cli('export', '-d', 'emb', '-o', csvFile, '--filter', '{"contains":{"split":"test"}}')).code).toBe(0);
    const csv = lines(await readFile(csvFile, 'utf8'));
    expect(csv[0]).toBe('external_id,score,cluster,percentile,prototype_version,duplicate_of,duplicate_similarity,duplicate_group,metadata');
    expect(csv).toHaveLength(81);

    const parquetFile = path.join(dir, 'scores.parquet');
    const summary = JSON.parse((await cli('--json', 'export', '-d', 'emb', '-o', parquetFile)).stdout) as Record<string, unknown>;
    expect(summary).toMatchObject({ output: parquetFile, format: 'parquet', total: N, matched: N, prototypeVersion: 2 });
    const table = await parquetReadObjects({ file: await asyncBufferFromFile(parquetFile), columns: ['external_id', 'score'] });
    expect(table.map((r) => r.external_id)).toEqual(rows.map((r) => r.externalId));

    const missing = await cli('export', '-d', 'nope', '-o', path.join(dir, 'never.csv'));
    expect(missing.code).toBe(1);
    await expect(readFile(path.join(dir, 'never.csv'))).rejects.toThrow('ENOENT');
  });

  it('score decides keep/skip for new embeddings: copies of stored items are near-duplicates', async () => {
    const file = path.join(dir, 'new.ndjson');
    await writeFile(file, [JSON.stringify({ id: 'copy', embedding: row(5) }), JSON.stringify({ id: 'odd', embedding: row(5).map((x, j) => (j % 2 ? -x : x)) })].join('\n'));
    const scored = await cli('score', '-d', 'emb', '--embeddings', file, '--order', 'hardest', '--fraction', '0.5');
    expect(scored.code).toBe(0);
    const [copy, odd, summary] = lines(scored.stdout);
    expect(copy).toMatch(new RegExp(`^copy  skip  score [\\d.]+  percentile [\\d.]+  cluster \\d+  near-duplicate of ${id(5)} \\(similarity 1\\.0000\\)$`));
    expect(odd).toMatch(/^odd  (keep|skip)  score /);
    expect(summary).toMatch(/^\d+ items? to keep, \d+ to skip, 0 failed \(policy hardest keeping 0\.5, prototype version 2\)$/);
    const asJson = JSON.parse((await cli('--json', 'score', '-d', 'emb', '--embeddings', file)).stdout) as { items: { externalId: string; decision: string }[] };
    expect(asJson.items.map((i) => i.externalId)).toEqual(['copy', 'odd']);
    const neither = await cli('score', '-d', 'emb');
    expect(neither).toMatchObject({ code: 2, stderr: 'protoprune: give image files, or --embeddings <file> (not both)\n' });
    const absent = await cli('score', '-d', 'emb', '--embeddings', path.join(dir, 'absent.ndjson'));
    expect(absent).toMatchObject({ code: 1, stdout: '', stderr: expect.stringMatching(/^protoprune: cannot read .*absent\.ndjson: ENOENT/) });
  });

  it('score --json writes one document however many batches it takes, decisions as they come', async () => {
    const file = path.join(dir, 'many.ndjson');
    await writeFile(file, Array.from({ length: 25 }, (_, i) => JSON.stringify({ id: `s-${i}`, embedding: row(i) })).join('\n'));
    const result = await cli('--json', 'score', '-d', 'emb', '--embeddings', file, '--batch', '4', '--order', 'hardest', '--fraction', '0.4');
    expect(result.code).toBe(0);
    const doc = JSON.parse(result.stdout) as { items: { externalId: string; decision: string }[]; scored: number; keep: number; failed: number; policy: { order: string } };
    expect(doc.items.map((i) => i.externalId)).toEqual(Array.from({ length: 25 }, (_, i) => `s-${i}`));
    expect(doc).toMatchObject({ scored: 25, failed: 0, failures: [], policy: { order: 'hardest' } });
    expect(doc.keep).toBe(doc.items.filter((i) => i.decision === 'keep').length);
    const empty = await cli('--json', 'score', '-d', 'emb', path.join(dir, 'absent.jpg'));
    expect(empty.code).toBe(1);
    expect(JSON.parse(empty.stdout)).toMatchObject({ items: [], scored: 0, failed: 1, failures: [{ code: 'READ_FAILED' }] });
  });

  it('score --json stopped midway (the dataset deleted after its first batch) still writes one JSON document, closed with the error', async () => {
    await client.createDataset({ name: 'doomed', dimension: DIM, k: 2, settings: { minItemsForFit: 100_000 } });
    await client.ingestEmbeddings('doomed', { externalIds: Array.from({ length: 40 }, (_, i) => `d-${i}`), vectors: data.points.slice(0, 40 * DIM), dimension: DIM });
    expect((await client.waitForJob((await client.requestRefit('doomed')).id, { intervalMs: 50 })).state).toBe('succeeded');
    const file = path.join(dir, 'doomed.ndjson');
    await writeFile(file, Array.from({ length: 6 }, (_, i) => JSON.stringify({ id: `n-${i}`, embedding: row(50 + i) })).join('\n'));
    // A reader that takes the first piece slowly: score waits for it (backpressure), and meanwhile the dataset goes.
    let text = '';
    let deleted = false;
    const stdout = Object.assign(
      new Writable({
        highWaterMark: 1,
        write(chunk: Buffer, _encoding, done) {
          text += chunk.toString();
          if (deleted) return done();
          deleted = true;
          client.deleteDataset('doomed').then(() => done(), done);
        },
      }),
      { isTTY: false },
    );
    const stderr = capture();
    const code = await run(['--json', 'score', '-d', 'doomed', '--embeddings', file, '--batch', '2'], { stdout, stderr, env });
    expect(code).toBe(1);
    expect(deleted).toBe(true);
    const doc = JSON.parse(text) as { items: { externalId: string }[]; scored: number; error: { code: string } };
    expect(doc.items.map((i) => i.externalId)).toEqual(['n-0', 'n-1']);
    expect(doc).toMatchObject({ scored: 2, error: { code: 'DATASET_NOT_FOUND' } });
    expect(JSON.parse(stderr.text())).toMatchObject({ error: { code: 'DATASET_NOT_FOUND', status: 404 } });
  });

  it('score reads image files: an unreadable or undecodable one fails alone, with exit 1', async () => {
    await client.createDataset({ name: 'pics', k: 2 });
    const images = await Promise.all([1, 2, 3, 4].map((seed) => jpeg(48, 40, sceneRaw(48, 40, seed))));
    await client.ingestImages('pics', images.map((image, i) => ({ externalId: `p${i}.jpg`, image })));
    expect((await client.waitForJob((await client.requestRefit('pics')).id, { intervalMs: 50 })).state).toBe('succeeded');
    const newImage = path.join(dir, 'new.jpg');
    await writeFile(newImage, await jpeg(48, 40, sceneRaw(48, 40, 9)));
    const text = path.join(dir, 'notes.txt');
    await writeFile(text, 'not an image');
    const result = await cli('score', '-d', 'pics', newImage, text, path.join(dir, 'absent.jpg'));
    expect(result.code).toBe(1);
    const out = lines(result.stdout);
    expect(out[0]).toMatch(new RegExp(`^${newImage.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}  (keep|skip)  score `));
    expect(out).toContain('2 items failed:');
    expect(out.some((l) => l.includes('notes.txt  UNSUPPORTED_FORMAT'))).toBe(true);
    expect(out.some((l) => l.includes('absent.jpg  READ_FAILED  ENOENT'))).toBe(true);
  });

  it('dedup --wait reports the groups; select --dedup then drops near-duplicates first', async () => {
    const dedup = await cli('dedup', '-d', 'emb', '--epsilon', '0.1', '--wait');
    expect(dedup.code).toBe(0);
    expect(dedup.stdout).toMatch(/^job [0-9a-f-]{36} \(dedup of emb\) succeeded: \d+ groups?, \d+ duplicates? at ε 0\.1\n$/);
    const run = await client.duplicates('emb', { epsilon: 0.1, limit: 1 });
    expect(dedup.stdout).toContain(`${run.groupCount} group`);
    const asJson = JSON.parse((await cli('--json', 'dedup', '-d', 'emb', '--epsilon', '0.1', '--wait')).stdout) as { duplicates: { duplicateCount: number } };
    expect(asJson.duplicates.duplicateCount).toBe(run.duplicateCount);
    const pruned = await cli('select', '-d', 'emb', '--dedup', '--epsilon', '0.1', '--count', '5');
    expect(lines(pruned.stdout)).toHaveLength(5);
    expect(pruned.stderr).toContain(`, ${run.duplicateCount} near-duplicates dropped first`);
  });

  it('stats summarises the dataset (and --json gives the whole answer)', async () => {
    const stats = await cli('stats', '-d', 'emb');
    expect(stats.code).toBe(0);
    const out = lines(stats.stdout);
    expect(out[0]).toBe('emb: 240 items, 240 scored');
    expect(out[1]).toMatch(/^prototypes: version 2, k \d+, last refit \d{4}-/);
    expect(out.find((l) => l.startsWith('ingested: '))).toBe('ingested: 240 in the last hour, 240 in the last 24 hours');
    const filtered = JSON.parse((await cli('--json', 'stats', '-d', 'emb', '--filter', '{"contains":{"split":"test"}}')).stdout) as { itemCount: number; clusterSizes: number[] };
    expect(filtered.itemCount).toBe(80);
    expect(filtered.clusterSizes.reduce((a, b) => a + b, 0)).toBe(80);
  });

  it('manifests create | list | get | ids | delete: a saved selection comes back as the same ids in order', async () => {
    const selection = await cli('select', '-d', 'emb', '--order', 'hardest', '--fraction', '0.25');
    const selected = lines(selection.stdout);
    const created = await cli('--json', 'manifests', 'create', '-d', 'emb', '--selection', '{"order":"hardest","fraction":0.25}', '--name', 'hard quarter');
    expect(created.code).toBe(0);
    const manifest = JSON.parse(created.stdout) as { id: string; count: number; sha256: string; name: string; kind: string };
    expect(manifest).toMatchObject({ count: selected.length, name: 'hard quarter', kind: 'selection' });
    const ids = await cli('manifests', 'ids', manifest.id);
    expect(ids.code).toBe(0);
    expect(lines(ids.stdout)).toEqual(selected);
    expect(ids.stderr).toContain(`${selected.length} ids of manifest ${manifest.id} (prototype version 2, sha256 ${manifest.sha256})`);
    const csvFile = path.join(dir, 'manifest.csv');
    expect(JSON.parse((await cli('--json', 'manifests', 'ids', manifest.id, '-o', csvFile)).stdout)).toMatchObject({ output: csvFile, format: 'csv', count: selected.length, sha256: manifest.sha256 });
    expect(lines(await readFile(csvFile, 'utf8'))).toEqual(['external_id', ...selected]);

    const exported = JSON.parse((await cli('--json', 'manifests', 'create', '-d', 'emb', '--export', '{"filter":{"contains":{"split":"test"}}}')).stdout) as { id: string; count: number; kind: string };
    expect(exported).toMatchObject({ count: 80, kind: 'export' });
    const listed = await cli('manifests', 'list', '-d', 'emb');
    expect(lines(listed.stdout).map((l) => l.split('  ')[0].split(' ')[0])).toEqual([exported.id, manifest.id]);
    expect((await cli('manifests', 'list', '-d', 'emb', '--limit', '1')).stdout.trim().split('\n')).toHaveLength(1);
    const got = await cli('manifests', 'get', manifest.id);
    expect(lines(got.stdout)[0]).toBe(`${manifest.id} "hard quarter"  selection of emb  ${selected.length} ids  prototype version 2  sha256 ${manifest.sha256}  ${lines(got.stdout)[0].split('  ').at(-1)}`);
    expect(lines(got.stdout)[1]).toMatch(/^parameters: \{.*"order":"hardest"/);
    expect(await cli('manifests', 'create', '-d', 'emb', '--selection', '{}', '--export', '{}')).toMatchObject({ code: 2, stderr: 'protoprune: give --selection or --export, not both\n' });
    expect(await cli('manifests', 'delete', exported.id)).toMatchObject({ code: 0, stdout: `deleted manifest ${exported.id}\n` });
    expect((await cli('manifests', 'get', exported.id)).stderr).toMatch(/^protoprune: MANIFEST_NOT_FOUND: .*\(HTTP 404\)\n$/);
  });

  it('keys create | list | revoke', async () => {
    const created = await cli('keys', 'create', '--name', 'trainer', '--scopes', 'read', '--datasets', 'emb');
    const [first, , secret] = lines(created.stdout);
    expect(first).toMatch(/^created key [0-9a-f-]{36} \(trainer; read\)$/);
    const keyId = first.split(' ')[2];
    expect(secret).toMatch(/^pp_/);
    expect((await runCli(['datasets', 'list'], { ...env, PROTOPRUNE_API_KEY: secret })).stdout).toBe('emb  8-d embeddings  prototype version 2  k auto\n');
    const listed = await cli('keys', 'list');
    expect(lines(listed.stdout).find((l) => l.startsWith(keyId))).toMatch(/^\S+  trainer  read  emb  last used /);
    expect((await cli('keys', 'revoke', keyId)).stdout).toBe(`revoked ${keyId} (trainer)\n`);
    const revoked = await runCli(['datasets', 'list'], { ...env, PROTOPRUNE_API_KEY: secret });
    expect(revoked).toMatchObject({ code: 1, stdout: '', stderr: 'protoprune: INVALID_API_KEY: the API key is unknown or revoked (HTTP 401)\n' });
    const asReader = await runCli(['keys', 'list'], { ...env, PROTOPRUNE_API_KEY: h.keys.reader });
    expect(asReader.code).toBe(1);
    expect(asReader.stderr).toMatch(/^protoprune: \w+: .* \(HTTP 403\)\n$/);
  });

  it('errors: one line on stderr (JSON with --json), exit 1; usage errors exit 2; --url overrides PROTOPRUNE_URL', async () => {
    const missing = await cli('stats', '-d', 'nope');
    expect(missing).toEqual({ code: 1, stdout: '', stderr: 'protoprune: DATASET_NOT_FOUND: dataset nope does not exist (HTTP 404)\n' });
    const asJson = await cli('--json', 'stats', '-d', 'nope');
    expect(asJson.code).toBe(1);
    expect(JSON.parse(asJson.stderr)).toEqual({ error: { code: 'DATASET_NOT_FOUND', message: 'dataset nope does not exist', status: 404 } });
    const invalid = await cli('select', '-d', 'emb', '--fraction', '2');
    expect(invalid.code).toBe(1);
    expect(invalid.stderr).toMatch(/^protoprune: \w+: .*fraction.* \(HTTP 400\)\n$/);
    const noDataset = await cli('select', '--count', '3');
    expect(noDataset.code).toBe(2);
    expect(noDataset.stderr).toContain("error: required option '-d, --dataset <name>' not specified");
    const badNumber = await cli('select', '-d', 'emb', '--count', 'many');
    expect(badNumber.code).toBe(2);
    expect(badNumber.stderr).toContain("argument 'many' is invalid. expected an integer");
    expect((await cli('frobnicate')).code).toBe(2);
    const usageAsJson = await cli('--json', 'select', '--count', '3');
    expect(usageAsJson.code).toBe(2);
    expect(JSON.parse(usageAsJson.stderr)).toEqual({ error: { code: 'USAGE', message: "required option '-d, --dataset <name>' not specified", status: null } });
    for (const url of ['not a url', 'ftp://127.0.0.1/']) {
      const badUrl = await runCli(['--url', url, 'datasets', 'list'], env);
      expect(badUrl, url).toMatchObject({ code: 2, stdout: '', stderr: expect.stringMatching(/^protoprune: --url ".*" is not (a|an http\(s\)) URL/) });
    }
    expect(await runCli(['datasets', 'list'], { ...env, PROTOPRUNE_URL: 'localhost:8080' })).toMatchObject({ code: 2, stderr: expect.stringContaining('PROTOPRUNE_URL "localhost:8080" is not') });
    const help = await cli('--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: protoprune [options] [command]');
    const nobody = `http://127.0.0.1:${await freePort()}`;
    const elsewhere = await runCli(['--url', env.PROTOPRUNE_URL, 'datasets', 'list'], { ...env, PROTOPRUNE_URL: nobody });
    expect(elsewhere.code).toBe(0);
    const unreachable = await runCli(['datasets', 'list'], { ...env, PROTOPRUNE_URL: nobody });
    expect(unreachable).toEqual({ code: 1, stdout: '', stderr: `protoprune: CONNECTION_FAILED: cannot reach ${nobody}: ECONNREFUSED\n` });
  });
});
