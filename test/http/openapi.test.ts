import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../src/paths.js';
import { generateOpenapi } from '../../scripts/export-openapi.js';

describe('OpenAPI document', () => {
  it('openapi/openapi.json is what the server generates (run `npm run openapi` after changing routes)', async () => {
    const checkedIn = await readFile(path.join(PROJECT_ROOT, 'openapi', 'openapi.json'), 'utf8');
    expect(checkedIn).toBe(await generateOpenapi());
  });

  it('documents every route with a response schema', async () => {
    const doc = JSON.parse(await generateOpenapi()) as { paths: Record<string, Record<string, { responses?: object }>> };
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/healthz', '/readyz']));
    for (const [route, methods] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(methods)) {
        expect(Object.keys(operation.responses ?? {}), `${method} ${route}`).not.toHaveLength(0);
      }
    }
  });

  it('gives every operation a unique camelCase operationId', async () => {
    const doc = JSON.parse(await generateOpenapi()) as { paths: Record<string, Record<string, { operationId?: string }>> };
    const ids = Object.entries(doc.paths).flatMap(([route, methods]) =>
      Object.entries(methods).map(([method, operation]) => {
        expect(operation.operationId, `${method} ${route}`).toMatch(/^[a-z][A-Za-z0-9]*$/);
        return operation.operationId;
      }),
    );
    expect(ids.length).toBeGreaterThan(0);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
