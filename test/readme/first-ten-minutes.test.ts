import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../clients/typescript/src/index.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { BACKENDS } from '../helpers/backends.js';
import { startApi, type ApiHarness } from '../http/api-harness.js';
import { runCollected } from '../cli/cli-harness.js';

/**
 * The README's "First ten minutes", run as written: its shell blocks, against a live server (the
 * embedded default of the Quick start), with only the sample folder and keep.txt moved to a
 * temporary directory and step 1's `export` given as the environment instead.
 */

/** The ```sh blocks of the README section headed `heading`. */
function shellBlocks(readme: string, heading: string): string[] {
  const start = readme.indexOf(`\n## ${heading}\n`);
  if (start < 0) throw new Error(`README has no section "${heading}"`);
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]);
}

const embedded = BACKENDS.find((backend) => backend.name === 'embedded')!;

describe('README: first ten minutes', () => {
  let h: ApiHarness;
  let dir: string;

  beforeAll(async () => {
    h = await startApi(embedded);
    dir = await mkdtemp(path.join(tmpdir(), 'protoprune-readme-'));
  });
  afterAll(async () => {
    await h?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('every command of it works on a fresh server: images pushed, prototypes fitted, the hardest 30% from the shell, Python and TypeScript', async () => {
    const readme = await readFile(path.join(PROJECT_ROOT, 'README.md'), 'utf8');
    const blocks = shellBlocks(readme, 'First ten minutes');
    expect(blocks).toHaveLength(2);
    const folder = path.join(dir, 'sample-images');
    const script = blocks
      .join('\n')
      .replace(/^export PROTOPRUNE_URL=.*$/m, '')
      .replaceAll('npm run sample-images', 'npm run SAMPLE_SCRIPT')
      .replaceAll('sample-images', folder)
      .replaceAll('npm run SAMPLE_SCRIPT', 'npm run sample-images')
      .replace('> keep.txt', `> ${path.join(dir, 'keep.txt')}`);
    expect(script).toContain(`> ${path.join(dir, 'keep.txt')}`);
    const baseUrl = `http://127.0.0.1:${h.service.httpPort}`;
    const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PROTOPRUNE_URL: baseUrl, PROTOPRUNE_API_KEY: h.keys.admin };
    const run = await runCollected('bash', ['-euo', 'pipefail', '-c', script], { cwd: PROJECT_ROOT, env });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain(`wrote 300 images (15 near-duplicate copies) under ${folder}`);
    expect(run.stdout).toMatch(/^ingested into photos in [\d.]+ s: 300 stored, 0 updated, 0 failed$/m);
    expect(run.stderr).toMatch(/^ingest: 300\/300 images \(100%\)/m);
    expect(run.stdout).toMatch(/^job [0-9a-f-]{36} \(refit of photos\) succeeded: prototype version \d+, k \d+/m);
    expect(run.stdout).toContain('photos: 300 items, 300 scored\n');
    expect(run.stdout).toMatch(/^job [0-9a-f-]{36} \(dedup of photos\) succeeded: \d+ groups?, \d+ duplicates? at ε 0\.05$/m);
    expect(run.stdout).toContain('train on 90 of 300 files (hardest), e.g. ');
    expect(run.stdout).toMatch(/^90 kept of 300 \(hardest\), e.g. /m);

    const client = createClient({ baseUrl, apiKey: h.keys.reader });
    const hardest: string[] = [];
    for await (const row of await client.streamSelection('photos', { order: 'hardest', fraction: 0.3 })) hardest.push(row.externalId);
    expect((await readFile(path.join(dir, 'keep.txt'), 'utf8')).trimEnd().split('\n')).toEqual(hardest);
  }, 300_000);
});
