import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { API_PROTO, GENERATED_PROTO_DIR, generateProto, protoWithSettings } from '../../scripts/generate-proto.js';

async function filesUnder(dir: string): Promise<Map<string, string>> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const files = new Map<string, string>();
  for (const entry of entries.filter((e) => e.isFile())) {
    const full = path.join(entry.parentPath, entry.name);
    files.set(path.relative(dir, full), await readFile(full, 'utf8'));
  }
  return files;
}

describe('generated gRPC types', () => {
  const scratch = mkdtemp(path.join(tmpdir(), 'protoprune-proto-'));
  afterAll(async () => rm(await scratch, { recursive: true, force: true }));

  it('the proto’s settings messages are what the settings schema declares (run `npm run proto` after changing src/service/settings.ts)', async () => {
    expect(await readFile(API_PROTO, 'utf8')).toBe(await protoWithSettings());
  });

  // Needs protoc: without it this fails (with the install instructions), it does not skip.
  it('src/generated/proto is what protoc + ts-proto generate from proto/ (run `npm run proto` after changing a .proto)', async () => {
    const out = await scratch;
    await generateProto(out);
    const fresh = await filesUnder(out);
    const committed = await filesUnder(GENERATED_PROTO_DIR);
    expect([...committed.keys()].sort()).toEqual([...fresh.keys()].sort());
    for (const [file, text] of fresh) expect(committed.get(file), file).toBe(text);
  }, 60_000);
});
