/**
 * The selection policies, as data: each is a set of query parameters of
 * GET /v1/datasets/{dataset}/selection (the budget, `count`, is added per fraction). `--policies=`
 * picks entries by name; seeded entries run once per `--seeds` value. A policy the server answers
 * 400 for (an order or parameter it does not know yet) is skipped and listed as such in the report.
 */

export type ParamValue = string | number | boolean;

export interface PolicyDef {
  /** `--policies` name and result group. */
  name: string;
  label: string;
  /** Column heading in the narrow tables. */
  short: string;
  colour: string;
  dash?: string;
  /** Run once per seed (`seed=<s>` added), averaged into one row. */
  seeded: boolean;
  params: Record<string, ParamValue>;
  /** Dedup-then-prune: needs a completed SemDeDup run at the ε in use (started by the harness). */
  dedup?: boolean;
}

export const CATALOG: PolicyDef[] = [
  { name: 'hardest', label: 'keep hardest', short: 'hardest', colour: '#d62728', seeded: false, params: { order: 'hardest' } },
  { name: 'easiest', label: 'keep easiest', short: 'easiest', colour: '#1f77b4', seeded: false, params: { order: 'easiest' } },
  { name: 'random', label: 'random', short: 'random', colour: '#555555', dash: '5 3', seeded: true, params: { order: 'random' } },
  { name: 'stratified', label: 'stratified (CCS)', short: 'stratified', colour: '#2ca02c', seeded: false, params: { order: 'stratified' } },
  { name: 'hardest-cluster', label: 'hardest, balance=cluster', short: 'hardest + balance=cluster', colour: '#ff7f0e', seeded: false, params: { order: 'hardest', balance: 'cluster' } },
  { name: 'auto', label: 'order=auto', short: 'auto', colour: '#9467bd', seeded: false, params: { order: 'auto' } },
  { name: 'hierarchical', label: 'hierarchical balance', short: 'hierarchical', colour: '#8c564b', seeded: true, params: { order: 'hierarchical' } },
  { name: 'dedup-random', label: 'dedup, then random', short: 'dedup + random', colour: '#17becf', dash: '2 2', seeded: true, params: { order: 'random', dedup: true }, dedup: true },
  { name: 'dedup-auto', label: 'dedup, then order=auto', short: 'dedup + auto', colour: '#e377c2', seeded: false, params: { order: 'auto', dedup: true }, dedup: true },
];

export const DEFAULT_POLICIES = CATALOG.map((p) => p.name);

/** One concrete selection request per policy and seed. */
export interface Policy {
  key: string;
  label: string;
  group: string;
  params: Record<string, ParamValue>;
  dedup: boolean;
}

export function policyDef(name: string): PolicyDef {
  const def = CATALOG.find((p) => p.name === name);
  if (!def) throw new Error(`--policies: unknown policy ${name}; known: ${CATALOG.map((p) => p.name).join(', ')}`);
  return def;
}

/**
 * Expands names into requests. Dedup policies get `epsilon` and `dedupKeep` when given (else the
 * server's defaults: the dataset's ε and its own keep rule).
 */
export function expandPolicies(names: string[], seeds: number[], dedup: { epsilon?: number; keep?: string }): Policy[] {
  const out: Policy[] = [];
  for (const name of names) {
    const def = policyDef(name);
    const params: Record<string, ParamValue> = { ...def.params };
    if (def.dedup) {
      if (dedup.epsilon !== undefined) params.epsilon = dedup.epsilon;
      if (dedup.keep !== undefined) params.dedupKeep = dedup.keep;
    }
    if (def.seeded) {
      for (const seed of seeds) out.push({ key: `${name}-${seed}`, label: `${def.label} (seed ${seed})`, group: name, params: { ...params, seed }, dedup: !!def.dedup });
    } else {
      out.push({ key: name, label: def.label, group: name, params, dedup: !!def.dedup });
    }
  }
  return out;
}

/** The same request without its dedup parameters (to check that the server did not ignore them). */
export function withoutDedup(params: Record<string, ParamValue>): Record<string, ParamValue> {
  const { dedup: _d, epsilon: _e, dedupKeep: _k, ...rest } = params;
  return rest;
}
