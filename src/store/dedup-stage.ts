import type { Sql } from './database.js';
import { andFilter, DEDUP_DROPS_TABLE as DROPS, textLiteral, type ItemFilter } from './metadata-filter.js';

/** Which item of a near-duplicate group a dedup-then-prune selection keeps. */
export type DedupKeep = 'farthest' | 'closest' | 'random' | 'highest' | 'lowest';

export interface DedupStage {
  /** The completed SemDeDup run whose pairs define the groups. */
  jobId: string;
  datasetId: string;
  version: number;
  keep: DedupKeep;
  /** `highest` / `lowest`: the numeric metadata field (path segments); an item without a number there ranks last. */
  field: string[] | null;
  /** `random`: the seed of the per-group draw. */
  seed: number;
  /** Only items matching this filter take part (null: every item). */
  filter: ItemFilter | null;
}

/** ORDER BY of a group's members, the one kept first; ties by external id in byte order. */
function keepOrder(stage: DedupStage): string {
  const tie = 'i.external_id COLLATE "C"';
  switch (stage.keep) {
    case 'farthest':
      return `s.score DESC, ${tie}`;
    case 'closest':
      return `s.score ASC, ${tie}`;
    case 'random':
      return `md5(${textLiteral(String(stage.seed))} || ':' || i.external_id), ${tie}`;
    default: {
      const field = `(i.metadata #> ARRAY[${stage.field!.map(textLiteral).join(',')}]::text[])`;
      const value = `(CASE WHEN jsonb_typeof(${field}) = 'number' THEN ${field}::numeric END)`;
      return `${value} ${stage.keep === 'highest' ? 'DESC' : 'ASC'} NULLS LAST, s.score DESC, ${tie}`;
    }
  }
}

/**
 * Stages the dedup step of a selection in this transaction, set-based: every near-duplicate group
 * of the run (a kept item and the duplicates whose chain of pairs ends at it), restricted to items
 * scored under the version and matching the filter, keeps one member by `keep` and the rest go
 * into a temporary table that a filter with `withoutDedupDrops` leaves out. Returns how many items it drops.
 */
export async function stageDedupDrops(tx: Sql, stage: DedupStage): Promise<number> {
  await tx.query(`CREATE TEMP TABLE IF NOT EXISTS ${DROPS} (item_id bigint PRIMARY KEY) ON COMMIT DROP`);
  await tx.query(`TRUNCATE ${DROPS}`);
  const rows = await tx.query<{ n: number }>(
    `WITH inserted AS (
       INSERT INTO ${DROPS} (item_id)
       WITH RECURSIVE chain (member, root, depth) AS (
         SELECT p.duplicate_id, p.kept_id, 1 FROM dedup_pairs p WHERE p.job_id = $1::uuid
         UNION ALL
         SELECT c.member, p.kept_id, c.depth + 1 FROM chain c JOIN dedup_pairs p ON p.job_id = $1::uuid AND p.duplicate_id = c.root
          WHERE c.depth < 64
       ),
       roots AS (SELECT DISTINCT ON (member) member, root FROM chain ORDER BY member, depth DESC),
       members AS (SELECT member AS item_id, root FROM roots UNION SELECT root, root FROM roots),
       ranked AS (
         SELECT m.item_id, row_number() OVER (PARTITION BY m.root ORDER BY ${keepOrder(stage)}) AS rank
           FROM members m
           JOIN item_scores s ON s.item_id = m.item_id AND s.dataset_id = $2::uuid AND s.version = $3::int
           JOIN items i ON i.id = m.item_id
          WHERE true${andFilter(stage.filter)}
       )
       SELECT item_id FROM ranked WHERE rank > 1
       RETURNING 1)
     SELECT count(*)::int AS n FROM inserted`,
    [stage.jobId, stage.datasetId, stage.version],
  );
  return rows[0].n;
}
