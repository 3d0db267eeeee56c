import { readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../src/paths.js';
import { frameCaseArb } from './grpc-frames.js';
import { caseArb as grpcCaseArb, changesData as grpcChangesData, loadProto } from './grpc-fuzz.js';
import { caseArb as restCaseArb, changesData as restChangesData, operationsOf, registerPaths } from './rest-fuzz.js';
import { KEY_SCOPE, type KeyRole, type World } from './server.js';
import { canSendWithNodeHttp } from './transport.js';

/**
 * The fuzzers' own guarantees, without a server: generation never throws, and every request to a
 * route or method that changes data is one the contract says must fail (or store nothing), so the
 * fuzz run can never change the data it fingerprints. Checked over many seeds and the committed
 * OpenAPI document (the live one is used by the fuzz run itself).
 */

function syntheticWorld(): World {
  const roles = Object.keys(KEY_SCOPE) as KeyRole[];
  const uuid = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
  const mainIds = [...Array.from({ length: 295 }, (_, i) => `item-${String(i).padStart(4, '0')}`), 'id with space', 'ünïcødé-💥', 'slash/inside', 'pct%41', `long-${'x'.repeat(145)}`];
  return {
    main: { name: 'fz-main', dim: 8 },
    other: { name: 'fz-other', dim: 4 },
    targetIds: ['item-0000', 'item-0001', 'item-0294', 'id with space', 'ünïcødé-💥', 'slash/inside', 'pct%41', `long-${'x'.repeat(145)}`],
    mainIds: new Set(mainIds),
    jobId: uuid(1),
    otherJobId: uuid(2),
    keys: Object.fromEntries(roles.map((r) => [r, `pp_${r}secret000000000000000000000`])) as Record<KeyRole, string>,
    keyIds: Object.fromEntries(roles.map((r, i) => [r, uuid(100 + i)])) as Record<KeyRole, string>,
  };
}

const SEEDS = [1, 2, 3, 42, 1337, 987_654_321];

describe('the fuzz generators', () => {
  const world = syntheticWorld();

  it('REST: never throw, send what node:http can carry on the http transport, and never send a data-changing request that may succeed', () => {
    const doc = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'openapi', 'openapi.json'), 'utf8')) as Record<string, unknown>;
    const ops = operationsOf(doc);
    registerPaths(ops);
    expect(ops.length).toBeGreaterThan(15);
    const unsafe: string[] = [];
    for (const seed of SEEDS) {
      for (const op of ops) {
        for (const c of fc.sample(restCaseArb(op, world), { seed, numRuns: 60 })) {
          if (c.transport === 'http') expect(canSendWithNodeHttp(c.request), c.summary).toBe(true);
          else expect(c.raw?.bytes.length ?? 0).toBeGreaterThan(0);
          if (restChangesData(op) && c.expect === 'any') unsafe.push(`${op.key}: ${c.summary} [${c.classes.join(',')}]`);
        }
      }
    }
    expect(unsafe.slice(0, 5)).toEqual([]);
  }, 60_000);

  it('gRPC: never throw, and never send a data-changing call that may succeed', () => {
    const proto = loadProto();
    const unsafe: string[] = [];
    for (const seed of SEEDS) {
      for (const method of proto.methods) {
        for (const c of fc.sample(grpcCaseArb(method, proto, world), { seed, numRuns: 40 })) {
          if (grpcChangesData(method.name) && c.expect === 'any') unsafe.push(`${method.name}: ${c.summary} [${c.classes.join(',')}]`);
        }
      }
      expect(fc.sample(frameCaseArb(proto, world), { seed, numRuns: 200 }).length).toBe(200);
    }
    expect(unsafe.slice(0, 5)).toEqual([]);
  }, 60_000);
});
