import type { ItemFilter } from '../store/metadata-filter.js';
import { ServiceError } from './errors.js';
import { textProblem } from './text.js';

/**
 * Which items a selection, export, statistic or score decision considers, by their metadata:
 * JSON containment (`contains`, answered from the GIN index on items.metadata) and/or comparisons
 * on fields (`where`), all of which must hold.
 */
export interface MetadataFilter {
  /** A JSON object the item's metadata must contain (`metadata @> contains`). */
  contains?: Record<string, unknown>;
  where?: FilterCondition[];
}

export const FILTER_OPS = ['eq', 'ne', 'lt', 'lte', 'gt', 'gte', 'in', 'exists', 'missing'] as const;
export type FilterOp = (typeof FILTER_OPS)[number];
export type FilterScalar = string | number | boolean | null;

export interface FilterCondition {
  /** A key of the metadata object, or a dotted path into nested objects (`camera.model`). */
  field: string;
  /**
   * eq / ne: equal / not equal to `value` (JSON equality; a missing field is not equal to anything);
   * lt, lte, gt, gte: a number compared with a number, a string with a string (byte order),
   * false for a field of another type or none; in: equal to one of `value` (an array);
   * exists / missing: the field is present (even as null) / absent (no value).
   */
  op: FilterOp;
  value?: unknown;
}

/** A validated filter: the form the store renders to SQL, and a canonical key for caches and cursors. */
export interface CheckedFilter extends ItemFilter {
  /** Canonical JSON of the whole filter (same filter, same key). */
  key: string;
}

export const FILTER_LIMITS = {
  /** JSON text of `contains`, in UTF-16 code units. */
  containsChars: 16 * 1024,
  conditions: 16,
  pathSegments: 8,
  segmentChars: 128,
  valueChars: 1024,
  inValues: 100,
} as const;

function invalid(field: string, message: string): never {
  throw new ServiceError('invalid', 'INVALID_FILTER', message, { field });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkScalar(value: unknown, field: string): FilterScalar {
  if (value === null || typeof value === 'boolean') return value;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) invalid(field, `${field} must be a finite number`);
    return value;
  }
  if (typeof value === 'string') {
    if (value.length > FILTER_LIMITS.valueChars) invalid(field, `${field} is longer than ${FILTER_LIMITS.valueChars} characters`);
    return value;
  }
  return invalid(field, `${field} must be a string, number, boolean or null`);
}

/** A metadata field: a key or a dotted path, as filter conditions name them (INVALID_FILTER, or `code`, naming `field`). */
export function checkPath(path: unknown, field: string, code = 'INVALID_FILTER'): string[] {
  function invalid(f: string, message: string): never {
    throw new ServiceError('invalid', code, message, { field: f });
  }
  if (typeof path !== 'string' || path.length === 0) invalid(field, `${field} must be a non-empty string (a key, or a dotted path such as camera.model)`);
  const segments = path.split('.');
  if (segments.length > FILTER_LIMITS.pathSegments) invalid(field, `${field} has more than ${FILTER_LIMITS.pathSegments} segments`);
  for (const segment of segments) {
    if (segment.length === 0) invalid(field, `${field} has an empty segment`);
    if (segment.length > FILTER_LIMITS.segmentChars) invalid(field, `${field} has a segment longer than ${FILTER_LIMITS.segmentChars} characters`);
  }
  return segments;
}

/** Sorted keys all the way down: equal objects give equal text. */
function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (isPlainObject(value)) return Object.fromEntries(Object.keys(value).sort().map((k) => [k, canonical(value[k])]));
  return value;
}

/**
 * Validates a filter (INVALID_FILTER naming the offending field, or INVALID_CHARACTERS for text
 * the database cannot store); undefined or an empty filter gives null: every item.
 */
export function checkMetadataFilter(filter: unknown): CheckedFilter | null {
  if (filter === undefined || filter === null) return null;
  if (!isPlainObject(filter)) invalid('filter', 'filter must be an object with `contains` and/or `where`');
  const problem = textProblem(filter, 'filter');
  if (problem) throw problem;
  for (const key of Object.keys(filter)) if (key !== 'contains' && key !== 'where') invalid(`filter/${key}`, `filter has no field ${key}: use contains and/or where`);

  let contains: string | null = null;
  if (filter.contains !== undefined) {
    if (!isPlainObject(filter.contains)) invalid('filter/contains', 'filter.contains must be a JSON object');
    const text = JSON.stringify(canonical(filter.contains));
    if (text.length > FILTER_LIMITS.containsChars) invalid('filter/contains', `filter.contains is longer than ${FILTER_LIMITS.containsChars} characters as JSON`);
    if (text !== '{}') contains = text;
  }

  const where: CheckedFilter['where'] = [];
  if (filter.where !== undefined) {
    if (!Array.isArray(filter.where)) invalid('filter/where', 'filter.where must be an array of conditions');
    if (filter.where.length > FILTER_LIMITS.conditions) invalid('filter/where', `filter.where holds more than ${FILTER_LIMITS.conditions} conditions`);
    filter.where.forEach((condition: unknown, i) => {
      const at = `filter/where/${i}`;
      if (!isPlainObject(condition)) invalid(at, `${at} must be an object {field, op, value}`);
      for (const key of Object.keys(condition)) if (key !== 'field' && key !== 'op' && key !== 'value') invalid(`${at}/${key}`, `a condition has no field ${key}`);
      const path = checkPath(condition.field, `${at}/field`);
      const op = condition.op;
      if (typeof op !== 'string' || !(FILTER_OPS as readonly string[]).includes(op)) invalid(`${at}/op`, `${at}/op must be one of ${FILTER_OPS.join(', ')}`);
      const value = condition.value;
      const valueField = `${at}/value`;
      switch (op as FilterOp) {
        case 'exists':
        case 'missing':
          if (value !== undefined) invalid(valueField, `${op} takes no value`);
          where.push({ path, op: op as FilterOp, value: undefined });
          break;
        case 'in': {
          if (!Array.isArray(value) || value.length === 0 || value.length > FILTER_LIMITS.inValues) {
            invalid(valueField, `in takes an array of 1 to ${FILTER_LIMITS.inValues} values`);
          }
          where.push({ path, op: 'in', value: value.map((v, j) => checkScalar(v, `${valueField}/${j}`)) });
          break;
        }
        case 'eq':
        case 'ne':
          if (value === undefined) invalid(valueField, `${op} needs a value`);
          where.push({ path, op: op as FilterOp, value: checkScalar(value, valueField) });
          break;
        default: {
          if (typeof value !== 'number' && typeof value !== 'string') invalid(valueField, `${op} compares with a number or a string`);
          where.push({ path, op: op as FilterOp, value: checkScalar(value, valueField) });
        }
      }
    });
  }
  if (contains === null && where.length === 0) return null;
  return { contains, where, key: JSON.stringify([contains, where.map((c) => [c.path, c.op, c.value ?? null])]) };
}

/** A filter given as JSON text (a query parameter), parsed; `checkMetadataFilter` validates it where it is used. */
export function parseFilterJson(text: string | undefined): MetadataFilter | undefined {
  if (text === undefined || text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as MetadataFilter;
  } catch {
    return invalid('filter', 'filter must be JSON: {"contains": {…}, "where": [{"field": …, "op": …, "value": …}]}');
  }
}
