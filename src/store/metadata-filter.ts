/** A validated metadata filter (see service/metadata-filter.ts), as the store renders it to SQL. */
export interface ItemFilter {
  /** JSON text of an object the metadata must contain; null: none. */
  contains: string | null;
  /** Leave out the items the transaction's dedup stage dropped (see dedup-stage.ts). */
  withoutDedupDrops?: boolean;
  where: { path: string[]; op: 'eq' | 'ne' | 'lt' | 'lte' | 'gt' | 'gte' | 'in' | 'exists' | 'missing'; value: string | number | boolean | null | (string | number | boolean | null)[] | undefined }[];
}

/** The temporary table of the items a selection's dedup stage drops (dedup-stage.ts): it lives as long as the transaction. */
export const DEDUP_DROPS_TABLE = 'selection_dedup_drops';

/**
 * A string literal. Only with standard_conforming_strings on (PostgreSQL's default since 9.1, and
 * PGlite's), where a backslash is an ordinary character and doubling quotes is the whole escape.
 */
export function textLiteral(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

const jsonLiteral = (value: unknown) => `${textLiteral(JSON.stringify(value))}::jsonb`;

const COMPARE = { lt: '<', lte: '<=', gt: '>', gte: '>=' } as const;

/**
 * The filter as a boolean SQL expression over the items row `alias` (literals only: it also goes
 * into COPY, which takes no parameters). Containment uses the GIN index on items.metadata; a
 * comparison on a field of the wrong type, or a missing one, is false, never an error.
 */
export function filterCondition(filter: ItemFilter, alias = 'i'): string {
  const parts: string[] = [];
  if (filter.withoutDedupDrops) parts.push(`NOT EXISTS (SELECT 1 FROM ${DEDUP_DROPS_TABLE} d WHERE d.item_id = ${alias}.id)`);
  if (filter.contains !== null) parts.push(`${alias}.metadata @> ${textLiteral(filter.contains)}::jsonb`);
  for (const c of filter.where) {
    const field = `(${alias}.metadata #> ARRAY[${c.path.map(textLiteral).join(',')}]::text[])`;
    switch (c.op) {
      case 'exists':
        parts.push(`${field} IS NOT NULL`);
        break;
      case 'missing':
        parts.push(`${field} IS NULL`);
        break;
      case 'eq':
        parts.push(`${field} = ${jsonLiteral(c.value)}`);
        break;
      case 'ne':
        parts.push(`${field} IS DISTINCT FROM ${jsonLiteral(c.value)}`);
        break;
      case 'in':
        parts.push(`${field} = ANY(ARRAY[${(c.value as unknown[]).map(jsonLiteral).join(',')}])`);
        break;
      default: {
        const op = COMPARE[c.op];
        parts.push(
          typeof c.value === 'number'
            ? `(CASE WHEN jsonb_typeof(${field}) = 'number' THEN ${field}::numeric ${op} ${textLiteral(String(c.value))}::numeric ELSE false END)`
            : `(CASE WHEN jsonb_typeof(${field}) = 'string' THEN (${field} #>> '{}') COLLATE "C" ${op} ${textLiteral(String(c.value))} COLLATE "C" ELSE false END)`,
        );
      }
    }
  }
  return parts.length === 0 ? 'true' : parts.join(' AND ');
}

/** `AND <condition>` for a WHERE clause that already holds a condition, or nothing without a filter. */
export function andFilter(filter: ItemFilter | null, alias = 'i'): string {
  return filter === null ? '' : ` AND ${filterCondition(filter, alias)}`;
}
