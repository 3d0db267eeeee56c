import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../src/paths.js';

/**
 * The layering the code relies on, checked on the sources: SQL lives only in src/store (the
 * repositories); the transports (src/http, src/grpc) never reach the store; the core does no I/O.
 */

function sources(dir: string): string[] {
  const root = path.join(PROJECT_ROOT, dir);
  return readdirSync(root, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /\.(ts|js)$/.test(e.name))
    .map((e) => path.relative(PROJECT_ROOT, path.join(e.parentPath, e.name)));
}

const read = (file: string) => readFileSync(path.join(PROJECT_ROOT, file), 'utf8');

/** A statement in a string or template literal, or a query issued on a connection/transaction. */
const SQL_PATTERNS: RegExp[] = [
  /\bSELECT\b[\s\S]{0,400}?\bFROM\b/,
  /\bINSERT\s+INTO\b/,
  /\bUPDATE\s+"?\w+"?\s+SET\b/,
  /\bDELETE\s+FROM\b/,
  /\b(CREATE|ALTER|DROP)\s+(TABLE|INDEX|SCHEMA|EXTENSION)\b/,
  /\b(COPY)\s+"?\w+"?\s*\(/,
  /\b(db|tx|sql|client|pool)\.(query|exec)\s*[<(]/,
  /\$(queryRaw|executeRaw)/,
];

function sqlIn(text: string): string[] {
  return SQL_PATTERNS.filter((p) => p.test(text)).map((p) => p.source);
}

/** Modules a file loads at run time (`import type` brings in no code and is left out). */
function importsOf(text: string): string[] {
  const statics = [...text.matchAll(/^(?:import|export)\s+(type\s+)?[^;]*?\bfrom\s+'([^']+)'/gm)].filter((m) => !m[1]).map((m) => m[2]);
  const dynamics = [...text.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g)].map((m) => m[1]);
  return [...statics, ...dynamics];
}

describe('layering', () => {
  it('the SQL detector finds SQL (so an empty finding below means something)', () => {
    expect(sqlIn("await tx.query('SELECT id FROM items WHERE dataset_id = $1', [id])").length).toBeGreaterThan(0);
    expect(sqlIn('`UPDATE jobs SET state = $2 WHERE id = $1`')).toHaveLength(1);
    expect(sqlIn("const ORDERS = ['hardest', 'easiest']; // select the hardest from the set")).toEqual([]);
    expect(importsOf("import type { A } from './a.js';\nimport { b } from '../store/b.js';\nexport { c } from 'pg';")).toEqual(['../store/b.js', 'pg']);
  });

  it.each(['src/service', 'src/http', 'src/grpc', 'src/core', 'src/cli'])('no SQL in %s: it lives in src/store', (dir) => {
    const found = sources(dir)
      .map((file) => ({ file, patterns: sqlIn(read(file)) }))
      .filter((f) => f.patterns.length > 0);
    expect(found).toEqual([]);
  });

  it.each(['src/http', 'src/grpc'])('%s does not import the store: transports call services', (dir) => {
    const found = sources(dir).flatMap((file) =>
      importsOf(read(file))
        .filter((spec) => /(^|\/)store\//.test(spec) || spec === 'pg' || spec.startsWith('@electric-sql/'))
        .map((spec) => `${file} → ${spec}`),
    );
    expect(found).toEqual([]);
  });

  it('src/core imports nothing that does I/O', () => {
    const found = sources('src/core').flatMap((file) =>
      importsOf(read(file))
        .filter((spec) => !spec.startsWith('./'))
        .map((spec) => `${file} → ${spec}`),
    );
    expect(found).toEqual([]);
  });

  it('src has no import cycle, not even through type-only imports', () => {
    const files = sources('src').filter((f) => f.endsWith('.ts') && !f.startsWith('src/generated/'));
    const known = new Set(files);
    const edges = new Map(
      files.map((file) => [
        file,
        [...read(file).matchAll(/\bfrom\s+'(\.[^']+)'/g)]
          .map((m) => m[1])
          .map((spec) => path.join(path.dirname(file), spec).replace(/\.js$/, '.ts'))
          .filter((target) => known.has(target)),
      ]),
    );
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const stack: string[] = [];
    const visit = (file: string) => {
      state.set(file, 'open');
      stack.push(file);
      for (const next of edges.get(file) ?? []) {
        if (state.get(next) === 'open') cycles.push([...stack.slice(stack.indexOf(next)), next].join(' → '));
        else if (!state.has(next)) visit(next);
      }
      stack.pop();
      state.set(file, 'done');
    };
    for (const file of files) if (!state.has(file)) visit(file);
    expect(cycles).toEqual([]);
  });
});
