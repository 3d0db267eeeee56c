import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { textRows, vectorLiteral, type Database } from '../../src/store/database.js';

const copyTarget = (table: string, columns: readonly string[]) => `"${table}" (${columns.map((c) => `"${c}"`).join(', ')})`;
import { openDatabase } from '../../src/store/open.js';
import { binaryCopy, CopyBinaryParser, decodeVectorInto, type BinaryField } from '../../src/store/pgcopy.js';
import { BACKENDS } from '../helpers/backends.js';

const DIM = 512;

/** Deterministic unit vectors: a seeded LCG, so the test data is the same on both backends. */
function unitVectors(count: number, seed: number): Float32Array[] {
  let state = seed >>> 0;
  const next = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  };
  return Array.from({ length: count }, () => {
    const v = Float32Array.from({ length: DIM }, next);
    const norm = Math.hypot(...v);
    return v.map((x) => x / norm);
  });
}

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += a[i] * b[i];
  return dot; // inputs are unit vectors
}

describe.each(BACKENDS)('vectors on the $name backend', (backend) => {
  let db: Database;
  let cleanup: () => Promise<void>;
  let datasetId: string;
  const vectors = unitVectors(300, 7);

  beforeAll(async () => {
    const fresh = await backend.fresh();
    cleanup = fresh.cleanup;
    db = (await openDatabase(fresh.config)).db;
    datasetId = (await db.prisma.dataset.create({ data: { name: 'vectors', dimension: DIM } })).id;
    const rows = vectors.map((v, i) => [datasetId, `item-${i}`, vectorLiteral(v)]);
    const target = copyTarget('items', ['dataset_id', 'external_id', 'embedding']);
    expect(await db.copyIn(target, 'text', textRows(rows))).toBe(vectors.length);
  });

  afterAll(async () => {
    await db?.close();
    await cleanup?.();
  });

  it('stores a 512-d vector and reads back exactly the same float32 values', async () => {
    const rows = await db.query<{ embedding: number[] }>(
      'SELECT embedding FROM items WHERE dataset_id = $1 AND external_id = $2',
      [datasetId, 'item-42'],
    );
    expect(rows[0].embedding).toHaveLength(DIM);
    expect(Float32Array.from(rows[0].embedding)).toEqual(vectors[42]);
  });

  it('answers a cosine nearest-neighbour query through an HNSW index', async () => {
    await db.exec(
      `CREATE INDEX items_hnsw_test ON items USING hnsw ((embedding::vector(${DIM})) vector_cosine_ops)`,
    );
    const query = vectors[5].map((x, i) => x + (i % 7 === 0 ? 0.01 : 0));
    const expected = vectors
      .map((v, i) => ({ id: `item-${i}`, similarity: cosine(v, query) / Math.hypot(...query) }))
      .sort((a, b) => b.similarity - a.similarity)
      .slice(0, 5);

    const { rows, plan } = await db.transaction(async (tx) => {
      // The table is small enough that the planner would scan it; force the index to prove it is used.
      await tx.query('SET LOCAL enable_seqscan = off');
      await tx.query('SET LOCAL hnsw.ef_search = 200');
      const sql = `SELECT external_id, 1 - (embedding::vector(${DIM}) <=> $1::vector(${DIM})) AS similarity
                     FROM items ORDER BY embedding::vector(${DIM}) <=> $1::vector(${DIM}) LIMIT 5`;
      const plan = await tx.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${sql}`, [vectorLiteral(query)]);
      const rows = await tx.query<{ external_id: string; similarity: number }>(sql, [vectorLiteral(query)]);
      return { rows, plan: plan.map((r) => r['QUERY PLAN']).join('\n') };
    });

    expect(plan).toContain('items_hnsw_test');
    expect(rows.map((r) => r.external_id)).toEqual(expected.map((e) => e.id));
    rows.forEach((r, i) => expect(r.similarity).toBeCloseTo(expected[i].similarity, 5));
  });

  it('keeps Prisma and raw SQL on the same data', async () => {
    const viaPrisma = await db.prisma.item.count({ where: { datasetId } });
    const viaSql = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM items WHERE dataset_id = $1', [datasetId]);
    expect(viaPrisma).toBe(vectors.length);
    expect(viaSql[0].n).toBe(vectors.length);
  });

  it('rolls a failed transaction back completely', async () => {
    await expect(
      db.transaction(async (tx) => {
        await tx.query(`UPDATE items SET metadata = '{"touched":true}' WHERE dataset_id = $1`, [datasetId]);
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    const touched = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM items WHERE metadata ? 'touched'`);
    expect(touched[0].n).toBe(0);
  });

  it('round-trips vectors, text and json through binary COPY in and out', async () => {
    const extra = unitVectors(50, 99);
    function* rows(): Generator<BinaryField[]> {
      for (const [i, v] of extra.entries()) {
        yield [
          { type: 'uuid', value: datasetId },
          { type: 'text', value: `bin-${i}\tü` },
          { type: 'vector', value: v, dim: DIM },
          { type: 'jsonb', value: JSON.stringify({ i }) },
        ];
      }
    }
    const target = copyTarget('items', ['dataset_id', 'external_id', 'embedding', 'metadata']);
    expect(await db.copyIn(target, 'binary', binaryCopy(rows()))).toBe(extra.length);

    const got = new Float32Array(extra.length * DIM);
    const ids: string[] = [];
    const parser = new CopyBinaryParser((fields) => {
      decodeVectorInto(fields[1]!, got, ids.length * DIM);
      ids.push(fields[0]!.toString('utf8'));
    });
    const source = `(SELECT external_id, embedding FROM items WHERE external_id LIKE 'bin-%' ORDER BY id)`;
    for await (const chunk of db.copyOut(source, 'binary')) parser.push(chunk);
    parser.end();

    expect(ids).toEqual(extra.map((_, i) => `bin-${i}\tü`));
    expect(got).toEqual(Float32Array.from(extra.flatMap((v) => [...v])));
    const meta = await db.query<{ metadata: unknown }>("SELECT metadata FROM items WHERE external_id = 'bin-7\tü'");
    expect(meta[0].metadata).toEqual({ i: 7 });
  });
});
